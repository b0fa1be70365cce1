"""Offline CoPG on the built-in sentiment pairs (data source ``builtin_scored``) through the trainer.

A tiny 1-layer GPT-2 (registered ``causal_lm``) stands in for the small LM; the data go through the real grain
pipeline. Checks: the batch's rewards are the lexicon scorer of the decoded responses (and the data set's own
scores), the batch holds the same pairs as ``builtin_pairwise``, and the trainer's CoPG losses equal a numpy
recomputation of the CoPG formula from sequence log-probs (step 1: closed form; step 2: policy ≠ reference).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import np_seq_logps
from flax import nnx

from jalign.data import builtin
from jalign.models import forward
from jalign.train import ConfigError, base_config, load_config, plugins, train
from jalign.train.config import validate
from jalign.train.step import split_model

TINY = {"arch": "gpt2", "vocab_size": 259, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 160}
P, T, N, B, BETA = 48, 144, 32, 4, 0.5


def _cfg(steps):
    c = base_config()
    c.mode = "preference"
    c.model.name = "causal_lm"
    for k, v in TINY.items():
        c.model.kwargs[k] = v
    c.data.name = "builtin_scored"
    c.data.batch_size = B
    c.data.seq_len = T
    c.data.kwargs.n = N
    c.data.kwargs.max_prompt_len = P
    c.loss.name = "copg"
    c.loss.hparams.beta = BETA
    c.loss.reference = "frozen"
    c.optim.name = "adam"
    c.optim.lr = 1e-2
    c.optim.schedule = "constant"
    c.optim.grad_clip = 0.0
    c.train.steps = steps
    c.train.progress = False
    c.train.tensorboard = False
    c.mesh.data = 1
    return c


def _source(name):
    return plugins.make_data(name, batch_size=B, seq_len=T, seed=0, n=N, max_prompt_len=P)


def _decode(ids, mask):
    return bytes(int(t) for t, m in zip(ids, mask, strict=True) if m and t < 256).decode()


def _np_logps(model, ids, mask, attn):
    """Summed response log-probs in numpy from jalign.models.forward logits of the *unpadded* sequences.

    The pipeline right-pads, so each row's attention mask is a prefix; the model runs without an attention
    mask (positions 0..T-1, causal), whose logits on that prefix are the unpadded sequence's.
    """
    attn = np.asarray(attn)
    assert all(np.all(a[: a.sum()] == 1) for a in attn)  # right padding: the real tokens are a prefix
    logits = np.asarray(forward(model, jnp.asarray(ids)).logits, np.float64)
    keep = (np.arange(ids.shape[1])[None] < attn.sum(-1, keepdims=True)).astype(np.float64)
    return np_seq_logps(logits, np.asarray(ids), np.asarray(mask) * keep)


def _np_copg(lp, ref, r, beta):
    """Pairwise CoPG per pair, numpy float64: (1/(2β))·(R_a − R_b − β·[(lp_a − ref_a) − (lp_b − ref_b)])²."""
    resid = (r[:, 0] - r[:, 1]) - beta * ((lp[:, 0] - ref[:, 0]) - (lp[:, 1] - ref[:, 1]))
    return 0.5 * resid**2 / beta


def test_scored_batches_are_the_pairs_with_lexicon_rewards():
    records = builtin.load("sentiment_pairs", n=N)
    by_response = {(r["chosen"], r["rejected"]): r for r in records}
    scored, pairwise = _source("builtin_scored"), _source("builtin_pairwise")
    for _ in range(3):
        s, p = next(scored), next(pairwise)
        assert s["ids"].shape == (B, 2, T) and s["rewards"].shape == (B, 2) and s["rewards"].dtype == np.float32
        for j, side in enumerate(("chosen", "rejected")):  # the same pairs, same order, as builtin_pairwise
            for f in ("ids", "mask", "attention_mask"):
                np.testing.assert_array_equal(s[f][:, j], p[f"{side}_{f}"])
        for b in range(B):
            texts = [_decode(s["ids"][b, k], s["mask"][b, k]) for k in range(2)]
            rec = by_response[tuple(texts)]  # the decoded responses are exactly a record's pair
            want = [builtin.lexicon_reward(t) for t in texts]
            np.testing.assert_allclose(s["rewards"][b], want, rtol=1e-6)
            np.testing.assert_allclose(s["rewards"][b], [rec["score_chosen"], rec["score_rejected"]], rtol=1e-6)
            assert want[0] != want[1]


def test_scored_source_and_config_errors():
    with pytest.raises(KeyError, match="unknown reward 'lexicn'"):
        plugins.make_data("builtin_scored", batch_size=B, seq_len=T, seed=0, reward="lexicn")
    with pytest.raises(ValueError, match="dataset='word_constraint' is a scored data set; builtin_scored needs"):
        plugins.make_data("builtin_scored", batch_size=B, seq_len=T, seed=0, dataset="word_constraint")
    c = _cfg(1)
    c.loss.hparams.beta = 0.0
    with pytest.raises(ValueError, match="copg.*beta=0.0 must be > 0"):
        train(c)
    validate(_cfg(1))  # a scored loss is valid offline (mode=preference)
    c = _cfg(1)
    c.loss.name = "fdpg"
    with pytest.raises(ConfigError, match="loss.name='fdpg' is a sampled loss; mode='preference' needs"):
        validate(c)


def test_offline_copg_losses_equal_numpy_recomputation():
    one, two = train(_cfg(1)), train(_cfg(2))
    src = _source("builtin_scored")
    b1, b2 = next(src), next(src)
    ref_model = plugins.make_model("causal_lm", seed=0, **TINY)  # the initial model = the frozen reference
    # step 1: policy = reference, so every log-ratio is 0 and the loss is mean (R_a − R_b)² / (2β)
    np.testing.assert_allclose(one.history[0]["loss"], np.mean((b1["rewards"][:, 0] - b1["rewards"][:, 1]) ** 2)
                               / (2 * BETA), rtol=1e-6)
    np.testing.assert_allclose(two.history[0]["loss"], one.history[0]["loss"], rtol=1e-6)
    np.testing.assert_allclose(one.history[0]["reward/mean"], b1["rewards"].mean(), rtol=1e-6)

    def logps(model, b):
        flat = [b[f].reshape(2 * B, T) for f in ("ids", "mask", "attention_mask")]
        return _np_logps(model, *flat).reshape(B, 2)

    lp1 = logps(ref_model, b1)
    np.testing.assert_allclose(one.history[0]["logps/mean"], lp1.mean(), rtol=1e-5)
    # step 2: policy = the parameters after step 1 (from the 1-step run), reference = initial model
    g, _, rest = split_model(ref_model)
    policy = nnx.merge(g, one.state.params, rest)
    lp, ref = logps(policy, b2), logps(ref_model, b2)
    assert np.abs(lp - ref).max() > 1e-2  # the policy moved: the log-ratio term is exercised
    want = _np_copg(lp, ref, b2["rewards"].astype(np.float64), BETA).mean()
    np.testing.assert_allclose(two.history[1]["loss"], want, rtol=1e-4)
    np.testing.assert_allclose(two.history[1]["logps/mean"], lp.mean(), rtol=1e-5)


def test_experiment_config_loads_and_validates():
    c = load_config("experiments/copg_small_lm.py", ["loss.hparams.beta=0.3", "train.steps=2"])
    assert (c.mode, c.data.name, c.loss.name, c.loss.hparams.beta, c.train.steps) == (
        "preference", "builtin_scored", "copg", 0.3, 2)

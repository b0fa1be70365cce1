"""Online loop: the sampler's tokens and log-probs against recomputation; batches; a short RL run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import np_seq_logps, small_cfg

from jalign.losses import LossSpec
from jalign.tokenizers import ByteTokenizer
from jalign.train import online, train
from jalign.train.plugins import tiny
from jalign.train.step import split_model

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def prompts():
    ex = tiny.synthetic_prompt_examples(6, 16, seed=1)
    return np.stack([e["prompt_ids"] for e in ex]), np.stack([e["prompt_attention_mask"] for e in ex])


def _sample(model, prompts, **kw):
    g, params, rest = split_model(model)
    s = online.make_sampler(g, max_new_tokens=5, **kw)
    out = s(params, rest, jnp.asarray(prompts[0]), jnp.asarray(prompts[1]), jax.random.key(4))
    return {k: np.asarray(v) for k, v in out.items()}


def _logits(model, ids, attn):
    return np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(attn)), np.float64)


def test_sampler_logps_equal_recomputed_sequence_logps(prompts):
    model = tiny.tiny_lm(0, d_model=8, d_hidden=16)
    for temp in (1.0, 2.0):
        out = _sample(model, prompts, temperature=temp)
        ids, mask, attn = out["ids"], out["mask"], out["attention_mask"]
        np.testing.assert_array_equal(ids[:, :16], prompts[0])  # left-padded prompts kept
        np.testing.assert_array_equal(attn[:, :16], prompts[1])
        assert mask[:, :16].sum() == 0 and (mask[:, 16:] == attn[:, 16:]).all()
        want = np_seq_logps(_logits(model, ids, attn) / temp, ids, mask)
        np.testing.assert_allclose(out["logps"], want, rtol=1e-5)


def test_greedy_takes_argmax_and_eos_stops(prompts):
    model = tiny.tiny_lm(0, d_model=8, d_hidden=16)
    out = _sample(model, prompts, greedy=True)
    logits = _logits(model, out["ids"], out["attention_mask"])
    for t in range(16, 21):
        live = out["mask"][:, t] == 1
        np.testing.assert_array_equal(out["ids"][live, t], logits[live, t - 1].argmax(-1))
    model.out.bias[...] = model.out.bias[...].at[TOK.eos_id].set(100.0)  # EOS dominates
    out = _sample(model, prompts)
    assert (out["ids"][:, 16] == TOK.eos_id).all() and (out["ids"][:, 17:] == TOK.pad_id).all()
    assert (out["mask"][:, 16:] == [1, 0, 0, 0, 0]).all() and (out["attention_mask"][:, 17:] == 0).all()
    np.testing.assert_allclose(out["logps"], 0.0, atol=1e-6)  # log p(EOS) ≈ 0


def test_build_batch_layouts_and_bad_rewards():
    s = {"ids": np.arange(6 * 4).reshape(6, 4), "mask": np.ones((6, 4)), "attention_mask": np.ones((6, 4)),
         "logps": np.linspace(-1, 0, 6)}
    b = online.build_batch("scored", s, np.arange(6.0), 3)
    assert b["ids"].shape == (2, 3, 4) and b["rewards"].tolist() == [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_array_equal(b["ids"][1, 0], s["ids"][3])
    b = online.build_batch("sampled", s, np.arange(6.0), 3)
    np.testing.assert_allclose(b["proposal_logps"], s["logps"])
    with pytest.raises(ValueError, match="non-finite reward for sample 2"):
        online.build_batch("scored", s, np.array([0, 0, np.nan, 0, 0, 0]), 3)
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        online.build_batch("scored", s, np.zeros(5), 3)


def _rloo(b):
    """REINFORCE with the leave-one-out baseline (written here; the library's RLOO lands separately)."""
    k = b.rewards.shape[-1]
    adv = b.rewards - (b.rewards.sum(-1, keepdims=True) - b.rewards) / (k - 1)
    return -(jax.lax.stop_gradient(adv) * b.logps).mean(-1)


_rloo.spec = LossSpec(name="test_rloo", fn=_rloo, kind="scored", formula="", paper="", hparams={},
                      needs_reference=False)


def test_online_rloo_raises_the_reward():
    ascii_reward = lambda p, ids, m: ((ids < 128) * m).sum(-1) / np.maximum(m.sum(-1), 1)  # noqa: E731
    cfg = small_cfg(mode="online", data__name="synthetic_prompts", data__batch_size=8, train__steps=30,
                    online__num_samples=4, online__max_new_tokens=4, loss__reference="none")
    cfg.optim.name, cfg.optim.lr = "adam", 0.05
    res = train(cfg, loss=_rloo, reward_fn=ascii_reward, model=tiny.tiny_lm(0, d_model=8, d_hidden=16))
    r = [h["reward/mean"] for h in res.history]
    assert len(r) == 30 and 0 <= min(r) and max(r) <= 1
    # ASCII bytes are 128 of 259 tokens: ~0.5 at the start; the policy gradient pushes toward 1.
    assert np.mean(r[:5]) < 0.7 and np.mean(r[-5:]) > np.mean(r[:5]) + 0.2


@pytest.mark.slow
def test_online_resume_restores_rng_and_data_exactly(tmp_path):
    """Sampling draws from state.rng: a run stopped after 2 steps and resumed to 4 equals a 4-step run."""
    import jax

    def cfg(workdir, steps):
        c = small_cfg(mode="online", data__name="synthetic_prompts", data__batch_size=4, train__steps=steps,
                      online__num_samples=2, online__max_new_tokens=3, loss__reference="none",
                      workdir=str(workdir), checkpoint__every=2, checkpoint__async_save=False,
                      train__tensorboard=False)
        c.data.kwargs.num_examples = 8
        return c  # constant lr: the schedule does not depend on train.steps

    kw = dict(loss=_rloo, reward_fn=lambda p, ids, m: ((ids < 128) * m).sum(-1) / np.maximum(m.sum(-1), 1))
    full = train(cfg(tmp_path / "full", 4), model=tiny.tiny_lm(0, d_model=8, d_hidden=16), **kw)
    train(cfg(tmp_path / "part", 2), model=tiny.tiny_lm(0, d_model=8, d_hidden=16), **kw)
    resumed = train(cfg(tmp_path / "part", 4), model=tiny.tiny_lm(0, d_model=8, d_hidden=16), **kw)
    assert resumed.start_step == 2 and resumed.final_step == 4
    assert [h["reward/mean"] for h in resumed.history] == [h["reward/mean"] for h in full.history[2:]]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history[2:]]
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

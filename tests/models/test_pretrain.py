"""The pretraining loop, its CLI, and the shipped small LM."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jalign.cli import main as cli_main
from jalign.cli.pretrain import DEFAULT_CONFIG, load_config
from jalign.models import checkpoints, forward, load_pretrained, pretrain
from jalign.tokenizers import ByteTokenizer


def _tiny_config(steps=25):
    c = load_config(str(DEFAULT_CONFIG))
    c.model.update(dict(d_model=32, n_layers=1, n_heads=2, max_seq_len=32))
    c.data.n_template = 50
    c.train.update(dict(steps=steps, batch_size=8, seq_len=32, warmup=2, eval_every=steps, eval_batches=1,
                        lr=1e-2))
    return c


def test_corpus_encoding():
    docs = pretrain.corpus_documents(("pydoc_topics",), n_template=3)
    assert sum(len(d) for d in docs) > 400_000  # ~0.46 MB of help() text plus generated sentences
    tr, va = pretrain.encode_corpus(["abcdefghij", "xyz"], val_fraction=0.25)
    tok = ByteTokenizer()
    # "[BOS] abcdefghij [EOS]" (12 tokens) -> 9 train + 3 val; "[BOS] xyz [EOS]" (5) -> 4 + 1.
    np.testing.assert_array_equal(tr, [tok.bos_id, *b"abcdefgh", tok.bos_id, *b"xyz"])
    np.testing.assert_array_equal(va, [*b"ij", tok.eos_id, tok.eos_id])
    with pytest.raises(ValueError, match="val_fraction"):
        pretrain.encode_corpus(["a"], 1.0)


def test_training_reduces_loss_and_saves(tmp_path):
    model, hist = pretrain.train(_tiny_config(), tmp_path, log=lambda s: None)
    first, last = hist["train"][0][1], np.mean([x[1] for x in hist["train"][-5:]])
    assert abs(first - np.log(259)) < 0.3  # near-uniform init: cross-entropy ~ log V
    assert last < first - 1.0
    curve = json.loads((tmp_path / "loss_curve.json").read_text())
    assert len(curve["train"]) == 25 and curve["final_val_loss"] == hist["val"][-1][1]
    # The safetensors export and the orbax checkpoint hold the trained parameters.
    hf = load_pretrained(tmp_path / "hf")
    orb = pretrain.restore_orbax(hf.cfg, tmp_path / "orbax")
    for a, b, c in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(hf, nnx.Param)),
                       jax.tree.leaves(nnx.state(orb, nnx.Param)), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_non_finite_loss_stops_without_output(tmp_path, monkeypatch):
    real = pretrain.lm_loss
    monkeypatch.setattr(pretrain, "lm_loss", lambda m, t: real(m, t) * jnp.nan)
    with pytest.raises(FloatingPointError, match="non-finite training loss nan .* at step 1"):
        pretrain.train(_tiny_config(steps=3), tmp_path / "out", log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_bad_train_config():
    c = _tiny_config()
    c.train.lr = 0.0
    with pytest.raises(ValueError, match="train.lr must be > 0"):
        pretrain.train(c)
    c = _tiny_config()
    c.train.seq_len = 64
    with pytest.raises(ValueError, match="train.seq_len=64 exceeds model.max_seq_len=32"):
        pretrain.train(c)


def test_cli_rejects_unknown_override(tmp_path, capsys):
    with pytest.raises(KeyError, match="no config field 'nope'"):
        cli_main(["pretrain", "--out", str(tmp_path), "--set", "train.nope=1"])
    assert isinstance(load_config(str(DEFAULT_CONFIG)), ml_collections.ConfigDict)


@pytest.mark.skipif(not (checkpoints.SMALL_LM_DIR / "model.safetensors").exists(), reason="small LM not built")
def test_shipped_small_lm():
    from jalign.models import load_small_lm

    model = load_small_lm()
    curve = json.loads((checkpoints.SMALL_LM_DIR / "loss_curve.json").read_text())
    assert model.cfg.arch == "gpt2" and model.cfg.vocab_size == ByteTokenizer.vocab_size
    assert 0.5e6 < model.cfg.num_params() < 1.5e6
    # Held-out bytes: the model's cross-entropy is far below uniform (log 259 = 5.56 nats) and agrees with
    # the validation loss recorded at training time.
    _, val = pretrain.encode_corpus(pretrain.corpus_documents(), 0.05)
    rng = np.random.default_rng(0)
    batch = jnp.asarray(pretrain.sample_windows(val, 8, 129, rng))
    logits = forward(model, batch[:, :-1]).logits
    ce = -float(jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch[:, 1:, None], -1)))
    assert ce < 2.5 and abs(ce - curve["final_val_loss"]) < 0.25

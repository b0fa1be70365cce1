"""Pretraining as the trainer's SFT mode: the text corpus, the text_windows source, the pretrain config and
CLI, weight decay on matrices only, and the shipped small LM."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jalign.cli import main as cli_main
from jalign.data import text
from jalign.models import checkpoints, forward, load_pretrained
from jalign.tokenizers import ByteTokenizer
from jalign.train import load_config, plugins, train
from jalign.train.step import make_optimizer

TINY_MODEL = ["model.kwargs.d_model=32", "model.kwargs.n_layers=1", "model.kwargs.n_heads=2",
              "model.kwargs.max_seq_len=64"]


def test_corpus_encoding():
    docs = text.corpus_documents(("pydoc_topics",), n_template=3)
    assert sum(len(d) for d in docs) > 400_000  # ~0.46 MB of help() text plus generated sentences
    tr, va = text.encode_corpus(["abcdefghij", "xyz"], val_fraction=0.25)
    tok = ByteTokenizer()
    # "[BOS] abcdefghij [EOS]" (12 tokens) -> 9 train + 3 val; "[BOS] xyz [EOS]" (5) -> 4 + 1.
    np.testing.assert_array_equal(tr, [tok.bos_id, *b"abcdefgh", tok.bos_id, *b"xyz"])
    np.testing.assert_array_equal(va, [*b"ij", tok.eos_id, tok.eos_id])
    with pytest.raises(ValueError, match="val_fraction"):
        text.encode_corpus(["a"], 1.0)
    with pytest.raises(ValueError, match="corpus source 'web' unknown"):
        text.corpus_documents(("web",))


def test_text_windows_source_slices_resumes_and_shards():
    src = plugins.make_data("text_windows", batch_size=4, seq_len=9, seed=3, n_template=20)
    train_ids, val_ids = src.train_ids, src.val_ids
    b0, b1 = next(src), next(src)
    # every row is a contiguous slice of the training stream; all positions scored and attended
    for row in np.concatenate([b0["ids"], b1["ids"]]):
        starts = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(train_ids, 9) == row, axis=1))
        assert starts.size >= 1
    assert b0["mask"].all() and b0["attention_mask"].all() and b0["ids"].shape == (4, 9)
    # batch k is drawn by default_rng([seed, k]): state {"batch": k} resumes exactly
    state = src.get_state()
    b2 = next(src)
    src.set_state(state)
    np.testing.assert_array_equal(next(src)["ids"], b2["ids"])
    want = text.sample_windows(train_ids, 4, 9, np.random.default_rng([3, 2]))
    np.testing.assert_array_equal(b2["ids"], want)
    # two processes receive the two halves of the same global batch
    halves = [plugins.make_data("text_windows", batch_size=4, seq_len=9, seed=3, n_template=20, process_index=i,
                                process_count=2) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([next(h)["ids"] for h in halves]), b0["ids"])
    # held-out batches are fixed windows of the held-out stream
    ev = src.eval_batches(2)
    np.testing.assert_array_equal(ev[1]["ids"], text.sample_windows(val_ids, 4, 9, np.random.default_rng([1000, 1])))
    with pytest.raises(ValueError, match="state must have the key 'batch'"):
        src.set_state({"epoch": 0})
    with pytest.raises(ValueError, match="too few for windows of data.seq_len=10000000"):
        plugins.make_data("text_windows", batch_size=4, seq_len=10_000_000, seed=0)


def _np_mean_nll(model, ids):
    """The pretraining loss written out: mean over positions of −log softmax(logits_t)[x_{t+1}] (numpy)."""
    logits = np.asarray(forward(model, jnp.asarray(ids[:, :-1])).logits, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return -np.mean(np.take_along_axis(logp, ids[:, 1:, None], -1))


def test_pretrain_config_trains_and_evaluates_held_out_loss(tmp_path):
    cfg = load_config("pretrain_small", [*TINY_MODEL, "data.seq_len=33", "data.batch_size=8",
                                         "data.kwargs.n_template=50", "train.steps=6", "eval.every=3",
                                         "eval.batches=2", "optim.warmup_steps=1", "optim.lr=1e-2",
                                         "train.progress=False", f"train.export={tmp_path / 'hf'}"])
    src = plugins.make_data(cfg.data.name, batch_size=8, seq_len=33, seed=0, **dict(cfg.data.kwargs))
    first = next(src)["ids"]
    res = train(cfg)
    model = load_pretrained(tmp_path / "hf")
    # the step-1 loss is the mean next-token cross-entropy of batch 1 under the initial model
    init = plugins.make_model("causal_lm", seed=0, **dict(cfg.model.kwargs))
    steps = [h for h in res.history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(steps[0]["loss"], _np_mean_nll(init, first), rtol=2e-5)
    assert abs(steps[0]["loss"] - np.log(259)) < 0.3  # near-uniform initialisation
    # the held-out probe at the end equals the loss of the exported model on the fixed held-out batches
    evals = [h for h in res.history if "eval/nll" in h]
    assert [h["step"] for h in evals] == [0, 3, 6]
    held = src.eval_batches(2)
    want = np.mean([_np_mean_nll(model, b["ids"]) for b in held])
    np.testing.assert_allclose(evals[-1]["eval/nll"], want, rtol=2e-5)
    assert evals[-1]["eval/nll"] < evals[0]["eval/nll"]


def test_eval_needs_a_source_with_held_out_batches():
    cfg = load_config("experiments/sft_tiny.py", ["eval.every=2", "train.steps=2", "train.progress=False"])
    with pytest.raises(ValueError, match="eval.every=2: data source 'synthetic_sft' has no held-out batches"):
        train(cfg)


def test_weight_decay_on_matrices_only():
    cfg = load_config("pretrain_small", ["optim.weight_decay=0.5", "optim.lr=0.1", "optim.warmup_steps=0",
                                         "optim.schedule=constant", "optim.grad_clip=0.0"])
    tx, _ = make_optimizer(cfg.optim, 10)
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, upd)
    np.testing.assert_allclose(new["w"], 1 - 0.1 * 0.5)  # decoupled decay: θ − lr·wd·θ
    np.testing.assert_array_equal(new["b"], 1.0)


def test_cli_writes_export_and_curve(tmp_path, capsys):
    rc = cli_main(["pretrain", "--out", str(tmp_path / "o"), "--steps", "3", *TINY_MODEL, "data.seq_len=17",
                   "data.batch_size=4", "eval.every=3", "eval.batches=1", "train.progress=False",
                   "--export-assets", str(tmp_path / "assets")])
    assert rc == 0
    curve = json.loads((tmp_path / "o" / "loss_curve.json").read_text())
    metrics = [json.loads(x) for x in (tmp_path / "o" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert curve["train"] == [[m["step"], m["loss"]] for m in metrics if "loss" in m]
    assert curve["val"][-1] == [3, curve["final_val_loss"]]
    assert curve["n_params"] == load_pretrained(tmp_path / "o" / "hf").cfg.num_params()
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == [
        "config.json", "loss_curve.json", "loss_curve.png", "model.safetensors"]
    assert cli_main(["pretrain", "--out", str(tmp_path / "x"), "train.nope=1"]) == 2
    assert "unknown config key 'train.nope'" in capsys.readouterr().err


@pytest.mark.skipif(not (checkpoints.SMALL_LM_DIR / "model.safetensors").exists(), reason="small LM not built")
def test_shipped_small_lm():
    from jalign.models import load_small_lm

    model = load_small_lm()
    curve = json.loads((checkpoints.SMALL_LM_DIR / "loss_curve.json").read_text())
    assert model.cfg.arch == "gpt2" and model.cfg.vocab_size == ByteTokenizer.vocab_size
    assert 0.5e6 < model.cfg.num_params() < 1.5e6
    # Held-out bytes: the model's cross-entropy is far below uniform (log 259 = 5.56 nats) and agrees with
    # the validation loss recorded at training time.
    _, val = text.encode_corpus(text.corpus_documents(), 0.05)
    batch = text.sample_windows(val, 8, 129, np.random.default_rng(0))
    ce = _np_mean_nll(model, batch)
    assert ce < 2.5 and abs(ce - curve["final_val_loss"]) < 0.25
    assert nnx.state(model, nnx.Param)  # a real parameter tree


def test_retraining_with_the_trainer_reproduces_the_shipped_model():
    """The recorded `jalign pretrain` run (the trainer recipe) matches the shipped model's held-out loss."""
    rec = json.loads((checkpoints.SMALL_LM_DIR / "retrain_loss_curve.json").read_text())
    cmp = rec["comparison"]
    assert abs(cmp["retrained"] - cmp["shipped_small_lm"]) < 0.05
    assert rec["config"]["data"]["name"] == "text_windows" and rec["config"]["train"]["steps"] == 1000
    assert len(rec["train"]) == 1000 and rec["val"][-1] == [1000, rec["final_val_loss"]]
    # the shipped model's number in the record is what it scores on those held-out batches now
    from jalign.models import load_small_lm

    src = plugins.make_data("text_windows", batch_size=16, seq_len=129, seed=0)
    got = np.mean([_np_mean_nll(load_small_lm(), b["ids"]) for b in src.eval_batches(8)])
    np.testing.assert_allclose(got, cmp["eval_batches_8"]["shipped_small_lm"], rtol=1e-4)
    doc = (checkpoints.SMALL_LM_DIR.parents[2] / "docs" / "models.md").read_text()
    for v in (cmp["retrained"], cmp["shipped_small_lm"], rec["final_val_loss"]):
        assert f"{v:.3f}" in doc

"""Trainer data sources over local files (file_*) and the unpaired split of the built-in pairwise sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _train_helpers import apply_overrides, np_seq_logps
from flax import nnx

from jalign.data import builtin
from jalign.data.readers import InvalidDataError
from jalign.errors import UserError
from jalign.tokenizers import ByteTokenizer
from jalign.train import base_config, plugins, train
from jalign.train.step import logits_fn

TOK = ByteTokenizer()
TINY = {"arch": "gpt2", "vocab_size": 259, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 96}
T, P = 96, 48


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _text(ids, mask):
    return TOK.decode([int(t) for t, m in zip(ids, mask, strict=True) if m and t < 256])


def test_file_pairwise_and_sft_equal_the_builtin_sources(tmp_path):
    recs = builtin.load("sentiment_pairs", n=16)
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                   for r in recs])
    for adapt in ("pairwise", "sft"):
        a = plugins.make_data(f"file_{adapt}", batch_size=4, seq_len=T, seed=3, path=path, max_prompt_len=P)
        b = plugins.make_data(f"builtin_{adapt}", batch_size=4, seq_len=T, seed=3, n=16, max_prompt_len=P)
        for _ in range(5):  # past one epoch (4 batches)
            x, y = next(a), next(b)
            assert sorted(x) == sorted(y)
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{adapt}:{k}")


def test_builtin_unpaired_is_the_pairwise_set_split():
    recs = builtin.load("persona_yesno", n=8)
    expect = {(r["prompt"], r["chosen"], True) for r in recs} | {(r["prompt"], r["rejected"], False) for r in recs}
    src = plugins.make_data("builtin_unpaired", batch_size=4, seq_len=320, seed=0, dataset="persona_yesno", n=8,
                             max_prompt_len=300)
    seen = set()
    for _ in range(4):  # 16 examples = one epoch
        b = next(src)
        for i in range(4):
            full = _text(b["ids"][i], b["attention_mask"][i])
            resp = _text(b["ids"][i], b["mask"][i])
            prompt = full[: len(full) - len(resp)]
            seen.add((prompt, resp, bool(b["desirable"][i])))
            # the KL pair: prompt of this row, completion of the next row of the batch
            kl_full = _text(b["kl_ids"][i], b["kl_attention_mask"][i])
            assert kl_full.startswith(prompt)
    assert seen == expect


def test_file_listwise_rows_scores_and_list_mask(tmp_path):
    recs = [{"prompt": "Rate:", "responses": [" a", " bb", " c"], "scores": [1.0, 2.0, 0.5]},
            {"prompt": "Go:", "responses": [" d", " e"], "scores": [0.0, 1.0]}]
    path = _write_jsonl(tmp_path / "lists.jsonl", recs)
    src = plugins.make_data("file_listwise", batch_size=2, seq_len=32, seed=0, path=path, max_prompt_len=8)
    b = next(src)
    assert b["ids"].shape == (2, 3, 32)
    by_prompt = {}
    for i in range(2):
        k = int(b["list_mask"][i].sum())
        texts = [_text(b["ids"][i, j], b["mask"][i, j]) for j in range(k)]
        by_prompt[k] = (texts, b["scores"][i, :k].tolist())
    assert by_prompt[3] == ([" a", " bb", " c"], [1.0, 2.0, 0.5])
    assert by_prompt[2] == ([" d", " e"], [0.0, 1.0])


def _cfg(data, **kw):
    c = base_config()
    c.model.name = "causal_lm"
    for k, v in TINY.items():
        c.model.kwargs[k] = v
    c.data.name = data
    c.data.batch_size = 2
    c.data.seq_len = 32
    for k, v in kw.items():
        c.data.kwargs[k] = v
    c.optim.name = "sgd"
    c.optim.lr = 0.1
    c.optim.schedule = "constant"
    c.train.steps = 1
    c.train.progress = False
    c.train.tensorboard = False
    c.mesh.data = 1
    return c


def test_pro_on_a_listwise_file_first_step_equals_numpy(tmp_path):
    recs = [{"prompt": "Rate:", "responses": [" a", " bb", " c"], "scores": [1.0, 2.0, 0.5]},
            {"prompt": "Go:", "responses": [" dd", " e"], "scores": [0.0, 1.0]}]
    path = _write_jsonl(tmp_path / "lists.jsonl", recs)
    cfg = apply_overrides(_cfg("file_listwise", path=path, max_prompt_len=8), {"loss__name": "pro",
                                                                               "seed": 5})
    model = plugins.make_model("causal_lm", seed=5, **TINY)
    from jalign.train.step import split_model

    graphdef, params, rest = split_model(model)
    batch = next(plugins.make_data("file_listwise", batch_size=2, seq_len=32, seed=5, path=path,
                                    max_prompt_len=8))
    res = train(cfg)
    ids = batch["ids"].reshape(6, 32)
    logits = np.asarray(logits_fn(graphdef, params, rest, ids, batch["attention_mask"].reshape(6, 32)))
    lp = np_seq_logps(logits, ids, batch["mask"].reshape(6, 32)).reshape(2, 3)
    n = batch["mask"].reshape(2, 3, 32)[:, :, 1:].sum(-1)
    expect = []
    for i in range(2):
        v = batch["list_mask"][i]
        s = (lp[i] / np.maximum(n[i], 1))[v]
        order = np.argsort(-batch["scores"][i][v])
        s = s[order]
        expect.append(sum(np.logaddexp.reduce(s[k:]) - s[k] for k in range(len(s))))
    assert res.history[0]["loss"] == pytest.approx(np.mean(expect), rel=1e-4)


def test_kto_runs_on_an_unpaired_file_first_step_closed_form(tmp_path):
    recs = [{"prompt": "Q:", "completion": " yes", "label": True}, {"prompt": "Q:", "completion": " no",
                                                                    "label": False}] * 2
    path = _write_jsonl(tmp_path / "kto.jsonl", recs)
    cfg = apply_overrides(_cfg("file_unpaired", path=path, max_prompt_len=8),
                          {"loss__name": "kto", "loss__reference": "frozen", "train__steps": 2})
    res = train(cfg)
    # step 1: policy = reference, so every log-ratio and the KL point are 0 and each example costs λ(1 − σ(0))
    assert res.history[0]["loss"] == pytest.approx(0.5, abs=1e-6)
    assert res.history[1]["loss"] < 0.5  # one SGD step later the policy moved the right way


def test_file_source_errors_name_the_field_and_record(tmp_path):
    with pytest.raises(ValueError, match="data.kwargs.path is required"):
        plugins.make_data("file_pairwise", batch_size=2, seq_len=32, seed=0, max_prompt_len=8)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "chosen": " b", "rejected": " c"}) + "\n"
                   + json.dumps({"prompt": "a", "chosen": "", "rejected": " c"}) + "\n")
    with pytest.raises(InvalidDataError, match=r"bad.jsonl:2.*chosen"):
        plugins.make_data("file_pairwise", batch_size=1, seq_len=32, seed=0, path=str(bad), max_prompt_len=8)
    lists = _write_jsonl(tmp_path / "l.jsonl", [{"prompt": "p", "responses": [" a", " b", " c"],
                                                  "scores": [1, 2, 3]}])
    with pytest.raises(ValueError, match="max_responses=2 is smaller"):
        plugins.make_data("file_listwise", batch_size=1, seq_len=32, seed=0, path=lists, max_prompt_len=8,
                           max_responses=2)
    with pytest.raises(ValueError, match="max_prompt_len=40 must be in"):
        plugins.make_data("file_unpaired", batch_size=1, seq_len=32, seed=0, path=lists, max_prompt_len=40)


def test_export_then_continue_from_the_exported_policy(tmp_path):
    """SFT → export (HF layout) → a new run from ``model.name=pretrained`` starts from the exported weights."""
    from jalign.models import load_pretrained
    from jalign.train.step import split_model

    recs = builtin.load("sentiment_pairs", n=8)
    path = _write_jsonl(tmp_path / "p.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in recs])
    out = tmp_path / "export"
    cfg = apply_overrides(_cfg("file_sft", path=path, max_prompt_len=16),
                          {"mode": "sft", "train__steps": 2, "train__export": str(out)})
    res = train(cfg)
    trained = {k: np.asarray(v) for k, v in
               nnx.to_flat_state(res.state.params)}
    loaded = load_pretrained(out)
    _, params, _ = split_model(loaded)
    got = {k: np.asarray(v) for k, v in nnx.to_flat_state(params)}
    assert sorted(got) == sorted(trained)
    for k in trained:
        np.testing.assert_array_equal(got[k], trained[k], err_msg=str(k))
    assert not list(tmp_path.glob(".export.tmp-export*"))
    with pytest.raises(UserError, match="only jalign.models.CausalLM"):
        c = base_config()
        c.train.steps, c.train.progress, c.mesh.data, c.train.export = 1, False, 1, str(tmp_path / "x")
        train(c)
    assert not (tmp_path / "x").exists()


def test_export_refuses_the_workdir_and_foreign_directories_before_training(tmp_path):
    recs = builtin.load("sentiment_pairs", n=8)
    path = _write_jsonl(tmp_path / "p.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in recs])
    run = tmp_path / "run"
    cfg = apply_overrides(_cfg("file_sft", path=path, max_prompt_len=16),
                          {"mode": "sft", "workdir": str(run), "train__export": str(tmp_path)})
    with pytest.raises(ValueError, match="is the workdir or contains it"):
        train(cfg)
    assert not run.exists()  # refused before anything was written
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "paper.tex").write_text("keep me")
    cfg.train.export = str(foreign)
    with pytest.raises(ValueError, match=r"not a model export \(\['paper.tex'\]\)"):
        train(cfg)
    assert (foreign / "paper.tex").read_text() == "keep me"

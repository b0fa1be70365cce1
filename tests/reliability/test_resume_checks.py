"""Issue #25 items 2 and 4: resume checks what it resumes; runs are kept apart; metrics are not duplicated."""

from __future__ import annotations

import json
import shutil

import pytest
from _rel_helpers import ROOT, tiny_cfg

from jalign.cli import main
from jalign.train import ConfigError, train
from jalign.train.metrics import read_jsonl
from jalign.train.workdir import checkpoint_meta, checkpoint_steps, config_diff


def _snapshot(w):
    """Every file under w (except the lock) with its bytes."""
    return {str(p.relative_to(w)): p.read_bytes() for p in sorted(w.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_config_diff_lists_only_defining_keys():
    old = {"seed": 0, "loss": {"name": "dpo", "hparams": {}}, "optim": {"lr": 1.0}, "train": {"steps": 3},
           "workdir": "a"}
    new = {"seed": 0, "loss": {"name": "ipo", "hparams": {"beta": 0.1}}, "optim": {"lr": 1}, "train": {"steps": 9},
           "workdir": "b"}
    assert config_diff(old, new) == [("loss.hparams", {}, "<absent>"), ("loss.hparams.beta", "<absent>", 0.1),
                                     ("loss.name", "dpo", "ipo")]
    # a key the old config did not have yet, at its default now, is no change; at another value it is
    old["online"], new["online"] = {"num_samples": 2}, {"num_samples": 2, "algorithm": "", "eps_low": 0.2}
    assert config_diff(old, new)[3:] == []
    new["online"]["algorithm"] = "grpo"
    assert config_diff(old, new)[3:] == [("online.algorithm", "<absent>", "grpo")]


def test_changed_config_is_refused_with_a_diff_and_nothing_is_touched(tmp_path):
    w = tmp_path / "w"
    first = train(tiny_cfg(w, checkpoint__every=2))
    assert first.final_step == 4
    before = _snapshot(w)
    run_id = json.loads((w / "run.json").read_text())["run_id"]
    assert len(run_id) == 32 and all(checkpoint_meta(w / "checkpoints", s)["run_id"] == run_id for s in (2, 4))
    with pytest.raises(ConfigError) as ei:
        train(tiny_cfg(w, checkpoint__every=2, train__steps=8, loss__name="ipo", optim__lr=0.1, seed=1))
    msg = str(ei.value)
    assert f"workdir {w} holds run {run_id} at step 4 with a different configuration" in msg
    assert "loss.name: 'dpo' → 'ipo'; optim.lr: 0.5 → 0.1; seed: 0 → 1." in msg
    assert "train.steps" not in msg.split("configuration:")[1].split(".")[0]
    assert _snapshot(w) == before  # config.json, metrics and checkpoints as they were


def test_steps_may_grow_then_a_finished_run_trains_nothing_and_keeps_its_config(tmp_path, capsys):
    w = tmp_path / "w"
    train(tiny_cfg(w, checkpoint__every=2))
    grown = train(tiny_cfg(w, checkpoint__every=2, train__steps=6))
    assert (grown.start_step, grown.final_step) == (4, 6)
    assert [r["step"] for r in read_jsonl(w / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    config_json = (w / "config.json").read_bytes()
    assert json.loads(config_json)["train"]["steps"] == 6
    again = train(tiny_cfg(w, checkpoint__every=2, train__steps=6, train__log_every=3))
    assert again.history == [] and (again.start_step, again.final_step) == (6, 6)
    assert "is already finished at step 6 (train.steps=6); nothing was trained" in again.message
    assert (w / "config.json").read_bytes() == config_json  # not rewritten to describe a run that did not happen
    with pytest.raises(ConfigError, match=r"train.steps=5 is below step 6 .* may only grow"):
        train(tiny_cfg(w, checkpoint__every=2, train__steps=5))
    # The CLI: exit 0 and the message.
    cli_w = tmp_path / "cli"
    args = ["train", "--config", str(ROOT / "experiments" / "dpo_tiny.py"), "train.steps=3", "checkpoint.every=1",
            "train.progress=False", "mesh.data=1", "train.tensorboard=False", f"workdir={cli_w}"]
    assert main(args) == 0
    capsys.readouterr()
    before = _snapshot(cli_w)
    assert main(args + ["train.log_every=1"]) == 0
    out = capsys.readouterr()
    assert "already finished at step 3" in out.err and json.loads(out.out)["final_step"] == 3
    assert _snapshot(cli_w) == before


def test_resume_false_refuses_then_fresh_archives_the_old_run_and_prunes_only_the_new(tmp_path):
    w = tmp_path / "w"
    train(tiny_cfg(w, train__steps=6, checkpoint__every=1, checkpoint__keep=3))
    old_id = json.loads((w / "run.json").read_text())["run_id"]
    old_rows = read_jsonl(w / "metrics.jsonl")
    assert checkpoint_steps(w / "checkpoints") == [4, 5, 6]
    before = _snapshot(w)
    with pytest.raises(ConfigError, match=rf"holds the checkpoints of run {old_id} \(steps 4..6\); "
                                          r"checkpoint.resume=False would start a new run over them.*checkpoint.fresh=True"):
        train(tiny_cfg(w, seed=3, checkpoint__resume=False, checkpoint__every=1, checkpoint__keep=3))
    assert _snapshot(w) == before
    new = train(tiny_cfg(w, seed=3, checkpoint__resume=False, checkpoint__fresh=True, checkpoint__every=1,
                         checkpoint__keep=3))
    assert new.start_step == 0 and new.final_step == 4
    new_id = json.loads((w / "run.json").read_text())["run_id"]
    assert new_id != old_id
    arch = w / "archive" / old_id
    assert checkpoint_steps(arch / "checkpoints") == [4, 5, 6]  # the old run is intact, nothing pruned
    assert read_jsonl(arch / "metrics.jsonl") == old_rows
    assert all(checkpoint_meta(arch / "checkpoints", s)["run_id"] == old_id for s in (4, 5, 6))
    assert checkpoint_steps(w / "checkpoints") == [2, 3, 4]  # keep=3 counted the new run only
    assert all(checkpoint_meta(w / "checkpoints", s)["run_id"] == new_id for s in (2, 3, 4))
    assert [r["step"] for r in read_jsonl(w / "metrics.jsonl")] == [1, 2, 3, 4]
    # The next ordinary run resumes the new run (finished at its step 4), not the old run's step 6.
    nxt = train(tiny_cfg(w, seed=3, checkpoint__every=1, checkpoint__keep=3))
    assert nxt.final_step == 4 and nxt.history == [] and new_id in nxt.message


def test_resume_trims_metrics_to_the_checkpoint_step_and_is_bit_identical(tmp_path):
    w = tmp_path / "w"
    full = train(tiny_cfg(w, checkpoint__every=2, checkpoint__keep=5))
    rows = read_jsonl(w / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # A crash after step 4 was logged but before its checkpoint was finalised: only step 2 survives.
    shutil.rmtree(w / "checkpoints" / "4")
    res = train(tiny_cfg(w, checkpoint__every=2, checkpoint__keep=5))
    assert (res.start_step, res.final_step) == (2, 4)
    again = read_jsonl(w / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3, 4]  # no duplicated rows for steps 3 and 4
    assert [r["loss"] for r in again] == [r["loss"] for r in rows]
    assert [h["loss"] for h in res.history] == [h["loss"] for h in full.history[2:]]

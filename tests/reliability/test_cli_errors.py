"""Issue #25 items 8 (and 10 partly): one error path in the CLI: user errors are one line and exit 2."""

from __future__ import annotations

import json

import pytest
from _rel_helpers import ROOT, hold_lock

from jalign.cli import main
from jalign.errors import UnknownNameError, UserError
from jalign.train.plugins import MODELS, make_model, register_model

DPO_TINY = str(ROOT / "experiments" / "dpo_tiny.py")
BASE = ["train.progress=False", "train.tensorboard=False", "train.steps=2", "checkpoint.every=0"]


def _train_err(capsys, *overrides):
    rc = main(["train", "--config", DPO_TINY, *BASE, *overrides])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("jalign train: error: ")]
    assert rc == 2, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_missing_file_and_directory_as_data(tmp_path, capsys):
    line = _train_err(capsys, "data.name=file_pairwise", f"data.kwargs.path={tmp_path / 'nope.jsonl'}")
    assert f"file_pairwise: data.kwargs.path='{tmp_path / 'nope.jsonl'}': no such file" in line
    line = _train_err(capsys, "data.name=file_pairwise", f"data.kwargs.path={tmp_path}")
    assert f"data.kwargs.path='{tmp_path}' is a directory" in line


@pytest.mark.parametrize("value", ["-1.0", "0.0", "1e999"])
def test_bad_beta(capsys, value):
    line = _train_err(capsys, f"loss.hparams.beta={value}")
    assert "beta" in line and "loss.hparams" in line


def test_mesh_and_batch_that_do_not_fit_the_devices(capsys):
    line = _train_err(capsys, "mesh.data=64")  # the tests simulate 8 CPU devices
    assert "mesh.data*mesh.fsdp*mesh.tensor=64*1*1=64 != 8 devices" in line
    line = _train_err(capsys, "mesh.data=8", "data.batch_size=12")
    assert "data.batch_size=12 is not divisible by the batch-parallel devices mesh.data*mesh.fsdp=8" in line


def test_unknown_names_and_arguments(capsys):
    assert "unknown model 'tinyy'. Did you mean: tiny?" in _train_err(capsys, "model.name=tinyy")
    assert "unknown data source 'synthetic_pairwse'" in _train_err(capsys, "data.name=synthetic_pairwse")
    line = _train_err(capsys, "model.kwargs.d_modle=4")
    assert "model 'tiny' got unknown argument(s) ['d_modle']" in line
    line = _train_err(capsys, "model.name=pretrained")
    assert "model 'pretrained' needs argument(s) ['path']" in line
    with pytest.raises(KeyError):  # still a KeyError for library code that catches lookups
        make_model("tinyy", seed=0)
    with pytest.raises(UnknownNameError, match="^unknown model 'tinyy'"):  # no KeyError quoting
        make_model("tinyy", seed=0)


def test_busy_workdir_is_a_one_line_error(tmp_path, capsys):
    holder = hold_lock(tmp_path)
    try:
        line = _train_err(capsys, f"workdir={tmp_path}")
    finally:
        holder.kill()
        holder.wait()
    assert f"workdir {tmp_path} is in use by another run (pid {holder.pid}" in line


def test_documented_file_example_runs_with_dpo_tiny(tmp_path, capsys):
    """``jalign train --config experiments/dpo_tiny.py data.name=file_pairwise data.kwargs.path=FILE``: the file
    source's prompt budget defaults to half of a short data.seq_len instead of failing."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}:", "chosen": " yes.", "rejected": " no."}) + "\n"
                            for i in range(16)))
    rc = main(["train", "--config", DPO_TINY, *BASE, "mesh.data=1", "data.name=file_pairwise",
               f"data.kwargs.path={path}"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    assert json.loads(out.out)["final_step"] == 2


def test_internal_errors_keep_their_traceback(capsys):
    if "_reliability_boom" not in MODELS:
        @register_model("_reliability_boom")
        def _boom(*, seed):
            raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug") as ei:
        main(["train", "--config", DPO_TINY, *BASE, "model.name=_reliability_boom"])
    assert not isinstance(ei.value, UserError)
    assert any("internal error" in n for n in ei.value.__notes__)

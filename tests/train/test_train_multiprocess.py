"""Two processes on 127.0.0.1 (CPU, gloo collectives) reproduce the single-process loss trajectory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jalign.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["train.steps=3", "train.log_every=1", "train.progress=False", "checkpoint.every=2",
        "data.batch_size=8", "data.kwargs.num_examples=32", "train.tensorboard=False"]


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "jalign.cli", "train", "--config", str(ROOT / "experiments" / "dpo_tiny.py"),
            *ARGS, f"workdir={workdir}", *extra]


def _env(devices):
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(_cmd(tmp_path / "multi", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                   "--process-id", str(i)), cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    single = subprocess.run(_cmd(tmp_path / "single"), cwd=ROOT, env=_env(4), capture_output=True, text=True,
                            timeout=300)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]
    multi = read_jsonl(tmp_path / "multi" / "metrics.jsonl")  # written by process 0 only
    one = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in multi] == [r["step"] for r in one] == [1, 2, 3]
    for key in ("loss", "grad_norm", "rewards/margins", "logps/chosen"):
        np.testing.assert_allclose([r[key] for r in multi], [r[key] for r in one], rtol=1e-5, atol=1e-7,
                                   err_msg=key)
    # orbax checkpoints from both processes, plus every process's own data-iterator state
    ck = tmp_path / "multi" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir() if p.name.isdigit()) == ["2", "3"]
    for i in range(2):
        assert json.loads((ck / "data_states" / "3" / f"process_{i}.json").read_text()) == {"epoch": 0, "position": 24}
    assert one[0]["loss"] == pytest.approx(np.log(2.0), rel=1e-6) and one[-1]["loss"] < one[0]["loss"]

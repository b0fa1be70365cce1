"""Issue #25 item 1: two runs in one workdir. The second fails at once naming the owner; nothing is lost."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import pytest
from _rel_helpers import ROOT, env, hold_lock, tiny_cfg

from jalign.errors import UserError, WorkdirBusyError
from jalign.train import Checkpointer, train
from jalign.train.metrics import read_jsonl
from jalign.train.workdir import WorkdirLock


def test_second_run_fails_at_once_naming_owner_then_stale_lock_is_taken_over(tmp_path, caplog):
    w = tmp_path / "w"
    holder = hold_lock(w)
    try:
        t0 = time.perf_counter()
        with pytest.raises(WorkdirBusyError) as ei:
            train(tiny_cfg(w))
        assert time.perf_counter() - t0 < 5.0  # at once: before any model, data or compilation
        msg = str(ei.value)
        assert f"workdir {w} is in use by another run (pid {holder.pid} on host {socket.gethostname()}" in msg
        assert isinstance(ei.value, UserError)
        assert sorted(p.name for p in w.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its owner record remains, but the kernel dropped the flock.
    assert json.loads((w / ".lock").read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="jalign.train"):
        res = train(tiny_cfg(w))
    assert res.final_step == 4
    stale = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(stale) == 1 and f"pid {holder.pid}" in stale[0] and str(w) in stale[0]
    assert (w / ".lock").read_text() == ""  # a clean exit leaves no owner record
    with WorkdirLock(w):  # and releases the lock
        pass


def test_lock_is_exclusive_between_open_files_and_reentrant_after_release(tmp_path):
    a = WorkdirLock(tmp_path).acquire()
    owner = json.loads((tmp_path / ".lock").read_text())
    assert owner["host"] == socket.gethostname() and owner["pid"] > 0
    with pytest.raises(WorkdirBusyError, match=f"pid {owner['pid']}"):
        WorkdirLock(tmp_path).acquire()
    a.release()
    b = WorkdirLock(tmp_path).acquire()
    assert b.stale_owner is None  # released cleanly: not reported as stale
    b.release()


def test_concurrent_cli_runs_keep_the_first_runs_checkpoints_and_metrics(tmp_path):
    """The issue's probe: run A (seed 0, DPO) in W; run B (seed 1, IPO) started while A runs must fail."""
    w = tmp_path / "w"
    cmd = [sys.executable, "-m", "jalign.cli", "train", "--config", str(ROOT / "experiments" / "dpo_tiny.py"),
           f"workdir={w}", "train.steps=150", "checkpoint.every=25", "checkpoint.keep=10", "train.log_every=1",
           "train.progress=False", "train.tensorboard=False", "mesh.data=1", "data.kwargs.num_examples=32"]
    a = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((w / ".lock").exists() and (w / ".lock").read_text().strip()):
            assert a.poll() is None and time.time() < deadline, a.stderr.read() if a.poll() is not None else ""
            time.sleep(0.05)
        cfg_b = tiny_cfg(w, seed=1, loss__name="ipo", train__steps=150, checkpoint__every=25)
        with pytest.raises(WorkdirBusyError, match=f"pid {a.pid} "):
            train(cfg_b)
        assert a.poll() is None  # B was refused while A was still running
        out, err = a.communicate(timeout=300)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 0, err[-2000:]
    assert json.loads(out)["final_step"] == 150
    ck = Checkpointer(w / "checkpoints")
    steps = ck.all_steps()
    ck.close()
    assert steps == [25, 50, 75, 100, 125, 150]
    for s in steps:  # every checkpoint is run A's
        meta = json.loads((w / "checkpoints" / str(s) / "meta" / "metadata").read_text())
        assert meta["config"]["seed"] == 0 and meta["config"]["loss"]["name"] == "dpo"
    cfg = json.loads((w / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["loss"]["name"] == "dpo"
    rows = read_jsonl(w / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 151))  # one run's rows, none interleaved

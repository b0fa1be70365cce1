"""Shared helpers for the reliability tests: tiny configs, CLI subprocesses, a lock-holding process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jalign.train.config import base_config

ROOT = Path(__file__).resolve().parents[2]


def tiny_cfg(workdir="", **over):
    """The tiny model on synthetic pairs: a few steps of SGD, no progress bar, no TensorBoard."""
    c = base_config()
    c.workdir = str(workdir)
    c.data.batch_size = 8
    c.data.seq_len = 24
    c.data.kwargs.num_examples = 32
    c.model.kwargs.d_model = 8
    c.model.kwargs.d_hidden = 16
    c.optim.name = "sgd"
    c.optim.lr = 0.5
    c.optim.schedule = "constant"
    c.optim.grad_clip = 0.0
    c.train.steps = 4
    c.train.progress = False
    c.train.tensorboard = False
    c.checkpoint.async_save = False
    c.mesh.data = 1
    for k, v in over.items():
        node = c
        parts = k.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return c


def env(**extra):
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
                PYTHONPATH=str(ROOT), **extra)


def cli(*args, timeout=300):
    """``python -m jalign.cli ARGS`` in a subprocess; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "jalign.cli", *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)


HOLD_LOCK = """
import sys, time
from jalign.train.workdir import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(workdir) -> subprocess.Popen:
    """A process that takes the workdir lock and sleeps (kill it to leave a stale lock behind)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], cwd=ROOT, env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "locked", p.stderr.read()
    return p

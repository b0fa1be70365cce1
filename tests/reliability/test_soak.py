"""Issue #25 "done when": a run killed at 10 random steps and resumed each time ends bit-identical.

`jalign train` runs as subprocesses; each crash is `debug.exit_after_step=K` (`os._exit` right after step K's
checkpoint is requested: no cleanup, no flush, an asynchronous save possibly still in flight, which is what
`kill -9` leaves behind). A seeded RNG picks the 10 steps. The uninterrupted reference runs alongside. A
persistent XLA compilation cache in the test's tmp directory keeps the 12 process starts affordable (it
changes what is compiled when, not what is computed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from _rel_helpers import ROOT, env

from jalign.train import Checkpointer
from jalign.train.config import load_config
from jalign.train.metrics import read_jsonl
from jalign.train.plugins import make_model
from jalign.train.step import init_state, make_optimizer

STEPS = 40
CONFIG = ROOT / "experiments" / "dpo_tiny.py"
ARGS = [f"train.steps={STEPS}", "checkpoint.every=2", "train.log_every=1", "train.progress=False",
        "train.tensorboard=False", "data.batch_size=8", "data.kwargs.num_examples=24"]


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "jalign.cli", "train", "--config", str(CONFIG), f"workdir={workdir}", *ARGS,
            *extra]


def _env(cache):
    return env(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _final_state(workdir):
    cfg = load_config(CONFIG, ARGS[:1])
    like = init_state(make_model("tiny", seed=0), make_optimizer(cfg.optim, STEPS)[0], reference=True)[1]
    ck = Checkpointer(Path(workdir) / "checkpoints")
    try:
        assert ck.latest_step() == STEPS
        return ck.restore(STEPS, like)
    finally:
        ck.close()


@pytest.mark.slow
def test_ten_kills_at_random_steps_resume_to_a_bit_identical_end(tmp_path):
    cache = tmp_path / "xla_cache"
    kills = sorted(np.random.default_rng(25).choice(np.arange(1, STEPS), size=10, replace=False).tolist())
    ref = subprocess.Popen(_cmd(tmp_path / "ref"), cwd=ROOT, env=_env(cache), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        w = tmp_path / "soak"
        for k in kills:
            p = subprocess.run(_cmd(w, f"debug.exit_after_step={k}"), cwd=ROOT, env=_env(cache),
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 17, (k, p.stderr[-3000:])
            ck = Checkpointer(w / "checkpoints")
            survived = ck.latest_step()
            ck.close()
            # every=2: the newest finished checkpoint is K or the one before it (K's save may be in flight)
            assert survived is None or k - 3 <= survived <= k, (k, survived)
            logged = [r["step"] for r in read_jsonl(w / "metrics.jsonl")]
            assert logged == list(range(1, len(logged) + 1)) and logged[-1] <= k  # trimmed, no duplicates
        last = subprocess.run(_cmd(w), cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=300)
        assert last.returncode == 0, last.stderr[-3000:]
        assert json.loads(last.stdout)["final_step"] == STEPS
        out, err = ref.communicate(timeout=300)
        assert ref.returncode == 0, err[-3000:]
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
    (sa, da, _), (sb, db, _) = _final_state(tmp_path / "ref"), _final_state(w)
    la, ta = jax.tree.flatten(sa)
    lb, tb = jax.tree.flatten(sb)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert da == db  # the data iterator's position too
    ra, rb = read_jsonl(tmp_path / "ref" / "metrics.jsonl"), read_jsonl(w / "metrics.jsonl")
    assert [r["step"] for r in rb] == list(range(1, STEPS + 1))  # exactly one row per step
    drop = ("step_time_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ra] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rb]

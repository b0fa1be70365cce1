"""Issue #25 item 9: a damaged latest checkpoint is named and resume falls back to the newest intact one."""

from __future__ import annotations

import json
import logging

import jax
import numpy as np
from _rel_helpers import tiny_cfg

from jalign.train import train
from jalign.train.metrics import read_jsonl
from jalign.train.workdir import checkpoint_steps


def _truncate_largest_file(step_dir):
    files = sorted((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    big = files[-1]
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    return big


def test_damaged_latest_checkpoint_falls_back_and_resumes_bit_identical(tmp_path, caplog):
    ref = train(tiny_cfg(tmp_path / "ref", train__steps=6, checkpoint__every=2, checkpoint__keep=5))
    w = tmp_path / "w"
    train(tiny_cfg(w, train__steps=4, checkpoint__every=2, checkpoint__keep=5))
    _truncate_largest_file(w / "checkpoints" / "4")
    with caplog.at_level(logging.WARNING, logger="jalign.train"):
        res = train(tiny_cfg(w, train__steps=6, checkpoint__every=2, checkpoint__keep=5))
    msgs = [r.getMessage() for r in caplog.records]
    assert any("checkpoint step 4 in" in m and "is damaged" in m and "falling back" in m for m in msgs), msgs
    assert res.start_step == 2 and res.final_step == 6
    run_id = json.loads((w / "run.json").read_text())["run_id"]
    assert (w / "archive" / run_id / "damaged" / "4").is_dir()  # kept aside, not deleted
    assert checkpoint_steps(w / "checkpoints") == [2, 4, 6]
    # The fallback is safe: the same trajectory as an uninterrupted run.
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history[2:]]
    for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(ref.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["step"] for r in read_jsonl(w / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]

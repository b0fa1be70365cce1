"""Probes on a fixed probe set during training: schedule, values against an independent computation, no effect
on the training trajectory, records in ``probes.jsonl``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _train_helpers import np_seq_logps, small_cfg

from jalign.train import plugins, train
from jalign.train.probes import ProbeRunner, due, logps_probe
from jalign.train.step import logits_fn


def _probe_batch(cfg, n=4):
    src = plugins.make_data(cfg.data.name, batch_size=n, seq_len=cfg.data.seq_len, seed=123,
                             **dict(cfg.data.kwargs))
    return {k: np.asarray(v) for k, v in next(src).items()}


def _np_logps(res, batch, side):
    logits = logits_fn(res.graphdef, res.state.params, res.state.model_state, batch[f"{side}_ids"],
                       batch[f"{side}_attention_mask"])
    return np_seq_logps(np.asarray(logits), batch[f"{side}_ids"], batch[f"{side}_mask"])


def test_schedule():
    p = logps_probe({}, every=3)
    assert [s for s in range(0, 8) if due(p, s, start=0, final=7)] == [0, 3, 6, 7]
    p.every = 0
    assert [s for s in range(2, 8) if due(p, s, start=2, final=7)] == [2, 7]


def test_probe_values_and_no_effect_on_training(tmp_path):
    cfg = small_cfg(train__steps=4, loss__name="dpo")
    batch = _probe_batch(cfg)
    cfg.workdir = str(tmp_path / "run")
    res = train(cfg, probes=[logps_probe(batch, every=2, name="fixed")])
    plain = train(small_cfg(train__steps=4, loss__name="dpo"))
    assert [r["loss"] for r in res.history if "loss" in r] == [r["loss"] for r in plain.history]

    assert [r["step"] for r in res.probes] == [0, 2, 4]
    last = res.probes[-1]
    np.testing.assert_allclose(last["chosen_logps"], _np_logps(res, batch, "chosen"), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(last["rejected_logps"], _np_logps(res, batch, "rejected"), rtol=1e-5, atol=1e-4)
    assert last["mean_margin"] == pytest.approx(np.mean(np.subtract(last["chosen_logps"],
                                                                     last["rejected_logps"])), rel=1e-6)
    # the step-0 record is the initial model: equals a run of zero updates' probe
    init = train(small_cfg(train__steps=1, loss__name="dpo"), probes=[logps_probe(batch, every=0, name="fixed")])
    assert init.probes[0]["step"] == 0
    np.testing.assert_allclose(init.probes[0]["chosen_logps"], res.probes[0]["chosen_logps"], rtol=1e-6)

    logged = {r["step"]: r for r in res.history if "fixed/mean_chosen" in r}
    assert sorted(logged) == [0, 2, 4]
    assert logged[4]["fixed/mean_chosen"] == pytest.approx(last["mean_chosen"])
    on_disk = [json.loads(x) for x in (tmp_path / "run" / "probes.jsonl").read_text().splitlines()]
    assert [(r["step"], r["probe"]) for r in on_disk] == [(0, "fixed"), (2, "fixed"), (4, "fixed")]
    assert on_disk[-1]["chosen_logps"] == pytest.approx(last["chosen_logps"])


def test_bad_probes():
    with pytest.raises(ValueError, match="unique"):
        ProbeRunner([logps_probe({}, name="a"), logps_probe({}, name="a")], None)
    with pytest.raises(ValueError, match="every must be >= 0"):
        ProbeRunner([logps_probe({}, every=-1, name="a")], None)


def test_resume_drops_records_written_after_the_resume_step(tmp_path):
    (tmp_path / "probes.jsonl").write_text("".join(json.dumps({"step": s, "probe": "p"}) + "\n" for s in (0, 2, 4)))
    runner = ProbeRunner([logps_probe({}, name="p")], tmp_path, start=2)
    runner.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "probes.jsonl").read_text().splitlines()] == [0]


def test_a_probe_is_bound_to_one_model():
    cfg = small_cfg(train__steps=1, loss__name="dpo")
    probe = logps_probe(_probe_batch(cfg), every=0)
    train(cfg, probes=[probe])
    other = small_cfg(train__steps=1, loss__name="dpo", model__kwargs__d_model=16)
    with pytest.raises(ValueError, match="compiled for another model"):
        train(other, probes=[probe])

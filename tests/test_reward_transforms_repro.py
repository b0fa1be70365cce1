"""The reward-transforms reproduction: its committed results recomputed with numpy, and its claim rules on
synthetic results (the pipeline is not rerun here)."""

import json
from pathlib import Path

import numpy as np
import pytest

from jalign.reporting import t_interval
from paper_repro import reward_transforms as repro

RESULTS = Path(__file__).resolve().parents[1] / "figures" / "reward-transforms" / "results.json"


@pytest.fixture(scope="module")
def res():
    return json.loads(RESULTS.read_text())


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def _np_optimum(u, beta):
    z = np.asarray(u, np.float64) / beta  # uniform μ
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def test_committed_fixed_bandit_recomputed_with_numpy(res):
    fx = res["fixed"]
    r = np.asarray(repro.FIXED_REWARDS)
    refs = np.median(r, axis=1)  # numpy's default quantile = reference_quantile(q = ½)
    np.testing.assert_allclose(fx["references"], refs, atol=1e-12)
    raw = r.sum(0)
    tr = _np_log_sigmoid(r - refs[:, None]).sum(0)
    np.testing.assert_allclose(fx["raw_sum"], raw, atol=1e-12)
    np.testing.assert_allclose(fx["transformed_sum"], tr, atol=1e-12)
    assert raw[0] > raw[1] and tr[1] > tr[0]  # raw prefers the specialist, the AND the generalist
    for i, b in enumerate(fx["betas"]):
        np.testing.assert_allclose(fx["logps_raw"][i], _np_optimum(raw, b), atol=1e-10)
        np.testing.assert_allclose(fx["logps_transformed"][i], _np_optimum(tr, b), atol=1e-10)
    good = (r[0] > refs[0]) & (r[1] > refs[1])
    assert fx["good_in_both"] == good.tolist() == [False, True, False, False, False]


def test_committed_seed_results_are_consistent_and_claims_recompute(res):
    ps, cfg = res["per_seed"], res["config"]
    s, t = cfg["seeds"], len(cfg["kl_targets"])
    assert s >= 3 and np.asarray(ps["regret_raw"]).shape == (s, t)
    for m in ("raw", "transformed"):
        np.testing.assert_allclose(np.asarray(ps["best_true"]) - np.asarray(ps[f"true_{m}"]), ps[f"regret_{m}"],
                                   atol=1e-12)
        assert np.all(np.asarray(ps[f"regret_{m}"]) >= -1e-9)  # nothing beats the true frontier at its KL
        assert np.all((np.asarray(ps[f"share_{m}"]) >= 0) & (np.asarray(ps[f"share_{m}"]) <= 1))
    assert max(ps["kl_max_error"]) < 1e-6
    # the transform's gradient weight σ(−x) on the grid, recomputed
    grid = np.asarray(cfg["grad_grid"])
    np.testing.assert_allclose(ps["grad_grid_autodiff"][0], 1 / (1 + np.exp(grid)), atol=1e-12)
    # the summary intervals and the claims follow from the per-seed numbers
    for j in range(t):
        np.testing.assert_allclose(res["summary"]["regret_raw"][j], t_interval(np.asarray(ps["regret_raw"])[:, j]))
    d = np.asarray(ps["share_transformed"])[:, -1] - np.asarray(ps["share_raw"])[:, -1]
    mean, lo, hi = t_interval(d)
    assert res["claims"][1]["evidence"]["interval"] == pytest.approx([lo, hi])
    assert [c["status"] for c in repro.claims(res)] == [c["status"] for c in res["claims"]]
    assert [c["status"] for c in res["claims"]] == ["holds"] * 4


def _synthetic(share_diff, regret_diff, *, lr_sign=1.0, grad_err=0.0, s=4):
    fx = {"betas": [0.5, 1.0], "raw_sum": [3.0, 2.0], "transformed_sum": [-2.0, -0.5], "references": [0.0, 0.0]}
    fx["logps_raw"] = [[lr_sign * 1.0 / b, 0.0] for b in fx["betas"]]
    fx["logps_transformed"] = [[-1.5 / b, 0.0] for b in fx["betas"]]
    fx["share_good_raw"], fx["share_good_transformed"] = [0.1, 0.1], [0.9, 0.9]
    grid = [-1.0, 0.0, 1.0]
    sig = list(1 / (1 + np.exp(np.asarray(grid))))
    base = np.full((s, 2), 0.5)
    rd = np.asarray(regret_diff, float).reshape(s, 2)
    return {
        "config": {"seeds": s, "kl_targets": [0.5, 1.0], "num_arms": 8, "grad_grid": grid},
        "fixed": fx,
        "per_seed": {
            "share_raw": base.tolist(), "share_transformed": (base + np.asarray(share_diff)[:, None]).tolist(),
            "share_reference": [0.25] * s, "kl_max_error": [1e-12] * s,
            "regret_raw": (1.0 + rd).tolist(), "regret_transformed": np.ones((s, 2)).tolist(),
            "hack_mass_raw": base.tolist(), "hack_mass_transformed": base.tolist(),
            "grad_grid_autodiff": [[v + grad_err for v in sig]] * s, "grad_grid_error": [grad_err] * s,
            "grad_arms_error": [0.0] * s, "grad_arms_monotone": [True] * s, "grad_arms_halves": [True] * s,
            "weight_share_below": [0.7] * s, "mass_share_below": [0.5] * s,
        },
    }


def test_claim_rules_pass_fail_and_inconclusive_on_synthetic_results():
    good = _synthetic([0.2, 0.25, 0.3, 0.22], [0.3, 0.5, 0.4, 0.6, 0.35, 0.55, 0.45, 0.5])
    st = [c["status"] for c in repro.claims(good)]
    assert st == ["holds"] * 4
    for c in repro.claims(good):
        assert c["source"] == "reconstruction" and c["evidence"]["rule"] in repro.RULES.values()
    bad = _synthetic([-0.2, -0.25, -0.3, -0.22], [0.3, -0.5, 0.4, -0.6, 0.35, -0.55, 0.45, -0.5], lr_sign=-1.0,
                     grad_err=1e-6)
    assert [c["status"] for c in repro.claims(bad)] == ["does not hold"] * 4
    # one KL target straddling 0 makes the hacking claim inconclusive (the weakest target decides)
    mixed = _synthetic([-0.3, 0.3, 0.1, 0.0], [0.3, 0.5, 0.4, -0.6, 0.35, 0.55, 0.45, 0.5])
    st = [c["status"] for c in repro.claims(mixed)]
    assert st[1] == "inconclusive" and st[2] == "inconclusive"

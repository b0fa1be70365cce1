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
    assert [c["status"] for c in res["claims"][:4]] == ["holds"] * 4


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


# ----------------------------------------------------------------------------------------------------------
# the small LM


def _lm_runs(res):
    lm = res["lm"]
    return {m: sorted((r for r in lm["runs"] if r["method"] == m), key=lambda r: r["seed"])
            for m in lm["config"]["methods"]}


def test_committed_lm_setup_is_the_documented_one(res):
    lm = res["lm"]
    cfg = lm["config"]
    assert cfg["methods"] == ["sum", "transformed_sum"] and cfg["seeds"] >= 3
    assert cfg["thresholds"] == repro.LM_THRESHOLDS
    assert cfg["refs"] == [repro.LM_THRESHOLDS["lexicon"], repro.LM_THRESHOLDS["conciseness"]]
    assert [cfg["lexicon_scale"], cfg["conciseness_scale"]] == [repro.LM_SCALES["lexicon"],
                                                                repro.LM_SCALES["conciseness"]]
    runs = _lm_runs(res)
    assert all([r["seed"] for r in v] == list(range(cfg["seeds"])) for v in runs.values())
    # the held-out prompts are not training prompts (the sentiment pairs' places)
    from jalign.data import builtin

    train_prompts = {r["prompt"] for r in builtin.load("sentiment_pairs", n=500, seed=0)}
    assert not set(cfg["heldout_prompts"]) & train_prompts
    n = len(cfg["heldout_prompts"]) * cfg["eval_samples_per_prompt"]
    for r in [lm["reference_samples"]] + [r["samples"] for v in runs.values() for r in v]:
        assert all(len(r[k]) == n for k in ("lexicon", "conciseness", "length", "logp", "ref_logp"))


def test_committed_lm_samples_are_consistent(res):
    """Each sample's conciseness is its closed form from the saved length; the saved texts score their lexicon
    reward; the reference's own samples have ln π = ln π_ref (its KL estimate is 0)."""
    from jalign.data.builtin import lexicon_reward

    lm = res["lm"]
    cfg = lm["config"]
    for s in [lm["reference_samples"]] + [r["samples"] for r in lm["runs"]]:
        n = np.asarray(s["length"], np.float64)
        assert np.all((n >= 1) & (n <= cfg["max_new_tokens"]))
        want = cfg["conciseness_scale"] * (1 - np.minimum(n, cfg["conciseness_max_len"]) / cfg["conciseness_max_len"])
        np.testing.assert_allclose(s["conciseness"], want, rtol=1e-5, atol=1e-5)
        for text, v in zip(s["texts"], s["lexicon"], strict=False):
            assert v == pytest.approx(cfg["lexicon_scale"] * lexicon_reward(text), abs=1e-4)
        assert np.all(np.abs(np.asarray(s["lexicon"])) < cfg["lexicon_scale"])
    ref = lm["reference_samples"]
    np.testing.assert_allclose(ref["logp"], ref["ref_logp"], atol=2e-2)


def test_committed_lm_claims_recomputed_with_numpy(res):
    from scipy import stats

    lm = res["lm"]
    th = lm["config"]["thresholds"]
    runs = _lm_runs(res)

    def per_seed(m, f):
        return np.asarray([f(np.asarray(r["samples"]["lexicon"]), np.asarray(r["samples"]["conciseness"]),
                             np.asarray(r["samples"]["logp"]) - np.asarray(r["samples"]["ref_logp"]))
                           for r in runs[m]])

    both = lambda a, b, k: np.mean((a >= th["lexicon"]) & (b >= th["conciseness"]))
    weak = lambda a, b, k: min(np.mean(a >= th["lexicon"]), np.mean(b >= th["conciseness"]))
    lm_claims = res["claims"][4:]
    assert len(lm_claims) == 2
    for claim, f in zip(lm_claims, (both, weak), strict=True):
        d = per_seed("transformed_sum", f) - per_seed("sum", f)
        half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
        ev = claim["evidence"]
        assert ev["seeds"] == d.size and ev["estimate"] == pytest.approx(d.mean(), abs=1e-12)
        if half > 0:
            assert ev["interval"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-9)
            lo, hi = d.mean() - half, d.mean() + half
            want = "holds" if lo > 0 else "does not hold" if hi < 0 else "inconclusive"
            assert claim["status"] == want
        else:
            assert claim["status"] == "inconclusive"
    # the per-seed statistics (lm_sample_stats) against numpy, KL included
    ps = repro.lm_per_seed(lm)
    for m in runs:
        np.testing.assert_allclose(ps[m]["good_both"], per_seed(m, both), atol=1e-12)
        np.testing.assert_allclose(ps[m]["kl"], per_seed(m, lambda a, b, k: k.mean()), atol=1e-9)
        np.testing.assert_allclose(ps[m]["lexicon"], per_seed(m, lambda a, b, k: a.mean()), atol=1e-9)


def _synthetic_lm(good_raw, good_tr, *, n=8):
    """Synthetic LM results: per seed, a share ``good`` of the n samples is good in both (lexicon 3, conciseness
    5), the rest bad in conciseness (lexicon 3, conciseness 1)."""
    def samples(share):
        k = int(round(share * n))
        con = [5.0] * k + [1.0] * (n - k)
        return {"lexicon": [3.0] * n, "conciseness": con, "length": [10] * n, "logp": [-1.0] * n,
                "ref_logp": [-2.0] * n, "texts": []}

    cfg = {**repro.lm_settings(True), "methods": list(repro.LM_METHODS), "seeds": len(good_raw)}
    runs = [{"method": m, "seed": s, "samples": samples(g)} for m, gs in (("sum", good_raw),
                                                                         ("transformed_sum", good_tr))
            for s, g in enumerate(gs)]
    return {"lm": {"config": cfg, "runs": runs, "reference_samples": samples(0.25)}}


def test_lm_claim_rules_pass_fail_and_inconclusive_on_synthetic_results():
    up = repro._lm_claims(_synthetic_lm([0.25, 0.375, 0.25, 0.5], [0.75, 0.875, 0.625, 0.875]))
    assert [c["status"] for c in up] == ["holds", "holds"]
    assert up[0]["evidence"]["estimate"] == pytest.approx(0.4375)
    for c in up:
        assert c["source"] == "reconstruction" and c["evidence"]["rule"] in repro.RULES.values()
    down = repro._lm_claims(_synthetic_lm([0.75, 0.875, 0.625, 0.875], [0.25, 0.375, 0.25, 0.5]))
    assert [c["status"] for c in down] == ["does not hold", "does not hold"]
    mixed = repro._lm_claims(_synthetic_lm([0.25, 0.75, 0.5, 0.5], [0.75, 0.25, 0.625, 0.375]))
    assert [c["status"] for c in mixed] == ["inconclusive", "inconclusive"]
    assert repro.lm_sample_stats(_synthetic_lm([0.5] * 3, [0.5] * 3)["lm"]["reference_samples"],
                                 repro.LM_THRESHOLDS)["kl"] == pytest.approx(1.0)

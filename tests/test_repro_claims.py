"""The reproductions' claim rules on synthetic results that must pass and must fail, the shared status helpers
against closed forms, and every committed claim's evidence (the pipelines are not rerun here; dpa-logic's rules
are tested in tests/logic/test_logic_repro.py, rankings' in tests/test_rankings_repro.py)."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

import paper_repro
from jalign.reporting import MIN_SEEDS, SOURCES, check_claim, t_interval, t_interval_from_moments
from paper_repro import ches, copg_bandit, entanglement, fdpg
from paper_repro._common import exact, one_seed, seeded, seeded_all, seeded_moments

ROOT = Path(__file__).resolve().parents[1]
CONVERTED = ("copg-bandit", "fdpg", "dpa-logic", "entanglement", "ches")


def _committed(name):
    return json.loads((ROOT / "figures" / name / "results.json").read_text())


def _row(claims, start):
    rows = [c for c in claims if c["claim"].startswith(start)]
    assert len(rows) == 1, (start, [c["claim"] for c in claims])
    return rows[0]


# ---------------------------------------------------------------------------------------------------------
# Every committed claim


@pytest.mark.parametrize("name", sorted(paper_repro.registry()))
def test_every_committed_claim_is_well_formed_and_no_construction_row_holds(name):
    claims = _committed(name)["claims"]
    assert claims
    for i, c in enumerate(claims):
        check_claim(c, f"{name} claim {i}")
        ev = c["evidence"]
        assert (ev["kind"] == "construction") == (c["status"] == "by construction")
        if ev["kind"] == "seeds" and c["status"] in ("holds", "does not hold"):
            assert ev["seeds"] >= MIN_SEEDS and ev["interval"] is not None
            lo, hi = ev["interval"]
            assert lo <= ev["estimate"] <= hi
        if name in CONVERTED:
            assert c["source"] in SOURCES
            assert "cannot fail" not in ev["rule"] or c["status"] == "by construction", c["claim"]
            if ev["seeds"] == 1 and ev["kind"] == "seeds":
                assert c["status"] == "inconclusive", c["claim"]


# ---------------------------------------------------------------------------------------------------------
# The status helpers


def test_t_interval_from_moments_equals_t_interval():
    x = np.array([0.3, -0.1, 0.7, 0.25, 0.4])
    assert t_interval_from_moments(x.mean(), x.std(ddof=1), len(x)) == pytest.approx(t_interval(x), abs=1e-12)
    assert math.isnan(t_interval_from_moments(1.0, 0.5, 1)[1])


def test_seeded_status_follows_the_interval_and_the_seed_count():
    # mean 0.35, sd 0.05, t_{0.975,2}·sd/√3 = 0.124: [0.226, 0.474]
    st, ev, _ = seeded([0.3, 0.35, 0.4], 0.0, above=True, rule="r")
    assert st == "holds" and ev["interval"] == pytest.approx([0.35 - 0.12421, 0.35 + 0.12421], abs=1e-4)
    assert seeded([0.3, 0.35, 0.4], 0.0, above=False, rule="r")[0] == "does not hold"
    assert seeded([0.1, 0.2, 0.3], 0.0, above=True, rule="r")[0] == "inconclusive"  # [−0.048, 0.448]
    assert seeded([-1.0, 1.0, 0.1], 0.0, above=True, rule="r")[0] == "inconclusive"
    st, ev, txt = seeded([0.2, 0.21], 0.0, above=True, rule="r")  # two seeds: never decided
    assert st == "inconclusive" and ev["seeds"] == 2 and "fewer than 3 seeds" in txt
    x = np.array([0.5, 0.7, 0.6, 0.55])
    a, b = seeded(x, 0.4, above=True, rule="r"), seeded_moments(x.mean(), x.std(ddof=1), 4, 0.4, above=True, rule="r")
    assert a[0] == b[0] == "holds" and a[1]["interval"] == pytest.approx(b[1]["interval"])
    st, ev, txt = one_seed(3.0, need="x above 0", passes=True)
    assert st == "inconclusive" and ev == {"kind": "seeds", "seeds": 1, "estimate": 3.0, "interval": None,
                                           "rule": ev["rule"]} and ev["rule"].endswith("x above 0")
    assert exact(True, 0.0, "r")[0] == "holds" and exact(False, 1.0, "r")[0] == "does not hold"


def test_seeded_all_needs_every_statistic():
    up, mid, down = [0.3, 0.35, 0.4], [0.1, 0.2, 0.3], [-0.4, -0.35, -0.3]  # holds, inconclusive, does not hold
    st, ev, txt = seeded_all([("a", up), ("b", [1.0, 1.1, 1.2])], 0.0, above=True, rule="r")
    assert st == "holds" and ev["estimate"] == pytest.approx(1.1)  # every part holds: the last part's evidence
    st, ev, _ = seeded_all([("a", up), ("b", mid)], 0.0, above=True, rule="r")
    assert st == "inconclusive" and ev["estimate"] == pytest.approx(0.2)
    st, ev, txt = seeded_all([("a", up), ("b", mid), ("c", down)], 0.0, above=True, rule="r")
    assert st == "does not hold" and ev["estimate"] == pytest.approx(-0.35) and "deciding part: c" in txt
    assert seeded_all([("a", [0.2, 0.21])], 0.0, above=True, rule="r")[0] == "inconclusive"  # two seeds


# ---------------------------------------------------------------------------------------------------------
# copg-bandit


def _copg(copg=0.0131, copg_sd=3e-4, fp=1e-7, long=1e-8, long_ci=1e-8, ipo=0.15, ipo_fp=0.15, pg0=0.64,
          pgv_fp=0.015, pgv_long=0.0147, pgv_ci=1e-4):
    def m(final, sd=1e-3, pop=0.1, lr=0.1, lr_ci=1e-3):
        return {"final_regret": final, "final_regret_std": sd, "final_regret_ci95": 1.96 * sd / math.sqrt(20),
                "population_fixed_point_regret": pop, "long_run_final_regret": lr, "long_run_final_regret_ci95": lr_ci}
    return {"initial_regret": 0.29, "config": {"seeds": 20, "epochs": 100},
            "long_run": {"seeds": 5, "epochs": 500},
            "ipo_tau_sweep": {"min_regret_over_tau": 7e-4, "argmin_tau": 0.1},
            "methods": {"copg": m(copg, copg_sd, fp, long, long_ci),
                        "ipo": {**m(ipo), "analytic_fixed_point_regret": ipo_fp},
                        "pg_zero_baseline": m(pg0), "pg_value_baseline": m(0.027, pop=pgv_fp, lr=pgv_long, lr_ci=pgv_ci)}}


def test_copg_rules_pass_and_fail():
    c = copg_bandit.claims(_copg())
    assert [x["status"] for x in c] == ["does not hold", "holds", "holds", "holds", "holds"]
    assert _row(c, "CoPG reaches zero regret")["evidence"]["seeds"] == 20
    assert _row(c, "IPO")["source"] == "reconstruction"  # τ = β is the project's choice
    c = copg_bandit.claims(_copg(copg=2e-4, copg_sd=1e-4, fp=1e-3, ipo_fp=0.01, pg0=0.2, pgv_fp=1e-4))
    assert _row(c, "CoPG reaches zero regret within")["status"] == "holds"
    assert _row(c, "CoPG converges")["status"] == "does not hold"  # the exact fixed point is not π*
    assert _row(c, "IPO")["status"] == "does not hold"
    assert _row(c, "off-policy PG with baseline 0")["status"] == "does not hold"
    assert _row(c, "off-policy PG with the value")["status"] == "does not hold"
    c = copg_bandit.claims(_copg(copg=1e-3, copg_sd=2e-3))  # the interval straddles 1e-3
    assert _row(c, "CoPG reaches zero regret within")["status"] == "inconclusive"
    # the long run's half-width 1.96·sd/√5 is turned back into sd: with a wide one the row is not decided
    assert _row(copg_bandit.claims(_copg(long=5e-4, long_ci=1e-3)), "CoPG converges")["status"] == "inconclusive"


# ---------------------------------------------------------------------------------------------------------
# fdpg (the committed structure with synthetic values put in)


def test_fdpg_toy_rules_pass_and_fail():
    res = _committed("fdpg")
    c = fdpg.claims(res)
    assert _row(c, "[toy] Reverse KL")["status"] == "holds"
    for start in ("[toy] Jensen–Shannon is Pareto", "[toy] No universally best"):
        assert _row(c, start)["status"] == "by construction"
    bad = copy.deepcopy(res)
    bad["exact"]["reverse_kl"]["entropy"] = bad["exact"]["js"]["entropy"] - 0.005  # lowest, but within 0.01
    bad["exact"]["forward_kl"]["expected_b"] = bad["exact"]["tv"]["expected_b"] + 0.1
    bad["exact"]["js"]["expected_b"] = bad["exact"]["reverse_kl"]["expected_b"] + 0.1  # outside the RKL–FKL range
    c = fdpg.claims(bad)
    assert _row(c, "[toy] Reverse KL")["status"] == "does not hold"
    assert _row(c, "[toy] Forward KL is mass-covering")["status"] == "does not hold"
    assert _row(c, "[toy] Jensen–Shannon lies between")["status"] == "does not hold"
    assert _row(c, "[toy] Jensen–Shannon is Pareto")["status"] == "by construction"


def test_fdpg_variance_rule_uses_the_policies_that_cover_p():
    res = copy.deepcopy(_committed("fdpg"))
    n = len(res["variance_policies"]["max_log_p_over_pi"])
    res["variance_policies"]["max_log_p_over_pi"] = [1.0] * 4 + [100.0] * (n - 4)
    for k in fdpg.PAPER_FOUR:
        res["variance"][k]["relative_variance_per_policy"] = [10.0] * 4 + [1e60] * (n - 4)
    res["variance"]["forward_kl"]["relative_variance_per_policy"] = [5.0] * 4 + [1e90] * (n - 4)
    # the collapsed policies (ln p/π = 100) would make forward KL the noisiest; on those covering p it is not
    assert _row(fdpg.claims(res), "[toy] Forward KL's")["status"] == "does not hold"
    res["variance"]["forward_kl"]["relative_variance_per_policy"] = [50.0] * 4 + [1.0] * (n - 4)
    assert _row(fdpg.claims(res), "[toy] Forward KL's")["status"] == "holds"


def test_fdpg_sampled_rule_over_seeds():
    res = copy.deepcopy(_committed("fdpg"))
    ex = res["exact"]
    for k, s in res["sampled"].items():
        for i, r in enumerate(s["runs"]):
            r["expected_b"], r["entropy"] = ex[k]["expected_b"] + 0.01 * (i - 1), ex[k]["entropy"]
    c = _row(fdpg.claims(res), "[toy] Sampled")
    assert c["status"] == "holds" and c["evidence"]["seeds"] == len(res["sampled"]["js"]["runs"]) >= 3
    for s in res["sampled"].values():
        for i, r in enumerate(s["runs"]):
            r["expected_b"] += 0.2 + 0.01 * i
    assert _row(fdpg.claims(res), "[toy] Sampled")["status"] == "does not hold"
    for s in res["sampled"].values():
        s["runs"] = s["runs"][:1]
    assert _row(fdpg.claims(res), "[toy] Sampled")["status"] == "inconclusive"


def _fdpg_lm(H, E, cos, kl, n=3, spread=0.0):
    """A minimal small-LM section of the fdpg results: per divergence (FKL, RKL, JS, TV) the final entropy per
    token H, E_π[φ], gradient cosine and KL(p‖π) (KL(p‖a) = 3), each on ``n`` seeds with independent noise of
    sd ``spread`` per divergence and seed."""
    rng = np.random.default_rng(0)

    def final(i):
        def noisy(v):
            return list(v + spread * rng.normal(size=n))

        return {"entropy_per_token": noisy(H[i]), "expected_phi": noisy(E[i]), "grad_cosine": noisy(cos[i]),
                "kl_p_pi": noisy(kl[i]), "kl_p_pi_init": [3.0] * n, "rel_var": [10.0] * n}

    runs = {k: {"final": final(i)} for i, k in enumerate(fdpg.PAPER_FOUR)}
    t = {"ref": {"entropy_per_token": 1.9}, "runs": runs}
    return {"setup": {"steps": 30, "seeds": list(range(n))}, "base": {"entropy_per_token": 2.0},
            "targets": {"pointwise": t, "distributional": copy.deepcopy(t)}}


def _lm_status(lm, start, target="pointwise"):
    tag = "[LM, pointwise: p ∝ a·max(b, ε)]" if target == "pointwise" else "[LM, distributional"
    rows = [c for c in fdpg._lm_claims(lm) if c["claim"].startswith(tag) and start in c["claim"]]
    assert len(rows) == 1, start
    return rows[0]


def test_fdpg_lm_rules_pass_and_fail_over_seeds():
    # order FKL, RKL, JS, TV: RKL lowest entropy (below H(p) = 1.9), JS between RKL and FKL on both axes and
    # undominated, FKL the lowest gradient cosine, every KL(p‖π) below KL(p‖a) = 3
    good = _fdpg_lm(H=[2.1, 1.5, 1.8, 1.7], E=[0.2, 0.9, 0.6, 0.5], cos=[0.1, 0.3, 0.3, 0.4], kl=[2.5, 2.0, 2.2, 2.4],
                    spread=0.01)
    for start in ("Reverse KL collapses", "Jensen–Shannon balances", "gradient estimator", "moves the LM towards p"):
        row = _lm_status(good, start)
        assert row["status"] == "holds", (start, row["measured"])
        assert row["evidence"]["seeds"] == 3 and row["evidence"]["interval"] is not None
    # RKL 1.584 vs JS 1.590 (the committed one-seed case) with seed-to-seed spread 0.01: inside the noise
    near = _fdpg_lm(H=[2.1, 1.584, 1.590, 1.7], E=[0.2, 0.9, 0.6, 0.5], cos=[0.1, 0.3, 0.3, 0.4],
                    kl=[2.5, 2.0, 2.2, 2.4], spread=0.01)
    assert _lm_status(near, "Reverse KL collapses")["status"] == "inconclusive"
    # RKL above H(p); JS outside the RKL–FKL range in E_π[φ]; FKL the least noisy; TV moves away from p
    bad = _fdpg_lm(H=[2.1, 1.95, 1.8, 1.7], E=[0.2, 0.9, 0.95, 0.5], cos=[0.5, 0.3, 0.3, 0.4],
                   kl=[2.5, 2.0, 2.2, 3.4], spread=0.01)
    for start in ("Reverse KL collapses", "Jensen–Shannon balances", "gradient estimator", "moves the LM towards p"):
        assert _lm_status(bad, start)["status"] == "does not hold", start
    # distributional target: alignment is closeness to E_p[φ] = 0.5, so E = 0.95 for JS is far, 0.5 for TV exact
    assert _lm_status(bad, "Jensen–Shannon balances", "distributional")["status"] == "does not hold"
    # one seed: never decided, whatever the values
    one = _fdpg_lm(H=[2.1, 1.5, 1.8, 1.7], E=[0.2, 0.9, 0.6, 0.5], cos=[0.1, 0.3, 0.3, 0.4], kl=[2.5, 2.0, 2.2, 2.4],
                   n=1)
    assert all(c["status"] == "inconclusive" for c in fdpg._lm_claims(one))


def test_fdpg_lm_committed_rows_are_seeded():
    res = _committed("fdpg")
    seeds = res["lm"]["setup"]["seeds"]
    assert len(seeds) >= 3 and res["quick"] is True
    rows = [c for c in res["claims"] if c["claim"].startswith("[LM")]
    assert len(rows) == 8
    for c in rows:
        assert c["evidence"]["kind"] == "seeds" and c["evidence"]["seeds"] == len(seeds)
    for t in res["lm"]["targets"].values():
        for r in t["runs"].values():
            assert all(len(v) == len(seeds) for v in r["final"].values())
            assert np.shape(r["history"]["expected_phi"]) == (len(seeds), len(r["history"]["step"]))
        # the seeds are different runs: the JS policy's final E_π[φ] differs between seeds
        assert len(set(t["runs"]["js"]["final"]["expected_phi"])) == len(seeds)
    assert [c["status"] for c in fdpg.claims(res)] == [c["status"] for c in res["claims"]]


# ---------------------------------------------------------------------------------------------------------
# entanglement


def _ent_run(variant, loss, mitigation, deltas, cos=(0.5, 0.5, 0.5)):
    """A run with one probe curve per seed: Δ chosen = ``deltas[s]``, mean cosine = ``cos[s]``."""
    n = len(deltas)
    return {"variant": variant, "loss": loss, "mitigation": mitigation, "seeds": list(range(n)),
            "train_loss": [[0.5, 0.4]] * n,
            "curves": {"step": [0, 12], "cosine": [[c, c] for c in cos[:n]],
                       "mean_chosen_logps": [[-10.0, -10.0 + d] for d in deltas],
                       "mean_rejected_logps": [[-12.0, -20.0]] * n}}


UP, DOWN, MIXED = (1.0, 1.2, 1.1), (-3.0, -3.3, -2.9), (-1.0, 1.0, 0.1)


def _ent(long_suffix_deltas, normalized_deltas, *, dpo=None, cos=None, masked=UP):
    """Synthetic entanglement results; ``dpo``/``cos``: per-variant per-seed Δ chosen / mean cosine of plain DPO."""
    dpo = {"one_token": UP, "short_suffix": (-1.0, -1.1, -0.9), **(dpo or {})}
    cos = {"one_token": (0.2, 0.25, 0.22), "short_suffix": (0.4, 0.45, 0.42), "long_suffix": (0.6, 0.62, 0.65),
           **(cos or {})}
    runs = []
    for v in ("one_token", "short_suffix"):
        runs.append(_ent_run(v, "dpo", "none", dpo[v], cos[v]))
        runs += [_ent_run(v, "dpo", m, masked) for m in ("normalized", "masked")]
    for k, d in long_suffix_deltas.items():
        runs.append(_ent_run("long_suffix", k, "none", d, cos["long_suffix"]))
    for k, d in normalized_deltas.items():
        runs.append(_ent_run("long_suffix", k, "normalized", d))
    runs.append(_ent_run("long_suffix", "dpo", "masked", masked))
    toy = {"lr": 1e-4, "max_relative_error": 1e-4,
           "predictions": {"dpo": {"case": "ideal", "observed_case": "ideal"}},
           "suffix_curves": {"0": {m: {"chosen_logps": [0.0, 0.5]} for m in ("dpo", "normalized", "masked")},
                             "8": {"dpo": {"chosen_logps": [0.0, -3.0]}, "normalized": {"chosen_logps": [0.0, 0.2]},
                                   "masked": {"chosen_logps": [0.0, 0.5]}}}}
    return {"lm": {"runs": runs}, "toy": toy}


FALLS = {"dpo": DOWN, "ipo": (-4.6, -4.4, -4.8), "simpo": (-3.8, -3.6, -4.0), "rdpo": DOWN,
         "sppo_hard": (-4.2, -4.0, -4.1)}


def test_entanglement_lm_rows_pass_fail_and_stay_open_on_seeded_results():
    norm = {k: (5.0, 5.2, 4.9) for k in FALLS}
    c = entanglement.claims(_ent(FALLS, norm))
    row = _row(c, "[small LM, long suffix] every margin")
    # R-DPO's runs are identical to DPO's (same curves): counted once
    assert "falls under 4 of 4 distinct losses" in row["measured"] and "DPO = R-DPO" in row["measured"]
    assert row["status"] == "holds" and row["evidence"]["seeds"] == 3
    assert _row(c, "[small LM, long suffix] the normalised")["status"] == "holds"
    assert _row(c, "[small LM] one differing token: under DPO")["status"] == "holds"
    assert _row(c, "[small LM] with a shared suffix")["status"] == "holds"  # short −1.0, long −3.1
    assert _row(c, "[small LM] gradient cosine is positive")["status"] == "holds"
    assert _row(c, "[small LM] the pairwise-normalised update")["status"] == "holds"
    assert _row(c, "[small LM] token masking")["status"] == "holds"
    assert _row(c, "[small LM] one differing token: the gradient cosine")["status"] == "does not hold"  # 0.2 > 0
    # one loss clearly rises (DPOP): "every loss falls" does not hold; one mixed loss: inconclusive
    c = entanglement.claims(_ent({**FALLS, "dpop": (15.0, 14.0, 16.0)}, norm))
    row = _row(c, "[small LM, long suffix] every margin")
    assert row["status"] == "does not hold" and "deciding part: DPOP" in row["measured"]
    assert row["evidence"]["estimate"] == pytest.approx(15.0)
    assert _row(entanglement.claims(_ent({**FALLS, "dpop": MIXED}, norm)),
                "[small LM, long suffix] every margin")["status"] == "inconclusive"
    c = entanglement.claims(_ent(FALLS, norm, dpo={"one_token": DOWN, "short_suffix": (0.5, 0.6, 0.55)},
                                 cos={"long_suffix": (0.1, 0.12, 0.11)}, masked=DOWN))
    assert _row(c, "[small LM] one differing token: under DPO")["status"] == "does not hold"
    assert _row(c, "[small LM] with a shared suffix")["status"] == "does not hold"
    assert _row(c, "[small LM] gradient cosine is positive")["status"] == "does not hold"
    assert _row(c, "[small LM] token masking")["status"] == "does not hold"
    c = entanglement.claims(_ent(FALLS, norm, dpo={"one_token": MIXED}, masked=MIXED))
    assert _row(c, "[small LM] one differing token: under DPO")["status"] == "inconclusive"
    assert _row(c, "[small LM] token masking")["status"] == "inconclusive"


def test_entanglement_single_seed_results_stay_inconclusive():
    """Results saved with one curve per run (the former single-seed layout) count as one seed."""
    res = _ent(FALLS, {k: (5.0,) for k in FALLS})
    for r in res["lm"]["runs"]:
        r["curves"] = {k: (v[0] if k != "step" else v) for k, v in r["curves"].items()}
    c = entanglement.claims(res)
    lm = [x for x in c if x["claim"].startswith("[small LM") and x["evidence"]["kind"] == "seeds"]
    assert lm and all(x["status"] == "inconclusive" and x["evidence"]["seeds"] == 1 for x in lm)


def test_entanglement_toy_rules_pass_and_fail():
    res = _ent({"dpo": DOWN}, {"dpo": UP})
    c = entanglement.claims(res)
    assert _row(c, "[toy] predicted first-order")["status"] == "holds"
    assert _row(c, "[toy] DPO lowers")["status"] == "holds"
    res["toy"]["max_relative_error"] = 0.02
    res["toy"]["suffix_curves"]["8"]["normalized"]["chosen_logps"] = [0.0, -0.1]
    c = entanglement.claims(res)
    assert _row(c, "[toy] predicted first-order")["status"] == "does not hold"
    assert _row(c, "[toy] DPO lowers")["status"] == "does not hold"
    assert _row(c, "[toy] DPO lowers")["source"] == "reconstruction"


# ---------------------------------------------------------------------------------------------------------
# ches


def _ches_run(drop, rho=0.8, orth=0.8, par=0.6):
    return {"largest_drop": drop, "theorem5_spearman_first_step": rho, "w_diff_orthogonal": orth,
            "w_diff_parallel": par, "divergence_bytes": ["a", "b"], "gainers_during_drop": ["Yes"],
            "gains_during_drop": [0.0],
            "mass_flow_during_drop": {"chosen": -drop, "rejected": 0.0, "positive_words": 0.6 * drop,
                                      "negative_words": 0.0, "chosen_continued": 0.0, "elsewhere": 0.4 * drop}}


def _ches(drops, spearman=None, mit=None, **kw):
    """Synthetic ches results; ``spearman``: per-score per-seed Spearman (identification); ``mit``: per-run per-seed Δ log π(y+)."""
    pair = lambda runs: {"runs": runs, "mean_start_prob": 0.9, "mean_final_prob": 0.3, "mean_theorem5_spearman":
                         0.8, "mean_largest_drop": 0.5,
                         "mean_mass_flow_during_drop": {k: float(np.mean([r["mass_flow_during_drop"][k] for r in runs]))
                                                        for k in ches.FLOW}}
    st = {k: pair([_ches_run(d, **kw) for d in ds]) for k, ds in drops.items()}
    rho = {"ches": [-1.0, -0.98, -1.0], "ches_ln": [0.1, 0.2, 0.3], "neg_edit_distance": [0.0, -0.3, 0.3],
           "last_hidden_ip": [0.5, 0.1, 0.3], **(spearman or {})}
    ident = {"seeds": [0, 1, 2], **{k: {"spearman": rho[k]} for k in ches.SCORES}}
    mit = {"dpo": [-1.0, -1.2, -0.9], "dpo+sft": [2.0, 2.5, 1.8], "filtered": [-0.2, -0.1, -0.3],
           "random subset": [-0.8, -0.9, -1.0], **(mit or {})}
    runs = {r: {"train_pairs": 10, "chosen_change_all": mit[r], "rejected_change_all": [-2.0] * 3,
                "chosen_change_train": mit[r]} for r in ches.RUNS3}
    return {"single_token": st, "identification": ident, "mitigation": {**runs, "seeds": [0, 1, 2], "epochs": 1}}


def test_ches_drops_are_judged_per_pair_with_their_own_seeds():
    res = _ches({"No>Never": [0.7, 0.8, 0.75], "Yes>No": [0.5, 0.6, 0.55], "Sure>Yes": [0.02, 0.03, 0.025]})
    c = ches.claims(res)
    status = {x["claim"].split("persona pair ")[1].split(" ")[0]: x["status"] for x in c if "persona pair" in x["claim"]}
    assert status == {"No≻Never": "holds", "Yes≻No": "holds", "Sure≻Yes": "does not hold"}
    assert _row(c, "Displacement can be catastrophic")["status"] == "holds"  # 60% of the drop to positive words
    res = _ches({"No>Never": [0.7, 0.9], "Yes>No": [0.5, 0.6], "Sure>Yes": [0.3, 0.4]})  # two prompts a pair
    assert all(x["status"] == "inconclusive" for x in ches.claims(res) if "persona pair" in x["claim"])


def test_ches_theorem5_rules_pool_the_runs():
    three = {"No>Never": [0.5] * 2, "Yes>No": [0.5] * 2, "Sure>Yes": [0.5] * 2}
    c = ches.claims(_ches(three))
    assert _row(c, "Theorem 5")["status"] == "holds" and _row(c, "Theorem 5")["evidence"]["seeds"] == 6
    assert _row(c, "The component of W+")["status"] == "holds"
    c = ches.claims(_ches(three, rho=-0.3, orth=0.5, par=0.7))
    assert _row(c, "Theorem 5")["status"] == "does not hold"
    assert _row(c, "The component of W+")["status"] == "does not hold"


def test_ches_identification_and_mitigation_rules_pass_fail_and_stay_open():
    three = {"No>Never": [0.5] * 3, "Yes>No": [0.5] * 3, "Sure>Yes": [0.5] * 3}
    c = ches.claims(_ches(three))
    assert _row(c, "Ranking pairs by CHES")["status"] == "holds"  # CHES −0.993 [−1.022, −0.965]; others above −0.9
    assert _row(c, "DPO lowers the preferred")["status"] == "holds"
    assert _row(c, "Training only on the lowest")["status"] == "holds"  # −0.2 − (−0.8) > 0 on every seed
    # −edit distance orders the drop perfectly too: the "do not" half fails
    c = ches.claims(_ches(three, spearman={"neg_edit_distance": [-1.0, -1.0, -1.0]}))
    assert _row(c, "Ranking pairs by CHES")["status"] == "does not hold"
    c = ches.claims(_ches(three, spearman={"ches": [-1.0, 0.2, -0.9]}))
    assert _row(c, "Ranking pairs by CHES")["status"] == "inconclusive"
    c = ches.claims(_ches(three, mit={"dpo": [1.0, 1.2, 0.9], "filtered": [-2.0, -2.1, -1.9]}))
    assert _row(c, "DPO lowers the preferred")["status"] == "does not hold"
    assert _row(c, "Training only on the lowest")["status"] == "does not hold"
    c = ches.claims(_ches(three, mit={"dpo+sft": [2.0, -2.5, 0.8], "filtered": [-0.2, -1.5, 0.3]}))
    assert _row(c, "DPO lowers the preferred")["status"] == "inconclusive"
    assert _row(c, "Training only on the lowest")["status"] == "inconclusive"


# ---------------------------------------------------------------------------------------------------------
# The counts the README and docs/reproductions.md state are those of the committed results


def _counts():
    from jalign.reporting import STATUSES

    out = {}
    for name in sorted(paper_repro.registry()):
        claims = _committed(name)["claims"]
        out[name] = [len(claims)] + [sum(c["status"] == s for c in claims) for s in STATUSES]
    out["all"] = [sum(v[i] for v in out.values()) for i in range(6)]
    return out


def test_readme_and_docs_state_the_committed_status_counts():
    import re

    counts = _counts()
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    m = re.search(r"The report currently lists (\d+) claims: (\d+) hold, (\d+) do not hold, (\d+) are inconclusive "
                  r"\([^)]*\), (\d+) are true by construction, (\d+) are not reproducible here", text)
    assert m, "README: the report's status counts sentence"
    assert [int(g) for g in m.groups()] == counts["all"]
    table = {}
    for line in (ROOT / "docs" / "reproductions.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1].isdigit():
            table[cells[0]] = [int(c) for c in cells[1:]]
    assert table == counts


def test_readme_timings_come_from_the_committed_results():
    """Every compute time the README quotes for a reproduction is that run's recorded ``seconds``."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = re.search(r"<!-- timings -->(.*?)<!-- /timings -->", text, re.S).group(1)
    quoted = dict(re.findall(r"([a-z][a-z-]+) (\d+) s", block))
    assert quoted, "no timings found in the README"
    total = re.search(r"<!-- /timings --> \((\d+) min in all\)", text)
    assert total and int(total.group(1)) == round(sum(int(v) for v in quoted.values()) / 60), "README: the total"
    for name, secs in quoted.items():
        res = json.loads((root / "figures" / name / "results.json").read_text())
        s = res["seconds"]
        s = s["total"] if isinstance(s, dict) else s
        assert abs(int(secs) - s) <= 0.5, (name, secs, s)
    lm = json.loads((root / "figures" / "rankings" / "results.json").read_text())["lm"]["seconds"]
    assert re.search(r"\((\d+) s of it the small-LM half\)", block) and abs(int(re.search(r"\((\d+) s of it", block).group(1)) - lm) <= 0.5
    # every reproduction with a recorded time is quoted; the others are named as untimed
    for d in sorted((root / "figures").iterdir()):
        if (d / "results.json").is_file():
            has = "seconds" in json.loads((d / "results.json").read_text())
            assert (d.name in quoted) == has or (not has and f"{d.name}'s committed run predates" in block), d.name


_TRIPLE = r"([+−-]?\d+(?:\.\d+)?) \[([+−-]?\d+(?:\.\d+)?), ([+−-]?\d+(?:\.\d+)?)\]"


def _triples(text):
    import re

    f = lambda x: float(x.replace("−", "-"))
    return [tuple(f(x) for x in m) for m in re.findall(_TRIPLE, text)]


def _assert_quoted_intervals_are_committed(name, quoted):
    """Every quoted (estimate, lo, hi) is one of the committed claims' intervals (as printed in their measured
    text, or its negation: −Δ [a, b] quoted as Δ [−b, −a]), to the printed digits."""
    saved = [t for c in _committed(name)["claims"] for t in _triples(c["measured"])]
    saved += [(-m, -hi, -lo) for m, lo, hi in saved]
    for q in quoted:
        tol = [max(0.006, 0.002 * abs(x)) for x in q]
        assert any(all(abs(a - b) <= t for a, b, t in zip(q, s, tol, strict=True)) for s in saved), (name, q)


@pytest.mark.parametrize("name", ["entanglement", "ches"])
def test_readme_row_intervals_come_from_the_committed_claims(name):
    """Every "estimate [lo, hi]" the README's reproduction row quotes is one of the committed claims' seeded
    intervals."""
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith(f"| `{name}` |"))
    quoted = _triples(row)
    assert quoted, f"README row of {name} quotes no interval"
    _assert_quoted_intervals_are_committed(name, quoted)


@pytest.mark.parametrize("name,doc,start,end", [
    ("entanglement", "diagnostics.md", "### The reproduction: `jalign reproduce entanglement`", "## Ranking accuracy"),
    ("ches", "diagnostics.md", "Seeds: in (1) a seed is a prompt", "## Benchmarks"),
    ("fdpg", "fdpg.md", "LM claims (`results.json[\"claims\"]`)", "Quick runtime of"),
    ("dpa-logic", "logic.md", "## Reproduction (`jalign reproduce dpa-logic`)", "## What is left"),
])
def test_doc_intervals_come_from_the_committed_claims(name, doc, start, end):
    """The intervals a docs page quotes for a reproduction's quick run are its committed claims'."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    section = text[text.index(start):text.index(end, text.index(start))]
    quoted = _triples(section)
    assert quoted, f"docs/{doc} quotes no interval for {name}"
    _assert_quoted_intervals_are_committed(name, quoted)


def test_fdpg_doc_lm_table_is_the_committed_per_seed_mean_and_sd():
    """docs/fdpg.md's table of the small-LM runs: mean ± sd (ddof 1) over the saved per-seed finals."""
    lm = _committed("fdpg")["lm"]["targets"]
    names = {"forward KL": "forward_kl", "reverse KL": "reverse_kl", "JS": "js", "TV": "tv",
             "forward KL off-policy": "forward_kl (off-policy)"}
    cols = ("expected_phi", "entropy_per_token", "distinct_1w", "kl_pi_a", "kl_p_pi", "grad_cosine")
    rows = [line for line in (ROOT / "docs" / "fdpg.md").read_text(encoding="utf-8").splitlines()
            if line.startswith(("| pointwise |", "| distributional |"))]
    assert len(rows) == 10
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        final = lm[cells[0]]["runs"][names[cells[1]]]["final"]
        for col, cell in zip(cols, cells[2:], strict=True):
            x = np.asarray(final[col], np.float64)
            digits = len(cell.split(" ± ")[0].split(".")[1])
            assert float(cell.split(" ± ")[0]) == pytest.approx(x.mean(), abs=0.51 * 10 ** -digits), (cells[:2], col)
            if " ± " in cell:
                assert float(cell.split(" ± ")[1]) == pytest.approx(x.std(ddof=1), abs=0.51 * 10 ** -digits)

"""The infalign reproduction: its committed results recomputed with numpy (including one bandit rebuilt from its
seed), and its claim rules on synthetic results (must-pass and must-fail; the pipeline is not rerun here)."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import optimize, stats

from jalign.reporting import check_claim
from paper_repro import infalign as IA

COMMITTED = Path(__file__).resolve().parents[1] / "figures" / IA.NAME / "results.json"


@pytest.fixture(scope="module")
def res():
    return json.loads(COMMITTED.read_text())


def _statuses(r):
    return [c["status"] for c in IA.claims(r)]


def test_committed_claims_are_the_rules_applied_to_the_committed_data(res):
    assert res["rules"] == IA.RULES
    assert [c["status"] for c in res["claims"]] == _statuses(res)
    for c in res["claims"]:
        check_claim(c)


def np_log_softmax(t):
    t = np.asarray(t, np.float64)
    t = t - t.max()
    return t - np.log(np.exp(t).sum())


def np_bon(p, r, n):
    """Best-of-n of p for distinct rewards: F^n − F⁻^n."""
    order = np.argsort(r)
    cdf = np.cumsum(p[order])
    out = np.empty_like(p)
    out[order] = cdf ** n - np.concatenate([[0.0], cdf[:-1]]) ** n
    return out


def np_win(a, b, r):
    beats = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    return float(a @ beats @ b)


def test_first_bandit_recomputed_with_numpy(res):
    """Rebuild seed 0's bandit from its key and recompute its win rates at matched KL with numpy and SciPy."""
    cfg = res["config"]
    with jax.enable_x64(True):
        key = jax.random.split(jax.random.key(0), cfg["seeds"])[0]
        k_mu, k_r, _ = jax.random.split(key, 3)
        lmu = np.asarray(jax.nn.log_softmax(jax.random.normal(k_mu, (cfg["num_arms"],), np.float64)))
        r = np.asarray(jax.random.normal(k_r, (cfg["num_arms"],), np.float64))
    mu = np.exp(lmu)
    c = ((r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])) @ mu

    def at_kl(scores, kl):
        f = lambda lam: float(np.sum(np.exp(lp := np_log_softmax(lmu + lam * scores)) * (lp - lmu))) - kl  # noqa: E731
        return np.exp(np_log_softmax(lmu + optimize.brentq(f, 0.0, 1e5, xtol=1e-13) * scores))

    ps = res["per_seed"]
    i4 = cfg["ns"].index(4)
    for j, kl in enumerate(cfg["kl_budgets"]):
        pc, pr = at_kl(c, kl), at_kl(r, kl)
        assert ps["identity/std"][0][j] == pytest.approx(np_win(pc, mu, r), abs=1e-9)
        assert ps["raw/std"][0][j] == pytest.approx(np_win(pr, mu, r), abs=1e-9)
        assert ps["identity/bon"][0][i4][j] == pytest.approx(np_win(np_bon(pc, r, 4), np_bon(mu, r, 4), r), abs=1e-9)
        assert ps["raw/won"][0][i4][j] == pytest.approx(np_win(np_bon(pr, -r, 4), np_bon(mu, -r, 4), r), abs=1e-9)
        t = cfg["ts"].index(8.0)
        pe = at_kl(np.exp(8.0 * c), kl)
        assert ps["exp/bon"][0][t][i4][j] == pytest.approx(np_win(np_bon(pe, r, 4), np_bon(mu, r, 4), r), abs=1e-9)


def test_best_of_n_enumeration_matches_the_tie_free_formula():
    rng = np.random.default_rng(0)
    p, r = np.exp(np_log_softmax(rng.normal(size=4))), rng.normal(size=4)
    brute = np.zeros(4)
    for tup in itertools.product(range(4), repeat=3):
        brute[max(tup, key=lambda i: r[i])] += np.prod(p[list(tup)])
    np.testing.assert_allclose(np_bon(p, r, 3), brute, atol=1e-14)


def test_key_numbers_recomputed_with_numpy(res):
    cfg = res["config"]
    a = {k: np.asarray(v, np.float64) for k, v in res["per_seed"].items()}
    s = cfg["seeds"]
    # identity optimality for the standard win rate, from the saved arrays
    others = np.concatenate([a["raw/std"][:, None], a["raw_exp2/std"][:, None], a["exp/std"], a["neg_exp/std"]], 1)
    assert np.all(a["identity/std"] >= others.max(1) - 1e-12)
    # the calibrated policies of r and exp(2r) coincide: same saved win rates
    np.testing.assert_allclose(a["identity_exp2/bon"], a["identity/bon"], atol=1e-12)
    # the CTRL-vs-identity interval of the claim, recomputed
    gain = a["exp/bon"].max(1) - a["identity/bon"]  # [S, n, KL]
    half = stats.t.ppf(0.975, s - 1) * gain.std(0, ddof=1) / np.sqrt(s)
    lo = gain.mean(0) - half
    claim = IA.claims(res)[5]
    assert claim["evidence"]["interval"][0] == pytest.approx(lo.min(), rel=1e-9)
    # the optimum is never beaten by a tilt at its KL, and the CTRL gap of the claim, recomputed
    for proc, row in (("best_of_n", 10), ("worst_of_n", 11)):
        win = a[f"optimum_{proc}/win"]
        assert np.all(win >= np.maximum(a[f"optimum_{proc}/ctrl"], a[f"optimum_{proc}/raw"]) - 1e-9)
        gap = (win - a[f"optimum_{proc}/ctrl"]).reshape(s, -1)
        hi = gap.mean(0) + stats.t.ppf(0.975, s - 1) * gap.std(0, ddof=1) / np.sqrt(s)
        assert IA.claims(res)[row]["evidence"]["interval"][1] == pytest.approx(hi.max(), rel=1e-9)
    # KL(BoN) below the bound on every bandit, and the uniform-μ numbers
    bound = np.log(cfg["bound_ns"]) - (np.asarray(cfg["bound_ns"]) - 1) / np.asarray(cfg["bound_ns"])
    np.testing.assert_allclose(res["bounds"]["bound"], bound, rtol=1e-12)
    assert np.all(a["bon_kl"] <= bound + 1e-12) and np.all(a["bon_kl_ties"] <= bound + 1e-12)
    k = cfg["bound_arms"][-1]
    mu, r = np.full(k, 1.0 / k), np.arange(k, dtype=np.float64)
    for i, n in enumerate(cfg["bound_ns"]):
        b = np_bon(mu, r, n)
        nz = b > 0
        assert res["bounds"]["kl"][-1][i] == pytest.approx(float(np.sum(b[nz] * np.log(b[nz] / mu[nz]))), abs=1e-10)
        # W(BoN ≻ μ) = E_BoN[C], C = F⁻ + μ/2 for distinct rewards
        assert res["bounds"]["win"][-1][i] == pytest.approx(float(b @ ((np.arange(k) + 0.5) / k)), abs=1e-10)


def test_claim_rules_on_synthetic_results(res):
    base = _statuses(res)
    assert base == ["holds"] * 14 + ["not reproducible here"]
    bad = copy.deepcopy(res)
    ps = bad["per_seed"]
    ps["win_minus_ec"] = [1e-6] * len(ps["win_minus_ec"])
    ps["c_transform_diff"] = [1e-3] * len(ps["c_transform_diff"])
    ps["calibrated_policy_diff"] = [1e-4] * len(ps["calibrated_policy_diff"])
    ps["raw/std"] = (np.asarray(ps["identity/std"]) + 0.01).tolist()  # raw beats identity on the standard win rate
    for proc in ("bon", "won"):
        ps[f"raw/{proc}"] = (np.asarray(ps[f"raw/{proc}"]) + 0.5).tolist()
        ps[f"identity/{proc}"] = (np.asarray(ps[f"identity/{proc}"]) + 0.5).tolist()
    ps["bon_kl"] = (np.asarray(ps["bon_kl"]) + 1.0).tolist()
    bad["bounds"]["win"][-1] = [w + 0.01 for w in bad["bounds"]["win"][-1]]
    for proc in ("best_of_n", "worst_of_n"):
        ps[f"optimum_{proc}/residual"] = (np.asarray(ps[f"optimum_{proc}/residual"]) + 1e-6).tolist()  # not converged
        ps[f"optimum_{proc}/win"] = (np.asarray(ps[f"optimum_{proc}/ctrl"]) + 0.05).tolist()  # CTRL far below
    assert _statuses(bad) == ["does not hold"] * 14 + ["not reproducible here"]
    beaten = copy.deepcopy(res)  # a tilted policy beating the "optimum" fails the theorem row
    beaten["per_seed"]["optimum_best_of_n/raw"] = (np.asarray(beaten["per_seed"]["optimum_best_of_n/win"]) + 1e-6).tolist()
    assert _statuses(beaten)[9] == "does not hold"
    # a gain whose interval straddles 0 is inconclusive
    mixed = copy.deepcopy(res)
    best = np.asarray(mixed["per_seed"]["exp/bon"]).max(1)
    shift = np.array([1.0, -1.0, 1.0, -1.0, 0.5])[:, None, None] * 0.02
    mixed["per_seed"]["identity/bon"] = (best - shift).tolist()
    assert _statuses(mixed)[5] == "inconclusive"

"""The kl-estimators reproduction: its committed results against independent numpy computations, and its claim
rules on synthetic results (must pass / must fail); the pipeline is not rerun here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from jalign import reporting
from paper_repro import kl_estimators as K

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "figures" / "kl-estimators" / "results.json"


@pytest.fixture(scope="module")
def res():
    return json.loads(COMMITTED.read_text())


def _np_pi_star(r, p, beta):
    s = np.asarray(p) * np.exp(np.asarray(r) / beta)
    return s / s.sum()


def _np_k3(r, p, beta):
    r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
    lo, hi = r.max() - beta + 1e-15, r.max() + 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (beta * p / (beta - r + mid)).sum() > 1.0 else (lo, mid)
    return beta * p / (beta - r + 0.5 * (lo + hi))


# ---------------------------------------------------------------------------------------------------------
# Committed data


def test_committed_claims_are_recomputed_from_the_saved_results_and_hold(res):
    assert res["rules"] == K.RULES
    again = K.claims(res)
    assert [c["status"] for c in again] == [c["status"] for c in res["claims"]]
    assert [c["measured"] for c in again] == [c["measured"] for c in res["claims"]]
    for c in res["claims"]:
        reporting.check_claim(c)
        assert c["status"] == "holds", c
        assert c["source"] == "reconstruction"
    seeded = [c for c in res["claims"] if c["evidence"]["kind"] == "seeds"]
    assert seeded and all(c["evidence"]["seeds"] >= 3 for c in seeded)


def test_committed_fixed_points_against_numpy(res):
    beta = res["config"]["beta"]
    fp = res["card"]["fixed_points"]
    star = _np_pi_star(K.REWARDS, K.REF_PROBS, beta)
    np.testing.assert_allclose(fp["k2"], star, atol=1e-6)
    np.testing.assert_allclose(fp["reward_penalty"], star, atol=1e-6)
    np.testing.assert_allclose(fp["k3"], _np_k3(K.REWARDS, K.REF_PROBS, beta), atol=2e-6)
    np.testing.assert_allclose(fp["k1"], [1.0, 0.0, 0.0])
    # π_k3 satisfies π = β·π_ref/(β − A) with A = r − E_π[r]
    k3 = np.asarray(fp["k3"])
    adv = np.asarray(K.REWARDS) - k3 @ np.asarray(K.REWARDS)
    np.testing.assert_allclose(k3, beta * np.asarray(K.REF_PROBS) / (beta - adv), rtol=1e-5)
    # the random bandits' closed forms too, from their saved rewards and references
    rnd = res["random"]
    for r, p, k3_saved, star_saved in zip(rnd["rewards"], rnd["ref_probs"], rnd["k3_closed_form"], rnd["pi_star"],
                                          strict=True):
        p = np.asarray(p) / np.sum(p)
        np.testing.assert_allclose(star_saved, _np_pi_star(r, p, beta), atol=2e-6)
        np.testing.assert_allclose(k3_saved, _np_k3(r, p, beta), atol=1e-5)


def test_committed_final_regrets_equal_numpy_regret_of_final_policies(res):
    beta = res["config"]["beta"]
    rnd = res["random"]
    fp = np.asarray(rnd["final_probs"])  # [S, V, K]
    for s, (r, p) in enumerate(zip(rnd["rewards"], rnd["ref_probs"], strict=True)):
        star = _np_pi_star(r, p, beta)
        for v in range(len(K.VARIANTS)):
            q = fp[s, v]
            want = beta * np.sum(q * (np.log(q) - np.log(star)))  # J_β(π*) − J_β(π) = β·KL(π‖π*)
            assert rnd["final_regret"][s][v] == pytest.approx(want, abs=5e-6)


def test_committed_beta_sweep_against_numpy(res):
    sw = res["beta_sweep"]
    for j, beta in enumerate(sw["betas"]):
        k3, star = _np_k3(K.REWARDS, K.REF_PROBS, beta), _np_pi_star(K.REWARDS, K.REF_PROBS, beta)
        assert sw["card"]["tv"][j] == pytest.approx(0.5 * np.abs(k3 - star).sum(), abs=2e-6)
        assert sw["card"]["regret"][j] == pytest.approx(beta * np.sum(k3 * np.log(k3 / star)), abs=2e-6)


def test_committed_length_toy_against_numpy(res):
    """Replay the exact expected-gradient dynamics in numpy (float64) from the saved settings."""
    toy, cfg = res["length_toy"], res["config"]
    r, n = np.asarray(toy["rewards"]), np.asarray(toy["lengths"])
    for agg, c in (("grpo", 1.0 / n), ("dr_grpo", np.full(3, 1.0 / n.max()))):
        np.testing.assert_allclose(toy["coefficients"][agg], c, rtol=1e-6)
        th = np.zeros(3)
        curve = [np.exp(th - np.log(np.exp(th).sum()))]
        for t in range(cfg["toy_steps"]):
            pi = np.exp(th - th.max())
            pi /= pi.sum()
            a = (r - pi @ r) * c
            th = th + cfg["toy_lr"] * pi * (a - pi @ a)
            if (t + 1) % cfg["toy_record_every"] == 0:
                z = np.exp(th - th.max())
                curve.append(z / z.sum())
        np.testing.assert_allclose(toy["curves"][agg], curve, atol=2e-4)


def test_grpo_rloo_identity_numpy():
    """The identity the row checks, in numpy: r − mean(r) = (G−1)/G·(r − mean_{j≠i} r)."""
    rng = np.random.default_rng(0)
    for g in (2, 3, 8):
        r = rng.normal(size=(5, g))
        rloo = r - (r.sum(1, keepdims=True) - r) / (g - 1)
        np.testing.assert_allclose(r - r.mean(1, keepdims=True), (g - 1) / g * rloo, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# The rules on synthetic results: must pass / must fail


def _one(res, start):
    got = [c for c in K.claims(res) if c["claim"].startswith(start)]
    assert len(got) == 1, start
    return got[0]["status"]


def test_rules_pass_on_the_committed_results(res):
    assert {c["status"] for c in K.claims(res)} == {"holds"}


def test_rules_fail_on_broken_synthetic_results(res):
    s, i = len(res["random"]["rewards"]), K.VARIANTS.index

    bad = copy.deepcopy(res)  # PPO not converged on the random bandits
    for row in bad["random"]["final_regret"]:
        row[i("reward_penalty")] = 0.05
    assert _one(bad, "PPO with the KL penalty") == "does not hold"

    bad = copy.deepcopy(res)  # one noisy seed: the interval straddles the threshold
    regs = [1e-4] * (s - 1) + [2e-2]
    for row, v in zip(bad["random"]["final_regret"], regs, strict=True):
        row[i("k2")] = v
    assert _one(bad, "k2 in the loss: fixed point") == "inconclusive"

    bad = copy.deepcopy(res)  # k1 gradient identity broken
    bad["gradients"]["max_abs_residual"]["k1"] = 1e-3
    assert _one(bad, "k1 in the loss (differentiated") == "does not hold"

    bad = copy.deepcopy(res)  # k3 trained policy equal to π* (regret 0): "does not reach π*" must fail
    for row in bad["random"]["final_regret"]:
        row[i("k3")] = 0.0
    assert _one(bad, "k3 in the loss does not reach π*") == "does not hold"

    bad = copy.deepcopy(res)  # the card's k3 numbers off by more than the rounding
    bad["card"]["fixed_points"]["k3"] = [0.58, 0.21, 0.21]
    assert _one(bad, "k3 in the loss: fixed point π ∝") == "does not hold"

    bad = copy.deepcopy(res)  # k1 does not collapse
    for s_, b in enumerate(bad["random"]["best_arm"]):
        bad["random"]["final_probs"][s_][i("k1")][b] = 0.5
    assert _one(bad, "with k1 in the loss the policy collapses") == "does not hold"

    bad = copy.deepcopy(res)  # k3 equal to π* at some β
    bad["beta_sweep"]["card"]["tv"][3] = 0.0
    assert _one(bad, "how far the k3 fixed point") == "does not hold"

    bad = copy.deepcopy(res)
    bad["grpo_rloo"]["max_abs_difference"]["4"] = 1e-6
    assert _one(bad, "without std scaling") == "does not hold"

    bad = copy.deepcopy(res)  # dr_grpo drifting like grpo
    bad["length_toy"]["curves"]["dr_grpo"] = bad["length_toy"]["curves"]["grpo"]
    assert _one(bad, "Dr. GRPO removes") == "does not hold"


def test_reproduction_is_registered_with_figures():
    import paper_repro

    assert paper_repro.registry()["kl-estimators"] is K
    pngs = {p.name for p in COMMITTED.parent.glob("*.png")}
    assert pngs == {f"{name}.png" for name, _ in K.FIGURES}

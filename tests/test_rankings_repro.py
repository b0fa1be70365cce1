"""The rankings reproduction's exact pieces against numpy, the AUC against a brute-force count, and its claim
rules on synthetic results (the whole reproduction is not rerun here)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import diagnostics as D
from jalign.envs import rankings as R
from paper_repro import rankings as repro


def _np_bandit(seed, x=6, k=5):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(x, k))
    g = 2.0 * rng.normal(size=(x, k))
    ref = g - np.log(np.exp(g).sum(-1, keepdims=True))
    return r, ref


def _np_population_loss(theta, r, ref, beta):
    total = 0.0
    for x in range(r.shape[0]):
        for a in range(r.shape[1]):
            for b in range(r.shape[1]):
                if a != b:
                    h = (theta[x, a] - ref[x, a]) - (theta[x, b] - ref[x, b])
                    p = 1 / (1 + np.exp(-(r[x, a] - r[x, b])))
                    total += np.exp(ref[x, a] + ref[x, b]) * p * np.log1p(np.exp(-beta * h)) / r.shape[0]
    return total


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_optimum_ranking_accuracy_equals_idealised_exactly(beta):
    r, ref = _np_bandit(0)
    # numpy: the optimum π* ∝ μ·exp(r/β), its pairwise ranking, and the idealised accuracy formula
    star = ref + r / beta
    star = star - np.log(np.exp(star - star.max(-1, keepdims=True)).sum(-1, keepdims=True)) - star.max(-1, keepdims=True)
    right, ideal = [], []
    for x in range(r.shape[0]):
        for a in range(r.shape[1]):
            for b in range(a + 1, r.shape[1]):
                w, l_ = (a, b) if r[x, a] >= r[x, b] else (b, a)
                p = 1 / (1 + np.exp(-(r[x, w] - r[x, l_])))
                right.append(star[x, w] > star[x, l_])
                ideal.append(ref[x, w] - ref[x, l_] + np.log(p / (1 - p)) / beta > 0)
    assert np.mean(right) == np.mean(ideal)
    with jax.enable_x64(True):
        b = R.ContextualBandit(rewards=jnp.asarray(r), ref_logps=jnp.asarray(ref),
                               context_logps=jnp.full((r.shape[0],), -np.log(r.shape[0])))
        ctx, w, l_, p = R.preference_pairs(b)
        rw, rl = R.pair_logps(b.ref_logps, ctx, w, l_)
        ideal_j = float(D.idealized_ranking_accuracy(rw, rl, p, beta))
        newton = R.dpo_newton(b, beta, iters=40)
        acc_newton = float(D.ranking_accuracy(*R.pair_logps(newton, ctx, w, l_)))
        np.testing.assert_allclose(np.asarray(R.dpo_optimum_logps(b, beta)), star, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(newton), star, rtol=0, atol=1e-9)
        # the population loss against the numpy transcription, and its gradient is 0 at π*
        theta = ref + np.random.default_rng(1).normal(size=ref.shape)
        assert float(R.population_dpo_loss(jnp.asarray(theta), b, beta)) == pytest.approx(
            _np_population_loss(theta, r, ref, beta), rel=1e-12)
        g = jax.grad(R.population_dpo_loss)(jnp.asarray(star), b, beta)
        assert float(jnp.max(jnp.abs(g))) < 1e-12
    assert ideal_j == np.mean(ideal) == acc_newton


def test_gradient_descent_matches_numpy_steps():
    r, ref = _np_bandit(2, x=2, k=3)
    beta, lr = 0.5, 3.0
    with jax.enable_x64(True):
        b = R.ContextualBandit(rewards=jnp.asarray(r), ref_logps=jnp.asarray(ref),
                               context_logps=jnp.full((2,), -np.log(2.0)))
        out = np.asarray(R.dpo_gradient_descent(b, beta, lr=lr, budgets=(0, 2)))
    theta = ref.copy()
    for _ in range(2):  # finite-difference gradient of the numpy loss
        g = np.zeros_like(theta)
        for i in np.ndindex(theta.shape):
            e = np.zeros_like(theta)
            e[i] = 1e-6
            g[i] = (_np_population_loss(theta + e, r, ref, beta) - _np_population_loss(theta - e, r, ref, beta)) / 2e-6
        theta = theta - lr * g
    logsm = lambda t: t - np.log(np.exp(t).sum(-1, keepdims=True))
    np.testing.assert_allclose(out[0], ref, atol=1e-12)
    np.testing.assert_allclose(out[1], logsm(theta), atol=1e-7)


def test_roc_auc_equals_brute_force_pair_count():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 40).astype(np.float64)  # many ties
    lab = rng.random(40) < 0.4
    mask = rng.random(40) < 0.8
    pos, neg = s[mask & lab], s[mask & ~lab]
    brute = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
    assert float(D.roc_auc(s, lab, mask)) == pytest.approx(brute, abs=1e-6)
    assert float(jax.jit(D.roc_auc)(s, lab, mask)) == pytest.approx(brute, abs=1e-6)
    assert math.isnan(float(D.roc_auc(s, np.zeros(40, bool))))
    fpr, tpr = D.roc_curve(s[mask], lab[mask])
    assert np.trapezoid(tpr, fpr) == pytest.approx(brute, abs=1e-12)  # trapezoids count ties as ½
    with pytest.raises(ValueError, match="labels"):
        D.roc_curve(s, np.ones(40, bool))


def _synthetic(ideal, ref, acc_mid, narrow, wide, auc, *, newton_err=1e-12, star_equal=True):
    s = len(ideal)
    budgets = [0, 100]
    return {
        "config": {"seeds": s, "pairs_per_seed": 10, "budgets": budgets, "mid_budget": 100,
                   "narrow_margin": 1.0, "wide_margin": 4.0},
        "per_seed": {"ideal": list(ideal), "acc_star": list(ideal) if star_equal else [v - 0.1 for v in ideal],
                     "acc_newton": list(ideal), "acc_reference": list(ref),
                     "newton_max_abs_diff": [newton_err] * s, "min_abs_ideal_margin": [0.01] * s},
        "accuracy_by_budget": [[a0, a] for a0, a in zip(ref, acc_mid, strict=True)],
        "flip_fraction_narrow": [[0.0, v] for v in narrow],
        "flip_fraction_wide": [[0.0, v] for v in wide],
        "auc_by_budget": [[None, v] for v in auc],
    }


def _statuses(res):
    return [c["status"] for c in repro.claims(res)]


def test_claim_rules_pass_and_fail_on_synthetic_results():
    good = _synthetic([0.9, 0.91, 0.92], [0.5, 0.52, 0.48], [0.8, 0.79, 0.81], [0.9, 0.85, 0.88], [0.1, 0.12, 0.08],
                      [0.8, 0.82, 0.78])
    assert _statuses(good) == ["holds"] * 6
    for c in repro.claims(good):
        ev = c["evidence"]
        assert ev["kind"] in ("exact", "seeds") and ev["seeds"] == 3 and ev["rule"]
        assert (ev["interval"] is None) == (ev["kind"] == "exact")
    # the other side of every threshold
    bad = _synthetic([0.9, 0.91, 0.92], [0.95, 0.96, 0.97], [0.95, 0.96, 0.97], [0.1, 0.12, 0.08],
                     [0.9, 0.85, 0.88], [0.3, 0.32, 0.28], newton_err=1e-3)
    assert _statuses(bad) == ["does not hold"] * 6
    assert _statuses(_synthetic([0.9] * 3, [0.5] * 3, [0.8] * 3, [0.9] * 3, [0.1, 0.11, 0.12], [0.8] * 3,
                                star_equal=False))[0] == "does not hold"
    # straddling intervals: "does not hold", with "inconclusive" in the measured text
    mixed = _synthetic([0.9, 0.91, 0.92], [0.85, 0.95, 0.9], [0.85, 0.95, 0.9], [0.9, 0.85, 0.88],
                       [0.05, 0.45, 0.25], [0.4, 0.6, 0.55])
    cl = repro.claims(mixed)
    for i in (1, 2, 4, 5):
        assert cl[i]["status"] == "does not hold" and "inconclusive" in cl[i]["measured"], i


def test_t_interval_matches_the_t_quantile():
    mean, lo, hi = repro.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3), rel=1e-9)
    assert lo == pytest.approx(2 * mean - hi)


def test_bad_arguments_are_refused():
    b = R.random_ranking_bandit(jax.random.key(0), 2, 3)
    with pytest.raises(ValueError, match="beta"):
        R.dpo_optimum_logps(b, 0.0)
    with pytest.raises(ValueError, match="budgets"):
        R.dpo_gradient_descent(b, 0.1, lr=1.0, budgets=(10, 5))
    with pytest.raises(ValueError, match="lr"):
        R.dpo_gradient_descent(b, 0.1, lr=-1.0, budgets=(1,))
    with pytest.raises(ValueError, match="num_arms"):
        R.random_ranking_bandit(jax.random.key(0), 2, 1)
    with pytest.raises(ValueError, match="iters"):
        R.dpo_newton(b, 0.1, iters=0)

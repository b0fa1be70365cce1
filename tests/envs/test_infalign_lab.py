"""The InfAlign lab (jalign.envs.infalign) against brute-force enumeration, SciPy root finding and numpy."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from jalign import envs
from jalign.envs import infalign as IA


def np_log_softmax(t):
    t = np.asarray(t, np.float64)
    t = t - t.max()
    return t - np.log(np.exp(t).sum())


def np_tilt(s, lmu, lam):
    return np_log_softmax(lmu + lam * s)


def np_kl(lp, lmu):
    p = np.exp(lp)
    return float(np.sum(p * (lp - lmu)))


def np_procedure_probs(probs, rewards, n, procedure):
    """T_n(π) by enumerating all K^n sample tuples; ties broken uniformly among the tied samples (= ∝ π)."""
    k = len(probs)
    out = np.zeros(k)
    if procedure == "sample":
        return np.asarray(probs, np.float64)
    for tup in itertools.product(range(k), repeat=n):
        w = np.prod([probs[i] for i in tup])
        vals = [rewards[i] for i in tup]
        target = max(vals) if procedure == "best_of_n" else min(vals)
        winners = [i for i in tup if rewards[i] == target]
        for i in winners:
            out[i] += w / len(winners)
    return out


def np_win(a, b, r):
    return float(sum(a[i] * b[j] * (1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0)
                     for i in range(len(r)) for j in range(len(r))))


def test_calibrated_transform_values():
    c = np.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(np.asarray(IA.calibrated_transform(jnp.asarray(c), "identity")), c)
    np.testing.assert_allclose(np.asarray(IA.calibrated_transform(jnp.asarray(c), "exp", 3.0)), np.exp(3 * c), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(IA.calibrated_transform(jnp.asarray(c), "neg_exp", 3.0)), -np.exp(-3 * c),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        IA.calibrated_transform(c, "log")
    with pytest.raises(ValueError, match="t="):
        IA.calibrated_transform(c, "exp", 0.0)


@pytest.mark.parametrize("procedure", ["sample", "best_of_n", "worst_of_n"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_inference_win_rate_equals_enumeration_with_ties(procedure, n):
    rng = np.random.default_rng(n)
    r = np.array([0.0, 1.0, 1.0, 2.0, -0.5])  # a tie class {1, 2}
    pi = np.exp(np_log_softmax(rng.normal(size=5)))
    mu = np.exp(np_log_softmax(rng.normal(size=5)))
    with jax.enable_x64(True):
        got_dist = np.asarray(IA.inference_distribution(jnp.asarray(pi), jnp.asarray(r), n, procedure))
        got = float(IA.inference_win_rate(jnp.asarray(pi), jnp.asarray(mu), jnp.asarray(r), n, procedure))
    np.testing.assert_allclose(got_dist, np_procedure_probs(pi, r, n, procedure), atol=1e-13)
    expect = np_win(np_procedure_probs(pi, r, n, procedure), np_procedure_probs(mu, r, n, procedure), r)
    assert got == pytest.approx(expect, abs=1e-13)
    if procedure == "sample" or n == 1:  # W(π ≻ μ) = E_π[C]
        c = np.array([sum(mu[j] * (1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0) for j in range(5))
                      for i in range(5)])
        assert got == pytest.approx(float(pi @ c), abs=1e-13)


def test_tilt_at_kl_matches_scipy_root_and_is_monotone():
    rng = np.random.default_rng(0)
    lmu = np_log_softmax(rng.normal(size=7))
    s = rng.normal(size=7)
    cap = -lmu[np.argmax(s)]
    with jax.enable_x64(True):
        assert float(IA.max_tilt_kl(jnp.asarray(s), jnp.asarray(lmu))) == pytest.approx(cap, rel=1e-12)
        for target in (1e-4, 0.1, 0.5, 0.9 * cap):
            lam = float(IA.tilt_at_kl(jnp.asarray(s), jnp.asarray(lmu), target))
            ref = optimize.brentq(lambda x, t=target: np_kl(np_tilt(s, lmu, x), lmu) - t, 0.0, 1e4, xtol=1e-14)
            assert lam == pytest.approx(ref, rel=1e-9)
            assert float(IA.tilt_kl(jnp.asarray(s), jnp.asarray(lmu), lam)) == pytest.approx(target, rel=1e-10)
            np.testing.assert_allclose(np.asarray(IA.tilted_logps(jnp.asarray(s), jnp.asarray(lmu), lam)),
                                       np_tilt(s, lmu, ref), atol=1e-8)
        kls = [float(IA.tilt_kl(jnp.asarray(s), jnp.asarray(lmu), x)) for x in (0.0, 0.5, 1.0, 2.0, 8.0)]
        assert kls[0] == 0.0 and all(a < b for a, b in zip(kls, kls[1:], strict=False))
        # jit and vmap over targets give the same λ
        targets = jnp.array([0.05, 0.2, 0.4])
        batched = jax.jit(jax.vmap(lambda t: IA.tilt_at_kl(jnp.asarray(s), jnp.asarray(lmu), t)))(targets)
        for t, v in zip(targets, batched, strict=True):
            assert float(v) == pytest.approx(float(IA.tilt_at_kl(jnp.asarray(s), jnp.asarray(lmu), float(t))), rel=1e-12)
    with pytest.raises(ValueError, match="kl="):
        IA.tilt_at_kl(jnp.asarray(s), jnp.asarray(lmu), float(cap) + 0.1)
    with pytest.raises(ValueError, match="ref_logps"):
        IA.tilt_at_kl(jnp.asarray(s), jnp.zeros(7), 0.1)


def test_max_tilt_kl_with_a_tied_top_class():
    mu = np.array([0.1, 0.2, 0.3, 0.4])
    s = np.array([1.0, 3.0, 3.0, 0.0])
    with jax.enable_x64(True):
        assert float(IA.max_tilt_kl(jnp.asarray(s), jnp.log(jnp.asarray(mu)))) == pytest.approx(-math.log(0.5), rel=1e-12)


def test_tilt_of_calibrated_reward_maximises_win_rate_in_the_kl_ball():
    """No policy within KL ≤ κ beats the tilt of C on W(π ≻ μ) (random policies, rescaled into the ball)."""
    rng = np.random.default_rng(4)
    k = 6
    lmu = np_log_softmax(rng.normal(size=k))
    mu = np.exp(lmu)
    r = np.round(rng.normal(size=k), 0)  # ties
    with jax.enable_x64(True):
        c = np.asarray(envs.calibrated_rewards(jnp.asarray(mu), jnp.asarray(r)))
        kappa = 0.3
        lam = float(IA.tilt_at_kl(jnp.asarray(c), jnp.asarray(lmu), kappa))
    best = float(np.exp(np_tilt(c, lmu, lam)) @ c)
    for _ in range(2000):
        q = np_log_softmax(lmu + rng.normal(size=k) * rng.uniform(0.1, 3.0))
        # shrink toward μ (geometric path) until inside the KL ball
        a = 1.0
        while np_kl(np_log_softmax(lmu + a * (q - lmu)), lmu) > kappa:
            a *= 0.9
        p = np.exp(np_log_softmax(lmu + a * (q - lmu)))
        assert np_win(p, mu, r) <= best + 1e-12


def test_bon_kl_bound_and_best_of_n_kl():
    np.testing.assert_allclose(np.asarray(IA.bon_kl_bound(jnp.array([1.0, 2.0, 4.0]))),
                               [0.0, math.log(2) - 0.5, math.log(4) - 0.75], rtol=1e-6)
    with jax.enable_x64(True):
        mu = jnp.full((400,), 1 / 400, jnp.float64)
        r = jnp.arange(400, dtype=jnp.float64)
        for n in (2, 8):
            b = envs.best_of_n(mu, r, n)
            kl = float(envs.kl(jnp.log(b), jnp.log(mu)))
            assert kl < float(IA.bon_kl_bound(float(n))) < kl + 1e-2


def test_inference_optimum_plain_sampling_is_the_tilt_of_c():
    rng = np.random.default_rng(7)
    lmu, r = np_log_softmax(rng.normal(size=8)), rng.normal(size=8)
    with jax.enable_x64(True):
        lp, resid = IA.inference_optimum(jnp.asarray(lmu), jnp.asarray(r), 1, 0.2, "sample", iters=3000)
        c = envs.calibrated_rewards(jnp.exp(jnp.asarray(lmu)), jnp.asarray(r))
        np.testing.assert_allclose(np.asarray(lp), np_log_softmax(lmu + np.asarray(c) / 0.2), atol=1e-12)
    assert float(resid) < 1e-13


@pytest.mark.parametrize("procedure", ["best_of_n", "worst_of_n"])
def test_inference_optimum_against_scipy_maximisation(procedure):
    """max_π W(T_n(π) ≻ T_n(μ)) − β·KL by SciPy's BFGS on the logits, W by enumeration of all sample tuples."""
    rng = np.random.default_rng(11)
    k, n, beta = 4, 3, 0.15
    lmu, r = np_log_softmax(rng.normal(size=k)), rng.normal(size=k)
    ref = np_procedure_probs(np.exp(lmu), r, n, procedure)

    def neg(theta):
        lp = np_log_softmax(theta)
        return -(np_win(np_procedure_probs(np.exp(lp), r, n, procedure), ref, r) - beta * np_kl(lp, lmu))

    sol = optimize.minimize(neg, lmu, method="BFGS", options={"gtol": 1e-10})
    with jax.enable_x64(True):
        lp, resid = IA.inference_optimum(jnp.asarray(lmu), jnp.asarray(r), n, beta, procedure, iters=4000)
    assert float(resid) < 1e-12
    np.testing.assert_allclose(np.exp(np.asarray(lp)), np.exp(np_log_softmax(sol.x)), atol=1e-5)
    assert -neg(np.asarray(lp)) >= -sol.fun - 1e-10
    g = (np.asarray(lp) - lmu)[np.argsort(r)]
    assert np.all(np.diff(g) >= -1e-12)  # ln π/μ non-decreasing in r: a transform of the calibrated reward
    with pytest.raises(ValueError, match="distinct"):
        IA.inference_optimum(jnp.asarray(lmu), jnp.asarray(np.r_[r[:3], r[0]]), n, beta, procedure)

"""Bandit environments: exact objectives against numpy, the optimum, preference models, sampling, policies."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import envs


def _np_lsm(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_objectives_closed_form(rng):
    k, beta = 5, 0.7
    lp = _np_lsm(rng.normal(size=k))
    ref = _np_lsm(rng.normal(size=k))
    R = rng.normal(size=k)
    p = np.exp(lp)
    np.testing.assert_allclose(envs.expected_reward(lp, R), (p * R).sum(), rtol=1e-5)
    np.testing.assert_allclose(envs.kl(lp, ref), (p * (lp - ref)).sum(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(envs.objective(lp, R, ref, beta), (p * R).sum() - beta * (p * (lp - ref)).sum(),
                               rtol=1e-5)
    star = _np_lsm(ref + R / beta)
    np.testing.assert_allclose(envs.optimal_logps(R, ref, beta), star, rtol=1e-5, atol=1e-6)
    z = np.log((np.exp(ref) * np.exp(R / beta)).sum())
    np.testing.assert_allclose(envs.optimal_value(R, ref, beta), beta * z, rtol=1e-5)
    # regret = J(π*) − J(π) = β·KL(π‖π*)
    j = (p * R).sum() - beta * (p * (lp - ref)).sum()
    np.testing.assert_allclose(envs.regret(lp, R, ref, beta), beta * z - j, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(envs.regret(lp, R, ref, beta), beta * (p * (lp - star)).sum(), rtol=1e-4, atol=1e-6)


def test_optimum_is_the_maximiser(rng):
    bandit = envs.random_bandit(jax.random.key(3), 6)
    beta = 0.3
    star = bandit.optimal_logps(beta)
    np.testing.assert_allclose(bandit.objective(star, beta), bandit.optimal_value(beta), rtol=1e-5)
    g = jax.grad(lambda th: bandit.objective(jax.nn.log_softmax(th), beta))(star)
    np.testing.assert_allclose(g, 0.0, atol=1e-5)
    others = jax.nn.log_softmax(jax.random.normal(jax.random.key(4), (200, 6)) * 2 + star)
    assert bool(jnp.all(bandit.regret(others, beta) > 0))
    # zero-probability arms are handled (0·log 0 = 0)
    lp = jnp.log(jnp.array([0.5, 0.5, 0, 0, 0, 0]))
    assert np.isfinite(float(bandit.objective(lp, beta)))


def test_vmap_over_beta_and_bandits():
    bandits = jax.vmap(lambda k: envs.random_bandit(k, 4))(jax.random.split(jax.random.key(0), 3))
    betas = jnp.array([0.1, 1.0, 5.0])
    got = jax.vmap(jax.vmap(lambda b, bt: b.optimal_value(bt), (None, 0)), (0, None))(bandits, betas)
    for i in range(3):
        b = jax.tree.map(lambda x, i=i: x[i], bandits)
        for j, bt in enumerate([0.1, 1.0, 5.0]):
            np.testing.assert_allclose(got[i, j], b.optimal_value(bt), rtol=1e-6)


def test_contextual_bandit_averages_contexts(rng):
    cb = envs.random_contextual_bandit(jax.random.key(1), 3, 4)
    beta = 0.5
    lp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(3, 4)), jnp.float32))
    rho = np.exp(np.asarray(cb.context_logps))
    per = [float(envs.objective(lp[x], cb.rewards[x], cb.ref_logps[x], beta)) for x in range(3)]
    np.testing.assert_allclose(cb.objective(lp, beta), np.dot(rho, per), rtol=1e-5)
    star = cb.optimal_logps(beta)
    np.testing.assert_allclose(cb.regret(star, beta), 0.0, atol=1e-5)
    assert float(cb.regret(lp, beta)) > 0


def test_linear_policy_with_one_hot_features_is_tabular(rng):
    X, K = 2, 3
    theta = rng.normal(size=(X, K)).astype(np.float32)
    ref = _np_lsm(rng.normal(size=(X, K))).astype(np.float32)
    phi = envs.one_hot_features(X, K)
    np.testing.assert_allclose(envs.linear_logps(jnp.asarray(theta.reshape(-1)), phi, ref),
                               envs.tabular_logps(ref + theta), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(envs.linear_logps(envs.linear_init(X * K), phi, ref), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(envs.tabular_logps(envs.tabular_init(ref)), ref, rtol=1e-5, atol=1e-6)


def test_overlap():
    p, q = np.array([0.2, 0.3, 0.5]), np.array([0.6, 0.4, 0.0])
    np.testing.assert_allclose(envs.overlap(p, q), 0.2 + 0.3 + 0.0, rtol=1e-6)
    np.testing.assert_allclose(envs.overlap(p, p), 1.0, rtol=1e-6)
    np.testing.assert_allclose(envs.overlap(p, q), 1 - 0.5 * np.abs(p - q).sum(), rtol=1e-6)


def test_preference_models():
    r = jnp.array([1.0, 0.2, -0.5, 0.2])
    for model in envs.PREFERENCE_MODELS:
        P = np.asarray(envs.preference_matrix(r, model, scale=0.8))
        np.testing.assert_allclose(P + P.T, 1.0, atol=1e-6)
        np.testing.assert_allclose(np.diag(P), 0.5)
    d = 0.7
    np.testing.assert_allclose(envs.preference_prob(d, 0.0, "bradley_terry"), 1 / (1 + math.exp(-d)), rtol=1e-6)
    np.testing.assert_allclose(envs.preference_prob(d, 0.0, "thurstone"), 0.5 * (1 + math.erf(d / 2)), rtol=1e-6)
    np.testing.assert_allclose(envs.preference_prob(d, 0.0, "linear", scale=2.0), 0.5 + d / 4, rtol=1e-6)
    assert float(envs.preference_prob(d, 0.0, "hard")) == 1.0
    n = 200_000
    wins = envs.sample_preferences(jax.random.key(0), jnp.full((n,), d), jnp.zeros((n,)))
    p = 1 / (1 + math.exp(-d))
    assert abs(float(wins.mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="model"):
        envs.preference_prob(0.0, 0.0, "luce")
    with pytest.raises(ValueError, match="scale"):
        envs.preference_prob(0.0, 0.0, scale=0.0)


def test_sample_pairs_frequencies():
    n = 200_000
    mu1, mu2 = np.array([0.1, 0.2, 0.7]), np.array([0.05, 0.05, 0.9])
    a, b = envs.sample_pairs(jax.random.key(0), mu1, mu2, n)
    joint = np.zeros((3, 3))
    np.add.at(joint, (np.asarray(a), np.asarray(b)), 1)
    want = np.outer(mu1, mu2)
    np.testing.assert_array_less(np.abs(joint / n - want), 5 * np.sqrt(want * (1 - want) / n) + 1e-12)
    R = np.array([2.5, 2.0, 1.0])
    a, b, w = envs.sample_labelled_pairs(jax.random.key(1), mu1, mu2, R, n)
    sel = (np.asarray(a) == 0) & (np.asarray(b) == 2)
    p = 1 / (1 + np.exp(-1.5))
    assert abs(np.asarray(w)[sel].mean() - p) < 5 * np.sqrt(p * (1 - p) / sel.sum())


def test_sample_contextual_pairs_conditionals():
    n = 100_000
    rho = np.array([0.3, 0.7])
    mu1 = np.array([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    mu2 = np.array([[0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    x, a, b = (np.asarray(v) for v in envs.sample_contextual_pairs(jax.random.key(2), rho, mu1, mu2, n))
    assert abs((x == 1).mean() - 0.7) < 5 * math.sqrt(0.21 / n)
    assert not np.any((x == 0) & (a == 2)) and np.all(b[x == 0] == 2)
    for arm in range(3):
        f = (a[x == 1] == arm).mean()
        assert abs(f - mu1[1, arm]) < 5 * math.sqrt(mu1[1, arm] * (1 - mu1[1, arm]) / (x == 1).sum())


def test_bad_inputs_raise_naming_argument():
    with pytest.raises(ValueError, match="beta"):
        envs.optimal_logps(jnp.ones(3), jnp.zeros(3), 0.0)
    with pytest.raises(ValueError, match="beta"):
        envs.objective(jnp.zeros(3), jnp.ones(3), jnp.zeros(3), -1.0)
    with pytest.raises(ValueError, match="mu2_K"):
        envs.sample_pairs(jax.random.key(0), [0.5, 0.5], [0.5, 0.6], 10)
    with pytest.raises(ValueError, match="mu1_K"):
        envs.sample_pairs(jax.random.key(0), [1.5, -0.5], [0.5, 0.5], 10)
    with pytest.raises(ValueError, match="n="):
        envs.sample_pairs(jax.random.key(0), [0.5, 0.5], [0.5, 0.5], 0)
    with pytest.raises(ValueError, match="ref_probs_K"):
        envs.k_armed([1.0, 2.0], [0.5, 0.4])


def test_beta_for_kl_matches_a_scipy_root_and_vmaps():
    from scipy.optimize import brentq

    rng = np.random.default_rng(5)
    r = rng.normal(size=6)
    ref = _np_lsm(rng.normal(size=6))

    def np_kl(beta):
        p = _np_lsm(ref + r / beta)
        return float((np.exp(p) * (p - ref)).sum())

    with jax.enable_x64(True):
        for target in (0.01, 0.3, 1.0):
            want = brentq(lambda lb, t=target: np_kl(np.exp(lb)) - t, np.log(1e-4), np.log(1e4), xtol=1e-14)
            got = float(envs.beta_for_kl(jnp.asarray(r), jnp.asarray(ref), target))
            assert got == pytest.approx(np.exp(want), rel=1e-9)
            assert np_kl(got) == pytest.approx(target, abs=1e-12)
        many = jax.vmap(lambda t: envs.beta_for_kl(jnp.asarray(r), jnp.asarray(ref), t))(jnp.array([0.1, 0.5]))
        assert np.all(np.diff(np.asarray(many)) < 0)  # more KL needs a smaller β
    # an unreachable target returns the end of the bracket
    assert float(envs.beta_for_kl(jnp.asarray(r), jnp.asarray(ref), 1e3)) == pytest.approx(1e-4, rel=1e-4)
    with pytest.raises(ValueError, match="beta_min"):
        envs.beta_for_kl(r, ref, 0.1, beta_min=2.0, beta_max=1.0)
    with pytest.raises(ValueError, match="iters"):
        envs.beta_for_kl(r, ref, 0.1, iters=0)

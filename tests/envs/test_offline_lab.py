"""The offline CoPG laboratory: exact expected gradients on random bandits (CoPG vanishes at π* and only
there, off-policy PG is biased), IPO's analytic fixed point, and the jitted / vmapped training loop."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import envs
from jalign.envs import offline


def _random_setting(seed, k):
    key = jax.random.key(seed)
    kb, k1, k2 = jax.random.split(key, 3)
    bandit = envs.random_bandit(kb, k, reward_scale=1.5)
    mu1 = jax.random.dirichlet(k1, jnp.ones(k))
    mu2 = jax.random.dirichlet(k2, jnp.ones(k))
    return bandit, mu1, mu2


def _np_copg_expected_grad(theta, bandit, mu1, mu2, beta):
    """Independent numpy: −Σ_ab μ1(a)μ2(b)(R_β(a) − R_β(b))((e_a − π) − (e_b − π))."""
    theta = np.asarray(theta, np.float64)
    lp = theta - np.log(np.exp(theta - theta.max()).sum()) - theta.max()
    rb = np.asarray(bandit.rewards, np.float64) - beta * (lp - np.asarray(bandit.ref_logps, np.float64))
    k = len(theta)
    e = np.eye(k)
    g = np.zeros(k)
    for a, b in itertools.product(range(k), repeat=2):
        g -= float(mu1[a]) * float(mu2[b]) * (rb[a] - rb[b]) * (e[a] - e[b])
    return g


@pytest.mark.parametrize("seed,k", [(0, 3), (2, 5)])
def test_copg_expected_gradient_vanishes_only_at_optimum(seed, k):
    bandit, mu1, mu2 = _random_setting(seed, k)
    beta = 0.5
    star = bandit.optimal_logps(beta)
    g_star = envs.expected_gradient("copg", star, bandit, mu1, mu2, beta)
    np.testing.assert_allclose(g_star, 0.0, atol=2e-6)
    thetas = star + 0.5 * jax.random.normal(jax.random.key(100 + seed), (10, k))
    gs = jax.vmap(lambda th: envs.expected_gradient("copg", th, bandit, mu1, mu2, beta))(thetas)
    for theta, g in zip(thetas, gs, strict=True):
        np.testing.assert_allclose(g, _np_copg_expected_grad(theta, bandit, mu1, mu2, beta), rtol=1e-4, atol=1e-6)
        # not stationary elsewhere (π ≠ π*): the expected loss is a convex quadratic in θ with minimum set
        # {θ* + c·1}, so ⟨g, θ − θ*⟩ > 0 away from it.
        d = theta - star - (theta - star).mean()
        assert float(jnp.dot(g, d)) > 1e-4 * float(jnp.dot(d, d))


def test_copg_minibatch_gradient_vanishes_at_optimum_for_sampled_data():
    bandit, mu1, mu2 = _random_setting(5, 4)
    beta = 0.3
    a, b, w = envs.sample_labelled_pairs(jax.random.key(0), mu1, mu2, bandit.rewards, 64)
    g = jax.jit(jax.grad(offline.batch_loss, argnums=1))(0, bandit.optimal_logps(beta), bandit, a, b, w.astype(float),
                                                jnp.ones(64), beta, 1.0)
    np.testing.assert_allclose(g, 0.0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_off_policy_pg_is_biased_at_optimum(seed):
    """At π*: R_β ≡ β·ln Z = V*, so E[∇pg] = −(V* − b)·(μ̄ − π*), μ̄ = (μ1 + μ2)/2 — non-zero unless b = V*."""
    bandit, mu1, mu2 = _random_setting(seed, 4)
    beta = 0.5
    star = bandit.optimal_logps(beta)
    pi_star = np.exp(np.asarray(star, np.float64))
    v_star = float(bandit.optimal_value(beta))
    mubar = (np.asarray(mu1) + np.asarray(mu2)) / 2
    e_r = float((pi_star * np.asarray(bandit.rewards)).sum())
    for method, b in [("pg_zero_baseline", 0.0), ("pg_value_baseline", e_r), ("pg_soft_value_baseline", v_star)]:
        g = envs.expected_gradient(method, star, bandit, mu1, mu2, beta)
        np.testing.assert_allclose(g, -(v_star - b) * (mubar - pi_star), rtol=2e-3, atol=2e-5)
    assert float(jnp.linalg.norm(envs.expected_gradient("pg_zero_baseline", star, bandit, mu1, mu2, beta))) > 1e-2
    # on-policy data (μ1 = μ2 = π*): every PG variant is stationary at π*
    for method in ("pg_zero_baseline", "pg_value_baseline"):
        g = envs.expected_gradient(method, star, bandit, jnp.exp(star), jnp.exp(star), beta)
        np.testing.assert_allclose(g, 0.0, atol=1e-5)


@pytest.mark.parametrize("seed,model", [(0, "bradley_terry"), (1, "thurstone"), (2, "bradley_terry")])
def test_ipo_fixed_point_matches_analytic_solution(seed, model):
    bandit, mu1, mu2 = _random_setting(seed, 4)
    tau = 0.7
    fp = envs.ipo_fixed_point(bandit, mu1, mu2, tau, model)
    g = envs.expected_gradient("ipo", fp, bandit, mu1, mu2, 0.5, tau, model)
    np.testing.assert_allclose(g, 0.0, atol=2e-5)
    # independent numpy: least squares Σ w_ab (g_a − g_b − t_ab)² over all ordered pairs
    P = np.asarray(envs.preference_matrix(bandit.rewards, model), np.float64)
    w = np.outer(np.asarray(mu1), np.asarray(mu2))
    rows, rhs, wts = [], [], []
    for a, b in itertools.product(range(4), repeat=2):
        r = np.zeros(4)
        r[a] += 1
        r[b] -= 1
        rows.append(r)
        rhs.append((P[a, b] - 0.5) / tau)
        wts.append(np.sqrt(w[a, b]))
    A = np.array(rows) * np.array(wts)[:, None]
    sol = np.linalg.lstsq(A, np.array(rhs) * np.array(wts), rcond=None)[0]
    want = np.asarray(bandit.ref_logps, np.float64) + sol
    want -= np.log(np.exp(want).sum())
    np.testing.assert_allclose(fp, want, atol=2e-5)
    # and full-batch optimisation of the exact IPO loss converges there
    run = envs.train_population("ipo", bandit, mu1, mu2, beta=0.5, ipo_tau=tau, model=model, lr=3e-2,
                                steps=3000, record_every=3000)
    np.testing.assert_allclose(jnp.exp(run["logps"][-1]), jnp.exp(fp), atol=2e-3)


def test_ipo_biased_on_paper_bandit():
    bandit = envs.k_armed(jnp.array([2.5, 2.0, 1.0]))
    mu1, mu2 = jnp.array([0.1, 0.2, 0.7]), jnp.array([0.05, 0.05, 0.9])
    fp = envs.ipo_fixed_point(bandit, mu1, mu2, 0.5)
    assert float(bandit.regret(fp, 0.5)) > 0.05


def test_category_counts_equal_per_pair_batch_loss():
    """The training loop's count-weighted categories give the same minibatch loss and gradient as the pairs."""
    bandit, mu1, mu2 = _random_setting(7, 3)
    a, b, w = envs.sample_labelled_pairs(jax.random.key(1), mu1, mu2, bandit.rewards, 300)
    theta = jax.random.normal(jax.random.key(2), (3,))
    cat = (a * 3 + b) * 2 + w.astype(jnp.int32)
    counts = jnp.bincount(cat, length=18).astype(jnp.float32)
    ids = jnp.arange(18)
    f = jax.jit(jax.value_and_grad(offline.batch_loss, argnums=1))
    for m in range(len(envs.METHODS)):
        l1, g1 = f(m, theta, bandit, a, b, w.astype(jnp.float32), jnp.ones(300), 0.5, 0.5)
        l2, g2 = f(m, theta, bandit, ids // 6, (ids // 2) % 3, (ids % 2).astype(jnp.float32), counts, 0.5, 0.5)
        np.testing.assert_allclose(l1, l2, rtol=1e-5)
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_shuffle_is_a_uniform_permutation():
    perms = jax.vmap(lambda k: offline.shuffle(k, 3))(jax.random.split(jax.random.key(0), 30_000))
    perms = np.asarray(perms)
    assert np.all(np.sort(perms, 1) == np.arange(3))
    _, counts = np.unique(perms, axis=0, return_counts=True)
    assert len(counts) == 6 and np.all(np.abs(counts / 30_000 - 1 / 6) < 5 * np.sqrt((1 / 6) * (5 / 6) / 30_000))
    p = np.asarray(offline.shuffle(jax.random.key(1), 1000))
    assert np.array_equal(np.sort(p), np.arange(1000))


def test_train_vmap_equals_loop_and_copg_improves():
    bandit = envs.k_armed(jnp.array([2.5, 2.0, 1.0]))
    mu1, mu2 = jnp.array([0.1, 0.2, 0.7]), jnp.array([0.05, 0.05, 0.9])
    kw = dict(beta=0.5, lr=1e-2, n_pairs=500, batch_size=100, epochs=4)
    keys = jax.random.split(jax.random.key(0), 2)
    methods = jnp.array([0, 2])
    grid = jax.jit(jax.vmap(jax.vmap(lambda k, m: envs.train(k, m, bandit, mu1, mu2, **kw), (0, None)),
                            (None, 0)))(keys, methods)
    assert grid["regret"].shape == (2, 2, 5)
    for i, m in enumerate([0, 2]):
        for j in range(2):
            one = envs.train(keys[j], int(m), bandit, mu1, mu2, **kw)
            np.testing.assert_allclose(grid["regret"][i, j], one["regret"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grid["regret"][:, :, 0], float(bandit.regret(bandit.ref_logps, 0.5)), rtol=1e-6)
    assert bool(jnp.all(grid["regret"][0, :, -1] < grid["regret"][0, :, 0]))


def test_train_bad_arguments_raise_naming_argument():
    bandit = envs.k_armed(jnp.array([1.0, 0.0]))
    mu = jnp.array([0.5, 0.5])
    with pytest.raises(ValueError, match="beta"):
        envs.train(jax.random.key(0), "copg", bandit, mu, mu, beta=0.0)
    with pytest.raises(ValueError, match="ipo_tau"):
        envs.train(jax.random.key(0), "ipo", bandit, mu, mu, beta=1.0, ipo_tau=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        envs.train(jax.random.key(0), "copg", bandit, mu, mu, beta=1.0, n_pairs=10, batch_size=20)
    with pytest.raises(ValueError, match="mu2_K"):
        envs.train(jax.random.key(0), "copg", bandit, mu, jnp.array([0.2, 0.2]), beta=1.0)
    with pytest.raises(ValueError, match="method"):
        envs.train(jax.random.key(0), "dpo", bandit, mu, mu, beta=1.0)


def test_experiment_config_is_the_paper_setting_used_by_the_reproduction():
    from experiments.copg_bandit import get_config
    from paper_repro import copg_bandit as rep

    c, s = get_config(), rep.settings(quick=True)
    assert (c.rewards, c.mu1, c.mu2, c.beta) == (rep.REWARDS, rep.MU1, rep.MU2, rep.BETA) == (
        (2.5, 2.0, 1.0), (0.1, 0.2, 0.7), (0.05, 0.05, 0.9), 0.5)
    assert (c.n_pairs, c.batch_size, c.epochs, c.lr, c.ipo_tau) == (
        s["n_pairs"], s["batch_size"], s["epochs"], s["lr"], s["ipo_tau"]) == (10_000, 512, 100, 1e-3, 0.5)
    assert s["seeds"] >= 20 and tuple(c.methods) == rep.PAPER_METHODS
    with pytest.raises(ValueError, match="preset"):
        get_config("huge")

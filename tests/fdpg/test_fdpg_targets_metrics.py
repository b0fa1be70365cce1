"""Targets (EBMs, moment matching), proposals and metrics against closed forms and numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import divergences as D
from jalign.fdpg import metrics as M
from jalign.fdpg import proposals as Pr
from jalign.fdpg import targets as T


def test_pointwise_and_rlhf_targets_normalise_to_the_conditioned_base():
    with jax.enable_x64():
        a = np.array([0.1, 0.2, 0.3, 0.4])
        b = np.array([1.0, 0.0, 1.0, 0.0])
        lp = T.normalise(T.pointwise_target_logps(np.log(a), b))
        np.testing.assert_allclose(np.exp(lp), a * b / (a * b).sum(), rtol=1e-14)
        r = np.array([0.5, -1.0, 2.0, 0.0])
        lp = T.normalise(T.rlhf_target_logps(np.log(a), r, beta=0.5))
        want = a * np.exp(r / 0.5)
        np.testing.assert_allclose(np.exp(lp), want / want.sum(), rtol=1e-13)
        phi = np.stack([r, r**2], -1)
        lam = np.array([0.3, -0.2])
        np.testing.assert_allclose(T.exponential_target_logps(np.log(a), phi, lam), np.log(a) + phi @ lam, rtol=1e-14)
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta=.* must be > 0"):
            T.rlhf_target_logps(np.zeros(2), np.zeros(2), beta)
    with pytest.raises(ValueError, match="b must lie in \\[0, 1\\]"):
        T.pointwise_target_logps(np.zeros(2), np.array([0.5, 2.0]))


def test_fit_lambda_exact_binary_feature_closed_form():
    """One binary feature: p_λ(φ=1) = μ̄ ⇔ λ = logit(μ̄) − logit(a(φ=1))."""
    a = np.array([0.1, 0.2, 0.3, 0.4])
    phi = np.array([1.0, 0.0, 1.0, 0.0])
    a1 = 0.4
    for mu in (0.05, 0.5, 0.9):
        lam = T.fit_lambda_exact(np.log(a), phi[:, None], [mu])
        np.testing.assert_allclose(lam[0], math.log(mu / (1 - mu)) - math.log(a1 / (1 - a1)), rtol=1e-9)


def test_fit_lambda_exact_reaches_requested_moments_and_rejects_unattainable(rng):
    K = 30
    la = np.log(rng.dirichlet(np.ones(K)))
    phi = np.stack([np.arange(K) / K, (np.arange(K) % 3 == 0).astype(float), rng.normal(size=K)], -1)
    mu = np.array([0.3, 0.6, 0.2])
    lam = T.fit_lambda_exact(la, phi, mu)
    with jax.enable_x64():
        p = np.exp(T.normalise(T.exponential_target_logps(la, phi, lam)))
    np.testing.assert_allclose(p @ phi, mu, atol=1e-9)
    with pytest.raises(ValueError, match="not attained"):
        T.fit_lambda_exact(la, phi[:, :1], [1.5])  # outside the convex hull [0, (K-1)/K]
    with pytest.raises(ValueError, match="moments is not finite"):
        T.fit_lambda_exact(la, phi, [np.nan, 0.5, 0.0])


def test_fit_lambda_is_matches_moments_on_samples_and_approaches_exact(key):
    K = 12
    r = np.random.default_rng(1)
    la = np.log(r.dirichlet(np.ones(K) * 2))
    phi = np.stack([np.arange(K) / K, np.sin(np.arange(K))], -1)
    mu = np.array([0.55, 0.1])
    x = jax.random.categorical(key, jnp.asarray(la), shape=(4096,))
    lam, n_iter, err = T.fit_lambda_is(phi[x], la[x], la[x], mu, lr=2.0, max_iter=3000, tol=1e-5)
    assert float(err) <= 1e-5 and int(n_iter) < 3000
    np.testing.assert_allclose(T.is_moments(lam, phi[x], la[x], la[x]), mu, atol=1e-5)
    exact = T.fit_lambda_exact(la, phi, mu)
    p = np.exp(np.asarray(T.normalise(T.exponential_target_logps(la, phi, lam)), np.float64))
    np.testing.assert_allclose(p @ phi, mu, atol=0.03)  # the sampled λ gives ≈ the requested moments exactly
    np.testing.assert_allclose(lam, exact, atol=0.35)
    with pytest.raises(ValueError, match="lr=0 must be > 0"):
        T.fit_lambda_is(phi[x], la[x], la[x], mu, lr=0)


def test_fit_lambda_sgd_with_fresh_samples_reaches_moments(key):
    K = 10
    la = jnp.log(jnp.asarray(np.random.default_rng(2).dirichlet(np.ones(K) * 3), jnp.float32))
    phi = jnp.stack([jnp.arange(K) / K, (jnp.arange(K) % 2).astype(jnp.float32)], -1)
    mu = jnp.array([0.6, 0.3])

    def sample_fn(k):
        x = jax.random.categorical(k, la, shape=(512,))
        return phi[x], la[x], la[x]

    lam_avg, lam_last, errs = T.fit_lambda_sgd(key, sample_fn, mu, lr=1.0, n_iter=400)
    p = jnp.exp(T.normalise(T.exponential_target_logps(la, phi, lam_avg)))
    np.testing.assert_allclose(p @ phi, mu, atol=0.01)
    assert errs.shape == (400,) and float(errs[-50:].mean()) < float(errs[0])


def test_exact_metrics_against_numpy(rng):
    with jax.enable_x64():
        pi, p, a = (rng.dirichlet(np.ones(6)) for _ in range(3))
        b = (np.arange(6) % 2).astype(float)
        m = M.exact_metrics(np.log(pi), np.log(p), log_a=np.log(a), b=b, reward=2 * b)
        mid = (pi + p) / 2
        want = {
            "kl_p_pi": np.sum(p * np.log(p / pi)),
            "kl_pi_p": np.sum(pi * np.log(pi / p)),
            "js": 0.5 * np.sum(pi * np.log(pi / mid)) + 0.5 * np.sum(p * np.log(p / mid)),
            "tv": 0.5 * np.abs(pi - p).sum(),
            "entropy": -np.sum(pi * np.log(pi)),
            "kl_pi_a": np.sum(pi * np.log(pi / a)),
            "expected_b": pi @ b,
            "expected_reward": 2 * pi @ b,
        }
        for k, v in want.items():
            np.testing.assert_allclose(float(m[k]), v, rtol=1e-12, err_msg=k)
        # Entropy with zero-probability outcomes.
        np.testing.assert_allclose(float(M.entropy(jnp.log(jnp.array([0.5, 0.5, 0.0])))), math.log(2), rtol=1e-14)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "tv"])
def test_is_divergence_estimates_converge_to_exact(name, key):
    """IS estimates of D_f(π‖p) from q-samples with an unnormalised target approach the exact value."""
    K = 8
    r = np.random.default_rng(3)
    lpi, lp, lq = (jnp.log(jnp.asarray(r.dirichlet(np.ones(K) * 2), jnp.float32)) for _ in range(3))
    x = jax.random.categorical(key, lq, shape=(50000,))
    est = M.is_divergence(name, lpi[x], lp[x] + 4.0, lq[x])  # log Z = 4 estimated from the samples
    exact = D.divergence(name, lpi, lp)
    np.testing.assert_allclose(float(est), float(exact), rtol=0.05, atol=0.01)
    est_known = M.is_divergence(name, lpi[x], lp[x] + 4.0, lq[x], log_z=4.0)
    np.testing.assert_allclose(float(est_known), float(exact), rtol=0.05, atol=0.01)


def test_is_expectation_entropy_and_kl_to_base(key):
    K = 6
    r = np.random.default_rng(4)
    lpi, la, lq = (jnp.log(jnp.asarray(r.dirichlet(np.ones(K) * 2), jnp.float32)) for _ in range(3))
    v = jnp.arange(K, dtype=jnp.float32)
    x = jax.random.categorical(key, lq, shape=(50000,))
    np.testing.assert_allclose(M.is_expectation(v[x], lpi[x], lq[x]), M.expectation(lpi, v), rtol=0.02)
    np.testing.assert_allclose(
        M.is_expectation(v[x], lpi[x], lq[x], self_normalised=False), M.expectation(lpi, v), rtol=0.03
    )
    np.testing.assert_allclose(M.is_entropy(lpi[x], lq[x]), M.entropy(lpi), rtol=0.02)
    np.testing.assert_allclose(
        M.is_kl_policy_base(lpi[x], la[x], lq[x]), D.divergence("reverse_kl", lpi, la), rtol=0.05, atol=0.01
    )


def test_exact_gradient_moments_against_numpy_loop():
    with jax.enable_x64():
        r = np.random.default_rng(5)
        K, P = 5, 2
        W = r.normal(size=(K, P))
        th = r.normal(size=P)
        lpi = jax.nn.log_softmax(W @ th)
        jac = np.asarray(jax.jacobian(lambda t: jax.nn.log_softmax(W @ t))(th))
        lp, lq = np.log(r.dirichlet(np.ones(K))), np.log(r.dirichlet(np.ones(K)))
        d = D.get("js")
        m = M.exact_gradient_moments(jac, lpi, lp, lq, divergence=d, baseline=0.1)
        q = np.exp(lq)
        gs = [np.exp(lpi[x] - lq[x]) * (float(d.f_prime_log(lpi[x] - lp[x])) + 0.1) * jac[x] for x in range(K)]
        mean = sum(q[x] * gs[x] for x in range(K))
        cov = sum(q[x] * np.outer(gs[x] - mean, gs[x] - mean) for x in range(K))
        np.testing.assert_allclose(m["mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(m["trace_cov"], np.trace(cov), rtol=1e-10)
        # The mean is the exact gradient of JS (the f-DPG identity).
        g = jax.grad(lambda t: D.divergence("js", jax.nn.log_softmax(W @ t), lp))(th)
        np.testing.assert_allclose(m["mean"], g, rtol=1e-10)


def test_distinct_n():
    seqs = [[1, 2, 3, 1, 2], [1, 2, 9, 9, 0]]
    # unigrams: 10 total, distinct {0,1,2,3,9} = 5; bigrams: 8 total, distinct {12,23,31,29,99,90} = 6
    assert M.distinct_n(seqs, 1) == 0.5
    assert M.distinct_n(seqs, 2) == 6 / 8
    assert M.distinct_n(np.array(seqs), 2, lengths=[2, 3]) == 2 / 3  # [1,2] and [1,2,9]: {12, 29} of 3
    assert M.distinct_n([[1]], 2) == 0.0
    with pytest.raises(ValueError, match="n=0 must be >= 1"):
        M.distinct_n(seqs, 0)
    with pytest.raises(ValueError, match="lengths\\[1\\]=9 outside"):
        M.distinct_n(seqs, 1, lengths=[1, 9])


def test_off_policy_proposal_replacement_rule():
    st = Pr.proposal_init({"w": jnp.zeros(2)})
    assert float(st.kl) == np.inf
    new = {"w": jnp.ones(2)}
    st2, rep = Pr.maybe_replace(st, new, kl_policy=0.5, kl_proposal=0.7)
    assert bool(rep) and np.array_equal(st2.params["w"], [1, 1]) and float(st2.kl) == 0.5
    st3, rep = Pr.maybe_replace(st2, {"w": jnp.full(2, 2.0)}, kl_policy=0.6, kl_proposal=st2.kl)
    assert not bool(rep) and np.array_equal(st3.params["w"], [1, 1]) and int(st3.replacements) == 1
    _, rep = Pr.maybe_replace(st2, new, kl_policy=jnp.nan, kl_proposal=0.7)
    assert not bool(rep)
    jitted, rep = jax.jit(Pr.maybe_replace)(st, new, 0.5, 0.7)
    assert bool(rep) and np.array_equal(jitted.params["w"], [1, 1])
    x = jnp.array([1.0, 2.0])
    assert float(jax.grad(lambda v: Pr.on_policy(v).sum())(x).sum()) == 0.0

"""Closed-form fixed points of the preference-game lab (mixture_fixed_point, offline_ipo_fixed_point) against
numpy, SciPy's root finder and the lab's own update maps (a fixed point is left in place by one update)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from jalign import envs


def np_log_softmax(t):
    t = np.asarray(t, np.float64)
    t = t - t.max()
    return t - np.log(np.exp(t).sum())


def np_nash(P, lmu, tau):
    """π*_τ from SciPy's root finder on the logits: θ = ln μ + P softmax(θ)/τ (up to a constant)."""
    def f(theta):
        return theta - (lmu + P @ np.exp(np_log_softmax(theta)) / tau)

    sol = optimize.root(f, lmu, method="hybr", tol=1e-13)
    assert np.max(np.abs(f(sol.x))) < 1e-13
    return np_log_softmax(sol.x)


def problems():
    with jax.enable_x64(True):
        P_bt = np.asarray(envs.bradley_terry_pref(jnp.array([1.0, 0.2, -0.4, 0.7], jnp.float64)))
        P_rps = np.asarray(envs.rock_paper_scissors_pref(jnp.float64(0.85), jnp.float64(0.4), jax.random.PRNGKey(3)))
    return [(P_bt, np_log_softmax([0.3, -0.2, 0.5, 0.0])), (P_rps, np_log_softmax([1.0, 0.0, -0.5]))]


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.4])
def test_mixture_fixed_point_against_scipy_and_the_update_maps(beta):
    tau = 0.3
    for P, lmu in problems():
        expect = np_log_softmax(lmu + P @ np.exp(np_nash(P, lmu, tau / (1 - beta))) / tau)
        with jax.enable_x64(True):
            got = np.asarray(envs.mixture_fixed_point(jnp.asarray(P), jnp.asarray(lmu), tau, beta))
            np.testing.assert_allclose(got, expect, atol=1e-11)
            # IPO-MD's expected gradient vanishes there; one Nash-MD step with ητ = β leaves it in place
            g = envs.game_gradient("ipo_md", jnp.asarray(got), jnp.asarray(P), jnp.asarray(lmu), tau, beta_mix=beta)
            assert float(jnp.max(jnp.abs(g))) < 1e-11
            if beta > 0:
                step = envs.game_step("nash_md", jnp.asarray(got), jnp.asarray(P), jnp.asarray(lmu), tau, beta / tau)
                np.testing.assert_allclose(np.asarray(step), got, atol=1e-11)
            if beta == 0.0:  # the regularised Nash equilibrium itself
                star = np.asarray(envs.regularized_nash(jnp.asarray(P), jnp.asarray(lmu), tau))
                np.testing.assert_allclose(got, star, atol=1e-11)
            else:
                assert float(envs.nash_residual(jnp.asarray(got), jnp.asarray(P), jnp.asarray(lmu), tau)) > 1e-4


def test_offline_ipo_fixed_point_against_numpy_and_the_gradient():
    tau = 0.4
    for P, lmu in problems():
        k = len(lmu)
        mu_s = np.exp(np_log_softmax(np.arange(k, dtype=np.float64)))
        with jax.enable_x64(True):
            got = np.asarray(envs.offline_ipo_fixed_point(jnp.asarray(P), jnp.asarray(lmu), tau, jnp.asarray(mu_s)))
            np.testing.assert_allclose(got, np_log_softmax(lmu + P @ mu_s / tau), atol=1e-13)
            g = envs.game_gradient("offline_ipo", jnp.asarray(got), jnp.asarray(P), jnp.asarray(lmu), tau,
                                   sampling_probs=jnp.asarray(mu_s))
            assert float(jnp.max(jnp.abs(g))) < 1e-12
            star = np_nash(P, lmu, tau)
            at_star = envs.offline_ipo_fixed_point(jnp.asarray(P), jnp.asarray(lmu), tau, jnp.exp(jnp.asarray(star)))
            np.testing.assert_allclose(np.asarray(at_star), star, atol=1e-11)


def test_validation():
    P, lmu = problems()[1]
    with pytest.raises(ValueError, match="beta"):
        envs.mixture_fixed_point(P, lmu, 0.5, 1.0)
    with pytest.raises(ValueError, match="sampling_probs"):
        envs.offline_ipo_fixed_point(P, lmu, 0.5, np.ones(3))

"""Divergences: closed forms (numpy float64), f' = df/du, symmetry/bounds/zeros, log-space stability."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jalign import divergences as D


def _np_closed_form(name, pi, p, alpha=None):
    m = 0.5 * (pi + p)
    if name == "forward_kl":
        return np.sum(p * np.log(p / pi))
    if name == "reverse_kl":
        return np.sum(pi * np.log(pi / p))
    if name == "js":
        return 0.5 * np.sum(pi * np.log(pi / m)) + 0.5 * np.sum(p * np.log(p / m))
    if name == "tv":
        return 0.5 * np.sum(np.abs(pi - p))
    if name == "chi2":
        return np.sum((p - pi) ** 2 / pi)
    if name == "reverse_chi2":
        return np.sum((pi - p) ** 2 / p)
    if name == "alpha":
        if alpha == 1:
            return np.sum(pi * np.log(pi / p))
        if alpha == 0:
            return np.sum(p * np.log(p / pi))
        return (np.sum(p ** (1 - alpha) * pi**alpha) - 1.0) / (alpha * (alpha - 1))
    raise AssertionError(name)


ALPHAS = [-1.0, 0.0, 0.3, 0.5, 1.0, 2.0]


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "tv", "chi2", "reverse_chi2"])
def test_closed_forms_float64(name, rng):
    with jax.enable_x64():
        for _ in range(3):
            pi, p = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
            got = D.divergence(name, jnp.log(pi), jnp.log(p))
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(float(got), _np_closed_form(name, pi, p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("a", ALPHAS)
def test_alpha_family_closed_form_and_limits(a, rng):
    with jax.enable_x64():
        pi, p = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
        got = float(D.divergence(D.alpha(a), jnp.log(pi), jnp.log(p)))
        np.testing.assert_allclose(got, _np_closed_form("alpha", pi, p, a), rtol=1e-10)
        # Special members of the family.
        if a == 0.5:
            np.testing.assert_allclose(got, 2 * np.sum((np.sqrt(pi) - np.sqrt(p)) ** 2), rtol=1e-12)
        if a == 2.0:
            np.testing.assert_allclose(got, 0.5 * _np_closed_form("reverse_chi2", pi, p), rtol=1e-12)
        if a == -1.0:
            np.testing.assert_allclose(got, 0.5 * _np_closed_form("chi2", pi, p), rtol=1e-12)
        # Continuity at the KL limits.
        if a in (0.0, 1.0):
            near = float(D.divergence(D.alpha(a + 1e-6), jnp.log(pi), jnp.log(p)))
            np.testing.assert_allclose(near, got, rtol=1e-4)


def _all_divs():
    return [D.get(n) for n in D.names()] + [D.alpha(a) for a in ALPHAS]


@pytest.mark.parametrize("div", _all_divs(), ids=repr)
def test_f_prime_is_derivative_of_f_and_f_of_one_is_zero(div):
    with jax.enable_x64():
        u = jnp.array([0.05, 0.3, 0.7, 1.6, 4.0, 25.0])
        auto = jax.vmap(jax.grad(lambda x: div.f(x)))(u)
        np.testing.assert_allclose(div.f_prime(u), auto, rtol=1e-10, atol=1e-12)
        assert abs(float(div.f(jnp.array(1.0)))) < 1e-15
        # Convexity on the grid: f' is non-decreasing.
        assert np.all(np.diff(np.asarray(div.f_prime(u))) >= -1e-12)
        # The stored limits: f(0) and f'(∞).
        f0 = float(div.f(jnp.array(1e-30)))
        slope = float(div.f_prime(jnp.array(1e30)))
        if math.isfinite(div.f_at_zero):
            np.testing.assert_allclose(f0, div.f_at_zero, rtol=1e-6, atol=1e-6)
        else:
            assert f0 > 20
        if math.isfinite(div.slope_at_inf):
            np.testing.assert_allclose(slope, div.slope_at_inf, rtol=1e-6, atol=1e-6)
        else:
            assert slope > 20


def test_js_symmetric_bounded_tv_bounded_zero_iff_equal(rng):
    with jax.enable_x64():
        for _ in range(2):
            pi, p = rng.dirichlet(np.ones(6) * 0.3), rng.dirichlet(np.ones(6) * 0.3)
            lpi, lp = jnp.log(pi), jnp.log(p)
            js = float(D.divergence("js", lpi, lp))
            np.testing.assert_allclose(js, float(D.divergence("js", lp, lpi)), rtol=1e-13)
            assert 0 < js < math.log(2)
            tv = float(D.divergence("tv", lpi, lp))
            assert 0 < tv < 1
            np.testing.assert_allclose(tv, float(D.divergence("tv", lp, lpi)), rtol=1e-13)
            for div in _all_divs():
                assert float(D.divergence(div, lpi, lp)) > 0, div
                assert abs(float(D.divergence(div, lpi, lpi))) < 1e-14, div
        # Disjoint supports: JS = log 2 and TV = 1 exactly.
        a = jnp.log(jnp.array([0.5, 0.5, 0.0, 0.0]))
        b = jnp.log(jnp.array([0.0, 0.0, 0.25, 0.75]))
        np.testing.assert_allclose(float(D.divergence("js", a, b)), math.log(2), rtol=1e-14)
        np.testing.assert_allclose(float(D.divergence("tv", a, b)), 1.0, rtol=1e-14)


def test_zero_probabilities_use_the_limits():
    with jax.enable_x64():
        pi = np.array([0.5, 0.3, 0.2])
        p = np.array([0.6, 0.4, 0.0])  # p has a zero where π does not
        lpi, lp = jnp.log(pi), jnp.log(p)
        # forward KL sums over p's support only; reverse KL and reverse χ² are infinite.
        np.testing.assert_allclose(
            float(D.divergence("forward_kl", lpi, lp)), np.sum(p[:2] * np.log(p[:2] / pi[:2])), rtol=1e-13
        )
        assert float(D.divergence("reverse_kl", lpi, lp)) == np.inf
        assert float(D.divergence("reverse_chi2", lpi, lp)) == np.inf
        np.testing.assert_allclose(float(D.divergence("tv", lpi, lp)), 0.5 * np.abs(pi - p).sum(), rtol=1e-13)
        np.testing.assert_allclose(
            float(D.divergence("chi2", lpi, lp)), np.sum((p - pi) ** 2 / pi), rtol=1e-13
        )
        m = (pi + p) / 2
        js = 0.5 * np.sum(pi * np.log(pi / m)) + 0.5 * np.sum(p[:2] * np.log(p[:2] / m[:2]))
        np.testing.assert_allclose(float(D.divergence("js", lpi, lp)), js, rtol=1e-13)
        # Swapped roles: π has the zero.
        assert float(D.divergence("forward_kl", lp, lpi)) == np.inf
        np.testing.assert_allclose(
            float(D.divergence("reverse_kl", lp, lpi)), np.sum(p[:2] * np.log(p[:2] / pi[:2])), rtol=1e-13
        )
        # Gradients with respect to finite entries stay finite.
        g = jax.grad(lambda l: D.divergence("js", jax.nn.log_softmax(l), lp))(jnp.log(pi))
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "tv", "chi2", "reverse_chi2", "alpha"])
def test_sequence_scale_log_probs_are_stable_in_float32(name):
    """Log-probs of −300 (long sequences): float32 gives the float64 value, no overflow or NaN."""
    lpi = jnp.array([math.log(0.7), math.log(0.3) - 1e-7, -300.0], jnp.float32)
    lp = jnp.array([math.log(0.5), math.log(0.5) - 1e-7, -310.0], jnp.float32)
    v32 = D.divergence(name, lpi, lp)
    with jax.enable_x64():
        v64 = D.divergence(name, jnp.asarray(lpi, jnp.float64), jnp.asarray(lp, jnp.float64))
    assert np.isfinite(float(v32))
    np.testing.assert_allclose(float(v32), float(v64), rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda x: D.divergence(name, x, lp))(lpi)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "js", "chi2", "reverse_chi2", "alpha"])
def test_gradient_matches_finite_differences(name, rng):
    lp = jnp.log(jnp.asarray(rng.dirichlet(np.ones(5))))
    with jax.enable_x64():
        lp64 = jnp.asarray(lp, jnp.float64)
        check_grads(lambda l: D.divergence(name, jax.nn.log_softmax(l), lp64), (jnp.array(rng.normal(size=5)),),
                    order=1, modes=("rev",))


def test_registry_names_and_errors():
    assert D.names() == ["forward_kl", "reverse_kl", "js", "tv", "chi2", "reverse_chi2", "alpha"]
    with pytest.raises(ValueError, match="Valid divergences: forward_kl, reverse_kl, js, tv, chi2"):
        D.get("kl")
    with pytest.raises(ValueError, match="Did you mean: js"):
        D.get("jss")
    with pytest.raises(TypeError, match="name or a Divergence"):
        D.get(3)
    with pytest.raises(ValueError, match="alpha=nan must be finite"):
        D.get("alpha", alpha=float("nan"))
    with pytest.raises(ValueError, match="invalid hyperparameters"):
        D.get("js", alpha=0.3)
    assert D.get("alpha", alpha=0.3) == D.alpha(0.3)
    assert D.get("alpha") == D.alpha(0.5) != D.alpha(0.3)
    assert hash(D.get("js")) == hash(D.get("js"))
    with pytest.raises(ValueError, match="already registered"):
        D.register("js", lambda: D.get("js"))


def test_divergence_is_a_static_jit_argument():
    lpi = jnp.log(jnp.array([0.2, 0.8]))
    lp = jnp.log(jnp.array([0.6, 0.4]))
    f = jax.jit(D.divergence, static_argnums=0)
    for div in (D.get("js"), D.alpha(0.3), "tv"):
        np.testing.assert_allclose(f(div, lpi, lp), D.divergence(div, lpi, lp), rtol=1e-6)

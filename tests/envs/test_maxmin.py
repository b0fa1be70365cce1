"""MaxMin (egalitarian) policy on a bandit: against independent float64 solvers of the dual, closed forms, KKT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import envs


def _np_lsm(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _primal(logp, r, ref, beta):
    """P(π) = min_g E_π[r_g] − β·KL(π‖μ) in float64 (π renormalised; its float32 rounding is a valid policy)."""
    logp = _np_lsm(logp)
    p = np.exp(logp)
    return (r @ p).min() - beta * (p * (logp - _np_lsm(ref))).sum()


def _dual(w, r, ref, beta):
    """D(w) = β·log Σ_y μ(y)·exp((wᵀr)(y)/β), float64, w [..., G]. Weak duality: P(π) ≤ D(w) for all π, w."""
    x = _np_lsm(ref) + (w @ r) / beta
    m = x.max(-1, keepdims=True)
    return beta * (m[..., 0] + np.log(np.exp(x - m).sum(-1)))


def _dual_min_g2(r, ref, beta):
    """G = 2: brute force over a grid of w = (t, 1 − t), then golden-section search (D is convex in t)."""
    ts = np.linspace(0.0, 1.0, 2001)
    vals = _dual(np.stack([ts, 1 - ts], 1), r, ref, beta)
    i = int(np.argmin(vals))
    lo, hi = ts[max(i - 1, 0)], ts[min(i + 1, len(ts) - 1)]
    phi = (np.sqrt(5) - 1) / 2
    f = lambda t: _dual(np.array([t, 1 - t]), r, ref, beta)
    for _ in range(100):
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        if f(a) < f(b):
            hi = b
        else:
            lo = a
    return min(float(vals.min()), float(f(0.5 * (lo + hi))))


def _project_simplex(v):
    """Euclidean projection of each row of v onto the simplex (sort-based)."""
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, -1) - 1
    k = np.arange(1, v.shape[-1] + 1)
    rho = (u - css / k > 0).sum(-1)
    theta = np.take_along_axis(css, rho[..., None] - 1, -1) / rho[..., None]
    return np.maximum(v - theta, 0)


def _dual_min_fista(r, ref, beta, iters=3000):
    """Any G: accelerated projected gradient (FISTA) on the smooth convex dual, float64; ∇D(w) = E_{π_w}[r]."""
    g = r.shape[0]
    lip = np.sum((r.max(1) - r.min(1)) ** 2) / (4 * beta)  # ‖∇²D‖ ≤ tr Cov(r)/β ≤ Σ_g range_g²/(4β)
    w = np.full(g, 1.0 / g)
    y, t = w.copy(), 1.0
    lref = _np_lsm(ref)
    for _ in range(iters):
        p = np.exp(_np_lsm(lref + (y @ r) / beta))
        w_next = _project_simplex(y - (r @ p) / lip)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = w_next + (t - 1) / t_next * (w_next - w)
        w, t = w_next, t_next
    return float(_dual(w, r, ref, beta))


def _problems(seed, n, g, k):
    rng = np.random.default_rng(seed)
    rs = rng.normal(size=(n, g, k)) * rng.uniform(0.5, 2.0, size=(n, 1, 1))
    refs = rng.normal(size=(n, k))
    betas = rng.uniform(0.2, 2.0, size=n)
    return rs, refs, betas


def test_two_groups_against_a_brute_force_dual_search():
    rs, refs, betas = _problems(0, 6, 2, 7)
    logps = jax.vmap(envs.maxmin_policy)(jnp.asarray(rs, jnp.float32), jnp.asarray(refs, jnp.float32),
                                         jnp.asarray(betas, jnp.float32))
    for lp, r, ref, beta in zip(np.asarray(logps), rs, refs, betas, strict=True):
        d_star = _dual_min_g2(r, ref, beta)
        p = _primal(lp, r, ref, beta)
        # weak duality P(π) ≤ D(w) for every w; the gap to the independent dual minimum is the suboptimality
        assert p <= d_star + 1e-9
        assert d_star - p < 1e-6, (d_star, p)


def test_several_groups_against_numpy_fista_on_the_dual():
    rs, refs, betas = _problems(1, 4, 4, 6)
    logps = jax.vmap(envs.maxmin_policy)(jnp.asarray(rs, jnp.float32), jnp.asarray(refs, jnp.float32),
                                         jnp.asarray(betas, jnp.float32))
    for lp, r, ref, beta in zip(np.asarray(logps), rs, refs, betas, strict=True):
        d_star = _dual_min_fista(r, ref, beta)
        p = _primal(lp, r, ref, beta)
        assert p <= d_star + 1e-9
        assert d_star - p < 1e-6, (d_star, p)


def test_float64_reaches_1e_minus_9_even_for_small_beta():
    rs, refs, _ = _problems(3, 3, 2, 9)
    with jax.enable_x64():
        for r, ref, beta in zip(rs, refs, (0.02, 0.1, 5.0), strict=True):
            lp = envs.maxmin_policy(jnp.asarray(r), jnp.asarray(ref), beta)
            assert lp.dtype == jnp.float64
            d_star = _dual_min_g2(r, ref, beta)
            p = _primal(np.asarray(lp), r, ref, beta)
            assert -1e-12 <= d_star - p < 1e-9, (beta, d_star - p)


def test_kkt_conditions_recovered_from_the_policy(rng):
    # log π* − log μ = (w*ᵀr)/β − log Z: regress to recover w*; it lies on the simplex and only the groups
    # with the smallest expected reward carry weight (complementary slackness)
    rs, refs, betas = _problems(2, 3, 3, 8)
    for r, ref, beta in zip(rs, refs, betas, strict=True):
        lp = np.asarray(envs.maxmin_policy(jnp.asarray(r, jnp.float32), jnp.asarray(ref, jnp.float32), beta),
                        np.float64)
        design = np.concatenate([r.T / beta, np.ones((r.shape[1], 1))], 1)
        coef, *_ = np.linalg.lstsq(design, lp - _np_lsm(ref), rcond=None)
        w = coef[:-1]
        np.testing.assert_allclose(w.sum(), 1.0, atol=1e-4)
        assert w.min() > -1e-4
        m = r @ np.exp(lp)
        served = w > 1e-3
        np.testing.assert_allclose(m[served], m.min(), atol=1e-5)
        assert np.all(w[m > m.min() + 1e-3] < 1e-4)


def test_one_group_is_the_kl_regularised_optimum(rng):
    r = rng.normal(size=(1, 9)).astype(np.float32) * 3
    ref = _np_lsm(rng.normal(size=9)).astype(np.float32)
    for beta in (0.05, 0.7, 20.0):
        got = envs.maxmin_policy(r, ref, beta)
        np.testing.assert_allclose(got, envs.optimal_logps(r[0], ref, beta), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(got, _np_lsm(ref + r[0] / beta), rtol=1e-6, atol=1e-5)


def test_a_group_worst_on_every_arm_decides_alone(rng):
    # r_0 < r_1 on every arm: min_g E_π[r_g] = E_π[r_0] for every π, so π* is group 0's optimum
    r0 = rng.normal(size=6)
    r = np.stack([r0, r0 + rng.uniform(0.1, 2.0, size=6)]).astype(np.float32)
    ref = rng.normal(size=6).astype(np.float32)
    got = envs.maxmin_policy(r, ref, 0.5)
    np.testing.assert_allclose(got, _np_lsm(ref + r0 / 0.5), atol=1e-5)


def test_minority_is_served_and_the_optimum_beats_other_policies():
    # the paper's impossibility in miniature: 80% of users like arm 0, 20% like arm 1, arm 2 is a compromise
    r = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.6]])
    ref = np.log(np.full(3, 1 / 3))
    beta = 0.1
    pooled = _np_lsm(ref + (0.8 * r[0] + 0.2 * r[1]) / beta)  # single-reward RLHF on pooled labels
    star = np.asarray(envs.maxmin_policy(jnp.asarray(r, jnp.float32), jnp.asarray(ref, jnp.float32), beta),
                      np.float64)
    served_pooled = r @ np.exp(pooled)
    served_star = r @ np.exp(star)
    assert served_pooled[1] < 0.3 and served_star.min() > 0.55
    np.testing.assert_allclose(served_star[0], served_star[1], atol=1e-5)  # symmetric: both groups tied
    p_star = _primal(star, r, ref, beta)
    others = [pooled, _np_lsm(ref + r[0] / beta), _np_lsm(ref + r[1] / beta), ref]
    others += list(_np_lsm(np.random.default_rng(0).normal(size=(200, 3)) * 3))
    assert all(_primal(o, r, ref, beta) < p_star for o in others)


def test_invariances_and_transforms(rng):
    r = rng.normal(size=(3, 5)).astype(np.float32)
    ref = rng.normal(size=5).astype(np.float32)
    beta = 0.6
    base = envs.maxmin_policy(r, ref, beta)
    # a common shift of all groups' rewards, a common scale of (r, β), a permutation of the groups, an
    # unnormalised reference: the same policy
    np.testing.assert_allclose(envs.maxmin_policy(r + 3.0, ref, beta), base, atol=2e-5)
    np.testing.assert_allclose(envs.maxmin_policy(4.0 * r, ref, 4.0 * beta), base, atol=2e-5)
    np.testing.assert_allclose(envs.maxmin_policy(r[::-1], ref, beta), base, atol=2e-5)
    np.testing.assert_allclose(envs.maxmin_policy(r, ref + 2.0, beta), base, atol=2e-5)
    np.testing.assert_allclose(jax.jit(envs.maxmin_policy)(r, ref, beta), base, atol=1e-6)
    betas = jnp.array([0.3, 0.6, 2.0])
    batched = jax.vmap(envs.maxmin_policy, (None, None, 0))(r, ref, betas)
    np.testing.assert_allclose(batched[1], base, atol=1e-6)
    np.testing.assert_allclose(batched[2], envs.maxmin_policy(r, ref, 2.0), atol=1e-6)
    np.testing.assert_allclose(jnp.sum(jnp.exp(base)), 1.0, rtol=1e-6)
    # arms that μ never plays are never played
    ref0 = ref.copy()
    ref0[1] = -np.inf
    got = envs.maxmin_policy(r, ref0, beta)
    assert float(got[1]) == -np.inf and bool(jnp.all(jnp.isfinite(got[jnp.array([0, 2, 3, 4])])))


def test_bad_inputs_raise_value_errors():
    r = jnp.zeros((2, 3))
    ref = jnp.zeros(3)
    for beta in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=f"beta={beta!r}"):
            envs.maxmin_policy(r, ref, beta)
    with pytest.raises(ValueError, match=r"rewards of shape \(3,\)"):
        envs.maxmin_policy(jnp.zeros(3), ref, 1.0)
    with pytest.raises(ValueError, match=r"ref_logps of shape \(4,\)"):
        envs.maxmin_policy(r, jnp.zeros(4), 1.0)
    with pytest.raises(ValueError, match="finite"):
        envs.maxmin_policy(r.at[0, 0].set(jnp.nan), ref, 1.0)
    with pytest.raises(ValueError, match="ref_logps=.*log-probabilities"):
        envs.maxmin_policy(r, jnp.full(3, -jnp.inf), 1.0)
    with pytest.raises(ValueError, match="ref_logps=.*log-probabilities"):
        envs.maxmin_policy(r, jnp.array([0.0, jnp.nan, 0.0]), 1.0)
    with pytest.raises(ValueError, match="G >= 1"):
        envs.maxmin_policy(jnp.zeros((0, 3)), ref, 1.0)

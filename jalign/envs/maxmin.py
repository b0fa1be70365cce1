"""MaxMin (egalitarian) alignment on a bandit, solved exactly through its convex dual.

Users come from G groups with rewards r_g over K arms (``rewards[G, K]``). The egalitarian objective of
MaxMin-RLHF (Chakraborty et al., 2024) with a KL penalty towards the reference policy μ is

    P(π) = min_g E_{y~π}[r_g(y)] − β·KL(π‖μ),        maximised over the simplex of policies π.

P is strictly concave, so the maximiser π* is unique. Writing min_g a_g = min_{w ∈ Δ_G} wᵀa and exchanging
max and min (Sion), for fixed group weights w the inner problem is the single-reward KL-regularised one with
reward wᵀr, maximised by π_w ∝ μ·exp((wᵀr)/β) with value

    D(w) = β·log Σ_y μ(y)·exp((wᵀr)(y)/β),

and π* = π_{w*} for any minimiser w* of the convex dual D over the simplex Δ_G. D is smooth:
∇D(w) = m(w) := E_{π_w}[r] (the groups' expected rewards) and ∇²D(w) = Cov_{π_w}(r)/β. For every w the
duality gap certifies π_w:

    D(w) − P(π_w) = wᵀm(w) − min_g m_g(w) ≥ P(π*) − P(π_w) ≥ 0,

which vanishes exactly when w puts weight only on the groups with the smallest expected reward
(complementary slackness): at the optimum the served groups are tied and every other group does better.

The dual is solved by a log-barrier path-following Newton method on the simplex:
min_w D(w) − τ·Σ_g log w_g subject to Σ_g w_g = 1 for τ = 1, 10⁻¹, …, 10⁻¹¹ (rewards rescaled to unit
range), a few Newton steps per τ, each with an exact line search (bisection on the directional derivative,
which is monotone along the line because the barrier objective is convex). At the centre of the barrier
problem the duality gap is at most G·τ, so the last stage leaves a gap far below float32 resolution. The
iteration counts are fixed, so the solver is jit-able and vmap-able (over β, rewards or μ).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_BARRIERS = tuple(10.0**-k for k in range(12))  # τ on rewards rescaled to unit range
_NEWTON_STEPS = 8  # Newton steps per barrier level
_BISECTIONS = 40  # line-search bisections


def _f32(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _expected(w, r, ref, beta):
    """(log π_w, m(w) = E_{π_w}[r]) for rewards r [G, K]."""
    logp = jax.nn.log_softmax(ref + (w @ r) / beta)
    return logp, r @ jnp.exp(logp)


def _newton_step(w, tau, r, ref, beta):
    logp, m = _expected(w, r, ref, beta)
    p = jnp.exp(logp)
    c = r - m[:, None]
    h = (c * p) @ c.T / beta  # ∇²D = Cov_{π_w}(r)/β
    g = w.shape[0]
    eye = jnp.eye(g, dtype=w.dtype)
    # Newton step of the barrier problem f(w) = D(w) − τ·Σ log w on {Σ w = 1}, with the constraint
    # eliminated exactly through the largest weight j (dw_j = −Σ_{k≠j} dw_k) and the other coordinates
    # scaled by w (dw_k = w_k·u_k), so that no entry is large: dw = T·u, T = (I − e_j·1ᵀ)·diag(w), column j
    # dropped. (Tᵀ ∇²f T)·u = −Tᵀ∇f with Tᵀ∇²f T = TᵀHT + τ·(I + w wᵀ/w_j²) and
    # (Tᵀ∇f)_k = w_k·(m_k − m_j) − τ + τ·w_k/w_j.
    j = jnp.argmax(w)
    ej = eye[j]
    keep = 1.0 - ej
    t = (eye - ej[:, None]) * w[None, :] * keep[None, :]
    wj = w[j]
    mat = t.T @ h @ t + tau * (eye + jnp.outer(w, w) / wj**2) * jnp.outer(keep, keep) + jnp.diag(ej)
    grad = (w * (m - m[j]) - tau + tau * w / wj) * keep
    d = jnp.sqrt(jnp.diagonal(mat))
    eq = mat / (d[:, None] * d[None, :]) + 1e-6 * eye  # Jacobi-equilibrated, tiny ridge
    chol = jax.lax.linalg.cholesky(eq)
    y = jax.lax.linalg.triangular_solve(chol, (grad / d)[:, None], left_side=True, lower=True)
    u = -jax.lax.linalg.triangular_solve(chol, y, left_side=True, lower=True, transpose_a=True)[:, 0] / d
    dw = t @ u

    def slope(alpha):  # φ'(α) for φ(α) = D(w + α·dw) − τ·Σ log(w + α·dw); increasing in α
        v = w + alpha * dw
        _, mv = _expected(v, r, ref, beta)
        return jnp.dot(mv - tau / v, dw)

    # largest feasible step: w + α·dw > 0
    ratio = dw / w
    boundary = jnp.min(jnp.where(ratio < 0, -1.0 / jnp.where(ratio < 0, ratio, -1.0), jnp.inf))
    upper = jnp.minimum(1.0, 0.99 * boundary).astype(w.dtype)

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        down = slope(mid) <= 0
        return jnp.where(down, mid, lo), jnp.where(down, hi, mid)

    lo, _ = jax.lax.fori_loop(0, _BISECTIONS, bisect, (jnp.zeros((), w.dtype), upper))
    alpha = jnp.where(slope(upper) <= 0, upper, lo)
    alpha = jnp.where(jnp.all(jnp.isfinite(dw)), alpha, 0.0)
    w_new = w + alpha * jnp.where(jnp.isfinite(dw), dw, 0.0)
    return jnp.maximum(w_new, jnp.finfo(w.dtype).tiny)


@jax.jit
def _solve(rewards, ref_logps, beta):
    r = _f32(rewards)
    dtype = jnp.promote_types(r.dtype, _f32(ref_logps).dtype)
    r = r.astype(dtype)
    ref = jax.nn.log_softmax(_f32(ref_logps).astype(dtype))
    beta = _f32(beta).astype(dtype)
    # D is invariant (up to a constant) under r → r − c for one c shared by all groups, and π_w under
    # (r, β) → (r/s, β/s): solve on rewards of unit range so that the barrier levels are scale-free.
    finite = jnp.isfinite(ref)[None, :]
    centre = jnp.sum(jnp.where(finite, r, 0.0)) / jnp.maximum(jnp.sum(finite) * r.shape[0], 1)
    scale = jnp.max(jnp.where(finite, jnp.abs(r - centre), 0.0))
    scale = jnp.where(scale > 0, scale, 1.0)
    rn = (r - centre) / scale
    bn = beta / scale
    g = r.shape[0]
    taus = jnp.repeat(jnp.asarray(_BARRIERS, dtype), _NEWTON_STEPS)

    def step(w, tau):
        return _newton_step(w, tau, rn, ref, bn), None

    w0 = jnp.full((g,), 1.0 / g, dtype)
    w, _ = jax.lax.scan(step, w0, taus)
    w = w / jnp.sum(w)
    logp, _ = _expected(w, rn, ref, bn)
    return logp, w


def _check(rewards, ref_logps, beta):
    if np.ndim(rewards) != 2:
        raise ValueError(f"maxmin_policy: argument rewards of shape {np.shape(rewards)} must be [G, K]")
    g, k = np.shape(rewards)
    if g < 1 or k < 1:
        raise ValueError(f"maxmin_policy: argument rewards of shape {(g, k)} needs G >= 1 groups and K >= 1 arms")
    if np.shape(ref_logps) != (k,):
        raise ValueError(
            f"maxmin_policy: argument ref_logps of shape {np.shape(ref_logps)} must be [K] = ({k},) "
            "like the last axis of rewards"
        )
    if np.ndim(beta) != 0:
        raise ValueError(f"maxmin_policy: argument beta={beta!r} must be a scalar")
    if not isinstance(beta, jax.core.Tracer):
        v = np.asarray(beta)
        if not np.issubdtype(v.dtype, np.number) or not (np.isfinite(v) and v > 0):
            raise ValueError(f"maxmin_policy: argument beta={beta!r} must be finite and > 0")
    if not isinstance(rewards, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(rewards))):
        raise ValueError("maxmin_policy: argument rewards must be finite")
    if not isinstance(ref_logps, jax.core.Tracer):
        ref = np.asarray(ref_logps, np.float64)
        if np.any(np.isnan(ref) | (ref == np.inf)) or not np.any(np.isfinite(ref)):
            raise ValueError(f"maxmin_policy: argument ref_logps={ref_logps!r} must be log-probabilities "
                             "(no NaN or +inf, at least one finite entry)")


def maxmin_policy(rewards, ref_logps, beta):
    """Log-probabilities of the exact maximiser of min_g E_π[r_g] − β·KL(π‖μ) on a K-armed bandit.

    π* = π_{w*} ∝ μ·exp((w*ᵀr)/β), where w* minimises the convex dual
    D(w) = β·log Σ_y μ(y)·exp((wᵀr)(y)/β) over the simplex of group weights (see the module docstring for
    the derivation, the duality-gap certificate and the solver). With one group this is the KL-regularised
    optimum μ·exp(r/β)/Z (:func:`jalign.envs.optimal_logps`); when one group's reward is the smallest on
    every arm, π* is that group's optimum; at π* the groups that carry weight have equal expected rewards
    and all others higher ones.

    Accuracy: the primal objective of the returned policy is within about 1e-6·(reward range) of the
    optimum in float32 (the barrier levels end far below float32 resolution). jit- and vmap-able.

    Args:
      rewards: ``[G, K]`` the reward r_g(y) of each group g for each arm y (finite).
      ref_logps: ``[K]`` log μ(y) of the reference policy (renormalised; −inf marks arms μ never plays,
        which π* never plays either).
      beta: β > 0, the KL coefficient (a scalar; may be traced).

    Returns:
      ``[K]`` log π*(y) (float32 or wider).

    Raises:
      ValueError: for shapes other than ``[G, K]`` / ``[K]``, non-finite rewards, ``ref_logps`` with NaN,
        +inf or no finite entry, or β not finite and > 0 (value checks on concrete inputs only).

    References:
      Chakraborty et al., *MaxMin-RLHF: Alignment with Diverse Human Preferences*, ICML 2024,
      arXiv 2402.08925.
    """
    _check(rewards, ref_logps, beta)
    logp, _ = _solve(rewards, ref_logps, beta)
    return logp

"""Preference games and the InfAlign calculus on a K-armed bandit (exact, pure functions of arrays).

Preference games (Munos et al., Nash learning from human feedback, ICML 2024; Calandriello et al., Human
alignment of large language models through online preference optimisation, ICML 2024). A preference matrix
P[y, y'] = P(y ≻ y') ∈ [0, 1] with P + Pᵀ = 1 (so the diagonal is ½) need not come from any reward (cyclic,
rock–paper–scissors preferences are allowed). With a reference μ and τ > 0 the regularised game
P_τ(π ≻ π') = P(π ≻ π') − τ·KL(π‖μ) + τ·KL(π'‖μ) has a unique symmetric Nash equilibrium π*_τ, the fixed point

    π*_τ(y) ∝ μ(y)·exp(P(y ≻ π*_τ)/τ),   P(y ≻ π) = Σ_{y'} P[y, y']·π(y')     (:func:`regularized_nash`).

Online IPO and Nash-MD both converge to it (Calandriello et al.'s theorem).

InfAlign (Balashankar et al., arXiv 2412.19792) and best-of-N (Beirami et al., arXiv 2401.01879), for a reward
judge r with ties counted ½:

* win rate W(π ≻ π') = E_{y~π, y'~π'}[1(r(y) > r(y')) + ½·1(r(y) = r(y'))]            (:func:`win_rate`);
* calibrated reward C(y) = μ(r < r(y)) + ½·μ(r = r(y)), and W(π ≻ μ) = E_π[C] exactly  (:func:`calibrated_rewards`);
* best-of-n of μ: a tie class of mass m with mass F below it gets (F + m)^n − F^n, split ∝ μ within the
  class                                                                                  (:func:`best_of_n`).

All functions take 1-D arrays over the K arms (``jax.vmap`` for batches), compute in float32 (float64 when the
inputs are float64 under ``jax.enable_x64``), and are ``jax.jit``-able. Arguments are validated only when they
are concrete (``ValueError`` naming the argument); traced values pass unchecked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jalign.numerics import float_dtype, is_concrete

__all__ = ["best_of_n", "calibrated_rewards", "regularized_nash", "win_rate"]

# Stopping rule of :func:`regularized_nash`: the fixed-point residual in probability space, per dtype.
_NASH_TOL = {np.dtype(np.float32): 2e-7, np.dtype(np.float64): 1e-13}
# A float32 solve of a very small τ can stop short of the tolerance at rounding level; the loop then ends when
# the residual has not improved for this many iterations (or at _NASH_MAX_ITER).
_NASH_PATIENCE = 2000
_NASH_MAX_ITER = 1_000_000


def _vector(fn: str, name: str, x, dtype, k=None):
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{fn}: argument {name!r} must be 1-D (one entry per arm), got shape {tuple(x.shape)}")
    if k is not None and x.shape[0] != k:
        raise ValueError(f"{fn}: argument {name!r} must have shape ({k},), got {tuple(x.shape)}")
    return x.astype(dtype)


def _check_probs(fn: str, name: str, raw, p) -> None:
    if not is_concrete(raw):
        return
    v = np.asarray(p, np.float64)
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"{fn}: argument {name!r} must be finite and >= 0, got {v}")
    if not abs(v.sum() - 1.0) <= 1e-5:
        raise ValueError(f"{fn}: argument {name!r} must sum to 1, got sum {v.sum()!r}")


def _check_rewards(fn: str, raw, r) -> None:
    if is_concrete(raw) and not np.all(np.isfinite(np.asarray(r))):
        raise ValueError(f"{fn}: argument 'rewards' must be finite, got {np.asarray(r)}")


def _beats(rewards):
    """S[y, y'] = 1(r(y) > r(y')) + ½·1(r(y) = r(y')), ``[K, K]``."""
    hi, lo = rewards[:, None], rewards[None, :]
    return jnp.where(hi > lo, 1.0, jnp.where(hi == lo, 0.5, 0.0)).astype(rewards.dtype)


# --------------------------------------------------------------------------------------------------------
# The regularised preference game
# --------------------------------------------------------------------------------------------------------


def _check_pref(fn: str, raw, P) -> None:
    if not is_concrete(raw):
        return
    v = np.asarray(P, np.float64)
    if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > 1):
        raise ValueError(f"{fn}: argument 'pref' must have entries in [0, 1], got {v}")
    err = np.abs(v + v.T - 1.0).max()
    if not err <= 1e-5:
        raise ValueError(
            f"{fn}: argument 'pref' must satisfy pref + pref.T = 1 (P(y ≻ y') + P(y' ≻ y) = 1, diagonal ½); "
            f"max |pref + pref.T - 1| = {err:.3g}"
        )


@functools.partial(jax.jit, static_argnums=3)
def _nash_solve(P, lmu, tau, tol):
    """The extragradient loop of :func:`regularized_nash` (jitted once per shape and dtype)."""
    A = 0.5 * (P - P.T)  # = P − ½ on the simplex; exactly antisymmetric
    eta = 1.0 / (tau + 2.0 * jnp.max(jnp.abs(A)))
    alpha = eta * tau / (1.0 + eta * tau)

    def target(theta):  # ln μ + P(· ≻ π)/τ up to a constant, π = softmax(θ)
        return lmu + A @ jax.nn.softmax(theta) / tau

    def residual(theta):
        return jnp.max(jnp.abs(jax.nn.softmax(theta) - jax.nn.softmax(target(theta))))

    def step(theta):
        half = (1.0 - alpha) * theta + alpha * target(theta)
        new = (1.0 - alpha) * theta + alpha * target(half)
        return new - jnp.max(new)  # a constant shift: same policy, bounded logits

    def cond(state):
        _, _, best_res, it, stall = state
        return (best_res > tol) & (it < _NASH_MAX_ITER) & (stall < _NASH_PATIENCE)

    def body(state):
        theta, best, best_res, it, stall = state
        theta = step(theta)
        res = residual(theta)
        better = res < best_res
        best = jnp.where(better, theta, best)
        return theta, best, jnp.minimum(res, best_res), it + 1, jnp.where(better, 0, stall + 1)

    theta0 = lmu - jnp.max(lmu)
    state = (theta0, theta0, residual(theta0), jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))
    best = jax.lax.while_loop(cond, body, state)[1]
    return jax.nn.log_softmax(best)


def regularized_nash(pref, ref_logps, tau):
    """Log-probabilities of the Nash equilibrium π*_τ of the τ-regularised preference game.

    π*_τ is the unique solution of the fixed-point equation

        π(y) = T(π)(y) = μ(y)·exp(P(y ≻ π)/τ) / Σ_{y'} μ(y')·exp(P(y' ≻ π)/τ),   P(y ≻ π) = Σ_{y'} P[y, y']·π(y'),

    the symmetric equilibrium of P_τ(π ≻ π') = P(π ≻ π') − τ·KL(π‖μ) + τ·KL(π'‖μ), for any P with
    P + Pᵀ = 1, transitive (e.g. Bradley–Terry) or cyclic (rock–paper–scissors).

    Solver. The plain iteration π ← T(π) diverges (oscillates) once τ is small, because the linear part of T is
    A·(diag π − ππᵀ)/τ with A = P − ½ antisymmetric: its eigenvalues are purely imaginary, of size up to
    ~‖A‖/τ. The solver is the extragradient (mirror-prox) form of Nash-MD's geometric-mixture update in log
    space. With θ the logits of the iterate, η = 1/(τ + 2·max|A|) and α = ητ/(1 + ητ),

        θ_½  = (1 − α)·θ + α·(ln μ + A·softmax(θ)/τ)
        θ'   = (1 − α)·θ + α·(ln μ + A·softmax(θ_½)/τ)

    i.e. π' ∝ π^{1/(1+ητ)}·μ^{ητ/(1+ητ)}·exp(η/(1+ητ)·P(y ≻ π_½)): Nash-MD's mixture with μ followed by a step
    on the payoff of the leading point π_½ (Nash-MD itself uses the current point; the look-ahead removes the
    rotation and makes the last iterate converge linearly, at a rate of about 1 − ητ per iteration, for every
    τ > 0; cf. Cen et al., Fast policy extragradient methods for competitive games with entropy
    regularization, NeurIPS 2021). The iteration starts at π = μ and runs in a ``jax.lax.while_loop`` until the
    residual max_y |π(y) − T(π)(y)| is ≤ 2e-7 in float32 (≤ 1e-13 in float64). Below τ ≈ 0.01 a float32 solve
    can stall at rounding level above that (the logits ln μ + Pπ/τ are of size 1/τ; measured: residual ≤ 1e-6
    down to τ = 0.01, ≈ 1e-5 at τ = 0.001); the loop then stops after 2000 iterations without improvement (or
    after 10⁶ iterations) and returns the best iterate found — use float64 inputs under ``jax.enable_x64`` for
    smaller τ. About 70 iterations suffice for τ = 1, a few thousand for τ = 0.01 (the count grows like 1/τ).
    The loop is not reverse-mode differentiable.

    Args:
      pref: P[y, y'] = P(y ≻ y'), ``[K, K]``, entries in [0, 1], P + Pᵀ = 1 (checked to 1e-5).
      ref_logps: ln μ, ``[K]`` (exp sums to 1; −inf for arms outside μ's support, which get π = 0).
      tau: the regularisation strength τ > 0.

    Returns:
      ln π*_τ, ``[K]``, in float32 (float64 for float64 inputs under x64).

    References:
      Munos et al., Nash learning from human feedback, ICML 2024 (arXiv 2312.00886);
      Calandriello et al., Human alignment of large language models through online preference optimisation,
      ICML 2024 (arXiv 2403.08635).

    >>> import jax.numpy as jnp
    >>> rps = jnp.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    >>> [round(float(p), 4) for p in jnp.exp(regularized_nash(rps, jnp.log(jnp.ones(3) / 3), 0.1))]
    [0.3333, 0.3333, 0.3333]
    """
    fn = "regularized_nash"
    dtype = float_dtype(pref, ref_logps, tau)
    lmu = _vector(fn, "ref_logps", ref_logps, dtype)
    k = lmu.shape[0]
    P = jnp.asarray(pref)
    if P.shape != (k, k):
        raise ValueError(f"{fn}: argument 'pref' must have shape ({k}, {k}) to match ref_logps, got {tuple(P.shape)}")
    P = P.astype(dtype)
    _check_pref(fn, pref, P)
    if is_concrete(ref_logps):
        v = np.asarray(lmu, np.float64)
        if np.any(np.isnan(v)) or np.any(v == np.inf):
            raise ValueError(f"{fn}: argument 'ref_logps' must be log-probabilities (no nan / +inf), got {v}")
        total = np.exp(v).sum()
        if not abs(total - 1.0) <= 1e-5:
            raise ValueError(f"{fn}: argument 'ref_logps' must be log-probabilities (exp sums to 1), got sum {total!r}")
    if is_concrete(tau):
        t = np.asarray(tau)
        if t.ndim != 0 or not (np.isfinite(t) and t > 0):
            raise ValueError(f"{fn}: argument tau={tau!r} must be a finite scalar > 0")
    tau = jnp.asarray(tau, dtype)

    return _nash_solve(P, lmu, tau, _NASH_TOL.get(np.dtype(dtype), 1e-6))


# --------------------------------------------------------------------------------------------------------
# InfAlign: best-of-n, win rate, calibrated reward
# --------------------------------------------------------------------------------------------------------


def best_of_n(ref_probs, rewards, n):
    """Exact distribution of the best of n i.i.d. samples from μ under ``rewards`` (ties split ∝ μ).

    For arm y with tie class {y' : r(y') = r(y)} of mass m(y) and F⁻(y) = μ(r < r(y)), F(y) = F⁻(y) + m(y):

        BoN_n(μ)(y) = (F(y)^n − F⁻(y)^n) · μ(y)/m(y)      (0 where m(y) = 0),

    which is F^n − F⁻^n for distinct rewards. Evaluated as F^n·(−expm1(n·log1p(−m/F))), so a small tie class
    under a large n does not cancel. Worst-of-n is ``best_of_n(ref_probs, -rewards, n)``.
    Non-integer n ≥ 1 gives the same formula (the continuous interpolation).

    Args:
      ref_probs: μ(y), ``[K]`` (≥ 0, summing to 1).
      rewards: r(y), ``[K]`` (finite; equal values are ties).
      n: number of samples, ≥ 1 (a Python or array scalar; n = 1 returns μ).

    Returns:
      BoN_n(μ)(y), ``[K]``.

    References:
      Beirami et al., Theoretical guarantees on the best-of-n alignment policy (arXiv 2401.01879);
      Balashankar et al., InfAlign: inference-aware language model alignment (arXiv 2412.19792).

    >>> import jax.numpy as jnp
    >>> best_of_n(jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0]), 2).tolist()
    [0.25, 0.75]
    """
    fn = "best_of_n"
    dtype = float_dtype(ref_probs, rewards, n)
    mu = _vector(fn, "ref_probs", ref_probs, dtype)
    r = _vector(fn, "rewards", rewards, dtype, mu.shape[0])
    _check_probs(fn, "ref_probs", ref_probs, mu)
    _check_rewards(fn, rewards, r)
    if is_concrete(n):
        v = np.asarray(n)
        if v.ndim != 0 or not (np.isfinite(v) and v >= 1):
            raise ValueError(f"{fn}: argument n={n!r} must be a scalar >= 1")
    n = jnp.asarray(n, dtype)
    below = r[None, :] < r[:, None]  # [y, y']: r(y') < r(y)
    tie = r[None, :] == r[:, None]
    f_lo = jnp.sum(jnp.where(below, mu[None, :], 0.0), axis=1)
    m = jnp.sum(jnp.where(tie, mu[None, :], 0.0), axis=1)
    f_hi = f_lo + m
    pos = m > 0
    safe_hi = jnp.where(pos, f_hi, 1.0)
    ratio = jnp.clip(jnp.where(pos, m / safe_hi, 0.0), 0.0, 1.0)
    # F^n − F⁻^n = F^n·(1 − (1 − m/F)^n); −expm1(n·log1p(−1)) = 1 when the class holds all the mass below.
    class_mass = jnp.exp(n * jnp.log(safe_hi)) * -jnp.expm1(n * jnp.log1p(-ratio))
    share = jnp.where(pos, mu / jnp.where(pos, m, 1.0), 0.0)
    return jnp.where(pos, class_mass * share, 0.0)


def win_rate(probs_a, probs_b, rewards):
    """W(a ≻ b) = Σ_{y,y'} a(y)·b(y')·[1(r(y) > r(y')) + ½·1(r(y) = r(y'))] (ties count ½).

    W(a ≻ b) + W(b ≻ a) = 1, W(a ≻ a) = ½, and W(π ≻ μ) = E_π[C] with C = :func:`calibrated_rewards` (μ, r).

    Args:
      probs_a: a(y), ``[K]`` (≥ 0, summing to 1).
      probs_b: b(y), ``[K]``.
      rewards: r(y), ``[K]``.

    Returns:
      The scalar win rate of a over b.

    References:
      Balashankar et al., InfAlign: inference-aware language model alignment (arXiv 2412.19792).

    >>> import jax.numpy as jnp
    >>> float(win_rate(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0])))
    0.75
    """
    fn = "win_rate"
    dtype = float_dtype(probs_a, probs_b, rewards)
    a = _vector(fn, "probs_a", probs_a, dtype)
    b = _vector(fn, "probs_b", probs_b, dtype, a.shape[0])
    r = _vector(fn, "rewards", rewards, dtype, a.shape[0])
    _check_probs(fn, "probs_a", probs_a, a)
    _check_probs(fn, "probs_b", probs_b, b)
    _check_rewards(fn, rewards, r)
    return a @ (_beats(r) @ b)


def calibrated_rewards(ref_probs, rewards):
    """Calibrated reward C(y) = μ(r < r(y)) + ½·μ(r = r(y)) ∈ [0, 1].

    C is unchanged by any strictly increasing transform of r, E_μ[C] = ½, and for any policy π the win rate
    over the reference is W(π ≻ μ) = E_π[C] exactly.

    Args:
      ref_probs: μ(y), ``[K]`` (≥ 0, summing to 1).
      rewards: r(y), ``[K]``.

    Returns:
      C(y), ``[K]``.

    References:
      Balashankar et al., InfAlign: inference-aware language model alignment (arXiv 2412.19792).

    >>> import jax.numpy as jnp
    >>> calibrated_rewards(jnp.array([0.25, 0.25, 0.5]), jnp.array([0.0, 1.0, 1.0])).tolist()
    [0.125, 0.625, 0.625]
    """
    fn = "calibrated_rewards"
    dtype = float_dtype(ref_probs, rewards)
    mu = _vector(fn, "ref_probs", ref_probs, dtype)
    r = _vector(fn, "rewards", rewards, dtype, mu.shape[0])
    _check_probs(fn, "ref_probs", ref_probs, mu)
    _check_rewards(fn, rewards, r)
    return _beats(r) @ mu

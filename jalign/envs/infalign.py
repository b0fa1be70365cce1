"""The InfAlign lab: inference-time win rates and KL-matched tilted policies on a K-armed bandit (exact).

InfAlign (Balashankar et al., arXiv 2412.19792) asks for the policy π that maximises the win rate of an
inference-time procedure T applied to π against T applied to the reference μ, W(T(π) ≻ T(μ)), at a KL budget
KL(π‖μ); its theorem says the optimum is KL-regularised RL on a transformed calibrated reward,
π ∝ μ·exp(Φ(C)/β), with C = :func:`jalign.envs.calibrated_rewards` and Φ depending on T. CTRL proposes
Φ(c) = exp(t·c) for best-of-n and Φ(c) = −exp(−t·c) for worst-of-n. On a bandit every piece is exact:

* :func:`calibrated_transform` — Φ(C) for ``"identity"``, ``"exp"`` (exp(t·c)) and ``"neg_exp"`` (−exp(−t·c));
* :func:`inference_distribution` — T_n(π) for ``"sample"`` (π itself), ``"best_of_n"`` and ``"worst_of_n"``
  (exact, ties split ∝ π; :func:`jalign.envs.best_of_n`);
* :func:`inference_win_rate` — W(T_n(π) ≻ T_n(μ)) under the reward judge r (ties ½);
* :func:`tilted_logps` / :func:`tilt_kl` — π_λ ∝ μ·exp(λ·s) (λ = 1/β) for scores s, and KL(π_λ‖μ);
* :func:`tilt_at_kl` — the λ ≥ 0 at which KL(π_λ‖μ) equals a target (bisection; KL(π_λ‖μ) increases with λ,
  d KL/dλ = λ·Var_{π_λ}(s)), so policies built from different scores are compared *at matched KL*;
* :func:`max_tilt_kl` — sup_λ KL(π_λ‖μ) = −ln μ(arg max s), the largest KL a tilt reaches;
* :func:`bon_kl_bound` — ln n − (n − 1)/n, the bound on KL(BoN_n(μ)‖μ) (Beirami et al., arXiv 2401.01879);
* :func:`inference_optimum` — the exact IAPO optimum argmax_π W(T_n(π) ≻ T_n(μ)) − β·KL(π‖μ) (a damped
  fixed-point iteration of its first-order condition), against which CTRL's transforms can be measured.

Facts the lab makes checkable: W(π ≻ μ) = E_π[C] exactly; at every KL budget κ the tilt of C itself
(Φ = identity) maximises the standard win rate W(π ≻ μ) over all π with KL(π‖μ) ≤ κ (a linear objective
under a KL ball: the Lagrangian optimum is the tilt); C, hence every policy built from Φ(C), is unchanged by a
strictly increasing transform of r, while the tilt of r itself is not.

Everything takes 1-D arrays over the K arms (``jax.vmap`` for batches), computes in float32 (float64 for
float64 inputs under ``jax.enable_x64``) and is ``jax.jit``-able; arguments are validated when concrete.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jalign.envs.games import best_of_n, win_rate
from jalign.numerics import float_dtype, is_concrete

__all__ = [
    "INFERENCE_PROCEDURES",
    "TRANSFORMS",
    "bon_kl_bound",
    "calibrated_transform",
    "inference_distribution",
    "inference_optimum",
    "inference_win_rate",
    "max_tilt_kl",
    "tilt_at_kl",
    "tilt_kl",
    "tilted_logps",
]

TRANSFORMS = ("identity", "exp", "neg_exp")
INFERENCE_PROCEDURES = ("sample", "best_of_n", "worst_of_n")

_BISECT_ITERS = 200
_MAX_DOUBLINGS = 200


def _check_choice(fn, name, value, choices):
    if value not in choices:
        raise ValueError(f"{fn}: argument {name}={value!r} must be one of {choices}")


def calibrated_transform(calibrated, kind: str = "identity", t=1.0):
    """Φ(c) of CTRL, elementwise: ``"identity"`` c, ``"exp"`` exp(t·c), ``"neg_exp"`` −exp(−t·c).

    All three are strictly increasing in c (for t > 0). Balashankar et al. propose exp(t·c) for best-of-n and
    −exp(−t·c) for worst-of-n, with t chosen per n and KL budget (a swept hyperparameter here).

    Args:
      calibrated: C, any shape (values in [0, 1] for a calibrated reward; not checked).
      kind: one of :data:`TRANSFORMS` (static).
      t: the transform's temperature, > 0 (unused for ``"identity"``).

    Returns:
      Φ(C), the shape of ``calibrated``.

    >>> import jax.numpy as jnp
    >>> [round(float(v), 4) for v in calibrated_transform(jnp.array([0.0, 1.0]), "neg_exp", 2.0)]
    [-1.0, -0.1353]
    """
    fn = "calibrated_transform"
    _check_choice(fn, "kind", kind, TRANSFORMS)
    c = jnp.asarray(calibrated)
    c = c.astype(float_dtype(c, t))
    if is_concrete(t):
        v = np.asarray(t)
        if v.ndim != 0 or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{fn}: argument t={t!r} must be a finite scalar > 0")
    t = jnp.asarray(t, c.dtype)
    if kind == "identity":
        return c
    if kind == "exp":
        return jnp.exp(t * c)
    return -jnp.exp(-t * c)


def inference_distribution(probs, rewards, n, procedure: str = "best_of_n"):
    """T_n(π): π itself (``"sample"``), the exact best-of-n or worst-of-n distribution of π under r.

    Worst-of-n keeps the sample with the lowest reward (= best-of-n under −r); ties are split ∝ π.
    """
    _check_choice("inference_distribution", "procedure", procedure, INFERENCE_PROCEDURES)
    if procedure == "sample":
        return jnp.asarray(probs).astype(float_dtype(probs, rewards))
    r = jnp.asarray(rewards)
    return best_of_n(probs, r if procedure == "best_of_n" else -r, n)


def inference_win_rate(probs, ref_probs, rewards, n, procedure: str = "best_of_n"):
    """W(T_n(π) ≻ T_n(μ)) = Σ_{y,y'} T_n(π)(y)·T_n(μ)(y')·[1(r(y) > r(y')) + ½·1(r(y) = r(y'))].

    The inference-time win rate of InfAlign: both policies go through the same procedure T_n (``"sample"``,
    ``"best_of_n"``, ``"worst_of_n"``) and are judged by r. With ``"sample"`` (or n = 1) it is W(π ≻ μ) = E_π[C].

    Args:
      probs: π, ``[K]``.
      ref_probs: μ, ``[K]``.
      rewards: r, ``[K]`` (the judge; the worst-of-n sample is still judged by r).
      n: samples per procedure, ≥ 1.
      procedure: one of :data:`INFERENCE_PROCEDURES` (static).

    Returns:
      The scalar win rate.

    References:
      Balashankar et al., InfAlign: inference-aware language model alignment (arXiv 2412.19792).

    >>> import jax.numpy as jnp
    >>> float(inference_win_rate(jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5]), jnp.array([0.0, 1.0]), 2))
    0.625
    """
    a = inference_distribution(probs, rewards, n, procedure)
    b = inference_distribution(ref_probs, rewards, n, procedure)
    return win_rate(a, b, rewards)


def _prepare(fn, scores, ref_logps, *extra):
    dtype = float_dtype(scores, ref_logps, *extra)
    s = jnp.asarray(scores)
    lmu = jnp.asarray(ref_logps)
    if s.ndim != 1 or lmu.shape != s.shape:
        raise ValueError(f"{fn}: arguments 'scores' and 'ref_logps' must be 1-D of the same shape, got "
                         f"{tuple(s.shape)} and {tuple(lmu.shape)}")
    if is_concrete(scores) and not np.all(np.isfinite(np.asarray(s))):
        raise ValueError(f"{fn}: argument 'scores' must be finite, got {np.asarray(s)}")
    if is_concrete(ref_logps):
        v = np.asarray(lmu, np.float64)
        if not np.all(np.isfinite(v)) or not abs(np.exp(v).sum() - 1.0) <= 1e-5:
            raise ValueError(f"{fn}: argument 'ref_logps' must be finite log-probabilities (full support, exp sums "
                             f"to 1), got {v}")
    return s.astype(dtype), lmu.astype(dtype)


def _tilt(s, lmu, lam):
    return jax.nn.log_softmax(lmu + lam * s)


def _kl(lp, lmu):
    return jnp.sum(jnp.exp(lp) * (lp - lmu))


def tilted_logps(scores, ref_logps, inv_beta):
    """ln π_λ with π_λ(y) = μ(y)·exp(λ·s(y))/Z, λ = 1/β ≥ 0 (λ = 0 gives μ): KL-regularised RL on s."""
    s, lmu = _prepare("tilted_logps", scores, ref_logps, inv_beta)
    if is_concrete(inv_beta) and not (np.ndim(inv_beta) == 0 and np.isfinite(inv_beta) and float(inv_beta) >= 0):
        raise ValueError(f"tilted_logps: argument inv_beta={inv_beta!r} must be a finite scalar >= 0")
    return _tilt(s, lmu, jnp.asarray(inv_beta, s.dtype))


def tilt_kl(scores, ref_logps, inv_beta):
    """KL(π_λ‖μ) of :func:`tilted_logps`."""
    s, lmu = _prepare("tilt_kl", scores, ref_logps, inv_beta)
    return _kl(_tilt(s, lmu, jnp.asarray(inv_beta, s.dtype)), lmu)


def max_tilt_kl(scores, ref_logps):
    """sup_λ KL(π_λ‖μ) = −ln μ(A), A = arg max s (the limit λ → ∞ puts μ restricted to A)."""
    s, lmu = _prepare("max_tilt_kl", scores, ref_logps)
    top = s == jnp.max(s)
    return -jax.nn.logsumexp(jnp.where(top, lmu, -jnp.inf))


@jax.jit
def _solve_tilt(s, lmu, target):
    kl_at = lambda lam: _kl(_tilt(s, lmu, lam), lmu)  # noqa: E731
    one = jnp.ones((), s.dtype)

    def grow(state):
        hi, i = state
        return hi * 2.0, i + 1

    hi, _ = jax.lax.while_loop(lambda st: (kl_at(st[0]) < target) & (st[1] < _MAX_DOUBLINGS), grow,
                               (one, jnp.asarray(0, jnp.int32)))

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        below = kl_at(mid) < target
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECT_ITERS, bisect, (jnp.zeros((), s.dtype), hi))
    return 0.5 * (lo + hi)


def tilt_at_kl(scores, ref_logps, kl):
    """λ = 1/β ≥ 0 with KL(π_λ‖μ) = ``kl`` for π_λ ∝ μ·exp(λ·s): policies from different scores at matched KL.

    KL(π_λ‖μ) is continuous and non-decreasing in λ (d KL/dλ = λ·Var_{π_λ}(s)), from 0 at λ = 0 to
    :func:`max_tilt_kl` as λ → ∞. The solver doubles an upper bracket from λ = 1 until it reaches the target, then
    bisects 200 times (to the dtype's resolution). A target ≥ :func:`max_tilt_kl` is refused when concrete; a
    traced one returns the bracket's end (KL below the target) — check ``tilt_kl`` when tracing.

    Args:
      scores: s, ``[K]`` (e.g. Φ(C) or a raw reward), finite and not all equal.
      ref_logps: ln μ, ``[K]`` (finite).
      kl: the target KL(π_λ‖μ), 0 ≤ kl < :func:`max_tilt_kl`.

    Returns:
      λ, a scalar (``tilted_logps(scores, ref_logps, λ)`` is the policy).

    >>> import jax.numpy as jnp
    >>> lam = tilt_at_kl(jnp.array([0.0, 1.0]), jnp.log(jnp.array([0.5, 0.5])), 0.1)
    >>> round(float(tilt_kl(jnp.array([0.0, 1.0]), jnp.log(jnp.array([0.5, 0.5])), lam)), 5)
    0.1
    """
    fn = "tilt_at_kl"
    s, lmu = _prepare(fn, scores, ref_logps, kl)
    if is_concrete(kl, scores, ref_logps):
        v = np.asarray(kl)
        cap = float(max_tilt_kl(s, lmu))
        if v.ndim != 0 or not (np.isfinite(v) and 0 <= float(v) < cap):
            raise ValueError(f"{fn}: argument kl={kl!r} must be a scalar in [0, {cap:.6g}) (the largest KL a tilt of "
                             "these scores reaches, -ln mu(argmax scores))")
    return _solve_tilt(s, lmu, jnp.asarray(kl, s.dtype))


def bon_kl_bound(n):
    """ln n − (n − 1)/n: the bound on KL(BoN_n(μ)‖μ), attained in the continuous limit (Beirami et al.)."""
    n = jnp.asarray(n)
    n = n.astype(float_dtype(n))
    return jnp.log(n) - (n - 1.0) / n


def _sorted_inference_dist(p, order, n):
    """T_n(p) for distinct rewards taken in ``order`` (ascending in the procedure's key): F^n − F⁻^n."""
    cdf = jnp.cumsum(p[order])
    lo = jnp.concatenate([jnp.zeros((1,), cdf.dtype), cdf[:-1]])
    return jnp.zeros_like(p).at[order].set(cdf ** n - lo ** n)


@functools.partial(jax.jit, static_argnames=("procedure", "iters"))
def _solve_optimum(lmu, r, n, beta, damping, *, procedure, iters):
    key = r if procedure == "best_of_n" else -r
    order = jnp.argsort(key)
    mu = jnp.exp(lmu)
    if procedure == "sample":
        c_ref = (r[:, None] > r[None, :]).astype(r.dtype) @ mu + 0.5 * mu
        value = lambda p: p @ c_ref  # noqa: E731
    else:
        ref = _sorted_inference_dist(mu, order, n)
        c_ref = (r[:, None] > r[None, :]).astype(r.dtype) @ ref + 0.5 * ref  # judged by r, distinct rewards
        value = lambda p: _sorted_inference_dist(p, order, n) @ c_ref  # noqa: E731

    def target(theta):
        return lmu + jax.grad(value)(jax.nn.softmax(theta)) / beta

    def body(theta, _):
        new = (1.0 - damping) * theta + damping * target(theta)
        return new - jnp.max(new), None

    theta, _ = jax.lax.scan(body, lmu, None, length=iters)
    residual = jnp.max(jnp.abs(jax.nn.softmax(theta) - jax.nn.softmax(target(theta))))
    return jax.nn.log_softmax(theta), residual


def inference_optimum(ref_logps, rewards, n, beta, procedure: str = "best_of_n", *, iters: int = 20000,
                      damping=0.05):
    """The IAPO optimum: ln π maximising W(T_n(π) ≻ T_n(μ)) − β·KL(π‖μ), and its fixed-point residual.

    The objective's first-order condition is π ∝ μ·exp(g(π)/β) with g(y) = ∂W(T_n(π) ≻ T_n(μ))/∂π(y) (the
    derivative of the win rate in the policy's probabilities); the solver iterates
    θ ← (1 − α)·θ + α·(ln μ + g(softmax θ)/β) from θ = ln μ for ``iters`` steps (α = ``damping``) and returns
    the residual max_y |π(y) − μ(y)·exp(g(y)/β)/Z| so the caller can check convergence (≤ 1e-12 in float64 for
    the bandits of the infalign reproduction with α = 0.05, β ≥ 0.03 and 4000 steps). InfAlign's theorem says the optimum
    is KL-regularised RL on a transform of the calibrated reward: ln π/μ is then a non-decreasing function of r.
    Requires distinct rewards (so that T_n has the form F^n − F⁻^n); the stationary point found is the optimum
    when the objective is concave along the path, which the reproduction checks against every tilted policy
    at the same KL.

    Args:
      ref_logps: ln μ, ``[K]`` (finite).
      rewards: r, ``[K]``, distinct.
      n: samples of the procedure, ≥ 1.
      beta: β > 0.
      procedure: ``"sample"``, ``"best_of_n"`` or ``"worst_of_n"`` (static).
      iters: iterations (static).
      damping: α ∈ (0, 1].

    Returns:
      ``(ln π, residual)``.

    References:
      Balashankar et al., InfAlign: inference-aware language model alignment (arXiv 2412.19792).
    """
    fn = "inference_optimum"
    _check_choice(fn, "procedure", procedure, INFERENCE_PROCEDURES)
    r, lmu = _prepare(fn, rewards, ref_logps, n, beta, damping)
    if is_concrete(rewards) and len(np.unique(np.asarray(r))) != r.shape[0]:
        raise ValueError(f"{fn}: argument 'rewards' must be distinct (ties are not supported), got {np.asarray(r)}")
    if is_concrete(beta) and not (np.ndim(beta) == 0 and np.isfinite(beta) and float(beta) > 0):
        raise ValueError(f"{fn}: argument beta={beta!r} must be a finite scalar > 0")
    if is_concrete(n) and not (np.ndim(n) == 0 and float(n) >= 1):
        raise ValueError(f"{fn}: argument n={n!r} must be a scalar >= 1")
    if is_concrete(damping) and not (np.ndim(damping) == 0 and 0 < float(damping) <= 1):
        raise ValueError(f"{fn}: argument damping={damping!r} must be in (0, 1]")
    return _solve_optimum(lmu, r, jnp.asarray(n, r.dtype), jnp.asarray(beta, r.dtype), jnp.asarray(damping, r.dtype),
                          procedure=procedure, iters=int(iters))

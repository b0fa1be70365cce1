"""Target distributions for f-DPG: energy-based models over a base model a, and moment matching for λ.

All targets are returned as *unnormalised* log-probabilities log P(x) of given samples (or of every outcome
of a categorical problem); log p = log P − log Z with Z unknown in general (see
:mod:`jalign.losses.fdpg` for the running IS estimate of log Z, and :func:`normalise` for exact problems).

* GDC pointwise constraint (Khalifa et al., ICLR 2021):  P(x) = a(x)·b(x), b(x) ∈ [0, 1] (e.g. 1 iff the
  text contains a word). Zeros of b give log P = −inf.
* GDC distributional constraint:  P(x) = a(x)·exp(λ·φ(x)), with λ chosen so that E_p[φ] = μ̄ (the
  maximum-entropy / minimum-KL(p‖a) distribution with those moments). λ minimises the convex dual
  g(λ) = log Σ_x a(x) e^{λ·φ(x)} − λ·μ̄ whose gradient is E_{p_λ}[φ] − μ̄ and Hessian Cov_{p_λ}[φ].
* RLHF target (Korbak et al., 2022):  P(x) = a(x)·exp(r(x)/β); reverse-KL f-DPG to it is KL-regularised RL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _f(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_finite(name: str, x) -> None:
    if isinstance(x, jax.core.Tracer):
        return
    a = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
        raise ValueError(f"{name} is not finite at index {idx} ({int(bad.sum())} bad in total)")


def pointwise_target_logps(base_logps, b):
    """log P = log a + log b for the pointwise-constraint EBM P(x) = a(x)·b(x).

    Args:
      base_logps: log a(x), ``[...]``.
      b: constraint values b(x) ∈ [0, 1] (bool or float), same shape; b = 0 gives −inf.

    Returns:
      log P(x) (unnormalised), ``[...]``.
    """
    if not isinstance(b, jax.core.Tracer):
        bb = np.asarray(b, dtype=np.float64)
        if not (np.isfinite(bb).all() and (bb >= 0).all() and (bb <= 1).all()):
            raise ValueError("pointwise_target_logps: b must lie in [0, 1]")
    return _f(base_logps) + jnp.log(_f(b))


def exponential_target_logps(base_logps, features, lam):
    """log P = log a + λ·φ for the distributional-constraint EBM P(x) = a(x)·exp(λ·φ(x)).

    Args:
      base_logps: log a(x), ``[N]``.
      features: φ(x), ``[N, K]``.
      lam: λ, ``[K]``.

    Returns:
      log P(x), ``[N]``.
    """
    return _f(base_logps) + _f(features) @ _f(lam)


def rlhf_target_logps(base_logps, rewards, beta: float):
    """log P = log a + r/β for the RLHF target P(x) = a(x)·exp(r(x)/β).

    Reverse-KL f-DPG to p = P/Z has gradient (1/β)·∇[−E_π[r] + β·KL(π‖a)]: KL(π‖p) = KL(π‖a) − E_π[r]/β
    + log Z.

    Args:
      base_logps: log a(x), ``[...]``.
      rewards: r(x), same shape.
      beta: β > 0, the KL coefficient.
    """
    if not (isinstance(beta, jax.core.Tracer) or (math.isfinite(float(beta)) and float(beta) > 0)):
        raise ValueError(f"rlhf_target_logps: hyperparameter beta={beta!r} must be > 0")
    return _f(base_logps) + _f(rewards) / beta


def normalise(log_P, axis: int = -1):
    """log p = log P − logsumexp(log P) over the outcome axis (exact categorical problems)."""
    log_P = _f(log_P)
    return log_P - jax.nn.logsumexp(log_P, axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# Moment matching for the distributional constraint.


def fit_lambda_exact(base_logps, features, moments, *, tol: float = 1e-10, max_iter: int = 200):
    """Solve E_{p_λ}[φ] = μ̄ exactly on a categorical problem (damped Newton on the convex dual, float64).

    Args:
      base_logps: log a(x) over all outcomes, ``[N]`` (−inf allowed: outcomes outside a's support).
      features: φ(x), ``[N, K]``.
      moments: μ̄, ``[K]``; must lie in the interior of the convex hull of {φ(x) : a(x) > 0}.
      tol: stop when ‖E_{p_λ}[φ] − μ̄‖_∞ ≤ tol.
      max_iter: Newton iterations.

    Returns:
      λ as a float64 numpy array ``[K]``.

    Raises:
      ValueError: non-finite inputs, or the moments are not attained (e.g. outside the convex hull).
    """
    la = np.asarray(base_logps, np.float64)
    phi = np.asarray(features, np.float64)
    mu = np.asarray(moments, np.float64).reshape(-1)
    if phi.ndim == 1:
        phi = phi[:, None]
    if phi.shape[0] != la.shape[0] or phi.shape[1] != mu.shape[0]:
        raise ValueError(f"fit_lambda_exact: shapes base_logps {la.shape}, features {phi.shape}, moments {mu.shape}")
    if np.isnan(la).any() or (la == np.inf).any():
        raise ValueError("fit_lambda_exact: base_logps contains NaN or +inf")
    _check_finite("fit_lambda_exact: features", phi)
    _check_finite("fit_lambda_exact: moments", mu)

    def dual(lam):
        s = la + phi @ lam
        m = s.max()
        lz = m + np.log(np.exp(s - m).sum())
        p = np.exp(s - lz)
        return lz - lam @ mu, p

    lam = np.zeros(mu.shape[0])
    g_val, p = dual(lam)
    for _ in range(max_iter):
        mean = p @ phi
        grad = mean - mu
        if np.max(np.abs(grad)) <= tol:
            return lam
        centred = phi - mean
        hess = (centred * p[:, None]).T @ centred
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(mu)), grad)
        t = 1.0
        while True:
            new = lam - t * step
            new_val, new_p = dual(new)
            if new_val <= g_val - 1e-4 * t * (grad @ step) or t < 1e-10:
                break
            t *= 0.5
        if t < 1e-10:
            break
        lam, g_val, p = new, new_val, new_p
    err = np.max(np.abs(p @ phi - mu))
    if err > max(tol, 1e-8):
        raise ValueError(
            f"fit_lambda_exact: moments {mu.tolist()} not attained (residual {err:.3g}); they must lie strictly "
            f"inside the convex hull of the features on the support of a"
        )
    return lam


def is_moments(lam, features, base_logps, proposal_logps):
    """Self-normalised IS estimate of E_{p_λ}[φ] from samples x_i ~ q: Σ w_i φ_i / Σ w_i, w ∝ a e^{λ·φ}/q."""
    log_w = _f(base_logps) - _f(proposal_logps) + _f(features) @ _f(lam)
    return jax.nn.softmax(log_w) @ _f(features)


def fit_lambda_is(
    features,
    base_logps,
    proposal_logps,
    moments,
    *,
    lr: float = 0.05,
    max_iter: int = 1000,
    tol: float = 1e-5,
    lam0=None,
):
    """Importance-sampled moment matching on one batch of proposal samples (the GDC/f-DPG recipe).

    λ ← λ − lr·(Ê_{p_λ}[φ] − μ̄) with Ê the self-normalised IS estimate (:func:`is_moments`); this is
    gradient descent on the sample estimate of the convex dual. Stops when ‖Ê − μ̄‖_∞ ≤ tol. (The f-DPG
    reference recipe: lr 0.05, 512 samples from a, ≤ 1000 iterations, tol 1e-5.) Jit-able.

    Args:
      features: φ(x_i), ``[N, K]``.
      base_logps: log a(x_i), ``[N]``.
      proposal_logps: log q(x_i), ``[N]`` (q = a: pass ``base_logps``).
      moments: μ̄, ``[K]``.
      lr: step size > 0.
      max_iter: iteration cap.
      tol: tolerance on the moment error.
      lam0: initial λ (default 0).

    Returns:
      ``(lam [K], n_iter, error)`` with error = ‖Ê_{p_λ}[φ] − μ̄‖_∞ at the returned λ.
    """
    if not (isinstance(lr, jax.core.Tracer) or (math.isfinite(float(lr)) and float(lr) > 0)):
        raise ValueError(f"fit_lambda_is: hyperparameter lr={lr!r} must be > 0")
    for name, v in (("features", features), ("base_logps", base_logps), ("proposal_logps", proposal_logps),
                    ("moments", moments)):
        _check_finite(f"fit_lambda_is: {name}", v)
    phi = _f(features)
    mu = _f(moments).reshape(-1)
    lam = jnp.zeros(mu.shape, phi.dtype) if lam0 is None else _f(lam0)

    def err_of(lam):
        return jnp.max(jnp.abs(is_moments(lam, phi, base_logps, proposal_logps) - mu))

    def cond(c):
        lam, i, err = c
        return (i < max_iter) & (err > tol)

    def body(c):
        lam, i, _ = c
        lam = lam - lr * (is_moments(lam, phi, base_logps, proposal_logps) - mu)
        return lam, i + 1, err_of(lam)

    return jax.lax.while_loop(cond, body, (lam, jnp.asarray(0), err_of(lam)))


def fit_lambda_sgd(
    key,
    sample_fn: Callable[[Any], tuple[Any, Any, Any]],
    moments,
    *,
    lr: float = 0.05,
    n_iter: int = 1000,
    lam0=None,
):
    """Stochastic moment matching: fresh proposal samples every step, λ ← λ − lr·(Ê_{p_λ}[φ] − μ̄).

    Args:
      key: a PRNG key.
      sample_fn: ``key -> (features [N, K], base_logps [N], proposal_logps [N])`` drawing x_i ~ q
        (jax-traceable).
      moments: μ̄, ``[K]``.
      lr: step size > 0.
      n_iter: number of steps.
      lam0: initial λ (default 0).

    Returns:
      ``(lam_avg [K], lam_last [K], errors [n_iter])``: lam_avg is the average of the iterates over the
      second half (Polyak averaging, which removes most of the sampling noise), errors the per-step
      ‖Ê − μ̄‖_∞ on each fresh batch.
    """
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"fit_lambda_sgd: hyperparameter lr={lr!r} must be > 0")
    if int(n_iter) < 1:
        raise ValueError(f"fit_lambda_sgd: n_iter={n_iter!r} must be >= 1")
    mu = _f(moments).reshape(-1)
    lam = jnp.zeros(mu.shape, mu.dtype) if lam0 is None else _f(lam0)
    half = int(n_iter) // 2

    def step(carry, k):
        lam, acc, i = carry
        phi, la, lq = sample_fn(k)
        g = is_moments(lam, phi, la, lq) - mu
        new = lam - lr * g
        acc = acc + jnp.where(i >= half, 1.0, 0.0) * new
        return (new, acc, i + 1), jnp.max(jnp.abs(g))

    (lam, acc, _), errs = jax.lax.scan(step, (lam, jnp.zeros_like(lam), 0), jax.random.split(key, int(n_iter)))
    return acc / (int(n_iter) - half), lam, errs


__all__ = [
    "exponential_target_logps",
    "fit_lambda_exact",
    "fit_lambda_is",
    "fit_lambda_sgd",
    "is_moments",
    "normalise",
    "pointwise_target_logps",
    "rlhf_target_logps",
]

"""Policy-gradient losses on scored samples: Contrastive Policy Gradient (CoPG), RLOO, off-policy PG.

Notation (per prompt x, implicit): g(y) = ln π(y) − ln π_ref(y) (the log-ratio), R(y) a given scalar reward
(a constant: no gradient flows into it), and the *regularised reward* R^π_β(y) = R(y) − β·g(y).
The regularised objective is J(π) = E_{y~π}[R^π_β(y)] = E_π[R] − β·KL(π‖π_ref), maximised by
π* ∝ π_ref·exp(R/β).

Every function returns a per-example loss **to minimise** (no reduction over the batch). The gradient of
each loss is minus the ascent direction of the method it implements:

* CoPG (pairwise, :func:`copg`): −∇loss = (R^π_β(y) − R^π_β(y'))·(∇ln π(y) − ∇ln π(y')), for y ~ μ1,
  y' ~ μ2 *unranked* and arbitrary (off-policy, no importance weights).
* CoPG, k samples (:func:`copg_ksample`): −∇loss = (1/(k−1))·Σ_{i<j}(R^π_β(y_i) − R^π_β(y_j))·
  (∇ln π(y_i) − ∇ln π(y_j)) = Σ_i (R^π_β(y_i) − mean_{j≠i} R^π_β(y_j))·∇ln π(y_i).
* RLOO (:func:`rloo`): −∇loss = (1/k)·Σ_i (R̃(y_i) − mean_{j≠i} R̃(y_j))·∇ln π(y_i), with
  R̃ = R − kl_coef·g treated as a constant.
* Off-policy PG (:func:`off_policy_pg`): −∇loss = (1/k)·Σ_i (R^π_β(y_i) − b)·∇ln π(y_i), coefficient
  treated as a constant, for a given baseline b (0, or a value estimate).

The registered versions (kind ``"scored"``, :class:`~jalign.losses.ScoredLogps` batches ``[B, K]``) are
``"copg"`` (the k-sample form; identical to :func:`copg` for K = 2), ``"rloo"`` and ``"off_policy_pg"``.

References:
  Flet-Berliac et al., Contrastive Policy Gradient: Aligning LLMs on sequence-level scores in a
  supervised-friendly fashion, EMNLP 2024 (arXiv 2406.19185).
  Ahmadian et al., Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback
  in LLMs, ACL 2024 (arXiv 2402.14740) — RLOO (Kool et al., 2019).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.losses._registry import register
from jalign.losses._types import ScoredLogps

_COPG = (
    "Flet-Berliac et al., Contrastive Policy Gradient, EMNLP 2024 (arXiv 2406.19185)"
)
_RLOO = (
    "Ahmadian et al., Back to Basics: REINFORCE Style Optimization for RLHF, ACL 2024 (arXiv 2402.14740); "
    "Kool et al., Buy 4 REINFORCE Samples, Get a Baseline for Free!, ICLR-W 2019"
)
_PG = "Williams, REINFORCE, Machine Learning 1992; off-policy baseline of Flet-Berliac et al. 2024, Section 5"


# ----------------------------------------------------------------------------------------------------------
# Validation helpers (concrete values only: under jit / vmap the values are abstract and pass through, so the
# functions stay usable inside traced training loops and vmapped hyperparameter sweeps).


def _concrete(x: Any) -> np.ndarray | None:
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - not array-like: leave it to jnp to complain
        return None


def _check_positive(fn: str, name: str, value: Any) -> None:
    v = _concrete(value)
    if v is None or not np.issubdtype(v.dtype, np.number):
        return
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError(f"{fn}: hyperparameter {name}={value!r} must be finite and > 0")


def _check_nonnegative(fn: str, name: str, value: Any) -> None:
    v = _concrete(value)
    if v is None or not np.issubdtype(v.dtype, np.number):
        return
    if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
        raise ValueError(f"{fn}: hyperparameter {name}={value!r} must be finite and >= 0")


def _check_arrays(fn: str, ndim: int | None = None, **arrays: Any) -> None:
    """Same shapes (and ``ndim`` if given); finite values when concrete. Errors name the argument."""
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        s = tuple(np.shape(a))
        if ndim is not None and len(s) != ndim:
            raise ValueError(f"{fn}: argument {name!r} must have {ndim} dimension(s), got shape {s}")
        if first is None:
            first = (name, s)
        elif s != first[1]:
            raise ValueError(f"{fn}: argument {name!r} has shape {s} but {first[0]!r} has shape {first[1]}")
        v = _concrete(a)
        if v is None or v.dtype == bool or not np.issubdtype(v.dtype, np.number):
            continue
        bad = ~np.isfinite(v.astype(np.float64))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{fn}: argument {name!r} is not finite at index {idx} ({int(bad.sum())} bad in total)"
            )


def _f32(x):
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mask_or_ones(mask, like):
    return jnp.ones(like.shape, like.dtype) if mask is None else jnp.asarray(mask).astype(like.dtype)


# ----------------------------------------------------------------------------------------------------------
# CoPG


def copg(logps_a, ref_logps_a, rewards_a, logps_b, ref_logps_b, rewards_b, *, beta):
    """Contrastive Policy Gradient loss for unranked pairs (y_a, y_b) with given rewards.

    ``(1/(2β))·(R(y_a) − R(y_b) − β·[ln π(y_a)/π_ref(y_a) − ln π(y_b)/π_ref(y_b)])²``

    Its gradient is exactly minus the CoPG ascent direction of the paper,
    ``(R^π_β(y_a) − R^π_β(y_b))·∇ln π(y_a) + (R^π_β(y_b) − R^π_β(y_a))·∇ln π(y_b)`` with
    ``R^π_β(y) = R(y) − β·ln π(y)/π_ref(y)``; the loss equals minus the paper's surrogate ℓ(y_a, y_b) plus
    the constant (R(y_a) − R(y_b))²/(2β). It vanishes (value and gradient) for every pair at
    π* ∝ π_ref·exp(R/β). The pair need not be ranked (the loss is symmetric in a ↔ b) and may come from any
    sampling distributions μ1, μ2 (off-policy, no importance weights).

    Args:
      logps_a: ln π(y_a | x), summed over tokens, ``[B]`` (or any shape; all arguments share it).
      ref_logps_a: ln π_ref(y_a | x).
      rewards_a: R(x, y_a) (treated as a constant).
      logps_b, ref_logps_b, rewards_b: the same for y_b.
      beta: KL-regularisation strength β > 0 (may be an array broadcastable to the batch, e.g. under vmap).

    Returns:
      Per-pair losses, same shape as the inputs.

    Raises:
      ValueError: ``beta`` ≤ 0 or non-finite; arguments of different shapes or with non-finite values.

    References:
      Flet-Berliac et al., Contrastive Policy Gradient, EMNLP 2024 (arXiv 2406.19185), eq. (6) and Thm. 2.

    >>> import jax.numpy as jnp
    >>> from jalign.losses import copg
    >>> z = jnp.zeros(1)
    >>> float(copg(z, z, jnp.ones(1), z, z, z, beta=0.5)[0])  # (1/(2·0.5))·(1 − 0)²
    1.0
    """
    _check_positive("copg", "beta", beta)
    _check_arrays(
        "copg",
        logps_a=logps_a,
        ref_logps_a=ref_logps_a,
        rewards_a=rewards_a,
        logps_b=logps_b,
        ref_logps_b=ref_logps_b,
        rewards_b=rewards_b,
    )
    beta = _f32(beta)
    g_a = _f32(logps_a) - _f32(ref_logps_a)
    g_b = _f32(logps_b) - _f32(ref_logps_b)
    dr = jax.lax.stop_gradient(_f32(rewards_a) - _f32(rewards_b))
    resid = dr - beta * (g_a - g_b)
    return 0.5 * resid**2 / beta


def copg_surrogate(logps_a, ref_logps_a, rewards_a, logps_b, ref_logps_b, rewards_b, *, beta):
    """The paper's CoPG objective ℓ(y_a, y_b) **to maximise** (eq. 5), written with R^π_{β/2}.

    ``ℓ = (R^π_{β/2}(y_a) − R^π_{β/2}(y_b))·ln π(y_a)/π_ref(y_a)
        + (R^π_{β/2}(y_b) − R^π_{β/2}(y_a))·ln π(y_b)/π_ref(y_b)``.

    Its gradient (through R^π_{β/2} too) is the CoPG ascent direction with β, not β/2; ℓ equals
    ``(R(y_a) − R(y_b))²/(2β) − copg(...)``. Provided to check that identity; train with :func:`copg`.
    """
    _check_positive("copg_surrogate", "beta", beta)
    beta = _f32(beta)
    g_a = _f32(logps_a) - _f32(ref_logps_a)
    g_b = _f32(logps_b) - _f32(ref_logps_b)
    r_a = jax.lax.stop_gradient(_f32(rewards_a)) - 0.5 * beta * g_a
    r_b = jax.lax.stop_gradient(_f32(rewards_b)) - 0.5 * beta * g_b
    return (r_a - r_b) * g_a + (r_b - r_a) * g_b


def copg_ksample(logps_BxK, ref_logps_BxK, rewards_BxK, *, beta, mask_BxK=None):
    """k-sample CoPG: ``(1/(2β(k−1)))·Σ_{i<j}(R^π_β(y_i) − R^π_β(y_j))²`` per prompt.

    The 1/(2β) factor makes k = 2 identical to :func:`copg`. Minus its gradient is
    ``Σ_i (R^π_β(y_i) − mean_{j≠i} R^π_β(y_j))·∇ln π(y_i)``, i.e. RLOO on the regularised reward with the
    log-ratio differentiated inside the square; it vanishes at π* for any samples.

    Args:
      logps_BxK: ln π(y_k | x), ``[B, K]``.
      ref_logps_BxK: ln π_ref(y_k | x), ``[B, K]``.
      rewards_BxK: R(x, y_k), ``[B, K]`` (constants).
      beta: β > 0.
      mask_BxK: optional validity mask ``[B, K]``; k is the number of valid samples of each row (rows with
        fewer than 2 valid samples get loss 0).

    Returns:
      Per-prompt losses ``[B]``.
    """
    _check_positive("copg_ksample", "beta", beta)
    _check_arrays(
        "copg_ksample", ndim=2, logps_BxK=logps_BxK, ref_logps_BxK=ref_logps_BxK, rewards_BxK=rewards_BxK,
        mask_BxK=mask_BxK,
    )
    beta = _f32(beta)
    lp = _f32(logps_BxK)
    m = _mask_or_ones(mask_BxK, lp)
    r_beta = jax.lax.stop_gradient(_f32(rewards_BxK)) - beta * (lp - _f32(ref_logps_BxK))
    r_beta = jnp.where(m > 0, r_beta, 0.0)
    k = m.sum(-1)
    # Σ_{i<j} m_i m_j (a_i − a_j)² = k·Σ_i m_i (a_i − ā)², ā = Σ m a / k: the mean is subtracted before
    # squaring, so a common offset of the rewards (e.g. 300) does not cancel the float32 sum away.
    mean = (m * r_beta).sum(-1, keepdims=True) / jnp.maximum(k, 1.0)[..., None]
    centred = jnp.where(m > 0, r_beta - mean, 0.0)
    pair_sq = k * (m * centred**2).sum(-1)
    return jnp.where(k >= 2, pair_sq / (2.0 * beta * jnp.maximum(k - 1, 1)), 0.0)


# ----------------------------------------------------------------------------------------------------------
# REINFORCE family (coefficients are constants: stop_gradient)


def rloo(logps_BxK, rewards_BxK, ref_logps_BxK=None, *, kl_coef=0.0, mask_BxK=None):
    """REINFORCE leave-one-out: ``−(1/k)·Σ_i sg(R̃(y_i) − mean_{j≠i} R̃(y_j))·ln π(y_i)``.

    ``R̃ = R − kl_coef·(ln π − ln π_ref)`` (the sequence-level KL penalty, a constant). For samples
    y_1..y_k ~ π (on-policy) the expected gradient is exactly −∇J with J = E_π[R] − kl_coef·KL(π‖π_ref).

    Args:
      logps_BxK: ln π(y_k | x), ``[B, K]``.
      rewards_BxK: R(x, y_k), ``[B, K]``.
      ref_logps_BxK: ln π_ref(y_k | x), needed when ``kl_coef`` > 0.
      kl_coef: KL penalty ≥ 0.
      mask_BxK: optional validity mask ``[B, K]``; rows with fewer than 2 valid samples get loss 0.

    Returns:
      Per-prompt losses ``[B]``.
    """
    _check_nonnegative("rloo", "kl_coef", kl_coef)
    _check_arrays(
        "rloo", ndim=2, logps_BxK=logps_BxK, rewards_BxK=rewards_BxK, ref_logps_BxK=ref_logps_BxK,
        mask_BxK=mask_BxK,
    )
    lp = _f32(logps_BxK)
    m = _mask_or_ones(mask_BxK, lp)
    r = _f32(rewards_BxK)
    if ref_logps_BxK is not None:
        r = r - _f32(kl_coef) * (lp - _f32(ref_logps_BxK))
    else:
        v = _concrete(kl_coef)
        if v is None or np.any(v != 0):
            raise ValueError("rloo: argument 'ref_logps_BxK' is required when kl_coef is not 0")
    r = jax.lax.stop_gradient(jnp.where(m > 0, r, 0.0))
    k = m.sum(-1, keepdims=True)
    loo_mean = ((m * r).sum(-1, keepdims=True) - r) / jnp.maximum(k - 1, 1)
    adv = jnp.where(k >= 2, r - loo_mean, 0.0)
    return -(m * adv * lp).sum(-1) / jnp.maximum(k[..., 0], 1)


def off_policy_pg(logps_BxK, ref_logps_BxK, rewards_BxK, *, beta, baseline=0.0, mask_BxK=None):
    """Naive off-policy policy gradient: ``−(1/k)·Σ_i sg(R^π_β(y_i) − b)·ln π(y_i)``.

    No importance weights: for samples from μ ≠ π its expected gradient is biased (at π* it equals
    −(β·ln Z − b)·E_μ[∇ln π], non-zero unless b = J(π*) = β·ln Z or μ = π*).

    Args:
      logps_BxK: ln π(y_k | x), ``[B, K]``.
      ref_logps_BxK: ln π_ref(y_k | x), ``[B, K]``.
      rewards_BxK: R(x, y_k), ``[B, K]``.
      beta: β > 0 in R^π_β = R − β·ln π/π_ref.
      baseline: b, a scalar or ``[B]`` / ``[B, 1]`` array (e.g. the exact value E_π[R]); treated as a constant.
      mask_BxK: optional validity mask ``[B, K]``.

    Returns:
      Per-prompt losses ``[B]``.
    """
    _check_positive("off_policy_pg", "beta", beta)
    _check_arrays(
        "off_policy_pg", ndim=2, logps_BxK=logps_BxK, ref_logps_BxK=ref_logps_BxK, rewards_BxK=rewards_BxK,
        mask_BxK=mask_BxK,
    )
    v = _concrete(baseline)
    if v is not None and np.issubdtype(v.dtype, np.number) and not np.all(np.isfinite(v)):
        raise ValueError(f"off_policy_pg: argument 'baseline' must be finite, got {baseline!r}")
    lp = _f32(logps_BxK)
    m = _mask_or_ones(mask_BxK, lp)
    b = _f32(baseline)
    if b.ndim == 1:
        b = b[:, None]
    coef = jax.lax.stop_gradient(_f32(rewards_BxK) - _f32(beta) * (lp - _f32(ref_logps_BxK)) - b)
    k = m.sum(-1)
    return -(m * coef * lp).sum(-1) / jnp.maximum(k, 1)


# ----------------------------------------------------------------------------------------------------------
# Registered versions on ScoredLogps batches.


@register(
    "copg",
    kind="scored",
    formula="(1/(2β(k−1)))·Σ_{i<j}(R(y_i) − R(y_j) − β·[g(y_i) − g(y_j)])², g = ln π/π_ref; "
    "k = 2 is the pairwise CoPG loss",
    paper=_COPG,
    margin_based=False,
    notes="Scaled by 1/(2β) so that minus its gradient is exactly the paper's CoPG direction; samples unranked, "
    "any sampling distribution (off-policy).",
)
def _copg_scored(batch: ScoredLogps, *, beta: float = 0.1):
    return copg_ksample(batch.logps, batch.ref_logps, batch.rewards, beta=beta, mask_BxK=batch.mask)


@register(
    "rloo",
    kind="scored",
    formula="−(1/k)·Σ_i sg(R̃_i − mean_{j≠i} R̃_j)·ln π(y_i), R̃ = R − kl_coef·ln π/π_ref",
    paper=_RLOO,
    needs_reference=False,
    margin_based=False,
    notes="On-policy estimator; kl_coef > 0 needs ref_logps.",
)
def _rloo_scored(batch: ScoredLogps, *, kl_coef: float = 0.0):
    if batch.ref_logps is None and (_concrete(kl_coef) is None or np.any(_concrete(kl_coef) != 0)):
        raise ValueError("loss 'rloo' needs batch field 'ref_logps' when kl_coef is not 0, which is None")
    return rloo(batch.logps, batch.rewards, batch.ref_logps, kl_coef=kl_coef, mask_BxK=batch.mask)


@register(
    "off_policy_pg",
    kind="scored",
    formula="−(1/k)·Σ_i sg(R(y_i) − β·ln π(y_i)/π_ref(y_i) − b)·ln π(y_i)",
    paper=_PG,
    margin_based=False,
    notes="No importance weights (biased off-policy); baseline b is a constant (0 or a value estimate).",
)
def _pg_scored(batch: ScoredLogps, *, beta: float = 0.1, baseline: float = 0.0):
    return off_policy_pg(
        batch.logps, batch.ref_logps, batch.rewards, beta=beta, baseline=baseline, mask_BxK=batch.mask
    )


__all__ = ["copg", "copg_ksample", "copg_surrogate", "off_policy_pg", "rloo"]

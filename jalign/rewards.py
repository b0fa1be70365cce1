"""Transforming and combining rewards: the log-sigmoid transform, AND-combination, per-prompt references.

Wang et al. (2024, arXiv 2402.00742) read a Bradley–Terry reward r(x, y) against a per-prompt reference
value r_ref(x) as the log-probability that y is "good", i.e. preferred to the reference:

    u(x, y) = log σ(r(x, y) − r_ref(x)).

u is concave and saturating (u → 0 from below for r ≫ r_ref, u ≈ r − r_ref for r ≪ r_ref), so improving
a bad output pays more than polishing a good one. For independent properties i the sum of transformed
rewards is log Π_i P(y good in property i) = log P(y good in every property): summation is a logical AND.
A raw sum Σ_i r_i lets one property be traded for another; the transformed sum does not.

* :func:`log_sigmoid_transform` — u = log σ(r − r_ref), elementwise (stable for any float32 difference).
* :func:`combine` — ``"sum"`` Σ_i w_i·r_i, ``"transformed_sum"`` Σ_i w_i·log σ(r_i − r_ref,i),
  ``"min"`` min_i w_i·r_i (per output), ``"maxmin"`` the whole batch's rewards of the group whose mean
  (reference-relative) reward is lowest (MaxMin-RLHF's step; :func:`maxmin_group`).
* :func:`ensemble` — one reward from M reward models' scores: ``"mean"``, ``"min"``, ``"mean_minus_std"``
  (r̄ − k·s, population or unbiased std).
* :func:`reference_quantile` — r_ref(x) as the q-quantile of the rewards of S samples of the reference
  policy for each prompt (the paper uses a quantile of the base policy's rewards; q is a parameter).
* :func:`calibrate` — the empirical calibrated reward of InfAlign/CTRL (Balashankar et al., 2024, arXiv
  2412.19792): C(y) = μ̂(r < r(y)) + ½·μ̂(r = r(y)) against m reference samples of the same prompt.
* :func:`ctrl_transform` — CTRL's transform Φ of the calibrated reward: c, exp(t·c) or −exp(−t·c).

Pure functions of arrays (jax / numpy only): jit-able and vmap-able. Input checks run on concrete values
only and are skipped under tracing.

>>> import jax.numpy as jnp
>>> from jalign import rewards
>>> helpful = jnp.array([6.0, 1.0]); harmless = jnp.array([-3.0, 1.0])  # arm 0: great/bad, arm 1: good/good
>>> rewards.combine([helpful, harmless], "sum").tolist()  # the raw sum prefers arm 0
[3.0, 2.0]
>>> [round(v, 3) for v in rewards.combine([helpful, harmless], "transformed_sum",
...                                       ref_rewards_list=[0.0, 0.0]).tolist()]  # AND prefers arm 1
[-3.051, -0.627]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jalign.numerics import is_concrete

COMBINE_MODES = ("sum", "transformed_sum", "min", "maxmin")


def _float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _broadcast_shape(fn: str, names: tuple[str, str], a, b) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(np.shape(a), np.shape(b)))
    except ValueError:
        raise ValueError(
            f"{fn}: {names[0]} of shape {np.shape(a)} and {names[1]} of shape {np.shape(b)} do not broadcast"
        ) from None


def log_sigmoid_transform(rewards, ref_rewards):
    """The log-sigmoid transform u = log σ(r − r_ref) of Wang et al. (2024), elementwise.

    u is the Bradley–Terry log-probability that an output with reward r is preferred to the reference
    output (reward r_ref). Computed as ``jax.nn.log_sigmoid(r − r_ref)`` = −softplus(r_ref − r), finite
    with finite gradients for any float32 difference (u ≈ r − r_ref far below the reference, u → 0⁻
    far above it).

    Args:
      rewards: r, any shape.
      ref_rewards: r_ref, broadcastable against ``rewards`` (e.g. a per-prompt ``[N, 1]`` against
        ``[N, S]``, or a scalar).

    Returns:
      log σ(r − r_ref) with the broadcast shape, float32 or wider.

    Raises:
      ValueError: if the shapes do not broadcast.

    References:
      Wang et al., *Transforming and Combining Rewards for Aligning Large Language Models*, 2024,
      arXiv 2402.00742.

    >>> import jax.numpy as jnp
    >>> [round(v, 4) for v in log_sigmoid_transform(jnp.array([0.0, 1e4, -1e4]), 0.0).tolist()]
    [-0.6931, -0.0, -10000.0]
    """
    _broadcast_shape("log_sigmoid_transform", ("rewards", "ref_rewards"), rewards, ref_rewards)
    return jax.nn.log_sigmoid(_float(rewards) - _float(ref_rewards))


def _check_weights(weights, m: int):
    if weights is None:
        return None
    if is_concrete(weights):
        w = np.asarray(weights)
        if w.shape != (m,):
            raise ValueError(f"combine: argument weights={weights!r} must have shape ({m},), one per reward")
        if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
            raise ValueError(f"combine: argument weights={weights!r} must be real numbers")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"combine: argument weights={weights!r} must be finite and >= 0")
    elif np.shape(weights) != (m,):
        raise ValueError(f"combine: argument weights of shape {np.shape(weights)} must have shape ({m},)")
    return _float(weights)


def combine(rewards_list, mode, *, ref_rewards_list=None, weights=None):
    """Combine M reward signals into one: a weighted sum, a sum of transformed rewards (AND), or a minimum.

    With weights w_i ≥ 0 (default all 1):

    * ``"sum"``: Σ_i w_i·r_i — the raw sum; one property can be traded for another.
    * ``"transformed_sum"``: Σ_i w_i·log σ(r_i − r_ref,i) — the log-probability that the output is good in
      every property (independent properties, w = 1): a logical AND (Wang et al., 2024). Needs
      ``ref_rewards_list``.
    * ``"min"``: min_i w_i·r_i — the worst component of the weighted rewards (the egalitarian combination;
      for positive weights and rewards of one sign this is the minimum after rescaling each reward by w_i.
      A zero weight makes that component 0, it does not remove it: drop the reward from the list instead).
    * ``"maxmin"``: u_g* with u_i = w_i·(r_i − r_ref,i) and g* = argmin_i mean(u_i) over *all* outputs
      (:func:`maxmin_group`): the rewards of the group that is worst off on this batch, the same group for
      every output. This is the step of MaxMin-RLHF (Chakraborty et al., 2024, Algorithm 1): at each
      iteration the policy is updated on the reward of the group with the lowest expected reward, estimated
      on the current samples. ``ref_rewards_list`` is optional (default 0): each group's utility is read
      relative to its reference value (a Bradley–Terry reward is identified only up to a constant per
      group, so compare groups relative to, e.g., their mean reward under the reference policy). It is not
      ``"min"``, the per-output minimum over groups.

    Args:
      rewards_list: a sequence of M ≥ 1 reward arrays of one shape (or an array whose leading axis is M).
      mode: ``"sum"``, ``"transformed_sum"``, ``"min"`` or ``"maxmin"``.
      ref_rewards_list: for ``"transformed_sum"`` (required) and ``"maxmin"`` (optional) only: M reference
        rewards r_ref,i, each broadcastable against the rewards (e.g. per-prompt ``[N, 1]`` against ``[N, S]``;
        see :func:`reference_quantile`).
      weights: ``[M]`` non-negative weights, default all 1.

    Returns:
      The combined reward, with the shape of one reward array (float32 or wider).

    Raises:
      ValueError: for an unknown mode, an empty list, rewards of different shapes, a missing (or, for
        ``"sum"`` / ``"min"``, an unexpected) ``ref_rewards_list``, a ``ref_rewards_list`` of a different
        length or non-broadcastable shapes, weights of the wrong length, negative or non-finite weights
        (value checks on concrete weights only).

    References:
      Wang et al., *Transforming and Combining Rewards for Aligning Large Language Models*, 2024,
      arXiv 2402.00742.
    """
    if mode not in COMBINE_MODES:
        raise ValueError(f"combine: argument mode={mode!r} must be one of {COMBINE_MODES}")
    if isinstance(rewards_list, (jax.Array, np.ndarray)):
        if np.ndim(rewards_list) < 1:
            raise ValueError("combine: argument rewards_list must be a sequence of reward arrays, got a scalar")
        rewards_list = list(rewards_list)
    if not isinstance(rewards_list, Sequence) or isinstance(rewards_list, str) or len(rewards_list) == 0:
        raise ValueError(f"combine: argument rewards_list={rewards_list!r} must be a non-empty sequence of arrays")
    m = len(rewards_list)
    shapes = [tuple(np.shape(r)) for r in rewards_list]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"combine: the arrays in rewards_list must have one shape, got shapes {shapes}")
    w = _check_weights(weights, m)

    if mode == "maxmin":
        return _maxmin(rewards_list, ref_rewards_list, w, shapes[0])[0]
    if mode == "transformed_sum":
        if ref_rewards_list is None:
            raise ValueError("combine: mode='transformed_sum' needs ref_rewards_list (one reference per reward)")
        if isinstance(ref_rewards_list, (jax.Array, np.ndarray)) and np.ndim(ref_rewards_list) >= 1:
            ref_rewards_list = list(ref_rewards_list)
        if not isinstance(ref_rewards_list, Sequence) or len(ref_rewards_list) != m:
            n = len(ref_rewards_list) if isinstance(ref_rewards_list, Sequence) else ref_rewards_list
            raise ValueError(
                f"combine: argument ref_rewards_list must hold {m} references (one per reward), got {n!r}"
            )
        parts = []
        for i, (r, ref) in enumerate(zip(rewards_list, ref_rewards_list, strict=True)):
            shape = _broadcast_shape("combine", (f"rewards_list[{i}]", f"ref_rewards_list[{i}]"), r, ref)
            if shape != shapes[0]:
                raise ValueError(
                    f"combine: ref_rewards_list[{i}] of shape {np.shape(ref)} must broadcast to the rewards' "
                    f"shape {shapes[0]}"
                )
            parts.append(jax.nn.log_sigmoid(_float(r) - _float(ref)))
    else:
        if ref_rewards_list is not None:
            raise ValueError(
                f"combine: ref_rewards_list is only used by modes 'transformed_sum' and 'maxmin', not mode={mode!r}"
            )
        parts = [_float(r) for r in rewards_list]

    stacked = jnp.stack(parts)  # [M, ...]
    if w is not None:
        stacked = stacked * w.reshape((m,) + (1,) * (stacked.ndim - 1))
    if mode == "min":
        return jnp.min(stacked, axis=0)
    return jnp.sum(stacked, axis=0)


def _ref_list(fn, ref_rewards_list, m, shape):
    if isinstance(ref_rewards_list, (jax.Array, np.ndarray)) and np.ndim(ref_rewards_list) >= 1:
        ref_rewards_list = list(ref_rewards_list)
    if not isinstance(ref_rewards_list, Sequence) or len(ref_rewards_list) != m:
        n = len(ref_rewards_list) if isinstance(ref_rewards_list, Sequence) else ref_rewards_list
        raise ValueError(f"{fn}: argument ref_rewards_list must hold {m} references (one per reward), got {n!r}")
    for i, (ref, r_shape) in enumerate(zip(ref_rewards_list, [shape] * m, strict=True)):
        if _broadcast_shape(fn, ("rewards", f"ref_rewards_list[{i}]"), np.zeros(r_shape), ref) != r_shape:
            raise ValueError(f"{fn}: ref_rewards_list[{i}] of shape {np.shape(ref)} must broadcast to the rewards' "
                             f"shape {r_shape}")
    return ref_rewards_list


def _maxmin(rewards_list, ref_rewards_list, w, shape):
    """(u_g*, g*) of :func:`combine` mode ``"maxmin"`` (checked inputs, ``w`` None or ``[M]``)."""
    m = len(rewards_list)
    u = jnp.stack([_float(r) for r in rewards_list])  # [M, ...]
    if ref_rewards_list is not None:
        refs = _ref_list("combine", ref_rewards_list, m, shape)
        u = u - jnp.stack([jnp.broadcast_to(_float(ref), shape) for ref in refs]).astype(u.dtype)
    if w is not None:
        u = u * w.reshape((m,) + (1,) * (u.ndim - 1))
    g = jnp.argmin(jnp.mean(u.reshape(m, -1), axis=1)).astype(jnp.int32)  # the first of tied groups
    return u[g], g


def maxmin_group(rewards_list, *, ref_rewards_list=None, weights=None):
    """The group MaxMin-RLHF optimises on a batch: g* = argmin_i mean(w_i·(r_i − r_ref,i)).

    The mean runs over every output of the batch (the Monte Carlo estimate of each group's expected,
    reference-relative reward under the policy that drew the samples); ties go to the first group.
    ``combine(rewards_list, "maxmin", ...)`` returns that group's u_g* = w_g*·(r_g* − r_ref,g*).

    Args:
      rewards_list: M ≥ 1 reward arrays of one shape (one per group's reward model), or an ``[M, ...]`` array.
      ref_rewards_list: optional M references, each broadcastable against the rewards (default 0).
      weights: optional ``[M]`` non-negative weights (default all 1).

    Returns:
      The index g* (int32 scalar).

    References:
      Chakraborty et al., *MaxMin-RLHF: Alignment with Diverse Human Preferences*, ICML 2024,
      arXiv 2402.08925 (Algorithm 1).

    >>> import jax.numpy as jnp
    >>> int(maxmin_group([jnp.array([1.0, 2.0]), jnp.array([0.0, 5.0])]))  # means 1.5 and 2.5
    0
    >>> int(maxmin_group([jnp.array([1.0, 2.0]), jnp.array([0.0, 5.0])], ref_rewards_list=[0.0, 2.0]))
    1
    """
    if isinstance(rewards_list, (jax.Array, np.ndarray)):
        rewards_list = list(rewards_list)
    if not isinstance(rewards_list, Sequence) or isinstance(rewards_list, str) or len(rewards_list) == 0:
        raise ValueError(f"maxmin_group: argument rewards_list={rewards_list!r} must be a non-empty sequence of arrays")
    shapes = [tuple(np.shape(r)) for r in rewards_list]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"maxmin_group: the arrays in rewards_list must have one shape, got shapes {shapes}")
    w = _check_weights(weights, len(rewards_list))
    return _maxmin(rewards_list, ref_rewards_list, w, shapes[0])[1]


def reference_quantile(rewards_NxS, q):
    """Per-prompt reference rewards: the q-quantile of the rewards of S reference samples of each prompt.

    The quantile is numpy's default (``method="linear"``, type 7 of Hyndman & Fan): with the S rewards of a
    prompt sorted, x_(0) ≤ … ≤ x_(S−1), and h = (S − 1)·q,

        Q(q) = x_(⌊h⌋) + (h − ⌊h⌋)·(x_(⌊h⌋+1) − x_(⌊h⌋)),

    so q = 0 is the minimum, q = 1 the maximum and q = ½ the median. Use it as ``ref_rewards`` with a
    trailing axis: ``log_sigmoid_transform(rewards_NxS, reference_quantile(ref_NxS, q)[:, None])``.

    Args:
      rewards_NxS: ``[N, S]`` rewards of S samples of the reference (base) policy for each of N prompts.
      q: the quantile level in [0, 1] (a scalar; may be traced).

    Returns:
      ``[N]`` the q-quantile of each row (float32 or wider).

    Raises:
      ValueError: if ``rewards_NxS`` is not 2-D with S ≥ 1, or a concrete q is not a scalar in [0, 1].

    References:
      Wang et al., *Transforming and Combining Rewards for Aligning Large Language Models*, 2024,
      arXiv 2402.00742. Hyndman & Fan, *Sample Quantiles in Statistical Packages*, 1996 (definition 7).
    """
    if np.ndim(rewards_NxS) != 2 or np.shape(rewards_NxS)[1] < 1:
        raise ValueError(
            f"reference_quantile: argument rewards_NxS of shape {np.shape(rewards_NxS)} must be [N, S], S >= 1"
        )
    if np.ndim(q) != 0:
        raise ValueError(f"reference_quantile: argument q={q!r} must be a scalar")
    if is_concrete(q):
        qv = np.asarray(q)
        if not np.issubdtype(qv.dtype, np.number) or not (0.0 <= float(qv) <= 1.0):
            raise ValueError(f"reference_quantile: argument q={q!r} must be in [0, 1]")
    x = jnp.sort(_float(rewards_NxS), axis=-1)
    s = x.shape[-1]
    h = (s - 1) * _float(q).astype(x.dtype)
    lo = jnp.clip(jnp.floor(h), 0, s - 1)
    frac = h - lo
    lo = lo.astype(jnp.int32)
    hi = jnp.minimum(lo + 1, s - 1)
    a = x[:, lo]
    b = x[:, hi]
    # lerp, exact at both ends (frac = 0 gives a, frac = 1 gives b)
    return jnp.where(frac < 0.5, a + frac * (b - a), b - (1.0 - frac) * (b - a))


ENSEMBLE_MODES = ("mean", "min", "mean_minus_std")


def ensemble(member_rewards, mode="mean", *, k=1.0, ddof=0):
    """One reward from an ensemble of M reward models' scores of the same outputs.

    With r_m the rewards of member m (``member_rewards[m]``), elementwise over the outputs:

    * ``"mean"`` — r̄ = (1/M) Σ_m r_m;
    * ``"min"`` — min_m r_m (the worst case over members);
    * ``"mean_minus_std"`` — r̄ − k·s, s = sqrt(Σ_m (r_m − r̄)² / (M − ddof)): the conservative
      (uncertainty-penalised) ensemble reward.

    The spread is computed from deviations to the mean (no cancellation). ``ddof=0`` (the default) is the
    population standard deviation (numpy's default); ``ddof=1`` the unbiased-variance one (torch's default),
    which needs M ≥ 2. The gradient of ``"mean_minus_std"`` is undefined where all members agree (s = 0).

    Args:
      member_rewards: ``[M, ...]`` array or a sequence of M equally shaped arrays.
      mode: one of :data:`ENSEMBLE_MODES`.
      k: the penalty weight of ``"mean_minus_std"`` (≥ 0; ignored by the other modes).
      ddof: 0 or 1, the divisor M − ddof of the variance.

    Returns:
      The ensemble reward, the shape of one member, float32 or wider.

    Raises:
      ValueError: an unknown mode, k < 0, ddof ∉ {0, 1}, no members, ddof=1 with one member, or members of
        different shapes.

    References:
      Coste et al., Reward Model Ensembles Help Mitigate Overoptimization, ICLR 2024 (arXiv 2310.02743);
      Eisenstein et al., Helping or Herding? Reward Model Ensembles Mitigate but do not Eliminate Reward
      Hacking, 2023 (arXiv 2312.09244).

    >>> import jax.numpy as jnp
    >>> r = jnp.array([[1.0, 0.0], [3.0, 0.0]])  # 2 members, 2 outputs
    >>> ensemble(r, "mean").tolist(), ensemble(r, "min").tolist(), ensemble(r, "mean_minus_std", k=1.0).tolist()
    ([2.0, 0.0], [1.0, 0.0], [1.0, 0.0])
    """
    fn = "rewards.ensemble"
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"{fn}: mode={mode!r}; valid: {ENSEMBLE_MODES}")
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise ValueError(f"{fn}: ddof={ddof!r} must be 0 (population std) or 1 (unbiased variance)")
    if is_concrete(k) and not float(k) >= 0:
        raise ValueError(f"{fn}: k={k!r} must be >= 0")
    if isinstance(member_rewards, Sequence) and not isinstance(member_rewards, str):
        shapes = {tuple(np.shape(r)) for r in member_rewards}
        if len(shapes) > 1:
            raise ValueError(f"{fn}: the members' rewards have different shapes {sorted(shapes)}")
    r = _float(jnp.asarray(member_rewards) if not isinstance(member_rewards, Sequence)
               else jnp.stack([jnp.asarray(x) for x in member_rewards]) if len(member_rewards) else jnp.zeros((0,)))
    m = r.shape[0] if r.ndim else 0
    if m == 0:
        raise ValueError(f"{fn}: no members (member_rewards has shape {tuple(r.shape)}; expected [M, ...], M >= 1)")
    if mode == "min":
        return r.min(axis=0)
    mean = r.mean(axis=0)
    if mode == "mean":
        return mean
    if m - ddof < 1:
        raise ValueError(f"{fn}: ddof=1 needs at least 2 members, got {m}")
    std = jnp.sqrt(jnp.square(r - mean).sum(axis=0) / (m - ddof))
    return mean - k * std


CTRL_TRANSFORMS = ("identity", "exp", "neg_exp")


def calibrate(rewards_N, ref_rewards_NxM):
    """Empirical calibrated reward: the share of m reference rewards below r(y), ties counting ½.

    For each row i, with the m reference rewards ρ_i1, …, ρ_im of row i's prompt (rewards of samples of the
    reference policy μ),

        C_i = (1/m) Σ_j [1(ρ_ij < r_i) + ½·1(ρ_ij = r_i)] = μ̂(r < r_i) + ½·μ̂(r = r_i) ∈ [0, 1],

    the calibrated reward of InfAlign with μ replaced by the empirical distribution μ̂ of the m samples (for a
    finite set of outputs it equals :func:`jalign.envs.calibrated_rewards` with μ = μ̂). C_i is the expected
    win (ties ½) of r_i against one reference sample, so it is unchanged by any strictly increasing transform
    of r applied to both arguments.

    Args:
      rewards_N: ``[N]`` rewards r_i of the outputs to calibrate.
      ref_rewards_NxM: ``[N, m]`` (m ≥ 1) reference rewards of row i's prompt (rows of one prompt repeat
        them), or ``[m]``: one reference set for every row.

    Returns:
      ``[N]`` C_i in [0, 1], float32 or wider (multiples of 1/(2m)).

    Raises:
      ValueError: if the shapes do not fit, m = 0, or concrete values are not finite.

    References:
      Balashankar et al., *InfAlign: Inference-aware language model alignment*, 2024, arXiv 2412.19792.

    >>> import jax.numpy as jnp
    >>> calibrate(jnp.array([0.0, 1.0, 2.0]), jnp.array([0.0, 1.0, 1.0, 3.0])).tolist()
    [0.125, 0.5, 0.75]
    """
    fn = "calibrate"
    if np.ndim(rewards_N) != 1:
        raise ValueError(f"{fn}: argument rewards_N of shape {np.shape(rewards_N)} must be 1-D [N]")
    n = np.shape(rewards_N)[0]
    ref_shape = np.shape(ref_rewards_NxM)
    if not (len(ref_shape) == 1 or (len(ref_shape) == 2 and ref_shape[0] == n)) or ref_shape[-1] < 1:
        raise ValueError(f"{fn}: argument ref_rewards_NxM of shape {ref_shape} must be [N, m] with N={n} "
                         "(or [m]), m >= 1")
    for name, v in (("rewards_N", rewards_N), ("ref_rewards_NxM", ref_rewards_NxM)):
        if is_concrete(v) and not np.all(np.isfinite(np.asarray(v, np.float64))):
            raise ValueError(f"{fn}: argument {name} must be finite")
    r = _float(rewards_N)
    ref = jnp.broadcast_to(_float(ref_rewards_NxM), (n, ref_shape[-1])).astype(r.dtype)
    below = jnp.mean((ref < r[:, None]).astype(r.dtype), axis=-1)
    ties = jnp.mean((ref == r[:, None]).astype(r.dtype), axis=-1)
    return below + 0.5 * ties


def ctrl_transform(calibrated, kind: str = "exp", t=1.0):
    """CTRL's transform Φ of the calibrated reward, elementwise: ``"identity"`` c, ``"exp"`` exp(t·c),
    ``"neg_exp"`` −exp(−t·c).

    All three are strictly increasing in c for t > 0. Balashankar et al. propose exp(t·c) for best-of-n and
    −exp(−t·c) for worst-of-n decoding, t a hyperparameter chosen per n and KL budget.

    Args:
      calibrated: C, any shape (in [0, 1] for a calibrated reward; not checked).
      kind: one of :data:`CTRL_TRANSFORMS`.
      t: the transform's temperature, a finite scalar > 0 (unused for ``"identity"``).

    Returns:
      Φ(C), the shape of ``calibrated``, float32 or wider.

    Raises:
      ValueError: an unknown ``kind``, or a concrete t that is not a finite scalar > 0.

    References:
      Balashankar et al., *InfAlign: Inference-aware language model alignment*, 2024, arXiv 2412.19792.

    >>> import jax.numpy as jnp
    >>> [round(v, 4) for v in ctrl_transform(jnp.array([0.0, 0.5, 1.0]), "exp", 2.0).tolist()]
    [1.0, 2.7183, 7.3891]
    """
    fn = "ctrl_transform"
    if kind not in CTRL_TRANSFORMS:
        raise ValueError(f"{fn}: argument kind={kind!r} must be one of {CTRL_TRANSFORMS}")
    if np.ndim(t) != 0:
        raise ValueError(f"{fn}: argument t={t!r} must be a scalar")
    if is_concrete(t):
        v = np.asarray(t)
        if isinstance(t, bool) or not np.issubdtype(v.dtype, np.number) or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{fn}: argument t={t!r} must be a finite scalar > 0")
    c = _float(calibrated)
    if kind == "identity":
        return c
    t = jnp.asarray(t, c.dtype)
    if kind == "exp":
        return jnp.exp(t * c)
    return -jnp.exp(-t * c)

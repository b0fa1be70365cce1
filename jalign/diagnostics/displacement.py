"""Likelihood-displacement metrics (Razin et al., ICLR 2025, arXiv 2410.08847) for training-time tracking.

Pure helpers over log-prob trajectories: the paper's "largest drop of π(y+) between two steps" and the tokens
that gain the most probability mass.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = Any


def largest_drop(probs_T: Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """max_{s<t} (p_s − p_t) over a trajectory of probabilities (``[T]`` or ``[..., T]`` on the last axis).

    The single-token experiments' metric (e.g. π(y+) 0.96 → 0.27 is a drop of 0.69). Computed in O(T) with a
    running maximum; 0 when the trajectory never falls.

    Returns:
      ``(drop, s, t)``: the drop and the two step indices (``s = t`` when there is no drop).
    """
    p = jnp.asarray(probs_T, jnp.promote_types(jnp.result_type(probs_T), jnp.float32))
    if p.shape[-1] < 1:
        raise ValueError("largest_drop: empty trajectory")
    run_max = jax.lax.cummax(p, axis=p.ndim - 1)
    drops = run_max - p
    t = jnp.argmax(drops, axis=-1)
    drop = jnp.take_along_axis(drops, t[..., None], axis=-1)[..., 0]
    # s: the first index attaining the running maximum at t.
    idx = jnp.arange(p.shape[-1])
    peak = jnp.take_along_axis(run_max, t[..., None], axis=-1)
    s = jnp.argmax((p == peak) & (idx <= t[..., None]), axis=-1)
    return drop, s, t


def mass_gainers(logp_before_V: Array, logp_after_V: Array, k: int = 5, *, exclude: Any = ()) -> tuple:
    """The ``k`` tokens whose probability grew most, π_after(z) − π_before(z), on the last axis.

    Args:
      logp_before_V, logp_after_V: log-probabilities ``[..., V]`` (e.g. next-token distributions).
      k: how many tokens.
      exclude: token ids to leave out (e.g. y+ and y−).

    Returns:
      ``(tokens [..., k], gains [..., k])`` sorted by decreasing gain.
    """
    a, b = jnp.asarray(logp_before_V, jnp.float32), jnp.asarray(logp_after_V, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"logp_before {a.shape} and logp_after {b.shape} differ")
    V = a.shape[-1]
    if not (1 <= k <= V):
        raise ValueError(f"k must be in [1, {V}], got {k}")
    gain = jnp.exp(b) - jnp.exp(a)
    ex = jnp.asarray(list(exclude), jnp.int32)
    if ex.size:
        gain = gain.at[..., ex].set(-jnp.inf)
    g, idx = jax.lax.top_k(gain, k)
    return idx, g


def difference_components(w_plus: Array, w_minus: Array) -> tuple[jax.Array, jax.Array]:
    """Norms of the components of W+ − W− parallel and orthogonal to W+ (last axis).

    parallel = |⟨W+ − W−, W+⟩| / ‖W+‖,  orthogonal = ‖(W+ − W−) − ⟨W+ − W−, W+⟩ W+ / ‖W+‖²‖.
    Razin et al. (ICLR 2025, Section 4) observe that, for pairs that displace, the orthogonal component is the
    larger one: it is what moves the probability of tokens z ∉ {y+, y−} (Theorem 5, ∝ ⟨W_z, W+ − W−⟩).
    Computed in float32 or wider.

    Returns:
      ``(parallel, orthogonal)``, each of shape ``w_plus.shape[:-1]``.
    """
    wp = jnp.asarray(w_plus)
    dt = jnp.promote_types(jnp.result_type(wp, jnp.asarray(w_minus)), jnp.float32)
    wp, wm = wp.astype(dt), jnp.asarray(w_minus).astype(dt)
    if wp.shape != wm.shape:
        raise ValueError(f"w_plus {wp.shape} and w_minus {wm.shape} differ")
    d = wp - wm
    nn = jnp.sum(wp * wp, axis=-1, keepdims=True)
    coef = jnp.sum(d * wp, axis=-1, keepdims=True) / nn
    par = jnp.abs(coef[..., 0]) * jnp.sqrt(nn[..., 0])
    orth = jnp.linalg.norm(d - coef * wp, axis=-1)
    return par, orth

"""From token logits to sequence log-probabilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sequence_logps(logits, labels, mask):
    """Summed log-probabilities of ``labels`` under ``logits`` and the number of scored tokens.

    The labels are *aligned* with the logits: ``logits[b, t]`` is the distribution that predicts
    ``labels[b, t]``. For a causal LM over tokens ``ids`` pass ``logits[:, :-1]``, ``ids[:, 1:]`` and the
    response mask shifted the same way. Computation is in float32 (or the logits' dtype if wider) and uses
    ``logsumexp``; the full log-softmax is never materialised.

    Args:
      logits: ``[B, T, V]`` unnormalised scores.
      labels: ``[B, T]`` integer token ids in ``[0, V)``.
      mask: ``[B, T]`` 0/1 (or bool): which positions belong to the response.

    Returns:
      ``(logps [B], lengths [B])``: Σ_t mask·log softmax(logits)[label] and Σ_t mask.

    Raises:
      ValueError: if the shapes disagree (``logits`` must be ``[..., T, V]``, ``labels`` and ``mask``
        ``[..., T]``), or — for concrete arrays, outside ``jit`` — a label under the mask is outside ``[0, V)``
        (naming the first offending example and position). Labels at masked-out positions may be anything
        (e.g. ``-100`` padding); they are clipped before the gather.
    """
    logits = jnp.asarray(logits)
    labels_shape, mask_shape = tuple(jnp.shape(labels)), tuple(jnp.shape(mask))
    if logits.ndim < 2:
        raise ValueError(f"sequence_logps: logits must be [..., T, V], got shape {tuple(logits.shape)}")
    if labels_shape != tuple(logits.shape[:-1]):
        raise ValueError(
            f"sequence_logps: labels has shape {labels_shape} but logits {tuple(logits.shape)} needs "
            f"{tuple(logits.shape[:-1])}"
        )
    if mask_shape != labels_shape:
        raise ValueError(f"sequence_logps: mask has shape {mask_shape} but labels has shape {labels_shape}")
    if not isinstance(labels, jax.core.Tracer) and not isinstance(mask, jax.core.Tracer):
        lab, m = np.asarray(labels), np.asarray(mask).astype(bool)
        bad = m & ((lab < 0) | (lab >= logits.shape[-1]))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"sequence_logps: labels out of range [0, {logits.shape[-1]}) at example {where[0]}, "
                f"position {where[1:]} (value {int(lab[where])})"
            )
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    logits = logits.astype(dtype)
    labels = jnp.asarray(labels)
    mask = jnp.asarray(mask).astype(dtype)
    lse = jax.nn.logsumexp(logits, axis=-1)
    safe = jnp.clip(labels.astype(jnp.int32), 0, logits.shape[-1] - 1)
    picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    token_logps = jnp.where(mask > 0, (picked - lse) * mask, 0.0)
    return token_logps.sum(axis=-1), mask.sum(axis=-1)


def causal_sequence_logps(logits, ids, mask):
    """:func:`sequence_logps` for a causal LM, shifting the targets instead of slicing the logits.

    ``logits[b, t]`` predicts ``ids[b, t + 1]``; the response log-likelihood is
    ``Σ_{t ≥ 1} mask[b, t] · log softmax(logits[b, t - 1])[ids[b, t]]``, i.e. exactly
    ``sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])``. Here the labels and the mask are shifted left
    by one (the last position gets label 0 and mask 0) so the ``[B, T, V]`` logits are consumed in place:
    slicing off the last position would make XLA copy the whole logits array (and its cotangent), which at a
    vocabulary of 8192 costs as much as a layer's matmuls.

    Args:
      logits: ``[B, T, V]`` (position t predicts token t + 1).
      ids: ``[B, T]`` token ids (``ids[:, 0]`` is never scored).
      mask: ``[B, T]`` response mask aligned with ``ids``.

    Returns:
      ``(logps [B], lengths [B])`` as :func:`sequence_logps`.
    """
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    if ids.ndim < 1 or ids.shape[-1] < 1:
        raise ValueError(f"causal_sequence_logps: ids must be [..., T] with T >= 1, got shape {ids.shape}")
    concrete = not isinstance(ids, jax.core.Tracer) and not isinstance(mask, jax.core.Tracer)
    if concrete and ids.shape == mask.shape == tuple(jnp.shape(logits))[:-1]:  # else: shape errors below
        lab, m = np.asarray(ids), np.asarray(mask).astype(bool)
        bad = m & ((lab < 0) | (lab >= logits.shape[-1]))
        bad[..., 0] = False  # ids[:, 0] is never scored
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"causal_sequence_logps: ids out of range [0, {logits.shape[-1]}) at example "
                             f"{where[0]}, position {where[1:]} (value {int(lab[where])})")
    labels = jnp.concatenate([ids[..., 1:], jnp.zeros_like(ids[..., :1])], axis=-1)
    shifted = jnp.concatenate([mask[..., 1:], jnp.zeros_like(mask[..., :1])], axis=-1)
    return sequence_logps(logits, labels, shifted)

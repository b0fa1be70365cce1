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

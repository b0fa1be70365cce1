"""From token logits to sequence log-probabilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
    """
    logits = jnp.asarray(logits)
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    logits = logits.astype(dtype)
    labels = jnp.asarray(labels)
    mask = jnp.asarray(mask).astype(dtype)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    token_logps = (picked - lse) * mask
    return token_logps.sum(axis=-1), mask.sum(axis=-1)

"""Numerical helpers shared by the loss families (pure jax.numpy, no state)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def as_float(x):
    """``x`` as a floating array of at least float32 (bf16/f16/int inputs are promoted to float32).

    Every loss computes in float32 (or float64 under x64 when given float64), whatever the input dtype; the
    returned per-example losses therefore have that dtype.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def log1mexp(a):
    """log(1 − exp(a)) for a < 0, stable at both ends (Mächler 2012): log(−expm1(a)) near 0, log1p(−exp(a)) below."""
    a = jnp.minimum(a, -jnp.finfo(jnp.asarray(a).dtype).tiny)
    near = a > -0.6931471805599453
    safe_near = jnp.where(near, a, -1.0)
    safe_far = jnp.where(near, -1.0, a)
    return jnp.where(near, jnp.log(-jnp.expm1(safe_near)), jnp.log1p(-jnp.exp(safe_far)))


def logratios(batch):
    """(r_w, r_l) = (log π(y_w) − log π_ref(y_w), log π(y_l) − log π_ref(y_l)) in float32 or wider."""
    r_w = as_float(batch.chosen_logps) - as_float(batch.ref_chosen_logps)
    r_l = as_float(batch.rejected_logps) - as_float(batch.ref_rejected_logps)
    return r_w, r_l


def lengths(batch):
    """(n_w, n_l) as floats (validated > 0 outside jit)."""
    return as_float(batch.chosen_lengths), as_float(batch.rejected_lengths)


def smoothed_logistic(z, eps):
    """−(1−ε)·log σ(z) − ε·log σ(−z): the conservative (label-smoothed) logistic loss."""
    return -(1.0 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)


def sort_batch(x):
    """``jnp.sort`` over the last (batch) axis, also for arrays sharded over it on an Explicit-axes mesh.

    Sorting needs the whole axis on every device; with explicit sharding JAX refuses to sort a sharded axis,
    so the array is first resharded to replicated (an all-gather, which Auto-axes meshes insert themselves).
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is not None and len(spec) and spec[-1] is not None:
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*([None] * x.ndim)))
        x = jax.sharding.reshard(x, replicated)
    return jnp.sort(x, axis=-1)

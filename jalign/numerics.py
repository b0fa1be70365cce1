"""Small array helpers shared by the math modules: concreteness (validation only outside ``jit``) and the
accumulation dtype (float32 or wider)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def is_concrete(*xs) -> bool:
    """Whether none of ``xs`` is a tracer (values can be checked on the host: outside ``jit``/``grad``)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def float_dtype(*xs):
    """float32, or the widest floating dtype among ``xs`` if wider (float64 stays float64)."""
    dt = jnp.float32
    for x in xs:
        t = jnp.result_type(x)
        if jnp.issubdtype(t, jnp.floating):
            dt = jnp.promote_types(dt, t)
    return dt


def check_positive(fn: str, name: str, v) -> None:
    """``ValueError`` naming ``fn`` and ``name`` unless ``v`` is finite and > 0 (skipped for traced values)."""
    if isinstance(v, jax.core.Tracer):
        return
    import numpy as np

    x = np.asarray(v)
    if np.issubdtype(x.dtype, np.number) and not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"{fn}: argument {name}={v!r} must be finite and > 0")


def as_float(x):
    """``x`` as an array of float32 or a wider floating dtype (float64 stays float64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))

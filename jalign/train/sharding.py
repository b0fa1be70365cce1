"""Device mesh (axes ``data``, ``fsdp``, ``tensor``), parameter and batch shardings, global batches.

Default parameter rule (used when a model gives no partitioning of its own): replicated over ``data``; for
``tensor > 1`` the last dimension divisible by the tensor size is split over ``tensor``; for ``fsdp > 1`` the
largest remaining dimension divisible by the fsdp size is split over ``fsdp``; arrays with no divisible
dimension (and scalars) are replicated. The rule depends only on the shape, so optimiser moments get the
sharding of their parameter automatically. Batches are split along their first axis over ``(data, fsdp)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jalign.errors import UserError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all); ``data=-1`` takes the rest.

    A single process may ask for fewer devices than it has (the first ones are used); with several
    processes the mesh must cover every device.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if fsdp < 1 or tensor < 1:
        raise UserError(f"mesh.fsdp={fsdp} and mesh.tensor={tensor} must be >= 1")
    if data == -1:
        if n % (fsdp * tensor):
            raise UserError(f"{n} devices are not divisible by mesh.fsdp*mesh.tensor={fsdp * tensor}")
        data = n // (fsdp * tensor)
    if data * fsdp * tensor < n and jax.process_count() == 1:
        devices, n = devices[: data * fsdp * tensor], data * fsdp * tensor  # a sub-mesh (single process)
    if data * fsdp * tensor != n:
        raise UserError(f"mesh.data*mesh.fsdp*mesh.tensor={data}*{fsdp}*{tensor}={data * fsdp * tensor} != {n} devices "
                        f"({jax.default_backend()}); the mesh must fit the devices")
    dev = np.asarray(devices, dtype=object).reshape(data, fsdp, tensor)
    return jax.sharding.Mesh(dev, AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def leaf_spec(shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> P:
    """The default partition spec of one array (see the module docstring)."""
    spec: list = [None] * len(shape)
    t, f = mesh.shape["tensor"], mesh.shape["fsdp"]
    if t > 1 and len(shape) >= 2:
        for d in reversed(range(len(shape))):
            if shape[d] % t == 0:
                spec[d] = "tensor"
                break
    if f > 1:
        free = [d for d in range(len(shape)) if spec[d] is None and shape[d] % f == 0]
        if free:
            spec[max(free, key=lambda d: shape[d])] = "fsdp"
    return P(*spec)


def annotated_spec(names, shape: tuple[int, ...], mesh: jax.sharding.Mesh, rules: Mapping[str, str] | None) -> P:
    """A partition spec from a model's per-dimension axis names (nnx ``out_sharding`` metadata).

    Each name is a mesh axis (``data``/``fsdp``/``tensor``), a logical name mapped by ``rules``
    (e.g. ``{"vocab": "tensor", "embed": "fsdp"}``) or ``None``; unknown names, axes already used by an
    earlier dimension and dimensions not divisible by the axis size are replicated.
    """
    rules = dict(rules or {})
    spec, used = [], set()
    for d, name in enumerate(tuple(names)[: len(shape)]):
        axis = name if name in AXES else rules.get(name) if name is not None else None
        if axis is None or axis in used or shape[d] % mesh.shape[axis]:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return P(*spec, *([None] * (len(shape) - len(spec))))


# Logical axis names of jalign.models parameters (``axes`` metadata) -> mesh axes, used for ``axes``-annotated
# parameters unless ``mesh.rules`` overrides a name (same table as jalign.models.sharding.DEFAULT_RULES).
MODEL_AXES_RULES = {"vocab": "tensor", "embed": "fsdp", "heads": "tensor", "kv_heads": "tensor", "mlp": "tensor"}


def tree_shardings(tree, mesh: jax.sharding.Mesh, rules: Mapping[str, str] | None = None):
    """NamedShardings for every array leaf of ``tree``: a Variable's ``out_sharding`` annotation (through
    ``rules``, see :func:`annotated_spec`) when it has one, else its ``axes`` annotation (the
    :mod:`jalign.models` convention, through :data:`MODEL_AXES_RULES` updated by ``rules``), else the shape rule
    :func:`leaf_spec`. Optimiser moments keep their parameter's Variable metadata, so they follow the same
    annotation."""
    from flax import nnx

    model_rules = {**MODEL_AXES_RULES, **dict(rules or {})}

    def one(x):
        if isinstance(x, nnx.Variable):
            meta = x.get_metadata()
            names = meta.get("out_sharding")
            shape = np.shape(x.get_value())
            if names is not None:
                spec = annotated_spec(names, shape, mesh, rules)
            elif meta.get("axes") is not None:
                spec = annotated_spec(meta["axes"], shape, mesh, model_rules)
            else:
                spec = leaf_spec(shape, mesh)
            return x.replace(NamedSharding(mesh, spec))
        return NamedSharding(mesh, leaf_spec(np.shape(x), mesh))

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """First axis over ``(data, fsdp)``, everything else replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Assemble the global batch from each process's local rows (``jax.make_array_from_process_local_data``).

    Process ``i`` passes rows ``[i·b, (i+1)·b)`` of the global batch; the global batch size is
    ``b · process_count`` and must be divisible by the ``data × fsdp`` size.
    """
    sh = batch_sharding(mesh)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        n = v.shape[0] * jax.process_count()
        if n % ways:
            raise ValueError(f"batch field {k!r}: global batch {n} is not divisible by data*fsdp={ways}")
        out[k] = jax.make_array_from_process_local_data(sh, v, (n, *v.shape[1:]))
    return out

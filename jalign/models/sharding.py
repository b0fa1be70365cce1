"""Sharding by logical axis names: every parameter names its axes, a rule table maps names to mesh axes.

Parameter axes (the ``axes`` metadata of each ``nnx.Param``):

=============  ======================================  ==================
logical name   where                                   default mesh axes
=============  ======================================  ==================
``vocab``      embedding rows, lm_head columns         ``tensor``
``embed``      model width (d_model)                   ``fsdp``
``heads``      query heads                             ``tensor``
``kv_heads``   key/value heads                         ``tensor``
``head_dim``   per-head width                          replicated
``mlp``        MLP hidden width                        ``tensor``
``pos``        GPT-2 position table rows               replicated
``norm``       norm scales/biases                      replicated
``batch``      batch of activations/inputs             ``(data, fsdp)``
=============  ======================================  ==================

So ``data`` is pure data parallelism, ``fsdp`` shards parameters (ZeRO-3 style, gathered per layer by XLA)
and the batch, ``tensor`` is Megatron-style tensor parallelism. A mesh axis is used only if the mesh has it,
only once per array, and only if it divides the dimension (otherwise that dimension is replicated), so the
same rules place a tiny model and a 7B model on any mesh. Meshes should use ``AxisType.Auto`` axes
(:func:`make_mesh`); XLA's sharding propagation then handles the activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jalign.models.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("pos", None),
    ("norm", None),
)


def make_mesh(shape: Sequence[int], names: Sequence[str] = MESH_AXES, devices=None) -> jax.sharding.Mesh:
    """A mesh with ``AxisType.Auto`` axes, e.g. ``make_mesh((2, 2, 2))`` over (data, fsdp, tensor)."""
    if len(shape) != len(names):
        raise ValueError(f"mesh shape {tuple(shape)} and axis names {tuple(names)} differ in length")
    return jax.make_mesh(tuple(shape), tuple(names), axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                         devices=devices)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: jax.sharding.Mesh,
                    rules=DEFAULT_RULES) -> PartitionSpec:
    """PartitionSpec for an array with logical ``axes`` and ``shape`` under ``rules`` on ``mesh``."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, dim in zip(axes, shape, strict=True):
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no sharding rule (rules cover {sorted(table)})")
        target = table.get(name) if name is not None else None
        target = (target,) if isinstance(target, str) else tuple(target or ())
        chosen = [a for a in target if a in mesh.shape and a not in used and mesh.shape[a] > 1]
        size = int(np.prod([mesh.shape[a] for a in chosen])) if chosen else 1
        if not chosen or dim % size:
            spec.append(None)
            continue
        used.update(chosen)
        spec.append(chosen[0] if len(chosen) == 1 else tuple(chosen))
    return PartitionSpec(*spec)


def param_specs(model_or_cfg, mesh: jax.sharding.Mesh, rules=None) -> dict[str, PartitionSpec]:
    """Flat parameter name (``layers.0.attn.wq``) → PartitionSpec."""
    rules = DEFAULT_RULES if rules is None else rules
    if isinstance(model_or_cfg, ModelConfig):
        from jalign.models.transformer import CausalLM

        cfg = model_or_cfg
        model_or_cfg = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))
    st = nnx.state(model_or_cfg, nnx.Param)
    return {
        ".".join(map(str, path)): logical_to_spec(v.get_metadata()["axes"], v.shape, mesh, rules)
        for path, v in nnx.to_flat_state(st)
    }


def param_shardings(model_or_cfg, mesh: jax.sharding.Mesh, rules=None) -> dict[str, NamedSharding]:
    return {k: NamedSharding(mesh, s) for k, s in param_specs(model_or_cfg, mesh, rules).items()}


def shard_model(model, mesh: jax.sharding.Mesh, rules=None):
    """A copy of ``model`` whose parameters are placed on ``mesh`` by the logical-axis ``rules``."""
    shardings = param_shardings(model, mesh, rules)
    gd, st = nnx.split(model)
    for path, var in nnx.to_flat_state(st):
        name = ".".join(map(str, path))
        if name in shardings:
            var.set_value(jax.device_put(var.get_value(), shardings[name]))
    return nnx.merge(gd, st)


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 2, rules=None) -> NamedSharding:
    """Sharding of a ``[batch, ...]`` input: batch over the mesh axes of the ``batch`` rule."""
    rules = DEFAULT_RULES if rules is None else rules
    axes = tuple(dict(rules).get("batch") or ())
    axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if a in mesh.shape)
    first = axes[0] if len(axes) == 1 else (axes or None)
    return NamedSharding(mesh, PartitionSpec(first, *([None] * (ndim - 1))))

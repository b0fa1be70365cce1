"""Shared helpers of the model tests (not a test module)."""

import re

import jax.numpy as jnp
import numpy as np


def bf(a):
    """Round to bfloat16 and return float64 numpy."""
    return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)


def dot_operand_types(hlo: str) -> list[tuple[str, str]]:
    """(lhs, rhs) element types of every dot in compiled HLO text (operands defined in the same computation)."""
    out = []
    for comp in hlo.split("\n\n"):
        types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", comp))
        for a, b in re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", comp):
            out.append((types.get(a), types.get(b)))
    return out

"""Pairwise direct-alignment losses with a reference model (the DPO family).

Notation (per example): r_w = chosen_logps − ref_chosen_logps, r_l = rejected_logps − ref_rejected_logps,
h = r_w − r_l (the implicit-reward margin over β). All losses are per example, no reduction.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.nn import log_sigmoid

from jalign.losses._registry import register
from jalign.losses._types import PairwiseLogps

_DPO = "Rafailov et al., Direct Preference Optimization, NeurIPS 2023 (arXiv 2305.18290)"


def _f32(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def margin(batch: PairwiseLogps):
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))."""
    return (_f32(batch.chosen_logps) - _f32(batch.ref_chosen_logps)) - (
        _f32(batch.rejected_logps) - _f32(batch.ref_rejected_logps)
    )


@register(
    "sigmoid",
    aliases=("dpo",),
    formula="-(1-ε)·log σ(β·h) - ε·log σ(-β·h)",
    paper=_DPO,
    notes="TRL's loss_type='sigmoid'; label_smoothing=ε gives cDPO (also registered as 'cdpo').",
)
def sigmoid(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """DPO's logistic loss (TRL ``loss_type="sigmoid"``).

    ``-(1-ε)·log σ(βh) - ε·log σ(-βh)`` with h the reference-corrected log-ratio margin.

    Args:
      batch: a :class:`PairwiseLogps` with reference fields.
      beta: inverse temperature β > 0.
      label_smoothing: ε ∈ [0, ½); 0 is plain DPO.

    Returns:
      Per-example losses ``[B]``.

    References:
      Rafailov et al., Direct Preference Optimization, NeurIPS 2023.

    >>> import jax.numpy as jnp
    >>> from jalign.losses import PairwiseLogps, get
    >>> b = PairwiseLogps(chosen_logps=jnp.zeros(1), rejected_logps=jnp.zeros(1),
    ...                   ref_chosen_logps=jnp.zeros(1), ref_rejected_logps=jnp.zeros(1))
    >>> round(float(get("dpo")(b)[0]), 6)  # log 2 at zero margin
    0.693147
    """
    z = beta * margin(batch)
    return -(1.0 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)

"""Unpaired losses (one completion per example with a thumbs-up/down label): KTO and BCO.

Batch type :class:`UnpairedLogps`: ``logps``, ``ref_logps`` (summed response log-probs), ``desirable`` (bool),
optionally ``kl_logps``/``ref_kl_logps`` (log-probs of mismatched (x, y') pairs for KTO's reference point).
r = logps − ref_logps is the implicit reward over β. Losses are per example, ``[B]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.nn import log_sigmoid

from jalign.losses._common import as_float
from jalign.losses._registry import register
from jalign.losses._types import UnpairedLogps

_KTO = "Ethayarajh et al., KTO: Model Alignment as Prospect Theoretic Optimization, ICML 2024 (arXiv 2402.01306)"
_BCO = "Jung et al., Binary Classifier Optimization for Large Language Model Alignment (arXiv 2404.04656)"


def _kto_fields(hp):
    return ("kl_logps", "ref_kl_logps") if hp.get("z0") is None else ()


def kto_reference_point(batch: UnpairedLogps):
    """KTO's z0 = max(0, mean_B(kl_logps − ref_kl_logps)), detached (a batch estimate of KL(π‖π_ref))."""
    kl = as_float(batch.kl_logps) - as_float(batch.ref_kl_logps)
    return jax.lax.stop_gradient(jnp.maximum(jnp.mean(kl), 0.0))


@register(
    "kto",
    kind="unpaired",
    formula="λ_D·(1 - σ(β·(r - z0))) if desirable else λ_U·(1 - σ(β·(z0 - r)))",
    paper=_KTO,
    extra_fields=_kto_fields,
    notes=(
        "TRL KTOTrainer (loss_type='kto'). z0=None (default) estimates the reference point from the batch's "
        "mismatched pairs, max(0, mean(kl_logps - ref_kl_logps)), detached: the loss is then batch-coupled "
        "(TRL also averages it across devices). Pass a float z0 to decouple (e.g. z0=0 for the KL-free variant)."
    ),
    batch_coupled=True,
)
def kto(
    batch: UnpairedLogps,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    z0: float | None = None,
):
    """Kahneman–Tversky Optimisation.

    Desirable examples: ``λ_D·(1 − σ(β(r − z0)))``; undesirable: ``λ_U·(1 − σ(β(z0 − r)))``, with r the
    log-ratio and z0 the reference point. 1 − σ(x) is computed as σ(−x).

    Args:
      batch: :class:`UnpairedLogps`; ``kl_logps``/``ref_kl_logps`` required when ``z0`` is None.
      beta: β > 0.
      desirable_weight, undesirable_weight: λ_D, λ_U ≥ 0 (TRL names, default 1).
      z0: the reference point. None: the detached, clamped batch KL estimate (batch-coupled); a float is used
        as is (the loss is then per-example independent).

    References:
      Ethayarajh et al., KTO: Model Alignment as Prospect Theoretic Optimization, ICML 2024, Eq. 8.
    """
    r = as_float(batch.logps) - as_float(batch.ref_logps)
    if z0 is None:
        if batch.kl_logps is None or batch.ref_kl_logps is None:
            raise ValueError("loss 'kto' with z0=None needs batch fields 'kl_logps' and 'ref_kl_logps'")
        ref_point = kto_reference_point(batch)
    else:
        ref_point = z0
    des = jnp.asarray(batch.desirable).astype(bool)
    loss_d = desirable_weight * jax.nn.sigmoid(-beta * (r - ref_point))
    loss_u = undesirable_weight * jax.nn.sigmoid(-beta * (ref_point - r))
    return jnp.where(des, loss_d, loss_u)


@register(
    "bco",
    kind="unpaired",
    formula="-log σ(β·r - δ) if desirable else -log σ(-(β·r - δ)), δ = reward_shift (None: detached batch mean of β·r)",
    paper=_BCO,
    batch_coupled=True,
    notes=(
        "TRL BCOTrainer without the underlying-distribution-matching (UDM) weights, which need an embedding "
        "classifier: multiply the per-example losses by them outside. δ: TRL keeps a running mean of β·r; "
        "reward_shift=None (default) uses the detached batch mean (batch-coupled), a float is used as is."
    ),
)
def bco(batch: UnpairedLogps, *, beta: float = 0.1, reward_shift: float | None = None):
    """Binary Classifier Optimisation: logistic classification of thumbs-up vs thumbs-down by the reward βr.

    ``−log σ(βr − δ)`` for desirable, ``−log σ(−(βr − δ))`` for undesirable examples, δ the reward shift.

    Args:
      batch: :class:`UnpairedLogps`.
      beta: β > 0.
      reward_shift: δ. None: ``stop_gradient(mean_B(βr))`` (a one-batch stand-in for the paper's running
        mean; batch-coupled). A float (e.g. the running mean kept by the caller) is used as is.

    References:
      Jung et al., Binary Classifier Optimization for Large Language Model Alignment, 2024, Eq. 8-10.
    """
    rew = beta * (as_float(batch.logps) - as_float(batch.ref_logps))
    delta = jax.lax.stop_gradient(jnp.mean(rew)) if reward_shift is None else reward_shift
    sign = jnp.where(jnp.asarray(batch.desirable).astype(bool), 1.0, -1.0)
    return -log_sigmoid(sign * (rew - delta))

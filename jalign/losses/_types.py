"""Batch containers for the loss library (pytree dataclasses)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

Array = Any  # jax.Array or np.ndarray


def pytree_dataclass(cls):
    """Class decorator: a frozen dataclass registered as a JAX pytree whose fields are all data (leaves).

    The batch containers below are built this way, so they pass through ``jit``/``vmap``/``grad``; other
    modules use it for their own containers (``from jalign.losses import pytree_dataclass``).
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


@pytree_dataclass
class PairwiseLogps:
    """Sequence log-probabilities of a batch of preference pairs.

    All fields have shape ``[B]``. Log-probs are *summed* over response tokens; lengths are response token
    counts. Reference fields may be ``None`` for reference-free losses; lengths may be ``None`` for losses
    that do not use them.

    Attributes:
      chosen_logps: log π_θ(y_w | x).
      rejected_logps: log π_θ(y_l | x).
      ref_chosen_logps: log π_ref(y_w | x) (optional).
      ref_rejected_logps: log π_ref(y_l | x) (optional).
      chosen_lengths: |y_w| in tokens (optional).
      rejected_lengths: |y_l| in tokens (optional).
    """

    chosen_logps: Array
    rejected_logps: Array
    ref_chosen_logps: Array | None = None
    ref_rejected_logps: Array | None = None
    chosen_lengths: Array | None = None
    rejected_lengths: Array | None = None


@pytree_dataclass
class UnpairedLogps:
    """Unpaired (KTO / BCO style) batch: one completion per example with a desirable/undesirable label.

    Attributes:
      logps: log π_θ(y | x), summed over response tokens, ``[B]``.
      ref_logps: log π_ref(y | x), ``[B]``.
      desirable: boolean (or 0/1) label, ``[B]``; True = thumbs-up.
      lengths: response token counts (optional), ``[B]``.
      kl_logps, ref_kl_logps: log-probs of *mismatched* (x, y') pairs used by KTO's KL estimate z0
        (optional, ``[B]``).
    """

    logps: Array
    ref_logps: Array
    desirable: Array
    lengths: Array | None = None
    kl_logps: Array | None = None
    ref_kl_logps: Array | None = None


@pytree_dataclass
class ListwiseLogps:
    """Listwise batch: K responses per prompt, ``[B, K]`` arrays.

    Attributes:
      logps: summed log π_θ(y_k | x), ``[B, K]``.
      ref_logps: summed log π_ref(y_k | x) (optional), ``[B, K]``.
      lengths: token counts (optional), ``[B, K]``.
      scores: relevance scores, higher = better (``[B, K]``); ranks are derived from scores.
      mask: which of the K entries are valid (optional), ``[B, K]``.
    """

    logps: Array
    scores: Array
    ref_logps: Array | None = None
    lengths: Array | None = None
    mask: Array | None = None


@pytree_dataclass
class ScoredLogps:
    """K scored samples per prompt (policy-gradient family: CoPG, RLOO, off-policy PG), ``[B, K]`` arrays.

    Attributes:
      logps: summed log π_θ(y_k | x), ``[B, K]``.
      rewards: scalar rewards R(x, y_k), ``[B, K]`` (treated as constants).
      ref_logps: summed log π_ref(y_k | x) (optional), ``[B, K]``.
      mask: which of the K samples are valid (optional), ``[B, K]``.
    """

    logps: Array
    rewards: Array
    ref_logps: Array | None = None
    mask: Array | None = None


@pytree_dataclass
class SampledLogps:
    """Samples y ~ q from a proposal, scored under policy, target and proposal (f-DPG), ``[B]`` arrays.

    Attributes:
      policy_logps: log π_θ(y | x).
      target_logps: log p(y | x) of the (possibly unnormalised) target.
      proposal_logps: log q(y | x) of the proposal that drew y.
    """

    policy_logps: Array
    target_logps: Array
    proposal_logps: Array

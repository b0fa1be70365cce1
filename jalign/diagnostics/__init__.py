"""Diagnostics: gradient entanglement and likelihood displacement (pure functions of arrays / log-prob fns)."""

from jalign.diagnostics.entanglement import (
    CASES,
    PairGradStats,
    case_names,
    contrastive_token_masks,
    entanglement_condition,
    entanglement_report,
    loss_weights,
    pairwise_gradient_stats,
    pairwise_margin_losses,
    pairwise_normalized_direction,
    pairwise_normalized_update,
    per_pair_step_changes,
    predicted_logp_changes,
    tree_dot,
)

__all__ = [
    "CASES",
    "PairGradStats",
    "case_names",
    "contrastive_token_masks",
    "entanglement_condition",
    "entanglement_report",
    "loss_weights",
    "pairwise_gradient_stats",
    "pairwise_margin_losses",
    "pairwise_normalized_direction",
    "pairwise_normalized_update",
    "per_pair_step_changes",
    "predicted_logp_changes",
    "tree_dot",
]

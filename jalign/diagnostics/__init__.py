"""Diagnostics: gradient entanglement, likelihood displacement, ranking accuracy (pure functions of arrays / log-prob fns)."""

from jalign.diagnostics import attribution, toy, ufm
from jalign.diagnostics.attribution import predicted_token_changes, token_attribution, unembedding_token_gram
from jalign.diagnostics.ches import (
    ches_from_model,
    ches_scores,
    filter_lowest_ches,
    lowest_ches_indices,
    pack_prompt_response,
    percentile_subsets,
    predictor_mask,
    rank_by_ches,
    response_hidden_states,
    score_dataset,
)
from jalign.diagnostics.displacement import largest_drop, mass_gainers
from jalign.diagnostics.entanglement import (
    CASES,
    PairGradStats,
    all_margin_loss_reports,
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
    summarize_report,
    tree_dot,
)

__all__ = [
    "CASES",
    "all_margin_loss_reports",
    "attribution",
    "ches_from_model",
    "ches_scores",
    "filter_lowest_ches",
    "largest_drop",
    "mass_gainers",
    "lowest_ches_indices",
    "pack_prompt_response",
    "percentile_subsets",
    "predicted_token_changes",
    "predictor_mask",
    "rank_by_ches",
    "response_hidden_states",
    "score_dataset",
    "summarize_report",
    "token_attribution",
    "toy",
    "ufm",
    "unembedding_token_gram",
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

# Probe batches of the likelihood-displacement probe (the probe itself: jalign.train.probes.displacement_probe)
# and the pair-similarity baselines of the CHES reproduction.
from jalign.diagnostics import sample_scores  # noqa: E402
from jalign.diagnostics.displacement import probe_batch, probe_positions  # noqa: E402

__all__ += ["probe_batch", "probe_positions", "sample_scores"]

# Ranking accuracy (Chen et al.) and the top-k over-optimisation indicators (Shi et al.).
from jalign.diagnostics.rankings import (  # noqa: E402
    dpo_loss_at_flip,
    idealized_ranking_accuracy,
    ranking_accuracy,
    roc_auc,
    roc_curve,
    topk_entropy,
    topk_mass,
)

__all__ += ["dpo_loss_at_flip", "idealized_ranking_accuracy", "ranking_accuracy", "roc_auc", "roc_curve",
            "topk_entropy", "topk_mass"]

from jalign.diagnostics import evaluation  # noqa: E402
from jalign.diagnostics.evaluation import (  # noqa: E402
    best_of_groups,
    distinct_n,
    mc_kl,
    per_prompt_mean_se,
    value_at_kl,
    win_rate,
)

__all__ += ["best_of_groups", "distinct_n", "evaluation", "mc_kl", "per_prompt_mean_se", "value_at_kl", "win_rate"]

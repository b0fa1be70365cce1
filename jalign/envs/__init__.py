"""Exactly solvable environments: K-armed and contextual bandits with known rewards.

* :mod:`jalign.envs.bandit` — exact objectives E_π[R], KL(π‖π_ref), J_β, the optimum π* ∝ π_ref·exp(R/β),
  regret; :class:`Bandit`, :class:`ContextualBandit`, random bandits.
* :mod:`jalign.envs.preferences` — preference models (Bradley–Terry, Thurstone, linear, hard) and sampling.
* :mod:`jalign.envs.policies` — tabular-softmax and linear policies.
* :mod:`jalign.envs.data` — off-policy pairs from given μ1, μ2.
* :mod:`jalign.envs.offline` — the offline bandit laboratory of the CoPG paper (CoPG, IPO, off-policy PG),
  exact expected gradients, IPO's analytic fixed point, jitted training (vmap over seeds and methods).
* :mod:`jalign.envs.games` — preference games (the Nash equilibrium of the τ-regularised game) and the
  InfAlign calculus (exact best-of-n, win rate, calibrated reward).
* :mod:`jalign.envs.game_lab` — the preference-game lab: exact expected updates of Nash-MD, online IPO, IPO-MD,
  online DPO / SLiC and offline IPO, preference models (Bradley–Terry, Thurstone, cyclic), jitted training
  (vmap over initialisations and step sizes), distance to the regularised Nash equilibrium.
* :mod:`jalign.envs.infalign` — the InfAlign lab: inference-time (best-of-n / worst-of-n) win rates, CTRL's
  transforms of the calibrated reward, tilted policies π ∝ μ·exp(λ·s) matched in KL (bisection).
* :mod:`jalign.envs.maxmin` — the exact MaxMin (egalitarian) policy max_π min_g E_π[r_g] − β·KL(π‖μ) over
  groups' rewards, through its convex dual over group weights.
* :mod:`jalign.envs.mixtures` — EM for a mixture of Bradley–Terry models over users (latent groups), and the
  adjusted Rand index of recovered vs planted groups.
* :mod:`jalign.envs.rl_lab` — the KL-estimator lab: exact expected gradients of PPO with the KL penalty in
  the reward and of the k1/k2/k3 estimators in the loss (GRPO), their fixed points, jitted training; the
  per-token weights of the GRPO aggregations (length bias).

All functions are pure (PRNG keys in, arrays out) and vmap-able over seeds and hyperparameters.
"""

from jalign.envs.bandit import (
    Bandit,
    ContextualBandit,
    beta_for_kl,
    expected_reward,
    k_armed,
    kl,
    objective,
    optimal_logps,
    optimal_value,
    overlap,
    random_bandit,
    random_contextual_bandit,
    regret,
    regularised_rewards,
)
from jalign.envs.data import sample_contextual_pairs, sample_labelled_pairs, sample_pairs
from jalign.envs.game_lab import (
    GAME_METHODS,
    antisymmetric_pref,
    bradley_terry_pref,
    game_gradient,
    game_loss,
    game_method_index,
    game_step,
    mixture_fixed_point,
    nash_gap,
    nash_residual,
    offline_ipo_fixed_point,
    pref_from_logits,
    rock_paper_scissors_pref,
    thurstone_pref,
    train_game,
)
from jalign.envs.games import best_of_n, calibrated_rewards, regularized_nash, win_rate
from jalign.envs.infalign import (
    INFERENCE_PROCEDURES,
    TRANSFORMS,
    bon_kl_bound,
    calibrated_transform,
    inference_distribution,
    inference_optimum,
    inference_win_rate,
    max_tilt_kl,
    tilt_at_kl,
    tilt_kl,
    tilted_logps,
)
from jalign.envs.maxmin import maxmin_policy
from jalign.envs.mixtures import BTMixture, adjusted_rand_index, fit_bt_mixture
from jalign.envs.offline import (
    METHODS,
    PAPER_METHODS,
    expected_gradient,
    expected_loss,
    ipo_fixed_point,
    ipo_pair_loss,
    method_index,
    train,
    train_population,
)
from jalign.envs.policies import (
    linear_init,
    linear_logps,
    one_hot_features,
    tabular_init,
    tabular_logps,
)
from jalign.envs.preferences import (
    PREFERENCE_MODELS,
    preference_matrix,
    preference_prob,
    sample_preferences,
)
from jalign.envs.rl_lab import (
    KL_LAB_VARIANTS,
    aggregation_lab_gradient,
    aggregation_sequence_coefficients,
    aggregation_token_weights,
    kl_fixed_point,
    kl_lab_gradient,
    kl_lab_surrogate,
    kl_lab_variant_index,
    train_aggregation_lab,
    train_kl_lab,
)

__all__ = [
    "BTMixture",
    "KL_LAB_VARIANTS",
    "Bandit",
    "ContextualBandit",
    "GAME_METHODS",
    "INFERENCE_PROCEDURES",
    "METHODS",
    "PAPER_METHODS",
    "PREFERENCE_MODELS",
    "TRANSFORMS",
    "adjusted_rand_index",
    "aggregation_lab_gradient",
    "aggregation_sequence_coefficients",
    "aggregation_token_weights",
    "antisymmetric_pref",
    "beta_for_kl",
    "best_of_n",
    "bon_kl_bound",
    "bradley_terry_pref",
    "calibrated_rewards",
    "calibrated_transform",
    "expected_gradient",
    "expected_loss",
    "expected_reward",
    "fit_bt_mixture",
    "game_gradient",
    "game_loss",
    "game_method_index",
    "game_step",
    "inference_distribution",
    "inference_optimum",
    "inference_win_rate",
    "ipo_fixed_point",
    "ipo_pair_loss",
    "k_armed",
    "kl_fixed_point",
    "kl_lab_gradient",
    "kl_lab_surrogate",
    "kl_lab_variant_index",
    "kl",
    "linear_init",
    "linear_logps",
    "max_tilt_kl",
    "maxmin_policy",
    "mixture_fixed_point",
    "method_index",
    "nash_gap",
    "nash_residual",
    "objective",
    "offline_ipo_fixed_point",
    "one_hot_features",
    "optimal_logps",
    "optimal_value",
    "overlap",
    "pref_from_logits",
    "preference_matrix",
    "preference_prob",
    "random_bandit",
    "random_contextual_bandit",
    "regret",
    "regularised_rewards",
    "regularized_nash",
    "rock_paper_scissors_pref",
    "sample_contextual_pairs",
    "sample_labelled_pairs",
    "sample_pairs",
    "sample_preferences",
    "tabular_init",
    "tabular_logps",
    "thurstone_pref",
    "tilt_at_kl",
    "tilt_kl",
    "tilted_logps",
    "train",
    "train_aggregation_lab",
    "train_kl_lab",
    "train_game",
    "train_population",
    "win_rate",
]

"""Statistics of a policy-vs-baseline evaluation (``jalign eval``), pure numpy: win rate with ties ½, means
with per-prompt standard errors, Monte-Carlo KL estimates from sampled sequence log-probs, distinct-n.

Prompts are the independent unit of every standard error: the completions of one prompt share it and are not
independent draws of the evaluation's question.

References:
  J. Schulman, Approximating KL Divergence, 2020 (the k1 and k3 estimators).
  Li et al., A Diversity-Promoting Objective Function for Neural Conversation Models, NAACL 2016 (distinct-n).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["best_of_groups", "distinct_n", "mc_kl", "per_prompt_mean_se", "value_at_kl", "win_rate"]



def per_prompt_mean_se(values_PxN) -> tuple[float, float]:
    """Mean and standard error of ``[P, n]`` values with prompts as the unit: the mean of the P per-prompt means
    and sd(per-prompt means, ddof=1)/√P (NaN for P < 2)."""
    v = np.asarray(values_PxN, np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"per_prompt_mean_se: expected a non-empty [P, n] array, got shape {v.shape}")
    m = v.mean(1)
    if len(m) < 2:
        return float(m.mean()), math.nan
    c = m - m.mean()
    return float(m.mean()), float(np.sqrt((c @ c) / (len(m) - 1)) / math.sqrt(len(m)))


def win_rate(policy_scores_PxN, baseline_scores_PxM) -> dict[str, float]:
    """Win rate of the policy over the baseline, ties counting ½, with its standard error over prompts.

    Within prompt i every policy score is compared with every baseline score (n·m comparisons):
    w_i = (#wins + ½·#ties)/(n·m). Returns ``{"win_rate", "se", "wins", "ties", "losses", "comparisons",
    "prompts"}`` with win_rate = mean_i w_i, se = sd(w)/√P (NaN for one prompt), and the counts of outcomes
    summed over prompts.
    """
    a = np.asarray(policy_scores_PxN, np.float64)
    b = np.asarray(baseline_scores_PxM, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or a.size == 0 or b.size == 0:
        raise ValueError(f"win_rate: expected [P, n] and [P, m] scores, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("win_rate: scores must be finite (the judge returned NaN or inf)")
    diff = a[:, :, None] - b[:, None, :]
    wins, ties = (diff > 0).sum((1, 2)), (diff == 0).sum((1, 2))
    per = (wins + 0.5 * ties) / (a.shape[1] * b.shape[1])
    est, se = per_prompt_mean_se(per[:, None])
    n = int(diff[0].size * a.shape[0])
    return {"win_rate": est, "se": se, "wins": int(wins.sum()), "ties": int(ties.sum()),
            "losses": int(n - wins.sum() - ties.sum()), "comparisons": n, "prompts": int(a.shape[0])}


def mc_kl(policy_logps_PxN, ref_logps_PxN) -> dict[str, float]:
    """Monte-Carlo KL(π‖π_ref) from samples y ~ π: d = ln π(y) − ln π_ref(y) per sample ``[P, n]``.

    ``k1`` = mean d and ``k3`` = mean (exp(−d) − 1 + d) (Schulman's estimators, both unbiased for samples of π),
    each with the per-prompt standard error (:func:`per_prompt_mean_se`). Returns ``{"k1", "k1_se", "k3",
    "k3_se", "samples"}``.
    """
    lp = np.asarray(policy_logps_PxN, np.float64)
    ref = np.asarray(ref_logps_PxN, np.float64)
    if lp.shape != ref.shape or lp.ndim != 2:
        raise ValueError(f"mc_kl: expected two [P, n] arrays of one shape, got {lp.shape} and {ref.shape}")
    d = lp - ref
    k1, k1_se = per_prompt_mean_se(d)
    k3, k3_se = per_prompt_mean_se(np.expm1(-d) + d)
    return {"k1": k1, "k1_se": k1_se, "k3": k3, "k3_se": k3_se, "samples": int(d.size)}


def distinct_n(sequences, n: int) -> float:
    """Distinct-n (Li et al., 2016): the number of distinct n-grams over all ``sequences`` (lists of tokens)
    divided by the total number of n-grams; 0 when no sequence has n tokens."""
    if n < 1:
        raise ValueError(f"distinct_n: n={n} must be >= 1")
    grams = [tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def best_of_groups(scores_PxM, n: int) -> np.ndarray:
    """Best-of-n scores from samples: per prompt, the M samples split into M/n consecutive groups of n, and
    the best score of each group kept — ``[P, M/n]``, i.e. M/n independent draws of best-of-n decoding
    (judged by the same scores)."""
    s = np.asarray(scores_PxM, np.float64)
    if s.ndim != 2 or n < 1 or s.shape[1] % n or s.shape[1] == 0:
        raise ValueError(f"best_of_groups: scores of shape {s.shape} must be [P, M] with M a positive multiple of "
                         f"n={n}")
    return s.reshape(s.shape[0], s.shape[1] // n, n).max(-1)


def value_at_kl(kls, values, kl: float) -> float:
    """A metric at KL = ``kl`` along a training trajectory: ``kls[j]``, ``values[j]`` measured at successive
    checkpoints j; linear interpolation on the first segment whose KL range contains ``kl`` (the trajectory is
    read in training order, so a KL that is reached, left and reached again uses the first passage). NaN if no
    segment reaches ``kl``."""
    k = np.asarray(kls, np.float64)
    v = np.asarray(values, np.float64)
    if k.ndim != 1 or k.shape != v.shape or k.size == 0:
        raise ValueError(f"value_at_kl: kls and values must be 1-D of one length, got {k.shape} and {v.shape}")
    if k.size == 1 or kl == k[0]:
        return float(v[0]) if kl == k[0] else math.nan
    for j in range(k.size - 1):
        lo, hi = sorted((k[j], k[j + 1]))
        if lo <= kl <= hi:
            if hi == lo:
                return float(v[j])
            a = (kl - k[j]) / (k[j + 1] - k[j])
            return float(v[j] + a * (v[j + 1] - v[j]))
    return math.nan

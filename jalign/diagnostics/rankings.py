"""Ranking accuracy and likelihood over-optimisation indicators (pure functions of arrays, jit-able).

* Ranking accuracy (Chen et al., *Preference Learning Algorithms Do Not Learn Preference Rankings*, NeurIPS
  2024, arXiv 2405.19534): the fraction of pairs (x, y_w, y_l) with π(y_w|x) > π(y_l|x)
  (:func:`ranking_accuracy`); the *idealised* ranking accuracy of the exact DPO/RLHF optimum
  π* ∝ π_ref·exp(r*/β) under a Bradley–Terry truth with p = P(y_w ≻ y_l), for which
  ln π*(y_w) − ln π*(y_l) = ln π_ref(y_w) − ln π_ref(y_l) + logit(p)/β (:func:`idealized_ranking_accuracy`);
  and the DPO loss a pair must fall below before it is ranked right, −ln σ(β·(ln π_ref(y_l) − ln π_ref(y_w)))
  (:func:`dpo_loss_at_flip`).
* Over-optimisation indicators (Shi et al., *Understanding Likelihood Over-optimisation in Direct Alignment
  Algorithms*, arXiv 2410.11677), per position of the model's own generations: the top-k probability mass
  M_k = Σ_{i≤k} p_(i) (:func:`topk_mass`) and the entropy over the top-k tokens (:func:`topk_entropy`).

Reductions are in float32 (float64 stays float64). Arguments are validated only when concrete (``ValueError``
naming the argument); traced values pass unchecked, so every function is ``jax.jit``- and ``jax.vmap``-able
(``k`` and ``renormalize`` are static).
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np

from jalign.numerics import float_dtype, is_concrete

__all__ = [
    "dpo_loss_at_flip",
    "idealized_ranking_accuracy",
    "ranking_accuracy",
    "roc_auc",
    "roc_curve",
    "topk_entropy",
    "topk_mass",
]


def _same_shape(fn: str, names, arrays) -> None:
    shapes = [tuple(jnp.shape(a)) for a in arrays]
    if len(set(shapes)) != 1:
        detail = ", ".join(f"{n}={s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(f"{fn}: arguments must have the same shape, got {detail}")


def _check_beta(fn: str, beta) -> None:
    if is_concrete(beta):
        v = np.asarray(beta)
        if v.ndim != 0 or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{fn}: argument beta={beta!r} must be a finite scalar > 0")


def ranking_accuracy(chosen_logps, rejected_logps, *, chosen_lengths=None, rejected_lengths=None):
    """Ranking accuracy mean 1[ln π(y_w) > ln π(y_l)] (strict: a tie counts as wrong).

    With ``chosen_lengths`` and ``rejected_lengths`` the comparison is on length-normalised log-probs,
    ln π(y_w)/|y_w| > ln π(y_l)/|y_l|.

    Args:
      chosen_logps: ln π(y_w|x) summed over response tokens, any shape (e.g. ``[B]``).
      rejected_logps: ln π(y_l|x), same shape.
      chosen_lengths: optional |y_w| (> 0), same shape; must be given together with ``rejected_lengths``.
      rejected_lengths: optional |y_l| (> 0), same shape.

    Returns:
      The scalar fraction of pairs ranked right (mean over all entries).

    References:
      Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024
      (arXiv 2405.19534).

    >>> import jax.numpy as jnp
    >>> float(ranking_accuracy(jnp.array([-1.0, -5.0, -2.0]), jnp.array([-2.0, -3.0, -2.0])))
    0.3333333432674408
    """
    fn = "ranking_accuracy"
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError(
            f"{fn}: arguments chosen_lengths and rejected_lengths must be given together, got "
            f"chosen_lengths={'None' if chosen_lengths is None else 'an array'}, "
            f"rejected_lengths={'None' if rejected_lengths is None else 'an array'}"
        )
    dtype = float_dtype(chosen_logps, rejected_logps)
    w = jnp.asarray(chosen_logps).astype(dtype)
    l_ = jnp.asarray(rejected_logps).astype(dtype)
    if chosen_lengths is None:
        _same_shape(fn, ("chosen_logps", "rejected_logps"), (w, l_))
    else:
        _same_shape(fn, ("chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths"),
                    (w, l_, chosen_lengths, rejected_lengths))
        for name, n in (("chosen_lengths", chosen_lengths), ("rejected_lengths", rejected_lengths)):
            if is_concrete(n) and not np.all(np.asarray(n) > 0):
                raise ValueError(f"{fn}: argument {name} must be > 0, got {np.asarray(n)}")
        w = w / jnp.asarray(chosen_lengths).astype(dtype)
        l_ = l_ / jnp.asarray(rejected_lengths).astype(dtype)
    if w.size == 0:
        raise ValueError(f"{fn}: arguments chosen_logps / rejected_logps are empty (shape {tuple(w.shape)})")
    return jnp.mean((w > l_).astype(dtype))


def idealized_ranking_accuracy(ref_chosen_logps, ref_rejected_logps, pref_probs, beta):
    """Ranking accuracy of the exact DPO/RLHF optimum: mean 1[rp_w − rp_l + logit(p)/β > 0].

    Under a Bradley–Terry truth with p = P(y_w ≻ y_l) = σ(r*(y_w) − r*(y_l)), the optimum
    π* ∝ π_ref·exp(r*/β) has π*(y_w)/π*(y_l) = π_ref(y_w)/π_ref(y_l)·(p/(1 − p))^{1/β}; rp = ln π_ref(y).
    logit(p) = ln p − ln(1 − p) is evaluated as ``log(p) - log1p(-p)``. The comparison is strict.

    Args:
      ref_chosen_logps: rp_w = ln π_ref(y_w|x), any shape (e.g. ``[B]``).
      ref_rejected_logps: rp_l = ln π_ref(y_l|x), same shape.
      pref_probs: p = P(y_w ≻ y_l) ∈ (0, 1) (e.g. the fraction of annotators preferring y_w), same shape.
      beta: β > 0.

    Returns:
      The scalar idealised ranking accuracy.

    References:
      Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024
      (arXiv 2405.19534).

    >>> import jax.numpy as jnp
    >>> float(idealized_ranking_accuracy(jnp.array([-3.0]), jnp.array([-1.0]), jnp.array([0.9]), 1.0))
    1.0
    """
    fn = "idealized_ranking_accuracy"
    _same_shape(fn, ("ref_chosen_logps", "ref_rejected_logps", "pref_probs"),
                (ref_chosen_logps, ref_rejected_logps, pref_probs))
    _check_beta(fn, beta)
    if is_concrete(pref_probs):
        v = np.asarray(pref_probs)
        if not np.all((v > 0) & (v < 1)):
            raise ValueError(f"{fn}: argument pref_probs must lie in the open interval (0, 1), got {v}")
    dtype = float_dtype(ref_chosen_logps, ref_rejected_logps, pref_probs, beta)
    rw = jnp.asarray(ref_chosen_logps).astype(dtype)
    rl = jnp.asarray(ref_rejected_logps).astype(dtype)
    p = jnp.asarray(pref_probs).astype(dtype)
    if rw.size == 0:
        raise ValueError(f"{fn}: arguments are empty (shape {tuple(rw.shape)})")
    logit = jnp.log(p) - jnp.log1p(-p)
    return jnp.mean((rw - rl + logit / jnp.asarray(beta, dtype) > 0).astype(dtype))


def dpo_loss_at_flip(ref_chosen_logps, ref_rejected_logps, beta):
    """DPO loss of a pair at the moment it becomes ranked right: −ln σ(β·(rp_l − rp_w)).

    With h = (ln π(y_w) − rp_w) − (ln π(y_l) − rp_l), the pair is ranked right once h > m = rp_l − rp_w, and
    DPO's loss −ln σ(β·h) is then below −ln σ(β·m) (computed as ``-log_sigmoid``). For a pair the reference
    misranks by a large margin m > 0 this loss is already small before the flip — Chen et al.'s reason that
    DPO rarely flips such pairs.

    Args:
      ref_chosen_logps: rp_w = ln π_ref(y_w|x), ``[B]`` (any shape).
      ref_rejected_logps: rp_l = ln π_ref(y_l|x), same shape.
      beta: β > 0.

    Returns:
      Per-pair losses, same shape as the inputs (``[B]``).

    References:
      Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024
      (arXiv 2405.19534).

    >>> import jax.numpy as jnp
    >>> round(float(dpo_loss_at_flip(jnp.array([-2.0]), jnp.array([-2.0]), 0.1)[0]), 4)  # ln 2 at m = 0
    0.6931
    """
    fn = "dpo_loss_at_flip"
    _same_shape(fn, ("ref_chosen_logps", "ref_rejected_logps"), (ref_chosen_logps, ref_rejected_logps))
    _check_beta(fn, beta)
    dtype = float_dtype(ref_chosen_logps, ref_rejected_logps, beta)
    rw = jnp.asarray(ref_chosen_logps).astype(dtype)
    rl = jnp.asarray(ref_rejected_logps).astype(dtype)
    return -jax.nn.log_sigmoid(jnp.asarray(beta, dtype) * (rl - rw))


def roc_auc(scores, labels, mask=None):
    """Area under the ROC curve: P(s₊ > s₋) + ½·P(s₊ = s₋) over all (positive, negative) pairs (Mann–Whitney).

    Computed from mid-ranks in O(n log n): AUC = (Σ_{i positive} rank_i − n₊(n₊ + 1)/2)/(n₊·n₋), where rank_i is
    the (1-based) mid-rank of s_i among the entries in ``mask``. Used to ask how well a per-pair score (e.g.
    :func:`dpo_loss_at_flip`) predicts a binary outcome (e.g. "the pair has flipped").

    Args:
      scores: finite scores ``[n]`` (a higher score predicts a positive).
      labels: booleans ``[n]`` (True = positive).
      mask: optional booleans ``[n]``: only these entries count (default: all).

    Returns:
      The scalar AUC in [0, 1]; nan when the masked entries lack a positive or a negative.

    References:
      Hanley & McNeil, The meaning and use of the area under a ROC curve, Radiology 1982.

    >>> import jax.numpy as jnp
    >>> float(roc_auc(jnp.array([0.9, 0.1, 0.5, 0.5]), jnp.array([True, False, True, False])))
    0.875
    """
    fn = "roc_auc"
    s = jnp.asarray(scores)
    s = s.astype(float_dtype(s))
    lab = jnp.asarray(labels).astype(bool)
    m = jnp.ones(s.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    _same_shape(fn, ("scores", "labels", "mask"), (s, lab, m))
    if s.ndim != 1:
        raise ValueError(f"{fn}: argument scores must be 1-D, got shape {tuple(s.shape)}")
    if is_concrete(scores) and not np.all(np.isfinite(np.asarray(s))):
        raise ValueError(f"{fn}: argument scores must be finite")
    srt = jnp.sort(jnp.where(m, s, jnp.inf))
    lo = jnp.searchsorted(srt, s, side="left").astype(s.dtype)
    hi = jnp.searchsorted(srt, s, side="right").astype(s.dtype)
    rank = 0.5 * (lo + hi + 1.0)
    pos, neg = m & lab, m & ~lab
    n_pos, n_neg = jnp.sum(pos).astype(s.dtype), jnp.sum(neg).astype(s.dtype)
    u = jnp.sum(jnp.where(pos, rank, 0.0)) - n_pos * (n_pos + 1.0) / 2.0
    den = n_pos * n_neg
    return jnp.where(den > 0, u / jnp.where(den > 0, den, 1.0), jnp.nan)


def roc_curve(scores, labels):
    """The ROC curve (false- and true-positive rates at every threshold), NumPy (not jit-able).

    Args:
      scores: ``[n]`` scores (higher predicts positive).
      labels: ``[n]`` booleans, with at least one positive and one negative.

    Returns:
      ``(fpr, tpr)``, float64 arrays from (0, 0) to (1, 1), one point per distinct score (ties move both).
    """
    s = np.asarray(scores, np.float64)
    lab = np.asarray(labels).astype(bool)
    if s.shape != lab.shape or s.ndim != 1:
        raise ValueError(f"roc_curve: arguments scores {s.shape} and labels {lab.shape} must be equal 1-D shapes")
    n_pos, n_neg = int(lab.sum()), int((~lab).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_curve: argument labels needs a positive and a negative, got {n_pos} and {n_neg}")
    order = np.argsort(-s, kind="stable")
    s, lab = s[order], lab[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(lab)[last]
    fp = np.cumsum(~lab)[last]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def _topk_logits(fn: str, logits, k):
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"{fn}: argument k={k!r} must be a Python int") from None
    x = jnp.asarray(logits)
    if x.ndim < 1:
        raise ValueError(f"{fn}: argument logits must have a vocabulary axis [..., V], got shape {tuple(x.shape)}")
    vocab = x.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"{fn}: argument k={k} must satisfy 1 <= k <= V = {vocab}")
    x = x.astype(float_dtype(x))
    top = jax.lax.top_k(x, k)[0]
    return x, top, jax.nn.logsumexp(x, axis=-1)


def topk_mass(logits, k):
    """Top-k probability mass M_k = Σ_{i≤k} p_(i), p = softmax(logits) (p_(1) ≥ p_(2) ≥ …).

    Evaluated as exp(logsumexp(top-k logits) − logsumexp(logits)) in float32 (float64 stays float64); ties at
    the k-th place do not matter. M_V = 1. Shi et al. report a *decreasing* M_k on the model's own generations
    as an indicator of harmful over-optimisation.

    Args:
      logits: ``[..., V]`` next-token logits (any float dtype).
      k: number of top tokens, a Python int with 1 ≤ k ≤ V.

    Returns:
      M_k, ``[...]``.

    References:
      Shi et al., Understanding Likelihood Over-optimisation in Direct Alignment Algorithms (arXiv 2410.11677).

    >>> import jax.numpy as jnp
    >>> round(float(topk_mass(jnp.log(jnp.array([0.5, 0.3, 0.2])), 2)), 4)
    0.8
    """
    _, top, lse = _topk_logits("topk_mass", logits, k)
    return jnp.exp(jax.nn.logsumexp(top, axis=-1) - lse)


def topk_entropy(logits, k, *, renormalize=True):
    """Entropy over the k most probable tokens (an over-optimisation indicator of Shi et al.).

    With p = softmax(logits), T the top-k tokens and M_k = Σ_{i∈T} p_i:

    * ``renormalize=True`` (default): the entropy of the top-k distribution q_i = p_i/M_k,
      H_k = −Σ_{i∈T} q_i ln q_i ∈ [0, ln k];
    * ``renormalize=False``: the top-k part of the full entropy, −Σ_{i∈T} p_i ln p_i = M_k·(H_k − ln M_k).

    At k = V both equal the full entropy. The paper card leaves open whether the paper renormalises; the
    default is the renormalised entropy (bounded by ln k and unaffected by mass moving out of the top k, which
    :func:`topk_mass` measures separately). Computed in float32 (float64 stays float64) from the top-k logits
    z_T: ln q_i = z_i − logsumexp(z_T) (ln p_i = z_i − logsumexp(z) when not renormalised); tokens with
    probability 0 contribute 0.

    Args:
      logits: ``[..., V]`` next-token logits (any float dtype).
      k: number of top tokens, a Python int with 1 ≤ k ≤ V.
      renormalize: renormalise the top-k probabilities to sum 1 first (see above).

    Returns:
      The entropy in nats, ``[...]``.

    References:
      Shi et al., Understanding Likelihood Over-optimisation in Direct Alignment Algorithms (arXiv 2410.11677).

    >>> import jax.numpy as jnp
    >>> round(float(topk_entropy(jnp.log(jnp.array([0.4, 0.4, 0.2])), 2)), 4)  # ln 2
    0.6931
    """
    _, top, lse = _topk_logits("topk_entropy", logits, k)
    norm = jax.nn.logsumexp(top, axis=-1) if renormalize else lse
    logq = top - norm[..., None]
    # Tokens of probability 0 (logit −inf, e.g. a masked vocabulary) contribute 0, not nan.
    return -jnp.sum(jnp.where(jnp.isfinite(logq), jnp.exp(logq) * logq, 0.0), axis=-1)

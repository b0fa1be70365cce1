"""Pairwise direct-alignment losses with a reference model (the DPO family, TRL ``DPOTrainer.loss_type``).

Notation (per example): lp_w, lp_l = ``chosen_logps``, ``rejected_logps`` (summed over response tokens);
rp_w, rp_l the reference's; n_w, n_l the response lengths; r_w = lp_w − rp_w, r_l = lp_l − rp_l;
h = r_w − r_l (the implicit-reward margin over β); σ the logistic sigmoid; ε = ``label_smoothing``.
All losses are per example (shape ``[B]``), no reduction; inputs of any float dtype are computed in float32
(float64 stays float64). Every loss is written with ``log_sigmoid``/``softplus``-type primitives so that the
loss *and* its gradient stay finite for margins up to |βh| = 1e4 in float32 and bfloat16.

Formulas follow TRL's newest ``DPOTrainer`` (``trl/trainer/dpo_trainer.py``) where the name is a TRL
``loss_type``; conventions where sources differ are stated in each docstring and in the registry ``notes``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.nn import log_sigmoid

from jalign.losses._common import as_float, lengths, logratios, smoothed_logistic, sort_batch
from jalign.losses._registry import register
from jalign.losses._types import PairwiseLogps

_DPO = "Rafailov et al., Direct Preference Optimization, NeurIPS 2023 (arXiv 2305.18290)"
_CDPO = "Mitchell, A note on DPO with noisy preferences and relationship to IPO (cDPO), 2023"
_IPO = "Azar et al., A General Theoretical Paradigm to Understand Learning from Human Preferences, AISTATS 2024 (arXiv 2310.12036)"
_SLIC = "Zhao et al., SLiC-HF: Sequence Likelihood Calibration with Human Feedback (arXiv 2305.10425)"
_EXO = "Ji et al., Towards Efficient Exact Optimization of Language Model Alignment (EXO), ICML 2024 (arXiv 2402.00856)"
_NCA = "Chen et al., Noise Contrastive Alignment of Language Models with Explicit Rewards (NCA), NeurIPS 2024 (arXiv 2402.05369)"
_ROBUST = "Chowdhury et al., Provably Robust DPO: Aligning Language Models with Noisy Feedback, ICML 2024 (arXiv 2403.00409)"
_BCO = "Jung et al., Binary Classifier Optimization for Large Language Model Alignment (arXiv 2404.04656)"
_SPPO = "Wu et al., Self-Play Preference Optimization for Language Model Alignment (arXiv 2405.00675)"
_AOT = "Melnyk et al., Distributional Preference Alignment of LLMs via Optimal Transport (AOT), NeurIPS 2024 (arXiv 2406.05882)"
_APO = "D'Oosterlinck et al., Anchored Preference Optimization and Contrastive Revisions (APO) (arXiv 2408.06266)"
_DISCOPOP = "Chris Lu et al., Discovering Preference Optimization Algorithms with and for Large Language Models (DiscoPOP), NeurIPS 2024 (arXiv 2406.08414)"
_SIMPO = "Meng et al., SimPO: Simple Preference Optimization with a Reference-Free Reward, NeurIPS 2024 (arXiv 2405.14734)"
_RDPO = "Park et al., Disentangling Length from Quality in Direct Preference Optimization (R-DPO), ACL Findings 2024 (arXiv 2403.19159)"
_DPOP = "Pal et al., Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive (arXiv 2402.13228)"
_RPO = (
    "Pang et al., Iterative Reasoning Preference Optimization (arXiv 2404.19733); Liu et al., Provably Mitigating "
    "Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer (arXiv 2405.16436)"
)

_LENGTHS = ("chosen_lengths", "rejected_lengths")


def margin(batch: PairwiseLogps):
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)), in float32 or wider."""
    r_w, r_l = logratios(batch)
    return r_w - r_l


@register(
    "sigmoid",
    aliases=("dpo",),
    formula="-(1-ε)·log σ(β·h) - ε·log σ(-β·h)",
    paper=_DPO,
    notes=(
        "TRL's loss_type='sigmoid'. label_smoothing=ε (default 0) gives cDPO; the newest TRL dropped ε from "
        "'sigmoid' (it is identical at the default ε=0). Also registered as 'cdpo' with ε=0.1."
    ),
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
    return smoothed_logistic(beta * margin(batch), label_smoothing)


@register(
    "cdpo",
    formula="-(1-ε)·log σ(β·h) - ε·log σ(-β·h)",
    paper=_CDPO,
    notes="Same function as 'sigmoid' but with a non-zero default ε=0.1 (the cDPO report fixes no value).",
)
def cdpo(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 0.1):
    """Conservative DPO: the DPO loss against labels flipped with probability ε.

    ``-(1-ε)·log σ(βh) - ε·log σ(-βh)``. Its minimiser in h is finite: βh* = log((1-ε)/ε).

    Args:
      batch: :class:`PairwiseLogps` with reference fields.
      beta: β > 0.
      label_smoothing: ε ∈ [0, ½) (default 0.1).

    References:
      Mitchell, A note on DPO with noisy preferences & relationship to IPO, 2023 (cDPO).
    """
    return smoothed_logistic(beta * margin(batch), label_smoothing)


@register("hinge", formula="max(0, 1 - β·h)", paper=_SLIC, notes="TRL's loss_type='hinge' (SLiC with a reference).")
def hinge(batch: PairwiseLogps, *, beta: float = 0.1):
    """Hinge loss on the reference-normalised margin (TRL ``loss_type="hinge"``): ``max(0, 1 − βh)``.

    The gradient w.r.t. h is −β where βh < 1 and 0 otherwise (0 at the kink, JAX's ``relu`` convention).

    References:
      Zhao et al., SLiC-HF: Sequence Likelihood Calibration with Human Feedback, 2023.
    """
    return jax.nn.relu(1.0 - beta * margin(batch))


def _ipo_fields(hp):
    return _LENGTHS if hp.get("ipo_average", True) else ()


@register(
    "ipo",
    formula="(h̄ - 1/(2β))², h̄ = r_w/n_w - r_l/n_l (ipo_average=True) or h (False)",
    paper=_IPO,
    extra_fields=_ipo_fields,
    notes=(
        "TRL averages the log-ratios over response tokens (policy and reference alike), confirmed with the IPO "
        "authors; OpenRLHF and the paper's notation use sums. ipo_average=True (default) is TRL's convention."
    ),
)
def ipo(batch: PairwiseLogps, *, beta: float = 0.1, ipo_average: bool = True):
    """Identity Preference Optimisation (TRL ``loss_type="ipo"``): ``(h̄ − 1/(2β))²``.

    With ``ipo_average=True`` (TRL's convention) h̄ = r_w/n_w − r_l/n_l uses log-ratios averaged over the
    response tokens, so lengths are required; with ``False`` h̄ = h (summed log-probs, OpenRLHF's convention).
    β is the paper's τ; the loss is minimised at h̄ = 1/(2β).

    References:
      Azar et al., A General Theoretical Paradigm to Understand Learning from Human Preferences, 2024, Eq. 17.
    """
    if ipo_average:
        r_w, r_l = logratios(batch)
        n_w, n_l = lengths(batch)
        h = r_w / n_w - r_l / n_l
    else:
        h = margin(batch)
    return jnp.square(h - 1.0 / (2.0 * beta))


@register(
    "exo_pair",
    formula="σ(βh)·[log σ(βh) - log(1-ε)] + σ(-βh)·[log σ(-βh) - log ε]",
    paper=_EXO,
    hparam_rules={"label_smoothing": (lambda v: 0 < v < 0.5, "in (0, 0.5) for exo_pair (log ε appears)")},
    notes=(
        "TRL's loss_type='exo_pair' = KL(p_θ || p_ε) over {y_w, y_l}, p_ε = (1-ε, ε). ε=0 makes the loss "
        "infinite, so the default here is ε=1e-3 (the value older TRL substituted for label_smoothing=0)."
    ),
)
def exo_pair(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 1e-3):
    """Pairwise EXO (TRL ``loss_type="exo_pair"``): reverse KL from the policy's pair distribution to (1−ε, ε).

    With q_w = σ(βh), q_l = σ(−βh): ``q_w·(log q_w − log(1−ε)) + q_l·(log q_l − log ε)``. q is formed as
    exp(log σ(·)) so saturated terms are exact zeros times finite logs.

    Args:
      label_smoothing: ε ∈ (0, ½); default 1e-3 (ε = 0 gives an infinite loss).

    References:
      Ji et al., Towards Efficient Exact Optimization of Language Model Alignment, ICML 2024, Eq. 16.
    """
    z = beta * margin(batch)
    log_qw, log_ql = log_sigmoid(z), log_sigmoid(-z)
    eps = label_smoothing
    return jnp.exp(log_qw) * (log_qw - jnp.log1p(-eps)) + jnp.exp(log_ql) * (log_ql - jnp.log(eps))


@register(
    "nca_pair",
    formula="-log σ(β·r_w) - ½·log σ(-β·r_w) - ½·log σ(-β·r_l)",
    paper=_NCA,
    notes="TRL's loss_type='nca_pair'.",
)
def nca_pair(batch: PairwiseLogps, *, beta: float = 0.1):
    """Pairwise NCA (TRL ``loss_type="nca_pair"``): ``−log σ(βr_w) − ½ log σ(−βr_w) − ½ log σ(−βr_l)``.

    References:
      Chen et al., Noise Contrastive Alignment of Language Models with Explicit Rewards, 2024.
    """
    r_w, r_l = logratios(batch)
    return -log_sigmoid(beta * r_w) - 0.5 * log_sigmoid(-beta * r_w) - 0.5 * log_sigmoid(-beta * r_l)


@register(
    "robust",
    formula="[-(1-ε)·log σ(β·h) + ε·log σ(-β·h)] / (1 - 2ε)",
    paper=_ROBUST,
    notes="TRL's loss_type='robust' (rDPO, unbiased under label-flip rate ε).",
)
def robust(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """Robust DPO (TRL ``loss_type="robust"``): an unbiased estimate of DPO under label flips with rate ε.

    ``[−(1−ε)·log σ(βh) + ε·log σ(−βh)] / (1 − 2ε)``. Unlike cDPO it is unbounded below in h for ε > 0.

    References:
      Chowdhury et al., Provably Robust DPO: Aligning Language Models with Noisy Feedback, ICML 2024.
    """
    z = beta * margin(batch)
    eps = label_smoothing
    return (-(1.0 - eps) * log_sigmoid(z) + eps * log_sigmoid(-z)) / (1.0 - 2.0 * eps)


@register(
    "bco_pair",
    formula="-log σ(β·r_w - δ) - log σ(-(β·r_l - δ)), δ = reward_shift (None: detached batch mean of β·r)",
    paper=_BCO,
    batch_coupled=False,
    notes=(
        "Newest TRL's 'bco_pair' has no reward shift (δ = 0, the default here). The BCO paper and older TRL "
        "subtract a running mean δ of the rewards; pure-functionally, reward_shift=None uses the detached "
        "batch mean of {β·r_w, β·r_l} (then the loss is batch-coupled), or pass the running mean yourself."
    ),
)
def bco_pair(batch: PairwiseLogps, *, beta: float = 0.1, reward_shift: float | None = 0.0):
    """Pairwise Binary Classifier Optimisation (TRL ``loss_type="bco_pair"``).

    ``−log σ(βr_w − δ) − log σ(−(βr_l − δ))``: logistic classification of the chosen response as positive and
    the rejected one as negative with the implicit reward βr.

    Args:
      reward_shift: δ. ``0.0`` (default) is the newest TRL (no shift). ``None`` uses the detached
        (``stop_gradient``) mean of all 2B rewards {βr_w, βr_l} in the batch, a one-batch stand-in for the
        running mean of the BCO paper / older TRL; the loss is then batch-coupled. A float (e.g. a running
        mean kept by the training loop) is used as is.

    References:
      Jung et al., Binary Classifier Optimization for Large Language Model Alignment, 2024.
    """
    r_w, r_l = logratios(batch)
    rw, rl = beta * r_w, beta * r_l
    if reward_shift is None:
        delta = jax.lax.stop_gradient(0.5 * (jnp.mean(rw) + jnp.mean(rl)))
    else:
        delta = reward_shift
    return -log_sigmoid(rw - delta) - log_sigmoid(-(rl - delta))


@register(
    "sppo_hard",
    formula="(r_w - 1/(2β))² + (r_l + 1/(2β))²",
    paper=_SPPO,
    notes="TRL's loss_type='sppo_hard': SPPO with hard win probabilities P(y_w ≻ y_l) = 1, on summed log-ratios.",
)
def sppo_hard(batch: PairwiseLogps, *, beta: float = 0.1):
    """SPPO with hard labels (TRL ``loss_type="sppo_hard"``): ``(r_w − 1/(2β))² + (r_l + 1/(2β))²``.

    SPPO regresses βr(y) onto P(y wins) − ½; the hard version sets P = 1 for the winner and 0 for the loser.

    References:
      Wu et al., Self-Play Preference Optimization for Language Model Alignment, 2024, Eq. 4.7.
    """
    r_w, r_l = logratios(batch)
    c = 0.5 / beta
    return jnp.square(r_w - c) + jnp.square(r_l + c)


@register(
    "aot",
    formula="-(1-ε)·log σ(β·d_(i)) - ε·log σ(-β·d_(i)), d_(i) = sort(lp_w - lp_l)_(i) - sort(rp_w - rp_l)_(i)",
    paper=_AOT,
    batch_coupled=True,
    notes=(
        "TRL's loss_type='aot' (paired AOT): the policy and reference log-ratio differences are sorted "
        "separately over the batch, so output i is the loss of the i-th order statistic, not of example i."
    ),
)
def aot(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """Alignment via Optimal Transport, paired (TRL ``loss_type="aot"``).

    First-order stochastic dominance of the policy's log-ratio distribution over the reference's, via the
    1-D optimal transport (sorting) plan: d = sort(lp_w − lp_l) − sort(rp_w − rp_l) over the batch, then the
    smoothed logistic loss on βd. Batch-coupled: entry i of the result belongs to the i-th smallest value,
    not to example i; its mean is the AOT objective.

    References:
      Melnyk et al., Distributional Preference Alignment of LLMs via Optimal Transport, NeurIPS 2024.
    """
    pol = as_float(batch.chosen_logps) - as_float(batch.rejected_logps)
    ref = as_float(batch.ref_chosen_logps) - as_float(batch.ref_rejected_logps)
    d = sort_batch(pol) - sort_batch(ref)
    return smoothed_logistic(beta * d, label_smoothing)


@register(
    "aot_unpaired",
    formula="-(1-ε)·log σ(β·d_(i)) - ε·log σ(-β·d_(i)), d_(i) = sort(r_w)_(i) - sort(r_l)_(i)",
    paper=_AOT,
    batch_coupled=True,
    notes=(
        "TRL's loss_type='aot_unpaired': chosen and rejected log-ratios are sorted separately over the batch "
        "(pairing is ignored), so output i belongs to the i-th order statistic."
    ),
)
def aot_unpaired(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    """Alignment via Optimal Transport, unpaired (TRL ``loss_type="aot_unpaired"``).

    d = sort(r_w) − sort(r_l) over the batch, then ``−(1−ε)·log σ(βd) − ε·log σ(−βd)``. Batch-coupled.

    References:
      Melnyk et al., Distributional Preference Alignment of LLMs via Optimal Transport, NeurIPS 2024.
    """
    r_w, r_l = logratios(batch)
    d = sort_batch(r_w) - sort_batch(r_l)
    return smoothed_logistic(beta * d, label_smoothing)


@register(
    "apo_zero",
    formula="1 - σ(β·r_w) + σ(β·r_l)",
    paper=_APO,
    notes="TRL's loss_type='apo_zero' (Eq. 7): raise chosen, lower rejected likelihood.",
)
def apo_zero(batch: PairwiseLogps, *, beta: float = 0.1):
    """Anchored Preference Optimisation, APO-zero (TRL ``loss_type="apo_zero"``): ``1 − σ(βr_w) + σ(βr_l)``.

    Use when the chosen outputs are better than the model's own outputs.

    References:
      D'Oosterlinck et al., Anchored Preference Optimization and Contrastive Revisions, 2024, Eq. 7.
    """
    r_w, r_l = logratios(batch)
    return 1.0 - jax.nn.sigmoid(beta * r_w) + jax.nn.sigmoid(beta * r_l)


@register(
    "apo_down",
    formula="σ(β·r_w) + 1 - σ(β·h)",
    paper=_APO,
    notes="TRL's loss_type='apo_down' (Eq. 8): lower both, the rejected more.",
)
def apo_down(batch: PairwiseLogps, *, beta: float = 0.1):
    """Anchored Preference Optimisation, APO-down (TRL ``loss_type="apo_down"``): ``σ(βr_w) + 1 − σ(βh)``.

    Use when the chosen outputs are worse than the model's own outputs.

    References:
      D'Oosterlinck et al., Anchored Preference Optimization and Contrastive Revisions, 2024, Eq. 8.
    """
    r_w, _ = logratios(batch)
    return jax.nn.sigmoid(beta * r_w) + 1.0 - jax.nn.sigmoid(beta * margin(batch))


@register(
    "discopop",
    formula="-log σ(β·h)·(1 - σ(β·h/τ)) + exp(-β·h)·σ(β·h/τ)",
    paper=_DISCOPOP,
    notes=(
        "TRL's loss_type='discopop' (log-ratio modulated loss, Eq. 5), τ = discopop_tau. Computed as "
        "σ(-z/τ)·softplus(-z) + exp(-z + log σ(z/τ)), z = βh, which is finite for all z when τ < 1."
    ),
)
def discopop(batch: PairwiseLogps, *, beta: float = 0.1, discopop_tau: float = 0.05):
    """DiscoPOP / log-ratio modulated loss (TRL ``loss_type="discopop"``).

    With z = βh and m = σ(z/τ): ``(1 − m)·(−log σ(z)) + m·exp(−z)`` — a logistic loss for z ≪ 0 blended into
    an exponential loss for z ≫ 0. ``1 − m`` is computed as σ(−z/τ) and ``m·exp(−z)`` as
    ``exp(−z + log σ(z/τ))`` so neither overflows; for τ < 1 (default 0.05) loss and gradient are finite for
    every z (for τ ≥ 1 the exponential term genuinely overflows at very negative z).

    References:
      Lu et al., Discovering Preference Optimization Algorithms with and for LLMs, NeurIPS 2024, Eq. 5.
    """
    z = beta * margin(batch)
    tau = discopop_tau
    return jax.nn.sigmoid(-z / tau) * jax.nn.softplus(-z) + jnp.exp(-z + log_sigmoid(z / tau))


@register(
    "sigmoid_norm",
    formula="-log σ(β·(r_w/n_w - r_l/n_l))",
    paper=_SIMPO,
    needs_lengths=True,
    notes=(
        "TRL's loss_type='sigmoid_norm': the DPO loss on log-ratios averaged over response tokens (SimPO's "
        "length normalisation, but keeping the reference model)."
    ),
)
def sigmoid_norm(batch: PairwiseLogps, *, beta: float = 0.1):
    """Length-normalised DPO (TRL ``loss_type="sigmoid_norm"``): ``−log σ(β·(r_w/n_w − r_l/n_l))``.

    References:
      Meng et al., SimPO, NeurIPS 2024 (the length normalisation); Rafailov et al., DPO, 2023.
    """
    r_w, r_l = logratios(batch)
    n_w, n_l = lengths(batch)
    return -log_sigmoid(beta * (r_w / n_w - r_l / n_l))


@register(
    "rdpo",
    formula="-log σ(β·h - α·(n_w - n_l))",
    paper=_RDPO,
    needs_lengths=True,
    notes="α (alpha) has no canonical default; 0.01 here. α > 0 penalises a chosen response longer than the rejected.",
)
def rdpo(batch: PairwiseLogps, *, beta: float = 0.1, alpha: float = 0.01):
    """Length-regularised DPO (R-DPO): ``−log σ(βh − α·(n_w − n_l))``.

    References:
      Park et al., Disentangling Length from Quality in Direct Preference Optimization, 2024, Eq. 9.
    """
    n_w, n_l = lengths(batch)
    return -log_sigmoid(beta * margin(batch) - alpha * (n_w - n_l))


@register(
    "dpop",
    formula="-log σ(β·(h - λ·max(0, rp_w - lp_w)))",
    paper=_DPOP,
    notes="DPO-Positive (Smaug); λ = lambda_ (paper uses 50 on math data, 5 otherwise).",
)
def dpop(batch: PairwiseLogps, *, beta: float = 0.1, lambda_: float = 50.0):
    """DPO-Positive (Smaug): ``−log σ(β·(h − λ·max(0, log π_ref(y_w) − log π(y_w))))``.

    The penalty is active only while the policy puts less mass on y_w than the reference does.

    References:
      Pal et al., Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive, 2024, Eq. 3.
    """
    r_w, _ = logratios(batch)
    return -log_sigmoid(beta * (margin(batch) - lambda_ * jax.nn.relu(-r_w)))


@register(
    "rpo",
    formula="-log σ(β·h) + α·(-lp_w/n_w)",
    paper=_RPO,
    needs_lengths=True,
    notes=(
        "TRL's rpo_alpha (DPO + α·per-token NLL of the chosen response). TRL's default rpo_alpha=None means "
        "off; the RPO paper recommends α=1.0, the default here."
    ),
)
def rpo(batch: PairwiseLogps, *, beta: float = 0.1, rpo_alpha: float = 1.0):
    """DPO regularised by the SFT loss on the chosen response (RPO; TRL's ``rpo_alpha``).

    ``−log σ(βh) + α·(−lp_w/n_w)``; the NLL is averaged over the chosen response's tokens.

    References:
      Pang et al., Iterative Reasoning Preference Optimization, 2024; Liu et al., Provably Mitigating
      Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer, 2024.
    """
    n_w, _ = lengths(batch)
    return -log_sigmoid(beta * margin(batch)) + rpo_alpha * (-as_float(batch.chosen_logps) / n_w)

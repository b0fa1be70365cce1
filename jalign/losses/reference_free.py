"""Pairwise losses without a reference model: SFT, CPO, SimPO, ORPO, SLiC-HF, RRHF.

Notation as in :mod:`jalign.losses.pairwise`: lp_w, lp_l summed response log-probs, n_w, n_l lengths.
The reference fields of the batch are neither read nor validated. "NLL" of a response is stated per loss:
per-token average (−lp/n, what TRL's trainers compute) or summed (−lp, the SLiC-HF and RRHF papers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.nn import log_sigmoid

from jalign.losses._common import as_float, lengths, log1mexp, smoothed_logistic
from jalign.losses._registry import register
from jalign.losses._types import PairwiseLogps

_CPO = "Xu et al., Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in Machine Translation, ICML 2024 (arXiv 2401.08417)"
_SIMPO = "Meng et al., SimPO: Simple Preference Optimization with a Reference-Free Reward, NeurIPS 2024 (arXiv 2405.14734)"
_ORPO = "Hong et al., ORPO: Monolithic Preference Optimization without Reference Model, EMNLP 2024 (arXiv 2403.07691)"
_SLIC = "Zhao et al., SLiC-HF: Sequence Likelihood Calibration with Human Feedback (arXiv 2305.10425)"
_RRHF = "Yuan et al., RRHF: Rank Responses to Align Language Models with Human Feedback, NeurIPS 2023 (arXiv 2304.05302)"
_SFT = "Supervised fine-tuning on the chosen response (TRL DPOTrainer loss_type='sft')"

# ORPO: the per-token average log-prob is clamped to <= -ORPO_MIN_GAP so that log(1 - p) stays finite
# when p = exp(lp/n) rounds to 1.
ORPO_MIN_GAP = 1e-6


@register(
    "sft",
    formula="-lp_w / n_w",
    paper=_SFT,
    needs_reference=False,
    needs_lengths=True,
    notes=(
        "Per-example token-averaged NLL of the chosen response. TRL's 'sft' is the token-mean over the whole "
        "batch, Σ(-lp_w)/Σn_w, broadcast to every example; the two agree when all lengths are equal."
    ),
)
def sft(batch: PairwiseLogps):
    """Negative log-likelihood of the chosen response per token: ``−lp_w / n_w``.

    TRL's ``loss_type="sft"`` averages over all chosen tokens in the batch instead (Σ −lp_w / Σ n_w); this
    per-example form keeps the library's "per-example losses, reduction by the caller" contract.
    """
    n_w, _ = lengths(batch)
    return -as_float(batch.chosen_logps) / n_w


@register(
    "cpo",
    formula="-(1-ε)·log σ(β·(lp_w - lp_l)) - ε·log σ(-β·(lp_w - lp_l)) + α·(-lp_w/n_w)",
    paper=_CPO,
    needs_reference=False,
    needs_lengths=True,
    notes="TRL CPOTrainer (loss_type='sigmoid') names and defaults: beta=0.1, label_smoothing=0, cpo_alpha=1.0; NLL per token.",
)
def cpo(batch: PairwiseLogps, *, beta: float = 0.1, label_smoothing: float = 0.0, cpo_alpha: float = 1.0):
    """Contrastive Preference Optimisation: reference-free DPO plus the chosen response's NLL.

    ``−(1−ε)·log σ(β·(lp_w − lp_l)) − ε·log σ(−β·(lp_w − lp_l)) + α·(−lp_w/n_w)`` with α = ``cpo_alpha``.

    References:
      Xu et al., Contrastive Preference Optimization, ICML 2024, Eq. 3-6.
    """
    lp_w, lp_l = as_float(batch.chosen_logps), as_float(batch.rejected_logps)
    n_w, _ = lengths(batch)
    return smoothed_logistic(beta * (lp_w - lp_l), label_smoothing) + cpo_alpha * (-lp_w / n_w)


@register(
    "simpo",
    formula="-(1-ε)·log σ(β·(lp_w/n_w - lp_l/n_l) - γ) - ε·log σ(-(β·(lp_w/n_w - lp_l/n_l) - γ))",
    paper=_SIMPO,
    needs_reference=False,
    needs_lengths=True,
    notes=(
        "γ is the absolute target margin (the paper's γ; TRL's CPOTrainer divides its simpo_gamma by β first, "
        "giving the same formula). Defaults β=2.0, γ=1.0 follow the SimPO repository (gamma_beta_ratio=0.5)."
    ),
)
def simpo(batch: PairwiseLogps, *, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0):
    """SimPO: length-normalised, reference-free margin loss with target margin γ.

    ``−log σ(β·(lp_w/n_w − lp_l/n_l) − γ)`` (with optional label smoothing ε as in the SimPO code).

    References:
      Meng et al., SimPO: Simple Preference Optimization with a Reference-Free Reward, NeurIPS 2024, Eq. 6.
    """
    n_w, n_l = lengths(batch)
    z = beta * (as_float(batch.chosen_logps) / n_w - as_float(batch.rejected_logps) / n_l) - gamma
    return smoothed_logistic(z, label_smoothing)


def _log_odds(avg_logp):
    """log(p/(1−p)) for p = exp(a), a ≤ 0, with a clamped to ≤ −ORPO_MIN_GAP."""
    a = jnp.minimum(avg_logp, -ORPO_MIN_GAP)
    return a - log1mexp(a)


@register(
    "orpo",
    formula="-lp_w/n_w - λ·log σ(log odds(p_w) - log odds(p_l)), p = exp(lp/n), odds(p) = p/(1-p)",
    paper=_ORPO,
    needs_reference=False,
    needs_lengths=True,
    notes=(
        "λ is named beta as in TRL's ORPOConfig (default 0.1). p uses per-token averaged log-probs as in the "
        "paper and TRL. log(1-p) is computed stably; lp/n is clamped at -1e-6 (p = 1 has infinite odds)."
    ),
)
def orpo(batch: PairwiseLogps, *, beta: float = 0.1):
    """Odds-Ratio Preference Optimisation: SFT plus a log-odds-ratio penalty, no reference model.

    ``−lp_w/n_w − λ·log σ(log odds(p_w) − log odds(p_l))`` where p = exp(lp/n) is the per-token geometric
    mean probability and log odds(p) = log p − log(1 − p). λ is called ``beta`` (TRL's ORPOConfig name).
    Average log-probs above −1e-6 are clamped there (odds → ∞ as p → 1).

    References:
      Hong et al., ORPO: Monolithic Preference Optimization without Reference Model, EMNLP 2024, Eq. 6-7.
    """
    n_w, n_l = lengths(batch)
    a_w = as_float(batch.chosen_logps) / n_w
    a_l = as_float(batch.rejected_logps) / n_l
    return -a_w - beta * log_sigmoid(_log_odds(a_w) - _log_odds(a_l))


@register(
    "slic",
    formula="max(0, δ - lp_w + lp_l) + λ·(-lp_w)",
    paper=_SLIC,
    needs_reference=False,
    notes=(
        "SLiC-HF calibration loss with the chosen response as the regularisation target y_ref (sequence "
        "log-probs, summed, as in the paper). TRL's 'hinge' is the reference-normalised variant."
    ),
)
def slic(batch: PairwiseLogps, *, delta: float = 1.0, lambda_: float = 0.1):
    """SLiC-HF: rank calibration hinge plus cross-entropy regularisation on the chosen response.

    ``max(0, δ − lp_w + lp_l) − λ·lp_w`` (summed sequence log-probs, as in the paper; the paper's
    regularisation target y_ref is taken to be y_w, "SLiC-HF with y_ref = y_w").

    References:
      Zhao et al., SLiC-HF: Sequence Likelihood Calibration with Human Feedback, 2023, Eq. 1.
    """
    lp_w, lp_l = as_float(batch.chosen_logps), as_float(batch.rejected_logps)
    return jax.nn.relu(delta - lp_w + lp_l) - lambda_ * lp_w


@register(
    "rrhf",
    formula="max(0, lp_l/n_l - lp_w/n_w) + λ·(-lp_w)",
    paper=_RRHF,
    needs_reference=False,
    needs_lengths=True,
    notes="Two-response RRHF: length-normalised ranking hinge plus the summed NLL of the best (chosen) response, λ = sft_weight.",
)
def rrhf(batch: PairwiseLogps, *, sft_weight: float = 1.0):
    """RRHF on a pair: ``max(0, lp_l/n_l − lp_w/n_w) − λ·lp_w``.

    The ranking term uses length-normalised log-probs; the fine-tuning term is the summed NLL of the best
    response (the paper's L_ft), weighted by λ = ``sft_weight`` (1 in the paper).

    References:
      Yuan et al., RRHF: Rank Responses to Align Language Models with Human Feedback, NeurIPS 2023, Eq. 2-4.
    """
    n_w, n_l = lengths(batch)
    lp_w, lp_l = as_float(batch.chosen_logps), as_float(batch.rejected_logps)
    return jax.nn.relu(lp_l / n_l - lp_w / n_w) - sft_weight * lp_w

"""Listwise losses over K ranked responses per prompt: PRO (Plackett–Luce) and LiPO-λ.

Batch type :class:`ListwiseLogps` with ``[B, K]`` arrays: ``logps`` (summed), ``scores`` (relevance, higher is
better; the ranking is derived from them), optional ``ref_logps``, ``lengths`` and ``mask``. Ragged lists:
``mask`` marks the valid entries; masked entries may hold any value (even NaN) and do not affect the loss or
its gradient. Losses are per list, ``[B]``.

Ties are handled explicitly and the result never depends on the order of the K entries:

* PRO: tied scores use Breslow's convention — each item's Plackett–Luce denominator runs over every valid
  item not strictly better than it (tied items included).
* LiPO-λ: pairs with equal scores carry no preference and are skipped; for the λ-weights' rank positions,
  ties in the model scores are broken *against* the labels (worst case), so the weights are non-zero at
  initialisation, where all model scores tie.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.nn import log_sigmoid

from jalign.losses._common import as_float
from jalign.losses._registry import register
from jalign.losses._types import ListwiseLogps

_PRO = "Song et al., Preference Ranking Optimization for Human Alignment (PRO), AAAI 2024 (arXiv 2306.17492)"
_LIPO = "Liu et al., LiPO: Listwise Preference Optimization through Learning-to-Rank, NAACL 2025 (arXiv 2402.01878)"


def _valid(batch):
    if batch.mask is None:
        return jnp.ones(jnp.shape(batch.logps), bool)
    return jnp.asarray(batch.mask).astype(bool)


def _clean(x, valid):
    return jnp.where(valid, as_float(x), 0.0)


def _pro_fields(hp):
    return ("lengths",) if hp.get("length_normalize", True) else ()


@register(
    "pro",
    kind="listwise",
    formula="Σ_k [logsumexp_{j: ψ_j ≤ ψ_k} s_j - s_k], s = β·lp/n",
    paper=_PRO,
    needs_reference=False,
    margin_based=False,
    extra_fields=_pro_fields,
    notes=(
        "Plackett–Luce NLL of the ranking given by scores ψ (PRO's ranking term, without its SFT term or "
        "dynamic temperatures). Ties: Breslow's convention (tied items share each other's denominators). "
        "s = β·lp/n (length_normalize=True, as in PRO) or β·lp."
    ),
)
def pro(batch: ListwiseLogps, *, beta: float = 1.0, length_normalize: bool = True):
    """Preference Ranking Optimisation: the Plackett–Luce negative log-likelihood of the ranking.

    For the ranking y_1 ≻ y_2 ≻ … ≻ y_K by ``scores``: ``Σ_k −log(exp(s_k) / Σ_{j ≥ k} exp(s_j))`` with
    s_k = β·lp_k/n_k (or β·lp_k without length normalisation). The last item contributes 0. With ties the
    risk set of item k is every valid item whose score is ≤ ψ_k (Breslow), which is order-independent.

    Args:
      batch: :class:`ListwiseLogps` (``lengths`` needed when ``length_normalize``; reference ignored).
      beta: scale of the scores, > 0.
      length_normalize: divide log-probs by response lengths (PRO's choice).

    References:
      Song et al., Preference Ranking Optimization for Human Alignment, AAAI 2024, Eq. 4;
      Plackett (1975), Luce (1959); Breslow (1974) for ties.
    """
    valid = _valid(batch)
    lp = _clean(batch.logps, valid)
    if length_normalize:
        lp = lp / jnp.where(valid, as_float(batch.lengths), 1.0)
    s = beta * lp
    psi = _clean(batch.scores, valid)
    k = s.shape[-1]
    eye = jnp.eye(k, dtype=bool)
    # risk[b, i, j]: j is in item i's denominator (valid and not strictly better); i itself always is.
    risk = (valid[..., None, :] & (psi[..., None, :] <= psi[..., :, None])) | eye
    s_j = jnp.broadcast_to(s[..., None, :], risk.shape)
    denom = jax.nn.logsumexp(jnp.where(risk, s_j, -jnp.inf), axis=-1)
    return jnp.sum(jnp.where(valid, denom - s, 0.0), axis=-1)


def lambda_weights(s, psi, valid):
    """LiPO-λ pair weights Δ_ij = |G_i − G_j|·|1/D(τ_i) − 1/D(τ_j)| (detached), ``[..., K, K]``.

    G = 2^ψ − 1, D(τ) = log2(1 + τ), τ_i the 1-based rank of item i among the valid items when sorted by s
    descending, ties in s broken against the labels (lower ψ first), then by index.
    """
    s, psi = jax.lax.stop_gradient(s), jax.lax.stop_gradient(psi)
    k = s.shape[-1]
    idx = jnp.arange(k)
    si, sj = s[..., :, None], s[..., None, :]
    pi, pj = psi[..., :, None], psi[..., None, :]
    before = (sj > si) | ((sj == si) & (pj < pi)) | ((sj == si) & (pj == pi) & (idx[None, :] < idx[:, None]))
    tau = 1.0 + jnp.sum(before & valid[..., None, :], axis=-1)
    inv_d = 1.0 / jnp.log2(1.0 + tau)
    gain = jnp.exp2(psi) - 1.0
    return jnp.abs(gain[..., :, None] - gain[..., None, :]) * jnp.abs(inv_d[..., :, None] - inv_d[..., None, :])


@register(
    "lipo",
    kind="listwise",
    formula="Σ_{ψ_i > ψ_j} Δ_ij·(-log σ(s_i - s_j)), s = β·(lp - rp), Δ_ij = |G_i - G_j|·|1/D(τ_i) - 1/D(τ_j)|",
    paper=_LIPO,
    margin_based=False,
    notes=(
        "LiPO-λ: lambda-weighted pairwise logistic loss, G = 2^ψ - 1, D(τ) = log2(1 + τ), τ = rank by the "
        "(detached) model scores s. Pairs with equal ψ are skipped; ties in s are broken against the labels. "
        "Sum over pairs (no normalisation). ψ are relevance labels: 2^ψ overflows float32 for ψ ≳ 127."
    ),
)
def lipo(batch: ListwiseLogps, *, beta: float = 0.1):
    """LiPO-λ: listwise preference optimisation with LambdaRank weights.

    s_i = β·(lp_i − rp_i); ``Σ_{i,j: ψ_i > ψ_j} Δ_ij·(−log σ(s_i − s_j))`` with the detached λ-weights
    Δ_ij = |G_i − G_j|·|1/D(τ_i) − 1/D(τ_j)|, gains G = 2^ψ − 1 and discounts D(τ) = log2(1 + τ), τ the rank
    of an item under the current model scores s (see :func:`lambda_weights` for ties).

    Args:
      batch: :class:`ListwiseLogps` with ``ref_logps``; ``scores`` are relevance labels ψ.
      beta: β > 0.

    References:
      Liu et al., LiPO: Listwise Preference Optimization through Learning-to-Rank, 2024, Eq. 9-10;
      Burges, From RankNet to LambdaRank to LambdaMART, 2010.
    """
    valid = _valid(batch)
    s = beta * (_clean(batch.logps, valid) - _clean(batch.ref_logps, valid))
    psi = _clean(batch.scores, valid)
    w = lambda_weights(s, psi, valid)
    pair = (psi[..., :, None] > psi[..., None, :]) & valid[..., :, None] & valid[..., None, :]
    nll = -log_sigmoid(s[..., :, None] - s[..., None, :])
    return jnp.sum(jnp.where(pair, w * nll, 0.0), axis=-1).sum(axis=-1)

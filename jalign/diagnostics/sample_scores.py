"""Baseline similarity scores for preference pairs and a rank correlation, for comparing with CHES.

Razin et al. (ICLR 2025, arXiv 2410.08847, Section 5) rank preference pairs by CHES and by two baselines —
the edit distance between the preferred and dispreferred responses and the inner product of their last
hidden states — and check which ranking orders the drop of the preferred response's log-probability under
DPO. These are the baselines and the Spearman correlation used for that check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

Array = Any


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance between two token sequences (unit-cost insert, delete, substitute).

    d[i, j] = min(d[i−1, j] + 1, d[i, j−1] + 1, d[i−1, j−1] + [a_i ≠ b_j]), computed row by row in O(|a|·|b|)
    time and O(|b|) memory.

    >>> edit_distance([1, 2, 3], [1, 3])
    1
    """
    a, b = list(a), list(b)
    row = np.arange(len(b) + 1)
    bb = np.asarray(b)
    for i, x in enumerate(a, start=1):
        sub = row[:-1] + (bb != x)  # diagonal + substitution cost
        new = np.empty_like(row)
        new[0] = i
        # d[i, j] = min(sub[j-1], row[j] + 1, new[j-1] + 1): the last term is a running prefix minimum
        best = np.minimum(sub, row[1:] + 1)
        # new[j] = min_{j' <= j} (best[j'] + (j - j')) with new[0] = i: a cumulative minimum of best[j'] - j'
        j = np.arange(1, len(b) + 1)
        new[1:] = np.minimum(np.minimum.accumulate(best - j) + j, i + j)
        row = new
    return int(row[-1])


def last_hidden_inner_product(chosen_hidden: Array, rejected_hidden: Array, chosen_attention_mask: Array,
                              rejected_attention_mask: Array) -> np.ndarray:
    """⟨h_last(x, y+), h_last(x, y−)⟩ per pair, h_last = the final hidden state at the last real token.

    Args:
      chosen_hidden, rejected_hidden: ``[B, T, D]`` / ``[B, T', D]`` final hidden states of prompt + response.
      chosen_attention_mask, rejected_attention_mask: ``[B, T]`` / ``[B, T']``, 1 on real tokens (any
        padding side); the last 1 of each row is the response's last token.

    Returns:
      float64 numpy ``[B]`` (accumulated in float32 or wider).

    Raises:
      ValueError: shape mismatch or a row without real tokens, naming the field and the row.
    """
    out = []
    for name, h, m in (("chosen", chosen_hidden, chosen_attention_mask),
                       ("rejected", rejected_hidden, rejected_attention_mask)):
        h, m = jnp.asarray(h), np.asarray(m)
        if h.ndim != 3 or m.shape != h.shape[:2]:
            raise ValueError(f"{name}_hidden {h.shape} and {name}_attention_mask {m.shape}: need [B, T, D] and [B, T]")
        empty = ~m.astype(bool).any(-1)
        if empty.any():
            raise ValueError(f"{name}_attention_mask: row {int(np.argmax(empty))} has no real token")
        last = m.shape[1] - 1 - np.argmax(m[:, ::-1].astype(bool), axis=-1)
        dt = jnp.promote_types(h.dtype, jnp.float32)
        out.append(h[np.arange(h.shape[0]), last].astype(dt))
    if out[0].shape != out[1].shape:
        raise ValueError(f"chosen and rejected last hidden states differ in shape: {out[0].shape} vs {out[1].shape}")
    return np.asarray(jnp.sum(out[0] * out[1], axis=-1), np.float64)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1 with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(x: Array, y: Array) -> float:
    """Spearman rank correlation: the Pearson correlation of the (average, for ties) ranks; ``nan`` if either
    ranking is constant.

    Raises:
      ValueError: different lengths, fewer than 2 values, or non-finite values.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman: x {x.shape} and y {y.shape} must be 1-D of the same length")
    if len(x) < 2:
        raise ValueError("spearman: need at least 2 values")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("spearman: non-finite value")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")

"""Centered hidden embedding similarity (CHES) — Razin et al., Unintentional Unalignment: Likelihood
Displacement in Direct Preference Optimization, ICLR 2025 (arXiv 2410.08847), Definitions 2 and 3.

With h_{x,y<k} the final hidden state (the input to the unembedding) at the position that predicts the k-th
response token (the last prompt token for k = 1, response token k−1 otherwise), and
S(y) = Σ_{k=1}^{|y|} h_{x,y<k}:

    CHES_x(y+, y−)        = ⟨S(y+), S(y−)⟩ − ‖S(y+)‖²
    CHES-LN_x(y+, y−)     = ⟨S(y+), S(y−)⟩ / (|y+|·|y−|) − ‖S(y+)‖² / |y+|²

("centered" = the preferred self-term is subtracted; there is no mean-centering). Higher CHES = more
likelihood displacement expected when training y+ ≻ y−.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any


def _acc(*xs: Array) -> Any:
    dt = jnp.float32
    for x in xs:
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            dt = jnp.promote_types(dt, jnp.result_type(x))
    return dt


def _concrete(x: Array) -> bool:
    return not isinstance(x, jax.core.Tracer)


def ches_scores(
    chosen_hidden: Array,
    rejected_hidden: Array,
    chosen_mask: Array,
    rejected_mask: Array,
    *,
    length_normalized: bool = False,
) -> jax.Array:
    """CHES (or length-normalised CHES) per preference pair.

    Computed as inner products of masked sums of hidden states (O(B·T·D), no T×T loop), in float32 (float64
    if the inputs are float64).

    Args:
      chosen_hidden: ``[B, T, D]`` final hidden states of prompt + preferred response.
      rejected_hidden: ``[B, T', D]`` same for the dispreferred response (T' may differ from T).
      chosen_mask: ``[B, T]`` 0/1 or bool, 1 at the positions that predict a response token (last prompt
        token through penultimate response token), so |y+| = chosen_mask.sum(-1).
      rejected_mask: ``[B, T']`` likewise.
      length_normalized: Definition 3 (cross term / (|y+||y−|), self term / |y+|²).

    Returns:
      ``[B]`` scores. A pair whose chosen or rejected mask selects no position has no score: called on
      concrete arrays this raises (below); under tracing (``jax.jit``, ``jax.vmap``, ``jax.grad``), where
      values cannot be inspected, that row is NaN (whatever ``length_normalized``), the other rows are
      unaffected, and the NaN row's gradient is zero.

    Raises:
      ValueError: bad shapes; (on concrete arrays, not under tracing) an empty response mask or a
        non-finite score, naming the field and the example.

    References:
      Razin et al., ICLR 2025 (arXiv 2410.08847), Definitions 2–3.
    """
    hw, hl = jnp.asarray(chosen_hidden), jnp.asarray(rejected_hidden)
    mw, ml = jnp.asarray(chosen_mask), jnp.asarray(rejected_mask)
    if hw.ndim != 3 or hl.ndim != 3:
        raise ValueError(
            f"ches_scores: chosen_hidden and rejected_hidden must be [B, T, D]; got {hw.shape} and {hl.shape}"
        )
    if hw.shape[0] != hl.shape[0] or hw.shape[2] != hl.shape[2]:
        raise ValueError(f"ches_scores: chosen_hidden {hw.shape} and rejected_hidden {hl.shape} disagree in B or D")
    for name, m, h in (("chosen_mask", mw, hw), ("rejected_mask", ml, hl)):
        if m.shape != h.shape[:2]:
            raise ValueError(f"ches_scores: {name} has shape {m.shape}, expected {h.shape[:2]}")
    dt = _acc(hw, hl)
    mw_f, ml_f = mw.astype(dt), ml.astype(dt)
    nw, nl = mw_f.sum(-1), ml_f.sum(-1)
    for name, n in (("chosen_mask", nw), ("rejected_mask", nl)):
        if _concrete(n) and bool(jnp.any(n <= 0)):
            i = int(np.argmax(np.asarray(n) <= 0))
            raise ValueError(f"ches_scores: {name} selects no position (empty response) at example {i}")
    # Select (not multiply) so that junk at padding positions (even inf / nan) cannot leak into the sums.
    sw = jnp.sum(jnp.where(mw.astype(bool)[..., None], hw.astype(dt), 0.0), axis=1)
    sl = jnp.sum(jnp.where(ml.astype(bool)[..., None], hl.astype(dt), 0.0), axis=1)
    cross = jnp.sum(sw * sl, axis=-1)
    self_ = jnp.sum(sw * sw, axis=-1)
    # A row with an empty mask has no score: NaN (traced calls cannot raise). Safe denominators keep the
    # unselected branch finite, so gradients of the other rows (and of the empty row: zero) stay finite.
    valid = (nw > 0) & (nl > 0)
    nw_s, nl_s = jnp.where(valid, nw, 1.0), jnp.where(valid, nl, 1.0)
    out = cross / (nw_s * nl_s) - self_ / (nw_s * nw_s) if length_normalized else cross - self_
    out = jnp.where(valid, out, jnp.nan)
    if _concrete(out) and not bool(jnp.all(jnp.isfinite(out))):
        i = int(np.argmax(~np.isfinite(np.asarray(out))))
        raise ValueError(f"ches_scores: non-finite score at example {i} (non-finite hidden states?)")
    return out


# ----------------------------------------------------------------------------------------------------------
# From token ids to hidden states and masks.


def pack_prompt_response(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    padding_side: str = "right",
    max_length: int | None = None,
    field: str = "response",
) -> dict[str, np.ndarray]:
    """Concatenate prompt and response token ids and pad to one length.

    Returns numpy arrays ``[B, L]``: ``input_ids``, ``attention_mask`` (1 on real tokens), ``response_mask``
    (1 on response tokens) and ``predictor_mask`` (1 at the positions whose next token is a response token:
    the last prompt token through the penultimate response token — the CHES positions; exactly |y| ones).

    Raises:
      ValueError: empty prompt or response, or prompt + response longer than ``max_length``, naming the
        record index and field.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} {field}s")
    if len(prompts) == 0:
        raise ValueError("no records to pack")
    lens = []
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if len(p) == 0:
            raise ValueError(f"record {i}: field 'prompt' is empty (CHES needs the last prompt token)")
        if len(r) == 0:
            raise ValueError(f"record {i}: field {field!r} is empty")
        lens.append(len(p) + len(r))
    L = max(lens) if max_length is None else int(max_length)
    for i, n in enumerate(lens):
        if n > L:
            raise ValueError(f"record {i}: prompt + {field} has {n} tokens, more than max_length={L}")
    B = len(prompts)
    ids = np.full((B, L), pad_id, np.int32)
    att = np.zeros((B, L), np.int32)
    resp = np.zeros((B, L), np.int32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        n = lens[i]
        off = 0 if padding_side == "right" else L - n
        ids[i, off : off + n] = list(p) + list(r)
        att[i, off : off + n] = 1
        resp[i, off + len(p) : off + n] = 1
    pred = np.zeros_like(resp)
    pred[:, :-1] = resp[:, 1:]
    return {"input_ids": ids, "attention_mask": att, "response_mask": resp, "predictor_mask": pred}


def predictor_mask(response_mask: Array) -> np.ndarray:
    """Positions that predict a response token, from a ``[B, L]`` response-token mask (any padding side).

    ``out[t] = response_mask[t + 1]``: the last prompt token through the penultimate response token. Raises
    ``ValueError`` (naming the example) for an empty response, a response that is not one contiguous span,
    or a response starting at position 0 (no prompt token to predict its first token).
    """
    m = np.asarray(response_mask).astype(np.int32)
    if m.ndim != 2:
        raise ValueError(f"response_mask must be [B, L], got shape {m.shape}")
    for i, row in enumerate(m):
        idx = np.flatnonzero(row)
        if idx.size == 0:
            raise ValueError(f"response_mask: empty response at example {i}")
        if idx[-1] - idx[0] + 1 != idx.size:
            raise ValueError(f"response_mask: response of example {i} is not one contiguous span")
        if idx[0] == 0:
            raise ValueError(f"response_mask: response of example {i} starts at position 0 (no prompt token)")
    out = np.zeros_like(m)
    out[:, :-1] = m[:, 1:]
    return out


def response_hidden_states(
    apply_fn: Callable[[Array, Array], Array], input_ids: Array, attention_mask: Array, response_mask: Array
) -> tuple[jax.Array, np.ndarray]:
    """Hidden states ``[B, L, D]`` and the CHES predictor mask for already tokenised, padded sequences.

    ``input_ids``, ``attention_mask``, ``response_mask`` are ``[B, L]`` (left or right padding, prompt then
    response); ``response_mask`` must lie inside ``attention_mask``.
    """
    att, resp = np.asarray(attention_mask), np.asarray(response_mask)
    if att.shape != resp.shape or np.asarray(input_ids).shape != att.shape:
        raise ValueError(
            f"input_ids {np.shape(input_ids)}, attention_mask {att.shape}, response_mask {resp.shape} differ"
        )
    bad = (resp > 0) & (att == 0)
    if bad.any():
        raise ValueError(f"response_mask marks padding at example {int(np.argwhere(bad)[0][0])}")
    pred = predictor_mask(resp)
    return apply_fn(jnp.asarray(input_ids), jnp.asarray(attention_mask)), pred


def ches_from_model(
    apply_fn: Callable[[Array, Array], Array],
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    padding_side: str = "right",
    max_length: int | None = None,
    length_normalized: bool = False,
) -> jax.Array:
    """Run a model on tokenised (prompt, chosen, rejected) and return CHES scores ``[B]``.

    ``apply_fn(input_ids [B, L], attention_mask [B, L]) -> hidden [B, L, D]`` returns final hidden states
    (the input to the unembedding). It must handle the padding it is given (for left padding, position ids
    from the cumulative attention mask), so that a token's hidden state does not depend on padding; then the
    scores do not depend on padding side or amount.
    """
    pw = pack_prompt_response(prompts, chosen, pad_id=pad_id, padding_side=padding_side,
                              max_length=max_length, field="chosen")
    pl = pack_prompt_response(prompts, rejected, pad_id=pad_id, padding_side=padding_side,
                              max_length=max_length, field="rejected")
    hw = apply_fn(jnp.asarray(pw["input_ids"]), jnp.asarray(pw["attention_mask"]))
    hl = apply_fn(jnp.asarray(pl["input_ids"]), jnp.asarray(pl["attention_mask"]))
    return ches_scores(hw, hl, pw["predictor_mask"], pl["predictor_mask"], length_normalized=length_normalized)


def score_dataset(
    apply_fn: Callable[[Array, Array], Array],
    records: Sequence[dict[str, Sequence[int]]],
    *,
    batch_size: int = 8,
    pad_id: int = 0,
    padding_side: str = "right",
    max_length: int | None = None,
    length_normalized: bool = False,
    progress: bool = True,
    fields: tuple[str, str, str] = ("prompt", "chosen", "rejected"),
) -> np.ndarray:
    """CHES scores of a whole preference data set, in chunks of ``batch_size`` with a tqdm progress bar.

    ``records`` are dicts of token-id lists under ``fields`` (prompt, chosen, rejected). With ``max_length``
    every chunk is padded to the same length (one compilation of a jitted ``apply_fn``); the last chunk is
    padded with copies of its first record and trimmed. Returns float64 numpy scores ``[N]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fp, fw, fl = fields
    for i, r in enumerate(records):
        for f in fields:
            if f not in r:
                raise ValueError(f"record {i}: missing field {f!r}")
            if len(r[f]) == 0:
                raise ValueError(f"record {i}: field {f!r} is empty")
        for f in (fw, fl):
            n = len(r[fp]) + len(r[f])
            if max_length is not None and n > max_length:
                raise ValueError(f"record {i}: prompt + {f} has {n} tokens, more than max_length={max_length}")
    from tqdm.auto import tqdm

    out = np.zeros(len(records), np.float64)
    starts = range(0, len(records), batch_size)
    for s in tqdm(starts, desc="CHES", disable=not progress, total=len(starts)):
        chunk = list(records[s : s + batch_size])
        n = len(chunk)
        chunk += [chunk[0]] * (batch_size - n)
        sc = ches_from_model(
            apply_fn,
            [r[fp] for r in chunk],
            [r[fw] for r in chunk],
            [r[fl] for r in chunk],
            pad_id=pad_id,
            padding_side=padding_side,
            max_length=max_length,
            length_normalized=length_normalized,
        )
        out[s : s + n] = np.asarray(sc, np.float64)[:n]
    return out


def rank_by_ches(scores: Array) -> np.ndarray:
    """Indices sorted by ascending CHES (least displacement-prone first; stable for ties)."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores: non-finite value at index {int(np.argmax(~np.isfinite(s)))}")
    return np.argsort(s, kind="stable")


def lowest_ches_indices(scores: Array, fraction: float) -> np.ndarray:
    """Indices (in data-set order) of the ``ceil(fraction·N)`` pairs with the lowest CHES.

    The paper's mitigation keeps the lowest-CHES fraction (e.g. 5% by length-normalised CHES).
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = rank_by_ches(scores)
    k = max(1, math.ceil(fraction * len(order) - 1e-9))
    return np.sort(order[:k])


def filter_lowest_ches(records: Sequence[Any], scores: Array, fraction: float) -> list[Any]:
    """The records with the lowest-CHES ``fraction`` (data-set order preserved)."""
    if len(records) != len(np.asarray(scores)):
        raise ValueError(f"{len(records)} records but {len(np.asarray(scores))} scores")
    return [records[i] for i in lowest_ches_indices(scores, fraction)]


def percentile_subsets(scores: Array, size: int, percentiles: Sequence[float] = (0, 25, 50, 75, 100)) -> dict:
    """Index subsets of ``size`` consecutive pairs in the CHES ranking centred at each percentile.

    The paper's sample-identification design (subsets at the 0/25/50/75/100th percentiles); subsets are
    clipped to the ranking's ends.
    """
    order = rank_by_ches(scores)
    n = len(order)
    if not (1 <= size <= n):
        raise ValueError(f"size must be in [1, {n}], got {size}")
    out = {}
    for q in percentiles:
        if not (0 <= q <= 100):
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        centre = round(q / 100 * (n - 1))
        lo = int(np.clip(centre - size // 2, 0, n - size))
        out[q] = np.sort(order[lo : lo + size])
    return out

"""Likelihood-displacement metrics (Razin et al., ICLR 2025, arXiv 2410.08847) for training-time tracking.

Pure helpers over log-prob trajectories: the paper's "largest drop of π(y+) between two steps" and the tokens
that gain the most probability mass; and the probe batches of the displacement probe
(:func:`probe_batch`, :func:`probe_positions`; the probe itself, which evaluates a model during training, is
:class:`jalign.train.probes.displacement_probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.diagnostics.ches import pack_prompt_response

Array = Any

POSITIONS = ("first", "divergence")


def largest_drop(probs_T: Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """max_{s<t} (p_s − p_t) over a trajectory of probabilities (``[T]`` or ``[..., T]`` on the last axis).

    The single-token experiments' metric (e.g. π(y+) 0.96 → 0.27 is a drop of 0.69). Computed in O(T) with a
    running maximum; 0 when the trajectory never falls.

    Returns:
      ``(drop, s, t)``: the drop and the two step indices (``s = t`` when there is no drop).
    """
    p = jnp.asarray(probs_T, jnp.promote_types(jnp.result_type(probs_T), jnp.float32))
    if p.shape[-1] < 1:
        raise ValueError("largest_drop: empty trajectory")
    run_max = jax.lax.cummax(p, axis=p.ndim - 1)
    drops = run_max - p
    t = jnp.argmax(drops, axis=-1)
    drop = jnp.take_along_axis(drops, t[..., None], axis=-1)[..., 0]
    # s: the first index attaining the running maximum at t.
    idx = jnp.arange(p.shape[-1])
    peak = jnp.take_along_axis(run_max, t[..., None], axis=-1)
    s = jnp.argmax((p == peak) & (idx <= t[..., None]), axis=-1)
    return drop, s, t


def mass_gainers(logp_before_V: Array, logp_after_V: Array, k: int = 5, *, exclude: Any = ()) -> tuple:
    """The ``k`` tokens whose probability grew most, π_after(z) − π_before(z), on the last axis.

    Args:
      logp_before_V, logp_after_V: log-probabilities ``[..., V]`` (e.g. next-token distributions).
      k: how many tokens.
      exclude: token ids to leave out (e.g. y+ and y−).

    Returns:
      ``(tokens [..., k], gains [..., k])`` sorted by decreasing gain.
    """
    a, b = jnp.asarray(logp_before_V, jnp.float32), jnp.asarray(logp_after_V, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"logp_before {a.shape} and logp_after {b.shape} differ")
    V = a.shape[-1]
    if not (1 <= k <= V):
        raise ValueError(f"k must be in [1, {V}], got {k}")
    gain = jnp.exp(b) - jnp.exp(a)
    ex = jnp.asarray(list(exclude), jnp.int32)
    if ex.size:
        gain = gain.at[..., ex].set(-jnp.inf)
    g, idx = jax.lax.top_k(gain, k)
    return idx, g


def difference_components(w_plus: Array, w_minus: Array) -> tuple[jax.Array, jax.Array]:
    """Norms of the components of W+ − W− parallel and orthogonal to W+ (last axis).

    parallel = |⟨W+ − W−, W+⟩| / ‖W+‖,  orthogonal = ‖(W+ − W−) − ⟨W+ − W−, W+⟩ W+ / ‖W+‖²‖.
    Razin et al. (ICLR 2025, Section 4) observe that, for pairs that displace, the orthogonal component is the
    larger one: it is what moves the probability of tokens z ∉ {y+, y−} (Theorem 5, ∝ ⟨W_z, W+ − W−⟩).
    Computed in float32 or wider.

    Returns:
      ``(parallel, orthogonal)``, each of shape ``w_plus.shape[:-1]``.
    """
    wp = jnp.asarray(w_plus)
    dt = jnp.promote_types(jnp.result_type(wp, jnp.asarray(w_minus)), jnp.float32)
    wp, wm = wp.astype(dt), jnp.asarray(w_minus).astype(dt)
    if wp.shape != wm.shape:
        raise ValueError(f"w_plus {wp.shape} and w_minus {wm.shape} differ")
    d = wp - wm
    nn = jnp.sum(wp * wp, axis=-1, keepdims=True)
    coef = jnp.sum(d * wp, axis=-1, keepdims=True) / nn
    par = jnp.abs(coef[..., 0]) * jnp.sqrt(nn[..., 0])
    orth = jnp.linalg.norm(d - coef * wp, axis=-1)
    return par, orth


def probe_batch(
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    *,
    candidates: Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]] | None = None,
    pad_id: int = 0,
    max_length: int | None = None,
) -> dict[str, np.ndarray]:
    """A displacement-probe batch from token ids (right padding, ``[prompt, response]`` per row).

    Args:
      prompts, chosen, rejected: per-pair token-id lists (prompts include BOS if the model uses one,
        responses their EOS if they should be complete responses).
      candidates: optional candidate responses — one list shared by every prompt (a list of id lists) or one
        list per prompt (all of the same length C).
      pad_id: padding token id.
      max_length: common padded length (default: the longest sequence).

    Returns:
      numpy arrays: the six pairwise fields ``[B, L]`` and, with candidates, the three candidate fields
      ``[B, C, L]``.

    Raises:
      ValueError: empty prompts/responses, sequences longer than ``max_length``, ragged candidate lists.
    """
    B = len(prompts)
    if len(chosen) != B or len(rejected) != B:
        raise ValueError(f"{B} prompts but {len(chosen)} chosen and {len(rejected)} rejected responses")
    cand = None
    if candidates is not None:
        if len(candidates) == 0:
            raise ValueError("candidates: empty list")
        shared = all(isinstance(t, (int, np.integer)) for t in candidates[0])
        cand = [list(candidates)] * B if shared else [list(c) for c in candidates]
        if len(cand) != B:
            raise ValueError(f"candidates: {len(cand)} per-prompt lists for {B} prompts")
        C = len(cand[0])
        for i, cs in enumerate(cand):
            if len(cs) != C:
                raise ValueError(f"candidates: prompt {i} has {len(cs)} candidates, prompt 0 has {C}")
    lens = [len(p) + max(len(w), len(r)) for p, w, r in zip(prompts, chosen, rejected, strict=True)]
    if cand is not None:
        lens += [len(p) + len(c) for p, cs in zip(prompts, cand, strict=True) for c in cs]
    L = max(lens) if max_length is None else int(max_length)
    out: dict[str, np.ndarray] = {}
    for side, resp in (("chosen", chosen), ("rejected", rejected)):
        pk = pack_prompt_response(prompts, resp, pad_id=pad_id, max_length=L, field=side)
        out[f"{side}_ids"], out[f"{side}_mask"] = pk["input_ids"], pk["response_mask"]
        out[f"{side}_attention_mask"] = pk["attention_mask"]
    if cand is not None:
        C = len(cand[0])
        pk = pack_prompt_response([p for p in prompts for _ in range(C)], [c for cs in cand for c in cs],
                                  pad_id=pad_id, max_length=L, field="candidate")
        out["candidate_ids"] = pk["input_ids"].reshape(B, C, L)
        out["candidate_mask"] = pk["response_mask"].reshape(B, C, L)
        out["candidate_attention_mask"] = pk["attention_mask"].reshape(B, C, L)
    return out


def probe_positions(batch: dict, position: str = "first") -> np.ndarray:
    """Per pair, the index ``t`` into ``chosen_ids`` whose logits give the probed next-token distribution.

    ``"first"``: the position before the first response token (its logits predict the response's first
    token). ``"divergence"``: the position before the first response token where y+ and y− differ (for
    single-token responses the same as ``"first"``; for " No" vs " Never" under a byte tokenizer, the
    position after " N"). Works for any padding side.

    Raises:
      ValueError: unknown ``position``, an empty response or a response at position 0, identical responses
        (``"divergence"``), naming the pair.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    ids_w, m_w = np.asarray(batch["chosen_ids"]), np.asarray(batch["chosen_mask"])
    ids_l, m_l = np.asarray(batch["rejected_ids"]), np.asarray(batch["rejected_mask"])
    out = np.zeros(ids_w.shape[0], np.int32)
    for i in range(ids_w.shape[0]):
        iw, il = np.flatnonzero(m_w[i]), np.flatnonzero(m_l[i])
        for name, idx in (("chosen_mask", iw), ("rejected_mask", il)):
            if idx.size == 0:
                raise ValueError(f"probe batch: field {name} has an empty response at pair {i}")
            if idx[0] == 0:
                raise ValueError(f"probe batch: field {name} starts at position 0 at pair {i} (no prompt token)")
        d = 0
        if position == "divergence":
            yw, yl = ids_w[i, iw], ids_l[i, il]
            n = min(len(yw), len(yl))
            diff = np.flatnonzero(yw[:n] != yl[:n])
            d = int(diff[0]) if diff.size else n
            if d >= len(yw):
                raise ValueError(f"probe batch: pair {i}: the chosen response is a prefix of (or equal to) the "
                                 "rejected one; no divergence position inside the chosen response")
        out[i] = iw[0] + d - 1
    return out

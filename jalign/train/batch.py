"""The trainer's batch layout: field names, pair splitting, batch conversions and response masks.

Sequences are ``ids``, ``mask`` (response tokens, aligned with ``ids``) and ``attention_mask`` (real tokens),
``[B, T]``, right-padded ``[BOS] prompt response [EOS]``; a pairwise batch has them twice, prefixed
``chosen_`` and ``rejected_``; scored and listwise batches hold ``[B, K, T]``. Every data source and objective
uses these names (:mod:`jalign.train.objectives`, :mod:`jalign.train.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jalign.diagnostics import entanglement as ent
from jalign.errors import UserError

SEQ = ("ids", "mask", "attention_mask")
SIDES = ("chosen", "rejected")
PAIRWISE_FIELDS = tuple(f"{s}_{f}" for s in SIDES for f in SEQ)


def check_sizes(name: str, *, batch_size: int, seq_len: int, max_prompt_len: int, process_count: int = 1) -> None:
    """The checks every data source makes on its sizes; ``ValueError`` naming the config key and value."""
    if batch_size % process_count:
        raise UserError(f"{name}: data.batch_size={batch_size} is not divisible by process_count={process_count}")
    if not 1 <= max_prompt_len < seq_len:
        raise UserError(f"{name}: data.kwargs.max_prompt_len={max_prompt_len} must be in [1, data.seq_len="
                         f"{seq_len})")


def split_pairs(batch: Mapping) -> tuple[dict, dict]:
    """``(chosen, rejected)``: dicts of ``ids``/``mask``/``attention_mask`` ``[B, T]`` from a pairwise batch."""
    missing = [f for f in PAIRWISE_FIELDS if f not in batch]
    if missing:
        raise ValueError(f"pairwise batch is missing field(s) {missing}")
    return ({f: jnp.asarray(batch[f"chosen_{f}"]) for f in SEQ},
            {f: jnp.asarray(batch[f"rejected_{f}"]) for f in SEQ})


def pairwise(batch: Mapping) -> dict[str, np.ndarray]:
    """Only the six pairwise fields of a pipeline batch."""
    return {f: batch[f] for f in PAIRWISE_FIELDS}


def to_sft(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pairwise batch -> SFT batch on the chosen responses (``chosen_ids`` -> ``ids`` etc.)."""
    return {f: batch[f"chosen_{f}"] for f in SEQ}


def to_prompts(batch: Mapping[str, np.ndarray], max_prompt_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Left-padded prompts ``[B, max_prompt_len]`` from a right-padded pipeline batch.

    Row b's prompt is ``chosen_ids[b, :prompt_lengths[b]]`` (``[BOS] prompt``, truncated from the left by the
    pipeline); it is placed at the right end so that sampled tokens follow it directly.
    """
    ids = np.asarray(batch["chosen_ids"])
    p_len = np.asarray(batch["prompt_lengths"])
    out = np.full((ids.shape[0], max_prompt_len), pad_id, np.int32)
    att = np.zeros((ids.shape[0], max_prompt_len), np.int32)
    for b, n in enumerate(p_len):
        n = int(n)
        if n == 0 or n > max_prompt_len:
            raise ValueError(f"row {b}: prompt length {n} not in [1, max_prompt_len={max_prompt_len}]")
        out[b, max_prompt_len - n:] = ids[b, :n]
        att[b, max_prompt_len - n:] = 1
    return {"prompt_ids": out, "prompt_attention_mask": att}


def to_scored(batch: Mapping[str, np.ndarray], reward_fn: Callable, prompts: Mapping[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
    """Pairwise batch -> scored batch ``[B, 2, T]`` + ``rewards [B, 2]`` (``reward_fn`` on each response)."""
    out = {f: np.stack([batch[f"chosen_{f}"], batch[f"rejected_{f}"]], axis=1) for f in SEQ}
    r = [np.asarray(reward_fn(prompts["prompt_ids"], batch[f"{s}_ids"], batch[f"{s}_mask"]), np.float32)
         for s in SIDES]
    out["rewards"] = np.stack(r, axis=1)
    if not np.isfinite(out["rewards"]).all():
        row = int(np.argwhere(~np.isfinite(out["rewards"]).all(1))[0, 0])
        raise ValueError(f"builtin_scored: the reward of row {row} is not finite")
    return out


def to_unpaired(b: Mapping) -> dict[str, np.ndarray]:
    """Pipeline unpaired batch -> trainer fields (``desirable`` as float32 0/1, ``kl_*`` when present)."""
    out = {f: b[f] for f in SEQ}
    out["desirable"] = np.asarray(b["desirable"], np.float32)
    out |= {f"kl_{f}": b[f"kl_{f}"] for f in SEQ if f"kl_{f}" in b}
    return out


def to_listwise(b: Mapping) -> dict[str, np.ndarray]:
    """Pipeline listwise batch -> trainer fields (``valid`` becomes ``list_mask``)."""
    return {**{f: b[f] for f in SEQ}, "scores": b["scores"], "list_mask": b["valid"]}


def pairwise_to_unpaired(records: list[dict]) -> list[dict]:
    """Split pairwise records into unpaired ones: ``(x, y_w)`` desirable, ``(x, y_l)`` undesirable, in order."""
    out = []
    for r in records:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return out


def contrastive_response_masks(batch: Mapping) -> dict[str, jax.Array]:
    """The token-masking mitigation of gradient entanglement for a pairwise batch.

    Each response (the positions where ``mask`` is 1, contiguous) is gathered into a right-padded row, the
    common prefix and common suffix of chosen and rejected are dropped by
    :func:`jalign.diagnostics.contrastive_token_masks`, and the kept positions are scattered back. Returns
    ``{"chosen_mask": [B, T], "rejected_mask": [B, T]}`` (same dtype as the input masks), to replace the
    batch's response masks: the margin then only sees the contrasting span.
    """
    out = {}
    resp = {}
    for s in SIDES:
        ids, mask = jnp.asarray(batch[f"{s}_ids"]), jnp.asarray(batch[f"{s}_mask"])
        T = ids.shape[-1]
        pos = jnp.arange(T)
        start = jnp.argmax(mask != 0, axis=-1)
        n = (mask != 0).sum(-1)
        idx = jnp.clip(start[:, None] + pos, 0, T - 1)
        valid = pos[None] < n[:, None]
        resp[s] = (jnp.take_along_axis(ids, idx, axis=-1) * valid, valid.astype(jnp.int32), start, mask)
    kw, kl = ent.contrastive_token_masks(resp["chosen"][0], resp["rejected"][0], resp["chosen"][1],
                                         resp["rejected"][1])
    for s, keep in (("chosen", kw), ("rejected", kl)):
        _, _, start, mask = resp[s]
        T = mask.shape[-1]
        # Position t of the sequence is response position t − start.
        j = jnp.arange(T)[None] - start[:, None]
        kept = jnp.take_along_axis(keep, jnp.clip(j, 0, T - 1), axis=-1) * (j >= 0) * (mask != 0)
        out[f"{s}_mask"] = kept.astype(mask.dtype)
    return out


def response_lengths(mask) -> jax.Array:
    """Scored response tokens per row (the mask after position 0), float32."""
    return jnp.asarray(mask)[:, 1:].astype(jnp.float32).sum(-1)

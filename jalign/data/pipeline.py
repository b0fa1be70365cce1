"""grain input pipelines: tokenise, truncate, pad into fixed-shape numpy batches; shuffle, shard, resume.

Sequence layout (one row per (prompt, response)), right-padded to ``T = max_prompt_len + max_response_len``::

    ids            = [BOS] prompt  response [EOS]  PAD ... PAD      (the tokenizer's encode_pair policy)
    mask           =   0    0 .. 0  1 ..... 1   1   0  ...  0       response mask (loss / log-prob mask)
    attention_mask =   1    1 .. 1  1 ..... 1   1   0  ...  0

Truncation policy (applied per example, to tokens, before padding):

* the **prompt is truncated from the left** to ``max_prompt_len`` tokens: the oldest context goes, the text
  right before the response stays; a leading BOS, if the tokenizer puts one, is kept as the first token;
* the **response is truncated from the right** to ``max_response_len`` tokens; a truncated response loses
  its EOS (it did not end), so the model is never taught to stop where the text did not.

Both counts are reported per example (``*_truncated`` flags) so truncation is visible, never silent.

Batches (numpy, fixed shapes, ``B = batch_size``):

* pairwise: ``chosen_ids``, ``chosen_mask``, ``chosen_attention_mask``, the same for ``rejected``
  (``[B, T]`` int32), ``prompt_lengths``, ``chosen_lengths``, ``rejected_lengths`` (response tokens, ``[B]``),
  ``score_chosen``/``score_rejected``/``has_scores``, ``chosen_truncated``/``rejected_truncated``;
* unpaired: ``ids``, ``mask``, ``attention_mask``, ``desirable`` (bool), ``prompt_lengths``, ``lengths``
  (with ``kl_pairs=True`` also ``kl_ids``, ``kl_mask``, ``kl_attention_mask``, ``kl_lengths``: prompt i with
  the completion of example i + 1 mod n, for KTO's KL estimate);
* scored: ``ids``, ``mask``, ``attention_mask``, ``reward`` (float32), ``prompt_lengths``, ``lengths``;
* listwise: ``ids``/``mask``/``attention_mask`` ``[B, K, T]``, ``scores`` ``[B, K]`` (float32), ``ranks``,
  ``lengths``, ``valid`` ``[B, K]`` (False for padding slots when a prompt has fewer than K responses);

and always ``index`` (position of the example in the unsharded source), ``valid_example`` ``[B]`` (False
only on the padding rows of a final partial batch when ``drop_remainder=False``).

Packing (``pack=True``; pairwise, unpaired, scored): instead of one padded row per sequence, examples are
placed whole into rows of ``pack_len`` tokens by first-fit (grain's ``FirstFitPackIterDataset``, ``batch_size``
bins at a time, at most ``max_segments`` examples per row). A pairwise example occupies
``[BOS] prompt chosen [EOS] [BOS] prompt rejected [EOS]`` in one row. Row fields ``[B, L]``: ``ids``,
``mask`` (response mask), ``side`` (1 = chosen / the completion, 2 = rejected, 0 = padding), ``positions``
(restarting at 0 for every sequence), ``segment_ids`` (which example of the row, 1..S, 0 = padding) and
``sequence_ids`` (which sequence, for block-diagonal causal attention: ``(segment - 1) * sides + side``).
Per-example fields are ``[B, S]`` (slot s = segment s + 1): ``index``, ``prompt_lengths``, the response
lengths, scores/reward/desirable and ``segment_valid``. Sequence log-probs are segment sums, e.g.
``chosen_logps[b, s] = sum_t logp[b, t] * mask[b, t] * (segment_ids[b, t] == s + 1) * (side[b, t] == 1)``.
With ``drop_remainder=False`` the last batch may have fewer rows.

Order: the source is sharded first (strided: shard ``i`` of ``n`` takes examples ``i, i+n, ...``, every shard
gets the same count ``len // n``; the up-to ``n - 1`` left over are logged, not silently lost), then
shuffled with ``seed`` (a global permutation of the shard, different each epoch), repeated, tokenised and
batched. Everything is index-based, so the iterator state is just ``{"next_index": k}``:
``it.get_state()`` is JSON-serialisable and ``it.set_state(state)`` on a fresh iterator of the same
pipeline resumes with exactly the batches the first would have produced next.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import grain
import numpy as np

from jalign.data.io import atomic_write
from jalign.data.schema import KINDS, InvalidDataError, RecordError

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """The interface the pipeline needs (``jalign.tokenizers.ByteTokenizer`` and the HF wrapper)."""

    pad_id: int
    bos_id: int | None
    eos_id: int | None
    vocab_size: int

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]: ...
    def encode_pair(self, prompt: str, response: str) -> tuple[list[int], list[int]]: ...


@dataclasses.dataclass(frozen=True)
class Tokenized:
    """One (prompt, response) after truncation: prompt and response token ids and truncation flags."""

    prompt: list[int]
    response: list[int]
    prompt_truncated: bool
    response_truncated: bool
    prompt_tokens: int = 0  # before truncation
    response_tokens: int = 0  # before truncation


def tokenize_pair(
    tok: Tokenizer, prompt: str, response: str, max_prompt_len: int, max_response_len: int
) -> Tokenized:
    """Encode with ``tok.encode_pair`` and apply the truncation policy (module docstring)."""
    ids, mask = tok.encode_pair(prompt, response)
    mask = list(mask)
    n_prompt = len(mask) - mask.count(1)
    if mask[n_prompt:].count(1) != len(mask) - n_prompt:
        raise ValueError("tokenizer.encode_pair must return a response mask of the form [0]*P + [1]*R")
    p, r = list(ids[:n_prompt]), list(ids[n_prompt:])
    n_p, n_r = len(p), len(r)
    p_trunc = len(p) > max_prompt_len
    if p_trunc:
        bos = getattr(tok, "bos_id", None)
        if bos is not None and p and p[0] == bos and max_prompt_len >= 1:
            p = [bos] + (p[len(p) - (max_prompt_len - 1) :] if max_prompt_len > 1 else [])
        else:
            p = p[len(p) - max_prompt_len :]
    r_trunc = len(r) > max_response_len
    if r_trunc:
        r = r[:max_response_len]
    return Tokenized(p, r, p_trunc, r_trunc, n_p, n_r)


# ----------------------------------------------------------------------------------------------------------
# Truncation measured before training


def _responses(kind: str, rec: dict) -> list[tuple[str, str]]:
    if kind == "pairwise":
        return [("chosen", _text(rec["chosen"])), ("rejected", _text(rec["rejected"]))]
    if kind in ("unpaired", "scored"):
        return [("completion", _text(rec["completion"]))]
    return [(f"completions[{i}]", _text(c)) for i, c in enumerate(rec["completions"])]


def measure_truncation(
    records: Sequence[tuple[int, dict]],
    *,
    kind: str,
    tokenizer: Any,
    max_prompt_len: int,
    max_response_len: int,
    path: str = "<records>",
) -> dict[str, Any]:
    """What the truncation policy (module docstring) does to ``records``, measured before any batch.

    Args:
      records: ``(line, record)`` pairs (:func:`jalign.data.readers.read_with_lines`; line = 1-based line or
        row, or the record's position for in-memory data).
      kind, tokenizer, max_prompt_len, max_response_len: as for :func:`make_dataset`.
      path: the file named in the errors.

    Returns:
      A JSON-serialisable dict: ``examples``, ``responses`` (counted over every response of every record),
      ``responses_truncated``, ``response_tokens_cut`` (``total``, ``max``: tokens past the budget),
      ``prompts_truncated``, ``prompt_tokens_cut``, the budgets, and ``errors``: a
      :class:`~jalign.data.schema.RecordError` dict for every record whose responses become identical after
      truncation (pairwise chosen == rejected, two listwise completions equal): training on it would give no
      signal (the DPO loss stays at log 2 with zero gradient).
    """
    n_resp = n_rtrunc = cut_total = cut_max = n_ptrunc = p_cut_total = 0
    errors: list[RecordError] = []
    for line, rec in records:
        prompt = _text(rec["prompt"])
        toks = [(name, tokenize_pair(tokenizer, prompt, resp, max_prompt_len, max_response_len))
                for name, resp in _responses(kind, rec)]
        n_ptrunc += toks[0][1].prompt_truncated
        p_cut_total += max(0, toks[0][1].prompt_tokens - len(toks[0][1].prompt))
        for _, t in toks:
            n_resp += 1
            cut = t.response_tokens - len(t.response)
            if cut > 0:
                n_rtrunc += 1
                cut_total += cut
                cut_max = max(cut_max, cut)
        seen: dict[tuple, str] = {}
        for name, t in toks:
            key = (tuple(t.prompt), tuple(t.response))
            if key in seen and len(toks) > 1:
                errors.append(RecordError(
                    str(path), int(line), name,
                    f"identical to {seen[key]!r} after truncation to {max_response_len} response tokens (the "
                    f"responses differ only after token {len(t.response)}; raise data.seq_len or lower "
                    f"max_prompt_len={max_prompt_len})"))
                break
            seen[key] = name
    return {"path": str(path), "max_prompt_len": int(max_prompt_len), "max_response_len": int(max_response_len),
            "examples": len(records), "responses": n_resp, "responses_truncated": n_rtrunc,
            "response_tokens_cut": {"total": cut_total, "max": cut_max}, "prompts_truncated": n_ptrunc,
            "prompt_tokens_cut": {"total": p_cut_total}, "errors": [e.to_dict() for e in errors]}


def truncation_summary(m: dict[str, Any]) -> str:
    """One line for :func:`measure_truncation`'s result."""
    rc, n = m["responses_truncated"], m["responses"]
    line = (f"{m['path']}: truncation: {rc} of {n} responses ({100.0 * rc / max(n, 1):.1f}%) cut to "
            f"{m['max_response_len']} tokens")
    if rc:
        line += (f" (by {m['response_tokens_cut']['total'] / rc:.1f} tokens on average, at most "
                 f"{m['response_tokens_cut']['max']})")
    line += f"; {m['prompts_truncated']} of {m['examples']} prompts cut to {m['max_prompt_len']} tokens (from the left)"
    if m["errors"]:
        line += f"; {len(m['errors'])} record(s) with responses identical after truncation"
    return line


def check_truncation(
    records: Sequence[tuple[int, dict]],
    *,
    kind: str,
    tokenizer: Any,
    max_prompt_len: int,
    max_response_len: int,
    path: str = "<records>",
    skip_invalid: bool = False,
) -> tuple[list[dict], dict[str, Any]]:
    """:func:`measure_truncation`, logged in one line; records that truncation makes degenerate are refused.

    Returns ``(records to train on, measurement)``.

    Raises:
      InvalidDataError: a record whose responses become identical after truncation (file:line, field), unless
        ``skip_invalid`` (then it is dropped and counted in the log).
    """
    m = measure_truncation(records, kind=kind, tokenizer=tokenizer, max_prompt_len=max_prompt_len,
                           max_response_len=max_response_len, path=path)
    (log.warning if m["responses_truncated"] or m["errors"] else log.info)("%s", truncation_summary(m))
    bad = {e["line"] for e in m["errors"]}
    if bad and not skip_invalid:
        raise InvalidDataError([RecordError(**e) for e in m["errors"]])
    if bad:
        shown = "\n  ".join(str(RecordError(**e)) for e in m["errors"][:20])
        log.warning("dropped %d record(s) of %s whose responses are identical after truncation:\n  %s",
                    len(bad), path, shown)
    return [r for line, r in records if line not in bad], m


def _rows(
    prompts: Sequence[list[int]], responses: Sequence[list[int]], n_rows: int, seq_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded ``[n_rows, T]`` ids, response mask and attention mask, plus prompt/response lengths.

    Rows past ``len(prompts)`` are all padding (lengths 0).
    """
    ids = np.full((n_rows, seq_len), pad_id, np.int32)
    p_len = np.zeros(n_rows, np.int32)
    r_len = np.zeros(n_rows, np.int32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, : len(p) + len(r)] = p + r
        p_len[i], r_len[i] = len(p), len(r)
    pos = np.arange(seq_len, dtype=np.int32)
    end = (p_len + r_len)[:, None]
    att = (pos < end).astype(np.int32)
    mask = ((pos >= p_len[:, None]) & (pos < end)).astype(np.int32)
    return ids, mask, att, p_len, r_len


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else x


@dataclasses.dataclass(frozen=True)
class Featurizer:
    """Tokenise one record (``__call__``) and collate a list of them into fixed-shape arrays (``collate``).

    See the module docstring for the batch fields; per-example work is list-only, the padding and masks are
    built once per batch with numpy.
    """

    kind: str
    tokenizer: Any
    max_prompt_len: int
    max_response_len: int
    max_responses: int | None = None  # listwise: K slots per prompt (more completions is an error)
    kl_pairs: bool = False  # unpaired: add KTO's mismatched (prompt i, completion i+1 mod n) rows

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown {self.kind!r}; valid: {KINDS}")
        if self.max_prompt_len < 1 or self.max_response_len < 1:
            raise ValueError(
                f"max_prompt_len and max_response_len must be >= 1, got {self.max_prompt_len}, {self.max_response_len}"
            )
        if self.kl_pairs and self.kind != "unpaired":
            raise ValueError(f"kl_pairs: only for unpaired (KTO) data, not {self.kind}")
        if self.kind == "listwise" and (self.max_responses is None or self.max_responses < 2):
            raise ValueError(
                f"listwise pipelines need max_responses >= 2 (K slots), got {self.max_responses}"
            )

    @property
    def seq_len(self) -> int:
        return self.max_prompt_len + self.max_response_len

    def _tok(self, prompt: str, response: str) -> Tokenized:
        return tokenize_pair(self.tokenizer, prompt, response, self.max_prompt_len, self.max_response_len)

    def __call__(self, item: tuple[int, dict]) -> dict[str, Any]:
        index, rec = item
        prompt = _text(rec["prompt"])
        if self.kind == "pairwise":
            has = "score_chosen" in rec and bool(rec.get("has_scores", True))
            return {
                "index": index,
                "chosen": self._tok(prompt, _text(rec["chosen"])),
                "rejected": self._tok(prompt, _text(rec["rejected"])),
                "score_chosen": rec["score_chosen"] if has else 0.0,
                "score_rejected": rec["score_rejected"] if has else 0.0,
                "has_scores": has,
            }
        if self.kind in ("unpaired", "scored"):
            ex = {"index": index, "seq": self._tok(prompt, _text(rec["completion"]))}
            if self.kind == "unpaired":
                ex["desirable"] = bool(rec["label"])
            else:
                ex["reward"] = float(rec["reward"])
            return ex
        comps = [_text(c) for c in rec["completions"]]
        if len(comps) > self.max_responses:
            raise ValueError(
                f"example {index}: {len(comps)} completions > max_responses={self.max_responses}; raise "
                "max_responses (responses are never dropped silently)"
            )
        return {
            "index": index,
            "seqs": [self._tok(prompt, c) for c in comps],
            "scores": list(rec["scores"]),
            "ranks": list(rec["ranks"]),
        }

    def collate(self, items: Sequence[dict[str, Any]], batch_size: int) -> dict[str, np.ndarray]:
        """Stack ``items`` into ``[batch_size, ...]`` arrays; rows past ``len(items)`` are invalid padding."""
        B, n, T, pad = batch_size, len(items), self.seq_len, self.tokenizer.pad_id
        valid = np.zeros(B, np.bool_)
        valid[:n] = True
        index = np.zeros(B, np.int64)
        index[:n] = [it["index"] for it in items]
        out: dict[str, np.ndarray] = {"index": index, "valid_example": valid}

        def col(values: list, dtype) -> np.ndarray:
            a = np.zeros(B, dtype)
            a[:n] = values
            return a

        if self.kind == "pairwise":
            for side in ("chosen", "rejected"):
                ts = [it[side] for it in items]
                ids, mask, att, p_len, r_len = _rows(
                    [t.prompt for t in ts], [t.response for t in ts], B, T, pad
                )
                out.update({f"{side}_ids": ids, f"{side}_mask": mask, f"{side}_attention_mask": att,
                            f"{side}_lengths": r_len, f"{side}_truncated": col([t.response_truncated for t in ts], np.bool_)})  # fmt: skip
                if side == "chosen":
                    out["prompt_lengths"] = p_len
                    out["prompt_truncated"] = col([t.prompt_truncated for t in ts], np.bool_)
            for k, dt in (
                ("score_chosen", np.float32),
                ("score_rejected", np.float32),
                ("has_scores", np.bool_),
            ):
                out[k] = col([it[k] for it in items], dt)
        elif self.kind in ("unpaired", "scored"):
            ts = [it["seq"] for it in items]
            ids, mask, att, p_len, r_len = _rows([t.prompt for t in ts], [t.response for t in ts], B, T, pad)
            out.update(ids=ids, mask=mask, attention_mask=att, prompt_lengths=p_len, lengths=r_len,
                       prompt_truncated=col([t.prompt_truncated for t in ts], np.bool_),
                       response_truncated=col([t.response_truncated for t in ts], np.bool_))  # fmt: skip
            if self.kind == "unpaired":
                out["desirable"] = col([it["desirable"] for it in items], np.bool_)
            else:
                out["reward"] = col([it["reward"] for it in items], np.float32)
            if self.kl_pairs:
                shifted = [ts[(i + 1) % n].response for i in range(n)]
                ids, mask, att, _, r_len = _rows([t.prompt for t in ts], shifted, B, T, pad)
                out.update(kl_ids=ids, kl_mask=mask, kl_attention_mask=att, kl_lengths=r_len)
        else:
            K = self.max_responses
            prompts, responses, slots = [], [], []
            for b, it in enumerate(items):
                for k, t in enumerate(it["seqs"]):
                    prompts.append(t.prompt)
                    responses.append(t.response)
                    slots.append(b * K + k)
            ids_f, mask_f, att_f, p_f, r_f = _rows(prompts, responses, len(prompts), T, pad)
            ids = np.full((B * K, T), pad, np.int32)
            mask, att = np.zeros((B * K, T), np.int32), np.zeros((B * K, T), np.int32)
            lengths, kvalid = np.zeros(B * K, np.int32), np.zeros(B * K, np.bool_)
            trunc = np.zeros(B * K, np.bool_)
            ids[slots], mask[slots], att[slots], lengths[slots], kvalid[slots] = (
                ids_f,
                mask_f,
                att_f,
                r_f,
                True,
            )
            trunc[slots] = [t.response_truncated for it in items for t in it["seqs"]]
            scores, ranks = np.zeros((B, K), np.float32), np.zeros((B, K), np.int32)
            for b, it in enumerate(items):
                scores[b, : len(it["scores"])] = it["scores"]
                ranks[b, : len(it["ranks"])] = it["ranks"]
            out.update(ids=ids.reshape(B, K, T), mask=mask.reshape(B, K, T), attention_mask=att.reshape(B, K, T),
                       lengths=lengths.reshape(B, K), valid=kvalid.reshape(B, K),
                       response_truncated=trunc.reshape(B, K), scores=scores, ranks=ranks,
                       prompt_lengths=col([len(it["seqs"][0].prompt) for it in items], np.int32),
                       prompt_truncated=col([it["seqs"][0].prompt_truncated for it in items], np.bool_))  # fmt: skip
        return out


def _decode_source(kind: str):
    from jalign.data.tfds_builders import decode_example

    def fn(rec: dict) -> dict:
        if isinstance(rec.get("prompt"), bytes):
            return decode_example(kind, rec)
        return rec

    return fn


_PACK_META = {
    "pairwise": (("index", np.int64), ("prompt_lengths", np.int32), ("chosen_lengths", np.int32),
                 ("rejected_lengths", np.int32), ("score_chosen", np.float32), ("score_rejected", np.float32),
                 ("has_scores", np.bool_)),
    "unpaired": (("index", np.int64), ("prompt_lengths", np.int32), ("lengths", np.int32), ("desirable", np.bool_)),
    "scored": (("index", np.int64), ("prompt_lengths", np.int32), ("lengths", np.int32), ("reward", np.float32)),
}  # fmt: skip
_PACK_SEQ = ("ids", "mask", "side", "pos")


def _pack_element(ex: dict[str, Any], kind: str) -> dict[str, Any]:
    """One tokenised example -> the variable-length element the packer places into a row."""
    seqs = [ex["chosen"], ex["rejected"]] if kind == "pairwise" else [ex["seq"]]
    ids, mask, side, pos = [], [], [], []
    for s_i, t in enumerate(seqs, start=1):
        n = len(t.prompt) + len(t.response)
        ids += t.prompt + t.response
        mask += [0] * len(t.prompt) + [1] * len(t.response)
        side += [s_i] * n
        pos += list(range(n))
    el: dict[str, Any] = {
        k: np.asarray(v, np.int32) for k, v in zip(_PACK_SEQ, (ids, mask, side, pos), strict=True)
    }
    el["index"] = ex["index"]
    el["prompt_lengths"] = len(seqs[0].prompt)
    if kind == "pairwise":
        el["chosen_lengths"], el["rejected_lengths"] = len(seqs[0].response), len(seqs[1].response)
        for k in ("score_chosen", "score_rejected", "has_scores"):
            el[k] = ex[k]
    else:
        el["lengths"] = len(seqs[0].response)
        k = "desirable" if kind == "unpaired" else "reward"
        el[k] = ex[k]
    return el


def _finish_packed_row(
    row: dict[str, Any], kind: str, max_segments: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Packer output -> fixed shapes: ``[L]`` token fields and ``[S]`` per-example (segment) fields."""
    seg = row["ids_segment_ids"].astype(np.int32)
    n_sides = 2 if kind == "pairwise" else 1
    out = {
        "ids": np.where(seg > 0, row["ids"], pad_id).astype(np.int32),
        "mask": row["mask"].astype(np.int32),
        "side": row["side"].astype(np.int32),
        "positions": row["pos"].astype(np.int32),
        "segment_ids": seg,
        "sequence_ids": np.where(seg > 0, (seg - 1) * n_sides + row["side"], 0).astype(np.int32),
    }
    n = len(row["index"])
    for k, dt in _PACK_META[kind]:
        a = np.zeros(max_segments, dt)
        a[:n] = row[k]
        out[k] = a
    out["segment_valid"] = np.arange(max_segments) < n
    return out


def make_dataset(
    source: Sequence[dict],
    *,
    kind: str,
    tokenizer: Any,
    batch_size: int,
    max_prompt_len: int,
    max_response_len: int,
    max_responses: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    num_threads: int = 0,
    kl_pairs: bool = False,
    pack: bool = False,
    pack_len: int | None = None,
    max_segments: int = 16,
) -> grain.IterDataset:
    """A grain ``IterDataset`` of fixed-shape numpy batches from a random-access source of records.

    Args:
      source: canonical records (a list from :func:`jalign.data.readers.read` or :mod:`jalign.data.builtin`)
        or a TFDS data source (``builder.as_data_source()[split]``), anything with ``len`` and ``[]``.
      kind: ``pairwise``, ``unpaired``, ``listwise`` or ``scored``.
      tokenizer: object with the :class:`Tokenizer` interface.
      batch_size: examples per batch (per process).
      max_prompt_len, max_response_len: token budgets; see the truncation policy in the module docstring.
      max_responses: listwise only, K slots per prompt.
      seed: shuffling seed (the same on every process; each epoch is reshuffled deterministically).
      shuffle: shuffle or keep the source order.
      num_epochs: passes over the data; None = forever.
      shard_index, shard_count: this process's shard; default ``jax.process_index()`` /
        ``jax.process_count()``.
      drop_remainder: drop a final partial batch; if False it is padded to ``batch_size`` with rows whose
        ``valid_example`` is False.
      num_threads: grain read threads (0 = in the calling thread; deterministic either way).
      kl_pairs: unpaired only: also emit ``kl_ids``/``kl_mask``/``kl_attention_mask``/``kl_lengths``, the
        mismatched pairs (prompt of example i, completion of example i + 1 mod n, n = real examples in the
        batch) whose log-ratios give KTO's KL reference point z0 (Ethayarajh et al., 2024).
      pack: pack several examples per row instead of padding each (not for listwise); see "Packing".
      pack_len: row length L when packing (default: what one example can need, ``(2 if pairwise else 1)
        * (max_prompt_len + max_response_len)``; smaller is an error, so no example is ever cut).
      max_segments: examples per packed row at most (S).

    Returns:
      ``grain.IterDataset``; ``iter(ds)`` has ``get_state()``/``set_state()`` (JSON-serialisable).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    if shard_index is None or shard_count is None:
        import jax

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index must be in [0, shard_count={shard_count}), got {shard_index}")
    feat = Featurizer(kind, tokenizer, max_prompt_len, max_response_len, max_responses, kl_pairs)
    if pack and kl_pairs:
        raise ValueError("kl_pairs: not available with pack=True (use padding)")
    n = len(source)
    per_shard = n // shard_count
    if per_shard == 0:
        raise ValueError(f"{n} examples cannot fill {shard_count} shards")
    if n % shard_count:
        log.warning(
            "sharding %d examples over %d processes: the last %d (indices %d..%d) are left out so that every "
            "shard has %d", n, shard_count, n % shard_count, per_shard * shard_count, n - 1, per_shard,
        )  # fmt: skip
    ds = grain.MapDataset.range(n)[shard_index : per_shard * shard_count : shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    decode = _decode_source(kind)
    read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(1, num_threads))
    if pack:
        return _packed(
            ds, feat, decode, source, read_options, batch_size, drop_remainder, pack_len, max_segments
        )
    ds = ds.map(lambda i: feat((int(i), decode(source[int(i)]))))
    collate = functools.partial(feat.collate, batch_size=batch_size)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=collate)
    return ds.to_iter_dataset(read_options)


def _packed(ds, feat, decode, source, read_options, batch_size, drop_remainder, pack_len, max_segments):
    from grain.experimental import FirstFitPackIterDataset

    kind = feat.kind
    if kind == "listwise":
        raise ValueError("pack: packing is not supported for listwise data (use padding)")
    need = (2 if kind == "pairwise" else 1) * feat.seq_len
    pack_len = need if pack_len is None else pack_len
    if pack_len < need:
        raise ValueError(
            f"pack_len={pack_len} < {need}, the most one example can need; no example is ever cut"
        )
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    it = ds.map(lambda i: _pack_element(feat((int(i), decode(source[int(i)]))), kind)).to_iter_dataset(
        read_options
    )
    it = FirstFitPackIterDataset(
        it,
        length_struct={k: pack_len for k in _PACK_SEQ},
        num_packing_bins=batch_size,
        shuffle_bins=False,
        meta_features=tuple(k for k, _ in _PACK_META[kind]),
        max_sequences_per_bin=max_segments,
    )
    it = it.map(
        functools.partial(
            _finish_packed_row, kind=kind, max_segments=max_segments, pad_id=feat.tokenizer.pad_id
        )
    )
    return it.batch(batch_size, drop_remainder=drop_remainder)


def save_iterator_state(iterator: Any, path: str | Path) -> Path:
    """Write ``iterator.get_state()`` as JSON (atomically), to keep beside a training checkpoint."""
    state = iterator.get_state()
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(state)))


def restore_iterator_state(iterator: Any, path: str | Path) -> None:
    """``iterator.set_state`` from a file written by :func:`save_iterator_state`."""
    iterator.set_state(json.loads(Path(path).read_text()))

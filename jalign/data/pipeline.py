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
* unpaired: ``ids``, ``mask``, ``attention_mask``, ``desirable`` (bool), ``prompt_lengths``, ``lengths``;
* scored: ``ids``, ``mask``, ``attention_mask``, ``reward`` (float32), ``prompt_lengths``, ``lengths``;
* listwise: ``ids``/``mask``/``attention_mask`` ``[B, K, T]``, ``scores`` ``[B, K]`` (float32), ``ranks``,
  ``lengths``, ``valid`` ``[B, K]`` (False for padding slots when a prompt has fewer than K responses);

and always ``index`` (position of the example in the unsharded source), ``valid_example`` ``[B]`` (False
only on the padding rows of a final partial batch when ``drop_remainder=False``).

Order: the source is sharded first (strided: shard ``i`` of ``n`` takes examples ``i, i+n, ...``, every shard
gets the same count ``len // n``; the up-to ``n - 1`` left over are logged, not silently lost), then
shuffled with ``seed`` (a global permutation of the shard, different each epoch), repeated, tokenised and
batched. Everything is index-based, so the iterator state is just ``{"next_index": k}``:
``it.get_state()`` is JSON-serialisable and ``it.set_state(state)`` on a fresh iterator of the same
pipeline resumes with exactly the batches the first would have produced next.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import grain
import numpy as np

from jalign.data.io import atomic_write
from jalign.data.schema import KINDS

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


def tokenize_pair(
    tok: Tokenizer, prompt: str, response: str, max_prompt_len: int, max_response_len: int
) -> Tokenized:
    """Encode with ``tok.encode_pair`` and apply the truncation policy (module docstring)."""
    ids, mask = tok.encode_pair(prompt, response)
    n_prompt = len(mask) - sum(1 for m in mask if m)
    if any(mask[:n_prompt]) or not all(mask[n_prompt:]):
        raise ValueError("tokenizer.encode_pair must return a response mask of the form [0]*P + [1]*R")
    p, r = list(ids[:n_prompt]), list(ids[n_prompt:])
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
    return Tokenized(p, r, p_trunc, r_trunc)


def _row(t: Tokenized, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_p, n_r = len(t.prompt), len(t.response)
    ids = np.full(seq_len, pad_id, np.int32)
    ids[: n_p + n_r] = t.prompt + t.response
    mask = np.zeros(seq_len, np.int32)
    mask[n_p : n_p + n_r] = 1
    att = np.zeros(seq_len, np.int32)
    att[: n_p + n_r] = 1
    return ids, mask, att


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else x


@dataclasses.dataclass(frozen=True)
class Featurizer:
    """Record -> dict of fixed-shape numpy arrays (one example; see the module docstring for fields)."""

    kind: str
    tokenizer: Any
    max_prompt_len: int
    max_response_len: int
    max_responses: int | None = None  # listwise K (slots); default: the record's own count is an error if > K

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: unknown {self.kind!r}; valid: {KINDS}")
        if self.max_prompt_len < 1 or self.max_response_len < 1:
            raise ValueError(
                f"max_prompt_len and max_response_len must be >= 1, got {self.max_prompt_len}, {self.max_response_len}"
            )
        if self.kind == "listwise" and (self.max_responses is None or self.max_responses < 2):
            raise ValueError(
                f"listwise pipelines need max_responses >= 2 (K slots), got {self.max_responses}"
            )

    @property
    def seq_len(self) -> int:
        return self.max_prompt_len + self.max_response_len

    def one(self, prompt: str, response: str) -> tuple[Tokenized, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        t = tokenize_pair(self.tokenizer, prompt, response, self.max_prompt_len, self.max_response_len)
        return t, _row(t, self.seq_len, self.tokenizer.pad_id)

    def __call__(self, item: tuple[int, dict]) -> dict[str, np.ndarray]:
        index, rec = item
        prompt = _text(rec["prompt"])
        out: dict[str, Any] = {"index": np.int64(index), "valid_example": np.bool_(True)}
        if self.kind == "pairwise":
            tc, (ci, cm, ca) = self.one(prompt, _text(rec["chosen"]))
            tr, (ri, rm, ra) = self.one(prompt, _text(rec["rejected"]))
            has = "score_chosen" in rec and bool(rec.get("has_scores", True))
            out.update(
                chosen_ids=ci, chosen_mask=cm, chosen_attention_mask=ca,
                rejected_ids=ri, rejected_mask=rm, rejected_attention_mask=ra,
                prompt_lengths=np.int32(len(tc.prompt)),
                chosen_lengths=np.int32(len(tc.response)), rejected_lengths=np.int32(len(tr.response)),
                score_chosen=np.float32(rec["score_chosen"] if has else 0.0),
                score_rejected=np.float32(rec["score_rejected"] if has else 0.0),
                has_scores=np.bool_(has),
                prompt_truncated=np.bool_(tc.prompt_truncated),
                chosen_truncated=np.bool_(tc.response_truncated), rejected_truncated=np.bool_(tr.response_truncated),
            )  # fmt: skip
        elif self.kind in ("unpaired", "scored"):
            t, (i, m, a) = self.one(prompt, _text(rec["completion"]))
            out.update(
                ids=i, mask=m, attention_mask=a, prompt_lengths=np.int32(len(t.prompt)),
                lengths=np.int32(len(t.response)), prompt_truncated=np.bool_(t.prompt_truncated),
                response_truncated=np.bool_(t.response_truncated),
            )  # fmt: skip
            if self.kind == "unpaired":
                out["desirable"] = np.bool_(rec["label"])
            else:
                out["reward"] = np.float32(rec["reward"])
        else:
            comps = [_text(c) for c in rec["completions"]]
            K = self.max_responses
            if len(comps) > K:
                raise ValueError(
                    f"example {index}: {len(comps)} completions > max_responses={K}; raise max_responses "
                    "(responses are never dropped silently)"
                )
            T = self.seq_len
            ids = np.full((K, T), self.tokenizer.pad_id, np.int32)
            mask, att = np.zeros((K, T), np.int32), np.zeros((K, T), np.int32)
            lengths, ranks = np.zeros(K, np.int32), np.zeros(K, np.int32)
            scores, valid, trunc = np.zeros(K, np.float32), np.zeros(K, np.bool_), np.zeros(K, np.bool_)
            p_len, p_tr = 0, False
            for k, c in enumerate(comps):
                t, (ids[k], mask[k], att[k]) = self.one(prompt, c)
                lengths[k], valid[k], trunc[k] = len(t.response), True, t.response_truncated
                p_len, p_tr = len(t.prompt), t.prompt_truncated
            scores[: len(comps)] = np.asarray(rec["scores"], np.float32)
            ranks[: len(comps)] = np.asarray(rec["ranks"], np.int32)
            out.update(ids=ids, mask=mask, attention_mask=att, lengths=lengths, scores=scores, ranks=ranks,
                       valid=valid, response_truncated=trunc, prompt_lengths=np.int32(p_len),
                       prompt_truncated=np.bool_(p_tr))  # fmt: skip
        return out


def _pad_batch(batch_size: int, pad_id: int):
    """batch_fn: stack examples; pad a short final batch to ``batch_size`` with invalid rows."""

    def fn(items: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        out = {k: np.stack([it[k] for it in items]) for k in items[0]}
        n = len(items)
        if n < batch_size:
            for k, v in out.items():
                fill = pad_id if k.endswith("ids") else 0
                pad = np.full((batch_size - n, *v.shape[1:]), fill, v.dtype)
                out[k] = np.concatenate([v, pad])
        return out

    return fn


def _decode_source(kind: str):
    from jalign.data.tfds_builders import decode_example

    def fn(rec: dict) -> dict:
        if isinstance(rec.get("prompt"), bytes):
            return decode_example(kind, rec)
        return rec

    return fn


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
    feat = Featurizer(kind, tokenizer, max_prompt_len, max_response_len, max_responses)
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
    ds = ds.map(lambda i: (int(i), decode(source[int(i)])))
    ds = ds.map(feat)
    ds = ds.batch(
        batch_size, drop_remainder=drop_remainder, batch_fn=_pad_batch(batch_size, tokenizer.pad_id)
    )
    return ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(1, num_threads))
    )


def save_iterator_state(iterator: Any, path: str | Path) -> Path:
    """Write ``iterator.get_state()`` as JSON (atomically), to keep beside a training checkpoint."""
    state = iterator.get_state()
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(state)))


def restore_iterator_state(iterator: Any, path: str | Path) -> None:
    """``iterator.set_state`` from a file written by :func:`save_iterator_state`."""
    iterator.set_state(json.loads(Path(path).read_text()))

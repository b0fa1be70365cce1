"""Trainer data sources over users' own files, and unpaired data from the built-in pairwise sets.

Registered names (``data.name``; ``data.kwargs`` below):

* ``file_pairwise`` / ``file_sft`` / ``file_prompts`` — a local preference file in any layout
  :func:`jalign.data.readers.read` knows (HH-RLHF, UltraFeedback, TL;DR, flat pairwise, OpenAssistant, …;
  JSONL/JSON/Parquet), as pairwise batches, SFT batches on the chosen responses, or prompts for online runs.
* ``file_unpaired`` — a KTO-style file (``prompt``/``completion``/``label``) as unpaired batches, with the
  mismatched ``kl_*`` pairs for KTO's reference point.
* ``file_listwise`` — a listwise file (``prompt``/``responses``/``scores`` or ranks) as ``[B, K, T]`` batches
  (``list_mask`` marks the real entries).
* ``builtin_unpaired`` — a built-in pairwise set split into desirable (chosen) and undesirable (rejected)
  examples, so unpaired losses run on the same data as the pairwise ones.

kwargs of the ``file_*`` sources: ``path`` (required), ``format`` (None = detect), ``tokenizer`` (``"byte"`` or
the path of a Hugging Face ``tokenizer.json``), ``max_prompt_len`` (tokens; the response budget is
``seq_len - max_prompt_len``), ``skip_invalid`` (False: an invalid record stops the run with its file, line and
field; True: skipped and reported), ``max_responses`` (listwise K, default: the longest list in the file).
The whole file is read and validated before the first batch, so a bad record fails the run before any step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jalign.tokenizers import ByteTokenizer, HFTokenizer
from jalign.train.plugins import PAIRWISE_FIELDS, GrainBatchSource, to_prompts, to_sft
from jalign.train.registry import register_data

SEQ = ("ids", "mask", "attention_mask")


def _tokenizer(spec: str | Any):
    if spec == "byte":
        return ByteTokenizer()
    if isinstance(spec, str):
        return HFTokenizer(spec)
    return spec


def _check_lengths(batch_size, seq_len, max_prompt_len, process_count, name):
    if batch_size % process_count:
        raise ValueError(f"{name}: data.batch_size={batch_size} is not divisible by process_count={process_count}")
    if not 1 <= max_prompt_len < seq_len:
        raise ValueError(f"{name}: data.kwargs.max_prompt_len={max_prompt_len} must be in [1, data.seq_len="
                         f"{seq_len})")


def _dataset(records, kind, tok, *, batch_size, seq_len, seed, process_index, process_count, max_prompt_len,
             **kw):
    from jalign.data.pipeline import make_dataset

    return make_dataset(records, kind=kind, tokenizer=tok, batch_size=batch_size // process_count,
                        max_prompt_len=max_prompt_len, max_response_len=seq_len - max_prompt_len, seed=seed,
                        num_epochs=None, shard_index=process_index, shard_count=process_count, **kw)


def _read(name, path, format, kind, skip_invalid):
    from jalign.data import readers

    if not path:
        raise ValueError(f"{name}: data.kwargs.path is required (a local data file)")
    records, _ = readers.read(path, format=format, kind=kind, skip_invalid=skip_invalid)
    if not records:
        raise ValueError(f"{name}: {path} has no valid {kind} records")
    return records


def _pairwise_file(adapt_name):
    name = f"file_{adapt_name}"

    @register_data(name)
    def factory(*, batch_size, seq_len, seed, process_index=0, process_count=1, path: str = "",
                format: str | None = None, tokenizer: str = "byte", max_prompt_len: int = 64,
                skip_invalid: bool = False):
        _check_lengths(batch_size, seq_len, max_prompt_len, process_count, name)
        tok = _tokenizer(tokenizer)
        records = _read(name, path, format, "pairwise", skip_invalid)
        ds = _dataset(records, "pairwise", tok, batch_size=batch_size, seq_len=seq_len, seed=seed,
                      process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len)
        adapt = {"pairwise": lambda b: {f: b[f] for f in PAIRWISE_FIELDS}, "sft": to_sft,
                 "prompts": lambda b: to_prompts(b, max_prompt_len, tok.pad_id)}[adapt_name]
        return GrainBatchSource(ds, adapt)

    return factory


for _n in ("pairwise", "sft", "prompts"):
    _pairwise_file(_n)


def unpaired_batch(b: dict) -> dict[str, np.ndarray]:
    """Pipeline unpaired batch -> trainer fields (``desirable`` as float32 0/1, ``kl_*`` when present)."""
    out = {f: b[f] for f in SEQ}
    out["desirable"] = np.asarray(b["desirable"], np.float32)
    out |= {f"kl_{f}": b[f"kl_{f}"] for f in SEQ if f"kl_{f}" in b}
    return out


@register_data("file_unpaired")
def _file_unpaired(*, batch_size, seq_len, seed, process_index=0, process_count=1, path: str = "",
                   format: str | None = None, tokenizer: str = "byte", max_prompt_len: int = 64,
                   skip_invalid: bool = False, kl_pairs: bool = True):
    _check_lengths(batch_size, seq_len, max_prompt_len, process_count, "file_unpaired")
    records = _read("file_unpaired", path, format, "unpaired", skip_invalid)
    ds = _dataset(records, "unpaired", _tokenizer(tokenizer), batch_size=batch_size, seq_len=seq_len, seed=seed,
                  process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                  kl_pairs=kl_pairs)
    return GrainBatchSource(ds, unpaired_batch)


def listwise_batch(b: dict) -> dict[str, np.ndarray]:
    """Pipeline listwise batch -> trainer fields (``valid`` becomes ``list_mask``)."""
    return {**{f: b[f] for f in SEQ}, "scores": b["scores"], "list_mask": b["valid"]}


@register_data("file_listwise")
def _file_listwise(*, batch_size, seq_len, seed, process_index=0, process_count=1, path: str = "",
                   format: str | None = None, tokenizer: str = "byte", max_prompt_len: int = 64,
                   skip_invalid: bool = False, max_responses: int | None = None):
    _check_lengths(batch_size, seq_len, max_prompt_len, process_count, "file_listwise")
    records = _read("file_listwise", path, format, "listwise", skip_invalid)
    k = max(len(r["completions"]) for r in records)
    if max_responses is not None and max_responses < k:
        raise ValueError(f"file_listwise: data.kwargs.max_responses={max_responses} is smaller than the longest "
                         f"list in {path} ({k} responses)")
    ds = _dataset(records, "listwise", _tokenizer(tokenizer), batch_size=batch_size, seq_len=seq_len, seed=seed,
                  process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                  max_responses=max_responses or k)
    return GrainBatchSource(ds, listwise_batch)


def pairwise_to_unpaired(records: list[dict]) -> list[dict]:
    """Split pairwise records into unpaired ones: ``(x, y_w)`` desirable, ``(x, y_l)`` undesirable, in order."""
    out = []
    for r in records:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return out


@register_data("builtin_unpaired")
def _builtin_unpaired(*, batch_size, seq_len, seed, process_index=0, process_count=1,
                      dataset: str = "sentiment_pairs", n: int | None = None, data_seed: int | None = None,
                      max_prompt_len: int = 48, kl_pairs: bool = True):
    from jalign.data import builtin

    _check_lengths(batch_size, seq_len, max_prompt_len, process_count, "builtin_unpaired")
    kind = builtin.card(dataset).kind
    if kind != "pairwise":
        raise ValueError(f"data.kwargs.dataset={dataset!r} is a {kind} data set; builtin_unpaired splits a "
                         f"pairwise one: {[m for m in builtin.names() if builtin.card(m).kind == 'pairwise']}")
    records = pairwise_to_unpaired(builtin.load(dataset, n=n, seed=data_seed))
    ds = _dataset(records, "unpaired", ByteTokenizer(), batch_size=batch_size, seq_len=seq_len, seed=seed,
                  process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                  kl_pairs=kl_pairs)
    return GrainBatchSource(ds, unpaired_batch)

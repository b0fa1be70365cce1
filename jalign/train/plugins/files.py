"""Data-source plug-ins over users' own files.

Registered names (``data.name``; ``data.kwargs`` below):

* ``file_pairwise`` / ``file_sft`` / ``file_prompts`` — a local preference file in any layout
  :func:`jalign.data.readers.read` knows (HH-RLHF, UltraFeedback, TL;DR, flat pairwise, OpenAssistant, …;
  JSONL/JSON/Parquet), as pairwise batches, SFT batches on the chosen responses, or prompts for online runs.
* ``file_unpaired`` — a KTO-style file (``prompt``/``completion``/``label``) as unpaired batches, with the
  mismatched ``kl_*`` pairs for KTO's reference point.
* ``file_listwise`` — a listwise file (``prompt``/``responses``/``scores`` or ranks) as ``[B, K, T]`` batches
  (``list_mask`` marks the real entries).

kwargs of the ``file_*`` sources: ``path`` (required), ``format`` (None = detect), ``tokenizer`` (``"byte"`` or
the path of a Hugging Face ``tokenizer.json``), ``max_prompt_len`` (tokens, default 64 or half of ``seq_len`` if shorter; the response budget is
``seq_len - max_prompt_len``), ``skip_invalid`` (False: an invalid record stops the run with its file, line and
field; True: skipped and reported), ``max_responses`` (listwise K, default: the longest list in the file), ``allow_repeat`` (fewer records than
``data.batch_size`` is an error unless True: then a warning).
The whole file is read and validated before the first batch, so a bad record fails the run before any step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jalign.data import readers
from jalign.data.pipeline import check_truncation
from jalign.errors import UserError
from jalign.tokenizers import ByteTokenizer, HFTokenizer
from jalign.train.batch import check_sizes, pairwise, to_listwise, to_prompts, to_sft, to_unpaired
from jalign.train.plugins.data import GrainBatchSource, pipeline_dataset
from jalign.train.plugins.registry import register_data


def _tokenizer(spec: str | Any):
    if spec == "byte":
        return ByteTokenizer()
    if isinstance(spec, str):
        if not Path(spec).is_file():
            raise UserError(f"data.kwargs.tokenizer={spec!r}: neither 'byte' nor an existing tokenizer.json file")
        return HFTokenizer(spec)
    return spec


def _prompt_budget(max_prompt_len, seq_len):
    """``data.kwargs.max_prompt_len``; default 64 tokens, or half of ``data.seq_len`` when that is shorter."""
    return min(64, seq_len // 2) if max_prompt_len is None else max_prompt_len


def _read(name, path, format, kind, skip_invalid):
    """``[(line, record)]`` of ``path``, validated (:func:`jalign.data.readers.read_checked`)."""
    if not path:
        raise UserError(f"{name}: data.kwargs.path is required (a local data file)")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{name}: data.kwargs.path={str(path)!r}: no such file")
    if p.is_dir():
        raise UserError(f"{name}: data.kwargs.path={str(path)!r} is a directory, not a data file")
    records, _ = readers.read_checked(path, format=format, kind=kind, skip_invalid=skip_invalid)
    if not records:
        raise UserError(f"{name}: {path} has no valid {kind} records")
    return records


def _checked(name, records, kind, tok, *, seq_len, max_prompt_len, path, skip_invalid):
    """Truncation measured and logged before training; records that it makes degenerate refused (or dropped
    with ``skip_invalid``): :func:`jalign.data.pipeline.check_truncation`."""
    kept, _ = check_truncation(records, kind=kind, tokenizer=tok, max_prompt_len=max_prompt_len,
                               max_response_len=seq_len - max_prompt_len, path=str(path), skip_invalid=skip_invalid)
    if not kept:
        raise UserError(f"{name}: {path} has no {kind} records left after truncation")
    return kept


def _pairwise_file(adapt_name):
    name = f"file_{adapt_name}"

    @register_data(name)
    def factory(*, batch_size, seq_len, seed, process_index=0, process_count=1, path: str = "",
                format: str | None = None, tokenizer: str = "byte", max_prompt_len: int | None = None,
                skip_invalid: bool = False, allow_repeat: bool = False):
        max_prompt_len = _prompt_budget(max_prompt_len, seq_len)
        check_sizes(name, batch_size=batch_size, seq_len=seq_len, max_prompt_len=max_prompt_len,
                    process_count=process_count)
        tok = _tokenizer(tokenizer)
        records = _checked(name, _read(name, path, format, "pairwise", skip_invalid), "pairwise", tok,
                           seq_len=seq_len, max_prompt_len=max_prompt_len, path=path, skip_invalid=skip_invalid)
        ds = pipeline_dataset(records, "pairwise", tok, batch_size=batch_size, seq_len=seq_len, seed=seed,
                      process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                      where=str(path), allow_repeat=allow_repeat)
        adapt = {"pairwise": pairwise, "sft": to_sft,
                 "prompts": lambda b: to_prompts(b, max_prompt_len, tok.pad_id)}[adapt_name]
        return GrainBatchSource(ds, adapt)

    return factory


for _n in ("pairwise", "sft", "prompts"):
    _pairwise_file(_n)


@register_data("file_unpaired")
def _file_unpaired(*, batch_size, seq_len, seed, process_index=0, process_count=1, path: str = "",
                   format: str | None = None, tokenizer: str = "byte", max_prompt_len: int | None = None,
                   skip_invalid: bool = False, allow_repeat: bool = False, kl_pairs: bool = True):
    max_prompt_len = _prompt_budget(max_prompt_len, seq_len)
    check_sizes("file_unpaired", batch_size=batch_size, seq_len=seq_len, max_prompt_len=max_prompt_len,
                process_count=process_count)
    tok = _tokenizer(tokenizer)
    records = _checked("file_unpaired", _read("file_unpaired", path, format, "unpaired", skip_invalid), "unpaired",
                       tok, seq_len=seq_len, max_prompt_len=max_prompt_len, path=path, skip_invalid=skip_invalid)
    ds = pipeline_dataset(records, "unpaired", tok, batch_size=batch_size, seq_len=seq_len, seed=seed,
                  process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                  kl_pairs=kl_pairs, where=str(path), allow_repeat=allow_repeat)
    return GrainBatchSource(ds, to_unpaired)


@register_data("file_listwise")
def _file_listwise(*, batch_size, seq_len, seed, process_index=0, process_count=1, path: str = "",
                   format: str | None = None, tokenizer: str = "byte", max_prompt_len: int | None = None,
                   skip_invalid: bool = False, allow_repeat: bool = False, max_responses: int | None = None):
    max_prompt_len = _prompt_budget(max_prompt_len, seq_len)
    check_sizes("file_listwise", batch_size=batch_size, seq_len=seq_len, max_prompt_len=max_prompt_len,
                process_count=process_count)
    tok = _tokenizer(tokenizer)
    records = _checked("file_listwise", _read("file_listwise", path, format, "listwise", skip_invalid), "listwise",
                       tok, seq_len=seq_len, max_prompt_len=max_prompt_len, path=path, skip_invalid=skip_invalid)
    k = max(len(r["completions"]) for r in records)
    if max_responses is not None and max_responses < k:
        raise UserError(f"file_listwise: data.kwargs.max_responses={max_responses} is smaller than the longest "
                         f"list in {path} ({k} responses)")
    ds = pipeline_dataset(records, "listwise", tok, batch_size=batch_size, seq_len=seq_len, seed=seed,
                  process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                  max_responses=max_responses or k, where=str(path), allow_repeat=allow_repeat)
    return GrainBatchSource(ds, to_listwise)

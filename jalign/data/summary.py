"""Data-file statistics for ``jalign data inspect``: counts, length histograms, duplicates, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jalign.data.readers import read_with_lines
from jalign.data.schema import DEFAULT_MAX_PROMPT_CHARS

#: Histogram bin edges in characters: [0, 16), [16, 32), ... [8192, inf).
BIN_EDGES = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def length_histogram(lengths: list[int]) -> dict[str, Any]:
    """Counts per bin of :data:`BIN_EDGES` (the last bin is open) plus min / median / max."""
    counts = [0] * len(BIN_EDGES)
    for n in lengths:
        counts[int(np.searchsorted(BIN_EDGES, n, side="right")) - 1] += 1
    labels = [f"{a}-{b - 1}" for a, b in zip(BIN_EDGES[:-1], BIN_EDGES[1:], strict=True)] + [
        f"{BIN_EDGES[-1]}+"
    ]
    stats = {"count": len(lengths)}
    if lengths:
        stats.update(min=int(min(lengths)), median=float(np.median(lengths)), max=int(max(lengths)))
    return {**stats, "bins": dict(zip(labels, counts, strict=True))}


def _response_fields(kind: str) -> tuple[str, ...]:
    return {"pairwise": ("chosen", "rejected"), "unpaired": ("completion",), "scored": ("completion",),
            "listwise": ("completions",)}[kind]  # fmt: skip


def inspect_file(
    path: str | Path,
    *,
    format: str | None = None,
    kind: str | None = None,
    max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
    max_response_chars: int | None = None,
    seq_len: int | None = None,
    max_prompt_len: int | None = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Read ``path`` (without raising on bad records) and summarise it.

    With ``seq_len`` and ``max_prompt_len`` (token budgets, as the trainer's ``data.seq_len`` and
    ``data.kwargs.max_prompt_len``; ``tokenizer`` default: the byte tokenizer) it also measures truncation the
    way training does (:func:`jalign.data.pipeline.measure_truncation`): ``truncation`` holds the counts, and
    records whose responses become identical after truncation count as invalid.

    Returns a JSON-serialisable dict: ``validation`` (the report: counts and every error with line and
    field), ``lengths`` (character-length histograms per text field), ``duplicates`` (records identical to
    an earlier one, and records repeating an earlier prompt), ``identical_pairs`` (records rejected because
    chosen == rejected, or two listwise completions are identical).
    """
    pairs, report = read_with_lines(
        path,
        format=format,
        kind=kind,
        max_prompt_chars=max_prompt_chars,
        max_response_chars=max_response_chars,
    )
    recs = [r for _, r in pairs]
    lengths: dict[str, list[int]] = {"prompt": [len(r["prompt"]) for r in recs]}
    for f in _response_fields(report.kind):
        if f == "completions":
            lengths[f] = [len(c) for r in recs for c in r[f]]
        else:
            lengths[f] = [len(r[f]) for r in recs]
    seen_rec: dict[str, int] = {}
    seen_prompt: dict[str, int] = {}
    dup_records, dup_prompts = [], 0
    for line, r in pairs:
        key = json.dumps({k: v for k, v in r.items() if k != "meta"}, sort_keys=True)
        if key in seen_rec:
            dup_records.append({"line": line, "same_as_line": seen_rec[key]})
        else:
            seen_rec[key] = line
        if r["prompt"] in seen_prompt:
            dup_prompts += 1
        else:
            seen_prompt[r["prompt"]] = line
    identical = [e.to_dict() for e in report.errors if "identical to" in e.message]
    extra: dict[str, Any] = {}
    if report.kind == "unpaired":
        extra["desirable"] = sum(1 for r in recs if r["label"])
    if report.kind == "listwise":
        extra["with_ties"] = sum(1 for r in recs if r["ties"])
        extra["responses_per_prompt"] = length_histogram([len(r["completions"]) for r in recs])["bins"]
    if report.kind == "pairwise":
        scored = [r for r in recs if "score_chosen" in r]
        extra["with_scores"] = len(scored)
        extra["score_chosen_below_rejected"] = sum(
            1 for r in scored if r["score_chosen"] < r["score_rejected"]
        )
    invalid = report.n_invalid
    if seq_len is not None:
        from jalign.data.pipeline import measure_truncation, truncation_summary
        from jalign.tokenizers import ByteTokenizer

        if max_prompt_len is None or not 1 <= max_prompt_len < seq_len:
            raise ValueError(f"max_prompt_len={max_prompt_len} must be in [1, seq_len={seq_len})")
        m = measure_truncation(pairs, kind=report.kind, tokenizer=tokenizer or ByteTokenizer(),
                               max_prompt_len=max_prompt_len, max_response_len=seq_len - max_prompt_len,
                               path=str(path))
        extra["truncation"] = {**m, "summary": truncation_summary(m)}
        invalid += len(m["errors"])
    return {
        "path": str(path),
        "format": report.format,
        "kind": report.kind,
        "records": report.n_records,
        "invalid": invalid,
        "lengths": {k: length_histogram(v) for k, v in lengths.items()},
        "duplicates": {
            "records": len(dup_records),
            "records_detail": dup_records[:50],
            "repeated_prompts": dup_prompts,
        },
        "identical_pairs": {"count": len(identical), "detail": identical[:50]},
        **extra,
        "validation": report.to_dict(),
    }

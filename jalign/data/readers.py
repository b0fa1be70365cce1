"""Readers for local preference data in the layouts people have (JSONL, JSON arrays, Parquet).

Each *format* maps one source record to one canonical record (see :mod:`jalign.data.schema`):

=================  ========  ==================================================================================
format             kind      source fields
=================  ========  ==================================================================================
``hh``             pairwise  ``chosen``, ``rejected``: whole transcripts ("\\n\\nHuman: ..." /
                             "\\n\\nAssistant: ..."); prompt = longest common prefix cut after its last
                             "\\n\\nAssistant:", responses = the rest of each transcript
``ultrafeedback``  pairwise  ``chosen``, ``rejected``: message lists [{role, content}] ending with the
                             assistant turn, identical before it; optional ``score_chosen``/``score_rejected``
``pairwise``       pairwise  ``prompt``, ``chosen``, ``rejected`` plain strings (TL;DR style; alias ``tldr``)
``unpaired``       unpaired  ``prompt``, ``completion``, ``label`` (alias ``kto``)
``listwise``       listwise  ``prompt``, ``completions`` (or ``responses``), ``ranks`` and/or ``scores``
``scored``         scored    ``prompt``, ``completion``, ``reward``
``oasst``          listwise  one message per line: ``message_id``, ``parent_id``, ``role``
                   or pair.  ("prompter"/"assistant"), ``text``, ``rank`` (0 = best among siblings); the ranked
                             assistant replies to one prompter message become one listwise record (or all
                             its strictly ordered pairs, ``kind="pairwise"``)
=================  ========  ==================================================================================

Message lists (UltraFeedback, OpenAssistant) are rendered in the HH transcript style, so that every format
yields the same prompt convention: ``"\\n\\nHuman: {user}\\n\\nAssistant: {reply}...\\n\\nAssistant:"`` as
the prompt and ``" " + reply`` as the response.

Auto-detection (:func:`detect_format`) looks at the keys of the first parsed record; ``format=`` overrides it.

Bad input never disappears silently: every malformed line, non-UTF-8 line, missing/empty/non-finite field,
identical pair or over-long prompt is a :class:`~jalign.data.schema.RecordError` with file, line and field.
:func:`read` raises :class:`~jalign.data.schema.InvalidDataError` on any of them unless
``skip_invalid=True``, in which case the bad records are skipped, logged and listed in the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jalign.data.schema import (
    DEFAULT_MAX_PROMPT_CHARS,
    FieldError,
    InvalidDataError,
    RecordError,
    ValidationReport,
    validate_record,
)
from jalign.errors import MissingFileError, UserError

log = logging.getLogger(__name__)

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_ROLE_TAG = {
    "user": HUMAN,
    "human": HUMAN,
    "prompter": HUMAN,
    "assistant": ASSISTANT,
    "system": "\n\nSystem:",
}


# ----------------------------------------------------------------------------------------------------------
# Raw sources: (line number, parsed object or RecordError)
# ----------------------------------------------------------------------------------------------------------


def _decode_bytes_fields(obj: Any) -> Any:
    """Parquet binary columns arrive as ``bytes``; decode strictly (non-UTF-8 raises UnicodeDecodeError)."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    if isinstance(obj, list):
        return [_decode_bytes_fields(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _decode_bytes_fields(v) for k, v in obj.items()}
    return obj


def iter_raw(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, object)`` for each record of a ``.jsonl``/``.json``/``.parquet`` file.

    ``line`` is the 1-based line number (JSONL) or element/row number (JSON array, Parquet). Lines that
    cannot be decoded or parsed yield a :class:`RecordError` instead of an object. Blank JSONL lines are
    not records and are not yielded.

    Raises:
      MissingFileError: no such file.
      UserError: the file is empty (no bytes but whitespace, or a Parquet file without rows).
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such data file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                row += 1
                try:
                    yield row, _decode_bytes_fields(obj)
                except UnicodeDecodeError as e:
                    yield (
                        row,
                        RecordError(
                            str(path), row, "<bytes>", f"non-UTF-8 bytes ({e.reason} at byte {e.start})"
                        ),
                    )
        if row == 0:
            raise UserError(f"{path}: empty data file (no records)")
        return
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"{path}: empty data file (no records)")
    if suffix == ".json":
        try:
            arr = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield 1, RecordError(str(path), 1, "<bytes>", f"non-UTF-8 bytes ({e.reason} at byte {e.start})")
            return
        except json.JSONDecodeError as e:
            yield (
                e.lineno,
                RecordError(str(path), e.lineno, "<json>", f"malformed JSON: {e.msg} (column {e.colno})"),
            )
            return
        if not isinstance(arr, list):
            yield 1, RecordError(str(path), 1, "<json>", "a .json data file must hold a list of records")
            return
        yield from enumerate(arr, start=1)
        return
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield i, RecordError(str(path), i, "<bytes>", f"non-UTF-8 bytes ({e.reason} at byte {e.start})")
            continue
        try:
            yield i, json.loads(text)
        except json.JSONDecodeError as e:
            yield i, RecordError(str(path), i, "<json>", f"malformed JSON: {e.msg} (column {e.colno})")


# ----------------------------------------------------------------------------------------------------------
# Per-format converters: source dict -> canonical dict (raise FieldError)
# ----------------------------------------------------------------------------------------------------------


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into ``(prompt, chosen_response, rejected_response)``.

    The prompt is the longest common prefix of the two transcripts, cut just after its last
    ``"\\n\\nAssistant:"``; each response is the rest of its transcript.

    >>> split_hh("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Go away.")
    ('\\n\\nHuman: Hi\\n\\nAssistant:', ' Hello!', ' Go away.')
    """
    n = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        n += 1
    cut = chosen.rfind(ASSISTANT, 0, n)
    if cut < 0:
        raise FieldError("chosen", "no '\\n\\nAssistant:' turn in the common prefix of chosen and rejected")
    cut += len(ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _need(rec: dict, field: str) -> Any:
    if field not in rec:
        raise FieldError(field, "missing")
    return rec[field]


def _str_field(rec: dict, field: str) -> str:
    v = _need(rec, field)
    if not isinstance(v, str):
        raise FieldError(field, f"expected a string, got {type(v).__name__}")
    return v


def _conv_hh(rec: dict) -> dict:
    prompt, c, r = split_hh(_str_field(rec, "chosen"), _str_field(rec, "rejected"))
    return {"prompt": prompt, "chosen": c, "rejected": r}


def render_messages(messages: list[dict], *, field: str = "messages") -> str:
    """Render ``[{role, content}]`` in the HH transcript style (``"\\n\\nHuman: ..."``, ``"\\n\\nAssistant: ..."``)."""
    parts = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise FieldError(f"{field}[{k}]", "expected {'role': ..., 'content': ...}")
        role, content = m["role"], m["content"]
        if role not in _ROLE_TAG:
            raise FieldError(f"{field}[{k}].role", f"unknown role {role!r}")
        if not isinstance(content, str):
            raise FieldError(f"{field}[{k}].content", f"expected a string, got {type(content).__name__}")
        parts.append(f"{_ROLE_TAG[role]} {content}")
    return "".join(parts)


def _conv_ultrafeedback(rec: dict) -> dict:
    convs = {}
    for side in ("chosen", "rejected"):
        msgs = _need(rec, side)
        if not isinstance(msgs, list) or not msgs:
            raise FieldError(side, "expected a non-empty list of messages")
        last = msgs[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise FieldError(side, "the last message must be the assistant's reply")
        if not isinstance(last.get("content"), str):
            raise FieldError(f"{side}[{len(msgs) - 1}].content", "expected a string")
        convs[side] = msgs
    prefix = convs["chosen"][:-1]
    if prefix != convs["rejected"][:-1]:
        raise FieldError("rejected", "conversation before the last reply differs from chosen's")
    if not prefix:
        prefix = [{"role": "user", "content": _str_field(rec, "prompt")}]
    out = {
        "prompt": render_messages(prefix, field="chosen") + ASSISTANT,
        "chosen": " " + convs["chosen"][-1]["content"],
        "rejected": " " + convs["rejected"][-1]["content"],
    }
    if not convs["chosen"][-1]["content"].strip():
        raise FieldError("chosen", "empty")
    if not convs["rejected"][-1]["content"].strip():
        raise FieldError("rejected", "empty")
    for f in ("score_chosen", "score_rejected"):
        if f in rec and rec[f] is not None:
            out[f] = rec[f]
    return out


def _pick(rec: dict, *fields: str) -> dict:
    return {f: rec[f] for f in fields if f in rec}


def _conv_pairwise(rec: dict) -> dict:
    return _pick(rec, "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "meta")


def _conv_unpaired(rec: dict) -> dict:
    return _pick(rec, "prompt", "completion", "label", "meta")


def _conv_scored(rec: dict) -> dict:
    return _pick(rec, "prompt", "completion", "reward", "meta")


def _conv_listwise(rec: dict) -> dict:
    out = _pick(rec, "prompt", "ranks", "scores", "meta")
    if "completions" in rec:
        out["completions"] = rec["completions"]
    elif "responses" in rec:
        out["completions"] = rec["responses"]
    return out


#: format name -> (kind, converter); ``oasst`` is handled separately (records span several lines).
FORMATS: dict[str, tuple[str, Callable[[dict], dict] | None]] = {
    "hh": ("pairwise", _conv_hh),
    "ultrafeedback": ("pairwise", _conv_ultrafeedback),
    "pairwise": ("pairwise", _conv_pairwise),
    "unpaired": ("unpaired", _conv_unpaired),
    "listwise": ("listwise", _conv_listwise),
    "scored": ("scored", _conv_scored),
    "oasst": ("listwise", None),
}
ALIASES = {
    "tldr": "pairwise",
    "kto": "unpaired",
    "bco": "unpaired",
    "hh-rlhf": "hh",
    "openassistant": "oasst",
}


def canonical_format(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in FORMATS:
        raise UserError(f"unknown format {name!r}; valid: {sorted([*FORMATS, *ALIASES])}")
    return name


def detect_format_from_keys(keys: set[str], sample: dict | None = None) -> str:
    """The format implied by a record's keys (see module docstring); raises ValueError if none fits."""
    if {"message_id", "parent_id"} <= keys:
        return "oasst"
    if {"chosen", "rejected"} <= keys:
        if sample is not None and isinstance(sample.get("chosen"), list):
            return "ultrafeedback"
        return "pairwise" if "prompt" in keys else "hh"
    if "completions" in keys or "responses" in keys:
        return "listwise"
    if "completion" in keys and "label" in keys:
        return "unpaired"
    if "completion" in keys and "reward" in keys:
        return "scored"
    raise UserError(
        f"cannot detect the data format from fields {sorted(keys)}; pass format= (valid: {sorted(FORMATS)})"
    )


def detect_format(path: str | Path, *, probe: int = 5) -> str:
    """Detect the format of a file from the keys of its first parsed records."""
    for n, (_, obj) in enumerate(iter_raw(path)):
        if isinstance(obj, dict):
            return detect_format_from_keys(set(obj), obj)
        if n >= probe:
            break
    raise UserError(f"{path}: no parseable record among the first {probe} lines; pass format=")


# ----------------------------------------------------------------------------------------------------------
# OpenAssistant message trees
# ----------------------------------------------------------------------------------------------------------


def _read_oasst(path: Path, report: ValidationReport, kind: str, vkw: dict) -> list[tuple[int, dict]]:
    msgs: dict[str, dict] = {}
    order: list[str] = []
    for line, obj in iter_raw(path):
        report.n_lines += 1
        if isinstance(obj, RecordError):
            report.errors.append(obj)
            continue
        try:
            if not isinstance(obj, dict):
                raise FieldError("<record>", "expected a JSON object")
            mid = _need(obj, "message_id")
            if not isinstance(mid, str) or not mid:
                raise FieldError("message_id", "expected a non-empty string")
            if mid in msgs:
                raise FieldError("message_id", f"duplicate of line {msgs[mid]['line']}")
            parent = _need(obj, "parent_id")
            if parent is not None and not isinstance(parent, str):
                raise FieldError("parent_id", "expected a string or null")
            role = _need(obj, "role")
            if role not in ("prompter", "assistant"):
                raise FieldError("role", f"expected 'prompter' or 'assistant', got {role!r}")
            text = _str_field(obj, "text")
            if not text.strip():
                raise FieldError("text", "empty")
            rank = obj.get("rank")
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
                raise FieldError("rank", f"expected an integer >= 0 or null, got {rank!r}")
        except FieldError as e:
            report.errors.append(RecordError(str(path), line, e.field, e.message))
            continue
        msgs[mid] = {"line": line, "parent": parent, "role": role, "text": text, "rank": rank}
        order.append(mid)

    def history(mid: str, line: int) -> list[dict]:
        chain = []
        cur: str | None = mid
        while cur is not None:
            if cur not in msgs:
                raise FieldError("parent_id", f"ancestor {cur!r} is missing or invalid")
            m = msgs[cur]
            chain.append({"role": "user" if m["role"] == "prompter" else "assistant", "content": m["text"]})
            cur = m["parent"]
            if len(chain) > len(msgs):
                raise FieldError("parent_id", "cycle in the message tree")
        return chain[::-1]

    children: dict[str, list[str]] = {}
    for mid in order:
        p = msgs[mid]["parent"]
        if p is not None:
            if p not in msgs:
                m = msgs[mid]
                report.errors.append(
                    RecordError(str(path), m["line"], "parent_id", f"unknown or invalid parent {p!r}")
                )
                continue
            children.setdefault(p, []).append(mid)
    out: list[tuple[int, dict]] = []
    unranked = 0
    for pid in order:
        pm = msgs[pid]
        kids = [c for c in children.get(pid, []) if msgs[c]["role"] == "assistant"]
        if pm["role"] != "prompter" or len(kids) < 2:
            continue
        ranked = [c for c in kids if msgs[c]["rank"] is not None]
        unranked += len(kids) - len(ranked)
        if len(ranked) < 2:
            continue
        line = pm["line"]
        try:
            prompt = render_messages(history(pid, line), field="history") + ASSISTANT
            rec = validate_record(
                "listwise",
                {
                    "prompt": prompt,
                    "completions": [" " + msgs[c]["text"] for c in ranked],
                    "ranks": [msgs[c]["rank"] + 1 for c in ranked],
                },
                **vkw,
            )
        except FieldError as e:
            report.errors.append(RecordError(str(path), line, f"replies.{e.field}", e.message))
            continue
        if kind == "pairwise":
            for rec_pw in listwise_to_pairwise([rec], report=report):
                out.append((line, rec_pw))
        else:
            out.append((line, rec))
    report.notes["oasst_messages"] = len(msgs)
    report.notes["oasst_unranked_replies_ignored"] = unranked
    return out


def listwise_to_pairwise(records: list[dict], *, report: ValidationReport | None = None) -> list[dict]:
    """Every strictly ordered pair (i better than j) of each listwise record; tied pairs give no pair.

    The number of tied pairs left out is counted in ``report.notes["tied_pairs_skipped"]``.
    """
    out, ties = [], 0
    for rec in records:
        c, s = rec["completions"], rec["scores"]
        for i in range(len(c)):
            for j in range(len(c)):
                if s[i] > s[j]:
                    out.append(
                        {
                            "prompt": rec["prompt"],
                            "chosen": c[i],
                            "rejected": c[j],
                            "score_chosen": s[i],
                            "score_rejected": s[j],
                        }
                    )
                elif i < j and s[i] == s[j]:
                    ties += 1
    if report is not None:
        report.notes["tied_pairs_skipped"] = report.notes.get("tied_pairs_skipped", 0) + ties
    return out


# ----------------------------------------------------------------------------------------------------------
# read / validate
# ----------------------------------------------------------------------------------------------------------


def read_with_lines(
    path: str | Path,
    *,
    format: str | None = None,
    kind: str | None = None,
    max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
    max_response_chars: int | None = None,
) -> tuple[list[tuple[int, dict]], ValidationReport]:
    """Read and validate every record; return ``([(line, record)], report)`` without raising on bad records.

    Args:
      path: a ``.jsonl``, ``.json`` (list) or ``.parquet`` file.
      format: one of :data:`FORMATS` (or an alias); auto-detected when None.
      kind: the record kind wanted. Must match the format's kind, except that ``oasst`` trees give
        ``listwise`` (default) or ``pairwise`` records.
      max_prompt_chars: prompts longer than this are invalid (None = no limit).
      max_response_chars: responses longer than this are invalid (None = no limit).
    """
    path = Path(path)
    for name, v in (("max_prompt_chars", max_prompt_chars), ("max_response_chars", max_response_chars)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise UserError(f"{name}={v!r} must be None (no limit) or an integer >= 1")
    fmt = canonical_format(format) if format else detect_format(path)
    fkind, conv = FORMATS[fmt]
    if kind is None:
        kind = fkind
    elif kind != fkind and not (fmt == "oasst" and kind == "pairwise"):
        raise UserError(f"{path}: format {fmt!r} gives {fkind} records, not {kind}")
    report = ValidationReport(path=str(path), format=fmt, kind=kind)
    vkw = {"max_prompt_chars": max_prompt_chars, "max_response_chars": max_response_chars}
    if fmt == "oasst":
        out = _read_oasst(path, report, kind, vkw)
    else:
        out = []
        for line, obj in iter_raw(path):
            report.n_lines += 1
            if isinstance(obj, RecordError):
                report.errors.append(obj)
                continue
            try:
                if not isinstance(obj, dict):
                    raise FieldError("<record>", f"expected a JSON object, got {type(obj).__name__}")
                out.append((line, validate_record(kind, conv(obj), **vkw)))
            except FieldError as e:
                report.errors.append(RecordError(str(path), line, e.field, e.message))
    report.errors.sort(key=lambda e: e.line)
    report.n_records = len(out)
    return out, report


def read(
    path: str | Path,
    *,
    format: str | None = None,
    kind: str | None = None,
    skip_invalid: bool = False,
    max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
    max_response_chars: int | None = None,
) -> tuple[list[dict], ValidationReport]:
    """Read a local data file into canonical records; refuse it if any record is invalid.

    With ``skip_invalid=True`` the invalid records are skipped instead; how many and which (file, line,
    field, reason) is logged as a warning and kept in ``report.errors``. Nothing is dropped silently.

    Returns:
      ``(records, report)``.

    Raises:
      InvalidDataError: if any record is invalid and ``skip_invalid`` is False.
    """
    pairs, report = read_checked(path, format=format, kind=kind, skip_invalid=skip_invalid,
                                 max_prompt_chars=max_prompt_chars, max_response_chars=max_response_chars)
    return [r for _, r in pairs], report


def read_checked(
    path: str | Path,
    *,
    format: str | None = None,
    kind: str | None = None,
    skip_invalid: bool = False,
    max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
    max_response_chars: int | None = None,
) -> tuple[list[tuple[int, dict]], ValidationReport]:
    """:func:`read` keeping each record's line: ``([(line, record)], report)``."""
    pairs, report = read_with_lines(
        path,
        format=format,
        kind=kind,
        max_prompt_chars=max_prompt_chars,
        max_response_chars=max_response_chars,
    )
    if report.errors:
        if not skip_invalid:
            raise InvalidDataError(report.errors)
        shown = "\n  ".join(str(e) for e in report.errors[:20])
        log.warning("skipped %d invalid record(s) of %s:\n  %s", len(report.errors), path, shown)
    return pairs, report

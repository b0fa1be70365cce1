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
``chosen``/``rejected`` strings without ``prompt`` are ``hh`` only if ``chosen`` holds an Assistant turn;
otherwise the error names the missing ``prompt`` and the layouts tried.

A file that cannot be read as records at all (empty, compressed, a ``.json`` that is truncated, malformed or
not a list) raises :class:`~jalign.errors.FileFormatError` naming the file.

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
from jalign.errors import FileFormatError, MissingFileError, UserError

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


#: Leading bytes of compressed files (a JSON text starts with ``{``, ``[`` or whitespace; Parquet with ``PAR1``).
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
                     b"PK\x03\x04": "zip"}
_COMPRESSED_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}
_DECOMPRESS = {"gzip": "gunzip -k", "bzip2": "bunzip2 -k", "xz": "unxz -k", "zstd": "unzstd", "zip": "unzip"}
_NESTED = "JSON nested too deeply to parse (arrays/objects inside each other beyond Python's recursion limit)"


def _check_not_compressed(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(8)
    kind = next((k for magic, k in _COMPRESSED_MAGIC.items() if head.startswith(magic)), None)
    kind = kind or _COMPRESSED_SUFFIX.get(path.suffix.lower())
    if kind:
        raise FileFormatError(f"{path}: a {kind}-compressed file; jalign reads uncompressed .jsonl, .json and "
                              f".parquet files: decompress it first (`{_DECOMPRESS[kind]} {path}`)")


def _json_array(path: Path, data: bytes) -> Iterator[tuple[int, Any]]:
    """The elements of a ``.json`` file holding one list; anything else is a :class:`FileFormatError`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield 1, RecordError(str(path), 1, "<bytes>", f"non-UTF-8 bytes ({e.reason} at byte {e.start})")
        return
    try:
        arr = json.loads(text)
    except RecursionError:
        raise FileFormatError(f"{path}: {_NESTED}") from None
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()):
            raise FileFormatError(f"{path}: truncated JSON: the file ends inside a value (at line {e.lineno}, "
                                  f"column {e.colno}); was it cut short?") from None
        hint = ""
        if e.msg == "Extra data":
            first = text.lstrip().split("\n", 1)[0]
            try:
                one_per_line = isinstance(json.loads(first), dict)
            except (ValueError, RecursionError):
                one_per_line = False
            if one_per_line:
                hint = "; the file holds one JSON object per line (JSON Lines): name it .jsonl"
        raise FileFormatError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}{hint}") from None
    if not isinstance(arr, list):
        what = f"an object with keys {sorted(arr)}" if isinstance(arr, dict) else f"a JSON {type(arr).__name__}"
        hint = ""
        if isinstance(arr, dict):
            lists = [k for k, v in arr.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            if lists:
                hint = f" (the records may be the list under {lists[0]!r}: save that list as the file)"
            else:
                hint = " (it looks like one record: write it as a list [{...}] or as one line of a .jsonl file)"
        raise FileFormatError(f"{path}: a .json data file must hold a JSON list of records; this one holds "
                              f"{what}{hint}")
    yield from enumerate(arr, start=1)


def iter_raw(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, object)`` for each record of a ``.jsonl``/``.json``/``.parquet`` file.

    ``line`` is the 1-based line number (JSONL) or element/row number (JSON array, Parquet). Lines that
    cannot be decoded or parsed (malformed, non-UTF-8, nested too deeply) yield a :class:`RecordError`
    instead of an object. Blank JSONL lines are not records and are not yielded.

    Raises:
      MissingFileError: no such file.
      FileFormatError: the file as a whole cannot be read: empty (nothing but whitespace, or a Parquet file
        without rows), compressed (gzip, bzip2, xz, zstd, zip: by suffix or leading bytes), a ``.json`` file
        that is malformed, truncated or nested too deeply or does not hold a list, an unreadable Parquet file.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such data file: {path}")
    _check_not_compressed(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow.ArrowInvalid for a damaged or foreign file
            raise FileFormatError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
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
            raise FileFormatError(f"{path}: empty data file (no records)")
        return
    data = path.read_bytes()
    if not data.strip():
        raise FileFormatError(f"{path}: empty data file (no records)")
    if suffix == ".json":
        yield from _json_array(path, data)
        return
    lines = data.split(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield i, RecordError(str(path), i, "<bytes>", f"non-UTF-8 bytes ({e.reason} at byte {e.start})")
            continue
        try:
            obj = json.loads(text)
        except RecursionError:
            yield i, RecordError(str(path), i, "<json>", _NESTED)
            continue
        except json.JSONDecodeError as e:
            cut = " (the last line, without a newline: the file may be truncated)" if i == len(lines) else ""
            yield i, RecordError(str(path), i, "<json>", f"malformed JSON: {e.msg} (column {e.colno}){cut}")
            continue
        yield i, obj


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


#: What auto-detection looks for, in the order it tries (format: fields), for its error message.
LAYOUTS = (
    ("oasst", "message_id, parent_id, role, text, rank"),
    ("pairwise", "prompt, chosen, rejected"),
    ("hh", "chosen, rejected: whole '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts"),
    ("ultrafeedback", "chosen, rejected: lists of {role, content} messages"),
    ("listwise", "prompt, completions or responses, ranks and/or scores"),
    ("unpaired", "prompt, completion, label"),
    ("scored", "prompt, completion, reward"),
)


def _undetected(keys: set[str], reason: str) -> UserError:
    tried = "; ".join(f"{f} ({fields})" for f, fields in LAYOUTS)
    return UserError(f"cannot detect the data format from fields {sorted(keys)}: {reason}; layouts tried: "
                     f"{tried}. Rename the fields, or pass format=")


def detect_format_from_keys(keys: set[str], sample: dict | None = None) -> str:
    """The format implied by a record's keys (see module docstring); raises UserError if none fits.

    ``chosen``/``rejected`` strings without a ``prompt`` are HH-RLHF transcripts only when ``sample``'s
    ``chosen`` has an ``"\\n\\nAssistant:"`` turn; otherwise the error says that the prompt field is missing.
    """
    if {"message_id", "parent_id"} <= keys:
        return "oasst"
    if {"chosen", "rejected"} <= keys:
        if sample is not None and isinstance(sample.get("chosen"), list):
            return "ultrafeedback"
        if "prompt" in keys:
            return "pairwise"
        if sample is not None and isinstance(sample.get("chosen"), str) and ASSISTANT not in sample["chosen"]:
            others = sorted(keys - {"chosen", "rejected"})
            raise _undetected(keys, "'chosen' and 'rejected' are there but no 'prompt' field"
                              + (f" (other fields: {others})" if others else "")
                              + ", and they are not HH-RLHF transcripts (no '\\n\\nAssistant:' turn in 'chosen')")
        return "hh"
    if "completions" in keys or "responses" in keys:
        return "listwise"
    if "completion" in keys and "label" in keys:
        return "unpaired"
    if "completion" in keys and "reward" in keys:
        return "scored"
    raise _undetected(keys, "no layout's fields are all there")


def detect_format(path: str | Path, *, probe: int = 5) -> str:
    """Detect the format of a file from the keys of its first parsed record (among the first ``probe``)."""
    first: str | None = None
    n = 0
    for n, (line, obj) in enumerate(iter_raw(path), start=1):
        if isinstance(obj, dict):
            try:
                return detect_format_from_keys(set(obj), obj)
            except UserError as e:
                raise UserError(f"{path}:{line}: {e}") from None
        if first is None:
            first = (f"line {line}: {obj.message}" if isinstance(obj, RecordError)
                     else f"line {line}: a JSON {type(obj).__name__}, not an object")
        if n >= probe:
            break
    raise UserError(f"{path}: no parseable record among the first {n} lines ({first}); pass format=")


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

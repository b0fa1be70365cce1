"""Canonical record schemas for the four kinds of preference data, and their validator.

Every reader converts its source layout into one of four canonical record kinds (plain ``dict``s):

============  ==============================================================================================
kind          fields
============  ==============================================================================================
pairwise      ``prompt: str``, ``chosen: str``, ``rejected: str``; optional ``score_chosen``,
              ``score_rejected: float`` (both or neither; ``score_chosen >= score_rejected`` is *not*
              required — data sets disagree with their own scores, and that is reported, not fixed)
unpaired      ``prompt: str``, ``completion: str``, ``label: bool`` (True = desirable / thumbs-up)
listwise      ``prompt: str``, ``completions: list[str]`` (K >= 2), ``scores: list[float]`` (higher = better)
              and ``ranks: list[int]`` (1 = best, competition ranking: ties share the smaller rank and
              the next rank skips, e.g. scores [3, 5, 5, 1] -> ranks [3, 1, 1, 4]). A source with only
              ranks gets ``scores = -rank``; a source with only scores gets ranks derived from them.
              ``ties: bool`` says whether any two completions tie (ties are kept, never broken silently).
scored        ``prompt: str``, ``completion: str``, ``reward: float`` (finite)
============  ==============================================================================================

Records may carry an extra ``meta`` dict (built-in data sets use it); it is ignored by the validator.

Validation rules (each violation is a :class:`RecordError` naming file, line and field):
text fields are ``str`` encodable as UTF-8 (no lone surrogate escapes such as ``"\\ud800"``), responses
are non-empty (after stripping whitespace), chosen != rejected, listwise
completions are pairwise distinct, numbers are finite, the prompt is at most ``max_prompt_chars``
characters (and each response at most ``max_response_chars`` when set).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jalign.errors import UserError

KINDS = ("pairwise", "unpaired", "listwise", "scored")

#: Default cap on prompt length in characters (a guard against garbage such as a whole file on one line).
DEFAULT_MAX_PROMPT_CHARS = 100_000


@dataclasses.dataclass(frozen=True)
class RecordError:
    """One invalid record: where it is (file, 1-based line or row) and which field is wrong."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: field '{self.field}': {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class InvalidDataError(UserError):
    """Raised when a file holds invalid records (and ``skip_invalid`` was not requested); a
    :class:`~jalign.errors.UserError` (and so a ``ValueError``)."""

    def __init__(self, errors: list[RecordError], *, limit: int = 20):
        self.errors = list(errors)
        shown = "\n  ".join(str(e) for e in self.errors[:limit])
        more = f"\n  ... and {len(self.errors) - limit} more" if len(self.errors) > limit else ""
        super().__init__(
            f"{len(self.errors)} invalid record(s); refusing the file "
            f"(pass skip_invalid=True to skip them with a report):\n  {shown}{more}"
        )


@dataclasses.dataclass
class ValidationReport:
    """What a read found: how many source lines/rows, how many records kept, and every invalid one."""

    path: str
    format: str
    kind: str
    n_lines: int = 0
    n_records: int = 0
    errors: list[RecordError] = dataclasses.field(default_factory=list)
    notes: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_invalid(self) -> int:
        return len(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "kind": self.kind,
            "n_lines": self.n_lines,
            "n_records": self.n_records,
            "n_invalid": self.n_invalid,
            "errors": [e.to_dict() for e in self.errors],
            "notes": dict(self.notes),
        }


class FieldError(ValueError):
    """Internal: a single field problem inside one record (converted to a :class:`RecordError`)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"field '{field}': {message}")


def check_utf8(field: str, v: str) -> str:
    """``v`` unchanged if it can be encoded as UTF-8; :class:`FieldError` naming the first lone surrogate.

    JSON allows escapes such as ``"\\ud800"`` (half of a surrogate pair) that decode to a Python string no
    tokenizer can encode; they are invalid text, reported like any other bad field.
    """
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FieldError(
            field, f"lone surrogate U+{ord(v[e.start]):04X} at character {e.start} (not encodable as UTF-8)"
        ) from None
    return v


def _text(rec: dict, field: str, *, allow_empty: bool) -> str:
    if field not in rec:
        raise FieldError(field, "missing")
    v = rec[field]
    if not isinstance(v, str):
        raise FieldError(field, f"expected a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise FieldError(field, "empty")
    return check_utf8(field, v)


def _number(rec: dict, field: str) -> float:
    if field not in rec:
        raise FieldError(field, "missing")
    v = rec[field]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FieldError(field, f"expected a number, got {type(v).__name__}")
    x = float(v)
    if not math.isfinite(x):
        raise FieldError(field, f"non-finite value {v!r}")
    return x


def competition_ranks(scores: list[float]) -> list[int]:
    """Ranks from scores, higher score = better = rank 1; ties share the smallest rank ("1224" ranking).

    >>> competition_ranks([3.0, 5.0, 5.0, 1.0])
    [3, 1, 1, 4]
    """
    return [1 + sum(1 for t in scores if t > s) for s in scores]


def validate_record(
    kind: str,
    rec: dict,
    *,
    max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
    max_response_chars: int | None = None,
) -> dict:
    """Check one canonical record and return a normalised copy; raise :class:`FieldError` if invalid.

    Normalisation: numbers become ``float``, listwise records get both ``scores`` and ``ranks`` plus
    ``ties``; the ``label`` of unpaired records becomes ``bool`` (accepts true/false, 1/0).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {KINDS}")
    if not isinstance(rec, dict):
        raise FieldError("<record>", f"expected a JSON object, got {type(rec).__name__}")
    prompt = _text(rec, "prompt", allow_empty=True)
    if max_prompt_chars is not None and len(prompt) > max_prompt_chars:
        raise FieldError(
            "prompt", f"over-long prompt: {len(prompt)} characters > max_prompt_chars={max_prompt_chars}"
        )
    out: dict[str, Any] = {"prompt": prompt}

    def response(field: str, value: Any = None, *, label: str | None = None) -> str:
        v = _text(rec, field, allow_empty=False) if value is None else value
        if max_response_chars is not None and len(v) > max_response_chars:
            raise FieldError(
                label or field,
                f"over-long response: {len(v)} characters > max_response_chars={max_response_chars}",
            )
        return v

    if kind == "pairwise":
        out["chosen"] = response("chosen")
        out["rejected"] = response("rejected")
        if out["chosen"] == out["rejected"]:
            raise FieldError("rejected", "identical to chosen")
        has_c, has_r = "score_chosen" in rec, "score_rejected" in rec
        if has_c != has_r:
            raise FieldError("score_rejected" if has_c else "score_chosen", "missing (scores come in pairs)")
        if has_c:
            out["score_chosen"] = _number(rec, "score_chosen")
            out["score_rejected"] = _number(rec, "score_rejected")
    elif kind == "unpaired":
        out["completion"] = response("completion")
        if "label" not in rec:
            raise FieldError("label", "missing")
        lab = rec["label"]
        if isinstance(lab, bool):
            out["label"] = lab
        elif isinstance(lab, int) and lab in (0, 1):
            out["label"] = bool(lab)
        elif isinstance(lab, str) and lab.lower() in ("true", "false"):
            out["label"] = lab.lower() == "true"
        else:
            raise FieldError("label", f"expected a boolean (true = desirable), got {lab!r}")
    elif kind == "scored":
        out["completion"] = response("completion")
        out["reward"] = _number(rec, "reward")
    else:  # listwise
        if "completions" not in rec:
            raise FieldError("completions", "missing")
        comps = rec["completions"]
        if not isinstance(comps, list) or len(comps) < 2:
            raise FieldError("completions", "expected a list of at least 2 strings")
        for k, c in enumerate(comps):
            if not isinstance(c, str):
                raise FieldError(f"completions[{k}]", f"expected a string, got {type(c).__name__}")
            if not c.strip():
                raise FieldError(f"completions[{k}]", "empty")
            check_utf8(f"completions[{k}]", c)
            response("completions", c, label=f"completions[{k}]")
        seen: dict[str, int] = {}
        for k, c in enumerate(comps):
            if c in seen:
                raise FieldError(f"completions[{k}]", f"identical to completions[{seen[c]}]")
            seen[c] = k
        has_ranks, has_scores = rec.get("ranks") is not None, rec.get("scores") is not None
        if not (has_ranks or has_scores):
            raise FieldError("ranks", "missing (need 'ranks' or 'scores')")
        scores = ranks = None
        if has_scores:
            raw = rec["scores"]
            if not isinstance(raw, list) or len(raw) != len(comps):
                raise FieldError("scores", f"expected a list of {len(comps)} numbers (one per completion)")
            scores = [_number({"scores": x}, "scores") for x in raw]
        if has_ranks:
            raw = rec["ranks"]
            if not isinstance(raw, list) or len(raw) != len(comps):
                raise FieldError("ranks", f"expected a list of {len(comps)} integers (one per completion)")
            for x in raw:
                if isinstance(x, bool) or not isinstance(x, int) or x < 1:
                    raise FieldError("ranks", f"ranks are integers >= 1 (1 = best), got {x!r}")
            ranks = [int(x) for x in raw]
        if scores is None:
            scores = [-float(r) for r in ranks]
        derived = competition_ranks(scores)
        if ranks is None:
            ranks = derived
        elif has_scores and ranks != derived:
            raise FieldError("ranks", f"ranks {ranks} disagree with scores {scores} (expected {derived})")
        else:
            ranks = derived  # normalise e.g. dense ranks [1, 2, 2, 3] to competition ranks [1, 2, 2, 4]
        out["completions"] = list(comps)
        out["scores"] = scores
        out["ranks"] = ranks
        out["ties"] = len(set(scores)) < len(scores)
    if "meta" in rec:
        out["meta"] = rec["meta"]
    return out

"""TFDS builders for local preference files; no TensorFlow, nothing downloaded.

One :class:`tfds.core.GeneratorBasedBuilder` subclass per kind reads a local JSONL/JSON/Parquet file (any
format of :mod:`jalign.data.readers`), validates every record *before* anything is written, and writes
``array_record`` (default) or ``parquet`` shards that are read back with ``builder.as_data_source()``::

    b = PairwiseBuilder(path="hh.jsonl", data_dir="/tmp/tfds")      # format auto-detected
    b.download_and_prepare()
    src = b.as_data_source()["train"]                                 # random access, len(src)
    rec = decode_example("pairwise", src[0])                          # str fields, canonical dict

``path`` may be a dict ``{split: file}``. The builder config name is derived from the format and a hash of
the files' bytes and options, so a changed file is built into a new directory, never mixed with an old one.
Invalid records make :meth:`download_and_prepare` raise :class:`~jalign.data.schema.InvalidDataError`
before any shard is written; with ``skip_invalid=True`` they are skipped, logged, and the validation
reports are saved as ``jalign_validation.json`` next to the shards (and kept in ``builder.reports``).
Examples keep the source order (``disable_shuffling``); each carries ``line``, its source line/row.
Scores and rewards are stored as float32 (TFDS serialises floats as float32 protos), as the pipelines use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jalign.data.io import atomic_write
from jalign.data.readers import canonical_format, detect_format, read_with_lines
from jalign.data.schema import DEFAULT_MAX_PROMPT_CHARS, InvalidDataError
from jalign.errors import UserError

_T = tfds.features.Text
log = logging.getLogger(__name__)


def _features(kind: str) -> tfds.features.FeaturesDict:
    common = {"prompt": _T(), "line": np.int64}
    if kind == "pairwise":
        extra = {
            "chosen": _T(),
            "rejected": _T(),
            "score_chosen": np.float32,
            "score_rejected": np.float32,
            "has_scores": np.bool_,
        }
    elif kind == "unpaired":
        extra = {"completion": _T(), "label": np.bool_}
    elif kind == "listwise":
        extra = {
            "completions": tfds.features.Sequence(_T()),
            "scores": tfds.features.Sequence(np.float32),
            "ranks": tfds.features.Sequence(np.int32),
            "ties": np.bool_,
        }
    elif kind == "scored":
        extra = {"completion": _T(), "reward": np.float32}
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return tfds.features.FeaturesDict({**common, **extra})


def _to_example(kind: str, rec: dict, line: int) -> dict:
    ex = {k: v for k, v in rec.items() if k != "meta"}
    ex["line"] = line
    if kind == "pairwise":
        ex["has_scores"] = "score_chosen" in rec
        ex.setdefault("score_chosen", 0.0)
        ex.setdefault("score_rejected", 0.0)
    return ex


def _s(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def decode_example(kind: str, ex: dict) -> dict:
    """A TFDS example (bytes text, numpy scalars) back to a canonical record (``str``, ``float``, ``bool``)."""
    out: dict[str, Any] = {"prompt": _s(ex["prompt"])}
    if "line" in ex:
        out["line"] = int(ex["line"])
    if kind == "pairwise":
        out["chosen"], out["rejected"] = _s(ex["chosen"]), _s(ex["rejected"])
        if bool(ex.get("has_scores", "score_chosen" in ex)):
            out["score_chosen"], out["score_rejected"] = (
                float(ex["score_chosen"]),
                float(ex["score_rejected"]),
            )
    elif kind == "unpaired":
        out["completion"], out["label"] = _s(ex["completion"]), bool(ex["label"])
    elif kind == "listwise":
        out["completions"] = [_s(c) for c in ex["completions"]]
        out["scores"] = [float(s) for s in ex["scores"]]
        out["ranks"] = [int(r) for r in ex["ranks"]]
        out["ties"] = bool(ex["ties"])
    elif kind == "scored":
        out["completion"], out["reward"] = _s(ex["completion"]), float(ex["reward"])
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return out


class _LocalPreferenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: a local file (or ``{split: file}``) -> validated records -> array_record/parquet shards."""

    KIND: ClassVar[str] = ""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Local preference file, validated by jalign.data."}

    def __init__(
        self,
        *,
        path: str | Path | dict[str, str | Path],
        format: str | None = None,
        skip_invalid: bool = False,
        max_prompt_chars: int | None = DEFAULT_MAX_PROMPT_CHARS,
        max_response_chars: int | None = None,
        data_dir: str | Path | None = None,
        file_format: str = "array_record",
        **kwargs: Any,
    ):
        paths = {"train": path} if not isinstance(path, dict) else dict(path)
        self._paths = {split: Path(p) for split, p in paths.items()}
        for split, p in self._paths.items():
            if not p.is_file():
                raise FileNotFoundError(f"split {split!r}: no such data file: {p}")
        if format is None:
            format = detect_format(next(iter(self._paths.values())))
        self._read_kw = {
            "format": canonical_format(format),
            "kind": self.KIND,
            "skip_invalid": skip_invalid,
            "max_prompt_chars": max_prompt_chars,
            "max_response_chars": max_response_chars,
        }
        h = hashlib.sha256(json.dumps({k: v for k, v in self._read_kw.items()}, sort_keys=True).encode())
        for split in sorted(self._paths):
            h.update(split.encode())
            h.update(self._paths[split].read_bytes())
        fmt = self._read_kw["format"]
        config = tfds.core.BuilderConfig(name=f"{fmt}_{h.hexdigest()[:16]}", description=f"{self._paths}")
        self._records: dict[str, list[tuple[int, dict]]] | None = None
        self.reports: dict[str, dict] = {}  # split -> ValidationReport.to_dict()
        super().__init__(
            data_dir=None if data_dir is None else str(data_dir),
            config=config,
            file_format=file_format,
            **kwargs,
        )
        report_file = Path(self.data_dir) / "jalign_validation.json"
        if report_file.exists():
            self.reports = json.loads(report_file.read_text())

    # tfds 4.9.10 resolves ``code_path`` for package modules through ``importlib_resources`` (not a
    # dependency here, and irrelevant: there are no checksums of downloads to look up). No code path.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"jalign {self.KIND} preference data read from local files.",
            features=_features(self.KIND),
            disable_shuffling=True,
        )

    def _validate_all(self) -> None:
        """Read and validate every split before anything is written (raises InvalidDataError)."""
        records = {}
        for split, p in self._paths.items():
            kw = {k: v for k, v in self._read_kw.items() if k != "skip_invalid"}
            pairs, report = read_with_lines(p, **kw)
            if report.errors:
                if not self._read_kw["skip_invalid"]:
                    raise InvalidDataError(report.errors)
                shown = "\n  ".join(str(e) for e in report.errors[:20])
                log.warning("skipped %d invalid record(s) of %s:\n  %s", len(report.errors), p, shown)
            if not pairs:
                raise UserError(f"{p}: no valid {report.kind} records ({len(report.errors)} invalid skipped); "
                                "nothing to build")
            records[split] = pairs
            self.reports[split] = report.to_dict()
        self._records = records

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_prepared():
            self._validate_all()
        super().download_and_prepare(*args, **kwargs)
        if self._records is not None:
            payload = dict(self.reports)
            out = Path(self.data_dir) / "jalign_validation.json"
            if out.parent.exists():
                atomic_write(out, lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager  # nothing is downloaded
        if self._records is None:
            self._validate_all()
        return {split: self._generate_examples(split) for split in self._paths}

    def _generate_examples(self, split: str):
        assert self._records is not None
        for i, (line, rec) in enumerate(self._records[split]):
            yield i, _to_example(self.KIND, rec, line)


class PairwiseBuilder(_LocalPreferenceBuilder, skip_registration=True):
    """Pairwise (prompt, chosen, rejected[, score_chosen, score_rejected]) from hh/ultrafeedback/pairwise/oasst."""

    KIND = "pairwise"


class UnpairedBuilder(_LocalPreferenceBuilder, skip_registration=True):
    """Unpaired (prompt, completion, label) from KTO/BCO-style files."""

    KIND = "unpaired"


class ListwiseBuilder(_LocalPreferenceBuilder, skip_registration=True):
    """Listwise (prompt, completions, scores, ranks, ties) from listwise or oasst files."""

    KIND = "listwise"


class ScoredBuilder(_LocalPreferenceBuilder, skip_registration=True):
    """Scored completions (prompt, completion, reward)."""

    KIND = "scored"


BUILDERS: dict[str, type[_LocalPreferenceBuilder]] = {
    "pairwise": PairwiseBuilder,
    "unpaired": UnpairedBuilder,
    "listwise": ListwiseBuilder,
    "scored": ScoredBuilder,
}


def build(
    kind: str, path: str | Path | dict, *, data_dir: str | Path, **kwargs: Any
) -> _LocalPreferenceBuilder:
    """Construct the builder of ``kind`` for ``path``, prepare it, and return it."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown kind {kind!r}; valid: {sorted(BUILDERS)}")
    b = BUILDERS[kind](path=path, data_dir=data_dir, **kwargs)
    b.download_and_prepare()
    return b

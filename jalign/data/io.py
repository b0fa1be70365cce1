"""Atomic writers: a file appears complete under its final name or not at all (temp file, then rename)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    return path


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write records one JSON object per line (UTF-8, non-ASCII kept), atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")

    return atomic_write(path, write)


def write_parquet(records: list[dict], path: str | Path) -> Path:
    """Write records as a Parquet table (columns inferred by pyarrow), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(records))
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))

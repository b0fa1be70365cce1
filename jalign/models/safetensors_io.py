"""Reading and writing safetensors files (never pickle) through the ``safetensors`` library's numpy API.

Format (what the library reads and writes): an 8-byte little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the raw little-endian
tensor bytes. The dtype names (``"F32"``, ``"BF16"``, ...) are those of the specification, which Hugging Face
``transformers`` reads. bfloat16 tensors load as ``ml_dtypes.bfloat16`` numpy arrays.

Errors for a damaged, truncated or foreign file are :class:`~jalign.errors.FileFormatError` (a ``ValueError``)
naming the file (and the tensor when the failure is specific to one tensor, or the first tensor a truncation
cut).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy; the library's numpy loader resolves it by name)
import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from jalign.errors import FileFormatError


def _truncation(path: Path) -> str | None:
    """Why ``path`` looks cut short (naming the first incomplete tensor), or None if it does not."""
    size = path.stat().st_size
    if size < 8:
        return f"truncated safetensors file: {size} bytes, less than the 8-byte header length"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:  # not a header length: a foreign file
            return None
        if 8 + n > size:
            return f"truncated safetensors file: {size} bytes, the header alone needs {8 + n}"
        try:
            header = json.loads(f.read(n))
            spans = sorted((int(v["data_offsets"][0]), int(v["data_offsets"][1]), k)
                           for k, v in header.items() if k != "__metadata__")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None
    have, need = size - 8 - n, max((e for _, e, _ in spans), default=0)
    cut = [k for _, e, k in spans if e > have]
    if not cut:
        return None
    return (f"truncated safetensors file: {have} of {need} bytes of tensor data; tensor {cut[0]!r} is incomplete "
            f"({len(cut)} tensor(s) cut); copy or download it again")


def _open(path: Path):
    """``safe_open`` in numpy mode; the library validates the header (JSON, dtypes, shapes against offsets)."""
    try:
        return safe_open(path, framework="numpy")
    except SafetensorError as e:
        why = _truncation(path) or f"damaged or not a safetensors file (safetensors: {e})"
        raise FileFormatError(f"{path}: {why}") from None


def read_header(path: str | Path) -> tuple[dict, int]:
    """The header of a safetensors file as stored, and the byte offset at which the tensor data begins.

    Returns:
      ``(header, data_start)``: ``header`` maps each tensor name to ``{"dtype", "shape", "data_offsets"}``
      (offsets relative to ``data_start``) and ``"__metadata__"`` (when present) to the string metadata.

    Raises:
      FileFormatError: the file is damaged, truncated or not a safetensors file (validated by the library;
        no tensor is read).
    """
    path = Path(path)
    with _open(path):
        pass
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def load_file(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays, read one tensor at a time through ``safe_open``.

    Raises:
      FileFormatError: the file is damaged, truncated or not a safetensors file, or a tensor cannot be read
        (named).
    """
    path = Path(path)
    out = {}
    with _open(path) as f:
        for name in f.keys():
            try:
                out[name] = f.get_tensor(name)
            except Exception as e:  # e.g. a dtype numpy cannot represent
                raise FileFormatError(f"{path}: tensor {name!r} cannot be read ({type(e).__name__}: {e})") from None
    return out


def save_file(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (numpy or jax arrays, any memory layout) atomically to ``path`` with string ``metadata``.

    Arrays are made C-contiguous first (the library writes an array's memory as it lies); the library orders
    the tensors deterministically (by dtype alignment, then name) and byte-swaps big-endian data.

    Raises:
      ValueError: a tensor whose dtype safetensors cannot store (named), or metadata that is not str -> str.
    """
    path = Path(path)
    arrays = {name: np.ascontiguousarray(np.asarray(a)) for name, a in tensors.items()}
    meta = dict(metadata or {})
    bad = {k: v for k, v in meta.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise ValueError(f"save_file: metadata must map str to str, got {bad!r}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        safetensors.numpy.save_file(arrays, tmp, metadata=meta or None)
    except SafetensorError as e:
        tmp.unlink(missing_ok=True)
        for name, a in arrays.items():  # name the culprit: an empty array of its dtype fails the same way
            try:
                safetensors.numpy.save({name: np.empty((0,), a.dtype)})
            except SafetensorError:
                raise ValueError(f"save_file: tensor {name!r} has unsupported dtype {a.dtype} ({e})") from None
        raise ValueError(f"save_file: {path}: {e}") from None
    tmp.replace(path)

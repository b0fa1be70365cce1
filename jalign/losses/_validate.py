"""Input validation for the loss library (runs outside ``jit``; abstract values are skipped)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

# Hyperparameter checks by name: (predicate, description of the valid set).
_HPARAM_RULES: dict[str, tuple[Any, str]] = {
    "beta": (lambda v: v > 0, "> 0"),
    "label_smoothing": (lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    "discopop_tau": (lambda v: v > 0, "> 0"),
    "tau": (lambda v: v > 0, "> 0"),
    "temperature": (lambda v: v > 0, "> 0"),
}
# Names that must merely be finite when numeric.
_FINITE = ("alpha", "gamma", "lambda_", "delta", "eta", "rpo_alpha", "margin", "z0", "reward_shift")


def _concrete_scalar(v: Any) -> float | None:
    if isinstance(v, jax.core.Tracer):
        return None
    if isinstance(v, (bool, np.bool_)):
        return None
    try:
        arr = np.asarray(v)
    except Exception:  # noqa: BLE001 - non-numeric hyperparameters are not checked here
        return None
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number):
        return None
    return float(arr)


def check_hparams(loss_name: str, hparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the hyperparameter when a value is outside its valid set."""
    for key, value in hparams.items():
        x = _concrete_scalar(value)
        if x is None:
            continue
        if key in _HPARAM_RULES:
            pred, desc = _HPARAM_RULES[key]
            if not (math.isfinite(x) and pred(x)):
                raise ValueError(f"loss {loss_name!r}: hyperparameter {key}={value!r} must be {desc}")
        elif key in _FINITE and not math.isfinite(x):
            raise ValueError(f"loss {loss_name!r}: hyperparameter {key}={value!r} must be finite")


_REFERENCE_FIELDS = {
    "pairwise": ("ref_chosen_logps", "ref_rejected_logps"),
    "unpaired": ("ref_logps",),
    "listwise": ("ref_logps",),
    "scored": ("ref_logps",),
    "sampled": (),
}
_LENGTH_FIELDS = {
    "pairwise": ("chosen_lengths", "rejected_lengths"),
    "unpaired": ("lengths",),
    "listwise": ("lengths",),
    "scored": (),
    "sampled": (),
}
_REQUIRED = {
    "pairwise": ("chosen_logps", "rejected_logps"),
    "unpaired": ("logps", "ref_logps", "desirable"),
    "listwise": ("logps", "scores"),
    "scored": ("logps", "rewards"),
    "sampled": ("policy_logps", "target_logps", "proposal_logps"),
}
_NDIM = {"pairwise": 1, "unpaired": 1, "listwise": 2, "scored": 2, "sampled": 1}


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_batch(spec: Any, batch: Any) -> None:
    """Check a batch against a loss's needs; raise ``ValueError`` naming field and example index."""
    from jalign.losses import _types

    expected = {
        "pairwise": _types.PairwiseLogps,
        "unpaired": _types.UnpairedLogps,
        "listwise": _types.ListwiseLogps,
        "scored": _types.ScoredLogps,
        "sampled": _types.SampledLogps,
    }[spec.kind]
    if not isinstance(batch, expected):
        raise TypeError(
            f"loss {spec.name!r} expects a {expected.__name__} batch, got {type(batch).__name__}"
        )
    needed = list(_REQUIRED[spec.kind])
    if spec.needs_reference:
        needed += [f for f in _REFERENCE_FIELDS[spec.kind] if f not in needed]
    if spec.needs_lengths:
        needed += list(_LENGTH_FIELDS[spec.kind])
    for f in needed:
        if getattr(batch, f) is None:
            raise ValueError(f"loss {spec.name!r} needs batch field {f!r}, which is None")

    shape = None
    ndim = _NDIM[spec.kind]
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if v is None:
            continue
        s = tuple(np.shape(v))
        if len(s) != ndim:
            raise ValueError(
                f"loss {spec.name!r}: batch field {f.name!r} must have {ndim} dimension(s), got shape {s}"
            )
        if shape is None:
            shape, first = s, f.name
        elif s != shape:
            raise ValueError(
                f"loss {spec.name!r}: batch field {f.name!r} has shape {s} but {first!r} has shape {shape}"
            )
        if not _is_concrete(v):
            continue
        arr = np.asarray(v)
        if f.name in ("desirable", "mask"):
            continue
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.dtype("bfloat16"):
            continue
        arr = arr.astype(np.float64)
        bad = ~np.isfinite(arr)
        if f.name in _LENGTH_FIELDS[spec.kind]:
            if bad.any():
                _raise_at(spec.name, f.name, bad, "is not finite")
            if (arr < 0).any():
                _raise_at(spec.name, f.name, arr < 0, "is negative")
            if f.name in needed and (arr == 0).any():
                _raise_at(spec.name, f.name, arr == 0, "is zero (empty response)")
        elif bad.any():
            _raise_at(spec.name, f.name, bad, "is not finite")


def _raise_at(loss: str, field: str, where: np.ndarray, what: str) -> None:
    idx = tuple(int(i) for i in np.argwhere(where)[0])
    where_s = f"example {idx[0]}" if len(idx) == 1 else f"example {idx[0]}, position {idx[1:]}"
    raise ValueError(f"loss {loss!r}: batch field {field!r} {what} at {where_s} ({int(where.sum())} bad in total)")

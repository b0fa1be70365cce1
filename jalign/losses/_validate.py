"""Input validation for the loss library (runs outside ``jit``; abstract values are skipped).

Errors name the loss, the hyperparameter or batch field, and (for values) the first offending example.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

# Hyperparameter checks by name: (predicate, description of the valid set). A loss can override a rule with
# ``register(..., hparam_rules=...)``.
_HPARAM_RULES: dict[str, tuple[Any, str]] = {
    "beta": (lambda v: v > 0, "> 0"),
    "label_smoothing": (lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    "discopop_tau": (lambda v: v > 0, "> 0"),
    "tau": (lambda v: v > 0, "> 0"),
    "temperature": (lambda v: v > 0, "> 0"),
    "desirable_weight": (lambda v: v >= 0, ">= 0"),
    "undesirable_weight": (lambda v: v >= 0, ">= 0"),
    "rpo_alpha": (lambda v: v >= 0, ">= 0"),
    "cpo_alpha": (lambda v: v >= 0, ">= 0"),
    "sft_weight": (lambda v: v >= 0, ">= 0"),
    "lambda_": (lambda v: v >= 0, ">= 0"),
}
# Every other numeric hyperparameter must merely be finite.


def _concrete_scalar(v: Any) -> float | None:
    if isinstance(v, jax.core.Tracer):
        return None
    if isinstance(v, (bool, np.bool_)):
        return None
    try:
        arr = np.asarray(v)
    except Exception:  # noqa: BLE001 - non-numeric hyperparameters are not checked here
        return None
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.dtype("bfloat16")):
        return None
    return float(arr.astype(np.float64))


def check_hparams(
    loss_name: str,
    hparams: dict[str, Any],
    *,
    rules: dict[str, tuple[Any, str]] | None = None,
    defaults: dict[str, Any] | None = None,
    nullable: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the hyperparameter when a value is outside its valid set.

    ``rules`` override the global rules for this loss. ``defaults`` give the expected types: a boolean default
    needs a bool; a numeric default needs a number. ``None`` is allowed only for names in ``nullable``.
    """
    rules = {**_HPARAM_RULES, **(rules or {})}
    defaults = defaults or {}
    for key, value in hparams.items():
        if key in defaults:
            d = defaults[key]
            if isinstance(d, bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise TypeError(f"loss {loss_name!r}: hyperparameter {key}={value!r} must be a bool")
                continue
            if value is None:
                if d is not None and key not in nullable:
                    raise TypeError(f"loss {loss_name!r}: hyperparameter {key}=None is not allowed")
                continue
            if isinstance(d, (int, float)) or d is None:
                if isinstance(value, (bool, np.bool_, str)):
                    raise TypeError(f"loss {loss_name!r}: hyperparameter {key}={value!r} must be a number")
        x = _concrete_scalar(value)
        if x is None:
            continue
        if key in rules:
            pred, desc = rules[key]
            if not (math.isfinite(x) and pred(x)):
                raise ValueError(f"loss {loss_name!r}: hyperparameter {key}={value!r} must be {desc}")
        elif not math.isfinite(x):
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
_BINARY_FIELDS = ("desirable", "mask")


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_batch(spec: Any, batch: Any, hparams: dict[str, Any] | None = None) -> None:
    """Check a batch against a loss's needs; raise ``ValueError`` naming field and example index.

    Checks: batch type; required fields present (reference fields only for losses that read them, length
    fields for losses that need them, plus ``spec.extra_fields(hparams)``); every field has the kind's rank
    and the same shape; and, when values are concrete: log-probs and scores finite, lengths finite, ≥ 0 and
    (where needed) > 0, ``desirable``/``mask`` in {0, 1}. For ``[B, K]`` kinds with a ``mask``, entries where
    ``mask`` is 0 are padding and are not checked. Reference fields of reference-free losses are ignored
    (not read, not checked).
    """
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
    ignored: tuple[str, ...] = ()
    if spec.needs_reference:
        needed += [f for f in _REFERENCE_FIELDS[spec.kind] if f not in needed]
    else:
        ignored = tuple(f for f in _REFERENCE_FIELDS[spec.kind] if f not in needed)
    if spec.needs_lengths:
        needed += list(_LENGTH_FIELDS[spec.kind])
    extra = getattr(spec, "extra_fields", None)
    if extra is not None:
        needed += [f for f in extra(dict(hparams or spec.hparams)) if f not in needed]
    for f in needed:
        if getattr(batch, f) is None:
            raise ValueError(f"loss {spec.name!r} needs batch field {f!r}, which is None")

    shape = None
    ndim = _NDIM[spec.kind]
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if v is None or f.name in ignored:
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

    if shape is not None and shape[0] == 0:
        raise ValueError(f"loss {spec.name!r}: empty batch (0 examples); the mean of its per-example losses "
                         "would be NaN")

    valid = None
    mask = getattr(batch, "mask", None)
    if mask is not None and _is_concrete(mask):
        m = np.asarray(mask)
        if not np.isin(m.astype(np.float64), (0.0, 1.0)).all():
            _raise_at(spec.name, "mask", ~np.isin(m.astype(np.float64), (0.0, 1.0)), "is not 0/1")
        valid = m.astype(bool)

    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if v is None or f.name in ignored or not _is_concrete(v):
            continue
        arr = np.asarray(v)
        if f.name in _BINARY_FIELDS:
            vals = arr.astype(np.float64)
            bad = ~np.isin(vals, (0.0, 1.0))
            if bad.any():
                _raise_at(spec.name, f.name, bad, "is not 0/1 (or bool)")
            continue
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.dtype("bfloat16"):
            raise ValueError(f"loss {spec.name!r}: batch field {f.name!r} has non-numeric dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        check = np.ones(arr.shape, bool) if valid is None else valid
        bad = ~np.isfinite(arr) & check
        if f.name in _LENGTH_FIELDS[spec.kind]:
            if bad.any():
                _raise_at(spec.name, f.name, bad, "is not finite")
            if ((arr < 0) & check).any():
                _raise_at(spec.name, f.name, (arr < 0) & check, "is negative")
            if f.name in needed and ((arr == 0) & check).any():
                _raise_at(spec.name, f.name, (arr == 0) & check, "is zero (empty response)")
        elif bad.any():
            _raise_at(spec.name, f.name, bad, "is not finite")


def _raise_at(loss: str, field: str, where: np.ndarray, what: str) -> None:
    idx = tuple(int(i) for i in np.argwhere(where)[0])
    where_s = f"example {idx[0]}" if len(idx) == 1 else f"example {idx[0]}, position {idx[1:]}"
    raise ValueError(f"loss {loss!r}: batch field {field!r} {what} at {where_s} ({int(where.sum())} bad in total)")

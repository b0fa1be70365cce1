"""The probe protocol and the runner that calls probes during training.

A probe is any object with

* ``name: str`` — a prefix for its scalars (``name/key`` in ``metrics.jsonl`` and TensorBoard);
* ``every: int`` — evaluate after every ``every``-th update (``0`` = only at the start and the end);
* ``__call__(step, graphdef, state) -> dict`` — ``state`` is the current
  :class:`~jalign.train.step.TrainState` (parameters possibly sharded over the mesh; every process calls the
  probe, so collectives inside it are fine). It returns a JSON-serialisable dict; its float/int entries are
  logged as scalars, everything (arrays converted to lists) is appended to ``workdir/probes.jsonl`` as
  ``{"step": s, "probe": name, ...}`` and to :attr:`TrainResult.probes <jalign.train.loop.TrainResult>`.

Probes run at step ``start`` (before the first update of this run: the initial model, or the resumed one), at
every multiple of ``every`` and at the final step. They see the state *after* the update of that step, and
they never change it. Pass them as ``train(cfg, probes=[...])``.

The probes themselves are the other modules of :mod:`jalign.train.probes`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np


class Probe(Protocol):
    name: str
    every: int

    def __call__(self, step: int, graphdef: Any, state: Any) -> dict: ...


def due(probe: Probe, step: int, *, start: int, final: int) -> bool:
    """Whether ``probe`` runs at ``step`` (``start`` = the step the run began from, ``final`` = last step)."""
    every = int(getattr(probe, "every", 0))
    return step == start or step == final or (every > 0 and step % every == 0)


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (jax.Array, np.ndarray, np.generic)):
        return _jsonable(np.asarray(v).tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def scalars(name: str, out: dict) -> dict[str, float]:
    """The scalar entries of a probe's output, prefixed ``name/`` (0-d arrays count as scalars)."""
    res = {}
    for k, v in out.items():
        if isinstance(v, (bool, np.bool_)):
            continue
        if isinstance(v, (int, float, np.integer, np.floating)) or (
                isinstance(v, (jax.Array, np.ndarray)) and np.ndim(v) == 0):
            res[f"{name}/{k}"] = float(v)
    return res


class ProbeRunner:
    """Calls the due probes, logs their scalars, keeps and writes their records (process 0 writes)."""

    def __init__(self, probes, workdir: str | Path | None, *, is_main: bool = True, start: int = 0):
        self.probes = list(probes or [])
        names = [p.name for p in self.probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probes: names must be unique, got {names}")
        for p in self.probes:
            if int(getattr(p, "every", 0)) < 0:
                raise ValueError(f"probe {p.name!r}: every must be >= 0, got {p.every}")
        self.records: list[dict] = []
        self._file = None
        if workdir and is_main and self.probes:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            path = Path(workdir) / "probes.jsonl"
            if path.exists():  # a resumed run: drop what an interrupted run wrote at or after the resume step
                keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] < start]
                tmp = path.with_name(".probes.jsonl.tmp")
                tmp.write_text("".join(ln + "\n" for ln in keep))
                tmp.replace(path)
            self._file = open(path, "a")

    def __call__(self, step: int, graphdef, state, *, start: int, final: int) -> dict[str, float]:
        logged: dict[str, float] = {}
        for p in self.probes:
            if not due(p, step, start=start, final=final):
                continue
            out = jax.device_get(p(step, graphdef, state))
            logged.update(scalars(p.name, out))
            rec = {"step": int(step), "probe": p.name, **_jsonable(out)}
            self.records.append(rec)
            if self._file:
                self._file.write(json.dumps(rec) + "\n")
                self._file.flush()
        return logged

    def close(self) -> None:
        if self._file:
            self._file.close()

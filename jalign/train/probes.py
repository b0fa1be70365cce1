"""Probes: diagnostics evaluated on a fixed probe set while training runs.

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

:func:`logps_probe` is the simplest useful probe (summed log-probs of fixed chosen/rejected responses); the
diagnostics package builds richer ones (gradient entanglement, likelihood displacement) on the same protocol.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jalign.train.distributed import host_value


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


class logps_probe:  # noqa: N801 - used like a function
    """Summed response log-probs of fixed (prompt, chosen, rejected) batches under the current policy.

    Args:
      batch: a pairwise batch as the trainer's data sources produce it (``chosen_ids``, ``chosen_mask``,
        ``chosen_attention_mask``, and the same for ``rejected``; masks select response tokens).
      every: evaluate every ``every`` updates.
      name: scalar prefix.

    Returns per call: ``chosen_logps``/``rejected_logps`` lists ``[B]`` and their means (scalars
    ``mean_chosen``, ``mean_rejected``, ``mean_margin``).
    """

    def __init__(self, batch: dict, *, every: int = 10, name: str = "probe"):
        self.batch = {k: np.asarray(v) for k, v in batch.items()}
        self.every, self.name = every, name
        self._fn = self._graphdef = None

    def __call__(self, step, graphdef, state):
        from jalign.train.step import make_logps_fn

        if self._fn is not None and self._graphdef != graphdef:
            raise ValueError(f"probe {self.name!r} was compiled for another model; make one probe per run")
        if self._fn is None:
            self._graphdef = graphdef

            def fn(params, model_state, b):
                lp = make_logps_fn(graphdef, params, model_state)
                w, _ = lp(b["chosen_ids"], b["chosen_mask"], b["chosen_attention_mask"])
                l, _ = lp(b["rejected_ids"], b["rejected_mask"], b["rejected_attention_mask"])
                return w.astype(jnp.float32), l.astype(jnp.float32)

            self._fn = jax.jit(fn)
        w, l = host_value(self._fn(state.params, state.model_state, self.batch))
        return {"chosen_logps": w, "rejected_logps": l, "mean_chosen": float(np.mean(w)),
                "mean_rejected": float(np.mean(l)), "mean_margin": float(np.mean(w - l))}

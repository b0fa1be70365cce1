"""Benchmark harness: every benchmark writes JSON with medians, a same-run baseline and the ratio.

Usage from a benchmark module::

    from bench.harness import timeit, write_result
    t = timeit(fn, repeats=7)          # median seconds of fn() (fn must block until done)
    write_result("losses", rows, out)  # bench/results/losses.json and the README table

``python -m bench.table`` regenerates ``bench/README.md`` from every ``bench/results/*.json``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median (and min/max) wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs; ``times``: all of
    them, in order."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats,
            "times": times}


def machine() -> dict[str, Any]:
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` (plus machine info) to ``out`` or ``bench/results/NAME.json``."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
    return path

"""Benchmark harness: every benchmark writes JSON with medians, a same-run baseline and the ratio.

Usage from a benchmark module::

    from bench.harness import timeit, write_result
    t = timeit(fn, repeats=7)          # median seconds of fn() (fn must block until done)
    write_result("losses", rows, out)  # bench/results/losses.json and the README table

Every result records the CPU it ran on (``cpu_info``: model, ISA flags, cores) under the key ``"cpu"``: hosts
differ (some with AVX-512, AVX512-BF16 and AMX, some AVX2-only, where XLA:CPU has no bf16 dot instructions), and
the numbers mean little without it.

``python -m bench.table`` regenerates ``bench/README.md`` from every ``bench/results/*.json``.
"""

from __future__ import annotations

import json
import os
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


# ISA extensions recorded by name (Linux /proc/cpuinfo spelling): x86 vector/matrix units, then AArch64's.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, ISA flags and logical-CPU count from the text of Linux's ``/proc/cpuinfo``.

    Args:
        text: the file's contents: blocks of ``key : value`` lines, one block per logical CPU.

    Returns:
        ``{"cpu_model": str | None, "isa": {flag: bool for flag in ISA_FLAGS}, "cores": int}``. ``cpu_model`` is
        the ``model name`` (x86) or ``Hardware``/``CPU part`` line, distinct models joined by `` + ``; a flag is
        True when it is a whole word of the ``flags`` (x86) or ``Features`` (AArch64) line of every CPU (so
        ``avx512f`` does not match ``avx512fp16``); ``cores`` counts the ``processor`` entries.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if not line.strip() and current:
                blocks.append(current)
                current = {}
            continue
        key = key.strip().lower()
        if key == "processor" and "processor" in current:  # a new CPU without a blank line before it
            blocks.append(current)
            current = {}
        current.setdefault(key, value.strip())
    if current:
        blocks.append(current)
    cpus = [b for b in blocks if b.get("processor", "").isdigit()]
    models = []
    for b in blocks:
        m = b.get("model name") or b.get("hardware")
        if m and m not in models:
            models.append(m)
    flag_sets = [set((b.get("flags") or b.get("features") or "").split()) for b in cpus
                 if "flags" in b or "features" in b]
    flags = set.intersection(*flag_sets) if flag_sets else set()
    if not models and cpus and cpus[0].get("cpu part"):
        models.append(f"{cpus[0].get('cpu implementer', '?')}/{cpus[0]['cpu part']}")
    return {"cpu_model": " + ".join(models) or None, "isa": {f: f in flags for f in ISA_FLAGS},
            "cores": len(cpus)}


def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU this process runs on: ``parse_cpuinfo`` of ``path`` on Linux, plus ``usable_cores`` (this
    process's CPU affinity) and ``source``.

    Where ``path`` cannot be read or parsed (not Linux), ``cpu_model`` falls back to ``platform.processor()``
    (or ``platform.machine()``), every ``isa`` entry is None (unknown, not False) and ``cores`` is
    ``os.cpu_count()``.
    """
    try:
        info = parse_cpuinfo(Path(path).read_text(errors="replace"))
        if not info["cores"]:
            raise ValueError(f"no processor entries in {path}")
        info["source"] = "/proc/cpuinfo"
    except (OSError, ValueError):
        info = {"cpu_model": platform.processor() or platform.machine() or None,
                "isa": dict.fromkeys(ISA_FLAGS), "cores": os.cpu_count(), "source": "platform"}
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cores"] = os.cpu_count()
    return info


def isa_summary(isa: dict[str, Any]) -> str:
    """``"AVX2, FMA, AVX-512F, AVX512-BF16, AMX-BF16"``-style list of the vector/matrix extensions present, with
    ``"no bf16 instructions"`` for an x86 CPU that has neither AVX512-BF16 nor AMX-BF16; ``"not recorded"`` if
    unknown."""
    if not isa or all(v is None for v in isa.values()):
        return "not recorded"
    names = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA", "avx_vnni": "AVX-VNNI", "avx512f": "AVX-512F",
             "avx512bw": "AVX-512BW", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16",
             "avx512_fp16": "AVX512-FP16", "amx_tile": "AMX-TILE", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8",
             "asimd": "ASIMD", "sve": "SVE", "sve2": "SVE2", "bf16": "BF16", "i8mm": "I8MM"}
    present = [label for flag, label in names.items() if isa.get(flag)]
    x86 = any(isa.get(f) for f in ("sse4_2", "avx", "avx2"))
    if x86 and not (isa.get("avx512_bf16") or isa.get("amx_bf16")):
        present.append("no bf16 instructions")
    return ", ".join(present) or "none of the listed extensions"


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
    """Write ``payload`` (plus machine and CPU info) to ``out`` or ``bench/results/NAME.json``."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "cpu": cpu_info(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
               **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
    return path

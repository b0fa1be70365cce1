"""Process-level settings for XLA:CPU: faster training steps, and results that do not depend on the core count.

:func:`tune_host_allocator` — keep large host buffers instead of returning them to the kernel.
:func:`pin_reduction_order` — make XLA:CPU's reductions independent of the number of threads.

Host allocator. XLA:CPU allocates each execution's temporary buffer (1.6 GB for the d512 GPT-2 DPO step of
``bench/peer_trl.py``) and its large outputs with ``malloc``. glibc serves requests above its mmap threshold
(at most 32 MiB by default, and always for requests that do not fit a thread's 64 MiB arena heap) with a fresh
``mmap`` and gives them back with ``munmap`` on ``free``: every step then touches hundreds of thousands of new
pages, each a minor page fault plus the kernel zeroing the page — measured 460 000 faults and 1.1–1.2 s of
system time per d512 step on the 2-core benchmark machine. With one arena and mmap/trim thresholds of 2 GiB the
freed buffers stay in the heap and are reused by the next step (0 faults per step after the first).

The setting is process-wide and changes only where memory comes from, never a computed value. The cost is that
freed memory up to the trim threshold stays resident (RSS keeps its high-water mark) and all threads share one
malloc arena. It must run before the JAX CPU client starts its worker threads (before the first JAX
computation) to cover their allocations; the ``jalign`` command line and ``bench.peer_trl`` call it first thing.
Set ``JALIGN_HOST_ALLOCATOR=default`` to leave the allocator alone.

Reduction order. XLA:CPU (jaxlib 0.10) hands reductions over a major axis — ``x.sum(0)``, the column sums of
bias and LayerNorm gradients, full sums — to its YNNPACK fusion, which splits the reduced axis over the CPU
client's worker threads, one per core the process may run on (its CPU affinity). The float32 summation order,
and so the last bits of the result, then depend on the core count: the same seeded run gives different numbers
under ``taskset -c 0`` than on two cores (a (8192, 64) column sum differs; the small-LM f-DPG run's loss
differs from its fourth step). Reductions over the minor axis, matrix
products, elementwise ops, the number of simulated devices, the allocator and the process itself (two fresh
processes) do not change a bit. :func:`pin_reduction_order` adds
``--xla_cpu_experimental_ynn_fusion_type=-reduce`` to ``XLA_FLAGS``: reductions go to XLA's own emitters,
whose order is fixed, and results are bitwise the same for any core count on one CPU kind (no measurable
cost on the f-DPG LM step). Different CPU kinds (instruction sets) may still round differently. Like the
allocator it must run before the first JAX computation; the ``jalign`` command line calls it first thing. Set
``JALIGN_REDUCTIONS=default`` to keep XLA's default (thread-dependent) reductions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import mmap
import os
import sys
import warnings

__all__ = ["REDUCTION_FLAG", "pin_reduction_order", "tune_host_allocator"]

# glibc <malloc.h> mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_INT_MAX = 2**31 - 1
_state: dict[str, object] = {}


def _glibc():
    """The process's C library if it is glibc (has ``gnu_get_libc_version`` and ``mallopt``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def _jax_started() -> bool:
    """Whether a JAX backend (and with it XLA's worker threads) already exists in this process."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # private API moved: assume not started
        return False


def tune_host_allocator(threshold_bytes: int = _INT_MAX, *, respect_env: bool = True) -> bool:
    """Keep freed host buffers up to ``threshold_bytes`` for reuse (glibc ``mallopt``); True if applied.

    Sets ``M_ARENA_MAX = 1`` (XLA's worker threads allocate from the main heap, not from 64 MiB per-thread
    heaps that cannot hold a large buffer), ``M_MMAP_THRESHOLD = threshold_bytes`` (requests below it come from
    the heap, not a fresh ``mmap``) and ``M_TRIM_THRESHOLD = threshold_bytes`` (freed memory below it is not
    returned to the kernel). Idempotent. Returns False, changing nothing, on a non-glibc platform, when
    ``JALIGN_HOST_ALLOCATOR=default`` is set (and ``respect_env``), or if glibc refuses a value.

    Args:
      threshold_bytes: mmap and trim threshold, ``1 ≤ threshold_bytes ≤ 2**31 − 1`` (mallopt takes an int).
      respect_env: honour ``JALIGN_HOST_ALLOCATOR=default``.
    """
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) or not (
        1 <= threshold_bytes <= _INT_MAX
    ):
        raise ValueError(f"tune_host_allocator: threshold_bytes must be an int in [1, 2**31 - 1], "
                         f"got {threshold_bytes!r}")
    if respect_env:
        mode = os.environ.get("JALIGN_HOST_ALLOCATOR", "tuned").strip().lower()
        if mode not in ("tuned", "default"):
            raise ValueError(f"JALIGN_HOST_ALLOCATOR must be 'tuned' or 'default', got {mode!r}")
        if mode == "default":
            return False
    if _state.get("threshold") == threshold_bytes:
        return True
    libc = _glibc()
    if libc is None:
        return False
    ok = all(libc.mallopt(p, v) == 1 for p, v in (
        (_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, threshold_bytes), (_M_TRIM_THRESHOLD, threshold_bytes)))
    if ok:
        _state["threshold"] = threshold_bytes
        if _jax_started():
            warnings.warn("tune_host_allocator() ran after JAX started its CPU client: XLA's worker threads keep "
                          "their own malloc arenas, so a step's large buffers may still be mmapped afresh each "
                          "step; call it before the first JAX computation", RuntimeWarning, stacklevel=2)
    return ok


REDUCTION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


def _xla_knows_flag(name: str) -> bool:
    """Whether the installed jaxlib defines the XLA flag ``name`` (its name is in a shared library of jaxlib).

    XLA aborts the process on an unknown flag in ``XLA_FLAGS``, so a flag is only set when the binary has it.
    """
    spec = importlib.util.find_spec("jaxlib")
    needle = name.lstrip("-").split("=", 1)[0].encode()
    for root in (spec.submodule_search_locations or []) if spec else []:
        for entry in sorted(os.scandir(root), key=lambda e: -e.stat().st_size):
            if not entry.name.endswith(".so"):
                continue
            try:
                with open(entry.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    if m.find(needle) >= 0:
                        return True
            except (OSError, ValueError):  # unreadable or empty file
                continue
    return False


def pin_reduction_order(*, respect_env: bool = True) -> bool:
    """Make XLA:CPU's reductions independent of the thread count (``XLA_FLAGS`` += :data:`REDUCTION_FLAG`).

    Adds ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` to ``XLA_FLAGS`` so that reductions are not handed
    to YNNPACK, whose summation order follows the number of worker threads (see the module docstring). Returns
    True if the flag is (now) in ``XLA_FLAGS``. Changes nothing and returns False when
    ``JALIGN_REDUCTIONS=default`` is set (and ``respect_env``), when ``XLA_FLAGS`` already sets
    ``--xla_cpu_experimental_ynn_fusion_type`` to something else (the user's choice wins), when the installed
    jaxlib does not know the flag (XLA would abort on it), or when JAX has already started its backend (the
    flags are read once, then; a ``RuntimeWarning`` says so, once per process).

    Args:
      respect_env: honour ``JALIGN_REDUCTIONS=default``.
    """
    if respect_env:
        mode = os.environ.get("JALIGN_REDUCTIONS", "pinned").strip().lower()
        if mode not in ("pinned", "default"):
            raise ValueError(f"JALIGN_REDUCTIONS must be 'pinned' or 'default', got {mode!r}")
        if mode == "default":
            return False
    flags = os.environ.get("XLA_FLAGS", "").split()
    if REDUCTION_FLAG in flags:
        return True
    key = REDUCTION_FLAG.split("=", 1)[0]
    if any(f.split("=", 1)[0] == key for f in flags):
        return False
    if _jax_started():
        if _state.get("pin_warned"):  # once per process (the CLI's main may run many times in one process)
            return False
        _state["pin_warned"] = True
        warnings.warn("pin_reduction_order() ran after JAX started its backend: XLA_FLAGS are read once, so "
                      "reductions keep their thread-dependent order in this process; call it before the first "
                      "JAX computation", RuntimeWarning, stacklevel=2)
        return False
    if not _xla_knows_flag(REDUCTION_FLAG):
        return False
    os.environ["XLA_FLAGS"] = " ".join([*flags, REDUCTION_FLAG])
    return True

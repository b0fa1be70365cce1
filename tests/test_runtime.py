"""jalign.runtime.tune_host_allocator: large freed buffers are reused instead of re-faulted from the kernel."""

import json
import os
import subprocess
import sys

import pytest

from jalign import runtime

pytestmark = pytest.mark.skipif(runtime._glibc() is None, reason="glibc (Linux) only")

# A child process mallocs, fills and frees 64 MiB five times (plain malloc/memset/free, no transparent huge
# pages) and reports the minor page faults of rounds 2..5. 64 MiB is above glibc's largest default mmap
# threshold (32 MiB), so by default every allocation is a fresh mmap whose 16 384 pages all fault on first touch.
_CHILD = r"""
import ctypes, json, resource, sys
from jalign.runtime import _glibc, tune_host_allocator
applied = tune_host_allocator() if sys.argv[1] == "tune" else False
libc = _glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 64 * 2**20
faults = []
for i in range(5):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    libc.free(p)
print(json.dumps({"applied": applied, "faults": faults[1:]}))
"""

PAGES = 64 * 2**20 // 4096


def _child(mode, **env):
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(__file__)))
    return json.loads(out.stdout)


def test_reuse_removes_page_faults():
    base = _child("plain")
    tuned = _child("tune")
    assert base["applied"] is False and tuned["applied"] is True
    assert all(f >= PAGES for f in base["faults"]), base  # fresh mmap: every page faults
    assert all(f < PAGES // 50 for f in tuned["faults"]), tuned  # reused heap memory: (almost) none


def test_env_opt_out_changes_nothing():
    off = _child("tune", JALIGN_HOST_ALLOCATOR="default")
    assert off["applied"] is False
    assert all(f >= PAGES for f in off["faults"]), off


@pytest.mark.parametrize("bad", [0, -5, 2**31, 1.5, True, "1"])
def test_rejects_invalid_threshold(bad):
    with pytest.raises(ValueError, match="threshold_bytes"):
        runtime.tune_host_allocator(bad)


def test_rejects_unknown_env_mode(monkeypatch):
    monkeypatch.setenv("JALIGN_HOST_ALLOCATOR", "fast")
    with pytest.raises(ValueError, match="JALIGN_HOST_ALLOCATOR"):
        runtime.tune_host_allocator()


@pytest.mark.parametrize("jax_first,expected", [(True, "1"), (False, "0")])
def test_warns_only_when_called_after_jax_started(jax_first, expected):
    code = ("import warnings, jax.numpy as jnp\n"
            + ("jnp.ones(2).block_until_ready()\n" if jax_first else "")
            + "from jalign.runtime import tune_host_allocator\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    assert tune_host_allocator()\n"
            "print(sum('before the first JAX computation' in str(x.message) for x in w))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip().splitlines()[-1] == expected


def test_cli_reports_bad_env_value(monkeypatch, capsys):
    from jalign.cli import main

    monkeypatch.setenv("JALIGN_HOST_ALLOCATOR", "fast")
    assert main(["losses"]) == 2
    assert "JALIGN_HOST_ALLOCATOR must be 'tuned' or 'default', got 'fast'" in capsys.readouterr().err

"""`jalign reproduce`'s shared cache (compiled programs and values such as the SFT reference) and --jobs auto."""

from __future__ import annotations

import importlib
import json
import os

import numpy as np
import pytest

from jalign.cli import main

_PART = '''
import json, os

import jax
import jax.numpy as jnp
import numpy as np

from paper_repro._common import shared


def run(out, *, quick=True):
    def compute():
        return {{"w": jnp.sin(jnp.arange(6, dtype=jnp.float32).reshape(2, 3)), "pid": os.getpid()}}

    value, reused = shared({{"value": "planted", "n": 6}}, compute)
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())  # a fresh closure: jax's in-memory cache cannot serve it
    y = float(f(jnp.ones((16, 16)) * {scale}))
    res = {{"reused": reused, "by": value["pid"], "w": np.asarray(value["w"]).tolist(),
            "w_is_jax": isinstance(value["w"], jax.Array), "dtype": str(value["w"].dtype),
            "env": os.environ.get("JALIGN_REPRO_CACHE"), "jax_dir": jax.config.jax_compilation_cache_dir,
            "y": y, "claims": []}}
    (out / "results.json").write_text(json.dumps(res))
    return res
'''


@pytest.fixture
def planted(tmp_path, monkeypatch):
    import paper_repro

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("a", "b"):
        (pkg / f"cache_repro_{name}.py").write_text(_PART.format(scale=0.5))
    monkeypatch.syspath_prepend(str(pkg))
    reg = {n: importlib.import_module(f"cache_repro_{n}") for n in ("a", "b")}
    monkeypatch.setattr(paper_repro, "registry", lambda: reg)
    return tmp_path


def _results(out):
    return {n: json.loads((out / n / "results.json").read_text()) for n in ("a", "b")}


def test_a_value_is_computed_once_per_command_and_reused_bit_for_bit(planted):
    """The first reproduction computes the shared value, the second loads it: equal arrays, the same dtype, on
    the device; the temporary directory is gone afterwards and the environment restored."""
    out = planted / "out"
    assert main(["reproduce", "a,b", "--jobs", "1", "--out", str(out)]) == 0
    r = _results(out)
    assert [r["a"]["reused"], r["b"]["reused"]] == [False, True]
    assert r["b"]["by"] == r["a"]["by"]  # the value b got was computed in a's process
    import jax.numpy as jnp

    want = np.asarray(jnp.sin(jnp.arange(6, dtype=jnp.float32).reshape(2, 3))).tolist()  # computed here, as in a
    assert r["a"]["w"] == want and r["b"]["w"] == want
    assert r["b"]["w_is_jax"] and r["b"]["dtype"] == "float32"
    cache = r["a"]["env"]
    assert cache and r["b"]["env"] == cache and r["a"]["jax_dir"] == os.path.join(cache, "xla")
    assert not os.path.exists(cache)  # the command's temporary directory is removed
    assert "JALIGN_REPRO_CACHE" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ
    import jax

    assert jax.config.jax_compilation_cache_dir is None


def test_cache_none_shares_nothing_and_a_kept_dir_serves_a_later_command(planted, monkeypatch):
    from jalign.cli import reproduce

    assert main(["reproduce", "a,b", "--jobs", "1", "--cache", "none", "--out", str(planted / "o1")]) == 0
    r = _results(planted / "o1")
    assert [r["a"]["reused"], r["b"]["reused"]] == [False, False] and r["a"]["env"] is None

    # a kept directory: the compiled program is written there (every compile counts here) and a later command
    # loads both the value and the program from it instead of computing / compiling them
    import jax.monitoring

    hits = []
    jax.monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e.endswith("cache_hits") else None)
    monkeypatch.setattr(reproduce._SharedCache, "MIN_COMPILE_SECONDS", 0.0)
    keep = planted / "kept"
    assert main(["reproduce", "a", "--cache", str(keep), "--out", str(planted / "o2")]) == 0
    assert len(list((keep / "values").glob("*.pkl"))) == 1
    programs = {p.name for p in (keep / "xla").iterdir()}
    assert any(p.startswith("jit__lambda") for p in programs)
    before = len(hits)
    assert main(["reproduce", "b", "--cache", str(keep), "--out", str(planted / "o3")]) == 0
    r3 = json.loads((planted / "o3" / "b" / "results.json").read_text())
    assert r3["reused"] is True and len(hits) > before  # the value and compiled programs came from the dir
    assert r3["y"] == r["b"]["y"]  # the loaded program computes what the compiled one did
    # worker processes read the same directory (set through the environment they inherit)
    assert main(["reproduce", "a,b", "--jobs", "2", "--cache", str(keep), "--out", str(planted / "o4")]) == 0
    r4 = _results(planted / "o4")
    assert all(r4[n]["reused"] and r4[n]["by"] == os.getpid() and r4[n]["w"] == r["a"]["w"] for n in "ab")
    assert r4["a"]["jax_dir"] == str(keep / "xla") and r4["a"]["y"] == r["b"]["y"]


def test_cache_dir_that_cannot_be_written_is_one_clear_error(planted, capsys):
    blocker = planted / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "a", "--cache", str(blocker / "sub"), "--out", str(planted / "o")])
    assert "--cache" in str(e.value) and "not writable" in str(e.value)
    assert not (planted / "o" / "a").exists()


def test_jobs_auto_uses_the_usable_cores_at_most_four_and_one_with_an_accelerator(monkeypatch, capsys):
    import importlib.util

    from jalign.cli import reproduce

    monkeypatch.setattr(reproduce, "_accelerator_plugin", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert [reproduce.auto_jobs(n) for n in (1, 2, 11)] == [1, 2, 2]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [reproduce.auto_jobs(n) for n in (3, 11)] == [3, 4]
    monkeypatch.setattr(reproduce, "_accelerator_plugin", lambda: True)
    assert reproduce.auto_jobs(11) == 1

    monkeypatch.undo()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "jax_cuda12_plugin" else real(name, *a))
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert reproduce._accelerator_plugin() is True
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert reproduce._accelerator_plugin() is False

    assert main(["reproduce", "all", "--jobs", "two", "--out", "unused"]) == 2
    assert "--jobs 'two' must be an integer >= 1 or 'auto'" in capsys.readouterr().err

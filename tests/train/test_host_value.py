"""jalign.train.distributed.host_value: device_get that all-gathers arrays sharded across processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign.train.distributed import host_value

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jalign.train.distributed import initialize, host_value
    initialize(sys.argv[1], 2, int(sys.argv[2]))
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    full = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    sharded = jax.make_array_from_callback((8, 3), NamedSharding(mesh, P("data")), lambda idx: full[idx])
    replicated = jax.make_array_from_callback((2,), NamedSharding(mesh, P()), lambda idx: np.array([5.0, 7.0])[idx])
    tree = {"rows": sharded, "rep": replicated, "plain": np.int32(3)}
    assert not sharded.is_fully_addressable
    out = host_value(tree)
    print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))
""")


def test_single_process_is_device_get():
    tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": (jnp.float32(2.5), np.array([1, 2])), "c": 4}
    out = host_value(tree)
    assert isinstance(out["a"], np.ndarray) and out["a"].shape == (2, 3)
    np.testing.assert_array_equal(out["a"], np.arange(6.0).reshape(2, 3))
    assert float(out["b"][0]) == 2.5 and out["b"][1].tolist() == [1, 2] and out["c"] == 4
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), out, jax.device_get(tree))


@pytest.mark.slow
def test_two_processes_get_the_global_value(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), f"127.0.0.1:{port}", str(i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e[-3000:]
    full = np.arange(8 * 3, dtype=np.float32).reshape(8, 3).tolist()
    for o, _ in outs:
        got = json.loads(o.strip().splitlines()[-1])
        assert got == {"rows": full, "rep": [5.0, 7.0], "plain": 3}

"""jalign.runtime.pin_reduction_order: results are bitwise the same on one core and on two.

Each child process restricts itself to some of this process's CPUs (``os.sched_setaffinity`` before JAX starts:
XLA:CPU sizes its worker pool by the affinity), optionally pins the reduction order, and prints the bits of
(a) a float32 column sum of a (8192, 64) array (YNNPACK splits its reduced axis over the threads) and
(b) the gradient of the small LM's summed log-probs of four fixed byte strings (bias and LayerNorm gradients
are column sums). The f-DPG LM drift of issue #20 starts in such gradients: the same seeded run gave different
numbers under ``taskset -c 0`` than on two cores (docs/reproductions.md, "Determinism and drift").
"""

import json
import os
import subprocess
import sys
import warnings

import pytest

from jalign import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

pytestmark = [
    pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs to compare one worker thread with two"),
    pytest.mark.skipif(not runtime._xla_knows_flag(runtime.REDUCTION_FLAG), reason="jaxlib lacks the YNN flag"),
]

_CHILD = r"""
import hashlib, json, os, sys
cpus, mode, with_lm = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "lm"
os.sched_setaffinity(0, cpus)
from jalign.runtime import pin_reduction_order
pinned = pin_reduction_order() if mode == "pinned" else False
import numpy as np, jax, jax.numpy as jnp
bits = lambda a: hashlib.sha256(np.asarray(a).tobytes()).hexdigest()
x = jnp.asarray(np.random.default_rng(0).standard_normal((8192, 64)), jnp.float32)
out = {"pinned": pinned, "threads": len(os.sched_getaffinity(0)), "colsum": bits(jax.jit(lambda x: x.sum(0))(x))}
if with_lm:
    from flax import nnx
    from jalign.models import load_small_lm, token_logprobs
    graphdef, params = nnx.split(load_small_lm(), nnx.Param)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 256, (4, 17)), jnp.int32)
    f = lambda p: token_logprobs(nnx.merge(graphdef, p)(ids).logits, ids).sum()
    g = jax.jit(jax.grad(f))(params)
    out["grad"] = bits(np.concatenate([np.ravel(l) for l in jax.tree.leaves(g)]))
print(json.dumps(out))
"""


def _child(cpus, mode, lm=False):
    # XLA's default flags (conftest's simulated devices change how the CPU client sizes its worker pool: with 8
    # of them one core runs as many threads as two)
    env = {**os.environ, "JALIGN_REDUCTIONS": "pinned", "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cpus), mode, "lm" if lm else "sum"],
                         capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pinned_reductions_do_not_depend_on_the_core_count():
    one, two = _child(CPUS[:1], "pinned", lm=True), _child(CPUS[:2], "pinned", lm=True)
    assert one["pinned"] and two["pinned"] and (one["threads"], two["threads"]) == (1, 2)
    assert one["colsum"] == two["colsum"]
    assert one["grad"] == two["grad"]


def test_default_reductions_depend_on_the_core_count():
    """Why the pin exists: without it the column sum's bits change with the core count. If this fails, XLA's
    default reductions no longer depend on the thread count (and the pin may be unnecessary)."""
    one, two = _child(CPUS[:1], "default"), _child(CPUS[:2], "default")
    assert not one["pinned"] and not two["pinned"]
    assert one["colsum"] != two["colsum"]


def test_pin_respects_env_and_explicit_flags(monkeypatch):
    monkeypatch.setenv("JALIGN_REDUCTIONS", "default")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert runtime.pin_reduction_order() is False and os.environ["XLA_FLAGS"] == ""
    monkeypatch.setenv("JALIGN_REDUCTIONS", "pinned")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=reduce")  # the user's own choice
    assert runtime.pin_reduction_order() is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=reduce"
    monkeypatch.setenv("XLA_FLAGS", f"--foo {runtime.REDUCTION_FLAG}")
    assert runtime.pin_reduction_order() is True and os.environ["XLA_FLAGS"] == f"--foo {runtime.REDUCTION_FLAG}"
    monkeypatch.setenv("JALIGN_REDUCTIONS", "fast")
    with pytest.raises(ValueError, match="JALIGN_REDUCTIONS"):
        runtime.pin_reduction_order()


def test_pin_after_jax_started_warns_and_changes_nothing(monkeypatch):
    import jax.numpy as jnp

    jnp.ones(2).block_until_ready()  # the test process's backend exists
    monkeypatch.setenv("JALIGN_REDUCTIONS", "pinned")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    monkeypatch.setattr(runtime, "_state", {})
    with pytest.warns(RuntimeWarning, match="before the first JAX computation"):
        assert runtime.pin_reduction_order() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second late call is silent
        assert runtime.pin_reduction_order() is False
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"


def test_knows_flag_reads_the_jaxlib_binary():
    assert runtime._xla_knows_flag("--xla_force_host_platform_device_count=8")
    assert not runtime._xla_knows_flag("--xla_cpu_no_such_flag_here_0123")


@pytest.mark.filterwarnings("ignore:tune_host_allocator\\(\\) ran after JAX started:RuntimeWarning")
def test_cli_reports_bad_env_value(monkeypatch, capsys):
    from jalign.cli import main

    monkeypatch.setenv("JALIGN_REDUCTIONS", "fast")
    assert main(["losses"]) == 2
    assert "JALIGN_REDUCTIONS must be 'pinned' or 'default', got 'fast'" in capsys.readouterr().err



def test_cli_pins_before_jax_starts():
    code = ("import json, os\nfrom jalign.cli import main\nrc = main(['losses'])\n"
            "print(json.dumps([rc, os.environ['XLA_FLAGS'].split()]))")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env.pop("JALIGN_REDUCTIONS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    rc, flags = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0 and flags == ["--xla_force_host_platform_device_count=2", runtime.REDUCTION_FLAG]

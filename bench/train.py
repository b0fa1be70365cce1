"""DPO train-step time: jitted vs the same step without jit, 1 vs 8 (simulated) devices.

    python -m bench.train [--quick]

On CPU the 8 "devices" are XLA host-platform splits of the same cores: the 8-device rows check that the
sharded step computes the same loss and parameters (max |Δ| reported) and measure the sharding overhead;
a speed-up from more devices is only meaningful on real accelerators.
"""

from __future__ import annotations

import argparse
import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.harness import timeit, write_result  # noqa: E402
from jalign.train.config import base_config  # noqa: E402
from jalign.train.objectives import make_objective  # noqa: E402
from jalign.train.plugins import tiny  # noqa: E402
from jalign.train.sharding import global_batch, make_mesh  # noqa: E402
from jalign.train.step import init_state, jit_step, make_optimizer, make_train_step, place_state  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller model and fewer repeats")
    ap.add_argument("--out", help="output JSON (default bench/results/train.json)")
    args = ap.parse_args(argv)
    d_model, d_hidden, batch, seq, reps = (32, 128, 16, 48, 3) if args.quick else (64, 256, 32, 64, 5)

    cfg = base_config()
    tx, sched = make_optimizer(cfg.optim, 100)
    model = tiny.tiny_lm(0, d_model=d_model, d_hidden=d_hidden)
    n_params = sum(x.size for x in jax.tree.leaves(jax.tree.map(np.asarray, init_state(model, tx)[1].params)))
    g, st = init_state(model, tx)
    step = make_train_step(g, make_objective("preference", "dpo"), tx, sched)
    src = tiny.InMemoryBatchSource(tiny.synthetic_pairwise_examples(batch, seq), batch)
    b = next(src)

    ref_state, ref_m = step(st, b)
    rows = []

    def run_eager():
        jax.block_until_ready(step(st, b))

    t_eager = timeit(run_eager, repeats=reps)
    rows.append({"variant": "no jit (op by op)", "devices": 1, "mesh": "-", "median_ms": 1e3 * t_eager["median_s"],
                 "speedup_vs_no_jit": 1.0, "max_abs_dparam": 0.0})
    for shape in ((1, 1, 1), (8, 1, 1), (2, 2, 2)):
        mesh = make_mesh(*shape)
        f = jit_step(step, st, mesh)
        s_p, b_p = place_state(st, mesh), global_batch(b, mesh)
        out_state, m = f(s_p, b_p)
        dmax = max(float(np.max(np.abs(np.asarray(a) - np.asarray(c))))
                   for a, c in zip(jax.tree.leaves(out_state.params), jax.tree.leaves(ref_state.params), strict=True))
        dloss = abs(float(m["loss"]) - float(ref_m["loss"]))
        t = timeit(lambda f=f, s_p=s_p, b_p=b_p: jax.block_until_ready(f(s_p, b_p)), repeats=reps * 4)
        rows.append({"variant": "jit", "devices": mesh.size, "mesh": "x".join(map(str, shape)),
                     "median_ms": 1e3 * t["median_s"], "speedup_vs_no_jit": t_eager["median_s"] / t["median_s"],
                     "max_abs_dparam": dmax, "abs_dloss": dloss})
    payload = {
        "description": (f"DPO train step (adamw + clipping) on TinyLM ({n_params} params, d_model={d_model}), batch "
                        f"{batch} pairs x {seq} tokens, on {jax.devices()[0].platform}; baseline = the same "
                        "step without jit in the same run. Mesh = data x fsdp x tensor over simulated devices "
                        "(CPU: correctness + overhead only)."),
        "rows": rows,
    }
    path = write_result("train", payload, args.out)
    for r in rows:
        print(r)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

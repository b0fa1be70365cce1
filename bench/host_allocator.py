"""jalign's DPO step with glibc's default allocator vs ``jalign.runtime.tune_host_allocator``.

The allocator is a process-wide setting fixed before the first JAX computation, so the two arms run in
separate child processes, alternated round by round in one run of this script (same machine state, same
shapes and data: the step of ``bench/peer_trl.py``). Each child builds the step, runs one warm-up step and
``--steps`` timed steps, and reports per-step wall time, minor page faults and system CPU time.

    python -m bench.host_allocator --out bench/results/host_allocator.json [--configs 256/4/256,512/6/256]

Rows: ``ratio = default_s / tuned_s`` (> 1: the tuned allocator is faster), medians over all timed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import cpu_info

ROOT = Path(__file__).resolve().parent.parent


def child(spec: str, dtype: str, steps: int) -> dict:
    """Run in a fresh process: time ``steps`` DPO steps of config ``spec`` (n_embd/n_layer/seq)."""
    from jalign.runtime import tune_host_allocator

    applied = tune_host_allocator()  # honours JALIGN_HOST_ALLOCATOR=default (the baseline arm)
    import resource

    import jax.numpy as jnp

    from bench.peer_trl import jalign_cfg, make_data, make_jalign_step

    d, n_layer, seq = (int(x) for x in spec.split("/"))
    ids, mask = make_data(seq, steps + 1)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    step, st = make_jalign_step(jalign_cfg(d, n_layer, seq, dtype))
    times, faults, sys_s, losses = [], [], [], []
    for i in range(steps + 1):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        st["p"], st["o"], loss = step(st["p"], st["o"], st["ref"], ids[i], mask[i])
        loss.block_until_ready()
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        if i:  # step 0 compiles
            times.append(t1 - t0)
            faults.append(r1.ru_minflt - r0.ru_minflt)
            sys_s.append(r1.ru_stime - r0.ru_stime)
        losses.append(float(loss))
    return {"applied": applied, "times": times, "minflt": faults, "sys_s": sys_s, "losses": losses}


def run(configs, dtypes, rounds: int, steps: int) -> list[dict]:
    rows = []
    for spec in configs:
        for dtype in dtypes:
            arms = {"default": [], "tuned": []}
            for _ in range(rounds):
                for arm in arms:
                    env = {**os.environ, "JALIGN_HOST_ALLOCATOR": arm}
                    out = subprocess.run([sys.executable, "-m", "bench.host_allocator", "--child", spec, dtype,
                                          str(steps)], capture_output=True, text=True, env=env, cwd=ROOT)
                    if out.returncode:
                        raise RuntimeError(f"child {spec} {dtype} {arm} failed:\n{out.stderr[-3000:]}")
                    arms[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
            d, n_layer, seq = (int(x) for x in spec.split("/"))
            row = {"n_embd": d, "n_layer": n_layer, "seq": seq, "dtype": dtype}
            for arm, res in arms.items():
                row[f"{arm}_applied"] = all(r["applied"] for r in res)
                row[f"{arm}_s"] = statistics.median(t for r in res for t in r["times"])
                row[f"{arm}_minflt_per_step"] = statistics.median(f for r in res for f in r["minflt"])
                row[f"{arm}_sys_s_per_step"] = statistics.median(s for r in res for s in r["sys_s"])
                row[f"{arm}_times"] = [t for r in res for t in r["times"]]
            row["ratio"] = row["default_s"] / row["tuned_s"]
            # same data, same step: the allocator must not change a computed value
            row["same_losses"] = all(r["losses"] == arms["default"][0]["losses"] for res in arms.values()
                                     for r in res)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                              if not k.endswith("_times")}), flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON to write")
    ap.add_argument("--configs", default="256/4/256,512/6/256", help="n_embd/n_layer/seq,...")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "DTYPE", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return 0
    if not args.out:
        ap.error("--out is required")
    rows = run(args.configs.split(","), args.dtypes.split(","), args.rounds, args.steps)
    payload = {
        "benchmark": "host_allocator",
        "description": "jalign DPO step (bench.peer_trl shapes), glibc default allocator vs "
                       "jalign.runtime.tune_host_allocator, alternating child processes; ratio = default_s / "
                       "tuned_s (python -m bench.host_allocator).",
        "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if not k.endswith("_times")}
                 for r in rows],
        "raw_times": {f"{r['n_embd']}/{r['n_layer']}/{r['seq']}/{r['dtype']}": {"default": r["default_times"],
                                                                                 "tuned": r["tuned_times"]}
                      for r in rows},
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "cpu": cpu_info(),
        "load_average": os.getloadavg(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bandit laboratory throughput: all methods × 20 seeds in one jitted vmap against per-seed Python loops.

Rows (same machine, same run; time per (run · Adam step), runs = methods × seeds):

* ``vmap_scan`` — :func:`jalign.envs.train` vmapped over methods and seeds, one ``jit``, ``lax.scan`` over the
  paper's 100 epochs × 20 steps;
* ``loop_jit_run`` — a Python loop over (method, seed) calling the jitted single-run ``train`` (fewer epochs);
* ``loop_jit_step`` (baseline) — a Python loop over (method, seed) and over steps, each step a jitted
  value-and-grad + Adam update on the 512 gathered pairs, numpy data and shuffling (one epoch per run).

Run: ``python -m bench.bandits`` → ``bench/results/bandits.json``.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.harness import timeit, write_result
from jalign import envs
from jalign.envs import offline

REWARDS, MU1, MU2, BETA = (2.5, 2.0, 1.0), (0.1, 0.2, 0.7), (0.05, 0.05, 0.9), 0.5
N_PAIRS, BATCH, LR = 10_000, 512, 1e-3
SEEDS = 20
METHODS = envs.METHODS  # 5 (the paper's 4 + the regularised-value PG)


def main(repeats: int = 3) -> None:
    bandit = envs.k_armed(jnp.array(REWARDS))
    mu1, mu2 = jnp.array(MU1), jnp.array(MU2)
    steps_per_epoch = math.ceil(N_PAIRS / BATCH)
    runs = len(METHODS) * SEEDS
    keys = jax.random.split(jax.random.key(0), SEEDS)
    ids = jnp.arange(len(METHODS))
    rows = []

    # 1. one jit, vmap over methods × seeds, scan over all steps.
    epochs = 100

    def one(key, m, epochs=epochs):
        return envs.train(key, m, bandit, mu1, mu2, beta=BETA, lr=LR, n_pairs=N_PAIRS, batch_size=BATCH,
                          epochs=epochs)

    grid = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))
    t0 = time.perf_counter()
    jax.block_until_ready(grid(keys, ids))
    compile_s = time.perf_counter() - t0
    t = timeit(lambda: jax.block_until_ready(grid(keys, ids)), repeats=repeats, warmup=0)
    total_steps = runs * epochs * steps_per_epoch
    rows.append({"method": "vmap_scan", "runs": runs, "steps_per_run": epochs * steps_per_epoch,
                 "median_s": t["median_s"], "us_per_run_step": 1e6 * t["median_s"] / total_steps,
                 "compile_s": compile_s})

    # 2. Python loop over runs, each run one jitted scan (fewer epochs).
    ep2 = 10
    for m in range(len(METHODS)):  # compile once (method is a traced int)
        jax.block_until_ready(envs.train(keys[0], m, bandit, mu1, mu2, beta=BETA, lr=LR, n_pairs=N_PAIRS,
                                         batch_size=BATCH, epochs=ep2))

    def loop_runs():
        for m in range(len(METHODS)):
            for k in keys:
                jax.block_until_ready(envs.train(k, m, bandit, mu1, mu2, beta=BETA, lr=LR, n_pairs=N_PAIRS,
                                                 batch_size=BATCH, epochs=ep2)["regret"])

    t = timeit(loop_runs, repeats=repeats, warmup=0)
    rows.append({"method": "loop_jit_run", "runs": runs, "steps_per_run": ep2 * steps_per_epoch,
                 "median_s": t["median_s"], "us_per_run_step": 1e6 * t["median_s"] / (runs * ep2 * steps_per_epoch),
                 "compile_s": None})

    # 3. Baseline: Python loop over runs and steps, one jitted update per step on the gathered pairs.
    tx = optax.adam(LR)

    @jax.jit
    def step(params, opt, m, a, b, w, msk):
        loss, g = jax.value_and_grad(offline.batch_loss, argnums=1)(m, params, bandit, a, b, w, msk, BETA, BETA)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    rng = np.random.default_rng(0)
    R = np.asarray(REWARDS)

    def loop_steps(epochs_=1):
        for m in range(len(METHODS)):
            for _ in range(SEEDS):
                a = rng.choice(3, N_PAIRS, p=MU1)
                b = rng.choice(3, N_PAIRS, p=MU2)
                w = (rng.random(N_PAIRS) < 1 / (1 + np.exp(-(R[a] - R[b])))).astype(np.float32)
                params = envs.tabular_init(bandit.ref_logps)
                opt = tx.init(params)
                for _ in range(epochs_):
                    perm = rng.permutation(N_PAIRS)
                    for s in range(steps_per_epoch):
                        idx = perm[s * BATCH:(s + 1) * BATCH]
                        msk = np.ones(BATCH, np.float32)
                        if len(idx) < BATCH:  # pad the last batch to a fixed shape (no recompilation)
                            msk[len(idx):] = 0
                            idx = np.concatenate([idx, np.zeros(BATCH - len(idx), idx.dtype)])
                        params, opt, _ = step(params, opt, m, a[idx], b[idx], w[idx], msk)
                jax.block_until_ready(params)

    jax.block_until_ready(step(envs.tabular_init(bandit.ref_logps), tx.init(envs.tabular_init(bandit.ref_logps)), 0,
                               np.zeros(BATCH, np.int64), np.zeros(BATCH, np.int64), np.zeros(BATCH, np.float32),
                               np.ones(BATCH, np.float32)))
    t = timeit(loop_steps, repeats=repeats, warmup=0)
    base = 1e6 * t["median_s"] / (runs * steps_per_epoch)
    rows.append({"method": "loop_jit_step (baseline)", "runs": runs, "steps_per_run": steps_per_epoch,
                 "median_s": t["median_s"], "us_per_run_step": base, "compile_s": None})
    for r in rows:
        r["speedup_vs_baseline"] = base / r["us_per_run_step"]
    path = write_result("bandits", {
        "description": (
            f"CoPG bandit (paper setting: 10^4 pairs, batch 512, Adam): {len(METHODS)} methods × {SEEDS} seeds. "
            "Time per (run · step); vmap_scan runs all 100 epochs in one jit, loop_jit_run loops over runs "
            "(10 epochs each), the baseline loops over runs and steps in Python (1 epoch each). "
            "Ratio = baseline µs per run-step / row's."
        ),
        "rows": rows,
    })
    for r in rows:
        print(f"{r['method']:26s} {r['us_per_run_step']:10.2f} µs/run-step  x{r['speedup_vs_baseline']:.1f}")
    print("wrote", path)


if __name__ == "__main__":
    main()

"""Gradient-entanglement statistics for 32 pairs vs a per-pair loop of backward passes vs one training step.

Stand-in LM: bench/_standin.py (2-layer causal transformer, vocab 256, d 64, sequences of 48 tokens).
Rows: median wall time of
* ``pairwise_gradient_stats`` (vmapped per-example gradients, jitted; all 32 pairs at once and in chunks of 8),
* the reference approach: a Python loop over pairs, one jitted backward pass per response (64 in all) plus
  the inner products,
* one plain DPO training step on the same 32 pairs (value_and_grad of the batch loss + SGD update).
Run: ``python -m bench.entanglement``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from bench import _standin
from bench.harness import write_result
from jalign import losses
from jalign.diagnostics import pairwise_gradient_stats, tree_dot

B, T, V = 32, 48, 256


def _take(tree, i, f=lambda x: x):
    """Example i of a batched pytree."""
    return jax.tree.map(lambda x: f(x[i]), tree)


def make_batch(rng):
    def one(n_prompt, n_resp):
        ids = np.zeros((B, T), np.int32)
        att = np.zeros((B, T), np.int32)
        resp = np.zeros((B, T), np.float32)
        for i in range(B):
            n = n_prompt[i] + n_resp[i]
            ids[i, :n] = rng.integers(1, V, n)
            att[i, :n] = 1
            resp[i, n_prompt[i] : n] = 1
        return {"ids": jnp.asarray(ids), "att": jnp.asarray(att), "resp": jnp.asarray(resp)}

    n_prompt = rng.integers(8, 16, B)
    return one(n_prompt, rng.integers(8, T - 16, B)), one(n_prompt, rng.integers(8, T - 16, B))


def main(out=None):
    rng = np.random.default_rng(0)
    params, heads = _standin.init(jax.random.key(0))
    logp = functools.partial(_standin.seq_logp, heads=heads)
    chosen, rejected = make_batch(rng)
    n_params = sum(x.size for x in jax.tree.leaves(params))

    stats_all = lambda: jax.block_until_ready(pairwise_gradient_stats(logp, params, chosen, rejected))
    stats_8 = lambda: jax.block_until_ready(pairwise_gradient_stats(logp, params, chosen, rejected, batch_size=8))

    grad1 = jax.jit(jax.grad(logp))
    dots = jax.jit(lambda gw, gl: (tree_dot(gw, gl), tree_dot(gw, gw), tree_dot(gl, gl)))

    def loop():
        res = []
        for i in range(B):
            gw = grad1(params, _take(chosen, i))
            gl = grad1(params, _take(rejected, i))
            res.append(dots(gw, gl))
        return jax.block_until_ready(res)

    dpo = losses.get("dpo")
    vlogp = jax.vmap(logp, in_axes=(None, 0))
    ref_w, ref_l = vlogp(params, chosen), vlogp(params, rejected)

    @jax.jit
    def train_step(p):
        def loss(p):
            b = losses.PairwiseLogps(vlogp(p, chosen), vlogp(p, rejected), ref_w, ref_l)
            return dpo(b, validate=False).mean()

        val, g = jax.value_and_grad(loss)(p)
        return jax.tree.map(lambda x, y: x - 1e-3 * y, p, g), val

    step = lambda: jax.block_until_ready(train_step(params))

    # Correctness of the fast path against the loop (same run).
    st = stats_all()
    ref = loop()
    inner_loop = np.array([float(r[0]) for r in ref])
    err = float(np.max(np.abs(np.asarray(st.inner) - inner_loop) / (np.abs(inner_loop) + 1e-6)))

    names = {
        "train step (DPO, 32 pairs)": step,
        "pairwise_gradient_stats": stats_all,
        "pairwise_gradient_stats batch_size=8": stats_8,
        "per-pair loop of backward passes": loop,
    }
    res = _standin.interleaved(names, rounds=9)
    t_step = res["train step (DPO, 32 pairs)"]["median_s"]
    rows = []
    for name, d in res.items():
        rows.append({"method": name, "median_ms": 1e3 * d["median_s"], "min_ms": 1e3 * d["min_s"],
                     "vs_train_step": d["median_s"] / t_step})
    t_stats = rows[1]["median_ms"]
    for r in rows:
        r["vs_stats"] = r["median_ms"] / t_stats
    path = write_result(
        "entanglement",
        {
            "description": (
                f"Per-pair gradient inner products / norms for {B} pairs of {T}-token sequences on a "
                f"{n_params}-parameter stand-in transformer: vmapped statistics vs a per-pair loop of backward "
                f"passes vs one DPO training step, same run. Max relative deviation of the vmapped inner "
                f"products from the loop: {err:.2e}."
            ),
            "rows": rows,
            "max_rel_err_vs_loop": err,
            "n_params": n_params,
            "load_average_1min": os.getloadavg()[0],
        },
        out,
    )
    for r in rows:
        print(r)
    print(path)


if __name__ == "__main__":
    main()

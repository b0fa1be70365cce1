"""Training-step throughput and model-FLOPs utilisation (MFU) of the jalign transformer.

Baseline (same run): the machine's matmul peak, timed as a square ``jnp.dot`` in float32 and in bfloat16
(with ``preferred_element_type=float32``). For each model size: median step time of a jitted AdamW training
step, tokens/s, model FLOPs/s (``6 N + 12 L T d_attn`` per token, Kaplan et al. 2020) and
MFU = model FLOPs/s / matmul peak of the step's compute dtype. Peak memory is XLA's compiled memory
analysis of the step (arguments + outputs + temporaries - aliased).

On a shared machine the available compute drifts, so the matmul peak is re-measured right before each row
and both the peak and the step use the *fastest* of their repeats (``min_s``); medians are reported too.
``mfu`` divides by the best peak of the row's dtype over the whole run (conservative); ``mfu_vs_row_peak``
by the peak measured just before the row.

    python -m bench.model [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench.harness import timeit, write_result
from jalign.models import ModelConfig, create_model


def lm_loss(model, tokens_BxT1: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats/token) of ``tokens[:, 1:]`` given ``tokens[:, :-1]``."""
    logits = model(tokens_BxT1[:, :-1]).logits
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens_BxT1[:, 1:, None], axis=-1))


def make_train_step(graphdef, tx):
    """``step(params, opt_state, tokens) -> (params, opt_state, loss, grad_norm)``, jitted, buffers donated."""

    def loss_fn(params, tokens):
        return lm_loss(nnx.merge(graphdef, params), tokens)

    @jax.jit
    def step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    return jax.jit(step.__wrapped__, donate_argnums=(0, 1))


SIZES = {
    "1M": dict(d_model=128, n_layers=4, n_heads=4),
    "4M": dict(d_model=256, n_layers=5, n_heads=4),
    "12M": dict(d_model=384, n_layers=6, n_heads=6),
}


def matmul_peak(n: int, dtype, repeats: int) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    t = timeit(lambda: f(a, a).block_until_ready(), repeats=repeats)
    return 2.0 * n**3 / t["min_s"]


def step_row(name, cfg: ModelConfig, batch: int, seq: int, repeats: int) -> dict:
    model = create_model(cfg)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(1e-3)
    step = make_train_step(graphdef, tx)
    state = {"p": params, "o": tx.init(params)}
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq + 1)), jnp.int32)
    compiled = step.lower(state["p"], state["o"], tokens).compile()
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                - mem.alias_size_in_bytes)

    def run():
        state["p"], state["o"], loss, _ = step(state["p"], state["o"], tokens)
        loss.block_until_ready()

    t = timeit(run, repeats=repeats, warmup=1)
    tok_s = batch * seq / t["min_s"]
    flops = cfg.flops_per_token(seq) * tok_s
    return {"name": name, "arch": cfg.arch, "params": cfg.num_params(), "dtype": cfg.dtype, "remat": cfg.remat,
            "batch": batch, "seq_len": seq, "step_s_min": t["min_s"], "step_s_median": t["median_s"],
            "tokens_per_s": tok_s, "tokens_per_s_median": batch * seq / t["median_s"],
            "model_tflops_per_s": flops / 1e12, "peak_memory_mb": None if peak is None else peak / 2**20}


def main(argv=None) -> int:
    from jalign.runtime import tune_host_allocator

    tuned = tune_host_allocator()  # as the jalign CLI does; before JAX starts its CPU client
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller matmul and fewer repeats")
    ap.add_argument("--out", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else 7
    n = 1024 if args.quick or jax.default_backend() == "cpu" else 8192
    peaks = {"float32": [], "bfloat16": []}
    rows = []
    plan = [(s, "float32", False) for s in SIZES] + [("4M", "bfloat16", False), ("4M", "float32", True)]
    for size, dtype, remat in plan:
        cfg = ModelConfig(arch="gpt2", vocab_size=259, max_seq_len=args.seq, dtype=dtype, remat=remat, **SIZES[size])
        peak = matmul_peak(n, jnp.dtype(dtype), repeats)
        peaks[dtype].append(peak / 1e12)
        r = step_row(f"gpt2-{size}{'-bf16' if dtype == 'bfloat16' else ''}{'-remat' if remat else ''}",
                     cfg, args.batch, args.seq, repeats)
        r["matmul_peak_row_tflops_per_s"] = peak / 1e12
        r["mfu_vs_row_peak"] = r["model_tflops_per_s"] * 1e12 / peak
        rows.append(r)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    for r in rows:  # conservative MFU: against the best peak of the row's dtype seen anywhere in the run
        best = max(peaks[r["dtype"]])
        r["matmul_peak_tflops_per_s"] = best
        r["mfu"] = r["model_tflops_per_s"] / best
    path = write_result("model", {
        "description": "jitted AdamW training step of the GPT-2-style jalign transformer: tokens/s and MFU "
                       f"against the same-run matmul peak ({n}x{n} jnp.dot, f32 and bf16 inputs, f32 accumulate); "
                       "peak memory from XLA's compiled memory analysis",
        "baseline": {"matmul_n": n, "peak_tflops_per_s_per_row": peaks},
        "host_allocator_tuned": tuned,
        "rows": rows,
    }, args.out)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Matmul-only lower bound of the DPO step: XLA:CPU's dots against PyTorch's GEMMs on the step's own shapes.

The float32 DPO step of both jalign and TRL is dominated by its matmuls, so whether jalign's float32 step can
beat TRL's reduces to whether XLA:CPU's float32 dots on these shapes are at least as fast as PyTorch's.  This
benchmark times *only* the matrix products one GPT-2 DPO step performs (policy forward + backward, reference
forward; dense projections, tied unembedding and the attention products, each with the operand layouts autodiff
produces) in both frameworks, in the same process, alternating rounds:

* ``torch``: the products executed eagerly with ``torch.matmul`` on transposed views (``a.T @ g`` — MKL/oneDNN
  take the transposition inside the GEMM's packing), ``torch.no_grad``;
* ``jax_plain``: one ``jax.jit`` function returning every product, transposes written as ``.T`` (XLA chooses
  the layouts; in float32 it may run a transposed dot off its fast path);
* ``jax_rowmajor``: the same with ``jalign.models.kernels.transpose_last2`` materialising every transposed
  operand first (what ``mixed_matmul``'s backward does; the copies are included in the time).

Model FLOPs are ``2·M·K·N`` per product; nothing else of the step (elementwise work, optimiser, loss) is in it,
so ``torch_s`` is a lower bound for TRL's step time and ``jax_*_s`` one for jalign's.

With ``--with-steps`` the same alternating rounds also time jalign's whole DPO step and TRL's ``DPOTrainer``
step exactly as ``bench.peer_trl`` does (``jalign_step_s``, ``trl_step_s``), so each framework's overhead beyond
its own matmuls (``*_step_s / *_s``) is measured on the same machine state as the bounds.

With ``--per-product`` every distinct product is also timed alone (best of the repeats), as a canonical dot
(operands already row-major: the dot alone), with its transposed operands materialised (``jax_rowmajor``) and
in PyTorch; ``per_product_summary`` sums count × time per kind (``dense`` projections/unembedding vs
``attention``, the per-head batched products) — which kernels the bound is spent in.

    python -m bench.gemm_bound --out bench/results/gemm_bound.json [--configs 512/6/256] [--dtype float32]
        [--with-steps] [--per-product]

Needs torch (CPU) besides jalign's dependencies (the ``peer`` extra).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench.harness import cpu_info, timeit
from jalign.models.kernels import transpose_last2

VOCAB, PAIRS, HEAD_DIM = 8192, 8, 64


def step_products(n_embd: int, n_layer: int, seq: int):
    """The (batch, m, k, n, transpose_lhs, transpose_rhs) list of one DPO step's matrix products.

    ``transpose_lhs``/``transpose_rhs`` say whether autodiff's operand is the transpose of a stored array
    (stored row-major as ``[k, m]`` / ``[n, k]``)."""
    m, d = 2 * PAIRS * seq, n_embd
    bh = 2 * PAIRS * (d // HEAD_DIM)  # attention batch: rows x heads
    dense = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)]
    fwd, bwd = [], []
    for _ in range(n_layer):
        for k, n in dense:
            fwd.append((1, m, k, n, False, False))  # y = x w
            bwd.append((1, m, n, k, False, True))  # dx = g wᵀ
            bwd.append((1, k, m, n, True, False))  # dw = xᵀ g
        fwd += [(bh, seq, HEAD_DIM, seq, False, True), (bh, seq, seq, HEAD_DIM, False, False)]  # q kᵀ, p v
        bwd += [(bh, seq, HEAD_DIM, seq, False, True), (bh, seq, seq, HEAD_DIM, True, False),  # dp, dv
                (bh, seq, seq, HEAD_DIM, False, False), (bh, seq, seq, HEAD_DIM, True, False)]  # dq, dk
    fwd.append((1, m, d, VOCAB, False, True))  # logits = h eᵀ (tied embedding e: [V, d])
    bwd += [(1, m, VOCAB, d, False, False), (1, VOCAB, m, d, True, False)]  # dh = g e, de = gᵀ h
    return fwd + bwd + fwd  # policy forward + backward, reference forward


def flops(products) -> float:
    return float(sum(2 * b * m * k * n for b, m, k, n, _, _ in products))


def _stored(shape_rows, shape_cols, transposed, b):
    """Shape of the stored array whose (possibly transposed) view is ``[rows, cols]``."""
    s = (shape_cols, shape_rows) if transposed else (shape_rows, shape_cols)
    return s if b == 1 else (b, *s)


def operands(products, dtype, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for b, m, k, n, tl, tr in products:
        a = rng.standard_normal(_stored(m, k, tl, b), dtype=np.float32)
        w = rng.standard_normal(_stored(k, n, tr, b), dtype=np.float32)
        out.append((a.astype(dtype), w.astype(dtype)))
    return out


def jax_fn(products, rowmajor: bool):
    """One jitted function returning every product (float32 accumulation); ``rowmajor``: transposed operands
    materialised by ``transpose_last2`` (as ``mixed_matmul``'s backward does), else plain ``swapaxes``."""
    pet = jnp.float32

    def tr(x):
        return transpose_last2(x) if rowmajor else jnp.swapaxes(x, -1, -2)

    def f(ops):
        outs = []
        for (_, _, _, _, tl, trr), (a, w) in zip(products, ops, strict=True):
            a = tr(a) if tl else a
            w = tr(w) if trr else w
            outs.append(jnp.matmul(a, w, preferred_element_type=pet))
        return outs

    return jax.jit(f)


def torch_fn(products, ops_t):
    import torch

    def f():
        with torch.no_grad():
            outs = []
            for (_, _, _, _, tl, trr), (a, w) in zip(products, ops_t, strict=True):
                a = a.transpose(-1, -2) if tl else a
                w = w.transpose(-1, -2) if trr else w
                outs.append(torch.matmul(a, w))
            return outs

    return f


def _time(f, steps):
    return timeit(f, repeats=steps, warmup=0)["times"]


def _step_timers(n_embd, n_layer, seq, dtype, steps, workdir):
    """``{"jalign_step": f, "trl_step": g}``: each call times ``steps`` optimiser steps and returns the times
    (``bench.peer_trl``'s models, data and timing)."""
    from bench.peer_trl import (
        jalign_cfg,
        make_data,
        make_jalign_step,
        make_trl,
        time_jalign_steps,
        time_trl_steps,
    )

    ids, mask = make_data(seq, steps + 1)
    step, st = make_jalign_step(jalign_cfg(n_embd, n_layer, seq, dtype))
    jids, jmask = jnp.asarray(ids), jnp.asarray(mask)
    st["p"], st["o"], loss = step(st["p"], st["o"], st["ref"], jids[0], jmask[0])
    loss.block_until_ready()
    trainer, timer = make_trl(n_embd, n_layer, seq, dtype == "bfloat16", ids, mask, steps + 1, workdir)
    return {"jalign_step": lambda: time_jalign_steps(step, st, jids, jmask, steps)[0],
            "trl_step": lambda: time_trl_steps(trainer, timer)}


def kind(product) -> str:
    """``dense`` (a projection/unembedding product of the 2B·seq token rows) or ``attention`` (per-head batched)."""
    return "attention" if product[0] > 1 else "dense"


def _block(f, *args):
    return jax.block_until_ready(f(*args))


def per_product(products, dtype, rounds: int, steps: int) -> list[dict]:
    """Every distinct product of the step timed alone (best of ``rounds * steps``), alternating frameworks:
    ``jax_canonical`` (operands already row-major with the contraction on the lhs' last / rhs' first axis:
    the dot alone), ``jax_rowmajor`` (transposed operands materialised by ``transpose_last2`` inside the
    timed function) and ``torch``. GFLOP/s per form, and how often the product occurs in one step."""
    import collections

    import torch

    np_dtype = {"float32": np.float32, "bfloat16": jnp.bfloat16}[dtype]
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    rows = []
    for prod, count in collections.Counter(products).items():
        b, m, k, n, tl, tr = prod
        (a, w), = operands([prod], np_dtype)
        a32, w32 = np.asarray(a, np.float32), np.asarray(w, np.float32)
        ac = np.swapaxes(a32, -1, -2) if tl else a32
        wc = np.swapaxes(w32, -1, -2) if tr else w32
        canon = jax.device_put((np.ascontiguousarray(ac).astype(np_dtype), np.ascontiguousarray(wc).astype(np_dtype)))
        jc = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
        jr = jax_fn([prod], True)
        aj = jax.device_put([(a, w)])
        at, wt = torch.from_numpy(a32).to(tdt), torch.from_numpy(w32).to(tdt)
        at = at.transpose(-1, -2) if tl else at
        wt = wt.transpose(-1, -2) if tr else wt
        fns = {"jax_canonical": functools.partial(_block, jc, *canon),
               "jax_rowmajor": functools.partial(_block, jr, aj),
               "torch": functools.partial(torch.matmul, at, wt)}
        for f in fns.values():
            f(), f()  # compile + warm-up
        best = {name: float("inf") for name in fns}
        for _ in range(rounds):
            for name, f in fns.items():
                best[name] = min(best[name], *_time(f, steps))
        g = 2 * b * m * k * n / 1e9
        rows.append({"batch": b, "m": m, "k": k, "n": n, "transpose_lhs": tl, "transpose_rhs": tr,
                     "kind": kind(prod), "count": count, "gflop": g,
                     **{f"{name}_gflops": g / t for name, t in best.items()},
                     **{f"{name}_s": t for name, t in best.items()}})
    return rows


def per_product_summary(rows) -> dict:
    """Seconds per step by product kind and form (sum of count × best time): where the bound goes."""
    out = {}
    for kd in ("dense", "attention", "all"):
        sel = [r for r in rows if kd == "all" or r["kind"] == kd]
        out[kd] = {"gflop": sum(r["count"] * r["gflop"] for r in sel),
                   **{f"{f}_s": sum(r["count"] * r[f"{f}_s"] for r in sel)
                      for f in ("jax_canonical", "jax_rowmajor", "torch")}}
    return out


def run_config(n_embd, n_layer, seq, dtype, rounds, steps, with_steps=False, workdir=None, with_products=False):
    import torch

    prods = step_products(n_embd, n_layer, seq)
    np_dtype = {"float32": np.float32, "bfloat16": jnp.bfloat16}[dtype]
    ops = operands(prods, np_dtype)
    ops_j = jax.device_put(ops)
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    ops_t = [(torch.from_numpy(np.asarray(a, np.float32)).to(tdt), torch.from_numpy(np.asarray(w, np.float32)).to(tdt))
             for a, w in ops]
    fns = {"torch": torch_fn(prods, ops_t)}
    for name, rm in (("jax_plain", False), ("jax_rowmajor", True)):
        jf = jax_fn(prods, rm)
        jax.block_until_ready(jf(ops_j))  # compile + warm-up
        fns[name] = (lambda jf=jf: jax.block_until_ready(jf(ops_j)))
    fns["torch"]()  # warm-up
    step_fns = _step_timers(n_embd, n_layer, seq, dtype, steps, workdir) if with_steps else {}
    times = {k: [] for k in (*fns, *step_fns)}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k] += _time(f, steps)
        for k, f in step_fns.items():
            times[k] += f()
    fl = flops(prods)
    row = {"n_embd": n_embd, "n_layer": n_layer, "seq": seq, "dtype": dtype, "products": len(prods),
           "gflop": fl / 1e9}
    for k, ts in times.items():
        med = statistics.median(ts)
        row[f"{k}_s"] = med
        row[f"{k}_gflops"] = fl / med / 1e9
        row[f"{k}_times"] = ts
    row["ratio_torch_over_jax_plain"] = row["torch_s"] / row["jax_plain_s"]
    row["ratio_torch_over_jax_rowmajor"] = row["torch_s"] / row["jax_rowmajor_s"]
    if with_steps:
        row["ratio_trl_over_jalign_step"] = row["trl_step_s"] / row["jalign_step_s"]
        row["trl_step_over_torch_bound"] = row["trl_step_s"] / row["torch_s"]
        row["jalign_step_over_jax_rowmajor_bound"] = row["jalign_step_s"] / row["jax_rowmajor_s"]
    if with_products:
        row["per_product"] = per_product(prods, dtype, rounds, steps)
        row["per_product_summary"] = per_product_summary(row["per_product"])
    return row


def markdown_table(d: dict) -> str:
    """The bound table (markdown) from a ``gemm_bound`` JSON: per config, each framework's matmul-only time
    next to its whole step, and (with ``--per-product``) the bound split into dense and attention products."""
    lines = ["| n_embd | layers | seq | dtype | matmul GFLOP | torch matmuls s | jax matmuls s (row-major) "
             "| TRL step s | jalign step s | TRL step / torch matmuls | jalign step / jax matmuls "
             "| each product alone, summed: jax canonical s / torch s | of which attention: jax / torch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, fmt=".3f"):
        return "—" if v is None else format(v, fmt)

    for r in d["configs"]:
        pp = r.get("per_product_summary", {})
        one, att = (("—" if pp.get(kd) is None else f"{pp[kd]['jax_canonical_s']:.3f} / {pp[kd]['torch_s']:.3f}")
                    for kd in ("all", "attention"))
        lines.append(f"| {r['n_embd']} | {r['n_layer']} | {r['seq']} | {r['dtype']} | {r['gflop']:.0f} "
                     f"| {r['torch_s']:.3f} | {r['jax_rowmajor_s']:.3f} | {f(r.get('trl_step_s'))} "
                     f"| {f(r.get('jalign_step_s'))} | {f(r.get('trl_step_over_torch_bound'), '.2f')} "
                     f"| {f(r.get('jalign_step_over_jax_rowmajor_bound'), '.2f')} | {one} | {att} |")
    v = d.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) + "."]
    return "\n".join(lines)


def parse_configs(text: str, error) -> list[tuple[int, int, int]]:
    """``"256/4/256,512/6/256"`` -> ``[(256, 4, 256), (512, 6, 256)]``; ``error(msg)`` on anything else (n_embd a
    positive multiple of the head dimension 64, layers and seq positive)."""
    out = []
    for c in text.split(","):
        try:
            d, l, s = (int(x) for x in c.split("/"))
        except ValueError:
            error(f"--configs: expected n_embd/layers/seq[,...], got {c!r}")
            raise
        if d <= 0 or d % HEAD_DIM or l <= 0 or s <= 0:
            error(f"--configs: {c!r} needs n_embd a positive multiple of {HEAD_DIM}, layers > 0 and seq > 0")
        out.append((d, l, s))
    return out


def main(argv=None):
    from jalign.runtime import tune_host_allocator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", default="256/4/256,512/6/256")
    ap.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--with-steps", action="store_true",
                    help="also time jalign's and TRL's whole DPO steps in the same rounds (needs trl)")
    ap.add_argument("--per-product", action="store_true",
                    help="also time every distinct product alone (canonical / row-major jax, torch)")
    a = ap.parse_args(argv)
    dtypes = a.dtypes.split(",")
    if any(dt not in ("float32", "bfloat16") for dt in dtypes):
        ap.error(f"--dtypes: expected float32 and/or bfloat16, got {a.dtypes!r}")
    configs = parse_configs(a.configs, ap.error)
    for flag, v in (("--rounds", a.rounds), ("--steps", a.steps)):
        if v < 1:
            ap.error(f"{flag}: must be >= 1, got {v}")
    tune_host_allocator()  # before JAX starts its CPU client (argument parsing does not start it)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for (d, l, s), dt in ((c, dt) for c in configs for dt in dtypes):
        with tempfile.TemporaryDirectory() as wd:
            row = run_config(d, l, s, dt, a.rounds, a.steps, a.with_steps, wd, a.per_product)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_times") and k != "per_product"}), flush=True)
        rows.append(row)
    out = {"benchmark": "gemm_bound", "configs": rows, "versions": {"jax": jax.__version__, "torch": torch.__version__,
                                         "torch_threads": torch.get_num_threads(),
                                         **({"trl": __import__("trl").__version__} if a.with_steps else {})},
           "cpu": cpu_info(), "load_average": list(os.getloadavg()), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""CHES scoring throughput vs a forward pass alone (same stand-in model, same run).

Stand-in LM: bench/_standin.py (2-layer causal transformer, vocab 256, d 64). 256 preference records with
prompts of 8–24 tokens and responses of 4–40 tokens, padded to 64, chunks of 32 pairs. Rows:
* forward only: the two forward passes (chosen and rejected) a scorer cannot avoid, on pre-packed arrays;
* ``ches_scores`` alone on the hidden states (jitted);
* ``ches_from_model``: pack (numpy) + both forwards + scores, per chunk;
* ``score_dataset``: the whole data set in chunks (what a user calls).
Run: ``python -m bench.ches``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from bench import _standin
from bench.harness import write_result
from jalign.diagnostics import ches_from_model, ches_scores, pack_prompt_response, score_dataset

N, CHUNK, L, V = 256, 32, 64, 256


def main(out=None):
    rng = np.random.default_rng(0)
    params, heads = _standin.init(jax.random.key(0), max_len=L)
    fwd = jax.jit(functools.partial(_standin.hidden, params, heads=heads))
    recs = [
        {
            "prompt": rng.integers(1, V, rng.integers(8, 25)).tolist(),
            "chosen": rng.integers(1, V, rng.integers(4, 41)).tolist(),
            "rejected": rng.integers(1, V, rng.integers(4, 41)).tolist(),
        }
        for _ in range(N)
    ]
    chunk = recs[:CHUNK]
    P, W, R = ([r[f] for r in chunk] for f in ("prompt", "chosen", "rejected"))
    pw = pack_prompt_response(P, W, max_length=L)
    pl = pack_prompt_response(P, R, max_length=L)
    iw, aw = jnp.asarray(pw["input_ids"]), jnp.asarray(pw["attention_mask"])
    il, al = jnp.asarray(pl["input_ids"]), jnp.asarray(pl["attention_mask"])
    hw, hl = fwd(iw, aw), fwd(il, al)
    mw, ml = jnp.asarray(pw["predictor_mask"]), jnp.asarray(pl["predictor_mask"])
    scores_j = jax.jit(ches_scores)

    forward = lambda: jax.block_until_ready((fwd(iw, aw), fwd(il, al)))
    scores_only = lambda: jax.block_until_ready(scores_j(hw, hl, mw, ml))
    end_to_end = lambda: jax.block_until_ready(ches_from_model(fwd, P, W, R, max_length=L))
    dataset = lambda: score_dataset(fwd, recs, batch_size=CHUNK, max_length=L, progress=False)

    cases = {
        "forward only (2 passes, 32 pairs)": (forward, CHUNK),
        "ches_scores alone (32 pairs)": (scores_only, CHUNK),
        "ches_from_model (32 pairs)": (end_to_end, CHUNK),
        "score_dataset (256 pairs, chunks of 32)": (dataset, N),
    }
    res = _standin.interleaved({k: v[0] for k, v in cases.items()}, rounds=9)
    t_fwd = res["forward only (2 passes, 32 pairs)"]["median_s"]
    rows = []
    for name, (_, pairs) in cases.items():
        t = res[name]["median_s"]
        rows.append({
            "method": name,
            "median_ms": 1e3 * t,
            "min_ms": 1e3 * res[name]["min_s"],
            "pairs_per_s": pairs / t,
            "vs_forward_per_pair": (t / pairs) / (t_fwd / CHUNK),
        })
    path = write_result(
        "ches",
        {
            "description": (
                "CHES scoring throughput against the two forward passes alone on a stand-in transformer "
                f"(d=64, 2 layers, sequences padded to {L}); ratios are per pair, same run."
            ),
            "rows": rows,
            "load_average_1min": os.getloadavg()[0],
        },
        out,
    )
    for r in rows:
        print(r)
    print(path)


if __name__ == "__main__":
    main()

"""Data pipeline throughput: examples/s through tokenise + truncate + pad + batch (pairwise).

Baseline (same run): a plain-Python loop over the records that encodes with ``ByteTokenizer.encode_pair``,
applies the same truncation policy with list slicing, pads with lists and builds one numpy array per field
per batch. Measured: ``jalign.data.pipeline.make_dataset`` (grain, in-thread and with 2 read threads).
Both produce identical ``chosen_ids``/``rejected_ids`` (checked before timing).

Run: ``python -m bench.data [--n 4096] [--out PATH]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.harness import timeit, write_result
from jalign.data import builtin
from jalign.data.pipeline import make_dataset
from jalign.tokenizers import ByteTokenizer

P, R, B = 64, 128, 32


def python_loop(recs, tok):
    """Plain-Python reference: yields dicts of numpy arrays, one per batch of B (drop remainder)."""
    T = P + R
    for start in range(0, len(recs) - len(recs) % B, B):
        cols = {}
        for rec in recs[start : start + B]:
            for side in ("chosen", "rejected"):
                ids, mask = tok.encode_pair(rec["prompt"], rec[side])
                n_p = mask.index(1)
                p, r = ids[:n_p], ids[n_p:]
                if len(p) > P:
                    p = p[:1] + p[len(p) - (P - 1) :]
                r = r[:R]
                n = len(p) + len(r)
                cols.setdefault(f"{side}_ids", []).append(p + r + [tok.pad_id] * (T - n))
                cols.setdefault(f"{side}_mask", []).append([0] * len(p) + [1] * len(r) + [0] * (T - n))
                cols.setdefault(f"{side}_attention_mask", []).append([1] * n + [0] * (T - n))
                cols.setdefault(f"{side}_lengths", []).append(len(r))
        yield {k: np.asarray(v, np.int32) for k, v in cols.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tok = ByteTokenizer()
    recs = builtin.load("sentiment_pairs", n=args.n, seed=0)
    n_used = len(recs) - len(recs) % B

    def grain_run(threads):
        ds = make_dataset(recs, kind="pairwise", tokenizer=tok, batch_size=B, max_prompt_len=P,
                          max_response_len=R, shuffle=False, shard_index=0, shard_count=1,
                          num_threads=threads)  # fmt: skip
        return list(ds)

    # Same output check before timing.
    for a, b in zip(python_loop(recs, tok), grain_run(0), strict=True):
        for k in ("chosen_ids", "rejected_ids", "chosen_mask", "rejected_attention_mask"):
            np.testing.assert_array_equal(a[k], b[k])

    base = timeit(lambda: list(python_loop(recs, tok)), repeats=args.repeats)
    rows = [
        {
            "pipeline": "plain Python loop (baseline)",
            "examples_per_s": n_used / base["median_s"],
            "ratio": 1.0,
        }
    ]
    for threads in (0, 2):
        t = timeit(lambda threads=threads: grain_run(threads), repeats=args.repeats)
        rows.append(
            {
                "pipeline": f"jalign grain pipeline, num_threads={threads}",
                "examples_per_s": n_used / t["median_s"],
                "ratio": base["median_s"] / t["median_s"],
            }
        )
    for r in rows:
        print(f"{r['pipeline']:45s} {r['examples_per_s']:10.0f} ex/s  x{r['ratio']:.2f}")
    write_result(
        "data",
        {
            "description": (
                f"Pairwise examples/s through tokenise (ByteTokenizer) + truncate + pad + batch "
                f"(B={B}, max_prompt_len={P}, max_response_len={R}; {n_used} sentiment_pairs records, median "
                f"of {args.repeats}); ratio = baseline time / time (>1 = faster than the plain-Python loop)."
            ),
            "rows": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()

"""A small self-contained pure-JAX causal transformer used as a stand-in LM by the diagnostics benchmarks.

(The real model stack lives in jalign.models; this keeps the benchmarks independent of it.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init(key, *, vocab=256, d=64, layers=2, heads=4, max_len=128):
    ks = iter(jax.random.split(key, 4 + 6 * layers))
    n = lambda shape, s: s * jax.random.normal(next(ks), shape)
    params = {"emb": n((vocab, d), 0.02), "pos": n((max_len, d), 0.02), "blocks": []}
    for _ in range(layers):
        params["blocks"].append({
            "qkv": n((d, 3 * d), d**-0.5), "o": n((d, d), d**-0.5),
            "w1": n((d, 4 * d), d**-0.5), "w2": n((4 * d, d), (4 * d) ** -0.5),
            "g1": jnp.ones(d), "g2": jnp.ones(d),
        })
    params["gf"] = jnp.ones(d)
    params["unemb"] = n((d, vocab), d**-0.5)
    return params, heads


def _rms(x, g):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * g


def hidden(params, ids, att, heads=4):
    """Final hidden states [B, T, d] (padding-aware positions and keys)."""
    B, T = ids.shape
    pos = jnp.clip(jnp.cumsum(att, -1) - 1, 0)
    x = params["emb"][ids] + params["pos"][pos]
    allowed = (jnp.arange(T)[None, :] <= jnp.arange(T)[:, None])[None, None] & (att[:, None, None, :] > 0)
    for blk in params["blocks"]:
        q, k, v = jnp.split(_rms(x, blk["g1"]) @ blk["qkv"], 3, -1)
        sh = lambda z: z.reshape(B, T, heads, -1).transpose(0, 2, 1, 3)
        q, k, v = sh(q), sh(k), sh(v)
        s = jnp.where(allowed, q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(q.shape[-1]), -1e9)
        a = (jax.nn.softmax(s, -1) @ v).transpose(0, 2, 1, 3).reshape(B, T, -1)
        x = x + a @ blk["o"]
        x = x + jax.nn.gelu(_rms(x, blk["g2"]) @ blk["w1"]) @ blk["w2"]
    return _rms(x, params["gf"])


def seq_logp(params, ex, heads=4):
    """Sequence log-prob of one example {ids [T], att [T], resp [T]} (response tokens only)."""
    ids, att, resp = ex["ids"][None], ex["att"][None], ex["resp"][None]
    logits = hidden(params, ids, att, heads) @ params["unemb"]
    lp = jax.nn.log_softmax(logits[:, :-1], -1)
    tok = jnp.take_along_axis(lp, ids[:, 1:, None], -1)[..., 0]
    return jnp.sum(tok * resp[:, 1:])


def interleaved(fns: dict, rounds: int = 9) -> dict:
    """Median / min seconds of each fn, timed in interleaved rounds (one call of each per round) so that
    machine-load drift hits every method alike. Uses bench.harness.timeit for each single measurement."""
    import statistics

    from bench.harness import timeit

    for fn in fns.values():  # compile / warm up
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timeit(fn, repeats=1, warmup=0)["median_s"])
    return {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in times.items()}

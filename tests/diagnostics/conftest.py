"""Small stand-in models for the diagnostics tests (pure jax, several parameter leaves)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@dataclasses.dataclass(eq=False)
class TinyLM:
    """A context-mixing MLP language model over examples {context, tokens, mask} of shape [T].

    hidden_t = tanh((emb[ctx_t] + mean_{s≤t} emb[ctx_s]) w1 + b1); logits_t = hidden_t·out + ob.
    Five parameter leaves of different shapes (so per-leaf vs global norms differ).
    """

    V: int = 11
    D: int = 6
    H: int = 5

    def init(self, key, scale=0.7):
        ks = jax.random.split(key, 5)
        n = lambda k, s: scale * jax.random.normal(k, s)
        return {
            "emb": n(ks[0], (self.V, self.D)),
            "mlp": {"w1": n(ks[1], (self.D, self.H)), "b1": n(ks[2], (self.H,))},
            "out": n(ks[3], (self.H, self.V)),
            "ob": n(ks[4], (self.V,)),
        }

    def hidden(self, params, ex):
        e = params["emb"][ex["context"]]
        T = e.shape[0]
        cm = jnp.cumsum(e, axis=0) / jnp.arange(1, T + 1, dtype=e.dtype)[:, None]
        return jnp.tanh((e + cm) @ params["mlp"]["w1"] + params["mlp"]["b1"])

    def logits(self, params, ex):
        return self.hidden(params, ex) @ params["out"] + params["ob"]

    def token_logps(self, params, ex):
        lg = self.logits(params, ex)
        picked = jnp.take_along_axis(lg, ex["tokens"][:, None], axis=-1)[:, 0]
        return (picked - jax.nn.logsumexp(lg, axis=-1)) * ex["mask"]

    def logp(self, params, ex):
        return self.token_logps(params, ex).sum()


def make_pairs(rng: np.random.Generator, B: int, T: int, V: int, prompt_token: int = 0):
    """Random pairs sharing a prefix and/or suffix around a differing span, right-padded to T."""
    cw, tw, cl, tl = (np.zeros((B, T), np.int32) for _ in range(4))
    mw, ml = np.zeros((B, T), np.float32), np.zeros((B, T), np.float32)
    for i in range(B):
        pre = list(rng.integers(1, V, rng.integers(0, 3)))
        suf = list(rng.integers(1, V, rng.integers(0, 4)))
        mid_w = list(rng.integers(1, V, rng.integers(1, 3)))
        mid_l = list(rng.integers(1, V, rng.integers(1, 3)))
        while mid_l == mid_w:
            mid_l = list(rng.integers(1, V, rng.integers(1, 3)))
        yw, yl = (pre + mid_w + suf)[:T], (pre + mid_l + suf)[:T]
        for y, c, t, m in ((yw, cw, tw, mw), (yl, cl, tl, ml)):
            n = len(y)
            t[i, :n] = y
            c[i, :n] = [prompt_token + i % 3] + y[:-1]
            m[i, :n] = 1.0
    chosen = {"context": jnp.asarray(cw), "tokens": jnp.asarray(tw), "mask": jnp.asarray(mw)}
    rejected = {"context": jnp.asarray(cl), "tokens": jnp.asarray(tl), "mask": jnp.asarray(ml)}
    return chosen, rejected


_TINY = TinyLM()


@pytest.fixture
def tiny_lm():
    """One shared instance, so jitted diagnostics (``logp_fn`` static, hashed by identity) hit the cache."""
    return _TINY


@pytest.fixture
def pairs(rng):
    return make_pairs(rng, B=7, T=8, V=11)


@pytest.fixture
def make_pairs_fn():
    return make_pairs

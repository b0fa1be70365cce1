"""Autoregressive sampling under ``jit`` with a KV cache: greedy, temperature, top-k, top-p, per-sequence EOS.

The prompt is processed in one pass (prefill), then one token per step inside a ``lax.while_loop`` that exits
once every sequence has emitted EOS. Prompts may be left- or right-padded (``prompt_mask``); each sequence's
positions count only its real tokens.

Log-probabilities returned for each generated token ``y_t``:

* ``logprobs``: ``log q(y_t)`` under the distribution actually sampled from — the model logits divided by
  ``temperature``, then restricted to the top-k, then to the top-p nucleus, renormalised (0 for greedy,
  whose sampling distribution is a point mass).
* ``model_logprobs``: ``log pi(y_t | x, y_<t)`` of the untempered, unfiltered model (temperature 1) — the
  quantity policy-gradient and importance-weighted objectives need.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jalign.models.transformer import CausalLM, check_token_ids, init_cache


@struct.dataclass
class SampleOutput:
    """``tokens`` [B, N] (``pad_id`` after a sequence stopped); ``logprobs`` [B, N] under the sampling
    distribution; ``model_logprobs`` [B, N] under the untempered model; ``response_mask`` [B, N] (1 for
    generated tokens up to and including EOS); ``lengths`` [B] = ``response_mask.sum(-1)``."""

    tokens: jax.Array
    logprobs: jax.Array
    model_logprobs: jax.Array
    response_mask: jax.Array
    lengths: jax.Array


def filter_logits(logits_BxV: jax.Array, temperature, top_k: int = 0, top_p=1.0) -> jax.Array:
    """Sampling logits: ``logits / temperature``, then top-k, then top-p (nucleus; Holtzman et al. 2020).

    Removed entries are ``-inf``. Top-k keeps every token whose value ties the k-th largest. Top-p keeps the
    smallest prefix of the tokens sorted by probability whose mass reaches ``top_p`` (always at least one),
    plus ties of its last member.
    """
    x = logits_BxV.astype(jnp.float32) / temperature
    if top_k:
        kth = jax.lax.top_k(x, top_k)[0][..., -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    srt = jnp.sort(x, axis=-1)[..., ::-1]
    p = jax.nn.softmax(srt, axis=-1)
    keep = (jnp.cumsum(p, axis=-1) - p) < top_p
    thr = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(x < thr, -jnp.inf, x)


def sample(
    model: CausalLM,
    prompt_ids_BxP,
    prompt_mask_BxP=None,
    *,
    key: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> SampleOutput:
    """Sample ``max_new_tokens`` continuations of each prompt (see the module docstring for the log-probs).

    Args:
      prompt_ids_BxP: int prompt tokens; every row needs at least one real token.
      prompt_mask_BxP: 1 real / 0 padding (either side); default all real.
      key: PRNG key (unused for greedy).
      temperature: > 0; top_k: 0 disables; top_p: in (0, 1], 1 disables.
      eos_id: stop a sequence after it emits this token (the EOS is part of the response); None: never.
      pad_id: written after a sequence stopped (masked out by ``response_mask``).
    """
    cfg = model.cfg
    ids = np.asarray(prompt_ids_BxP)
    if ids.ndim != 2:
        raise ValueError(f"prompt_ids_BxP must be 2-D, got shape {ids.shape}")
    check_token_ids(ids, cfg.vocab_size, "prompt_ids_BxP")
    mask = np.ones(ids.shape, bool) if prompt_mask_BxP is None else np.asarray(prompt_mask_BxP).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"prompt_mask_BxP shape {mask.shape} != prompt_ids_BxP shape {ids.shape}")
    if not mask.any(axis=1).all():
        raise ValueError(f"prompt rows {np.flatnonzero(~mask.any(axis=1)).tolist()} have no real token")
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not isinstance(top_k, int) or top_k < 0 or top_k > cfg.vocab_size:
        raise ValueError(f"top_k must be an int in [0, vocab_size={cfg.vocab_size}], got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    for name, v in (("eos_id", eos_id), ("pad_id", pad_id)):
        if v is not None and not 0 <= v < cfg.vocab_size:
            raise ValueError(f"{name}={v} outside [0, vocab_size={cfg.vocab_size})")
    if cfg.arch == "gpt2" and mask.sum(1).max() + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt + max_new_tokens exceeds the GPT-2 position table (max_seq_len={cfg.max_seq_len})")
    return _sample(
        model, jnp.asarray(ids, jnp.int32), jnp.asarray(mask), key, jnp.float32(1.0 if greedy else temperature),
        jnp.float32(top_p), jnp.int32(-1 if eos_id is None else eos_id), jnp.int32(pad_id),
        max_new_tokens=max_new_tokens, top_k=top_k, greedy=greedy,
    )


@functools.partial(nnx.jit, static_argnames=("max_new_tokens", "top_k", "greedy"))
def _sample(model, ids, mask, key, temperature, top_p, eos_id, pad_id, *, max_new_tokens, top_k, greedy):
    gd, st = nnx.split(model)
    B, P = ids.shape
    N = max_new_tokens
    cache = init_cache(model.cfg, B, P + N)
    out = model(ids, mask, cache=cache)
    last = jnp.max(jnp.where(mask, jnp.arange(P), -1), axis=1)  # last real prompt token (right padding)
    logits0 = jnp.take_along_axis(out.logits, last[:, None, None], axis=1)[:, 0]

    def body(carry):
        i, cache, logits, key, toks, lps, mlps, rmask, done = carry
        key, sub = jax.random.split(key)
        model_lp = jax.nn.log_softmax(logits, axis=-1)
        if greedy:
            tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            lp = jnp.zeros((B,), jnp.float32)
        else:
            q = jax.nn.log_softmax(filter_logits(logits, temperature, top_k, top_p), axis=-1)
            tok = jax.random.categorical(sub, q, axis=-1).astype(jnp.int32)
            lp = jnp.take_along_axis(q, tok[:, None], axis=-1)[:, 0]
        mlp = jnp.take_along_axis(model_lp, tok[:, None], axis=-1)[:, 0]
        active = ~done
        tok = jnp.where(active, tok, pad_id)
        toks = toks.at[:, i].set(tok)
        lps = lps.at[:, i].set(jnp.where(active, lp, 0.0))
        mlps = mlps.at[:, i].set(jnp.where(active, mlp, 0.0))
        rmask = rmask.at[:, i].set(active.astype(jnp.int32))
        done = done | (tok == eos_id)
        step = nnx.merge(gd, st)(tok[:, None], active[:, None], cache=cache)
        return i + 1, step.cache, step.logits[:, 0], key, toks, lps, mlps, rmask, done

    def cond(carry):
        return (carry[0] < N) & ~jnp.all(carry[-1])

    zf = jnp.zeros((B, N), jnp.float32)
    init = (jnp.int32(0), out.cache, logits0, key, jnp.full((B, N), pad_id, jnp.int32), zf, zf,
            jnp.zeros((B, N), jnp.int32), jnp.zeros((B,), bool))
    _, _, _, _, toks, lps, mlps, rmask, _ = jax.lax.while_loop(cond, body, init)
    return SampleOutput(tokens=toks, logprobs=lps, model_logprobs=mlps, response_mask=rmask,
                        lengths=rmask.sum(axis=1))

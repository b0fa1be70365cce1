"""Online loops: sample K completions per prompt from the current policy, score them, train on them.

``make_sampler`` is a simple jitted sampler for any model of the trainer's interface (no KV cache: it
recomputes the logits of the whole buffer for every new token, fine for the tiny test model);
``make_kv_sampler`` wraps the KV-cache sampler of ``jalign.models`` in the same signature and is used for
``jalign.models.CausalLM`` policies. Both also sample from the token-level geometric mixture of the policy with
a reference (:func:`mixture_logits`; Nash-MD, IPO-MD) when called with ``ref_params``. ``build_batch`` turns prompts,
samples and rewards into the batch of a *scored* (policy-gradient: RLOO, CoPG) or *sampled* (f-DPG) loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jalign.tokenizers import ByteTokenizer
from jalign.train.batch import SEQ
from jalign.train.step import logits_fn


def mixture_logits(policy_logits, ref_logits, mixture_beta):
    """Logits of the token-level geometric mixture π_mix(·) ∝ π(·)^{1−β}·μ(·)^β (β = ``mixture_beta``).

    Since log π = z_π − logsumexp(z_π) (and likewise μ), log π_mix = (1−β)·z_π + β·z_μ − const: the mixture's
    logits are the convex combination of the raw logits, and ``log_softmax`` of them renormalises per token
    (the constants cancel). With a temperature T the same holds for π_T ∝ exp(z/T): divide the result by T.
    At β = 0 the result is ``policy_logits`` bit for bit (1·z + 0·z' = z in floating point, z' finite).

    References:
      Munos et al., Nash Learning from Human Feedback, ICML 2024 (arXiv 2312.00886), Sec. 7 (the token-level
      approximation of the geometric mixture); Calandriello et al., 2024 (arXiv 2403.08635), IPO-MD.
    """
    z = jnp.asarray(policy_logits, jnp.float32)
    return (1.0 - mixture_beta) * z + mixture_beta * jnp.asarray(ref_logits, jnp.float32)


def make_sampler(graphdef, *, max_new_tokens: int, temperature: float = 1.0, greedy: bool = False,
                 eos_id: int = ByteTokenizer.eos_id, pad_id: int = ByteTokenizer.pad_id, mixture_beta: float = 0.0):
    """``sample(params, model_state, prompt_ids [N, P], prompt_mask [N, P], key, ref_params=None) -> dict``.

    Prompts are left-padded. Token t is drawn from ``softmax(logits / temperature)`` (argmax if ``greedy``);
    after EOS a sequence emits ``pad_id`` with mask 0. Returns ``ids`` / ``attention_mask`` ``[N, P+T]``,
    ``mask`` (response tokens incl. EOS, aligned with ids) and ``logps`` ``[N]``: Σ over response tokens of
    the log-probability under the distribution sampled from (the policy itself when temperature = 1).

    With ``ref_params`` (the same model's reference parameters) the logits are those of the geometric mixture
    :func:`mixture_logits` with weight ``mixture_beta`` on the reference, and ``logps`` are under the mixture.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    if not 0.0 <= mixture_beta <= 1.0:
        raise ValueError(f"mixture_beta must be in [0, 1], got {mixture_beta}")

    def sample(params, model_state, prompt_ids, prompt_mask, key, ref_params=None):
        n, p = prompt_ids.shape
        ids = jnp.concatenate([prompt_ids, jnp.full((n, max_new_tokens), pad_id, prompt_ids.dtype)], axis=1)
        attn = jnp.concatenate([prompt_mask, jnp.zeros((n, max_new_tokens), prompt_mask.dtype)], axis=1)
        resp = jnp.zeros_like(attn)

        def body(t, carry):
            ids, attn, resp, logps, done = carry
            logits = logits_fn(graphdef, params, model_state, ids, attn)
            z = jax.lax.dynamic_index_in_dim(logits, p + t - 1, axis=1, keepdims=False).astype(jnp.float32)
            if ref_params is not None:
                zr = jax.lax.dynamic_index_in_dim(logits_fn(graphdef, ref_params, model_state, ids, attn), p + t - 1,
                                                  axis=1, keepdims=False)
                z = mixture_logits(z, zr, mixture_beta)
            z = z / temperature
            tok = jnp.argmax(z, -1) if greedy else jax.random.categorical(jax.random.fold_in(key, t), z)
            lp = jnp.take_along_axis(jax.nn.log_softmax(z), tok[:, None], -1)[:, 0]
            live = ~done
            tok = jnp.where(live, tok, pad_id).astype(ids.dtype)
            ids = jax.lax.dynamic_update_index_in_dim(ids, tok, p + t, axis=1)
            attn = jax.lax.dynamic_update_index_in_dim(attn, live.astype(attn.dtype), p + t, axis=1)
            resp = jax.lax.dynamic_update_index_in_dim(resp, live.astype(resp.dtype), p + t, axis=1)
            return ids, attn, resp, logps + jnp.where(live, lp, 0.0), done | (tok == eos_id)

        init = (ids, attn, resp, jnp.zeros((n,), jnp.float32), jnp.zeros((n,), bool))
        ids, attn, resp, logps, _ = jax.lax.fori_loop(0, max_new_tokens, body, init)
        return {"ids": ids, "attention_mask": attn, "mask": resp, "logps": logps}

    return jax.jit(sample)


def make_kv_sampler(graphdef, *, max_new_tokens: int, temperature: float = 1.0, greedy: bool = False,
                    eos_id: int = ByteTokenizer.eos_id, pad_id: int = ByteTokenizer.pad_id, mixture_beta: float = 0.0):
    """The :func:`make_sampler` interface over :func:`jalign.models.sample` (KV cache, early exit on EOS),
    for :class:`jalign.models.CausalLM` models.

    ``sample(params, model_state, prompt_ids [N, P], prompt_mask [N, P], key) -> dict`` with the same fields
    as :func:`make_sampler`: ``ids`` = prompt followed by the ``max_new_tokens`` sampled tokens (``pad_id``
    after EOS), ``attention_mask`` = prompt mask followed by the response mask, ``mask`` = 0 on the prompt,
    the response mask after it, and ``logps [N]`` = Σ over response tokens of ``log q(y_t)`` under the
    distribution sampled from (``SampleOutput.logprobs``; the policy itself at temperature 1), which equals
    the trainer's recomputed sequence log-prob of the same ids (tested).

    With ``ref_params`` the tokens come from the geometric mixture of :func:`mixture_logits` (weight
    ``mixture_beta`` on the reference; two KV caches, :func:`_kv_mixture_jit`) and ``logps`` are under the
    mixture; at ``mixture_beta`` = 0 the samples equal those without ``ref_params`` bit for bit (same key).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    if not 0.0 <= mixture_beta <= 1.0:
        raise ValueError(f"mixture_beta must be in [0, 1], got {mixture_beta}")
    from flax import nnx

    from jalign.models import sample as kv_sample

    def sample(params, model_state, prompt_ids, prompt_mask, key, ref_params=None):
        if ref_params is not None:
            return _kv_mixture_jit(graphdef, params, ref_params, model_state, jnp.asarray(prompt_ids, jnp.int32),
                                   jnp.asarray(prompt_mask).astype(bool), key, jnp.float32(mixture_beta),
                                   jnp.float32(1.0 if greedy else temperature), max_new_tokens=max_new_tokens,
                                   greedy=greedy, eos_id=eos_id, pad_id=pad_id)
        model = nnx.merge(graphdef, params, model_state)
        model = getattr(model, "policy", model)  # an ActorCritic (ppo): sample from its policy
        out = kv_sample(model, prompt_ids, prompt_mask, key=key, max_new_tokens=max_new_tokens,
                        temperature=temperature, greedy=greedy, eos_id=eos_id, pad_id=pad_id)
        resp = out.response_mask.astype(jnp.int32)
        pm = jnp.asarray(prompt_mask).astype(jnp.int32)
        return {"ids": jnp.concatenate([jnp.asarray(prompt_ids, jnp.int32), out.tokens.astype(jnp.int32)], 1),
                "attention_mask": jnp.concatenate([pm, resp], 1),
                "mask": jnp.concatenate([jnp.zeros_like(pm), resp], 1),
                "logps": jnp.sum(out.logprobs * resp, axis=-1)}

    return sample


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy", "eos_id", "pad_id"))
def _kv_mixture_jit(graphdef, params, ref_params, model_state, ids, mask, key, mixture_beta, temperature, *,
                    max_new_tokens: int, greedy: bool, eos_id: int, pad_id: int):
    """:func:`jalign.models.sample`'s loop (prefill, one token per step, the same key schedule and the same
    ``filter_logits``) over two KV caches, the policy's and the reference's, drawing each token from
    :func:`mixture_logits`; returns the :func:`make_kv_sampler` fields."""
    from flax import nnx

    from jalign.models import init_cache
    from jalign.models.sampling import filter_logits

    pol = nnx.merge(graphdef, params, model_state)
    pol = getattr(pol, "policy", pol)
    ref = nnx.merge(graphdef, ref_params, model_state)
    ref = getattr(ref, "policy", ref)
    b, p = ids.shape
    n = max_new_tokens
    last = jnp.max(jnp.where(mask, jnp.arange(p), -1), axis=1)

    def prefill(model):
        out = model(ids, mask, cache=init_cache(model.cfg, b, p + n))
        return out.cache, jnp.take_along_axis(out.logits, last[:, None, None], axis=1)[:, 0]

    (c_pol, z_pol), (c_ref, z_ref) = prefill(pol), prefill(ref)
    gd_p, st_p = nnx.split(pol)
    gd_r, st_r = nnx.split(ref)
    eos = jnp.int32(-1 if eos_id is None else eos_id)

    def body(carry):
        i, c_pol, c_ref, z_pol, z_ref, key, toks, lps, rmask, done = carry
        key, sub = jax.random.split(key)
        z = mixture_logits(z_pol, z_ref, mixture_beta)
        if greedy:
            tok = jnp.argmax(z, axis=-1).astype(jnp.int32)
            lp = jnp.zeros((b,), jnp.float32)
        else:
            q = jax.nn.log_softmax(filter_logits(z, temperature), axis=-1)
            tok = jax.random.categorical(sub, q, axis=-1).astype(jnp.int32)
            lp = jnp.take_along_axis(q, tok[:, None], axis=-1)[:, 0]
        active = ~done
        tok = jnp.where(active, tok, pad_id)
        toks = toks.at[:, i].set(tok)
        lps = lps.at[:, i].set(jnp.where(active, lp, 0.0))
        rmask = rmask.at[:, i].set(active.astype(jnp.int32))
        done = done | (tok == eos)
        sp = nnx.merge(gd_p, st_p)(tok[:, None], active[:, None], cache=c_pol)
        sr = nnx.merge(gd_r, st_r)(tok[:, None], active[:, None], cache=c_ref)
        return i + 1, sp.cache, sr.cache, sp.logits[:, 0], sr.logits[:, 0], key, toks, lps, rmask, done

    def cond(carry):
        return (carry[0] < n) & ~jnp.all(carry[-1])

    zf = jnp.zeros((b, n), jnp.float32)
    init = (jnp.int32(0), c_pol, c_ref, z_pol, z_ref, key, jnp.full((b, n), pad_id, jnp.int32), zf,
            jnp.zeros((b, n), jnp.int32), jnp.zeros((b,), bool))
    *_, toks, lps, rmask, _ = jax.lax.while_loop(cond, body, init)
    pm = mask.astype(jnp.int32)
    return {"ids": jnp.concatenate([ids, toks], 1), "attention_mask": jnp.concatenate([pm, rmask], 1),
            "mask": jnp.concatenate([jnp.zeros_like(pm), rmask], 1), "logps": jnp.sum(lps * rmask, axis=-1)}


def repeat_prompts(batch: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt repeated ``k`` times consecutively: ``[B, P] -> [B·K, P]``."""
    return (np.repeat(np.asarray(batch["prompt_ids"]), k, axis=0),
            np.repeat(np.asarray(batch["prompt_attention_mask"]), k, axis=0))


def build_batch(kind: str, samples: dict, rewards: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The training batch of a ``scored`` (``[B, K, T]`` + ``rewards [B, K]``) or ``sampled`` loss
    (``[B·K, T]`` + ``proposal_logps``, ``log_potential`` = reward) from samples of ``B·K`` rows."""
    s = {key: np.asarray(v) for key, v in samples.items()}
    rewards = np.asarray(rewards, np.float32)
    nk = s["ids"].shape[0]
    if rewards.shape != (nk,):
        raise ValueError(f"reward function returned shape {rewards.shape}, expected ({nk},)")
    if not np.isfinite(rewards).all():
        i = int(np.argwhere(~np.isfinite(rewards))[0, 0])
        raise ValueError(f"reward function returned a non-finite reward for sample {i}: {rewards[i]}")
    if kind == "scored":
        b = nk // k
        out = {f: s[f].reshape(b, k, -1) for f in SEQ}
        out["rewards"] = rewards.reshape(b, k)
        return out
    if kind == "sampled":
        return {"ids": s["ids"], "mask": s["mask"], "attention_mask": s["attention_mask"],
                "proposal_logps": s["logps"].astype(np.float32), "log_potential": rewards}
    raise ValueError(f"online training needs a scored or sampled loss, got kind {kind!r}")


def score_parts(reward_fn, prompt_ids: np.ndarray, samples: dict, **kwargs) -> tuple[np.ndarray, dict]:
    """Call ``reward_fn(prompt_ids, completion_ids, completion_mask, **kwargs)`` on the response part of samples;
    return ``(rewards [N], parts)``.

    A reward function returns either the rewards ``[N]`` or a mapping with them under ``"reward"`` and named
    per-sample parts beside them (the components of a combined reward, ``jalign.train.plugins.rewards``);
    ``parts`` maps each part's name to its values ``[N]`` (float32; empty for a plain reward).
    """
    p = prompt_ids.shape[1]
    ids, mask = np.asarray(samples["ids"]), np.asarray(samples["mask"])
    out = reward_fn(prompt_ids, ids[:, p:], mask[:, p:], **kwargs)
    if isinstance(out, dict):
        if "reward" not in out:
            raise ValueError(f"reward function returned a mapping without 'reward' (keys {sorted(out)})")
        parts = {k: np.asarray(v, np.float32) for k, v in out.items() if k != "reward"}
        return np.asarray(out["reward"], np.float32), parts
    return np.asarray(out, np.float32), {}


def part_metrics(parts: dict) -> dict[str, float]:
    """The logged means ``reward/<part>`` of the per-sample parts of :func:`score_parts` (finite values only)."""
    out = {}
    for k, v in parts.items():
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        out[f"reward/{k}"] = float(v.mean()) if v.size else float("nan")
    return out


def score(reward_fn, prompt_ids: np.ndarray, samples: dict, **kwargs) -> np.ndarray:
    """Call ``reward_fn(prompt_ids, completion_ids, completion_mask)`` on the response part of samples (the
    rewards of :func:`score_parts`, without the parts)."""
    return score_parts(reward_fn, prompt_ids, samples, **kwargs)[0]

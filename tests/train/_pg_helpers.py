"""Shared pieces of the policy-gradient step tests: a fixed batch of sampled completions of the tiny model and
numpy transcriptions (float64) of TRL's / OpenRLHF's formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _train_helpers import np_logsumexp

from jalign.train import online, rl
from jalign.train.plugins import tiny
from jalign.train.step import init_state, split_model

G, P, NEW = 2, 16, 4


def make_setup():
    """A tiny model, a reference 0.3 away from it, and a fixed batch of 4 prompts × G sampled completions."""
    model = tiny.tiny_lm(0, d_model=8, d_hidden=16)
    ex = tiny.synthetic_prompt_examples(4, P, seed=1)
    p_ids = np.repeat(np.stack([e["prompt_ids"] for e in ex]), G, 0)
    p_mask = np.repeat(np.stack([e["prompt_attention_mask"] for e in ex]), G, 0)
    g, params, rest = split_model(model)
    s = online.make_sampler(g, max_new_tokens=NEW)(params, rest, jnp.asarray(p_ids), jnp.asarray(p_mask),
                                                   jax.random.key(3))
    rewards = np.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.9, -1.0, 0.3], np.float32)  # one zero-std group
    batch = rl.pg_batch(s, rewards, group_size=G)
    tx = optax.sgd(1.0)  # lr 1: the update is minus the gradient
    _, state = init_state(model, tx, reference=True)
    noise = jax.tree.map(lambda x: 0.3 * jax.random.normal(jax.random.key(7), x.shape), state.ref_params)
    state = state.replace(ref_params=jax.tree.map(jnp.add, state.ref_params, noise))
    return g, tx, state, batch


def _np_token_logps(g, params, model_state, batch):
    """log π(token t+1) and the entropy at t, float64 numpy from the model's logits."""
    from flax import nnx

    logits = np.asarray(nnx.merge(g, params, model_state)(jnp.asarray(batch["ids"]),
                                                          attention_mask=jnp.asarray(batch["attention_mask"])),
                        np.float64)[:, :-1]
    lp_all = logits - np_logsumexp(logits)[..., None]
    ids = np.asarray(batch["ids"])[:, 1:]
    lp = np.take_along_axis(lp_all, ids[..., None], -1)[..., 0]
    ent = -(np.exp(lp_all) * lp_all).sum(-1)
    return lp, ent


def _np_grpo_adv(r, g):
    r = np.asarray(r, np.float64).reshape(-1, g)
    return ((r - r.mean(-1, keepdims=True)) / (r.std(-1, ddof=1, keepdims=True) + 1e-4)).reshape(-1)


def _np_aggregate(per_token, m, aggregation, max_len):
    if aggregation == "grpo":
        return np.mean((per_token * m).sum(-1) / np.maximum(m.sum(-1), 1))
    if aggregation == "dr_grpo":
        return (per_token * m).sum() / (m.shape[0] * max_len)
    return (per_token * m).sum() / m.sum()


def _np_k3(lp, ref):
    d = ref - lp
    return np.exp(d) - d - 1


def _np_clipped(lp, old, adv_tok, m, eps_low, eps_high):
    w = np.exp(lp - old)
    per = -np.minimum(w * adv_tok, np.clip(w, 1 - eps_low, 1 + eps_high) * adv_tok)
    low = ((w < 1 - eps_low) & (adv_tok < 0)) * m
    high = ((w > 1 + eps_high) & (adv_tok > 0)) * m
    return per, low.sum() / m.sum(), high.sum() / m.sum()


def _run(setup, **kw):
    g, tx, state, batch = setup
    o = rl.PGOptions(group_size=G, max_completion_length=NEW, **kw)
    new, metrics = jax.jit(rl.make_pg_step(g, tx, o))(state, {k: jnp.asarray(v) for k, v in batch.items()})
    return o, new, {k: float(v) for k, v in metrics.items()}

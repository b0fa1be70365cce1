"""Token-level attribution of gradient entanglement (which tokens entangle), without a backward per token.

Write log π(y) = Σ_t ℓ_t with ℓ_t = log π(y_t | x, y_<t), so g = Σ_t ∇ℓ_t. Two exact decompositions:

1. :func:`token_attribution` — for any model: ⟨∇ℓ_{w,t}, v⟩ for *all* t at once is the Jacobian-vector
   product of the per-token log-prob vector along v. With v ∈ {g_w, g_l} (two backward passes) and one
   linearisation per response this gives, per chosen token, its share of ⟨g_w, g_l⟩ and of ‖g_w‖² (they sum
   exactly to the sequence quantities) and likewise per rejected token; hence the per-token first-order
   change Δℓ_{w,t} ≈ −η(a⟨∇ℓ_{w,t}, g_w⟩ + b⟨∇ℓ_{w,t}, g_l⟩). Cost: 2 backward + 2 forward + 4 JVPs.
2. :func:`unembedding_token_gram` — the full token × token matrix ⟨∇_W ℓ_{w,t}, ∇_W ℓ_{l,s}⟩ restricted to the
   unembedding W (logits = h Wᵀ), in closed form from hidden states and logits:
   α_{ts}·⟨h_{w,t}, h_{l,s}⟩ with α_{ts} = ⟨e_{y_{w,t}} − p_{w,t}, e_{y_{l,s}} − p_{l,s}⟩ (Razin et al.'s
   Theorem 6 coefficients). No gradient at all.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jalign.diagnostics.entanglement import _acc_dtype, _check_batch, _map, tree_dot

Array = Any
PyTree = Any


@functools.partial(jax.jit, static_argnames=("token_logps_fn", "batch_size"))
def _attr(token_logps_fn, params, chosen, rejected, batch_size):
    n = jax.tree.leaves(chosen)[0].shape[0]

    def one(pair):
        c, r = pair
        tw, vjp_w = jax.vjp(lambda p: token_logps_fn(p, c), params)
        tl, vjp_l = jax.vjp(lambda p: token_logps_fn(p, r), params)
        gw = vjp_w(jnp.ones_like(tw))[0]  # ∇ Σ_t log π(y_w,t)
        gl = vjp_l(jnp.ones_like(tl))[0]
        dt = _acc_dtype(tw, *jax.tree.leaves(gw))
        f = lambda x: x.astype(dt)

        def jac_vec(vjp, t, g):
            # J·g by reverse-over-reverse: J g = ∇_u ⟨Jᵀu, g⟩ (linear in u). Unlike jax.linearize this works
            # through jax.custom_vjp layers (the transformer's mixed_matmul / attention_vjp), which have no JVP.
            return jax.grad(lambda u: tree_dot(vjp(u)[0], g))(jnp.zeros(t.shape, t.dtype))

        return {
            "chosen_token_logps": f(tw),
            "rejected_token_logps": f(tl),
            "chosen_x_rejected": f(jac_vec(vjp_w, tw, gl)),
            "chosen_x_chosen": f(jac_vec(vjp_w, tw, gw)),
            "rejected_x_chosen": f(jac_vec(vjp_l, tl, gw)),
            "rejected_x_rejected": f(jac_vec(vjp_l, tl, gl)),
        }

    return _map(one, (chosen, rejected), batch_size, n)


def token_attribution(
    token_logps_fn: Callable[[PyTree, PyTree], Array],
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    *,
    batch_size: int | None = None,
) -> dict[str, jax.Array]:
    """Per-token shares of the pair gradient statistics (exact, JVP-based).

    Args:
      token_logps_fn: ``fn(params, example) -> [T]`` per-token log-probs (0 at padding), whose sum is the
        sequence log-prob.
      params, chosen, rejected: as in :func:`jalign.diagnostics.pairwise_gradient_stats`.
      batch_size: pairs per chunk (``None`` = all at once).

    Returns:
      dict of ``[B, T]`` (chosen) / ``[B, T']`` (rejected) arrays: ``chosen_x_rejected[t]`` =
      ⟨∇ℓ_{w,t}, g_l⟩ (sums over t to ⟨g_w, g_l⟩), ``chosen_x_chosen[t]`` = ⟨∇ℓ_{w,t}, g_w⟩ (sums to ‖g_w‖²),
      ``rejected_x_chosen[s]`` = ⟨∇ℓ_{l,s}, g_w⟩, ``rejected_x_rejected[s]`` = ⟨∇ℓ_{l,s}, g_l⟩, and the
      per-token log-probs. Positive ``chosen_x_rejected`` marks the tokens that entangle.
    """
    _check_batch(chosen, rejected)
    return _attr(token_logps_fn, params, chosen, rejected, batch_size)


def predicted_token_changes(attr: dict, a: Array, b: Array, lr: float) -> tuple[jax.Array, jax.Array]:
    """First-order per-token changes Δℓ_t for the step θ' = θ − lr(a g_w + b g_l); ``a``, ``b`` are ``[B]``.

    Δℓ_{w,t} ≈ −lr(a⟨∇ℓ_{w,t}, g_w⟩ + b⟨∇ℓ_{w,t}, g_l⟩), and likewise for rejected tokens; they sum to
    :func:`jalign.diagnostics.predicted_logp_changes`.
    """
    a, b = jnp.asarray(a)[:, None], jnp.asarray(b)[:, None]
    dw = -lr * (a * attr["chosen_x_chosen"] + b * attr["chosen_x_rejected"])
    dl = -lr * (a * attr["rejected_x_chosen"] + b * attr["rejected_x_rejected"])
    return dw, dl


def unembedding_token_gram(
    chosen_hidden: Array,
    chosen_logits: Array,
    chosen_labels: Array,
    chosen_mask: Array,
    rejected_hidden: Array,
    rejected_logits: Array,
    rejected_labels: Array,
    rejected_mask: Array,
    *,
    bias: bool = False,
) -> jax.Array:
    """⟨∇_W ℓ_{w,t}, ∇_W ℓ_{l,s}⟩ for every chosen token t and rejected token s, ``[B, T, T']``, closed form.

    For logits = h Wᵀ (+ bias), ∇_W ℓ_t = (e_{y_t} − p_t) h_tᵀ, so the entry is α_{ts}·(⟨h_t, h_s⟩ + 1[bias])
    with α_{ts} = 1[y_t = y_s] − p_s(y_t) − p_t(y_s) + ⟨p_t, p_s⟩. ``hidden`` ``[B, T, D]`` are the inputs of the
    unembedding, ``logits`` ``[B, T, V]`` aligned with ``labels`` ``[B, T]`` (logits[t] predicts labels[t]),
    ``mask`` 1 on response positions. Summing over (t, s) gives the unembedding part of ⟨g_w, g_l⟩.
    Computed in float32 (or wider).
    """
    dt = _acc_dtype(chosen_hidden, rejected_hidden, chosen_logits, rejected_logits)
    hw, hl = jnp.asarray(chosen_hidden, dt), jnp.asarray(rejected_hidden, dt)
    pw = jax.nn.softmax(jnp.asarray(chosen_logits, dt), axis=-1)
    pl = jax.nn.softmax(jnp.asarray(rejected_logits, dt), axis=-1)
    yw, yl = jnp.asarray(chosen_labels), jnp.asarray(rejected_labels)
    # α_ts = 1[y_t = y_s] − p_s(y_t) − p_t(y_s) + ⟨p_t, p_s⟩, without materialising one-hot [B, T, V] arrays.
    Tl = pl.shape[1]
    Tw = pw.shape[1]
    ps_at_yt = jnp.take_along_axis(pl.transpose(0, 2, 1), jnp.broadcast_to(yw[:, :, None], yw.shape + (Tl,)), axis=1)
    pt_at_ys = jnp.take_along_axis(pw.transpose(0, 2, 1), jnp.broadcast_to(yl[:, :, None], yl.shape + (Tw,)), axis=1)
    same = (yw[:, :, None] == yl[:, None, :]).astype(dt)
    alpha = same - ps_at_yt - pt_at_ys.transpose(0, 2, 1) + jnp.einsum("btv,bsv->bts", pw, pl)
    H = jnp.einsum("btd,bsd->bts", hw, hl) + (1.0 if bias else 0.0)
    m = jnp.asarray(chosen_mask, dt)[:, :, None] * jnp.asarray(rejected_mask, dt)[:, None, :]
    return alpha * H * m

"""Decoder-only transformer in Flax NNX: the model (:class:`CausalLM`), its KV cache and entry points.

GPT-2 and Llama/Qwen2 architectures; the blocks are in :mod:`jalign.models.layers`, the custom-VJP kernels in
:mod:`jalign.models.kernels`.

Conventions
-----------
* ``mask_BxT`` marks real tokens (1) versus padding (0). It masks *keys*; the positions of real tokens are
  derived from it (``position = number of real tokens before it``), so left- and right-padded batches give the
  same logits on real tokens as the unpadded sequences. Logits at padding positions are finite but meaningless.
* Parameters carry logical axis names in their ``axes`` metadata (see :mod:`jalign.models.sharding`).
* Weights are stored ``in_features x out_features`` (x @ W). Logits are float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jalign.models.config import ModelConfig
from jalign.models.kernels import mixed_matmul, transpose_last2, unembed_logps
from jalign.models.layers import Block, Norm, _param, _use_mixed, rope_angles

Array = jax.Array


@struct.dataclass
class KVCache:
    """Per-layer key/value buffers ``[B, S, K, Dh]``, the validity of each slot ``[B, S]`` and the next slot.

    Slot order is time order; a slot holding padding is invalid and never attended to, so prompts may be padded
    on either side. The position of a new real token is the number of valid slots before it.
    """

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    valid: Array  # [B, S] bool
    index: Array  # [] int32, next slot to write

    @property
    def size(self) -> int:
        return self.valid.shape[1]


@struct.dataclass
class CausalLMOutput:
    """``logits`` [B, T, V] float32; ``hidden_states`` [B, T, D] float32 (input to the unembedding) or None;
    ``cache`` the updated :class:`KVCache` when one was passed."""

    logits: Array
    hidden_states: Array | None = None
    cache: KVCache | None = None


def init_cache(cfg: ModelConfig, batch: int, size: int, dtype=None) -> KVCache:
    """An empty cache for ``batch`` sequences of at most ``size`` tokens."""
    dtype = dtype or cfg.compute_dtype
    shape = (batch, size, cfg.n_kv_heads, cfg.head_dim)
    z = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers))
    z2 = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers))
    return KVCache(k=z, v=z2, valid=jnp.zeros((batch, size), bool), index=jnp.zeros((), jnp.int32))


def _remat_block(layer, x, rope, valid, q_slot, kv, index):
    """Run ``layer`` under ``jax.checkpoint``: activations inside the block are recomputed in the backward."""
    gd, st = nnx.split(layer)
    fn = jax.checkpoint(lambda st, x, rope, valid, kv: nnx.merge(gd, st)(x, rope, valid, q_slot, kv, index))
    return fn(st, x, rope, valid, kv)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_token_ids(ids: Any, vocab_size: int, name: str = "ids") -> None:
    """Raise ``ValueError`` if concrete token ids fall outside ``[0, vocab_size)`` (no-op on tracers)."""
    if not _is_concrete(ids):
        return
    a = np.asarray(ids)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        bad = np.argwhere((a < 0) | (a >= vocab_size))[0]
        raise ValueError(
            f"{name}: token id {int(a[tuple(bad)])} at index {tuple(int(i) for i in bad)} is outside "
            f"[0, {vocab_size}) (vocab_size of the model)"
        )


class Decoder(nnx.Module):
    """The transformer trunk shared by :class:`CausalLM` and :class:`jalign.models.RewardModel`: token (and,
    for GPT-2, position) embeddings, the blocks and the final norm; :meth:`_hidden` gives the final hidden
    states. Parameter names (``embed``, ``pos_embed``, ``layers.i....``, ``final_norm``) are the same in both
    models, so a reward model's trunk maps onto the Hugging Face layout exactly like a causal LM's."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        V, D = cfg.vocab_size, cfg.d_model
        self.embed = _param(rngs, (V, D), ("vocab", "embed"), cfg)
        if cfg.arch == "gpt2":
            self.pos_embed = _param(rngs, (cfg.max_seq_len, D), ("pos", "embed"), cfg, std=0.01)
        self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = Norm(cfg, rngs)

    def _hidden(self, ids_BxT, mask_BxT, positions_BxT, cache):
        """Final hidden states ``[B, T, D]`` (after the final norm, compute dtype) and the updated cache."""
        cfg = self.cfg
        if getattr(ids_BxT, "ndim", None) != 2:
            raise ValueError(f"ids_BxT must be a 2-D [batch, time] int array, got shape {jnp.shape(ids_BxT)}")
        check_token_ids(ids_BxT, cfg.vocab_size, "ids_BxT")
        B, T = ids_BxT.shape
        mask = jnp.ones((B, T), bool) if mask_BxT is None else jnp.asarray(mask_BxT).astype(bool)
        if mask.shape != (B, T):
            raise ValueError(f"mask_BxT shape {mask.shape} != ids_BxT shape {(B, T)}")
        if positions_BxT is None:
            offset = 0 if cache is None else jnp.sum(cache.valid, axis=1, dtype=jnp.int32)[:, None]
            positions_BxT = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0) + offset
        dt = cfg.compute_dtype
        V = cfg.vocab_size
        ids_BxT = jnp.where((ids_BxT < 0) | (ids_BxT >= V), V, ids_BxT)  # out of range -> NaN row (under jit)
        x = jnp.take(self.embed[...], ids_BxT, axis=0, mode="fill", fill_value=jnp.nan).astype(dt)
        rope = None
        if cfg.arch == "gpt2":
            if _is_concrete(positions_BxT) and np.asarray(positions_BxT).max(initial=0) >= cfg.max_seq_len:
                raise ValueError(f"positions exceed max_seq_len={cfg.max_seq_len} of the GPT-2 position table")
            pe = jnp.take(self.pos_embed[...], positions_BxT, axis=0, mode="fill", fill_value=jnp.nan)
            x = x + pe.astype(dt)
        else:
            rope = rope_angles(positions_BxT, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        if cache is None:
            valid, q_slot, index = mask, jnp.arange(T), None
        else:
            index = cache.index
            valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
            q_slot = index + jnp.arange(T)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i])
            if cfg.remat:
                x, kv = _remat_block(layer, x, rope, valid, q_slot, kv, index)
            else:
                x, kv = layer(x, rope, valid, q_slot, kv, index)
            new_k.append(kv[0])
            new_v.append(kv[1])
        h = self.final_norm(x)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=tuple(new_k), v=tuple(new_v), valid=valid, index=index + T)
        return h, new_cache


class CausalLM(Decoder):
    """Decoder-only language model. ``model(ids_BxT, mask_BxT=None)`` → :class:`CausalLMOutput`.

    Args (of ``__call__``):
      ids_BxT: int token ids in ``[0, vocab_size)``; checked eagerly when concrete. Under ``jit`` an
        out-of-range id gives NaN logits (never a silent wrong embedding).
      mask_BxT: 1 for real tokens, 0 for padding (either side). Default: all real.
      positions_BxT: explicit positions; default ``cumsum(mask) - 1`` (plus the tokens already in ``cache``).
      cache: a :class:`KVCache`; the new tokens are written at ``cache.index`` and attend to all valid slots.
      return_hidden: also return the final hidden states (after the final norm).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = _param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg)

    def __call__(
        self,
        ids_BxT: Array,
        mask_BxT: Array | None = None,
        positions_BxT: Array | None = None,
        *,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> CausalLMOutput:
        h, new_cache = self._hidden(ids_BxT, mask_BxT, positions_BxT, cache)
        cfg, dt = self.cfg, self.cfg.compute_dtype
        if _use_mixed(cfg, dt):
            logits = mixed_matmul(h, self._unembedding(), jnp.float32)
        elif cfg.tie_embeddings:
            logits = jnp.einsum("btd,vd->btv", h, self.embed[...].astype(dt), preferred_element_type=jnp.float32)
        else:
            logits = jnp.einsum("btd,dv->btv", h, self.lm_head[...].astype(dt), preferred_element_type=jnp.float32)
        return CausalLMOutput(
            logits=logits, hidden_states=h.astype(jnp.float32) if return_hidden else None, cache=new_cache
        )

    def _unembedding(self) -> Array:
        """The ``[D, V]`` unembedding (the transposed embedding when tied), in the parameter dtype."""
        return transpose_last2(self.embed[...]) if self.cfg.tie_embeddings else self.lm_head[...]

    def sequence_logps(self, ids_BxT: Array, response_mask_BxT: Array, mask_BxT: Array | None = None,
                       *, chunk: int = 1024) -> tuple[Array, Array]:
        """Summed response log-probabilities without materialising the ``[B, T, V]`` logits.

        Equals ``causal_sequence_logps(self(ids, mask).logits, ids, response_mask)`` (position ``t`` predicts
        ``ids[t + 1]``; ``response_mask[:, 0]`` is never scored) up to the order of summation, computed by
        :func:`unembed_logps` on the final hidden states ``chunk`` rows at a time.

        Returns:
          ``(logps [B], lengths [B])``, float32.
        """
        ids = jnp.asarray(ids_BxT)
        rmask = jnp.asarray(response_mask_BxT)
        if rmask.shape != ids.shape:
            raise ValueError(f"response_mask_BxT shape {rmask.shape} != ids_BxT shape {ids.shape}")
        h, _ = self._hidden(ids, mask_BxT, None, None)
        B, T, D = h.shape
        V = self.cfg.vocab_size
        labels = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
        m = jnp.concatenate([rmask[:, 1:], jnp.zeros_like(rmask[:, :1])], axis=1).astype(jnp.float32)
        labels = jnp.clip(labels.astype(jnp.int32), 0, V - 1)  # ids are range-checked by _hidden
        lp = unembed_logps(h.reshape(B * T, D), self._unembedding(), labels.reshape(-1), chunk).reshape(B, T)
        return jnp.where(m > 0, lp * m, 0.0).sum(-1), m.sum(-1)


def token_logprobs(logits_BxTxV: Array, ids_BxT: Array) -> Array:
    """``lp[b, t] = log p(ids[b, t] | ids[b, <t])`` for t >= 1 (0 at t = 0), float32, shape [B, T].

    Aligned with the targets, so ``sum(lp * response_mask)`` is the response log-likelihood for the masks of
    :meth:`jalign.tokenizers.ByteTokenizer.encode_pair`.
    """
    logp = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
    lp = jnp.take_along_axis(logp, ids_BxT[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(lp, ((0, 0), (1, 0)))


def create_model(cfg: ModelConfig, seed: int = 0) -> CausalLM:
    """A freshly initialised :class:`CausalLM`: normal(0, init_std) weights, output projections with std
    ``init_std / sqrt(2 n_layers)`` (GPT-2), norm scales 1, biases 0.

    The weights are drawn on the host with ``numpy.random.default_rng(seed)`` (no XLA compilation, which
    dominates start-up for small models); ``CausalLM(cfg, rngs=nnx.Rngs(seed))`` initialises with jax.random.
    """
    return init_on_host(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)), cfg, seed)


def init_on_host(make, cfg: ModelConfig, seed: int = 0):
    """The module ``make()`` builds, its parameters drawn on the host by their ``init`` metadata with
    ``numpy.random.default_rng(seed)`` (see :func:`create_model`)."""
    abstract = nnx.eval_shape(make)
    gd, st = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    for _, var in nnx.to_flat_state(st):
        kind, arg = var.get_metadata()["init"]
        if kind == "const":
            x = np.full(var.shape, arg, np.float32)
        else:
            x = rng.standard_normal(var.shape, np.float32) * np.float32(arg)
        var.set_value(jnp.asarray(x.astype(cfg.params_dtype)))
    return nnx.merge(gd, st)


@functools.partial(nnx.jit, static_argnames=("return_hidden",))
def _forward(model, ids_BxT, mask_BxT, positions_BxT, return_hidden):
    return model(ids_BxT, mask_BxT, positions_BxT, return_hidden=return_hidden)


def forward(
    model: CausalLM,
    ids_BxT: Array,
    mask_BxT: Array | None = None,
    positions_BxT: Array | None = None,
    *,
    return_hidden: bool = False,
) -> CausalLMOutput:
    """``model(...)`` compiled with ``nnx.jit`` (ids are range-checked here, outside the jit)."""
    check_token_ids(ids_BxT, model.cfg.vocab_size, "ids_BxT")
    return _forward(model, ids_BxT, mask_BxT, positions_BxT, return_hidden)

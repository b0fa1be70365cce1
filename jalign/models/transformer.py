"""Decoder-only transformer in Flax NNX: GPT-2 and Llama/Qwen2 blocks, KV cache, padding-correct masking.

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


def _param(rngs: nnx.Rngs, shape, axes, cfg: ModelConfig, std: float | None = None, value: float | None = None):
    std = std or cfg.init_std
    if value is not None:
        x = jnp.full(shape, value, cfg.params_dtype)
    else:
        x = (jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(cfg.params_dtype)
    return nnx.Param(x, axes=tuple(axes), init=("const", value) if value is not None else ("normal", std))


class Norm(nnx.Module):
    """LayerNorm (GPT-2: scale and bias) or RMSNorm (Llama: scale only), computed in float32."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.rms = cfg.arch != "gpt2"
        self.eps = cfg.norm_eps
        self.scale = _param(rngs, (cfg.d_model,), ("norm",), cfg, value=1.0)
        if not self.rms:
            self.bias = _param(rngs, (cfg.d_model,), ("norm",), cfg, value=0.0)

    def __call__(self, x: Array) -> Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.rms:
            x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
            return self.scale[...].astype(dtype) * x.astype(dtype)
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        y = (x - mu) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: tuple | None = None) -> Array:
    """Rotary frequencies ``theta^(-2i/Dh)`` (Su et al. 2021), optionally with Llama 3 rescaling.

    Llama 3 (Grattafiori et al. 2024): with wavelength ``w = 2 pi / f``, ``L = original_max_position_embeddings``,
    frequencies with ``w > L / low_freq_factor`` are divided by ``factor``, those with
    ``w < L / high_freq_factor`` are kept, and in between ``f' = (1 - s) f / factor + s f`` with
    ``s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor)``.
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    rs = dict(scaling)
    factor, lo, hi, L = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > L / lo, inv_freq / factor, inv_freq)
    s = (L / wavelen - lo) / (hi - lo)
    smoothed = (1 - s) * scaled / factor + s * scaled
    medium = (wavelen >= L / hi) & (wavelen <= L / lo)
    return jnp.where(medium, smoothed, scaled)


def rope_angles(positions_BxT: Array, head_dim: int, theta: float, scaling: tuple | None = None):
    """cos, sin [B, T, Dh/2] of the rotary embedding at the given positions."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling)
    ang = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x_BxTxHxD: Array, cos: Array, sin: Array) -> Array:
    """Rotate (x1, x2) halves: (x1 cos - x2 sin, x2 cos + x1 sin) — the Hugging Face "rotate_half" layout."""
    dtype = x_BxTxHxD.dtype
    x = x_BxTxHxD.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(dtype)


def transpose_last2(x_AxB: Array) -> Array:
    """``swapaxes(x, -1, -2)`` materialised as a row-major array, never folded into a consumer dot.

    XLA:CPU runs a dot on its fast library path (YNNPACK; bf16 x bf16 -> f32 on AMX/AVX512-BF16 units) only when
    both operands are row-major with the contraction on the lhs' last and the rhs' first axis *at the time it
    decides whether to up-cast the operands to float32*. A plain ``x.T`` reaches that decision as a
    column-major view, so ``g @ w.T`` and ``x.T @ g`` (the two dots of every matmul backward) are silently run
    in float32 on the generic path — 5-10x slower than the forward for bf16 operands on this machine, and
    ~1.5x slower in float32. Routing the transpose through a trailing unit axis makes XLA materialise it as a
    copy (``O(size)``, negligible next to the dot) and keeps the dot canonical. Values are unchanged.
    """
    s = x_AxB.shape
    y = jnp.swapaxes(x_AxB.reshape(*s, 1), -2, -3)
    return y.reshape(*s[:-2], s[-1], s[-2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def mixed_matmul(x_NxK: Array, w_KxM: Array, out_dtype) -> Array:
    """``x @ w`` as a ``x.dtype`` x ``x.dtype`` dot accumulated in float32, cast to ``out_dtype``.

    ``w`` may be stored wider (float32 master weights); it is cast to ``x.dtype`` for the product. The custom
    VJP keeps the backward in the same form, ``dx = g @ w^T`` and ``dw = x^T g``, both with ``x.dtype`` inputs
    (the cotangent is cast to ``x.dtype``), float32 accumulation and the transposed operand materialised
    row-major (:func:`transpose_last2`), so that both backward dots take the same fast path as the forward;
    ``dw`` is returned in ``w.dtype``. Plain autodiff of a ``preferred_element_type=float32`` dot would instead
    run the backward on float32 operands in a transposed layout, which on CPUs with bf16 dot units is several
    times slower than the forward. In float32 this is the plain matmul and its exact VJP (up to the order of
    summation).

    Args:
      x_NxK: activations ``[..., K]`` in the compute dtype.
      w_KxM: weights ``[K, M]`` (any float dtype).
      out_dtype: dtype of the result (e.g. the compute dtype, or float32 for logits).
    """
    return jnp.dot(x_NxK, w_KxM.astype(x_NxK.dtype), preferred_element_type=jnp.float32).astype(out_dtype)


def _mixed_matmul_fwd(x, w, out_dtype):
    return mixed_matmul(x, w, out_dtype), (x, w)


def _mixed_matmul_bwd(out_dtype, res, g):
    x, w = res
    dt = x.dtype
    g = g.astype(dt)
    K, M = w.shape
    dx = jnp.dot(g, transpose_last2(w.astype(dt)), preferred_element_type=jnp.float32).astype(dt)
    dw = jnp.dot(transpose_last2(x.reshape(-1, K)), g.reshape(-1, M), preferred_element_type=jnp.float32)
    return dx, dw.astype(w.dtype)


mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def _rowsum_dot(g_NxM: Array) -> Array:
    """``g.sum(0)`` in float32 as a ``ones[1, N] @ g`` dot.

    XLA:CPU lowers a bf16 column sum of a large ``[N, M]`` cotangent to a float32 convert plus a
    ``reduce-window`` that runs an order of magnitude slower than the matmul library; as a dot it takes the
    fast path (bf16 operands, float32 accumulation)."""
    ones = jnp.ones((1, g_NxM.shape[0]), g_NxM.dtype)
    return jnp.dot(ones, g_NxM, preferred_element_type=_acc(g_NxM.dtype))[0]


def _linear_f32(x, w, b):
    """``x @ w (+ b)`` with ``x.dtype`` operands accumulated in float32 (or wider); ``b`` may be ``None``."""
    y = jnp.dot(x, w.astype(x.dtype), preferred_element_type=_acc(x.dtype))
    return y if b is None else y + b.astype(y.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def mixed_linear(x_NxK: Array, w_KxM: Array, b_M: Array, out_dtype) -> Array:
    """``x @ w + b`` as :func:`mixed_matmul` with the bias added to the float32 accumulator.

    The VJP returns ``db = Σ_rows g`` computed as a dot (:func:`_rowsum_dot`) in float32 and cast to
    ``b.dtype``; ``dx`` and ``dw`` are those of :func:`mixed_matmul`. ``b`` broadcasts over the last axis of
    the product (shape ``[M]``)."""
    return _linear_f32(x_NxK, w_KxM, b_M).astype(out_dtype)


def _mixed_linear_fwd(x, w, b, out_dtype):
    return mixed_linear(x, w, b, out_dtype), (x, w, b)


def _mixed_linear_bwd(out_dtype, res, g):
    x, w, b = res
    dx, dw = _mixed_matmul_bwd(out_dtype, (x, w), g)
    db = _rowsum_dot(g.astype(x.dtype).reshape(-1, w.shape[1]))
    return dx, dw, db.astype(b.dtype)


mixed_linear.defvjp(_mixed_linear_fwd, _mixed_linear_bwd)


ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
}


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def mixed_linear_act(x_NxK: Array, w_KxM: Array, b_M: Array | None, out_dtype, activation: str) -> Array:
    """``act(x @ w + b)`` with the activation applied to the float32 accumulator (``b`` may be ``None``).

    The matmul is that of :func:`mixed_matmul` / :func:`mixed_linear`; the activation (``"gelu"``,
    ``"gelu_tanh"`` or ``"silu"``, :data:`ACTIVATIONS`) runs in float32 on the accumulator before the single
    cast to ``out_dtype``, so the pre-activation is never rounded to bf16 on the way in. The custom VJP keeps
    the pre-activation in ``x.dtype`` and forms ``g · act'(y)`` in float32 in one elementwise pass (the
    activation's own VJP), cast to ``x.dtype`` for the fast-path backward dots of :func:`mixed_matmul` and the
    bias gradient of :func:`mixed_linear`. Plain autodiff of ``gelu(mixed_linear(...))`` on the bf16 path
    would instead save and re-read several bf16 intermediates of the tanh formula. In float32 the value and
    gradient are those of ``act(x @ w + b)`` up to the order of summation.
    """
    return _mixed_linear_act_fwd(x_NxK, w_KxM, b_M, out_dtype, activation)[0]


def _mixed_linear_act_fwd(x, w, b, out_dtype, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"mixed_linear_act: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    y = _linear_f32(x, w, b)
    return ACTIVATIONS[activation](y).astype(out_dtype), (x, w, b, y.astype(x.dtype))


def _mixed_linear_act_bwd(out_dtype, activation, res, g):
    x, w, b, y = res
    _, act_vjp = jax.vjp(ACTIVATIONS[activation], y.astype(_acc(y.dtype)))
    gy = act_vjp(g.astype(_acc(y.dtype)))[0].astype(x.dtype)
    dx, dw = _mixed_matmul_bwd(out_dtype, (x, w), gy)
    db = None if b is None else _rowsum_dot(gy.reshape(-1, w.shape[1])).astype(b.dtype)
    return dx, dw, db


mixed_linear_act.defvjp(_mixed_linear_act_fwd, _mixed_linear_act_bwd)


def _row_chunks(n: int, chunk: int) -> tuple[int, int]:
    """(rows per chunk, number of chunks) covering ``n`` rows with chunks of at most ``chunk`` rows."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"unembed_logps: chunk must be a positive int (rows per block), got {chunk!r}")
    c = max(1, min(chunk, n))
    return c, -(-n // c)


def _pad_rows(x, rows: int):
    return x if x.shape[0] == rows else jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _unembed_chunk(h_CxD, w_DxV, labels_C):
    """Float32 logits of one row chunk, their logsumexp and the labels' logits."""
    logits = jnp.dot(h_CxD, w_DxV, preferred_element_type=jnp.float32)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    lse = m + jnp.log(jnp.sum(jnp.exp(logits - m[:, None]), axis=-1))
    picked = jnp.take_along_axis(logits, labels_C[:, None], axis=-1)[:, 0]
    return logits, lse, picked


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def unembed_logps(h_NxD: Array, w_DxV: Array, labels_N: Array, chunk: int = 1024) -> Array:
    """``log softmax(h @ w)[labels]`` per row (float32 ``[N]``) without materialising the ``[N, V]`` logits.

    The fused unembedding + log-probability of the training step. Rows are processed ``chunk`` at a time
    (``lax.scan``), so at most a ``[chunk, V]`` float32 logits block exists; the forward keeps only the
    per-row logsumexp. The custom VJP recomputes each chunk's logits and forms the logits cotangent
    ``g · (onehot(label) − softmax)`` in place, then ``dh = G wᵀ`` and ``dw += hᵀ G`` as ``h.dtype`` dots with
    float32 accumulation and the transposed operand row-major (as :func:`mixed_matmul`): one extra unembedding
    matmul in exchange for never writing or re-reading full-vocabulary float32 arrays. Same value and gradient
    as ``take_along_axis(log_softmax(h @ w), labels)`` up to the order of summation.

    Args:
      h_NxD: final hidden states in the compute dtype (``[N, D]``).
      w_DxV: unembedding ``[D, V]`` (any float dtype; cast to ``h.dtype`` for the product).
      labels_N: int ids in ``[0, V)`` (clip out-of-range labels of padded positions beforehand).
      chunk: rows per block (static).
    """
    return _unembed_logps_fwd(h_NxD, w_DxV, labels_N, chunk)[0]


def _unembed_logps_fwd(h, w, labels, chunk):
    N, D = h.shape
    c, n = _row_chunks(N, chunk)
    wd = w.astype(h.dtype)
    hs = _pad_rows(h, c * n).reshape(n, c, D)
    ls = _pad_rows(labels.astype(jnp.int32), c * n).reshape(n, c)

    def body(_, xs):
        _, lse, picked = _unembed_chunk(xs[0], wd, xs[1])
        return None, (picked - lse, lse)

    _, (lp, lse) = jax.lax.scan(body, None, (hs, ls))
    return lp.reshape(-1)[:N], (h, w, labels, lse)


def _unembed_logps_bwd(chunk, res, g_N):
    h, w, labels, lse = res  # lse: [n, c]
    N, D = h.shape
    V = w.shape[1]
    dt = h.dtype
    c, n = _row_chunks(N, chunk)
    wd = w.astype(dt)
    wT = transpose_last2(wd)
    hs = _pad_rows(h, c * n).reshape(n, c, D)
    ls = _pad_rows(labels.astype(jnp.int32), c * n).reshape(n, c)
    gs = _pad_rows(g_N.astype(jnp.float32), c * n).reshape(n, c)  # padded rows get g = 0

    def body(dw, xs):
        hc, lc, lsec, gc = xs
        logits = jnp.dot(hc, wd, preferred_element_type=jnp.float32)
        p = jnp.exp(logits - lsec[:, None])
        onehot = jnp.arange(V, dtype=jnp.int32)[None, :] == lc[:, None]
        G = (gc[:, None] * (onehot.astype(jnp.float32) - p)).astype(dt)
        dh = jnp.dot(G, wT, preferred_element_type=jnp.float32).astype(dt)
        dw = dw + jnp.dot(transpose_last2(hc), G, preferred_element_type=jnp.float32)
        return dw, dh

    dw, dh = jax.lax.scan(body, jnp.zeros((D, V), jnp.float32), (hs, ls, lse, gs))
    return dh.reshape(-1, D)[:N], dw.astype(w.dtype), None


unembed_logps.defvjp(_unembed_logps_fwd, _unembed_logps_bwd)


def _acc(dtype):
    """Accumulation dtype: float32, or the input dtype if wider."""
    return jnp.promote_types(dtype, jnp.float32)


def _attn_probs(q, k, allowed, scale, m=None, l=None):
    """Masked softmax probabilities (float32) and the row max / normaliser they were computed with."""
    s = jnp.einsum("bkqd,bkds->bkqs", q, transpose_last2(k), preferred_element_type=_acc(q.dtype)) * scale
    s = jnp.where(allowed, s, jnp.finfo(_acc(q.dtype)).min)
    if m is None:
        m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    e = jnp.exp(s - m)
    if l is None:
        l = jnp.sum(e, axis=-1, keepdims=True)
    return e / l, m, l


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention_core(q_BxKxQxD, k_BxKxSxD, v_BxKxSxD, allowed_Bx1xQxS, scale: float):
    """``softmax(scale · q kᵀ, masked) v`` per batch row and kv-head, with a FlashAttention-style VJP.

    ``Q`` stacks the query positions of the ``G = H / K`` query heads sharing a kv-head (grouped-query
    attention). Scores, the softmax normaliser and the accumulation are float32 (or wider); the dots take
    ``q.dtype`` operands (bf16 on the bf16 path). The custom backward (Dao et al. 2022, "FlashAttention")
    recomputes the probabilities ``P`` from the saved row max and normaliser, and forms
    ``dS = P ∘ (dP − rowsum(dO ∘ O))`` using ``rowsum(dP ∘ P) = rowsum(dO ∘ O)``, a reduction over the
    head dimension instead of over the keys; its four dots take their transposed operand materialised
    row-major (:func:`transpose_last2`). Positions with ``allowed`` False get probability 0 (a row with no
    allowed key gets the uniform distribution, as ``jax.nn.softmax`` of equal scores would).
    """
    return _attention_core_fwd(q_BxKxQxD, k_BxKxSxD, v_BxKxSxD, allowed_Bx1xQxS, scale)[0]


def _attention_core_fwd(q, k, v, allowed, scale):
    p, m, l = _attn_probs(q, k, allowed, scale)
    o = jnp.einsum("bkqs,bksd->bkqd", p.astype(q.dtype), v, preferred_element_type=_acc(q.dtype)).astype(q.dtype)
    return o, (q, k, v, allowed, o, m, l)


def _attention_core_bwd(scale, res, do):
    q, k, v, allowed, o, m, l = res
    dt = q.dtype
    do = do.astype(dt)
    p, _, _ = _attn_probs(q, k, allowed, scale, m, l)  # recomputed, f32 [B,K,Q,S]
    dv = jnp.einsum("bksq,bkqd->bksd", transpose_last2(p.astype(dt)), do, preferred_element_type=_acc(q.dtype))
    dp = jnp.einsum("bkqd,bkds->bkqs", do, transpose_last2(v), preferred_element_type=_acc(q.dtype))
    delta = jnp.sum(do.astype(_acc(dt)) * o.astype(_acc(dt)), axis=-1, keepdims=True)
    ds = jnp.where(allowed, p * (dp - delta) * scale, 0.0).astype(dt)  # masked scores are constants
    dq = jnp.einsum("bkqs,bksd->bkqd", ds, k, preferred_element_type=_acc(q.dtype))
    dk = jnp.einsum("bksq,bkqd->bksd", transpose_last2(ds), q, preferred_element_type=_acc(q.dtype))
    return dq.astype(dt), dk.astype(k.dtype), dv.astype(v.dtype), None


attention_core.defvjp(_attention_core_fwd, _attention_core_bwd)


def _use_mixed(cfg: ModelConfig, dt) -> bool:
    return bool(cfg.mixed_matmul)


def _proj_in(cfg, x_BxTxD, w_DxHxK, b_HxK=None):
    """``einsum("btd,dhk->bthk") (+ b)``; with ``cfg.mixed_matmul`` a :func:`mixed_matmul` (or, with a bias,
    :func:`mixed_linear`) on the flattened weight."""
    dt = x_BxTxD.dtype
    if not _use_mixed(cfg, dt):
        y = jnp.einsum("btd,dhk->bthk", x_BxTxD, w_DxHxK.astype(dt))
        return y if b_HxK is None else y + b_HxK.astype(dt)
    D, H, K = w_DxHxK.shape
    if b_HxK is None:
        y = mixed_matmul(x_BxTxD, w_DxHxK.reshape(D, H * K), dt)
    else:
        y = mixed_linear(x_BxTxD, w_DxHxK.reshape(D, H * K), b_HxK.reshape(H * K), dt)
    return y.reshape(*x_BxTxD.shape[:2], H, K)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        D, H, K, Dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        out_std = cfg.init_std / np.sqrt(2 * cfg.n_layers)
        self.wq = _param(rngs, (D, H, Dh), ("embed", "heads", "head_dim"), cfg)
        self.wk = _param(rngs, (D, K, Dh), ("embed", "kv_heads", "head_dim"), cfg)
        self.wv = _param(rngs, (D, K, Dh), ("embed", "kv_heads", "head_dim"), cfg)
        self.wo = _param(rngs, (H, Dh, D), ("heads", "head_dim", "embed"), cfg, std=out_std)
        if cfg.qkv_bias:
            self.bq = _param(rngs, (H, Dh), ("heads", "head_dim"), cfg, value=0.0)
            self.bk = _param(rngs, (K, Dh), ("kv_heads", "head_dim"), cfg, value=0.0)
            self.bv = _param(rngs, (K, Dh), ("kv_heads", "head_dim"), cfg, value=0.0)
        if cfg.attn_out_bias:
            self.bo = _param(rngs, (D,), ("embed",), cfg, value=0.0)

    def __call__(self, x, rope, valid_BxS, q_slot_T, kv=None, index=None):
        cfg = self.cfg
        dt = x.dtype
        bq, bk, bv = (self.bq[...], self.bk[...], self.bv[...]) if cfg.qkv_bias else (None, None, None)
        q = _proj_in(cfg, x, self.wq[...], bq)
        k = _proj_in(cfg, x, self.wk[...], bk)
        v = _proj_in(cfg, x, self.wv[...], bv)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None:
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, index, 0, 0))
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, index, 0, 0))
        B, T, H, Dh = q.shape
        S, K = k.shape[1], k.shape[2]
        G = H // K
        q = q.reshape(B, T, K, G, Dh)
        allowed = valid_BxS[:, None, :] & (jnp.arange(S)[None, :] <= q_slot_T[:, None])[None]  # [B, T, S]
        if cfg.attention_vjp and kv is None:  # training/scoring path; decoding (kv cache) needs no custom VJP
            qh = q.transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, Dh)
            kh, vh = k.astype(dt).transpose(0, 2, 1, 3), v.astype(dt).transpose(0, 2, 1, 3)
            al = jnp.broadcast_to(allowed[:, None, None], (B, 1, G, T, S)).reshape(B, 1, G * T, S)
            o = attention_core(qh, kh, vh, al, float(1.0 / np.sqrt(Dh)))
            o = o.reshape(B, K, G, T, Dh).transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)
        else:
            scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(dt), preferred_element_type=jnp.float32)
            scores = scores * (1.0 / np.sqrt(Dh))
            scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(dt)
            o = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(dt)).reshape(B, T, H, Dh)
        if _use_mixed(cfg, dt):
            wo = self.wo[...].reshape(H * Dh, -1)
            if cfg.attn_out_bias:
                y = mixed_linear(o.reshape(B, T, H * Dh), wo, self.bo[...], dt)
            else:
                y = mixed_matmul(o.reshape(B, T, H * Dh), wo, dt)
        else:
            y = jnp.einsum("bthk,hkd->btd", o, self.wo[...].astype(dt))
            if cfg.attn_out_bias:
                y = y + self.bo[...].astype(dt)
        return y, (k, v)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        D, F = cfg.d_model, cfg.d_ff
        out_std = cfg.init_std / np.sqrt(2 * cfg.n_layers)
        if cfg.arch == "gpt2":
            self.w_in = _param(rngs, (D, F), ("embed", "mlp"), cfg)
        else:
            self.w_gate = _param(rngs, (D, F), ("embed", "mlp"), cfg)
            self.w_up = _param(rngs, (D, F), ("embed", "mlp"), cfg)
        self.w_out = _param(rngs, (F, D), ("mlp", "embed"), cfg, std=out_std)
        if cfg.mlp_bias:
            if cfg.arch == "gpt2":
                self.b_in = _param(rngs, (F,), ("mlp",), cfg, value=0.0)
            else:
                self.b_gate = _param(rngs, (F,), ("mlp",), cfg, value=0.0)
                self.b_up = _param(rngs, (F,), ("mlp",), cfg, value=0.0)
            self.b_out = _param(rngs, (D,), ("embed",), cfg, value=0.0)

    def _act(self, h):
        a = self.cfg.activation
        if a == "silu":
            return jax.nn.silu(h)
        return jax.nn.gelu(h, approximate=(a == "gelu_tanh"))

    def _mm(self, x, w, b=None):
        """``x @ w (+ b)``: :func:`mixed_matmul` / :func:`mixed_linear` (bias gradient inside the VJP) or plain."""
        if _use_mixed(self.cfg, x.dtype):
            return mixed_matmul(x, w, x.dtype) if b is None else mixed_linear(x, w, b, x.dtype)
        y = x @ w.astype(x.dtype)
        return y if b is None else y + b.astype(x.dtype)

    def _mm_act(self, x, w, b=None):
        """``act(x @ w (+ b))``: with ``mixed_matmul`` the fused :func:`mixed_linear_act` (activation on the
        float32 accumulator), else the plain product and activation."""
        if _use_mixed(self.cfg, x.dtype):
            return mixed_linear_act(x, w, b, x.dtype, self.cfg.activation)
        return self._act(self._mm(x, w, b))

    def __call__(self, x):
        cfg = self.cfg
        bias = (lambda name: getattr(self, name)[...]) if cfg.mlp_bias else (lambda name: None)
        if cfg.arch == "gpt2":
            h = self._mm_act(x, self.w_in[...], bias("b_in"))
        else:
            g = self._mm_act(x, self.w_gate[...], bias("b_gate"))
            u = self._mm(x, self.w_up[...], bias("b_up"))
            h = g * u
        return self._mm(h, self.w_out[...], bias("b_out"))


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.attn_norm = Norm(cfg, rngs)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = Norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, rope, valid_BxS, q_slot_T, kv=None, index=None):
        a, kv = self.attn(self.attn_norm(x), rope, valid_BxS, q_slot_T, kv, index)
        x = x + a
        x = x + self.mlp(self.mlp_norm(x))
        return x, kv


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


class CausalLM(nnx.Module):
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
        self.cfg = cfg
        V, D = cfg.vocab_size, cfg.d_model
        self.embed = _param(rngs, (V, D), ("vocab", "embed"), cfg)
        if cfg.arch == "gpt2":
            self.pos_embed = _param(rngs, (cfg.max_seq_len, D), ("pos", "embed"), cfg, std=0.01)
        self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = Norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.lm_head = _param(rngs, (D, V), ("embed", "vocab"), cfg)

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
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))
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

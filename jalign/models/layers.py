"""The building blocks of :class:`jalign.models.CausalLM` in Flax NNX: norms, rotary embeddings, attention,
MLP and the pre-norm residual block (GPT-2 and Llama/Qwen2 variants).

* Parameters carry logical axis names in their ``axes`` metadata (see :mod:`jalign.models.sharding`) and their
  initialiser in ``init`` metadata (used by :func:`jalign.models.create_model`).
* Weights are stored ``in_features x out_features`` (x @ W).
* With ``cfg.mixed_matmul`` the projections run through the custom-VJP kernels of :mod:`jalign.models.kernels`;
  with ``cfg.attention_vjp`` so does the attention on the training path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jalign.models.config import ModelConfig
from jalign.models.kernels import attention_core, mixed_linear, mixed_linear_act, mixed_matmul

Array = jax.Array


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

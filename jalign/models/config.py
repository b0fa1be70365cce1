"""Model configuration: one frozen dataclass selects the GPT-2 or the Llama/Qwen2 decoder block."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax.numpy as jnp

SUPPORTED_ARCHS = ("gpt2", "llama", "qwen2")
_ACTIVATIONS = ("gelu_tanh", "gelu", "silu")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a decoder-only transformer.

    ``arch="gpt2"``: learned absolute positions, LayerNorm, GELU MLP, biases everywhere, tied embeddings
    (Radford et al. 2019). ``arch="llama"``/``"qwen2"``: rotary positions (Su et al. 2021), RMSNorm, SwiGLU MLP
    (Shazeer 2020), grouped-query attention (Ainslie et al. 2023); Qwen2 adds biases on q/k/v.

    Fields left ``None`` take the architecture's default in ``__post_init__`` (``n_kv_heads = n_heads``,
    ``head_dim = d_model // n_heads``, ``d_ff = 4 d_model`` for GPT-2, etc.).

    ``rope_scaling``: None (plain RoPE) or the Llama 3 frequency rescaling, given as a dict or sorted
    ``(key, value)`` pairs with ``rope_type="llama3"``, ``factor``, ``low_freq_factor``, ``high_freq_factor``,
    ``original_max_position_embeddings`` (stored as a tuple so the config stays hashable).

    ``dtype`` is the activation/compute dtype, ``param_dtype`` the storage dtype of the parameters; logits are
    always float32. ``remat=True`` rematerialises each block in the backward pass (jax.checkpoint).

    ``mixed_matmul=True`` (the default): the dense projections (q/k/v/o, MLP, unembedding) run as
    ``dtype`` x ``dtype`` dots with float32 accumulation (``preferred_element_type=float32``) under a custom VJP
    whose backward dots are also ``dtype`` x ``dtype`` with float32 accumulation and take their transposed
    operand materialised row-major, so that XLA:CPU runs all three dots of every projection on its fast
    library path; weight gradients come back in the parameter dtype. In float32 it is the same function and
    gradient as plain autodiff up to the order of summation; in bf16 it is at least as accurate as the plain
    path (gradients accumulated in float32); the MLP's activation is applied to the float32 accumulator of its
    input projection (:func:`jalign.models.kernels.mixed_linear_act`, one fused elementwise pass in the
    backward). ``mixed_matmul=False`` is plain ``einsum`` + autodiff (see
    :func:`jalign.models.kernels.mixed_matmul` and docs/performance.md for the measured speed-ups).

    ``attention_vjp=True`` (the default): the attention core (scores, masked softmax, weighted values) is
    :func:`jalign.models.kernels.attention_core`, whose custom VJP recomputes the probabilities and uses the
    FlashAttention identity ``rowsum(dP ∘ P) = rowsum(dO ∘ O)`` (Dao et al. 2022) with canonical-layout dots;
    same function and gradient as ``attention_vjp=False`` (plain einsum + softmax + autodiff) up to rounding.
    Decoding with a KV cache always takes the plain path (no gradient is needed there, and it reads the cache
    in place instead of transposing it for every new token).

    ``fused_logps=True`` (the default): the trainer computes response log-probabilities with
    :meth:`jalign.models.CausalLM.sequence_logps` (:func:`jalign.models.kernels.unembed_logps`: the
    unembedding and the log-softmax fused, row-chunked, no ``[B, T, V]`` logits in the step and a custom VJP
    that recomputes each chunk's logits), instead of full logits + :func:`jalign.losses.causal_sequence_logps`.
    Same values and gradients up to rounding; ``False`` restores the logits path.
    """

    arch: str = "gpt2"
    vocab_size: int = 259
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 256
    norm_eps: float | None = None
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None
    qkv_bias: bool | None = None
    attn_out_bias: bool | None = None
    mlp_bias: bool | None = None
    tie_embeddings: bool | None = None
    activation: str | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    mixed_matmul: bool = True
    attention_vjp: bool = True
    fused_logps: bool = True
    init_std: float = 0.02
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None

    def __post_init__(self):
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"ModelConfig.arch={self.arch!r} is not supported; supported: {SUPPORTED_ARCHS}")
        gpt2 = self.arch == "gpt2"
        defaults = {
            "n_kv_heads": self.n_heads,
            "head_dim": self.d_model // max(self.n_heads, 1),
            "d_ff": 4 * self.d_model if gpt2 else int(8 * self.d_model / 3 + 63) // 64 * 64,
            "norm_eps": 1e-5 if gpt2 else 1e-6,
            "qkv_bias": gpt2 or self.arch == "qwen2",
            "attn_out_bias": gpt2,
            "mlp_bias": gpt2,
            "tie_embeddings": gpt2,
            "activation": "gelu_tanh" if gpt2 else "silu",
        }
        for k, v in defaults.items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        for k in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_seq_len"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig.{k} must be a positive int, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if gpt2 and (self.n_kv_heads != self.n_heads or self.head_dim * self.n_heads != self.d_model):
            raise ValueError("ModelConfig: arch='gpt2' needs n_kv_heads == n_heads and head_dim * n_heads == d_model")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"ModelConfig.activation={self.activation!r}; supported: {_ACTIVATIONS}")
        for k in ("remat", "mixed_matmul", "attention_vjp", "fused_logps"):
            if type(getattr(self, k)).__name__ not in ("bool", "bool_"):  # a string "false" would read as True
                raise ValueError(f"ModelConfig.{k} must be a bool, got {getattr(self, k)!r}")
        for k in ("dtype", "param_dtype"):
            if getattr(self, k) not in _DTYPES:
                raise ValueError(f"ModelConfig.{k}={getattr(self, k)!r}; supported: {_DTYPES}")
        if self.rope_scaling is not None:
            rs = dict(self.rope_scaling)
            if rs.get("rope_type", rs.get("type")) != "llama3":
                raise ValueError(f"ModelConfig.rope_scaling={rs}: only rope_type='llama3' is supported")
            need = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            missing = [k for k in need if k not in rs]
            if missing:
                raise ValueError(f"ModelConfig.rope_scaling: missing {missing}")
            if not rs["high_freq_factor"] > rs["low_freq_factor"] > 0 or not rs["factor"] > 0:
                raise ValueError(f"ModelConfig.rope_scaling: need high_freq_factor > low_freq_factor > 0, factor > 0: {rs}")
            kept = {k: rs[k] for k in need}
            kept["rope_type"] = "llama3"
            object.__setattr__(self, "rope_scaling", tuple(sorted(kept.items())))
        if not self.norm_eps > 0 or not self.init_std > 0 or not self.rope_theta > 0:
            raise ValueError("ModelConfig: norm_eps, init_std and rope_theta must be > 0")

    @property
    def uses_rope(self) -> bool:
        return self.arch != "gpt2"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self):
        return jnp.dtype(self.param_dtype)

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def num_params(self) -> int:
        """Parameter count (tied embeddings counted once)."""
        D, H, K, Dh, F, V = (self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff, self.vocab_size)
        attn = D * (H + 2 * K) * Dh + H * Dh * D
        attn += (H + 2 * K) * Dh * bool(self.qkv_bias) + D * bool(self.attn_out_bias)
        mlp = (2 if self.arch == "gpt2" else 3) * D * F + (F + D) * bool(self.mlp_bias)
        norms = (4 if self.arch == "gpt2" else 2) * D
        n = self.n_layers * (attn + mlp + norms) + V * D + (2 if self.arch == "gpt2" else 1) * D
        n += 0 if self.tie_embeddings else V * D
        n += self.max_seq_len * D if self.arch == "gpt2" else 0
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, 6 N_matmul + 12 L T d_attn (forward + backward; Kaplan et al. 2020)."""
        D, H, K, Dh, F, V = (self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff, self.vocab_size)
        n_mat = self.n_layers * (D * (H + 2 * K) * Dh + H * Dh * D + (2 if self.arch == "gpt2" else 3) * D * F)
        n_mat += V * D
        return 6.0 * n_mat + 12.0 * self.n_layers * seq_len * H * Dh

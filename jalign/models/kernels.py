"""Custom-VJP kernels of the transformer: pure JAX functions (arrays in, arrays out), no Flax.

* :func:`mixed_matmul`, :func:`mixed_linear`, :func:`mixed_linear_act`: ``x @ w (+ b)`` (and an activation)
  with ``x.dtype`` operands and float32 accumulation, whose backward keeps the same fast-path form.
* :func:`unembed_logps`: unembedding + log-softmax + label pick, chunked over rows, never materialising the
  ``[N, V]`` logits.
* :func:`attention_core`: masked softmax attention with a FlashAttention-style VJP.
* :func:`transpose_last2`: a transpose materialised row-major, used by all the backward passes above.

The Flax modules that call them are in :mod:`jalign.models.layers`; ``ModelConfig.mixed_matmul`` and
``ModelConfig.attention_vjp`` switch them on (docs/performance.md has the measurements behind each).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


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


def _acc(dtype):
    """Accumulation dtype: float32, or the input dtype if wider."""
    return jnp.promote_types(dtype, jnp.float32)


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

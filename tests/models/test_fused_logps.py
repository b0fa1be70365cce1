"""Fused unembedding log-probabilities (``unembed_logps``, ``CausalLM.sequence_logps``) and ``mixed_linear``.

Values and gradients are checked against the unfused computation (full logits + ``causal_sequence_logps``,
plain autodiff) and against float64 numpy; chunking (including a ragged last chunk), tied embeddings, padding
and bf16 are covered.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign.losses import causal_sequence_logps
from jalign.models import ModelConfig, create_model
from jalign.models.kernels import mixed_linear, unembed_logps


def _np_logps(h, w, labels):
    z = h.astype(np.float64) @ w.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    return z[np.arange(len(labels)), labels] - lse


@pytest.mark.parametrize("chunk", [1, 3, 7, 1024])
def test_unembed_logps_value_and_vjp_match_float64(rng, chunk):
    N, D, V = 7, 5, 11
    h = rng.standard_normal((N, D)).astype(np.float32)
    w = rng.standard_normal((D, V)).astype(np.float32)
    labels = rng.integers(0, V, N)
    g = rng.standard_normal(N).astype(np.float32)
    lp, vjp = jax.vjp(lambda h, w: unembed_logps(h, w, jnp.asarray(labels), chunk), h, w)
    np.testing.assert_allclose(np.asarray(lp), _np_logps(h, w, labels), rtol=1e-5, atol=1e-5)
    dh, dw = vjp(jnp.asarray(g))
    # closed form: d lp_n / d logits_n = onehot(label_n) - softmax_n
    z = h.astype(np.float64) @ w.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    G = g[:, None] * (np.eye(V)[labels] - p)
    np.testing.assert_allclose(np.asarray(dh), G @ w.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), h.T @ G, rtol=1e-4, atol=1e-5)


class UnembedLogpsJitInvarianceTest(chex.TestCase):
    """Jitted and eager calls of ``unembed_logps`` (forward scan and custom VJP) give the float64 closed form."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_and_grad(self):
        rng = np.random.default_rng(5)
        N, D, V = 9, 6, 13  # chunk 4: a ragged last chunk
        h = rng.standard_normal((N, D)).astype(np.float32)
        w = rng.standard_normal((D, V)).astype(np.float32)
        labels, c = rng.integers(0, V, N), rng.standard_normal(N).astype(np.float32)
        f = self.variant(jax.value_and_grad(lambda h, w: jnp.sum(c * unembed_logps(h, w, labels, 4)), (0, 1)))
        val, (dh, dw) = f(jnp.asarray(h), jnp.asarray(w))
        chex.assert_shape([dh, dw], [(N, D), (D, V)])
        z = h.astype(np.float64) @ w.astype(np.float64)
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        G = c[:, None] * (np.eye(V)[labels] - p)  # d(sum c lp)/d logits
        chex.assert_trees_all_close((val, dh, dw), (np.sum(c * _np_logps(h, w, labels)), G @ w.T, h.T @ G),
                                    rtol=1e-4, atol=1e-5)


def test_unembed_logps_grad_matches_autodiff_of_log_softmax(rng):
    N, D, V = 10, 8, 13
    h = jnp.asarray(rng.standard_normal((N, D)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((D, V)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, V, N))
    c = jnp.asarray(rng.standard_normal(N), jnp.float32)

    def ref(h, w):
        lp = jax.nn.log_softmax(h @ w, axis=-1)
        return jnp.sum(c * jnp.take_along_axis(lp, labels[:, None], -1)[:, 0])

    def fused(h, w):
        return jnp.sum(c * unembed_logps(h, w, labels, 4))

    for a, b in zip(jax.grad(fused, (0, 1))(h, w), jax.grad(ref, (0, 1))(h, w), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(fused)(h, w), ref(h, w), rtol=1e-6)


@pytest.mark.parametrize("tie", [False, True])
def test_sequence_logps_equals_logits_path_with_padding(tie):
    cfg = ModelConfig(arch="gpt2", vocab_size=37, d_model=32, n_layers=2, n_heads=2, max_seq_len=16,
                      tie_embeddings=tie, init_std=0.3)
    model = create_model(cfg, seed=1)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 37, (3, 9))
    attn = np.ones((3, 9), np.int32)
    attn[1, :3] = 0  # left padding
    attn[2, -2:] = 0  # right padding
    resp = np.zeros((3, 9), np.int32)
    resp[:, 4:] = 1
    resp *= attn
    from flax import nnx

    gd, params, rest = nnx.split(model, nnx.Param, ...)

    def fused(p):
        return nnx.merge(gd, p, rest).sequence_logps(jnp.asarray(ids), jnp.asarray(resp), jnp.asarray(attn), chunk=5)

    def unfused(p):
        return causal_sequence_logps(nnx.merge(gd, p, rest)(jnp.asarray(ids), jnp.asarray(attn)).logits, ids, resp)

    (lf, nf), (lu, nu) = fused(params), unfused(params)
    chex.assert_shape([lf, nf], (3,))
    np.testing.assert_allclose(lf, lu, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(nf, nu)
    wts = jnp.asarray([0.3, -1.0, 2.0])
    gf = jax.grad(lambda p: jnp.sum(wts * fused(p)[0]))(params)
    gu = jax.grad(lambda p: jnp.sum(wts * unfused(p)[0]))(params)
    chex.assert_trees_all_close(gf, gu, rtol=2e-4, atol=2e-6)


def test_sequence_logps_bf16_close_to_float32_logits_path():
    base = ModelConfig(arch="llama", vocab_size=41, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                       max_seq_len=16, init_std=0.2)
    ids = np.random.default_rng(3).integers(0, 41, (2, 10))
    resp = np.zeros_like(ids)
    resp[:, 3:] = 1
    m16 = create_model(base.replace(dtype="bfloat16"), seed=0)
    m32 = create_model(base, seed=0)
    lf, _ = m16.sequence_logps(ids, resp, chunk=8)
    lu, _ = causal_sequence_logps(m32(ids).logits, ids, resp)
    assert lf.dtype == jnp.float32
    np.testing.assert_allclose(lf, lu, rtol=3e-2, atol=0.15)


def test_sequence_logps_rejects_mismatched_mask():
    model = create_model(ModelConfig(vocab_size=17, d_model=16, n_layers=1, n_heads=1, max_seq_len=8))
    with pytest.raises(ValueError, match="response_mask_BxT"):
        model.sequence_logps(np.zeros((2, 5), np.int32), np.zeros((2, 4), np.int32))


def test_mixed_linear_value_and_vjp_match_float64(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal((2, 3, 5)).astype(np.float32)
    y, vjp = jax.vjp(lambda x, w, b: mixed_linear(x, w, b, jnp.float32), x, w, b)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    np.testing.assert_allclose(y, x64 @ w64 + b, rtol=1e-5, atol=1e-5)
    dx, dw, db = vjp(jnp.asarray(g))
    np.testing.assert_allclose(dx, g64 @ w64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, x64.reshape(-1, 4).T @ g64.reshape(-1, 5), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, g64.sum((0, 1)), rtol=1e-5, atol=1e-5)
    # bf16 activations: bias gradient accumulated in float32 from the bf16 cotangent, returned in b's dtype
    yb, vjpb = jax.vjp(lambda x, b: mixed_linear(x, w, b, jnp.bfloat16), jnp.asarray(x, jnp.bfloat16), b)
    assert yb.dtype == jnp.bfloat16
    _, dbb = vjpb(jnp.asarray(g, jnp.bfloat16))
    assert dbb.dtype == jnp.float32
    np.testing.assert_allclose(dbb, g64.sum((0, 1)), rtol=2e-2, atol=2e-2)


def test_bad_chunk_and_flag_values_are_refused():
    model = create_model(ModelConfig(vocab_size=17, d_model=16, n_layers=1, n_heads=1, max_seq_len=8))
    ids = np.zeros((1, 4), np.int32)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="chunk must be a positive int"):
            model.sequence_logps(ids, np.ones_like(ids), chunk=bad)
    for field in ("fused_logps", "mixed_matmul", "attention_vjp", "remat"):
        with pytest.raises(ValueError, match=f"ModelConfig.{field} must be a bool"):
            ModelConfig(**{field: "false"})
    assert ModelConfig(fused_logps=np.bool_(False)).fused_logps == np.bool_(False)

"""``attention_core`` (FlashAttention-style custom VJP) and ``ModelConfig.attention_vjp``.

The core is checked against autodiff of a plain masked-softmax attention written here (float32, including a
query row with no allowed key) and against finite differences; the model with the flag against the model
without it (float32: same values; bf16: gradients at least as close to the float32 model as the plain path's).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from jalign.models import ModelConfig, create_model
from jalign.models.kernels import attention_core


def _plain_attention(q, k, v, allowed, scale):
    s = jnp.einsum("bkqd,bksd->bkqs", q, k) * scale
    s = jnp.where(allowed, s, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bkqs,bksd->bkqd", jax.nn.softmax(s, axis=-1), v)


def _inputs(rng, B=2, K=2, Q=6, S=5, D=4):
    q, k, v = (jnp.asarray(rng.standard_normal(sh), jnp.float32) for sh in [(B, K, Q, D), (B, K, S, D), (B, K, S, D)])
    allowed = rng.random((B, 1, Q, S)) < 0.7
    allowed[0, 0, 2] = False  # a query with no allowed key: uniform attention, as softmax of equal scores
    return q, k, v, jnp.asarray(allowed)


def test_attention_core_matches_plain_autodiff(rng):
    q, k, v, allowed = _inputs(rng)
    scale = 0.37
    o = jax.jit(attention_core, static_argnums=4)(q, k, v, allowed, scale)
    np.testing.assert_allclose(np.asarray(o), np.asarray(_plain_attention(q, k, v, allowed, scale)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(o[0, :, 2]), np.asarray(v[0].mean(axis=1)), rtol=1e-5, atol=1e-6)
    w = jnp.asarray(rng.standard_normal(o.shape), jnp.float32)
    g_new = jax.grad(lambda *a: jnp.sum(attention_core(*a, allowed, scale) * w), argnums=(0, 1, 2))(q, k, v)
    g_old = jax.grad(lambda *a: jnp.sum(_plain_attention(*a, allowed, scale) * w), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_new, g_old, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_attention_core_finite_differences(rng):
    q, k, v, allowed = _inputs(rng, B=1, K=1, Q=3, S=3, D=2)
    with jax.enable_x64():
        q, k, v = (x.astype(jnp.float64) for x in (q, k, v))
        check_grads(lambda q, k, v: attention_core(q, k, v, allowed, 0.5), (q, k, v), order=1, modes=["rev"],
                    atol=1e-5, rtol=1e-5)


def _grads(cfg, ids, mask):
    gd, p = nnx.split(create_model(cfg, seed=2), nnx.Param)

    def loss(p):
        lg = nnx.merge(gd, p)(ids, mask).logits
        return (jax.nn.log_softmax(lg, -1)[..., 5] * mask).sum(), lg

    (_, lg), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
    return np.asarray(lg), np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])


@pytest.mark.parametrize("arch", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_attention_vjp_model_matches_plain(arch, rng):
    kw = {"n_kv_heads": 2} if arch == "llama" else {}
    base = ModelConfig(arch=arch, vocab_size=97, d_model=64, n_layers=2, n_heads=4, max_seq_len=16, init_std=0.2,
                       attention_vjp=False, **kw)
    ids = jnp.asarray(rng.integers(0, 97, (2, 16)), jnp.int32)
    mask = jnp.asarray([[0] * 3 + [1] * 13, [1] * 16], jnp.int32)  # left padding in row 0
    lg32, g32 = _grads(base, ids, mask)
    lg32v, g32v = _grads(base.replace(attention_vjp=True), ids, mask)
    err = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    np.testing.assert_allclose(lg32v, lg32, rtol=1e-5, atol=1e-5)
    assert err(g32v, g32) < 1e-5  # float32: the same gradient up to summation order
    _, gb = _grads(base.replace(dtype="bfloat16"), ids, mask)
    _, gbv = _grads(base.replace(dtype="bfloat16", attention_vjp=True), ids, mask)
    assert err(gbv, g32) < 5e-2
    assert err(gbv, g32) <= 1.5 * err(gb, g32) + 1e-3

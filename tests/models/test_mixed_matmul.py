"""``ModelConfig.mixed_matmul``: bf16 dots with float32 accumulation under a custom VJP.

Checked against plain numpy in float64 on bf16-rounded operands (the custom forward and backward), and, for the
whole model, logits and gradients against the float32 model and the plain (einsum + autodiff) bf16 path; the
compiled backward keeps bf16 operands in every dot on XLA:CPU. ``mixed_matmul=True`` is the default.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.models import ModelConfig, create_model
from jalign.models.kernels import mixed_matmul, transpose_last2
from tests.models.helpers import bf, dot_operand_types


def test_mixed_matmul_forward_and_vjp_match_numpy(rng):
    x = jnp.asarray(rng.standard_normal((3, 5, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)  # f32 master weight, cast inside
    g = jnp.asarray(rng.standard_normal((3, 5, 8)), jnp.float32)
    y, vjp = jax.vjp(lambda x, w: mixed_matmul(x, w, jnp.float32), x, w)
    xn, wn, gn = bf(x), bf(w), bf(g)
    np.testing.assert_allclose(np.asarray(y), xn @ wn, rtol=1e-5, atol=1e-5)  # f32 accumulation of exact products
    dx, dw = vjp(g)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    np.testing.assert_allclose(bf(dx), bf(gn @ wn.T), rtol=1e-2, atol=1e-2)  # result rounded to bf16 once
    np.testing.assert_allclose(np.asarray(dw), xn.reshape(-1, 16).T @ gn.reshape(-1, 8), rtol=1e-5, atol=1e-5)
    # bf16 output: the forward is the f32 result rounded once
    yb = mixed_matmul(x, w, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(yb), np.asarray(y.astype(jnp.bfloat16)))


def _loss_and_grads(cfg, ids):
    model = create_model(cfg, seed=3)
    gd, params = nnx.split(model, nnx.Param)

    def loss(p):
        logits = nnx.merge(gd, p)(ids).logits
        lp = jax.nn.log_softmax(logits[:, :-1], -1)
        return -jnp.take_along_axis(lp, ids[:, 1:, None], -1).mean(), logits

    (l, logits), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return float(l), np.asarray(logits), np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])


@pytest.mark.parametrize("arch", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_mixed_path_matches_reference(arch, rng):
    assert ModelConfig().mixed_matmul  # the default
    base = ModelConfig(arch=arch, vocab_size=97, d_model=64, n_layers=2, n_heads=4, max_seq_len=16,
                       init_std=0.2, mixed_matmul=False)  # plain einsum + autodiff
    ids = jnp.asarray(rng.integers(0, 97, (2, 16)), jnp.int32)
    l32, lg32, g32 = _loss_and_grads(base, ids)
    lb, lgb, gb = _loss_and_grads(base.replace(dtype="bfloat16"), ids)
    lm, lgm, gm = _loss_and_grads(base.replace(dtype="bfloat16", mixed_matmul=True), ids)
    # float32: the same function and its exact gradient, up to the order of summation
    l32m, lg32m, g32m = _loss_and_grads(base.replace(mixed_matmul=True), ids)
    np.testing.assert_allclose(lg32m, lg32, rtol=1e-5, atol=1e-6)
    # (atol relative to the gradient's scale: near-cancelling entries carry summation-order error of that size)
    np.testing.assert_allclose(g32m, g32, rtol=1e-4, atol=1e-5 * float(np.abs(g32).max()))
    # bf16 paths against the float32 model: the mixed path is at least as accurate as the plain bf16 path
    err = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert err(lgm, lg32) < 2e-2 and err(gm, g32) < 5e-2
    assert err(lgm, lg32) <= 1.5 * err(lgb, lg32) + 1e-3
    assert err(gm, g32) <= 1.5 * err(gb, g32) + 1e-3
    assert abs(lm - l32) < 2e-2 * abs(l32)


def test_transpose_last2_is_swapaxes(rng):
    for shape in [(5, 3), (2, 4, 6), (2, 3, 4, 5)]:
        x = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
        np.testing.assert_array_equal(np.asarray(jax.jit(transpose_last2)(x)), np.asarray(jnp.swapaxes(x, -1, -2)))



@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU layout/up-cast behaviour")
def test_mixed_matmul_backward_dots_stay_bf16_on_cpu(rng):
    """All three dots (forward, dx, dw) keep bf16 operands: none is up-cast to a float32 dot by XLA:CPU (which is
    what plain ``g @ w.T`` / ``x.T @ g`` get, several times slower)."""
    x = jnp.asarray(rng.standard_normal((64, 32)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((32, 48)), jnp.float32)

    def loss(x, w):
        return jnp.sum(mixed_matmul(x, w, jnp.float32) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    types = dot_operand_types(hlo)
    assert len(types) == 3, types
    assert all(t == ("bf16", "bf16") for t in types), types
    # the same backward by plain autodiff is up-cast (documents why the custom VJP exists)
    def plain(x, w):
        return jnp.sum(jnp.dot(x, w.astype(x.dtype), preferred_element_type=jnp.float32) ** 2)

    plain_types = dot_operand_types(jax.jit(jax.grad(plain, argnums=(0, 1))).lower(x, w).compile().as_text())
    assert any(t != ("bf16", "bf16") for t in plain_types), plain_types

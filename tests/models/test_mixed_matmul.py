"""``ModelConfig.mixed_matmul``: bf16 dots with float32 accumulation under a custom VJP.

Checked against plain numpy in float64 on bf16-rounded operands (the custom forward and backward), and, for the
whole model, logits and gradients against the float32 model and the default bf16 path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.models import ModelConfig, create_model
from jalign.models.transformer import mixed_matmul


def _bf(a):
    """Round to bfloat16 and return float64 numpy."""
    return np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)


def test_mixed_matmul_forward_and_vjp_match_numpy(rng):
    x = jnp.asarray(rng.standard_normal((3, 5, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)  # f32 master weight, cast inside
    g = jnp.asarray(rng.standard_normal((3, 5, 8)), jnp.float32)
    y, vjp = jax.vjp(lambda x, w: mixed_matmul(x, w, jnp.float32), x, w)
    xn, wn, gn = _bf(x), _bf(w), _bf(g)
    np.testing.assert_allclose(np.asarray(y), xn @ wn, rtol=1e-5, atol=1e-5)  # f32 accumulation of exact products
    dx, dw = vjp(g)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    np.testing.assert_allclose(_bf(dx), _bf(gn @ wn.T), rtol=1e-2, atol=1e-2)  # result rounded to bf16 once
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
    base = ModelConfig(arch=arch, vocab_size=97, d_model=64, n_layers=2, n_heads=4, max_seq_len=16,
                       init_std=0.2)
    ids = jnp.asarray(rng.integers(0, 97, (2, 16)), jnp.int32)
    l32, lg32, g32 = _loss_and_grads(base, ids)
    lb, lgb, gb = _loss_and_grads(base.replace(dtype="bfloat16"), ids)
    lm, lgm, gm = _loss_and_grads(base.replace(dtype="bfloat16", mixed_matmul=True), ids)
    # float32: the flag is inert, bit for bit
    l32m, lg32m, g32m = _loss_and_grads(base.replace(mixed_matmul=True), ids)
    np.testing.assert_array_equal(lg32, lg32m)
    np.testing.assert_array_equal(g32, g32m)
    # bf16 paths against the float32 model: the mixed path is at least as accurate as the default bf16 path
    err = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert err(lgm, lg32) < 2e-2 and err(gm, g32) < 5e-2
    assert err(lgm, lg32) <= 1.5 * err(lgb, lg32) + 1e-3
    assert err(gm, g32) <= 1.5 * err(gb, g32) + 1e-3
    assert abs(lm - l32) < 2e-2 * abs(l32)

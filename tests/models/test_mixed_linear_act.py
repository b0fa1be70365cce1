"""``mixed_linear_act``: ``act(x @ w + b)`` with the activation on the float32 accumulator and a fused VJP.

Float32 inputs: value and all three gradients against autodiff of the exact function in float64. bf16 inputs:
against float64 on the bf16-rounded operands (the forward rounds once, the backward's cotangent once per dot).
The whole model's mixed path (which uses it in every MLP) is compared with the plain path in
tests/models/test_mixed_matmul.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign.models.kernels import ACTIVATIONS, mixed_linear_act
from tests.models.helpers import bf, dot_operand_types


def _exact(x, w, b, g, activation):
    """Value and (dx, dw, db) of sum(g · act(x @ w + b)) by float64 autodiff."""
    with jax.enable_x64():
        act = ACTIVATIONS[activation]
        args = [jnp.asarray(a, jnp.float64) for a in (x, w, b)]

        def f(x, w, b):
            return act(jnp.einsum("nk,km->nm", x, w) + b)

        y, vjp = jax.vjp(f, *args)
        return np.asarray(y), [np.asarray(d) for d in vjp(jnp.asarray(g, jnp.float64))]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_float32_matches_float64_autodiff(activation, bias, rng):
    x = rng.standard_normal((24, 16)).astype(np.float32)
    w = (rng.standard_normal((16, 12)) / 4).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32) if bias else np.zeros(12, np.float32)
    g = rng.standard_normal((24, 12)).astype(np.float32)
    fn = lambda x, w, b: mixed_linear_act(x, w, b if bias else None, jnp.float32, activation)  # noqa: E731
    y, vjp = jax.vjp(fn, *map(jnp.asarray, (x, w, b)))
    dx, dw, db = vjp(jnp.asarray(g))
    y64, (dx64, dw64, db64) = _exact(x, w, b, g, activation)
    np.testing.assert_allclose(np.asarray(y), y64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dx), dx64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), dw64, rtol=1e-4, atol=1e-5)
    if bias:
        np.testing.assert_allclose(np.asarray(db), db64, rtol=1e-4, atol=1e-5)
    else:
        assert float(jnp.abs(db).max()) == 0.0  # b unused: zero cotangent
    # jit and eager agree (to an ulp: the fused tanh/erf approximations may differ in the last bit)
    y_jit = jax.jit(fn)(*map(jnp.asarray, (x, w, b)))
    np.testing.assert_allclose(np.asarray(y_jit), np.asarray(y), rtol=4e-7, atol=2e-7)


@pytest.mark.parametrize("activation", ["gelu_tanh", "silu"])
def test_bfloat16_rounds_once_per_output(activation, rng):
    x = jnp.asarray(rng.standard_normal((2, 16, 32)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((32, 24)) / 6, jnp.float32)  # float32 master weight, cast inside
    b = jnp.asarray(rng.standard_normal(24), jnp.float32)
    g = jnp.asarray(rng.standard_normal((2, 16, 24)), jnp.bfloat16)
    y, vjp = jax.vjp(lambda x, w, b: mixed_linear_act(x, w, b, jnp.bfloat16, activation), x, w, b)
    dx, dw, db = vjp(g)
    assert (y.dtype, dx.dtype, dw.dtype, db.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32, jnp.float32)
    xn, wn, bn, gn = bf(x).reshape(-1, 32), bf(w), np.asarray(b, np.float64), bf(g).reshape(-1, 24)
    y64, (dx64, dw64, db64) = _exact(xn, wn, bn, gn, activation)
    # forward: the activation of the float32 accumulator, rounded to bf16 once (half an ulp: 2^-9 relative)
    np.testing.assert_allclose(bf(y).reshape(-1, 24), y64, rtol=2 ** -8, atol=1e-6)
    # backward: g · act'(y) is rounded to bf16 before the dots (the fast path), y kept in bf16
    err = lambda a, ref: np.linalg.norm(a - ref) / np.linalg.norm(ref)  # noqa: E731
    assert err(np.asarray(dw, np.float64), dw64) < 1e-2
    assert err(np.asarray(db, np.float64), db64) < 1e-2
    assert err(bf(dx).reshape(-1, 32), dx64) < 1e-2


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU layout/up-cast behaviour")
def test_bf16_backward_dots_stay_bf16_on_cpu(rng):
    x = jnp.asarray(rng.standard_normal((64, 32)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((32, 48)), jnp.float32)
    b = jnp.zeros(48, jnp.float32)

    def loss(x, w, b):
        return jnp.sum(mixed_linear_act(x, w, b, jnp.bfloat16, "gelu_tanh").astype(jnp.float32) ** 2)

    types = dot_operand_types(jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, w, b).compile().as_text())
    assert len(types) == 4, types  # forward, dx, dw, and db as a ones-row dot
    # the three matmuls keep bf16 operands (the ones-row dot's operand type is XLA's choice, as for mixed_linear)
    assert sum(t == ("bf16", "bf16") for t in types) >= 3, types


def test_unknown_activation_is_refused(rng):
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="activation must be one of"):
        mixed_linear_act(x, jnp.ones((3, 4)), None, jnp.float32, "relu")

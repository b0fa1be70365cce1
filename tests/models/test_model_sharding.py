"""Sharding rules and sharded == unsharded forward passes on the 8 simulated CPU devices."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jalign.models import (
    ModelConfig,
    batch_sharding,
    create_model,
    forward,
    load_pretrained,
    logical_to_spec,
    make_mesh,
    param_specs,
    sample,
    shard_model,
    token_logprobs,
)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def mesh222():
    return make_mesh((2, 2, 2))


def test_rule_table(mesh222):
    assert logical_to_spec(("embed", "mlp"), (32, 48), mesh222) == P("fsdp", "tensor")
    assert logical_to_spec(("vocab", "embed"), (37, 32), mesh222) == P(None, "fsdp")  # 37 not divisible by 2
    assert logical_to_spec(("embed", "heads", "head_dim"), (32, 4, 8), mesh222) == P("fsdp", "tensor", None)
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (32, 1, 8), mesh222) == P("fsdp", None, None)
    rules = (("a", "tensor"), ("b", "tensor"))
    assert logical_to_spec(("a", "b"), (4, 4), mesh222, rules) == P("tensor", None)  # a mesh axis used once
    assert logical_to_spec(("batch", None), (8, 3), mesh222) == P(("data", "fsdp"), None)
    assert logical_to_spec(("embed",), (32,), make_mesh((8,), ("data",))) == P(None)  # axis absent
    with pytest.raises(KeyError, match="logical axis 'foo' has no sharding rule"):
        logical_to_spec(("foo",), (4,), mesh222)


def test_all_params_have_logical_axes():
    m = create_model(ModelConfig(arch="qwen2", vocab_size=38, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2,
                                 d_ff=48))
    for path, v in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        assert len(v.get_metadata()["axes"]) == v.ndim, path


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sharded_logits_and_grads_equal_unsharded(arch, mesh222, rng):
    cfg = ModelConfig(arch=arch, vocab_size=38, d_model=32, n_layers=2, n_heads=4,
                      n_kv_heads=None if arch == "gpt2" else 2, d_ff=48, init_std=0.2, max_seq_len=16)
    model = create_model(cfg, seed=1)
    ids = jnp.asarray(rng.integers(0, 38, size=(8, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] >= rng.integers(0, 4, size=(8, 1)), jnp.int32)  # left padding
    ref = np.asarray(forward(model, ids, mask).logits)

    sharded = shard_model(model, mesh222)
    specs = param_specs(sharded, mesh222)
    assert sharded.layers[0].mlp.w_out[...].sharding.spec == P("tensor", "fsdp")
    assert specs["embed"] == P("tensor", "fsdp")
    assert any(len(s.device_set) == 8 and not s.is_fully_replicated
               for s in (v.sharding for v in jax.tree.leaves(nnx.state(sharded))))
    bs = batch_sharding(mesh222)
    out = forward(sharded, jax.device_put(ids, bs), jax.device_put(mask, bs)).logits
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5, rtol=1e-5)
    if arch == "gpt2":
        return  # gradients once (compiling the sharded backward is the slow part)

    def loss(m, ids, mask):
        return -jnp.sum(token_logprobs(m(ids, mask).logits, ids) * mask)

    g = nnx.jit(nnx.grad(loss))
    g_ref, g_sh = g(model, ids, mask), g(sharded, jax.device_put(ids, bs), jax.device_put(mask, bs))
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_sh), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5, rtol=1e-4)


def test_load_pretrained_onto_mesh(mesh222):
    ref = np.load(GOLDEN / "llama" / "ref.npz")
    m = load_pretrained(GOLDEN / "llama", mesh=mesh222)
    assert m.layers[0].attn.wq[...].sharding.spec == P("fsdp", "tensor", None)
    out = forward(m, jnp.asarray(ref["ids"]), jnp.ones(ref["ids"].shape, jnp.int32))
    np.testing.assert_allclose(np.asarray(out.logits), ref["logits"], atol=2e-5, rtol=1e-5)


def test_sampling_on_a_sharded_model(mesh222, rng):
    """Greedy decoding with parameters sharded over (data, fsdp, tensor) gives the unsharded tokens."""
    cfg = ModelConfig(arch="llama", vocab_size=38, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                      init_std=0.2)
    model = create_model(cfg, seed=2)
    prompt = rng.integers(0, 38, size=(8, 5)).astype(np.int32)
    mask = (np.arange(5)[None] >= rng.integers(0, 3, size=(8, 1))).astype(np.int32)
    ref = sample(model, prompt, mask, key=jax.random.key(0), max_new_tokens=4, greedy=True)
    out = sample(shard_model(model, mesh222), prompt, mask, key=jax.random.key(0), max_new_tokens=4, greedy=True)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.model_logprobs, ref.model_logprobs, atol=2e-5)

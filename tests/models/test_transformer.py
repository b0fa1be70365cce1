"""The NNX transformer: padding invariance, masking, id checks, dtypes, remat, parameter counts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.models import ModelConfig, create_model, forward, token_logprobs

CFGS = {
    "gpt2": ModelConfig(arch="gpt2", vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_seq_len=16, init_std=0.2),
    "llama": ModelConfig(arch="llama", vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                         init_std=0.2),
    "qwen2": ModelConfig(arch="qwen2", vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=48,
                         init_std=0.2, tie_embeddings=True),
}


def _ids(rng, B=2, T=9, V=37):
    return jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32)


@pytest.mark.parametrize("arch", list(CFGS))
def test_left_and_right_padding_match_unpadded(arch, rng):
    """Real-token logits of a padded row equal those of the unpadded sequence (padding ids are garbage)."""
    model = create_model(CFGS[arch], seed=1)
    x = _ids(rng)
    ones = jnp.ones_like(x)
    full = np.asarray(forward(model, x, ones).logits)
    junk = _ids(rng)
    left = jnp.concatenate([junk[0, :4], x[0, :5]])  # 4 pads then 5 real
    right = jnp.concatenate([x[1, :6], junk[1, :3]])  # 6 real then 3 pads
    mask = jnp.array([[0] * 4 + [1] * 5, [1] * 6 + [0] * 3])
    out = np.asarray(forward(model, jnp.stack([left, right]), mask).logits)
    assert np.abs(full).max() > 0.5
    np.testing.assert_allclose(out[0, 4:], full[0, :5], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out[1, :6], full[1, :6], atol=1e-5, rtol=1e-5)
    # Causality: changing a later token does not change earlier logits.
    x2 = x.at[:, 6].set((x[:, 6] + 1) % 37)
    np.testing.assert_allclose(np.asarray(forward(model, x2, ones).logits)[:, :6], full[:, :6], atol=1e-6)


def test_hidden_states_are_unembedding_input(rng):
    for arch in ("gpt2", "llama"):
        model = create_model(CFGS[arch], seed=2)
        x = _ids(rng)
        out = forward(model, x, jnp.ones_like(x), return_hidden=True)
        chex.assert_shape([out.logits, out.hidden_states], [(2, 9, 37), (2, 9, 32)])
        W = model.embed[...] if model.cfg.tie_embeddings else model.lm_head[...].T
        np.testing.assert_allclose(out.logits, np.einsum("btd,vd->btv", out.hidden_states, W), atol=1e-4)


def test_token_ids_out_of_range(rng):
    model = create_model(CFGS["llama"], seed=0)
    with pytest.raises(ValueError, match=r"token id 37 at index \(0, 1\) is outside \[0, 37\)"):
        model(jnp.array([[1, 37, 2]]))
    with pytest.raises(ValueError, match="token id -1"):
        forward(model, jnp.array([[1, 2], [-1, 3]]))
    # Under jit the check cannot run; the offending row becomes NaN instead of a silent wrong embedding.
    f = nnx.jit(lambda m, ids: m(ids).logits)
    out = np.asarray(f(model, jnp.array([[1, 2, 3], [4, -1, 5]])))
    assert np.isfinite(out[0]).all() and np.isnan(out[1, 1:]).all()


def test_gpt2_positions_beyond_table():
    model = create_model(CFGS["gpt2"])
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(jnp.zeros((1, 17), jnp.int32))


def test_bad_config():
    with pytest.raises(ValueError, match="supported: \\('gpt2', 'llama', 'qwen2'\\)"):
        ModelConfig(arch="mamba")
    with pytest.raises(ValueError, match="n_heads=4 must be a multiple of n_kv_heads=3"):
        ModelConfig(arch="llama", n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="d_model must be a positive int"):
        ModelConfig(d_model=0)
    with pytest.raises(ValueError, match="dtype"):
        ModelConfig(dtype="float8")


@pytest.mark.parametrize("arch", list(CFGS))
def test_num_params(arch):
    model = create_model(CFGS[arch].replace(tie_embeddings=arch != "llama"))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == model.cfg.num_params()


def _loss(model, x):
    return -jnp.mean(token_logprobs(model(x).logits, x)[:, 1:])


def test_remat_same_loss_and_grads(rng):
    x = _ids(rng)
    cfg = CFGS["llama"].replace(n_layers=1)
    m1, m2 = create_model(cfg, seed=4), create_model(cfg.replace(remat=True), seed=4)
    for m, want in ((m1, False), (m2, True)):
        gd, st = nnx.split(m)
        jaxpr = str(jax.make_jaxpr(lambda st, gd=gd: _loss(nnx.merge(gd, st), x))(st))
        assert ("checkpoint" in jaxpr or "remat" in jaxpr) == want
    g = nnx.jit(nnx.value_and_grad(_loss))
    (l1, g1), (l2, g2) = g(m1, x), g(m2, x)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bfloat16_params_and_activations(rng):
    x = _ids(rng)
    m32 = create_model(CFGS["gpt2"], seed=5)
    m16 = create_model(CFGS["gpt2"].replace(dtype="bfloat16", param_dtype="bfloat16"), seed=5)
    assert {v.dtype for v in jax.tree.leaves(nnx.state(m16, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    l32, l16 = forward(m32, x).logits, forward(m16, x).logits
    assert l16.dtype == jnp.float32
    p32, p16 = jax.nn.softmax(l32), jax.nn.softmax(l16)
    assert float(jnp.abs(p32 - p16).max()) < 0.05


def test_token_logprobs_closed_form(rng):
    logits = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 5, size=(2, 4)))
    lp = np.asarray(token_logprobs(logits, ids))
    L = np.asarray(logits, np.float64)
    for b in range(2):
        assert lp[b, 0] == 0.0
        for t in range(1, 4):
            want = L[b, t - 1, ids[b, t]] - np.log(np.exp(L[b, t - 1]).sum())
            np.testing.assert_allclose(lp[b, t], want, rtol=1e-5)


def test_attention_against_numpy_reference(rng):
    """One Llama layer (GQA + RoPE + RMSNorm + SwiGLU) recomputed in plain numpy from the parameters."""
    cfg = ModelConfig(arch="llama", vocab_size=11, d_model=8, n_layers=1, n_heads=4, n_kv_heads=2, d_ff=12,
                      init_std=0.3, tie_embeddings=True, rope_theta=100.0)
    m = create_model(cfg, seed=6)
    x = jnp.asarray(rng.integers(0, 11, size=(1, 5)))
    got = np.asarray(forward(m, x, jnp.ones_like(x)).logits)[0]
    P = {".".join(map(str, k)): np.asarray(v.get_value(), np.float64) for k, v in nnx.to_flat_state(nnx.state(m))}

    def rms(h, w):
        return w * h / np.sqrt((h * h).mean(-1, keepdims=True) + cfg.norm_eps)

    def rope(v, pos):  # v [T, H, Dh], rotate_half layout
        half = v.shape[-1] // 2
        f = 100.0 ** (-np.arange(half) * 2 / v.shape[-1])
        a = pos[:, None, None] * f
        v1, v2 = v[..., :half], v[..., half:]
        return np.concatenate([v1 * np.cos(a) - v2 * np.sin(a), v2 * np.cos(a) + v1 * np.sin(a)], -1)

    h = P["embed"][np.asarray(x[0])]
    pos = np.arange(5.0)
    a = rms(h, P["layers.0.attn_norm.scale"])
    q = rope(np.einsum("td,dhk->thk", a, P["layers.0.attn.wq"]), pos)
    k = rope(np.einsum("td,dhk->thk", a, P["layers.0.attn.wk"]), pos)
    v = np.einsum("td,dhk->thk", a, P["layers.0.attn.wv"])
    o = np.zeros_like(q)
    for head in range(4):
        kv = head // 2  # query heads 0,1 share kv head 0; 2,3 share kv head 1
        s = q[:, head] @ k[:, kv].T / np.sqrt(2)
        s = np.where(np.tril(np.ones((5, 5))) > 0, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        o[:, head] = (p / p.sum(-1, keepdims=True)) @ v[:, kv]
    h = h + np.einsum("thk,hkd->td", o, P["layers.0.attn.wo"])
    a = rms(h, P["layers.0.mlp_norm.scale"])
    g, u = a @ P["layers.0.mlp.w_gate"], a @ P["layers.0.mlp.w_up"]
    h = h + (g / (1 + np.exp(-g)) * u) @ P["layers.0.mlp.w_out"]
    want = rms(h, P["final_norm.scale"]) @ P["embed"].T
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

"""Token-level attribution: JVP shares and the closed-form unembedding Gram vs per-token autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jalign import diagnostics as dg


def _take(tree, i, f=lambda x: x):
    """Example i of a batched pytree."""
    return jax.tree.map(lambda x: f(x[i]), tree)


def test_token_attribution_equals_per_token_gradients(tiny_lm, pairs, key):
    params = tiny_lm.init(key)
    chosen, rejected = pairs
    attr = dg.token_attribution(tiny_lm.token_logps, params, chosen, rejected, batch_size=4)
    st = dg.pairwise_gradient_stats(tiny_lm.logp, params, chosen, rejected)
    jac = jax.jit(lambda p, ex: jax.jacrev(tiny_lm.token_logps)(p, ex))
    for i in range(3):
        ci, ri = _take(chosen, i), _take(rejected, i)
        T = ci["tokens"].shape[0]
        flat = lambda J, T=T: np.concatenate([np.asarray(x, np.float64).reshape(T, -1) for x in jax.tree.leaves(J)], 1)
        Jw, Jl = flat(jac(params, ci)), flat(jac(params, ri))
        gw, gl = Jw.sum(0), Jl.sum(0)
        np.testing.assert_allclose(attr["chosen_x_rejected"][i], Jw @ gl, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(attr["chosen_x_chosen"][i], Jw @ gw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(attr["rejected_x_chosen"][i], Jl @ gw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(attr["rejected_x_rejected"][i], Jl @ gl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attr["chosen_x_rejected"].sum(-1), st.inner, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attr["rejected_x_chosen"].sum(-1), st.inner, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attr["chosen_x_chosen"].sum(-1), st.chosen_sq_norm, rtol=1e-4)
    np.testing.assert_allclose(attr["rejected_token_logps"].sum(-1), st.rejected_logps, rtol=1e-5)
    a, b = -jnp.linspace(0.1, 0.7, 7), jnp.linspace(0.2, 0.5, 7)
    tw, tl = dg.predicted_token_changes(attr, a, b, 0.01)
    sw, sl = dg.predicted_logp_changes(st, a, b, 0.01)
    np.testing.assert_allclose(tw.sum(-1), sw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tl.sum(-1), sl, rtol=1e-4, atol=1e-6)


def test_unembedding_gram_closed_form_equals_autodiff(tiny_lm, pairs, key):
    """TinyLM's logits = hidden·out + ob: Gram of per-token gradients w.r.t. (out, ob) in closed form."""
    params = tiny_lm.init(key)
    chosen, rejected = pairs
    rejected = jax.tree.map(lambda x: x[:, :6], rejected)  # T' = 6 ≠ T = 8
    vh = jax.vmap(tiny_lm.hidden, in_axes=(None, 0))
    vl = jax.vmap(tiny_lm.logits, in_axes=(None, 0))
    args = []
    for ex in (chosen, rejected):
        args += [vh(params, ex), vl(params, ex), ex["tokens"], ex["mask"]]
    G = dg.unembedding_token_gram(*args)
    Gb = dg.unembedding_token_gram(*args, bias=True)

    def head_token_logps(head, ex):
        return tiny_lm.token_logps({**params, "out": head["out"], "ob": head["ob"]}, ex)

    head = {"out": params["out"], "ob": params["ob"]}
    jac = jax.jit(jax.jacrev(head_token_logps))
    for i in range(3):
        ci, ri = _take(chosen, i), _take(rejected, i)
        Jw, Jl = jac(head, ci), jac(head, ri)
        w_out = np.asarray(Jw["out"], np.float64).reshape(8, -1)
        l_out = np.asarray(Jl["out"], np.float64).reshape(6, -1)
        w_b, l_b = np.asarray(Jw["ob"], np.float64), np.asarray(Jl["ob"], np.float64)
        assert G[i].shape == (8, 6)
        np.testing.assert_allclose(G[i], w_out @ l_out.T, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(Gb[i], w_out @ l_out.T + w_b @ l_b.T, rtol=1e-4, atol=1e-6)


def test_token_attribution_on_a_causal_lm_with_custom_vjp_layers(key):
    """The transformer's default layers (mixed_matmul, attention_vjp) are custom VJPs without a JVP rule: the
    attribution must still equal per-token autodiff (reverse-over-reverse, not jax.linearize)."""
    from flax import nnx

    from jalign.models import ModelConfig, create_model

    cfg = ModelConfig(arch="gpt2", vocab_size=32, d_model=16, n_layers=1, n_heads=2, max_seq_len=16)
    assert cfg.mixed_matmul and cfg.attention_vjp
    model = create_model(cfg, 0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = np.random.default_rng(0)

    def token_logps(p, ex):
        logits = nnx.merge(graphdef, p, rest)(ex["ids"][None], ex["attn"][None])
        logits = getattr(logits, "logits", logits)[0].astype(jnp.float32)
        lp = jax.nn.log_softmax(logits[:-1])
        return jnp.take_along_axis(lp, ex["ids"][1:, None], -1)[:, 0] * ex["mask"][1:]

    def batch():
        ids = jnp.asarray(rng.integers(0, 32, (3, 10)), jnp.int32)
        mask = jnp.asarray(np.r_[[0] * 4, [1] * 6][None].repeat(3, 0), jnp.float32)
        return {"ids": ids, "attn": jnp.ones((3, 10), jnp.int32), "mask": mask}

    chosen, rejected = batch(), batch()
    attr = dg.token_attribution(token_logps, params, chosen, rejected)
    jac = jax.jit(jax.jacrev(token_logps))
    for i in range(3):
        ci, ri = _take(chosen, i), _take(rejected, i)
        flat = lambda J: np.concatenate([np.asarray(x, np.float64).reshape(9, -1) for x in jax.tree.leaves(J)], 1)
        Jw, Jl = flat(jac(params, ci)), flat(jac(params, ri))
        np.testing.assert_allclose(attr["chosen_x_rejected"][i], Jw @ Jl.sum(0), rtol=2e-4, atol=1e-5)
        np.testing.assert_allclose(attr["rejected_x_rejected"][i], Jl @ Jl.sum(0), rtol=2e-4, atol=1e-5)

"""Gradient-entanglement diagnostics: statistics vs brute force, loss weights, predictions, mitigations."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jalign import diagnostics as dg
from jalign import losses
from jalign.diagnostics import toy


def _take(tree, i, f=lambda x: x):
    """Example i of a batched pytree."""
    return jax.tree.map(lambda x: f(x[i]), tree)


def _brute(model, params, chosen, rejected):
    """Per-example jax.grad in a Python loop, flattened, inner products in numpy float64."""
    B = chosen["tokens"].shape[0]
    out = {k: np.zeros(B) for k in ("inner", "chosen_sq_norm", "rejected_sq_norm", "cosine")}
    g = jax.jit(jax.grad(model.logp))
    for i in range(B):
        gw = np.asarray(ravel_pytree(g(params, _take(chosen, i)))[0], np.float64)
        gl = np.asarray(ravel_pytree(g(params, _take(rejected, i)))[0], np.float64)
        out["inner"][i] = gw @ gl
        out["chosen_sq_norm"][i] = gw @ gw
        out["rejected_sq_norm"][i] = gl @ gl
        out["cosine"][i] = gw @ gl / np.linalg.norm(gw) / np.linalg.norm(gl)
    return out


@pytest.mark.parametrize("batch_size", [None, 3])
def test_stats_match_brute_force_per_example_autodiff(tiny_lm, pairs, key, batch_size):
    params = tiny_lm.init(key)
    chosen, rejected = pairs
    st = dg.pairwise_gradient_stats(tiny_lm.logp, params, chosen, rejected, batch_size=batch_size)
    ref = _brute(tiny_lm, params, chosen, rejected)
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(st[k]), v, rtol=2e-5, atol=1e-6, err_msg=k)
    assert st.inner.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(st.chosen_logps), [float(tiny_lm.logp(params, _take(chosen, i))) for i in range(7)],
        rtol=1e-6,
    )


def test_squared_norm_is_global_not_per_leaf(tiny_lm, pairs, key):
    """‖g‖² is Σ over all leaves of squares (the reference scripts summed per-leaf norms)."""
    params = tiny_lm.init(key)
    chosen, _ = pairs
    st = dg.pairwise_gradient_stats(tiny_lm.logp, params, chosen, chosen)
    g0 = jax.grad(tiny_lm.logp)(params, jax.tree.map(lambda x: x[0], chosen))
    leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(g0)]
    sq = sum(float(x @ x) for x in leaves)
    per_leaf_norm_sum = sum(float(np.linalg.norm(x)) for x in leaves)
    assert np.isclose(float(st.chosen_sq_norm[0]), sq, rtol=1e-5)
    assert not np.isclose(sq, per_leaf_norm_sum**2, rtol=1e-3)  # the buggy variant differs on this model
    np.testing.assert_allclose(np.asarray(st.cosine), 1.0, rtol=1e-5)  # identical pairs


def test_stats_match_closed_form_on_loglinear_toy(rng):
    F = rng.normal(size=(7, 3)).astype(np.float32)
    t = toy.LogLinearToy(F, bias=True)
    params = {"W": jnp.asarray(rng.normal(size=(7, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=7), jnp.float32)}
    chosen = toy.stack([toy.make_example(0, [1, 4, 5, 6], 5), toy.make_example(2, [3, 3], 5)])
    rejected = toy.stack([toy.make_example(0, [2, 4, 5, 6, 1], 5), toy.make_example(2, [1], 5)])
    st = dg.pairwise_gradient_stats(t.logp, params, chosen, rejected)
    for i in range(2):
        gw = t.closed_form_grad(params, _take(chosen, i, np.asarray))
        gl = t.closed_form_grad(params, _take(rejected, i, np.asarray))
        inner = float(np.sum(gw["W"] * gl["W"]) + gw["b"] @ gl["b"])
        nw = float(np.sum(gw["W"] ** 2) + gw["b"] @ gw["b"])
        assert np.isclose(float(st.inner[i]), inner, rtol=1e-5, atol=1e-6)
        assert np.isclose(float(st.chosen_sq_norm[i]), nw, rtol=1e-5)


def test_stats_with_sharded_params_equal_unsharded(tiny_lm, make_pairs_fn, key, rng):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    make_pairs = make_pairs_fn
    model = type(tiny_lm)(V=16, D=8, H=8)
    params = model.init(key)
    chosen, rejected = make_pairs(rng, 8, 6, 16)
    ref = dg.pairwise_gradient_stats(model.logp, params, chosen, rejected)
    # Auto axes (GSPMD propagation). Under Explicit axes the *model* must annotate its gathers; the
    # diagnostics add nothing that needs annotation.
    for batch_size in (None, 4):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        specs = {"emb": P("data", None), "mlp": {"w1": P(None, "data"), "b1": P("data")}, "out": P(None, "data"),
                 "ob": P("data")}
        sharded = jax.tree.map(lambda x, s, mesh=mesh: jax.device_put(x, NamedSharding(mesh, s)), params, specs)
        assert len(sharded["emb"].sharding.device_set) == 8
        st = dg.pairwise_gradient_stats(model.logp, sharded, chosen, rejected, batch_size=batch_size)
        for k in ("inner", "chosen_sq_norm", "rejected_sq_norm", "cosine"):
            np.testing.assert_allclose(np.asarray(st[k]), np.asarray(ref[k]), rtol=1e-5, atol=1e-6, err_msg=k)


def test_bad_batches_raise(tiny_lm, pairs, key):
    params = tiny_lm.init(key)
    chosen, rejected = pairs
    short = jax.tree.map(lambda x: x[:3], rejected)
    with pytest.raises(ValueError, match="batch size"):
        dg.pairwise_gradient_stats(tiny_lm.logp, params, chosen, short)
    with pytest.raises(ValueError, match="batch_size"):
        dg.pairwise_gradient_stats(tiny_lm.logp, params, chosen, rejected, batch_size=0)


# ----------------------------------------------------------------------------------------------------------
# Conditions and cases.


def test_condition_cases_by_hand():
    st = {
        "inner": jnp.array([0.5, 1.5, 1.5, 0.2]),
        "chosen_sq_norm": jnp.array([1.0, 1.0, 2.0, 1.0]),
        "rejected_sq_norm": jnp.array([2.0, 2.0, 1.0, 1.0]),
    }
    a, b = -jnp.ones(4), jnp.ones(4)  # DPO-like: a = −c, b = c
    c = dg.entanglement_condition(st, a, b)
    assert dg.case_names(c["case"][:3]) == ["ideal", "both fall", "both rise"]
    # A loss that pushes both log-probs down (a, b > 0) / prefers the rejected (a > 0 > b).
    assert dg.case_names(dg.entanglement_condition(st, jnp.ones(4), jnp.ones(4))["case"][:1]) == ["both fall"]
    rev = dg.entanglement_condition(st, jnp.ones(4), -jnp.ones(4))
    assert dg.case_names(rev["case"][:1]) == ["reversed"]
    np.testing.assert_allclose(c["chosen_threshold"], st["chosen_sq_norm"])
    np.testing.assert_allclose(c["rejected_threshold"], st["rejected_sq_norm"])
    dw, dl = dg.predicted_logp_changes(st, a, b, 0.1)
    np.testing.assert_allclose(dw, 0.1 * (st["chosen_sq_norm"] - st["inner"]))
    np.testing.assert_allclose(dl, 0.1 * (st["inner"] - st["rejected_sq_norm"]))
    # Unequal weights: chosen rises iff inner ≤ (|a|/b)‖g_w‖².
    c2 = dg.entanglement_condition(st, -2 * jnp.ones(4), jnp.ones(4))
    np.testing.assert_allclose(c2["chosen_threshold"], 2 * st["chosen_sq_norm"])
    assert bool(c2["chosen_rises"][1])


def _context_batch(rng, n, lengths_w, lengths_l):
    return losses.PairwiseLogps(
        chosen_logps=jnp.zeros(n),
        rejected_logps=jnp.zeros(n),
        ref_chosen_logps=jnp.asarray(rng.normal(-6, 1, n)),
        ref_rejected_logps=jnp.asarray(rng.normal(-6, 1, n)),
        chosen_lengths=jnp.asarray(lengths_w),
        rejected_lengths=jnp.asarray(lengths_l),
    )


def test_dpo_weights_closed_form(rng):
    b = _context_batch(rng, 5, np.ones(5), np.ones(5))
    b = dataclasses.replace(b, chosen_logps=jnp.asarray(rng.normal(-5, 1, 5)), rejected_logps=jnp.asarray(rng.normal(-5, 1, 5)))
    a_, b_ = dg.loss_weights("dpo", b, beta=0.3)
    h = (b.chosen_logps - b.ref_chosen_logps) - (b.rejected_logps - b.ref_rejected_logps)
    np.testing.assert_allclose(a_, -0.3 * jax.nn.sigmoid(-0.3 * h), rtol=1e-6)
    np.testing.assert_allclose(b_, 0.3 * jax.nn.sigmoid(-0.3 * h), rtol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        dg.loss_weights("dpo", b, beta=-1.0)


@pytest.mark.parametrize("name", dg.pairwise_margin_losses())
def test_every_margin_loss_predictions_match_actual_changes(name, tiny_lm, pairs, key, rng):
    """For every registered pairwise margin loss: chain rule, first-order prediction, case labels."""
    chosen, rejected = pairs
    with jax.enable_x64():
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tiny_lm.init(key))
        ch = {**chosen, "mask": chosen["mask"].astype(jnp.float64)}
        rj = {**rejected, "mask": rejected["mask"].astype(jnp.float64)}
        ctx = _context_batch(rng, 7, np.asarray(ch["mask"].sum(-1)), np.asarray(rj["mask"].sum(-1)))
        # Step size scaled so that lr·max(|a|, |b|) = 1e-6: second-order terms stay ~1e-4 relative.
        pre = dg.entanglement_report(name, tiny_lm.logp, params, ch, rj, ctx)
        lr = 1e-6 / max(float(jnp.abs(pre["a"]).max()), float(jnp.abs(pre["b"]).max()), 1e-3)
        rep = dg.entanglement_report(name, tiny_lm.logp, params, ch, rj, ctx, lr=lr, measure=True)
        a, b = rep["a"], rep["b"]
        # a, b are the partial derivatives of the per-pair losses: central finite differences in float64.
        fn = losses.get(name)
        eps = 1e-6
        batch = dataclasses.replace(ctx, chosen_logps=rep["chosen_logps"], rejected_logps=rep["rejected_logps"])
        for field, got in (("chosen_logps", a), ("rejected_logps", b)):
            up = dataclasses.replace(batch, **{field: getattr(batch, field) + eps})
            dn = dataclasses.replace(batch, **{field: getattr(batch, field) - eps})
            fd = (fn(up, validate=False) - fn(dn, validate=False)) / (2 * eps)
            if not losses.spec(name).batch_coupled:
                np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9, err_msg=field)
        # First order: actual change = predicted + O(lr²).
        for side in ("chosen", "rejected"):
            pred, act = np.asarray(rep[f"predicted_{side}_change"]), np.asarray(rep[f"actual_{side}_change"])
            np.testing.assert_allclose(act, pred, rtol=1e-3, atol=1e-13, err_msg=side)
        # Case labels agree with the observed signs.
        act_w, act_l = np.asarray(rep["actual_chosen_change"]), np.asarray(rep["actual_rejected_change"])
        observed = np.where(
            (act_w >= 0) & (act_l <= 0), 0, np.where(act_l <= 0, 1, np.where(act_w >= 0, 2, 3))
        )
        np.testing.assert_array_equal(np.asarray(rep["case"]), observed)


def test_unigram_toy_closed_form_dpo_condition():
    """Context-free softmax (all features equal): DPO's Δlog π_w ∝ 1 − L(p_A − p_B), Δlog π_l ∝ −1 − L(p_A − p_B)."""
    V, k = 6, 5
    t = toy.LogLinearToy(np.ones((V, 1), np.float32))
    w = jnp.array([[0.0], [1.2], [0.3], [0.0], [-0.5], [0.1]])
    params = {"W": w}
    chosen = toy.stack([toy.make_example(0, [1] + [3] * k, k + 1)])
    rejected = toy.stack([toy.make_example(0, [2] + [3] * k, k + 1)])
    beta, lr = 0.1, 1.0
    ctx = losses.PairwiseLogps(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))
    rep = dg.entanglement_report("dpo", t.logp, params, chosen, rejected, ctx, lr=lr, beta=beta)
    p = np.asarray(jax.nn.softmax(w[:, 0]))
    L = k + 1
    h = float(rep["chosen_logps"][0] - rep["rejected_logps"][0])
    c = beta * float(jax.nn.sigmoid(-beta * h))
    np.testing.assert_allclose(float(rep["predicted_chosen_change"][0]), lr * c * (1 - L * (p[1] - p[2])), rtol=1e-5)
    np.testing.assert_allclose(float(rep["predicted_rejected_change"][0]), -lr * c * (1 + L * (p[1] - p[2])), rtol=1e-5)
    assert L * (p[1] - p[2]) > 1 and dg.case_names(rep["case"]) == ["both fall"]


# ----------------------------------------------------------------------------------------------------------
# Mitigations.


def test_normalized_direction_first_order_guarantee(tiny_lm, pairs, key):
    params = tiny_lm.init(key)
    chosen, rejected = pairs
    st = dg.pairwise_gradient_stats(tiny_lm.logp, params, chosen, rejected)

    @jax.jit
    def directions(params):
        g = jax.vmap(jax.grad(tiny_lm.logp), in_axes=(None, 0))
        gw, gl = g(params, chosen), g(params, rejected)
        d = jax.vmap(dg.pairwise_normalized_direction)(gw, gl)
        return d, jax.vmap(dg.tree_dot)(gw, d), jax.vmap(dg.tree_dot)(gl, d)

    d, dw, dl = directions(params)
    nw, nl = np.sqrt(np.asarray(st.chosen_sq_norm)), np.sqrt(np.asarray(st.rejected_sq_norm))
    cos = np.asarray(st.cosine)
    np.testing.assert_allclose(dw, nw * (1 - cos), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dl, -nl * (1 - cos), rtol=1e-4, atol=1e-5)
    # Single-pair update = params + lr·w·d; the measured log-prob changes have the guaranteed signs.
    one = lambda tree, i: jax.tree.map(lambda x: x[i : i + 1], tree)
    upd = jax.jit(lambda p, c, r: dg.pairwise_normalized_update(tiny_lm.logp, p, c, r, 1e-3, weights=jnp.array([2.0])))
    vlogp = jax.jit(jax.vmap(tiny_lm.logp, in_axes=(None, 0)))
    for i in range(3):
        new = upd(params, one(chosen, i), one(rejected, i))
        exp = jax.tree.map(lambda p, x, i=i: p + 2e-3 * x[i], params, d)
        np.testing.assert_allclose(ravel_pytree(new)[0], ravel_pytree(exp)[0], rtol=1e-6, atol=1e-7)
        assert float(vlogp(new, one(chosen, i))[0] - vlogp(params, one(chosen, i))[0]) > 0
        assert float(vlogp(new, one(rejected, i))[0] - vlogp(params, one(rejected, i))[0]) < 0


def _masks_numpy(tw, tl, nw, nl):
    P = 0
    while P < min(nw, nl) and tw[P] == tl[P]:
        P += 1
    S = 0
    while S < min(nw, nl) - P and tw[nw - 1 - S] == tl[nl - 1 - S]:
        S += 1
    kw = np.zeros(len(tw))
    kl = np.zeros(len(tl))
    kw[P : nw - S] = 1
    kl[P : nl - S] = 1
    return kw, kl


def test_contrastive_token_masks_match_numpy(rng):
    B, T = 40, 9
    tw = rng.integers(0, 3, (B, T))
    tl = tw.copy()
    tl[rng.random((B, T)) < 0.3] = rng.integers(0, 3)
    nw, nl = rng.integers(1, T + 1, B), rng.integers(1, T + 1, B)
    nl[:5] = nw[:5]
    tl[:5] = tw[:5]  # identical responses: everything dropped
    mw = (np.arange(T) < nw[:, None]).astype(np.float32)
    ml = (np.arange(T) < nl[:, None]).astype(np.float32)
    kw, kl = dg.contrastive_token_masks(tw, tl, mw, ml)
    for i in range(B):
        ew, el = _masks_numpy(tw[i], tl[i], nw[i], nl[i])
        np.testing.assert_array_equal(np.asarray(kw[i]), ew, err_msg=f"pair {i}")
        np.testing.assert_array_equal(np.asarray(kl[i]), el, err_msg=f"pair {i}")
    assert float(kw[:5].sum()) == 0.0


def test_suffix_design_dpo_both_fall_mitigations_keep_chosen_rising():
    """First-order case at W=0 in closed form, then the three training curves."""
    k, V = 8, 6
    q = 1.0 / V
    t, chosen, rejected = toy.suffix_design(k)
    st = dg.pairwise_gradient_stats(t.logp, t.init(), chosen, rejected)
    # ‖g_w‖² − ⟨g_w,g_l⟩ = (1 − 0) + (1 − q)·(1 − (k − 1))  at uniform p (see suffix_design's docstring).
    np.testing.assert_allclose(float(st.chosen_sq_norm[0] - st.inner[0]), 1 + (1 - q) - (k - 1) * (1 - q), rtol=1e-5)
    np.testing.assert_allclose(float(st.inner[0] - st.rejected_sq_norm[0]), -1 - k * (1 - q), rtol=1e-5)
    runs = {m: toy.suffix_experiment(m, suffix_len=k, steps=12, lr=0.5, beta=0.1) for m in ("dpo", "normalized", "masked")}
    dpo = runs["dpo"]
    assert np.all(np.diff(dpo["chosen_logps"]) < 0) and np.all(np.diff(dpo["rejected_logps"]) < 0)
    assert set(dpo["case"]) == {1}  # "both fall" throughout
    assert dpo["cosine"][0] > 0.9
    for m in ("normalized", "masked"):
        assert np.all(np.diff(runs[m]["chosen_logps"]) > 0), m
        assert np.all(np.diff(runs[m]["rejected_logps"]) < 0), m


def test_all_margin_loss_reports_cover_registry_and_skip_missing_fields():
    t, chosen, rejected = toy.suffix_design(4)
    params = {"W": 0.1 * jnp.arange(18.0).reshape(6, 3) / 18}
    n = jnp.full((1,), 5.0)
    full = losses.PairwiseLogps(jnp.zeros(1), jnp.zeros(1), jnp.full((1,), -9.0), jnp.full((1,), -8.0), n, n)
    reps, skipped = dg.all_margin_loss_reports(t.logp, params, chosen, rejected, full, lr=0.1)
    assert sorted(reps) == dg.pairwise_margin_losses() and not skipped
    one = dg.entanglement_report("dpo", t.logp, params, chosen, rejected, full, lr=0.1)
    for k in ("a", "b", "case", "predicted_chosen_change", "inner"):
        np.testing.assert_allclose(np.asarray(reps["sigmoid"][k]), np.asarray(one[k]), rtol=1e-6)
    summ = dg.summarize_report(one)
    assert float(summ["entanglement/cosine"]) == float(one["cosine"][0])
    np.testing.assert_allclose(sum(float(summ[f"entanglement/case/{c}"]) for c in dg.CASES), 1.0)
    assert float(summ[f"entanglement/case/{dg.CASES[int(one['case'][0])]}"]) == 1.0
    no_ref = losses.PairwiseLogps(jnp.zeros(1), jnp.zeros(1))
    reps2, skipped2 = dg.all_margin_loss_reports(t.logp, params, chosen, rejected, no_ref)
    for name in dg.pairwise_margin_losses():
        s = losses.spec(name)
        assert (name in skipped2) == (s.needs_reference or s.needs_lengths)
        assert (name in reps2) != (name in skipped2)

"""Gradient entanglement in training: the probe against direct and brute-force statistics, the weighted-gradient
trainer against the loss's own gradient, the two mitigations against their definitions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _train_helpers import np_log_sigmoid, np_seq_logps, small_cfg
from jax.flatten_util import ravel_pytree

from jalign import diagnostics as dg
from jalign.studies.entanglement import PairwiseWeightedTrainer, mitigation_weights
from jalign.tokenizers import ByteTokenizer
from jalign.train import plugins, train
from jalign.train.batch import contrastive_response_masks, split_pairs
from jalign.train.config import ConfigError, validate
from jalign.train.objectives import Pairwise, make_objective
from jalign.train.plugins.tiny import tiny_lm
from jalign.train.probes import entanglement_probe
from jalign.train.step import ExampleLogp, TrainState, logits_fn, make_logps_fn, split_model

BETA = 0.1


def _probe_batch(cfg, n=4):
    src = plugins.make_data(cfg.data.name, batch_size=n, seq_len=cfg.data.seq_len, seed=123,
                             **dict(cfg.data.kwargs))
    return {k: np.asarray(v) for k, v in next(src).items()}


def _example_grad(graphdef, model_state):
    """Flattened ∇ of one sequence's summed response log-prob via the trainer's own logps_fn (one jit)."""
    f = jax.jit(jax.grad(lambda p, ids, m, a: make_logps_fn(graphdef, p, model_state)(ids, m, a)[0][0]))

    def g(params, batch, side, i):
        args = (jnp.asarray(batch[f"{side}_{k}"][i:i + 1]) for k in ("ids", "mask", "attention_mask"))
        return np.asarray(ravel_pytree(f(params, *args))[0], np.float64)

    return g


def _brute_stats(graphdef, params, model_state, batch):
    """Per-example gradients in a Python loop; inner products in numpy float64."""
    g = _example_grad(graphdef, model_state)
    out = {k: [] for k in ("inner", "chosen_sq_norm", "rejected_sq_norm", "cosine")}
    for i in range(batch["chosen_ids"].shape[0]):
        gw, gl = g(params, batch, "chosen", i), g(params, batch, "rejected", i)
        out["inner"].append(gw @ gl)
        out["chosen_sq_norm"].append(gw @ gw)
        out["rejected_sq_norm"].append(gl @ gl)
        out["cosine"].append(gw @ gl / np.linalg.norm(gw) / np.linalg.norm(gl))
    return {k: np.array(v) for k, v in out.items()}


def _np_logps(graphdef, params, model_state, batch, side):
    logits = logits_fn(graphdef, params, model_state, batch[f"{side}_ids"], batch[f"{side}_attention_mask"])
    return np_seq_logps(np.asarray(logits), batch[f"{side}_ids"], batch[f"{side}_mask"])


def test_probe_equals_direct_and_brute_force_statistics():
    cfg = small_cfg(train__steps=2, loss__name="dpo")
    batch = _probe_batch(cfg, n=3)
    res = train(cfg, probes=[entanglement_probe(batch, loss="dpo", every=2, name="ent")])
    assert [r["step"] for r in res.probes] == [0, 2]
    c, r = split_pairs(batch)
    lm = ExampleLogp(res.graphdef, res.state.model_state)
    # ref_params is the initial model: the step-0 record was taken there.
    init = res.state.ref_params
    ref_w = _np_logps(res.graphdef, init, res.state.model_state, batch, "chosen")
    ref_l = _np_logps(res.graphdef, init, res.state.model_state, batch, "rejected")
    for rec, params in ((res.probes[0], init), (res.probes[-1], res.state.params)):
        direct = dg.pairwise_gradient_stats(lm.logp, params, c, r)
        brute = _brute_stats(res.graphdef, params, res.state.model_state, batch)
        for k, v in brute.items():
            np.testing.assert_allclose(rec[f"pair/{k}"], np.asarray(direct[k]), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(rec[f"pair/{k}"], v, rtol=2e-4, atol=1e-6, err_msg=k)
            assert rec[k] == pytest.approx(np.mean(v), rel=2e-4, abs=1e-6)
        w = _np_logps(res.graphdef, params, res.state.model_state, batch, "chosen")
        l = _np_logps(res.graphdef, params, res.state.model_state, batch, "rejected")
        np.testing.assert_allclose(rec["pair/chosen_logps"], w, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(rec["pair/rejected_logps"], l, rtol=1e-5, atol=1e-4)
        assert rec["mean_margin"] == pytest.approx(np.mean(w - l), rel=1e-4, abs=1e-4)
        # DPO weights in closed form: a = −βσ(−βh) = −b, h = (log π_w − ref_w) − (log π_l − ref_l).
        h = (w - ref_w) - (l - ref_l)
        b = BETA * np.exp(np_log_sigmoid(-BETA * h))
        np.testing.assert_allclose(rec["pair/a"], -b, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(rec["pair/b"], b, rtol=1e-4, atol=1e-7)
        # Cases from the observed statistics: chosen rises iff ⟨g_w,g_l⟩ ≤ ‖g_w‖², rejected falls iff ≤ ‖g_l‖².
        rises = brute["inner"] <= brute["chosen_sq_norm"]
        falls = brute["inner"] <= brute["rejected_sq_norm"]
        case = np.where(rises & falls, 0, np.where(falls, 1, np.where(rises, 2, 3)))
        np.testing.assert_array_equal(rec["pair/case"], case)
        for code, name in enumerate(dg.CASES):
            assert rec[f"case/{name}"] == pytest.approx(np.mean(case == code))
    logged = {x["step"]: x for x in res.history if "ent/cosine" in x}
    assert sorted(logged) == [0, 2] and logged[2]["ent/cosine"] == pytest.approx(res.probes[-1]["cosine"])


def test_probe_reference_sources_and_errors():
    cfg = small_cfg(loss__name="dpo")
    batch = _probe_batch(cfg, n=2)
    model = tiny_lm(0, d_model=8, d_hidden=16)
    graphdef, params, rest = split_model(model)
    state = TrainState(params=params, opt_state=None, model_state=rest, ref_params=None,
                       step=jnp.zeros((), jnp.int32), rng=jnp.zeros((2,), jnp.uint32))
    lm = ExampleLogp(graphdef, rest)  # shared by the probes below: one compilation
    with pytest.raises(ValueError, match="needs reference log-probs"):
        entanglement_probe(batch, loss="dpo", model=lm)(0, graphdef, state)
    # Cached reference fields in the batch: a = −βσ(−βh) uses them.
    ref = {"ref_chosen_logps": np.array([-3.0, -5.0]), "ref_rejected_logps": np.array([-4.0, -1.0])}
    out = entanglement_probe({**batch, **ref}, loss="dpo", model=lm)(0, graphdef, state)
    w, l = np.array(out["pair/chosen_logps"]), np.array(out["pair/rejected_logps"])
    h = (w - ref["ref_chosen_logps"]) - (l - ref["ref_rejected_logps"])
    np.testing.assert_allclose(out["pair/b"], BETA * np.exp(np_log_sigmoid(-BETA * h)), rtol=1e-5)
    # A reference-free loss needs nothing: SimPO's a = −β/|y_w|·σ(−(β·(lw/|y_w| − ll/|y_l|) − γ)).
    out = entanglement_probe(batch, loss="simpo", model=lm)(0, graphdef, state)
    nw, nl = batch["chosen_mask"][:, 1:].sum(-1), batch["rejected_mask"][:, 1:].sum(-1)
    z = 2.0 * (w / nw - l / nl) - 1.0
    np.testing.assert_allclose(out["pair/a"], -2.0 / nw * np.exp(np_log_sigmoid(-z)), rtol=1e-5)
    # Chunked (one pair per call) = all at once.
    chunked = entanglement_probe(batch, loss="simpo", model=lm, batch_size=1)(0, graphdef, state)
    for k in ("pair/inner", "pair/chosen_sq_norm", "pair/rejected_sq_norm", "pair/a", "pair/b", "pair/case"):
        np.testing.assert_allclose(chunked[k], out[k], rtol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="not a pairwise margin-based loss"):
        entanglement_probe(batch, loss="kto")
    with pytest.raises(ValueError, match="missing field"):
        entanglement_probe({"chosen_ids": batch["chosen_ids"]})


# ---------------------------------------------------------------------------------------------------------
# The weighted-gradient trainer and the mitigations


@pytest.fixture(scope="module")
def setup():
    cfg = small_cfg()
    batch = _probe_batch(cfg, n=3)
    model = tiny_lm(1, d_model=8, d_hidden=16)
    graphdef, params, rest = split_model(model)
    return graphdef, params, rest, batch


@pytest.fixture(scope="module")
def sgd1(setup):
    """One trainer with SGD(1) for the exactness tests (one compilation of the shared step)."""
    graphdef, _, rest, _ = setup
    return PairwiseWeightedTrainer(graphdef, rest, optax.sgd(1.0))


def _sgd_delta(tr, params, batch, lr, **kw):
    new, _, info = tr.update(params, tr.tx.init(params), batch, **kw)
    return jax.tree.map(lambda a, b: (a - b) / lr, new, params), info


@pytest.mark.parametrize("loss", ["dpo", "simpo", "sppo_hard", "dpop"])
def test_weighted_update_is_the_loss_gradient(setup, sgd1, loss):
    graphdef, params, rest, batch = setup
    ref_params = jax.tree.map(lambda x: x + 0.05 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), params)
    tr = sgd1
    delta, info = _sgd_delta(tr, params, batch, 1.0, loss=loss, ref_params=ref_params)
    obj = Pairwise(loss)
    ref_fn = make_logps_fn(graphdef, ref_params, rest)

    def mean_loss(p):
        return obj.loss_sum(make_logps_fn(graphdef, p, rest), ref_fn, batch)[0] / 3

    expected = jax.grad(mean_loss)(params)
    for x, y in zip(jax.tree.leaves(delta), jax.tree.leaves(expected), strict=True):
        y = np.asarray(y)  # float32 round-off relative to the leaf's scale
        np.testing.assert_allclose(-np.asarray(x), y, rtol=2e-4, atol=1e-4 * np.abs(y).max())
    assert info["loss"] == pytest.approx(float(mean_loss(params)), rel=1e-5)


def test_normalized_update_equals_its_definition(setup, sgd1):
    """θ' = θ + η·mean_i s_i (g_w/‖g_w‖ − g_l/‖g_l‖), s = βσ(−βh) for DPO, against brute force."""
    graphdef, params, rest, batch = setup
    ref_params = jax.tree.map(lambda x: 0.9 * x, params)
    lr = 1.0  # the update is exact for any lr; 1 keeps float32 round-off of θ' − θ small
    tr = sgd1
    delta, _ = _sgd_delta(tr, params, batch, lr, loss="dpo", mitigation="normalized", ref_params=ref_params)
    flat, _ = ravel_pytree(params)
    w = _np_logps(graphdef, params, rest, batch, "chosen")
    l = _np_logps(graphdef, params, rest, batch, "rejected")
    rw = _np_logps(graphdef, ref_params, rest, batch, "chosen")
    rl = _np_logps(graphdef, ref_params, rest, batch, "rejected")
    s = BETA * np.exp(np_log_sigmoid(-BETA * ((w - rw) - (l - rl))))
    want = np.zeros(flat.shape, np.float64)
    g = _example_grad(graphdef, rest)
    for i in range(3):
        gw, gl = g(params, batch, "chosen", i), g(params, batch, "rejected", i)
        want += s[i] * (gw / np.linalg.norm(gw) - gl / np.linalg.norm(gl)) / 3
    np.testing.assert_allclose(np.asarray(ravel_pytree(delta)[0]), want, rtol=1e-3, atol=2e-4 * np.abs(want).max())


def test_normalized_step_moves_each_log_prob_the_right_way_to_first_order(setup):
    """One pair, small SGD step: Δlog π_w ≈ η s ‖g_w‖(1 − cos) ≥ 0, Δlog π_l ≈ −η s ‖g_l‖(1 − cos) ≤ 0."""
    graphdef, params, rest, batch = setup
    one = {k: v[:1] for k, v in batch.items()}
    lr = 1e-2  # large enough that float32 log-probs (~ −150) resolve the change, small enough for first order
    tr = PairwiseWeightedTrainer(graphdef, rest, optax.sgd(lr))
    new, _, _ = tr.update(params, tr.tx.init(params), one, loss="dpo", mitigation="normalized", ref_params=params)
    st = tr.stats(params, one)
    s = BETA * 0.5  # h = 0 at the reference
    dw = float(tr.logps(new, one)[0][0] - st.chosen_logps[0])
    dl = float(tr.logps(new, one)[1][0] - st.rejected_logps[0])
    one_minus_cos = 1.0 - float(st.cosine[0])
    assert dw == pytest.approx(lr * s * np.sqrt(float(st.chosen_sq_norm[0])) * one_minus_cos, rel=5e-2)
    assert dl == pytest.approx(-lr * s * np.sqrt(float(st.rejected_sq_norm[0])) * one_minus_cos, rel=5e-2)
    assert dw > 0 > dl


def _layout(prompt: str, chosen: str, rejected: str, T: int = 48):
    tok = ByteTokenizer()
    out = {}
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        seq, m = tok.encode_pair(prompt, text)
        ids = np.full(T, tok.pad_id, np.int32)
        ids[:len(seq)] = seq
        mask = np.zeros(T, np.int32)
        mask[:len(m)] = m
        out |= {f"{side}_ids": ids, f"{side}_mask": mask, f"{side}_attention_mask": (ids != tok.pad_id).astype(np.int32)}
    return out


def _np_contrastive(ids_c, m_c, ids_r, m_r):
    """Independent: keep response positions outside the longest common prefix/suffix of the two responses."""
    rc, rr = [int(t) for t, m in zip(ids_c, m_c, strict=True) if m], [int(t) for t, m in zip(ids_r, m_r, strict=True) if m]
    p = 0
    while p < min(len(rc), len(rr)) and rc[p] == rr[p]:
        p += 1
    s = 0
    while s < min(len(rc), len(rr)) - p and rc[-1 - s] == rr[-1 - s]:
        s += 1
    out = []
    for ids, m, resp in ((ids_c, m_c, rc), (ids_r, m_r, rr)):
        start = int(np.argmax(np.asarray(m) != 0))
        keep = np.zeros(len(ids), np.int32)
        keep[start + p:start + len(resp) - s] = 1
        out.append(keep)
    return out


def test_contrastive_response_masks_match_numpy():
    rows = [_layout("The food", " was great. We went on Monday.", " was awful. We went on Monday."),
            _layout("A longer prompt here", " yes", " no"),
            _layout("Q", " same", " same"),
            _layout("Q", " abc", " abcd")]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    got = contrastive_response_masks(batch)
    for i in range(len(rows)):
        want_c, want_r = _np_contrastive(batch["chosen_ids"][i], batch["chosen_mask"][i],
                                         batch["rejected_ids"][i], batch["rejected_mask"][i])
        np.testing.assert_array_equal(np.asarray(got["chosen_mask"][i]), want_c)
        np.testing.assert_array_equal(np.asarray(got["rejected_mask"][i]), want_r)
    # Row 0: only the differing bytes of great/awful survive; EOS and the shared suffix are dropped.
    kept = bytes(int(t) for t, m in zip(batch["chosen_ids"][0], got["chosen_mask"][0], strict=True) if m)
    assert kept == b"great"


def test_masked_update_is_the_gradient_of_the_masked_loss(setup, sgd1):
    graphdef, params, rest, batch = setup  # synthetic " <positive>." vs " <negative>.": shared " ", "." and EOS
    masked = {**batch, **{k: np.asarray(v) for k, v in contrastive_response_masks(batch).items()}}
    assert (masked["chosen_mask"].sum(-1) < batch["chosen_mask"].sum(-1)).all()
    ref_params = jax.tree.map(lambda x: 0.9 * x, params)
    delta, _ = _sgd_delta(sgd1, params, batch, 1.0, loss="dpo", mitigation="masked", ref_params=ref_params)
    obj = Pairwise("dpo")
    expected = jax.grad(lambda p: obj.loss_sum(make_logps_fn(graphdef, p, rest),
                                               make_logps_fn(graphdef, ref_params, rest), masked)[0] / 3)(params)
    for x, y in zip(jax.tree.leaves(delta), jax.tree.leaves(expected), strict=True):
        y = np.asarray(y)
        np.testing.assert_allclose(-np.asarray(x), y, rtol=2e-4, atol=1e-4 * np.abs(y).max())


def test_mitigation_weights_and_bad_input():
    a, b = jnp.array([-0.2, -0.05]), jnp.array([0.2, 0.05])
    st = {"chosen_sq_norm": jnp.array([4.0, 1.0]), "rejected_sq_norm": jnp.array([9.0, 16.0])}
    wc, wr = mitigation_weights("normalized", a, b, st)
    np.testing.assert_allclose(wc, [-0.2 / 2, -0.05 / 1])
    np.testing.assert_allclose(wr, [0.2 / 3, 0.05 / 4])
    assert mitigation_weights("none", a, b) == (a, b)
    with pytest.raises(ValueError, match="mitigation must be one of"):
        mitigation_weights("bogus", a, b)
    with pytest.raises(ValueError, match="needs the per-pair gradient statistics"):
        mitigation_weights("normalized", a, b)


def test_trainer_option_masked_trains_on_the_contrastive_span():
    """cfg.loss.mitigation='masked': the first step's loss is the DPO loss of the masked first batch."""
    cfg = small_cfg(train__steps=1, loss__name="dpo", loss__mitigation="masked")
    res = train(cfg)
    src = plugins.make_data(cfg.data.name, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len,
                             seed=cfg.seed, **dict(cfg.data.kwargs))
    first = {k: np.asarray(v) for k, v in next(src).items()}
    masked = {**first, **{k: np.asarray(v) for k, v in contrastive_response_masks(first).items()}}
    model = plugins.make_model(cfg.model.name, seed=cfg.seed, **dict(cfg.model.kwargs))
    graphdef, params, rest = split_model(model)
    fn = make_logps_fn(graphdef, params, rest)
    want = float(Pairwise("dpo").loss_sum(fn, fn, masked)[0]) / cfg.data.batch_size
    plain = float(Pairwise("dpo").loss_sum(fn, fn, first)[0]) / cfg.data.batch_size
    assert res.history[0]["loss"] == pytest.approx(want, rel=1e-5)
    assert want == pytest.approx(np.log(2.0), rel=1e-6) == plain  # at the reference every DPO loss is log 2
    # … so compare the masked log-probs the step reports with an independent computation.
    lw = _np_logps(graphdef, params, rest, masked, "chosen")
    assert res.history[0]["logps/chosen"] == pytest.approx(np.mean(lw), rel=1e-5)
    obj = make_objective("preference", "dpo", mitigation="masked")
    _, per = obj.loss_sum(fn, fn, first)
    np.testing.assert_allclose(per["chosen_logps"], lw, rtol=1e-5, atol=1e-4)
    assert not np.allclose(lw, _np_logps(graphdef, params, rest, first, "chosen"))


def test_trainer_option_masked_bad_configs():
    with pytest.raises(ConfigError, match="loss.mitigation"):
        validate(small_cfg(loss__mitigation="bogus"))
    with pytest.raises(ConfigError, match="needs a pairwise loss"):
        validate(small_cfg(loss__name="kto", loss__mitigation="masked"))
    with pytest.raises(ConfigError, match="reference='frozen' or 'none'"):
        validate(small_cfg(loss__mitigation="masked", loss__reference="cached"))
    with pytest.raises(ValueError, match="needs a pairwise loss"):
        make_objective("sft", mitigation="masked")


def test_masked_batches_refused_with_the_pair_named():
    """check_batch (host side) for mitigation='masked': an empty contrasting span (a response that extends the
    other — length-normalised losses would divide 0 by 0), a non-contiguous response, precomputed references."""
    from jalign.train.objectives import check_batch

    obj = make_objective("preference", "simpo", mitigation="masked")
    ids = np.array([[1, 5, 6, 7, 8, 0], [1, 5, 6, 7, 0, 0]], np.int32)
    rej = np.array([[1, 5, 6, 9, 8, 0], [1, 5, 6, 7, 4, 0]], np.int32)  # pair 1: chosen is a prefix of rejected
    mask_c = np.array([[0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0]], np.int32)
    mask_r = np.array([[0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0]], np.int32)
    b = {"chosen_ids": ids, "chosen_mask": mask_c, "chosen_attention_mask": (ids > 0).astype(np.int32),
         "rejected_ids": rej, "rejected_mask": mask_r, "rejected_attention_mask": (rej > 0).astype(np.int32)}
    with pytest.raises(ValueError, match="chosen response of pair 1 has no token outside the common prefix"):
        check_batch(obj, b, where="step 3 batch")
    ok = {k: v[:1] for k, v in b.items()}
    check_batch(obj, ok)
    with pytest.raises(ValueError, match="precomputed ref_chosen_logps"):
        check_batch(obj, {**ok, "ref_chosen_logps": np.zeros(1, np.float32),
                          "ref_rejected_logps": np.zeros(1, np.float32)})
    gap = {**ok, "chosen_mask": np.array([[0, 1, 0, 1, 1, 0]], np.int32)}
    with pytest.raises(ValueError, match="one contiguous response span per row; field chosen_mask has 2 spans at row 0"):
        check_batch(obj, gap)

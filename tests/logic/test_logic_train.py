"""Compiled logic losses as trainer objectives: values and gradients through the trainer, DPO equivalence,
the ``logic:<name>`` config route, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import logic, losses
from jalign.losses import PairwiseLogps
from jalign.train import ConfigError, make_objective, train
from jalign.train.config import validate
from jalign.train.plugins import tiny
from jalign.train.step import (
    init_state,
    logits_fn,
    make_logps_fn,
    make_optimizer,
    make_train_step,
)
from tests.train._train_helpers import np_seq_logps, small_cfg


def _model():
    return tiny.tiny_lm(0, d_model=8, d_hidden=16)


def _batch(n=8, seed=0):
    return next(tiny.InMemoryBatchSource(tiny.synthetic_pairwise_examples(32, 24, seed), n, seed=seed))


def _sgd_setup(loss, hparams=None, reference=False):
    cfg = small_cfg()  # sgd, constant lr 0.5, no clipping
    cfg.optim.lr = 1.0
    tx, sched = make_optimizer(cfg.optim, 10)
    g, st = init_state(_model(), tx, reference=reference)
    obj = make_objective("preference", loss, hparams or {})
    return g, st, jax.jit(make_train_step(g, obj, tx, sched))


def _np_logps(g, params, ms, b, side):
    """Independent numpy sequence log-probs from the model's logits (float64)."""
    logits = jax.jit(lambda p, i, a: logits_fn(g, p, ms, i, a))(params, b[f"{side}_ids"], b[f"{side}_attention_mask"])
    return np_seq_logps(np.asarray(logits), b[f"{side}_ids"], b[f"{side}_mask"])


def test_trainer_value_and_gradient_equal_the_compiled_loss_on_the_same_batch():
    """ccpo, length-normalised, β = 0.7: the step's loss equals numpy's closed form
    −log σ(β·log[p_w / (p_l·(1 − p_w))]) with p = exp(log π/|y|), and the SGD(lr = 1) update equals −∇ of
    mean(compiled loss) on log-probs computed separately for chosen and rejected."""
    b = _batch()
    loss = logic.as_loss("ccpo", beta=0.7, length_normalize=True)
    assert loss.spec.kind == "pairwise" and not loss.spec.needs_reference and loss.spec.needs_lengths
    g, st, step = _sgd_setup(loss)
    st1, m = step(st, b)
    lw, ll = (_np_logps(g, st.params, st.model_state, b, s) for s in ("chosen", "rejected"))
    nw, nl = b["chosen_mask"][:, 1:].sum(-1), b["rejected_mask"][:, 1:].sum(-1)
    pw, pl = np.exp(lw / nw), np.exp(ll / nl)
    want = np.logaddexp(0.0, -0.7 * np.log(pw / (pl * (1 - pw)))).mean()
    np.testing.assert_allclose(float(m["loss"]), want, rtol=2e-5)
    np.testing.assert_allclose(float(m["logps/chosen"]), lw.mean(), rtol=1e-5)

    direct = logic.compile(logic.decompile("ccpo"), beta=0.7)

    def objective(params):
        lp = make_logps_fn(g, params, st.model_state)
        (cw, n_w), (cl, n_l) = (lp(b[f"{s}_ids"], b[f"{s}_mask"], b[f"{s}_attention_mask"])
                                for s in ("chosen", "rejected"))
        return direct(PairwiseLogps(chosen_logps=cw / n_w, rejected_logps=cl / n_l), validate=False).mean()

    val, grad = jax.jit(jax.value_and_grad(objective))(st.params)
    np.testing.assert_allclose(float(val), float(m["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m["grad_norm"]), float(jnp.sqrt(sum(jnp.sum(x * x) for x in
                                                                          jax.tree.leaves(grad)))), rtol=1e-5)
    jax.tree.map(lambda new, old, gr: np.testing.assert_allclose(np.asarray(old - new), np.asarray(gr),
                                                                 rtol=1e-4, atol=1e-7),
                 st1.params, st.params, grad)


def test_compiled_dpo_gives_the_registered_dpo_training_step():
    """decompile('dpo') compiled with f = logistic, β = 0.1 is DPO: two Adam steps with a frozen reference give
    the same losses, metrics and parameters as the registered 'dpo' loss (second step: policy ≠ reference)."""
    b = _batch()
    cfg = small_cfg()
    cfg.optim.name, cfg.optim.lr = "adam", 1e-2
    runs = []
    for loss, hp in ((logic.as_loss("dpo", beta=0.1), {}), ("dpo", {"beta": 0.1})):
        tx, sched = make_optimizer(cfg.optim, 10)
        g, st = init_state(_model(), tx, reference=True)
        step = jax.jit(make_train_step(g, make_objective("preference", loss, hp), tx, sched))
        st1, m1 = step(st, b)
        st2, m2 = step(st1, b)
        runs.append((st2, m1, m2))
    (sa, a1, a2), (sb, b1, b2) = runs
    np.testing.assert_allclose(float(a1["loss"]), np.log(2.0), rtol=1e-6)
    assert abs(float(a2["rewards/margins"])) > 1e-4  # non-trivial second step
    for k in ("loss", "grad_norm", "rewards/margins", "rewards/chosen", "logps/rejected"):
        np.testing.assert_allclose(float(a2[k]), float(b2[k]), rtol=1e-5, atol=1e-8, err_msg=k)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7),
                 sa.params, sb.params)


def test_config_name_logic_dpo_trains_like_registered_dpo():
    """``loss.name = "logic:dpo"`` through ``train(cfg)`` (config validation included) = ``loss.name = "dpo"``;
    ``"logic:dpo:hinge"`` is the registry's reference-based ``hinge`` loss."""
    hist = {}
    for name in ("dpo", "logic:dpo", "hinge", "logic:dpo:hinge"):
        cfg = small_cfg(train__steps=2, loss__name=name)
        cfg.loss.hparams.beta = 0.5
        cfg.train.tensorboard = False
        validate(cfg)
        hist[name] = train(cfg).history
    for a, c in (("dpo", "logic:dpo"), ("hinge", "logic:dpo:hinge")):
        for ha, hc in zip(hist[a], hist[c], strict=True):
            for k in ("loss", "grad_norm", "rewards/margins"):
                np.testing.assert_allclose(ha[k], hc[k], rtol=1e-5, atol=1e-8, err_msg=f"{c} {k}")
    assert not any(n.startswith("logic:") for n in losses.names())  # the registry is unchanged


def test_length_normalised_and_ipo_values_match_closed_forms():
    rng = np.random.default_rng(0)
    lw, ll, rw, rl = -rng.uniform(5, 60, size=(4, 16))
    nw, nl = rng.integers(3, 30, size=(2, 16))
    with jax.enable_x64():
        b64 = PairwiseLogps(*(jnp.asarray(x) for x in (lw, ll, rw, rl)), chosen_lengths=jnp.asarray(nw * 1.0),
                            rejected_lengths=jnp.asarray(nl * 1.0))
        cpo = logic.as_loss("cpo", beta=2.0, length_normalize=True)(b64)
        np.testing.assert_allclose(cpo, np.logaddexp(0, -2.0 * (lw / nw - ll / nl)), rtol=1e-12)
        # per-call override of the hyperparameters
        np.testing.assert_allclose(logic.as_loss("cpo")(b64, beta=0.3),
                                   np.logaddexp(0, -0.3 * (lw - ll)), rtol=1e-12)
        rho = (lw - rw) - (ll - rl)
        np.testing.assert_allclose(logic.as_loss("ipo", beta=0.25)(b64), (rho - 2.0) ** 2, rtol=1e-10)
        np.testing.assert_allclose(logic.as_loss("ipo", beta=0.25)(b64),
                                   losses.get("ipo")(b64, beta=0.25, ipo_average=False), rtol=1e-10)
        # TRL's token-averaged IPO is the length-normalised compiled structure
        np.testing.assert_allclose(logic.as_loss("ipo", beta=0.25, length_normalize=True)(b64),
                                   losses.get("ipo")(b64, beta=0.25, ipo_average=True), rtol=1e-10)
        uncpo = logic.as_loss("uncpo", length_normalize=True)(b64)
        pw, pl = np.exp(lw / nw), np.exp(ll / nl)
        np.testing.assert_allclose(uncpo, np.logaddexp(0, -np.log((pl * pw + 1 - pl) / (pl * (1 - pw)))),
                                   rtol=1e-10)
    assert logic.as_loss("dpo").spec.needs_reference and not logic.as_loss("orpo").spec.needs_reference


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="beta"):
        logic.as_loss("cpo", beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        logic.as_loss("cpo")(PairwiseLogps(jnp.array([-1.0]), jnp.array([-2.0])), beta=-1.0)
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        logic.as_loss("cpo")(PairwiseLogps(jnp.array([-1.0]), jnp.array([-2.0])), gamma=1.0)
    with pytest.raises(KeyError, match="no preference structure for 'nope'"):
        logic.as_loss("nope")
    zero = PairwiseLogps(jnp.array([-1.0, -2.0]), jnp.array([-2.0, -1.0]),
                         chosen_lengths=jnp.array([3.0, 0.0]), rejected_lengths=jnp.array([2.0, 2.0]))
    with pytest.raises(ValueError, match="chosen_lengths.*example 1"):
        logic.as_loss("cpo", length_normalize=True)(zero)
    with pytest.raises(ValueError, match="needs batch field .chosen_lengths., which is None"):
        logic.as_loss("cpo", length_normalize=True)(PairwiseLogps(jnp.array([-1.0]), jnp.array([-2.0])))
    for name, match in (("logic:nope", "no preference structure"), ("logic:cpo:cubic", "unknown f"),
                        ("logic:", "must be 'logic:<name>'")):
        cfg = small_cfg(loss__name=name)
        with pytest.raises(ConfigError, match=match):
            validate(cfg)
    cfg = small_cfg(loss__name="logic:dpo", loss__reference="none")
    with pytest.raises(ConfigError, match="needs a reference model"):
        validate(cfg)
    cfg = small_cfg(loss__name="logic:cpo")
    cfg.loss.hparams.gamma = 1.0
    with pytest.raises(ConfigError, match="gamma"):
        validate(cfg)
    # an invalid β from the config fails when the objective is built (losses.bind), before any step
    with pytest.raises(ValueError, match=r"hyperparameter beta=-1.0 must be > 0"):
        _sgd_setup(logic.as_loss("cpo"), {"beta": -1.0})


def test_train_structures_one_compiled_loop_equals_per_loss_training():
    """Masks-as-data training of several lattice losses = training each compiled loss on its own (toy)."""
    from jalign.logic.toy import CategoricalToy, train_curves, train_structures

    toy = CategoricalToy(n_responses=6, chosen=(0, 1), rejected=(2, 3))
    names = ["cpo", "ccpo", "uncpo", "ceunl"]
    structures = [logic.decompile(n).over(("M_w", "M_l")) for n in names]
    p0 = toy.init(jax.random.key(0))
    got = train_structures(structures, toy.logps, p0, steps=15, learning_rate=0.05, beta=1.5)
    for i, n in ((1, "ccpo"), (2, "uncpo")):  # two of the four (each reference run is its own compile)
        want = train_curves(logic.compile(logic.decompile(n), beta=1.5), toy.logps, toy.init, [0], steps=15,
                            learning_rate=0.05)
        for k in ("loss", "chosen_logps", "rejected_logps"):
            np.testing.assert_allclose(got[k][i], want[k][0], rtol=2e-5, atol=2e-6, err_msg=f"{n} {k}")
    with pytest.raises(ValueError, match="share variables"):
        train_structures([structures[0], logic.decompile("dpo")], toy.logps, p0, steps=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="no ✓ and no ✗ world"):
        train_structures([logic.from_labels([0, 0, 0, 0], ("M_w", "M_l"))], toy.logps, p0, steps=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="beta"):
        train_structures(structures, toy.logps, p0, steps=2, learning_rate=0.1, beta=0.0)

"""Pairwise losses: values against independent numpy closed forms, gradients, limits, finiteness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bench import reference_numpy as ref
from jalign import losses
from jalign.losses import _validate
from tests.losses.cases import HPARAMS, REFERENCE_FREE, jit_loss, pairwise_data, to_pairwise

PAIRWISE = sorted(n for n in losses.names() if losses.spec(n).kind == "pairwise")
CASES = [(name, i) for name in sorted(HPARAMS) for i in range(len(HPARAMS[name]))]


def test_every_pairwise_loss_has_cases():
    assert set(PAIRWISE) == set(HPARAMS), "every registered pairwise loss needs hyperparameter cases"
    assert set(PAIRWISE) <= set(ref.PAIRWISE)


def test_trl_loss_types_registered_with_trl_defaults():
    trl = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
           "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
    for name in trl:
        hp = losses.spec(name).hparams
        if "beta" in hp:
            assert hp["beta"] == 0.1, name
        if name in ("sigmoid", "robust", "aot", "aot_unpaired"):
            assert hp["label_smoothing"] == 0.0, name
    assert losses.spec("discopop").hparams["discopop_tau"] == 0.05
    assert losses.spec("ipo").hparams["ipo_average"] is True
    assert losses.spec("dpo") is losses.spec("sigmoid")


def _split(name, hp):
    """Numeric hyperparameters become traced arguments (one compilation per loss); bools/None stay static."""
    full = {**losses.spec(name).hparams, **hp}
    static = tuple(sorted((k, v) for k, v in full.items() if v is None or isinstance(v, bool)))
    traced = {k: v for k, v in full.items() if not (v is None or isinstance(v, bool))}
    return static, traced


_VALUE_GRAD: dict = {}


def value_and_grads(name, hp, batch):
    """(per-example losses, d Σloss / d chosen_logps, d Σloss / d rejected_logps), jitted per loss."""
    static, traced = _split(name, hp)
    key = (name, static)
    if key not in _VALUE_GRAD:
        fn = losses.get(name)

        def f(b, traced):
            def total(lw, ll):
                bb = losses.PairwiseLogps(**{**b.__dict__, "chosen_logps": lw, "rejected_logps": ll})
                return fn(bb, validate=False, **dict(static), **traced).sum()

            g = jax.grad(total, argnums=(0, 1))(b.chosen_logps, b.rejected_logps)
            return fn(b, validate=False, **dict(static), **traced), g

        _VALUE_GRAD[key] = jax.jit(f)
    return _VALUE_GRAD[key](batch, traced)


@pytest.mark.parametrize("name,i", CASES)
def test_value_and_analytic_gradient_vs_numpy(name, i, rng):
    hp = HPARAMS[name][i]
    d = pairwise_data(rng)
    want, gw, gl = ref.PAIRWISE[name](d, **hp)
    with jax.enable_x64():
        got, (g_lw, g_ll) = value_and_grads(name, hp, to_pairwise(d))
        assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
    if gw is None:  # batch-coupled (detached batch statistics): see check_grads and the invariance tests
        return
    np.testing.assert_allclose(np.asarray(g_lw), gw, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(g_ll), gl, rtol=1e-9, atol=1e-12)


def test_check_grads_float64_every_pairwise_loss(rng):
    """Reverse-mode autodiff vs finite differences (order 1) of all pairwise losses at once: the
    function returns every loss's per-example values side by side (one compilation)."""
    d = pairwise_data(rng, b=6)
    # a detached (stop_gradient) batch statistic is not differentiated by design: use a fixed shift there
    cases = {name: next(h for h in HPARAMS[name][::-1] if None not in h.values()) for name in sorted(HPARAMS)}

    def f(lw, ll, rw, rl):
        b = losses.PairwiseLogps(
            chosen_logps=lw, rejected_logps=ll, ref_chosen_logps=rw, ref_rejected_logps=rl,
            chosen_lengths=d["nw"], rejected_lengths=d["nl"],
        )
        return jnp.stack([losses.get(name)(b, validate=False, **hp) for name, hp in cases.items()])

    with jax.enable_x64():
        args = tuple(jnp.asarray(d[k]) for k in ("lw", "ll", "rw", "rl"))
        check_grads(jax.jit(f), args, order=1, modes=("rev",), eps=1e-5, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 7.0])
def test_dpo_zero_margin_is_log2_for_any_beta(beta):
    z = np.array([0.0, -3.0, -10.0])
    b = losses.PairwiseLogps(chosen_logps=z, rejected_logps=z + 1.5, ref_chosen_logps=z, ref_rejected_logps=z + 1.5)
    np.testing.assert_allclose(np.asarray(jit_loss("dpo", beta=beta)(b)), np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("average", [False, True])
def test_ipo_minimised_at_margin_one_over_two_beta(beta, average):
    target = 1.0 / (2.0 * beta)
    n_w, n_l = 4.0, 7.0
    with jax.enable_x64():

        @jax.jit
        def loss_at(h):  # put the whole (averaged) margin on the chosen response
            scale = n_w if average else 1.0
            b = losses.PairwiseLogps(
                chosen_logps=jnp.atleast_1d(h * scale), rejected_logps=jnp.zeros(1),
                ref_chosen_logps=jnp.zeros(1), ref_rejected_logps=jnp.zeros(1),
                chosen_lengths=jnp.full(1, n_w), rejected_lengths=jnp.full(1, n_l),
            )
            return losses.get("ipo")(b, validate=False, beta=beta, ipo_average=average)[0]

        grid = target + np.linspace(-1.0, 1.0, 201) * target
        values = np.array([float(loss_at(h)) for h in grid[::20]] + [float(loss_at(target))])
        assert float(loss_at(target)) == pytest.approx(0.0, abs=1e-12)
        assert float(jax.grad(loss_at)(jnp.float64(target))) == pytest.approx(0.0, abs=1e-9)
        assert values.argmin() == len(values) - 1 or values.min() == pytest.approx(0.0, abs=1e-12)
        assert float(loss_at(target * 1.1)) > 0 and float(loss_at(target * 0.9)) > 0


def test_cdpo_minimiser_is_finite():
    eps, beta = 0.1, 0.5
    star = np.log((1 - eps) / eps) / beta
    with jax.enable_x64():
        f = lambda h: losses.get("cdpo")(  # noqa: E731
            losses.PairwiseLogps(
                chosen_logps=jnp.atleast_1d(h), rejected_logps=jnp.zeros(1),
                ref_chosen_logps=jnp.zeros(1), ref_rejected_logps=jnp.zeros(1),
            ), validate=False, beta=beta, label_smoothing=eps,
        )[0]
        assert float(jax.jit(jax.grad(f))(jnp.float64(star))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_reference_free_losses_ignore_reference_fields(name, rng):
    d = pairwise_data(rng)
    hp = HPARAMS[name][-1]
    without = jit_loss(name, **hp)(to_pairwise(d, np.float32, reference=False))
    d2 = {**d, "rw": rng.normal(0, 50, 12), "rl": rng.normal(0, 50, 12)}
    with_ref = jit_loss(name, **hp)(to_pairwise(d2, np.float32))
    np.testing.assert_array_equal(np.asarray(without), np.asarray(with_ref))
    assert not losses.spec(name).needs_reference
    # even non-finite reference values are ignored: not read, not validated
    d3 = to_pairwise({**d, "rw": np.full(12, np.nan), "rl": np.full(12, np.inf)}, np.float32)
    _validate.check_batch(losses.spec(name), d3, {**losses.spec(name).hparams, **hp})
    np.testing.assert_array_equal(np.asarray(jit_loss(name, **hp)(d3)), np.asarray(without))


def _extreme_batch(dtype):
    vals = np.array([0.0, -1e4])
    grid = np.array(np.meshgrid(vals, vals, vals, vals, indexing="ij")).reshape(4, -1)
    lw, ll, rw, rl = grid  # margins h = (lw - rw) - (ll - rl) up to ±2e4
    n = np.where(np.arange(grid.shape[1]) % 2 == 0, 1.0, 1000.0)
    return losses.PairwiseLogps(
        chosen_logps=jnp.asarray(lw, dtype), rejected_logps=jnp.asarray(ll, dtype),
        ref_chosen_logps=jnp.asarray(rw, dtype), ref_rejected_logps=jnp.asarray(rl, dtype),
        chosen_lengths=jnp.asarray(n, dtype), rejected_lengths=jnp.asarray(n[::-1], dtype),
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_finite_loss_and_gradient_at_margins_1e4(dtype):
    """β = 1 and |h| ∈ {0, 1e4, 2e4}: |βh| up to 2e4 (β = 0.1 only shrinks the arguments)."""
    batch = _extreme_batch(dtype)

    @jax.jit
    def all_values_and_grads(b):  # one compilation for every loss
        out = {}
        for name in PAIRWISE:
            hp = {"beta": 1.0} if "beta" in losses.spec(name).hparams else {}
            fn = losses.get(name)
            out[name] = (fn(b, validate=False, **hp), jax.grad(lambda b, fn=fn, hp=hp: fn(b, validate=False, **hp).sum())(b))
        return out

    for name, (value, grads) in all_values_and_grads(batch).items():
        assert value.dtype == jnp.float32, name  # computed in float32 even for bf16 inputs
        assert np.isfinite(np.asarray(value)).all(), name
        for field, g in grads.__dict__.items():
            if g is not None:
                assert g.dtype == dtype
                assert np.isfinite(np.asarray(g, np.float32)).all(), (name, field)


def test_discopop_matches_naive_formula_where_naive_is_finite(rng):
    d = pairwise_data(rng)
    with jax.enable_x64():
        got = np.asarray(jit_loss("discopop", beta=0.5, discopop_tau=0.05)(to_pairwise(d)))
    z = 0.5 * ((d["lw"] - d["rw"]) - (d["ll"] - d["rl"]))
    m = 1 / (1 + np.exp(-z / 0.05))
    naive = -np.log(1 / (1 + np.exp(-z))) * (1 - m) + np.exp(-z) * m
    np.testing.assert_allclose(got, naive, rtol=1e-9)


def test_bco_pair_reward_shift_none_is_batch_mean(rng):
    d = pairwise_data(rng)
    beta = 0.3
    delta = beta * 0.5 * ((d["lw"] - d["rw"]).mean() + (d["ll"] - d["rl"]).mean())
    with jax.enable_x64():
        a = jit_loss("bco_pair", beta=beta, reward_shift=None)(to_pairwise(d))
        b = jit_loss("bco_pair", beta=beta, reward_shift=float(delta))(to_pairwise(d))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)

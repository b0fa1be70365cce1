"""Unpaired (KTO, BCO) and listwise (PRO, LiPO-λ) losses against numpy loops; ties, ragged lists, grads."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bench import reference_numpy as ref
from jalign import losses
from jalign.losses import _validate
from tests.losses.cases import jit_loss, listwise_data, to_listwise, to_unpaired, unpaired_data

UNPAIRED_CASES = [
    ("kto", {}),
    ("kto", {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 0.5}),
    ("kto", {"beta": 2.0, "z0": 0.7}),
    ("bco", {}),
    ("bco", {"beta": 0.5}),
    ("bco", {"beta": 2.0, "reward_shift": -0.4}),
]


@pytest.mark.parametrize("name,hp", UNPAIRED_CASES)
def test_unpaired_values_vs_numpy(name, hp, rng):
    u = unpaired_data(rng)
    with jax.enable_x64():
        got = np.asarray(jit_loss(name, **hp)(to_unpaired(u)))
    np.testing.assert_allclose(got, ref.UNPAIRED[name](u, **hp), rtol=1e-10, atol=1e-12)


def test_kto_reference_point_is_clamped_and_detached(rng):
    u = unpaired_data(rng)
    u["kl_logps"] = u["ref_kl_logps"] - 5.0  # negative KL estimate -> z0 = 0
    with jax.enable_x64():
        a = jit_loss("kto")(to_unpaired(u))
        b = jit_loss("kto", z0=0.0)(to_unpaired(u))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)

        u2 = unpaired_data(np.random.default_rng(5))

        def total(kl):
            batch = to_unpaired(u2)
            batch = losses.UnpairedLogps(**{**batch.__dict__, "kl_logps": kl})
            return losses.get("kto")(batch, validate=False).sum()

        assert np.all(np.asarray(jax.jit(jax.grad(total))(jnp.asarray(u2["kl_logps"]))) == 0.0)


@pytest.mark.parametrize("name,hp", [("kto", {"z0": 0.3}), ("bco", {"reward_shift": 0.1})])
def test_unpaired_check_grads(name, hp, rng):
    u = unpaired_data(rng, b=6)

    def f(lp, rp):
        return losses.get(name)(
            losses.UnpairedLogps(logps=lp, ref_logps=rp, desirable=u["desirable"]), validate=False, **hp
        )

    with jax.enable_x64():
        check_grads(jax.jit(f), (jnp.asarray(u["logps"]), jnp.asarray(u["ref_logps"])), order=1, modes=("rev",), eps=1e-5)


@pytest.mark.parametrize(
    "name,hp,ties,ragged",
    [
        ("pro", {}, False, False),
        ("pro", {"beta": 3.0}, True, True),
        ("pro", {"beta": 0.5, "length_normalize": False}, True, False),
        ("lipo", {}, False, False),
        ("lipo", {"beta": 1.0}, True, True),
        ("lipo", {"beta": 0.5}, False, True),
    ],
)
def test_listwise_values_vs_numpy(name, hp, ties, ragged, rng):
    l = listwise_data(rng, b=10, k=5, ties=ties, ragged=ragged)
    with jax.enable_x64():
        got = np.asarray(jit_loss(name, **hp)(to_listwise(l)))
    np.testing.assert_allclose(got, ref.LISTWISE[name](l, **hp), rtol=1e-10, atol=1e-12)


def test_pro_without_ties_is_the_textbook_plackett_luce(rng):
    l = listwise_data(rng, b=6, k=4)
    with jax.enable_x64():
        got = np.asarray(jit_loss("pro", length_normalize=False)(to_listwise(l)))
    for b in range(6):
        order = np.argsort(-l["scores"][b])
        assert got[b] == pytest.approx(ref.pro_permutation(l["logps"][b], order), rel=1e-12)


def test_pro_ties_equal_breslow_average_over_tie_orders():
    """Breslow's risk set: with a tie, each tied item's denominator contains the other tied item."""
    s = np.array([[0.3, -1.2, 0.8]])
    scores = np.array([[1.0, 1.0, 0.0]])
    b = losses.ListwiseLogps(logps=s, scores=scores)
    with jax.enable_x64():
        got = float(jit_loss("pro", length_normalize=False)(b)[0])
    lse = np.logaddexp.reduce
    want = (lse(s[0]) - s[0, 0]) + (lse(s[0]) - s[0, 1]) + (s[0, 2] - s[0, 2])
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", ["pro", "lipo"])
def test_listwise_permutation_invariance(name, rng):
    l = listwise_data(rng, b=6, k=5, ties=True, ragged=True)
    perm = rng.permutation(5)
    lp = {k: (None if v is None else v[:, perm]) for k, v in l.items()}
    with jax.enable_x64():
        a = np.asarray(jit_loss(name)(to_listwise(l)))
        b = np.asarray(jit_loss(name)(to_listwise(lp)))
    np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("name", ["pro", "lipo"])
def test_listwise_masked_equals_sliced_and_padding_is_inert(name, rng):
    l = listwise_data(rng, b=4, k=3)
    padded = {k: np.concatenate([v, np.full((4, 2), np.nan)], axis=1) for k, v in l.items() if v is not None}
    padded["mask"] = np.arange(5)[None, :].repeat(4, 0) < 3
    with jax.enable_x64():
        a = np.asarray(jit_loss(name)(to_listwise(l)))
        _validate.check_batch(losses.spec(name), to_listwise(padded), losses.spec(name).hparams)  # masked NaNs ok
        b = np.asarray(jit_loss(name)(to_listwise(padded)))
        np.testing.assert_allclose(a, b, rtol=1e-12)

        def total(logps):
            batch = to_listwise(padded)
            batch = losses.ListwiseLogps(**{**batch.__dict__, "logps": logps})
            return losses.get(name)(batch, validate=False).sum()

        g = np.asarray(jax.jit(jax.grad(total))(jnp.asarray(padded["logps"])))
    assert np.isfinite(g).all() and np.all(g[:, 3:] == 0.0) and np.any(g[:, :3] != 0.0)


def test_single_item_list_has_zero_loss(rng):
    l = listwise_data(rng, b=3, k=4, ragged=False)
    l["mask"] = np.zeros((3, 4), bool)
    l["mask"][:, 0] = True
    for name in ("pro", "lipo"):
        assert np.all(np.asarray(jit_loss(name)(to_listwise(l))) == 0.0)


def test_lipo_nonzero_gradient_at_initialisation():
    """At init (policy = reference) all model scores tie; ties broken against the labels keep λ-weights > 0."""
    logps = np.full((2, 4), -7.0)
    b = losses.ListwiseLogps(logps=logps, ref_logps=logps, scores=np.array([[3.0, 1.0, 2.0, 0.0], [0, 1, 1, 2.0]]))
    g = jax.jit(jax.grad(lambda x: losses.get("lipo")(losses.ListwiseLogps(logps=x, ref_logps=logps, scores=b.scores)).sum()))(
        jnp.asarray(logps, jnp.float32)
    )
    g = np.asarray(g)
    # the gradient raises the better items and lowers the worse ones
    assert g[0, 0] < 0 and g[0, 3] > 0 and g[1, 3] < 0 and g[1, 0] > 0


@pytest.mark.parametrize("name", ["pro", "lipo"])
def test_listwise_check_grads(name, rng):
    l = listwise_data(rng, b=3, k=4)  # continuous scores: no ties, ranks locally constant

    def f(logps, ref_logps):
        return losses.get(name)(
            losses.ListwiseLogps(logps=logps, ref_logps=ref_logps, scores=l["scores"], lengths=l["lengths"]),
            validate=False,
        )

    with jax.enable_x64():
        check_grads(jax.jit(f), (jnp.asarray(l["logps"]), jnp.asarray(l["ref_logps"])), order=1, modes=("rev",), eps=1e-6)


def test_listwise_and_unpaired_finite_at_1e4():
    vals = [0.0, -1e4]
    rows = np.array(list(itertools.product(vals, repeat=4)))  # [16, 4]
    for dtype in (jnp.float32, jnp.bfloat16):
        lb = losses.ListwiseLogps(
            logps=jnp.asarray(rows, dtype), ref_logps=jnp.asarray(rows[::-1], dtype),
            scores=jnp.asarray(np.tile([3.0, 0.0, 1.0, 1.0], (16, 1)), dtype), lengths=jnp.ones((16, 4), dtype),
        )
        ub = losses.UnpairedLogps(
            logps=jnp.asarray(rows[:, 0], dtype), ref_logps=jnp.asarray(rows[:, 1], dtype),
            desirable=np.arange(16) % 2 == 0, kl_logps=jnp.asarray(rows[:, 2], dtype),
            ref_kl_logps=jnp.asarray(rows[:, 3], dtype),
        )

        @jax.jit
        def run(lb, ub):
            out = {}
            for name, batch in (("pro", lb), ("lipo", lb), ("kto", ub), ("bco", ub)):
                fn = losses.get(name)
                out[name] = jax.value_and_grad(lambda b, fn=fn: fn(b, validate=False, beta=1.0).sum(), allow_int=True)(batch)
            return out

        for name, (v, g) in run(lb, ub).items():
            assert np.isfinite(float(v)), name
            for field in ("logps", "ref_logps"):
                assert np.isfinite(np.asarray(getattr(g, field), np.float32)).all(), (name, field)

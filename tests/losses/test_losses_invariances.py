"""Invariances of every registered loss: jit == eager, sharded == unsharded, vmap == loop, per-example
independence (and the documented coupling of the batch-coupled losses).

All losses are evaluated inside one jitted function per input layout, to keep compilations few.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jalign import losses
from tests.losses.cases import (
    HPARAMS,
    listwise_data,
    pairwise_data,
    to_listwise,
    to_pairwise,
    to_unpaired,
    unpaired_data,
)

B = 16
KINDS = ("pairwise", "unpaired", "listwise")
# (label, loss, hparams); non-default hyperparameters where available.
VARIANTS = [(n, n, HPARAMS[n][1] if len(HPARAMS[n]) > 1 else {}) for n in sorted(HPARAMS)]
VARIANTS += [
    ("bco_pair/batch-shift", "bco_pair", {"reward_shift": None, "beta": 0.5}),
    ("kto", "kto", {"beta": 0.3, "desirable_weight": 1.5, "undesirable_weight": 0.7}),
    ("kto/z0", "kto", {"beta": 0.3, "z0": 0.4}),
    ("bco", "bco", {"beta": 0.3}),
    ("bco/shift", "bco", {"beta": 0.3, "reward_shift": 0.2}),
    ("pro", "pro", {"beta": 2.0}),
    ("pro/sum", "pro", {"beta": 0.5, "length_normalize": False}),
    ("lipo", "lipo", {"beta": 0.5}),
]
COUPLED = {"aot", "aot_unpaired", "bco_pair/batch-shift", "kto", "bco"}


def test_variants_cover_every_registered_loss():
    mine = {n for n in losses.names() if losses.spec(n).kind in KINDS}
    assert mine == {v[1] for v in VARIANTS}
    for label, name, _ in VARIANTS:
        if losses.spec(name).batch_coupled and label not in COUPLED:
            assert label in ("kto/z0", "bco/shift")
        if label in COUPLED and name not in ("bco_pair",):
            assert losses.spec(name).batch_coupled, label


def _batches(seed=0, b=B):
    rng = np.random.default_rng(seed)
    return (
        to_pairwise(pairwise_data(rng, b), np.float32),
        to_unpaired(unpaired_data(rng, b), np.float32),
        to_listwise(listwise_data(rng, b, k=5, ties=True, ragged=True), np.float32),
    )


def all_losses(pw, up, lw):
    batches = {"pairwise": pw, "unpaired": up, "listwise": lw}
    return {
        label: losses.get(name)(batches[losses.spec(name).kind], validate=False, **hp)
        for label, name, hp in VARIANTS
    }


_jitted = jax.jit(all_losses)


@pytest.fixture(scope="module")
def reference_run():
    batches = _batches()
    return batches, jax.device_get(_jitted(*batches))


def _assert_close(a, b, rtol=2e-6, atol=1e-6):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=rtol, atol=atol, err_msg=k)


def test_jit_equals_eager(reference_run):
    batches, jitted = reference_run
    eager = {
        label: losses.get(name)({"pairwise": batches[0], "unpaired": batches[1], "listwise": batches[2]}[
            losses.spec(name).kind], **hp)
        for label, name, hp in VARIANTS
    }
    _assert_close(eager, jitted)
    for k, v in jitted.items():
        assert v.shape == (B,), k


def _shard(batch, mesh):
    sharding = NamedSharding(mesh, P("data"))

    def put(x):
        if x is None:
            return None
        x = np.asarray(x)
        spec = P("data") if x.ndim == 1 else P("data", None)
        return jax.device_put(x, NamedSharding(mesh, spec))

    del sharding
    return type(batch)(**{f.name: put(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_sharded_over_8_devices_equals_unsharded(reference_run, mesh8, axis_type):
    batches, want = reference_run
    mesh = mesh8 if axis_type == "explicit" else jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = tuple(_shard(b, mesh) for b in batches)
    assert len(sharded[0].chosen_logps.sharding.device_set) == 8
    got = jax.device_get(_jitted(*sharded))
    _assert_close(got, want)


def test_vmap_over_stacked_batches_equals_loop():
    stacks = [_batches(seed) for seed in (1, 2, 3)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *stacks)
    got = jax.device_get(jax.jit(jax.vmap(all_losses))(*stacked))
    for i, bs in enumerate(stacks):
        one = jax.device_get(_jitted(*bs))
        _assert_close({k: v[i] for k, v in got.items()}, one)


def _perturb_first(batch, rng):
    """Change every float field of example 0 (binary fields and lengths kept valid)."""
    out = {}
    for f in dataclasses.fields(batch):
        x = getattr(batch, f.name)
        if x is None or f.name in ("desirable", "mask"):
            out[f.name] = x
            continue
        x = np.array(x)
        if "length" in f.name:
            x[0] = x[0] + 3
        elif f.name == "scores":
            x[0] = x[0][::-1] + 1.0
        else:
            x[0] = x[0] - rng.uniform(0.5, 5.0, np.shape(x[0]))
        out[f.name] = x
    return type(batch)(**out)


def test_per_example_independence_and_documented_coupling(reference_run):
    batches, base = reference_run
    rng = np.random.default_rng(7)
    moved = jax.device_get(_jitted(*(_perturb_first(b, rng) for b in batches)))
    for label, _, _ in VARIANTS:
        others_equal = np.array_equal(np.asarray(base[label])[1:], np.asarray(moved[label])[1:])
        if label in COUPLED:
            assert not others_equal, f"{label} is documented as batch-coupled"
        else:
            assert others_equal, f"{label}: example 0 leaked into the other examples"
            assert not np.array_equal(np.asarray(base[label])[0], np.asarray(moved[label])[0]), label


def test_aot_is_the_order_statistic_loss(reference_run):
    """AOT's output is a function of the sorted batch: permuting the examples does not change it."""
    batches, base = reference_run
    perm = np.random.default_rng(3).permutation(B)
    permuted = jax.tree.map(lambda x: np.asarray(x)[perm], batches)
    out = jax.device_get(_jitted(*permuted))
    for label in ("aot", "aot_unpaired"):
        np.testing.assert_allclose(out[label], base[label], rtol=1e-6)
    for label in ("dpo", "kto", "pro", "lipo"):  # per-example losses permute with the examples
        np.testing.assert_allclose(out[label], np.asarray(base[label])[perm], rtol=1e-6)


def test_vmap_over_traced_beta_equals_loop(reference_run):
    """Hyperparameters may be traced (e.g. a β sweep under vmap): no Python-level branching on their values."""
    batches, _ = reference_run
    betas = np.array([0.05, 0.3, 2.0], np.float32)
    names = ["dpo", "ipo", "discopop", "simpo", "kto", "lipo", "aot"]
    kinds = {"pairwise": batches[0], "unpaired": batches[1], "listwise": batches[2]}

    @jax.jit
    def sweep(bs):
        return {n: jax.vmap(lambda beta, n=n: losses.get(n)(kinds[losses.spec(n).kind], beta=beta))(bs) for n in names}

    got = jax.device_get(sweep(betas))
    for n in names:
        for i, beta in enumerate(betas):
            want = losses.get(n)(kinds[losses.spec(n).kind], validate=False, beta=float(beta))
            np.testing.assert_allclose(got[n][i], np.asarray(want), rtol=2e-5, atol=1e-6, err_msg=n)

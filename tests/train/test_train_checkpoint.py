"""Checkpoints: exact round trip, keep-N, unfinished saves ignored, non-finite stops, kill + resume."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import small_cfg
from flax import nnx

from jalign.train import Checkpointer, NonFiniteError, train
from jalign.train.checkpoint import from_nested_dict, to_nested_dict
from jalign.train.config import base_config
from jalign.train.metrics import read_jsonl
from jalign.train.objectives import make_objective
from jalign.train.plugins import tiny
from jalign.train.step import init_state, make_optimizer, make_train_step

ROOT = Path(__file__).resolve().parents[2]


def _state():
    cfg = base_config()
    tx, _ = make_optimizer(cfg.optim, 10)  # adamw + clipping: nested optax state
    g, st = init_state(tiny.tiny_lm(0, d_model=4, d_hidden=8), tx, seed=3)
    st = st.replace(step=jnp.asarray(7, jnp.int32),
                    params=jax.tree.map(lambda x: x + 0.25, st.params))
    return st


def _assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nested_dict_layout_roundtrip():
    st = _state()
    nested = to_nested_dict(st)
    assert set(nested) == {"params", "opt_state", "ref_params", "step", "rng"}  # model_state has no leaves
    assert set(nested["opt_state"]) == {"1"}  # chain(clip, adamw); the clip state has no arrays
    assert nested["params"]["embed"]["embedding"].shape == (259, 4)
    _assert_trees_equal(from_nested_dict(nested, st), st)


def test_roundtrip_is_exact_and_keeps_n(tmp_path):
    st = _state()
    ck = Checkpointer(tmp_path / "ck", keep=2, async_save=True)
    for s in range(1, 5):
        ck.save(s, st.replace(step=jnp.asarray(s, jnp.int32)), {"epoch": 0, "position": 8 * s}, {"s": s})
    ck.wait()
    assert ck.all_steps() == [3, 4]
    like = jax.tree.map(jnp.zeros_like, st)
    restored, data, meta = ck.restore(None, like)
    ck.close()
    _assert_trees_equal(restored, st.replace(step=jnp.asarray(4, jnp.int32)))
    assert data == {"epoch": 0, "position": 32} and meta == {"s": 4}


def test_unfinished_save_is_never_picked_up(tmp_path):
    st = _state()
    ck = Checkpointer(tmp_path / "ck", keep=3, async_save=False)
    ck.save(2, st, {"epoch": 0, "position": 16})
    ck.close()
    # A save killed half-way: orbax's temporary directory, never renamed to its final name.
    tmp = tmp_path / "ck" / "5.orbax-checkpoint-tmp-1700000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_bytes(b"\x00" * 10)
    ck2 = Checkpointer(tmp_path / "ck", keep=3)
    assert ck2.latest_step() == 2 and ck2.all_steps() == [2]
    restored, data, _ = ck2.restore(None, st)
    ck2.close()
    _assert_trees_equal(restored, st)
    assert data["position"] == 16


class PoisonLM(tiny.TinyLM):
    """TinyLM whose logits become NaN on any sequence that contains token 255."""

    def __call__(self, ids_BxT, attention_mask=None):
        logits = super().__call__(ids_BxT, attention_mask)
        poisoned = (jnp.asarray(ids_BxT) == 255).any(axis=1)[:, None, None]
        return jnp.where(poisoned, jnp.nan, logits)


def test_non_finite_loss_stops_with_diagnostic_and_keeps_last_good_checkpoint(tmp_path):
    ex = tiny.synthetic_sft_examples(32, 24)
    ex[3 * 8 + 2]["ids"][1] = 255  # the 4th batch (step 4) contains a poisoned sequence
    src = tiny.InMemoryBatchSource(ex, 8, shuffle=False)
    cfg = small_cfg(mode="sft", workdir=str(tmp_path), train__steps=6, checkpoint__every=1,
                    checkpoint__async_save=False, train__tensorboard=False)
    model = PoisonLM(d_model=8, d_hidden=16, rngs=nnx.Rngs(0))
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 4") as ei:
        train(cfg, model=model, source=src)
    assert ei.value.step == 4 and ei.value.quantities == ["loss"] and ei.value.last_checkpoint == 3
    ck = Checkpointer(tmp_path / "checkpoints")
    assert ck.all_steps() == [1, 2, 3]
    like = init_state(model, make_optimizer(cfg.optim, 6)[0], reference=False)[1]
    st, data, _ = ck.restore(None, like)
    ck.close()
    assert int(st.step) == 3 and data == {"epoch": 0, "position": 24}
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(st.params))
    last = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert last["step"] == 4 and last["finite/loss"] == 0.0 and last["loss"] == "nan"


class SqrtLM(tiny.TinyLM):
    """Finite loss, NaN gradient: logits · sqrt(|z|) with the parameter z = 0."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.z = nnx.Param(jnp.zeros(()))

    def __call__(self, ids_BxT, attention_mask=None):
        return super().__call__(ids_BxT, attention_mask) * jnp.sqrt(jnp.abs(self.z[...]))


def test_non_finite_gradient_only_is_named_and_update_skipped():
    tx, _ = make_optimizer(small_cfg().optim, 4)
    g, st = init_state(SqrtLM(d_model=4, d_hidden=8, rngs=nnx.Rngs(0)), tx, reference=False)
    step = jax.jit(make_train_step(g, make_objective("sft"), tx))
    b = next(tiny.InMemoryBatchSource(tiny.synthetic_sft_examples(8, 24), 8))
    st1, m = step(st, b)
    assert float(m["finite/loss"]) == 1.0 and float(m["finite/grads"]) == 0.0
    np.testing.assert_allclose(float(m["loss"]), np.log(259.0), rtol=1e-6)  # uniform logits
    assert int(st1.step) == 0
    _assert_trees_equal(st1.params, st.params)

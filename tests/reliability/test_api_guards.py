"""Issue #25 items 7 and 11: an empty batch, NaN weights and escaping weight paths are refused; CHES of an
empty response is NaN under tracing (raises outside)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import diagnostics as dg
from jalign import losses
from jalign.losses import PairwiseLogps
from jalign.models import ModelConfig, create_model, load_pretrained, safetensors_io, save_pretrained


def test_dpo_on_an_empty_batch_raises():
    """"dpo" is the registered alias of the sigmoid (DPO) loss; an empty batch used to return [] (mean NaN)."""
    empty = PairwiseLogps(chosen_logps=jnp.zeros(0), rejected_logps=jnp.zeros(0), ref_chosen_logps=jnp.zeros(0),
                          ref_rejected_logps=jnp.zeros(0))
    with pytest.raises(ValueError, match=r"loss 'sigmoid': empty batch \(0 examples\)"):
        losses.get("dpo")(empty)
    one = PairwiseLogps(chosen_logps=jnp.zeros(1), rejected_logps=jnp.zeros(1), ref_chosen_logps=jnp.zeros(1),
                        ref_rejected_logps=jnp.zeros(1))
    np.testing.assert_allclose(np.asarray(losses.get("dpo")(one)), [np.log(2.0)], rtol=1e-6)  # -log σ(0)


@pytest.fixture
def model_dir(tmp_path):
    m = create_model(ModelConfig(arch="gpt2", vocab_size=40, d_model=16, n_layers=1, n_heads=2), seed=0)
    return save_pretrained(m, tmp_path / "model")


def test_nan_weights_are_refused_naming_tensor_and_file(model_dir):
    f = model_dir / "model.safetensors"
    t = safetensors_io.load_file(f)
    name = sorted(k for k in t if t[k].dtype.kind == "f" and t[k].ndim == 2)[0]
    t[name] = t[name].copy()
    t[name].flat[3] = np.nan
    safetensors_io.save_file(t, f, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{f}: tensor '{name}' holds NaN values \(1 of {t[name].size}\)"):
        load_pretrained(model_dir)


@pytest.mark.parametrize("bad", ["ABS", "../outside.safetensors", "sub/../../outside.safetensors"])
def test_index_paths_outside_the_model_directory_are_refused(model_dir, tmp_path, bad):
    t = safetensors_io.load_file(model_dir / "model.safetensors")
    outside = tmp_path / "outside.safetensors"
    safetensors_io.save_file(t, outside, metadata={"format": "pt"})
    (model_dir / "model.safetensors").unlink()
    entry = str(outside) if bad == "ABS" else bad
    index = model_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {k: entry for k in t}}))
    with pytest.raises(ValueError, match=r"weight_map entry .* points outside the model directory"):
        load_pretrained(model_dir)


def _ches_naive(hw, hl, mw, ml, ln):
    """Definition 2/3 in float64 numpy; NaN where either response mask is empty (the documented value)."""
    out = []
    for b in range(hw.shape[0]):
        nw, nl = int(mw[b].sum()), int(ml[b].sum())
        if nw == 0 or nl == 0:
            out.append(np.nan)
            continue
        sw = np.asarray(hw[b], np.float64)[mw[b]].sum(0)
        sl = np.asarray(hl[b], np.float64)[ml[b]].sum(0)
        out.append(sw @ sl / (nw * nl) - sw @ sw / nw**2 if ln else sw @ sl - sw @ sw)
    return np.array(out)


@pytest.mark.parametrize("ln", [False, True])
def test_ches_empty_masks_are_nan_under_tracing_and_raise_outside(ln):
    rng = np.random.default_rng(0)
    hw = rng.normal(size=(5, 6, 3)).astype(np.float32)
    hl = rng.normal(size=(5, 4, 3)).astype(np.float32)
    mw, ml = rng.random((5, 6)) < 0.6, rng.random((5, 4)) < 0.6
    mw[:, 0] = ml[:, 0] = True
    mw[1] = False  # chosen empty
    ml[3] = False  # rejected empty
    mw[4] = ml[4] = False  # both empty
    want = _ches_naive(hw, hl, mw, ml, ln)
    assert np.isnan(want).tolist() == [False, True, False, True, True]
    f = lambda *a: dg.ches_scores(*a, length_normalized=ln)  # noqa: E731
    jitted = np.asarray(jax.jit(f)(hw, hl, mw, ml))
    vmapped = np.asarray(jax.vmap(lambda *a: f(*(x[None] for x in a))[0])(hw, hl, mw, ml))
    for got in (jitted, vmapped):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # NaN positions compare equal
    ok = ~np.isnan(want)
    np.testing.assert_allclose(np.asarray(f(hw[ok], hl[ok], mw[ok], ml[ok])), jitted[ok], rtol=1e-6)
    with pytest.raises(ValueError, match=r"chosen_mask selects no position \(empty response\) at example 1"):
        f(hw, hl, mw, ml)
    # The empty rows do not poison gradients of the others (nor get NaN gradients themselves).
    g = jax.jit(jax.grad(lambda h: jnp.nansum(f(h, hl, mw, ml))))(hw)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(np.asarray(g)[[1, 4]], 0.0)

"""Issue #25 items 7 and 11: an empty batch, NaN weights and escaping weight paths are refused."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

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

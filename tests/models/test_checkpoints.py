"""Hugging Face checkpoints: logits against PyTorch golden fixtures, export round trip, bad input."""

import json
import re
import shutil
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.models import (
    ModelConfig,
    create_model,
    forward,
    load_pretrained,
    safetensors_io,
    save_pretrained,
    token_logprobs,
)

GOLDEN = Path(__file__).parent / "golden"
ARCHS = ["gpt2", "llama", "llama3", "qwen2"]  # llama3: Llama block with Llama-3 RoPE rescaling


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_huggingface(arch):
    """Unpadded, and left-/right-padded rows (positions from the mask == HF with explicit position_ids)."""
    model = load_pretrained(GOLDEN / arch)
    assert model.cfg.arch == arch.rstrip("3")
    ref = np.load(GOLDEN / arch / "ref.npz")
    out = forward(model, jnp.asarray(ref["ids"]), jnp.ones(ref["ids"].shape, jnp.int32), return_hidden=True)
    assert np.abs(ref["logits"]).max() > 1.0  # randomised weights: a non-trivial comparison
    np.testing.assert_allclose(out.logits, ref["logits"], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(out.hidden_states, ref["hidden"], atol=2e-5, rtol=1e-5)
    m = ref["mask_pad"].astype(bool)
    assert (~m[0, :4]).all() and (~m[1, 9:]).all()  # row 0 left-padded, row 1 right-padded
    pad = forward(model, jnp.asarray(ref["ids_pad"]), jnp.asarray(ref["mask_pad"]), return_hidden=True)
    np.testing.assert_allclose(np.asarray(pad.logits)[m], ref["logits_pad"][m], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_reproduces_huggingface_file(arch, tmp_path):
    """save_pretrained(load_pretrained(x)) writes the same tensor names, shapes and values as x."""
    model = load_pretrained(GOLDEN / arch)
    save_pretrained(model, tmp_path)
    a = safetensors_io.load_file(GOLDEN / arch / "model.safetensors")
    b = safetensors_io.load_file(tmp_path / "model.safetensors")
    a.pop("lm_head.weight", None) if model.cfg.tie_embeddings else None
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    hf = json.loads((GOLDEN / arch / "config.json").read_text())
    ours = json.loads((tmp_path / "config.json").read_text())
    for k in ("model_type", "vocab_size", "tie_word_embeddings", "eos_token_id"):
        assert ours[k] == hf[k], k
    again = load_pretrained(tmp_path)
    assert again.cfg == model.cfg


def test_bfloat16_load_close_to_float32(tmp_path):
    m32 = load_pretrained(GOLDEN / "llama")
    m16 = load_pretrained(GOLDEN / "llama", param_dtype="bfloat16", dtype="bfloat16")
    assert m16.embed[...].dtype == jnp.bfloat16
    ids = jnp.asarray(np.load(GOLDEN / "llama" / "ref.npz")["ids"])
    l32, l16 = forward(m32, ids).logits, forward(m16, ids).logits
    assert l16.dtype == jnp.float32  # logits always float32
    lp32, lp16 = jax.jit(token_logprobs)(l32, ids), jax.jit(token_logprobs)(l16, ids)
    assert float(jnp.abs(lp32 - lp16).max()) < 0.15
    save_pretrained(m16, tmp_path)  # bf16 round trip through our safetensors writer
    assert safetensors_io.read_header(tmp_path / "model.safetensors")[0]["model.norm.weight"]["dtype"] == "BF16"
    back = load_pretrained(tmp_path, dtype="bfloat16")
    assert back.cfg == m16.cfg
    chex.assert_trees_all_equal(nnx.state(back, nnx.Param), nnx.state(m16, nnx.Param), strict=True)  # bf16 exact


def test_pickle_checkpoints_refused(tmp_path):
    (tmp_path / "config.json").write_text((GOLDEN / "gpt2" / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ValueError, match="refusing to load a pickle"):
        load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="refusing to load a pickle"):
        load_pretrained(tmp_path / "pytorch_model.bin")


def test_unknown_architecture(tmp_path):
    shutil.copy(GOLDEN / "gpt2" / "model.safetensors", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ValueError, match="unsupported architecture.*gpt2, llama, qwen2"):
        load_pretrained(tmp_path)


def test_name_and_shape_mismatches_listed(tmp_path):
    t = dict(safetensors_io.load_file(GOLDEN / "llama" / "model.safetensors"))
    t["model.layers.0.mlp.up_proj.weight"] = np.zeros((65, 32), np.float32)
    del t["model.layers.1.self_attn.k_proj.weight"]
    t["model.layers.0.extra.weight"] = np.zeros(3, np.float32)
    safetensors_io.save_file(t, tmp_path / "model.safetensors")
    shutil.copy(GOLDEN / "llama" / "config.json", tmp_path)
    with pytest.raises(ValueError) as e:
        load_pretrained(tmp_path)
    msg = str(e.value)
    assert "3 problems" in msg
    assert "missing tensor 'model.layers.1.self_attn.k_proj.weight'" in msg
    assert "unexpected tensor 'model.layers.0.extra.weight'" in msg
    assert "'model.layers.0.mlp.up_proj.weight' has shape (65, 32), config expects (64, 32)" in msg


def test_config_mismatch_detected(tmp_path):
    """A config.json that disagrees with the tensors (e.g. wrong head count) is caught, not mis-loaded."""
    shutil.copy(GOLDEN / "qwen2" / "model.safetensors", tmp_path)
    c = json.loads((GOLDEN / "qwen2" / "config.json").read_text())
    c["num_key_value_heads"] = 2
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(ValueError, match="k_proj.weight' has shape"):
        load_pretrained(tmp_path)


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"garbage!" * 4)
    shutil.copy(GOLDEN / "gpt2" / "config.json", tmp_path)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_pretrained(tmp_path)


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
    """model.safetensors.index.json + shards (the transformers layout for large models) give the same model."""
    t = safetensors_io.load_file(GOLDEN / "llama" / "model.safetensors")
    names = sorted(t)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f, keys in shards.items():
        safetensors_io.save_file({k: t[k] for k in keys}, tmp_path / f, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(GOLDEN / "llama" / "config.json", tmp_path)
    sharded, single = load_pretrained(tmp_path), load_pretrained(GOLDEN / "llama")
    chex.assert_trees_all_equal(nnx.state(sharded, nnx.Param), nnx.state(single, nnx.Param), strict=True)


def test_safetensors_files_follow_the_specification(tmp_path):
    """The writer's header: spec dtype names, shapes, contiguous little-endian data in order; layouts are
    resolved (a transposed view is stored as its values) and bfloat16 reads back bit-exactly."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    bf = (np.arange(4, dtype=np.float32) / 3).astype(jnp.bfloat16)
    tensors = {"w.T": w.T, "big_endian": np.arange(3, dtype=">i4"), "bf16": bf, "flag": np.array([True, False])}
    safetensors_io.save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    header, start = safetensors_io.read_header(tmp_path / "x.safetensors")
    assert header["__metadata__"] == {"format": "pt"}
    expect = {"w.T": ("F32", [3, 2], 24), "big_endian": ("I32", [3], 12), "bf16": ("BF16", [4], 8),
              "flag": ("BOOL", [2], 2)}
    assert {k: (v["dtype"], v["shape"], v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items()
            if k != "__metadata__"} == expect
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    raw = (tmp_path / "x.safetensors").read_bytes()
    assert len(raw) == start + spans[-1][1] and start % 8 == 0
    b, e = header["w.T"]["data_offsets"]
    assert raw[start + b : start + e] == np.ascontiguousarray(w.T).astype("<f4").tobytes()
    b, e = header["big_endian"]["data_offsets"]
    assert raw[start + b : start + e] == np.arange(3, dtype="<i4").tobytes()
    back = safetensors_io.load_file(tmp_path / "x.safetensors")
    assert back["big_endian"].dtype == np.dtype("<i4") and back["bf16"].dtype == jnp.bfloat16
    chex.assert_trees_all_equal(back, {**tensors, "big_endian": np.arange(3, dtype="<i4")}, strict=True)


def test_safetensors_errors_name_the_file_and_tensor(tmp_path):
    f = tmp_path / "model.safetensors"
    safetensors_io.save_file({"a": np.ones((2, 3), np.float32)}, f)
    data = f.read_bytes()
    f.write_bytes(data[:-4])  # truncated data: 24 bytes of float32 [2, 3], 4 of them cut
    for read in (safetensors_io.load_file, safetensors_io.read_header):
        with pytest.raises(ValueError, match=re.escape(f"{f}: truncated safetensors file: 20 of 24 bytes of "
                                                       "tensor data; tensor 'a' is incomplete (1 tensor(s) cut)")):
            read(f)
    f.write_bytes(b"not a safetensors file at all")  # a foreign file: no plausible header length
    for read in (safetensors_io.load_file, safetensors_io.read_header):
        with pytest.raises(ValueError, match=re.escape(f"{f}: damaged or not a safetensors file")):
            read(f)
    with pytest.raises(ValueError, match="tensor 'c' has unsupported dtype complex128"):
        safetensors_io.save_file({"b": np.ones(2, np.float32), "c": np.ones(2, np.complex128)}, f)
    with pytest.raises(ValueError, match="metadata must map str to str"):
        safetensors_io.save_file({"b": np.ones(2, np.float32)}, f, metadata={"step": 3})


def test_untied_gpt2_round_trip(tmp_path):
    cfg = ModelConfig(arch="gpt2", vocab_size=40, d_model=16, n_layers=1, n_heads=2, tie_embeddings=False)
    m = create_model(cfg, seed=3)
    save_pretrained(m, tmp_path)
    back = load_pretrained(tmp_path)
    chex.assert_trees_all_equal(nnx.state(back, nnx.Param), nnx.state(m, nnx.Param), strict=True)
    ids = jnp.array([[1, 5, 7]])
    np.testing.assert_array_equal(forward(back, ids).logits, forward(m, ids).logits)


def test_llama3_rope_scaling():
    """The llama3 fixture depends on the rescaling (ignoring it changes the logits), and the frequencies
    follow the closed form band by band."""
    from jalign.models.layers import rope_inv_freq

    model = load_pretrained(GOLDEN / "llama3")
    rs = dict(model.cfg.rope_scaling)
    assert rs["rope_type"] == "llama3" and rs["factor"] == 8.0
    f = np.asarray(rope_inv_freq(8, 500000.0, model.cfg.rope_scaling), np.float64)
    base = 500000.0 ** (-np.arange(0, 8, 2) / 8)
    w = 2 * np.pi / base  # wavelengths 6.3 (between 16/4 and 16/1: smoothed), then > 16: divided by 8
    s = (16 / w[0] - 1.0) / (4.0 - 1.0)
    np.testing.assert_allclose(f, [(1 - s) * base[0] / 8 + s * base[0], *(base[1:] / 8)], rtol=1e-6)
    plain = load_pretrained(GOLDEN / "llama3", rope_scaling=None)
    ids = jnp.asarray(np.load(GOLDEN / "llama3" / "ref.npz")["ids"])
    ones = jnp.ones(ids.shape, jnp.int32)
    gap = np.abs(np.asarray(forward(model, ids, ones).logits) - np.asarray(forward(plain, ids, ones).logits)).max()
    assert gap > 1e-2
    with pytest.raises(ValueError, match="only rope_type='llama3'"):
        ModelConfig(arch="llama", rope_scaling={"rope_type": "yarn", "factor": 2.0})

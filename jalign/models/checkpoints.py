"""Hugging Face checkpoints: safetensors + config.json in the GPT-2, Llama and Qwen2 layouts.

Only safetensors are read; pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt``) are refused,
since unpickling runs arbitrary code. Layout facts (from the Hugging Face model definitions):

* GPT-2 uses ``Conv1D`` modules whose ``weight`` is ``[in, out]`` (x @ W); q, k, v are fused in
  ``attn.c_attn`` as ``[D, 3D]`` columns ``(q | k | v)``, each head-major.
* Llama/Qwen2 use ``nn.Linear`` whose ``weight`` is ``[out, in]`` (x @ W.T); heads are major in the output
  dimension; the rotary layout is "rotate_half" (first half / second half of each head).

Internally every weight is ``[in, out]`` with heads split out (``wq`` is ``[D, H, Dh]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jalign.errors import FileFormatError, MissingFileError
from jalign.models import safetensors_io
from jalign.models.config import SUPPORTED_ARCHS, ModelConfig
from jalign.models.reward import RewardModel
from jalign.models.transformer import CausalLM

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_HF_ARCH = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
_HF_SEQCLS_ARCH = {"gpt2": "GPT2ForSequenceClassification", "llama": "LlamaForSequenceClassification",
                   "qwen2": "Qwen2ForSequenceClassification"}
# Buffers some exporters write that carry no parameters.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


# ----------------------------------------------------------------------------------------------------- configs
def read_config_json(file: str | Path) -> dict[str, Any]:
    """A model directory's ``config.json`` as a dict; :class:`FileFormatError` naming the file otherwise."""
    file = Path(file)
    try:
        d = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{file}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise FileFormatError(f"{file}: JSON nested too deeply") from None
    if not isinstance(d, dict):
        raise FileFormatError(f"{file}: expected a JSON object, got {type(d).__name__}")
    return d


def config_from_hf(d: dict[str, Any], *, where: str = "config.json", **overrides) -> ModelConfig:
    """ModelConfig from a Hugging Face ``config.json`` dict (``overrides`` e.g. dtype/param_dtype/remat).

    A key the architecture needs that is missing is a :class:`FileFormatError` naming ``where`` (the file).
    """
    try:
        return _config_from_hf(d, **overrides)
    except KeyError as e:
        raise FileFormatError(f"{where}: missing key {e.args[0]!r} (model_type={d.get('model_type')!r})") from None


def _config_from_hf(d: dict[str, Any], **overrides) -> ModelConfig:
    mt = d.get("model_type")
    if mt not in SUPPORTED_ARCHS:
        archs = d.get("architectures")
        raise ValueError(
            f"config.json: unsupported architecture model_type={mt!r} (architectures={archs}); "
            f"supported: {', '.join(SUPPORTED_ARCHS)}"
        )
    common = dict(bos_id=d.get("bos_token_id"), eos_id=_first(d.get("eos_token_id")), pad_id=d.get("pad_token_id"))
    stored = d.get("dtype") or d.get("torch_dtype")
    common["param_dtype"] = stored if stored in ("float32", "bfloat16", "float16") else "float32"
    if mt == "gpt2":
        act = d.get("activation_function", "gelu_new")
        acts = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
        if act not in acts:
            raise ValueError(f"config.json: GPT-2 activation_function={act!r} not supported ({sorted(acts)})")
        for k, ok in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                      ("scale_attn_weights", True)):
            if d.get(k, ok) != ok:
                raise ValueError(f"config.json: GPT-2 option {k}={d[k]} is not supported")
        cfg = dict(
            arch="gpt2", vocab_size=d["vocab_size"], d_model=d["n_embd"], n_layers=d["n_layer"],
            n_heads=d["n_head"], d_ff=d.get("n_inner") or 4 * d["n_embd"], max_seq_len=d["n_positions"],
            norm_eps=d.get("layer_norm_epsilon", 1e-5), activation=acts[act],
            tie_embeddings=d.get("tie_word_embeddings", True),
        )
    else:
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act={d['hidden_act']!r} not supported (only 'silu')")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None, "llama3"):
            raise ValueError(f"config.json: rope scaling {rope} is not supported (only default RoPE and 'llama3')")
        if d.get("use_sliding_window"):
            raise ValueError("config.json: use_sliding_window=true is not supported")
        heads = d["num_attention_heads"]
        bias = d.get("attention_bias", False)
        cfg = dict(
            arch=mt, vocab_size=d["vocab_size"], d_model=d["hidden_size"], n_layers=d["num_hidden_layers"],
            n_heads=heads, n_kv_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads, d_ff=d["intermediate_size"],
            max_seq_len=d.get("max_position_embeddings", 2048), norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(d.get("rope_theta", rope.get("rope_theta", 10000.0))),
            rope_scaling=dict(rope) if rope_type == "llama3" else None,
            qkv_bias=True if mt == "qwen2" else bias, attn_out_bias=False if mt == "qwen2" else bias,
            mlp_bias=d.get("mlp_bias", False), tie_embeddings=d.get("tie_word_embeddings", False),
            activation="silu",
        )
    return ModelConfig(**{**cfg, **common, **overrides})


def _first(x):
    return x[0] if isinstance(x, list) and x else x


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for ``cfg``."""
    tok = {"bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id}
    tok = {k: v for k, v in tok.items() if v is not None}
    dtype = "bfloat16" if cfg.param_dtype == "bfloat16" else cfg.param_dtype
    if cfg.arch == "gpt2":
        act = {"gelu_tanh": "gelu_new", "gelu": "gelu"}[cfg.activation]
        return dict(
            architectures=[_HF_ARCH["gpt2"]], model_type="gpt2", vocab_size=cfg.vocab_size, n_embd=cfg.d_model,
            n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff, n_positions=cfg.max_seq_len,
            layer_norm_epsilon=cfg.norm_eps, activation_function=act, tie_word_embeddings=cfg.tie_embeddings,
            torch_dtype=dtype, **tok,
        )
    if cfg.arch == "qwen2" and (not cfg.qkv_bias or cfg.attn_out_bias or cfg.mlp_bias):
        raise ValueError("save_pretrained: a qwen2 config must have qkv_bias=True, attn_out_bias=mlp_bias=False")
    if cfg.arch == "llama" and (cfg.qkv_bias != cfg.attn_out_bias):
        raise ValueError("save_pretrained: Llama's attention_bias covers q/k/v/o together; qkv_bias must equal attn_out_bias")
    out = dict(
        architectures=[_HF_ARCH[cfg.arch]], model_type=cfg.arch, vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta, **dict(cfg.rope_scaling or ())},
        tie_word_embeddings=cfg.tie_embeddings, torch_dtype=dtype, **tok,
    )
    if cfg.arch == "llama":
        out.update(attention_bias=bool(cfg.qkv_bias), mlp_bias=bool(cfg.mlp_bias))
    else:
        out.update(use_sliding_window=False)
    return out


# ------------------------------------------------------------------------------------------- tensor mapping
def _flat_params(model: CausalLM) -> dict[str, Any]:
    st = nnx.state(model, nnx.Param)
    return {".".join(str(p) for p in path): v.get_value() for path, v in nnx.to_flat_state(st)}


def to_hf_tensors(cfg: ModelConfig, p: dict[str, Any]) -> dict[str, Any]:
    """Internal flat params (``layers.0.attn.wq`` ...) → Hugging Face tensor names and layouts.

    Works on numpy/jax arrays and on ``jax.ShapeDtypeStruct`` leaves via :func:`_map_shapes`.
    """
    D, H, K, Dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    out = {}
    if cfg.arch == "gpt2":
        out["transformer.wte.weight"] = p["embed"]
        out["transformer.wpe.weight"] = p["pos_embed"]
        for i in range(cfg.n_layers):
            a, h = f"layers.{i}.", f"transformer.h.{i}."
            out[h + "ln_1.weight"], out[h + "ln_1.bias"] = p[a + "attn_norm.scale"], p[a + "attn_norm.bias"]
            out[h + "ln_2.weight"], out[h + "ln_2.bias"] = p[a + "mlp_norm.scale"], p[a + "mlp_norm.bias"]
            out[h + "attn.c_attn.weight"] = np.concatenate(
                [np.reshape(p[a + f"attn.{w}"], (D, D)) for w in ("wq", "wk", "wv")], axis=1)
            out[h + "attn.c_attn.bias"] = np.concatenate(
                [np.reshape(p[a + f"attn.{b}"], (D,)) for b in ("bq", "bk", "bv")])
            out[h + "attn.c_proj.weight"] = np.reshape(p[a + "attn.wo"], (H * Dh, D))
            out[h + "attn.c_proj.bias"] = p[a + "attn.bo"]
            out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = p[a + "mlp.w_in"], p[a + "mlp.b_in"]
            out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = p[a + "mlp.w_out"], p[a + "mlp.b_out"]
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = p["final_norm.scale"], p["final_norm.bias"]
        if not cfg.tie_embeddings:
            out["lm_head.weight"] = np.transpose(p["lm_head"])
        return out
    out["model.embed_tokens.weight"] = p["embed"]
    for i in range(cfg.n_layers):
        a, h = f"layers.{i}.", f"model.layers.{i}."
        out[h + "input_layernorm.weight"] = p[a + "attn_norm.scale"]
        out[h + "post_attention_layernorm.weight"] = p[a + "mlp_norm.scale"]
        for w, n in (("wq", H), ("wk", K), ("wv", K)):
            proj = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj"}[w]
            out[h + f"self_attn.{proj}.weight"] = np.transpose(np.reshape(p[a + f"attn.{w}"], (D, n * Dh)))
            if cfg.qkv_bias:
                out[h + f"self_attn.{proj}.bias"] = np.reshape(p[a + f"attn.b{w[1]}"], (n * Dh,))
        out[h + "self_attn.o_proj.weight"] = np.transpose(np.reshape(p[a + "attn.wo"], (H * Dh, D)))
        if cfg.attn_out_bias:
            out[h + "self_attn.o_proj.bias"] = p[a + "attn.bo"]
        for w, proj in (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_out", "down_proj")):
            out[h + f"mlp.{proj}.weight"] = np.transpose(p[a + f"mlp.{w}"])
            if cfg.mlp_bias:
                out[h + f"mlp.{proj}.bias"] = p[a + f"mlp.b{w[1:]}"]
    out["model.norm.weight"] = p["final_norm.scale"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = np.transpose(p["lm_head"])
    return out


def from_hf_tensors(cfg: ModelConfig, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face tensors (already checked against the expected names/shapes) → internal flat params."""
    D, H, K, Dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    p = {}
    if cfg.arch == "gpt2":
        p["embed"], p["pos_embed"] = t["transformer.wte.weight"], t["transformer.wpe.weight"]
        for i in range(cfg.n_layers):
            a, h = f"layers.{i}.", f"transformer.h.{i}."
            p[a + "attn_norm.scale"], p[a + "attn_norm.bias"] = t[h + "ln_1.weight"], t[h + "ln_1.bias"]
            p[a + "mlp_norm.scale"], p[a + "mlp_norm.bias"] = t[h + "ln_2.weight"], t[h + "ln_2.bias"]
            w, b = t[h + "attn.c_attn.weight"], t[h + "attn.c_attn.bias"]
            for j, n in enumerate(("q", "k", "v")):
                p[a + f"attn.w{n}"] = w[:, j * D : (j + 1) * D].reshape(D, H, Dh)
                p[a + f"attn.b{n}"] = b[j * D : (j + 1) * D].reshape(H, Dh)
            p[a + "attn.wo"] = t[h + "attn.c_proj.weight"].reshape(H, Dh, D)
            p[a + "attn.bo"] = t[h + "attn.c_proj.bias"]
            p[a + "mlp.w_in"], p[a + "mlp.b_in"] = t[h + "mlp.c_fc.weight"], t[h + "mlp.c_fc.bias"]
            p[a + "mlp.w_out"], p[a + "mlp.b_out"] = t[h + "mlp.c_proj.weight"], t[h + "mlp.c_proj.bias"]
        p["final_norm.scale"], p["final_norm.bias"] = t["transformer.ln_f.weight"], t["transformer.ln_f.bias"]
    else:
        p["embed"] = t["model.embed_tokens.weight"]
        for i in range(cfg.n_layers):
            a, h = f"layers.{i}.", f"model.layers.{i}."
            p[a + "attn_norm.scale"] = t[h + "input_layernorm.weight"]
            p[a + "mlp_norm.scale"] = t[h + "post_attention_layernorm.weight"]
            for w, n in (("q", H), ("k", K), ("v", K)):
                p[a + f"attn.w{w}"] = t[h + f"self_attn.{w}_proj.weight"].T.reshape(D, n, Dh)
                if cfg.qkv_bias:
                    p[a + f"attn.b{w}"] = t[h + f"self_attn.{w}_proj.bias"].reshape(n, Dh)
            p[a + "attn.wo"] = t[h + "self_attn.o_proj.weight"].T.reshape(H, Dh, D)
            if cfg.attn_out_bias:
                p[a + "attn.bo"] = t[h + "self_attn.o_proj.bias"]
            for w, proj in (("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_out", "down_proj")):
                p[a + f"mlp.{w}"] = t[h + f"mlp.{proj}.weight"].T
                if cfg.mlp_bias:
                    p[a + f"mlp.b{w[1:]}"] = t[h + f"mlp.{proj}.bias"]
        p["final_norm.scale"] = t["model.norm.weight"]
    if not cfg.tie_embeddings:
        p["lm_head"] = t["lm_head.weight"].T
    return p


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor name → shape for ``cfg``."""
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))
    zeros = {k: np.zeros(v.shape, np.int8) for k, v in _flat_params(abstract).items()}
    return {k: tuple(np.shape(v)) for k, v in to_hf_tensors(cfg, zeros).items()}


def _check_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray], where: str, limit: int = 10,
                   expected: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Drop known buffers / a tied lm_head; raise listing the first mismatches of names and shapes."""
    expected = expected_hf_shapes(cfg) if expected is None else expected
    got = {}
    for k, v in tensors.items():
        if k.endswith(_IGNORED_SUFFIXES) or (cfg.tie_embeddings and k == "lm_head.weight"):
            continue
        if cfg.arch == "gpt2" and not k.startswith(("transformer.", "lm_head.", "score.")):
            k = "transformer." + k  # original GPT-2 checkpoints lack the prefix
        got[k] = v
    problems = [f"missing tensor {k!r} (expected shape {s})" for k, s in expected.items() if k not in got]
    problems += [f"unexpected tensor {k!r} (shape {tuple(v.shape)})" for k, v in got.items() if k not in expected]
    problems += [
        f"tensor {k!r} has shape {tuple(got[k].shape)}, config expects {s}"
        for k, s in expected.items() if k in got and tuple(got[k].shape) != s
    ]
    if problems:
        head = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        raise FileFormatError(f"{where}: checkpoint does not match its config ({len(problems)} problems):\n  {head}{more}")
    return got


def _refuse_pickle(path: Path) -> None:
    raise FileFormatError(
        f"{path}: refusing to load a pickle-based checkpoint ({path.suffix}); unpickling can execute arbitrary "
        "code. Convert it to safetensors first (e.g. with transformers: model.save_pretrained(dir, "
        "safe_serialization=True))."
    )


def _load_finite(file: Path) -> dict[str, np.ndarray]:
    """:func:`safetensors_io.load_file`, refusing a floating-point tensor with NaN values (named with its file)."""
    out = safetensors_io.load_file(file)
    for name, a in out.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
            if np.isnan(a.astype(np.float32, copy=False)).any():
                raise FileFormatError(f"{file}: tensor {name!r} holds NaN values ({int(np.isnan(a.astype(np.float32)).sum())} "
                                 f"of {a.size}); refusing to load a damaged checkpoint")
    return out


def read_hf_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    path = Path(path)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            _refuse_pickle(path)
        return _load_finite(path)
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if single.exists():
        return _load_finite(single)
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise FileFormatError(f"{index}: not a safetensors index (JSON with a 'weight_map'): {e}") from None
        files = sorted(set(weight_map.values()))
        root = path.resolve()
        for f in files:
            p = Path(f)
            if p.is_absolute() or ".." in p.parts or not (path / p).resolve().is_relative_to(root):
                raise FileFormatError(f"{index}: weight_map entry {f!r} points outside the model directory {path}; "
                                 "refusing to read weights from elsewhere")
        out = {}
        for f in files:
            out.update(_load_finite(path / f))
        return out
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        out = {}
        for f in shards:
            out.update(_load_finite(f))
        return out
    pickles = [f for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES]
    if pickles:
        _refuse_pickle(pickles[0])
    raise MissingFileError(f"{path}: no model.safetensors (or safetensors shards) found")


def build_model(cfg: ModelConfig, params: dict[str, Any], shardings: dict[str, Any] | None = None) -> CausalLM:
    """A :class:`CausalLM` whose parameters are ``params`` (internal flat names), cast to ``cfg.param_dtype``."""
    abstract = nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))
    gd, st = nnx.split(abstract)
    for path, var in nnx.to_flat_state(st):
        if not isinstance(var, nnx.Param):
            continue
        name = ".".join(str(p) for p in path)
        arr = np.asarray(params[name]).astype(cfg.params_dtype)
        if arr.shape != var.shape:
            raise ValueError(f"parameter {name}: shape {arr.shape} != expected {var.shape}")
        if shardings is not None:
            var.set_value(jax.device_put(arr, shardings[name]))
        else:
            var.set_value(jnp.asarray(arr))
    return nnx.merge(gd, st)


def _checkpoint_config(path) -> tuple[Path, Path, dict]:
    """``(path, path/config.json, its dict)`` of a Hugging Face directory; pickle files and a missing
    ``config.json`` are refused (the shared start of :func:`load_pretrained` and :func:`load_reward_model`)."""
    path = Path(path)
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise MissingFileError(f"{path}: config.json not found")
    return path, cfg_file, read_config_json(cfg_file)


def load_pretrained(path: str | Path, *, mesh=None, rules=None, **overrides) -> CausalLM:
    """Load a Hugging Face GPT-2 / Llama / Qwen2 checkpoint (safetensors + config.json) as a :class:`CausalLM`.

    Args:
      path: a directory with ``config.json`` and ``model.safetensors`` (or sharded safetensors with
        ``model.safetensors.index.json``).
      mesh: optional ``jax.sharding.Mesh``; parameters are placed on it by the logical-axis ``rules``
        (default :data:`jalign.models.sharding.DEFAULT_RULES`) as they are converted.
      **overrides: ModelConfig fields to override, e.g. ``param_dtype="float32", dtype="bfloat16", remat=True``.
        By default parameters keep the checkpoint's dtype (config.json ``dtype``/``torch_dtype``) and the
        compute dtype is float32.

    Raises:
      ValueError: pickle checkpoints, unsupported architecture, tensor names/shapes that do not match config.
      FileFormatError: (a ``ValueError`` and a :class:`~jalign.errors.UserError`) a ``config.json`` that is
        not JSON, not an object or lacks a key (named with its path); truncated or damaged safetensors (the
        file, and the first incomplete tensor); NaN weights; names/shapes that do not match the config.
      MissingFileError: no ``config.json`` or no safetensors file.
    """
    path, cfg_file, d = _checkpoint_config(path)
    if is_sequence_classification(d):
        raise FileFormatError(f"{cfg_file}: architectures={d.get('architectures')} is a sequence-classification "
                              "(reward) model; load it with jalign.models.load_reward_model")
    cfg = config_from_hf(d, where=str(cfg_file), **overrides)
    tensors = _check_tensors(cfg, read_hf_tensors(path), str(path))
    params = from_hf_tensors(cfg, tensors)
    shardings = None
    if mesh is not None:
        from jalign.models.sharding import param_shardings

        shardings = param_shardings(cfg, mesh, rules)
    return build_model(cfg, params, shardings)


def save_pretrained(model: CausalLM | RewardModel, path: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` in the Hugging Face layout of ``model.cfg.arch``: a
    :class:`CausalLM` as ``*ForCausalLM`` / ``GPT2LMHeadModel``, a :class:`RewardModel` as
    ``*ForSequenceClassification`` (``score.weight``, ``num_labels``, ``id2label``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    params = {k: np.asarray(jax.device_get(v)) for k, v in _flat_params(model).items()}
    if isinstance(model, RewardModel):
        hf_cfg = reward_config_to_hf(cfg, model.num_labels)
        tensors = reward_to_hf_tensors(cfg, params)
    else:
        hf_cfg = config_to_hf(cfg)
        tensors = to_hf_tensors(cfg, params)
    safetensors_io.save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------- reward models
def is_sequence_classification(d: dict[str, Any]) -> bool:
    """Whether a ``config.json`` dict declares a ``*ForSequenceClassification`` architecture."""
    archs = d.get("architectures") or []
    return isinstance(archs, list) and any(str(a).endswith("ForSequenceClassification") for a in archs)


def _num_labels(d: dict[str, Any], where: str) -> int:
    """``num_labels`` of a Hugging Face config: the key if present, else the size of ``id2label`` (transformers
    writes only ``id2label``), else 2 (transformers' default)."""
    n = d.get("num_labels")
    if n is None:
        n = len(d["id2label"]) if isinstance(d.get("id2label"), dict) else 2
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise FileFormatError(f"{where}: num_labels={n!r} must be a positive int")
    return n


def reward_config_to_hf(cfg: ModelConfig, num_labels: int) -> dict[str, Any]:
    """The ``config.json`` dict of a ``*ForSequenceClassification`` model with this trunk and head width."""
    out = config_to_hf(cfg)
    out["architectures"] = [_HF_SEQCLS_ARCH[cfg.arch]]
    out["num_labels"] = num_labels
    out["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    out["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return out


def reward_to_hf_tensors(cfg: ModelConfig, p: dict[str, Any]) -> dict[str, Any]:
    """A :class:`RewardModel`'s flat params → Hugging Face names: the trunk as :func:`to_hf_tensors` (no
    ``lm_head``), ``score.weight`` = ``score``ᵀ ``[num_labels, D]``."""
    out = to_hf_tensors(cfg.replace(tie_embeddings=True), p)
    out["score.weight"] = np.transpose(p["score"])
    return out


def reward_from_hf_tensors(cfg: ModelConfig, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face ``*ForSequenceClassification`` tensors → a :class:`RewardModel`'s flat params."""
    p = from_hf_tensors(cfg.replace(tie_embeddings=True), t)
    p["score"] = t["score.weight"].T
    return p


def expected_reward_shapes(cfg: ModelConfig, num_labels: int) -> dict[str, tuple[int, ...]]:
    """Hugging Face tensor name → shape for a reward model with this trunk and head width."""
    abstract = nnx.eval_shape(lambda: RewardModel(cfg, num_labels=num_labels, rngs=nnx.Rngs(0)))
    zeros = {k: np.zeros(v.shape, np.int8) for k, v in _flat_params(abstract).items()}
    return {k: tuple(np.shape(v)) for k, v in reward_to_hf_tensors(cfg, zeros).items()}


def load_reward_model(path: str | Path, *, num_labels: int | None = None, **overrides) -> RewardModel:
    """Load a Hugging Face ``GPT2ForSequenceClassification`` / ``LlamaForSequenceClassification`` /
    ``Qwen2ForSequenceClassification`` checkpoint (safetensors + config.json) as a :class:`RewardModel`.

    Args:
      path: a directory with ``config.json`` (``architectures`` naming a ``*ForSequenceClassification``,
        ``num_labels`` or ``id2label``, ``pad_token_id``) and ``model.safetensors`` (or shards).
      num_labels: if given, the head width the caller needs (e.g. 1 for a reward); another width in the
        checkpoint is a :class:`FileFormatError` naming both.
      **overrides: ModelConfig fields, as for :func:`load_pretrained`.

    Raises:
      FileFormatError: a causal-LM checkpoint (use :func:`jalign.models.reward_model_from_causal_lm`), a head
        of another width, tensor names/shapes that do not match the config (``score.weight`` included), and
        every error of :func:`load_pretrained`.
      MissingFileError: no ``config.json`` or no safetensors file.
    """
    path, cfg_file, d = _checkpoint_config(path)
    if not is_sequence_classification(d):
        raise FileFormatError(f"{cfg_file}: architectures={d.get('architectures')} is not a "
                              "*ForSequenceClassification reward model; to start one from a causal LM use "
                              "jalign.models.reward_model_from_causal_lm(jalign.models.load_pretrained(path))")
    cfg = config_from_hf(d, where=str(cfg_file), **overrides)
    labels = _num_labels(d, str(cfg_file))
    if num_labels is not None and labels != num_labels:
        raise FileFormatError(f"{cfg_file}: the reward head has num_labels={labels}, {num_labels} needed "
                              "(a scalar reward needs num_labels=1)")
    tensors = _check_tensors(cfg, read_hf_tensors(path), str(path), expected=expected_reward_shapes(cfg, labels))
    params = reward_from_hf_tensors(cfg, tensors)
    abstract = nnx.eval_shape(lambda: RewardModel(cfg, num_labels=labels, rngs=nnx.Rngs(0)))
    gd, st = nnx.split(abstract)
    for p, var in nnx.to_flat_state(st):
        var.set_value(jnp.asarray(np.asarray(params[".".join(map(str, p))]).astype(cfg.params_dtype)))
    return nnx.merge(gd, st)


SMALL_LM_DIR = Path(__file__).resolve().parents[1] / "assets" / "small_lm"


def load_small_lm(**overrides) -> CausalLM:
    """The ~0.86M-parameter byte-level GPT-2-style LM pretrained here (see docs/models.md), used as the
    starting point of the built-in LLM-track experiments. Use with :class:`jalign.tokenizers.ByteTokenizer`."""
    if not (SMALL_LM_DIR / "model.safetensors").exists():
        raise FileNotFoundError(
            f"{SMALL_LM_DIR}: the small LM is missing; recreate it with "
            f"`jalign pretrain --out runs/small_lm --export-assets {SMALL_LM_DIR}`"
        )
    return load_pretrained(SMALL_LM_DIR, **overrides)

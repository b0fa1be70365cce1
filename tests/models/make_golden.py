"""Regenerate the Hugging Face golden fixtures under tests/models/golden/ (needs torch + transformers).

    /work/venv-torch/bin/python tests/models/make_golden.py [causal|reward|all]

For each architecture (gpt2, llama, llama3 = Llama with Llama-3 RoPE scaling, qwen2) it builds a tiny randomly initialised Hugging Face model (2 layers,
d=32, vocab 128), randomises every parameter (norm scales and biases included, so a mis-mapped tensor shows),
saves ``model.safetensors`` + ``config.json`` and ``ref.npz`` with reference outputs of the PyTorch model:

* ``ids`` [2, 12], ``logits`` [2, 12, 128], ``hidden`` (last hidden state, after the final norm);
* ``ids_pad``/``mask_pad``/``pos_pad``: row 0 left-padded, row 1 right-padded, with positions
  ``cumsum(mask) - 1`` passed explicitly, and ``logits_pad`` (compare only where ``mask_pad == 1``).

Reward models (``reward``): ``gpt2_rm``, ``llama_rm`` (``num_labels=1``) and ``qwen2_rm`` (``num_labels=2``, to
check a general head) are tiny randomised ``*ForSequenceClassification`` models (same trunks as above,
``pad_token_id=0``) with ``ref.npz``:

* ``ids`` [2, 12] (no padding) and ``scores`` [2, L] (HF's pooled logits: the last token);
* ``ids_pad``/``mask_pad``/``pos_pad`` as above (row 0 left-, row 1 right-padded, pads = ``pad_token_id``)
  and ``scores_pad`` [2, L]: HF pools the last token whose id is not ``pad_token_id``;
* ``token_scores_pad`` [2, 12, L]: the score layer on every position's final hidden state (the per-token
  value head), compared only where ``mask_pad == 1``.

The jalign test suite reads these files with jalign alone (no torch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers

OUT = Path(__file__).resolve().parent / "golden"
V, D, L = 128, 32, 2


def configs():
    common = dict(vocab_size=V, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "gpt2": transformers.GPT2Config(
            n_embd=D, n_layer=L, n_head=4, n_positions=64, n_inner=64, activation_function="gelu_new",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common),
        "llama": transformers.LlamaConfig(
            hidden_size=D, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500.0,
            tie_word_embeddings=False, **common),
        # Llama 3 RoPE rescaling; a short original context (16) puts the 4 frequencies of head_dim 8 in the
        # divided (3) and smoothed (1) bands.
        "llama3": transformers.LlamaConfig(
            hidden_size=D, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
            **common),
        "qwen2": transformers.Qwen2Config(
            hidden_size=D, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=1,
            intermediate_size=48, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=True, use_sliding_window=False, **common),
    }


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name or "ln_" in name:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def main(which: str = "all") -> None:
    if which in ("causal", "all"):
        causal()
    if which in ("reward", "all"):
        reward()


def _save(model, d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    for extra in d.iterdir():
        if extra.name not in ("model.safetensors", "config.json"):
            extra.unlink()


def reward() -> None:
    gen = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    ids = rng.integers(3, V, size=(2, 12))
    mask_pad = np.ones((2, 12), np.int64)
    mask_pad[0, :4] = 0
    mask_pad[1, 9:] = 0
    ids_pad = np.where(mask_pad == 1, rng.integers(3, V, size=(2, 12)), 0)  # 0 = pad_token_id
    pos_pad = np.maximum(np.cumsum(mask_pad, axis=1) - 1, 0)
    cfgs = configs()
    for arch, model_cls, labels in (("gpt2", transformers.GPT2ForSequenceClassification, 1),
                                    ("llama", transformers.LlamaForSequenceClassification, 1),
                                    ("qwen2", transformers.Qwen2ForSequenceClassification, 2)):
        cfg = cfgs[arch]
        cfg.num_labels = labels
        cfg._attn_implementation = "eager"
        model = model_cls(cfg).eval()
        randomise(model, gen)
        d = OUT / f"{arch}_rm"
        _save(model, d)
        with torch.no_grad():
            out = model(torch.tensor(ids))
            pad = model(torch.tensor(ids_pad), attention_mask=torch.tensor(mask_pad),
                        position_ids=torch.tensor(pos_pad), output_hidden_states=True)
            token_scores = model.score(pad.hidden_states[-1])
        np.savez_compressed(
            d / "ref.npz", ids=ids.astype(np.int32), scores=out.logits.float().numpy(),
            ids_pad=ids_pad.astype(np.int32), mask_pad=mask_pad.astype(np.int32), pos_pad=pos_pad.astype(np.int32),
            scores_pad=pad.logits.float().numpy(), token_scores_pad=token_scores.float().numpy(),
        )
        meta = {"torch": torch.__version__, "transformers": transformers.__version__}
        (d / "versions.json").write_text(json.dumps(meta) + "\n")
        print(arch, sorted(p.name for p in d.iterdir()), sum(p.stat().st_size for p in d.iterdir()), "bytes")


def causal() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, V, size=(2, 40))  # long enough for the rescaled low frequencies to matter
    # Row 0: 4 left pads then 8 tokens; row 1: 9 tokens then 3 right pads.
    mask_pad = np.ones((2, 12), np.int64)
    mask_pad[0, :4] = 0
    mask_pad[1, 9:] = 0
    ids_pad = np.where(mask_pad == 1, rng.integers(3, V, size=(2, 12)), 0)
    pos_pad = np.maximum(np.cumsum(mask_pad, axis=1) - 1, 0)
    for arch, cfg in configs().items():
        model_cls = {
            "gpt2": transformers.GPT2LMHeadModel,
            "llama": transformers.LlamaForCausalLM,
            "llama3": transformers.LlamaForCausalLM,
            "qwen2": transformers.Qwen2ForCausalLM,
        }[arch]
        cfg._attn_implementation = "eager"
        model = model_cls(cfg).eval()
        randomise(model, gen)
        if cfg.tie_word_embeddings:
            model.tie_weights()
        d = OUT / arch
        if d.exists():
            shutil.rmtree(d)
        model.save_pretrained(d, safe_serialization=True)
        for extra in d.iterdir():
            if extra.name not in ("model.safetensors", "config.json"):
                extra.unlink()
        with torch.no_grad():
            out = model(torch.tensor(ids), output_hidden_states=True)
            pad = model(torch.tensor(ids_pad), attention_mask=torch.tensor(mask_pad),
                        position_ids=torch.tensor(pos_pad))
        np.savez_compressed(
            d / "ref.npz", ids=ids.astype(np.int32), logits=out.logits.float().numpy(),
            hidden=out.hidden_states[-1].float().numpy(), ids_pad=ids_pad.astype(np.int32),
            mask_pad=mask_pad.astype(np.int32), pos_pad=pos_pad.astype(np.int32),
            logits_pad=pad.logits.float().numpy(),
        )
        meta = {"torch": torch.__version__, "transformers": transformers.__version__}
        (d / "versions.json").write_text(json.dumps(meta) + "\n")
        print(arch, sorted(p.name for p in d.iterdir()), sum(p.stat().st_size for p in d.iterdir()), "bytes")


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else "all")

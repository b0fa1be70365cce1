"""Hand a trained policy (or reward model) to the next run: the final parameters in the Hugging Face layout
(``train.export``; a :class:`jalign.models.RewardModel` as ``*ForSequenceClassification``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
from flax import nnx

from jalign.models import CausalLM, RewardModel, save_pretrained
from jalign.train.rl import policy_of

EXPORT_FILES = frozenset({"config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
                          "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})


def check_export_target(path: Path, workdir: str | Path | None) -> None:
    """Refuse to replace anything but a previous export: the workdir, its parents, or a non-empty directory
    holding other files."""
    p = path.resolve()
    if workdir:
        w = Path(workdir).resolve()
        if p == w or p in w.parents:
            raise ValueError(f"train.export={str(path)!r} is the workdir or contains it; export to a subdirectory, "
                             f"e.g. {str(Path(workdir) / 'export')!r}")
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"train.export={str(path)!r} exists and is not a directory")
        other = sorted(f.name for f in p.iterdir() if f.name not in EXPORT_FILES)
        if other:
            raise ValueError(f"train.export={str(path)!r} holds files that are not a model export ({other[:5]}); "
                             "refusing to replace it")


def export_model(graphdef, state, path: str | Path, *, is_main: bool = True,
                 workdir: str | Path | None = None) -> Path | None:
    """Write the trained policy to ``path`` in the Hugging Face layout (``config.json`` + ``model.safetensors``),
    loadable with :func:`jalign.models.load_pretrained` or as model ``pretrained`` (``model.kwargs.path``) —
    e.g. SFT first, then preference optimisation or RL from the SFT policy. Written to a temporary sibling
    directory and renamed, so an interrupted export leaves nothing at ``path``; an existing ``path`` is
    replaced only if it holds nothing but a previous export (never the workdir or a parent of it). Only process
    0 writes (parameters are gathered first)."""
    check_export_target(Path(path), workdir)

    params = state.params
    if jax.process_count() > 1:  # sharded over processes: every process takes part in the gather
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
    model = nnx.merge(graphdef, params, state.model_state)
    model = policy_of(model)  # ppo: the policy of the ActorCritic, without its critic
    if not isinstance(model, (CausalLM, RewardModel)):
        raise TypeError(f"train.export: only jalign.models.CausalLM / RewardModel models can be exported, got "
                        f"{type(model).__name__}")
    if not is_main:
        return None
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path

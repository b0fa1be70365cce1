"""Model plug-ins: the transformers of :mod:`jalign.models` by name (``model.name``; ``model.kwargs`` are passed on).

* ``small_lm``: the pretrained 0.86M-parameter byte-level GPT-2 (:func:`jalign.models.load_small_lm`);
  kwargs are ``ModelConfig`` overrides (e.g. ``dtype="bfloat16"``).
* ``pretrained``: ``path=`` a Hugging Face GPT-2 / Llama / Qwen2 safetensors directory
  (:func:`jalign.models.load_pretrained`), plus ``ModelConfig`` overrides; a ``*ForSequenceClassification``
  checkpoint loads as a :class:`jalign.models.RewardModel` (:func:`jalign.models.load_reward_model`).
* ``causal_lm``: a freshly initialised :class:`jalign.models.CausalLM`; kwargs are ``ModelConfig`` fields
  (``arch``, ``d_model``, ``n_layers``, …), initialised from the run's ``seed``.

The test model ``tiny`` is in :mod:`jalign.train.plugins.tiny`.
"""

from __future__ import annotations

from pathlib import Path

from jalign.errors import UserError
from jalign.models import (
    CausalLM,
    ModelConfig,
    RewardModel,
    create_model,
    load_pretrained,
    load_reward_model,
    load_small_lm,
    reward_model_from_causal_lm,
)
from jalign.models.checkpoints import is_sequence_classification, read_config_json
from jalign.train.plugins.registry import register_model


@register_model("small_lm")
def _small_lm(*, seed: int, **overrides):
    del seed  # pretrained weights
    return load_small_lm(**overrides)


@register_model("pretrained")
def _pretrained(*, seed: int, path: str, **overrides):
    del seed
    if not Path(path).is_dir():
        raise UserError(f"model 'pretrained': model.kwargs.path={str(path)!r} is not a directory (a Hugging Face "
                        "checkpoint directory with config.json and model.safetensors)")
    cfg_file = Path(path) / "config.json"
    if cfg_file.is_file() and is_sequence_classification(read_config_json(cfg_file)):
        return load_reward_model(path, **overrides)  # a *ForSequenceClassification checkpoint (mode="reward")
    return load_pretrained(path, **overrides)


@register_model("causal_lm")
def _causal_lm(*, seed: int, **config):
    try:
        mc = ModelConfig(**config)  # validates the fields
    except (TypeError, ValueError) as e:
        raise UserError(f"model 'causal_lm': model.kwargs: {e}") from None
    return create_model(mc, seed=seed)


def is_reward_model(model) -> bool:
    """Whether ``model`` is a :class:`jalign.models.RewardModel`."""
    return isinstance(model, RewardModel)


def as_reward_model(model, *, seed: int) -> RewardModel:
    """The model of a ``mode="reward"`` run: a :class:`RewardModel` with a scalar head as is, a
    :class:`CausalLM` with a fresh head (:func:`jalign.models.reward_model_from_causal_lm`, drawn from ``seed``);
    anything else, or a head wider than 1, is a :class:`~jalign.errors.UserError`."""
    if isinstance(model, RewardModel):
        if model.num_labels != 1:
            raise UserError(f"mode='reward': the reward model has num_labels={model.num_labels}; a reward needs a "
                            "scalar head (num_labels=1)")
        return model
    if isinstance(model, CausalLM):
        return reward_model_from_causal_lm(model, seed=seed)
    raise UserError(f"mode='reward' needs a jalign.models transformer (model.name small_lm, pretrained or "
                    f"causal_lm), got {type(model).__name__}")


def is_causal_lm(model) -> bool:
    """Whether ``model`` is a :class:`jalign.models.CausalLM` (it then gets the KV-cache sampler online)."""
    return isinstance(model, CausalLM)

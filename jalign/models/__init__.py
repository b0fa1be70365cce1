"""Causal language models: Flax NNX transformers (GPT-2, Llama, Qwen2), checkpoints, sampling, sharding.

Public API (kept stable): :func:`load_pretrained`, :func:`save_pretrained`, :class:`CausalLM`,
:class:`ModelConfig`; reward models: :class:`RewardModel`, :func:`load_reward_model`,
:func:`reward_model_from_causal_lm`, :class:`RewardEnsemble`. See docs/models.md and docs/reward_models.md.
"""

from jalign.models.checkpoints import load_pretrained, load_reward_model, load_small_lm, save_pretrained
from jalign.models.config import SUPPORTED_ARCHS, ModelConfig
from jalign.models.transformer import (
    CausalLM,
    CausalLMOutput,
    KVCache,
    check_token_ids,
    create_model,
    forward,
    init_cache,
    token_logprobs,
)

__all__ = [
    "SUPPORTED_ARCHS",
    "CausalLM",
    "CausalLMOutput",
    "KVCache",
    "ModelConfig",
    "check_token_ids",
    "create_model",
    "forward",
    "init_cache",
    "load_pretrained",
    "load_small_lm",
    "save_pretrained",
    "token_logprobs",
]

from jalign.models.reward import (  # noqa: E402
    RewardEnsemble,
    RewardModel,
    RewardModelOutput,
    create_reward_model,
    join_prompt_completion,
    last_token_index,
    reward_model_from_causal_lm,
    score,
)

__all__ += ["RewardEnsemble", "RewardModel", "RewardModelOutput", "create_reward_model", "join_prompt_completion",
            "last_token_index", "load_reward_model", "reward_model_from_causal_lm", "score"]

from jalign.models.sampling import SampleOutput, filter_logits, sample  # noqa: E402

__all__ += ["SampleOutput", "filter_logits", "sample"]

from jalign.models.sharding import (  # noqa: E402
    DEFAULT_RULES,
    batch_sharding,
    logical_to_spec,
    make_mesh,
    param_specs,
    shard_model,
)

__all__ += ["DEFAULT_RULES", "batch_sharding", "logical_to_spec", "make_mesh", "param_specs", "shard_model"]

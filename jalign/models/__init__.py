"""Causal language models: Flax NNX transformers (GPT-2, Llama, Qwen2), checkpoints, sampling, sharding.

Public API (kept stable): :func:`load_pretrained`, :func:`save_pretrained`, :class:`CausalLM`,
:class:`ModelConfig`. See docs/models.md.
"""

from jalign.models.checkpoints import load_pretrained, load_small_lm, save_pretrained
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

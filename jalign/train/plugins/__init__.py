"""Everything a training config names, one module per kind.

* :mod:`~jalign.train.plugins.registry` — the tables (models, data sources, rewards) and ``register_*``;
* :mod:`~jalign.train.plugins.models` — the transformers of :mod:`jalign.models` (``small_lm``, ``pretrained``,
  ``causal_lm``);
* :mod:`~jalign.train.plugins.data` — jalign's built-in data (``builtin_*``, ``text_windows``);
* :mod:`~jalign.train.plugins.files` — users' own files (``file_*``);
* :mod:`~jalign.train.plugins.rewards` — reward functions (``lexicon``, ``count_token``);
* :mod:`~jalign.train.plugins.tiny` — the tiny test model and synthetic data (the base config's defaults).

Entry modules import only the registry (and lower layers); importing this package imports them all, which
registers every entry (no import cycle).
"""

from jalign.train.plugins import data, files, models, rewards, tiny  # noqa: F401  (registration)
from jalign.train.plugins.registry import (
    DATA,
    MODELS,
    REWARD_RESOLVERS,
    REWARDS,
    check_reward,
    get_reward,
    make_data,
    make_model,
    register_data,
    register_model,
    register_reward,
    register_reward_resolver,
)

__all__ = ["DATA", "MODELS", "REWARDS", "REWARD_RESOLVERS", "check_reward", "get_reward", "make_data", "make_model",
           "register_data", "register_model", "register_reward", "register_reward_resolver"]

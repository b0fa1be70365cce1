"""The direct-alignment loss library: pure, jit-able functions of sequence log-probabilities.

Public API (stable): :class:`PairwiseLogps`, :func:`get`, :func:`bind`, :func:`names`, :func:`sequence_logps`,
:func:`preference_metrics`; plus :class:`UnpairedLogps`, :class:`ListwiseLogps`, :func:`spec`,
:func:`register`, :class:`LossSpec` and :func:`pytree_dataclass` (the decorator of the batch containers).
The on-line RLHF mathematics (PPO/GRPO clipped objectives, group advantages, GAE, the reward-model loss) is in
:mod:`jalign.losses.rl`, re-exported here: :func:`policy_clip`, :func:`group_advantages`, :func:`gae`,
:func:`reward_model_loss`, :func:`leave_one_out_advantages`,
:func:`reinforce_pp_advantages`, :func:`masked_whiten`, :func:`nash_md_pg`.

>>> from jalign import losses
>>> "dpo" in losses.names()
True
"""

from jalign.losses._registry import BoundLoss, LossSpec, bind, get, names, register, register_resolver, spec
from jalign.losses._types import (
    ListwiseLogps,
    PairwiseLogps,
    SampledLogps,
    ScoredLogps,
    UnpairedLogps,
    pytree_dataclass,
)
from jalign.losses.metrics import preference_metrics
from jalign.losses.rl import (
    gae,
    group_advantages,
    leave_one_out_advantages,
    masked_whiten,
    nash_md_pg,
    policy_clip,
    reinforce_pp_advantages,
    reward_model_loss,
)
from jalign.losses.sequence import causal_sequence_logps, sequence_logps

# Loss families register themselves on import (one file per family).
from jalign.losses import pairwise  # noqa: E402,F401  isort: skip
from jalign.losses import reference_free  # noqa: E402,F401  isort: skip
from jalign.losses import unpaired  # noqa: E402,F401  isort: skip
from jalign.losses import listwise  # noqa: E402,F401  isort: skip
from jalign.losses.fdpg import fdpg  # noqa: E402  isort: skip
from jalign.losses.policy_gradient import copg, copg_ksample, copg_surrogate, off_policy_pg, rloo  # noqa: E402,I001  isort: skip

__all__ = [
    "BoundLoss",
    "ListwiseLogps",
    "LossSpec",
    "PairwiseLogps",
    "SampledLogps",
    "ScoredLogps",
    "UnpairedLogps",
    "fdpg",
    "bind",
    "causal_sequence_logps",
    "copg",
    "copg_ksample",
    "copg_surrogate",
    "gae",
    "group_advantages",
    "get",
    "leave_one_out_advantages",
    "masked_whiten",
    "names",
    "nash_md_pg",
    "off_policy_pg",
    "policy_clip",
    "preference_metrics",
    "pytree_dataclass",
    "register",
    "register_resolver",
    "reinforce_pp_advantages",
    "reward_model_loss",
    "rloo",
    "sequence_logps",
    "spec",
]

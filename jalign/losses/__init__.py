"""The direct-alignment loss library: pure, jit-able functions of sequence log-probabilities.

Public API (stable): :class:`PairwiseLogps`, :func:`get`, :func:`names`, :func:`sequence_logps`,
:func:`preference_metrics`; plus :class:`UnpairedLogps`, :class:`ListwiseLogps`, :func:`spec`,
:func:`register`, :class:`LossSpec` and :func:`pytree_dataclass` (the decorator of the batch containers).

>>> from jalign import losses
>>> "dpo" in losses.names()
True
"""

from jalign.losses._registry import LossSpec, get, names, register, spec
from jalign.losses._types import (
    ListwiseLogps,
    PairwiseLogps,
    SampledLogps,
    ScoredLogps,
    UnpairedLogps,
    pytree_dataclass,
)
from jalign.losses.metrics import preference_metrics
from jalign.losses.sequence import causal_sequence_logps, sequence_logps

# Loss families register themselves on import (one file per family).
from jalign.losses import pairwise  # noqa: E402,F401  isort: skip
from jalign.losses import reference_free  # noqa: E402,F401  isort: skip
from jalign.losses import unpaired  # noqa: E402,F401  isort: skip
from jalign.losses import listwise  # noqa: E402,F401  isort: skip
from jalign.losses.fdpg import fdpg  # noqa: E402  isort: skip
from jalign.losses.policy_gradient import copg, copg_ksample, copg_surrogate, off_policy_pg, rloo  # noqa: E402,I001  isort: skip

__all__ = [
    "ListwiseLogps",
    "LossSpec",
    "PairwiseLogps",
    "SampledLogps",
    "ScoredLogps",
    "UnpairedLogps",
    "fdpg",
    "causal_sequence_logps",
    "copg",
    "copg_ksample",
    "copg_surrogate",
    "get",
    "names",
    "off_policy_pg",
    "preference_metrics",
    "pytree_dataclass",
    "register",
    "rloo",
    "sequence_logps",
    "spec",
]

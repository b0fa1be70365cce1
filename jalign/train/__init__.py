"""One trainer for every experiment: SFT, offline preference optimisation, online sampling + scoring.

Public API::

    from jalign.train import load_config, train
    cfg = load_config("experiments/dpo_tiny.py", ["train.steps=20"])
    result = train(cfg)            # TrainResult(state, history, ...)

Building blocks (pure, jit-able): :func:`make_train_step` (``train_step(state, batch) -> (state, metrics)``),
:func:`init_state`, :func:`make_objective`, :func:`make_mesh`, :class:`Checkpointer`; the batch layout in
:mod:`jalign.train.batch`. Everything a config names (models, data sources, rewards) is a plug-in of
:mod:`jalign.train.plugins`; diagnostics during training are probes of :mod:`jalign.train.probes`. See
docs/training.md and docs/architecture.md.
"""

from jalign.train.checkpoint import Checkpointer
from jalign.train.config import ConfigError, base_config, load_config
from jalign.train.loop import NonFiniteError, TrainResult, train
from jalign.train.objectives import make_objective
from jalign.train.sharding import global_batch, make_mesh
from jalign.train.step import TrainState, init_state, jit_step, make_optimizer, make_train_step

__all__ = [
    "Checkpointer",
    "ConfigError",
    "NonFiniteError",
    "TrainResult",
    "TrainState",
    "base_config",
    "global_batch",
    "init_state",
    "jit_step",
    "load_config",
    "make_mesh",
    "make_objective",
    "make_optimizer",
    "make_train_step",
    "train",
]

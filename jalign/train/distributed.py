"""Multi-process (multi-host) initialisation and per-process data helpers.

``initialize`` calls ``jax.distributed.initialize`` from explicit arguments (config ``distributed.*`` or
``jalign train`` flags) or, failing those, the environment: ``JALIGN_COORDINATOR`` (host:port),
``JALIGN_NUM_PROCESSES``, ``JALIGN_PROCESS_ID``. On CPU it selects the gloo collectives
(``jax_cpu_collectives_implementation='gloo'``) so that cross-process reductions work. It must run before
any other JAX call creates the backend.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jalign.errors import UserError


def initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Initialise ``jax.distributed``; returns False (and does nothing) for a single-process run."""
    coordinator = coordinator or os.environ.get("JALIGN_COORDINATOR", "")
    num_processes = num_processes or int(os.environ.get("JALIGN_NUM_PROCESSES", "0") or 0)
    if process_id < 0:
        process_id = int(os.environ.get("JALIGN_PROCESS_ID", "-1") or -1)
    if not coordinator:
        if num_processes > 1:
            raise UserError("distributed: num_processes > 1 needs a coordinator address (host:port)")
        return False
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise UserError(f"distributed: need num_processes >= 1 and 0 <= process_id < num_processes, got "
                         f"num_processes={num_processes}, process_id={process_id}")
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if platforms in ("", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def host_value(tree):
    """``jax.device_get`` that also works for arrays spread over several processes.

    An array sharded across processes is not fully addressable, and ``device_get`` cannot read it; such leaves
    are all-gathered first (``multihost_utils.process_allgather(..., tiled=True)``: every process gets the
    whole global value). Fully addressable or fully replicated arrays and non-array leaves are fetched as
    ``device_get`` does. Every process must call it with the same tree (the gather is a collective)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(one, tree)


def local_rows(x) -> np.ndarray:
    """This process's rows of a global array sharded along axis 0 (the rows it fed in)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    full = np.asarray(multihost_utils.process_allgather(x, tiled=True))
    b = full.shape[0] // jax.process_count()
    return full[jax.process_index() * b: (jax.process_index() + 1) * b]

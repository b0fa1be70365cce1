"""Preference metrics with TRL's names and meanings."""

from __future__ import annotations

import jax.numpy as jnp

from jalign.losses._types import PairwiseLogps


def preference_metrics(batch: PairwiseLogps, beta: float = 0.1) -> dict[str, jnp.ndarray]:
    """TRL's DPO metrics, batch means (scalars).

    * ``rewards/chosen`` = β·(log π(y_w) − log π_ref(y_w)), ``rewards/rejected`` likewise for y_l;
    * ``rewards/margins`` = chosen − rejected; ``rewards/accuracies`` = fraction with chosen > rejected;
    * ``logps/chosen``, ``logps/rejected`` = policy sequence log-probs.

    Without reference fields the implicit rewards use a zero reference (β·log π).
    """
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    ref_w = 0.0 if batch.ref_chosen_logps is None else f32(batch.ref_chosen_logps)
    ref_l = 0.0 if batch.ref_rejected_logps is None else f32(batch.ref_rejected_logps)
    rw = beta * (f32(batch.chosen_logps) - ref_w)
    rl = beta * (f32(batch.rejected_logps) - ref_l)
    return {
        "rewards/chosen": rw.mean(),
        "rewards/rejected": rl.mean(),
        "rewards/margins": (rw - rl).mean(),
        "rewards/accuracies": (rw > rl).astype(jnp.float32).mean(),
        "logps/chosen": f32(batch.chosen_logps).mean(),
        "logps/rejected": f32(batch.rejected_logps).mean(),
    }

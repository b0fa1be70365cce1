"""The held-out probe of reward-model training: loss, accuracy and margin on fixed pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jalign import losses
from jalign.train.batch import SEQ
from jalign.train.distributed import host_value
from jalign.train.objectives import RewardPairs


class reward_probe:  # noqa: N801 - used like a function
    """Reward-model scores of fixed pairwise batches (e.g. held-out pairs) under the current parameters.

    Args:
      batches: pairwise batches (``chosen_*`` / ``rejected_*`` ``ids``, ``mask``, ``attention_mask``).
      every: evaluate every ``every`` updates.
      name: scalar prefix (``name/accuracy`` ...).
      margin, center_coef: of the reported loss (:func:`jalign.losses.reward_model_loss`).

    Returns per call, over all pairs of all batches: ``loss`` (mean), ``accuracy`` (fraction with
    r_c > r_r), ``margin`` (mean r_c − r_r) and ``pairs``.
    """

    def __init__(self, batches: list[dict], *, every: int = 100, name: str = "eval", margin: float = 0.0,
                 center_coef: float = 0.0):
        if not batches:
            raise ValueError("reward_probe: no batches")
        keep = [f"{s}_{f}" for s in ("chosen", "rejected") for f in SEQ]
        self.batches = [{k: np.asarray(b[k]) for k in keep} for b in batches]
        self.every, self.name, self.margin, self.center_coef = every, name, margin, center_coef
        self._fn = self._graphdef = None

    def __call__(self, step, graphdef, state):
        if self._fn is None or self._graphdef != graphdef:
            self._graphdef = graphdef

            def fn(params, model_state, b):
                score = RewardPairs.make_model_fn(graphdef, params, model_state)
                rc = score(b["chosen_ids"], b["chosen_mask"], b["chosen_attention_mask"])[0].astype(jnp.float32)
                rr = score(b["rejected_ids"], b["rejected_mask"], b["rejected_attention_mask"])[0].astype(jnp.float32)
                return rc, rr

            self._fn = jax.jit(fn)
        rc, rr = [], []
        for b in self.batches:
            c, r = host_value(self._fn(state.params, state.model_state, b))
            rc.append(np.asarray(c, np.float64))
            rr.append(np.asarray(r, np.float64))
        rc, rr = np.concatenate(rc), np.concatenate(rr)
        loss = losses.reward_model_loss(rc, rr, margin=self.margin, center_coef=self.center_coef)
        return {"loss": float(np.mean(loss)), "accuracy": float(np.mean(rc > rr)),
                "margin": float(np.mean(rc - rr)), "pairs": int(rc.size)}

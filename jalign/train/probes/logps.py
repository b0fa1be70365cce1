"""Log-prob probes: summed response log-probs of fixed pairs, and the held-out next-token loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jalign.train.distributed import host_value
from jalign.train.step import make_logps_fn


class logps_probe:  # noqa: N801 - used like a function
    """Summed response log-probs of fixed (prompt, chosen, rejected) batches under the current policy.

    Args:
      batch: a pairwise batch as the trainer's data sources produce it (``chosen_ids``, ``chosen_mask``,
        ``chosen_attention_mask``, and the same for ``rejected``; masks select response tokens).
      every: evaluate every ``every`` updates.
      name: scalar prefix.

    Returns per call: ``chosen_logps``/``rejected_logps`` lists ``[B]`` and their means (scalars
    ``mean_chosen``, ``mean_rejected``, ``mean_margin``).
    """

    def __init__(self, batch: dict, *, every: int = 10, name: str = "probe"):
        self.batch = {k: np.asarray(v) for k, v in batch.items()}
        self.every, self.name = every, name
        self._fn = self._graphdef = None

    def __call__(self, step, graphdef, state):
        if self._fn is not None and self._graphdef != graphdef:
            raise ValueError(f"probe {self.name!r} was compiled for another model; make one probe per run")
        if self._fn is None:
            self._graphdef = graphdef

            def fn(params, model_state, b):
                lp = make_logps_fn(graphdef, params, model_state)
                w, _ = lp(b["chosen_ids"], b["chosen_mask"], b["chosen_attention_mask"])
                l, _ = lp(b["rejected_ids"], b["rejected_mask"], b["rejected_attention_mask"])
                return w.astype(jnp.float32), l.astype(jnp.float32)

            self._fn = jax.jit(fn)
        w, l = host_value(self._fn(state.params, state.model_state, self.batch))
        return {"chosen_logps": w, "rejected_logps": l, "mean_chosen": float(np.mean(w)),
                "mean_rejected": float(np.mean(l)), "mean_margin": float(np.mean(w - l))}


class nll_probe:  # noqa: N801 - used like a function
    """Mean next-token cross-entropy (nats per scored token) of fixed SFT batches (e.g. held-out text).

    Args:
      batches: SFT batches (``ids``, ``mask``, ``attention_mask``); the loss is
        −Σ m·log π(x_t|x_<t) / Σ m over all of them (the trainer's SFT objective on held-out data).
      every: evaluate every ``every`` updates.
      name: scalar prefix (``name/nll``).
    """

    def __init__(self, batches: list[dict], *, every: int = 100, name: str = "eval"):
        if not batches:
            raise ValueError("nll_probe: no batches")
        self.batches = [{k: np.asarray(v) for k, v in b.items()} for b in batches]
        self.every, self.name = every, name
        self._fn = self._graphdef = None

    def __call__(self, step, graphdef, state):
        if self._fn is None or self._graphdef != graphdef:
            self._graphdef = graphdef

            def fn(params, model_state, b):
                lp, n = make_logps_fn(graphdef, params, model_state)(b["ids"], b["mask"], b["attention_mask"])
                return lp.astype(jnp.float32).sum(), n.astype(jnp.float32).sum()

            self._fn = jax.jit(fn)
        tot = np.zeros(2, np.float64)
        for b in self.batches:
            tot += np.asarray(host_value(self._fn(state.params, state.model_state, b)), np.float64)
        return {"nll": float(-tot[0] / max(tot[1], 1.0)), "tokens": int(tot[1])}

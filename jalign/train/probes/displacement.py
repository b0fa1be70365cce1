"""The likelihood-displacement probe (Razin et al., ICLR 2025, arXiv 2410.08847) on the trainer's probe protocol.

It follows, on a fixed probe set of preference pairs,

* ``log π(y+|x)`` and ``log π(y−|x)`` (summed response log-probs) and their change since the probe's first
  call (the start of training);
* the largest drop of ``π(y+|x)`` between two probed steps so far (the paper's single-token metric, as
  :func:`~jalign.diagnostics.largest_drop` of the trajectory, updated incrementally);
* the next-token distribution at one position of each pair (the response's first position — for
  single-token responses, the distribution over the response itself — or the first position where y+ and
  y− differ), and the ``k`` tokens whose probability grew most since the start
  (:func:`~jalign.diagnostics.mass_gainers`);
* optionally, ``log π(c|x)`` of a fixed list of candidate responses per prompt (e.g. the paper's label words
  {Yes, Yeah, Sure, …} / {No, Never, Maybe, …}) and the candidates that gained the most probability mass.

Batches use the trainer's pairwise layout (:mod:`jalign.train.batch`) plus, for candidates,
``candidate_ids``/``candidate_mask``/``candidate_attention_mask`` ``[B, C, T]``;
:func:`jalign.diagnostics.probe_batch` builds them from token ids. One jitted evaluation is shared by every
probe instance with the same model definition and batch shapes (so many short runs compile it once).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.diagnostics.displacement import mass_gainers, probe_positions
from jalign.losses import sequence_logps
from jalign.train.batch import PAIRWISE_FIELDS
from jalign.train.distributed import host_value
from jalign.train.step import logits_fn as trainer_logits_fn

CANDIDATE_FIELDS = ("candidate_ids", "candidate_mask", "candidate_attention_mask")


def _seq_logps(logits_BxTxV, ids_BxT, mask_BxT):
    return sequence_logps(logits_BxTxV[:, :-1], ids_BxT[:, 1:], mask_BxT[:, 1:])[0].astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(logits_fn, graphdef, params, model_state, batch, pos_B):
    """Log-probs of chosen/rejected [B], log next-token distribution at ``pos`` [B, V], candidates [B, C]."""
    lg_w = logits_fn(graphdef, params, model_state, batch["chosen_ids"], batch["chosen_attention_mask"])
    lg_l = logits_fn(graphdef, params, model_state, batch["rejected_ids"], batch["rejected_attention_mask"])
    out = {
        "chosen": _seq_logps(lg_w, batch["chosen_ids"], batch["chosen_mask"]),
        "rejected": _seq_logps(lg_l, batch["rejected_ids"], batch["rejected_mask"]),
        "next": jax.nn.log_softmax(
            jnp.take_along_axis(lg_w, pos_B[:, None, None], axis=1)[:, 0].astype(jnp.float32), axis=-1),
    }
    if "candidate_ids" in batch:
        B, C, T = batch["candidate_ids"].shape
        flat = {k: batch[k].reshape(B * C, T) for k in CANDIDATE_FIELDS}
        lg_c = logits_fn(graphdef, params, model_state, flat["candidate_ids"], flat["candidate_attention_mask"])
        out["candidates"] = _seq_logps(lg_c, flat["candidate_ids"], flat["candidate_mask"]).reshape(B, C)
    return out


class displacement_probe:  # noqa: N801 - used like a function, as logps_probe
    """Likelihood-displacement probe: log π(y+), log π(y−), their change, and the tokens/responses that gain.

    Args:
      batch: a probe batch (see :func:`jalign.diagnostics.probe_batch`): the six pairwise fields ``[B, T]`` and optionally the
        candidate fields ``[B, C, T]``.
      every: evaluate every ``every`` updates (``0``: only at the start and the end).
      k: how many gaining tokens (and candidates, at most C) to report per pair.
      position: where the next-token distribution is read: ``"first"`` (the response's first position) or
        ``"divergence"`` (first position where y+ and y− differ); see :func:`jalign.diagnostics.probe_positions`.
      name: scalar prefix.
      logits_fn: ``(graphdef, params, model_state, ids [N, T], attention_mask [N, T]) -> logits [N, T, V]``;
        default :func:`jalign.train.step.logits_fn`, the trainer's convention. Must be hashable (a
        module-level function).

    The first call fixes the start (its values are the reference for every change and gain). Each call
    returns (JSON-serialisable; lists are per pair):

    * ``chosen_logps``, ``rejected_logps`` ``[B]``; ``chosen_change``, ``rejected_change`` ``[B]`` (now − start);
    * ``chosen_prob_largest_drop`` ``[B]``: max_{s<t} π_s(y+) − π_t(y+) over the probed steps so far;
    * ``token_position`` ``[B]``; ``token_gainers`` / ``token_gains`` ``[B, k]``: the tokens with the largest
      π_now(z) − π_start(z) at that position, sorted by decreasing gain;
    * with candidates: ``candidate_logps`` ``[B, C]``, ``candidate_gainers`` / ``candidate_gains``
      ``[B, min(k, C)]`` (indices into the candidate list);
    * scalars ``mean_chosen``, ``mean_rejected``, ``mean_chosen_change``, ``mean_rejected_change``,
      ``frac_chosen_down`` (share of pairs whose log π(y+) fell) and ``mean_largest_drop``.

    Raises:
      ValueError: missing or inconsistent fields, bad ``k``/``every``/``position``, a non-finite log-prob
        (naming the quantity and the pair) — training is then stopped by the caller's exception.
    """

    def __init__(self, batch: dict, *, every: int = 1, k: int = 5, position: str = "first",
                 name: str = "displacement", logits_fn=None):
        missing = [f for f in PAIRWISE_FIELDS if f not in batch]
        if missing:
            raise ValueError(f"displacement_probe: batch is missing field(s) {missing}")
        has_c = [f in batch for f in CANDIDATE_FIELDS]
        if any(has_c) and not all(has_c):
            raise ValueError(f"displacement_probe: candidate fields must come together: {list(CANDIDATE_FIELDS)}")
        self.batch = {k_: np.asarray(v) for k_, v in batch.items() if k_ in PAIRWISE_FIELDS + CANDIDATE_FIELDS}
        B, T = self.batch["chosen_ids"].shape
        for f in PAIRWISE_FIELDS:
            if self.batch[f].shape != (B, T):
                raise ValueError(f"displacement_probe: field {f} has shape {self.batch[f].shape}, expected {(B, T)}")
        if all(has_c):
            cs = self.batch["candidate_ids"].shape
            if len(cs) != 3 or cs[0] != B:
                raise ValueError(f"displacement_probe: candidate_ids must be [B={B}, C, T], got {cs}")
            for f in CANDIDATE_FIELDS:
                if self.batch[f].shape != cs:
                    raise ValueError(f"displacement_probe: field {f} has shape {self.batch[f].shape}, expected {cs}")
        if int(k) < 1:
            raise ValueError(f"displacement_probe: k must be >= 1, got {k}")
        if int(every) < 0:
            raise ValueError(f"displacement_probe: every must be >= 0, got {every}")
        self.k, self.every, self.name, self.position = int(k), int(every), name, position
        self.logits_fn = trainer_logits_fn if logits_fn is None else logits_fn
        self.positions = probe_positions(self.batch, position)
        self.start: dict[str, np.ndarray] | None = None
        self._peak: np.ndarray | None = None  # running max of π(y+) over the probed steps
        self._drop: np.ndarray | None = None  # running largest drop (largest_drop, one step at a time)

    def evaluate(self, graphdef, state) -> dict[str, np.ndarray]:
        """The raw quantities on ``state`` (float32 numpy): ``chosen``, ``rejected`` [B], ``next`` [B, V] (log
        next-token distribution at :attr:`positions`) and, with candidates, ``candidates`` [B, C]."""
        out = host_value(_evaluate(self.logits_fn, graphdef, state.params, state.model_state,
                                       {k_: jnp.asarray(v) for k_, v in self.batch.items()},
                                       jnp.asarray(self.positions)))
        out = {k_: np.asarray(v) for k_, v in out.items()}
        for k_ in ("chosen", "rejected", "candidates"):
            if k_ in out and not np.all(np.isfinite(out[k_])):
                i = int(np.argwhere(~np.isfinite(out[k_]))[0, 0])
                raise ValueError(f"displacement_probe {self.name!r}: non-finite {k_} log-prob at pair {i}")
        return out

    def __call__(self, step, graphdef, state) -> dict[str, Any]:
        now = self.evaluate(graphdef, state)
        if self.start is None:
            self.start = now
        s = self.start
        p = np.exp(now["chosen"].astype(np.float64))
        # largest_drop of the trajectory so far, updated in O(B) per call (no re-scan of the history):
        # drop_t = max(drop_{t−1}, max_{s≤t} p_s − p_t)
        self._peak = p if self._peak is None else np.maximum(self._peak, p)
        self._drop = np.zeros_like(p) if self._drop is None else self._drop
        self._drop = drop = np.maximum(self._drop, self._peak - p)
        V = now["next"].shape[-1]
        tok, gain = mass_gainers(s["next"], now["next"], min(self.k, V))
        dw, dl = now["chosen"] - s["chosen"], now["rejected"] - s["rejected"]
        res: dict[str, Any] = {
            "chosen_logps": now["chosen"], "rejected_logps": now["rejected"],
            "chosen_change": dw, "rejected_change": dl,
            "chosen_prob_largest_drop": np.asarray(drop),
            "token_position": self.positions, "token_gainers": np.asarray(tok), "token_gains": np.asarray(gain),
            "mean_chosen": float(np.mean(now["chosen"])), "mean_rejected": float(np.mean(now["rejected"])),
            "mean_chosen_change": float(np.mean(dw)), "mean_rejected_change": float(np.mean(dl)),
            "frac_chosen_down": float(np.mean(dw < 0)), "mean_largest_drop": float(np.mean(drop)),
        }
        if "candidates" in now:
            C = now["candidates"].shape[-1]
            ci, cg = mass_gainers(s["candidates"], now["candidates"], min(self.k, C))
            res |= {"candidate_logps": now["candidates"], "candidate_gainers": np.asarray(ci),
                    "candidate_gains": np.asarray(cg)}
        return res

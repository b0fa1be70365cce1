"""The gradient-entanglement probe: ⟨g_w, g_l⟩, norms, cosines, case fractions and the condition of a margin
loss on a fixed pairwise probe set while training runs (Yuan et al., ICLR 2025, arXiv 2410.13828).

Built on the pure diagnostics of :mod:`jalign.diagnostics.entanglement`; follows the probe protocol of
:mod:`jalign.train.probes.runner`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jalign import losses
from jalign.diagnostics import entanglement as ent
from jalign.train.batch import response_lengths, split_pairs
from jalign.train.distributed import host_value
from jalign.train.step import ExampleLogp


def _rows(tree, i: int, k: int):
    return jax.tree.map(lambda x: x[i:i + k], tree)


@functools.partial(jax.jit, static_argnums=(0,))
def _pair_logps(lm, params, batch):
    return lm.batch_logps(params, batch, "chosen_")[0], lm.batch_logps(params, batch, "rejected_")[0]


class entanglement_probe:  # noqa: N801 - used like a function, as jalign.train.probes.logps_probe
    """Gradient-entanglement statistics of a margin loss on a fixed pairwise probe set, every ``every`` steps.

    Per call, at the probe-time parameters: :func:`jalign.diagnostics.pairwise_gradient_stats` of the summed
    response log-probs (gradients over all trainable parameters), the loss weights a, b
    (:func:`jalign.diagnostics.loss_weights`, autodiff of ``loss``), the condition and case label
    (:func:`jalign.diagnostics.entanglement_condition`) and the first-order predicted changes for a step of
    size ``lr``.

    Args:
      batch: a pairwise batch (``chosen_ids``, ``chosen_mask``, ``chosen_attention_mask``, the same for
        ``rejected``, ``[B, T]``); optional ``ref_chosen_logps`` / ``ref_rejected_logps`` ``[B]``.
      loss: a registered pairwise margin loss (the a, b weights and case labels are this loss's).
      hparams: its hyperparameters.
      every: evaluate every ``every`` updates (and at the start and the end).
      name: scalar prefix.
      lr: step size of the first-order predictions.
      batch_size: pairs per call of :func:`~jalign.diagnostics.pairwise_gradient_stats` (``None`` = all at
        once); the chunks are separate calls of one compiled function (with a batch size dividing the probe
        set, the same compilation as a training batch of that size).
      model: an :class:`ExampleLogp` to reuse (probes sharing one reuse one compilation); default: built from
        the trainer's ``graphdef`` and ``model_state`` at the first call.

    Reference log-probs (for losses that need them) come from the batch fields, else from the state's frozen
    reference parameters; otherwise the probe raises ``ValueError``.

    Returns per call: scalars ``cosine``, ``inner``, ``chosen_sq_norm``, ``rejected_sq_norm`` (means over pairs),
    ``case/ideal``, ``case/both fall``, ``case/both rise``, ``case/reversed`` (fractions),
    ``predicted_chosen_change``, ``predicted_rejected_change``, ``mean_chosen_logps``,
    ``mean_rejected_logps``, ``mean_margin``; and the per-pair lists ``pair/<field>`` for the statistics,
    ``a``, ``b``, ``case`` and the log-probs.
    """

    def __init__(self, batch: dict, *, loss: str = "dpo", hparams: dict | None = None, every: int = 10,
                 name: str = "entanglement", lr: float = 1e-3, batch_size: int | None = None,
                 model: ExampleLogp | None = None):
        self.batch = {k: np.asarray(v) for k, v in batch.items()}
        self.chosen, self.rejected = split_pairs(self.batch)
        self.loss, self.hparams = loss, dict(hparams or {})
        ent.margin_loss(loss, self.hparams)  # validates name, kind and hyperparameters now
        self.spec = losses.spec(loss)
        self.every, self.name, self.lr, self.batch_size = every, name, lr, batch_size
        self._lm = model
        self._ref = None

    def _model(self, graphdef, state) -> ExampleLogp:
        if self._lm is None or self._lm.graphdef is not graphdef:
            self._lm = ExampleLogp(graphdef, state.model_state)
        return self._lm

    def _reference(self, ref_params):
        if "ref_chosen_logps" in self.batch:
            return (jnp.asarray(self.batch["ref_chosen_logps"], jnp.float32),
                    jnp.asarray(self.batch["ref_rejected_logps"], jnp.float32))
        if ref_params is not None:
            if self._ref is None:  # the reference is frozen: compute once
                w, l = _pair_logps(self._lm, ref_params, self.batch)
                self._ref = (w.astype(jnp.float32), l.astype(jnp.float32))
            return self._ref
        if self.spec.needs_reference:
            raise ValueError(f"probe {self.name!r}: loss {self.loss!r} needs reference log-probs: give the probe "
                             "batch fields ref_chosen_logps/ref_rejected_logps or train with a frozen reference")
        return None, None

    def __call__(self, step, graphdef, state):
        lm = self._model(graphdef, state)
        n = self.chosen["ids"].shape[0]
        k = n if self.batch_size is None else self.batch_size
        parts = [ent.pairwise_gradient_stats(lm.logp, state.params, _rows(self.chosen, i, k), _rows(self.rejected, i, k))
                 for i in range(0, n, k)]
        stats = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        return self.report(stats, ref_params=state.ref_params)

    def report(self, stats: ent.PairGradStats, *, ref_params=None, model: ExampleLogp | None = None) -> dict:
        """The record of one call from the probe set's per-pair gradient statistics ``stats`` (computed
        elsewhere, e.g. vmapped over seeds by :func:`jalign.studies.entanglement.probe_seeds`); reference
        log-probs from the batch fields, else from ``ref_params`` (with ``model``, or the probe's own)."""
        if model is not None and self._lm is None:
            self._lm = model
        ref_w, ref_l = self._reference(ref_params)
        pb = losses.PairwiseLogps(stats.chosen_logps, stats.rejected_logps, ref_w, ref_l,
                                  response_lengths(self.chosen["mask"]), response_lengths(self.rejected["mask"]))
        a, b = ent.loss_weights(self.loss, pb, **self.hparams)
        dw, dl = ent.predicted_logp_changes(stats, a, b, self.lr)
        report = {**stats.as_dict(), "a": a, "b": b, **ent.entanglement_condition(stats, a, b),
                  "predicted_chosen_change": dw, "predicted_rejected_change": dl}
        report = host_value(report)
        out = {k: float(v) for k, v in ent.summarize_report(report, prefix="").items()}
        w, l = np.asarray(report["chosen_logps"]), np.asarray(report["rejected_logps"])
        out |= {"mean_chosen_logps": float(w.mean()), "mean_rejected_logps": float(l.mean()),
                "mean_margin": float((w - l).mean())}
        for k in ("cosine", "inner", "chosen_sq_norm", "rejected_sq_norm", "chosen_logps", "rejected_logps",
                  "a", "b", "case"):
            out[f"pair/{k}"] = np.asarray(report[k]).tolist()
        return out

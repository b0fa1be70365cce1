"""Pairwise preference training by the chain rule: every pairwise loss and both gradient-entanglement
mitigations share one compiled model step (a research trainer with its own jitted step).

:class:`PairwiseWeightedTrainer` trains on pairwise batches with the exact chain-rule form of any pairwise
loss's gradient, ∇ mean_i ℓ_i = mean_i (a_i g_w,i + b_i g_l,i) with a = ∂ℓ/∂log π_w, b = ∂ℓ/∂log π_l; the
weights are cheap functions of the log-probs, so one compiled step serves every loss and both mitigations
(pairwise-normalised: weights −s/‖g_w‖, s/‖g_l‖; token-masked: the masks of
:func:`jalign.train.batch.contrastive_response_masks`). Yuan et al., ICLR 2025, arXiv 2410.13828. The probe
that logs the same statistics during ordinary training is :class:`jalign.train.probes.entanglement_probe`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign import losses
from jalign.diagnostics import entanglement as ent
from jalign.diagnostics.entanglement import MITIGATIONS
from jalign.train.batch import PAIRWISE_FIELDS, contrastive_response_masks, split_pairs
from jalign.train.probes.runner import due
from jalign.train.step import ExampleLogp, TrainState


def mitigation_weights(mitigation: str, a, b, stats=None) -> tuple[jax.Array, jax.Array]:
    """Per-pair weights (w_c, w_r) of the surrogate Σ_i (w_c,i log π_w,i + w_r,i log π_l,i) / B.

    * ``"none"`` / ``"masked"``: (a, b) — the surrogate's gradient is the loss's gradient (chain rule);
    * ``"normalized"``: (−s/‖g_w‖, s/‖g_l‖) with s = (b − a)/2 ≥ 0 for a margin loss (βσ(−βh) for DPO):
      a descent step is θ + η·mean_i s_i (g_w,i/‖g_w,i‖ − g_l,i/‖g_l,i‖), the pairwise-normalised update of
      :func:`jalign.diagnostics.pairwise_normalized_update` (``stats`` from
      :func:`jalign.diagnostics.pairwise_gradient_stats` at the same parameters).
    """
    if mitigation not in MITIGATIONS:
        raise ValueError(f"mitigation must be one of {MITIGATIONS}, got {mitigation!r}")
    if mitigation != "normalized":
        return a, b
    if stats is None:
        raise ValueError("mitigation 'normalized' needs the per-pair gradient statistics (stats=...)")
    s = 0.5 * (b - a)
    nw = jnp.sqrt(jnp.maximum(stats["chosen_sq_norm"], 1e-24))
    nl = jnp.sqrt(jnp.maximum(stats["rejected_sq_norm"], 1e-24))
    return -s / nw, s / nl


@functools.partial(jax.jit, static_argnames=("loss", "hkey"))
def _weights(loss, hkey, pb):
    a, b = ent.loss_weights(loss, pb, **dict(hkey))
    return a, b, jnp.mean(ent.margin_loss(loss, dict(hkey))(pb))


class PairwiseWeightedTrainer:
    """Pairwise preference training by the chain rule, sharing one compiled step between losses.

    For a pairwise loss ℓ_i = ℓ(log π_w,i, log π_l,i) the batch gradient is exactly
    ∇ (1/B) Σ_i ℓ_i = (1/B) Σ_i (a_i g_w,i + b_i g_l,i), a_i = ∂ℓ_i/∂log π_w,i, b_i = ∂ℓ_i/∂log π_l,i. Each
    update does a forward pass (log-probs), computes (a, b) by autodiff of the registered loss
    (:func:`jalign.diagnostics.loss_weights`, a tiny compiled function per loss), turns them into weights
    (:func:`mitigation_weights`) and applies ``tx`` to the gradient of the weighted surrogate. The model step
    depends only on shapes, so every loss and mitigation reuses it. Mitigations:

    * ``"normalized"`` — the pairwise-normalised update (needs the per-pair gradient norms: one vmapped
      per-example backward pass per update, :func:`jalign.diagnostics.pairwise_gradient_stats`);
    * ``"masked"`` — the loss (and its reference log-probs) on :func:`contrastive_response_masks` masks.

    Args:
      graphdef, model_state: the split model (:func:`jalign.train.step.split_model`).
      tx: the optax optimiser.
    """

    def __init__(self, graphdef, model_state, tx: optax.GradientTransformation):
        self.lm = ExampleLogp(graphdef, model_state)
        self.tx = tx
        lm = self.lm

        def logps(params, batch):
            w, nw = lm.batch_logps(params, batch, "chosen_")
            l, nl = lm.batch_logps(params, batch, "rejected_")
            return w, l, nw, nl

        def step(params, opt_state, batch, wc, wr):
            def surrogate(p):
                w, l, _, _ = logps(p, batch)
                return jnp.sum(wc * w + wr * l) / wc.shape[0]

            grads = jax.grad(surrogate)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

        self.logps = jax.jit(logps)
        self.step = jax.jit(step)
        self.masks = jax.jit(contrastive_response_masks)

    def stats(self, params, batch, batch_size=None) -> ent.PairGradStats:
        c, r = split_pairs(batch)
        return ent.pairwise_gradient_stats(self.lm.logp, params, c, r, batch_size=batch_size)

    def loss_batch(self, params, batch, ref=None) -> losses.PairwiseLogps:
        """The :class:`~jalign.losses.PairwiseLogps` of ``batch`` at ``params`` (``ref`` = (ref_w, ref_l))."""
        w, l, nw, nl = self.logps(params, batch)
        rw, rl = (None, None) if ref is None else ref
        return losses.PairwiseLogps(w, l, rw, rl, nw, nl)

    def weights(self, loss: str, hparams: dict, pb: losses.PairwiseLogps, mitigation: str = "none",
                stats=None) -> tuple[jax.Array, jax.Array]:
        """(w_c, w_r) for one update (see :func:`mitigation_weights`)."""
        a, b, _ = _weights(loss, tuple(sorted(hparams.items())), pb)
        return mitigation_weights(mitigation, a, b, stats)

    def update(self, params, opt_state, batch, *, loss: str, hparams: dict | None = None,
               mitigation: str = "none", ref_params=None, ref=None):
        """One update on ``batch``; returns ``(params, opt_state, info)``.

        ``ref`` = (ref_chosen_logps, ref_rejected_logps) of this batch (under the same masks), or
        ``ref_params`` to compute them. With ``mitigation="masked"`` the batch's response masks are replaced by
        :func:`contrastive_response_masks` before anything is computed. ``info`` holds the loss value, the
        weights and the gradient norm.
        """
        hparams = dict(hparams or {})
        if mitigation not in MITIGATIONS:
            raise ValueError(f"mitigation must be one of {MITIGATIONS}, got {mitigation!r}")
        batch = {k: jnp.asarray(batch[k]) for k in PAIRWISE_FIELDS}
        if mitigation == "masked":
            batch = {**batch, **self.masks(batch)}
        if ref is None and ref_params is not None:
            rw, rl, _, _ = self.logps(ref_params, batch)
            ref = (rw, rl)
        pb = self.loss_batch(params, batch, ref)
        stats = self.stats(params, batch) if mitigation == "normalized" else None
        a, b, value = _weights(loss, tuple(sorted(hparams.items())), pb)
        wc, wr = mitigation_weights(mitigation, a, b, stats)
        params, opt_state, gnorm = self.step(params, opt_state, batch, wc, wr)
        info = {"loss": float(value), "grad_norm": float(gnorm)}
        if not (np.isfinite(info["loss"]) and np.isfinite(info["grad_norm"])):
            raise FloatingPointError(f"non-finite loss or gradient ({info}); loss {loss!r}, mitigation "
                                     f"{mitigation!r}")
        return params, opt_state, info


def train_pairwise(trainer: PairwiseWeightedTrainer, params, source, *, loss: str, steps: int,
                   hparams: dict | None = None, mitigation: str = "none", ref_params=None,
                   probes=()) -> dict:
    """Train ``params`` for ``steps`` updates on batches drawn from ``source`` with
    :meth:`PairwiseWeightedTrainer.update`, running ``probes`` (the :mod:`jalign.train.probes` protocol) at
    step 0, every ``probe.every`` updates and at the end. The reference is ``ref_params`` (default: the
    initial ``params``; its log-probs are computed under the batch's — possibly masked — response masks).

    Returns ``{"history": [{"step", "loss", "grad_norm"}...], "probes": [records], "params": final}``.
    """
    ref_params = params if ref_params is None else ref_params
    opt_state = trainer.tx.init(params)
    history, records = [], []

    def probe(step):
        state = TrainState(params=params, opt_state=opt_state, model_state=trainer.lm.model_state,
                           ref_params=ref_params, step=jnp.asarray(step, jnp.int32), rng=None)
        for p in probes:
            if due(p, step, start=0, final=steps):
                records.append({"step": step, "probe": p.name, **p(step, trainer.lm.graphdef, state)})

    probe(0)
    for step in range(1, steps + 1):
        params, opt_state, info = trainer.update(params, opt_state, next(source), loss=loss, hparams=hparams,
                                                 mitigation=mitigation, ref_params=ref_params)
        history.append({"step": step, **info})
        probe(step)
    return {"history": history, "probes": records, "params": params}

"""Gradient entanglement in training: a probe, the two mitigations, and a weighted-gradient pairwise driver.

Built on the pure diagnostics of :mod:`jalign.diagnostics.entanglement` (Yuan et al., ICLR 2025, arXiv
2410.13828) and on the trainer's conventions (batches of ``chosen_ids``/``chosen_mask``/
``chosen_attention_mask`` and the same for ``rejected``, ``[B, T]``; the response mask is aligned with the ids,
the logits at t predict token t + 1; see :mod:`jalign.train.objectives`).

* :class:`entanglement_probe` — a probe (:mod:`jalign.train.probes`) logging ⟨g_w, g_l⟩, ‖g_w‖², ‖g_l‖²,
  cos(g_w, g_l), the case fractions of a margin loss and the chosen / rejected log-probs on a fixed probe set.
* :func:`contrastive_response_masks` — the token-masking mitigation in the trainer's layout: the response
  masks without the common prefix and the common suffix of the two responses.
* :class:`PairwiseWeightedTrainer` — trains on pairwise batches with the exact chain-rule form of any pairwise
  loss's gradient, ∇ mean_i ℓ_i = mean_i (a_i g_w,i + b_i g_l,i) with a = ∂ℓ/∂log π_w, b = ∂ℓ/∂log π_l; the
  weights are cheap functions of the log-probs, so one compiled step serves every loss and both
  mitigations (pairwise-normalised: weights −s/‖g_w‖, s/‖g_l‖; token-masked: different masks).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign import losses
from jalign.diagnostics import entanglement as ent
from jalign.losses import sequence_logps
from jalign.train.distributed import host_value
from jalign.train.step import logits_fn

SEQ = ("ids", "mask", "attention_mask")
MITIGATIONS = ("none", "normalized", "masked")


# ---------------------------------------------------------------------------------------------------------
# Per-example log-probs of a trainer model


@dataclasses.dataclass(eq=False)
class ExampleLogp:
    """``logp(params, example) -> scalar``: the summed response log-prob of one trainer-layout sequence.

    ``example`` is a dict of ``[T]`` arrays ``ids``, ``mask``, ``attention_mask``. The object is hashable by
    identity, so its bound method is a valid static ``logp_fn`` of the jitted diagnostics (one compilation
    per shape). ``model_state`` (the model's non-trainable variables) is fixed at construction.
    """

    graphdef: Any
    model_state: Any

    def logp(self, params, example):
        ids, mask, attn = (jnp.asarray(example[f])[None] for f in SEQ)
        logits = logits_fn(self.graphdef, params, self.model_state, ids, attn)
        return sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])[0][0]

    def batch_logps(self, params, batch, prefix=""):
        """``(logps [B], lengths [B])`` of ``batch[prefix + 'ids']`` etc. (one forward pass)."""
        ids, mask, attn = (batch[f"{prefix}{f}"] for f in SEQ)
        logits = logits_fn(self.graphdef, params, self.model_state, ids, attn)
        return sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])


def split_pairs(batch: dict) -> tuple[dict, dict]:
    """``(chosen, rejected)``: dicts of ``ids``/``mask``/``attention_mask`` ``[B, T]`` from a pairwise batch."""
    missing = [f"{s}_{f}" for s in ("chosen", "rejected") for f in SEQ if f"{s}_{f}" not in batch]
    if missing:
        raise ValueError(f"pairwise batch is missing field(s) {missing}")
    return ({f: jnp.asarray(batch[f"chosen_{f}"]) for f in SEQ},
            {f: jnp.asarray(batch[f"rejected_{f}"]) for f in SEQ})


def _rows(tree, i: int, k: int):
    return jax.tree.map(lambda x: x[i:i + k], tree)


def _response_lengths(mask) -> jax.Array:
    return jnp.asarray(mask)[:, 1:].astype(jnp.float32).sum(-1)


# ---------------------------------------------------------------------------------------------------------
# Token masking in the trainer layout


def contrastive_response_masks(batch: dict) -> dict[str, jax.Array]:
    """The token-masking mitigation for a trainer-layout pairwise batch.

    Each response (the positions where ``mask`` is 1, contiguous) is gathered into a right-padded row, the
    common prefix and common suffix of chosen and rejected are dropped by
    :func:`jalign.diagnostics.contrastive_token_masks`, and the kept positions are scattered back. Returns
    ``{"chosen_mask": [B, T], "rejected_mask": [B, T]}`` (same dtype as the input masks), to replace the
    batch's response masks: the margin then only sees the contrasting span.
    """
    out = {}
    resp = {}
    for s in ("chosen", "rejected"):
        ids, mask = jnp.asarray(batch[f"{s}_ids"]), jnp.asarray(batch[f"{s}_mask"])
        T = ids.shape[-1]
        pos = jnp.arange(T)
        start = jnp.argmax(mask != 0, axis=-1)
        n = (mask != 0).sum(-1)
        idx = jnp.clip(start[:, None] + pos, 0, T - 1)
        valid = pos[None] < n[:, None]
        resp[s] = (jnp.take_along_axis(ids, idx, axis=-1) * valid, valid.astype(jnp.int32), start, mask)
    kw, kl = ent.contrastive_token_masks(resp["chosen"][0], resp["rejected"][0], resp["chosen"][1],
                                         resp["rejected"][1])
    for s, keep in (("chosen", kw), ("rejected", kl)):
        _, _, start, mask = resp[s]
        T = mask.shape[-1]
        # Position t of the sequence is response position t − start.
        j = jnp.arange(T)[None] - start[:, None]
        kept = jnp.take_along_axis(keep, jnp.clip(j, 0, T - 1), axis=-1) * (j >= 0) * (mask != 0)
        out[f"{s}_mask"] = kept.astype(mask.dtype)
    return out


# ---------------------------------------------------------------------------------------------------------
# The probe


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
        ent._resolve_loss(loss, self.hparams)  # validates name, kind and hyperparameters now
        self.spec = losses.spec(loss)
        self.every, self.name, self.lr, self.batch_size = every, name, lr, batch_size
        self._lm = model
        self._ref = None

    def _model(self, graphdef, state) -> ExampleLogp:
        if self._lm is None or self._lm.graphdef is not graphdef:
            self._lm = ExampleLogp(graphdef, state.model_state)
        return self._lm

    def _reference(self, state):
        if "ref_chosen_logps" in self.batch:
            return (jnp.asarray(self.batch["ref_chosen_logps"], jnp.float32),
                    jnp.asarray(self.batch["ref_rejected_logps"], jnp.float32))
        if state.ref_params is not None:
            if self._ref is None:  # the reference is frozen: compute once
                w, l = _pair_logps(self._lm, state.ref_params, self.batch)
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
        ref_w, ref_l = self._reference(state)
        pb = losses.PairwiseLogps(stats.chosen_logps, stats.rejected_logps, ref_w, ref_l,
                                  _response_lengths(self.chosen["mask"]), _response_lengths(self.rejected["mask"]))
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


# ---------------------------------------------------------------------------------------------------------
# Weighted-gradient pairwise training (every loss, both mitigations, one compiled step)


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
    return a, b, jnp.mean(ent._resolve_loss(loss, dict(hkey))(pb))


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
        batch = {k: jnp.asarray(batch[k]) for k in (f"{s}_{f}" for s in ("chosen", "rejected") for f in SEQ)}
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
    from jalign.train.probes import due
    from jalign.train.step import TrainState

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

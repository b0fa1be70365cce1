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


def _weights_fn(loss, hkey, pb):
    a, b = ent.loss_weights(loss, pb, **dict(hkey))
    return a, b, jnp.mean(ent.margin_loss(loss, dict(hkey))(pb))


_weights = jax.jit(_weights_fn, static_argnames=("loss", "hkey"))


@functools.partial(jax.jit, static_argnames=("loss", "hkey"))
def _seed_weights(loss, hkey, pb):
    return jax.vmap(lambda p: _weights_fn(loss, hkey, p))(pb)


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

        def pair_stats(params, batch):
            c, r = split_pairs(batch)
            return ent.pairwise_gradient_stats(lm.logp, params, c, r)

        self.logps = jax.jit(logps)
        self.step = jax.jit(step)
        self.masks = jax.jit(contrastive_response_masks)
        # The same functions over a leading seed axis (parameters, optimiser states and batches stacked;
        # the reference parameters shared): one compiled call per update serves every seed.
        self.seed_logps = jax.jit(jax.vmap(logps))
        self.seed_ref_logps = jax.jit(jax.vmap(logps, in_axes=(None, 0)))
        self.seed_step = jax.jit(jax.vmap(step))
        self.seed_masks = jax.jit(jax.vmap(contrastive_response_masks))
        self.seed_stats = jax.jit(jax.vmap(pair_stats))

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


    def update_seeds(self, params, opt_state, batch, *, loss: str, hparams: dict | None = None,
                     mitigation: str = "none", ref_params=None):
        """:meth:`update` for ``S`` independent runs at once: ``params``, ``opt_state`` and every ``batch``
        field carry a leading seed axis ``[S, ...]`` (:func:`jalign.train.step.stack_trees`); ``ref_params``
        (unstacked) is the reference shared by every seed. Every piece is the vmapped (over seeds) version of
        :meth:`update`'s, so run ``s`` equals :meth:`update` on ``params[s]`` and ``batch[s]`` up to float
        rounding. Returns ``(params, opt_state, info)`` with ``info["loss"]``, ``info["grad_norm"]`` lists of
        ``S`` floats."""
        hparams = dict(hparams or {})
        if mitigation not in MITIGATIONS:
            raise ValueError(f"mitigation must be one of {MITIGATIONS}, got {mitigation!r}")
        batch = {k: jnp.asarray(batch[k]) for k in PAIRWISE_FIELDS}
        if mitigation == "masked":
            batch = {**batch, **self.seed_masks(batch)}
        ref = None
        if ref_params is not None:
            rw, rl, _, _ = self.seed_ref_logps(ref_params, batch)
            ref = (rw, rl)
        w, l, nw, nl = self.seed_logps(params, batch)
        rw, rl = (None, None) if ref is None else ref
        pb = losses.PairwiseLogps(w, l, rw, rl, nw, nl)
        stats = self.seed_stats(params, batch) if mitigation == "normalized" else None
        a, b, value = _seed_weights(loss, tuple(sorted(hparams.items())), pb)
        wc, wr = mitigation_weights(mitigation, a, b, stats)
        params, opt_state, gnorm = self.seed_step(params, opt_state, batch, wc, wr)
        info = {"loss": np.asarray(value, np.float64).tolist(), "grad_norm": np.asarray(gnorm, np.float64).tolist()}
        if not (np.all(np.isfinite(info["loss"])) and np.all(np.isfinite(info["grad_norm"]))):
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


def train_pairwise_seeds(trainer: PairwiseWeightedTrainer, params, sources, *, loss: str, steps: int,
                         hparams: dict | None = None, mitigation: str = "none", ref_params=None,
                         probe=None) -> dict:
    """:func:`train_pairwise` for ``S = len(sources)`` seeds at once, batched
    (:meth:`PairwiseWeightedTrainer.update_seeds`): every seed starts from ``params`` and draws its batches
    from its own source (seed ``s`` sees ``sources[s]``); the reference is ``ref_params`` (default the initial
    ``params``) for every seed. ``probe`` is an :class:`~jalign.train.probes.entanglement_probe`, evaluated for
    every seed (its gradient statistics vmapped over seeds, :meth:`probe_seeds`) at step 0, every
    ``probe.every`` updates and at the end.

    Returns ``{"history": [{"step", "loss": [S], "grad_norm": [S]}...], "probes": [[record per probe step]
    per seed], "params": final params [S, ...]}``.
    """
    from jalign.train.step import replicate_tree

    n = len(sources)
    ref_params = params if ref_params is None else ref_params
    params = replicate_tree(params, n)
    opt_state = jax.vmap(trainer.tx.init)(params)
    history, records = [], [[] for _ in range(n)]

    def run_probe(step):
        if probe is not None and due(probe, step, start=0, final=steps):
            for s, rec in enumerate(probe_seeds(trainer, probe, params, ref_params)):
                records[s].append({"step": step, "probe": probe.name, **rec})

    run_probe(0)
    for step in range(1, steps + 1):
        batches = [next(src) for src in sources]
        batch = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in PAIRWISE_FIELDS}
        params, opt_state, info = trainer.update_seeds(params, opt_state, batch, loss=loss, hparams=hparams,
                                                       mitigation=mitigation, ref_params=ref_params)
        history.append({"step": step, **info})
        run_probe(step)
    return {"history": history, "probes": records, "params": params}


def probe_seeds(trainer: PairwiseWeightedTrainer, probe, params, ref_params) -> list[dict]:
    """The records of an :class:`~jalign.train.probes.entanglement_probe` for every seed of stacked
    ``params`` ``[S, ...]``: the per-pair gradient statistics of its probe set in chunks of
    ``probe.batch_size`` pairs, vmapped over seeds (the compilation of
    :attr:`PairwiseWeightedTrainer.seed_stats`), then :meth:`entanglement_probe.report` per seed (the
    reference log-probs from ``ref_params``, shared)."""
    from jalign.train.step import tree_index

    n = jax.tree.leaves(params)[0].shape[0]
    b = {k: probe.batch[k] for k in PAIRWISE_FIELDS}
    total = b["chosen_ids"].shape[0]
    k = total if probe.batch_size is None else probe.batch_size
    parts = []
    for i in range(0, total, k):
        chunk = {f: np.broadcast_to(v[i:i + k], (n, *v[i:i + k].shape)) for f, v in b.items()}
        parts.append(trainer.seed_stats(params, chunk))
    stats = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)
    return [probe.report(tree_index(stats, s), ref_params=ref_params) for s in range(n)]

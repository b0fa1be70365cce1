"""Gradient entanglement of margin-based preference losses (Yuan et al., ICLR 2025, arXiv 2410.13828).

Notation (per preference pair): g_w = ∇_θ log π_θ(y_w|x), g_l = ∇_θ log π_θ(y_l|x) (sequence log-probs, the
gradient over *all* parameter leaves), a = ∂ℓ/∂log π(y_w), b = ∂ℓ/∂log π(y_l) (the raw partial derivatives
of the per-pair loss; for DPO a = −βσ(−βh) < 0 < b = −a). One gradient step of size η on the pair's loss,
θ' = θ − η(a·g_w + b·g_l), changes the log-probs to first order by

    Δlog π_w ≈ −η (a‖g_w‖² + b⟨g_w, g_l⟩),      Δlog π_l ≈ −η (a⟨g_w, g_l⟩ + b‖g_l‖²).

With a < 0 < b: the chosen log-prob rises iff ⟨g_w,g_l⟩ ≤ (|a|/b)‖g_w‖², the rejected falls iff
⟨g_w,g_l⟩ ≤ (b/|a|)‖g_l‖² (the card's condition with its a = |∂ℓ/∂log π_w|, b = ∂ℓ/∂log π_l).

Everything here is pure: functions of a log-prob function, parameters and arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = Any
PyTree = Any

CASES = ("ideal", "both fall", "both rise", "reversed")
# The mitigations of gradient entanglement: none, the pairwise-normalised update, token masking.
MITIGATIONS = ("none", "normalized", "masked")
"""Case labels by code: 0 ideal (Δlog π_w ≥ 0 ≥ Δlog π_l), 1 both fall, 2 both rise, 3 reversed
(Δlog π_w < 0 < Δlog π_l; impossible for DPO-like losses with a = −b, whose margin always grows)."""


def _acc_dtype(*xs: Array) -> Any:
    """float32, or float64 when an input is float64 (x64 mode)."""
    dt = jnp.float32
    for x in xs:
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            dt = jnp.promote_types(dt, jnp.result_type(x))
    return dt


def tree_dot(a: PyTree, b: PyTree) -> Array:
    """⟨a, b⟩ summed over *all* leaves (a single scalar), accumulated in float32 or wider.

    This is the inner product of the flattened parameter vectors — not a sum of per-leaf norms.
    """
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"tree_dot: trees have {len(la)} and {len(lb)} leaves")
    if not la:
        return jnp.zeros((), jnp.float32)
    dt = _acc_dtype(*la, *lb)
    return sum(jnp.sum(x.astype(dt) * y.astype(dt)) for x, y in zip(la, lb, strict=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairGradStats:
    """Per-pair gradient statistics, every field ``[B]`` (also readable as ``stats["inner"]``).

    Attributes:
      inner: ⟨g_w, g_l⟩.
      chosen_sq_norm: ‖g_w‖².
      rejected_sq_norm: ‖g_l‖².
      cosine: ⟨g_w, g_l⟩ / (‖g_w‖‖g_l‖) (0 where a gradient vanishes).
      chosen_logps: log π(y_w|x) at the parameters (free by-product of the gradient pass).
      rejected_logps: log π(y_l|x).
    """

    inner: Array
    chosen_sq_norm: Array
    rejected_sq_norm: Array
    cosine: Array
    chosen_logps: Array
    rejected_logps: Array

    def __getitem__(self, key: str) -> Array:
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def as_dict(self) -> dict[str, Array]:
        return {k: getattr(self, k) for k in self.keys()}


def _cosine(inner: Array, nw: Array, nl: Array) -> Array:
    denom = jnp.sqrt(nw) * jnp.sqrt(nl)
    ok = denom > 0
    return jnp.where(ok, inner / jnp.where(ok, denom, 1.0), 0.0)


def _check_batch(chosen: PyTree, rejected: PyTree) -> int:
    sizes = {int(jnp.shape(x)[0]) for x in jax.tree.leaves(chosen) + jax.tree.leaves(rejected) if jnp.ndim(x)}
    if len(sizes) != 1:
        raise ValueError(
            f"chosen and rejected must be pytrees batched on axis 0 with one batch size; got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _map(fn: Callable, xs: PyTree, batch_size: int | None, n: int) -> PyTree:
    """vmap over axis 0, or lax.map in chunks of ``batch_size`` (vmapped inside a chunk)."""
    if batch_size is None or batch_size >= n:
        return jax.vmap(fn)(xs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return jax.lax.map(fn, xs, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("logp_fn", "batch_size"))
def _stats(logp_fn, params, chosen, rejected, batch_size):
    vg = jax.value_and_grad(logp_fn)
    n = jax.tree.leaves(chosen)[0].shape[0]

    def one(pair):
        c, r = pair
        lw, gw = vg(params, c)
        ll, gl = vg(params, r)
        dt = _acc_dtype(lw, ll, *jax.tree.leaves(gw))
        return (
            tree_dot(gw, gl),
            tree_dot(gw, gw),
            tree_dot(gl, gl),
            jnp.asarray(lw, dt),
            jnp.asarray(ll, dt),
        )

    inner, nw, nl, lw, ll = _map(one, (chosen, rejected), batch_size, n)
    return PairGradStats(inner, nw, nl, _cosine(inner, nw, nl), lw, ll)


def pairwise_gradient_stats(
    logp_fn: Callable[[PyTree, PyTree], Array],
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    *,
    batch_size: int | None = None,
) -> PairGradStats:
    """Per-pair inner products and squared norms of the chosen / rejected log-prob gradients.

    g_w = ∇_params logp_fn(params, chosen[i]), g_l = ∇_params logp_fn(params, rejected[i]); returns
    ⟨g_w, g_l⟩, ‖g_w‖², ‖g_l‖², cos(g_w, g_l) for each pair, each ``[B]``. Per-example gradients are
    vmapped (``jax.vmap(jax.value_and_grad(logp_fn))``); with ``batch_size`` the pairs are processed in
    chunks of that size by ``lax.map`` (peak memory ≈ 2·batch_size gradient copies). Squared norms and inner
    products are sums over all parameter leaves, accumulated in float32 (float64 under x64). Parameters may
    be sharded: the per-example gradients inherit the parameter sharding and the reductions are global.

    Args:
      logp_fn: ``logp_fn(params, example) -> scalar`` sequence log-probability of one example.
      params: parameter pytree.
      chosen: pytree of arrays batched on axis 0 (``B`` chosen examples).
      rejected: pytree batched on axis 0 (``B`` rejected examples, same ``B``).
      batch_size: pairs per chunk; ``None`` = all at once.

    Returns:
      :class:`PairGradStats` (fields ``inner``, ``chosen_sq_norm``, ``rejected_sq_norm``, ``cosine``,
      ``chosen_logps``, ``rejected_logps``; each ``[B]``).

    References:
      Yuan et al., A Common Pitfall of Margin-based Language Model Alignment: Gradient Entanglement,
      ICLR 2025 (arXiv 2410.13828).
    """
    _check_batch(chosen, rejected)
    return _stats(logp_fn, params, chosen, rejected, batch_size)


# ----------------------------------------------------------------------------------------------------------
# Loss weights a, b from the registry, conditions, first-order predictions.


def pairwise_margin_losses() -> list[str]:
    """Canonical names of every registered pairwise, margin-based loss (aliases dropped), sorted."""
    from jalign import losses

    out = set()
    for n in losses.names():
        s = losses.spec(n)
        if s.kind == "pairwise" and s.margin_based:
            out.add(s.name)
    return sorted(out)


def margin_loss(loss: str | Callable, hparams: dict[str, Any] | None = None) -> Callable:
    """``fn(batch) -> [B]`` of a pairwise margin-based loss with its hyperparameters validated once
    (:func:`jalign.losses.bind`); a plain callable ``fn(batch, **hparams)`` is returned with them bound."""
    hparams = dict(hparams or {})
    if callable(loss) and not hasattr(loss, "spec"):
        return functools.partial(loss, **hparams) if hparams else loss
    from jalign import losses

    bound = losses.bind(loss, **hparams)
    if bound.kind != "pairwise" or not bound.spec.margin_based:
        raise ValueError(f"loss {bound.name!r} is not a pairwise margin-based loss (kind={bound.kind!r})")
    return bound


def loss_weights(loss: str | Callable, batch: Any, **hparams: Any) -> tuple[Array, Array]:
    """a = ∂ℓ_i/∂chosen_logps_i and b = ∂ℓ_i/∂rejected_logps_i for every pair, by autodiff of the loss.

    Args:
      loss: a registered pairwise margin-based loss name, or ``fn(batch) -> [B]``.
      batch: a :class:`jalign.losses.PairwiseLogps` (reference / length fields as the loss needs).
      **hparams: loss hyperparameters.

    Returns:
      ``(a [B], b [B])`` in float32 (or wider). Extra policy terms of the loss (CPO's NLL, DPOP's penalty)
      are included automatically. For batch-coupled losses these are derivatives of the batch sum.
    """
    fn = margin_loss(loss, hparams)
    dt = _acc_dtype(batch.chosen_logps, batch.rejected_logps)
    lw = jnp.asarray(batch.chosen_logps, dt)
    ll = jnp.asarray(batch.rejected_logps, dt)

    def total(lw, ll):
        return jnp.sum(fn(dataclasses.replace(batch, chosen_logps=lw, rejected_logps=ll)))

    return jax.grad(total, argnums=(0, 1))(lw, ll)


def predicted_logp_changes(
    stats: PairGradStats | dict, a: Array, b: Array, lr: float | Array
) -> tuple[Array, Array]:
    """First-order (Δlog π_w, Δlog π_l) for the step θ' = θ − lr·(a·g_w + b·g_l) on each pair's own loss.

    Δlog π_w ≈ −lr·(a‖g_w‖² + b⟨g_w,g_l⟩),  Δlog π_l ≈ −lr·(a⟨g_w,g_l⟩ + b‖g_l‖²).
    """
    inner, nw, nl = stats["inner"], stats["chosen_sq_norm"], stats["rejected_sq_norm"]
    return -lr * (a * nw + b * inner), -lr * (a * inner + b * nl)


def entanglement_condition(stats: PairGradStats | dict, a: Array, b: Array) -> dict[str, Array]:
    """The card's condition and case label per pair.

    Returns a dict of ``[B]`` arrays:

    * ``chosen_rises`` (Δlog π_w ≥ 0 to first order), ``rejected_falls`` (Δlog π_l ≤ 0);
    * ``case``: int code into :data:`CASES` (0 ideal, 1 both fall, 2 both rise, 3 reversed);
    * ``chosen_threshold`` = (−a/b)‖g_w‖² and ``rejected_threshold`` = (−b/a)‖g_l‖²: for a < 0 < b the
      chosen rises iff ⟨g_w,g_l⟩ ≤ chosen_threshold and the rejected falls iff ⟨g_w,g_l⟩ ≤ rejected_threshold
      (±inf where the divisor vanishes).
    """
    dw, dl = predicted_logp_changes(stats, a, b, 1.0)
    rises, falls = dw >= 0, dl <= 0
    case = jnp.where(rises & falls, 0, jnp.where(falls, 1, jnp.where(rises, 2, 3)))
    nw, nl = stats["chosen_sq_norm"], stats["rejected_sq_norm"]
    inf = jnp.inf
    thr_w = jnp.where(b != 0, -a / jnp.where(b != 0, b, 1.0) * nw, inf)
    thr_l = jnp.where(a != 0, -b / jnp.where(a != 0, a, 1.0) * nl, inf)
    return {
        "chosen_rises": rises,
        "rejected_falls": falls,
        "case": case.astype(jnp.int32),
        "chosen_threshold": thr_w,
        "rejected_threshold": thr_l,
    }


def case_names(case: Array) -> list[str]:
    """Human-readable labels for an array of case codes."""
    return [CASES[int(c)] for c in jnp.asarray(case).reshape(-1)]


@functools.partial(jax.jit, static_argnames=("logp_fn", "batch_size"))
def _step_changes(logp_fn, params, chosen, rejected, a, b, lr, batch_size):
    vg = jax.value_and_grad(logp_fn)
    n = jax.tree.leaves(chosen)[0].shape[0]

    def one(args):
        c, r, ai, bi = args
        lw, gw = vg(params, c)
        ll, gl = vg(params, r)
        new = jax.tree.map(lambda p, x, y: p - (lr * (ai * x + bi * y)).astype(p.dtype), params, gw, gl)
        return logp_fn(new, c) - lw, logp_fn(new, r) - ll

    return _map(one, (chosen, rejected, a, b), batch_size, n)


def per_pair_step_changes(
    logp_fn: Callable,
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    a: Array,
    b: Array,
    lr: float,
    *,
    batch_size: int | None = None,
) -> tuple[Array, Array]:
    """Actual (Δlog π_w, Δlog π_l) after the step θ' = θ − lr·(a_i g_w + b_i g_l) on each pair separately.

    The measured counterpart of :func:`predicted_logp_changes` (exact, not first order); vmapped over
    pairs, chunked by ``batch_size``.
    """
    _check_batch(chosen, rejected)
    return _step_changes(logp_fn, params, chosen, rejected, jnp.asarray(a), jnp.asarray(b), lr, batch_size)


def entanglement_report(
    loss: str | Callable,
    logp_fn: Callable,
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    batch: Any,
    *,
    lr: float = 1e-3,
    measure: bool = False,
    batch_size: int | None = None,
    **hparams: Any,
) -> dict[str, Array]:
    """All per-pair entanglement diagnostics of one margin loss in one call.

    ``batch`` is a :class:`jalign.losses.PairwiseLogps` carrying the reference / length fields the loss
    needs; its ``chosen_logps`` / ``rejected_logps`` are replaced by the values of ``logp_fn`` at ``params``.

    Returns a dict with the :class:`PairGradStats` fields, ``a``, ``b``, the condition fields of
    :func:`entanglement_condition`, ``predicted_chosen_change`` / ``predicted_rejected_change`` for a step of
    size ``lr``, and with ``measure=True`` the ``actual_*`` changes from :func:`per_pair_step_changes`.
    """
    stats = pairwise_gradient_stats(logp_fn, params, chosen, rejected, batch_size=batch_size)
    batch = dataclasses.replace(batch, chosen_logps=stats.chosen_logps, rejected_logps=stats.rejected_logps)
    a, b = loss_weights(loss, batch, **hparams)
    dw, dl = predicted_logp_changes(stats, a, b, lr)
    out = {**stats.as_dict(), "a": a, "b": b, **entanglement_condition(stats, a, b)}
    out["predicted_chosen_change"], out["predicted_rejected_change"] = dw, dl
    if measure:
        aw, al = per_pair_step_changes(logp_fn, params, chosen, rejected, a, b, lr, batch_size=batch_size)
        out["actual_chosen_change"], out["actual_rejected_change"] = aw, al
    return out


def all_margin_loss_reports(
    logp_fn: Callable,
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    batch: Any,
    *,
    lr: float = 1e-3,
    measure: bool = False,
    batch_size: int | None = None,
    hparams: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Array]], dict[str, str]]:
    """:func:`entanglement_report` for every registered pairwise margin loss (default hyperparameters,
    overridable per loss via ``hparams={name: {...}}``).

    The gradient statistics do not depend on the loss; only a, b (and hence the condition and predictions)
    do. Losses needing a batch field that is ``None`` in ``batch`` are skipped.

    Returns:
      ``(reports, skipped)``: ``{name: report}`` and ``{name: reason}``.
    """
    from jalign import losses

    hparams = hparams or {}
    stats = pairwise_gradient_stats(logp_fn, params, chosen, rejected, batch_size=batch_size)
    batch = dataclasses.replace(batch, chosen_logps=stats.chosen_logps, rejected_logps=stats.rejected_logps)
    reports, skipped = {}, {}
    for name in pairwise_margin_losses():
        s = losses.spec(name)
        need = (["ref_chosen_logps", "ref_rejected_logps"] if s.needs_reference else []) + (
            ["chosen_lengths", "rejected_lengths"] if s.needs_lengths else []
        )
        missing = [f for f in need if getattr(batch, f) is None]
        if missing:
            skipped[name] = f"batch fields {missing} are None"
            continue
        a, b = loss_weights(name, batch, **hparams.get(name, {}))
        dw, dl = predicted_logp_changes(stats, a, b, lr)
        rep = {**stats.as_dict(), "a": a, "b": b, **entanglement_condition(stats, a, b)}
        rep["predicted_chosen_change"], rep["predicted_rejected_change"] = dw, dl
        if measure:
            aw, al = per_pair_step_changes(logp_fn, params, chosen, rejected, a, b, lr, batch_size=batch_size)
            rep["actual_chosen_change"], rep["actual_rejected_change"] = aw, al
        reports[name] = rep
    return reports, skipped


def summarize_report(report: dict[str, Array], prefix: str = "entanglement/") -> dict[str, Array]:
    """Scalar batch summaries of a report for logging (e.g. every N trainer steps on a probe set).

    Means of ``cosine``, ``inner``, the squared norms and the predicted / actual changes present, plus the
    fraction of pairs in each case (``case/ideal``, ``case/both fall``, …).
    """
    out = {}
    for k in ("cosine", "inner", "chosen_sq_norm", "rejected_sq_norm", "predicted_chosen_change",
              "predicted_rejected_change", "actual_chosen_change", "actual_rejected_change"):
        if k in report:
            out[prefix + k] = jnp.mean(report[k])
    if "case" in report:
        for code, name in enumerate(CASES):
            out[f"{prefix}case/{name}"] = jnp.mean((report["case"] == code).astype(jnp.float32))
    return out


# ----------------------------------------------------------------------------------------------------------
# Mitigations.


def pairwise_normalized_direction(grad_chosen: PyTree, grad_rejected: PyTree, *, eps: float = 1e-12) -> PyTree:
    """The pairwise normalised ascent direction d = g_w/‖g_w‖ − g_l/‖g_l‖ (norms over all leaves).

    A step θ' = θ + η·d changes the log-probs by Δlog π_w ≈ η‖g_w‖(1 − cos) ≥ 0 and
    Δlog π_l ≈ −η‖g_l‖(1 − cos) ≤ 0 to first order, whatever the entanglement (cos = cos(g_w, g_l)).
    Use ``θ − η·d`` with a descent optimiser (``d`` is the negative of a "gradient").
    """
    nw = jnp.sqrt(tree_dot(grad_chosen, grad_chosen))
    nl = jnp.sqrt(tree_dot(grad_rejected, grad_rejected))
    sw, sl = 1.0 / jnp.maximum(nw, eps), 1.0 / jnp.maximum(nl, eps)
    return jax.tree.map(lambda x, y: (x * sw - y * sl).astype(x.dtype), grad_chosen, grad_rejected)


def pairwise_normalized_update(
    logp_fn: Callable,
    params: PyTree,
    chosen: PyTree,
    rejected: PyTree,
    lr: float,
    *,
    weights: Array | None = None,
) -> PyTree:
    """One pairwise-normalised step on a batch: θ' = θ + lr·mean_i w_i·(g_w^i/‖g_w^i‖ − g_l^i/‖g_l^i‖).

    ``weights`` (``[B]``, default 1) lets a loss scale its pairs, e.g. w_i = −a_i for DPO's σ(−βh) weighting.
    For a single pair the first-order guarantee of :func:`pairwise_normalized_direction` holds exactly.
    """
    n = _check_batch(chosen, rejected)
    g = jax.vmap(jax.grad(logp_fn), in_axes=(None, 0))
    gw, gl = g(params, chosen), g(params, rejected)
    d = jax.vmap(pairwise_normalized_direction)(gw, gl)
    w = jnp.ones((n,)) if weights is None else jnp.asarray(weights)
    return jax.tree.map(
        lambda p, di: p + (lr * jnp.tensordot(w.astype(di.dtype), di, axes=1) / n).astype(p.dtype), params, d
    )


def contrastive_token_masks(
    chosen_tokens: Array, rejected_tokens: Array, chosen_mask: Array, rejected_mask: Array
) -> tuple[Array, Array]:
    """Token masks that drop the common prefix and common suffix shared by the two responses.

    The hard (fully sparse) limit of the token-masking mitigation: the margin is put on the log-probs of
    the contrasting span only, so tokens shared by y_w and y_l — the main source of positive gradient
    inner products — drop out. Responses are right-padded: position t < |y| is token t (``mask`` is a
    prefix of ones). The common suffix is capped so that it does not overlap the common prefix; if the two
    responses are identical everything is dropped.

    Args:
      chosen_tokens, rejected_tokens: ``[B, T]`` int tokens (same T).
      chosen_mask, rejected_mask: ``[B, T]`` 0/1 response masks (prefix of ones).

    Returns:
      ``(chosen_keep [B, T], rejected_keep [B, T])`` float32 masks.
    """
    tw, tl = jnp.asarray(chosen_tokens), jnp.asarray(rejected_tokens)
    mw, ml = jnp.asarray(chosen_mask).astype(jnp.int32), jnp.asarray(rejected_mask).astype(jnp.int32)
    T = tw.shape[-1]
    nw, nl = mw.sum(-1), ml.sum(-1)
    nmin = jnp.minimum(nw, nl)
    pos = jnp.arange(T)
    eq = (tw == tl) & (pos < nmin[:, None])
    prefix = jnp.cumprod(eq.astype(jnp.int32), axis=-1).sum(-1)
    # Reverse each row by its own length, then the common prefix of the reversals is the common suffix.
    rev_w = jnp.take_along_axis(tw, jnp.clip(nw[:, None] - 1 - pos, 0, T - 1), axis=-1)
    rev_l = jnp.take_along_axis(tl, jnp.clip(nl[:, None] - 1 - pos, 0, T - 1), axis=-1)
    eq_r = (rev_w == rev_l) & (pos < nmin[:, None])
    suffix = jnp.minimum(jnp.cumprod(eq_r.astype(jnp.int32), axis=-1).sum(-1), nmin - prefix)
    keep_w = (pos >= prefix[:, None]) & (pos < (nw - suffix)[:, None])
    keep_l = (pos >= prefix[:, None]) & (pos < (nl - suffix)[:, None])
    return keep_w.astype(jnp.float32), keep_l.astype(jnp.float32)

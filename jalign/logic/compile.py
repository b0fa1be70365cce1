"""Compile a preference structure into a jit-able semantic loss on :class:`PairwiseLogps` batches.

Weighted model counting (Richardson et al., ICML 2025; generalising the semantic loss of Xu et al., ICML
2018): a world i over variables v has weight S(i) = Π_{v true in i} w(v) · Π_{v false in i} (1 − w(v)) and
WMC(φ) = Σ_{i ⊨ φ} S(i). For a structure P̄,

    ρ = log WMC(✓) − log WMC(✗),

and the compiled loss is f applied to ρ (see :data:`F_FORMULAS`). Everything is in log space: with
a = log w, log(1 − w) = log1mexp(a), log S(i) = Σ_v [a_v if v true else log1mexp(a_v)] and
log WMC(set) = logsumexp over the worlds of the set (the ✓ and ✗ world sets are precomputed 0/1 tables;
nothing symbolic runs under ``jit``).

Degenerate structures: no ✗ world gives ρ = +∞ (loss 0 for logistic and hinge); no ✓ world gives ρ = −∞
(loss +∞); a structure with neither ✓ nor ✗ worlds has no semantic loss and is rejected.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.logic.structure import PreferenceStructure, worlds

# Variable → PairwiseLogps field holding log w(variable).
DEFAULT_FIELDS: dict[str, str] = {
    "M_w": "chosen_logps",
    "M_l": "rejected_logps",
    "Ref_w": "ref_chosen_logps",
    "Ref_l": "ref_rejected_logps",
}

F_FORMULAS: dict[str, str] = {
    "logistic": "−log σ(β·ρ)",
    "hinge": "max(0, 1 − β·ρ)",
    "squared": "(ρ − 1/(2β))²",
}


def log1mexp(a):
    """log(1 − exp(a)) for a ≤ 0, accurate everywhere (Mächler 2012).

    Uses log(−expm1(a)) for a > −log 2 and log1p(−exp(a)) otherwise. Inputs are clamped to
    a ≤ −ε with ε = sqrt(tiny) of the dtype (≈1e-19 in float32), so a log-prob of exactly 0 gives a large
    finite value (≈ −44 in float32) and finite gradients instead of −∞ / NaN.
    """
    a = jnp.asarray(a)
    eps = float(np.sqrt(np.finfo(a.dtype).tiny))
    a = jnp.minimum(a, -eps)
    small = a > -math.log(2.0)
    a_small = jnp.where(small, a, -1.0)  # keep the unused branch finite (gradient hygiene)
    a_large = jnp.where(small, -1.0, a)
    return jnp.where(small, jnp.log(-jnp.expm1(a_small)), jnp.log1p(-jnp.exp(a_large)))


def _masked_logsumexp(x_BxW, idx: np.ndarray):
    if idx.size == 0:
        return jnp.full(x_BxW.shape[:-1], -jnp.inf, x_BxW.dtype)
    return jax.nn.logsumexp(x_BxW[..., idx], axis=-1)


def log_world_weights(logw_BxN, n_vars: int):
    """log S(i) for every world, ``[B, 2^n]``, from log-weights ``[B, n]`` (world order of :func:`worlds`)."""
    table = jnp.asarray(worlds(n_vars))  # [W, n]
    log1m = log1mexp(logw_BxN)
    terms = jnp.where(table[None], logw_BxN[:, None, :], log1m[:, None, :])  # [B, W, n]
    return terms.sum(-1)


def log_wmc(logw_BxN, mask: np.ndarray):
    """log WMC of a set of worlds (bool mask ``[2^n]``) under log-weights ``[B, n]`` → ``[B]``."""
    logw_BxN = jnp.asarray(logw_BxN)
    mask = np.asarray(mask, bool)
    if mask.shape != (2 ** logw_BxN.shape[-1],):
        raise ValueError(f"mask must have shape [2^n] = [{2 ** logw_BxN.shape[-1]}], got {mask.shape}")
    return _log_wmc_jit(logw_BxN, tuple(int(i) for i in np.flatnonzero(mask)))


@functools.partial(jax.jit, static_argnums=1)
def _log_wmc_jit(logw_BxN, idx: tuple[int, ...]):
    ls = log_world_weights(logw_BxN, logw_BxN.shape[-1])
    return _masked_logsumexp(ls, np.asarray(idx, dtype=np.int64))


def rho_many(structures, logw_BxN):
    """ρ of many structures at once, ``[S, B]``, from log-weights ``[B, n]`` (one compiled kernel).

    All structures must range over the same n variables in the same order as the columns of ``logw_BxN``.
    Entries are ±inf for structures with no ✗ / no ✓ world and NaN for the all-excluded one.
    """
    structures = list(structures)
    if not structures:
        raise ValueError("structures is empty")
    vs = structures[0].variables
    for s in structures:
        if s.variables != vs:
            raise ValueError(f"all structures must share variables {vs}; {s} has {s.variables}")
    logw_BxN = jnp.asarray(logw_BxN)
    if logw_BxN.ndim != 2 or logw_BxN.shape[-1] != len(vs):
        raise ValueError(f"logw_BxN must have shape [B, {len(vs)}], got {tuple(logw_BxN.shape)}")
    chk = np.stack([s.check_mask for s in structures])
    crs = np.stack([s.cross_mask for s in structures])
    return _rho_many_jit(logw_BxN, jnp.asarray(chk), jnp.asarray(crs))


@jax.jit
def _rho_many_jit(logw_BxN, chk_SxW, crs_SxW):
    ls = log_world_weights(logw_BxN, logw_BxN.shape[-1])[None]  # [1, B, W]
    num = jax.nn.logsumexp(jnp.broadcast_to(ls, (chk_SxW.shape[0], *ls.shape[1:])), -1, where=chk_SxW[:, None])
    den = jax.nn.logsumexp(jnp.broadcast_to(ls, (crs_SxW.shape[0], *ls.shape[1:])), -1, where=crs_SxW[:, None])
    return num - den


def rho_from_masks(logw_BxN, check_W, cross_W):
    """ρ = log WMC(✓) − log WMC(✗), ``[B]``, with the ✓ / ✗ world sets given as bool arrays ``[2^n]``.

    The masks may be traced values, so one compiled function serves every structure over the same variables
    (e.g. training many lattice losses with a single compiled step). ``check_W`` / ``cross_W`` are a
    structure's ``check_mask`` / ``cross_mask`` (world order of :func:`worlds`); an empty ✓ set gives −∞, an
    empty ✗ set +∞.
    """
    logw_BxN = jnp.asarray(logw_BxN)
    ls = log_world_weights(logw_BxN, logw_BxN.shape[-1])  # [B, W]
    num = jax.nn.logsumexp(ls, -1, where=jnp.broadcast_to(jnp.asarray(check_W, bool), ls.shape))
    den = jax.nn.logsumexp(ls, -1, where=jnp.broadcast_to(jnp.asarray(cross_W, bool), ls.shape))
    return num - den


def _check_structure(s: PreferenceStructure) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(s, PreferenceStructure):
        raise TypeError(f"structure must be a PreferenceStructure, got {type(s).__name__}")
    chk, crs = np.flatnonzero(s.check_mask), np.flatnonzero(s.cross_mask)
    if chk.size == 0 and crs.size == 0:
        raise ValueError(
            f"structure {s} has no ✓ and no ✗ world: every world is excluded, so its semantic loss "
            "log WMC(✓)/WMC(✗) is undefined"
        )
    return chk, crs


def _resolve_fields(s: PreferenceStructure, fields: Mapping[str, Any] | None) -> dict[str, Any]:
    fields = {**DEFAULT_FIELDS, **(fields or {})}
    out = {}
    for v in s.variables:
        if v not in fields:
            raise ValueError(
                f"variable {v!r} of the structure has no batch field; pass fields={{{v!r}: 'field_name' or "
                "callable(batch) -> log-probs}"
            )
        out[v] = fields[v]
    return out


def _gather(batch, v: str, src, validate: bool):
    if callable(src):
        x = src(batch)
        where = f"fields[{v!r}](batch)"
    else:
        if not hasattr(batch, src):
            raise ValueError(f"variable {v!r}: batch has no field {src!r}")
        x = getattr(batch, src)
        where = f"batch field {src!r}"
    if x is None:
        raise ValueError(f"variable {v!r} needs {where}, which is None")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim != 1:
        raise ValueError(f"variable {v!r}: {where} must have shape [B], got {tuple(x.shape)}")
    if validate and not isinstance(x, jax.core.Tracer):
        arr = np.asarray(x, dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"variable {v!r}: {where} is not finite at example {i} ({int(bad.sum())} bad)")
        pos = arr > 0
        if pos.any():
            i = int(np.flatnonzero(pos)[0])
            raise ValueError(
                f"variable {v!r}: {where} is a log-probability and must be <= 0; got {arr[i]} at example {i}"
            )
    return x, where


def compile_rho(structure: PreferenceStructure, *, fields: Mapping[str, Any] | None = None) -> Callable:
    """ρ(batch) = log WMC(✓) − log WMC(✗) per example, ``[B]`` (jit-able).

    Args:
      structure: the preference structure.
      fields: variable → batch field name or ``callable(batch) -> [B] log-probs``; defaults to
        :data:`DEFAULT_FIELDS` (M_w → chosen_logps, M_l → rejected_logps, Ref_w → ref_chosen_logps,
        Ref_l → ref_rejected_logps).
    """
    chk, crs = _check_structure(structure)
    srcs = _resolve_fields(structure, fields)
    n = structure.n_vars

    @jax.jit
    def core(logw_BxN):
        ls = log_world_weights(logw_BxN, n)
        return _masked_logsumexp(ls, chk) - _masked_logsumexp(ls, crs)

    def rho(batch, *, validate: bool = True):
        cols, shapes = [], {}
        for v, src in srcs.items():
            x, where = _gather(batch, v, src, validate)
            shapes[where] = tuple(x.shape)
            cols.append(x)
        if len(set(shapes.values())) > 1:
            raise ValueError(f"batch fields have different shapes: {shapes}")
        dtype = jnp.result_type(*[c.dtype for c in cols], jnp.float32)
        return core(jnp.stack([c.astype(dtype) for c in cols], axis=-1))

    return rho


def _apply_f(f: str, rho, beta):
    if f == "logistic":
        return -jax.nn.log_sigmoid(beta * rho)
    if f == "hinge":
        return jax.nn.relu(1.0 - beta * rho)
    if f == "squared":
        return (rho - 1.0 / (2.0 * beta)) ** 2
    raise AssertionError(f)


def compile(  # noqa: A001 - the paper's verb; jalign.logic.compile
    structure: PreferenceStructure,
    f: str = "logistic",
    *,
    beta: float = 1.0,
    fields: Mapping[str, Any] | None = None,
) -> Callable:
    """The semantic loss of ``structure`` as a jit-able ``fn(batch, *, validate=True) -> [B]``.

    With ρ = log WMC(✓)/WMC(✗) computed from the batch's log-probs (M_w = exp(chosen_logps), …):

    * ``f="logistic"``: −log σ(β·ρ)   (β = 1 is the paper's semantic loss; DPO, CPO, ORPO, SimPO's term)
    * ``f="hinge"``:    max(0, 1 − β·ρ)   (SLiC; the original SLiC max(0, δ − ρ) is δ·hinge with β = 1/δ)
    * ``f="squared"``:  (ρ − 1/(2β))²   (IPO's parameterisation)

    Logistic and hinge are non-increasing in ρ, so the entailment order of structures orders their losses
    (:func:`jalign.logic.entails`); the squared loss is not monotone and has no such guarantee.

    Args:
      structure: a :class:`PreferenceStructure` (e.g. from :func:`jalign.logic.decompile`).
      f: ``"logistic"``, ``"hinge"`` or ``"squared"``.
      beta: β > 0.
      fields: variable → batch field / callable (see :func:`compile_rho`).

    Returns:
      ``fn(batch, *, validate=True)``; with ``validate`` (and concrete arrays) batch values are checked
      (present, finite, ≤ 0), raising ``ValueError`` naming the field and example. ``fn.structure``,
      ``fn.f``, ``fn.beta``, ``fn.rho`` are attached.

    >>> import jax.numpy as jnp
    >>> from jalign.losses import PairwiseLogps
    >>> from jalign.logic import compile, decompile
    >>> loss = compile(decompile("cpo"))
    >>> b = PairwiseLogps(chosen_logps=jnp.log(jnp.array([0.4])), rejected_logps=jnp.log(jnp.array([0.1])))
    >>> round(float(loss(b)[0]), 5)  # −log σ(log 0.4/0.1) = log(1 + 1/4)
    0.22314
    """
    if f not in F_FORMULAS:
        raise ValueError(f"unknown f={f!r}; valid: {', '.join(F_FORMULAS)}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise TypeError(f"beta must be a number, got {type(beta).__name__}")
    if not (math.isfinite(float(beta)) and float(beta) > 0):
        raise ValueError(f"beta must be finite and > 0, got beta={beta!r}")
    rho_fn = compile_rho(structure, fields=fields)
    beta = float(beta)

    def loss_fn(batch, *, validate: bool = True):
        return _apply_f(f, rho_fn(batch, validate=validate), beta)

    loss_fn.structure = structure
    loss_fn.f = f
    loss_fn.beta = beta
    loss_fn.rho = rho_fn
    loss_fn.formula = F_FORMULAS[f]
    return loss_fn

"""Compiled semantic losses as training losses: the loss registry's interface for a preference structure.

:func:`as_loss` wraps :func:`jalign.logic.compile` into an object with the registry's interface (a callable
``fn(batch, *, validate=True, **hparams) -> [B]`` on :class:`~jalign.losses.PairwiseLogps` with a ``.spec``
:class:`~jalign.losses.LossSpec` of kind ``"pairwise"``), so the trainer takes it like any registered loss::

    from jalign import logic
    from jalign.train import train
    result = train(cfg, loss=logic.as_loss("ccpo", beta=1.0, length_normalize=True))

or, from a config, ``loss.name = "logic:<name>"`` / ``"logic:<name>:<f>"`` (see :func:`from_name`). Nothing is
added to the loss registry: ``jalign.losses.names()`` is unchanged.

Hyperparameters (``spec.hparams``, overridable per call and through ``loss.hparams`` of a config):

* ``beta`` > 0: the β of f (``−log σ(β·ρ)``, ``max(0, 1 − β·ρ)``, ``(ρ − 1/(2β))²``);
* ``length_normalize``: weight each variable by the per-token (geometric-mean) probability
  exp(log π(y)/|y|) instead of the sequence probability π(y) (ORPO's convention). Sequence probabilities of
  language-model responses are tiny (log π ≈ −100), so every (1 − π) literal is ≈ 1 and structures that differ
  only in negated literals collapse onto each other (e.g. unCPO's ρ ≈ −log π_l, a loss with vanishing
  gradient); per-token probabilities keep them apart. Reference variables use the same lengths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.logic.compile import DEFAULT_FIELDS, F_FORMULAS, compile
from jalign.logic.decompile import known
from jalign.logic.structure import PreferenceStructure
from jalign.losses import LossSpec, register_resolver

LOGIC_PREFIX = "logic:"  # config loss names "logic:<name>[:<f>]" (the one definition; jalign.logic exports it)
_LENGTH_FIELD = {"M_w": "chosen_lengths", "Ref_w": "chosen_lengths",
                 "M_l": "rejected_lengths", "Ref_l": "rejected_lengths"}
PAPER = ("Richardson, Srikumar & Sabharwal, Understanding the Logic of Direct Preference Alignment through "
         "Logic, ICML 2025 (arXiv 2412.17696)")


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise TypeError(f"beta must be a number, got {type(beta).__name__}")
    if not (math.isfinite(float(beta)) and float(beta) > 0):
        raise ValueError(f"beta must be finite and > 0, got beta={beta!r}")
    return float(beta)


def _normalised_field(v: str):
    field, lengths = DEFAULT_FIELDS[v], _LENGTH_FIELD[v]

    def get(batch):
        lp, n = getattr(batch, field, None), getattr(batch, lengths, None)
        if lp is None:
            raise ValueError(f"variable {v!r} needs batch field {field!r}, which is None")
        if n is None:
            raise ValueError(f"variable {v!r}: length_normalize=True needs batch field {lengths!r}, which is None")
        n = jnp.asarray(n)
        if not isinstance(n, jax.core.Tracer):
            arr = np.asarray(n, np.float64).reshape(-1)
            bad = ~(np.isfinite(arr) & (arr > 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"variable {v!r}: batch field {lengths!r} must be finite and > 0 to length-"
                                 f"normalise; got {arr[i]} at example {i}")
        lp = jnp.asarray(lp)
        dtype = jnp.result_type(lp.dtype, jnp.float32)
        return lp.astype(dtype) / n.astype(dtype)

    return get


class LogicLoss:
    """A compiled preference structure with the loss registry's interface (see the module docstring).

    ``loss(batch, *, validate=True, beta=..., length_normalize=...) -> [B]``; ``loss.spec`` is a
    :class:`~jalign.losses.LossSpec` (kind ``"pairwise"``, ``needs_reference`` iff the structure mentions
    ``Ref_w`` / ``Ref_l``, ``hparams = {"beta", "length_normalize"}``).
    """

    def __init__(self, structure: PreferenceStructure, f: str, *, beta: float, length_normalize: bool,
                 fields: Mapping[str, Any] | None, name: str):
        if f not in F_FORMULAS:
            raise ValueError(f"unknown f={f!r}; valid: {', '.join(F_FORMULAS)}")
        if not isinstance(length_normalize, bool):
            raise TypeError(f"length_normalize must be a bool, got {type(length_normalize).__name__}")
        if fields and length_normalize:
            raise ValueError("length_normalize=True applies to the default fields; with custom fields pass "
                             "callables that normalise themselves")
        self.structure, self.f, self.name = structure, f, name
        self.beta = _check_beta(beta)
        self.length_normalize = length_normalize
        self.fields = dict(fields or {})
        # compile both variants once (closures only; nothing is traced here)
        self._plain = compile(structure, f, beta=1.0, fields=self.fields or None)
        extra = [v for v in structure.variables if v not in _LENGTH_FIELD]
        if extra:
            self._norm = None
        else:
            self._norm = compile(structure, f, beta=1.0,
                                 fields={v: _normalised_field(v) for v in structure.variables})
        needs_ref = any(v.startswith("Ref_") for v in structure.variables)
        self.spec = LossSpec(
            name=name,
            fn=self._core,
            kind="pairwise",
            formula=f"{F_FORMULAS[f]},  ρ = log WMC(✓)/WMC(✗) of {structure}",
            paper=PAPER,
            hparams={"beta": self.beta, "length_normalize": length_normalize},
            needs_reference=needs_ref,
            needs_lengths=length_normalize,
            margin_based=True,
            notes="semantic loss compiled by jalign.logic (not in the loss registry)",
            extra_fields=lambda hp: ("chosen_lengths", "rejected_lengths") if hp.get("length_normalize") else (),
        )

    def _core(self, batch, *, beta: float | None = None, length_normalize: bool | None = None,
              validate: bool = False):
        beta = self.beta if beta is None else beta
        length_normalize = self.length_normalize if length_normalize is None else length_normalize
        if not isinstance(beta, jax.core.Tracer):
            _check_beta(beta)
        if length_normalize:
            if self._norm is None:
                raise ValueError(f"length_normalize=True is only defined for the variables {sorted(_LENGTH_FIELD)}; "
                                 f"structure has {self.structure.variables}")
            fn = self._norm
        else:
            fn = self._plain
        rho = fn.rho(batch, validate=validate)
        return _apply(self.f, rho, beta)

    def __call__(self, batch, *, validate: bool = True, **hparams):
        unknown = sorted(set(hparams) - set(self.spec.hparams))
        if unknown:
            raise TypeError(f"loss {self.name!r} got unknown hyperparameter(s) {unknown}; "
                            f"valid: {sorted(self.spec.hparams)}")
        return self._core(batch, validate=validate, **hparams)

    def rho(self, batch, *, length_normalize: bool | None = None, validate: bool = True):
        """ρ = log WMC(✓) − log WMC(✗) per example ``[B]`` (with the loss's variable weights)."""
        ln = self.length_normalize if length_normalize is None else length_normalize
        return (self._norm if ln else self._plain).rho(batch, validate=validate)

    def __repr__(self):
        return (f"LogicLoss({self.name!r}, f={self.f!r}, beta={self.beta}, length_normalize={self.length_normalize},"
                f" structure={self.structure})")


def _apply(f: str, rho, beta):
    if f == "logistic":
        return -jax.nn.log_sigmoid(beta * rho)
    if f == "hinge":
        return jax.nn.relu(1.0 - beta * rho)
    return (rho - 1.0 / (2.0 * beta)) ** 2


def as_loss(structure_or_name: PreferenceStructure | str, f: str | None = None, *, beta: float = 1.0,
            length_normalize: bool = False, fields: Mapping[str, Any] | None = None,
            name: str | None = None) -> LogicLoss:
    """A preference structure's compiled semantic loss as a trainer-ready loss object.

    Args:
      structure_or_name: a :class:`PreferenceStructure`, or a name :func:`jalign.logic.decompile` knows
        (``"cpo"``, ``"ccpo"``, ``"dpo"``, …).
      f: ``"logistic"``, ``"hinge"`` or ``"squared"``; default: the named loss's own f (e.g. IPO's squared
        loss, SLiC's hinge), ``"logistic"`` for a structure.
      beta: β > 0 (default 1: the paper's semantic loss).
      length_normalize: weight variables by per-token probabilities exp(log π/|y|) (module docstring).
      fields: variable → batch field / callable, as in :func:`jalign.logic.compile`.
      name: the ``spec.name`` (default ``"logic:<name>"`` or ``"logic:<structure name>"``).

    Returns:
      a :class:`LogicLoss`: ``loss(batch, *, validate=True, **hparams) -> [B]`` with ``.spec``; pass it as
      ``jalign.train.train(cfg, loss=...)`` or ``jalign.train.make_objective("preference", loss)``.

    >>> import jax.numpy as jnp
    >>> from jalign.losses import PairwiseLogps
    >>> loss = as_loss("cpo", beta=1.0)
    >>> loss.spec.kind, loss.spec.needs_reference, loss.spec.name
    ('pairwise', False, 'logic:cpo')
    >>> b = PairwiseLogps(chosen_logps=jnp.log(jnp.array([0.4])), rejected_logps=jnp.log(jnp.array([0.1])))
    >>> round(float(loss(b)[0]), 5)  # −log σ(log 0.4/0.1)
    0.22314
    """
    if isinstance(structure_or_name, str):
        k = known(structure_or_name)
        structure, f = k.structure, (k.f if f is None else f)
        default_name = f"{LOGIC_PREFIX}{structure_or_name}"
    elif isinstance(structure_or_name, PreferenceStructure):
        structure, f = structure_or_name, ("logistic" if f is None else f)
        default_name = f"{LOGIC_PREFIX}{structure.name or 'structure'}"
    else:
        raise TypeError(f"structure_or_name must be a PreferenceStructure or a loss name, got "
                        f"{type(structure_or_name).__name__}")
    return LogicLoss(structure, f, beta=beta, length_normalize=length_normalize, fields=fields,
                     name=default_name if name is None else name)


def is_logic_name(name: Any) -> bool:
    """Whether ``name`` is a ``"logic:..."`` loss name (config ``loss.name``)."""
    return isinstance(name, str) and name.startswith(LOGIC_PREFIX)


def from_name(name: str, **kw) -> LogicLoss:
    """The loss of a config name ``"logic:<name>"`` or ``"logic:<name>:<f>"`` (e.g. ``"logic:dpo:hinge"``).

    ``<name>`` is any :func:`jalign.logic.names` entry; ``<f>`` defaults to that loss's own f. Extra keyword
    arguments go to :func:`as_loss`.

    >>> from_name("logic:ipo").f, from_name("logic:dpo:hinge").f
    ('squared', 'hinge')
    """
    if not is_logic_name(name):
        raise ValueError(f"a logic loss name starts with {LOGIC_PREFIX!r}, got {name!r}")
    parts = name[len(LOGIC_PREFIX):].split(":")
    if len(parts) not in (1, 2) or not all(parts):
        raise ValueError(f"logic loss name {name!r} must be 'logic:<name>' or 'logic:<name>:<f>' "
                         f"(f one of {', '.join(F_FORMULAS)})")
    f = parts[1] if len(parts) == 2 else None
    if f is not None and f not in F_FORMULAS:
        raise ValueError(f"logic loss name {name!r}: unknown f={f!r}; valid: {', '.join(F_FORMULAS)}")
    return as_loss(parts[0], f, name=name, **kw)


# ``jalign.losses.bind("logic:<name>[:<f>]")`` (and config ``loss.name``) resolve through from_name.
register_resolver(LOGIC_PREFIX, from_name)

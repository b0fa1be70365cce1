"""The loss registry: one entry per loss, one file per family.

A loss is registered with :func:`register` on a *core* function ``fn(batch, *, hparam=default, ...) -> [B]``.
:func:`get` returns a wrapper that validates hyperparameters and (outside ``jit``) the batch values, then
calls the core function. ``validate=False`` skips all checks (the fast path for jitted training loops; under
``jit`` value checks are skipped anyway because values are abstract).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

from jalign.losses import _validate


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Metadata of a registered loss.

    Attributes:
      name: registry name.
      fn: the core function ``fn(batch, **hparams) -> per-example losses``.
      kind: ``"pairwise"`` (:class:`PairwiseLogps`), ``"unpaired"`` (:class:`UnpairedLogps`) or
        ``"listwise"`` (:class:`ListwiseLogps`), ``"scored"`` (:class:`ScoredLogps`, policy-gradient family)
        or ``"sampled"`` (:class:`SampledLogps`, f-DPG).
      formula: the per-example formula in plain text.
      paper: the source paper (title, venue / arXiv id).
      hparams: hyperparameter names and their defaults.
      needs_reference: whether the reference log-prob fields are read.
      needs_lengths: whether the length fields are read.
      batch_coupled: whether an example's loss depends on other examples of the batch (e.g. ``aot``).
      margin_based: a pairwise loss whose value depends on the policy only through
        ``chosen_logps`` and ``rejected_logps`` (always true for pairwise losses here; gradient-entanglement
        diagnostics use it).
      aliases: other names under which the same loss is registered.
      notes: conventions chosen where sources disagree.
      extra_fields: optional ``f(hparams) -> field names`` the batch must also carry for these hyperparameter
        values (e.g. ``ipo`` needs the lengths only with ``ipo_average=True``).
      hparam_rules: per-loss validity rules ``{name: (predicate, description)}`` overriding the global ones.
      nullable: hyperparameters that accept ``None`` (annotated ``... | None`` or defaulting to None).
    """

    name: str
    fn: Callable[..., Any]
    kind: str
    formula: str
    paper: str
    hparams: dict[str, Any]
    needs_reference: bool = True
    needs_lengths: bool = False
    batch_coupled: bool = False
    margin_based: bool = True
    aliases: tuple[str, ...] = ()
    notes: str = ""
    extra_fields: Callable[[dict[str, Any]], tuple[str, ...]] | None = None
    hparam_rules: dict[str, tuple[Callable[[float], bool], str]] = dataclasses.field(default_factory=dict)
    nullable: frozenset[str] = frozenset()


_REGISTRY: dict[str, LossSpec] = {}
_KINDS = ("pairwise", "unpaired", "listwise", "scored", "sampled")


def register(
    name: str,
    *,
    kind: str = "pairwise",
    formula: str,
    paper: str,
    needs_reference: bool = True,
    needs_lengths: bool = False,
    batch_coupled: bool = False,
    margin_based: bool | None = None,
    aliases: tuple[str, ...] = (),
    notes: str = "",
    extra_fields: Callable[[dict[str, Any]], tuple[str, ...]] | None = None,
    hparam_rules: dict[str, tuple[Callable[[float], bool], str]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a core loss function under ``name`` (and ``aliases``)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        hparams = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        spec = LossSpec(
            name=name,
            fn=fn,
            kind=kind,
            formula=formula,
            paper=paper,
            hparams=hparams,
            needs_reference=needs_reference,
            needs_lengths=needs_lengths,
            batch_coupled=batch_coupled,
            margin_based=(kind == "pairwise") if margin_based is None else margin_based,
            aliases=tuple(aliases),
            notes=notes,
            extra_fields=extra_fields,
            hparam_rules=dict(hparam_rules or {}),
            nullable=frozenset(
                p.name
                for p in sig.parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and (p.default is None or "None" in str(p.annotation))
            ),
        )
        for key in (name, *aliases):
            if key in _REGISTRY:
                raise ValueError(f"loss {key!r} is already registered")
            _REGISTRY[key] = spec
        return fn

    return deco


def names() -> list[str]:
    """Every registered loss name (aliases included), sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name``; unknown names raise ``KeyError`` listing close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown loss {name!r}.{hint} Registered losses: {', '.join(names())}"
        ) from None


def get(name: str) -> Callable[..., Any]:
    """The loss ``name`` as ``fn(batch, *, validate=True, **hparams) -> per-example losses``.

    Hyperparameters not given take the registered defaults (``spec(name).hparams``); unknown ones raise
    ``TypeError``; invalid values (β ≤ 0, label_smoothing ∉ [0, ½), …) raise ``ValueError`` naming the
    argument. With ``validate=True`` the batch is also checked (shapes, required fields, and — when the
    arrays are concrete, i.e. outside ``jit`` — finiteness and lengths), raising ``ValueError`` naming the
    field and the first offending example.
    """
    s = spec(name)

    @functools.wraps(s.fn)
    def loss_fn(batch: Any, *, validate: bool = True, **hparams: Any) -> Any:
        unknown = sorted(set(hparams) - set(s.hparams))
        if unknown:
            raise TypeError(
                f"loss {s.name!r} got unknown hyperparameter(s) {unknown}; valid: {sorted(s.hparams)}"
            )
        if validate:
            merged = {**s.hparams, **hparams}
            _validate.check_hparams(
                s.name, merged, rules=s.hparam_rules, defaults=s.hparams, nullable=s.nullable
            )
            _validate.check_batch(s, batch, merged)
        return s.fn(batch, **hparams)

    loss_fn.spec = s  # type: ignore[attr-defined]
    return loss_fn


# ---------------------------------------------------------------------------------------------------------
# Name resolvers (registered by higher packages, e.g. jalign.logic for "logic:<name>") and bind()

_RESOLVERS: dict[str, Callable[[str], Any]] = {}


def register_resolver(prefix: str, resolve: Callable[[str], Any]) -> None:
    """Let :func:`bind` accept names ``prefix + ...``: ``resolve(name)`` returns a loss object (a callable
    ``loss(batch, *, validate=True, **hparams)`` with a ``.spec`` :class:`LossSpec`). A package registers its
    prefix when it is imported (``jalign.logic`` registers ``"logic:"``); nothing is added to :func:`names`."""
    if prefix in _RESOLVERS and _RESOLVERS[prefix] is not resolve:
        raise ValueError(f"a loss-name resolver for prefix {prefix!r} is already registered")
    _RESOLVERS[prefix] = resolve


@dataclasses.dataclass(frozen=True, eq=False)
class BoundLoss:
    """A loss resolved and validated once, with its hyperparameters bound (see :func:`bind`).

    ``bound(batch) -> [B]`` calls the core function without any host-side check (the fast path inside jitted
    steps); :meth:`validated` checks the batch first. ``hparams`` are the given values merged over the
    registered defaults.
    """

    spec: LossSpec
    hparams: dict[str, Any]
    _call: Callable[..., Any]
    _takes_validate: bool = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def needs_reference(self) -> bool:
        return self.spec.needs_reference

    def __call__(self, batch: Any) -> Any:
        if self._takes_validate:
            return self._call(batch, validate=False, **self.hparams)
        return self._call(batch, **self.hparams)

    def validated(self, batch: Any) -> Any:
        """Per-example losses after the batch checks of :func:`get` (shapes, fields, finiteness)."""
        if self._takes_validate:
            return self._call(batch, validate=True, **self.hparams)
        return self._call(batch, **self.hparams)


def _resolve(loss: Any) -> Any:
    """A registered name, a prefixed name (:func:`register_resolver`) or a loss object -> ``fn`` with ``.spec``."""
    if isinstance(loss, BoundLoss):
        return loss
    if isinstance(loss, str):
        for prefix, resolve in _RESOLVERS.items():
            if loss.startswith(prefix):
                return resolve(loss)
        return get(loss)
    if not hasattr(loss, "spec"):
        raise TypeError(f"a loss must be a registered name or an object with a .spec, got {type(loss).__name__}")
    return loss


def bind(loss: Any, **hparams: Any) -> BoundLoss:
    """Resolve and validate a loss once; returns the fast function ``bound(batch) -> [B]``.

    ``loss``: a registered name (:func:`names`), a name with a registered prefix (``"logic:ccpo"``, once
    :mod:`jalign.logic` is imported), a loss object with a ``.spec`` (called as ``loss(batch, validate=...,
    **hparams)``), or a :class:`BoundLoss` (its hyperparameters are updated by ``hparams``). Unknown names raise
    ``KeyError`` listing close matches; unknown hyperparameters ``TypeError``; invalid values ``ValueError``
    naming the argument — all here, before any batch is seen.

    >>> from jalign import losses
    >>> dpo = losses.bind("dpo", beta=0.5)
    >>> dpo.spec.kind, dpo.hparams["beta"]
    ('pairwise', 0.5)
    """
    if isinstance(loss, BoundLoss):
        return bind_object(loss._call, {**loss.hparams, **hparams})
    return bind_object(_resolve(loss), hparams)


def bind_object(fn: Any, hparams: dict[str, Any]) -> BoundLoss:
    s = fn.spec
    unknown = sorted(set(hparams) - set(s.hparams))
    if unknown:
        raise TypeError(f"loss {s.name!r} got unknown hyperparameter(s) {unknown}; valid: {sorted(s.hparams)}")
    merged = {**s.hparams, **hparams}
    _validate.check_hparams(s.name, merged, rules=s.hparam_rules, defaults=s.hparams, nullable=s.nullable)
    try:
        params = inspect.signature(fn).parameters
        takes_validate = "validate" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):  # no signature: assume the registry's interface
        takes_validate = True
    return BoundLoss(spec=s, hparams=merged, _call=fn, _takes_validate=takes_validate)

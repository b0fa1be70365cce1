"""The loss landscape: counting, enumerating, comparing and ordering preference structures.

Semantically a structure over n variables is its labelling of the 2^n worlds, each ✓, ✗, both or neither,
so there are 4^(2^n) semantic losses (256 for n = 2, 4,294,967,296 for n = 4). Two structures are
*equivalent* when they label every world alike (over the union of their variables); they then compile to
the same loss for every f and β. Distinct labellings can still give the same ρ as a function of the
probabilities (a common factor cancels), which :func:`same_rho` detects exactly and
:func:`equivalence_classes` groups.

Entailment order (the definition used throughout jalign): P̄₂ ⊨ P̄₁ ("P̄₂ is at least as constrained") iff

    ✓(P̄₂) ⊆ ✓(P̄₁)  and  ✗(P̄₂) ⊇ ✗(P̄₁).

Monotonicity: weights are non-negative, so WMC(✓₂) ≤ WMC(✓₁) and WMC(✗₂) ≥ WMC(✗₁), hence ρ₂ ≤ ρ₁ pointwise
and ℓ(P̄₂) ≥ ℓ(P̄₁) for every f non-increasing in ρ (logistic, hinge; not IPO's squared loss). This extends
the paper's entailment of core formulas: for equal P_C and P_A, P₂ ⊨ P₁ (classically) implies P̄₂ ⊨ P̄₁.
The order is the product over worlds of the four-element diamond ✗ < {neither, both} < ✓, i.e. a Boolean
lattice with 2·2^n atoms (B_8 for n = 2): its covering relation adds one world to ✓ or removes one from ✗.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from fractions import Fraction

import numpy as np
import sympy

from jalign.logic.structure import PreferenceStructure, from_labels, order_variables, worlds


def count_losses(n_vars: int) -> int:
    """4^(2^n): the number of semantically distinct preference structures over n variables."""
    if isinstance(n_vars, bool) or not isinstance(n_vars, int) or n_vars < 0:
        raise ValueError(f"n_vars must be a non-negative integer, got {n_vars!r}")
    return 4 ** (2**n_vars)


def enumerate_losses(n_vars: int = 2, variables: Sequence[str] | None = None) -> Iterator[PreferenceStructure]:
    """Yield every labelling of the 2^n worlds as a canonical :class:`PreferenceStructure` (4^(2^n) of them).

    Order: labels as base-4 digits (world 0 most significant), all-neither first. Default variables are
    M_w, M_l (n = 2; reference-free) — for other n pass ``variables``. Each structure's ``name`` is its label
    string (e.g. ``"B✓✗·"`` per world: B = both, · = neither).
    """
    if variables is None:
        default = ("M_w", "M_l", "Ref_w", "Ref_l")
        if n_vars > 4:
            raise ValueError("pass variables= for n_vars > 4")
        variables = default[:n_vars]
    variables = tuple(variables)
    if len(variables) != n_vars:
        raise ValueError(f"len(variables)={len(variables)} != n_vars={n_vars}")
    if n_vars > 3:
        raise ValueError(f"enumerating 4^(2^{n_vars}) = {count_losses(n_vars)} structures is not supported")
    for labels in itertools.product(range(4), repeat=2**n_vars):
        yield from_labels(labels, variables, name=label_string(labels))


def label_string(labels: Sequence[int]) -> str:
    """Compact label string, one character per world: ✓, ✗, B (both), · (neither)."""
    return "".join({0: "·", 1: "✓", 2: "✗", 3: "B"}[int(x)] for x in labels)


def lift(a: PreferenceStructure, b: PreferenceStructure) -> tuple[PreferenceStructure, PreferenceStructure]:
    """Both structures over the union of their variables (canonical order)."""
    vs = order_variables(set(a.variables) | set(b.variables))
    return (a if a.variables == vs else a.over(vs)), (b if b.variables == vs else b.over(vs))


def entails(a: PreferenceStructure, b: PreferenceStructure) -> bool:
    """a ⊨ b: ✓(a) ⊆ ✓(b) and ✗(a) ⊇ ✗(b) (over the union of variables); then ℓ(a) ≥ ℓ(b)."""
    a, b = lift(a, b)
    return bool(np.all(a.check_mask <= b.check_mask) and np.all(a.cross_mask >= b.cross_mask))


def equivalent(a: PreferenceStructure, b: PreferenceStructure) -> bool:
    """Same ✓ and ✗ worlds (over the union of variables): identical losses for every f and β."""
    a, b = lift(a, b)
    return bool(np.array_equal(a.check_mask, b.check_mask) and np.array_equal(a.cross_mask, b.cross_mask))


def wmc_polynomial(s: PreferenceStructure, mask: np.ndarray) -> sympy.Expr:
    """WMC of a set of worlds as a polynomial in the weight symbols w_<var> (exact)."""
    ws = [sympy.Symbol(f"w_{v}") for v in s.variables]
    total = sympy.Integer(0)
    for world, keep in zip(worlds(s.n_vars), mask, strict=True):
        if keep:
            total += sympy.Mul(*[w if t else (1 - w) for w, t in zip(ws, world, strict=True)])
    return sympy.expand(total)


def same_rho(a: PreferenceStructure, b: PreferenceStructure) -> bool:
    """Whether a and b have the same ρ = log WMC(✓)/WMC(✗) as functions of the probabilities (exact).

    Checks WMC(✓_a)·WMC(✗_b) − WMC(✓_b)·WMC(✗_a) ≡ 0 as a polynomial (both-undefined counts as equal).
    """
    a, b = lift(a, b)
    ca, xa = wmc_polynomial(a, a.check_mask), wmc_polynomial(a, a.cross_mask)
    cb, xb = wmc_polynomial(b, b.check_mask), wmc_polynomial(b, b.cross_mask)
    degenerate_a, degenerate_b = (ca == 0 and xa == 0), (cb == 0 and xb == 0)
    if degenerate_a or degenerate_b:
        return degenerate_a and degenerate_b
    return sympy.expand(ca * xb - cb * xa) == 0


def relation(a: PreferenceStructure, b: PreferenceStructure) -> str:
    """How a relates to b: ``"equivalent"``, ``"same-rho"`` (different worlds, same ρ), ``"entails"``
    (a ⊨ b, a more constrained: ℓ(a) ≥ ℓ(b)), ``"entailed"`` (b ⊨ a) or ``"incomparable"``."""
    if equivalent(a, b):
        return "equivalent"
    if same_rho(a, b):
        return "same-rho"
    if entails(a, b):
        return "entails"
    if entails(b, a):
        return "entailed"
    return "incomparable"


def rank(s: PreferenceStructure) -> int:
    """Height in the lattice: |✓| + (2^n − |✗|) (0 = every world ✗ only, 2·2^n = every world ✓ only)."""
    return int(s.check_mask.sum()) + int((~s.cross_mask).sum())


def _fingerprint(s: PreferenceStructure, points: list[list[Fraction]]):
    """ρ's exact value (as a Fraction, or ±inf / nan markers) at a few rational points."""
    out = []
    for p in points:
        num = den = Fraction(0)
        for world, c, x in zip(worlds(s.n_vars), s.check_mask, s.cross_mask, strict=True):
            wgt = Fraction(1)
            for t, q in zip(world, p, strict=True):
                wgt *= q if t else 1 - q
            num += wgt if c else 0
            den += wgt if x else 0
        out.append("nan" if num == den == 0 else "inf" if den == 0 else num / den)
    return tuple(out)


def equivalence_classes(structures: Sequence[PreferenceStructure], *, seed: int = 0) -> list[list[int]]:
    """Group structures (indices into ``structures``) whose ρ functions coincide.

    Candidates are found with exact rational evaluations of WMC(✓)/WMC(✗) at random points and then
    confirmed pairwise with the exact polynomial identity of :func:`same_rho`. Classes are sorted by their
    first index.
    """
    if not structures:
        return []
    vs = order_variables(set().union(*[s.variables for s in structures]))
    lifted = [s if s.variables == vs else s.over(vs) for s in structures]
    r = random.Random(seed)
    points = [[Fraction(r.randint(1, 996), 997) for _ in vs] for _ in range(3)]
    buckets: dict[tuple, list[int]] = {}
    for i, s in enumerate(lifted):
        buckets.setdefault(_fingerprint(s, points), []).append(i)
    classes = []
    for idx in buckets.values():
        remaining = list(idx)
        while remaining:
            head, rest = remaining[0], remaining[1:]
            cls = [head] + [j for j in rest if same_rho(lifted[head], lifted[j])]
            classes.append(cls)
            remaining = [j for j in rest if j not in cls]
    return sorted(classes, key=lambda c: c[0])


def hasse_edges(structures: Sequence[PreferenceStructure]) -> list[tuple[int, int]]:
    """Covering pairs (i, j) with structures[i] ⊨ structures[j], i ≠ j, and nothing strictly between.

    Quadratic-to-cubic in len(structures); fine for the 256 structures of n = 2.
    """
    n = len(structures)
    vs = order_variables(set().union(*[s.variables for s in structures])) if n else ()
    lifted = [s if s.variables == vs else s.over(vs) for s in structures]
    C = np.stack([s.check_mask for s in lifted]) if n else np.zeros((0, 0), bool)
    X = np.stack([s.cross_mask for s in lifted]) if n else np.zeros((0, 0), bool)
    # le[i, j]: i ⊨ j
    le = np.all(C[:, None, :] <= C[None, :, :], axis=-1) & np.all(X[:, None, :] >= X[None, :, :], axis=-1)
    same = np.all(C[:, None] == C[None], -1) & np.all(X[:, None] == X[None], -1)
    strict = le & ~same
    edges = []
    for i, j in zip(*np.nonzero(strict), strict=True):
        between = strict[i] & strict[:, j]
        if not between.any():
            edges.append((int(i), int(j)))
    return edges


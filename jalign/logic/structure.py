"""Propositional formulas over model predictions and preference structures P̄ = (P, P_C, P_A).

Richardson, Srikumar & Sabharwal, *Understanding the Logic of Direct Preference Alignment through Logic*,
ICML 2025 (arXiv 2412.17696).

Each Boolean variable is a model prediction weighted by a probability: ``M_w`` (weight π_θ(y_w|x)),
``M_l`` (π_θ(y_l|x)), ``Ref_w`` (π_ref(y_w|x)), ``Ref_l`` (π_ref(y_l|x)). Other variables can be declared
with :func:`var` and bound to batch fields at compile time. A *world* is a truth assignment to the
variables; worlds are ordered with the all-true world first (for two variables: TT, TF, FT, FF, the first
letter being the first variable).

A preference structure has a core formula P, a conditioning constraint P_C and an additive constraint P_A.
Its ✓ worlds are the models of (P ∧ P_C) ∨ P_A, its ✗ worlds the models of (¬P ∧ P_C) ∨ P_A; a world can be
✓, ✗, both (a model of P_A) or neither (excluded: outside P_C ∨ P_A). The semantic loss compares the
weighted model counts of the two sets (see :mod:`jalign.logic.compile`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import sympy
from sympy.logic.boolalg import Boolean, BooleanFalse, BooleanTrue, SOPform

# Canonical variables and their order (the order of the columns of a truth table).
M_w, M_l, Ref_w, Ref_l = sympy.symbols("M_w M_l Ref_w Ref_l")
CANONICAL_ORDER: tuple[str, ...] = ("M_w", "M_l", "Ref_w", "Ref_l")

# Per-world labels: bit 0 = ✓ (the world counts for the preference), bit 1 = ✗ (it counts against it).
NEITHER, CHECK, CROSS, BOTH = 0, 1, 2, 3
LABEL_TEXT = {NEITHER: "·", CHECK: "✓", CROSS: "✗", BOTH: "✓✗"}


def var(name: str) -> sympy.Symbol:
    """A Boolean model-prediction variable (a sympy symbol) named ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"variable name must be an identifier, got {name!r}")
    return sympy.Symbol(name)


def _as_formula(x, what: str) -> Boolean:
    if isinstance(x, bool):
        return sympy.true if x else sympy.false
    if isinstance(x, str):
        names = {str(s): s for s in (M_w, M_l, Ref_w, Ref_l)}
        try:
            x = sympy.sympify(x, locals=names)
        except (sympy.SympifyError, SyntaxError, TypeError) as e:
            raise ValueError(f"{what}: cannot parse formula {x!r}: {e}") from None
    if not isinstance(x, Boolean) and not isinstance(x, sympy.Symbol):
        raise TypeError(f"{what} must be a sympy Boolean formula, a bool or a string, got {type(x).__name__}")
    return x


def order_variables(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical variable order: M_w, M_l, Ref_w, Ref_l first (those present), then the rest sorted."""
    names = set(names)
    head = [n for n in CANONICAL_ORDER if n in names]
    return tuple(head + sorted(names - set(CANONICAL_ORDER)))


@functools.lru_cache(maxsize=32)
def worlds(n_vars: int) -> np.ndarray:
    """All 2^n truth assignments as a ``[2^n, n]`` bool array, all-true first (TT, TF, FT, FF for n = 2)."""
    if n_vars < 0:
        raise ValueError(f"n_vars must be >= 0, got {n_vars}")
    table = np.array(list(itertools.product([True, False], repeat=n_vars)), dtype=bool)
    table = table.reshape(2**n_vars, n_vars)
    table.setflags(write=False)
    return table


def world_name(world: Sequence[bool]) -> str:
    """``"TF"`` etc."""
    return "".join("T" if b else "F" for b in world)


def models(formula: Boolean, variables: Sequence[str]) -> np.ndarray:
    """Bool mask ``[2^n]``: which worlds over ``variables`` satisfy ``formula``."""
    formula = _as_formula(formula, "formula")
    free = {str(s) for s in formula.free_symbols}
    missing = free - set(variables)
    if missing:
        raise ValueError(f"formula {formula} uses variables {sorted(missing)} not in {list(variables)}")
    syms = [sympy.Symbol(v) for v in variables]
    if isinstance(formula, BooleanTrue):
        return np.ones(2 ** len(variables), bool)
    if isinstance(formula, BooleanFalse):
        return np.zeros(2 ** len(variables), bool)
    out = []
    for w in worlds(len(variables)):
        val = formula.subs(dict(zip(syms, [bool(b) for b in w], strict=True)))
        out.append(bool(val))
    return np.array(out, dtype=bool)


@dataclasses.dataclass(frozen=True)
class PreferenceStructure:
    """A preference structure P̄ = (P, P_C, P_A).

    ✓ worlds = models of (P ∧ P_C) ∨ P_A; ✗ worlds = models of (¬P ∧ P_C) ∨ P_A.

    Attributes:
      core: the core formula P (sympy Boolean; strings are parsed).
      conditioning: P_C (default ⊤: no conditioning).
      additive: P_A (default ⊥: nothing added).
      variables: the variables the worlds range over, in truth-table order (default: the free symbols of
        the three formulas in canonical order M_w, M_l, Ref_w, Ref_l, then others sorted).
      name: an optional label (for display).

    >>> s = PreferenceStructure(core=M_l >> M_w, conditioning=M_w | M_l, additive=M_w & M_l, name="cpo")
    >>> s.truth_table_text().splitlines()[1].split()
    ['T', 'T', '✓✗']
    """

    core: Boolean
    conditioning: Boolean = sympy.true
    additive: Boolean = sympy.false
    variables: tuple[str, ...] | None = None
    name: str = ""

    def __post_init__(self):
        core = _as_formula(self.core, "core")
        cond = _as_formula(self.conditioning, "conditioning")
        add = _as_formula(self.additive, "additive")
        object.__setattr__(self, "core", core)
        object.__setattr__(self, "conditioning", cond)
        object.__setattr__(self, "additive", add)
        free = {str(s) for f in (core, cond, add) for s in f.free_symbols}
        if self.variables is None:
            object.__setattr__(self, "variables", order_variables(free))
        else:
            vs = tuple(str(v) for v in self.variables)
            if len(set(vs)) != len(vs):
                raise ValueError(f"variables must be distinct, got {vs}")
            missing = free - set(vs)
            if missing:
                raise ValueError(f"formulas use variables {sorted(missing)} not listed in variables={vs}")
            object.__setattr__(self, "variables", vs)

    # -- semantics ---------------------------------------------------------------------------------------
    @property
    def n_vars(self) -> int:
        return len(self.variables)

    @functools.cached_property
    def check_mask(self) -> np.ndarray:
        """Bool ``[2^n]``: the ✓ worlds, models of (P ∧ P_C) ∨ P_A."""
        f = (self.core & self.conditioning) | self.additive
        return models(f, self.variables)

    @functools.cached_property
    def cross_mask(self) -> np.ndarray:
        """Bool ``[2^n]``: the ✗ worlds, models of (¬P ∧ P_C) ∨ P_A."""
        f = (~self.core & self.conditioning) | self.additive
        return models(f, self.variables)

    @property
    def labels(self) -> tuple[int, ...]:
        """Per-world label codes: 0 neither, 1 ✓, 2 ✗, 3 both (see :data:`LABEL_TEXT`)."""
        return tuple(int(c) + 2 * int(x) for c, x in zip(self.check_mask, self.cross_mask, strict=True))

    def over(self, variables: Sequence[str]) -> PreferenceStructure:
        """The same structure with worlds over ``variables`` (a superset; labels ignore the extra ones)."""
        return dataclasses.replace(self, variables=tuple(variables))

    # -- display -----------------------------------------------------------------------------------------
    def __str__(self) -> str:
        nm = f"{self.name}: " if self.name else ""
        return f"{nm}P = {_show(self.core)},  P_C = {_show(self.conditioning)},  P_A = {_show(self.additive)}"

    def truth_table(self) -> list[dict]:
        """Rows ``{"world": "TF", <var>: bool, ..., "label": "✓"}``, one per world, all-true first."""
        rows = []
        for w, lab in zip(worlds(self.n_vars), self.labels, strict=True):
            row = {"world": world_name(w)}
            row.update({v: bool(b) for v, b in zip(self.variables, w, strict=True)})
            row["label"] = LABEL_TEXT[lab]
            rows.append(row)
        return rows

    def truth_table_text(self) -> str:
        """The truth table as aligned text (✓ / ✗ / ✓✗ / · per world)."""
        width = [max(len(v), 1) for v in self.variables]
        head = "  ".join(v.ljust(k) for v, k in zip(self.variables, width, strict=True)) + "  label"
        lines = [head]
        for w, lab in zip(worlds(self.n_vars), self.labels, strict=True):
            cells = ["T" if b else "F" for b in w]
            lines.append(
                "  ".join(c.ljust(k) for c, k in zip(cells, width, strict=True)) + "  " + LABEL_TEXT[lab]
            )
        return "\n".join(lines)


def pretty(f: Boolean) -> str:
    """A formula in logic notation: ¬, ∧, ∨, →, ⊕, ↔, ⊤, ⊥ (operands in canonical variable order)."""
    if isinstance(f, BooleanTrue):
        return "⊤"
    if isinstance(f, BooleanFalse):
        return "⊥"
    if f.is_Symbol:
        return str(f)

    def key(a):
        names = [str(x) for x in a.free_symbols]
        return sorted(CANONICAL_ORDER.index(n) if n in CANONICAL_ORDER else 9 for n in names) + [len(str(a))]

    def sub(a):
        t = pretty(a)
        return t if (a.is_Symbol or isinstance(a, sympy.Not) or a in (sympy.true, sympy.false)) else f"({t})"

    if isinstance(f, sympy.Not):
        return "¬" + sub(f.args[0])
    ops = {sympy.And: " ∧ ", sympy.Or: " ∨ ", sympy.Xor: " ⊕ ", sympy.Equivalent: " ↔ "}
    for cls, op in ops.items():
        if isinstance(f, cls):
            args = sorted(f.args, key=key)
            return op.join(sub(a) for a in args)
    if isinstance(f, sympy.Implies):
        return f"{sub(f.args[0])} → {sub(f.args[1])}"
    return str(f)


_show = pretty


def from_labels(labels: Sequence[int], variables: Sequence[str], name: str = "") -> PreferenceStructure:
    """The canonical structure with the given per-world labels (0 neither, 1 ✓, 2 ✗, 3 both).

    P_A = the worlds labelled both, P_C = the worlds labelled ✓ or ✗ only, P = the ✓-only worlds (each a
    minimised DNF over ``variables``); then (P ∧ P_C) ∨ P_A has exactly the ✓ ∪ both worlds and
    (¬P ∧ P_C) ∨ P_A exactly the ✗ ∪ both worlds.
    """
    variables = tuple(variables)
    n = len(variables)
    labels = tuple(int(x) for x in labels)
    if len(labels) != 2**n or any(x not in (0, 1, 2, 3) for x in labels):
        raise ValueError(f"labels must be {2**n} codes in {{0, 1, 2, 3}}, got {labels}")
    syms = [sympy.Symbol(v) for v in variables]
    ws = worlds(n)

    def dnf(idx):
        if not idx:
            return sympy.false
        return SOPform(syms, [[int(b) for b in ws[i]] for i in idx])

    both = [i for i, x in enumerate(labels) if x == BOTH]
    cond = [i for i, x in enumerate(labels) if x in (CHECK, CROSS)]
    core = [i for i, x in enumerate(labels) if x == CHECK]
    return PreferenceStructure(
        core=dnf(core), conditioning=dnf(cond), additive=dnf(both), variables=variables, name=name
    )

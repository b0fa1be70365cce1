"""Decompile a DPA loss into its preference structure.

A DPA loss is f(β·ρ) (or, for IPO, (ρ − 1/(2β))²) with ρ = log(ρ_t / ρ_b) a log-ratio of *monomials*
of model probabilities: products of π-factors (a positive literal) and (1 − π)-factors (a negated literal).
Sem maps a monomial to the conjunction of its literals, whose weighted model count is the monomial itself
(variables the monomial does not mention are marginalised out). The decompiled structure (Richardson et al.,
ICML 2025) is

    P = Sem(ρ_b) → Sem(ρ_t),   P_C = Sem(ρ_t) ∨ Sem(ρ_b),   P_A = Sem(ρ_t) ∧ Sem(ρ_b).

Then (P ∧ P_C) ∨ P_A ≡ Sem(ρ_t) and (¬P ∧ P_C) ∨ P_A ≡ Sem(ρ_b), so WMC(✓)/WMC(✗) = ρ_t/ρ_b and the
compiled semantic loss reproduces the loss's preference term exactly. Only the preference term is
captured: regularisers and offsets outside ρ (CPO's and ORPO's NLL term, SimPO's margin γ and length
normalisation, R-DPO's length penalty, DPOP's positive penalty, …) are outside the logic; f and β are
not part of the structure (decompilation is invariant to f).
"""

from __future__ import annotations

import dataclasses
import difflib

import sympy

from jalign.logic.structure import M_l, M_w, PreferenceStructure, Ref_l, Ref_w, order_variables

_NAMES = {str(s): s for s in (M_w, M_l, Ref_w, Ref_l)}


def _parse_monomial(m, what: str) -> dict[sympy.Symbol, bool]:
    """Monomial → {variable: True for a π factor, False for a (1 − π) factor}."""
    if isinstance(m, str):
        try:
            m = sympy.sympify(m, locals=_NAMES)
        except (sympy.SympifyError, SyntaxError, TypeError) as e:
            raise ValueError(f"{what}: cannot parse monomial {m!r}: {e}") from None
    m = sympy.sympify(m)
    lits: dict[sympy.Symbol, bool] = {}
    coef = sympy.Integer(1)
    for factor in sympy.Mul.make_args(m):
        if factor.is_Number:
            coef *= factor
            continue
        if factor.is_Symbol:
            sym, pos = factor, True
        else:
            syms = list(factor.free_symbols)
            s0 = syms[0] if len(syms) == 1 else None
            if s0 is not None and sympy.expand(factor - (1 - s0)) == 0:
                sym, pos = s0, False
            elif s0 is not None and sympy.expand(factor - (s0 - 1)) == 0:  # (v − 1) = −(1 − v)
                sym, pos, coef = s0, False, -coef
            else:
                raise ValueError(
                    f"{what}: {m} is not a monomial of probabilities (a product of factors v and (1 − v), "
                    f"each variable at most once); offending factor {factor}"
                )
        if sym in lits:
            raise ValueError(f"{what}: variable {sym} occurs more than once in {m}")
        lits[sym] = pos
    if coef != 1:
        raise ValueError(f"{what}: {m} has a constant factor {coef}; a monomial of probabilities has none")
    return lits


def sem(monomial) -> sympy.Basic:
    """Sem(monomial): the conjunction of its literals (v for a π_v factor, ¬v for a (1 − π_v) factor).

    >>> sem("M_w*(1 - M_l)")
    M_w & ~M_l
    """
    lits = _parse_monomial(monomial, "monomial")
    if not lits:
        return sympy.true
    return sympy.And(*[s if pos else ~s for s, pos in lits.items()])


def decompile_ratio(top, bottom, *, name: str = "") -> PreferenceStructure:
    """The preference structure of ρ = log(top / bottom), top and bottom monomials (sympy or strings).

    P = Sem(bottom) → Sem(top), P_C = Sem(top) ∨ Sem(bottom), P_A = Sem(top) ∧ Sem(bottom).

    >>> str(decompile_ratio("M_w", "M_l"))
    'P = M_l → M_w,  P_C = M_w ∨ M_l,  P_A = M_w ∧ M_l'
    """
    lt, lb = _parse_monomial(top, "top"), _parse_monomial(bottom, "bottom")
    t, b = sem(top), sem(bottom)
    free = {str(s) for f in (t, b) for s in f.free_symbols}
    # Sem(ρ_t) ∧ Sem(ρ_b) is ⊥ when a variable occurs with opposite signs (shown as ⊥ for readability).
    contradictory = any(v in lb and lb[v] != pos for v, pos in lt.items())
    return PreferenceStructure(
        core=sympy.Implies(b, t),
        conditioning=t | b,
        additive=sympy.false if contradictory else t & b,
        variables=order_variables(free),
        name=name,
    )


@dataclasses.dataclass(frozen=True)
class KnownLoss:
    """A named loss: its structure, the f it uses, and what lies outside the logic.

    Attributes:
      name: decompile name.
      structure: the preference structure.
      f: ``"logistic"``, ``"hinge"`` or ``"squared"`` (the f of :func:`jalign.logic.compile`).
      ratio: ρ_t / ρ_b as text (None when ρ is not a ratio of monomials, e.g. unCPO).
      outside: the parts of the published loss that the structure does not capture.
      source: paper.
    """

    name: str
    structure: PreferenceStructure
    f: str
    ratio: str | None
    outside: str
    source: str


def _card(name, core, cond, add):
    return PreferenceStructure(core=core, conditioning=cond, additive=add, name=name)


_CPO_RATIO = ("M_w", "M_l")
_DPO_RATIO = ("M_w*Ref_l", "M_l*Ref_w")
_ODDS_RATIO = ("M_w*(1 - M_l)", "M_l*(1 - M_w)")
_REF_ODDS_RATIO = ("M_w*Ref_l*(1 - M_l)", "M_l*Ref_w*(1 - M_w)")


def _known() -> dict[str, KnownLoss]:
    cpo = _card("cpo", M_l >> M_w, M_w | M_l, M_w & M_l)
    dpo = _card("dpo", (M_l & Ref_w) >> (M_w & Ref_l), (M_w & Ref_l) | (M_l & Ref_w), M_w & Ref_l & M_l & Ref_w)
    orpo = _card("orpo", M_l >> M_w, sympy.Xor(M_w, M_l), sympy.false)
    uncpo = _card("uncpo", M_l >> M_w, sympy.true, sympy.false)
    ref_variant = _card(
        "ref_variant",
        (M_l & Ref_w) >> M_w,
        (M_w & ~M_l & Ref_l) | (M_l & ~M_w & Ref_w),
        sympy.false,
    )

    def rename(s, n):
        return dataclasses.replace(s, name=n)

    cpo_r, dpo_r = "π_w / π_l", "π_w·ref_l / (π_l·ref_w)"
    out = [
        KnownLoss("dpo", dpo, "logistic", dpo_r, "—", "Rafailov et al., NeurIPS 2023"),
        KnownLoss("ipo", rename(dpo, "ipo"), "squared", dpo_r, "— (f is IPO's squared loss)",
                  "Azar et al., AISTATS 2024"),
        KnownLoss("slic", rename(cpo, "slic"), "hinge", cpo_r,
                  "the NLL regulariser λ·NLL(y_ref); margin δ enters as δ·hinge(β = 1/δ)",
                  "Zhao et al., SLiC-HF, 2023"),
        KnownLoss("cpo", cpo, "logistic", cpo_r, "the NLL regulariser λ·NLL(y_w)",
                  "Xu et al., Contrastive Preference Optimization, ICML 2024"),
        KnownLoss("orpo", orpo, "logistic", "odds(π_w) / odds(π_l)",
                  "the NLL term and the weight λ on the odds-ratio term; ORPO's length-normalised p = exp(lp/n)",
                  "Hong et al., ORPO, EMNLP 2024"),
        KnownLoss("simpo", rename(cpo, "simpo"), "logistic", cpo_r,
                  "the target margin γ and length normalisation (lp/n)", "Meng et al., SimPO, NeurIPS 2024"),
        KnownLoss("rdpo", rename(dpo, "rdpo"), "logistic", dpo_r, "the length penalty α·(n_w − n_l)",
                  "Park et al., Disentangling Length from Quality in DPO, 2024"),
        KnownLoss("dpop", rename(dpo, "dpop"), "logistic", dpo_r, "the positive penalty λ·max(0, rp_w − lp_w)",
                  "Pal et al., Smaug / DPO-Positive, 2024"),
        KnownLoss("uncpo", uncpo, "logistic", None, "— (new loss: CPO's core without conditioning)",
                  "Richardson et al., ICML 2025"),
        KnownLoss("ref_variant", ref_variant, "logistic", "odds(π_w)·ref_l / (odds(π_l)·ref_w)",
                  "— (new loss: ORPO's conditioning with a reference model)", "Richardson et al., ICML 2025"),
    ]
    # Losses of the card's landscape (the paper's text was unavailable: names are the card's, the exact
    # structures are jalign's reconstruction; see docs/logic.md).
    jr = "jalign reconstruction of a loss named on the card (Richardson et al., ICML 2025)"
    out += [
        KnownLoss("ccpo", _card("ccpo", M_l >> M_w, M_w | M_l, sympy.false), "logistic",
                  "π_w / (π_l·(1 − π_w))", "—", jr),
        KnownLoss("cfunl", _card("cfunl", ~M_l, M_w | M_l, sympy.false), "logistic",
                  "π_w·(1 − π_l) / π_l", "—", jr),
        KnownLoss("ce", _card("ce", M_w, sympy.true, sympy.false), "logistic",
                  "π_w / (1 − π_w)", "— (−log σ(ρ) = −log π_w: cross-entropy)", jr),
        KnownLoss("unl", _card("unl", ~M_l, sympy.true, sympy.false), "logistic",
                  "(1 − π_l) / π_l", "— (−log σ(ρ) = −log(1 − π_l): unlikelihood)", jr),
        KnownLoss("ceunl", _card("ceunl", M_w & ~M_l, sympy.true, sympy.false), "logistic", None,
                  "— (−log σ(ρ) = −log π_w(1 − π_l): cross-entropy with unlikelihood)", jr),
    ]
    return {k.name: k for k in out}


KNOWN: dict[str, KnownLoss] = _known()
ALIASES = {"sigmoid": "dpo", "cpo_ref": "ref_variant"}
# Ratios of monomials of the named losses whose ρ is one (used by tests and docs).
RATIOS: dict[str, tuple[str, str]] = {
    "dpo": _DPO_RATIO, "ipo": _DPO_RATIO, "rdpo": _DPO_RATIO, "dpop": _DPO_RATIO,
    "cpo": _CPO_RATIO, "slic": _CPO_RATIO, "simpo": _CPO_RATIO,
    "orpo": _ODDS_RATIO, "ref_variant": _REF_ODDS_RATIO,
}


def names() -> list[str]:
    """Names :func:`decompile` knows (aliases included)."""
    return sorted(set(KNOWN) | set(ALIASES))


def known(name: str) -> KnownLoss:
    """The :class:`KnownLoss` record of ``name``; unknown names raise ``KeyError`` listing the valid ones."""
    key = ALIASES.get(name, name)
    if key not in KNOWN:
        close = difflib.get_close_matches(str(name), names(), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"no preference structure for {name!r}.{hint} Valid: {', '.join(names())}")
    return KNOWN[key]


def decompile(name: str) -> PreferenceStructure:
    """The preference structure of the named loss (its preference term only; see the module docstring).

    Known: dpo (= sigmoid), ipo, slic, cpo, orpo,
    simpo, rdpo, dpop, uncpo, ref_variant (= cpo_ref). Structures are the card's forms; for the losses whose
    ρ is a ratio of monomials they have the same ✓/✗ worlds as :func:`decompile_ratio` of that ratio.

    Note: the loss registry's ``hinge`` is SLiC *with* a reference model, i.e. ``decompile("dpo")`` compiled
    with ``f="hinge"``; ``slic`` here is the original reference-free SLiC.
    """
    return known(name).structure

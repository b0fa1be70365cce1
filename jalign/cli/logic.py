"""``jalign logic``: symbolic forms of DPA losses (show, compare, list)."""

from __future__ import annotations

import json
import sys

_RELATION_TEXT = {
    "equivalent": "{a} and {b} are equivalent: the same ✓ and ✗ worlds, hence the same semantic loss for every "
    "f and β (they may differ only in f, β and terms outside the logic)",
    "same-rho": "{a} and {b} label the worlds differently but have the same ρ = log WMC(✓)/WMC(✗) as a "
    "function of the probabilities (a common factor cancels): equal losses for equal f and β",
    "entails": "{a} entails {b} ({a} ⊨ {b}): ✓({a}) ⊆ ✓({b}) and ✗({a}) ⊇ ✗({b}); {a} is more constrained, "
    "so ℓ({a}) ≥ ℓ({b}) for logistic and hinge f",
    "entailed": "{b} entails {a} ({b} ⊨ {a}): ✓({b}) ⊆ ✓({a}) and ✗({b}) ⊇ ✗({a}); {b} is more constrained, "
    "so ℓ({b}) ≥ ℓ({a}) for logistic and hinge f",
    "incomparable": "{a} and {b} are incomparable: neither entails the other",
}


def register(sub) -> None:
    p = sub.add_parser("logic", help="symbolic forms of DPA losses (Richardson et al., ICML 2025)")
    lsub = p.add_subparsers(dest="logic_command", metavar="ACTION")
    s = lsub.add_parser("show", help="symbolic form and truth table of a loss")
    s.add_argument("name")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=run_show)
    c = lsub.add_parser("compare", help="how two losses relate (equivalent, entails, incomparable)")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_compare)
    li = lsub.add_parser("list", help="the losses with a known preference structure")
    li.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _lookup(name):
    from jalign import logic

    try:
        return logic.known(name)
    except KeyError:
        print(f"unknown loss {name!r}; valid: {', '.join(logic.names())}", file=sys.stderr)
        return None


def run_show(args) -> int:
    k = _lookup(args.name)
    if k is None:
        return 2
    from jalign.logic.structure import pretty

    s = k.structure
    if args.json:
        print(
            json.dumps(
                {
                    "name": k.name,
                    "core": pretty(s.core),
                    "conditioning": pretty(s.conditioning),
                    "additive": pretty(s.additive),
                    "variables": list(s.variables),
                    "ratio": k.ratio,
                    "f": k.f,
                    "outside_logic": k.outside,
                    "source": k.source,
                    "truth_table": s.truth_table(),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print(f"{k.name}  ({k.source})")
    print(f"  {s}")
    print("  ✓ worlds: models of (P ∧ P_C) ∨ P_A;  ✗ worlds: models of (¬P ∧ P_C) ∨ P_A")
    if k.ratio:
        print(f"  WMC(✓)/WMC(✗) = {k.ratio}")
    print(f"  f: {k.f};  outside the logic: {k.outside}")
    print()
    for line in s.truth_table_text().splitlines():
        print("  " + line)
    print("\n  (✓✗: both; ·: excluded)")
    return 0


def run_compare(args) -> int:
    from jalign import logic

    ka, kb = _lookup(args.a), _lookup(args.b)
    if ka is None or kb is None:
        return 2
    rel = logic.relation(ka.structure, kb.structure)
    text = _RELATION_TEXT[rel].format(a=args.a, b=args.b)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "relation": rel, "text": text}, ensure_ascii=False))
    else:
        print(text)
    return 0


def run_list(args) -> int:
    from jalign import logic

    for name in sorted(logic.KNOWN):
        print(f"{name:12s} {logic.KNOWN[name].structure}")
    return 0

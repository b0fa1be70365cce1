"""``jalign losses``: list the registered losses with formula and source paper."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("losses", help="list registered losses (formula, paper, hyperparameters)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--kind", choices=["pairwise", "unpaired", "listwise", "scored", "sampled"], help="only this kind")
    p.set_defaults(func=run)


def run(args) -> int:
    from jalign import losses

    rows = []
    seen = set()
    for name in losses.names():
        s = losses.spec(name)
        if s.name in seen or (args.kind and s.kind != args.kind):
            continue
        seen.add(s.name)
        rows.append(
            {
                "name": s.name,
                "aliases": list(s.aliases),
                "kind": s.kind,
                "formula": s.formula,
                "paper": s.paper,
                "hparams": {k: v for k, v in s.hparams.items()},
                "reference": s.needs_reference,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        alias = f" (= {', '.join(r['aliases'])})" if r["aliases"] else ""
        hp = ", ".join(f"{k}={v}" for k, v in r["hparams"].items())
        ref = "" if r["reference"] else "  [reference-free]"
        print(f"{r['name']}{alias}  [{r['kind']}]{ref}")
        print(f"    loss   : {r['formula']}")
        print(f"    hparams: {hp or '-'}")
        print(f"    paper  : {r['paper']}")
    n_names = sum(1 + len(r["aliases"]) for r in rows)
    print(f"\n{len(rows)} losses ({n_names} names with aliases)")
    return 0

"""``jalign reproduce NAME|all --out DIR``: regenerate paper figures and check claims."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="regenerate a paper's figures and check its claims")
    p.add_argument("name", help="reproduction name, a comma-separated list of names, or 'all'")
    p.add_argument("--out", default="figures", help="output directory (default: figures/)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="quick", action="store_true", default=True, help="CPU defaults (default)")
    g.add_argument("--full", dest="quick", action="store_false", help="paper-sized settings (GPU/TPU)")
    p.add_argument("--no-lm", dest="lm", action="store_false",
                   help="skip the small-LM half of the reproductions that have one (their exact/bandit part only)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild DIR/report.{md,html} from the saved DIR/NAME/results.json; run nothing")
    p.set_defaults(func=run)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise SystemExit(f"jalign reproduce: --out {str(out)!r} is not writable: {e}") from None


def _part_kwargs(module, lm: bool) -> dict:
    """``{"lm": False}`` for a reproduction whose ``run`` has a small-LM half to skip; ``{}`` otherwise."""
    import inspect

    if lm or "lm" not in inspect.signature(module.run).parameters:
        return {}
    return {"lm": False}


def run(args) -> int:
    import paper_repro

    reg = paper_repro.registry()
    if args.name == "all":
        todo = sorted(reg)
    else:
        todo = [n.strip() for n in args.name.split(",") if n.strip()]
        bad = [n for n in todo if n not in reg]
        if bad or not todo:
            print(f"unknown reproduction {', '.join(map(repr, bad)) or repr(args.name)}; valid: "
                  f"{', '.join(sorted(reg))}, a comma-separated list of them, or 'all'", file=sys.stderr)
            return 2
    several = args.name == "all" or len(todo) > 1
    out = Path(args.out)
    _check_writable(out)
    if getattr(args, "report_only", False):
        from jalign.reporting import summary_from_results, write_report

        summary = summary_from_results(out, todo)
        for path in write_report(summary, out):
            print(f"wrote {path}")
        return int(any(r["status"] != "ok" for r in summary["reproductions"].values()))
    summary = {"quick": args.quick, "reproductions": {}}
    if not getattr(args, "lm", True):
        summary["settings_label"] = f"{'quick' if args.quick else 'full'}, small-LM halves skipped (--no-lm)"
    status = 0
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc="reproduce", unit="repro", disable=len(todo) < 2, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.time()
        print(f"== reproduce {name} -> {out / name}", flush=True)
        # Write into a temporary sibling directory, then move into place: no half-written results.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
        try:
            result = reg[name].run(tmp, quick=args.quick, **_part_kwargs(reg[name], getattr(args, "lm", True)))
        except Exception as e:  # noqa: BLE001 - report and continue with the other reproductions
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"!! {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            summary["reproductions"][name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            status = 1
            continue
        final = out / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        summary["reproductions"][name] = {
            "status": "ok",
            "seconds": round(time.time() - t0, 1),
            "claims": (result or {}).get("claims", []),
        }
    if several:
        from jalign.reporting import write_report

        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(out / "summary.json")
        for path in write_report(summary, out):
            print(f"wrote {path}")
    return status

"""Wall time of ``jalign reproduce all --quick``, end to end, and whether the run repeats the committed ``figures/``.

``python -m bench.reproduce_all [--jobs N|auto] [--cache DIR|none] [--out DIR]`` runs the command once in a child
process (into a temporary directory unless ``--out``; the committed ``figures/`` are never touched) and writes
``bench/results/reproduce_all_default.json`` for the command's defaults (``--jobs auto --cache`` a temporary
directory), else ``reproduce_all[_jobsN][_nocache].json``: the whole command's
wall time, each reproduction's own time (``seconds`` in its ``summary.json`` entry), the 1/5/15-minute load
average before and after (a quiet machine is one whose load stays near the run's own ~1–2), the CPU, and, per
reproduction, how many claims came out with the committed status and with the committed ``measured`` text
(equal text = the same numbers to the printed digits).

``python -m bench.reproduce_all --from DIR --wall-s S`` summarises a run made by hand
(``jalign reproduce all --quick --out DIR`` timed as S seconds) in the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import write_result

ROOT = Path(__file__).resolve().parents[1]


def evidence_ok(c: dict) -> bool:
    """A well-formed claim (:func:`jalign.reporting.check_claim`) whose evidence, if seeded, has ≥ 3 seeds and,
    whatever its status, an interval — or neither estimate nor interval where the run gave nothing to estimate
    (e.g. no pair misranked by a wide margin), which only an "inconclusive" row may say."""
    from jalign.reporting import MIN_SEEDS, check_claim

    try:
        check_claim(c)
    except ValueError:
        return False
    ev = c["evidence"]
    if ev["kind"] != "seeds":
        return True
    empty = ev["estimate"] is None and ev["interval"] is None and c["status"] == "inconclusive"
    return int(ev["seeds"]) >= MIN_SEEDS and (ev["interval"] is not None or empty)


def compare_claims(fresh: list[dict], committed: list[dict]) -> dict[str, int]:
    """Claims matched by their text: how many there are, how many carry their evidence (:func:`evidence_ok`), how
    many have the committed status, how many the committed ``measured`` text too."""
    by_text = {c["claim"]: c for c in committed}
    same_status = sum(1 for c in fresh if c["claim"] in by_text and by_text[c["claim"]]["status"] == c["status"])
    same_measured = sum(1 for c in fresh if c["claim"] in by_text and by_text[c["claim"]]["measured"] == c["measured"])
    return {"claims": len(fresh), "with_evidence": sum(map(evidence_ok, fresh)), "same_status": same_status, "same_measured": same_measured,
            "committed_claims": len(committed)}


def _stable(obj: Any) -> Any:
    """``obj`` without its wall-time entries (keys naming seconds, wall or time) and ``reused`` flags (whether a
    shared value came from an earlier reproduction of the command), which differ between runs."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items()
                if k != "reused" and not any(w in k for w in ("second", "wall", "time"))}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def same_results(run_a: Path, run_b: Path, name: str) -> bool:
    """Whether two runs saved the same ``NAME/results.json`` apart from wall times (every array and claim)."""
    load = lambda d: _stable(json.loads((Path(d) / name / "results.json").read_text()))
    return load(run_a) == load(run_b)


def command(jobs: int | str, cache: str | None) -> str:
    """The command line measured: ``jalign reproduce all --quick`` with the options that differ from its
    defaults (``--jobs auto``, a temporary shared cache)."""
    opts = "" if jobs == "auto" else f" --jobs {jobs}"
    return f"jalign reproduce all --quick{opts}{'' if cache is None else f' --cache {cache}'}"


def summarise(run_dir: Path, wall_s: float, *, jobs: int | str, cache: str | None = None,
              committed: Path = ROOT / "figures", load_before: list[float] | None = None,
              load_after: list[float] | None = None, compare_with: Path | None = None) -> dict[str, Any]:
    """The result payload of a finished ``jalign reproduce all`` run in ``run_dir`` (``jobs``, ``cache``: the
    options it ran with; ``compare_with``: another run's directory, e.g. a sequential one, whose results each
    reproduction's are compared with)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    rows, differences = [], []
    for name, entry in summary["reproductions"].items():
        row: dict[str, Any] = {"reproduction": name, "status": entry["status"], "seconds": entry.get("seconds")}
        path = Path(committed) / name / "results.json"
        if entry["status"] == "ok" and path.is_file():
            old = json.loads(path.read_text()).get("claims", [])
            row |= compare_claims(entry.get("claims", []), old)
            if compare_with is not None:
                row["same_results_as_other_run"] = same_results(run_dir, compare_with, name)
            by_text = {c["claim"]: c for c in old}
            differences += [{"reproduction": name, "claim": c["claim"], "status": c["status"],
                             "committed_status": by_text[c["claim"]]["status"], "measured": c["measured"],
                             "committed_measured": by_text[c["claim"]]["measured"]}
                            for c in entry.get("claims", [])
                            if c["claim"] in by_text and by_text[c["claim"]]["measured"] != c["measured"]]
        rows.append(row)
    parts = sum(r["seconds"] or 0.0 for r in rows)
    rows.append({"reproduction": "all (the command's wall time)", "status": "", "seconds": round(wall_s, 1),
                 "claims": sum(r.get("claims", 0) for r in rows),
                 "with_evidence": sum(r.get("with_evidence", 0) for r in rows),
                 "same_status": sum(r.get("same_status", 0) for r in rows),
                 "same_measured": sum(r.get("same_measured", 0) for r in rows),
                 "committed_claims": sum(r.get("committed_claims", 0) for r in rows)})
    return {
        "description": f"`{command(jobs, cache)}` end to end "
        "(python -m bench.reproduce_all): each reproduction's wall time as its summary entry records it, the whole "
        "command's wall time, and, against the committed figures/, how many claims have the same status and the "
        "same measured text (same numbers to the printed digits).",
        "settings": {"jobs": summary.get("jobs", jobs), "jobs_option": jobs,
                     "cache": "temporary (the default)" if cache is None else cache,
                     "quick": bool(summary.get("quick", True))},
        "rows": rows,
        "differences": differences,  # the claims whose measured text differs from the committed one
        "wall_s": round(wall_s, 1),
        "sum_of_parts_s": round(parts, 1),
        "load_average_before": load_before,
        "load_average": load_after if load_after is not None else list(os.getloadavg()),
    }


def result_name(jobs: int | str, cache: str | None) -> str:
    """``reproduce_all_default`` for the command's defaults; else ``reproduce_all[_jobsN][_nocache]``."""
    if jobs == "auto" and cache is None:
        return "reproduce_all_default"
    name = "reproduce_all" + (f"_jobs{jobs}" if jobs != 1 else "")
    return name + ("_nocache" if cache is not None and cache.lower() == "none" else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default="1", help="the command's --jobs (an integer or auto, its default)")
    p.add_argument("--cache", help="the command's --cache (default: its own default, a temporary directory)")
    p.add_argument("--out", help="run directory (default: a temporary one)")
    p.add_argument("--from", dest="from_dir", help="summarise this finished run instead of running")
    p.add_argument("--wall-s", type=float, help="with --from: the run's measured wall time")
    p.add_argument("--load", nargs=3, type=float, metavar=("L1", "L5", "L15"),
                   help="with --from: the load average read at the end of the run (default: now)")
    p.add_argument("--load-before", nargs=3, type=float, metavar=("L1", "L5", "L15"),
                   help="with --from: the load average read just before the run")
    p.add_argument("--compare-with", help="another run's directory: record whether each reproduction saved the "
                   "same results (wall times aside)")
    p.add_argument("--result", help="result file (default bench/results/reproduce_all[_jobsN].json)")
    args = p.parse_args(argv)
    jobs = args.jobs if args.jobs == "auto" else int(args.jobs)
    name = result_name(jobs, args.cache)
    if args.from_dir:
        if args.wall_s is None:
            p.error("--from needs --wall-s")
        payload = summarise(Path(args.from_dir), args.wall_s, jobs=jobs, cache=args.cache,
                            load_before=args.load_before, load_after=args.load, compare_with=args.compare_with)
    else:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="reproduce-all-"))
        before = list(os.getloadavg())
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "jalign.cli", "reproduce", "all", "--quick", "--out", str(out),
               "--jobs", str(jobs), *([] if args.cache is None else ["--cache", args.cache])]
        subprocess.run(cmd, check=False, cwd=ROOT)
        payload = summarise(out, time.perf_counter() - t0, jobs=jobs, cache=args.cache, load_before=before,
                            compare_with=args.compare_with)
    print(write_result(name, payload, args.result))


if __name__ == "__main__":
    main()

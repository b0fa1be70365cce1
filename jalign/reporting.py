"""The claims report of `jalign reproduce all`: claims with their evidence, rendered as Markdown and HTML.

A claim is a dict::

    {"paper": str, "claim": str, "measured": str, "status": STATUS, "source": "paper" | "reconstruction",
     "evidence": {"kind": KIND, "seeds": int, "estimate": float | None, "interval": [lo, hi] | None,
                  "rule": str}}

* ``status`` ∈ :data:`STATUSES`. "by construction" is for rows that cannot fail (the code makes them true);
  such rows never count as "holds". "inconclusive" is a seeded claim whose interval straddles the rule's
  threshold (or one with too few seeds for an interval).
* ``evidence["kind"]`` ∈ :data:`KINDS`: "exact" (closed forms, exact optima; decided with a tolerance),
  "seeds" (a statistic over ≥ :data:`MIN_SEEDS` seeds with a 95% interval), "construction" (true by
  construction), "none" (nothing measured, e.g. not reproducible here).
* ``rule`` is the pass rule, written in the reproduction's code before the run.
* ``source``: "paper" when the row tests the paper's own statement in the paper's own setting;
  "reconstruction" when the setting, loss or construction is the project's (the row then says what is ours).

:func:`t_interval` (or :func:`t_interval_from_moments`), :func:`interval_status`, :func:`evidence` and
:func:`make_claim` build such rows;
:func:`check_claim` validates one (the report refuses malformed rows).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

STATUSES = ("holds", "does not hold", "inconclusive", "by construction", "not reproducible here")
KINDS = ("exact", "seeds", "construction", "none")
SOURCES = ("paper", "reconstruction")
MIN_SEEDS = 3
_ICON = {"holds": "✅ holds", "does not hold": "❌ does not hold", "inconclusive": "❔ inconclusive",
         "by construction": "🔧 by construction", "not reproducible here": "⚪ not reproducible here"}


def t_interval(x, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of the finite values of ``x``: ``(mean, lo, hi)``.

    mean ± t_{(1+c)/2, n−1} · s/√n with s the unbiased standard deviation (mean subtracted first). With fewer
    than two finite values the interval is ``(nan, nan)``.
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(x, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    sd = float(np.sqrt(np.sum((x - mean) ** 2) / (x.size - 1)))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * sd / math.sqrt(x.size))
    return mean, mean - half, mean + half


def t_interval_from_moments(mean: float, sd: float, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """:func:`t_interval` from summary statistics: mean, unbiased standard deviation ``sd`` and count ``n``.

    For results that saved only the moments over seeds. With ``n < 2`` or a non-finite ``sd`` the interval is
    ``(nan, nan)``.
    """
    from scipy import stats

    mean, sd, n = float(mean), float(sd), int(n)
    if n < 2 or not math.isfinite(sd):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return mean, mean - half, mean + half


def interval_status(lo: float, hi: float, threshold: float, *, above: bool) -> str:
    """The status of a seeded claim "the quantity is above (``above=True``) / below ``threshold``".

    "holds" when the whole interval ``[lo, hi]`` lies strictly on the claimed side, "does not hold" when it lies
    strictly on the other side, "inconclusive" when it touches or straddles the threshold or is not finite.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if (lo > threshold) if above else (hi < threshold):
        return "holds"
    if (hi < threshold) if above else (lo > threshold):
        return "does not hold"
    return "inconclusive"


def evidence(kind: str, *, rule: str, seeds: int = 1, estimate: float | None = None,
             interval: tuple[float, float] | list[float] | None = None) -> dict[str, Any]:
    """An evidence object (see the module docstring); floats are made JSON-safe (non-finite → ``None``)."""
    if kind not in KINDS:
        raise ValueError(f"evidence kind {kind!r} not in {KINDS}")

    def num(v):
        return None if v is None or not math.isfinite(float(v)) else float(v)

    iv = None
    if interval is not None:
        lo, hi = (num(v) for v in interval)
        iv = None if lo is None or hi is None else [lo, hi]
    return {"kind": kind, "seeds": int(seeds), "estimate": num(estimate), "interval": iv, "rule": str(rule)}


def check_claim(c: dict[str, Any], where: str = "claim") -> None:
    """Raise ``ValueError`` naming ``where`` unless ``c`` is a well-formed claim row.

    Besides the fields: "by construction" ⇔ evidence kind "construction"; a "holds" / "does not hold" row with
    kind "seeds" has ≥ :data:`MIN_SEEDS` seeds and an interval.
    """
    for key in ("paper", "claim", "measured", "status", "evidence"):
        if key not in c:
            raise ValueError(f"{where}: missing key {key!r}")
    st, ev = c["status"], c["evidence"]
    if st not in STATUSES:
        raise ValueError(f"{where}: status {st!r} not in {STATUSES}")
    if c.get("source", "paper") not in SOURCES:
        raise ValueError(f"{where}: source {c.get('source')!r} not in {SOURCES}")
    if not isinstance(ev, dict) or ev.get("kind") not in KINDS:
        raise ValueError(f"{where}: evidence {ev!r} has no kind in {KINDS}")
    for key in ("seeds", "estimate", "interval", "rule"):
        if key not in ev:
            raise ValueError(f"{where}: evidence lacks {key!r}")
    if (st == "by construction") != (ev["kind"] == "construction"):
        raise ValueError(f"{where}: status {st!r} with evidence kind {ev['kind']!r} (by construction ⇔ construction)")
    if ev["kind"] == "seeds" and st in ("holds", "does not hold"):
        if int(ev["seeds"]) < MIN_SEEDS or ev["interval"] is None:
            raise ValueError(f"{where}: a seeded {st!r} needs ≥ {MIN_SEEDS} seeds and an interval, got "
                             f"seeds={ev['seeds']} interval={ev['interval']}")


def make_claim(*, paper: str, claim: str, measured: str, status: str, evidence: dict[str, Any],
               source: str = "paper") -> dict[str, Any]:
    """A claim row, validated by :func:`check_claim`."""
    c = {"paper": paper, "claim": claim, "measured": measured, "status": status, "source": source,
         "evidence": evidence}
    check_claim(c)
    return c


def _evidence_text(ev: dict[str, Any] | None) -> str:
    if not ev:
        return "—"
    parts = [ev["kind"]]
    if ev["kind"] == "seeds":
        parts.append(f"{ev['seeds']} seeds")
    if ev.get("estimate") is not None:
        est = f"{ev['estimate']:.4g}"
        if ev.get("interval"):
            est += f" [{ev['interval'][0]:.4g}, {ev['interval'][1]:.4g}]"
        parts.append(est)
    if ev.get("rule"):
        parts.append("rule: " + ev["rule"])
    return "; ".join(parts)


def claim_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """One row per claim of every reproduction in ``summary`` (a failed reproduction gives one row).

    Every claim must be well formed (:func:`check_claim`: evidence included); a malformed one raises
    ``ValueError`` naming the reproduction and the claim's index.
    """
    rows = []
    for name, rep in sorted(summary.get("reproductions", {}).items()):
        if rep.get("status") != "ok":
            rows.append({"reproduction": name, "paper": "", "claim": "(reproduction failed)", "source": "",
                         "measured": rep.get("error", ""), "evidence": "—", "status": "not reproducible here"})
            continue
        for i, c in enumerate(rep.get("claims", [])):
            where = f"reproduction {name!r}, claim {i}"
            status = str(c.get("status", ""))
            if status not in STATUSES:
                raise ValueError(f"{where}: claim status {status!r} not in {STATUSES}")
            if "evidence" not in c:
                raise ValueError(f"{where}: the claim has no evidence (every claim needs one; see jalign.reporting)")
            check_claim(c, where)
            rows.append({"reproduction": name, "paper": str(c.get("paper", "")), "claim": str(c.get("claim", "")),
                         "source": str(c.get("source", "paper")), "measured": str(c.get("measured", "")),
                         "evidence": _evidence_text(c.get("evidence")), "status": status})
    return rows


def status_counts(rows: list[dict[str, str]]) -> dict[str, int]:
    """How many rows have each status (every status of :data:`STATUSES`, zeros included)."""
    return {s: sum(r["status"] == s for r in rows) for s in STATUSES}


def _summary_line(rows) -> str:
    counts = status_counts(rows)
    return f"{len(rows)} claims: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."


def _figures(out: Path, name: str) -> list[str]:
    d = out / name
    return sorted(p.relative_to(out).as_posix() for p in d.rglob("*.png")) if d.exists() else []


_LEGEND = ("Status: a seeded claim holds only when its 95% interval over seeds lies on the claimed side of the "
           "rule's threshold, does not hold when it lies on the other side, and is inconclusive otherwise; exact "
           "claims use tolerances; rows true by construction say so and are not counted as holds. Source: "
           "*paper* = the paper's statement in its setting; *reconstruction* = the setting, loss or construction "
           "is the project's own.")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: dict[str, Any], out: Path) -> str:
    rows = claim_rows(summary)
    lines = ["# jalign reproduction report", "",
             f"Settings: {summary.get('settings_label') or ('quick (CPU defaults)' if summary.get('quick', True) else 'full (paper-sized)')}.",
             "", _summary_line(rows), "", _LEGEND, ""]
    lines += ["| reproduction | paper | claim | source | measured | evidence | status |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["reproduction"], r["paper"], r["claim"], r["source"], r["measured"], r["evidence"],
                 _ICON[r["status"]]]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    if summary.get("missing"):
        lines += ["", "Not implemented yet: " + ", ".join(sorted(summary["missing"])) + "."]
    lines += ["", "## Figures", ""]
    for name in sorted(summary.get("reproductions", {})):
        for f in _figures(out, name):
            lines.append(f"- [{f}]({f})")
    return "\n".join(lines) + "\n"


def render_html(summary: dict[str, Any], out: Path) -> str:
    e = html.escape
    rows_ = claim_rows(summary)
    rows = "".join(
        f"<tr><td>{e(r['reproduction'])}</td><td>{e(r['paper'])}</td><td>{e(r['claim'])}</td>"
        f"<td>{e(r['source'])}</td><td>{e(r['measured'])}</td><td>{e(r['evidence'])}</td>"
        f"<td class='{e(r['status'].replace(' ', '-'))}'>{e(_ICON[r['status']])}</td></tr>"
        for r in rows_
    )
    figs = "".join(
        f"<figure><img src='{e(f)}' width='480'><figcaption>{e(f)}</figcaption></figure>"
        for name in sorted(summary.get("reproductions", {})) for f in _figures(out, name)
    )
    missing = ""
    if summary.get("missing"):
        missing = "<p>Not implemented yet: " + e(", ".join(sorted(summary["missing"]))) + ".</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>jalign reproduction report</title>"
        "<style>body{font-family:sans-serif;max-width:1300px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}.holds{color:#2a7}"
        ".does-not-hold{color:#c33}.inconclusive{color:#b80}.by-construction{color:#777}"
        "figure{display:inline-block;margin:8px}</style></head><body>"
        f"<h1>jalign reproduction report</h1><p>{e(_summary_line(rows_))}</p><p>{e(_LEGEND)}</p>"
        "<table><tr><th>reproduction</th><th>paper</th><th>claim</th><th>source</th>"
        f"<th>measured</th><th>evidence</th><th>status</th></tr>{rows}</table>{missing}<h2>Figures</h2>{figs}"
        "</body></html>\n"
    )


MEDIUM_LABEL = "medium (between the CPU defaults and the paper-sized settings; see the reproduction's docs)"


def summary_from_results(out: Path, names: list[str]) -> dict[str, Any]:
    """A run summary rebuilt from saved ``out/NAME/results.json`` files (no reproduction is run); a name
    without results is reported as failed with the reason."""
    summary: dict[str, Any] = {"quick": True, "reproductions": {}, "missing": {}}
    for name in names:
        path = Path(out) / name / "results.json"
        if not path.is_file():
            summary["reproductions"][name] = {"status": "failed", "error": f"no results: {path} does not exist"}
            continue
        import json

        try:
            res = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            summary["reproductions"][name] = {"status": "failed", "error": f"{path}: not valid JSON ({e})"}
            continue
        quick = res.get("quick", (res.get("config") or {}).get("quick", True))
        summary["quick"] = summary["quick"] and bool(quick)
        if res.get("size") == "medium":
            summary["settings_label"] = MEDIUM_LABEL
        summary["reproductions"][name] = {"status": "ok", "claims": res.get("claims", [])}
    return summary


def write_report(summary: dict[str, Any], out: Path) -> list[Path]:
    """Write ``out/report.md`` and ``out/report.html`` atomically (temp file, then rename)."""
    paths = []
    for name, text in (("report.md", render_markdown(summary, out)), ("report.html", render_html(summary, out))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)
        paths.append(out / name)
    return paths


def verdicts_at_scale(base: Path, larger, names: list[str], *, statuses=("does not hold",),
                      changed: bool = True) -> list[dict[str, Any]]:
    """The claims of the runs under ``base`` whose status is in ``statuses`` (and, with ``changed``, every claim
    whose status differs in the larger run), each next to the same claim (same reproduction, same claim text up
    to its numbers, which may state the run's size) in the larger run under ``larger`` (e.g. ``figures`` and
    ``figures/full``).

    ``larger`` is a directory or a sequence of them (e.g. ``[figures/full, figures/medium]``): a claim's larger
    run is the one in the first directory whose run of the reproduction has the claim (so a bandit half run at
    ``--full --no-lm`` and a small-LM half run at ``--medium`` each answer for their own claims).

    Returns one dict per such claim: ``name``, ``claim``, ``base_status``, ``base_measured``, and
    ``larger_status`` / ``larger_measured`` / ``larger_size`` (the larger run's directory name, e.g. ``"full"``;
    all ``None`` when the larger run does not have the claim, e.g. a part that was not run at a larger size).
    Reads only the saved ``results.json`` files.
    """
    import json
    import re

    roots = [Path(larger)] if isinstance(larger, (str, Path)) else [Path(r) for r in larger]

    def load(root: Path, name: str) -> list[dict[str, Any]]:
        path = Path(root) / name / "results.json"
        return json.loads(path.read_text()).get("claims", []) if path.is_file() else []

    def key(text: str) -> str:  # the claim without its numbers (a size in the text, e.g. "20 Adam steps")
        return re.sub(r"\d+(\.\d+)?", "#", text)

    rows = []
    for name in names:
        larger_by_text = [(root, {key(c["claim"]): c for c in load(root, name)}) for root in roots]
        for c in load(base, name):
            root, other = next(((r, by[key(c["claim"])]) for r, by in larger_by_text if key(c["claim"]) in by),
                               (None, None))
            if c["status"] not in statuses and not (changed and other and other["status"] != c["status"]):
                continue
            rows.append({"name": name, "claim": c["claim"], "base_status": c["status"], "base_measured": c["measured"],
                         "larger_status": other["status"] if other else None,
                         "larger_measured": other["measured"] if other else None,
                         "larger_size": root.name if other else None})
    return rows


def render_verdicts_at_scale(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`verdicts_at_scale`'s rows: reproduction, claim, the two statuses ("not run" where
    the larger run lacks the claim; the larger run's size in parentheses where it is not ``full``)."""
    lines = ["| reproduction | claim | quick | larger run |", "|---|---|---|---|"]
    for r in rows:
        larger = _ICON[r["larger_status"]] if r["larger_status"] else "not run"
        if r["larger_status"] and r.get("larger_size") not in (None, "full"):
            larger += f" ({r['larger_size']})"
        lines.append(f"| `{r['name']}` | {_md_cell(r['claim'])} | {_ICON[r['base_status']]} | {larger} |")
    return "\n".join(lines)

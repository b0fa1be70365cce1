"""The claims report of `jalign reproduce all`: Markdown and HTML from the run summary (JSON)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

STATUSES = ("holds", "does not hold", "not reproducible here")
_ICON = {"holds": "✅ holds", "does not hold": "❌ does not hold", "not reproducible here": "⚪ not reproducible here"}


def claim_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, rep in sorted(summary.get("reproductions", {}).items()):
        if rep.get("status") != "ok":
            rows.append({"reproduction": name, "paper": "", "claim": "(reproduction failed)",
                         "measured": rep.get("error", ""), "status": "not reproducible here"})
            continue
        for c in rep.get("claims", []):
            status = str(c.get("status", ""))
            if status not in STATUSES:
                raise ValueError(f"reproduction {name!r}: claim status {status!r} not in {STATUSES}")
            rows.append({"reproduction": name, "paper": str(c.get("paper", "")), "claim": str(c.get("claim", "")),
                         "measured": str(c.get("measured", "")), "status": status})
    return rows


def _figures(out: Path, name: str) -> list[str]:
    d = out / name
    return sorted(p.relative_to(out).as_posix() for p in d.rglob("*.png")) if d.exists() else []


def render_markdown(summary: dict[str, Any], out: Path) -> str:
    lines = ["# jalign reproduction report", "",
             f"Settings: {'quick (CPU defaults)' if summary.get('quick', True) else 'full (paper-sized)'}.", ""]
    rows = claim_rows(summary)
    lines += ["| reproduction | paper | claim | measured | status |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r["reproduction"], r["paper"], r["claim"], r["measured"], _ICON[r["status"]]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    if summary.get("missing"):
        lines += ["", "Not implemented yet: " + ", ".join(sorted(summary["missing"])) + "."]
    lines += ["", "## Figures", ""]
    for name in sorted(summary.get("reproductions", {})):
        for f in _figures(out, name):
            lines.append(f"- [{f}]({f})")
    return "\n".join(lines) + "\n"


def render_html(summary: dict[str, Any], out: Path) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['reproduction'])}</td><td>{e(r['paper'])}</td><td>{e(r['claim'])}</td>"
        f"<td>{e(r['measured'])}</td><td class='{e(r['status'].replace(' ', '-'))}'>{e(_ICON[r['status']])}</td></tr>"
        for r in claim_rows(summary)
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
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}.holds{color:#2a7}"
        ".does-not-hold{color:#c33}figure{display:inline-block;margin:8px}</style></head><body>"
        "<h1>jalign reproduction report</h1><table><tr><th>reproduction</th><th>paper</th><th>claim</th>"
        f"<th>measured</th><th>status</th></tr>{rows}</table>{missing}<h2>Figures</h2>{figs}</body></html>\n"
    )


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
        summary["quick"] = summary["quick"] and bool(res.get("quick", True))
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

"""The committed larger runs under ``figures/full/`` and ``figures/medium/``: well-formed claims at those settings,
their reports, and the quick-vs-larger verdict table that docs/reproductions.md and the README quote (read from
the results files)."""

import json
import re
from pathlib import Path

import pytest

from jalign.reporting import (
    MIN_SEEDS,
    check_claim,
    claim_rows,
    render_verdicts_at_scale,
    status_counts,
    summary_from_results,
    verdicts_at_scale,
)

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "figures" / "full"
MEDIUM = ROOT / "figures" / "medium"
NAMES = sorted(d.name for d in FULL.iterdir() if (d / "results.json").is_file())
MEDIUM_NAMES = sorted(d.name for d in MEDIUM.iterdir() if (d / "results.json").is_file())


def _res(name):
    return json.loads((FULL / name / "results.json").read_text())


def test_there_are_full_runs():
    assert {"copg-bandit", "preference-games", "rankings"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_full_run_is_at_full_settings_with_well_formed_claims(name):
    res = _res(name)
    assert res.get("quick", (res.get("config") or {}).get("quick")) is False
    assert "seconds" in res  # the wall time the docs quote
    for i, c in enumerate(res["claims"]):
        check_claim(c, f"full {name} claim {i}")
        ev = c["evidence"]
        if ev["kind"] == "seeds" and c["status"] in ("holds", "does not hold"):
            assert ev["seeds"] >= MIN_SEEDS and ev["interval"] is not None


@pytest.mark.parametrize("root,names,settings", [
    (FULL, NAMES, "Settings: full (paper-sized)."),
    (MEDIUM, MEDIUM_NAMES, "Settings: medium (between the CPU defaults"),
], ids=["full", "medium"])
def test_larger_run_report_is_built_from_its_results(root, names, settings):
    summary = summary_from_results(root, names)
    counts = status_counts(claim_rows(summary))
    text = (root / "report.md").read_text(encoding="utf-8")
    assert f"{sum(counts.values())} claims: " in text
    for status, n in counts.items():
        assert f"{n} {status}" in text, (status, n)
    assert settings in text


def _table():
    names = sorted(d.name for d in (ROOT / "figures").iterdir() if (d / "results.json").is_file())
    return verdicts_at_scale(ROOT / "figures", [FULL, MEDIUM], names)


def test_docs_and_readme_quote_the_quick_vs_full_verdicts():
    rows = _table()
    assert rows and all(r["base_status"] != r["larger_status"] or r["base_status"] == "does not hold" for r in rows)
    table = render_verdicts_at_scale(rows)
    for doc in ("docs/reproductions.md", "README.md"):
        assert table in (ROOT / doc).read_text(encoding="utf-8"), f"{doc}: the verdict table differs from figures/"


@pytest.mark.parametrize("root,names,marker", [(FULL, NAMES, "full-timings"), (MEDIUM, MEDIUM_NAMES, "medium-timings")],
                         ids=["full", "medium"])
def test_docs_quote_the_larger_runs_wall_times(root, names, marker):
    text = (ROOT / "docs" / "reproductions.md").read_text(encoding="utf-8")
    block = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", text, re.S).group(1)
    quoted = dict(re.findall(r"`([a-z][a-z-]+)` (\d+) s", block))
    assert sorted(quoted) == names
    for name, secs in quoted.items():
        s = json.loads((root / name / "results.json").read_text())["seconds"]
        s = s["total"] if isinstance(s, dict) else s
        assert abs(int(secs) - s) <= 0.5, (name, secs, s)


def test_there_are_medium_runs_of_the_small_lm_parts():
    assert {"entanglement", "fdpg", "rankings"} <= set(MEDIUM_NAMES)
    # rankings: the bandit half at --full (figures/full), the small-LM half at --medium; each answers for its claims
    rows = {r["claim"]: r for r in _table()}
    sizes = {r["larger_size"] for c, r in rows.items() if c.startswith("[small LM]") and r["name"] == "rankings"}
    assert sizes == {"medium"}


@pytest.mark.parametrize("name", MEDIUM_NAMES)
def test_medium_run_is_at_the_modules_medium_settings_with_well_formed_claims(name):
    import paper_repro

    res = json.loads((MEDIUM / name / "results.json").read_text())
    assert res["size"] == "medium" and res["quick"] is False and "seconds" in res
    module = paper_repro.registry()[name]
    if name == "entanglement":
        cfg = module._settings(False, medium=True)
        assert res["settings"] == {k: v for k, v in cfg.items() if k != "runs"}
        assert sorted((r["variant"], r["loss"], r["mitigation"]) for r in res["lm"]["runs"]) == sorted(cfg["runs"])
        assert all(len(r["seeds"]) == cfg["seeds"] == 5 for r in res["lm"]["runs"])
    elif name == "fdpg":
        assert {k: v for k, v in res["lm"]["setup"].items() if k in module.LM_MEDIUM} == module.LM_MEDIUM
    elif name in ("rankings", "maxmin"):
        cfg = module.lm_settings(False, medium=True)
        assert {k: res["lm"]["config"][k] for k in cfg} == cfg and cfg["seeds"] == 5
    elif name == "ches":
        cfg = module.settings(False, medium=True)
        assert res["settings"] == cfg and cfg["seeds"] == cfg["set_seeds"] == 5
    for i, c in enumerate(res["claims"]):
        check_claim(c, f"medium {name} claim {i}")
    lm_seeded = [c for c in res["claims"]  # every CHES claim is on the small LM
                 if (name == "ches" or "LM" in c["claim"]) and c["evidence"]["kind"] == "seeds"]
    assert lm_seeded and all(c["evidence"]["seeds"] >= 5 for c in lm_seeded), name


_TRIPLE = r"([+−-]?\d+(?:\.\d+)?) \[([+−-]?\d+(?:\.\d+)?), ([+−-]?\d+(?:\.\d+)?)\]"


def _triples(text):
    f = lambda x: float(x.replace("−", "-"))
    return [tuple(f(x) for x in m) for m in re.findall(_TRIPLE, text)]


def test_larger_runs_section_quotes_intervals_of_committed_claims():
    """Every "estimate [lo, hi]" in docs/reproductions.md's larger-runs section is the interval of a committed claim
    (quick, full or medium run; as printed, or negated), to the printed digits."""
    text = (ROOT / "docs" / "reproductions.md").read_text(encoding="utf-8")
    start = text.index("## Larger runs")
    section = text[start:text.index("\n## ", start + 1)]
    saved = []
    for root in (ROOT / "figures", FULL, MEDIUM):
        for path in root.glob("*/results.json"):
            saved += [t for c in json.loads(path.read_text())["claims"] for t in _triples(c["measured"])]
    saved += [(-m, -hi, -lo) for m, lo, hi in saved]
    quoted = _triples(section)
    assert len(quoted) >= 10
    for q in quoted:
        tol = [max(0.006, 0.002 * abs(x)) for x in q]
        assert any(all(abs(a - b) <= t for a, b, t in zip(q, s, tol, strict=True)) for s in saved), q

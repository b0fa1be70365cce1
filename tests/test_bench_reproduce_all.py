"""bench.reproduce_all: the end-to-end timing of ``jalign reproduce all --quick`` and its comparison with the
committed figures (synthetic runs here; the committed result is checked against what README quotes)."""

import json
from pathlib import Path

from bench.reproduce_all import compare_claims, evidence_ok, same_results, summarise
from jalign.reporting import evidence


def _claim(text, status, measured, ev=None):
    return {"paper": "P", "claim": text, "status": status, "measured": measured,
            "evidence": ev or evidence("exact", rule="r", estimate=0.0)}


def test_evidence_ok_needs_three_seeds_and_an_interval_unless_nothing_was_estimated():
    seeds = lambda n, est, iv: evidence("seeds", rule="r", seeds=n, estimate=est, interval=iv)
    assert evidence_ok(_claim("a", "holds", "m", seeds(3, 1.0, (0.5, 1.5))))
    assert not evidence_ok(_claim("a", "inconclusive", "m", seeds(2, 1.0, (0.5, 1.5))))  # too few seeds
    assert not evidence_ok(_claim("a", "inconclusive", "m", seeds(3, 1.0, None)))  # an estimate without interval
    assert evidence_ok(_claim("a", "inconclusive", "no wide pairs", seeds(3, None, None)))  # nothing to estimate
    assert not evidence_ok(_claim("a", "holds", "m", seeds(3, None, None)))
    assert not evidence_ok({"claim": "bare", "status": "holds"})


def test_compare_claims_counts_same_status_and_same_numbers_by_claim_text():
    committed = [_claim("a", "holds", "1.00"), _claim("b", "inconclusive", "0.5 [0.1, 0.9]"),
                 _claim("c", "does not hold", "x")]
    fresh = [_claim("b", "inconclusive", "0.6 [0.2, 1.0]"), _claim("a", "holds", "1.00"),
             _claim("new", "holds", "2"), _claim("c", "holds", "x")]
    assert compare_claims(fresh, committed) == {"claims": 4, "with_evidence": 4, "same_status": 2, "same_measured": 2,
                                                "committed_claims": 3}


def test_summarise_adds_up_the_parts_and_keeps_failures(tmp_path: Path):
    run, committed = tmp_path / "run", tmp_path / "figures"
    (committed / "x").mkdir(parents=True)
    (committed / "x" / "results.json").write_text(json.dumps({"claims": [_claim("a", "holds", "1")]}))
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"quick": True, "reproductions": {
        "x": {"status": "ok", "seconds": 12.5, "claims": [_claim("a", "holds", "1")]},
        "y": {"status": "failed", "error": "boom"},
        "z": {"status": "ok", "seconds": 7.5, "claims": [_claim("q", "holds", "1")]}}}))
    res = summarise(run, 21.04, jobs=1, committed=committed)
    rows = {r["reproduction"]: r for r in res["rows"]}
    assert rows["x"] == {"reproduction": "x", "status": "ok", "seconds": 12.5, "claims": 1, "with_evidence": 1,
                         "same_status": 1, "same_measured": 1, "committed_claims": 1}
    assert rows["y"] == {"reproduction": "y", "status": "failed", "seconds": None}
    assert rows["z"] == {"reproduction": "z", "status": "ok", "seconds": 7.5}  # nothing committed to compare
    total = rows["all (the command's wall time)"]
    assert (total["seconds"], total["claims"], total["same_status"]) == (21.0, 1, 1)
    assert res["sum_of_parts_s"] == 20.0 and res["wall_s"] == 21.0 and len(res["load_average"]) == 3
    assert res["settings"] == {"jobs": 1, "jobs_option": 1, "cache": "temporary (the default)", "quick": True}
    assert res["description"].startswith("`jalign reproduce all --quick --jobs 1` end to end")


def test_result_names_and_command_lines_follow_the_options():
    from bench.reproduce_all import command, result_name

    assert [result_name(*a) for a in (("auto", None), (1, None), (2, "none"), (1, "none"), ("auto", "none"))] == [
        "reproduce_all_default", "reproduce_all", "reproduce_all_jobs2_nocache", "reproduce_all_nocache",
        "reproduce_all_jobsauto_nocache"]
    assert command("auto", None) == "jalign reproduce all --quick"
    assert command(2, "none") == "jalign reproduce all --quick --jobs 2 --cache none"


def test_readme_quotes_the_committed_end_to_end_run():
    import re

    root = Path(__file__).resolve().parents[1]
    res = json.loads((root / "bench" / "results" / "reproduce_all_nocache.json").read_text())
    total = res["rows"][-1]
    assert total["reproduction"].startswith("all") and res["settings"]["jobs"] == 1 and res["settings"]["cache"] == "none"
    text = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    quoted = re.search(r"<!-- e2e -->(.*?)<!-- /e2e -->", text).group(1)
    assert quoted == (f"{res['wall_s'] / 60:.1f} min end to end; all {total['claims']} claims came out with their "
                      f"evidence and the committed status, {total['same_measured']} with the committed numbers to "
                      "the printed digits")
    assert total["claims"] == total["with_evidence"] == total["same_status"] == total["committed_claims"]
    with_lm = {"ches", "dpa-logic", "entanglement", "fdpg", "maxmin", "rankings", "reward-transforms"}
    lm_s = sum(r["seconds"] for r in res["rows"] if r["reproduction"] in with_lm)
    assert re.search(r"<!-- e2e-lm -->(.*?)<!-- /e2e-lm -->", text).group(1) == f"{lm_s / 60:.1f} min"
    assert len([r for r in res["rows"] if r["reproduction"] in with_lm]) == len(with_lm)


def test_docs_quote_the_fresh_runs_differences_from_the_committed_figures():
    """docs/reproductions.md ("Determinism and drift") names the claims whose numbers a fresh run did not repeat
    and quotes one of them; both numbers come from the bench result."""
    root = Path(__file__).resolve().parents[1]
    res = json.loads((root / "bench" / "results" / "reproduce_all_nocache.json").read_text())
    diffs = res["differences"]
    total = res["rows"][-1]
    assert len(diffs) == total["claims"] - total["same_measured"] == 5
    assert sorted({d["reproduction"] for d in diffs}) == ["infalign", "rankings"]
    assert all(d["status"] == d["committed_status"] for d in diffs)
    text = " ".join((root / "docs" / "reproductions.md").read_text(encoding="utf-8").split())
    assert (f"gave all {total['claims']} claims their committed status and {total['same_measured']} of them the "
            "committed `measured` text") in text
    held = next(d for d in diffs if "held-out" in d["claim"])
    fresh, committed = "0.104 [0.082, 0.127]", "0.099 [0.069, 0.129]"
    assert "β = 0.3: idealised 0.992, DPO 0.888" in held["measured"] and f"gap {fresh}" in held["measured"]
    assert f"gap {committed}" in held["committed_measured"]
    assert f"at β = 0.3, {fresh} against the committed {committed}" in text
    assert sorted(d["reproduction"] for d in diffs if "[small LM]" in d["claim"]) == ["rankings"] * 3


def test_docs_quote_the_parallel_run_against_the_sequential_one():
    import re

    root = Path(__file__).resolve().parents[1]
    seq = json.loads((root / "bench" / "results" / "reproduce_all_nocache.json").read_text())
    par = json.loads((root / "bench" / "results" / "reproduce_all_jobs2_nocache.json").read_text())
    assert par["settings"]["jobs"] == 2 and par["settings"]["cache"] == "none"
    total = par["rows"][-1]
    assert total["claims"] == total["with_evidence"] == total["same_status"] == total["committed_claims"]
    ts, tp = seq["wall_s"] / 60, par["wall_s"] / 60
    doc = " ".join((root / "docs" / "reproductions.md").read_text(encoding="utf-8").split())
    assert re.search(r"<!-- e2e-times -->(.*?)<!-- /e2e-times -->", doc).group(1) == (
        f"{ts:.1f} min one reproduction after the other, {tp:.1f} min with `--jobs 2` (×{ts / tp:.2f})")
    assert re.search(r"<!-- e2e-jobs2-claims -->(.*?)<!-- /e2e-jobs2-claims -->", doc).group(1) == (
        f"all {total['claims']} claims came out with their evidence and the committed status, "
        f"{total['same_measured']} with the committed numbers")
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    assert re.search(r"<!-- e2e-jobs2 -->(.*?)<!-- /e2e-jobs2 -->", readme).group(1) == f"{tp:.1f} min"
    # the parallel run schedules the longest first and still runs every reproduction once
    assert sorted(r["reproduction"] for r in par["rows"][:-1]) == sorted(r["reproduction"] for r in seq["rows"][:-1])


def test_same_results_ignores_wall_times_only(tmp_path: Path):
    def write(run, res):
        (tmp_path / run / "x").mkdir(parents=True)
        (tmp_path / run / "x" / "results.json").write_text(json.dumps(res))

    base = {"seconds": 1.0, "lm": {"wall_s": {"sft": 2.0}, "curve": [1.0, 2.0]}, "claims": [_claim("a", "holds", "1")]}
    write("a", base)
    write("b", {**base, "seconds": 9.0, "lm": {"wall_s": {"sft": 7.0}, "curve": [1.0, 2.0]}})
    write("c", {**base, "lm": {"wall_s": {"sft": 2.0}, "curve": [1.0, 2.0000001]}})
    assert same_results(tmp_path / "a", tmp_path / "b", "x")
    assert not same_results(tmp_path / "a", tmp_path / "c", "x")


def test_the_parallel_run_saved_the_sequential_runs_results():
    root = Path(__file__).resolve().parents[1]
    par = json.loads((root / "bench" / "results" / "reproduce_all_jobs2_nocache.json").read_text())
    seq = {r["reproduction"]: r["seconds"] for r in json.loads(
        (root / "bench" / "results" / "reproduce_all_nocache.json").read_text())["rows"][:-1]}
    assert all(r["same_results_as_other_run"] is True for r in par["rows"][:-1])
    ratios = [r["seconds"] / seq[r["reproduction"]] for r in par["rows"][:-1]]
    doc = " ".join((root / "docs" / "reproductions.md").read_text(encoding="utf-8").split())
    assert f"each reproduction took {min(ratios):.1f}–{max(ratios):.1f}× its sequential time" in doc


def test_docs_quote_the_default_command_against_the_run_that_shares_nothing():
    """`jalign reproduce all --quick` with its defaults (--jobs auto, the shared cache): the wall time quoted in
    README and docs, its claims against the committed figures, and the SFT reference trained once."""
    import re

    root = Path(__file__).resolve().parents[1]
    res = json.loads((root / "bench" / "results" / "reproduce_all_default.json").read_text())
    seq = json.loads((root / "bench" / "results" / "reproduce_all_nocache.json").read_text())
    par = json.loads((root / "bench" / "results" / "reproduce_all_jobs2_nocache.json").read_text())
    assert res["settings"]["jobs_option"] == "auto" and res["settings"]["cache"] == "temporary (the default)"
    total = res["rows"][-1]
    assert total["claims"] == total["with_evidence"] == total["same_status"] == total["committed_claims"]
    td, ts, tp = res["wall_s"] / 60, seq["wall_s"] / 60, par["wall_s"] / 60
    quoted = (f"{td:.1f} min with the defaults (`--jobs auto` = {res['settings']['jobs']} here, the shared cache; "
              f"×{ts / td:.2f} against one after the other without sharing, ×{tp / td:.2f} against `--jobs 2 "
              f"--cache none`); all {total['claims']} claims with their evidence and the committed status, "
              f"{total['same_measured']} with the committed numbers")
    for path in ("README.md", "docs/reproductions.md"):
        text = " ".join((root / path).read_text(encoding="utf-8").split())
        assert re.search(r"<!-- e2e-default -->(.*?)<!-- /e2e-default -->", text).group(1) == quoted, path
    rt = {r["reproduction"]: r["seconds"] for r in res["rows"]}["reward-transforms"]
    rs = {r["reproduction"]: r["seconds"] for r in seq["rows"]}["reward-transforms"]
    doc = " ".join((root / "docs" / "reproductions.md").read_text(encoding="utf-8").split())
    assert f"took {rt:.0f} s against {rs:.0f} s in the sequential run" in doc

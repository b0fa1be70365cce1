"""bench.reproduce_all: the end-to-end timing of ``jalign reproduce all --quick`` and its comparison with the
committed figures (synthetic runs here; the committed result is checked against what README quotes)."""

import json
from pathlib import Path

from bench.reproduce_all import compare_claims, summarise


def _claim(text, status, measured):
    return {"paper": "P", "claim": text, "status": status, "measured": measured}


def test_compare_claims_counts_same_status_and_same_numbers_by_claim_text():
    committed = [_claim("a", "holds", "1.00"), _claim("b", "inconclusive", "0.5 [0.1, 0.9]"),
                 _claim("c", "does not hold", "x")]
    fresh = [_claim("b", "inconclusive", "0.6 [0.2, 1.0]"), _claim("a", "holds", "1.00"),
             _claim("new", "holds", "2"), _claim("c", "holds", "x")]
    assert compare_claims(fresh, committed) == {"claims": 4, "same_status": 2, "same_measured": 2,
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
    assert rows["x"] == {"reproduction": "x", "status": "ok", "seconds": 12.5, "claims": 1, "same_status": 1,
                         "same_measured": 1, "committed_claims": 1}
    assert rows["y"] == {"reproduction": "y", "status": "failed", "seconds": None}
    assert rows["z"] == {"reproduction": "z", "status": "ok", "seconds": 7.5}  # nothing committed to compare
    total = rows["all (the command's wall time)"]
    assert (total["seconds"], total["claims"], total["same_status"]) == (21.0, 1, 1)
    assert res["sum_of_parts_s"] == 20.0 and res["wall_s"] == 21.0 and len(res["load_average"]) == 3

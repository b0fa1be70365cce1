"""``jalign data inspect`` / ``build``: exact counts, histograms, duplicates, identical pairs, exit codes."""

import json

from jalign.cli import main
from jalign.data.summary import length_histogram


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_length_histogram_bins():
    h = length_histogram([0, 15, 16, 100, 9000])
    assert h["bins"]["0-15"] == 2 and h["bins"]["16-31"] == 1 and h["bins"]["64-127"] == 1
    assert h["bins"]["8192+"] == 1 and sum(h["bins"].values()) == 5
    assert (h["min"], h["median"], h["max"]) == (0, 16.0, 9000)


def test_inspect_json_counts(tmp_path, capsys):
    a = {"prompt": "p" * 20, "chosen": "yes", "rejected": "no", "score_chosen": 1.0, "score_rejected": 2.0}
    b = {"prompt": "p" * 20, "chosen": "other", "rejected": "no"}
    same = {"prompt": "q", "chosen": "x", "rejected": "x"}
    f = _write(tmp_path / "d.jsonl", [a, b, a, same, "not json"])
    assert main(["data", "inspect", str(f), "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert (s["format"], s["kind"], s["records"], s["invalid"]) == ("pairwise", "pairwise", 3, 2)
    assert s["duplicates"]["records"] == 1 and s["duplicates"]["records_detail"] == [
        {"line": 3, "same_as_line": 1}
    ]
    assert s["duplicates"]["repeated_prompts"] == 2
    assert s["identical_pairs"]["count"] == 1 and s["identical_pairs"]["detail"][0]["line"] == 4
    assert s["lengths"]["prompt"]["bins"]["16-31"] == 3
    assert s["lengths"]["chosen"]["min"] == 3 and s["lengths"]["chosen"]["max"] == 5
    assert s["with_scores"] == 2 and s["score_chosen_below_rejected"] == 2
    assert [(e["line"], e["field"]) for e in s["validation"]["errors"]] == [(4, "rejected"), (5, "<json>")]


def test_inspect_missing_file_and_unknown_format(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "none.jsonl")]) == 2
    f = _write(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert main(["data", "inspect", str(f), "--format", "nope"]) == 2
    assert "unknown format" in capsys.readouterr().err


def test_cli_build_refuses_then_skips(tmp_path, capsys):
    f = _write(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c", "reward": 1.0}, "{bad"])
    assert main(["data", "build", "scored", str(f), "--data-dir", str(tmp_path / "t")]) == 1
    assert "d.jsonl:2: field '<json>'" in capsys.readouterr().err
    assert main(["data", "build", "scored", str(f), "--data-dir", str(tmp_path / "t"), "--skip-invalid"]) == 0
    assert "train: 1 records, 1 invalid skipped" in capsys.readouterr().out

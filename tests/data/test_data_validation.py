"""Bad input: every case is reported with file, line and field; readers/builders refuse, or skip with a report."""

import json
import logging
import os
from pathlib import Path

import pytest

from jalign.cli import main
from jalign.data import readers
from jalign.data.io import write_jsonl
from jalign.data.schema import InvalidDataError
from jalign.data.tfds_builders import PairwiseBuilder

GOOD = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}


def _write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _good() -> bytes:
    return json.dumps(GOOD).encode()


# (name, bad line as bytes, expected field, extra read kwargs)
CASES = [
    ("malformed_json", b'{"prompt": "Q?", "chosen": "yes", ', "<json>", {}),
    ("missing_field", json.dumps({"prompt": "Q?", "chosen": "yes"}).encode(), "rejected", {}),
    ("empty_chosen", json.dumps({"prompt": "Q?", "chosen": "", "rejected": "no"}).encode(), "chosen", {}),
    ("blank_chosen", json.dumps({"prompt": "Q?", "chosen": " \n", "rejected": "no"}).encode(), "chosen", {}),
    ("identical", json.dumps({"prompt": "Q?", "chosen": "same", "rejected": "same"}).encode(), "rejected", {}),
    ("non_utf8", b'{"prompt": "Q\xff\xfe?", "chosen": "yes", "rejected": "no"}', "<bytes>", {}),
    ("overlong_prompt", json.dumps({"prompt": "x" * 11, "chosen": "a", "rejected": "b"}).encode(), "prompt",
     {"max_prompt_chars": 10}),
    ("nan_score", b'{"prompt": "Q?", "chosen": "a", "rejected": "b", "score_chosen": NaN, "score_rejected": 1}',
     "score_chosen", {}),
    ("inf_score", b'{"prompt": "Q?", "chosen": "a", "rejected": "b", "score_chosen": 1, "score_rejected": -Infinity}',
     "score_rejected", {}),
    ("string_prompt_required", json.dumps({"prompt": 3, "chosen": "a", "rejected": "b"}).encode(), "prompt", {}),
]  # fmt: skip


@pytest.mark.parametrize("name,bad,field,kw", CASES, ids=[c[0] for c in CASES])
def test_bad_record_is_reported_and_refused(tmp_path, name, bad, field, kw):
    f = _write_lines(tmp_path / f"{name}.jsonl", [_good(), bad, _good()])
    _, rep = readers.read_with_lines(f, format="pairwise", **kw)
    assert [(e.path, e.line, e.field) for e in rep.errors] == [(str(f), 2, field)]
    assert rep.n_records == 2 and rep.n_lines == 3
    with pytest.raises(InvalidDataError, match=rf"{name}\.jsonl:2: field '{field}'"):
        readers.read(f, format="pairwise", **kw)


@pytest.mark.parametrize("name,bad,field,kw", CASES, ids=[c[0] for c in CASES])
def test_cli_inspect_exits_nonzero_and_names_line_and_field(tmp_path, capsys, name, bad, field, kw):
    f = _write_lines(tmp_path / f"{name}.jsonl", [_good(), bad])
    argv = ["data", "inspect", str(f), "--format", "pairwise"]
    if "max_prompt_chars" in kw:
        argv += ["--max-prompt-chars", str(kw["max_prompt_chars"])]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"{f}:2: field '{field}'" in out


def test_cli_inspect_valid_file_exits_zero(tmp_path):
    f = _write_lines(tmp_path / "ok.jsonl", [_good()] * 3)
    assert main(["data", "inspect", str(f)]) == 0


@pytest.mark.parametrize(
    "row,field",
    [
        ({"prompt": "p", "completion": "c", "reward": float("nan")}, "reward"),
        ({"prompt": "p", "completion": "c", "reward": "1.0"}, "reward"),
        ({"prompt": "p", "completion": "", "reward": 1.0}, "completion"),
        ({"prompt": "p", "completion": "c", "label": "maybe"}, "label"),
        ({"prompt": "p", "completions": ["a", "b"], "scores": [1.0, float("inf")]}, "scores"),
        ({"prompt": "p", "completions": ["a", "a"], "scores": [1.0, 2.0]}, "completions[1]"),
        ({"prompt": "p", "completions": ["a", ""], "ranks": [1, 2]}, "completions[1]"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1]}, "ranks"),
        ({"prompt": "p", "completions": ["a"], "ranks": [1]}, "completions"),
    ],
)
def test_other_kinds_bad_fields(tmp_path, row, field):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps(row) + "\n")  # json.dumps writes NaN/Infinity, as Python-made files do
    _, rep = readers.read_with_lines(f)
    assert [(e.line, e.field) for e in rep.errors] == [(1, field)]


def test_skip_invalid_reports_how_many_and_which(tmp_path, caplog):
    lines = [_good(), b"{oops", json.dumps({"prompt": "p", "chosen": "x", "rejected": "x"}).encode(), _good()]
    f = _write_lines(tmp_path / "mixed.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        recs, rep = readers.read(f, skip_invalid=True)
    assert len(recs) == 2 and rep.n_invalid == 2
    assert [(e.line, e.field) for e in rep.errors] == [(2, "<json>"), (3, "rejected")]
    assert "skipped 2 invalid record(s)" in caplog.text and "mixed.jsonl:3" in caplog.text


def _files_under(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def test_builder_refuses_invalid_file_and_writes_nothing(tmp_path):
    f = _write_lines(tmp_path / "bad.jsonl", [_good(), b'{"prompt": "p", "chosen": "a"}'])
    data_dir = tmp_path / "tfds"
    b = PairwiseBuilder(path=f, data_dir=data_dir)
    with pytest.raises(InvalidDataError, match=r"bad\.jsonl:2: field 'rejected': missing"):
        b.download_and_prepare()
    assert _files_under(data_dir) == []


def test_builder_skip_invalid_keeps_report(tmp_path):
    f = _write_lines(tmp_path / "bad.jsonl", [_good(), b"\xff", _good()])
    b = PairwiseBuilder(path=f, data_dir=tmp_path / "tfds", skip_invalid=True)
    b.download_and_prepare()
    assert len(b.as_data_source()["train"]) == 2
    saved = json.loads((Path(b.data_dir) / "jalign_validation.json").read_text())
    assert saved["train"]["n_invalid"] == 1 and saved["train"]["errors"][0]["line"] == 2
    assert saved["train"]["errors"][0]["field"] == "<bytes>"


def test_atomic_write_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out.jsonl"
    rows = [GOOD, {"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": float("nan")}]
    with pytest.raises(ValueError):
        write_jsonl(rows, out)  # NaN is refused half-way through
    assert list(tmp_path.iterdir()) == []
    write_jsonl([GOOD], out)
    with pytest.raises(ValueError):
        write_jsonl(rows, out)
    assert out.read_text() == json.dumps(GOOD) + "\n" and list(tmp_path.iterdir()) == [out]

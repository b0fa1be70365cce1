"""Issue #25 item 5: a lone surrogate escape is invalid in `data inspect` and in training alike."""

from __future__ import annotations

import json

import pytest
from _rel_helpers import tiny_cfg

from jalign.cli import main
from jalign.data import readers
from jalign.data.schema import InvalidDataError
from jalign.train import train

GOOD = [{"prompt": f"Q{i}:", "chosen": f" good {i}.", "rejected": f" bad {i}."} for i in range(8)]


def _write(path, rows):
    # json.dumps writes "\ud800" as the escape itself (ensure_ascii), which is how such files look
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows():
    bad_resp = {"prompt": "Q:", "chosen": " ok \ud800 then", "rejected": " no."}  # line 3
    bad_prompt = {"prompt": "Q\udfff:", "chosen": " a.", "rejected": " b."}  # line 6
    return GOOD[:2] + [bad_resp] + GOOD[2:4] + [bad_prompt] + GOOD[4:]


def test_lone_surrogate_is_an_invalid_record_with_file_line_field(tmp_path):
    path = tmp_path / "sur.jsonl"
    _write(path, _rows())
    assert "\\ud800" in path.read_text()
    with pytest.raises(InvalidDataError) as ei:
        readers.read(path)
    errs = [(e.line, e.field) for e in ei.value.errors]
    assert errs == [(3, "chosen"), (6, "prompt")]
    assert f"{path}:3: field 'chosen': lone surrogate U+D800 at character 4 (not encodable as UTF-8)" in str(
        ei.value)
    recs, report = readers.read(path, skip_invalid=True)
    assert len(recs) == 8 and report.n_invalid == 2 and report.n_lines == 10


def test_listwise_completion_with_surrogate(tmp_path):
    path = tmp_path / "lw.jsonl"
    rows = [{"prompt": "Q:", "completions": [" a", " b\udc80"], "scores": [1.0, 0.0]}]
    _write(path, rows)
    _, report = readers.read_with_lines(path)
    assert [(e.line, e.field) for e in report.errors] == [(1, "completions[1]")]


def test_inspect_and_training_agree(tmp_path, capsys):
    path = tmp_path / "sur.jsonl"
    _write(path, _rows())
    assert main(["data", "inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "8 valid, 2 invalid" in out and f"INVALID {path}:3: field 'chosen': lone surrogate" in out
    cfg = tiny_cfg(data__name="file_pairwise", train__steps=1, data__kwargs=dict(path=str(path)))
    with pytest.raises(InvalidDataError, match=rf"{path}:6: field 'prompt': lone surrogate U\+DFFF"):
        train(cfg)
    cfg.data.kwargs.skip_invalid = True
    assert train(cfg).final_step == 1

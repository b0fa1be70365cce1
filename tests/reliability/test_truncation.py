"""Issue #25 item 3: truncation is measured before training; pairs it makes identical are refused/dropped."""

from __future__ import annotations

import json
import logging

import pytest
from _rel_helpers import tiny_cfg

from jalign.cli import main
from jalign.data.pipeline import measure_truncation
from jalign.data.schema import InvalidDataError
from jalign.errors import UserError
from jalign.tokenizers import ByteTokenizer
from jalign.train import train

SHARED = "A" * 112  # the pairs differ only after 112 bytes


def _write(path, n_bad, n_good):
    rows = []
    for i in range(n_bad):
        rows.append({"prompt": f"Q{i}:", "chosen": SHARED + " yes.", "rejected": SHARED + f" no{i}."})
    for i in range(n_good):
        rows.append({"prompt": f"Q{i}:", "chosen": f" good {i}.", "rejected": f" bad {i}."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _expected(rows, budget):
    """Independent count: byte tokens of a response = its UTF-8 bytes + EOS; cut = tokens - budget."""
    cuts = [len(r[f].encode()) + 1 - budget for r in rows for f in ("chosen", "rejected")]
    cuts = [c for c in cuts if c > 0]
    return len(cuts), sum(cuts), max(cuts)


def _cfg(path, **kwargs):
    return tiny_cfg(data__name="file_pairwise", data__seq_len=96,
                    data__kwargs=dict(path=str(path), max_prompt_len=32, **kwargs))


def test_pairs_identical_after_truncation_are_refused_with_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    _write(path, 32, 0)
    with pytest.raises(InvalidDataError) as ei:
        train(_cfg(path))
    assert isinstance(ei.value, UserError) and len(ei.value.errors) == 32
    assert [e.line for e in ei.value.errors] == list(range(1, 33))
    assert (f"{path}:1: field 'rejected': identical to 'chosen' after truncation to 64 response tokens"
            in str(ei.value))


def test_skip_invalid_drops_and_counts_and_the_summary_is_logged(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    rows = _write(path, 16, 16)
    n, total, mx = _expected(rows, 64)
    assert n == 32 and mx == 112 + 6 + 1 - 64  # " no10." (6 bytes) + EOS is the longest
    with caplog.at_level(logging.INFO):
        res = train(_cfg(path, skip_invalid=True))
    assert res.final_step == 4
    msgs = [r.getMessage() for r in caplog.records]
    summary = [m for m in msgs if m.startswith(f"{path}: truncation:")]
    assert summary == [f"{path}: truncation: {n} of 64 responses (50.0%) cut to 64 tokens (by {total / n:.1f} "
                       f"tokens on average, at most {mx}); 0 of 32 prompts cut to 32 tokens (from the left); "
                       "16 record(s) with responses identical after truncation"]
    dropped = [m for m in msgs if m.startswith("dropped 16 record(s)")]
    assert len(dropped) == 1 and f"{path}:16: field 'rejected'" in dropped[0]


def test_measure_truncation_counts_prompts_from_the_left():
    recs = [(7, {"prompt": "p" * 40, "chosen": "x" * 10, "rejected": "y" * 10})]
    m = measure_truncation(recs, kind="pairwise", tokenizer=ByteTokenizer(), max_prompt_len=16,
                           max_response_len=16)
    # prompt tokens: BOS + 40 bytes = 41 > 16 -> cut by 25; responses 11 tokens each fit.
    assert m["prompts_truncated"] == 1 and m["prompt_tokens_cut"]["total"] == 25
    assert m["responses_truncated"] == 0 and m["errors"] == []


def test_data_inspect_reports_the_same(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    rows = _write(path, 16, 16)
    n, total, mx = _expected(rows, 64)
    assert main(["data", "inspect", str(path)]) == 0  # no budgets given: validation only
    capsys.readouterr()
    assert main(["data", "inspect", str(path), "--seq-len", "96", "--max-prompt-len", "32"]) == 1
    out = capsys.readouterr()
    assert f"truncation: {n} of 64 responses (50.0%) cut to 64 tokens (by {total / n:.1f}" in out.out
    assert f"INVALID {path}:3: field 'rejected': identical to 'chosen' after truncation" in out.out
    assert "16 invalid record(s)" in out.err
    assert main(["data", "inspect", str(path), "--seq-len", "96", "--max-prompt-len", "32", "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    t = s["truncation"]
    assert (t["responses_truncated"], t["response_tokens_cut"]["total"], t["response_tokens_cut"]["max"]) == (n, total, mx)
    assert [e["line"] for e in t["errors"]] == list(range(1, 17)) and s["invalid"] == 16

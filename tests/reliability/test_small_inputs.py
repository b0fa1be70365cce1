"""Issue #25 item 6: too few records for a batch, checkpoint.every without a workdir, an empty data file."""

from __future__ import annotations

import json
import logging

import pytest
from _rel_helpers import ROOT, tiny_cfg

from jalign.cli import main
from jalign.errors import UserError
from jalign.train import ConfigError, load_config, train


def _cfg(path, **kwargs):
    return tiny_cfg(data__name="file_pairwise", data__batch_size=16, train__steps=2,
                    data__kwargs=dict(path=str(path), **kwargs))


def test_one_record_with_batch_16_is_refused_naming_the_file_and_counts(tmp_path, caplog):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"prompt": "Q:", "chosen": " yes.", "rejected": " no."}) + "\n")
    with pytest.raises(UserError, match=rf"^{path}: 1 pairwise record\(s\) cannot fill one batch of "
                                        r"data.batch_size=16; every batch would repeat records"):
        train(_cfg(path))
    with caplog.at_level(logging.WARNING):
        res = train(_cfg(path, allow_repeat=True))
    assert res.final_step == 2
    assert any("cannot fill one batch" in r.getMessage() and "allow_repeat=True" in r.getMessage()
               for r in caplog.records)


def test_checkpoint_every_without_workdir_is_a_config_error():
    with pytest.raises(ConfigError, match=r"checkpoint.every=5 needs a workdir"):
        load_config(ROOT / "experiments" / "dpo_tiny.py", ["checkpoint.every=5"])
    load_config(ROOT / "experiments" / "dpo_tiny.py", ["checkpoint.every=5", "workdir=/tmp/x"])
    for name in ("dpo_tiny", "sft_tiny", "dpo_small_lm", "sft_small_lm", "rloo_small_lm", "copg_small_lm"):
        assert load_config(ROOT / "experiments" / f"{name}.py").checkpoint.every == 0  # run without a workdir


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_empty_file_is_an_error_naming_the_file(tmp_path, capsys, content, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text(content)
    for fmt in (["--format", "pairwise"], []):
        assert main(["data", "inspect", str(path), *fmt]) == 2
        out, err = capsys.readouterr()
        assert f"{path}: empty data file (no records)" in err and "0 valid, 0 invalid" not in out, (out, err)
    assert main(["data", "build", "pairwise", str(path), "--format", "pairwise",
                 "--data-dir", str(tmp_path / "tfds")]) == 2
    assert f"{path}: empty data file (no records)" in capsys.readouterr().err
    with pytest.raises(UserError, match=rf"^{path}: empty data file \(no records\)$"):
        train(_cfg(path, format="pairwise"))


def test_all_records_skipped_is_not_a_build(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "Q:", "chosen": " same", "rejected": " same"}) + "\n")
    assert main(["data", "build", "pairwise", str(path), "--skip-invalid", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no valid pairwise records (1 invalid skipped); nothing to build" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--max-prompt-chars", "--max-response-chars", "--seq-len", "--max-prompt-len"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_char_and_token_limits_below_one_are_usage_errors(tmp_path, capsys, flag, value):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"prompt": "Q:", "chosen": " yes.", "rejected": " no."}) + "\n")
    with pytest.raises(SystemExit) as ei:
        main(["data", "inspect", str(path), flag, value])
    assert ei.value.code == 2
    assert f"argument {flag}: expected an integer >= 1, got {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize("arg", ["max_prompt_chars", "max_response_chars"])
def test_reader_limits_below_one_are_refused(tmp_path, arg):
    from jalign.data import readers

    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"prompt": "Q:", "chosen": " yes.", "rejected": " no."}) + "\n")
    with pytest.raises(UserError, match=rf"^{arg}=0 must be None \(no limit\) or an integer >= 1$"):
        readers.read(path, **{arg: 0})
    assert len(readers.read(path, **{arg: 5})[0]) == 1  # " yes." is 5 characters, "Q:" 2

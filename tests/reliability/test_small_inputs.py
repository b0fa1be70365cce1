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


def test_empty_file_is_not_a_success(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert main(["data", "inspect", str(path), "--format", "pairwise"]) == 1
    assert f"{path}: no records" in capsys.readouterr().err

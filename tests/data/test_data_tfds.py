"""TFDS builders: round trip of every kind through array_record/parquet, with TensorFlow absent."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jalign.data import readers
from jalign.data.tfds_builders import BUILDERS, build, decode_example

FILES = {
    "pairwise": [
        {"prompt": "p0 é", "chosen": "c0", "rejected": "r0", "score_chosen": 1.5, "score_rejected": -0.25},
        {"prompt": "p1", "chosen": "c1", "rejected": "r1"},
        {"prompt": "", "chosen": "c2 \u4e2d", "rejected": "r2"},
    ],
    "unpaired": [
        {"prompt": "p", "completion": "c", "label": True},
        {"prompt": "q", "completion": "d", "label": False},
    ],
    "listwise": [
        {"prompt": "p", "completions": ["a", "b", "c"], "scores": [0.5, 2.0, 0.5]},
        {"prompt": "q", "completions": ["x", "y"], "ranks": [2, 1]},
    ],
    "scored": [
        {"prompt": "p", "completion": "c", "reward": 0.1},
        {"prompt": "q", "completion": "d", "reward": -3.0},
    ],
}


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_tensorflow_is_not_installed_nor_imported():
    assert importlib.util.find_spec("tensorflow") is None
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("file_format", ["array_record", "parquet"])
@pytest.mark.parametrize("kind", sorted(FILES))
def test_builder_round_trip(tmp_path, kind, file_format):
    f = _write(tmp_path / f"{kind}.jsonl", FILES[kind])
    expected, _ = readers.read(f)
    b = build(kind, f, data_dir=tmp_path / "tfds", file_format=file_format)
    src = b.as_data_source()["train"]
    got = [decode_example(kind, src[i]) for i in range(len(src))]
    assert [g.pop("line") for g in got] == list(
        range(1, len(expected) + 1)
    )  # source order, line numbers kept
    f32 = lambda x: float(np.float32(x))  # scores and rewards are stored as float32
    for e in expected:
        for k in ("score_chosen", "score_rejected", "reward"):
            if k in e:
                e[k] = f32(e[k])
        if "scores" in e:
            e["scores"] = [f32(x) for x in e["scores"]]
    assert got == expected
    assert "tensorflow" not in sys.modules


def test_multi_split_and_changed_file_gets_new_directory(tmp_path):
    tr = _write(tmp_path / "train.jsonl", FILES["pairwise"])
    te = _write(tmp_path / "test.jsonl", FILES["pairwise"][:1])
    b = build("pairwise", {"train": tr, "test": te}, data_dir=tmp_path / "tfds")
    ds = b.as_data_source()
    assert len(ds["train"]) == 3 and len(ds["test"]) == 1
    # Prepared once: a second builder on the same files reuses the directory and the saved report.
    b2 = build("pairwise", {"train": tr, "test": te}, data_dir=tmp_path / "tfds")
    assert b2.data_dir == b.data_dir and b2.reports["train"]["n_records"] == 3
    _write(te, FILES["pairwise"][1:])
    b3 = build("pairwise", {"train": tr, "test": te}, data_dir=tmp_path / "tfds")
    assert b3.data_dir != b.data_dir and len(b3.as_data_source()["test"]) == 2


def test_builder_kind_must_match_format(tmp_path):
    f = _write(tmp_path / "s.jsonl", FILES["scored"])
    with pytest.raises(ValueError, match="gives scored records, not pairwise"):
        build("pairwise", f, data_dir=tmp_path / "tfds")


def test_oasst_tree_built_as_pairwise(tmp_path):
    rows = [
        {"message_id": "m", "parent_id": None, "role": "prompter", "text": "hi", "rank": None},
        {"message_id": "a", "parent_id": "m", "role": "assistant", "text": "hello", "rank": 1},
        {"message_id": "b", "parent_id": "m", "role": "assistant", "text": "hey", "rank": 0},
    ]
    b = BUILDERS["pairwise"](path=_write(tmp_path / "oa.jsonl", rows), data_dir=tmp_path / "tfds")
    b.download_and_prepare()
    src = b.as_data_source()["train"]
    rec = decode_example("pairwise", src[0])
    assert len(src) == 1 and (rec["chosen"], rec["rejected"]) == (" hey", " hello") and rec["line"] == 1
    assert Path(b.data_dir, "jalign_validation.json").exists()

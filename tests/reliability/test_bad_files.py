"""Issue #25 item 10: files that cannot be read as data or weights give one-line errors naming the file."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
from _rel_helpers import ROOT, tiny_cfg

from jalign.cli import main
from jalign.data import readers
from jalign.data.schema import InvalidDataError
from jalign.errors import FileFormatError, UserError
from jalign.models import ModelConfig, create_model, load_pretrained, save_pretrained
from jalign.train import train

ROWS = [{"prompt": f"Q{i}:", "chosen": f" good {i}.", "rejected": f" bad {i}."} for i in range(8)]
DPO_TINY = str(ROOT / "experiments" / "dpo_tiny.py")
BASE = ["train.progress=False", "train.tensorboard=False", "train.steps=1", "checkpoint.every=0"]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _one_line_error(capsys, argv, command):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def _train_cfg(path, **kw):
    return tiny_cfg(data__name="file_pairwise", train__steps=1, data__kwargs=dict(path=str(path), **kw))


# ---------------------------------------------------------------------------------------------- deep nesting
def test_a_line_nested_100k_deep_is_an_invalid_record(tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.jsonl"
    path.write_text(_jsonl(ROWS[:4]) + '{"prompt": ' + deep + ', "chosen": " a", "rejected": " b"}\n'
                    + _jsonl(ROWS[4:]))
    with pytest.raises(InvalidDataError, match=rf"{path}:5: field '<json>': JSON nested too deeply"):
        readers.read(path)
    recs, rep = readers.read(path, skip_invalid=True)
    assert len(recs) == 8 and [(e.line, e.field) for e in rep.errors] == [(5, "<json>")]
    assert main(["data", "inspect", str(path)]) == 1
    assert f"INVALID {path}:5: field '<json>': JSON nested too deeply" in capsys.readouterr().out
    with pytest.raises(InvalidDataError, match=rf"{path}:5: field '<json>': JSON nested too deeply"):
        train(_train_cfg(path))
    assert train(_train_cfg(path, skip_invalid=True)).final_step == 1
    # As the first line too (format detection must not die on it).
    path.write_text(deep + "\n" + _jsonl(ROWS))
    assert readers.detect_format(path) == "pairwise"


# ---------------------------------------------------------------------------------------------- compressed
@pytest.mark.parametrize("name", ["pairs.jsonl.gz", "pairs.jsonl", "pairs.json.gz"])
def test_gzip_files_are_named_as_compressed(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(_jsonl(ROWS).encode()))
    msg = rf"^{path}: a gzip-compressed file; jalign reads uncompressed \.jsonl, \.json and \.parquet files"
    with pytest.raises(FileFormatError, match=msg):
        readers.read(path)
    line = _one_line_error(capsys, ["data", "inspect", str(path)], "data")
    assert f"{path}: a gzip-compressed file" in line and "gunzip" in line
    with pytest.raises(UserError, match=msg):
        train(_train_cfg(path))


# ---------------------------------------------------------------------------------------------- .json layouts
def test_json_object_instead_of_a_list(tmp_path, capsys):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"version": 2, "data": ROWS}))
    with pytest.raises(FileFormatError, match=rf"^{path}: a \.json data file must hold a JSON list of records; "
                                              r"this one holds an object with keys \['data', 'version'\] "
                                              r"\(the records may be the list under 'data': save that list as the file\)"):
        readers.read(path)
    path.write_text(json.dumps(ROWS[0]))
    with pytest.raises(FileFormatError, match=r"holds an object with keys \['chosen', 'prompt', 'rejected'\] "
                                              r"\(it looks like one record: write it as a list"):
        readers.read(path, format="pairwise")
    assert "must hold a JSON list" in _one_line_error(capsys, ["data", "inspect", str(path)], "data")


def test_truncated_json_array(tmp_path, capsys):
    path = tmp_path / "cut.json"
    text = json.dumps(ROWS, indent=1)
    cut = text[: len(text) // 2]
    path.write_text(cut)
    line_no = cut.count("\n") + 1
    with pytest.raises(FileFormatError, match=rf"^{path}: truncated JSON: the file ends inside a value "
                                              rf"\(at line {line_no}, column \d+\); was it cut short\?"):
        readers.read(path)
    with pytest.raises(UserError, match="truncated JSON"):
        train(_train_cfg(path))
    assert "truncated JSON" in _one_line_error(capsys, ["data", "inspect", str(path)], "data")
    # malformed in the middle (not truncated): line and column
    path.write_text('[\n {"prompt": "Q:", "chosen": " a", "rejected": " b"},\n {"prompt" "Q:"}\n]')
    with pytest.raises(FileFormatError, match=rf"^{path}: malformed JSON at line 3, column 12: Expecting ':'"):
        readers.read(path)
    # JSON Lines saved as .json
    path.write_text(_jsonl(ROWS))
    with pytest.raises(FileFormatError, match=r"one JSON object per line \(JSON Lines\): name it \.jsonl"):
        readers.read(path)


def test_unparseable_lines_name_the_first_problem(tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_text("not json\n[1, 2]\n" + _jsonl(ROWS))
    assert readers.detect_format(path) == "pairwise"  # found at line 3
    path.write_text("not json\n" * 6 + _jsonl(ROWS))
    with pytest.raises(UserError, match=rf"^{path}: no parseable record among the first 5 lines \(line 1: "
                                        r"malformed JSON: Expecting value \(column 1\)\); pass format="):
        readers.detect_format(path)


# ---------------------------------------------------------------------------------------------- detection
def test_no_prompt_field_is_not_read_as_hh(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(_jsonl([{"question": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                            for r in ROWS]))
    with pytest.raises(UserError) as ei:
        readers.read(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:1: cannot detect the data format from fields ['chosen', 'question', 'rejected']")
    assert "no 'prompt' field" in msg and "not HH-RLHF transcripts" in msg
    assert "layouts tried: " in msg and "; pairwise (prompt, chosen, rejected);" in msg and "hh (chosen, rejected:" in msg
    assert "Assistant" not in "".join(str(e) for e in getattr(ei.value, "errors", []))
    line = _one_line_error(capsys, ["data", "inspect", str(path)], "data")
    assert "no 'prompt' field" in line
    with pytest.raises(UserError, match="no 'prompt' field"):
        train(_train_cfg(path))
    # real HH transcripts are still detected as hh
    hh = tmp_path / "hh.jsonl"
    hh.write_text(_jsonl([{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}]))
    assert readers.detect_format(hh) == "hh"


# ---------------------------------------------------------------------------------------------- model files
@pytest.fixture
def model_dir(tmp_path):
    m = create_model(ModelConfig(arch="gpt2", vocab_size=40, d_model=16, n_layers=1, n_heads=2), seed=0)
    return save_pretrained(m, tmp_path / "model")


def _first_incomplete(data: bytes, keep: int):
    """Independent reading of the safetensors layout: the tensor with the lowest offset that `keep` bytes cut."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    have = keep - 8 - n
    cut = sorted((v["data_offsets"][0], k) for k, v in header.items()
                 if k != "__metadata__" and v["data_offsets"][1] > have)
    need = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    return cut[0][1], len(cut), have, need


def test_half_truncated_safetensors_names_file_and_tensor(model_dir, capsys):
    f = model_dir / "model.safetensors"
    data = f.read_bytes()
    keep = len(data) // 2
    f.write_bytes(data[:keep])
    name, n_cut, have, need = _first_incomplete(data, keep)
    assert n_cut >= 1
    with pytest.raises(FileFormatError, match=rf"^{f}: truncated safetensors file: {have} of {need} bytes of "
                                              rf"tensor data; tensor '{name}' is incomplete \({n_cut} tensor"):
        load_pretrained(model_dir)
    line = _one_line_error(capsys, ["train", "--config", DPO_TINY, *BASE, "model.name=pretrained",
                                    f"model.kwargs.path={model_dir}"], "train")
    assert f"{f}: truncated safetensors file" in line
    f.write_bytes(data[:12])  # cut inside the header
    with pytest.raises(FileFormatError, match=rf"^{f}: truncated safetensors file: 12 bytes, the header alone "
                                              r"needs \d+"):
        load_pretrained(model_dir)


def test_non_json_config_names_its_path(model_dir, capsys):
    cfg = model_dir / "config.json"
    cfg.write_text('{"model_type": "gpt2",\n  vocab_size: 40}')
    with pytest.raises(FileFormatError, match=rf"^{cfg}: not valid JSON \(Expecting property name enclosed in "
                                              r"double quotes at line 2, column 3\)"):
        load_pretrained(model_dir)
    line = _one_line_error(capsys, ["train", "--config", DPO_TINY, *BASE, "model.name=pretrained",
                                    f"model.kwargs.path={model_dir}"], "train")
    assert f"{cfg}: not valid JSON" in line
    cfg.write_text("[1, 2]")
    with pytest.raises(FileFormatError, match=rf"^{cfg}: expected a JSON object, got list"):
        load_pretrained(model_dir)
    cfg.write_text(json.dumps({"model_type": "gpt2", "vocab_size": 40}))
    with pytest.raises(FileFormatError, match=rf"^{cfg}: missing key 'n_embd' \(model_type='gpt2'\)"):
        load_pretrained(model_dir)

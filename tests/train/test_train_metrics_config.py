"""Metric sinks (JSONL, TensorBoard event files decoded by protobuf), configs and the CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from jalign.cli import main
from jalign.train import tensorboard as tb
from jalign.train.config import ConfigError, apply_overrides, base_config, load_config
from jalign.train.metrics import MetricsLogger, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _crc32c_bitwise(data: bytes) -> int:  # independent reference: bit-at-a-time CRC-32C
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vector_and_bitwise_reference():
    assert tb.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 100):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tb.crc32c(data) == _crc32c_bitwise(data)


def _event_classes():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="ev_test.proto", package="evtest")
    T = descriptor_pb2.FieldDescriptorProto

    def msg(name, fields):
        m = f.message_type.add(name=name)
        for fname, num, typ, label, tname in fields:
            fd = m.field.add(name=fname, number=num, type=typ, label=label)
            if tname:
                fd.type_name = tname

    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    msg("Value", [("tag", 1, T.TYPE_STRING, opt, None), ("simple_value", 2, T.TYPE_FLOAT, opt, None)])
    msg("Summary", [("value", 1, T.TYPE_MESSAGE, rep, ".evtest.Value")])
    msg("Event", [("wall_time", 1, T.TYPE_DOUBLE, opt, None), ("step", 2, T.TYPE_INT64, opt, None),
                  ("file_version", 3, T.TYPE_STRING, opt, None), ("summary", 5, T.TYPE_MESSAGE, opt, ".evtest.Summary")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("evtest.Event"))


def test_jsonl_and_tensorboard_events_decode_with_protobuf(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=True)
    log.log(1, {"loss": 0.5, "rewards/accuracies": 0.25})
    log.log(2, {"loss": float("nan"), "grad_norm": 3.0})
    log.close()
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 1, "loss": 0.5, "rewards/accuracies": 0.25},
                    {"step": 2, "loss": "nan", "grad_norm": 3.0}]
    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    assert struct.unpack_from("<I", raw, 8)[0] == tb.masked_crc32c(raw[:8])
    Event = _event_classes()
    events = [Event.FromString(r) for r in tb.read_records(path)]
    assert events[0].file_version == "brain.Event:2"
    got = {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}
    assert got[(1, "loss")] == 0.5 and got[(1, "rewards/accuracies")] == 0.25 and got[(2, "grad_norm")] == 3.0
    assert np.isnan(got[(2, "loss")])
    with pytest.raises(ValueError, match="corrupt"):
        bad = bytearray(raw)
        bad[-1] ^= 1
        p2 = tmp_path / "bad"
        p2.write_bytes(bytes(bad))
        tb.read_records(p2)


def test_config_typo_fails_fast_with_valid_keys(tmp_path):
    c = base_config()
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rate'.*Valid keys: .*optim\.lr"):
        apply_overrides(c, ["optim.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match="Did you mean: train.steps"):
        apply_overrides(c, ["train.step=3"])
    with pytest.raises(ConfigError) as err:  # a bare name: suggestions without repeats, at most 3
        apply_overrides(c, ["steps=3"])
    hint = str(err.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert hint[0] == "train.steps" and len(hint) == len(set(hint)) <= 3
    bad = tmp_path / "bad.py"
    bad.write_text("from jalign.train.config import base_config\n"
                   "def get_config():\n    c = base_config()\n    c.optim.lrr = 1.0\n    return c\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr'.*Did you mean: .*optim\.lr"):
        load_config(bad)
    with pytest.raises(ConfigError, match="optim.lr"):
        apply_overrides(c, ["optim.lr=fast"])  # wrong type


def test_config_values_and_overrides():
    c = load_config(ROOT / "experiments" / "dpo_tiny.py", ["optim.lr=3", "loss.hparams.beta=0.5", "train.steps=7"])
    assert c.optim.lr == 3.0 and isinstance(c.optim.lr, float) and c.loss.hparams.beta == 0.5 and c.train.steps == 7
    with pytest.raises(ConfigError, match=r"loss.hparams \['gamma'\] unknown for loss 'sigmoid'"):
        load_config(ROOT / "experiments" / "dpo_tiny.py", ["loss.hparams.gamma=1"])
    with pytest.raises(ConfigError, match="optim.accum_steps"):
        load_config(ROOT / "experiments" / "dpo_tiny.py", ["optim.accum_steps=0"])
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config(ROOT / "experiments" / "dpo_tiny.py", ["optim.accum_steps=3"])
    with pytest.raises(ConfigError, match="mode=.*needs"):
        load_config(ROOT / "experiments" / "dpo_tiny.py", ["mode=online"])
    with pytest.raises(ConfigError, match="unknown loss 'dpoo'"):
        load_config(ROOT / "experiments" / "dpo_tiny.py", ["loss.name=dpoo"])


def test_sft_config_loads():
    c = load_config(ROOT / "experiments" / "sft_tiny.py")
    assert c.mode == "sft" and c.data.name == "synthetic_sft"


def test_cli_typo_exits_2_listing_keys(capsys):
    assert main(["train", "--config", str(ROOT / "experiments" / "dpo_tiny.py"), "train.stpes=3"]) == 2
    assert "Valid keys:" in capsys.readouterr().err


def test_cli_dpo_tiny_runs_and_learns(tmp_path, capsys):
    rc = main(["train", "--config", str(ROOT / "experiments" / "dpo_tiny.py"), "train.steps=30", "train.progress=False",
               "mesh.data=1", "checkpoint.every=10", f"workdir={tmp_path}"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["final_step"] == 30
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    # DPO on separable synthetic pairs: the implicit-reward margin grows and the loss falls below log 2.
    assert rows[-1]["loss"] < 0.5 * np.log(2) and rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] > 0
    assert rows[-1]["rewards/accuracies"] == 1.0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["20", "30"]
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["name"] == "dpo"

"""Shipped experiment configs: found by name (and by their checkout path) from any directory."""

from pathlib import Path

import pytest

from jalign.train.config import ConfigError, load_config, resolve_config_path, shipped_configs

ROOT = Path(__file__).resolve().parents[2]


def test_every_experiment_is_shipped_and_loads_by_name(tmp_path, monkeypatch):
    shipped = shipped_configs()
    files = {p.stem for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_")}
    assert set(shipped) == files
    by_path = load_config(ROOT / "experiments" / "dpo_tiny.py").to_dict()
    monkeypatch.chdir(tmp_path)  # outside the checkout
    assert load_config("dpo_tiny").to_dict() == by_path
    assert load_config("experiments/dpo_tiny.py").to_dict() == by_path
    assert resolve_config_path("pretrain_small.py") == shipped["pretrain_small"]
    (tmp_path / "dpo_tiny.py").write_text(
        "from jalign.train.config import base_config\n\ndef get_config():\n    c = base_config()\n"
        "    c.seed = 7\n    return c\n")
    assert load_config("dpo_tiny.py").seed == 7  # a local file wins over the shipped config


def test_unknown_config_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file 'dpo_tinny' does not exist; shipped configs .*dpo_tiny"):
        load_config("dpo_tinny")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("some/dir/dpo_tiny.py")  # a path elsewhere is not replaced by a shipped config

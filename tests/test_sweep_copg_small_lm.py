"""docs/bandits_copg.md's CoPG / DPO / IPO small-LM table and the numbers read from it are the committed
``experiments/results/sweep_copg_dpo_ipo.json`` (written by ``python -m experiments.sweep_copg_dpo_ipo``)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABEL = {"copg": "CoPG", "dpo": "DPO", "ipo": "IPO"}


@pytest.fixture(scope="module")
def rows():
    return json.loads((ROOT / "experiments" / "results" / "sweep_copg_dpo_ipo.json").read_text())


@pytest.fixture(scope="module")
def doc():
    return (ROOT / "docs" / "bandits_copg.md").read_text(encoding="utf-8")


def test_the_run_is_the_documented_sweep(rows):
    assert sorted((r["method"], r["beta"]) for r in rows) == sorted(
        (m, b) for m in ("copg", "dpo", "ipo") for b in (0.1, 0.5))
    assert {r["steps"] for r in rows} == {60}
    for r in rows:
        assert 0.0 <= r["pair_acc"] <= 1.0 and r["pair_acc"] * 64 == pytest.approx(round(r["pair_acc"] * 64))


def test_doc_table_is_the_json(rows, doc):
    for r in rows:
        line = (f"| {LABEL[r['method']]} | {r['beta']} | {r['train_wall_s']} | {r['first_loss']:.3f} → "
                f"{r['last_loss']:.3f} | {r['pair_acc']:.3f} | {r['margin']:.2f} | {r['greedy_reward_before']:.3f} → "
                f"{r['greedy_reward_after']:.3f} |")
        assert line in doc, line


def test_doc_reading_follows_the_json(rows, doc):
    text = " ".join(doc.split())
    acc = [r["pair_acc"] for r in rows]
    assert f"({min(acc):.3f}–{max(acc):.3f} of 64 pairs; chance is 0.5)" in text
    margin = {r["beta"]: r["margin"] for r in rows if r["method"] == "copg"}
    assert f"smaller log-ratio margin ({margin[0.5]:.1f} vs {margin[0.1]:.1f})" in text and margin[0.5] < margin[0.1]
    # CoPG's first loss is mean (R_a − R_b)²/(2β) at π = π_ref: the same pairs at both β, so it scales as 1/β
    first = {r["beta"]: r["first_loss"] for r in rows if r["method"] == "copg"}
    assert first[0.1] * 0.1 == pytest.approx(first[0.5] * 0.5, rel=1e-5)
    assert all(r["greedy_reward_before"] == r["greedy_reward_after"] == 0.0 for r in rows)


def test_readme_row_quotes_the_json(rows):
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| LLM track (`experiments/sweep_copg_dpo_ipo.py`) |"))
    acc = [r["pair_acc"] for r in rows]
    assert f"held-out implicit-reward accuracy {min(acc):.3f}–{max(acc):.3f} for all three" in row

"""bench/README.md and the README's TRL table are what ``python -m bench.table`` makes of bench/results."""

import json
from pathlib import Path

import pytest

from bench import table

ROOT = Path(__file__).resolve().parents[1]


def test_bench_readme_is_current():
    assert (ROOT / "bench" / "README.md").read_text() == table.render(), "run python -m bench.table"


def test_readme_peer_table_is_generated_from_the_json():
    text = (ROOT / "README.md").read_text()
    for name in table.README_TABLES:
        other = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())
        assert table.readme_peer_table(text, other, name) == text, "run python -m bench.table"
    data = json.loads((ROOT / "bench" / "results" / "peer_trl.json").read_text())
    ratios = {(c["n_embd"], c["dtype"]): c["ratio"] for c in data["configs"]}
    assert len(ratios) == 6 and all(f"| {r:.2f} |" in text for r in ratios.values())


def test_readme_peer_table_needs_its_markers():
    with pytest.raises(ValueError, match="markers"):
        table.readme_peer_table("no markers here", {"configs": [], "matmul_peak_gflops": {}})

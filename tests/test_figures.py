"""The committed figures/ are what `jalign reproduce` draws from the committed results data.

Every reproduction has figures/NAME/results.json; redrawing from that JSON alone yields exactly the committed
set of figures (PNG + PDF). That the data matches a fresh quick run is checked where the run happens anyway:
tests/test_notebooks.py executes each reproduction's notebook and compares its results.json with the
committed one (see ``assert_results_match``).
"""

import json
import math
import shutil
from pathlib import Path

import pytest

import paper_repro

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
VOLATILE_KEYS = {"seconds", "time", "wall_s", "elapsed_s", "figures"}


def assert_results_match(fresh, committed, path="results", rtol=1e-3, atol=1e-6):
    """Recursively compare two results trees: same keys/lengths/strings, numbers within tolerance."""
    if isinstance(committed, dict):
        assert isinstance(fresh, dict), path
        keys = set(committed) - VOLATILE_KEYS
        assert keys == set(fresh) - VOLATILE_KEYS, f"{path}: keys differ"
        for k in sorted(keys):
            assert_results_match(fresh[k], committed[k], f"{path}.{k}", rtol, atol)
    elif isinstance(committed, list):
        assert isinstance(fresh, list) and len(fresh) == len(committed), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(fresh, committed, strict=True)):
            assert_results_match(a, b, f"{path}[{i}]", rtol, atol)
    elif isinstance(committed, bool) or committed is None:
        assert fresh == committed, path
    elif isinstance(committed, (int, float)):
        a, b = float(fresh), float(committed)
        if math.isnan(b):
            assert math.isnan(a), path
        else:
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=atol), f"{path}: {a} != {b}"
    elif isinstance(committed, str) and path.endswith(".measured"):
        pass  # measured text embeds numbers already compared through the numeric fields
    else:
        assert fresh == committed, f"{path}: {fresh!r} != {committed!r}"


def _figure_files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.suffix in (".png", ".pdf")}


@pytest.mark.parametrize("name", sorted(paper_repro.registry()))
def test_committed_figures_are_redrawn_from_committed_results(name, tmp_path):
    committed = FIGURES / name
    assert (committed / "results.json").is_file(), f"figures/{name}/results.json is not committed"
    files = _figure_files(committed)
    assert files, f"figures/{name} has no figures"
    pngs = {f for f in files if f.endswith(".png")}
    assert {f[:-4] + ".pdf" for f in pngs} <= files, "every PNG comes with a PDF"

    shutil.copy(committed / "results.json", tmp_path / "results.json")
    paper_repro.registry()[name].plot_from_results(tmp_path)
    assert _figure_files(tmp_path) == files


def test_committed_report_lists_every_committed_claim():
    report = (FIGURES / "report.md").read_text(encoding="utf-8")
    for name in sorted(paper_repro.registry()):
        claims = json.loads((FIGURES / name / "results.json").read_text())["claims"]
        for c in claims:
            assert str(c["claim"]).replace("|", "\\|").replace("\n", " ") in report, (name, c["claim"])


def test_results_comparison_detects_changes():
    base = {"a": [1.0, 2.0], "claims": [{"status": "holds", "measured": "x=1"}], "seconds": 3}
    assert_results_match({"a": [1.0, 2.0001], "claims": [{"status": "holds", "measured": "x=1.0001"}],
                          "seconds": 9}, base)
    with pytest.raises(AssertionError):
        assert_results_match({"a": [1.0, 2.1], "claims": base["claims"]}, base)
    with pytest.raises(AssertionError):
        assert_results_match({"a": [1.0, 2.0], "claims": [{"status": "does not hold", "measured": ""}]}, base)

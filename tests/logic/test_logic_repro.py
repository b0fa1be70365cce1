import doctest
import importlib
import json

import pytest

import paper_repro
from paper_repro import dpa_logic


@pytest.mark.parametrize("mod", ["compile", "decompile", "structure", "landscape", ""])
def test_docstring_examples(mod):
    # (jalign.logic.compile is also the name of the function, so import the modules by path)
    module = importlib.import_module("jalign.logic" + (f".{mod}" if mod else ""))
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and (res.attempted > 0 or mod == "landscape")


@pytest.mark.slow
def test_reproduction_writes_results_claims_and_figures(tmp_path, monkeypatch):
    assert paper_repro.registry()["dpa-logic"] is dpa_logic
    monkeypatch.setattr(dpa_logic, "TOY_LOSSES", ["cpo", "ccpo", "uncpo", "cfunl"])
    monkeypatch.setattr(dpa_logic, "TOY_STEPS", 30)
    res = dpa_logic.run(tmp_path, quick=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["claims"] == res["claims"]
    by_claim = {c["claim"]: c for c in res["claims"]}
    assert all(c["status"] in ("holds", "does not hold", "not reproducible here") for c in res["claims"])
    symbolic = [c for c in res["claims"] if "closed form" in c["measured"]]
    assert len(symbolic) == 5 and all(c["status"] == "holds" for c in symbolic)
    assert by_claim["Monotonicity: if P2 ⊨ P1 then ℓ(P2) ≥ ℓ(P1)"]["status"] == "holds"
    assert saved["lattice"]["n_classes"] == 190 and len(saved["lattice"]["edges"]) == 1024
    assert saved["counts"]["4"] == 4**16
    forms = {r["name"]: r for r in saved["symbolic_forms"]}
    assert forms["cpo"]["labels"] == ["✓✗", "✓", "✗", "·"] and forms["orpo"]["P_C"] == "M_w ⊕ M_l"
    curves = saved["toy"]["categorical"]["losses"]["cpo"]["chosen_mean"]
    assert len(curves) == 30 // 5 + 1
    for f in ("lattice.png", "lattice.pdf", "toy_curves.png", "toy_curves.pdf"):
        assert (tmp_path / f).stat().st_size > 1000

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
    # the LM part with the tiny test model and 3 steps (the shipped small LM runs in the real reproduction)
    monkeypatch.setattr(dpa_logic, "LM_LOSSES", ["cpo", "ccpo", "uncpo", "cfunl"])
    monkeypatch.setattr(dpa_logic, "LM_STEPS", {True: 3})
    monkeypatch.setattr(dpa_logic, "LM", dpa_logic.LM | {"model": "tiny", "model_kwargs": {"d_model": 8, "d_hidden": 16},
                                                         "pairs": 4, "learning_rate": 1e-2})
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
    lm = saved["lm"]["losses"]
    assert [lm[k]["rank"] for k in ("cfunl", "cpo", "ccpo", "uncpo")] == [3, 4, 5, 6]
    assert all(len(lm[k]["chosen"]) == len(lm[k]["rejected"]) == 3 + 1 for k in lm)
    assert all(lm[k]["chosen"][0] == lm["cpo"]["chosen"][0] for k in lm)  # every loss starts from the same model
    # the LM claims are computed from the saved curves
    dw = {k: lm[k]["chosen"][-1] - lm[k]["chosen"][0] for k in lm}
    lm_claims = [c for c in res["claims"] if c["claim"].startswith("[small LM")]
    assert len(lm_claims) == 5
    extreme = next(c for c in lm_claims if "most constrained" in c["claim"])
    assert extreme["status"] == ("holds" if max(dw, key=dw.get) == "cfunl" and min(dw, key=dw.get) == "uncpo"
                                 else "does not hold")
    for f in ("lattice.png", "lattice.pdf", "toy_curves.png", "toy_curves.pdf", "lm_curves.png", "lm_curves.pdf"):
        assert (tmp_path / f).stat().st_size > 1000

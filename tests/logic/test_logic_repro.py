import doctest
import importlib
import json
from pathlib import Path

import pytest

import paper_repro
from paper_repro import dpa_logic

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mod", ["compile", "decompile", "structure", "landscape", ""])
def test_docstring_examples(mod):
    # (jalign.logic.compile is also the name of the function, so import the modules by path)
    module = importlib.import_module("jalign.logic" + (f".{mod}" if mod else ""))
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and (res.attempted > 0 or mod == "landscape")


def test_committed_reproduction_data_and_claims_are_consistent():
    """The committed figures/dpa-logic data (equal to a fresh quick run: tests/notebooks/test_nb_dpa_logic.py
    executes that reproduction and compares) has the expected structure, and its claims are recomputed
    exactly from the saved numbers (no second pipeline run here)."""
    assert paper_repro.registry()["dpa-logic"] is dpa_logic
    saved = json.loads((ROOT / "figures" / "dpa-logic" / "results.json").read_text())
    claims = saved["claims"]
    # the claims are a pure function of the saved data
    assert dpa_logic._claims(saved["closed_form_max_abs_error"], saved["lattice"], saved["toy"],
                             saved["lm"]) == claims
    by_claim = {c["claim"]: c for c in claims}
    assert all(c["status"] in ("holds", "does not hold", "not reproducible here") for c in claims)
    symbolic = [c for c in claims if "closed form" in c["measured"]]
    assert len(symbolic) == 5 and all(c["status"] == "holds" for c in symbolic)
    assert all(v < 1e-10 for v in saved["closed_form_max_abs_error"].values())
    assert by_claim["Monotonicity: if P2 ⊨ P1 then ℓ(P2) ≥ ℓ(P1)"]["status"] == "holds"
    assert saved["lattice"]["n_classes"] == 190 and len(saved["lattice"]["edges"]) == 1024
    assert len(saved["lattice"]["nodes"]) == 256
    assert saved["counts"] == {str(n): 4 ** (2 ** n) for n in range(5)} and saved["counts"]["4"] == 4**16
    forms = {r["name"]: r for r in saved["symbolic_forms"]}
    assert forms["cpo"]["labels"] == ["✓✗", "✓", "✗", "·"] and forms["orpo"]["P_C"] == "M_w ⊕ M_l"
    assert saved["quick"] is True
    for setting in ("categorical", "loglinear"):
        losses = saved["toy"][setting]["losses"]
        assert sorted(losses) == sorted(dpa_logic.TOY_LOSSES)
        assert all(len(v["chosen_mean"]) == dpa_logic.TOY_STEPS // 5 + 1 for v in losses.values())
        for v in losses.values():  # the summary fields are those of the saved mean curve
            assert v["chosen_final"] == pytest.approx(v["chosen_mean"][-1], rel=1e-4)
    lm = saved["lm"]["losses"]
    steps = dpa_logic.LM_STEPS[True]
    assert saved["lm"]["config"]["steps"] == steps and sorted(lm) == sorted(dpa_logic.LM_LOSSES)
    assert [lm[k]["rank"] for k in ("ceunl", "cfunl", "cpo", "orpo", "ccpo", "uncpo")] == [2, 3, 4, 4, 5, 6]
    assert all(len(lm[k]["chosen"]) == len(lm[k]["rejected"]) == steps + 1 for k in lm)
    assert all(lm[k]["chosen"][0] == lm["cpo"]["chosen"][0] for k in lm)  # every loss starts from the same model
    for v in lm.values():  # the change and dip summaries are those of the saved curves
        assert v["chosen_change"] == pytest.approx(v["chosen"][-1] - v["chosen"][0], rel=1e-4)
        assert v["chosen_min"] == pytest.approx(min(v["chosen"]), rel=1e-4)
    dw = {k: lm[k]["chosen"][-1] - lm[k]["chosen"][0] for k in lm}
    lm_claims = [c for c in claims if c["claim"].startswith("[small LM")]
    assert len(lm_claims) == 5
    extreme = next(c for c in lm_claims if "most constrained" in c["claim"])
    assert extreme["status"] == ("holds" if max(dw, key=dw.get) == "ceunl" and min(dw, key=dw.get) == "uncpo"
                                 else "does not hold")
    # the LM claim tag names the saved configuration
    assert all(c["claim"].startswith(f"[small LM, {saved['lm']['config']['pairs']} fixed pairs, {steps} Adam")
               for c in lm_claims)

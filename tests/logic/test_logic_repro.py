import doctest
import importlib
import json
from pathlib import Path

import numpy as np
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


def test_committed_reproduction_data_has_the_expected_structure():
    """The committed figures/dpa-logic data (equal to a fresh quick run: tests/notebooks/test_nb_dpa_logic.py
    executes that reproduction and compares) has the expected structure and values (no pipeline run here)."""
    assert paper_repro.registry()["dpa-logic"] is dpa_logic
    saved = json.loads((ROOT / "figures" / "dpa-logic" / "results.json").read_text())
    assert all(v < 1e-10 for v in saved["closed_form_max_abs_error"].values())
    assert saved["lattice"]["n_classes"] == 190 and len(saved["lattice"]["edges"]) == 1024
    assert len(saved["lattice"]["nodes"]) == 256
    assert saved["counts"] == {str(n): 4 ** (2 ** n) for n in range(5)} and saved["counts"]["4"] == 4**16
    forms = {r["name"]: r for r in saved["symbolic_forms"]}
    assert forms["cpo"]["labels"] == ["✓✗", "✓", "✗", "·"] and forms["orpo"]["P_C"] == "M_w ⊕ M_l"
    assert saved["quick"] is True
    for setting in ("categorical", "loglinear"):
        d = saved["toy"][setting]
        losses = d["losses"]
        assert sorted(losses) == sorted(dpa_logic.TOY_LOSSES)
        assert all(len(v["chosen_mean"]) == dpa_logic.TOY_STEPS // 5 + 1 for v in losses.values())
        for v in losses.values():  # the summary fields are those of the saved per-seed values and mean curve
            assert v["chosen_final"] == pytest.approx(v["chosen_mean"][-1], rel=1e-4)
            assert len(v["chosen_final_per_seed"]) == d["seeds"]
            assert np.mean(v["chosen_final_per_seed"]) == pytest.approx(v["chosen_final"], rel=1e-5)
            assert np.std(v["chosen_final_per_seed"]) == pytest.approx(v["chosen_std"][-1], abs=1e-4)
            assert all(m <= f + 1e-6 for m, f in zip(v["chosen_min_per_seed"], v["chosen_final_per_seed"],
                                                     strict=True))
    lm = saved["lm"]["losses"]
    steps = dpa_logic.LM_STEPS[True]
    assert saved["lm"]["config"]["steps"] == steps and sorted(lm) == sorted(dpa_logic.LM_LOSSES)
    assert [lm[k]["rank"] for k in ("ceunl", "cfunl", "cpo", "orpo", "ccpo", "uncpo")] == [2, 3, 4, 4, 5, 6]
    assert all(len(lm[k]["chosen"]) == len(lm[k]["rejected"]) == steps + 1 for k in lm)
    assert all(lm[k]["chosen"][0] == lm["cpo"]["chosen"][0] for k in lm)  # every loss starts from the same model
    for v in lm.values():  # the change and dip summaries are those of the saved curves
        assert v["chosen_change"] == pytest.approx(v["chosen"][-1] - v["chosen"][0], rel=1e-4)
        assert v["chosen_min"] == pytest.approx(min(v["chosen"]), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------
# The claim rules on synthetic results: each must pass where the rule is met and fail where it is not.


def _synthetic(seeds=8, steps=1000):
    """A minimal dpa-logic results dict: what :func:`dpa_logic.claims` reads, with neutral values."""
    toy_losses = {k: {"chosen_min": -2.0, "chosen_final": -1.0, "chosen_argmin": 0,
                      "chosen_final_per_seed": [-1.0] * seeds, "chosen_min_per_seed": [-1.0] * seeds,
                      "chosen_argmin_per_seed": [0] * seeds} for k in dpa_logic.TOY_LOSSES}
    lm = {k: {"rank": r, "chosen": [0.0, 1.0, 2.0], "chosen_change": 2.0, "chosen_min": 0.0, "chosen_argmin": 0}
          for k, r in zip(dpa_logic.LM_LOSSES, (2, 3, 4, 4, 5, 6), strict=True)}
    return {
        "closed_form_max_abs_error": {k: 1e-15 for k in ("cpo", "orpo", "dpo", "uncpo", "ref_variant")},
        "counts": {"4": 4 ** 16},
        "lattice": {"nodes": [{}] * 256, "n_classes": 190,
                    "monotonicity": {"comparable_pairs": 10, "points": 4, "pairs_violated": 0},
                    "regions_entail": {"a ⊨ b": True}},
        "toy": {"t": {"steps": steps, "losses": toy_losses}},
        "lm": {"config": {"steps": 2, "pairs": 8}, "losses": lm},
    }


def _status(claims, start):
    (c,) = [c for c in claims if c["claim"].startswith(start)]
    return c


def _set(res, loss, key, values):
    res["toy"]["t"]["losses"][loss][key] = list(values)


def test_symbolic_claim_rules_pass_and_fail():
    res = _synthetic()
    c = dpa_logic.claims(res)
    assert _status(c, "CPO's structure")["status"] == "holds"
    assert _status(c, "Monotonicity")["status"] == "holds"
    res["closed_form_max_abs_error"]["cpo"] = 1e-9  # above the 1e-10 tolerance
    res["lattice"]["monotonicity"]["pairs_violated"] = 1
    res["lattice"]["regions_entail"]["a ⊨ b"] = False
    c = dpa_logic.claims(res)
    assert _status(c, "CPO's structure")["status"] == "does not hold"
    assert _status(c, "Monotonicity")["status"] == "does not hold"
    assert _status(c, "No-reference regions")["status"] == "does not hold"
    # the rows true by construction say so whatever the data, and never count as holds
    for start in ("4^(2^n) losses", "Equivalent formulas"):
        row = _status(c, start)
        assert row["status"] == "by construction" and row["evidence"]["kind"] == "construction"
    assert _status(c, "reference variant")["source"] == "reconstruction"
    assert _status(c, "CPO's structure")["source"] == "paper"


def test_toy_claim_rules_use_paired_seed_intervals():
    rng = np.random.default_rng(0)
    base = -1.0 + 0.05 * rng.normal(size=8)
    res = _synthetic()
    _set(res, "cpo", "chosen_final_per_seed", base)
    _set(res, "ccpo", "chosen_final_per_seed", base + 0.1 + 0.01 * rng.normal(size=8))  # clearly above
    for k in ("uncpo", "cfunl"):
        _set(res, k, "chosen_final_per_seed", base - 1.0)
    c = dpa_logic.claims(res)
    assert _status(c, "[toy: t] CPO ends")["status"] == "holds"
    assert _status(c, "[toy: t] cCPO keeps")["status"] == "holds"
    assert _status(c, "[toy: t] CPO ends")["evidence"]["seeds"] == 8
    _set(res, "ccpo", "chosen_final_per_seed", base - 0.1)  # clearly below
    assert _status(dpa_logic.claims(res), "[toy: t] CPO ends")["status"] == "does not hold"
    # inside the noise: CPO −0.779 vs cCPO −0.745 with per-seed differences of sd ≈ 0.05 (the committed case)
    _set(res, "ccpo", "chosen_final_per_seed", base + np.array([0.015, 0.078, -0.022, 0.094, 0.005, -0.021,
                                                                 0.059, -0.06]))
    assert _status(dpa_logic.claims(res), "[toy: t] CPO ends")["status"] == "inconclusive"


def test_dip_rule_needs_an_interior_minimum_on_every_seed():
    res = _synthetic()
    for k in ("uncpo", "cfunl"):
        _set(res, k, "chosen_final_per_seed", [-4.3 + 0.1 * i for i in range(8)])
        _set(res, k, "chosen_min_per_seed", [-8.5 + 0.1 * i for i in range(8)])
        _set(res, k, "chosen_argmin_per_seed", [300] * 8)
    assert _status(dpa_logic.claims(res), "[toy: t] unCPO and cfUNL")["status"] == "holds"
    _set(res, "cfunl", "chosen_argmin_per_seed", [0] * 8)  # the minimum is the start: no dip
    assert _status(dpa_logic.claims(res), "[toy: t] unCPO and cfUNL")["status"] == "does not hold"
    _set(res, "cfunl", "chosen_argmin_per_seed", [1000] * 8)  # the minimum is the end: no dip either
    assert _status(dpa_logic.claims(res), "[toy: t] unCPO and cfUNL")["status"] == "does not hold"


def test_small_lm_rows_are_inconclusive_with_one_seed_whatever_the_point_value():
    res = _synthetic()
    L = res["lm"]["losses"]
    for k, v in L.items():  # the most constrained rises most, the least constrained falls most
        d = {"ceunl": 9.0, "cfunl": 5.0, "cpo": 4.0, "orpo": 3.0, "ccpo": 2.0, "uncpo": -9.0}[k]
        v["chosen_change"], v["chosen"] = d, [0.0, d / 2, d]
    c = dpa_logic.claims(res)
    lm_rows = [x for x in c if x["claim"].startswith("[small LM")]
    assert len(lm_rows) == 5
    assert all(x["status"] == "inconclusive" and x["evidence"]["seeds"] == 1 for x in lm_rows)
    assert "passes on this seed" in _status(c, "[small LM, 8 fixed pairs, 2 Adam steps] constrainedness")["measured"]
    assert "passes on this seed" in _status(c, "[small LM, 8 fixed pairs, 2 Adam steps] the winner's")["measured"]
    L["uncpo"]["chosen_change"] = 10.0
    assert "fails on this seed" in _status(dpa_logic.claims(res),
                                           "[small LM, 8 fixed pairs, 2 Adam steps] constrainedness")["measured"]

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
    steps, seeds = dpa_logic.LM_STEPS[True], dpa_logic.LM_SEEDS[True]
    assert saved["lm"]["config"]["steps"] == steps and sorted(lm) == sorted(dpa_logic.LM_LOSSES)
    assert saved["lm"]["config"]["seeds"] == seeds and len(seeds) >= 3
    assert [lm[k]["rank"] for k in ("ceunl", "cfunl", "cpo", "orpo", "ccpo", "uncpo")] == [2, 3, 4, 4, 5, 6]
    for k in lm:  # per seed (row r = seed r), one value per step
        assert np.shape(lm[k]["chosen"]) == np.shape(lm[k]["rejected"]) == (len(seeds), steps + 1)
    start = np.asarray(lm["cpo"]["chosen"])[:, 0]
    for k in lm:  # every loss of a seed starts from the same model on the same pairs
        np.testing.assert_array_equal(np.asarray(lm[k]["chosen"])[:, 0], start)
    assert len(set(start.round(2))) == len(seeds)  # the seeds draw different pairs
    for v in lm.values():  # the change and dip summaries are those of the saved curves
        a = np.asarray(v["chosen"])
        np.testing.assert_allclose(v["chosen_change"], a[:, -1] - a[:, 0], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(v["chosen_min"], a.min(1), rtol=1e-4, atol=1e-3)
        assert v["chosen_argmin"] == a.argmin(1).tolist()


# ---------------------------------------------------------------------------------------------------------
# The claim rules on synthetic results: each must pass where the rule is met and fail where it is not.


def _synthetic(seeds=8, steps=1000):
    """A minimal dpa-logic results dict: what :func:`dpa_logic.claims` reads, with neutral values."""
    toy_losses = {k: {"chosen_min": -2.0, "chosen_final": -1.0, "chosen_argmin": 0,
                      "chosen_final_per_seed": [-1.0] * seeds, "chosen_min_per_seed": [-1.0] * seeds,
                      "chosen_argmin_per_seed": [0] * seeds} for k in dpa_logic.TOY_LOSSES}
    lm = {k: {"rank": r, "chosen": [[0.0, 1.0, 2.0]] * 3, "chosen_change": [2.0] * 3, "chosen_min": [0.0] * 3,
              "chosen_argmin": [0] * 3} for k, r in zip(dpa_logic.LM_LOSSES, (2, 3, 4, 4, 5, 6), strict=True)}
    return {
        "closed_form_max_abs_error": {k: 1e-15 for k in ("cpo", "orpo", "dpo", "uncpo", "ref_variant")},
        "counts": {"4": 4 ** 16},
        "lattice": {"nodes": [{}] * 256, "n_classes": 190,
                    "monotonicity": {"comparable_pairs": 10, "points": 4, "pairs_violated": 0},
                    "regions_entail": {"a ⊨ b": True}},
        "toy": {"t": {"steps": steps, "losses": toy_losses}},
        "lm": {"config": {"steps": 2, "pairs": 8, "seeds": [0, 1, 2]}, "losses": lm},
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


def _set_lm(res, curves):
    """Put per-seed winner curves ``curves[loss] = [[log π(y_w) at steps 0, 1, 2] per seed]`` into the synthetic
    LM results, with the summaries the reproduction saves (change, minimum, its step)."""
    for k, rows in curves.items():
        a = np.asarray(rows, np.float64)
        L = res["lm"]["losses"][k]
        L["chosen"] = a.tolist()
        L["chosen_change"] = (a[:, -1] - a[:, 0]).tolist()
        L["chosen_min"] = a.min(1).tolist()
        L["chosen_argmin"] = a.argmin(1).tolist()


LM_TAG = "[small LM, 8 fixed pairs, 2 Adam steps]"
ORDERED = {"ceunl": 9.0, "cfunl": 5.0, "cpo": 4.0, "orpo": 3.0, "ccpo": 2.0, "uncpo": -9.0}  # Δ by rank 2 … 6


def test_small_lm_rules_pass_over_seeds():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    res = _synthetic()
    _set_lm(res, {k: [[0.0, d / 2, d + 0.1 * rng.normal()] for _ in range(3)] for k, d in ORDERED.items()})
    c = dpa_logic.claims(res)
    lm_rows = [x for x in c if x["claim"].startswith("[small LM")]
    assert len(lm_rows) == 5 and all(x["evidence"]["seeds"] == 3 for x in lm_rows)
    for start in ("constrainedness", "the winner's"):
        row = _status(c, f"{LM_TAG} {start}")
        assert row["status"] == "holds" and row["evidence"]["interval"] is not None, (start, row["measured"])
    # Spearman(rank, Δ) per seed against scipy's (average ranks for the two rank-4 losses)
    L = res["lm"]["losses"]
    want = [spearmanr([L[k]["rank"] for k in L], [L[k]["chosen_change"][r] for k in L]).statistic for r in range(3)]
    assert _status(c, f"{LM_TAG} the winner's")["evidence"]["estimate"] == pytest.approx(np.mean(want), abs=1e-9)
    # the curves rise monotonically: no dip, whatever the seeds
    assert _status(c, f"{LM_TAG} unCPO and cfUNL")["status"] == "does not hold"
    # cCPO ends highest of the four on every seed (its rank-5 place then breaks the ordering's Spearman)
    _set_lm(res, {k: [[0.0, d / 2, d + 0.1 * rng.normal()] for _ in range(3)] for k, d in dict(ORDERED, ccpo=6.0).items()})
    c = dpa_logic.claims(res)
    for start in ("cCPO keeps", "CPO ends"):
        assert _status(c, f"{LM_TAG} {start}")["status"] == "holds", start


def test_small_lm_rules_fail_and_stay_inconclusive_in_the_noise():
    res = _synthetic()
    flipped = dict(ORDERED, uncpo=12.0)  # the least constrained rises most; cCPO ends below CPO
    _set_lm(res, {k: [[0.0, d / 2, d + 0.05 * s] for s in range(3)] for k, d in flipped.items()})
    c = dpa_logic.claims(res)
    for start in ("constrainedness", "the winner's", "cCPO keeps", "CPO ends"):
        assert _status(c, f"{LM_TAG} {start}")["status"] == "does not hold", start
    # cCPO − CPO of +2, −1.5, +0.5 over three seeds: the interval straddles 0
    noisy = {k: [[0.0, d / 2, d]] * 3 for k, d in ORDERED.items()}
    noisy["ccpo"] = [[0.0, 2.0, 4.0 + x] for x in (2.0, -1.5, 0.5)]
    _set_lm(res, noisy)
    row = _status(dpa_logic.claims(res), f"{LM_TAG} CPO ends")
    assert row["status"] == "inconclusive" and row["evidence"]["interval"][0] < 0 < row["evidence"]["interval"][1]


def test_small_lm_dip_rule_needs_both_losses_on_every_seed():
    res = _synthetic()
    dip = [[0.0, -5.0, -1.0 + 0.1 * s] for s in range(3)]  # minimum inside the run, final 4 nats above it
    _set_lm(res, {"uncpo": dip, "cfunl": dip})
    row = _status(dpa_logic.claims(res), f"{LM_TAG} unCPO and cfUNL")
    assert row["status"] == "holds" and row["evidence"]["estimate"] == pytest.approx(4.1, abs=1e-9)
    _set_lm(res, {"cfunl": [[0.0, -0.2, -0.1]] * 3})  # a dip of 0.1 < DIP = 0.5 on every seed
    assert _status(dpa_logic.claims(res), f"{LM_TAG} unCPO and cfUNL")["status"] == "does not hold"
    _set_lm(res, {"cfunl": [[0.0, -5.0, -1.0], [0.0, -0.1, 0.0], [0.0, -3.0, 0.0]]})  # dips 4, 0.1, 3
    assert _status(dpa_logic.claims(res), f"{LM_TAG} unCPO and cfUNL")["status"] == "inconclusive"
    res["lm"]["losses"] = {k: dict(v, chosen=v["chosen"][:1], chosen_change=v["chosen_change"][:1],
                                   chosen_min=v["chosen_min"][:1], chosen_argmin=v["chosen_argmin"][:1])
                           for k, v in res["lm"]["losses"].items()}
    rows = [x for x in dpa_logic.claims(res) if x["claim"].startswith("[small LM")]
    assert all(x["status"] == "inconclusive" and x["evidence"]["seeds"] == 1 for x in rows)  # one seed only


def test_small_lm_seeds_batched_equal_per_seed_training():
    """The key invariance of the batched seeds: train_structures with ``data`` (vmap over the seeds' pairs)
    equals one unbatched run per seed, on a tiny model through the reproduction's own data path."""
    import jax

    from jalign import logic
    from jalign.logic.toy import train_structures

    cfg = dict(dpa_logic.LM, model="tiny", pairs=4)
    params, logps_fn, data, tokens = dpa_logic._lm_logps_fn(cfg, [0, 1])
    assert data["ids"].shape == (2, 8, cfg["seq_len"]) and len(tokens) == 2
    structures = [logic.decompile("uncpo").over(("M_w", "M_l"))]
    kw = dict(steps=2, learning_rate=1e-2, beta=1.0, length_normalize=True, grad_clip=1.0)
    got = train_structures(structures, logps_fn, params, data=data, **kw)
    assert got["chosen_logps"].shape == (1, 2, 3)
    for r in range(2):
        d_r = jax.tree.map(lambda v, r=r: v[r], data)
        want = train_structures(structures, lambda p, d_r=d_r: logps_fn(p, d_r), params, **kw)
        for k in ("loss", "chosen_logps", "rejected_logps"):
            np.testing.assert_allclose(got[k][:, r], want[k], rtol=1e-4, atol=1e-4, err_msg=f"seed {r} {k}")
    # the seeds train on different pairs: different starting log-probs, different token counts
    assert len({round(float(v), 3) for v in got["chosen_logps"][0, :, 0]}) == 2
    assert len({tuple(t["chosen"]) for t in tokens}) == 2
    assert np.all(np.abs(got["chosen_logps"][0, :, -1] - got["chosen_logps"][0, :, 0]) > 1e-3)  # it trained
    with pytest.raises(ValueError, match="leading"):
        train_structures(structures, logps_fn, params, data={"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, **kw)

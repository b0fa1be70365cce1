"""The preference-games reproduction: its committed results recomputed with numpy, and its claim rules on synthetic
results (must-pass and must-fail; the pipeline is not rerun here)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from jalign.reporting import check_claim
from paper_repro import preference_games as G

COMMITTED = Path(__file__).resolve().parents[1] / "figures" / G.NAME / "results.json"


@pytest.fixture(scope="module")
def res():
    return json.loads(COMMITTED.read_text())


def _statuses(r):
    return [c["status"] for c in G.claims(r)]


def test_committed_claims_are_the_rules_applied_to_the_committed_data(res):
    assert res["rules"] == G.RULES
    assert [c["status"] for c in res["claims"]] == _statuses(res)
    for c in res["claims"]:
        check_claim(c)
        assert c["evidence"]["kind"] in ("exact", "seeds")
        if c["evidence"]["kind"] == "seeds":
            assert c["evidence"]["seeds"] >= 3 and c["evidence"]["interval"] is not None


def test_key_numbers_recomputed_with_numpy(res):
    cfg, fams = res["config"], res["families"]
    s = cfg["seeds"]
    # online IPO reaches π*_τ, the constant-step methods do not (their TV curves, last column)
    for f in G.FAMILIES:
        tv = {m: np.asarray(fams[f][f"{m}/tv"]) for m in G.METHODS}
        assert tv["online_ipo"].shape == (s, cfg["steps"] // cfg["record_every"] + 1)
        assert tv["online_ipo"][:, -1].max() <= 1e-10 and tv["offline_ipo_star"][:, -1].max() <= 1e-10
        assert tv["nash_md_const"][:, -1].min() > 1e-5
        np.testing.assert_allclose(tv["nash_md_const"][:, -1], tv["ipo_md"][:, -1], rtol=1e-8)  # same fixed point
        assert np.all(tv["nash_md_decay"][:, -1] < tv["nash_md_decay"][:, len(cfg["recorded_steps"]) // 2])
        # bias linear in β: the least-squares log-log slope of TV(β) is 1 within 0.1 on every instance
        b = np.log(np.asarray(cfg["bias_betas"]))
        for row in np.log(np.asarray(fams[f]["bias/tv"])):
            assert np.polyfit(b, row, 1)[0] == pytest.approx(1.0, abs=0.1)
    # the offline-IPO interval of the claim, recomputed with scipy's t quantile
    claim = G.claims(res)[5]
    ivs = []
    for f in G.FAMILIES:
        x = np.log10(np.asarray(fams[f]["offline_ipo_mu/tv"])[:, -1])
        half = stats.t.ppf(0.975, s - 1) * x.std(ddof=1) / np.sqrt(s)
        ivs.append((x.mean() - half, x.mean(), x.mean() + half))
    lo, mean, hi = min(ivs)
    assert claim["evidence"]["interval"] == pytest.approx([lo, hi], rel=1e-9)
    assert claim["evidence"]["estimate"] == pytest.approx(mean, rel=1e-9)
    # the Nash-MD speed slope of the claim, recomputed with numpy's polyfit per seed
    sizes = np.log(cfg["speed_md_betas"])
    worst = None
    for f in G.FAMILIES:
        steps = np.asarray(fams[f]["speed/nash_md_const"], np.float64)
        assert np.all(steps > 0)
        slopes = [np.polyfit(sizes, np.log(row), 1)[0] for row in steps]
        m = float(np.mean(slopes))
        if worst is None or abs(m + 1) > abs(worst + 1):
            worst = m
    assert G.claims(res)[-1]["evidence"]["estimate"] == pytest.approx(worst, rel=1e-9)
    # Thurstone: online IPO at π*_τ; online SLiC: its smallest late TV recomputed from the saved curve, the interval
    th = fams[G.EXTRA_FAMILY]
    assert np.asarray(th["online_ipo/tv"])[:, -1].max() <= 1e-10
    ivs = []
    for f in (*G.FAMILIES, G.EXTRA_FAMILY):
        tv = np.asarray(fams[f]["online_slic/tv"])
        late = tv[:, tv.shape[1] // 2:].min(1)
        np.testing.assert_allclose(fams[f]["online_slic/min_tv_late"], late, rtol=1e-12)
        x = np.log10(late)
        half = stats.t.ppf(0.975, s - 1) * x.std(ddof=1) / np.sqrt(s)
        ivs.append((x.mean() - half, x.mean(), x.mean() + half))
    lo, mean, hi = min(ivs)
    claim = G.claims(res)[10]
    assert claim["evidence"]["interval"] == pytest.approx([lo, hi], rel=1e-9)
    assert claim["evidence"]["estimate"] == pytest.approx(mean, rel=1e-9)


def _set_last(r, fam, key, value):
    arr = np.asarray(r["families"][fam][key], np.float64)
    if arr.ndim == 2:
        arr[:, -1] = value
    else:
        arr[:] = value
    r["families"][fam][key] = arr.tolist()


def test_claim_rules_on_synthetic_results(res):
    good = copy.deepcopy(res)
    sizes_lr = np.asarray(good["config"]["speed_lrs"])
    sizes_md = np.asarray(good["config"]["speed_md_betas"])
    rng = np.random.default_rng(0)
    for f in G.FAMILIES:
        fam = good["families"][f]
        s = len(fam["online_ipo/tv"])
        fam["speed/online_ipo"] = [list(np.round(100 * (1 + 0.01 * rng.random()) / sizes_lr)) for _ in range(s)]
        fam["speed/ipo_md"] = fam["speed/online_ipo"]
        fam["speed/nash_md_const"] = [list(np.round(10 * (1 + 0.01 * rng.random()) / sizes_md)) for _ in range(s)]
        _set_last(good, f, "online_dpo/grad_norm", 1e-12)
    st = _statuses(good)
    assert st == ["holds", "holds", "does not hold", "does not hold", "holds", "holds", "holds", "holds", "holds",
                  "holds", "holds", "holds", "holds", "holds"]

    bad = copy.deepcopy(good)
    for f in G.FAMILIES:
        _set_last(bad, f, "online_ipo/tv", 1e-3)  # online IPO away from π*_τ
        _set_last(bad, f, "nash_md_decay/kl", 1e-4)
        for m in ("nash_md_const", "ipo_md", "offline_ipo_mu", "online_dpo"):
            _set_last(bad, f, f"{m}/tv", 1e-13)  # everything at π*_τ
        _set_last(bad, f, "offline_ipo_star/residual", 1e-3)
        bad["families"][f]["bias/tv"] = (np.asarray(bad["families"][f]["bias/tv"]) ** 2).tolist()  # quadratic bias
        s = len(bad["families"][f]["online_ipo/tv"])
        bad["families"][f]["speed/online_ipo"] = [list(np.round(100 / np.sqrt(sizes_lr))) for _ in range(s)]
        bad["families"][f]["speed/ipo_md"] = bad["families"][f]["speed/online_ipo"]
        bad["families"][f]["speed/nash_md_const"] = [list(np.round(1000 / sizes_md ** 2)) for _ in range(s)]
    _set_last(bad, G.EXTRA_FAMILY, "online_ipo/tv", 1e-3)  # online IPO away from π*_τ on Thurstone
    for f in (*G.FAMILIES, G.EXTRA_FAMILY):
        _set_last(bad, f, "online_slic/min_tv_late", 1e-13)  # online SLiC passes through π*_τ
    st = _statuses(bad)
    assert st == ["does not hold", "does not hold", "holds", "holds"] + ["does not hold"] * 10
    # online SLiC's rule reads the worst family: one family at π*_τ (interval below −6) makes it fail,
    # one family straddling −6 makes it inconclusive
    one = copy.deepcopy(good)
    _set_last(one, G.EXTRA_FAMILY, "online_slic/min_tv_late", 1e-9)
    assert _statuses(one)[10] == "does not hold"
    one["families"][G.EXTRA_FAMILY]["online_slic/min_tv_late"] = [1e-3, 1e-9, 1e-4, 1e-8, 1e-5]
    assert _statuses(one)[10] == "inconclusive"

    # unmet preconditions (not converged to the closed form / not stationary) make the row inconclusive
    pre = copy.deepcopy(good)
    for f in G.FAMILIES:
        _set_last(pre, f, "offline_ipo_mu/closed_err", 1e-3)
        _set_last(pre, f, "online_dpo/rlhf_tv", 0.1)
        _set_last(pre, f, "online_dpo/grad_norm", 1e-4)
    st = _statuses(pre)
    assert st[5] == st[7] == st[8] == "inconclusive"
    # a speed slope whose interval straddles −0.9 is inconclusive
    mixed = copy.deepcopy(good)
    for f in G.FAMILIES:
        mixed["families"][f]["speed/nash_md_const"] = [list(np.round(1000 * sizes_md ** -p))
                                                       for p in (0.7, 1.0, 1.05, 0.8, 1.1)]
    assert _statuses(mixed)[-1] == "inconclusive"


def test_slopes_ignore_step_sizes_where_a_seed_did_not_converge():
    steps = np.array([[400, 200, 100, -1], [800, 400, 200, 100]])
    slopes, ok = G._slopes(steps, [0.25, 0.5, 1.0, 2.0])
    assert ok.tolist() == [True, True, True, False]
    np.testing.assert_allclose(slopes, [-1.0, -1.0], atol=1e-12)

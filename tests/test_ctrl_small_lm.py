"""The committed results of the CTRL small-LM experiment (experiments/ctrl_small_lm.py): standard and best-of-4 win
rates recomputed from the saved per-prompt scores with numpy loops, the matched-KL interpolation and the paired
CTRL − raw intervals recomputed, the design (seeds, shared reference completions, checkpoints), wall times, and
the README / docs numbers equal to the JSON."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "experiments" / "results" / "ctrl_small_lm.json"
METHODS = ("ctrl", "raw")


@pytest.fixture(scope="module")
def res():
    return json.loads(RES.read_text(encoding="utf-8"))


def _win_rate_loop(a, b):
    """Mean over prompts of (wins + ½ ties)/(n·m), SE = unbiased sd / √P."""
    w = []
    for ai, bi in zip(a, b, strict=True):
        s = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in ai for y in bi)
        w.append(s / (len(ai) * len(bi)))
    w = np.array(w)
    return w.mean(), math.sqrt(((w - w.mean()) ** 2).sum() / (len(w) - 1) / len(w))


def _best_of(scores, n):
    return [[max(row[i:i + n]) for i in range(0, len(row), n)] for row in scores]


def _interp(kls, vals, kl):
    for j in range(len(kls) - 1):
        a, b = kls[j], kls[j + 1]
        if min(a, b) <= kl <= max(a, b):
            return vals[j] if a == b else vals[j] + (kl - a) / (b - a) * (vals[j + 1] - vals[j])
    return math.nan


def test_design(res):
    s = res["settings"]
    assert len(s["seeds"]) >= 3 and len(set(s["seeds"])) == len(s["seeds"]) and res["best_of"] == 4
    assert len(res["eval_prompts"]) == 12 and not set(res["eval_prompts"]) & set(res["reference_rewards"]["prompts"])
    assert res["reward_specs"]["raw"] == "lexicon"
    assert res["reward_specs"]["ctrl"] == f"ctrl:lexicon:WORKDIR/ref_rewards.json,transform=exp,t={s['t']}"
    assert np.shape(res["reference_rewards"]["rewards"]) == (12, s["ref_samples"])
    steps = sorted({0, s["rl_steps"], *range(s["probe_every"], s["rl_steps"] + 1, s["probe_every"])})
    for m in METHODS:
        assert [r["seed"] for r in res["runs"][m]] == s["seeds"]
        for r in res["runs"][m]:
            assert [c["step"] for c in r["checkpoints"]] == steps
            assert r["checkpoints"][0]["kl_k1"] == 0.0  # the start: the policy is μ
            for c in r["checkpoints"]:
                assert np.shape(c["scores"]) == (12, s["eval_slots"] * 4)
            assert max(h["step"] for h in r["history"]) == s["rl_steps"]
    for i in range(len(s["seeds"])):  # both rewards of a seed are judged against the same μ completions
        assert res["runs"]["ctrl"][i]["reference_scores"] == res["runs"]["raw"][i]["reference_scores"]
    for h in res["runs"]["ctrl"][0]["history"]:  # the CTRL reward is exp(t·C) of the logged calibrated reward
        assert 0.0 <= h["reward/calibrated"] <= 1.0 and -1.0 < h["reward/raw"] < 1.0
        assert 1.0 <= h["reward/mean"] <= math.exp(s["t"]) + 1e-4


def test_win_rates_recomputed_from_scores(res):
    for m in METHODS:
        for r, rows in zip(res["runs"][m], res["summary"]["checkpoints"][m], strict=True):
            base = r["reference_scores"]
            for c, row in zip(r["checkpoints"], rows, strict=True):
                wr, se = _win_rate_loop(c["scores"], base)
                assert row["win_rate"] == pytest.approx(wr, abs=1e-12) and row["se"] == pytest.approx(se, rel=1e-9)
                wr, se = _win_rate_loop(_best_of(c["scores"], 4), _best_of(base, 4))
                assert row["bo4_win_rate"] == pytest.approx(wr, abs=1e-12)
                assert row["bo4_se"] == pytest.approx(se, rel=1e-9, abs=1e-15)
                assert row["kl_k1"] == c["kl_k1"] and row["step"] == c["step"]


def test_matched_kl_recomputed(res):
    summ = res["summary"]
    kmax = min(rows[-1]["kl_k1"] for m in METHODS for rows in summ["checkpoints"][m])
    assert summ["common_kl_max"] == pytest.approx(kmax, abs=0) and kmax > 0
    assert [p["fraction"] for p in summ["matched"]] == res["kl_fractions"]
    for p in summ["matched"]:
        assert p["kl"] == pytest.approx(p["fraction"] * kmax, rel=1e-12)
        for key in ("bo4_win_rate", "win_rate"):
            per = {m: np.array([_interp([r["kl_k1"] for r in rows], [r[key] for r in rows], p["kl"])
                                for rows in summ["checkpoints"][m]]) for m in METHODS}
            for m in METHODS:
                v = per[m]
                assert np.all(np.isfinite(v))  # every run reaches every matched KL
                np.testing.assert_allclose(p[key][m]["per_seed"], v, rtol=1e-12)
                assert p[key][m]["mean"] == pytest.approx(v.mean(), abs=1e-12)
                assert p[key][m]["se"] == pytest.approx(v.std(ddof=1) / math.sqrt(len(v)), rel=1e-9)
            d = per["ctrl"] - per["raw"]
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
            assert p[key]["diff"]["mean"] == pytest.approx(d.mean(), abs=1e-12)
            assert p[key]["diff"]["lo"] == pytest.approx(d.mean() - half, abs=1e-9)
            assert p[key]["diff"]["hi"] == pytest.approx(d.mean() + half, abs=1e-9)


def test_wall_times(res):
    w = res["wall_s"]
    stages = w["sft"] + w["reference_rewards"] + sum(sum(w[m]) for m in METHODS)
    assert all(len(w[m]) == len(res["settings"]["seeds"]) for m in METHODS)
    assert stages <= w["total"] + 0.5 and w["total"] - stages < 0.05 * w["total"]


def _pm(e, d=3):
    return f"{e['mean']:.{d}f} ± {e['se']:.{d}f}"


def _ci(e):
    return f"{e['mean']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}]"


def expected_doc_rows(res) -> list[str]:
    rows = []
    for p in res["summary"]["matched"]:
        b, w = p["bo4_win_rate"], p["win_rate"]
        rows.append(f"| {p['kl']:.2f} | {_pm(b['ctrl'])} | {_pm(b['raw'])} | {_ci(b['diff'])} | "
                    f"{_pm(w['ctrl'])} | {_pm(w['raw'])} | {_ci(w['diff'])} |")
    return rows


def expected_readme(res) -> str:
    p = res["summary"]["matched"][-1]
    b = p["bo4_win_rate"]
    return (f"best-of-4 win rate {b['ctrl']['mean']:.2f} (CTRL) vs {b['raw']['mean']:.2f} (raw reward) at matched "
            f"KL {p['kl']:.1f} nats, difference {_ci(b['diff'])}")


def test_quoted_numbers_equal_the_json(res):
    doc = (ROOT / "docs" / "games_reproductions.md").read_text(encoding="utf-8")
    for line in expected_doc_rows(res):
        assert line in doc, f"docs/games_reproductions.md: expected {line!r} (from {RES.name})"
    assert f"{res['wall_s']['total'] / 60:.1f} min on 2 loaded CPU cores" in doc
    assert expected_readme(res) in (ROOT / "README.md").read_text(encoding="utf-8")

"""The committed results of experiments/online_pairwise_small_lm.py (IPO-MD vs online IPO vs online DPO on the small
LM): win rates, standard errors and outcome counts recomputed from the saved per-prompt lexicon scores with a numpy
loop, the across-seed means and 95% t-intervals from the per-seed values (SciPy's t quantile), the settings of each
method, stage wall times, and the README / docs numbers equal to the JSON."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "experiments" / "results" / "online_pairwise_small_lm.json"
LABELS = {"ipo_md": "IPO-MD", "online_ipo": "online IPO", "online_dpo": "online DPO", "nash_md": "Nash-MD"}


@pytest.fixture(scope="module")
def res():
    return json.loads(RES.read_text(encoding="utf-8"))


def _win_rate_loop(a, b):
    """Win rate over prompts (ties ½), SE = unbiased sd of the per-prompt rates / √P, and outcome counts."""
    w, wins, ties, losses = [], 0, 0, 0
    for ai, bi in zip(a, b, strict=True):
        s = 0.0
        for x in ai:
            for y in bi:
                wins += x > y
                ties += x == y
                losses += x < y
                s += 1.0 if x > y else 0.5 if x == y else 0.0
        w.append(s / (len(ai) * len(bi)))
    w = np.array(w)
    return w.mean(), math.sqrt(((w - w.mean()) ** 2).sum() / (len(w) - 1) / len(w)), wins, ties, losses


def _t95(v):
    v = np.asarray(v, np.float64)
    m = v.sum() / len(v)
    half = stats.t.ppf(0.975, len(v) - 1) * math.sqrt(((v - m) ** 2).sum() / (len(v) - 1)) / math.sqrt(len(v))
    return m, m - half, m + half


def test_design(res):
    s = res["settings"]
    assert len(s["seeds"]) >= 3 and len(set(s["seeds"])) == len(s["seeds"])
    assert {"ipo_md", "online_ipo", "online_dpo"} <= set(s["methods"]) == set(res["runs"])
    m = res["methods"]
    assert m["ipo_md"]["loss"] == m["online_ipo"]["loss"] == "ipo" and m["online_dpo"]["loss"] == "dpo"
    assert m["ipo_md"]["mixture_beta"] > 0 and m["online_ipo"]["mixture_beta"] == m["online_dpo"]["mixture_beta"] == 0
    assert m["ipo_md"]["hparams"] == m["online_ipo"]["hparams"]  # IPO-MD differs from online IPO only in β_mix
    for meth in s["methods"]:
        assert [r["seed"] for r in res["runs"][meth]] == s["seeds"]
        for r in res["runs"][meth]:
            assert len(r["policy_scores"]) == len(res["eval_prompts"]) == 12
            assert all(len(row) == s["eval_n"] for row in r["policy_scores"] + r["sft_scores"])
            assert max(e["step"] for e in r["history"]) == s["steps"]


def test_config_of_each_method_is_what_the_json_says(res):
    from experiments.online_pairwise_small_lm import method_config

    for meth, m in res["methods"].items():
        c = method_config(meth, [f"train.steps={res['settings']['steps']}"])
        assert c.online.algorithm == m["algorithm"] and c.loss.name == m["loss"]
        assert dict(c.loss.hparams) == m["hparams"] and c.online.mixture_beta == m["mixture_beta"]
        assert c.online.preference == "bradley_terry" and c.online.num_samples == 2


def test_win_rates_and_rewards_recomputed_from_scores(res):
    for meth in res["runs"]:
        for r in res["runs"][meth]:
            wr, se, wins, ties, losses = _win_rate_loop(r["policy_scores"], r["sft_scores"])
            assert r["win_rate"] == pytest.approx(wr, abs=1e-12)
            assert r["se"] == pytest.approx(se, rel=1e-9, abs=1e-12)
            assert (r["counts"]["wins"], r["counts"]["ties"], r["counts"]["losses"]) == (wins, ties, losses)
            for key, sc in (("policy_reward", r["policy_scores"]), ("sft_reward", r["sft_scores"])):
                assert r[key] == pytest.approx(np.mean(sc), abs=1e-12)
            assert np.all(np.abs(np.array(r["policy_scores"] + r["sft_scores"])) < 1)  # lexicon ∈ (−1, 1)
            assert r["kl_k3"] >= 0 and r["kl_k1_se"] >= 0


def test_across_seed_summary_is_the_t_interval(res):
    for meth, runs in res["runs"].items():
        for key in ("win_rate", "policy_reward", "kl_k1", "kl_k3"):
            m, lo, hi = _t95([r[key] for r in runs])
            got = res["summary"][meth][key]
            assert got["n"] == len(runs)
            assert (got["mean"], got["lo"], got["hi"]) == pytest.approx((m, lo, hi), rel=1e-9, abs=1e-12)


def test_wall_times(res):
    w = res["wall_s"]
    stages = w["sft"] + sum(sum(w[k]) for m in res["runs"] for k in (m, f"eval_{m}"))
    assert stages <= w["total"] + 0.5 and w["total"] - stages < 0.05 * w["total"]  # the stages are the run
    assert all(len(w[k]) == len(res["settings"]["seeds"]) for m in res["runs"] for k in (m, f"eval_{m}"))


def _ci(s, d=2):
    return f"{s['mean']:.{d}f} [{s['lo']:.{d}f}, {s['hi']:.{d}f}]"


def expected_doc_lines(res) -> list[str]:
    """The lines docs/games_reproductions.md quotes, formatted from the JSON."""
    w, s = res["wall_s"], res["settings"]
    lines = [f"{w['total'] / 60:.1f} min in all", f"SFT {w['sft']:.0f} s"]
    for m in res["runs"]:
        sm = res["summary"][m]
        lines.append(f"| {LABELS[m]} | {_ci(sm['win_rate'])} | {_ci(sm['policy_reward'])} | {_ci(sm['kl_k1'], 1)} | "
                     f"{np.mean(w[m]):.0f} s + {np.mean(w[f'eval_{m}']):.0f} s |")
        for r in res["runs"][m]:
            lines.append(f"| {LABELS[m]} | {r['seed']} | {r['win_rate']:.3f} ± {r['se']:.3f} | "
                         f"{r['sft_reward']:.2f} → {r['policy_reward']:.2f} | {r['kl_k1']:.1f} ± {r['kl_k1_se']:.1f} |")
    lines.append(f"{s['steps']} steps")
    return lines


def expected_readme_line(res) -> str:
    sm = res["summary"]
    parts = [f"{LABELS[m]} {_ci(sm[m]['win_rate'])}" for m in res["runs"]]
    return "win rate against the SFT policy under the lexicon reward: " + ", ".join(parts)


def test_quoted_numbers_equal_the_json(res):
    doc = (ROOT / "docs" / "games_reproductions.md").read_text(encoding="utf-8")
    for line in expected_doc_lines(res):
        assert line in doc, f"docs/games_reproductions.md: expected {line!r} (from {RES.name})"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert expected_readme_line(res) in readme, f"README.md: expected {expected_readme_line(res)!r}"


def test_settings_and_statements_of_the_docs(res):
    """The settings docs/games_reproductions.md states, and its qualitative reading of the table."""
    from experiments.ipo_md_small_lm import get_config

    s, m, sm = res["settings"], res["methods"], res["summary"]
    assert (s["sft_steps"], s["steps"], s["lr"], s["max_new_tokens"], s["pref_temp"]) == (120, 20, 1e-4, 32, 0.1)
    assert (s["eval_n"], s["eval_seed"], len(s["seeds"])) == (4, 100, 3) and get_config().data.batch_size == 8
    assert m["ipo_md"]["hparams"]["beta"] == m["online_dpo"]["hparams"]["beta"] == 0.1
    assert m["ipo_md"]["hparams"]["ipo_average"] is False and m["ipo_md"]["mixture_beta"] == 0.5
    assert all(v["win_rate"]["lo"] < 0.5 < v["win_rate"]["hi"] for v in sm.values())  # "every interval contains ½"
    assert 1.5 < sm["online_dpo"]["kl_k1"]["mean"] / sm["online_ipo"]["kl_k1"]["mean"] < 3  # "about twice"
    width = {k: v["kl_k1"]["hi"] - v["kl_k1"]["lo"] for k, v in sm.items()}
    assert min(width, key=width.get) == "online_ipo"  # "online IPO's KL the tightest across seeds"
    sft = [r["sft_reward"] for r in res["runs"]["ipo_md"]]
    for runs in res["runs"].values():  # one evaluation seed per training seed: the same SFT samples per seed
        assert [r["sft_reward"] for r in runs] == sft
        assert [r["sft_scores"] for r in runs] == [r["sft_scores"] for r in res["runs"]["ipo_md"]]

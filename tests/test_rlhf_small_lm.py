"""The committed results of the SFT → reward model → GRPO/PPO → win-rate pipeline (experiments/rlhf_small_lm.py):
internal consistency of experiments/results/rlhf_small_lm.json and rlhf_small_lm_kl0.5.json (win rates and standard errors recomputed from the
saved per-prompt scores with a numpy loop, across-seed aggregates from the per-seed values, the two judges scoring
the same completions, stage wall times) and the README / docs numbers equal to the JSON."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "experiments" / "results" / "rlhf_small_lm.json"  # the driver's defaults (β = 0.1)
RES_KL = ROOT / "experiments" / "results" / "rlhf_small_lm_kl0.5.json"  # the same with --kl-coef 0.5
ALGOS, JUDGES = ("grpo", "ppo"), ("rm", "lexicon")


@pytest.fixture(scope="module", params=[RES, RES_KL], ids=["kl0.1", "kl0.5"])
def res(request):
    return json.loads(request.param.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def res_default():
    return json.loads(RES.read_text(encoding="utf-8"))


def _win_rate_loop(a, b):
    """Win rate over prompts (ties ½), SE = unbiased sd of the per-prompt rates / √P, and outcome counts."""
    w, wins, ties = [], 0, 0
    for ai, bi in zip(a, b, strict=True):
        s = 0.0
        for x in ai:
            for y in bi:
                wins += x > y
                ties += x == y
                s += 1.0 if x > y else 0.5 if x == y else 0.0
        w.append(s / (len(ai) * len(bi)))
    w = np.array(w)
    return w.mean(), math.sqrt(((w - w.mean()) ** 2).sum() / (len(w) - 1) / len(w)), wins, ties


def test_design(res):
    s = res["settings"]
    assert len(s["seeds"]) >= 3 and len(set(s["seeds"])) == len(s["seeds"])
    for a in ALGOS:
        assert [r["seed"] for r in res["runs"][a]] == s["seeds"]
        for r in res["runs"][a]:
            assert len(r["rm"]["policy_scores"]) == len(res["eval_prompts"]) == 12
            assert all(len(row) == s["eval_n"] for row in r["rm"]["policy_scores"])
            assert max(e["step"] for e in r["history"]) == s["rl_steps"]


def test_win_rates_and_rewards_recomputed_from_scores(res):
    for a in ALGOS:
        for r in res["runs"][a]:
            for j in JUDGES:
                e = r[j]
                wr, se, wins, ties = _win_rate_loop(e["policy_scores"], e["sft_scores"])
                assert e["win_rate"] == pytest.approx(wr, abs=1e-12)
                assert e["se"] == pytest.approx(se, rel=1e-9, abs=1e-12)
                assert (e["counts"]["wins"], e["counts"]["ties"]) == (wins, ties)
                for key, sc in (("policy", e["policy_scores"]), ("sft", e["sft_scores"])):
                    m = np.mean(sc, axis=1)
                    assert e[f"{key}_reward"] == pytest.approx(m.mean(), abs=1e-12)
                    assert e[f"{key}_reward_se"] == pytest.approx(m.std(ddof=1) / math.sqrt(len(m)), rel=1e-9)
            lex = np.array(r["lexicon"]["policy_scores"] + r["lexicon"]["sft_scores"])
            assert np.all(np.abs(lex) < 1)  # the lexicon reward s/√(s²+15) lies in (-1, 1)


def test_both_judges_score_the_same_completions(res):
    for a in ALGOS:
        for r in res["runs"][a]:
            assert r["rm"]["examples"] == r["lexicon"]["examples"]
            assert r["rm"]["sft_examples"] == r["lexicon"]["sft_examples"]
            assert r["kl_k3"] >= 0 and r["kl_k3_se"] >= 0


def test_across_seed_summary(res):
    for a in ALGOS:
        runs, summ = res["runs"][a], res["summary"][a]
        cols = {f"win_rate_{j}": [r[j]["win_rate"] for r in runs] for j in JUDGES}
        cols.update({f"policy_reward_{j}": [r[j]["policy_reward"] for r in runs] for j in JUDGES})
        cols.update(kl_k1=[r["kl_k1"] for r in runs], kl_k3=[r["kl_k3"] for r in runs])
        for k, v in cols.items():
            v = np.array(v)
            assert summ[k]["n"] == len(v)
            assert summ[k]["mean"] == pytest.approx(v.sum() / len(v), abs=1e-12)
            sd = math.sqrt(((v - v.mean()) ** 2).sum() / (len(v) - 1))
            assert summ[k]["sd"] == pytest.approx(sd, rel=1e-9, abs=1e-15)
            assert summ[k]["se"] == pytest.approx(sd / math.sqrt(len(v)), rel=1e-9, abs=1e-15)


def test_reward_model_and_wall_times(res):
    rm = res["reward_model"]
    assert rm["heldout_accuracy"] == rm["heldout"][-1]["accuracy"]
    assert rm["heldout"][-1]["step"] == rm["steps"]
    assert 0 <= rm["heldout_accuracy"] <= 1 and rm["heldout_accuracy"] * rm["heldout_pairs"] == pytest.approx(
        round(rm["heldout_accuracy"] * rm["heldout_pairs"]), abs=1e-6)  # a count of held-out pairs
    w = res["wall_s"]
    stages = w["sft"] + w["reward_model"] + sum(sum(w[k]) for a in ALGOS for k in (a, f"eval_{a}"))
    assert stages <= w["total"] + 0.5 and w["total"] - stages < 0.05 * w["total"]  # the stages are the run
    assert all(len(w[k]) == len(res["settings"]["seeds"]) for a in ALGOS for k in (a, f"eval_{a}"))


def _pm(s, d=2):
    return f"{s['mean']:.{d}f} ± {s['se']:.{d}f}"


def expected_lines(res) -> list[str]:
    """The numbers README.md and docs/training.md quote, formatted from the JSON."""
    w, summ = res["wall_s"], res["summary"]
    lines = [f"held-out accuracy {res['reward_model']['heldout_accuracy']:.2f}",
             f"SFT {w['sft']:.0f} s, reward model {w['reward_model']:.0f} s",
             f"{w['total'] / 60:.1f} min in all"]
    for a in ALGOS:
        s = summ[a]
        lines.append(f"| {a.upper()} | {_pm(s['win_rate_rm'])} | {_pm(s['win_rate_lexicon'])} | "
                     f"{_pm(s['policy_reward_lexicon'])} | {_pm(s['kl_k1'], 1)} | "
                     f"{np.mean(w[a]):.0f} s + {np.mean(w[f'eval_{a}']):.0f} s |")
    return lines


def expected_doc_rows(res) -> list[str]:
    rows = []
    for a in ALGOS:
        for r in res["runs"][a]:
            rows.append(f"| {a.upper()} | {r['seed']} | {r['rm']['win_rate']:.3f} ± {r['rm']['se']:.3f} | "
                        f"{r['lexicon']['win_rate']:.3f} ± {r['lexicon']['se']:.3f} | "
                        f"{r['lexicon']['sft_reward']:.2f} → {r['lexicon']['policy_reward']:.2f} | "
                        f"{r['kl_k1']:.1f} ± {r['kl_k1_se']:.1f} |")
    return rows


@pytest.mark.parametrize("doc", ["README.md", "docs/training.md"])
def test_quoted_numbers_equal_the_json(res_default, doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for line in expected_lines(res_default):
        assert line in text, f"{doc}: expected {line!r} (from {RES.name})"
    if doc == "docs/training.md":
        for line in expected_doc_rows(res_default):
            assert line in text, f"{doc}: expected {line!r} (from {RES.name})"
        kl = json.loads(RES_KL.read_text(encoding="utf-8"))
        assert kl["settings"] == {**res_default["settings"], "kl_coef": 0.5}
        for line in expected_lines(kl):
            assert line in text, f"{doc}: expected {line!r} (from {RES_KL.name})"


def test_eval_prompts_are_the_training_prompts(tmp_path, res_default):
    from experiments.rlhf_small_lm import write_prompts
    from jalign.data import builtin
    from jalign.train.evaluate import load_prompts

    prompts = write_prompts(tmp_path / "p.jsonl")
    assert load_prompts(tmp_path / "p.jsonl") == prompts == res_default["eval_prompts"]  # the newline survives the file
    assert len(prompts) == 12 and all(p.startswith("Write a short review of ") and p.endswith(".\n") for p in prompts)
    assert set(prompts) == {r["prompt"] for r in builtin.load("sentiment_pairs", n=256, seed=0)}  # RL's prompts

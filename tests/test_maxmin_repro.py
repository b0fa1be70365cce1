"""The maxmin reproduction: its committed results checked with numpy, its planted problem against its
definition, and its claim rules on synthetic results (the pipeline is not rerun here)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jalign.reporting import t_interval
from paper_repro import maxmin as repro

RESULTS = Path(__file__).resolve().parents[1] / "figures" / "maxmin" / "results.json"


@pytest.fixture(scope="module")
def res():
    return json.loads(RESULTS.read_text())


def test_committed_results_are_consistent_and_claims_recompute(res):
    cfg = res["config"]
    s = cfg["seeds"]
    gmin = np.asarray(res["gaps"]["gap_minority"])
    assert s >= 3 and gmin.shape == (len(cfg["shares"]), len(cfg["diversities"]), s)
    assert np.all(gmin >= -1e-5) and np.all(np.asarray(res["gaps"]["gap_majority"]) >= -1e-5)  # regrets
    # diversity 0: both groups share one reward, so both gaps are estimation error only (small)
    assert np.max(gmin[:, 0]) < 0.1
    for i in range(gmin.shape[0]):
        for j in range(gmin.shape[1]):
            np.testing.assert_allclose(res["gap_summary"]["gap_minority"][i][j], t_interval(gmin[i, j]))
    ari = np.asarray(res["ari"])
    assert ari.shape == (s, len(cfg["em_labels_per_user"])) and np.all(ari <= 1 + 1e-6)
    mm = {k: np.asarray(v) for k, v in res["maxmin"].items()}
    # the egalitarian objective of μ is min_g E_μ[r_g] − 0 = 0 (rewards centred under μ)
    np.testing.assert_allclose(mm["reference/egalitarian"], 0.0, atol=1e-5)
    np.testing.assert_allclose(mm["reference/majority"], 0.0, atol=1e-5)
    # each group's own optimum serves that group best among the policies compared (KL-free utilities too)
    assert np.all(mm["majority_opt/majority"] >= mm["minority_opt/majority"])
    worst = np.minimum(mm["maxmin_em/majority"], mm["maxmin_em/minority"]) - np.minimum(
        mm["single/majority"], mm["single/minority"])
    mean, lo, hi = t_interval(worst)
    assert res["claims"][5]["evidence"]["interval"] == pytest.approx([lo, hi])
    assert [c["status"] for c in repro.claims(res)] == [c["status"] for c in res["claims"]]


def test_planted_problem_matches_its_definition():
    k, u, n = 6, 40, 7
    with jax.enable_x64(False):
        for d, rho in ((0.0, 1.0), (1.0, -1.0), (0.5, 0.0)):
            r, groups, uid, pairs, labels = repro._problem(jax.random.key(1), 0.25, d, u, k, n, 2.0)
            r, groups, uid, pairs = map(np.asarray, (r, groups, uid, pairs))
            np.testing.assert_allclose(r.mean(1), 0.0, atol=1e-5)  # centred under the uniform μ
            if rho == 1.0:
                np.testing.assert_allclose(r[1], r[0], atol=1e-5)
            if rho == -1.0:
                np.testing.assert_allclose(r[1], -r[0], atol=1e-5)
            assert groups.sum() == 10 and list(groups[:10]) == [1] * 10  # round(0.25·40) minority users first
            assert np.all(np.bincount(uid) == n) and np.all(pairs[:, 0] != pairs[:, 1])
            assert set(np.unique(np.asarray(labels))) <= {0, 1}


def _synthetic(*, minority_extra, share_extra, ari_last, gain, loss, oracle_margin=0.1, s=4):
    a, d = 2, 2
    rng = np.random.default_rng(0)
    gmaj = 0.1 + 0.01 * rng.random((a, d, s))
    gmin = gmaj.copy()
    gmin[0, 1] += np.asarray(minority_extra)
    gmin[1, 1] += np.asarray(minority_extra) - np.asarray(share_extra)
    single = {"majority": np.full(s, 2.0), "minority": np.full(s, -1.0)}
    em = {"majority": single["majority"] - np.asarray(loss), "minority": single["minority"] + np.asarray(gain)}
    mm = {}
    for p, v in (("single", single), ("maxmin_em", em), ("maxmin_true", em), ("majority_opt", single),
                 ("minority_opt", single), ("reference", {"majority": np.zeros(s), "minority": np.zeros(s)})):
        mm[f"{p}/majority"], mm[f"{p}/minority"] = list(v["majority"]), list(v["minority"])
        mm[f"{p}/egalitarian"] = list(np.minimum(v["majority"], v["minority"]))
    mm["maxmin_true/egalitarian"] = list(np.asarray(mm["maxmin_em/egalitarian"]) + oracle_margin)
    mm["ari"] = [1.0] * s
    ari = np.zeros((s, 2))
    ari[:, 1] = ari_last
    return {"config": {"seeds": s, "shares": [0.1, 0.5], "diversities": [0.0, 1.0], "em_labels_per_user": [1, 40],
                       "em_share": 0.3, "em_diversity": 0.75, "em_restarts": 2, "maxmin_share": 0.2,
                       "maxmin_diversity": 0.75, "beta": 0.5},
            "gaps": {"gap_minority": gmin.tolist(), "gap_majority": gmaj.tolist()},
            "ari": ari.tolist(), "em_objective_monotone": [True, True], "maxmin": mm}


def test_claim_rules_pass_fail_and_inconclusive_on_synthetic_results():
    good = _synthetic(minority_extra=[2.0, 2.2, 1.9, 2.1], share_extra=[1.0, 1.1, 0.9, 1.05],
                      ari_last=[0.97, 0.99, 1.0, 0.98], gain=[2.0, 2.1, 1.9, 2.2], loss=[1.0, 1.1, 0.9, 1.0])
    cl = repro.claims(good)
    assert [c["status"] for c in cl] == ["holds"] * 8
    assert all(c["source"] == "reconstruction" and c["evidence"]["rule"] in repro.RULES.values() for c in cl)
    bad = _synthetic(minority_extra=[-0.05, -0.06, -0.05, -0.07], share_extra=[-1.0, -1.1, -0.9, -1.05],
                     ari_last=[0.5, 0.6, 0.55, 0.52], gain=[-1.0, -1.1, -0.9, -1.0], loss=[2.0, 2.1, 1.9, 2.2],
                     oracle_margin=-0.01)
    st = [c["status"] for c in repro.claims(bad)]
    assert st[0] == st[1] == st[3] == st[5] == st[6] == st[7] == "does not hold"
    # ARI hovering around the 0.9 threshold, gain − loss around 0: inconclusive
    mixed = _synthetic(minority_extra=[2.0, 2.2, 1.9, 2.1], share_extra=[1.0, 1.1, 0.9, 1.05],
                       ari_last=[0.8, 1.0, 0.85, 0.99], gain=[2.0, 1.0, 1.5, 1.2], loss=[1.0, 1.8, 1.2, 1.4])
    st = [c["status"] for c in repro.claims(mixed)]
    assert st[3] == "inconclusive" and st[6] == "inconclusive"


# ------------------------------------------------------------------------------------------------------------
# The small-LM half: synthetic results (the claims' pass rules) and the committed run (recomputed with numpy)

def _lm_samples(rates, k=4, p=2):
    """Held-out samples whose win rate vs an all-zero reference is rates[g] for each group's true reward."""
    out = {"logp": [0.0] * (k * p), "ref_logp": [0.0] * (k * p), "length": [10] * (k * p)}
    for key, rate in zip(("lexicon", "conciseness"), rates, strict=True):
        wins = round(rate * k * p)
        out[key] = [1.0] * wins + [-1.0] * (k * p - wins)
    return out


def _lm_synthetic(single, maxmin, ari):
    """``single``/``maxmin``: per seed (majority, minority) win rates in multiples of 1/8."""
    runs = [{"method": m, "seed": s, "history": [{"step": 1, "reward/maxmin/group": 1.0}],
             "samples": _lm_samples(rates)} for m, per in (("single", single), ("maxmin", maxmin))
            for s, rates in enumerate(per)]
    zero = {"lexicon": [0.0] * 8, "conciseness": [0.0] * 8, "logp": [0.0] * 8, "ref_logp": [0.0] * 8,
            "length": [10] * 8}
    pool = {"prompt_index": [0, 0, 1, 1], "texts": ["a"] * 4, "lexicon": [0.0, 1.0, 0.0, 2.0],
            "conciseness": [1.0, 0.0, 3.0, 0.0]}
    rms = {"g0": {"pool_scores": [0.0, 1.0, 0.0, 1.0]}, "g1": {"pool_scores": [1.0, 0.0, 1.0, 0.0]},
           "pooled": {"pool_scores": [0.0, 1.0, 1.0, 0.0]}}
    cfg = {"num_users": 20, "minority_users": 6, "labels_per_user": 40, "rm_steps": 2, "num_samples": 4,
           "rl_steps": 2, "heldout_prompts": ["x", "y"], "eval_samples_per_prompt": 4}
    return {"lm": {"config": cfg, "runs": runs, "reference_samples": zero, "pool": pool, "reward_models": rms,
                   "em": {"ari": list(ari)}}}


def test_lm_claim_rules_pass_fail_and_inconclusive_on_synthetic_results():
    single = [(0.875, 0.25), (0.875, 0.125), (0.75, 0.25)]
    maxmin = [(0.75, 0.625), (0.75, 0.75), (0.75, 0.625)]
    cl = repro._lm_claims(_lm_synthetic(single, maxmin, [0.95, 0.97, 1.0]))
    assert [c["status"] for c in cl] == ["holds"] * 3
    assert all(c["source"] == "reconstruction" and c["evidence"]["rule"] in repro.RULES.values() for c in cl)
    # worst group: maxmin − single = 0.375, 0.625, 0.375
    assert cl[0]["evidence"]["estimate"] == pytest.approx(np.mean([0.375, 0.625, 0.375]))
    cl = repro._lm_claims(_lm_synthetic(maxmin, single, [0.3, 0.4, 0.35]))
    assert [c["status"] for c in cl] == ["does not hold"] * 3
    mixed = [(0.75, 0.625), (0.75, 0.0), (0.75, 0.5)]  # one seed where MaxMin fails the minority
    cl = repro._lm_claims(_lm_synthetic(single, mixed, [0.8, 1.0, 0.85]))
    assert [c["status"] for c in cl] == ["inconclusive"] * 3
    # the RM accuracy on the pool: g0 orders lexicon perfectly and conciseness backwards
    acc = repro.lm_rm_accuracy(_lm_synthetic(single, maxmin, [1.0] * 3)["lm"])
    assert acc["g0/lexicon"] == 1.0 and acc["g0/conciseness"] == 0.0 and acc["g1/conciseness"] == 1.0


def _np_win(pol, ref, k):
    """Win rate with ties ½: per prompt all k×k comparisons, then the mean over prompts (numpy)."""
    a = np.reshape(pol, (-1, k))[:, :, None]
    b = np.reshape(ref, (-1, k))[:, None, :]
    return float(np.mean(np.mean((a > b) + 0.5 * (a == b), axis=(1, 2))))


def _np_ari(x, y):
    """Adjusted Rand index from the contingency table (Hubert & Arabie), numpy."""
    x, y = np.asarray(x), np.asarray(y)
    c2 = lambda v: v * (v - 1) / 2.0
    table = np.array([[np.sum((x == i) & (y == j)) for j in np.unique(y)] for i in np.unique(x)], np.float64)
    s, a, b = c2(table).sum(), c2(table.sum(1)).sum(), c2(table.sum(0)).sum()
    exp = a * b / c2(len(x))
    return 1.0 if a + b == 2 * exp else (s - exp) / ((a + b) / 2 - exp)


def _lm_numbers(res):
    """Per method {majority, minority, worst, kl, length}: per-seed lists recomputed from the saved samples."""
    lm = res["lm"]
    k = lm["config"]["eval_samples_per_prompt"]
    ref = lm["reference_samples"]
    out = {}
    for m in ("single", "maxmin"):
        runs = sorted((r for r in lm["runs"] if r["method"] == m), key=lambda r: r["seed"])
        maj = np.array([_np_win(r["samples"]["lexicon"], ref["lexicon"], k) for r in runs])
        mino = np.array([_np_win(r["samples"]["conciseness"], ref["conciseness"], k) for r in runs])
        out[m] = {"majority": maj, "minority": mino, "worst": np.minimum(maj, mino),
                  "kl": np.array([np.mean(np.subtract(r["samples"]["logp"], r["samples"]["ref_logp"])) for r in runs]),
                  "length": np.array([np.mean(r["samples"]["length"]) for r in runs])}
    return out


def test_committed_lm_numbers_recompute_from_the_saved_scores(res):
    lm = res["lm"]
    cfg = lm["config"]
    assert cfg["seeds"] >= 3 and len(lm["runs"]) == 2 * cfg["seeds"]
    n = len(cfg["heldout_prompts"]) * cfg["eval_samples_per_prompt"]
    assert all(len(r["samples"]["lexicon"]) == n for r in lm["runs"])
    # the planted groups, the labels and EM's groups
    planted = np.asarray(lm["planted_groups"])
    assert planted.sum() == cfg["minority_users"] and len(planted) == cfg["num_users"]
    assert np.all(np.bincount(lm["labels"]["user"]) == cfg["labels_per_user"])
    pi = np.asarray(lm["pool"]["prompt_index"])
    pairs = np.asarray(lm["labels"]["pairs"])
    assert np.all(pi[pairs[:, 0]] == pi[pairs[:, 1]]) and np.all(pairs[:, 0] != pairs[:, 1])  # same prompt
    aris = [_np_ari(planted, f) for f in lm["em"]["found"]]
    np.testing.assert_allclose(lm["em"]["ari"], aris, atol=1e-5)
    # the reward models' data: each EM group's users' pairs, and all pairs for the pooled one
    found = np.asarray(lm["em"]["found"][0])
    uid = np.asarray(lm["labels"]["user"])
    for g in (0, 1):
        assert lm["reward_models"][f"g{g}"]["pairs"] == int(np.sum(found[uid] == g))
    assert lm["reward_models"]["pooled"]["pairs"] == len(uid)
    np.testing.assert_allclose(lm["reward_models"]["maxmin_refs"],
                               [np.mean(lm["reward_models"][g]["pool_scores"]) for g in ("g0", "g1")], rtol=1e-6)
    # win rates and the claims' evidence, recomputed with numpy
    nums = _lm_numbers(res)
    ps = repro.lm_per_seed(lm)
    for m in ("single", "maxmin"):
        for key in ("majority", "minority", "worst", "kl", "length"):
            np.testing.assert_allclose(ps[m][key], nums[m][key], rtol=1e-9, atol=1e-12)
    lm_claims = res["claims"][8:]
    assert len(lm_claims) == 3
    d = nums["maxmin"]["worst"] - nums["single"]["worst"]
    assert lm_claims[0]["evidence"]["estimate"] == pytest.approx(d.mean())
    assert lm_claims[0]["evidence"]["interval"] == pytest.approx(list(t_interval(d)[1:]))
    gain = nums["maxmin"]["minority"] - nums["single"]["minority"]
    loss = nums["single"]["majority"] - nums["maxmin"]["majority"]
    assert lm_claims[1]["evidence"]["interval"] == pytest.approx(list(t_interval(gain - loss)[1:]))
    assert lm_claims[2]["evidence"]["estimate"] == pytest.approx(np.mean(aris), abs=1e-6)
    assert [c["status"] for c in repro.claims(res)] == [c["status"] for c in res["claims"]]


def _lm_quoted(res):
    """The numbers README.md and docs/rewards.md quote, formatted from the committed JSON."""
    nums = _lm_numbers(res)
    s, m = nums["single"], nums["maxmin"]
    mean, lo, hi = t_interval(m["worst"] - s["worst"])
    f = lambda x: f"{np.mean(x):.3f}"
    readme = [f"served the minority (win rate vs SFT {f(s['minority'])})", f"left the majority worst off ({f(s['majority'])})",
              f"raised the worst group's win rate to {f(m['worst'])}", f"(+{mean:.3f} [{lo:.3f}, {hi:.3f}], inconclusive)",
              f"EM ARI {np.mean(res['lm']['em']['ari']):.3f}"]
    docs = [f"| majority's win rate (lexicon) | {f(s['majority'])} | {f(m['majority'])} |",
            f"| minority's win rate (conciseness) | {f(s['minority'])} | {f(m['minority'])} |",
            f"| worst group's win rate | {f(s['worst'])} | {f(m['worst'])} |",
            f"| KL to the reference (nats, MC) | {np.mean(s['kl']):.1f} | {np.mean(m['kl']):.1f} |",
            f"| mean length (tokens) | {np.mean(s['length']):.1f} | {np.mean(m['length']):.1f} |",
            f"{res['lm']['seconds']:.0f} s of the committed run"]
    return readme, docs


def test_readme_and_docs_quote_the_committed_lm_numbers(res):
    readme, docs = _lm_quoted(res)
    root = RESULTS.parents[2]
    text = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    for line in readme:
        assert line in text, f"README.md: expected {line!r}"
    text = (root / "docs" / "rewards.md").read_text(encoding="utf-8")
    flat = " ".join(text.split())
    for line in docs:
        assert line in text or line in flat, f"docs/rewards.md: expected {line!r}"

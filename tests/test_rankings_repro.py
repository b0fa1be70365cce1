"""The rankings reproduction's exact pieces against numpy, the AUC against a brute-force count, and its claim
rules on synthetic results (the whole reproduction is not rerun here)."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import diagnostics as D
from jalign.envs import rankings as R
from paper_repro import rankings as repro


def _np_bandit(seed, x=6, k=5):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(x, k))
    g = 2.0 * rng.normal(size=(x, k))
    ref = g - np.log(np.exp(g).sum(-1, keepdims=True))
    return r, ref


def _np_population_loss(theta, r, ref, beta):
    total = 0.0
    for x in range(r.shape[0]):
        for a in range(r.shape[1]):
            for b in range(r.shape[1]):
                if a != b:
                    h = (theta[x, a] - ref[x, a]) - (theta[x, b] - ref[x, b])
                    p = 1 / (1 + np.exp(-(r[x, a] - r[x, b])))
                    total += np.exp(ref[x, a] + ref[x, b]) * p * np.log1p(np.exp(-beta * h)) / r.shape[0]
    return total


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_optimum_ranking_accuracy_equals_idealised_exactly(beta):
    r, ref = _np_bandit(0)
    # numpy: the optimum π* ∝ μ·exp(r/β), its pairwise ranking, and the idealised accuracy formula
    star = ref + r / beta
    star = star - np.log(np.exp(star - star.max(-1, keepdims=True)).sum(-1, keepdims=True)) - star.max(-1, keepdims=True)
    right, ideal = [], []
    for x in range(r.shape[0]):
        for a in range(r.shape[1]):
            for b in range(a + 1, r.shape[1]):
                w, l_ = (a, b) if r[x, a] >= r[x, b] else (b, a)
                p = 1 / (1 + np.exp(-(r[x, w] - r[x, l_])))
                right.append(star[x, w] > star[x, l_])
                ideal.append(ref[x, w] - ref[x, l_] + np.log(p / (1 - p)) / beta > 0)
    assert np.mean(right) == np.mean(ideal)
    with jax.enable_x64(True):
        b = R.ContextualBandit(rewards=jnp.asarray(r), ref_logps=jnp.asarray(ref),
                               context_logps=jnp.full((r.shape[0],), -np.log(r.shape[0])))
        ctx, w, l_, p = R.preference_pairs(b)
        rw, rl = R.pair_logps(b.ref_logps, ctx, w, l_)
        ideal_j = float(D.idealized_ranking_accuracy(rw, rl, p, beta))
        newton = R.dpo_newton(b, beta, iters=40)
        acc_newton = float(D.ranking_accuracy(*R.pair_logps(newton, ctx, w, l_)))
        np.testing.assert_allclose(np.asarray(R.dpo_optimum_logps(b, beta)), star, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(newton), star, rtol=0, atol=1e-9)
        # the population loss against the numpy transcription, and its gradient is 0 at π*
        theta = ref + np.random.default_rng(1).normal(size=ref.shape)
        assert float(R.population_dpo_loss(jnp.asarray(theta), b, beta)) == pytest.approx(
            _np_population_loss(theta, r, ref, beta), rel=1e-12)
        g = jax.grad(R.population_dpo_loss)(jnp.asarray(star), b, beta)
        assert float(jnp.max(jnp.abs(g))) < 1e-12
    assert ideal_j == np.mean(ideal) == acc_newton


def test_gradient_descent_matches_numpy_steps():
    r, ref = _np_bandit(2, x=2, k=3)
    beta, lr = 0.5, 3.0
    with jax.enable_x64(True):
        b = R.ContextualBandit(rewards=jnp.asarray(r), ref_logps=jnp.asarray(ref),
                               context_logps=jnp.full((2,), -np.log(2.0)))
        out = np.asarray(R.dpo_gradient_descent(b, beta, lr=lr, budgets=(0, 2)))
    theta = ref.copy()
    for _ in range(2):  # finite-difference gradient of the numpy loss
        g = np.zeros_like(theta)
        for i in np.ndindex(theta.shape):
            e = np.zeros_like(theta)
            e[i] = 1e-6
            g[i] = (_np_population_loss(theta + e, r, ref, beta) - _np_population_loss(theta - e, r, ref, beta)) / 2e-6
        theta = theta - lr * g
    logsm = lambda t: t - np.log(np.exp(t).sum(-1, keepdims=True))
    np.testing.assert_allclose(out[0], ref, atol=1e-12)
    np.testing.assert_allclose(out[1], logsm(theta), atol=1e-7)


def test_roc_auc_equals_brute_force_pair_count():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 40).astype(np.float64)  # many ties
    lab = rng.random(40) < 0.4
    mask = rng.random(40) < 0.8
    pos, neg = s[mask & lab], s[mask & ~lab]
    brute = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
    assert float(D.roc_auc(s, lab, mask)) == pytest.approx(brute, abs=1e-6)
    assert float(jax.jit(D.roc_auc)(s, lab, mask)) == pytest.approx(brute, abs=1e-6)
    assert math.isnan(float(D.roc_auc(s, np.zeros(40, bool))))
    fpr, tpr = D.roc_curve(s[mask], lab[mask])
    assert np.trapezoid(tpr, fpr) == pytest.approx(brute, abs=1e-12)  # trapezoids count ties as ½
    with pytest.raises(ValueError, match="labels"):
        D.roc_curve(s, np.ones(40, bool))


def _synthetic(ideal, ref, acc_mid, narrow, wide, auc, *, newton_err=1e-12, star_equal=True):
    s = len(ideal)
    budgets = [0, 100]
    return {
        "config": {"seeds": s, "pairs_per_seed": 10, "budgets": budgets, "mid_budget": 100,
                   "narrow_margin": 1.0, "wide_margin": 4.0},
        "per_seed": {"ideal": list(ideal), "acc_star": list(ideal) if star_equal else [v - 0.1 for v in ideal],
                     "acc_newton": list(ideal), "acc_reference": list(ref),
                     "newton_max_abs_diff": [newton_err] * s, "min_abs_ideal_margin": [0.01] * s},
        "accuracy_by_budget": [[a0, a] for a0, a in zip(ref, acc_mid, strict=True)],
        "flip_fraction_narrow": [[0.0, v] for v in narrow],
        "flip_fraction_wide": [[0.0, v] for v in wide],
        "auc_by_budget": [[None, v] for v in auc],
    }


def _statuses(res):
    return [c["status"] for c in repro.claims(res)]


def test_claim_rules_pass_and_fail_on_synthetic_results():
    good = _synthetic([0.9, 0.91, 0.92], [0.5, 0.52, 0.48], [0.8, 0.79, 0.81], [0.9, 0.85, 0.88], [0.1, 0.12, 0.08],
                      [0.8, 0.82, 0.78])
    assert _statuses(good) == ["holds"] * 6
    for c in repro.claims(good):
        ev = c["evidence"]
        assert ev["kind"] in ("exact", "seeds") and ev["seeds"] == 3 and ev["rule"]
        assert (ev["interval"] is None) == (ev["kind"] == "exact")
    # the other side of every threshold
    bad = _synthetic([0.9, 0.91, 0.92], [0.95, 0.96, 0.97], [0.95, 0.96, 0.97], [0.1, 0.12, 0.08],
                     [0.9, 0.85, 0.88], [0.3, 0.32, 0.28], newton_err=1e-3)
    assert _statuses(bad) == ["does not hold"] * 6
    assert _statuses(_synthetic([0.9] * 3, [0.5] * 3, [0.8] * 3, [0.9] * 3, [0.1, 0.11, 0.12], [0.8] * 3,
                                star_equal=False))[0] == "does not hold"
    # straddling intervals: inconclusive
    mixed = _synthetic([0.9, 0.91, 0.92], [0.85, 0.95, 0.9], [0.85, 0.95, 0.9], [0.9, 0.85, 0.88],
                       [0.05, 0.45, 0.25], [0.4, 0.6, 0.55])
    assert [_statuses(mixed)[i] for i in (1, 2, 4, 5)] == ["inconclusive"] * 4
    assert all(c["source"] == "reconstruction" for c in repro.claims(mixed))
    # no budget with an AUC on every seed: inconclusive, not "does not hold"
    none = _synthetic([0.9] * 3, [0.5] * 3, [0.8] * 3, [0.9] * 3, [0.1] * 3, [None] * 3)
    assert _statuses(none)[5] == "inconclusive"


def test_t_interval_matches_the_t_quantile():
    mean, lo, hi = repro.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3), rel=1e-9)
    assert lo == pytest.approx(2 * mean - hi)


def test_bad_arguments_are_refused():
    b = R.random_ranking_bandit(jax.random.key(0), 2, 3)
    with pytest.raises(ValueError, match="beta"):
        R.dpo_optimum_logps(b, 0.0)
    with pytest.raises(ValueError, match="budgets"):
        R.dpo_gradient_descent(b, 0.1, lr=1.0, budgets=(10, 5))
    with pytest.raises(ValueError, match="lr"):
        R.dpo_gradient_descent(b, 0.1, lr=-1.0, budgets=(1,))
    with pytest.raises(ValueError, match="num_arms"):
        R.random_ranking_bandit(jax.random.key(0), 2, 1)
    with pytest.raises(ValueError, match="iters"):
        R.dpo_newton(b, 0.1, iters=0)


# ---------------------------------------------------------------------------------------------------------
# The small-LM half: the committed results data against numpy, and the claim rules on synthetic results.

COMMITTED = Path(__file__).resolve().parents[1] / "figures" / "rankings" / "results.json"


@pytest.fixture(scope="module")
def lm():
    return json.loads(COMMITTED.read_text())["lm"]


def _np_pairs(pairs, chosen=None, rejected=None):
    rw, rl = np.asarray(pairs["ref_chosen_logps"]), np.asarray(pairs["ref_rejected_logps"])
    w = rw if chosen is None else np.asarray(chosen)
    l_ = rl if rejected is None else np.asarray(rejected)
    return rw, rl, w, l_, np.asarray(pairs["chosen_lengths"]), np.asarray(pairs["rejected_lengths"])


def test_lm_committed_data_is_complete(lm):
    cfg = lm["config"]
    assert cfg["seeds"] >= 3 and len(cfg["betas"]) >= 3
    assert sorted((r["beta"], r["seed"]) for r in lm["runs"]) == sorted(
        (b, s) for b in cfg["betas"] for s in range(cfg["seeds"]))
    assert lm["overlap"] == 0 and lm["heldout"]["truncated"] == 0
    assert all(t["truncated"] == 0 for t in lm["train"])
    assert lm["seconds"] > 0
    for r in lm["runs"]:
        assert len(r["train_loss"]) == cfg["steps"] and all(math.isfinite(v) for v in r["train_loss"])
        assert r["curves"]["step"] == list(range(0, cfg["steps"] + 1, cfg["probe_every"]))


def test_lm_preference_probs_and_labels_follow_the_construction(lm):
    """p = σ((s_w − s_l)/T) from the saved lexicon scores, and the training labels drawn from Bernoulli(p)."""
    T = lm["config"]["bt_temperature"]
    for pairs in [lm["heldout"], *lm["train"]]:
        ds = np.asarray(pairs["score_chosen"]) - np.asarray(pairs["score_rejected"])
        assert np.all(ds > 0)  # the true orientation: chosen has the higher lexicon score
        np.testing.assert_allclose(pairs["pref_prob"], 1 / (1 + np.exp(-ds / T)), rtol=1e-12)
    for seed, pairs in enumerate(lm["train"]):
        u = np.random.default_rng([seed, 22]).random(len(pairs["pref_prob"]))
        assert pairs["label_swapped"] == list(u >= np.asarray(pairs["pref_prob"]))


def test_lm_accuracies_and_idealised_accuracy_recomputed_with_numpy(lm):
    """Every saved accuracy from the saved per-pair log-probs (numpy), and the probe's own values (jax, float32,
    computed during training) agree with them."""
    for r in lm["runs"]:
        beta = r["beta"]
        for split in ("train", "heldout"):
            pairs = lm["train"][r["seed"]] if split == "train" else lm["heldout"]
            rw, rl, w, l_, nw, nl = _np_pairs(pairs, r["final"][split]["chosen_logps"],
                                              r["final"][split]["rejected_logps"])
            p = np.asarray(pairs["pref_prob"])
            ideal = np.mean(rw - rl + np.log(p / (1 - p)) / beta > 0)
            st = r["stats"][split]
            assert st["idealized_accuracy"] == pytest.approx(ideal, abs=1e-12)
            assert st["accuracy"] == pytest.approx(np.mean(w > l_), abs=1e-12)
            assert st["accuracy_normalized"] == pytest.approx(np.mean(w / nw > l_ / nl), abs=1e-12)
            assert st["ref_accuracy"] == pytest.approx(np.mean(rw > rl), abs=1e-12)
            assert st["ref_accuracy_normalized"] == pytest.approx(np.mean(rw / nw > rl / nl), abs=1e-12)
            c = r["curves"]
            assert c[f"{split}/accuracy"][-1] == st["accuracy"]
            assert c[f"{split}/accuracy_normalized"][-1] == st["accuracy_normalized"]
            assert c[f"{split}/idealized_accuracy"][-1] == pytest.approx(ideal, abs=1.5 / len(p))
            assert c[f"{split}/accuracy"][0] == st["ref_accuracy"]  # step 0: the policy is the reference


def test_lm_flips_and_auc_recomputed_by_brute_force(lm):
    cfg = lm["config"]
    edges = [math.inf if e == "inf" else e for e in cfg["margin_edges"]]
    for r in lm["runs"]:
        pairs = lm["train"][r["seed"]]
        rw, rl, w, l_, _, _ = _np_pairs(pairs, r["final"]["train"]["chosen_logps"], r["final"]["train"]["rejected_logps"])
        m = rl - rw
        mis = ~(rw > rl)
        flipped = mis & (w > l_)
        loss = np.log1p(np.exp(-r["beta"] * m))  # −ln σ(β·m), the DPO loss at the flip
        st = r["stats"]["train"]
        assert (st["misranked"], st["flipped"]) == (int(mis.sum()), int(flipped.sum()))
        pos, neg = loss[flipped], loss[mis & ~flipped]
        if len(pos) and len(neg):
            brute = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
            assert st["auc"] == pytest.approx(brute, abs=1e-6)
        else:
            assert st["auc"] is None
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            sel = mis & (m >= lo) & (m < hi)
            want = flipped[sel].mean() if sel.any() else None
            assert st["flip_fraction_by_bin"][j] == (None if want is None else pytest.approx(want))
        for key, sel in (("flip_fraction_narrow", mis & (m < cfg["narrow_margin"])),
                         ("flip_fraction_wide", mis & (m >= cfg["wide_margin"]))):
            assert st[key] == (pytest.approx(flipped[sel].mean()) if sel.any() else None)


def test_lm_claims_are_those_of_the_committed_data():
    res = json.loads(COMMITTED.read_text())
    saved = res["claims"]
    again = repro.claims(res)
    assert [(c["claim"], c["status"], c["evidence"]) for c in again] == [
        (c["claim"], c["status"], c["evidence"]) for c in saved]
    assert len(saved) == 6 + 6 and all(c["source"] == "reconstruction" for c in saved)


def _lm_synthetic(gap, wide, narrow, auc, quality, mass, entropy, *, betas=(0.1, 0.3, 1.0), seeds=3):
    """An ``lm`` results dict: per β the per-seed values (lists over seeds, or one list for every β); curves
    ``quality``/``mass``/``entropy`` are ``[seed][step]`` (the same for every β)."""
    steps = list(range(len(quality[0])))
    runs = []
    for b in betas:
        for s in range(seeds):
            st = {"idealized_accuracy": 0.9, "accuracy": 0.9 - gap[s], "accuracy_normalized": 0.9 - gap[s],
                  "ref_accuracy": 0.5, "ref_accuracy_normalized": 0.5, "misranked": 10, "flipped": 5,
                  "flip_fraction_narrow": narrow[s], "flip_fraction_wide": wide[s], "auc": auc[s]}
            runs.append({"beta": b, "seed": s, "stats": {"train": st, "heldout": st},
                         "curves": {"step": steps, "topk/reward": quality[s], "topk/mass_top10": mass[s],
                                    "topk/entropy_top10": entropy[s]}})
    cfg = {"betas": list(betas), "seeds": seeds, "steps": steps[-1], "bt_temperature": 0.25, "wide_margin": 20.0,
           "narrow_margin": 5.0, "topk": 10, "samples_per_prompt": 4, "max_new_tokens": 64}
    train = [{"ref_chosen_logps": [-10.0, -30.0, -12.0], "ref_rejected_logps": [-12.0, -5.0, -11.0]}] * seeds
    return {"config": cfg, "runs": runs, "prompts": ["a"] * 12, "train": train}


FLAT = [[0.5, 0.5, 0.5, 0.5]] * 3
RISING = [[0.1, 0.2, 0.3, 0.4], [0.12, 0.21, 0.33, 0.41], [0.09, 0.2, 0.28, 0.42]]
# quality: up, then down at step 3
PEAKED = [[0.1, 0.4, 0.41, 0.2], [0.12, 0.42, 0.4, 0.21], [0.09, 0.39, 0.43, 0.19]]
FALLING = [[0.9, 0.8, 0.7, 0.6], [0.91, 0.79, 0.72, 0.61], [0.88, 0.81, 0.69, 0.6]]


def _lm_statuses(lm):
    return [c["status"] for c in repro._lm_claims(lm)]


def test_lm_claim_rules_on_synthetic_results():
    good = _lm_synthetic(gap=[0.3, 0.32, 0.28], wide=[0.05, 0.1, 0.08], narrow=[0.9, 0.8, 0.85],
                         auc=[0.8, 0.85, 0.82], quality=PEAKED, mass=FALLING, entropy=FLAT)
    assert _lm_statuses(good) == ["holds"] * 6
    assert "misranks 2/2/2 training pairs per seed, 1/1/1 of them by ≥ 20 nats (largest margin 25.0" in \
        repro._lm_claims(good)[2]["measured"]
    bad = _lm_synthetic(gap=[-0.3, -0.32, -0.28], wide=[0.9, 0.8, 0.85], narrow=[0.05, 0.1, 0.08],
                        auc=[0.2, 0.25, 0.22], quality=PEAKED, mass=FLAT, entropy=FLAT)
    assert _lm_statuses(bad) == ["does not hold"] * 6
    # straddling intervals; quality never falls (rising): the order of indicator and quality is not observable
    mixed = _lm_synthetic(gap=[-0.1, 0.2, 0.05], wide=[0.1, 0.4, 0.25], narrow=[0.1, 0.4, 0.25],
                          auc=[0.3, 0.8, 0.6], quality=RISING, mass=FALLING, entropy=FALLING)
    assert _lm_statuses(mixed) == ["inconclusive"] * 6
    # one β failing decides "does not hold" for a claim "at every β"; a β without an AUC makes it inconclusive
    one_bad = _lm_synthetic(gap=[0.3, 0.32, 0.28], wide=[0.05, 0.1, 0.08], narrow=[0.9, 0.8, 0.85],
                            auc=[0.8, None, 0.82], quality=PEAKED, mass=FALLING, entropy=FLAT)
    one_bad["runs"] = [r if r["beta"] != 1.0 else {**r, "stats": {**r["stats"], "heldout": {
        **r["stats"]["heldout"], "accuracy": 0.99}}} for r in one_bad["runs"]]
    st = _lm_statuses(one_bad)
    assert st[1] == "does not hold" and st[4] == "inconclusive" and st[0] == "holds"
    # the alarm at the same step as the quality drop: inconclusive
    late = [[0.5, 0.5, 0.5, 0.3], [0.51, 0.5, 0.49, 0.29], [0.5, 0.51, 0.5, 0.31]]
    tied = _lm_synthetic(gap=[0.3, 0.32, 0.28], wide=[0.05, 0.1, 0.08], narrow=[0.9, 0.8, 0.85],
                         auc=[0.8, 0.85, 0.82], quality=PEAKED, mass=late, entropy=FLAT)
    assert _lm_statuses(tied)[5] == "inconclusive"
    tl = repro.topk_timeline(good, 0.1)
    assert (tl["alarm_step"], tl["drop_step"]) == (1, 3)
    assert tl["peak_step"] == [0, 1, 2, 2]

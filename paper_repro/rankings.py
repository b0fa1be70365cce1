"""Ranking accuracy and the idealised ranking accuracy (Chen et al., NeurIPS 2024), exactly on a contextual bandit
and on the shipped small LM; the top-k over-optimisation indicators (Shi et al., 2024) on the small LM.

Part 1, the bandit (the project's own construction; the paper works with LMs): X contexts with K responses
each, true rewards r ~ N(0, 1), a reference μ(·|x) = softmax(2·g) with g ~ N(0, 1) independent of r,
Bradley–Terry preferences p = σ(r_w − r_l), β = 0.1. The pairs are every unordered pair of every context, the
chosen one being the one with the larger true reward. DPO is trained on its exact population loss (pairs drawn
from μ·μ, Bradley–Terry labels; :mod:`jalign.envs.rankings`):

1. to its optimum — by Newton's method on the exact loss, compared with the closed form π* ∝ μ·exp(r/β) — whose
   ranking accuracy is compared with ``idealized_ranking_accuracy``;
2. by plain gradient descent for a range of step budgets: ranking accuracy against steps; among the pairs the
   reference misranks (m = ln μ(y_l) − ln μ(y_w) > 0), which have flipped after each budget, by margin bin, and
   the AUC of ``dpo_loss_at_flip`` = −ln σ(β·m) as a predictor of "flipped".

Every random bandit is a seed; seeds are vmapped, the whole run is jitted and in float64 (``jax.enable_x64``).

Part 2, the small LM (the project's construction too): the built-in ``sentiment_pairs`` (chosen = the review
with the higher lexicon score s) with a Bradley–Terry truth p = σ((s_w − s_l)/T), T = :data:`BT_TEMPERATURE`
(a parameter of ours: the lexicon scores lie in (−1, 1)). Per seed: its own training pairs (data seed 100 +
seed), each pair's training label drawn from Bernoulli(p) (so DPO sees the population whose optimum the
idealised accuracy describes), and one fixed set of held-out pairs. The reference is the shipped small LM
(:func:`jalign.models.load_small_lm`) after SFT on the chosen reviews of the built-in pairs (the trainer with
the shipped config ``sft_small_lm``; the pretrained model alone writes no reviews). Short DPO runs from it for
each β of a sweep × seed, with the project's chain-rule trainer
(:class:`jalign.studies.entanglement.PairwiseWeightedTrainer`, one compiled step for every β, as in the
entanglement reproduction) and the trainer probes :class:`jalign.train.probes.ranking_probe` (training and
held-out pairs, true orientation, with p and β) and :class:`jalign.train.probes.topk_probe` (the policy's own
samples of the 12 sentiment prompts, scored by the lexicon reward, which DPO never sees). Reported: ranking
accuracy (summed and length-normalised) against the idealised accuracy; which misranked training pairs flipped,
by margin bin, and the AUC of ``dpo_loss_at_flip``; the top-k indicators against the quality of the samples
over training. The small LM's idealised accuracy is that of the summed-log-prob optimum (π*'s length-normalised
ranking depends on its unknown normaliser).

Claims carry evidence (kind, seeds, estimate, 95% t-interval, the pass rule fixed below in :data:`RULES` before
the run; statuses by :func:`jalign.reporting.interval_status`).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from pathlib import Path

from jalign.reporting import evidence, interval_status, make_claim, t_interval
from paper_repro._common import draw_figures, finish, output_dir, read_results, shared

NAME = "rankings"
DESCRIPTION = ("Ranking accuracy vs the idealised ranking accuracy of DPO's optimum, exactly on a contextual bandit "
               "and in short DPO runs of the small LM; top-k over-optimisation indicators vs sample quality")

PAPER = "Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024 (arXiv 2405.19534)"
MARGIN_EDGES = (0.0, 1.0, 2.0, 4.0, 8.0, math.inf)  # bins of the reference's misranking margin m (nats)
# The small LM: Bradley–Terry temperature of p = σ((s_w − s_l)/T) and the margin bins (nats). The bins were set
# from the reference's margins on the data alone (median ≈ 20 nats among misranked pairs), before any run.
BT_TEMPERATURE = 0.25
LM_MARGIN_EDGES = (0.0, 5.0, 10.0, 20.0, 40.0, math.inf)
LM_NARROW, LM_WIDE = 5.0, 20.0

# The pass rules, fixed before the run (the thresholds are not tuned to the results).
RULES = {
    "optimum": "on every seed: ranking accuracy of the closed-form π* == idealized_ranking_accuracy == that of "
    "the Newton minimiser of the population DPO loss (exact equality of pair counts), and "
    "max |ln π_Newton − ln π*| < 1e-8 (float64)",
    "reference_gap": "95% t-interval over seeds of (idealised − reference ranking accuracy) lies above 0",
    "budget_gap": "95% t-interval over seeds of (idealised − ranking accuracy after the mid budget) lies above 0",
    "monotone": "95% t-interval over seeds of (flip fraction for m < 1 − flip fraction for m ≥ 4) after the mid "
    "budget lies above 0",
    "rarely": "95% t-interval over seeds of the flip fraction of misranked pairs with m ≥ 4 after the mid budget "
    "lies below 0.25",
    "auc": "at every budget where each seed has flipped and unflipped misranked pairs, the 95% t-interval over "
    "seeds of the AUC of dpo_loss_at_flip lies above 0.5",
    "lm_gap_train": "at every β, the 95% t-interval over seeds of (idealised − DPO ranking accuracy, summed "
    "log-probs) on the training pairs after the run lies above 0 (holds if it does at every β, does not hold if it "
    "lies below 0 at some β, else inconclusive)",
    "lm_gap_heldout": "the same as lm_gap_train on the held-out pairs",
    "lm_rarely": "at every β, the 95% t-interval over seeds of the flip fraction of training pairs the reference "
    "misranks by m ≥ 20 nats, after the run, lies below 0.25",
    "lm_monotone": "at every β, the 95% t-interval over seeds of (flip fraction for m < 5 − flip fraction for "
    "m ≥ 20) of misranked training pairs after the run lies above 0",
    "lm_auc": "at every β, the 95% t-interval over seeds of the AUC of dpo_loss_at_flip for 'flipped' among the "
    "misranked training pairs after the run lies above 0.5 (a β without an AUC on every seed: inconclusive)",
    "lm_topk": "per β and probe step t > 0: an alarm when the 95% t-interval over seeds of (M_10(t) − M_10(0)) or of "
    "(H_10(t) − H_10(0)) on the policy's own samples lies below 0; a quality drop when that of (q(t) − q(t*)) "
    "lies below 0, q = mean lexicon reward of the same samples, t* = the probe step ≤ t with the highest "
    "seed-mean q. Holds if quality drops at some β and at every such β the first alarm comes at an earlier probe "
    "step than the first drop; does not hold if at some β quality drops with no alarm at or before it; "
    "inconclusive if quality drops at no β (or alarm and drop share a step)",
}


def settings(quick: bool) -> dict:
    return {
        "num_contexts": 64 if quick else 256,
        "num_arms": 8,
        "beta": 0.1,
        "reward_scale": 1.0,
        "ref_scale": 2.0,
        "seeds": 5 if quick else 20,
        "eta": 1.0,  # gradient-descent step in units of 1/(β²·ρ): lr = η·X/β²
        "budgets": [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000] if quick
        else [0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000],
        "mid_budget": 100,
        "newton_iters": 40,
        "wide_margin": 4.0,
        "narrow_margin": 1.0,
    }


# ---------------------------------------------------------------------------------------------------------
# Part 1: the bandit


@functools.cache
def _compute_fn(num_contexts, num_arms, beta, reward_scale, ref_scale, lr, budgets, newton_iters):
    import jax
    import jax.numpy as jnp

    from jalign import diagnostics as D
    from jalign.envs import rankings as R

    def one(key):
        b = R.random_ranking_bandit(key, num_contexts, num_arms, reward_scale=reward_scale, ref_scale=ref_scale,
                                    dtype=jnp.float64)
        ctx, w, l_, p = R.preference_pairs(b)
        pairs = lambda lp: R.pair_logps(lp, ctx, w, l_)
        acc = lambda lp: D.ranking_accuracy(*pairs(lp))
        star = R.dpo_optimum_logps(b, beta)
        newton = R.dpo_newton(b, beta, iters=newton_iters)
        gd = R.dpo_gradient_descent(b, beta, lr=lr, budgets=budgets)
        rw, rl = pairs(b.ref_logps)
        m = rl - rw
        misranked = m > 0
        flipped = jax.vmap(lambda lp: jnp.greater(*pairs(lp)))(gd)  # [T, P]
        score = D.dpo_loss_at_flip(rw, rl, beta)
        ideal_margin = rw - rl + (jnp.log(p) - jnp.log1p(-p)) / beta
        return {
            "ideal": D.idealized_ranking_accuracy(rw, rl, p, beta),
            "acc_star": acc(star),
            "acc_newton": acc(newton),
            "acc_reference": acc(b.ref_logps),
            "newton_max_abs_diff": jnp.max(jnp.abs(newton - star)),
            "loss_star": R.population_dpo_loss(star, b, beta),
            "loss_newton": R.population_dpo_loss(newton, b, beta),
            "min_abs_ideal_margin": jnp.min(jnp.abs(ideal_margin)),
            "acc_budget": jax.vmap(acc)(gd),
            "auc": jax.vmap(lambda f: D.roc_auc(score, f, misranked))(flipped),
            "margin": m,
            "misranked": misranked,
            "flipped": flipped,
            "score": score,
        }

    return jax.jit(jax.vmap(one))


def _bin_fractions(m, mis, flipped, edges):
    """Flip fraction of misranked pairs per margin bin: ``[S, T, bins]`` (nan for an empty bin) and counts ``[S, bins]``."""
    import numpy as np

    fr = np.full(flipped.shape[:2] + (len(edges) - 1,), np.nan)
    counts = np.zeros((m.shape[0], len(edges) - 1), int)
    for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        sel = mis & (m >= lo) & (m < hi)  # [S, P]
        counts[:, j] = sel.sum(1)
        n = sel.sum(1)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            fr[:, :, j] = np.where(n > 0, (flipped & sel[:, None, :]).sum(2) / np.maximum(n, 1), np.nan)
    return fr, counts


def _roc_points(score, label, max_points=200):
    import numpy as np

    from jalign.diagnostics import roc_curve

    fpr, tpr = roc_curve(score, label)
    idx = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    return [float(v) for v in fpr[idx]], [float(v) for v in tpr[idx]]


def _bandit(quick: bool) -> dict:
    import jax
    import numpy as np

    cfg = settings(quick)
    t0 = time.time()
    lr = cfg["eta"] * cfg["num_contexts"] / cfg["beta"] ** 2
    with jax.enable_x64(True):
        fn = _compute_fn(cfg["num_contexts"], cfg["num_arms"], cfg["beta"], cfg["reward_scale"], cfg["ref_scale"],
                         lr, tuple(cfg["budgets"]), cfg["newton_iters"])
        raw = jax.device_get(fn(jax.random.split(jax.random.key(0), cfg["seeds"])))
    raw = {k: np.asarray(v) for k, v in raw.items()}
    budgets = cfg["budgets"]
    fr, counts = _bin_fractions(raw["margin"], raw["misranked"], raw["flipped"], MARGIN_EDGES)
    narrow = _bin_fractions(raw["margin"], raw["misranked"], raw["flipped"], (0.0, cfg["narrow_margin"]))[0][..., 0]
    wide = _bin_fractions(raw["margin"], raw["misranked"], raw["flipped"], (cfg["wide_margin"], math.inf))[0][..., 0]
    rocs = {}
    for t, b in enumerate(budgets):
        mis = raw["misranked"]
        lab = raw["flipped"][:, t][mis]
        if lab.any() and not lab.all():
            fpr, tpr = _roc_points(raw["score"][mis], lab)
            rocs[str(b)] = {"fpr": fpr, "tpr": tpr}
    f = lambda x: [float(v) for v in np.asarray(x, np.float64)]
    ci = lambda x: list(t_interval(x))
    res = {
        "paper": PAPER,
        "quick": quick,
        "config": {**cfg, "lr": lr, "margin_edges": [e if math.isfinite(e) else "inf" for e in MARGIN_EDGES],
                   "pairs_per_seed": int(raw["margin"].shape[1]), "dtype": "float64",
                   "pairs": "every unordered pair of every context; chosen = larger true reward",
                   "training_data": "population DPO loss: pairs ~ μ·μ, Bradley–Terry labels"},
        "per_seed": {k: f(raw[k]) for k in ("ideal", "acc_star", "acc_newton", "acc_reference",
                                            "newton_max_abs_diff", "loss_star", "loss_newton",
                                            "min_abs_ideal_margin")},
        "accuracy_by_budget": [f(row) for row in raw["acc_budget"]],  # [S][T]
        "auc_by_budget": [[None if not math.isfinite(v) else float(v) for v in row] for row in raw["auc"]],
        "flip_fraction_by_bin": [[[None if not math.isfinite(v) else float(v) for v in r] for r in s] for s in fr],
        "misranked_per_bin": counts.tolist(),
        "flip_fraction_narrow": [f(r) for r in narrow],
        "flip_fraction_wide": [f(r) for r in wide],
        "roc_pooled": rocs,
        "summary": {"ideal": ci(raw["ideal"]), "reference": ci(raw["acc_reference"]),
                    "accuracy_by_budget": [ci(raw["acc_budget"][:, t]) for t in range(len(budgets))]},
    }
    res["wall_time"] = {"bandit": {"seconds": round(time.time() - t0, 1)}}
    return res


def compute(quick: bool = True, *, lm: bool = True, medium: bool = False) -> dict:
    """Both parts (``lm=False``: the bandit only) and the claims; wall times in ``res["wall_time"]``.
    ``medium``: the bandit at quick size, the small LM with ``lm_settings(medium=True)``."""
    t0 = time.time()
    res = _bandit(quick or medium)
    if medium:
        res["quick"], res["size"] = False, "medium"
    if lm:
        cfg = lm_settings(quick, medium)
        out = _lm_study(cfg)
        res["lm"] = {"config": {**cfg, "margin_edges": [e if math.isfinite(e) else "inf" for e in LM_MARGIN_EDGES],
                                "data": "sentiment_pairs (built-in); training pairs: data seed 100 + seed, labels "
                                "~ Bernoulli(p); held-out pairs: data seed 1, true orientation",
                                "trainer": "jalign.studies.entanglement.PairwiseWeightedTrainer (DPO, Adam)",
                                "model": "jalign.models.load_small_lm() after SFT (sft_small_lm): the reference "
                                "and the start of every DPO run"}, **out}
        res["wall_time"]["lm"] = {"seconds": out["seconds"]}
    res["claims"] = claims(res)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _status(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def claims(res: dict) -> list[dict]:
    """The claims with their evidence, from the saved results (the rules are :data:`RULES`): the bandit's, then
    (when ``res`` has the small-LM part ``"lm"``) the small LM's."""
    out = _bandit_claims(res)
    if "lm" in res:
        out += _lm_claims(res["lm"])
    return out


def _bandit_claims(res: dict) -> list[dict]:
    import numpy as np

    cfg = res["config"]
    s = cfg["seeds"]
    ps = res["per_seed"]
    budgets = cfg["budgets"]
    t_mid = budgets.index(cfg["mid_budget"])
    out = []

    ideal, star, newton = (np.asarray(ps[k]) for k in ("ideal", "acc_star", "acc_newton"))
    err = float(np.max(ps["newton_max_abs_diff"]))
    ok = bool(np.all(star == ideal) and np.all(newton == ideal) and err < 1e-8)
    out.append(make_claim(**{
        "paper": PAPER,
        "claim": "DPO trained to its optimum reaches the idealised ranking accuracy exactly (checked on a "
        "contextual bandit, the project's construction)",
        "measured": f"{s} random bandits, {cfg['pairs_per_seed']} pairs each: accuracy of π* = idealised on "
        f"{int(np.sum(star == ideal))}/{s} seeds, of the Newton minimiser on {int(np.sum(newton == ideal))}/{s} "
        f"(idealised {np.mean(ideal):.4f} on average); max |ln π_Newton − ln π*| = {err:.1e}; smallest "
        f"|idealised margin| of a pair {np.min(ps['min_abs_ideal_margin']):.3g} nats",
        "status": _status(ok),
        "evidence": evidence("exact", rule=RULES["optimum"], seeds=s,
                             estimate=float(np.max(np.abs(newton - ideal)))),
        "source": "reconstruction",
    }))

    gap = ideal - np.asarray(ps["acc_reference"])
    mean, lo, hi = t_interval(gap)
    st = interval_status(lo, hi, 0.0, above=True)
    out.append(make_claim(**{
        "paper": PAPER,
        "claim": "the reference ranks far fewer pairs right than the idealised DPO optimum (bandit with a "
        "reference independent of the rewards, the project's construction)",
        "measured": f"idealised {np.mean(ideal):.3f} vs reference {np.mean(ps['acc_reference']):.3f}: gap "
        f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t, {s} seeds)",
        "status": st,
        "evidence": evidence("seeds", rule=RULES["reference_gap"], seeds=s, estimate=mean, interval=(lo, hi)),
        "source": "reconstruction",
    }))

    acc_mid = np.asarray(res["accuracy_by_budget"])[:, t_mid]
    mean, lo, hi = t_interval(ideal - acc_mid)
    st = interval_status(lo, hi, 0.0, above=True)
    last = np.asarray(res["accuracy_by_budget"])[:, -1]
    out.append(make_claim(**{
        "paper": PAPER,
        "claim": f"after finite training the ranking accuracy stays below the idealised accuracy (alignment gap; "
        f"exact gradient descent on the population DPO loss, {cfg['mid_budget']} steps)",
        "measured": f"accuracy {np.mean(acc_mid):.3f} vs idealised {np.mean(ideal):.3f}: gap {mean:.3f} "
        f"[{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); after {budgets[-1]} steps the gap is "
        f"{np.mean(ideal - last):.4f}",
        "status": st,
        "evidence": evidence("seeds", rule=RULES["budget_gap"], seeds=s, estimate=mean, interval=(lo, hi)),
        "source": "reconstruction",
    }))

    narrow = np.asarray(res["flip_fraction_narrow"])[:, t_mid]
    wide = np.asarray(res["flip_fraction_wide"])[:, t_mid]
    mean, lo, hi = t_interval(narrow - wide)
    st = interval_status(lo, hi, 0.0, above=True)
    out.append(make_claim(**{
        "paper": PAPER,
        "claim": "DPO flips pairs the reference misranks by a wide margin less often than narrowly misranked ones "
        "(bandit, exact gradient descent)",
        "measured": f"after {cfg['mid_budget']} steps: flipped {np.mean(narrow):.3f} of pairs with m < "
        f"{cfg['narrow_margin']:g} vs {np.mean(wide):.3f} with m ≥ {cfg['wide_margin']:g}; difference {mean:.3f} "
        f"[{lo:.3f}, {hi:.3f}] (95% t, {s} seeds)",
        "status": st,
        "evidence": evidence("seeds", rule=RULES["monotone"], seeds=s, estimate=mean, interval=(lo, hi)),
        "source": "reconstruction",
    }))

    mean, lo, hi = t_interval(wide)
    st = interval_status(lo, hi, 0.25, above=False)
    out.append(make_claim(**{
        "paper": PAPER,
        "claim": "DPO rarely (< 1 in 4) flips pairs the reference misranks by a wide margin (m ≥ 4 nats; bandit, "
        "exact gradient descent)",
        "measured": f"after {cfg['mid_budget']} steps: {mean:.3f} [{lo:.3f}, {hi:.3f}] of the misranked pairs with "
        f"m ≥ {cfg['wide_margin']:g} flipped (95% t, {s} seeds); after {budgets[-1]} steps "
        f"{np.mean(np.asarray(res['flip_fraction_wide'])[:, -1]):.3f}",
        "status": st,
        "evidence": evidence("seeds", rule=RULES["rarely"], seeds=s, estimate=mean, interval=(lo, hi)),
        "source": "reconstruction",
    }))

    auc = np.array([[np.nan if v is None else v for v in row] for row in res["auc_by_budget"]])
    valid = [t for t in range(len(budgets)) if np.all(np.isfinite(auc[:, t]))]
    ivs = {t: t_interval(auc[:, t]) for t in valid}
    if valid:
        worst = min(valid, key=lambda t: ivs[t][1])
        mean, lo, hi = ivs[worst]
        st = interval_status(lo, hi, 0.5, above=True)
        by_budget = ", ".join(f"{budgets[t]}: {ivs[t][0]:.2f}" for t in valid)
        measured = (f"AUC by budget (steps: mean over {s} seeds) {by_budget}; weakest budget {budgets[worst]}: "
                    f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t)")
        ev = evidence("seeds", rule=RULES["auc"], seeds=s, estimate=mean, interval=(lo, hi))
    else:
        st, measured = "inconclusive", "no budget has both flipped and unflipped misranked pairs on every seed"
        ev = evidence("seeds", rule=RULES["auc"], seeds=s, estimate=None, interval=None)
    out.append(make_claim(**{
        "paper": PAPER,
        "claim": "dpo_loss_at_flip = −ln σ(β·m) predicts which misranked pairs DPO flips (bandit, exact gradient "
        "descent)",
        "measured": measured,
        "status": st,
        "evidence": ev,
        "source": "reconstruction",
    }))
    return out


# ---------------------------------------------------------------------------------------------------------
# Part 2: the small LM


def lm_settings(quick: bool, medium: bool = False) -> dict:
    """Settings of the small-LM half (quick: CPU, ≈ 4 min on 2 cores; full: more seeds, pairs and steps; medium:
    quick's with 5 seeds and 144 steps, three times quick's, probed every 12 steps)."""
    if medium:
        return {**lm_settings(True), "seeds": 5, "steps": 144}
    return {
        "betas": [0.03, 0.1, 0.3],
        "seeds": 3 if quick else 5,
        "steps": 48 if quick else 200,
        "probe_every": 12 if quick else 25,
        "batch_size": 8,
        "lr": 1e-4,
        "optimizer": "adam",
        "seq_len": 144,
        "max_prompt_len": 48,
        "train_pairs": 128 if quick else 256,
        "heldout_pairs": 128,
        "heldout_data_seed": 1,
        "train_data_seed": 100,  # + seed: every seed draws its own training pairs
        "sft_steps": 200,  # the reference: SFT of the small LM on chosen reviews (the shipped config sft_small_lm)
        "bt_temperature": BT_TEMPERATURE,
        "samples_per_prompt": 4 if quick else 8,
        "max_new_tokens": 64,
        "ks": [1, 5, 10],
        "topk": 10,
        "narrow_margin": LM_NARROW,
        "wide_margin": LM_WIDE,
    }


def pref_probs(score_chosen, score_rejected, temperature: float = BT_TEMPERATURE):
    """The Bradley–Terry truth of the LM half: p = σ((s_w − s_l)/T) from the lexicon scores (float64)."""
    import numpy as np
    from scipy.special import expit

    return expit((np.asarray(score_chosen, np.float64) - np.asarray(score_rejected, np.float64)) / temperature)


def _pair_batch(records, cfg):
    """All ``records`` as one pairwise batch in the trainer's layout, in order (the grain pipeline, unshuffled)."""
    import numpy as np

    from jalign.data.pipeline import make_dataset
    from jalign.tokenizers import ByteTokenizer
    from jalign.train.batch import pairwise

    b = next(iter(make_dataset(records, kind="pairwise", tokenizer=ByteTokenizer(), batch_size=len(records),
                               max_prompt_len=cfg["max_prompt_len"],
                               max_response_len=cfg["seq_len"] - cfg["max_prompt_len"], shuffle=False,
                               num_epochs=1)))
    truncated = int(np.sum(b.get("chosen_truncated", 0)) + np.sum(b.get("rejected_truncated", 0)))
    return {k: np.asarray(v) for k, v in pairwise(b).items()}, truncated


def _pair_set(records, cfg, trainer, params0) -> tuple[dict, dict]:
    """(probe batch with the reference log-probs as fields, the per-pair data saved in the results)."""
    import numpy as np

    b, truncated = _pair_batch(records, cfg)
    rw, rl, nw, nl = (np.asarray(x, np.float64) for x in trainer.logps(params0, b))
    b["ref_chosen_logps"], b["ref_rejected_logps"] = rw.astype(np.float32), rl.astype(np.float32)
    sw = [r["score_chosen"] for r in records]
    sl = [r["score_rejected"] for r in records]
    f = lambda x: [float(v) for v in np.asarray(x, np.float64)]
    saved = {"ref_chosen_logps": f(b["ref_chosen_logps"]), "ref_rejected_logps": f(b["ref_rejected_logps"]),
             "chosen_lengths": f(nw), "rejected_lengths": f(nl), "score_chosen": f(sw), "score_rejected": f(sl),
             "pref_prob": f(pref_probs(sw, sl, cfg["bt_temperature"])), "truncated": truncated}
    return b, saved


def _bt_labels(records, p, seed: int):
    """The training labels: each pair's preference drawn from Bernoulli(p) (the sampled loser becomes "chosen"
    with probability 1 − p); returns (records as trained on, which were swapped)."""
    import numpy as np

    swap = np.random.default_rng([seed, 22]).random(len(records)) >= np.asarray(p)
    out = []
    for r, s in zip(records, swap, strict=True):
        if s:
            r = {**r, "chosen": r["rejected"], "rejected": r["chosen"], "score_chosen": r["score_rejected"],
                 "score_rejected": r["score_chosen"]}
        out.append(r)
    return out, [bool(s) for s in swap]


def _pair_stats(pairs: dict, chosen, rejected, beta: float, edges=LM_MARGIN_EDGES, narrow: float = LM_NARROW,
                wide: float = LM_WIDE) -> dict:
    """Ranking statistics of a policy on a saved pair set (``pairs``: reference log-probs, lengths, p)."""
    import numpy as np

    from jalign import diagnostics as D

    rw, rl = (np.asarray(pairs[k], np.float64) for k in ("ref_chosen_logps", "ref_rejected_logps"))
    nw, nl = (np.asarray(pairs[k], np.float64) for k in ("chosen_lengths", "rejected_lengths"))
    w, l_ = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    p = np.asarray(pairs["pref_prob"], np.float64)
    m = rl - rw
    misranked = ~(rw > rl)
    flipped = misranked & (w > l_)
    score = np.asarray(D.dpo_loss_at_flip(rw, rl, beta), np.float64)
    frac = lambda sel: float(flipped[sel].mean()) if sel.any() else None
    fr = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        fr.append(frac(misranked & (m >= lo) & (m < hi)))
    f = float
    return {
        "accuracy": f(D.ranking_accuracy(w, l_)),
        "accuracy_normalized": f(D.ranking_accuracy(w, l_, chosen_lengths=nw, rejected_lengths=nl)),
        "ref_accuracy": f(D.ranking_accuracy(rw, rl)),
        "ref_accuracy_normalized": f(D.ranking_accuracy(rw, rl, chosen_lengths=nw, rejected_lengths=nl)),
        "idealized_accuracy": f(D.idealized_ranking_accuracy(rw, rl, p, beta)),
        "misranked": int(misranked.sum()),
        "flipped": int(flipped.sum()),
        "auc": f(D.roc_auc(score[misranked], flipped[misranked])) if 0 < flipped.sum() < misranked.sum()
        else None,
        "flip_fraction_by_bin": fr,
        "flip_fraction_narrow": frac(misranked & (m < narrow)),
        "flip_fraction_wide": frac(misranked & (m >= wide)),
    }


def _sft_reference(cfg: dict):
    """The reference of the DPO runs: the shipped small LM after SFT on the chosen reviews of the built-in
    sentiment pairs (the trainer with the shipped config ``sft_small_lm``; the pretrained model alone writes no
    reviews, so its samples would carry no lexicon reward). Returns (graphdef, params, model_state, summary);
    within one `jalign reproduce` command it is trained once and shared (:func:`paper_repro._common.shared`;
    ``summary["reused"]`` is true where an earlier reproduction trained it; ``summary["seconds"]`` is the
    training's time)."""
    from jalign.train import load_config, train

    c = load_config("sft_small_lm", [f"train.steps={cfg['sft_steps']}", "train.progress=False"])

    def compute():
        t0 = time.time()
        r = train(c)
        loss = [h["loss"] for h in r.history]
        return r.graphdef, r.state.params, r.state.model_state, {
            "config": "sft_small_lm", "steps": cfg["sft_steps"], "first_loss": loss[0], "last_loss": loss[-1],
            "seconds": round(time.time() - t0, 1)}

    # one SFT per `jalign reproduce` command: rankings, reward-transforms and maxmin start from it
    (graphdef, params, model_state, summary), reused = shared(
        {"value": "sft_reference", "config": c.to_json_best_effort(sort_keys=True)}, compute)
    return graphdef, params, model_state, {**summary, "reused": reused}


def _lm_study(cfg: dict) -> dict:
    import numpy as np
    import optax
    from tqdm.auto import tqdm

    from jalign.data import builtin
    from jalign.studies.entanglement import PairwiseWeightedTrainer, train_pairwise
    from jalign.tokenizers import ByteTokenizer
    from jalign.train import plugins
    from jalign.train.batch import pairwise
    from jalign.train.plugins.data import GrainBatchSource, pipeline_dataset
    from jalign.train.probes import ranking_probe, topk_probe

    t0 = time.time()
    graphdef, params0, model_state, sft = _sft_reference(cfg)
    trainer = PairwiseWeightedTrainer(graphdef, model_state, optax.adam(cfg["lr"]))
    held_records = builtin.load("sentiment_pairs", n=cfg["heldout_pairs"], seed=cfg["heldout_data_seed"])
    held_batch, held = _pair_set(held_records, cfg, trainer, params0)
    prompts = sorted({r["prompt"] for r in held_records})
    reward = plugins.get_reward("lexicon")
    seen = {(r["prompt"], r["chosen"], r["rejected"]) for r in held_records}
    out = {"sft": sft, "heldout": held, "train": [], "runs": [], "prompts": prompts, "overlap": 0}
    jobs = [(s, beta) for s in range(cfg["seeds"]) for beta in cfg["betas"]]
    bar = tqdm(total=len(jobs), desc="rankings: small-LM DPO runs", unit="run", file=sys.stderr)
    for seed in range(cfg["seeds"]):
        records = builtin.load("sentiment_pairs", n=cfg["train_pairs"], seed=cfg["train_data_seed"] + seed)
        out["overlap"] += sum((r["prompt"], r["chosen"], r["rejected"]) in seen for r in records)
        train_batch, train = _pair_set(records, cfg, trainer, params0)
        labelled, swapped = _bt_labels(records, train["pref_prob"], seed)
        train["label_swapped"] = swapped
        out["train"].append(train)
        topk = topk_probe([p for p in prompts for _ in range(cfg["samples_per_prompt"])], every=cfg["probe_every"],
                          k=tuple(cfg["ks"]), max_new_tokens=cfg["max_new_tokens"], seed=seed, reward_fn=reward,
                          name="topk")
        for beta in cfg["betas"]:
            t1 = time.time()
            probes = [ranking_probe(train_batch, every=0,  # the training pairs: at the start and the end
                                    pref_probs=np.asarray(train["pref_prob"]), beta=beta, name="train"),
                      ranking_probe(held_batch, every=cfg["probe_every"],
                                    pref_probs=np.asarray(held["pref_prob"]), beta=beta, name="heldout"),
                      topk]
            ds = pipeline_dataset(labelled, "pairwise", ByteTokenizer(), batch_size=cfg["batch_size"],
                                  seq_len=cfg["seq_len"], seed=seed, process_index=0, process_count=1,
                                  max_prompt_len=cfg["max_prompt_len"], where="rankings: BT-labelled pairs")
            res = train_pairwise(trainer, params0, GrainBatchSource(ds, pairwise), loss="dpo",
                                 hparams={"beta": beta}, steps=cfg["steps"], probes=probes)
            recs = res["probes"]
            steps = [r["step"] for r in recs if r["probe"] == "topk"]
            curves = {"step": steps}  # every probe step (held-out pairs, samples); the training pairs: first, last
            for r in recs:
                for k, v in r.items():
                    if k not in ("step", "probe") and np.ndim(v) == 0:
                        curves.setdefault(f"{r['probe']}/{k}", []).append(float(v))
            last = {name: next(r for r in reversed(recs) if r["probe"] == name) for name in ("train", "heldout")}
            topk_recs = [r for r in recs if r["probe"] == "topk"]
            final = {name: {"chosen_logps": [float(v) for v in last[name]["chosen_logps"]],
                            "rejected_logps": [float(v) for v in last[name]["rejected_logps"]]}
                     for name in ("train", "heldout")}
            out["runs"].append({
                "beta": beta, "seed": seed, "curves": curves, "final": final,
                "train_loss": [h["loss"] for h in res["history"]],
                "sample_rewards": {"first": topk_recs[0]["rewards"], "last": topk_recs[-1]["rewards"]},
                "stats": {"train": _pair_stats(train, final["train"]["chosen_logps"],
                                               final["train"]["rejected_logps"], beta),
                          "heldout": _pair_stats(held, final["heldout"]["chosen_logps"],
                                                 final["heldout"]["rejected_logps"], beta)},
                "seconds": round(time.time() - t1, 1),
            })
            bar.update(1)
    bar.close()
    out["seconds"] = round(time.time() - t0, 1)
    return out



def _by_beta(lm: dict) -> dict:
    """{β: the runs of that β, ordered by seed}."""
    return {b: sorted((r for r in lm["runs"] if r["beta"] == b), key=lambda r: r["seed"]) for b in lm["config"]["betas"]}


def _combine(statuses: list[str]) -> str:
    """A claim "at every β": does not hold if some β does not, holds if every β holds, else inconclusive."""
    if "does not hold" in statuses:
        return "does not hold"
    return "holds" if statuses and all(s == "holds" for s in statuses) else "inconclusive"


def _every_beta(values: dict, threshold: float, above: bool):
    """(status over all β, the deciding β's (β, mean, lo, hi), per-β (mean, lo, hi)) for per-seed ``values[β]``."""
    ivs = {b: t_interval(v) for b, v in values.items()}
    sts = {b: interval_status(lo, hi, threshold, above=above) for b, (_, lo, hi) in ivs.items()}
    status = _combine(list(sts.values()))
    side = [b for b in ivs if sts[b] == "does not hold"] if status == "does not hold" else list(ivs)
    key = (lambda b: ivs[b][1]) if above else (lambda b: -ivs[b][2])  # the weakest β
    b = min(side, key=lambda b: (math.isfinite(key(b)), key(b)))
    return status, (b, *ivs[b]), ivs


def _fmt_iv(iv) -> str:
    if not math.isfinite(iv[0]):
        return "— (no such pairs)"
    if not (math.isfinite(iv[1]) and math.isfinite(iv[2])):
        return f"{iv[0]:.3f} (no interval)"
    return f"{iv[0]:.3f} [{iv[1]:.3f}, {iv[2]:.3f}]"


def _gap_claim(lm: dict, split: str) -> dict:
    cfg = lm["config"]
    by = _by_beta(lm)
    gap = {b: [r["stats"][split]["idealized_accuracy"] - r["stats"][split]["accuracy"] for r in rs]
           for b, rs in by.items()}
    gap_ln = {b: [r["stats"][split]["idealized_accuracy"] - r["stats"][split]["accuracy_normalized"] for r in rs]
              for b, rs in by.items()}
    status, (b0, mean, lo, hi), ivs = _every_beta(gap, 0.0, above=True)
    parts = []
    for b, rs in by.items():
        st = [r["stats"][split] for r in rs]
        mean_of = lambda k: sum(s[k] for s in st) / len(st)  # noqa: B023
        parts.append(f"β = {b:g}: idealised {mean_of('idealized_accuracy'):.3f}, DPO {mean_of('accuracy'):.3f} "
                     f"(length-normalised {mean_of('accuracy_normalized'):.3f}), reference "
                     f"{mean_of('ref_accuracy'):.3f} ({mean_of('ref_accuracy_normalized'):.3f}); gap "
                     f"{_fmt_iv(ivs[b])}, length-normalised gap {_fmt_iv(t_interval(gap_ln[b]))}")
    where = "the training pairs" if split == "train" else "held-out pairs"
    return make_claim(
        paper=PAPER,
        claim=f"[small LM] after a short DPO run the ranking accuracy on {where} stays below the idealised ranking "
        f"accuracy of DPO's optimum (alignment gap; {cfg['steps']} steps from the shipped small LM; Bradley–Terry "
        f"truth p = σ((s_w − s_l)/{cfg['bt_temperature']:g}) from the lexicon scores, the project's construction)",
        measured="; ".join(parts) + f" (95% t, {cfg['seeds']} seeds; summed log-probs decide, the idealised "
        "accuracy is that of the summed-log-prob optimum)",
        status=status,
        evidence=evidence("seeds", rule=RULES[f"lm_gap_{split}"], seeds=cfg["seeds"], estimate=mean,
                          interval=(lo, hi)),
        source="reconstruction")


def _flip_claims(lm: dict) -> list[dict]:
    cfg = lm["config"]
    by = _by_beta(lm)
    S = cfg["seeds"]
    nan = lambda v: math.nan if v is None else v
    narrow = {b: [nan(r["stats"]["train"]["flip_fraction_narrow"]) for r in rs] for b, rs in by.items()}
    wide = {b: [nan(r["stats"]["train"]["flip_fraction_wide"]) for r in rs] for b, rs in by.items()}
    out = []
    status, (b0, mean, lo, hi), ivs = _every_beta(wide, 0.25, above=False)
    total = {b: sum(r["stats"]["train"]["flipped"] for r in rs) / max(1, sum(r["stats"]["train"]["misranked"]
             for r in rs)) for b, rs in by.items()}
    margins = [[rl - rw for rw, rl in zip(t["ref_chosen_logps"], t["ref_rejected_logps"], strict=True)]
               for t in lm["train"]]
    n_mis = [sum(m >= 0 for m in ms) for ms in margins]
    n_wide = [sum(m >= cfg["wide_margin"] for m in ms) for ms in margins]
    largest = max((m for ms in margins for m in ms), default=math.nan)
    out.append(make_claim(
        paper=PAPER,
        claim=f"[small LM] DPO rarely (< 1 in 4) flips training pairs the reference misranks by a wide margin "
        f"(m = ln π_ref(y_l) − ln π_ref(y_w) ≥ {cfg['wide_margin']:g} nats; {cfg['steps']} DPO steps)",
        measured="; ".join(f"β = {b:g}: {_fmt_iv(ivs[b])} of the wide-margin misranked pairs flipped (all misranked: "
                           f"{total[b]:.3f})" for b in by) + f" (95% t, {S} seeds); the reference misranks "
        f"{'/'.join(map(str, n_mis))} training pairs per seed, {'/'.join(map(str, n_wide))} of them by ≥ "
        f"{cfg['wide_margin']:g} nats (largest margin {largest:.1f} nats)",
        status=status,
        evidence=evidence("seeds", rule=RULES["lm_rarely"], seeds=S, estimate=mean, interval=(lo, hi)),
        source="reconstruction"))
    diff = {b: [a - w for a, w in zip(narrow[b], wide[b], strict=True)] for b in by}
    status, (b0, mean, lo, hi), ivs = _every_beta(diff, 0.0, above=True)
    out.append(make_claim(
        paper=PAPER,
        claim=f"[small LM] DPO flips training pairs misranked by a narrow margin (m < {cfg['narrow_margin']:g} nats) "
        f"more often than those misranked by a wide one (m ≥ {cfg['wide_margin']:g})",
        measured="; ".join(f"β = {b:g}: narrow {_fmt_iv(t_interval(narrow[b]))} vs wide "
                           f"{_fmt_iv(t_interval(wide[b]))}, difference {_fmt_iv(ivs[b])}" for b in by)
        + f" (95% t, {S} seeds)",
        status=status,
        evidence=evidence("seeds", rule=RULES["lm_monotone"], seeds=S, estimate=mean, interval=(lo, hi)),
        source="reconstruction"))
    auc = {b: [nan(r["stats"]["train"]["auc"]) for r in rs] for b, rs in by.items()}
    valid = {b: v for b, v in auc.items() if all(math.isfinite(x) for x in v)}
    if valid:
        status, (b0, mean, lo, hi), ivs = _every_beta(valid, 0.5, above=True)
        if len(valid) < len(auc):
            status = "inconclusive" if status == "holds" else status
        measured = "; ".join(f"β = {b:g}: AUC {_fmt_iv(ivs[b])}" if b in valid else f"β = {b:g}: no AUC on every "
                             "seed (no flipped or no unflipped misranked pair)" for b in auc) + f" (95% t, {S} seeds)"
    else:
        status, mean, lo, hi = "inconclusive", None, math.nan, math.nan
        measured = "no β has flipped and unflipped misranked training pairs on every seed"
    held = {b: [nan(r["stats"]["heldout"]["auc"]) for r in rs] for b, rs in by.items()}
    measured += "; for comparison (not the rule), on the held-out pairs: " + ", ".join(
        f"β = {b:g}: AUC {_fmt_iv(t_interval(v))}" for b, v in held.items())
    out.append(make_claim(
        paper=PAPER,
        claim="[small LM] dpo_loss_at_flip = −ln σ(β·m) predicts which misranked training pairs DPO flips",
        measured=measured,
        status=status,
        evidence=evidence("seeds", rule=RULES["lm_auc"], seeds=S, estimate=mean, interval=(lo, hi)),
        source="reconstruction"))
    return out


def topk_timeline(lm: dict, beta: float) -> dict:
    """Per probe step of the runs of ``beta``: the intervals over seeds (mean, lo, hi) of the indicators' change
    since step 0 and of the quality's change since its running peak, and the first alarm / drop steps (the rule
    :data:`RULES` ``["lm_topk"]``)."""
    import numpy as np

    cfg = lm["config"]
    rs = _by_beta(lm)[beta]
    steps = rs[0]["curves"]["step"]
    k = cfg["topk"]
    arr = lambda key: np.asarray([r["curves"][key] for r in rs], np.float64)  # [S, K]
    mass, ent, q = arr(f"topk/mass_top{k}"), arr(f"topk/entropy_top{k}"), arr("topk/reward")
    qm = q.mean(0)
    out = {"step": steps, "mass_change": [], "entropy_change": [], "quality_drop": [], "peak_step": []}
    alarm = drop = None
    for j, t in enumerate(steps):
        peak = int(np.argmax(qm[:j + 1]))
        dm, de, dq = (t_interval(x) for x in (mass[:, j] - mass[:, 0], ent[:, j] - ent[:, 0], q[:, j] - q[:, peak]))
        out["mass_change"].append(list(dm))
        out["entropy_change"].append(list(de))
        out["quality_drop"].append(list(dq))
        out["peak_step"].append(steps[peak])
        if j > 0 and alarm is None and (interval_status(dm[1], dm[2], 0.0, above=False) == "holds"
                                        or interval_status(de[1], de[2], 0.0, above=False) == "holds"):
            alarm = t
        if j > 0 and drop is None and interval_status(dq[1], dq[2], 0.0, above=False) == "holds":
            drop = t
    out["alarm_step"], out["drop_step"] = alarm, drop
    return out


def _topk_claim(lm: dict) -> dict:
    cfg = lm["config"]
    S, k = cfg["seeds"], cfg["topk"]
    tl = {b: topk_timeline(lm, b) for b in cfg["betas"]}
    dropped = [b for b in tl if tl[b]["drop_step"] is not None]
    late = [b for b in dropped if tl[b]["alarm_step"] is None or tl[b]["alarm_step"] > tl[b]["drop_step"]]
    tied = [b for b in dropped if tl[b]["alarm_step"] == tl[b]["drop_step"]]
    if not dropped:
        status = "inconclusive"
    elif late:
        status = "does not hold"
    else:
        status = "inconclusive" if tied else "holds"
    # evidence: the quality change with the lowest upper bound over every (β, step > 0): how close quality came
    # to a significant drop
    cells = [(tl[b]["quality_drop"][j], b, tl[b]["step"][j]) for b in tl for j in range(1, len(tl[b]["step"]))]
    (mean, lo, hi), b_e, t_e = min(cells, key=lambda c: c[0][2] if math.isfinite(c[0][2]) else math.inf)
    parts = []
    for b, x in tl.items():
        last = len(x["step"]) - 1
        parts.append(f"β = {b:g}: after {x['step'][last]} steps Δ top-{k} mass {_fmt_iv(x['mass_change'][last])}, "
                     f"Δ top-{k} entropy {_fmt_iv(x['entropy_change'][last])}, quality − its peak (step "
                     f"{x['peak_step'][last]}) {_fmt_iv(x['quality_drop'][last])}; first alarm "
                     f"{'none' if x['alarm_step'] is None else 'step ' + str(x['alarm_step'])}, first quality drop "
                     f"{'none' if x['drop_step'] is None else 'step ' + str(x['drop_step'])}")
    verdict = {"holds": "the indicators fell strictly before quality at every β where quality fell",
               "does not hold": f"quality fell without an earlier alarm at β = {', '.join(f'{b:g}' for b in late)}",
               "inconclusive": "quality fell at no β, so the order cannot be observed" if not dropped
               else "alarm and quality drop at the same probe step"}[status]
    return make_claim(
        paper="Shi et al., Understanding Likelihood Over-optimisation in Direct Alignment Algorithms (arXiv 2410.11677)",
        claim=f"[small LM] the top-{k} indicators on the policy's own samples (top-{k} mass, renormalised top-{k} "
        "entropy) fall before the quality of the samples (their lexicon reward, which DPO does not see) does, "
        f"across a β sweep of short DPO runs",
        measured="; ".join(parts) + f" (95% t, {S} seeds, {len(lm['prompts'])} prompts × "
        f"{cfg['samples_per_prompt']} samples of ≤ {cfg['max_new_tokens']} tokens); {verdict}",
        status=status,
        evidence=evidence("seeds", rule=RULES["lm_topk"], seeds=S, estimate=mean, interval=(lo, hi)),
        source="reconstruction")


def _lm_claims(lm: dict) -> list[dict]:
    return [_gap_claim(lm, "train"), _gap_claim(lm, "heldout"), *_flip_claims(lm), _topk_claim(lm)]


# ---------------------------------------------------------------------------------------------------------
# Figures


def _steps_axis(budgets):
    """Budgets drawn on a log axis: step 0 at 0.5."""
    return [b if b > 0 else 0.5 for b in budgets]


def _plot_accuracy(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    x = _steps_axis(cfg["budgets"])
    sm = np.asarray(res["summary"]["accuracy_by_budget"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(x, sm[:, 0], "o-", color="C0", label="DPO (exact gradient descent), mean")
    ax.fill_between(x, sm[:, 1], sm[:, 2], color="C0", alpha=0.25, label="95% t-interval")
    mi, lo, hi = res["summary"]["ideal"]
    ax.axhline(mi, color="k", ls="--", label=f"idealised accuracy {mi:.3f} (= DPO optimum)")
    ax.axhspan(lo, hi, color="k", alpha=0.1)
    ax.axhline(res["summary"]["reference"][0], color="C3", ls=":", label="reference μ")
    ax.set_xscale("log")
    ax.set_xlabel("gradient-descent steps (step 0 drawn at 0.5)")
    ax.set_ylabel("ranking accuracy")
    ax.set_title(f"ranking accuracy vs training, β = {cfg['beta']}, {cfg['seeds']} bandits")
    ax.legend(fontsize=8)
    return fig


def _plot_flips(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    edges = cfg["margin_edges"]
    labels = [f"[{a:g}, {b if b == 'inf' else format(b, 'g')})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fr = np.array([[[np.nan if v is None else v for v in r] for r in s] for s in res["flip_fraction_by_bin"]])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = np.arange(len(labels))
    shown = [t for t in range(1, len(cfg["budgets"])) if cfg["budgets"][t] in (1, 10, 100, 1000, cfg["budgets"][-1])]
    for i, t in enumerate(shown):
        means, errs = [], []
        for j in range(len(labels)):
            v = fr[:, t, j]
            v = v[np.isfinite(v)]
            if len(v) >= 2:
                m, _, hi = t_interval(v)
            else:
                m, hi = (float(v.mean()) if len(v) else np.nan), np.nan
            means.append(m)
            errs.append(hi - m)
        ax.errorbar(xs, means, yerr=errs, fmt="o-", color=f"C{i % 10}", label=f"{cfg['budgets'][t]} steps", ms=4)
    ax.set_xticks(xs, labels)
    ax.set_xlabel("reference misranking margin m = ln μ(y_l) − ln μ(y_w) (nats)")
    ax.set_ylabel("fraction of misranked pairs flipped")
    ax.set_title("DPO flips narrowly misranked pairs first (mean, 95% t)")
    ax.legend(fontsize=8)
    return fig


def _plot_roc(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    auc = np.array([[np.nan if v is None else v for v in row] for row in res["auc_by_budget"]])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for i, (b, roc) in enumerate(res["roc_pooled"].items()):
        t = cfg["budgets"].index(int(b))
        ax.plot(roc["fpr"], roc["tpr"], color=f"C{i % 10}", label=f"{b} steps (AUC {np.nanmean(auc[:, t]):.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("dpo_loss_at_flip predicting 'flipped'\n(misranked pairs, pooled over bandits)", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def _plot_lm_accuracy(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    lm = res["lm"]
    by = _by_beta(lm)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    series = (("ref_accuracy", "reference (summed)", "C3", "s"), ("accuracy", "DPO (summed)", "C0", "o"),
              ("accuracy_normalized", "DPO (length-normalised)", "C2", "^"),
              ("idealized_accuracy", "idealised (DPO optimum)", "k", "D"))
    xs = np.arange(len(by))
    for ax, split, title in zip(axes, ("train", "heldout"), ("training pairs", "held-out pairs"), strict=True):
        for i, (key, label, color, marker) in enumerate(series):
            iv = np.array([t_interval([r["stats"][split][key] for r in rs]) for rs in by.values()])
            ax.errorbar(xs + (i - 1.5) * 0.08, iv[:, 0], yerr=np.abs(iv[:, 1:].T - iv[:, 0]), fmt=marker,
                        color=color, label=label, ms=5, capsize=3)
        ax.set_xticks(xs, [f"β = {b:g}" for b in by])
        ax.set_title(f"{title} ({lm['config']['steps']} DPO steps)")
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("ranking accuracy (mean, 95% t over seeds)")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle("small LM: ranking accuracy vs the idealised ranking accuracy", fontsize=11)
    return fig


def _plot_lm_flips(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    from jalign import diagnostics as D

    lm = res["lm"]
    by = _by_beta(lm)
    edges = lm["config"]["margin_edges"]
    labels = [f"[{a:g}, {b if b == 'inf' else format(b, 'g')})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = np.arange(len(labels))
    for i, (b, rs) in enumerate(by.items()):
        fr = np.array([[np.nan if v is None else v for v in r["stats"]["train"]["flip_fraction_by_bin"]] for r in rs])
        means, errs = [], []
        for j in range(len(labels)):
            v = fr[:, j][np.isfinite(fr[:, j])]
            m, lo, hi = t_interval(v) if len(v) else (np.nan, np.nan, np.nan)
            means.append(m)
            errs.append(hi - m)
        ax.errorbar(xs + (i - 1) * 0.06, means, yerr=errs, fmt="o-", color=f"C{i}", label=f"β = {b:g}", ms=4,
                    capsize=3)
        score, flipped = [], []
        for r in rs:
            pairs = lm["train"][r["seed"]]
            rw, rl = np.asarray(pairs["ref_chosen_logps"]), np.asarray(pairs["ref_rejected_logps"])
            w, l_ = (np.asarray(r["final"]["train"][k]) for k in ("chosen_logps", "rejected_logps"))
            mis = ~(rw > rl)
            score.append(np.asarray(D.dpo_loss_at_flip(rw, rl, b))[mis])
            flipped.append((w > l_)[mis])
        score, flipped = np.concatenate(score), np.concatenate(flipped)
        if 0 < flipped.sum() < flipped.size:
            fpr, tpr = D.roc_curve(score, flipped)
            aucs = [r["stats"]["train"]["auc"] for r in rs]
            auc = np.mean([a for a in aucs if a is not None]) if any(a is not None for a in aucs) else np.nan
            ax2.plot(fpr, tpr, color=f"C{i}", label=f"β = {b:g} (mean AUC {auc:.2f})")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_xlabel("reference misranking margin m = ln π_ref(y_l) − ln π_ref(y_w) (nats)")
    ax.set_ylabel("fraction of misranked training pairs flipped")
    ax.set_title("flipped after DPO, by margin (mean, 95% t)", fontsize=10)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    ax2.plot([0, 1], [0, 1], "k:", lw=1)
    ax2.set_xlabel("false-positive rate")
    ax2.set_ylabel("true-positive rate")
    ax2.set_title("dpo_loss_at_flip predicting 'flipped' (pooled over seeds)", fontsize=10)
    ax2.legend(fontsize=8)
    return fig


def _plot_lm_topk(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    lm = res["lm"]
    cfg = lm["config"]
    by = _by_beta(lm)
    k = cfg["topk"]
    panels = ((f"topk/mass_top{k}", f"top-{k} mass M_{k} (own samples)"),
              (f"topk/entropy_top{k}", f"top-{k} entropy H_{k}, renormalised"),
              ("topk/reward", "quality: lexicon reward of own samples"),
              ("heldout/accuracy", "held-out ranking accuracy (summed)"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (key, title) in zip(axes.ravel(), panels, strict=True):
        for i, (b, rs) in enumerate(by.items()):
            steps = rs[0]["curves"]["step"]
            v = np.asarray([r["curves"][key] for r in rs], np.float64)
            iv = np.array([t_interval(v[:, j]) for j in range(v.shape[1])])
            ax.plot(steps, iv[:, 0], "o-", color=f"C{i}", ms=3, label=f"β = {b:g}")
            ax.fill_between(steps, iv[:, 1], iv[:, 2], color=f"C{i}", alpha=0.2)
            if key == "topk/reward":
                x = topk_timeline(lm, b)
                for name, marker in (("alarm_step", "v"), ("drop_step", "x")):
                    if x[name] is not None:
                        j = steps.index(x[name])
                        ax.plot([x[name]], [iv[j, 0]], marker, color=f"C{i}", ms=9)
        ax.set_title(title, fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("DPO step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"small LM: top-{k} indicators vs quality over training (mean, 95% t over {cfg['seeds']} seeds; "
                 "▼ first indicator alarm, × first quality drop)", fontsize=10)
    return fig


FIGURES = (("rankings_accuracy", _plot_accuracy), ("rankings_flip_by_margin", _plot_flips),
           ("rankings_roc", _plot_roc))
LM_FIGURES = (("rankings_lm_accuracy", _plot_lm_accuracy), ("rankings_lm_flips", _plot_lm_flips),
              ("rankings_lm_topk", _plot_lm_topk))


def _figures(res: dict) -> tuple:
    """The ``(name, draw)`` pairs of ``res``: the bandit's, and the small LM's when ``res`` has that part."""
    return FIGURES + (LM_FIGURES if "lm" in res else ())


def run(out: Path, *, quick: bool = True, lm: bool = True, medium: bool = False) -> dict:
    """Run everything (``lm=False``: the bandit half only; ``medium``: see :func:`compute`), write
    ``out/results.json`` and the figures (from the JSON); return the results."""
    out = output_dir(out)
    return finish(out, compute(quick and not medium, lm=lm, medium=medium), plot_from_results)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    out = Path(out)
    res = read_results(out)
    return draw_figures(out, res, _figures(res))

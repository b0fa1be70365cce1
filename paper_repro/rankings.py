"""Ranking accuracy and the idealised ranking accuracy (Chen et al., NeurIPS 2024), exactly on a contextual bandit.

Setting (the project's own construction; the paper works with LMs): X contexts with K responses each, true
rewards r ~ N(0, 1), a reference μ(·|x) = softmax(2·g) with g ~ N(0, 1) independent of r, Bradley–Terry
preferences p = σ(r_w − r_l), β = 0.1. The pairs are every unordered pair of every context, the chosen one
being the one with the larger true reward. DPO is trained on its exact population loss (pairs drawn from μ·μ,
Bradley–Terry labels; :mod:`jalign.envs.rankings`):

1. to its optimum — by Newton's method on the exact loss, compared with the closed form π* ∝ μ·exp(r/β) — whose
   ranking accuracy is compared with ``idealized_ranking_accuracy``;
2. by plain gradient descent for a range of step budgets: ranking accuracy against steps; among the pairs the
   reference misranks (m = ln μ(y_l) − ln μ(y_w) > 0), which have flipped after each budget, by margin bin, and
   the AUC of ``dpo_loss_at_flip`` = −ln σ(β·m) as a predictor of "flipped".

Every random bandit is a seed; seeds are vmapped, the whole run is jitted and in float64
(``jax.enable_x64``). Claims carry evidence (kind, seeds, estimate, 95% t-interval, the pass rule fixed below
in :data:`RULES`). The small-LM part of the paper (and Shi et al.'s top-k indicators) is not part of this
reproduction, and it makes no claim about them.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "rankings"
DESCRIPTION = "Ranking accuracy vs the idealised ranking accuracy of DPO's optimum, exactly on a contextual bandit"

PAPER = "Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024 (arXiv 2405.19534)"
MARGIN_EDGES = (0.0, 1.0, 2.0, 4.0, 8.0, math.inf)  # bins of the reference's misranking margin m (nats)

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


def t_interval(x) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of ``x`` (1-D, ≥ 2 finite values): (mean, lo, hi)."""
    import numpy as np
    from scipy import stats

    x = np.asarray(x, np.float64)
    n = len(x)
    mean = float(x.mean())
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


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


def _ev(kind, seeds, estimate, interval, rule) -> dict:
    return {"kind": kind, "seeds": int(seeds), "estimate": None if estimate is None else float(estimate),
            "interval": None if interval is None else [float(interval[0]), float(interval[1])], "rule": rule}


def _roc_points(score, label, max_points=200):
    import numpy as np

    from jalign.diagnostics import roc_curve

    fpr, tpr = roc_curve(score, label)
    idx = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    return [float(v) for v in fpr[idx]], [float(v) for v in tpr[idx]]


def compute(quick: bool = True) -> dict:
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
        "rules": RULES,
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
    res["claims"] = claims(res)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _status(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def _side(lo, hi, threshold, above: bool) -> tuple[str, str]:
    """(status, verdict word): holds when the interval is on the claimed side, 'inconclusive' if it straddles."""
    if (lo > threshold) if above else (hi < threshold):
        return "holds", "holds"
    if (hi < threshold) if above else (lo > threshold):
        return "does not hold", "the interval lies on the other side"
    return "does not hold", "inconclusive (the interval straddles the threshold)"


def claims(res: dict) -> list[dict]:
    """The claims with their evidence, from the saved results (the rules are :data:`RULES`)."""
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
    out.append({
        "paper": PAPER,
        "claim": "DPO trained to its optimum reaches the idealised ranking accuracy exactly (checked on a "
        "contextual bandit, the project's construction)",
        "measured": f"{s} random bandits, {cfg['pairs_per_seed']} pairs each: accuracy of π* = idealised on "
        f"{int(np.sum(star == ideal))}/{s} seeds, of the Newton minimiser on {int(np.sum(newton == ideal))}/{s} "
        f"(idealised {np.mean(ideal):.4f} on average); max |ln π_Newton − ln π*| = {err:.1e}; smallest "
        f"|idealised margin| of a pair {np.min(ps['min_abs_ideal_margin']):.3g} nats",
        "status": _status(ok),
        "evidence": _ev("exact", s, float(np.max(np.abs(newton - ideal))), None, RULES["optimum"]),
    })

    gap = ideal - np.asarray(ps["acc_reference"])
    mean, lo, hi = t_interval(gap)
    st, word = _side(lo, hi, 0.0, above=True)
    out.append({
        "paper": PAPER,
        "claim": "the reference ranks far fewer pairs right than the idealised DPO optimum (bandit with a "
        "reference independent of the rewards, the project's construction)",
        "measured": f"idealised {np.mean(ideal):.3f} vs reference {np.mean(ps['acc_reference']):.3f}: gap "
        f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); {word}",
        "status": st,
        "evidence": _ev("seeds", s, mean, (lo, hi), RULES["reference_gap"]),
    })

    acc_mid = np.asarray(res["accuracy_by_budget"])[:, t_mid]
    mean, lo, hi = t_interval(ideal - acc_mid)
    st, word = _side(lo, hi, 0.0, above=True)
    last = np.asarray(res["accuracy_by_budget"])[:, -1]
    out.append({
        "paper": PAPER,
        "claim": f"after finite training the ranking accuracy stays below the idealised accuracy (alignment gap; "
        f"exact gradient descent on the population DPO loss, {cfg['mid_budget']} steps)",
        "measured": f"accuracy {np.mean(acc_mid):.3f} vs idealised {np.mean(ideal):.3f}: gap {mean:.3f} "
        f"[{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); {word}; after {budgets[-1]} steps the gap is "
        f"{np.mean(ideal - last):.4f}",
        "status": st,
        "evidence": _ev("seeds", s, mean, (lo, hi), RULES["budget_gap"]),
    })

    narrow = np.asarray(res["flip_fraction_narrow"])[:, t_mid]
    wide = np.asarray(res["flip_fraction_wide"])[:, t_mid]
    mean, lo, hi = t_interval(narrow - wide)
    st, word = _side(lo, hi, 0.0, above=True)
    out.append({
        "paper": PAPER,
        "claim": "DPO flips pairs the reference misranks by a wide margin less often than narrowly misranked ones "
        "(bandit, exact gradient descent)",
        "measured": f"after {cfg['mid_budget']} steps: flipped {np.mean(narrow):.3f} of pairs with m < "
        f"{cfg['narrow_margin']:g} vs {np.mean(wide):.3f} with m ≥ {cfg['wide_margin']:g}; difference {mean:.3f} "
        f"[{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); {word}",
        "status": st,
        "evidence": _ev("seeds", s, mean, (lo, hi), RULES["monotone"]),
    })

    mean, lo, hi = t_interval(wide)
    st, word = _side(lo, hi, 0.25, above=False)
    out.append({
        "paper": PAPER,
        "claim": "DPO rarely (< 1 in 4) flips pairs the reference misranks by a wide margin (m ≥ 4 nats; bandit, "
        "exact gradient descent)",
        "measured": f"after {cfg['mid_budget']} steps: {mean:.3f} [{lo:.3f}, {hi:.3f}] of the misranked pairs with "
        f"m ≥ {cfg['wide_margin']:g} flipped (95% t, {s} seeds); {word}; after {budgets[-1]} steps "
        f"{np.mean(np.asarray(res['flip_fraction_wide'])[:, -1]):.3f}",
        "status": st,
        "evidence": _ev("seeds", s, mean, (lo, hi), RULES["rarely"]),
    })

    auc = np.array([[np.nan if v is None else v for v in row] for row in res["auc_by_budget"]])
    valid = [t for t in range(len(budgets)) if np.all(np.isfinite(auc[:, t]))]
    ivs = {t: t_interval(auc[:, t]) for t in valid}
    if valid:
        worst = min(valid, key=lambda t: ivs[t][1])
        mean, lo, hi = ivs[worst]
        st, word = _side(lo, hi, 0.5, above=True)
        by_budget = ", ".join(f"{budgets[t]}: {ivs[t][0]:.2f}" for t in valid)
        measured = (f"AUC by budget (steps: mean over {s} seeds) {by_budget}; weakest budget {budgets[worst]}: "
                    f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t); {word}")
        ev = _ev("seeds", s, mean, (lo, hi), RULES["auc"])
    else:
        st, measured = "does not hold", "no budget has both flipped and unflipped misranked pairs on every seed"
        ev = _ev("seeds", s, None, None, RULES["auc"])
    out.append({
        "paper": PAPER,
        "claim": "dpo_loss_at_flip = −ln σ(β·m) predicts which misranked pairs DPO flips (bandit, exact gradient "
        "descent)",
        "measured": measured,
        "status": st,
        "evidence": ev,
    })
    return out


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

    from paper_repro.rankings import t_interval

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


FIGURES = (("rankings_accuracy", _plot_accuracy), ("rankings_flip_by_margin", _plot_flips),
           ("rankings_roc", _plot_roc))


def run(out: Path, *, quick: bool = True) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results."""
    out = output_dir(out)
    return finish(out, compute(quick), plot_from_results)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    out = Path(out)
    return draw_figures(out, read_results(out), FIGURES)

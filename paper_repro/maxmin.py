"""MaxMin-RLHF (Chakraborty et al., ICML 2024) on a bandit with planted user groups.

Setting (the project's own construction; the paper's toy is GPT-2 and its main run Tulu2-7B): K arms, a uniform
reference μ, two user groups with rewards r_maj = s·z₀ and r_min = s·(ρ·z₀ + √(1 − ρ²)·z₁), z ~ N(0, 1), each
centred to E_μ[r_g] = 0 (rewards are identified only up to a constant per group, so utilities are read relative
to μ). The diversity is d = (1 − ρ)/2 ∈ [0, 1] (0: one group, 1: opposite rewards). U users, a share α of them in
the minority, each labelling n random pairs by Bradley–Terry with their group's reward. The pieces, all from
``jalign``:

1. **Impossibility** — single-reward RLHF: one Bradley–Terry reward fitted on the pooled labels
   (:func:`jalign.envs.fit_bt_mixture` with one group), then the KL-regularised optimum π ∝ μ·exp(r̂/β). Each
   group's utility gap is its regret in its own KL-regularised objective, J_g(π*_g) − J_g(π) = β·KL(π‖π*_g)
   (:func:`jalign.envs.regret`), over a grid of minority shares α and diversities d.
2. **EM recovers the groups** — :func:`jalign.envs.fit_bt_mixture` with two groups (several random restarts, the
   best final objective kept); the adjusted Rand index (:func:`jalign.envs.adjusted_rand_index`) of the users'
   argmax responsibilities against the planted groups, as a function of the number of labels per user.
3. **MaxMin** — :func:`jalign.envs.maxmin_policy` on the EM rewards (and, as an oracle, on the true rewards)
   against single-reward RLHF at the same β: each group's expected true reward E_π[r_g], the worst group's, and
   the majority's loss.

Seeds are independent draws of rewards, users and labels, vmapped; everything is jitted (float32, the
library's default). Claims carry evidence with the pass rules fixed in :data:`RULES`. The small-LM experiment of
the paper (simulated annotators, reward models per EM group, MaxMin RL by win rate) is not part of this
reproduction; it makes no claim about it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "maxmin"
DESCRIPTION = "MaxMin-RLHF: single-reward impossibility, EM recovery of user groups, egalitarian policy (bandit)"

PAPER = "Chakraborty et al., MaxMin-RLHF: Alignment with Diverse Human Preferences, ICML 2024 (arXiv 2402.08925)"

# The pass rules, fixed before the run (thresholds not tuned to the results).
RULES = {
    "minority_gap": "at the smallest share and the largest diversity, the 95% t-interval over seeds of (minority "
    "gap − majority gap) of single-reward RLHF lies above 0",
    "share_trend": "at the largest diversity, the 95% t-interval over seeds of (minority gap at the smallest share − "
    "at share ½) lies above 0",
    "diversity_trend": "at the smallest share, the 95% t-interval over seeds of (minority gap at the largest "
    "diversity − at diversity 0) lies above 0",
    "em_recovery": "at the most labels per user, the 95% t-interval over seeds of the adjusted Rand index of EM's "
    "groups vs the planted ones lies above 0.9",
    "em_trend": "the 95% t-interval over seeds of (ARI at the most labels per user − ARI at the fewest) lies "
    "above 0",
    "worst_group": "the 95% t-interval over seeds of (worst-group expected reward of MaxMin on EM rewards − of "
    "single-reward RLHF) lies above 0",
    "majority_loss": "the 95% t-interval over seeds of (minority's gain − majority's loss) of MaxMin on EM rewards "
    "vs single-reward RLHF lies above 0",
    "oracle": "every seed: the egalitarian objective min_g E_π[r_g] − β·KL(π‖μ) of MaxMin on the true rewards is ≥ "
    "that of single-reward RLHF, of MaxMin on EM rewards, of each group's own optimum and of μ, up to 1e-5",
}


def settings(quick: bool) -> dict:
    return {
        "num_arms": 10,
        "num_users": 100,
        "reward_scale": 2.0,
        "beta": 0.5,
        "seeds": 5 if quick else 20,
        "shares": [0.1, 0.2, 0.3, 0.4, 0.5],
        "diversities": [0.0, 0.25, 0.5, 0.75, 1.0],
        "labels_per_user": 20,  # part 1 and part 3
        "em_labels_per_user": [1, 2, 5, 10, 20, 40],
        "em_share": 0.3,
        "em_diversity": 0.75,
        "em_restarts": 4,
        "em_iters": 50,
        "single_iters": 10,
        "m_steps": 5,
        "maxmin_share": 0.2,
        "maxmin_diversity": 0.75,
    }


def _problem(key, share, diversity, num_users, num_arms, per_user, scale):
    """Planted rewards [2, K] (majority, minority), users' groups [U], comparisons (uid, pairs, labels)."""
    import jax
    import jax.numpy as jnp

    kz, ka, kb, kl = jax.random.split(key, 4)
    rho = 1.0 - 2.0 * diversity
    z = jax.random.normal(kz, (2, num_arms))
    r = scale * jnp.stack([z[0], rho * z[0] + jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0)) * z[1]])
    r = r - jnp.mean(r, axis=1, keepdims=True)  # E_μ[r_g] = 0 for the uniform μ
    groups = (jnp.arange(num_users) < jnp.round(share * num_users)).astype(jnp.int32)  # 1 = minority
    uid = jnp.repeat(jnp.arange(num_users), per_user)
    a = jax.random.randint(ka, uid.shape, 0, num_arms)
    b = (a + jax.random.randint(kb, uid.shape, 1, num_arms)) % num_arms
    g = groups[uid]
    p = jax.nn.sigmoid(r[g, a] - r[g, b])
    labels = jax.random.bernoulli(kl, p).astype(jnp.int32)
    return r, groups, uid, jnp.stack([a, b], 1), labels


@functools.cache
def _gap_fn(num_users, num_arms, per_user, scale, beta, iters, m_steps):
    import jax
    import jax.numpy as jnp

    from jalign import envs

    def one(key, share, diversity):
        kp, kf = jax.random.split(key)
        r, _, uid, pairs, labels = _problem(kp, share, diversity, num_users, num_arms, per_user, scale)
        ref = jnp.full((num_arms,), -jnp.log(num_arms))
        fit = envs.fit_bt_mixture(kf, uid, pairs, labels, 1, num_users=num_users, num_arms=num_arms,
                                  num_iters=iters, m_steps=m_steps)
        lp = envs.optimal_logps(fit.rewards[0], ref, beta)
        return {"gap_majority": envs.regret(lp, r[0], ref, beta), "gap_minority": envs.regret(lp, r[1], ref, beta),
                "reward_majority": envs.expected_reward(lp, r[0]),
                "reward_minority": envs.expected_reward(lp, r[1])}

    return jax.jit(jax.vmap(one))


def _best_of_restarts(key, uid, pairs, labels, restarts, num_users, num_arms, iters, m_steps):
    import jax
    import jax.numpy as jnp

    from jalign import envs

    fits = jax.vmap(lambda k: envs.fit_bt_mixture(k, uid, pairs, labels, 2, num_users=num_users,
                                                  num_arms=num_arms, num_iters=iters, m_steps=m_steps))(
        jax.random.split(key, restarts))
    i = jnp.argmax(fits.objective[:, -1])
    return jax.tree.map(lambda x: x[i], fits)


@functools.cache
def _em_fn(num_users, num_arms, per_user, scale, share, diversity, restarts, iters, m_steps):
    import jax
    import jax.numpy as jnp

    from jalign import envs

    def one(key):
        kp, kf = jax.random.split(key)
        _, groups, uid, pairs, labels = _problem(kp, share, diversity, num_users, num_arms, per_user, scale)
        fit = _best_of_restarts(kf, uid, pairs, labels, restarts, num_users, num_arms, iters, m_steps)
        found = jnp.argmax(fit.responsibilities, axis=1).astype(jnp.int32)
        return {"ari": envs.adjusted_rand_index(groups, found, num_classes=2),
                "objective_trace": fit.objective}

    return jax.jit(jax.vmap(one))


@functools.cache
def _maxmin_fn(num_users, num_arms, per_user, scale, share, diversity, beta, restarts, iters, single_iters,
               m_steps):
    import jax
    import jax.numpy as jnp

    from jalign import envs

    def one(key):
        kp, kf, ks = jax.random.split(key, 3)
        r, groups, uid, pairs, labels = _problem(kp, share, diversity, num_users, num_arms, per_user, scale)
        ref = jnp.full((num_arms,), -jnp.log(num_arms))
        single = envs.fit_bt_mixture(ks, uid, pairs, labels, 1, num_users=num_users, num_arms=num_arms,
                                     num_iters=single_iters, m_steps=m_steps)
        mix = _best_of_restarts(kf, uid, pairs, labels, restarts, num_users, num_arms, iters, m_steps)
        policies = {
            "single": envs.optimal_logps(single.rewards[0], ref, beta),
            "maxmin_em": envs.maxmin_policy(mix.rewards, ref, beta),
            "maxmin_true": envs.maxmin_policy(r, ref, beta),
            "majority_opt": envs.optimal_logps(r[0], ref, beta),
            "minority_opt": envs.optimal_logps(r[1], ref, beta),
            "reference": ref,
        }
        out = {}
        for name, lp in policies.items():
            util = envs.expected_reward(lp, r)  # [2]: (majority, minority)
            out[f"{name}/majority"] = util[0]
            out[f"{name}/minority"] = util[1]
            out[f"{name}/egalitarian"] = jnp.min(util) - beta * envs.kl(lp, ref)
        found = jnp.argmax(mix.responsibilities, axis=1).astype(jnp.int32)
        out["ari"] = envs.adjusted_rand_index(groups, found, num_classes=2)
        return out

    return jax.jit(jax.vmap(one))


def compute(quick: bool = True) -> dict:
    import itertools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign.reporting import t_interval

    cfg = settings(quick)
    t0 = time.time()
    s = cfg["seeds"]
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    timings = {}

    # 1. the impossibility grid: (share, diversity, seed) flattened and vmapped
    combos = list(itertools.product(range(len(cfg["shares"])), range(len(cfg["diversities"])), range(s)))
    keys = jax.random.split(k1, s)
    fn = _gap_fn(cfg["num_users"], cfg["num_arms"], cfg["labels_per_user"], cfg["reward_scale"], cfg["beta"],
                 cfg["single_iters"], cfg["m_steps"])
    t = time.time()
    gaps = jax.device_get(fn(jnp.stack([keys[c[2]] for c in combos]),
                             jnp.asarray([cfg["shares"][c[0]] for c in combos]),
                             jnp.asarray([cfg["diversities"][c[1]] for c in combos])))
    timings["impossibility"] = round(time.time() - t, 1)
    shape = (len(cfg["shares"]), len(cfg["diversities"]), s)
    gaps = {k: np.asarray(v, np.float64).reshape(shape) for k, v in gaps.items()}  # [A, D, S]

    # 2. EM recovery vs labels per user (one compiled function per n)
    ari = []
    traces = []
    t = time.time()
    for n in cfg["em_labels_per_user"]:
        fn = _em_fn(cfg["num_users"], cfg["num_arms"], n, cfg["reward_scale"], cfg["em_share"],
                    cfg["em_diversity"], cfg["em_restarts"], cfg["em_iters"], cfg["m_steps"])
        out = jax.device_get(fn(jax.random.split(jax.random.fold_in(k2, n), s)))
        ari.append(np.asarray(out["ari"], np.float64))
        traces.append(np.asarray(out["objective_trace"], np.float64))
    timings["em"] = round(time.time() - t, 1)
    ari = np.stack(ari, axis=1)  # [S, L]
    monotone = [bool(np.all(np.diff(tr, axis=1) >= -1e-3 * np.maximum(1.0, np.abs(tr[:, 1:])))) for tr in traces]

    # 3. MaxMin vs single-reward RLHF
    fn = _maxmin_fn(cfg["num_users"], cfg["num_arms"], cfg["labels_per_user"], cfg["reward_scale"],
                    cfg["maxmin_share"], cfg["maxmin_diversity"], cfg["beta"], cfg["em_restarts"], cfg["em_iters"],
                    cfg["single_iters"], cfg["m_steps"])
    t = time.time()
    mm = {k: np.asarray(v, np.float64).tolist() for k, v in jax.device_get(fn(jax.random.split(k3, s))).items()}
    timings["maxmin"] = round(time.time() - t, 1)

    ci = lambda x: list(t_interval(x))
    res = {
        "paper": PAPER,
        "quick": quick,
        "config": {**cfg, "reference_policy": "uniform", "dtype": "float32",
                   "diversity": "d = (1 − ρ)/2, ρ the correlation of the groups' rewards",
                   "gap": "J_g(π*_g) − J_g(π) = β·KL(π‖π*_g), π the single-reward RLHF optimum",
                   "utility": "E_π[r_g], true rewards centred under μ"},
        "rules": RULES,
        "gaps": {k: v.tolist() for k, v in gaps.items()},  # [A][D][S]
        "gap_summary": {k: [[ci(v[i, j]) for j in range(shape[1])] for i in range(shape[0])]
                        for k, v in gaps.items()},
        "ari": ari.tolist(),  # [S][L]
        "ari_summary": [ci(ari[:, j]) for j in range(ari.shape[1])],
        "em_objective_monotone": monotone,
        "maxmin": mm,
        "wall_s": timings,  # volatile (not compared between runs)
    }
    res["claims"] = claims(res)
    timings["compute"] = round(time.time() - t0, 1)
    return res


def claims(res: dict) -> list[dict]:
    """The claims with their evidence, from the saved results (rules: :data:`RULES`)."""
    import numpy as np

    from jalign.reporting import evidence, interval_status, make_claim, t_interval

    cfg = res["config"]
    s = cfg["seeds"]
    gmin, gmaj = np.asarray(res["gaps"]["gap_minority"]), np.asarray(res["gaps"]["gap_majority"])  # [A, D, S]
    shares, divs = cfg["shares"], cfg["diversities"]
    out = []

    def seeded(claim, rule_key, x, threshold, measured):
        mean, lo, hi = t_interval(x)
        st = interval_status(lo, hi, threshold, above=True)
        out.append(make_claim(
            paper=PAPER, source="reconstruction", claim=claim,
            measured=measured(mean, lo, hi) + f" (95% t, {s} seeds); {st}",
            status=st, evidence=evidence("seeds", rule=RULES[rule_key], seeds=s, estimate=mean, interval=(lo, hi))))

    a0, d1 = 0, len(divs) - 1
    seeded("a single Bradley–Terry reward fitted on pooled preferences, optimised with KL-regularised RL, leaves "
           "the minority with a larger utility gap than the majority (bandit with planted groups, the project's "
           "construction)", "minority_gap", gmin[a0, d1] - gmaj[a0, d1], 0.0,
           lambda m, lo, hi: f"share {shares[a0]}, diversity {divs[d1]}: minority gap {gmin[a0, d1].mean():.3f} vs "
           f"majority {gmaj[a0, d1].mean():.3f}; difference {m:.3f} [{lo:.3f}, {hi:.3f}]")
    ah = shares.index(0.5)
    seeded("the minority's utility gap grows as its share shrinks (single-reward RLHF, bandit)", "share_trend",
           gmin[a0, d1] - gmin[ah, d1], 0.0,
           lambda m, lo, hi: f"diversity {divs[d1]}: minority gap by share " + ", ".join(
               f"{a}: {gmin[i, d1].mean():.3f}" for i, a in enumerate(shares))
           + f"; share {shares[a0]} − share 0.5: {m:.3f} [{lo:.3f}, {hi:.3f}]")
    seeded("the minority's utility gap grows with the diversity between the groups (single-reward RLHF, bandit)",
           "diversity_trend", gmin[a0, d1] - gmin[a0, 0], 0.0,
           lambda m, lo, hi: f"share {shares[a0]}: minority gap by diversity " + ", ".join(
               f"{d}: {gmin[a0, j].mean():.3f}" for j, d in enumerate(divs))
           + f"; diversity {divs[d1]} − 0: {m:.3f} [{lo:.3f}, {hi:.3f}]")

    ari = np.asarray(res["ari"])  # [S, L]
    ns = cfg["em_labels_per_user"]
    seeded("EM for a mixture of Bradley–Terry models recovers the planted user groups (enough labels per user)",
           "em_recovery", ari[:, -1], 0.9,
           lambda m, lo, hi: f"share {cfg['em_share']}, diversity {cfg['em_diversity']}, {cfg['em_restarts']} "
           f"restarts: ARI by labels per user " + ", ".join(f"{n}: {ari[:, j].mean():.3f}" for j, n in enumerate(ns))
           + f"; at {ns[-1]}: {m:.3f} [{lo:.3f}, {hi:.3f}]; EM objective non-decreasing on every run: "
           f"{all(res['em_objective_monotone'])}")
    seeded("EM's recovery improves with the number of labels per user", "em_trend", ari[:, -1] - ari[:, 0], 0.0,
           lambda m, lo, hi: f"ARI at {ns[-1]} − at {ns[0]} labels per user: {m:.3f} [{lo:.3f}, {hi:.3f}]")

    mm = {k: np.asarray(v) for k, v in res["maxmin"].items()}
    worst = lambda p: np.minimum(mm[f"{p}/majority"], mm[f"{p}/minority"])
    seeded("MaxMin on the EM groups' rewards raises the worst group's utility over single-reward RLHF (same β)",
           "worst_group", worst("maxmin_em") - worst("single"), 0.0,
           lambda m, lo, hi: f"share {cfg['maxmin_share']}, diversity {cfg['maxmin_diversity']}, β {cfg['beta']}: "
           f"worst-group E_π[r_g]: MaxMin-EM {worst('maxmin_em').mean():.3f}, MaxMin-true "
           f"{worst('maxmin_true').mean():.3f}, single {worst('single').mean():.3f}; MaxMin-EM − single {m:.3f} "
           f"[{lo:.3f}, {hi:.3f}]; EM ARI {mm['ari'].mean():.3f}")
    gain = mm["maxmin_em/minority"] - mm["single/minority"]
    loss = mm["single/majority"] - mm["maxmin_em/majority"]
    seeded("MaxMin serves the minority at a smaller cost to the majority (bandit: the minority's gain exceeds the "
           "majority's loss)", "majority_loss", gain - loss, 0.0,
           lambda m, lo, hi: f"minority E_π[r]: single {mm['single/minority'].mean():.3f} → MaxMin-EM "
           f"{mm['maxmin_em/minority'].mean():.3f} (gain {gain.mean():.3f}); majority: "
           f"{mm['single/majority'].mean():.3f} → {mm['maxmin_em/majority'].mean():.3f} (loss {loss.mean():.3f}); "
           f"gain − loss {m:.3f} [{lo:.3f}, {hi:.3f}]")

    others = ("single", "maxmin_em", "majority_opt", "minority_opt", "reference")
    best = mm["maxmin_true/egalitarian"]
    margin = min(float(np.min(best - mm[f"{p}/egalitarian"])) for p in others)
    ok = margin >= -1e-5
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="the MaxMin policy (exact, through the convex dual) maximises the egalitarian objective "
        "min_g E_π[r_g] − β·KL(π‖μ) (bandit)",
        measured=f"smallest margin over {s} seeds of MaxMin-true over single, MaxMin-EM, each group's optimum and μ: "
        f"{margin:.2e}; egalitarian objective MaxMin-true {best.mean():.3f}, single "
        f"{mm['single/egalitarian'].mean():.3f}, MaxMin-EM {mm['maxmin_em/egalitarian'].mean():.3f}",
        status="holds" if ok else "does not hold",
        evidence=evidence("exact", rule=RULES["oracle"], seeds=s, estimate=margin)))
    return out


def _plot_gaps(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    sm = res["gap_summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for j, d in enumerate(cfg["diversities"]):
        m = np.asarray([sm["gap_minority"][i][j] for i in range(len(cfg["shares"]))])
        axes[0].errorbar(cfg["shares"], m[:, 0], yerr=m[:, 2] - m[:, 0], fmt="o-", ms=3, color=f"C{j}",
                         label=f"diversity {d}")
    axes[0].set_xlabel("minority share α")
    axes[0].set_ylabel("minority gap β·KL(π‖π*_min)")
    axes[0].set_title("single-reward RLHF: the minority's gap", fontsize=10)
    axes[0].legend(fontsize=7)
    i0 = 0
    for key, col, lab in (("gap_minority", "C3", "minority"), ("gap_majority", "C0", "majority")):
        m = np.asarray(sm[key][i0])
        axes[1].errorbar(cfg["diversities"], m[:, 0], yerr=m[:, 2] - m[:, 0], fmt="o-", ms=3, color=col, label=lab)
    axes[1].set_xlabel("diversity d = (1 − ρ)/2")
    axes[1].set_ylabel("utility gap")
    axes[1].set_title(f"share α = {cfg['shares'][i0]}", fontsize=10)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"impossibility (mean, 95% t over {cfg['seeds']} seeds)", fontsize=10)
    return fig


def _plot_em(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    m = np.asarray(res["ari_summary"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(cfg["em_labels_per_user"], m[:, 0], "o-", color="C2")
    ax.fill_between(cfg["em_labels_per_user"], m[:, 1], m[:, 2], color="C2", alpha=0.25)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("labels per user")
    ax.set_ylabel("adjusted Rand index vs planted groups")
    ax.set_title(f"EM recovers the groups (share {cfg['em_share']}, diversity {cfg['em_diversity']})", fontsize=10)
    return fig


def _plot_maxmin(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    from jalign.reporting import t_interval

    cfg = res["config"]
    mm = res["maxmin"]
    names = (("reference", "μ"), ("single", "single-reward RLHF"), ("maxmin_em", "MaxMin (EM rewards)"),
             ("maxmin_true", "MaxMin (true rewards)"))
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    for off, grp, col in ((-0.18, "majority", "C0"), (0.18, "minority", "C3")):
        ivs = [t_interval(mm[f"{p}/{grp}"]) for p, _ in names]
        means = [v[0] for v in ivs]
        ax.bar(x + off, means, width=0.36, color=col, label=grp,
               yerr=[v[2] - v[0] for v in ivs], capsize=3)
    ax.set_xticks(x, [n for _, n in names], fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("E_π[r_g] (true reward, centred under μ)")
    ax.set_title(f"each group's utility (share {cfg['maxmin_share']}, diversity {cfg['maxmin_diversity']}, "
                 f"β {cfg['beta']})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


FIGURES = (("maxmin_gaps", _plot_gaps), ("maxmin_em_ari", _plot_em), ("maxmin_utilities", _plot_maxmin))


def run(out: Path, *, quick: bool = True) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results."""
    t0 = time.time()
    out = output_dir(out)
    return finish(out, compute(quick), plot_from_results, t0=t0)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    out = Path(out)
    return draw_figures(out, read_results(out), FIGURES)

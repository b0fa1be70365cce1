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
library's default). Claims carry evidence with the pass rules fixed in :data:`RULES`.

4. **Small LM** (the project's construction, source "reconstruction"; the paper's small experiment is GPT-2 with
   simulated sentiment/conciseness annotators). The reference is the shipped small LM after SFT (config
   ``sft_small_lm``, via ``paper_repro.rankings._sft_reference``). A *pool* of completions is sampled from it on
   the built-in prompts (the 12 places of ``sentiment_pairs``); :data:`LM_USERS` simulated annotators — a
   majority that prefers positive sentiment (true reward: the ``lexicon`` reward × 4, a Bradley–Terry logit
   scale) and a minority that prefers concise answers (``conciseness`` × 20, max_len 80: 4 logits per 16
   tokens) — each label random same-prompt pairs of the pool by Bradley–Terry with their group's reward.
   EM over users (:func:`jalign.envs.fit_bt_mixture`, pool items as arms, 2 groups, best of several restarts)
   recovers the groups (ARI vs planted, :func:`jalign.envs.adjusted_rand_index`, over independent label draws).
   On the first draw, one reward model per EM group (the SFT trunk + a scalar head, ``mode="reward"``, trained on
   the pairs of the users EM assigns to that group) and one pooled reward model on every pair (single-reward
   RLHF). Then online RLOO from the SFT policy (config ``rloo_small_lm``, no KL term in the loss, KL measured):
   *single* on ``online.reward = "rm:<pooled>"``, *MaxMin* on ``"combine:maxmin:g0=reward_model,g1=reward_model"``
   — per sampled batch the group whose reward model's mean reward (relative to its mean on the pool, i.e. under
   the reference) is lowest is optimised (MaxMin-RLHF's Algorithm 1; :func:`jalign.rewards.maxmin_group`).
   Each policy is judged by each *true* group reward's win rate against the SFT reference on held-out prompts
   (ties ½; :func:`jalign.diagnostics.evaluation.win_rate`). Seeds vary the RL data order and sampling; the
   SFT reference, pool, labels, EM and reward models are shared by all seeds (one draw), so per-seed
   differences are paired.

Medium mode (``jalign reproduce maxmin --medium``): parts 1–3 at quick size, the small LM with 5 seeds and three
times quick's reward-model (120) and RL (36) steps — the test of whether better-trained reward models change the
small-LM verdicts.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "maxmin"
DESCRIPTION = ("MaxMin-RLHF: single-reward impossibility, EM recovery of user groups, egalitarian policy (bandit); "
               "simulated annotators, reward models per EM group, MaxMin vs single-reward RLOO (small LM)")

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
    "lm_worst_group": "small LM, held-out prompts: the 95% t-interval over seeds of the per-seed difference of the "
    "worst group's win rate vs the SFT reference (min over the two true group rewards; MaxMin − single-reward "
    "RLOO) lies above 0 → holds; below 0 → does not hold; else inconclusive",
    "lm_majority_loss": "small LM: the 95% t-interval over seeds of (minority's win-rate gain − majority's "
    "win-rate loss) of MaxMin vs single-reward RLOO lies above 0 → holds; below 0 → does not hold; else "
    "inconclusive",
    "lm_em": "small LM annotators: the 95% t-interval over label draws of the adjusted Rand index of EM's groups "
    "vs the planted ones lies above 0.9 → holds; below → does not hold; else inconclusive",
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


def compute(quick: bool = True, *, lm: bool = True, medium: bool = False) -> dict:
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
    timings["compute"] = round(time.time() - t0, 1)
    if medium:
        res["quick"], res["size"] = False, "medium"
    if lm:
        c = lm_settings(quick, medium)
        study = _lm_study(c)
        res["lm"] = {"config": {**c, "methods": list(LM_METHODS),
                                "model": "jalign.models.load_small_lm() after SFT (sft_small_lm): the reference, "
                                "the pool's sampler, the reward models' trunk and the start of every RLOO run",
                                "trainer": "jalign.train.train: mode reward (reward models), mode online, loss rloo "
                                "(config rloo_small_lm; single: online.reward = rm:<pooled>, MaxMin: "
                                "combine:maxmin:g0=reward_model,g1=reward_model)",
                                "true_rewards": {"majority": f"lexicon × {c['lexicon_scale']}",
                                                 "minority": f"conciseness (max_len {c['conciseness_max_len']}) × "
                                                 f"{c['conciseness_scale']}"}}, **study}
        timings["lm"] = study["seconds"]
    res["claims"] = claims(res)
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
    if "lm" in res:
        out += _lm_claims(res)
    return out


# ----------------------------------------------------------------------------------------------------------
# Part 4: the small LM (simulated annotators, EM, reward models per group, MaxMin vs single-reward RLOO)

LM_METHODS = ("single", "maxmin")
LM_GROUPS = ("majority", "minority")  # true rewards: lexicon (positive sentiment), conciseness
# New places in the training prompts' template: the held-out prompts are never trained on or labelled.
LM_HELDOUT_PLACES = ("the theatre", "the bistro", "the spa", "the market", "the zoo", "the bar", "the hostel",
                     "the tea room")
LM_USERS = 20


def lm_settings(quick: bool, medium: bool = False) -> dict:
    """Settings of the small-LM half (quick: CPU, 16 min in the committed run on 2 cores shared at load ≈ 11; full:
    more seeds and RL steps; medium: quick's with 5 seeds and three times the reward-model and RL steps)."""
    if medium:
        return {**lm_settings(True), "seeds": 5, "rm_steps": 120, "rl_steps": 36}
    return {
        "seeds": 3 if quick else 5,
        "sft_steps": 120,
        "pool_samples_per_prompt": 8,  # × the 12 training prompts = the pool of items users compare
        "max_new_tokens": 80,
        "lexicon_scale": 4.0,  # majority's true reward: lexicon score / 0.25 (a Bradley–Terry logit scale)
        "conciseness_max_len": 80,
        "conciseness_scale": 20.0,  # minority's: 20·(1 − n/80), 4 logits per 16 tokens
        "num_users": LM_USERS,
        "minority_users": 6,  # share 0.3
        "labels_per_user": 40,
        "em_draws": 5,  # independent label draws for the ARI claim; the first one trains the reward models
        "em_restarts": 8,
        "em_iters": 50,
        "m_steps": 5,
        "em_l2": 1e-2,
        "rm_steps": 40,
        "rm_batch": 8,
        "rm_seq_len": 128,
        "rm_max_prompt_len": 48,
        "rm_lr": 1e-3,
        "rl_steps": 12 if quick else 40,
        "batch_prompts": 4,
        "num_samples": 4,
        "lr": 1e-4,
        "kl_coef": 0.0,  # the trainer's RLOO path reads no reference; the KL is measured
        "heldout_prompts": [f"Write a short review of {p}.\n" for p in LM_HELDOUT_PLACES],
        "eval_samples_per_prompt": 8,
        "eval_seed": 1234,
        "pool_seed": 4321,
    }


def _lm_prompts() -> list[str]:
    from jalign.data import builtin

    return sorted({r["prompt"] for r in builtin.load("sentiment_pairs", n=512, seed=1)})


def _lm_pool(graphdef, params, model_state, cfg: dict, prompts) -> dict:
    """``pool_samples_per_prompt`` samples per prompt (prompt-major), their texts and both true rewards (scaled)."""
    import jax
    import numpy as np

    from jalign.tokenizers import ByteTokenizer
    from jalign.train import plugins
    from jalign.train.online import make_kv_sampler
    from jalign.train.plugins.rewards import decode_completion
    from jalign.train.probes.rankings import _left_pad

    k = cfg["pool_samples_per_prompt"]
    ids, mask = _left_pad([p for p in prompts for _ in range(k)], ByteTokenizer().pad_id)
    sampler = make_kv_sampler(graphdef, max_new_tokens=cfg["max_new_tokens"])
    s = jax.device_get(sampler(params, model_state, ids, mask, jax.random.key(cfg["pool_seed"])))
    p = ids.shape[1]
    comp, cmask = np.asarray(s["ids"])[:, p:], np.asarray(s["mask"])[:, p:]
    lex = plugins.get_reward("lexicon")(ids, comp, cmask, scale=cfg["lexicon_scale"])
    con = plugins.get_reward("conciseness")(ids, comp, cmask, max_len=cfg["conciseness_max_len"],
                                            scale=cfg["conciseness_scale"])
    f = lambda x: [float(v) for v in np.asarray(x, np.float64)]
    return {"prompt_index": [i for i in range(len(prompts)) for _ in range(k)],
            "texts": [decode_completion(c, m) for c, m in zip(comp, cmask, strict=True)],
            "lexicon": f(lex), "conciseness": f(con), "length": [int(v) for v in cmask.sum(-1)],
            "_batch": (ids, comp, cmask)}


@functools.cache
def _lm_em_fn(num_prompts, per_prompt, num_users, minority_users, labels_per_user, restarts, iters, m_steps, l2):
    """jit(vmap(key → planted groups' labels on random same-prompt pairs of the pool, EM, ARI)) given the pool's
    true rewards ``[2, K]``."""
    import jax
    import jax.numpy as jnp

    from jalign import envs

    k = num_prompts * per_prompt
    groups = (jnp.arange(num_users) >= num_users - minority_users).astype(jnp.int32)  # 1 = minority

    def one(key, r):
        kp, ka, kb, kl, kf = jax.random.split(key, 5)
        uid = jnp.repeat(jnp.arange(num_users), labels_per_user)
        prompt = jax.random.randint(kp, uid.shape, 0, num_prompts)
        a = jax.random.randint(ka, uid.shape, 0, per_prompt)
        b = (a + jax.random.randint(kb, uid.shape, 1, per_prompt)) % per_prompt
        pairs = jnp.stack([prompt * per_prompt + a, prompt * per_prompt + b], 1)
        g = groups[uid]
        labels = jax.random.bernoulli(kl, jax.nn.sigmoid(r[g, pairs[:, 0]] - r[g, pairs[:, 1]])).astype(jnp.int32)
        fits = jax.vmap(lambda kk: envs.fit_bt_mixture(kk, uid, pairs, labels, 2, num_users=num_users, num_arms=k,
                                                       num_iters=iters, m_steps=m_steps, l2=l2))(
            jax.random.split(kf, restarts))
        best = jnp.argmax(fits.objective[:, -1])
        fit = jax.tree.map(lambda x: x[best], fits)
        found = jnp.argmax(fit.responsibilities, axis=1).astype(jnp.int32)
        return {"ari": envs.adjusted_rand_index(groups, found, num_classes=2), "found": found, "uid": uid,
                "pairs": pairs, "labels": labels, "objective": fit.objective, "em_rewards": fit.rewards}

    return jax.jit(jax.vmap(one, in_axes=(0, None))), groups


def _lm_records(pool: dict, prompts, pairs, labels) -> list[dict]:
    """Preference records (prompt, chosen, rejected) of labelled pool pairs (label 1: the first item won)."""
    out = []
    for (a, b), y in zip(pairs, labels, strict=True):
        w, l = (a, b) if y else (b, a)
        out.append({"prompt": prompts[pool["prompt_index"][w]], "chosen": pool["texts"][w],
                    "rejected": pool["texts"][l]})
    return out


def _lm_reward_model(graphdef, params, model_state, records, cfg: dict, export: Path) -> dict:
    """A reward model (SFT trunk + scalar head, Bradley–Terry) trained on ``records``, exported to ``export``."""
    from flax import nnx

    from jalign.tokenizers import ByteTokenizer
    from jalign.train import load_config, train
    from jalign.train.batch import pairwise
    from jalign.train.plugins.data import GrainBatchSource, pipeline_dataset

    t0 = time.time()
    c = load_config("reward_small_lm", [f"train.steps={cfg['rm_steps']}", "train.progress=False", "eval.every=0",
                                        f"data.batch_size={cfg['rm_batch']}", f"data.seq_len={cfg['rm_seq_len']}",
                                        f"optim.lr={cfg['rm_lr']}", f"train.export={export}",
                                        f"train.log_every={cfg['rm_steps']}"])
    ds = pipeline_dataset(records, "pairwise", ByteTokenizer(), batch_size=cfg["rm_batch"], seq_len=cfg["rm_seq_len"],
                          seed=0, process_index=0, process_count=1, max_prompt_len=cfg["rm_max_prompt_len"],
                          where="maxmin: annotators' pairs")
    r = train(c, model=nnx.merge(graphdef, params, model_state), source=GrainBatchSource(ds, pairwise))
    loss = [h["loss"] for h in r.history if "loss" in h]
    return {"pairs": len(records), "first_loss": loss[0], "last_loss": loss[-1], "seconds": round(time.time() - t0, 1)}


def _lm_score(path: Path, batch) -> list[float]:
    import numpy as np

    from jalign.train import plugins

    ids, comp, cmask = batch
    return [float(v) for v in np.asarray(plugins.get_reward("reward_model")(ids, comp, cmask, path=str(path)))]


def _lm_rl_config(cfg: dict, method: str, seed: int, rms: dict):
    from jalign.train import load_config

    c = load_config("rloo_small_lm", [f"seed={seed}", f"train.steps={cfg['rl_steps']}", "train.progress=False",
                                      f"data.batch_size={cfg['batch_prompts']}",
                                      f"online.num_samples={cfg['num_samples']}",
                                      f"online.max_new_tokens={cfg['max_new_tokens']}", f"optim.lr={cfg['lr']}",
                                      "train.log_every=1"])
    if method == "single":
        c.online.reward = f"rm:{rms['pooled']}"
    else:
        c.online.reward = "combine:maxmin:g0=reward_model,g1=reward_model"
        c.online.reward_kwargs = {"g0": {"path": str(rms["g0"])}, "g1": {"path": str(rms["g1"])},
                                  "refs": list(rms["refs"])}
    return c


def _lm_study(cfg: dict) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from jalign.train import train
    from paper_repro.rankings import _sft_reference
    from paper_repro.reward_transforms import _lm_eval

    t0 = time.time()
    graphdef, params0, model_state, sft = _sft_reference(cfg)
    prompts = _lm_prompts()
    pool = _lm_pool(graphdef, params0, model_state, cfg, prompts)
    batch = pool.pop("_batch")
    out = {"sft": sft, "train_prompts": prompts, "pool": pool, "wall_s": {"sft": sft["seconds"]}}

    t = time.time()
    fn, groups = _lm_em_fn(len(prompts), cfg["pool_samples_per_prompt"], cfg["num_users"], cfg["minority_users"],
                           cfg["labels_per_user"], cfg["em_restarts"], cfg["em_iters"], cfg["m_steps"],
                           cfg["em_l2"])
    r = np.stack([pool["lexicon"], pool["conciseness"]]).astype(np.float32)
    em = jax.device_get(fn(jax.random.split(jax.random.key(7), cfg["em_draws"]), r))
    out["planted_groups"] = np.asarray(groups).tolist()
    out["em"] = {"ari": np.asarray(em["ari"], np.float64).tolist(), "found": np.asarray(em["found"]).tolist(),
                 "objective_first_last": np.asarray(em["objective"])[:, [0, -1]].tolist()}
    uid, pairs, labels, found = (np.asarray(em[k][0]) for k in ("uid", "pairs", "labels", "found"))
    out["labels"] = {"user": uid.tolist(), "pairs": pairs.tolist(), "labels": labels.tolist()}
    out["wall_s"]["em"] = round(time.time() - t, 1)

    t = time.time()
    rms, rm_info = {}, {}
    with tempfile.TemporaryDirectory(prefix="maxmin_rm_") as tmp:
        sets = {"g0": found[uid] == 0, "g1": found[uid] == 1, "pooled": np.ones(len(uid), bool)}
        for name, sel in sets.items():
            rms[name] = Path(tmp) / name
            recs = _lm_records(pool, prompts, pairs[sel], labels[sel])
            rm_info[name] = _lm_reward_model(graphdef, params0, model_state, recs, cfg, rms[name])
            rm_info[name]["pool_scores"] = _lm_score(rms[name], batch)
            print(f"maxmin LM: reward model {name}: {rm_info[name]['seconds']} s", file=sys.stderr)
        # each group's utility is read relative to its reward model's mean under the reference (the pool)
        rms["refs"] = [float(np.mean(rm_info[g]["pool_scores"])) for g in ("g0", "g1")]
        out["reward_models"] = {**rm_info, "maxmin_refs": rms["refs"]}
        out["wall_s"]["reward_models"] = round(time.time() - t, 1)

        out["reference_samples"] = _lm_eval(graphdef, params0, model_state, params0, cfg, cfg["heldout_prompts"])
        out["runs"] = []
        t = time.time()
        for seed in range(cfg["seeds"]):
            for method in LM_METHODS:
                t1 = time.time()
                res = train(_lm_rl_config(cfg, method, seed, rms), model=nnx.merge(graphdef, params0, model_state))
                hist = [h for h in res.history if "loss" in h]
                out["runs"].append({
                    "method": method, "seed": seed,
                    "history": [{k: float(v) for k, v in h.items() if k == "step" or k.startswith("reward/")}
                                for h in hist],
                    "samples": _lm_eval(res.graphdef, res.state.params, res.state.model_state, params0, cfg,
                                        cfg["heldout_prompts"]),
                    "seconds": round(time.time() - t1, 1)})
                print(f"maxmin LM: {method} seed {seed}: {out['runs'][-1]['seconds']} s", file=sys.stderr)
        out["wall_s"]["rl"] = round(time.time() - t, 1)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def lm_win_rates(samples: dict, ref: dict, per_prompt: int) -> dict:
    """Each true group reward's win rate (ties ½) of a policy's held-out samples against the reference's, per
    prompt all n×m comparisons (:func:`jalign.diagnostics.evaluation.win_rate`); and the MC KL to the reference."""
    import numpy as np

    from jalign.diagnostics.evaluation import win_rate

    out = {}
    for grp, key in zip(LM_GROUPS, ("lexicon", "conciseness"), strict=True):
        w = win_rate(np.reshape(samples[key], (-1, per_prompt)), np.reshape(ref[key], (-1, per_prompt)))
        out[grp], out[f"{grp}_se"] = w["win_rate"], w["se"]
    out["kl"] = float(np.mean(np.asarray(samples["logp"], np.float64) - np.asarray(samples["ref_logp"], np.float64)))
    out["length"] = float(np.mean(samples["length"]))
    return out


def lm_per_seed(lm: dict) -> dict:
    """{method: {statistic: [per seed, ordered by seed]}} from the saved samples (win rates, KL, length, and the
    share of RL steps on which MaxMin optimised EM group 1)."""
    k = lm["config"]["eval_samples_per_prompt"]
    out = {}
    for m in LM_METHODS:
        runs = sorted((r for r in lm["runs"] if r["method"] == m), key=lambda r: r["seed"])
        stats = [lm_win_rates(r["samples"], lm["reference_samples"], k) for r in runs]
        out[m] = {key: [s[key] for s in stats] for key in stats[0]}
        out[m]["worst"] = [min(s["majority"], s["minority"]) for s in stats]
        if m == "maxmin":
            out[m]["group1_share"] = [float(sum(h.get("reward/maxmin/group", 0.0) for h in r["history"])
                                            / max(1, len(r["history"]))) for r in runs]
    return out


def lm_rm_accuracy(lm: dict) -> dict:
    """Each reward model's pairwise accuracy on the pool against each true reward: over every same-prompt pair
    of pool items whose true rewards differ, the share ordered as the true reward orders them."""
    import numpy as np

    pool = lm["pool"]
    pi = np.asarray(pool["prompt_index"])
    same = (pi[:, None] == pi[None, :]) & ~np.eye(len(pi), dtype=bool)
    out = {}
    for name in ("g0", "g1", "pooled"):
        s = np.asarray(lm["reward_models"][name]["pool_scores"], np.float64)
        ds = s[:, None] - s[None, :]
        for key in ("lexicon", "conciseness"):
            t = np.asarray(pool[key], np.float64)
            dt = t[:, None] - t[None, :]
            sel = same & (dt > 0)
            out[f"{name}/{key}"] = float(np.mean(ds[sel] > 0)) if sel.any() else float("nan")
    return out


def _lm_claims(res: dict) -> list[dict]:
    """The small LM's claims, from the saved samples (rules: :data:`RULES` ``lm_*``)."""
    import numpy as np

    from jalign.reporting import evidence, interval_status, make_claim, t_interval

    lm = res["lm"]
    cfg = lm["config"]
    ps = lm_per_seed(lm)
    single, mm = ps["single"], ps["maxmin"]
    m = lambda x: float(np.mean(x))
    acc = lm_rm_accuracy(lm)
    setting = (f"the shipped small LM after SFT; {cfg['num_users']} simulated annotators ({cfg['minority_users']} "
               f"prefer concise answers, the rest positive sentiment), {cfg['labels_per_user']} Bradley–Terry labels "
               f"each on pairs of SFT samples; reward models per EM group and pooled ({cfg['rm_steps']} steps); RLOO "
               f"(K = {cfg['num_samples']}, {cfg['rl_steps']} steps) on the pooled reward model vs MaxMin "
               f"(combine:maxmin); {len(cfg['heldout_prompts'])} held-out prompts × {cfg['eval_samples_per_prompt']} "
               "samples vs the SFT reference's; the project's construction")
    wr = lambda p: (f"majority (lexicon) {m(p['majority']):.3f}, minority (conciseness) {m(p['minority']):.3f}, "
                    f"KL {m(p['kl']):.2f} nats, length {m(p['length']):.1f}")
    common = (f"win rates vs SFT — single: {wr(single)}; MaxMin: {wr(mm)} (EM group 1 optimised on "
              f"{m(mm['group1_share']):.2f} of steps); reward-model accuracy on the pool (lexicon/conciseness): "
              + ", ".join(f"{n} {acc[f'{n}/lexicon']:.2f}/{acc[f'{n}/conciseness']:.2f}" for n in ("g0", "g1", "pooled")))
    out = []

    def seeded(claim, rule_key, x, threshold, measured):
        mean, lo, hi = t_interval(x)
        st = interval_status(lo, hi, threshold, above=True)
        out.append(make_claim(
            paper=PAPER, source="reconstruction", claim=claim,
            measured=measured(mean, lo, hi) + f" ({len(x)} {'seeds' if rule_key != 'lm_em' else 'label draws'}, "
            f"95% t); {st}",
            status=st, evidence=evidence("seeds", rule=RULES[rule_key], seeds=len(x), estimate=mean,
                                         interval=(lo, hi))))

    seeded(f"on a small LM, MaxMin RL on reward models of the EM groups raises the worst group's win rate over "
           f"single-reward RL on one pooled reward model ({setting})", "lm_worst_group",
           np.asarray(mm["worst"]) - np.asarray(single["worst"]), 0.0,
           lambda mu, lo, hi: f"worst-group win rate: MaxMin {m(mm['worst']):.3f} vs single {m(single['worst']):.3f}; "
           f"difference {mu:.3f} [{lo:.3f}, {hi:.3f}]; {common}")
    gain = np.asarray(mm["minority"]) - np.asarray(single["minority"])
    loss = np.asarray(single["majority"]) - np.asarray(mm["majority"])
    seeded("on the same small LM, MaxMin's gain for the minority exceeds the majority's loss (win rates vs the SFT "
           "reference)", "lm_majority_loss", gain - loss, 0.0,
           lambda mu, lo, hi: f"minority gain {gain.mean():.3f}, majority loss {loss.mean():.3f}; gain − loss "
           f"{mu:.3f} [{lo:.3f}, {hi:.3f}]")
    ari = np.asarray(lm["em"]["ari"])
    seeded(f"EM over simulated annotators recovers the planted groups on a small LM's samples ({cfg['num_users']} "
           f"users, {cfg['minority_users']} in the minority, {cfg['labels_per_user']} labels each, pool of "
           f"{len(lm['pool']['texts'])} SFT samples; the project's construction)", "lm_em", ari, 0.9,
           lambda mu, lo, hi: f"ARI per draw {', '.join(f'{a:.2f}' for a in ari)}; mean {mu:.3f} [{lo:.3f}, {hi:.3f}]")
    return out


def _plot_lm(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    lm = res["lm"]
    cfg = lm["config"]
    ps = lm_per_seed(lm)
    labels = {"single": "single reward (pooled RM)", "maxmin": "MaxMin (EM-group RMs)"}
    keys = ("majority", "minority", "worst")
    names = ("majority\n(lexicon)", "minority\n(conciseness)", "worst group")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(keys))
    for j, meth in enumerate(LM_METHODS):
        means = [float(np.mean(ps[meth][k])) for k in keys]
        axes[0].bar(x + (j - 0.5) * 0.35, means, 0.35, color=f"C{j}", alpha=0.7, label=labels[meth])
        for i, k in enumerate(keys):
            axes[0].plot(np.full(len(ps[meth][k]), x[i] + (j - 0.5) * 0.35), ps[meth][k], "k.", ms=4)
    axes[0].axhline(0.5, color="k", ls=":", lw=1)
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("win rate vs SFT reference (ties ½)")
    axes[0].set_title(f"held-out prompts; bars: mean over {cfg['seeds']} seeds, dots: seeds", fontsize=9)
    axes[0].legend(fontsize=8)
    for j, meth in enumerate(LM_METHODS):
        axes[1].plot(ps[meth]["majority"], ps[meth]["minority"], "o", color=f"C{j}", ls="none", label=labels[meth])
    axes[1].plot([0.5], [0.5], "D", color="k", ls="none", label="SFT reference")
    axes[1].set_xlabel("majority's win rate")
    axes[1].set_ylabel("minority's win rate")
    axes[1].set_title(f"per seed; EM ARI {np.mean(lm['em']['ari']):.2f}", fontsize=9)
    axes[1].legend(fontsize=8)
    fig.suptitle("small LM: single-reward RLOO vs MaxMin RLOO, each true group's win rate", fontsize=10)
    return fig


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
LM_FIGURES = (("maxmin_lm", _plot_lm),)


def _figures(res: dict) -> tuple:
    """The ``(name, draw)`` pairs of ``res``: the bandit's, and the small LM's when ``res`` has that part."""
    return FIGURES + (LM_FIGURES if "lm" in res else ())


def run(out: Path, *, quick: bool = True, medium: bool = False) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results.
    ``medium``: the bandit half at quick size, the small LM with ``lm_settings(medium=True)``."""
    t0 = time.time()
    out = output_dir(out)
    return finish(out, compute(quick or medium, medium=medium), plot_from_results, t0=t0)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    out = Path(out)
    res = read_results(out)
    return draw_figures(out, res, _figures(res))

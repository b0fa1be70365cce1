"""Transforming and combining rewards (Wang et al., 2024), exactly on bandits and on the shipped small LM.

The paper transforms a Bradley–Terry reward by u = log σ(r − r_ref) (:func:`jalign.rewards.log_sigmoid_transform`)
so that a sum of transformed rewards is log P(good in every property), a logical AND. Its experiments are RLHF on
LMs; here parts 1–4 are checked on K-armed bandits, where the KL-regularised optimum is exact
(π*_β ∝ μ·exp(U/β), :func:`jalign.envs.optimal_logps`). The settings are the project's own
(source "reconstruction"):

1. **AND vs trade-off** (exact): a fixed two-property bandit (helpfulness, harmlessness) with a *specialist* arm
   (6, −3: excellent in one property, bad in the other) and a *generalist* arm (1, 1: good in both) among three
   mediocre arms; μ uniform, r_ref,i = the median of property i's rewards under μ
   (:func:`jalign.rewards.reference_quantile`, q = ½). For every β of a grid, the raw-sum optimum puts more mass on
   the specialist, the transformed-sum optimum more on the generalist; the log-ratio ln π(spec)/π(gen) equals
   its closed form (U(spec) − U(gen))/β.
2. **Good in both, at matched KL** (seeds): random bandits with K arms, r₁ = s₁·z₁ (the louder property),
   r₂ = ρ·z₁ + √(1 − ρ²)·z₂ (a trade-off, ρ < 0), z ~ N(0, 1); the share of the optimum's mass on arms above the
   reference in both properties, raw vs transformed sum, at KL targets (β found by
   :func:`jalign.envs.beta_for_kl`).
3. **Reward hacking, true regret at matched KL** (seeds): the same bandits with one random *hackable* arm whose
   proxy reward in property 1 is max(r₁) + h·s₁ while its true reward is unchanged. Both proxies are optimised;
   the true utility is the raw sum of the true rewards (the neutral choice: it is what the raw sum targets
   where the proxy is right). True regret at KL k = (the best true utility of any optimum with KL k) − (the
   true utility of the proxy optimum with KL k).
4. **Gradient weight** (exact): ∂u/∂r = σ(r_ref − r) (checked against autodiff): strictly decreasing in r, above
   ½ below the reference and below ½ above it, so the transform puts its weight on the poorly scoring outputs;
   the share of the μ-weighted gradient weight on below-reference arms is reported per seed.

Seeds are random bandits, vmapped; the run is jitted and in float64.

5. **Small LM** (seeds; the project's construction): the shipped small LM after SFT on the chosen reviews of
   the built-in sentiment pairs (the shipped config ``sft_small_lm``, via ``paper_repro.rankings._sft_reference``;
   the pretrained model writes no reviews) is the reference and the start of short online RLOO runs (the
   trainer, config ``rloo_small_lm``) on ``online.reward = "combine:<mode>:lexicon,conciseness"`` with mode
   ``sum`` (raw) or ``transformed_sum``. Both rewards are put on a Bradley–Terry logit scale by their ``scale``
   argument (:data:`LM_SCALES`: lexicon score / 0.25, 20·(1 − n/80) for n response tokens); r_ref is fixed per
   component at the "good" threshold (:data:`LM_THRESHOLDS`: lexicon score ≥ 0.5, ≤ 64 tokens), so the
   transformed sum is the log of the Bradley–Terry probability of being good in both. The trainer's RLOO path
   has no KL penalty (the loss reads no reference), so the runs are short and the KL to the reference is
   measured (Monte Carlo on the policy's samples) instead of matched. Held-out prompts: the training template
   with places that never occur in training (:data:`HELDOUT_PLACES`); per policy, samples at temperature 1 with a
   fixed key; per seed the two methods share the data order and seeds, so the difference is paired.

Claims carry evidence with the pass rules fixed in :data:`RULES` before the run.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "reward-transforms"
DESCRIPTION = ("Log-sigmoid reward transform: AND-combination, matched-KL hacking frontiers, gradient weights "
               "(bandits); raw vs transformed sum of two rewards in online RLOO (small LM)")

PAPER = "Wang et al., Transforming and Combining Rewards for Aligning Large Language Models, 2024 (arXiv 2402.00742)"

# The fixed two-property bandit of part 1: (helpfulness, harmlessness) per arm.
FIXED_ARMS = ("specialist", "generalist", "mediocre a", "mediocre b", "mediocre c")
FIXED_REWARDS = ((6.0, 1.0, 0.0, -1.0, -0.5), (-3.0, 1.0, 0.0, -0.5, -1.0))

# The pass rules, fixed before the run (thresholds not tuned to the results).
RULES = {
    "and": "fixed bandit, every β of the grid: ln π_raw(spec) − ln π_raw(gen) > 0 and ln π_tr(spec) − "
    "ln π_tr(gen) < 0, each within 1e-9 of its closed form (U(spec) − U(gen))/β (float64)",
    "share": "at the largest KL target, the 95% t-interval over seeds of (share of mass good in both under "
    "the transformed sum − under the raw sum) lies above 0",
    "hacking": "at every KL target of the grid, the 95% t-interval over seeds of (true regret of the raw sum − "
    "true regret of the transformed sum) lies above 0 (the weakest target decides)",
    "gradient": "every seed and the grid: |autodiff ∂u/∂r − σ(r_ref − r)| < 1e-12, ∂u/∂r strictly decreasing "
    "in r, > ½ below the reference and < ½ above it (float64)",
    "matched_kl": "bookkeeping, not a claim: the attained KL of every compared optimum is within 1e-6 of its "
    "target",
    "lm_good_both": "small LM, held-out prompts: the 95% t-interval over seeds of the per-seed difference (share of "
    "samples good in both — scaled lexicon ≥ 2 (score ≥ 0.5) and scaled conciseness ≥ 4 (≤ 64 tokens) — under the transformed sum − under the raw sum) "
    "lies above 0 → holds; below 0 → does not hold; else inconclusive",
    "lm_min_reward": "small LM, held-out prompts: the 95% t-interval over seeds of the per-seed difference of the "
    "smaller of the two per-policy reward shares (min(share lexicon ≥ 2, share conciseness ≥ 4), transformed "
    "− raw) lies above 0 → holds; below 0 → does not hold; else inconclusive",
}

# Small LM: a completion is "good" in a property when its reward is at least this threshold (fixed before the run).
LM_THRESHOLDS = {"lexicon": 2.0, "conciseness": 4.0}
# Both rewards on a Bradley–Terry logit scale: lexicon score / 0.25 (the temperature of paper_repro/rankings.py)
# and 20·conciseness (1 − n/80): 4 logits = 16 fewer tokens.
LM_SCALES = {"lexicon": 4.0, "conciseness": 20.0}


def settings(quick: bool) -> dict:
    return {
        "num_arms": 32,
        "seeds": 10 if quick else 40,
        "louder_scale": 2.0,  # s₁
        "correlation": -0.3,  # ρ between the two properties (a trade-off)
        "hack_margin": 4.0,  # h: the hackable arm's proxy r₁ = max(r₁) + h·s₁
        "quantile": 0.5,  # r_ref = this quantile of the property's rewards under μ (uniform)
        "kl_targets": [0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5],
        "fixed_betas": [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0],
        "grad_grid": [-20.0, -8.0, -4.0, -2.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 20.0],
        "bisection_iters": 200,
    }


def _fixed_part(cfg) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign import envs
    from jalign import rewards as RW

    r = jnp.asarray(FIXED_REWARDS, jnp.float64)  # [2, K]
    k = r.shape[1]
    ref = jnp.full((k,), -jnp.log(k), jnp.float64)
    refs = RW.reference_quantile(r, cfg["quantile"])  # [2]: each property's median under uniform μ
    raw = RW.combine(list(r), "sum")
    tr = RW.combine(list(r), "transformed_sum", ref_rewards_list=list(refs))
    betas = jnp.asarray(cfg["fixed_betas"], jnp.float64)
    lp_raw = jax.vmap(lambda b: envs.optimal_logps(raw, ref, b))(betas)
    lp_tr = jax.vmap(lambda b: envs.optimal_logps(tr, ref, b))(betas)
    good = np.asarray((r[0] > refs[0]) & (r[1] > refs[1]))
    f = lambda x: np.asarray(x, np.float64).tolist()
    return {"arms": list(FIXED_ARMS), "rewards": f(r), "references": f(refs), "raw_sum": f(raw),
            "transformed_sum": f(tr), "betas": f(betas), "logps_raw": f(lp_raw), "logps_transformed": f(lp_tr),
            "good_in_both": good.tolist(),
            "share_good_raw": f(np.exp(np.asarray(lp_raw))[:, good].sum(1)),
            "share_good_transformed": f(np.exp(np.asarray(lp_tr))[:, good].sum(1))}


@functools.cache
def _seed_fn(num_arms, louder_scale, correlation, hack_margin, quantile, kl_targets, grad_grid, iters):
    import jax
    import jax.numpy as jnp

    from jalign import envs
    from jalign import rewards as RW

    kls = jnp.asarray(kl_targets, jnp.float64)
    grid = jnp.asarray(grad_grid, jnp.float64)

    def at_kl(u, ref, target):
        beta = envs.beta_for_kl(u, ref, target, iters=iters)
        lp = envs.optimal_logps(u, ref, beta)
        return lp, envs.kl(lp, ref)

    def one(key):
        kz, kh = jax.random.split(key)
        z = jax.random.normal(kz, (2, num_arms), jnp.float64)
        r1 = louder_scale * z[0]
        r2 = correlation * z[0] + jnp.sqrt(1.0 - correlation**2) * z[1]
        ref = jnp.full((num_arms,), -jnp.log(num_arms), jnp.float64)
        q1, q2 = RW.reference_quantile(jnp.stack([r1, r2]), quantile)
        good = (r1 > q1) & (r2 > q2)
        raw = RW.combine([r1, r2], "sum")
        tr = RW.combine([r1, r2], "transformed_sum", ref_rewards_list=[q1, q2])

        def share(u):
            lp, k = jax.vmap(lambda t: at_kl(u, ref, t))(kls)
            return jnp.sum(jnp.exp(lp) * good, axis=-1), k

        share_raw, kl_raw = share(raw)
        share_tr, kl_tr = share(tr)

        # the hackable arm: its proxy reward in property 1 far above every arm, its true reward unchanged
        h = jax.random.randint(kh, (), 0, num_arms)
        p1 = r1.at[h].set(jnp.max(r1) + hack_margin * louder_scale)
        pq1 = RW.reference_quantile(p1[None, :], quantile)[0]
        proxy_raw = RW.combine([p1, r2], "sum")
        proxy_tr = RW.combine([p1, r2], "transformed_sum", ref_rewards_list=[pq1, q2])
        true = raw

        def frontier(u):
            lp, k = jax.vmap(lambda t: at_kl(u, ref, t))(kls)
            return jnp.sum(jnp.exp(lp) * true, axis=-1), k, jnp.exp(lp[:, h])

        best, kl_best, _ = frontier(true)
        util_raw, kl_hraw, hack_raw = frontier(proxy_raw)
        util_tr, kl_htr, hack_tr = frontier(proxy_tr)

        # gradient weight of the transform: autodiff vs σ(r_ref − r) on a grid of r − r_ref, and on the arms
        d_auto = jax.vmap(jax.grad(lambda x: RW.log_sigmoid_transform(x, 0.0)))(grid)
        d_arms = jax.vmap(jax.grad(lambda x, q: RW.log_sigmoid_transform(x, q)), in_axes=(0, None))(r1, q1)
        below = r1 < q1
        mu = jnp.exp(ref)
        weight_share = jnp.sum(mu * d_arms * below) / jnp.sum(mu * d_arms)
        kl_err = jnp.max(jnp.abs(jnp.concatenate([kl_raw, kl_tr, kl_best, kl_hraw, kl_htr]) - jnp.tile(kls, 5)))
        return {
            "share_raw": share_raw, "share_transformed": share_tr, "share_reference": jnp.mean(good),
            "best_true": best, "true_raw": util_raw, "true_transformed": util_tr,
            "regret_raw": best - util_raw, "regret_transformed": best - util_tr,
            "hack_mass_raw": hack_raw, "hack_mass_transformed": hack_tr,
            "kl_max_error": kl_err,
            "grad_grid_autodiff": d_auto,
            "grad_grid_error": jnp.max(jnp.abs(d_auto - jax.nn.sigmoid(-grid))),
            "grad_arms_error": jnp.max(jnp.abs(d_arms - jax.nn.sigmoid(q1 - r1))),
            "grad_arms_monotone": jnp.all(jnp.where(r1[:, None] < r1[None, :], d_arms[:, None] > d_arms[None, :],
                                                    True)),
            "grad_arms_halves": jnp.all(jnp.where(below, d_arms > 0.5, jnp.where(r1 > q1, d_arms < 0.5, True))),
            "weight_share_below": weight_share,
            "mass_share_below": jnp.sum(mu * below),
        }

    return jax.jit(jax.vmap(one))


def compute(quick: bool = True, *, lm: bool = True) -> dict:
    import jax
    import numpy as np

    from jalign.reporting import t_interval

    cfg = settings(quick)
    t0 = time.time()
    with jax.enable_x64(True):
        fixed = _fixed_part(cfg)
        fn = _seed_fn(cfg["num_arms"], cfg["louder_scale"], cfg["correlation"], cfg["hack_margin"],
                      cfg["quantile"], tuple(cfg["kl_targets"]), tuple(cfg["grad_grid"]), cfg["bisection_iters"])
        raw = jax.device_get(fn(jax.random.split(jax.random.key(0), cfg["seeds"])))
    raw = {k: np.asarray(v) for k, v in raw.items()}
    tolist = lambda x: np.asarray(x, np.float64).tolist()
    per_seed = {k: tolist(v) for k, v in raw.items() if k not in ("grad_arms_monotone", "grad_arms_halves")}
    per_seed["grad_arms_monotone"] = [bool(v) for v in raw["grad_arms_monotone"]]
    per_seed["grad_arms_halves"] = [bool(v) for v in raw["grad_arms_halves"]]
    ci = lambda x: list(t_interval(x))
    nk = len(cfg["kl_targets"])
    res = {
        "paper": PAPER,
        "quick": quick,
        "config": {**cfg, "dtype": "float64", "reference_policy": "uniform",
                   "true_utility": "raw sum of the true rewards"},
        "rules": RULES,
        "fixed": fixed,
        "per_seed": per_seed,
        "summary": {k: [ci(raw[k][:, j]) for j in range(nk)]
                    for k in ("share_raw", "share_transformed", "regret_raw", "regret_transformed",
                              "true_raw", "true_transformed", "best_true")},
    }
    res["wall_s"] = {"compute": round(time.time() - t0, 1)}  # volatile (not compared between runs)
    if lm:
        c = lm_settings(quick)
        study = _lm_study(c)
        res["lm"] = {"config": {**c, "methods": list(LM_METHODS),
                                "model": "jalign.models.load_small_lm() after SFT (sft_small_lm): the reference "
                                "and the start of every RLOO run",
                                "trainer": "jalign.train.train, mode online, loss rloo (config rloo_small_lm), "
                                "online.reward = combine:<method>:lexicon,conciseness"}, **study}
        res["wall_s"]["lm"] = study["seconds"]
    res["claims"] = claims(res)
    return res


# ----------------------------------------------------------------------------------------------------------
# Part 5: the small LM (raw vs transformed sum of two rewards, online RLOO)

# New places in the training prompts' template: the held-out prompts are never trained on.
HELDOUT_PLACES = ("the theatre", "the bistro", "the spa", "the market", "the zoo", "the bar", "the hostel",
                  "the tea room")
LM_METHODS = ("sum", "transformed_sum")


def lm_settings(quick: bool) -> dict:
    """Settings of the small-LM half (quick: CPU, a few minutes on 2 loaded cores; full: more seeds and steps)."""
    return {
        "seeds": 3 if quick else 5,
        "steps": 12 if quick else 48,
        "batch_prompts": 4,  # data.batch_size: prompts per step
        "num_samples": 4,  # online.num_samples: completions per prompt (RLOO's K)
        "max_new_tokens": 80,
        "conciseness_max_len": 80,
        "lexicon_scale": LM_SCALES["lexicon"],
        "conciseness_scale": LM_SCALES["conciseness"],
        "lr": 1e-4,
        "kl_coef": 0.0,  # the trainer's RLOO path reads no reference (rloo: needs_reference=False); KL is measured
        "sft_steps": 200,  # the reference: the shipped config sft_small_lm (as in paper_repro/rankings.py)
        "refs": [LM_THRESHOLDS["lexicon"], LM_THRESHOLDS["conciseness"]],  # fixed r_ref = the "good" thresholds
        "thresholds": dict(LM_THRESHOLDS),
        "heldout_prompts": [f"Write a short review of {p}.\n" for p in HELDOUT_PLACES],
        "eval_samples_per_prompt": 8,
        "eval_seed": 1234,
    }


def _rl_config(cfg: dict, method: str, seed: int):
    from jalign.train import load_config

    c = load_config("rloo_small_lm", [f"seed={seed}", f"train.steps={cfg['steps']}", "train.progress=False",
                                      f"data.batch_size={cfg['batch_prompts']}",
                                      f"online.num_samples={cfg['num_samples']}",
                                      f"online.max_new_tokens={cfg['max_new_tokens']}", f"optim.lr={cfg['lr']}",
                                      f"train.log_every={cfg['steps']}"])
    c.online.reward = f"combine:{method}:lexicon,conciseness"
    kw = {"lexicon": {"scale": cfg["lexicon_scale"]},
          "conciseness": {"max_len": cfg["conciseness_max_len"], "scale": cfg["conciseness_scale"]}}
    if method == "transformed_sum":
        kw["refs"] = list(cfg["refs"])
    c.online.reward_kwargs = kw
    return c


def _lm_eval(graphdef, params, model_state, ref_params, cfg: dict, prompts) -> dict:
    """Samples of a policy on the held-out prompts (``eval_samples_per_prompt`` each, temperature 1, the fixed key
    ``eval_seed``): each completion's two rewards (scaled), its length, ln π (the sampler's) and ln π_ref, and the
    first four completions' texts."""
    import jax
    import numpy as np

    from jalign.train import plugins
    from jalign.train.online import make_kv_sampler
    from jalign.train.plugins.rewards import decode_completion
    from jalign.train.probes.rankings import _left_pad
    from jalign.train.step import make_logps_fn

    k = cfg["eval_samples_per_prompt"]
    ids, mask = _left_pad([p for p in prompts for _ in range(k)], 0)
    sampler = make_kv_sampler(graphdef, max_new_tokens=cfg["max_new_tokens"])
    s = jax.device_get(sampler(params, model_state, ids, mask, jax.random.key(cfg["eval_seed"])))
    p = ids.shape[1]
    comp, cmask = np.asarray(s["ids"])[:, p:], np.asarray(s["mask"])[:, p:]
    lex = plugins.get_reward("lexicon")(ids, comp, cmask, scale=cfg["lexicon_scale"])
    con = plugins.get_reward("conciseness")(ids, comp, cmask, max_len=cfg["conciseness_max_len"],
                                            scale=cfg["conciseness_scale"])
    ref_lp, _ = jax.jit(lambda a, b, c: make_logps_fn(graphdef, ref_params, model_state)(a, b, c))(
        s["ids"], s["mask"], s["attention_mask"])
    f = lambda x: [float(v) for v in np.asarray(x, np.float64)]
    return {"lexicon": f(lex), "conciseness": f(con), "length": [int(v) for v in cmask.sum(-1)],
            "logp": f(s["logps"]), "ref_logp": f(ref_lp),
            "texts": [decode_completion(c, m) for c, m in zip(comp[:4], cmask[:4], strict=True)]}


def _lm_study(cfg: dict) -> dict:
    from flax import nnx

    from jalign.train import train
    from paper_repro.rankings import _sft_reference

    t0 = time.time()
    graphdef, params0, model_state, sft = _sft_reference(cfg)
    prompts = cfg["heldout_prompts"]
    out = {"sft": sft, "reference_samples": _lm_eval(graphdef, params0, model_state, params0, cfg, prompts),
           "runs": []}
    for seed in range(cfg["seeds"]):
        for method in LM_METHODS:
            t1 = time.time()
            r = train(_rl_config(cfg, method, seed), model=nnx.merge(graphdef, params0, model_state))
            hist = [h for h in r.history if "loss" in h]
            out["runs"].append({
                "method": method, "seed": seed,
                "history": [{k: float(v) for k, v in h.items() if k == "step" or k.startswith("reward/")
                             or k in ("loss",)} for h in hist],
                "samples": _lm_eval(r.graphdef, r.state.params, r.state.model_state, params0, cfg, prompts),
                "seconds": round(time.time() - t1, 1)})
            print(f"reward-transforms LM: {method} seed {seed}: {out['runs'][-1]['seconds']} s", file=sys.stderr)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def lm_sample_stats(samples: dict, thresholds: dict) -> dict:
    """One policy's held-out numbers from its saved samples: the share good in both (each reward ≥ its
    threshold), each reward's mean, and the Monte Carlo KL(π‖π_ref) = mean of ln π(y) − ln π_ref(y), y ~ π."""
    import numpy as np

    lex, con = np.asarray(samples["lexicon"], np.float64), np.asarray(samples["conciseness"], np.float64)
    good_l, good_c = lex >= thresholds["lexicon"], con >= thresholds["conciseness"]
    kl = np.asarray(samples["logp"], np.float64) - np.asarray(samples["ref_logp"], np.float64)
    return {"good_both": float(np.mean(good_l & good_c)), "good_lexicon": float(np.mean(good_l)),
            "good_conciseness": float(np.mean(good_c)), "lexicon": float(lex.mean()),
            "conciseness": float(con.mean()), "kl": float(kl.mean()), "length": float(np.mean(samples["length"]))}


def lm_per_seed(lm: dict) -> dict:
    """{method: {statistic: [per seed, ordered by seed]}} from the saved samples."""
    th = lm["config"]["thresholds"]
    out = {}
    for m in LM_METHODS:
        runs = sorted((r for r in lm["runs"] if r["method"] == m), key=lambda r: r["seed"])
        stats = [lm_sample_stats(r["samples"], th) for r in runs]
        out[m] = {k: [s[k] for s in stats] for k in stats[0]}
    return out


def _lm_claims(res: dict) -> list[dict]:
    """The small LM's claims, from the saved samples (rules: :data:`RULES` ``lm_*``)."""
    import numpy as np

    from jalign.reporting import evidence, interval_status, make_claim, t_interval

    lm = res["lm"]
    cfg = lm["config"]
    ps = lm_per_seed(lm)
    ref = lm_sample_stats(lm["reference_samples"], cfg["thresholds"])
    raw, tr = ps["sum"], ps["transformed_sum"]
    s = len(raw["good_both"])
    th = cfg["thresholds"]
    m = lambda x: float(np.mean(x))
    setting = (f"the shipped small LM after SFT (sft_small_lm), RLOO (K = {cfg['num_samples']}, kl_coef "
               f"{cfg['kl_coef']}, {cfg['steps']} steps) on reward = combine:<mode>:lexicon,conciseness "
               f"(max_len {cfg['conciseness_max_len']}), transformed with fixed r_ref = {cfg['refs']}; "
               f"{len(cfg['heldout_prompts'])} held-out prompts × {cfg['eval_samples_per_prompt']} samples")
    common = (f"raw vs transformed: lexicon mean {m(raw['lexicon']):.3f} vs {m(tr['lexicon']):.3f}, conciseness mean "
              f"{m(raw['conciseness']):.3f} vs {m(tr['conciseness']):.3f}, KL to the reference (MC) "
              f"{m(raw['kl']):.2f} vs {m(tr['kl']):.2f} nats; the SFT reference: good in both {ref['good_both']:.3f}, "
              f"lexicon {ref['lexicon']:.3f}, conciseness {ref['conciseness']:.3f}")
    out = []
    d = np.asarray(tr["good_both"]) - np.asarray(raw["good_both"])
    mean, lo, hi = t_interval(d)
    st = interval_status(lo, hi, 0.0, above=True)
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="on a small LM trained online with two rewards, the transformed sum yields a larger share of completions "
        f"good in both (lexicon ≥ {th['lexicon']}, conciseness ≥ {th['conciseness']}) than the raw sum ({setting}; "
        "the project's construction)",
        measured=f"share good in both: transformed {m(tr['good_both']):.3f} vs raw {m(raw['good_both']):.3f}; "
        f"difference {mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); {st}; {common}",
        status=st,
        evidence=evidence("seeds", rule=RULES["lm_good_both"], seeds=s, estimate=mean, interval=(lo, hi)),
    ))
    weak = lambda x: np.minimum(np.asarray(x["good_lexicon"]), np.asarray(x["good_conciseness"]))
    d = weak(tr) - weak(raw)
    mean, lo, hi = t_interval(d)
    st = interval_status(lo, hi, 0.0, above=True)
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="on the same small LM, the raw sum trades one property for the other more than the transformed sum: the "
        "weaker property's share of good completions is larger under the transformed sum (the project's "
        "construction)",
        measured=f"min(share lexicon ≥ {th['lexicon']}, share conciseness ≥ {th['conciseness']}): transformed "
        f"{m(weak(tr)):.3f} vs raw {m(weak(raw)):.3f}; difference {mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); "
        f"{st}; shares lexicon/conciseness raw {m(raw['good_lexicon']):.3f}/{m(raw['good_conciseness']):.3f}, "
        f"transformed {m(tr['good_lexicon']):.3f}/{m(tr['good_conciseness']):.3f}",
        status=st,
        evidence=evidence("seeds", rule=RULES["lm_min_reward"], seeds=s, estimate=mean, interval=(lo, hi)),
    ))
    return out


def _ok(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def claims(res: dict) -> list[dict]:
    """The claims with their evidence, from the saved results (rules: :data:`RULES`)."""
    import numpy as np

    from jalign.reporting import evidence, interval_status, make_claim, t_interval

    cfg, fx, ps = res["config"], res["fixed"], res["per_seed"]
    s = cfg["seeds"]
    out = []

    betas = np.asarray(fx["betas"])
    raw, tr = np.asarray(fx["raw_sum"]), np.asarray(fx["transformed_sum"])
    lr_raw = np.asarray(fx["logps_raw"])[:, 0] - np.asarray(fx["logps_raw"])[:, 1]
    lr_tr = np.asarray(fx["logps_transformed"])[:, 0] - np.asarray(fx["logps_transformed"])[:, 1]
    err = max(np.max(np.abs(lr_raw - (raw[0] - raw[1]) / betas)), np.max(np.abs(lr_tr - (tr[0] - tr[1]) / betas)))
    ok = bool(np.all(lr_raw > 0) and np.all(lr_tr < 0) and err < 1e-9)
    sg_raw, sg_tr = fx["share_good_raw"], fx["share_good_transformed"]
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="a raw sum of two rewards lets one property be traded for another (its KL-regularised optimum favours "
        "an arm excellent in one property and bad in the other); the sum of log-sigmoid-transformed rewards is an "
        "AND (its optimum favours the arm good in both). Fixed 5-arm bandit, the project's construction",
        measured=f"specialist (6, −3) vs generalist (1, 1), references = medians {fx['references']}: raw sum "
        f"{raw[0]:.2f} vs {raw[1]:.2f}, transformed {tr[0]:.3f} vs {tr[1]:.3f}; ln π(spec)/π(gen) over β ∈ "
        f"{fx['betas']}: raw {lr_raw.min():.3g}…{lr_raw.max():.3g} (> 0), transformed {lr_tr.max():.3g}…"
        f"{lr_tr.min():.3g} (< 0); max error vs closed form {err:.1e}; mass on the generalist at β = "
        f"{betas[0]:g}: raw {sg_raw[0]:.3f}, transformed {sg_tr[0]:.3f}",
        status=_ok(ok),
        evidence=evidence("exact", rule=RULES["and"], estimate=float(err)),
    ))

    kls = cfg["kl_targets"]
    d = np.asarray(ps["share_transformed"])[:, -1] - np.asarray(ps["share_raw"])[:, -1]
    mean, lo, hi = t_interval(d)
    st = interval_status(lo, hi, 0.0, above=True)
    kl_err = float(np.max(ps["kl_max_error"]))
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="at matched KL the transformed sum puts more mass on outputs good in both properties than the raw sum "
        f"(random {cfg['num_arms']}-arm bandits, two trading-off properties, one louder; the project's construction)",
        measured=f"share good in both at KL {kls[-1]}: transformed {np.mean(ps['share_transformed'], 0)[-1]:.3f} vs raw "
        f"{np.mean(ps['share_raw'], 0)[-1]:.3f} (μ: {np.mean(ps['share_reference']):.3f}); difference {mean:.3f} "
        f"[{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); {st}; at KL {kls[0]}: "
        f"{np.mean(np.asarray(ps['share_transformed'])[:, 0] - np.asarray(ps['share_raw'])[:, 0]):.3f}; matched "
        f"to {kl_err:.1e} nats",
        status=st,
        evidence=evidence("seeds", rule=RULES["share"], seeds=s, estimate=mean, interval=(lo, hi)),
    ))

    diff = np.asarray(ps["regret_raw"]) - np.asarray(ps["regret_transformed"])  # [S, T]
    ivs = [t_interval(diff[:, j]) for j in range(len(kls))]
    worst = min(range(len(kls)), key=lambda j: ivs[j][1])
    mean, lo, hi = ivs[worst]
    st = interval_status(lo, hi, 0.0, above=True)
    rr, rt = np.mean(ps["regret_raw"], 0), np.mean(ps["regret_transformed"], 0)
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="with a mis-specified (hackable) proxy, optimising the transformed sum has lower true regret than the "
        "raw sum at matched KL (frontiers over β; a random arm's proxy reward far above every arm, its true "
        "reward unchanged; true utility = raw sum of the true rewards; the project's construction)",
        measured="true regret raw vs transformed by KL target: " + ", ".join(
            f"{k}: {a:.3f} vs {b:.3f}" for k, a, b in zip(kls, rr, rt, strict=True))
        + f"; weakest target KL {kls[worst]}: difference {mean:.3f} [{lo:.3f}, {hi:.3f}] (95% t, {s} seeds); {st}; "
        f"mass on the hackable arm at KL {kls[-1]}: raw {np.mean(ps['hack_mass_raw'], 0)[-1]:.3f}, transformed "
        f"{np.mean(ps['hack_mass_transformed'], 0)[-1]:.3f}",
        status=st,
        evidence=evidence("seeds", rule=RULES["hacking"], seeds=s, estimate=mean, interval=(lo, hi)),
    ))

    gerr = max(float(np.max(ps["grad_grid_error"])), float(np.max(ps["grad_arms_error"])))
    grid = np.asarray(cfg["grad_grid"])
    auto = np.asarray(ps["grad_grid_autodiff"])
    mono = bool(np.all(np.diff(auto, axis=1) < 0))
    halves = bool(np.all(auto[:, grid < 0] > 0.5) and np.all(auto[:, grid > 0] < 0.5))
    ok = gerr < 1e-12 and mono and halves and all(ps["grad_arms_monotone"]) and all(ps["grad_arms_halves"])
    ws = np.asarray(ps["weight_share_below"])
    out.append(make_claim(
        paper=PAPER, source="reconstruction",
        claim="the transform's gradient weight ∂u/∂r = σ(r_ref − r) falls on poorly scoring outputs (decreasing in r, "
        "above ½ below the reference, below ½ above it); a raw reward weighs every output equally",
        measured=f"max |autodiff − σ(r_ref − r)| = {gerr:.1e}; strictly decreasing on the grid {mono} and on every "
        f"seed's arms {all(ps['grad_arms_monotone'])}; ∂u/∂r at r − r_ref = {grid[0]:g}, 0, {grid[-1]:g}: "
        f"{auto[0, 0]:.3g}, {auto[0, list(grid).index(0.0)]:.3g}, {auto[0, -1]:.2g}; share of the μ-weighted gradient "
        f"weight on below-median arms {ws.mean():.3f} (min {ws.min():.3f}) vs their μ-mass "
        f"{np.mean(ps['mass_share_below']):.3f}",
        status=_ok(ok),
        evidence=evidence("exact", rule=RULES["gradient"], estimate=gerr),
    ))
    if "lm" in res:
        out += _lm_claims(res)
    return out


def _plot_fixed(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    fx = res["fixed"]
    b = np.asarray(fx["betas"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for lps, ls, lab in ((fx["logps_raw"], "-", "raw sum"), (fx["logps_transformed"], "--", "transformed sum")):
        p = np.exp(np.asarray(lps))
        ax.plot(b, p[:, 0], ls, color="C3", marker="o", ms=3, label=f"{lab}: specialist (6, −3)")
        ax.plot(b, p[:, 1], ls, color="C2", marker="s", ms=3, label=f"{lab}: generalist (1, 1)")
    ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel("π*_β(arm)")
    ax.set_title("KL-regularised optimum: raw sum trades, transformed sum ANDs")
    ax.legend(fontsize=7)
    return fig


def _band(ax, x, summ, color, label):
    import numpy as np

    s = np.asarray(summ)
    ax.plot(x, s[:, 0], "o-", color=color, ms=3, label=label)
    ax.fill_between(x, s[:, 1], s[:, 2], color=color, alpha=0.2)


def _plot_share(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg, sm = res["config"], res["summary"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _band(ax, cfg["kl_targets"], sm["share_raw"], "C0", "raw sum")
    _band(ax, cfg["kl_targets"], sm["share_transformed"], "C1", "transformed sum")
    ax.axhline(np.mean(res["per_seed"]["share_reference"]), color="k", ls=":", label="reference μ")
    ax.set_xlabel("KL(π‖μ) (nats)")
    ax.set_ylabel("mass on arms good in both properties")
    ax.set_title(f"AND at matched KL (mean, 95% t over {cfg['seeds']} bandits)")
    ax.legend(fontsize=8)
    return fig


def _plot_hacking(res: dict):
    import matplotlib.pyplot as plt

    cfg, sm = res["config"], res["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _band(axes[0], cfg["kl_targets"], sm["best_true"], "k", "true optimum (frontier)")
    _band(axes[0], cfg["kl_targets"], sm["true_raw"], "C0", "proxy raw sum")
    _band(axes[0], cfg["kl_targets"], sm["true_transformed"], "C1", "proxy transformed sum")
    axes[0].set_ylabel("true utility E_π[r₁* + r₂*]")
    _band(axes[1], cfg["kl_targets"], sm["regret_raw"], "C0", "proxy raw sum")
    _band(axes[1], cfg["kl_targets"], sm["regret_transformed"], "C1", "proxy transformed sum")
    axes[1].set_ylabel("true regret at matched KL")
    for ax in axes:
        ax.set_xlabel("KL(π‖μ) (nats)")
        ax.legend(fontsize=8)
    fig.suptitle(f"hackable proxy arm (proxy r₁ = max + {cfg['hack_margin']:g}·s₁): frontiers over β, "
                 f"{cfg['seeds']} bandits", fontsize=10)
    return fig


def _plot_gradient(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    grid = np.asarray(cfg["grad_grid"])
    auto = np.asarray(res["per_seed"]["grad_grid_autodiff"])[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, auto, "o-", color="C1", label="transformed: ∂u/∂r = σ(r_ref − r) (autodiff)")
    ax.axhline(1.0, color="C0", label="raw: ∂r/∂r = 1")
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.axvline(0.0, color="k", ls=":", lw=1)
    ax.set_xlabel("r − r_ref")
    ax.set_ylabel("gradient weight")
    ax.set_title("the transform weighs poorly scoring outputs")
    ax.legend(fontsize=8)
    return fig


def _plot_lm(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    lm = res["lm"]
    cfg = lm["config"]
    ps = lm_per_seed(lm)
    ref = lm_sample_stats(lm["reference_samples"], cfg["thresholds"])
    labels = {"sum": "raw sum", "transformed_sum": "transformed sum"}
    keys = ("good_both", "good_lexicon", "good_conciseness")
    names = ("good in both", f"lexicon ≥ {cfg['thresholds']['lexicon']:g}",
             f"conciseness ≥ {cfg['thresholds']['conciseness']:g}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(keys))
    for j, m in enumerate(LM_METHODS):
        means = [float(np.mean(ps[m][k])) for k in keys]
        axes[0].bar(x + (j - 0.5) * 0.35, means, 0.35, color=f"C{j}", alpha=0.7, label=labels[m])
        for i, k in enumerate(keys):
            axes[0].plot(np.full(len(ps[m][k]), x[i] + (j - 0.5) * 0.35), ps[m][k], "k.", ms=4)
    axes[0].plot(x, [ref[k] for k in keys], "D", color="k", ms=5, ls="none", label="SFT reference")
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("share of held-out samples")
    axes[0].set_title(f"bars: mean over {cfg['seeds']} seeds; dots: seeds", fontsize=9)
    axes[0].legend(fontsize=8)
    for j, m in enumerate(LM_METHODS):
        axes[1].plot(ps[m]["lexicon"], ps[m]["conciseness"], "o", color=f"C{j}", ls="none", label=labels[m])
        for a, b, k in zip(ps[m]["lexicon"], ps[m]["conciseness"], ps[m]["kl"], strict=True):
            axes[1].annotate(f"KL {k:.1f}", (a, b), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes[1].plot([ref["lexicon"]], [ref["conciseness"]], "D", color="k", ls="none", label="SFT reference")
    axes[1].set_xlabel("mean lexicon reward (scaled)")
    axes[1].set_ylabel("mean conciseness reward (scaled)")
    axes[1].set_title("per seed, held-out prompts (KL to the reference, MC)", fontsize=9)
    axes[1].legend(fontsize=8)
    fig.suptitle("small LM, online RLOO on two rewards: raw vs log-sigmoid-transformed sum", fontsize=10)
    return fig


FIGURES = (("reward_transforms_and", _plot_fixed), ("reward_transforms_share", _plot_share),
           ("reward_transforms_hacking", _plot_hacking), ("reward_transforms_gradient", _plot_gradient))
LM_FIGURES = (("reward_transforms_lm", _plot_lm),)


def _figures(res: dict) -> tuple:
    """The ``(name, draw)`` pairs of ``res``: the bandits', and the small LM's when ``res`` has that part."""
    return FIGURES + (LM_FIGURES if "lm" in res else ())


def run(out: Path, *, quick: bool = True) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results."""
    t0 = time.time()
    out = output_dir(out)
    return finish(out, compute(quick), plot_from_results, t0=t0)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    out = Path(out)
    res = read_results(out)
    return draw_figures(out, res, _figures(res))

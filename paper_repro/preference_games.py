"""Online preference games on bandits: which online methods reach the regularised Nash equilibrium, exactly.

Papers: Calandriello et al., Human alignment of large language models through online preference optimisation
(online IPO ≡ Nash-MD, IPO-MD), ICML 2024; Munos et al., Nash learning from human feedback (Nash-MD), ICML 2024.

Setting (the project's construction; the papers' experiments are on LLMs): one prompt, K arms, a tabular
softmax policy, τ = 0.5, three families of preference matrices — Bradley–Terry in random rewards (transitive),
noisy rock–paper–scissors on K = 3 and random antisymmetric logits on K = 5 (both cyclic) — each with a random
reference μ and a random initial policy. Every random instance is a seed; seeds are vmapped and the whole run
is jitted, in float64 (``jax.enable_x64``). The updates are the exact expectations over sampled pairs and
labels of :mod:`jalign.envs.game_lab` (deterministic), and the targets are exact: π*_τ from
:func:`jalign.envs.regularized_nash`, the biased fixed points from :func:`jalign.envs.mixture_fixed_point` and
:func:`jalign.envs.offline_ipo_fixed_point`, the RLHF optimum μ·exp(r/τ)/Z from :func:`jalign.envs.optimal_logps`.

Measured: the distance (total variation, KL(π*_τ‖π)) and the fixed-point residual max_y |π − T(π)| of every
method's last iterate; the constant-step bias of Nash-MD and IPO-MD against β = ητ (resp. β_mix); offline IPO on
μ_s = μ and on μ_s = π*_τ; online DPO against π*_τ and against the RLHF optimum; online SLiC (hinge) against
π*_τ on every family, and online IPO on a fourth, Thurstone, family (those two claims only); the number of steps each
method needs to come within 1e-6 (total variation) of its own limit, against its step size. Claims carry
evidence (kind, seeds, estimate, 95% t-interval, the pass rule fixed in :data:`RULES` before the run).
The LLM part of the papers (online pairwise training of a language model) is not part of this reproduction.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

from jalign.reporting import evidence, interval_status, make_claim, t_interval
from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "preference-games"
DESCRIPTION = ("Online IPO, IPO-MD, Nash-MD, online DPO and offline IPO against the regularised Nash equilibrium, "
               "exactly on bandits (Calandriello et al., 2024; Munos et al., 2024)")

CALANDRIELLO = ("Calandriello et al., Human Alignment of LLMs through Online Preference Optimisation, ICML 2024 "
                "(arXiv 2403.08635)")
MUNOS = "Munos et al., Nash Learning from Human Feedback, ICML 2024 (arXiv 2312.00886)"

FAMILIES = ("bradley_terry", "cyclic_rps", "antisymmetric")
EXTRA_FAMILY = "thurstone"  # online IPO and online SLiC only (two claims; not in the other rows)
METHODS = ("online_ipo", "nash_md_decay", "nash_md_const", "ipo_md", "online_dpo", "offline_ipo_mu",
           "offline_ipo_star")

# The pass rules, fixed before the run (thresholds are not tuned to the results).
EXACT_TOL = 1e-10  # "reaches": total variation and residual at float64 rounding level
CLOSED_TOL = 1e-9  # "equals the closed form": max |ln π_T − ln π_closed|
APART = -6.0  # "differs": log10 of the total variation to π*_τ above −6 (far above the 1e-13 floor)
DPO_STATIONARY = 1e-8  # online DPO converges sublinearly on arms of tiny mass
RULES = {
    "online_ipo": f"on every instance of every family: total variation to π*_τ ≤ {EXACT_TOL:g} and fixed-point "
    f"residual ≤ {EXACT_TOL:g} after the run",
    "nash_md_decay": "on every instance: KL(π*_τ‖π_T) ≤ 1e-8 after the run and KL(π*_τ‖π_T)/KL(π*_τ‖π_{T/2}) ≤ 0.55 "
    "(at least the O(1/t) rate of the paper)",
    "nash_md_const": f"holds if on every instance the total variation to π*_τ is ≤ {EXACT_TOL:g} after the run "
    "(constant step ητ = β)",
    "ipo_md": f"holds if on every instance the total variation to π*_τ is ≤ {EXACT_TOL:g} after the run (β_mix = β)",
    "bias_linear": f"on every instance: the constant-step Nash-MD and IPO-MD limits equal mixture_fixed_point within "
    f"{CLOSED_TOL:g} (max |Δ ln π|) for every β of the grid, and TV(β)/β varies by less than a factor 2 over the "
    "grid (bias linear in β)",
    "offline_mu": f"precondition: the limit equals offline_ipo_fixed_point within {CLOSED_TOL:g} on every instance (else "
    f"inconclusive); then for every family the 95% t-interval over instances of log10 TV(limit, π*_τ) lies above {APART:g}",
    "offline_star": f"on every instance: with μ_s = π*_τ, total variation to π*_τ ≤ {EXACT_TOL:g} and residual ≤ "
    f"{EXACT_TOL:g}",
    "dpo_rlhf": "precondition: on every Bradley–Terry instance the online-DPO iterate is within 1e-3 (total variation) "
    "of the RLHF optimum μ·exp(r/τ)/Z (else inconclusive); then the 95% t-interval of log10 TV(π_T, π*_τ) lies above "
    f"{APART:g}",
    "dpo_cyclic": f"precondition: the expected DPO gradient at the last iterate is ≤ {DPO_STATIONARY:g} on every instance "
    "(a stationary point; else inconclusive); then for each cyclic family the 95% t-interval of log10 TV(limit, π*_τ) "
    f"lies above {APART:g}",
    "thurstone_ipo": f"on every Thurstone instance: total variation of online IPO's last iterate to π*_τ ≤ {EXACT_TOL:g} "
    f"and fixed-point residual ≤ {EXACT_TOL:g}",
    "slic": "for every family (the three above and Thurstone), the 95% t-interval over instances of log10 of online "
    f"SLiC's smallest total variation to π*_τ over the second half of its run lies above {APART:g}",
    "speed": "for each family, the 95% t-interval over instances of the log-log slope of (steps to TV ≤ 1e-6 of the "
    "method's own limit) against the step size, over the step sizes where every instance converges, lies within "
    "[−1.1, −0.9] (steps ∝ 1/step size)",
}


def settings(quick: bool) -> dict:
    return {
        "tau": 0.5,
        "seeds": 5 if quick else 20,
        "num_arms": 5,  # Bradley–Terry and antisymmetric families; cyclic_rps has 3 arms
        "rps_win_prob": 0.8,
        "rps_noise": 0.3,
        "antisymmetric_scale": 2.0,
        "init_scale": 1.0,  # initial logits ln μ + N(0, init_scale²)
        "steps": 20000,
        "record_every": 200,
        "ipo_lr": 1.0,
        "dpo_lr": 4.0,  # DPO's gradient carries a factor τ² against IPO's: lr·τ² = 1
        "md_beta": 0.1,  # Nash-MD constant step: ητ = md_beta; IPO-MD: beta_mix = md_beta (lr = ipo_lr)
        "md_decay_lr": 1.0,  # Nash-MD decaying step η_t = lr/(1 + lr·τ/2·t)
        "slic_lr": 1.0,  # online SLiC (hinge max(0, 1 − τ·h)), every family
        "thurstone_scale": 1.0,  # Thurstone preferences Φ((r(y) − r(y'))/(√2·scale)) in rewards r ~ N(0, 1)
        "bias_betas": [0.025, 0.05, 0.1, 0.2, 0.4],
        "speed_steps": 20000,
        "speed_tol": 1e-6,
        "speed_lrs": [0.125, 0.25, 0.5, 1.0, 2.0, 4.0],  # online IPO and IPO-MD (β_mix = md_beta)
        "speed_md_betas": [0.0125, 0.025, 0.05, 0.1, 0.2, 0.4],  # Nash-MD: ητ
        "simplex": {"win_prob": 0.9, "ref_probs": [0.6, 0.25, 0.15], "inits": [[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0],
                                                                               [-1.0, -1.0, 2.0]],
                    "tau": 0.1, "steps": 1500, "record_every": 5, "ipo_lr": 0.02, "dpo_lr": 0.5, "md_beta": 0.2,
                    "md_decay_lr": 2.0},
    }


def _instance(key, family, cfg):
    import jax
    import jax.numpy as jnp

    from jalign import envs

    k_mu, k_p, k_init = jax.random.split(key, 3)
    k = 3 if family == "cyclic_rps" else cfg["num_arms"]
    lmu = jax.nn.log_softmax(jax.random.normal(k_mu, (k,), jnp.float64))
    rewards = jnp.zeros((k,), jnp.float64)
    if family == "bradley_terry":
        rewards = jax.random.normal(k_p, (k,), jnp.float64)
        P = envs.bradley_terry_pref(rewards)
    elif family == "thurstone":
        rewards = jax.random.normal(k_p, (k,), jnp.float64)
        P = envs.thurstone_pref(rewards, cfg["thurstone_scale"])
    elif family == "cyclic_rps":
        P = envs.rock_paper_scissors_pref(jnp.float64(cfg["rps_win_prob"]), jnp.float64(cfg["rps_noise"]), k_p)
    else:
        P = envs.antisymmetric_pref(k_p, k, scale=cfg["antisymmetric_scale"], dtype=jnp.float64)
    init = lmu + cfg["init_scale"] * jax.random.normal(k_init, (k,), jnp.float64)
    return P, lmu, rewards, init


@functools.cache
def _family_fn(family: str, cfg_key: tuple):
    import jax
    import jax.numpy as jnp

    from jalign import envs

    cfg = dict(cfg_key)
    tau, steps, every = cfg["tau"], cfg["steps"], cfg["record_every"]

    def one(key):
        P, lmu, rewards, init = _instance(key, family, cfg)
        star = envs.regularized_nash(P, lmu, tau)
        p_star = jnp.exp(star)

        def run(method, *, n=steps, rec=every, **kw):
            return envs.train_game(method, P, lmu, tau, steps=n, record_every=rec, init_logits=init, **kw)

        b = cfg["md_beta"]
        traj = {
            "online_ipo": run("online_ipo", lr=cfg["ipo_lr"]),
            "nash_md_decay": run("nash_md", lr=cfg["md_decay_lr"], lr_decay=cfg["md_decay_lr"] * tau / 2),
            "nash_md_const": run("nash_md", lr=b / tau),
            "ipo_md": run("ipo_md", lr=cfg["ipo_lr"], beta_mix=b),
            "online_dpo": run("online_dpo", lr=cfg["dpo_lr"]),
            "offline_ipo_mu": run("offline_ipo", lr=cfg["ipo_lr"], sampling_probs=jnp.exp(lmu)),
            "offline_ipo_star": run("offline_ipo", lr=cfg["ipo_lr"], sampling_probs=p_star),
        }
        gaps = {m: envs.nash_gap(t, P, lmu, tau, nash_logps=star) for m, t in traj.items()}
        slic = run("online_slic", lr=cfg["slic_lr"])  # the hinge: the iterate need not settle; its late path is read
        slic_tv = envs.nash_gap(slic, P, lmu, tau, nash_logps=star)["tv"]
        mid = (steps // every) // 2
        out = {}
        for m in traj:  # the total-variation curve; KL and residual at the end (and KL half-way)
            out.update({f"{m}/tv": gaps[m]["tv"], f"{m}/kl": gaps[m]["kl"][-1], f"{m}/kl_mid": gaps[m]["kl"][mid],
                        f"{m}/residual": gaps[m]["residual"][-1]})

        half = slic_tv.shape[0] // 2
        out.update({"online_slic/tv": slic_tv, "online_slic/min_tv_late": jnp.min(slic_tv[half:]),
                    "online_slic/last_move": 0.5 * jnp.sum(jnp.abs(jnp.exp(slic[-1]) - jnp.exp(slic[-2])))})

        def closed_err(lp, closed):
            return jnp.max(jnp.abs(lp - closed))

        # constant-step bias against β: Nash-MD (ητ = β) and IPO-MD (β_mix = β) vs the closed form
        def bias(beta):
            closed = envs.mixture_fixed_point(P, lmu, tau, beta)
            md = run("nash_md", lr=beta / tau)[-1]
            im = run("ipo_md", lr=cfg["ipo_lr"], beta_mix=beta)[-1]
            return (closed_err(md, closed), closed_err(im, closed),
                    envs.nash_gap(closed, P, lmu, tau, nash_logps=star)["tv"])

        md_err, im_err, bias_tv = jax.vmap(bias)(jnp.asarray(cfg["bias_betas"], jnp.float64))
        out.update({"bias/md_closed_err": md_err, "bias/ipo_md_closed_err": im_err, "bias/tv": bias_tv})
        out["offline_ipo_mu/closed_err"] = closed_err(
            traj["offline_ipo_mu"][-1], envs.offline_ipo_fixed_point(P, lmu, tau, jnp.exp(lmu)))
        rlhf = envs.optimal_logps(rewards, lmu, tau)
        out["online_dpo/rlhf_tv"] = 0.5 * jnp.sum(jnp.abs(jnp.exp(traj["online_dpo"][-1]) - jnp.exp(rlhf)))
        out["online_dpo/grad_norm"] = jnp.max(jnp.abs(envs.game_gradient("online_dpo", traj["online_dpo"][-1], P,
                                                                         lmu, tau)))

        # steps to TV ≤ tol of each method's own limit, against the step size
        tol, n_speed = cfg["speed_tol"], cfg["speed_steps"]

        def steps_to(tr, target_logps):
            tv = 0.5 * jnp.sum(jnp.abs(jnp.exp(tr) - jnp.exp(target_logps)), axis=-1)
            bad = ~(tv <= tol)  # nan (a diverged run) counts as not within tol
            last_bad = jnp.max(jnp.where(bad, jnp.arange(tv.shape[0]), -1))
            return jnp.where(bad[-1], -1, last_bad + 1)  # −1: not within tol at the end

        def speed_lr(lr):
            ipo = steps_to(run("online_ipo", n=n_speed, rec=1, lr=lr), star)
            im = steps_to(run("ipo_md", n=n_speed, rec=1, lr=lr, beta_mix=b), envs.mixture_fixed_point(P, lmu, tau, b))
            return ipo, im

        def speed_md(beta):
            return steps_to(run("nash_md", n=n_speed, rec=1, lr=beta / tau), envs.mixture_fixed_point(P, lmu, tau, beta))

        s_ipo, s_im = jax.vmap(speed_lr)(jnp.asarray(cfg["speed_lrs"], jnp.float64))
        out.update({"speed/online_ipo": s_ipo, "speed/ipo_md": s_im,
                    "speed/nash_md_const": jax.vmap(speed_md)(jnp.asarray(cfg["speed_md_betas"], jnp.float64))})
        return out

    return jax.jit(jax.vmap(one))


def _simplex(cfg):
    """Trajectories on the K = 3 rock–paper–scissors game for the simplex figure."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign import envs

    sc = cfg["simplex"]
    tau = sc["tau"]
    P = envs.rock_paper_scissors_pref(jnp.float64(sc["win_prob"]))
    lmu = jnp.log(jnp.asarray(sc["ref_probs"], jnp.float64))
    inits = jnp.asarray(sc["inits"], jnp.float64)
    star = envs.regularized_nash(P, lmu, tau)
    b = sc["md_beta"]
    kw = {"steps": sc["steps"], "record_every": sc["record_every"]}
    specs = {
        "online_ipo": ("online_ipo", {"lr": sc["ipo_lr"]}),
        "nash_md_decay": ("nash_md", {"lr": sc["md_decay_lr"], "lr_decay": sc["md_decay_lr"] * tau / 2}),
        "nash_md_const": ("nash_md", {"lr": b / tau}),
        "ipo_md": ("ipo_md", {"lr": sc["ipo_lr"], "beta_mix": b}),
        "online_dpo": ("online_dpo", {"lr": sc["dpo_lr"]}),
        "offline_ipo_mu": ("offline_ipo", {"lr": sc["ipo_lr"], "sampling_probs": jnp.exp(lmu)}),
    }
    traj = {name: np.exp(np.asarray(jax.vmap(lambda th, m=m, a=a: envs.train_game(
        m, P, lmu, tau, init_logits=th, **a, **kw))(inits))).tolist() for name, (m, a) in specs.items()}
    points = {"nash": np.exp(np.asarray(star)).tolist(),
              "mixture_fixed_point": np.exp(np.asarray(envs.mixture_fixed_point(P, lmu, tau, b))).tolist(),
              "offline_fixed_point": np.exp(np.asarray(envs.offline_ipo_fixed_point(P, lmu, tau, jnp.exp(lmu)))).tolist(),
              "reference": sc["ref_probs"]}
    return {"pref": np.asarray(P).tolist(), "trajectories": traj, "points": points}


def compute(quick: bool = True) -> dict:
    import jax
    import numpy as np

    cfg = settings(quick)
    t0 = time.time()
    cfg_key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k != "simplex")
    families = {}
    with jax.enable_x64(True):
        for i, fam in enumerate((*FAMILIES, EXTRA_FAMILY)):
            keys = jax.random.split(jax.random.key(100 + i), cfg["seeds"])
            raw = jax.device_get(_family_fn(fam, cfg_key)(keys))
            families[fam] = {k: np.asarray(v, np.float64).tolist() for k, v in raw.items()}
        simplex = _simplex(cfg)
    steps = list(range(0, cfg["steps"] + 1, cfg["record_every"]))
    res = {"papers": [CALANDRIELLO, MUNOS], "quick": quick, "rules": RULES,
           "config": {**cfg, "families": list(FAMILIES), "extra_family": EXTRA_FAMILY, "methods": list(METHODS),
                      "dtype": "float64",
                      "recorded_steps": steps,
                      "instances": "per family and seed: random μ = softmax(N(0, 1)), random P of the family, "
                      "initial logits ln μ + N(0, 1)"},
           "families": families, "simplex": simplex}
    res["claims"] = claims(res)
    res["seconds"] = round(time.time() - t0, 1)
    return res


# ------------------------------------------------------------------------------------------------------------
# Claims (from the saved results only)
# ------------------------------------------------------------------------------------------------------------


def _exact(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def _last(fam: dict, key: str):
    """Per-seed value at the end of the run (the last point of a curve)."""
    import numpy as np

    v = np.asarray(fam[key], np.float64)
    return v[:, -1] if v.ndim == 2 else v


def _log10_tv_interval(tv):
    import numpy as np

    return t_interval(np.log10(np.maximum(np.asarray(tv, np.float64), 1e-300)))


def _slopes(steps, sizes):
    """Per-seed least-squares slope of log(steps) on log(size), over the sizes where every seed converged."""
    import numpy as np

    steps = np.asarray(steps, np.float64)  # [S, L], −1 = not converged
    ok = np.all(steps > 0, axis=0)
    x = np.log(np.asarray(sizes, np.float64)[ok])
    if ok.sum() < 2:
        return np.full(steps.shape[0], np.nan), ok
    y = np.log(steps[:, ok])
    xc = x - x.mean()
    return ((y - y.mean(1, keepdims=True)) @ xc) / (xc @ xc), ok


def claims(res: dict) -> list[dict]:
    """The claims with their evidence, computed from the saved results (rules: :data:`RULES`)."""
    import numpy as np

    cfg = res["config"]
    fams = res["families"]
    s = cfg["seeds"]
    n_all = s * len(FAMILIES)
    T = cfg["steps"]
    out = []

    def worst(key):
        return max(float(np.max(_last(fams[f], key))) for f in FAMILIES)

    # 1. online IPO
    tv, resid = worst("online_ipo/tv"), worst("online_ipo/residual")
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="Online IPO (both samples from the current policy, labels from P) reaches the regularised Nash "
        "equilibrium π*_τ, on transitive and on cyclic preferences (exact expected updates on bandits)",
        measured=f"after {T} steps (η = {cfg['ipo_lr']:g}, τ = {cfg['tau']:g}), worst over {n_all} instances "
        f"(Bradley–Terry, noisy RPS, random antisymmetric; {s} each): TV to π*_τ {tv:.1e}, fixed-point residual "
        f"{resid:.1e}",
        status=_exact(tv <= EXACT_TOL and resid <= EXACT_TOL),
        evidence=evidence("exact", rule=RULES["online_ipo"], seeds=n_all, estimate=tv),
        source="paper"))

    # 2. Nash-MD, decaying step
    kl_T = max(float(np.max(_last(fams[f], "nash_md_decay/kl"))) for f in FAMILIES)
    ratios = np.concatenate([np.asarray(fams[f]["nash_md_decay/kl"]) / np.asarray(fams[f]["nash_md_decay/kl_mid"])
                             for f in FAMILIES])
    tv_dec = worst("nash_md_decay/tv")
    out.append(make_claim(
        paper=MUNOS,
        claim="Nash-MD with a decaying step η_t ∝ 1/t reaches π*_τ with KL(π*_τ‖π_t) = O(1/t) (last iterate)",
        measured=f"η_t = {cfg['md_decay_lr']:g}/(1 + {cfg['md_decay_lr'] * cfg['tau'] / 2:g}·t), {T} steps, {n_all} "
        f"instances: max KL(π*_τ‖π_T) {kl_T:.1e} (TV {tv_dec:.1e}); KL(T)/KL(T/2) between {ratios.min():.3f} and "
        f"{ratios.max():.3f} (1/t would give 0.5, 1/t² 0.25: faster than the bound)",
        status=_exact(kl_T <= 1e-8 and float(ratios.max()) <= 0.55),
        evidence=evidence("exact", rule=RULES["nash_md_decay"], seeds=n_all, estimate=kl_T),
        source="paper"))

    # 3./4. constant-step Nash-MD and IPO-MD: biased
    betas = cfg["bias_betas"]
    b = cfg["md_beta"]
    for key, name, what in (("nash_md_const", "Nash-MD with a constant step", f"ητ = {b:g}"),
                            ("ipo_md", "IPO-MD (both samples from the geometric mixture with μ)", f"β_mix = {b:g}")):
        tvs = np.concatenate([_last(fams[f], f"{key}/tv") for f in FAMILIES])
        ok = float(tvs.max()) <= EXACT_TOL
        out.append(make_claim(
            paper=MUNOS if key == "nash_md_const" else CALANDRIELLO,
            claim=f"{name} reaches the regularised Nash equilibrium π*_τ (the issue's reading; Munos et al. prove "
            "last-iterate convergence for η_t ∝ 1/t only)",
            measured=f"{what}, {T} steps, {n_all} instances: TV to π*_τ between {tvs.min():.1e} and {tvs.max():.1e} "
            f"— a biased fixed point (mixture_fixed_point, the next row), not π*_τ; online IPO = β → 0 reaches it",
            status=_exact(ok),
            evidence=evidence("exact", rule=RULES[key], seeds=n_all, estimate=float(tvs.max())),
            source="reconstruction"))

    errs = max(float(np.max(fams[f][k])) for f in FAMILIES for k in ("bias/md_closed_err", "bias/ipo_md_closed_err"))
    bias_tv = np.concatenate([np.asarray(fams[f]["bias/tv"]) for f in FAMILIES])  # [n_all, B]
    per_beta = bias_tv / np.asarray(betas)[None, :]
    spread = float(np.max(per_beta.max(1) / per_beta.min(1)))
    mean_slope = per_beta.mean(0)
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="Constant-step Nash-MD (ητ = β) and IPO-MD (β_mix = β) share the fixed point μ·exp(P π*_{τ/(1−β)}/τ)/Z, "
        "whose distance to π*_τ is linear in β (the project's derivation)",
        measured=f"β ∈ {betas}: max |ln π_T − ln π_closed| {errs:.1e} over both methods and {n_all} instances; mean "
        f"TV/β {', '.join(f'{v:.4f}' for v in mean_slope)}; max spread of TV/β over the grid ×{spread:.2f}",
        status=_exact(errs <= CLOSED_TOL and spread < 2.0),
        evidence=evidence("exact", rule=RULES["bias_linear"], seeds=n_all, estimate=spread),
        source="reconstruction"))

    # 5. offline IPO
    err_off = max(float(np.max(fams[f]["offline_ipo_mu/closed_err"])) for f in FAMILIES)
    ivs = {f: _log10_tv_interval(_last(fams[f], "offline_ipo_mu/tv")) for f in FAMILIES}
    wf = min(FAMILIES, key=lambda f: ivs[f][1])
    mean, lo, hi = ivs[wf]
    st = interval_status(lo, hi, APART, above=True)
    if err_off > CLOSED_TOL:
        st = "inconclusive"
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="Offline IPO on a fixed sampling distribution μ_s ≠ π*_τ (here μ_s = μ) does not reach π*_τ; its "
        "fixed point is μ·exp(P μ_s/τ)/Z",
        measured=f"limit = closed form within {err_off:.1e}; log10 TV to π*_τ per family (mean [95% t], {s} seeds): "
        + "; ".join(f"{f} {ivs[f][0]:.2f} [{ivs[f][1]:.2f}, {ivs[f][2]:.2f}]" for f in FAMILIES),
        status=st,
        evidence=evidence("seeds", rule=RULES["offline_mu"], seeds=s, estimate=mean, interval=(lo, hi)),
        source="paper"))
    tv_s, res_s = worst("offline_ipo_star/tv"), worst("offline_ipo_star/residual")
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="Offline IPO reaches π*_τ when its sampling distribution is π*_τ itself",
        measured=f"μ_s = π*_τ, {n_all} instances: TV to π*_τ {tv_s:.1e}, residual {res_s:.1e}",
        status=_exact(tv_s <= EXACT_TOL and res_s <= EXACT_TOL),
        evidence=evidence("exact", rule=RULES["offline_star"], seeds=n_all, estimate=tv_s),
        source="paper"))

    # 6. online DPO
    bt = fams["bradley_terry"]
    rl_err = float(np.max(bt["online_dpo/rlhf_tv"]))
    mean, lo, hi = _log10_tv_interval(_last(bt, "online_dpo/tv"))
    st = interval_status(lo, hi, APART, above=True)
    if rl_err > 1e-3:
        st = "inconclusive"
    tvb = _last(bt, "online_dpo/tv")
    out.append(make_claim(
        paper=MUNOS,
        claim="On Bradley–Terry preferences the Nash policy is not the RLHF policy: online DPO converges to "
        "μ·exp(r/τ)/Z ≠ π*_τ",
        measured=f"{s} Bradley–Terry instances, η = {cfg['dpo_lr']:g}, {T} steps: TV(π_T, RLHF optimum) ≤ {rl_err:.1e} "
        "(still creeping on arms of tiny mass); TV to π*_τ "
        f"{tvb.min():.3f}…{tvb.max():.3f}, log10 TV {mean:.2f} [{lo:.2f}, {hi:.2f}] (95% t)",
        status=st,
        evidence=evidence("seeds", rule=RULES["dpo_rlhf"], seeds=s, estimate=mean, interval=(lo, hi)),
        source="paper"))
    cyc = ("cyclic_rps", "antisymmetric")
    grad = max(float(np.max(fams[f]["online_dpo/grad_norm"])) for f in cyc)
    ivs = {f: _log10_tv_interval(_last(fams[f], "online_dpo/tv")) for f in cyc}
    wf = min(cyc, key=lambda f: ivs[f][1])
    mean, lo, hi = ivs[wf]
    st = interval_status(lo, hi, APART, above=True)
    if grad > DPO_STATIONARY:
        st = "inconclusive"
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="On cyclic (non-transitive) preferences online DPO's limit differs from the regularised Nash "
        "equilibrium",
        measured=f"max expected DPO gradient at the limit {grad:.1e}; TV to π*_τ (mean over {s} seeds): "
        + "; ".join(f"{f} {np.mean(_last(fams[f], 'online_dpo/tv')):.3f}, log10 {ivs[f][0]:.2f} "
                    f"[{ivs[f][1]:.2f}, {ivs[f][2]:.2f}]" for f in cyc),
        status=st,
        evidence=evidence("seeds", rule=RULES["dpo_cyclic"], seeds=s, estimate=mean, interval=(lo, hi)),
        source="reconstruction"))

    # 7. Thurstone preferences and online SLiC
    th = fams[EXTRA_FAMILY]
    tv_th, res_th = float(np.max(_last(th, "online_ipo/tv"))), float(np.max(_last(th, "online_ipo/residual")))
    dpo_th = _last(th, "online_dpo/tv")
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="Online IPO reaches π*_τ on Thurstone preferences too (the fixed-point argument needs no Bradley–Terry "
        "form: any P with P + Pᵀ = 1)",
        measured=f"{s} Thurstone instances (P = Φ((r(y) − r(y'))/(√2·{cfg['thurstone_scale']:g})), r ~ N(0, 1), K = "
        f"{cfg['num_arms']}), η = {cfg['ipo_lr']:g}, {T} steps: TV to π*_τ {tv_th:.1e}, residual {res_th:.1e}; online "
        f"DPO's limit is {dpo_th.min():.3f}…{dpo_th.max():.3f} away (TV)",
        status=_exact(tv_th <= EXACT_TOL and res_th <= EXACT_TOL),
        evidence=evidence("exact", rule=RULES["thurstone_ipo"], seeds=s, estimate=tv_th),
        source="paper"))
    sl_fams = (*FAMILIES, EXTRA_FAMILY)
    ivs = {f: _log10_tv_interval(fams[f]["online_slic/min_tv_late"]) for f in sl_fams}
    wf = min(sl_fams, key=lambda f: ivs[f][1])
    mean, lo, hi = ivs[wf]
    move = max(float(np.max(fams[f]["online_slic/last_move"])) for f in sl_fams)
    out.append(make_claim(
        paper=CALANDRIELLO,
        claim="Online SLiC (the same on-policy stream with SLiC's hinge max(0, 1 − τ·h)) does not reach the "
        "regularised Nash equilibrium (its loss is met by a margin of 1/τ on each sampled pair, not by log-ratio "
        "gaps of (P(y ≻ π) − P(y' ≻ π))/τ)",
        measured=f"η = {cfg['slic_lr']:g}, {T} steps, {s} instances per family; smallest TV to π*_τ over the second "
        "half (mean, log10 [95% t]): " + "; ".join(
            f"{f} {np.mean(fams[f]['online_slic/min_tv_late']):.3f}, {ivs[f][0]:.2f} [{ivs[f][1]:.2f}, "
            f"{ivs[f][2]:.2f}]" for f in sl_fams) + f"; the last iterate still moves by up to {move:.1e} (TV) per "
        f"{cfg['record_every']} steps (no fixed point: the hinge's subgradient does not vanish)",
        status=interval_status(lo, hi, APART, above=True),
        evidence=evidence("seeds", rule=RULES["slic"], seeds=s, estimate=mean, interval=(lo, hi)),
        source="reconstruction"))

    # 8. speed vs step size
    for key, label, sizes, unit in (("online_ipo", "online IPO", cfg["speed_lrs"], "η"),
                                    ("ipo_md", f"IPO-MD (β_mix = {b:g})", cfg["speed_lrs"], "η"),
                                    ("nash_md_const", "constant-step Nash-MD", cfg["speed_md_betas"], "ητ")):
        out.append(_speed_claim(res, key, label, sizes, unit))
    return out


def _speed_claim(res: dict, key: str, label: str, sizes, unit: str) -> dict:
    """The steps-vs-step-size claim of one method (rule ``RULES["speed"]``)."""
    import numpy as np

    cfg, fams, s = res["config"], res["families"], res["config"]["seeds"]
    per = {}
    for f in FAMILIES:
        steps = np.asarray(fams[f][f"speed/{key}"], np.float64)
        slopes, ok = _slopes(steps, sizes)
        per[f] = (t_interval(slopes), ok, steps)
    statuses = []
    for f in FAMILIES:
        _, lo_, hi_ = per[f][0]
        a = interval_status(lo_, hi_, -1.1, above=True)
        c = interval_status(lo_, hi_, -0.9, above=False)
        statuses.append("holds" if a == c == "holds" else
                        "does not hold" if "does not hold" in (a, c) else "inconclusive")
    st = ("does not hold" if "does not hold" in statuses else "inconclusive" if "inconclusive" in statuses
          else "holds")
    wf = max(FAMILIES, key=lambda f: abs(per[f][0][0] + 1.0) if math.isfinite(per[f][0][0]) else math.inf)
    mean, lo, hi = per[wf][0]
    texts = []
    for f in FAMILIES:
        ok, med = per[f][1], np.median(per[f][2], axis=0)
        bad = [sizes[i] for i in range(len(sizes)) if not ok[i]]
        txt = ", ".join(f"{unit}={sizes[i]:g}: {med[i]:.0f}" for i in range(len(sizes)) if ok[i])
        texts.append(f"{f}: {txt}" + (f" (not within {cfg['speed_tol']:g} after {cfg['speed_steps']} steps on some "
                                      f"instance at {unit} ∈ {bad})" if bad else ""))
    return make_claim(
        paper=CALANDRIELLO if key != "nash_md_const" else MUNOS,
        claim=f"{label} converges linearly at a constant step: the steps to reach its own limit fall like 1/{unit} "
        "(measured; the papers state no rate)",
        measured=f"median steps to TV ≤ {cfg['speed_tol']:g} — " + "; ".join(texts) + "; log-log slope per family: "
        + ", ".join(f"{f} {per[f][0][0]:.3f} [{per[f][0][1]:.3f}, {per[f][0][2]:.3f}]" for f in FAMILIES),
        status=st,
        evidence=evidence("seeds", rule=RULES["speed"], seeds=s, estimate=mean, interval=(lo, hi)),
        source="reconstruction")


# ------------------------------------------------------------------------------------------------------------
# Figures (from the saved results only)
# ------------------------------------------------------------------------------------------------------------

_COLORS = {"online_ipo": "C0", "nash_md_decay": "C1", "nash_md_const": "C2", "ipo_md": "C3", "online_dpo": "C4",
           "offline_ipo_mu": "C5", "offline_ipo_star": "C7", "online_slic": "C8"}
_LABELS = {"online_ipo": "online IPO", "nash_md_decay": "Nash-MD, η_t ∝ 1/t", "nash_md_const": "Nash-MD, constant η (= IPO-MD's limit)",
           "ipo_md": "IPO-MD", "online_dpo": "online DPO", "offline_ipo_mu": "offline IPO, μ_s = μ",
           "offline_ipo_star": "offline IPO, μ_s = π*_τ", "online_slic": "online SLiC (hinge)"}


def _xy(p):
    """Barycentric (p0, p1, p2) → the plane of an equilateral triangle."""
    import numpy as np

    p = np.asarray(p, np.float64)
    return p[..., 1] + 0.5 * p[..., 2], (math.sqrt(3) / 2) * p[..., 2]


def _plot_simplex(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    sx = res["simplex"]
    cfg = res["config"]
    names = list(sx["trajectories"])
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.2))
    corners = np.eye(3)
    for ax, name in zip(axes.ravel(), names, strict=True):
        cx, cy = _xy(np.vstack([corners, corners[:1]]))
        ax.plot(cx, cy, "k-", lw=0.8)
        for traj in sx["trajectories"][name]:
            x, y = _xy(traj)
            ax.plot(x, y, "-", color=_COLORS[name], lw=1.2)
            ax.plot(x[0], y[0], "o", color=_COLORS[name], ms=4, mfc="white")
            ax.plot(x[-1], y[-1], "o", color=_COLORS[name], ms=4)
        for key, marker, lab in (("nash", "*", "π*_τ"), ("reference", "s", "μ"),
                                 ("mixture_fixed_point", "x", "const.-step fixed point"),
                                 ("offline_fixed_point", "+", "offline-IPO fixed point")):
            x, y = _xy(sx["points"][key])
            ax.plot(x, y, marker, color="k", ms=9 if marker == "*" else 6, label=lab)
        for i, lab in enumerate(("rock", "paper", "scissors")):
            x, y = _xy(corners[i])
            ax.annotate(lab, (x, y), textcoords="offset points", xytext=(0, -12 if i < 2 else 4), ha="center",
                        fontsize=8)
        ax.set_title(_LABELS[name], fontsize=10)
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    sc = cfg["simplex"]
    fig.suptitle(f"K = 3 rock–paper–scissors (win prob. {sc['win_prob']}), μ = {sc['ref_probs']}, τ = {sc['tau']}, "
                 f"{sc['steps']} steps\n(IPO η = {sc['ipo_lr']}, DPO η = {sc['dpo_lr']}, Nash-MD const. ητ = IPO-MD β = "
                 f"{sc['md_beta']}, Nash-MD η_t = {sc['md_decay_lr']}/(1 + {sc['md_decay_lr'] * sc['tau'] / 2:g}·t))",
                 fontsize=9)
    return fig


def _plot_distance(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    x = np.asarray(cfg["recorded_steps"], np.float64)
    x[0] = 0.5 * cfg["record_every"]  # step 0 drawn at half the first interval (log axis)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, fam in zip(axes, FAMILIES, strict=True):
        for m in (*METHODS, "online_slic"):
            tv = np.maximum(np.asarray(res["families"][fam][f"{m}/tv"], np.float64), 1e-16)
            ax.plot(x, np.median(tv, 0), color=_COLORS[m], label=_LABELS[m])
            ax.fill_between(x, tv.min(0), tv.max(0), color=_COLORS[m], alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(fam, fontsize=10)
        ax.set_xlabel("steps")
    axes[0].set_ylabel("total variation to π*_τ (median, min–max over seeds)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"distance to the regularised Nash equilibrium, τ = {cfg['tau']}, {cfg['seeds']} instances per "
                 "family", fontsize=10)
    return fig


def _plot_step_size(res: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = res["config"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for j, fam in enumerate(FAMILIES):
        for key, sizes, ls in (("online_ipo", cfg["speed_lrs"], "-"), ("ipo_md", cfg["speed_lrs"], "--"),
                               ("nash_md_const", cfg["speed_md_betas"], ":")):
            st = np.asarray(res["families"][fam][f"speed/{key}"], np.float64)
            med = np.where(np.all(st > 0, 0), np.median(np.maximum(st, 1), 0), np.nan)  # nan: some run not converged
            lab = f"{_LABELS[key]} ({'η' if key != 'nash_md_const' else 'ητ'})" if j == 0 else None
            ax.plot(sizes, med, ls, marker="o", ms=3, color=_COLORS[key], alpha=0.5 + 0.25 * j, label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step size (η, or ητ for Nash-MD)")
    ax.set_ylabel(f"steps to TV ≤ {cfg['speed_tol']:g} of the limit (median)")
    ax.set_title("speed vs step size (one line per family; gaps: not converged on every instance)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    betas = np.asarray(cfg["bias_betas"])
    for j, fam in enumerate(FAMILIES):
        tv = np.asarray(res["families"][fam]["bias/tv"], np.float64)
        ax.plot(betas, np.median(tv, 0), "o-", color=f"C{j}", label=fam)
        ax.fill_between(betas, tv.min(0), tv.max(0), color=f"C{j}", alpha=0.15)
    ax.plot(betas, betas * 0.01, "k:", label="∝ β")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(betas, [f"{v:g}" for v in betas])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("β = ητ (Nash-MD) = β_mix (IPO-MD)")
    ax.set_ylabel("TV(constant-step fixed point, π*_τ)")
    ax.set_title("the constant-step bias is linear in β", fontsize=10)
    ax.legend(fontsize=7)
    return fig


FIGURES = (("games_simplex", _plot_simplex), ("games_distance", _plot_distance),
           ("games_step_size", _plot_step_size))


def run(out: Path, *, quick: bool = True) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results."""
    out = output_dir(out)
    t0 = time.time()
    return finish(out, compute(quick), plot_from_results, t0=t0, indent=None)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json``."""
    out = Path(out)
    return draw_figures(out, read_results(out), FIGURES)

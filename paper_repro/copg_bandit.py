"""The Contrastive Policy Gradient bandit (Flet-Berliac et al., EMNLP 2024, Section 5 / Figure 1), and beyond.

Paper setting (exactly): 3 arms, R = (2.5, 2, 1), μ1 = (0.1, 0.2, 0.7), μ2 = (0.05, 0.05, 0.9), 10^4 pairs,
β = 0.5, π_ref uniform, Adam lr 1e-3, batch 512, 100 epochs; metric regret J(π*) − J(π̂).
Choices the paper leaves open (documented in docs/bandits_copg.md): softmax logits initialised at π_ref; a
fresh permutation each epoch with ⌈10^4/512⌉ = 20 steps (the last batch of each epoch holds the 272
remaining pairs); the data (and Bradley–Terry labels) drawn once per seed and shared by all methods; IPO's
τ = β = 0.5; the PG value baseline is the exact b = E_π[R] (no gradient).

Beyond the paper: regret against β; against the overlap between the data distributions and π*; a long run
next to the exact infinite-data fixed point of every method; IPO's analytic fixed point against τ; an extra
PG variant with the *regularised* value b = J_β(π), for which π* is a fixed point.

All runs are jitted end to end (``lax.scan`` over epochs and steps, ``vmap`` over seeds, methods and
settings). The math lives in :mod:`jalign.envs` and :mod:`jalign.losses`; this module wires runs, summarises
them (means and 95% confidence intervals over seeds) and draws the figures from the saved JSON.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

from paper_repro._common import draw_figures, finish, output_dir, read_results

NAME = "copg-bandit"
DESCRIPTION = "CoPG vs IPO vs off-policy PG on the 3-armed bandit of Flet-Berliac et al. (2024), and beyond"

PAPER = "Flet-Berliac et al., Contrastive Policy Gradient, EMNLP 2024 (arXiv 2406.19185), Fig. 1"
REWARDS = (2.5, 2.0, 1.0)
MU1 = (0.1, 0.2, 0.7)
MU2 = (0.05, 0.05, 0.9)
BETA = 0.5
PAPER_METHODS = ("copg", "ipo", "pg_zero_baseline", "pg_value_baseline")
EXTRA_METHODS = ("pg_soft_value_baseline",)
LABELS = {
    "copg": "CoPG",
    "ipo": "IPO (BT labels, τ = β)",
    "pg_zero_baseline": "PG, b = 0",
    "pg_value_baseline": "PG, b = E_π[R]",
    "pg_soft_value_baseline": "PG, b = J_β(π) (extra)",
}
COLORS = {
    "copg": "C0",
    "ipo": "C1",
    "pg_zero_baseline": "C3",
    "pg_value_baseline": "C2",
    "pg_soft_value_baseline": "C7",
}


def settings(quick: bool) -> dict:
    """Run sizes. The paper setting itself is small: quick mode runs it with 20 seeds."""
    return {
        "n_pairs": 10_000,
        "batch_size": 512,
        "epochs": 100,
        "lr": 1e-3,
        "beta": BETA,
        "ipo_tau": BETA,
        "seeds": 20 if quick else 100,
        "betas": [0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
        "sweep_seeds": 5 if quick else 20,
        "overlap_t": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        "long_epochs": 500 if quick else 3000,
        "long_seeds": 5 if quick else 20,
        "population_steps": 20_000,
        "population_lr": 1e-2,
        "ipo_taus": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0],
    }


def _ci95(x, axis=0):
    import numpy as np

    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    return 1.96 * x.std(axis=axis, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(x.mean(axis))


@functools.cache
def _grid_fn(n_pairs: int, batch_size: int, epochs: int, lr: float):
    """jit(vmap over settings (μ1, μ2, β) × methods × seeds) of :func:`jalign.envs.train`, cached per shape."""
    import jax

    from jalign import envs

    def one(key, m, bandit, mu1, mu2, beta):
        return envs.train(key, m, bandit, mu1, mu2, beta=beta, ipo_tau=beta, lr=lr, n_pairs=n_pairs,
                          batch_size=batch_size, epochs=epochs)

    f = jax.vmap(one, (0, None, None, None, None, None))  # seeds
    f = jax.vmap(f, (None, 0, None, None, None, None))  # methods
    f = jax.vmap(f, (None, None, None, 0, 0, 0))  # settings
    return jax.jit(f)


@functools.cache
def _population_fn(steps: int, lr: float):
    import jax

    from jalign import envs

    def one(m, bandit, mu1, mu2, beta):
        return envs.train_population(m, bandit, mu1, mu2, beta=beta, ipo_tau=beta, lr=lr, steps=steps,
                                     record_every=steps // 10)

    return jax.jit(jax.vmap(jax.vmap(one, (0, None, None, None, None)), (None, None, 0, 0, 0)))


def _ids(methods):
    import jax.numpy as jnp

    from jalign import envs

    return jnp.array([envs.method_index(m) for m in methods])


def _stochastic(cfg, methods, keys, bandit, mu1s, mu2s, betas, *, epochs):
    """Results ``[settings, methods, seeds, ...]``; settings index μ1, μ2 and β (IPO's τ = β)."""
    f = _grid_fn(cfg["n_pairs"], cfg["batch_size"], epochs, cfg["lr"])
    return f(keys, _ids(methods), bandit, mu1s, mu2s, betas)


def _population(cfg, methods, bandit, mu1s, mu2s, betas):
    """Exact infinite-data fixed points (full-batch Adam on the expected loss): ``[settings, methods, ...]``."""
    f = _population_fn(cfg["population_steps"], cfg["population_lr"])
    return f(_ids(methods), bandit, mu1s, mu2s, betas)


def _paper_run(cfg, methods, bandit, mu1, mu2, key) -> dict:
    """(1) The paper's experiment (a settings axis of size 1): regret curves ``[M, S, E+1]`` and final
    policies ``[M, S, K]`` (float64 numpy)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    keys = jax.random.split(key, cfg["seeds"])
    main = _stochastic(cfg, methods, keys, bandit, mu1[None], mu2[None], jnp.array([BETA]), epochs=cfg["epochs"])
    return {"regret": np.asarray(main["regret"][0], np.float64),
            "policy": np.exp(np.asarray(main["logps"][0, :, :, -1], np.float64))}


def _fixed_points(cfg, methods, bandit, mu1, mu2) -> dict:
    """(2) Exact fixed points in the paper setting (regret curves ``[M, 11]``, final policies) and IPO's analytic
    solution: at τ = β, against the configured τ values, and its minimum over a fine τ grid."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign import envs

    pop = _population(cfg, methods, bandit, mu1[None], mu2[None], jnp.array([BETA]))
    ipo_at = lambda t: bandit.regret(envs.ipo_fixed_point(bandit, mu1, mu2, t), BETA)
    tau_fine = jnp.exp(jnp.linspace(jnp.log(0.01), jnp.log(100.0), 401))
    return {"regret": np.asarray(pop["regret"][0], np.float64),
            "policy": np.exp(np.asarray(pop["logps"][0, :, -1], np.float64)),
            "ipo": envs.ipo_fixed_point(bandit, mu1, mu2, BETA),
            "ipo_tau_regret": jax.vmap(ipo_at)(jnp.array(cfg["ipo_taus"])),
            "tau_fine": tau_fine,
            "ipo_best": jax.vmap(ipo_at)(tau_fine)}


def _beta_sweep(cfg, methods, bandit, mu1, mu2, keys) -> dict:
    """(3) The β sweep: final regret after the paper's epochs ``[B, M, S]``, the initial regret ``[B]`` and the
    exact fixed points' regret ``[B, M]``."""
    import jax.numpy as jnp
    import numpy as np

    betas = jnp.array(cfg["betas"])
    nb = len(cfg["betas"])
    mu1s, mu2s = jnp.tile(mu1, (nb, 1)), jnp.tile(mu2, (nb, 1))
    sw = _stochastic(cfg, methods, keys, bandit, mu1s, mu2s, betas, epochs=cfg["epochs"])
    pop = _population(cfg, methods, bandit, mu1s, mu2s, betas)
    return {"final": np.asarray(sw["regret"][:, :, :, -1], np.float64),
            "initial": np.asarray(sw["regret"][:, 0, 0, 0], np.float64),
            "population_final": np.asarray(pop["regret"][:, :, -1], np.float64)}


def _overlap_sweep(cfg, methods, bandit, mu1, mu2, star, keys) -> dict:
    """(4) The overlap sweep μ_i(t) = (1 − t)·μ_i + t·π* (t = 1: on-policy at the optimum): the overlap ``[T]``,
    final regret ``[T, M, S]`` and the exact fixed points' regret ``[T, M]``."""
    import jax.numpy as jnp
    import numpy as np

    from jalign import envs

    ts = jnp.array(cfg["overlap_t"])
    pstar = jnp.exp(star)
    mu1s = (1 - ts)[:, None] * mu1 + ts[:, None] * pstar
    mu2s = (1 - ts)[:, None] * mu2 + ts[:, None] * pstar
    nt = len(cfg["overlap_t"])
    ow = _stochastic(cfg, methods, keys, bandit, mu1s, mu2s, jnp.full((nt,), BETA), epochs=cfg["epochs"])
    pop = _population(cfg, methods, bandit, mu1s, mu2s, jnp.full((nt,), BETA))
    return {"overlap": envs.overlap(0.5 * (mu1s + mu2s), pstar),
            "final": np.asarray(ow["regret"][:, :, :, -1], np.float64),
            "population_final": np.asarray(pop["regret"][:, :, -1], np.float64)}


def _long_run(cfg, methods, bandit, mu1, mu2, key):
    """(5) The paper setting for ``long_epochs`` epochs: regret curves ``[M, S, E+1]``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    keys = jax.random.split(key, cfg["long_seeds"])
    lr_ = _stochastic(cfg, methods, keys, bandit, mu1[None], mu2[None], jnp.array([BETA]), epochs=cfg["long_epochs"])
    return np.asarray(lr_["regret"][0], np.float64)


def _curve(x) -> list[float]:
    return [float(v) for v in x]


def _config(cfg: dict, quick: bool) -> dict:
    """The run settings plus the fixed problem and the choices the paper leaves open (stored in results.json)."""
    return {
        **{k: v for k, v in cfg.items()},
        "quick": quick,
        "rewards": list(REWARDS),
        "mu1": list(MU1),
        "mu2": list(MU2),
        "pi_ref": [1 / 3] * 3,
        "steps_per_epoch": math.ceil(cfg["n_pairs"] / cfg["batch_size"]),
        "init": "softmax logits at ln π_ref (uniform)",
        "shuffling": "fresh permutation per epoch; last batch holds the remaining 272 pairs",
        "pg_samples": "both y ~ μ1 and y' ~ μ2 of each pair are PG samples",
        "ipo": "IPO loss (h − 1/(2τ))² on Bradley–Terry labels P(y ≻ y') = σ(R(y) − R(y')), τ = β",
    }


def _method_entry(m, i, main, pop, long_reg) -> dict:
    """Summary of method ``m`` (index ``i``): paper run (means, 95% CIs), exact fixed point, long run."""
    reg = main["regret"]
    return {
        "label": LABELS[m],
        "final_policy": _curve(main["policy"][i].mean(0)),
        "final_regret": float(reg[i, :, -1].mean()),
        "regret_curve": _curve(reg[i].mean(0)),
        "regret_curve_ci95": _curve(_ci95(reg[i])),
        "final_regret_ci95": float(_ci95(reg[i, :, -1])),
        "final_regret_std": float(reg[i, :, -1].std(ddof=1)),
        "min_regret_over_curve": float(reg[i].mean(0).min()),
        "population_fixed_point_regret": float(pop["regret"][i, -1]),
        "population_fixed_point_policy": _curve(pop["policy"][i]),
        "population_regret_curve": _curve(pop["regret"][i]),
        "long_run_final_regret": float(long_reg[i, :, -1].mean()),
        "long_run_final_regret_ci95": float(_ci95(long_reg[i, :, -1])),
    }


def _sweep_methods(methods, final, population_final) -> dict:
    """Per method: mean final regret and its 95% CI over seeds, and the exact fixed point, along a sweep."""
    return {
        m: {
            "final_regret": _curve(final[:, i].mean(1)),
            "final_regret_ci95": _curve(_ci95(final[:, i], axis=1)),
            "population_fixed_point_regret": _curve(population_final[:, i]),
        }
        for i, m in enumerate(methods)
    }


def _ipo_tau_summary(cfg, pop) -> dict:
    """IPO's analytic fixed point against τ: its regret at the configured τ values, the minimum over τ and where."""
    import jax.numpy as jnp

    return {
        "tau": cfg["ipo_taus"],
        "analytic_fixed_point_regret": _curve(pop["ipo_tau_regret"]),
        "min_regret_over_tau": float(pop["ipo_best"].min()),
        "argmin_tau": float(pop["tau_fine"][int(jnp.argmin(pop["ipo_best"]))]),
    }


def _long_run_summary(cfg, methods, long_reg, pop) -> dict:
    """The long run's curves (at most ~200 points), final regret and the exact fixed points, per method."""
    stride = max(1, cfg["long_epochs"] // 200)
    return {
        "epochs": cfg["long_epochs"],
        "seeds": cfg["long_seeds"],
        "curve_epochs": list(range(0, cfg["long_epochs"] + 1, stride)),
        "methods": {
            m: {
                "regret_curve": _curve(long_reg[i].mean(0)[::stride]),
                "regret_curve_ci95": _curve(_ci95(long_reg[i])[::stride]),
                "final_regret": float(long_reg[i, :, -1].mean()),
                "population_fixed_point_regret": float(pop["regret"][i, -1]),
            }
            for i, m in enumerate(methods)
        },
    }


def compute(quick: bool = True) -> dict:
    """Run every experiment and return the JSON-serialisable results (no files written)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jalign import envs

    cfg = settings(quick)
    t0 = time.time()
    bandit = envs.k_armed(jnp.array(REWARDS))
    mu1, mu2 = jnp.array(MU1), jnp.array(MU2)
    methods = PAPER_METHODS + EXTRA_METHODS
    star = bandit.optimal_logps(BETA)
    k_main, k_sweep, k_long = jax.random.split(jax.random.key(0), 3)

    main = _paper_run(cfg, methods, bandit, mu1, mu2, k_main)
    t_main = time.time() - t0
    pop = _fixed_points(cfg, methods, bandit, mu1, mu2)
    sweep_keys = jax.random.split(k_sweep, cfg["sweep_seeds"])  # the β and the overlap sweep share the seeds
    sw = _beta_sweep(cfg, methods, bandit, mu1, mu2, sweep_keys)
    ow = _overlap_sweep(cfg, methods, bandit, mu1, mu2, star, sweep_keys)
    long_reg = _long_run(cfg, methods, bandit, mu1, mu2, k_long)

    out: dict = {
        "paper": PAPER,
        "pi_star": _curve(np.exp(np.asarray(star, np.float64))),
        "config": _config(cfg, quick),
        "initial_regret": float(main["regret"][0, 0, 0]),
        "optimal_value": float(bandit.optimal_value(BETA)),
        "regret_curve_epochs": list(range(cfg["epochs"] + 1)),
        "methods": {},
        "extra_methods": {},
        "seconds": {},
    }
    for i, m in enumerate(methods):
        (out["methods"] if m in PAPER_METHODS else out["extra_methods"])[m] = _method_entry(m, i, main, pop, long_reg)
    out["methods"]["ipo"]["analytic_fixed_point_policy"] = _curve(np.exp(np.asarray(pop["ipo"], np.float64)))
    out["methods"]["ipo"]["analytic_fixed_point_regret"] = float(bandit.regret(pop["ipo"], BETA))
    out["ipo_tau_sweep"] = _ipo_tau_summary(cfg, pop)
    out["beta_sweep"] = {
        "beta": cfg["betas"],
        "initial_regret": _curve(sw["initial"]),
        "seeds": cfg["sweep_seeds"],
        "methods": _sweep_methods(methods, sw["final"], sw["population_final"]),
    }
    out["overlap_sweep"] = {
        "t": cfg["overlap_t"],
        "definition": "μ_i(t) = (1 − t)·μ_i + t·π*; overlap = Σ_y min((μ1 + μ2)/2, π*)",
        "overlap": _curve(ow["overlap"]),
        "seeds": cfg["sweep_seeds"],
        "methods": _sweep_methods(methods, ow["final"], ow["population_final"]),
    }
    out["long_run"] = _long_run_summary(cfg, methods, long_reg, pop)
    out["seconds"] = {"paper_run": round(t_main, 1), "total": round(time.time() - t0, 1)}
    out["claims"] = claims(out)
    return out


def _small(x: float) -> str:
    return "< 1e-6 (float32 round-off)" if abs(x) < 1e-6 else f"{x:.2e}"


# The pass rules, fixed in code before the run (thresholds are absolute regrets, in units of J).
RULES = {
    "copg_budget": "95% t-interval over the paper run's seeds of CoPG's regret after the paper's 100 epochs lies "
    "below 1e-3 (zero regret within the paper's budget)",
    "copg_converges": "CoPG's exact infinite-data fixed point has regret < 1e-4 (float32), and the 95% t-interval "
    "over the long run's seeds of its final regret lies below 1e-3",
    "ipo_biased": "IPO's analytic fixed point (τ = β) has regret > 0.05, and the 95% t-interval over the paper "
    "run's seeds of IPO's regret after 100 epochs lies above 0.05",
    "pg0_worse": "95% t-interval over the paper run's seeds of PG (b = 0)'s regret after 100 epochs lies above the "
    "initial regret (π_ref; the same for every seed)",
    "pgv_biased": "PG (b = E_π[R])'s exact infinite-data fixed point has regret > 1e-3, and the 95% t-interval over "
    "the long run's seeds of its final regret lies above 1e-3",
}


def _sd_from_ci95(ci95: float, n: int) -> float:
    """The unbiased sd over ``n`` seeds from the saved ``1.96·sd/√n`` (:func:`_ci95`)."""
    return ci95 * math.sqrt(n) / 1.96


def claims(res: dict) -> list[dict]:
    """The paper's Figure 1 claims with their evidence, from the saved results (the rules are :data:`RULES`).

    The paper run saved per method the mean and sd of the final regret over ``config["seeds"]`` seeds, the long
    run its mean and 95% half-width over ``long_run["seeds"]``; the t-intervals are computed from those moments.
    """
    from jalign.reporting import make_claim
    from paper_repro._common import seeded_moments

    m = res["methods"]
    init = res["initial_regret"]
    n, n_long = res["config"]["seeds"], res["long_run"]["seeds"]
    epochs, long_epochs = res["config"]["epochs"], res["long_run"]["epochs"]
    c, ipo, pg0, pgv = m["copg"], m["ipo"], m["pg_zero_baseline"], m["pg_value_baseline"]

    def paper_run(e, threshold, above, rule):
        return seeded_moments(e["final_regret"], e["final_regret_std"], n, threshold, above=above, rule=rule)

    def long_run(e, threshold, above, rule):
        return seeded_moments(e["long_run_final_regret"], _sd_from_ci95(e["long_run_final_regret_ci95"], n_long),
                              n_long, threshold, above=above, rule=rule)

    out = []
    st, ev, txt = paper_run(c, 1e-3, False, RULES["copg_budget"])
    out.append(make_claim(
        paper=PAPER, claim=f"CoPG reaches zero regret within the paper's budget ({epochs} epochs)",
        measured=f"regret after {epochs} epochs {txt} (initial {init:.4f}): {c['final_regret'] / init:.1%} of the "
        "initial regret remains", status=st, evidence=ev))
    st, ev, txt = long_run(c, 1e-3, False, RULES["copg_converges"])
    fp = c["population_fixed_point_regret"]
    if fp >= 1e-4:
        st = "does not hold"
    out.append(make_claim(
        paper=PAPER, claim="CoPG converges to π* (zero regret) given enough updates",
        measured=f"exact infinite-data fixed point {_small(fp)}; regret after {long_epochs} epochs {txt}",
        status=st, evidence=ev))
    st, ev, txt = paper_run(ipo, 0.05, True, RULES["ipo_biased"])
    afp = ipo["analytic_fixed_point_regret"]
    if not afp > 0.05:
        st = "does not hold"
    out.append(make_claim(
        paper=PAPER, claim="IPO (on Bradley–Terry preferences) converges to a biased policy (τ = β: the paper does "
        "not give IPO's τ; the choice is the project's)",
        measured=f"regret after {epochs} epochs {txt}; {ipo['long_run_final_regret']:.4f} after {long_epochs}; "
        f"analytic IPO fixed point {afp:.4f} (τ = β); but the best τ gives "
        f"{res['ipo_tau_sweep']['min_regret_over_tau']:.4f} (τ ≈ {res['ipo_tau_sweep']['argmin_tau']:.2f})",
        status=st, evidence=ev, source="reconstruction"))
    st, ev, txt = paper_run(pg0, init, True, RULES["pg0_worse"])
    out.append(make_claim(
        paper=PAPER, claim="off-policy PG with baseline 0 gets worse over time",
        measured=f"regret rises from {init:.4f} to {txt} after {epochs} epochs (exact fixed point "
        f"{pg0['population_fixed_point_regret']:.4f})", status=st, evidence=ev))
    st, ev, txt = long_run(pgv, 1e-3, True, RULES["pgv_biased"])
    vfp = pgv["population_fixed_point_regret"]
    if not vfp > 1e-3:
        st = "does not hold"
    out.append(make_claim(
        paper=PAPER, claim="off-policy PG with the value baseline is biased (b = exact E_π[R], the project's choice)",
        measured=f"regret {pgv['final_regret']:.4f} after {epochs} epochs (CoPG {c['final_regret']:.4f}); after "
        f"{long_epochs} epochs {txt}; exact fixed point {vfp:.4f}, not 0", status=st, evidence=ev))
    return out


FLOOR = 1e-7  # log-scale plots draw values below this (float32 round-off) at the floor


def _linestyle(res: dict, m: str) -> str:
    """Dashed for the extra (non-paper) methods, solid for the paper's."""
    return "--" if m in res["extra_methods"] else "-"


def _plot_regret(res: dict):
    """Figure 1: regret curves with 95% CI bands, and the final policies next to π*."""
    import matplotlib.pyplot as plt
    import numpy as np

    allm = {**res["methods"], **res["extra_methods"]}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    x = np.asarray(res["regret_curve_epochs"]) * res["config"]["steps_per_epoch"]
    for m, e in allm.items():
        mu, ci = np.asarray(e["regret_curve"]), np.asarray(e["regret_curve_ci95"])
        ax.plot(x, mu, _linestyle(res, m), color=COLORS[m], label=LABELS[m])
        ax.fill_between(x, mu - ci, mu + ci, color=COLORS[m], alpha=0.25)
    ax.set_xlabel("Adam steps (batch 512)")
    ax.set_ylabel("regret J(π*) − J(π)")
    ax.set_title(f"CoPG bandit, β = {res['config']['beta']}, {res['config']['seeds']} seeds (95% CI)")
    ax.legend(fontsize=8)
    arms = np.arange(len(res["pi_star"]))
    names = list(allm)
    w = 0.8 / (len(names) + 1)
    ax2.bar(arms - 0.4 + w / 2, res["pi_star"], w, color="k", label="π*")
    for j, m in enumerate(names):
        ax2.bar(arms - 0.4 + w * (j + 1.5), allm[m]["final_policy"], w, color=COLORS[m])
    ax2.set_xticks(arms, [f"arm {a + 1}\nR={r}" for a, r in enumerate(res["config"]["rewards"])])
    ax2.set_ylabel("π̂ after 100 epochs (mean over seeds)")
    ax2.legend(fontsize=8)
    return fig


def _plot_sweep(res: dict, sweep: str, x, xlabel: str, *, initial=None):
    """Final regret (95% CI) after 100 epochs and the exact fixed points along a sweep, per method (log regret);
    with ``initial`` (the β sweep) also the initial regret, on a log x axis."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, e in res[sweep]["methods"].items():
        ax.errorbar(x, np.maximum(e["final_regret"], FLOOR), yerr=e["final_regret_ci95"],
                    fmt="o" + _linestyle(res, m), color=COLORS[m], label=LABELS[m], ms=4)
        ax.plot(x, np.maximum(e["population_fixed_point_regret"], FLOOR), ":", color=COLORS[m])
    if initial is not None:
        ax.plot(x, initial, "k-", lw=0.8, label="initial (π_ref)")
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"regret (< {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_title("after 100 epochs (solid) and exact fixed point (dotted)")
    ax.legend(fontsize=7)
    return fig


def _plot_beta(res: dict):
    """Figure 2: final regret against β (after 100 epochs, and the exact fixed points)."""
    import numpy as np

    sw = res["beta_sweep"]
    return _plot_sweep(res, "beta_sweep", np.asarray(sw["beta"]), "β", initial=sw["initial_regret"])


def _plot_overlap(res: dict):
    """Figure 3: final regret against the overlap of the data distributions with π*."""
    import numpy as np

    return _plot_sweep(res, "overlap_sweep", np.asarray(res["overlap_sweep"]["overlap"]),
                       "overlap Σ min((μ1 + μ2)/2, π*)   [μ_i ← (1 − t)μ_i + tπ*]")


def _plot_long_run(res: dict):
    """Figure 4: the long run's regret curves against the exact fixed points."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    lr = res["long_run"]
    x = np.asarray(lr["curve_epochs"]) * res["config"]["steps_per_epoch"]
    for m, e in lr["methods"].items():
        mu, ci = np.maximum(np.asarray(e["regret_curve"]), FLOOR), np.asarray(e["regret_curve_ci95"])
        ax.plot(x, mu, _linestyle(res, m), color=COLORS[m], label=LABELS[m])
        ax.fill_between(x, np.maximum(mu - ci, FLOOR), mu + ci, color=COLORS[m], alpha=0.2)
        if e["population_fixed_point_regret"] > FLOOR:
            ax.axhline(e["population_fixed_point_regret"], color=COLORS[m], ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("Adam steps")
    ax.set_ylabel(f"regret (< {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_title(f"long run ({lr['epochs']} epochs, {lr['seeds']} seeds); dotted: exact fixed points")
    ax.legend(fontsize=7)
    return fig


def _plot_ipo_tau(res: dict):
    """Figure 5: the regret of IPO's analytic fixed point against τ."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ts = res["ipo_tau_sweep"]
    ax.plot(ts["tau"], ts["analytic_fixed_point_regret"], "o-", color=COLORS["ipo"])
    ax.axvline(res["config"]["ipo_tau"], color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("IPO τ")
    ax.set_ylabel("regret of IPO's fixed point (β = 0.5)")
    ax.set_title(f"min over τ: {ts['min_regret_over_tau']:.3f} (never 0)")
    return fig


FIGURES = (("copg_bandit_regret", _plot_regret), ("copg_bandit_beta", _plot_beta),
           ("copg_bandit_overlap", _plot_overlap), ("copg_bandit_long_run", _plot_long_run),
           ("copg_bandit_ipo_tau", _plot_ipo_tau))


def plot(res: dict, out: Path) -> list[str]:
    """Draw every figure from the saved results (PNG + PDF); return the names of the files written."""
    return draw_figures(out, res, FIGURES)


def run(out: Path, *, quick: bool = True) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results."""
    out = output_dir(out)
    return finish(out, compute(quick), plot_from_results, indent=2)


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json`` (the figures are never edited by hand)."""
    out = Path(out)
    return plot(read_results(out), out)

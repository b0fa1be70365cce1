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
import json
import math
import time
from pathlib import Path

from jalign.plotting import savefig, styled

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
    steps_per_epoch = math.ceil(cfg["n_pairs"] / cfg["batch_size"])
    root = jax.random.key(0)
    k_main, k_sweep, k_long = jax.random.split(root, 3)

    # 1. The paper's experiment: settings axis of size 1.
    keys = jax.random.split(k_main, cfg["seeds"])
    main = _stochastic(cfg, methods, keys, bandit, mu1[None], mu2[None], jnp.array([BETA]), epochs=cfg["epochs"])
    reg = np.asarray(main["regret"][0], np.float64)  # [M, S, E+1]
    pol = np.exp(np.asarray(main["logps"][0, :, :, -1], np.float64))  # [M, S, K]
    t_main = time.time() - t0

    # 2. Exact fixed points (paper setting) and IPO's analytic solution against τ.
    pop = _population(cfg, methods, bandit, mu1[None], mu2[None], jnp.array([BETA]))
    pop_regret = np.asarray(pop["regret"][0], np.float64)  # [M, 11]
    pop_policy = np.exp(np.asarray(pop["logps"][0, :, -1], np.float64))
    ipo_fp = envs.ipo_fixed_point(bandit, mu1, mu2, BETA)
    taus = jnp.array(cfg["ipo_taus"])
    ipo_tau_regret = jax.vmap(lambda t: bandit.regret(envs.ipo_fixed_point(bandit, mu1, mu2, t), BETA))(taus)
    tau_fine = jnp.exp(jnp.linspace(jnp.log(0.01), jnp.log(100.0), 401))
    ipo_best = jax.vmap(lambda t: bandit.regret(envs.ipo_fixed_point(bandit, mu1, mu2, t), BETA))(tau_fine)

    # 3. β sweep (stochastic at 100 epochs + exact fixed points).
    betas = jnp.array(cfg["betas"])
    nb = len(cfg["betas"])
    bk = jax.random.split(k_sweep, cfg["sweep_seeds"])
    sw = _stochastic(cfg, methods, bk, bandit, jnp.tile(mu1, (nb, 1)), jnp.tile(mu2, (nb, 1)), betas,
                     epochs=cfg["epochs"])
    sw_final = np.asarray(sw["regret"][:, :, :, -1], np.float64)  # [B, M, S]
    sw_init = np.asarray(sw["regret"][:, 0, 0, 0], np.float64)
    sw_pop = _population(cfg, methods, bandit, jnp.tile(mu1, (nb, 1)), jnp.tile(mu2, (nb, 1)), betas)
    sw_pop_final = np.asarray(sw_pop["regret"][:, :, -1], np.float64)  # [B, M]

    # 4. Overlap sweep: μ_i(t) = (1 − t)·μ_i + t·π* (t = 1: on-policy at the optimum).
    ts = jnp.array(cfg["overlap_t"])
    pstar = jnp.exp(star)
    mu1s = (1 - ts)[:, None] * mu1 + ts[:, None] * pstar
    mu2s = (1 - ts)[:, None] * mu2 + ts[:, None] * pstar
    ov = envs.overlap(0.5 * (mu1s + mu2s), pstar)
    nt = len(cfg["overlap_t"])
    ow = _stochastic(cfg, methods, bk, bandit, mu1s, mu2s, jnp.full((nt,), BETA), epochs=cfg["epochs"])
    ow_final = np.asarray(ow["regret"][:, :, :, -1], np.float64)
    ow_pop = _population(cfg, methods, bandit, mu1s, mu2s, jnp.full((nt,), BETA))
    ow_pop_final = np.asarray(ow_pop["regret"][:, :, -1], np.float64)

    # 5. Long run (paper setting, many more epochs).
    lk = jax.random.split(k_long, cfg["long_seeds"])
    lr_ = _stochastic(cfg, methods, lk, bandit, mu1[None], mu2[None], jnp.array([BETA]), epochs=cfg["long_epochs"])
    long_reg = np.asarray(lr_["regret"][0], np.float64)  # [M, S, E+1]
    stride = max(1, cfg["long_epochs"] // 200)

    def curve(x):
        return [float(v) for v in x]

    out: dict = {
        "paper": PAPER,
        "pi_star": curve(np.exp(np.asarray(star, np.float64))),
        "config": {
            **{k: v for k, v in cfg.items()},
            "quick": quick,
            "rewards": list(REWARDS),
            "mu1": list(MU1),
            "mu2": list(MU2),
            "pi_ref": [1 / 3] * 3,
            "steps_per_epoch": steps_per_epoch,
            "init": "softmax logits at ln π_ref (uniform)",
            "shuffling": "fresh permutation per epoch; last batch holds the remaining 272 pairs",
            "pg_samples": "both y ~ μ1 and y' ~ μ2 of each pair are PG samples",
            "ipo": "IPO loss (h − 1/(2τ))² on Bradley–Terry labels P(y ≻ y') = σ(R(y) − R(y')), τ = β",
        },
        "initial_regret": float(reg[0, 0, 0]),
        "optimal_value": float(bandit.optimal_value(BETA)),
        "regret_curve_epochs": list(range(cfg["epochs"] + 1)),
        "methods": {},
        "extra_methods": {},
        "seconds": {},
    }
    for i, m in enumerate(methods):
        entry = {
            "label": LABELS[m],
            "final_policy": curve(pol[i].mean(0)),
            "final_regret": float(reg[i, :, -1].mean()),
            "regret_curve": curve(reg[i].mean(0)),
            "regret_curve_ci95": curve(_ci95(reg[i])),
            "final_regret_ci95": float(_ci95(reg[i, :, -1])),
            "final_regret_std": float(reg[i, :, -1].std(ddof=1)),
            "min_regret_over_curve": float(reg[i].mean(0).min()),
            "population_fixed_point_regret": float(pop_regret[i, -1]),
            "population_fixed_point_policy": curve(pop_policy[i]),
            "population_regret_curve": curve(pop_regret[i]),
            "long_run_final_regret": float(long_reg[i, :, -1].mean()),
            "long_run_final_regret_ci95": float(_ci95(long_reg[i, :, -1])),
        }
        (out["methods"] if m in PAPER_METHODS else out["extra_methods"])[m] = entry
    out["methods"]["ipo"]["analytic_fixed_point_policy"] = curve(np.exp(np.asarray(ipo_fp, np.float64)))
    out["methods"]["ipo"]["analytic_fixed_point_regret"] = float(bandit.regret(ipo_fp, BETA))
    out["ipo_tau_sweep"] = {
        "tau": cfg["ipo_taus"],
        "analytic_fixed_point_regret": curve(ipo_tau_regret),
        "min_regret_over_tau": float(ipo_best.min()),
        "argmin_tau": float(tau_fine[int(jnp.argmin(ipo_best))]),
    }
    out["beta_sweep"] = {
        "beta": cfg["betas"],
        "initial_regret": curve(sw_init),
        "seeds": cfg["sweep_seeds"],
        "methods": {
            m: {
                "final_regret": curve(sw_final[:, i].mean(1)),
                "final_regret_ci95": curve(_ci95(sw_final[:, i], axis=1)),
                "population_fixed_point_regret": curve(sw_pop_final[:, i]),
            }
            for i, m in enumerate(methods)
        },
    }
    out["overlap_sweep"] = {
        "t": cfg["overlap_t"],
        "definition": "μ_i(t) = (1 − t)·μ_i + t·π*; overlap = Σ_y min((μ1 + μ2)/2, π*)",
        "overlap": curve(ov),
        "seeds": cfg["sweep_seeds"],
        "methods": {
            m: {
                "final_regret": curve(ow_final[:, i].mean(1)),
                "final_regret_ci95": curve(_ci95(ow_final[:, i], axis=1)),
                "population_fixed_point_regret": curve(ow_pop_final[:, i]),
            }
            for i, m in enumerate(methods)
        },
    }
    out["long_run"] = {
        "epochs": cfg["long_epochs"],
        "seeds": cfg["long_seeds"],
        "curve_epochs": list(range(0, cfg["long_epochs"] + 1, stride)),
        "methods": {
            m: {
                "regret_curve": curve(long_reg[i].mean(0)[::stride]),
                "regret_curve_ci95": curve(_ci95(long_reg[i])[::stride]),
                "final_regret": float(long_reg[i, :, -1].mean()),
                "population_fixed_point_regret": float(pop_regret[i, -1]),
            }
            for i, m in enumerate(methods)
        },
    }
    out["seconds"] = {"paper_run": round(t_main, 1), "total": round(time.time() - t0, 1)}
    out["claims"] = claims(out)
    return out


def _small(x: float) -> str:
    return "< 1e-6 (float32 round-off)" if abs(x) < 1e-6 else f"{x:.2e}"


def claims(res: dict) -> list[dict]:
    """The paper's four qualitative claims of Figure 1, checked against the measured values."""
    m = res["methods"]
    init = res["initial_regret"]
    c, ipo, pg0, pgv = m["copg"], m["ipo"], m["pg_zero_baseline"], m["pg_value_baseline"]
    out = []
    ok = c["final_regret"] < 0.1 * init and c["long_run_final_regret"] < 1e-3 and c["population_fixed_point_regret"] < 1e-4
    out.append({
        "paper": PAPER,
        "claim": "CoPG reaches zero regret (converges to π*)",
        "measured": f"regret {c['final_regret']:.4f} ± {c['final_regret_ci95']:.4f} after 100 epochs (initial {init:.4f}); "
        f"{_small(c['long_run_final_regret'])} after {res['long_run']['epochs']} epochs; exact fixed point "
        f"{_small(c['population_fixed_point_regret'])}",
        "status": "holds" if ok else "does not hold",
    })
    ok = ipo["long_run_final_regret"] > 0.05 and abs(ipo["long_run_final_regret"] - ipo["analytic_fixed_point_regret"]) < 0.1 * ipo["analytic_fixed_point_regret"]
    out.append({
        "paper": PAPER,
        "claim": "IPO (on Bradley–Terry preferences) converges to a biased policy",
        "measured": f"regret {ipo['final_regret']:.4f} after 100 epochs, {ipo['long_run_final_regret']:.4f} long run; "
        f"analytic IPO fixed point {ipo['analytic_fixed_point_regret']:.4f} (τ = β); best over τ "
        f"{res['ipo_tau_sweep']['min_regret_over_tau']:.4f} at τ ≈ {res['ipo_tau_sweep']['argmin_tau']:.2f}",
        "status": "holds" if ok else "does not hold",
    })
    ok = pg0["final_regret"] > init and pg0["final_regret"] > pg0["min_regret_over_curve"] + 5 * pg0["final_regret_ci95"]
    out.append({
        "paper": PAPER,
        "claim": "off-policy PG with baseline 0 gets worse over time",
        "measured": f"regret rises from {init:.4f} to {pg0['final_regret']:.4f} ± {pg0['final_regret_ci95']:.4f} after "
        f"100 epochs (fixed point {pg0['population_fixed_point_regret']:.4f})",
        "status": "holds" if ok else "does not hold",
    })
    ok = pgv["population_fixed_point_regret"] > 1e-3 and pgv["long_run_final_regret"] > 1e-3 and pgv["final_regret"] > c["final_regret"]
    out.append({
        "paper": PAPER,
        "claim": "off-policy PG with the value baseline is biased",
        "measured": f"regret {pgv['final_regret']:.4f} after 100 epochs (CoPG {c['final_regret']:.4f}); converges to "
        f"{pgv['long_run_final_regret']:.4f} (exact fixed point {pgv['population_fixed_point_regret']:.4f}, not 0)",
        "status": "holds" if ok else "does not hold",
    })
    return out


FLOOR = 1e-7  # log-scale plots draw values below this (float32 round-off) at the floor


@styled
def plot(res: dict, out: Path) -> list[str]:
    """Draw every figure from the saved results (PNG + PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []

    def save(fig, name):
        written.extend(p.name for p in savefig(fig, out, name))

    allm = {**res["methods"], **res["extra_methods"]}
    spe = res["config"]["steps_per_epoch"]

    # Figure 1: regret curves with 95% CI bands + final policies.
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    x = np.asarray(res["regret_curve_epochs"]) * spe
    for m, e in allm.items():
        mu, ci = np.asarray(e["regret_curve"]), np.asarray(e["regret_curve_ci95"])
        ls = "--" if m in res["extra_methods"] else "-"
        ax.plot(x, mu, ls, color=COLORS[m], label=LABELS[m])
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
    save(fig, "copg_bandit_regret")

    # Figure 2: regret against β.
    fig, ax = plt.subplots(figsize=(6, 4))
    b = np.asarray(res["beta_sweep"]["beta"])
    for m, e in res["beta_sweep"]["methods"].items():
        ls = "--" if m in res["extra_methods"] else "-"
        mu = np.maximum(np.asarray(e["final_regret"]), FLOOR)
        ax.errorbar(b, mu, yerr=e["final_regret_ci95"], fmt="o" + ls, color=COLORS[m], label=LABELS[m], ms=4)
        ax.plot(b, np.maximum(e["population_fixed_point_regret"], FLOOR), ":", color=COLORS[m])
    ax.plot(b, res["beta_sweep"]["initial_regret"], "k-", lw=0.8, label="initial (π_ref)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel(f"regret (< {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_title("after 100 epochs (solid) and exact fixed point (dotted)")
    ax.legend(fontsize=7)
    save(fig, "copg_bandit_beta")

    # Figure 3: regret against overlap.
    fig, ax = plt.subplots(figsize=(6, 4))
    o = np.asarray(res["overlap_sweep"]["overlap"])
    for m, e in res["overlap_sweep"]["methods"].items():
        ls = "--" if m in res["extra_methods"] else "-"
        ax.errorbar(o, np.maximum(e["final_regret"], FLOOR), yerr=e["final_regret_ci95"], fmt="o" + ls,
                    color=COLORS[m], label=LABELS[m], ms=4)
        ax.plot(o, np.maximum(e["population_fixed_point_regret"], FLOOR), ":", color=COLORS[m])
    ax.set_yscale("log")
    ax.set_xlabel("overlap Σ min((μ1 + μ2)/2, π*)   [μ_i ← (1 − t)μ_i + tπ*]")
    ax.set_ylabel(f"regret (< {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_title("after 100 epochs (solid) and exact fixed point (dotted)")
    ax.legend(fontsize=7)
    save(fig, "copg_bandit_overlap")

    # Figure 4: long run against the exact fixed points.
    fig, ax = plt.subplots(figsize=(7, 4))
    lr = res["long_run"]
    x = np.asarray(lr["curve_epochs"]) * spe
    for m, e in lr["methods"].items():
        ls = "--" if m in res["extra_methods"] else "-"
        mu, ci = np.maximum(np.asarray(e["regret_curve"]), FLOOR), np.asarray(e["regret_curve_ci95"])
        ax.plot(x, mu, ls, color=COLORS[m], label=LABELS[m])
        ax.fill_between(x, np.maximum(mu - ci, FLOOR), mu + ci, color=COLORS[m], alpha=0.2)
        if e["population_fixed_point_regret"] > FLOOR:
            ax.axhline(e["population_fixed_point_regret"], color=COLORS[m], ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("Adam steps")
    ax.set_ylabel(f"regret (< {FLOOR:g} drawn at {FLOOR:g})")
    ax.set_title(f"long run ({lr['epochs']} epochs, {lr['seeds']} seeds); dotted: exact fixed points")
    ax.legend(fontsize=7)
    save(fig, "copg_bandit_long_run")

    # Figure 5: IPO's analytic fixed point against τ.
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ts = res["ipo_tau_sweep"]
    ax.plot(ts["tau"], ts["analytic_fixed_point_regret"], "o-", color=COLORS["ipo"])
    ax.axvline(res["config"]["ipo_tau"], color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("IPO τ")
    ax.set_ylabel("regret of IPO's fixed point (β = 0.5)")
    ax.set_title(f"min over τ: {ts['min_regret_over_tau']:.3f} (never 0)")
    save(fig, "copg_bandit_ipo_tau")
    return written


def run(out: Path, *, quick: bool = True) -> dict:
    """Run everything, write ``out/results.json`` and the figures (from the JSON); return the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = compute(quick)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(path)
    res["figures"] = plot(json.loads(path.read_text()), out)
    return res


def plot_from_results(out: Path) -> list[str]:
    """Redraw every figure from ``out/results.json`` (the figures are never edited by hand)."""
    out = Path(out)
    return plot(json.loads((out / "results.json").read_text()), out)

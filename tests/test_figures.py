"""The committed figures/ are what `jalign reproduce` draws from the committed results data.

For every reproduction, each figure is redrawn in memory from figures/NAME/results.json alone, and the arrays
on its matplotlib axes (line x/y data, bar heights, scatter points) are compared with the arrays in that JSON
(independently re-derived here from the results, not read back from the drawing code). The committed files are
exactly the figures the reproduction draws (PNG + PDF each). That the data matches a fresh quick run is checked
where the run happens anyway: tests/test_notebooks.py executes each reproduction's notebook and compares its
results.json with the committed one (see ``assert_results_match``).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

import paper_repro

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
VOLATILE_KEYS = {"seconds", "time", "wall_s", "elapsed_s", "figures"}


def assert_results_match(fresh, committed, path="results", rtol=1e-3, atol=1e-6):
    """Recursively compare two results trees: same keys/lengths/strings, numbers within tolerance."""
    if isinstance(committed, dict):
        assert isinstance(fresh, dict), path
        keys = set(committed) - VOLATILE_KEYS
        assert keys == set(fresh) - VOLATILE_KEYS, f"{path}: keys differ"
        for k in sorted(keys):
            assert_results_match(fresh[k], committed[k], f"{path}.{k}", rtol, atol)
    elif isinstance(committed, list):
        assert isinstance(fresh, list) and len(fresh) == len(committed), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(fresh, committed, strict=True)):
            assert_results_match(a, b, f"{path}[{i}]", rtol, atol)
    elif isinstance(committed, bool) or committed is None:
        assert fresh == committed, path
    elif isinstance(committed, (int, float)):
        a, b = float(fresh), float(committed)
        if math.isnan(b):
            assert math.isnan(a), path
        else:
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=atol), f"{path}: {a} != {b}"
    elif isinstance(committed, str) and path.endswith(".measured"):
        pass  # measured text embeds numbers already compared through the numeric fields
    else:
        assert fresh == committed, f"{path}: {fresh!r} != {committed!r}"


# ---------------------------------------------------------------------------------------------------------
# What is on the axes


def _arr(x):
    return np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(x, dtype=object))], np.float64)


def _lines(ax):
    return [(_arr(ln.get_xdata()), _arr(ln.get_ydata())) for ln in ax.get_lines()]


def _bars(ax):
    return [_arr([p.get_height() for p in c]) for c in ax.containers if hasattr(c, "patches")]


def _points(ax):
    pts = [np.asarray(c.get_offsets(), np.float64) for c in ax.collections if hasattr(c, "get_offsets")]
    return np.concatenate([p for p in pts if p.size]) if pts else np.zeros((0, 2))


def _close(a, b):
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-12, equal_nan=True)


def _has_line(ax, y, x=None, what=""):
    y = _arr(y)
    x = None if x is None else _arr(x)
    assert any(_close(ly, y) and (x is None or _close(lx, x)) for lx, ly in _lines(ax)), \
        f"{what}: no line on the axes plots {y[:4]}…"


def _has_bars(ax, heights, what=""):
    h = _arr(heights)
    assert any(_close(b, h) for b in _bars(ax)), f"{what}: no bar group has heights {h[:4]}…"


def _has_points(ax, pts, what=""):
    got = _points(ax)
    for p in np.atleast_2d(np.asarray(pts, np.float64)):
        assert np.any(np.all(np.isclose(got, p, rtol=1e-6, atol=1e-12), axis=1)), f"{what}: point {p} not plotted"


# ---------------------------------------------------------------------------------------------------------
# The expected arrays of each reproduction, from its results


def _check_copg(figs, res):
    floor = 1e-7
    allm = {**res["methods"], **res["extra_methods"]}
    ax, ax2 = figs["copg_bandit_regret"].axes[:2]
    x = np.asarray(res["regret_curve_epochs"]) * res["config"]["steps_per_epoch"]
    for m, e in allm.items():
        _has_line(ax, e["regret_curve"], x, f"regret curve of {m}")
        _has_bars(ax2, e["final_policy"], f"final policy of {m}")
    _has_bars(ax2, res["pi_star"], "π*")
    for fig, sweep, xkey in (("copg_bandit_beta", "beta_sweep", "beta"), ("copg_bandit_overlap", "overlap_sweep",
                                                                            "overlap")):
        ax = figs[fig].axes[0]
        for m, e in res[sweep]["methods"].items():
            _has_line(ax, np.maximum(e["final_regret"], floor), res[sweep][xkey], f"{sweep} {m}")
            _has_line(ax, np.maximum(e["population_fixed_point_regret"], floor), res[sweep][xkey], f"{sweep} {m} fp")
    _has_line(figs["copg_bandit_beta"].axes[0], res["beta_sweep"]["initial_regret"], res["beta_sweep"]["beta"])
    ax = figs["copg_bandit_long_run"].axes[0]
    lr = res["long_run"]
    for m, e in lr["methods"].items():
        _has_line(ax, np.maximum(e["regret_curve"], floor),
                  np.asarray(lr["curve_epochs"]) * res["config"]["steps_per_epoch"], f"long run {m}")
    ts = res["ipo_tau_sweep"]
    _has_line(figs["copg_bandit_ipo_tau"].axes[0], ts["analytic_fixed_point_regret"], ts["tau"], "IPO vs τ")


def _check_fdpg(figs, res):
    names = list(res["exact"])
    ax0, ax1, ax2 = figs["fdpg_toy"].axes[:3]
    xs = np.arange(len(res["target"]["p"]))
    _has_line(ax0, res["base"]["a"], xs, "base a")
    for k in names:
        _has_line(ax0, res["exact"][k]["pi"], xs, f"exact optimum {k}")
        _has_points(ax1, [res["exact"][k]["entropy"], res["exact"][k]["expected_b"]], f"exact {k}")
        _has_points(ax1, [[r["entropy"], r["expected_b"]] for r in res["sampled"][k]["runs"]], f"sampled {k}")
    _has_bars(ax2, [res["variance"][k]["median_relative_variance"] for k in names], "variance")
    _has_bars(ax2, [res["variance"][k]["median_relative_variance_no_baseline"] for k in names], "variance, no b")
    a0, a1 = figs["fdpg_training"].axes[:2]
    for k in names:
        h = res["sampled"][k]["runs"][0]["history"]
        _has_line(a0, h["expected_b"], h["step"], f"training E[b] {k}")
        _has_line(a1, h["entropy"], h["step"], f"training H {k}")
    for k, h in res["off_policy"].items():
        _has_line(a0, h["history"]["expected_b"], h["history"]["step"], f"off-policy {k}")
    axes = np.asarray(figs["fdpg_lm"].axes).reshape(-1, 3)
    for row, t in zip(axes, res["lm"]["targets"].values(), strict=True):
        fin = [r["final"] for r in t["runs"].values()]  # per-seed lists: the bars are means over seeds
        _has_bars(row[2], [np.mean(f["kl_p_pi_init"]) for f in fin], "KL(p‖a)")
        _has_bars(row[2], [np.mean(f["kl_p_pi"]) for f in fin], "KL(p‖π)")
        for k, r in t["runs"].items():
            h = r["history"]  # rows = seeds: the curves are the means over seeds
            _has_line(row[1], np.mean(h["distinct_1w"], axis=0), h["step"], f"distinct-1 {k}")
            _has_line(row[0], [res["lm"]["base"]["rate"], *np.mean(h["expected_phi"], axis=0)],
                      [res["lm"]["base"]["entropy_per_token"], *np.mean(h["entropy_per_token"], axis=0)],
                      f"E[φ] {k}")
            _has_points(row[0], np.stack([r["final"]["entropy_per_token"], r["final"]["expected_phi"]], 1),
                        f"each seed's end {k}")


def _check_dpa_logic(figs, res):
    land = res["lattice"]
    ax = figs["lattice"].axes[0]
    assert len(ax.get_lines()) == len(land["edges"])  # one line per Hasse edge
    got = _points(ax)
    assert sorted(got[:len(land["nodes"]), 1]) == sorted(n["rank"] for n in land["nodes"])
    axes = np.asarray(figs["toy_curves"].axes).reshape(-1, 2)
    for row, d in zip(axes, res["toy"].values(), strict=True):
        for c, key in enumerate(("chosen", "rejected")):
            for name, L in d["losses"].items():
                t = np.arange(len(L[f"{key}_mean"])) * d["record_every"]
                _has_line(row[c], L[f"{key}_mean"], t, f"toy {key} {name}")
    a = figs["lm_curves"].axes
    for name, L in res["lm"]["losses"].items():  # rows = seeds (draws of the pairs): means over seeds
        cw, cl = np.mean(L["chosen"], axis=0), np.mean(L["rejected"], axis=0)
        _has_line(a[0], cw, np.arange(len(cw)), f"LM chosen {name}")
        _has_line(a[1], cl, np.arange(len(cl)), f"LM rejected {name}")
        _has_points(a[2], [[L["rank"], np.mean(L["chosen_change"])], [L["rank"], np.mean(L["rejected_change"])]],
                    f"LM change {name}")


def _check_entanglement(figs, res):
    keys = ("cosine", "mean_chosen_logps", "mean_rejected_logps")

    def probe(r, key):  # the seed mean of the per-seed curves [S, P] (log-probs as changes from step 0)
        y = np.asarray(r["curves"][key], np.float64).reshape(-1, len(r["curves"]["step"]))
        return (y if key == "cosine" else y - y[:, :1]).mean(axis=0)

    axes = np.asarray(figs["lm_dpo_variants"].axes).reshape(3, 3)
    variants = ("one_token", "short_suffix", "long_suffix")
    runs = res["lm"]["runs"]
    for r in runs:
        if r["loss"] == "dpo":
            for j, key in enumerate(keys):
                _has_line(axes[variants.index(r["variant"])][j], probe(r, key), r["curves"]["step"],
                          f"{r['variant']} {r['mitigation']} {key}")
    axes = figs["lm_losses_long_suffix"].axes
    for r in runs:
        if r["variant"] == "long_suffix" and r["mitigation"] in ("none", "normalized"):
            for j, key in enumerate(keys):
                _has_line(axes[j], probe(r, key), r["curves"]["step"], f"long suffix {r['loss']} {key}")
    toy = res["toy"]
    axes = figs["toy"].axes
    _has_points(axes[0], [[v["predicted"][0], v["actual"][0]] for v in toy["predictions"].values()], "toy chosen")
    _has_points(axes[0], [[v["predicted"][1], v["actual"][1]] for v in toy["predictions"].values()], "toy rejected")
    for ax, key in zip(axes[1:3], ("chosen_logps", "rejected_logps"), strict=True):
        for k, c in toy["suffix_curves"].items():
            for m, v in c.items():
                _has_line(ax, np.asarray(v[key]) - v[key][0], what=f"suffix {k} {m} {key}")


def _check_ches(figs, res):
    from paper_repro.ches import CANDIDATES, FLOW, RUNS3

    st = res["single_token"]
    axes = figs["ches_single_token"].axes
    for ax, v in zip(axes, st.values(), strict=False):
        for r in v["runs"]:
            steps = np.arange(len(r["chosen_prob"]))
            _has_line(ax, r["chosen_prob"], steps, "π(y+)")
            _has_line(ax, r["rejected_prob"], steps, "π(y−)")
            other = [j for j, c in enumerate(CANDIDATES) if c.strip() not in (v["chosen"], v["rejected"])]
            _has_line(ax, np.asarray(r["candidate_prob"])[:, other].sum(-1), steps, "other label words")
    for v in st.values():
        _has_bars(axes[-1], [v["mean_mass_flow_during_drop"][f] for f in FLOW], "mass flow")
    a0, a1 = figs["ches_identification_mitigation"].axes[:2]
    for k, d in res["identification"].items():  # seed means per percentile
        if isinstance(d, dict) and "subsets" in d:
            _has_line(a0, [np.mean(r["chosen_change"]) for r in d["subsets"]],
                      [r["percentile"] for r in d["subsets"]], k)
    mit = res["mitigation"]
    _has_bars(a1, [np.mean(mit[r]["chosen_change_train"]) for r in RUNS3], "mitigation, training pairs")
    _has_bars(a1, [np.mean(mit[r]["chosen_change_all"]) for r in RUNS3], "mitigation, all pairs")


def _check_rankings(figs, res):
    budgets = res["config"]["budgets"]
    x = [b if b > 0 else 0.5 for b in budgets]
    means = [row[0] for row in res["summary"]["accuracy_by_budget"]]
    _has_line(figs["rankings_accuracy"].axes[0], means, x, "ranking accuracy")
    lm = res["lm"]
    axes = figs["rankings_lm_topk"].axes
    for b in lm["config"]["betas"]:
        rs = [r for r in lm["runs"] if r["beta"] == b]
        steps = rs[0]["curves"]["step"]
        for ax, key in zip(axes, ("topk/mass_top10", "topk/entropy_top10", "topk/reward", "heldout/accuracy"),
                           strict=True):
            _has_line(ax, np.mean([r["curves"][key] for r in rs], axis=0), steps, f"β={b} {key}")


def _check_reward_transforms(figs, res):
    fx, cfg, ps = res["fixed"], res["config"], res["per_seed"]
    ax = figs["reward_transforms_and"].axes[0]
    for key in ("logps_raw", "logps_transformed"):
        p = np.exp(np.asarray(fx[key]))
        _has_line(ax, p[:, 0], fx["betas"], f"{key}: specialist")
        _has_line(ax, p[:, 1], fx["betas"], f"{key}: generalist")
    kls = cfg["kl_targets"]
    for key in ("share_raw", "share_transformed"):
        _has_line(figs["reward_transforms_share"].axes[0], np.mean(ps[key], 0), kls, key)
    a0, a1 = figs["reward_transforms_hacking"].axes[:2]
    for key in ("best_true", "true_raw", "true_transformed"):
        _has_line(a0, np.mean(ps[key], 0), kls, key)
    for key in ("regret_raw", "regret_transformed"):
        _has_line(a1, np.mean(ps[key], 0), kls, key)
    grid = np.asarray(cfg["grad_grid"])
    _has_line(figs["reward_transforms_gradient"].axes[0], 1 / (1 + np.exp(grid)), grid, "σ(r_ref − r)")
    lm = res["lm"]
    th = lm["config"]["thresholds"]
    a0, a1 = figs["reward_transforms_lm"].axes[:2]
    for m in lm["config"]["methods"]:
        runs = sorted((r for r in lm["runs"] if r["method"] == m), key=lambda r: r["seed"])
        lex = [np.mean(r["samples"]["lexicon"]) for r in runs]
        con = [np.mean(r["samples"]["conciseness"]) for r in runs]
        good_l = [np.asarray(r["samples"]["lexicon"]) >= th["lexicon"] for r in runs]
        good_c = [np.asarray(r["samples"]["conciseness"]) >= th["conciseness"] for r in runs]
        _has_bars(a0, [np.mean([np.mean(a & b) for a, b in zip(good_l, good_c, strict=True)]),
                       np.mean([np.mean(a) for a in good_l]), np.mean([np.mean(b) for b in good_c])], f"{m} shares")
        _has_line(a1, con, lex, f"{m}: per-seed mean rewards")


def _check_maxmin(figs, res):
    cfg = res["config"]
    gmin, gmaj = np.asarray(res["gaps"]["gap_minority"]), np.asarray(res["gaps"]["gap_majority"])  # [A, D, S]
    a0, a1 = figs["maxmin_gaps"].axes[:2]
    for j in range(len(cfg["diversities"])):
        _has_line(a0, gmin[:, j].mean(-1), cfg["shares"], f"minority gap, diversity {cfg['diversities'][j]}")
    _has_line(a1, gmin[0].mean(-1), cfg["diversities"], "minority gap by diversity")
    _has_line(a1, gmaj[0].mean(-1), cfg["diversities"], "majority gap by diversity")
    _has_line(figs["maxmin_em_ari"].axes[0], np.mean(res["ari"], 0), cfg["em_labels_per_user"], "ARI")
    mm = res["maxmin"]
    for grp in ("majority", "minority"):
        _has_bars(figs["maxmin_utilities"].axes[0],
                  [np.mean(mm[f"{p}/{grp}"]) for p in ("reference", "single", "maxmin_em", "maxmin_true")], grp)
    if "lm" in res:  # the small LM: each true group's win rate vs the SFT reference (ties ½), per seed
        lm = res["lm"]
        k = lm["config"]["eval_samples_per_prompt"]
        ref = lm["reference_samples"]

        def win(pol, key):
            a = np.reshape(pol[key], (-1, k))[:, :, None]
            b = np.reshape(ref[key], (-1, k))[:, None, :]
            return float(np.mean(np.mean((a > b) + 0.5 * (a == b), axis=(1, 2))))

        a0, a1 = figs["maxmin_lm"].axes[:2]
        for m in lm["config"]["methods"]:
            runs = sorted((r for r in lm["runs"] if r["method"] == m), key=lambda r: r["seed"])
            maj = [win(r["samples"], "lexicon") for r in runs]
            mino = [win(r["samples"], "conciseness") for r in runs]
            _has_bars(a0, [np.mean(maj), np.mean(mino), np.mean(np.minimum(maj, mino))], f"LM {m} win rates")
            _has_line(a1, mino, maj, f"LM {m}: per-seed win rates")


def _check_preference_games(figs, res):
    cfg = res["config"]
    fams = res["families"]
    x = np.asarray(cfg["recorded_steps"], np.float64)
    x[0] = 0.5 * cfg["record_every"]
    for ax, f in zip(figs["games_distance"].axes, cfg["families"], strict=False):
        for m in cfg["methods"]:
            _has_line(ax, np.median(np.maximum(np.asarray(fams[f][f"{m}/tv"]), 1e-16), 0), x, f"TV {f} {m}")
    bias_ax = figs["games_step_size"].axes[1]
    for f in cfg["families"]:
        _has_line(bias_ax, np.median(np.asarray(fams[f]["bias/tv"]), 0), cfg["bias_betas"], f"bias {f}")
    for ax, trajs in zip(figs["games_simplex"].axes, res["simplex"]["trajectories"].values(), strict=False):
        for t in trajs:  # barycentric (p0, p1, p2) on the triangle (0, 0), (1, 0), (½, √3/2)
            p = np.asarray(t, np.float64)
            _has_line(ax, np.sqrt(3) / 2 * p[:, 2], p[:, 1] + 0.5 * p[:, 2], "simplex trajectory")


def _check_infalign(figs, res):
    cfg = res["config"]
    fr = res["frontier"]
    axes = figs["infalign_frontier"].axes
    for ax, key, kind in zip(axes[:3], ("std", "bon", "won"), ("exp", "exp", "neg_exp"), strict=True):
        for name in ["identity", "raw"] + [f"{kind} t={t:g}" for t in cfg["frontier_ts"]]:
            _has_line(ax, fr[name][key], cfg["frontier_kls"], f"frontier {key} {name}")
    for ax, key in ((axes[1], "bon"), (axes[2], "won")):
        pts = np.asarray(fr[f"optimum_{key}"])
        _has_line(ax, pts[:, 1], pts[:, 0], f"optimum {key}")
    ps = {k: np.asarray(v, np.float64) for k, v in res["per_seed"].items()}
    for ax, proc, kind in zip(figs["infalign_gains"].axes[:2], ("bon", "won"), ("exp", "neg_exp"), strict=True):
        best = ps[f"{kind}/{proc}"].max(axis=1)  # best t, [S, n, KL]
        for i in range(len(cfg["ns"])):
            for other in ("identity", "raw"):
                _has_line(ax, (best[:, i] - ps[f"{other}/{proc}"][:, i]).mean(0), cfg["kl_budgets"],
                          f"gain {proc} n={cfg['ns'][i]} vs {other}")
    b = res["bounds"]
    ax = figs["infalign_bon"].axes[0]
    _has_line(ax, np.log(cfg["bound_ns"]) - (np.asarray(cfg["bound_ns"]) - 1) / np.asarray(cfg["bound_ns"]),
              cfg["bound_ns"], "KL bound")
    for kl in b["kl"]:
        _has_line(ax, kl, cfg["bound_ns"], "KL(BoN‖μ)")


def _check_kl_estimators(figs, res):
    cfg, card = res["config"], res["card"]
    curves = np.asarray(card["curves_from_ref"])  # [V, T, K]
    x = np.maximum(np.arange(curves.shape[1]) * cfg["record_every"], 1)
    for ax, v, c in zip(figs["kl_estimators_trajectories"].axes, cfg["variants"], curves, strict=True):
        for k in range(c.shape[1]):
            _has_line(ax, c[:, k], x, f"{v}: π(arm {k})")
    ax = figs["kl_estimators_fixed_points"].axes[0]
    _has_bars(ax, cfg["ref_probs"], "π_ref")
    for v in ("k2", "k3", "k1"):
        _has_bars(ax, card["fixed_points"][v], f"fixed point {v}")
    sw = res["beta_sweep"]
    for ax, key in zip(figs["kl_estimators_beta"].axes, ("tv", "regret"), strict=True):
        _has_line(ax, sw["card"][key], sw["betas"], f"card {key}")
        _has_line(ax, np.mean(sw["random"][key], 0), sw["betas"], f"random bandits {key}")
    toy = res["length_toy"]
    for agg, c in toy["curves"].items():
        c = np.asarray(c)
        _has_line(figs["kl_estimators_length_bias"].axes[0], np.log(c[:, 2] / c[:, 1]),
                  np.arange(len(c)) * toy["record_every"], f"{agg}: log ratio")


CHECKS = {"copg-bandit": _check_copg, "fdpg": _check_fdpg, "dpa-logic": _check_dpa_logic,
          "entanglement": _check_entanglement, "ches": _check_ches, "rankings": _check_rankings,
          "reward-transforms": _check_reward_transforms, "maxmin": _check_maxmin,
          "preference-games": _check_preference_games, "infalign": _check_infalign,
          "kl-estimators": _check_kl_estimators}


def _figure_list(module, res):
    return module._figures(res) if hasattr(module, "_figures") else module.FIGURES


@pytest.mark.parametrize("name", sorted(paper_repro.registry()))
def test_committed_figures_plot_the_committed_results(name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jalign.plotting import style

    module = paper_repro.registry()[name]
    committed = FIGURES / name
    res = json.loads((committed / "results.json").read_text())
    figures = _figure_list(module, res)
    files = {p.relative_to(committed).as_posix() for p in committed.rglob("*") if p.suffix in (".png", ".pdf")}
    assert files == {f"{n}.{ext}" for n, _ in figures for ext in ("png", "pdf")}, "committed figure files"
    assert name in CHECKS, f"no plotted-data check for reproduction {name!r}"
    with style():
        figs = {n: draw(res) for n, draw in figures}
    try:
        CHECKS[name](figs, res)
    finally:
        for f in figs.values():
            plt.close(f)


def test_plotted_data_checks_can_fail():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1.0, 2.0, 3.0])
    ax.bar([0, 1], [4.0, 5.0])
    ax.scatter([0.5], [0.25])
    _has_line(ax, [1.0, 2.0, 3.0], [0, 1, 2])
    _has_bars(ax, [4.0, 5.0])
    _has_points(ax, [0.5, 0.25])
    with pytest.raises(AssertionError):
        _has_line(ax, [1.0, 2.0, 3.1])
    with pytest.raises(AssertionError):
        _has_line(ax, [1.0, 2.0, 3.0], [0, 1, 3])
    with pytest.raises(AssertionError):
        _has_bars(ax, [4.0, 5.5])
    with pytest.raises(AssertionError):
        _has_points(ax, [0.5, 0.3])
    plt.close(fig)


def test_committed_report_lists_every_committed_claim():
    report = (FIGURES / "report.md").read_text(encoding="utf-8")
    for name in sorted(paper_repro.registry()):
        claims = json.loads((FIGURES / name / "results.json").read_text())["claims"]
        for c in claims:
            assert str(c["claim"]).replace("|", "\\|").replace("\n", " ") in report, (name, c["claim"])


def test_results_comparison_detects_changes():
    base = {"a": [1.0, 2.0], "claims": [{"status": "holds", "measured": "x=1"}], "seconds": 3}
    assert_results_match({"a": [1.0, 2.0001], "claims": [{"status": "holds", "measured": "x=1.0001"}],
                          "seconds": 9}, base)
    with pytest.raises(AssertionError):
        assert_results_match({"a": [1.0, 2.1], "claims": base["claims"]}, base)
    with pytest.raises(AssertionError):
        assert_results_match({"a": [1.0, 2.0], "claims": [{"status": "does not hold", "measured": ""}]}, base)


@pytest.mark.parametrize("name,path", [
    ("copg-bandit", ("methods", "copg", "regret_curve", 50)),
    ("ches", ("mitigation", "filtered", "chosen_change_train", 0)),
    ("entanglement", ("toy", "suffix_curves", "8", "dpo", "chosen_logps", 5)),
    ("entanglement", ("lm", "runs", 0, "curves", "mean_chosen_logps", 1, 2)),  # one seed's probe point
    ("reward-transforms", ("per_seed", "regret_raw", 0, 3)),
    ("maxmin", ("gaps", "gap_minority", 0, 4, 2)),
    ("infalign", ("frontier", "raw", "bon", 3)),
    ("kl-estimators", ("beta_sweep", "card", "tv", 4)),
])
def test_plotted_data_check_fails_when_the_results_differ_from_the_drawing(name, path):
    """Draw from the committed results, then perturb one number of the results: the check must fail."""
    import copy

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jalign.plotting import style

    module = paper_repro.registry()[name]
    res = json.loads((FIGURES / name / "results.json").read_text())
    with style():
        figs = {n: draw(res) for n, draw in _figure_list(module, res)}
    bad = copy.deepcopy(res)
    node = bad
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] += 0.5
    try:
        with pytest.raises(AssertionError):
            CHECKS[name](figs, bad)
    finally:
        for f in figs.values():
            plt.close(f)

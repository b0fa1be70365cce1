"""CTRL on the small LM: calibrated + exponentially transformed reward vs raw-reward RL, judged by best-of-4 win
rate against best-of-4 of the reference at matched KL (InfAlign, Balashankar et al., 2024, arXiv 2412.19792).

    nice -n 5 python -m experiments.ctrl_small_lm --workdir runs/ctrl --out experiments/results/ctrl_small_lm.json
    python -m experiments.ctrl_small_lm --plot-only --out experiments/results/ctrl_small_lm.json

The committed run is ``experiments/results/ctrl_small_lm.json`` with its figure; its numbers are quoted in
docs/games_reproductions.md and README.md (tests/test_ctrl_small_lm.py recomputes them from the JSON).

Stages (each a ``jalign.train.train`` run of a shipped config with overrides, or ``jalign.train.evaluate``):

1. **Reference** μ: the pretrained small LM after ``--sft-steps`` of SFT on the chosen reviews
   (experiments/sft_small_lm.py), exported to ``WORKDIR/sft/export``.
2. **Reference rewards**: ``--ref-samples`` completions of μ for each of the 12 training prompts of
   ``sentiment_pairs``, scored by the true reward (``lexicon``), written with
   :func:`jalign.train.plugins.rewards.write_reference_rewards` to ``WORKDIR/ref_rewards.json``.
3. **RL** (experiments/grpo_small_lm.py, GRPO with the k3 KL term to the frozen μ, β = ``--kl-coef``, learning
   rate ``--lr``, ``--rl-steps`` steps) from μ, per seed, with two rewards:
   ``ctrl`` = ``ctrl:lexicon:WORKDIR/ref_rewards.json,transform=exp,t=<--t>`` — per prompt, the lexicon reward
   calibrated against μ's samples, C = μ̂(r < r(y)) + ½·μ̂(r = r(y)), transformed by exp(t·C); and ``raw`` =
   ``lexicon`` itself.
4. **Evaluation along training** (:class:`jalign.train.probes.winrate_probe`, at the start and every
   ``--probe-every`` steps): on 12 held-out prompts (places that are not in the training data),
   ``--eval-slots`` × 4 completions per prompt from the policy and from μ (the same μ completions for both
   rewards of a seed), scored by the lexicon reward. From the saved scores: the standard (n = 1) win rate over
   μ, and the best-of-4 win rate — consecutive groups of 4 samples give ``--eval-slots`` best-of-4 draws per
   prompt and model (:func:`jalign.diagnostics.evaluation.best_of_groups`), compared with ties ½
   (:func:`jalign.diagnostics.evaluation.win_rate`, SE over prompts); Monte-Carlo KL(π‖μ) (k1, k3) of the policy
   samples.
5. **Matched KL**: each run is a trajectory (KL_k1, win rate) over its checkpoints; at common KL levels
   κ (fractions ``KL_FRACTIONS`` of the smallest final KL over all runs, so every run reaches them) the win rate
   is read off each trajectory by linear interpolation (:func:`jalign.diagnostics.evaluation.value_at_kl`), and
   CTRL − raw is paired by seed (mean and Student-t 95% interval over seeds).

The results JSON holds the settings, per-stage wall times, per-run training histories and per-checkpoint
per-prompt scores; :func:`summarize` computes every derived number from them and tests recompute it.
The figure (same stem, ``.png``/``.pdf``) is drawn from the saved JSON alone (:func:`plot_from_results`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

METHODS = ("ctrl", "raw")
BEST_OF = 4
KL_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
HELDOUT_PLACES = ("the zoo", "the bistro", "the theatre", "the spa", "the market", "the aquarium", "the tea room",
                  "the pub", "the bowling alley", "the garden centre", "the bike shop", "the ice rink")
SETTINGS = dict(sft_steps=100, ref_samples=24, rl_steps=24, probe_every=8, kl_coef=0.05, lr=2e-4, t=4.0,
                seeds=(0, 1, 2), eval_slots=4, max_new_tokens=48, ref_seed=7, eval_seed=100)


def _cfg(name: str, overrides: list[str]):
    from jalign.train import load_config

    return load_config(f"experiments/{name}.py", overrides)


def heldout_prompts() -> list[str]:
    """The 12 held-out prompts: the training template 'Write a short review of {place}.\\n' with places that are
    not among the training data's."""
    return [f"Write a short review of {p}.\n" for p in HELDOUT_PLACES]


def summarize(res: dict) -> dict:
    """Every derived number from the saved scores: per run and checkpoint the standard and best-of-4 win rates
    over μ (with SEs over prompts); per matched KL level the per-seed interpolated win rates, their across-seed
    mean ± SE, and the paired CTRL − raw difference with its t interval."""
    from jalign.diagnostics.evaluation import best_of_groups, value_at_kl, win_rate
    from jalign.reporting import t_interval

    out: dict = {"checkpoints": {}, "matched": []}
    for m in METHODS:
        out["checkpoints"][m] = []
        for run in res["runs"][m]:
            rows = []
            for ck in run["checkpoints"]:
                pol, base = np.asarray(ck["scores"]), np.asarray(run["reference_scores"])
                w1 = win_rate(pol, base)
                wb = win_rate(best_of_groups(pol, BEST_OF), best_of_groups(base, BEST_OF))
                rows.append({"step": ck["step"], "kl_k1": ck["kl_k1"], "win_rate": w1["win_rate"], "se": w1["se"],
                             "bo4_win_rate": wb["win_rate"], "bo4_se": wb["se"], "reward": float(pol.mean())})
            out["checkpoints"][m].append(rows)
    final_kl = [rows[-1]["kl_k1"] for m in METHODS for rows in out["checkpoints"][m]]
    kmax = float(min(final_kl))
    out["common_kl_max"] = kmax
    for frac in KL_FRACTIONS:
        kl = frac * kmax
        row: dict = {"kl": kl, "fraction": frac}
        for key in ("bo4_win_rate", "win_rate"):
            per = {m: [value_at_kl([r["kl_k1"] for r in rows], [r[key] for r in rows], kl)
                       for rows in out["checkpoints"][m]] for m in METHODS}
            entry = {}
            for m in METHODS:
                v = np.asarray(per[m])
                entry[m] = {"per_seed": v.tolist(), "mean": float(v.mean()),
                            "se": float(v.std(ddof=1) / math.sqrt(len(v)))}
            d = np.asarray(per["ctrl"]) - np.asarray(per["raw"])
            mean, lo, hi = t_interval(d)
            entry["diff"] = {"per_seed": d.tolist(), "mean": mean, "lo": lo, "hi": hi}
            row[key] = entry
        out["matched"].append(row)
    return out


def run(workdir: Path, s: dict) -> dict:
    from experiments.rlhf_small_lm import write_prompts
    from jalign.tokenizers import ByteTokenizer
    from jalign.train import plugins, train
    from jalign.train.evaluate import evaluate
    from jalign.train.plugins.rewards import write_reference_rewards
    from jalign.train.probes import winrate_probe

    t_all = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
                 "best_of": BEST_OF, "kl_fractions": list(KL_FRACTIONS), "wall_s": {}}
    # 1. the reference policy
    t = time.time()
    sft = workdir / "sft" / "export"
    r = train(_cfg("sft_small_lm", [f"workdir={workdir / 'sft'}", f"train.export={sft}",
                                    f"train.steps={s['sft_steps']}", "train.progress=False"]))
    res["wall_s"]["sft"] = round(time.time() - t, 1)
    res["sft"] = {"steps": s["sft_steps"], "first_loss": float(r.history[0]["loss"]),
                  "last_loss": float([h for h in r.history if "loss" in h][-1]["loss"])}
    print(f"[sft] {res['wall_s']['sft']} s", flush=True)
    # 2. reference rewards of the training prompts
    t = time.time()
    prompts_file = workdir / "train_prompts.jsonl"
    train_prompts = write_prompts(prompts_file)
    ev = evaluate(str(sft), str(sft), "lexicon", prompts_file, n=s["ref_samples"], max_new_tokens=s["max_new_tokens"],
                  seed=s["ref_seed"])
    ref_file = write_reference_rewards(workdir / "ref_rewards.json", train_prompts, ev["policy"]["scores"],
                                       ByteTokenizer(), reward="lexicon")
    res["reference_rewards"] = {"prompts": train_prompts, "rewards": ev["policy"]["scores"]}
    res["wall_s"]["reference_rewards"] = round(time.time() - t, 1)
    print(f"[ref] {res['wall_s']['reference_rewards']} s, mean lexicon reward of μ "
          f"{np.mean(ev['policy']['scores']):.3f}", flush=True)
    # 3 + 4. RL with each reward, evaluated along training
    specs = {"ctrl": f"ctrl:lexicon:{ref_file},transform=exp,t={s['t']}", "raw": "lexicon"}
    res["reward_specs"] = {m: specs[m].replace(str(workdir), "WORKDIR") for m in METHODS}
    res["eval_prompts"] = heldout_prompts()
    lexicon = plugins.get_reward("lexicon")
    res["runs"] = {m: [] for m in METHODS}
    for m in METHODS:
        res["wall_s"][m] = []
    for seed in s["seeds"]:
        for m in METHODS:
            t = time.time()
            probe = winrate_probe(res["eval_prompts"], lexicon, n=s["eval_slots"] * BEST_OF, every=s["probe_every"],
                                  max_new_tokens=s["max_new_tokens"], seed=s["eval_seed"] + seed, name="eval")
            r = train(_cfg("grpo_small_lm", [
                f"workdir={workdir / f'{m}_{seed}'}", "model.name=pretrained", f"model.kwargs.path={sft}",
                f"online.reward={specs[m]}", f"seed={seed}", f"train.steps={s['rl_steps']}",
                f"online.kl_coef={s['kl_coef']}", f"optim.lr={s['lr']}", f"online.max_new_tokens={s['max_new_tokens']}",
                "train.log_every=1", "train.progress=False"]), probes=[probe])
            res["wall_s"][m].append(round(time.time() - t, 1))
            recs = [p for p in r.probes if p["probe"] == "eval"]
            hist = [{"step": int(h["step"]), **{k: float(h[k]) for k in ("reward/mean", "reward/raw",
                                                                           "reward/calibrated", "kl") if k in h}}
                    for h in r.history if "step" in h and "reward/mean" in h]
            res["runs"][m].append({
                "seed": seed, "history": hist, "reference_scores": recs[0]["baseline_rewards"],
                "checkpoints": [{"step": int(p["step"]), "scores": p["rewards"], "kl_k1": float(p["kl_k1"]),
                                 "kl_k1_se": float(p["kl_k1_se"]), "kl_k3": float(p["kl_k3"]),
                                 "kl_k3_se": float(p["kl_k3_se"])} for p in recs]})
            last = recs[-1]
            print(f"[{m} seed {seed}] {res['wall_s'][m][-1]} s: KL k1 {last['kl_k1']:.2f}, win rate "
                  f"{last['win_rate']:.3f}, lexicon {last['reward']:.3f} (μ {last['baseline_reward']:.3f})", flush=True)
    res["wall_s"]["total"] = round(time.time() - t_all, 1)
    res["summary"] = summarize(res)
    return res


def plot_from_results(res: dict, out: Path) -> list[Path]:
    """Best-of-4 and standard win rate against μ over measured KL(π‖μ) for every run's checkpoints, the matched-KL
    means ± SE; ``out`` with suffix ``.png`` and ``.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = res["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"ctrl": "C3", "raw": "C0"}
    labels = {"ctrl": f"CTRL (exp(t·C), t = {res['settings']['t']:g})", "raw": "raw lexicon reward"}
    for ax, key, title in ((axes[0], "bo4_win_rate", f"best-of-{res['best_of']} vs best-of-{res['best_of']} of μ"),
                           (axes[1], "win_rate", "standard (n = 1) vs μ")):
        for m in METHODS:
            for i, rows in enumerate(summ["checkpoints"][m]):
                ax.plot([r["kl_k1"] for r in rows], [r[key] for r in rows], "-o", ms=3, lw=1, alpha=0.45,
                        color=colors[m], label=labels[m] if i == 0 else None)
            pts = summ["matched"]
            ax.errorbar([p["kl"] + (0.25 if m == "ctrl" else -0.25) for p in pts], [p[key][m]["mean"] for p in pts],
                        yerr=[2 * p[key][m]["se"] for p in pts], fmt="s", ms=6, capsize=3, color=colors[m])
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_xlabel("KL(π‖μ), Monte-Carlo k1 (nats)")
        ax.set_ylabel("win rate (lexicon judge)")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle("squares: matched-KL mean over seeds ± 2 SE (linear interpolation along each run; drawn ±0.25 apart)",
                 fontsize=8)
    fig.tight_layout()
    from experiments._driver import save_figure

    return save_figure(fig, out)


def main(argv=None):
    from experiments._driver import main as drive

    drive(argv, doc=__doc__, name="ctrl_small_lm", settings=SETTINGS, run=run, plot_from_results=plot_from_results)


if __name__ == "__main__":
    main()

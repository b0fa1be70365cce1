"""Online pairwise preference optimisation on the small LM: IPO-MD vs online IPO vs online DPO (and Nash-MD-PG),
by win rate against the start (SFT) policy under the lexicon reward.

    python -m experiments.online_pairwise_small_lm --workdir runs/online_pairwise --out \
        experiments/results/online_pairwise_small_lm.json
    python -m experiments.online_pairwise_small_lm --plot-only --out experiments/results/online_pairwise_small_lm.json

Committed run: ``experiments/results/online_pairwise_small_lm.json`` and its figure (same stem); measured numbers in
docs/games_reproductions.md and README.md (tests/test_online_pairwise_small_lm.py checks them against the JSON).

Stages:

1. **SFT** (experiments/sft_small_lm.py, ``--sft-steps``): the pretrained small LM on the chosen reviews of
   ``sentiment_pairs``, exported to ``WORKDIR/sft/export``; it is the start policy and the frozen reference μ.
2. **Online pairwise training** (experiments/ipo_md_small_lm.py with the method's keys, :data:`METHODS`;
   ``--steps``, seeds ``--seeds``): two completions per prompt, labels from the Bradley–Terry preference model
   P(y₁ ≻ y₂) = σ((r₁ − r₂)/``--pref-temp``) over the lexicon reward r (labels drawn, seeded); IPO-MD samples both
   from the geometric mixture π^{1−β_mix}·μ^{β_mix}, online IPO and online DPO from π; Nash-MD-PG samples y ~ π,
   y' ~ mixture and follows the policy gradient of P(y ≻ y') − β·KL.
3. **Evaluation** (``jalign eval``'s :func:`jalign.train.evaluate.evaluate`): each policy against the SFT policy
   on the 12 prompts of ``sentiment_pairs``, ``--eval-n`` completions per prompt and model, judged by the lexicon
   reward; Monte-Carlo KL(π‖π_SFT) on the policy's samples.

The JSON holds the settings, per-stage wall times, per-seed win rates with their per-prompt standard errors and the
per-prompt scores they come from, KL, the training curves, and per method the across-seed mean with its 95%
Student-t interval (:func:`summarize`, :func:`jalign.reporting.t_interval`); the figure is drawn from the JSON alone.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

# method -> trainer keys (loss.hparams replaced as a whole; the rest are online.* values)
METHODS = {
    "ipo_md": {"algorithm": "pairwise", "loss": "ipo", "hparams": {"beta": 0.1, "ipo_average": False},
               "mixture_beta": 0.5},
    "online_ipo": {"algorithm": "pairwise", "loss": "ipo", "hparams": {"beta": 0.1, "ipo_average": False},
                   "mixture_beta": 0.0},
    "online_dpo": {"algorithm": "pairwise", "loss": "dpo", "hparams": {"beta": 0.1}, "mixture_beta": 0.0},
    "nash_md": {"algorithm": "nash_md", "loss": "dpo", "hparams": {}, "mixture_beta": 0.5, "kl_coef": 0.1},
}
LABELS = {"ipo_md": "IPO-MD", "online_ipo": "online IPO", "online_dpo": "online DPO", "nash_md": "Nash-MD"}
SETTINGS = dict(methods=("ipo_md", "online_ipo", "online_dpo"), sft_steps=120, steps=20, lr=1e-4, seeds=(0, 1, 2),
                eval_n=4, max_new_tokens=32, pref_temp=0.1, eval_seed=100)
HISTORY_KEYS = ("loss", "kl", "reward/mean", "preference/mean", "preference/label_rate", "rewards/margins",
                "rewards/accuracies", "score", "completions/mean_length")


def method_config(method: str, overrides: list[str]):
    """The trainer config of ``method``: experiments/ipo_md_small_lm.py with :data:`METHODS`' keys and
    ``overrides``, validated."""
    import ml_collections

    from experiments.ipo_md_small_lm import get_config
    from jalign.train.config import apply_overrides, validate

    m = METHODS[method]
    c = get_config()
    c.loss.name = m["loss"]
    c.loss.hparams = ml_collections.ConfigDict(m["hparams"])
    c.online.algorithm = m["algorithm"]
    c.online.mixture_beta = float(m["mixture_beta"])
    c.online.kl_coef = float(m.get("kl_coef", 0.0))
    apply_overrides(c, overrides)
    validate(c)
    return c


def summarize(runs: list[dict]) -> dict:
    """Across-seed mean, unbiased sd and 95% Student-t interval of each per-seed number."""
    from jalign.reporting import t_interval

    out = {}
    for key in ("win_rate", "policy_reward", "kl_k1", "kl_k3"):
        v = np.array([r[key] for r in runs], np.float64)
        mean, lo, hi = t_interval(v)
        out[key] = {"mean": mean, "sd": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, "lo": lo, "hi": hi,
                    "n": len(v)}
    return out


def run(workdir: Path, s: dict) -> dict:
    import jax

    from experiments.rlhf_small_lm import _cfg, _history_rows, write_prompts
    from jalign.train import train
    from jalign.train.evaluate import evaluate

    t_all = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    # The runs of a method differ only in the seed: a persistent compilation cache lets later runs reuse the
    # compiled sampler and step (wall times in the JSON include the compilations that did happen).
    jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    res: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
                 "methods": {m: METHODS[m] for m in s["methods"]}, "wall_s": {}}
    t = time.time()
    sft = workdir / "sft" / "export"
    r = train(_cfg("sft_small_lm", [f"workdir={workdir / 'sft'}", f"train.export={sft}",
                                    f"train.steps={s['sft_steps']}", "train.progress=False"]))
    res["wall_s"]["sft"] = round(time.time() - t, 1)
    res["sft"] = {"steps": s["sft_steps"], "history": _history_rows(r.history, ("loss",))}
    print(f"[sft] {res['wall_s']['sft']} s, final loss {res['sft']['history'][-1].get('loss')}", flush=True)
    prompts = workdir / "prompts.jsonl"
    res["eval_prompts"] = write_prompts(prompts)
    res["runs"] = {}
    for method in s["methods"]:
        res["runs"][method] = []
        res["wall_s"][method], res["wall_s"][f"eval_{method}"] = [], []
        for seed in s["seeds"]:
            t = time.time()
            wd = workdir / f"{method}_{seed}"
            pol = wd / "export"
            cfg = method_config(method, [
                f"workdir={wd}", f"train.export={pol}", "model.name=pretrained", f"model.kwargs.path={sft}",
                f"seed={seed}", f"train.steps={s['steps']}", f"optim.lr={s['lr']}",
                f"online.max_new_tokens={s['max_new_tokens']}",
                f"online.preference_temperature={s['pref_temp']}", "train.progress=False"])
            r = train(cfg)
            res["wall_s"][method].append(round(time.time() - t, 1))
            row = {"seed": seed, "history": _history_rows(r.history, HISTORY_KEYS)}
            t = time.time()
            ev = evaluate(str(pol), str(sft), "lexicon", prompts, n=s["eval_n"], max_new_tokens=s["max_new_tokens"],
                          seed=s["eval_seed"] + seed)
            w = ev["win_rate"]
            row.update(win_rate=w["win_rate"], se=w["se"], counts={k: w[k] for k in ("wins", "ties", "losses")},
                       policy_reward=ev["policy"]["reward_mean"], sft_reward=ev["baseline"]["reward_mean"],
                       policy_scores=ev["policy"]["scores"], sft_scores=ev["baseline"]["scores"],
                       kl_k1=ev["kl"]["k1"], kl_k1_se=ev["kl"]["k1_se"], kl_k3=ev["kl"]["k3"],
                       kl_k3_se=ev["kl"]["k3_se"], examples=ev["policy"]["examples"][:2])
            res["wall_s"][f"eval_{method}"].append(round(time.time() - t, 1))
            res["runs"][method].append(row)
            print(f"[{method} seed {seed}] train {res['wall_s'][method][-1]} s, eval "
                  f"{res['wall_s'][f'eval_{method}'][-1]} s: win rate {row['win_rate']:.3f} ± {row['se']:.3f}, "
                  f"KL k1 {row['kl_k1']:.2f}", flush=True)
    res["summary"] = {m: summarize(res["runs"][m]) for m in s["methods"]}
    res["wall_s"]["total"] = round(time.time() - t_all, 1)
    return res


def plot_from_results(res: dict, out: Path) -> list[Path]:
    """Win rate against the SFT policy per method (per seed ± 2 per-prompt SE, the seed mean with its 95%
    t-interval) and the mean training reward per step; ``out`` with suffix ``.png`` and ``.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(res["runs"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, m in enumerate(methods):
        c = f"C{i}"
        for k, r in enumerate(res["runs"][m]):
            ax.errorbar(i + 0.08 * (k - 1), r["win_rate"], yerr=2 * r["se"], fmt="o", ms=3, color=c, alpha=0.6)
        sm = res["summary"][m]["win_rate"]
        ax.hlines(sm["mean"], i - 0.25, i + 0.25, color=c, lw=2)
        ax.fill_between([i - 0.25, i + 0.25], sm["lo"], sm["hi"], color=c, alpha=0.15, lw=0)
        for k, r in enumerate(res["runs"][m]):
            h = [(e["step"], e["reward/mean"]) for e in r["history"] if "reward/mean" in e]
            bx.plot(*zip(*h, strict=True), color=c, alpha=0.7, lw=1, label=LABELS.get(m, m) if k == 0 else None)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(methods)), [LABELS.get(m, m) for m in methods], fontsize=8)
    ax.set_ylabel("win rate vs SFT, lexicon (±2 SE)")
    ax.set_title("seed mean and 95% t-interval", fontsize=9)
    bx.set_xlabel("step")
    bx.set_ylabel("mean lexicon reward of the sampled pairs")
    bx.legend(fontsize=7)
    fig.tight_layout()
    from experiments._driver import save_figure

    return save_figure(fig, out)


def main(argv=None):
    from experiments._driver import main as drive

    drive(argv, doc=__doc__, name="online_pairwise_small_lm", settings=SETTINGS, run=run, plot_from_results=plot_from_results,
          check=lambda s: (f"--methods {bad}: unknown; valid: {list(METHODS)}"
                           if (bad := [m for m in s["methods"] if m not in METHODS]) else None))


if __name__ == "__main__":
    main()

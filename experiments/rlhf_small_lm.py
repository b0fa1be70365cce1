"""The RLHF pipeline end to end on the small LM: SFT → reward model → GRPO and PPO against it → win rates.

    python -m experiments.rlhf_small_lm --workdir runs/rlhf --out experiments/results/rlhf_small_lm.json
    python -m experiments.rlhf_small_lm --plot-only --out experiments/results/rlhf_small_lm.json

Committed runs: ``experiments/results/rlhf_small_lm.json`` (the defaults, β = 0.1) and
``experiments/results/rlhf_small_lm_kl0.5.json`` (``--kl-coef 0.5``), each with its figure; measured numbers in
docs/training.md and README.md (tests/test_rlhf_small_lm.py checks them against the JSON files).

Stages (each a ``jalign.train.train`` run of a shipped config with overrides, or ``jalign.train.evaluate``;
equivalent shell commands are in docs/training.md, "The RLHF pipeline on the small LM"):

1. **SFT** (experiments/sft_small_lm.py, ``--sft-steps``): the pretrained small LM on the chosen reviews of
   ``sentiment_pairs``; exported to ``WORKDIR/sft/export``.
2. **Reward model** (experiments/reward_small_lm.py, ``--rm-steps``): the small LM's trunk + a scalar head,
   Bradley–Terry on 256 built-in preference pairs; held-out accuracy on 64 pairs generated with another data
   seed (the trainer's ``eval/accuracy``); exported to ``WORKDIR/rm/export``.
3. **RL** (experiments/grpo_small_lm.py with ``online.algorithm`` = ``grpo`` or ``ppo``, ``--rl-steps``):
   from the SFT export, reward ``rm:WORKDIR/rm/export``, KL to the frozen SFT policy with weight ``--kl-coef``
   (GRPO: k3 in the loss; PPO: k1 per token in the reward, GAE over a critic), seeds ``--seeds``.
4. **Evaluation** (``jalign eval``'s :func:`jalign.train.evaluate.evaluate`): each RL policy against the SFT
   policy on the 12 prompts of ``sentiment_pairs``, ``--eval-n`` completions per prompt and model, once under
   the reward model (the proxy the policy was trained on) and once under the true ``lexicon`` reward (the
   scorer that generated the preference labels). Both calls use the same seed, so both judges score the same
   completions.

The results JSON holds per-stage wall times, the RM's held-out accuracy, per-seed win rates (with their
per-prompt standard errors and the per-prompt scores they are computed from), Monte-Carlo KL(π‖π_SFT), and
across-seed means with standard errors; :func:`summarize` computes the aggregates and tests recompute them.
The figure (same stem, ``.png``/``.pdf``) is drawn from the saved JSON alone (:func:`plot_from_results`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

ALGORITHMS = ("grpo", "ppo")
JUDGES = ("rm", "lexicon")  # "rm" = the trained reward model (proxy), "lexicon" = the true scripted reward
SETTINGS = dict(sft_steps=120, rm_steps=48, rl_steps=20, kl_coef=0.1, seeds=(0, 1, 2), eval_n=4,
                max_new_tokens=48, eval_seed=100)


def _cfg(name: str, overrides: list[str]):
    from jalign.train import load_config

    return load_config(f"experiments/{name}.py" if Path(f"experiments/{name}.py").is_file() else name, overrides)


def _history_rows(history: list[dict], keys: tuple[str, ...]) -> list[dict]:
    return [{"step": int(h["step"]), **{k: float(h[k]) for k in keys if k in h}} for h in history if "step" in h]


def write_prompts(path: Path) -> list[str]:
    """The distinct prompts of ``sentiment_pairs`` (12 places, trailing newline kept) as a ``.jsonl`` file."""
    from jalign.data import builtin

    prompts = sorted({r["prompt"] for r in builtin.load("sentiment_pairs", n=512, seed=1)})
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    return prompts


def summarize(per_seed: list[dict]) -> dict:
    """Across-seed mean, unbiased sd and SE = sd/√S of each per-seed number (win rates, mean rewards, KL)."""
    out = {}
    keys = [("win_rate", j) for j in JUDGES] + [("policy_reward", j) for j in JUDGES] + [("kl_k1", None),
                                                                                         ("kl_k3", None)]
    for key, judge in keys:
        vals = np.array([r[judge][key] if judge else r[key] for r in per_seed], np.float64)
        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
        out[f"{key}_{judge}" if judge else key] = {"mean": float(vals.mean()), "sd": sd,
                                                   "se": sd / math.sqrt(len(vals)), "n": len(vals)}
    return out


def run(workdir: Path, s: dict) -> dict:
    from jalign.train import train
    from jalign.train.evaluate import evaluate

    t_all = time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}, "wall_s": {}}
    # 1. SFT
    t = time.time()
    sft = workdir / "sft" / "export"
    r = train(_cfg("sft_small_lm", [f"workdir={workdir / 'sft'}", f"train.export={sft}",
                                    f"train.steps={s['sft_steps']}"]))
    res["wall_s"]["sft"] = round(time.time() - t, 1)
    res["sft"] = {"steps": s["sft_steps"], "history": _history_rows(r.history, ("loss",))}
    print(f"[sft] {res['wall_s']['sft']} s, final loss {res['sft']['history'][-1].get('loss')}", flush=True)
    # 2. Reward model
    t = time.time()
    rm = workdir / "rm" / "export"
    r = train(_cfg("reward_small_lm", [f"workdir={workdir / 'rm'}", f"train.export={rm}",
                                       f"train.steps={s['rm_steps']}", f"eval.every={s['rm_steps'] // 2}"]))
    res["wall_s"]["reward_model"] = round(time.time() - t, 1)
    evals = [h for h in r.history if "eval/accuracy" in h]
    res["reward_model"] = {"steps": s["rm_steps"], "heldout_pairs": 64,
                           "heldout": [{"step": int(h["step"]), "accuracy": float(h["eval/accuracy"]),
                                        "margin": float(h.get("eval/margin", math.nan)),
                                        "loss": float(h.get("eval/loss", math.nan))} for h in evals]}
    res["reward_model"]["heldout_accuracy"] = res["reward_model"]["heldout"][-1]["accuracy"]
    print(f"[rm] {res['wall_s']['reward_model']} s, held-out {res['reward_model']['heldout']}", flush=True)
    # 3 + 4. RL per algorithm and seed, then evaluation against the SFT policy under both judges
    prompts = workdir / "prompts.jsonl"
    res["eval_prompts"] = write_prompts(prompts)
    res["runs"] = {a: [] for a in ALGORITHMS}
    for algo in ALGORITHMS:
        res["wall_s"][algo] = []
        res["wall_s"][f"eval_{algo}"] = []
        for seed in s["seeds"]:
            t = time.time()
            pol = workdir / f"{algo}_{seed}" / "export"
            r = train(_cfg("grpo_small_lm", [
                f"workdir={workdir / f'{algo}_{seed}'}", f"train.export={pol}", "model.name=pretrained",
                f"model.kwargs.path={sft}", f"online.reward=rm:{rm}", f"online.algorithm={algo}", f"seed={seed}",
                f"train.steps={s['rl_steps']}", f"online.kl_coef={s['kl_coef']}",
                f"online.max_new_tokens={s['max_new_tokens']}", "train.log_every=1"]))
            res["wall_s"][algo].append(round(time.time() - t, 1))
            row = {"seed": seed, "history": _history_rows(r.history, ("reward/mean", "kl", "entropy", "loss"))}
            t = time.time()
            for judge, spec in (("rm", f"rm:{rm}"), ("lexicon", "lexicon")):
                ev = evaluate(str(pol), str(sft), spec, prompts, n=s["eval_n"], max_new_tokens=s["max_new_tokens"],
                              seed=s["eval_seed"] + seed)
                row[judge] = {"win_rate": ev["win_rate"]["win_rate"], "se": ev["win_rate"]["se"],
                              "counts": {k: ev["win_rate"][k] for k in ("wins", "ties", "losses")},
                              "policy_reward": ev["policy"]["reward_mean"], "policy_reward_se": ev["policy"]["reward_se"],
                              "sft_reward": ev["baseline"]["reward_mean"], "sft_reward_se": ev["baseline"]["reward_se"],
                              "policy_scores": ev["policy"]["scores"], "sft_scores": ev["baseline"]["scores"],
                              "examples": ev["policy"]["examples"][:2], "sft_examples": ev["baseline"]["examples"][:2],
                              "eval_s": ev["timings"]["total_s"]}
                if judge == "rm":  # the KL and lengths do not depend on the judge (same samples)
                    row.update(kl_k1=ev["kl"]["k1"], kl_k1_se=ev["kl"]["k1_se"], kl_k3=ev["kl"]["k3"],
                               kl_k3_se=ev["kl"]["k3_se"], policy_lengths=ev["policy"]["lengths"],
                               policy_distinct_2=ev["policy"]["distinct_2"], sft_distinct_2=ev["baseline"]["distinct_2"])
            res["wall_s"][f"eval_{algo}"].append(round(time.time() - t, 1))
            res["runs"][algo].append(row)
            print(f"[{algo} seed {seed}] train {res['wall_s'][algo][-1]} s, eval {res['wall_s'][f'eval_{algo}'][-1]} s:"
                  f" win rate rm {row['rm']['win_rate']:.3f} ± {row['rm']['se']:.3f}, lexicon "
                  f"{row['lexicon']['win_rate']:.3f} ± {row['lexicon']['se']:.3f}, KL k1 {row['kl_k1']:.2f}", flush=True)
    res["summary"] = {a: summarize(res["runs"][a]) for a in ALGORITHMS}
    res["wall_s"]["total"] = round(time.time() - t_all, 1)
    return res


def plot_from_results(res: dict, out: Path) -> list[Path]:
    """Win rates against the SFT policy under both judges (per seed ± 2 per-prompt SE, and the seed mean) and the
    RL runs' batch reward-model reward per step; ``out`` with suffix ``.png`` and ``.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {"grpo": "C0", "ppo": "C1"}
    for i, algo in enumerate(ALGORITHMS):
        for j, judge in enumerate(JUDGES):
            x0 = 2 * j + 0.35 * (i - 0.5)
            runs = res["runs"][algo]
            for k, r in enumerate(runs):
                ax.errorbar(x0 + 0.06 * (k - 1), r[judge]["win_rate"], yerr=2 * r[judge]["se"], fmt="o", ms=3,
                            color=colors[algo], alpha=0.6)
            m = res["summary"][algo][f"win_rate_{judge}"]["mean"]
            ax.hlines(m, x0 - 0.15, x0 + 0.15, color=colors[algo], lw=2, label=algo.upper() if j == 0 else None)
        for r in res["runs"][algo]:
            h = [(e["step"], e["reward/mean"]) for e in r["history"] if "reward/mean" in e]
            bx.plot(*zip(*h, strict=True), color=colors[algo], alpha=0.7, lw=1)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks([0, 2], ["judge: reward model (proxy)", "judge: lexicon (true)"])
    ax.set_ylabel("win rate vs SFT (±2 SE)")
    ax.legend(fontsize=8)
    bx.set_xlabel("RL step")
    bx.set_ylabel("batch reward-model reward")
    bx.set_title("training reward (3 seeds each)", fontsize=9)
    fig.tight_layout()
    from experiments._driver import save_figure

    return save_figure(fig, out)


def main(argv=None):
    from experiments._driver import main as drive

    drive(argv, doc=__doc__, name="rlhf_small_lm", settings=SETTINGS, run=run, plot_from_results=plot_from_results)


if __name__ == "__main__":
    main()

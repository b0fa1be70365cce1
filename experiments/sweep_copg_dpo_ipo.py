"""CoPG vs DPO vs IPO from the pretrained small LM on the built-in sentiment pairs, with a β sweep.

    python -m experiments.sweep_copg_dpo_ipo --betas 0.1 --steps 30 --out runs/sweep.json

For each β and method, trains with ``jalign.train.train`` from the experiment configs (CoPG:
experiments/copg_small_lm.py; DPO / IPO: experiments/dpo_small_lm.py with ``loss.name=ipo``), i.e. the same
model, pairs, batch order, optimiser and steps; only the loss (and CoPG's use of the lexicon rewards instead of
the chosen/rejected label) differ. Equivalent shell loop::

    for b in 0.05 0.1 0.5; do
      python -m jalign.cli train --config experiments/copg_small_lm.py loss.hparams.beta=$b workdir=runs/copg_$b
      python -m jalign.cli train --config experiments/dpo_small_lm.py loss.hparams.beta=$b workdir=runs/dpo_$b
      python -m jalign.cli train --config experiments/dpo_small_lm.py loss.name=ipo loss.hparams.beta=$b \
          workdir=runs/ipo_$b
    done

Evaluation after training (``evaluate``), on held-out pairs (``sentiment_pairs`` with ``data_seed=1``):

* ``pair_acc``: implicit-reward accuracy, the fraction of pairs with
  ``ln π/π_ref(chosen) > ln π/π_ref(rejected)`` (chosen = higher lexicon reward);
* ``greedy_reward``: mean lexicon reward of greedy completions (``eval_new_tokens`` bytes) of the held-out
  prompts, before (the pretrained model) and after training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jalign.train import load_config, online, plugins, train
from jalign.train.step import make_logps_fn

METHODS = {"copg": ("experiments/copg_small_lm.py", []), "dpo": ("experiments/dpo_small_lm.py", []),
           "ipo": ("experiments/dpo_small_lm.py", ["loss.name=ipo"])}


def evaluate(graphdef, params, ref_params, model_state, *, n_pairs=64, n_prompts=16, eval_new_tokens=48):
    """Held-out implicit-reward accuracy and greedy-sample lexicon reward (before = ``ref_params``)."""
    kw = dict(seq_len=144, seed=0, n=n_pairs, data_seed=1, max_prompt_len=48)
    pairs = next(plugins.make_data("builtin_pairwise", batch_size=n_pairs, **kw))
    lp = jax.jit(lambda p, i, m, a: make_logps_fn(graphdef, p, model_state)(i, m, a)[0])
    ratio = {s: np.asarray(lp(params, *(pairs[f"{s}_{f}"] for f in ("ids", "mask", "attention_mask"))))
             - np.asarray(lp(ref_params, *(pairs[f"{s}_{f}"] for f in ("ids", "mask", "attention_mask"))))
             for s in ("chosen", "rejected")}
    prompts = next(plugins.make_data("builtin_prompts", batch_size=n_prompts, **kw))
    sample = online.make_kv_sampler(graphdef, max_new_tokens=eval_new_tokens, greedy=True)
    reward = plugins.get_reward("lexicon")

    def greedy(p):
        s = sample(p, model_state, jnp.asarray(prompts["prompt_ids"]), jnp.asarray(prompts["prompt_attention_mask"]),
                   jax.random.key(0))
        return float(np.mean(online.score(reward, prompts["prompt_ids"], s)))

    return {"pair_acc": float(np.mean(ratio["chosen"] > ratio["rejected"])),
            "margin": float(np.mean(ratio["chosen"] - ratio["rejected"])),
            "greedy_reward_before": greedy(ref_params), "greedy_reward_after": greedy(params)}


def run(betas, steps, methods=tuple(METHODS)):
    rows = []
    for beta in betas:
        for m in methods:
            path, over = METHODS[m]
            cfg = load_config(path, [*over, f"loss.hparams.beta={beta}", f"train.steps={steps}",
                                     "train.progress=False", "checkpoint.enabled=False", "train.log_every=1"])
            t0 = time.perf_counter()
            res = train(cfg)
            wall = time.perf_counter() - t0
            ev = evaluate(res.graphdef, res.state.params, res.state.ref_params, res.state.model_state)
            row = {"method": m, "beta": beta, "steps": steps, "train_wall_s": round(wall, 1),
                   "first_loss": res.history[0]["loss"], "last_loss": res.history[-1]["loss"], **ev}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.1])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    rows = run(a.betas, a.steps, a.methods)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One GRPO iteration (sampling + update) of the online trainer, split into its parts, on the small LM and on a
GPT-2-shaped model, against a full forward pass over the same batch in the same run.

    python -m bench.grpo [--rounds 3] [--quick] [--out bench/results/grpo.json] [--peer PYTHON]

The committed result ran with ``--peer`` (an interpreter with torch, transformers and trl): TRL's ``GRPOTrainer``
on the same shapes in a child process, one round after each jalign round (``bench.peer_trl_grpo``).

What is timed are the trainer's own functions, wired as ``jalign.train.loop`` wires them for
``mode="online"``, ``online.algorithm="grpo"`` (nothing re-implemented):

* **sample**: ``jalign.train.online.make_kv_sampler`` (``jalign.models.sample``: one prefill pass over the
  prompts, then one KV-cache decode step per new token in a ``lax.while_loop``) drawing G completions of
  ``new_tokens`` tokens for each of B prompts (B·G rows), temperature 1. EOS is disabled (``eos_id=None``) so
  that every repeat generates exactly ``new_tokens`` tokens per row (fixed work; the trainer stops a row at
  EOS and the whole loop once every row has stopped).
* **host**: scoring on the host (``online.score_parts`` with a numpy reward), ``rl.pg_batch`` and
  ``rl.sample_metrics``: the loop's work between sampling and the step.
* **step**: the jitted ``rl.make_pg_step`` (``jalign.train.step.jit_step`` on a 1×1×1 mesh), GRPO with the
  k3 KL term (so it computes the old-policy *and* the frozen reference's per-token log-probs once each), then
  ``num_iterations × num_minibatches`` clipped AdamW updates in a ``lax.scan``.
* **logps pass**: ``rl.token_logps`` alone, jitted: one of the step's two no-gradient passes, timed so the
  step can be split: ``update_s = step_s − 2·logps_pass_s`` (derived, not timed on its own).
* **forward (baseline)**: ``jalign.train.step.logits_fn`` jitted: one full forward pass over the same
  ``[B·G, P+N]`` batch the sampler produced. Its FLOP rate is the baseline of the sampler's.
* **greedy sample** (diagnostic): the same sampler with ``greedy=True``, which takes the argmax and skips the
  sampling transform below (same model calls, same KV cache); ``sample_over_greedy`` = sample_s / its time.
* **filter_logits × N** (diagnostic): ``jalign.models.sampling.filter_logits`` on ``[B·G, V]`` logits, N
  times in a ``fori_loop``: the per-token sampling transform, which sorts the vocabulary even when top-k and
  top-p are off.

FLOPs (model FLOPs, ``ModelConfig.flops_per_token``: 6 N_matmul + 12 L T d per token for forward + backward,
a third of it for a forward): the forward pass and the sampler compute the same tokens' activations (the
prefill the prompt's, the decode steps one token each against the cache), so both are credited the forward
FLOPs of the ``[B·G, T]`` batch; ``fwd_over_sample_rate`` = forward FLOP rate / sampling FLOP rate =
``sample_s / forward_s``. The step: 2 forward passes (old policy, reference) + ``num_iterations`` forward +
backward passes over all rows.

Repeats alternate: ``--rounds`` rounds, each timing every part of every model once, in order (the shared
machine's speed drifts by up to 2× within minutes); medians over rounds. Compilation (first call) is timed
separately and excluded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bench.harness import write_result
from jalign.models import ModelConfig, create_model, load_small_lm
from jalign.models.sampling import filter_logits
from jalign.train import online, rl
from jalign.train.config import base_config
from jalign.train.sharding import global_batch, make_mesh
from jalign.train.step import init_state, jit_step, logits_fn, make_optimizer, place_state

PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS = 4, 4, 32, 32
NUM_ITERATIONS, NUM_MINIBATCHES = 2, 2
GPT2_SHAPE = {"d_model": 256, "n_layers": 4, "vocab_size": 8192}  # bench.peer_trl's middle GPT-2 shape


def models(quick: bool) -> list[tuple[str, object]]:
    out = [("small_lm", load_small_lm())]
    d, nl, v = (128, 2, 2048) if quick else (GPT2_SHAPE["d_model"], GPT2_SHAPE["n_layers"], GPT2_SHAPE["vocab_size"])
    cfg = ModelConfig(arch="gpt2", vocab_size=v, d_model=d, n_layers=nl, n_heads=d // 64,
                      max_seq_len=PROMPT_LEN + NEW_TOKENS, dtype="float32", param_dtype="float32")
    out.append((f"gpt2-shaped d={d} L={nl} V={v}", create_model(cfg, seed=0)))
    return out


def even_token_reward(prompt_ids, completion_ids, completion_mask):
    """Share of even token ids among the completion tokens (a cheap host reward; its value is irrelevant)."""
    m = np.asarray(completion_mask, np.float64)
    return ((np.asarray(completion_ids) % 2 == 0) * m).sum(-1) / np.maximum(m.sum(-1), 1.0)


def flops(cfg: ModelConfig, rows: int, seq: int, *, num_iterations: int = NUM_ITERATIONS) -> dict[str, float]:
    """Model FLOPs of one forward pass over ``[rows, seq]`` and of the GRPO step (2 forward passes +
    ``num_iterations`` forward + backward passes over every row)."""
    fwd = cfg.flops_per_token(seq) / 3.0 * rows * seq
    return {"forward": fwd, "step": 2 * fwd + num_iterations * 3 * fwd}


class Parts:
    """The jitted parts of one GRPO iteration for one model (built and compiled once)."""

    def __init__(self, name: str, model, seed: int = 0):
        self.name, self.cfg = name, model.cfg
        c = base_config()
        c.optim.lr, c.optim.schedule = 1e-5, "constant"
        tx, sched = make_optimizer(c.optim, 100)
        self.o = rl.PGOptions(algorithm="grpo", group_size=GROUP, num_iterations=NUM_ITERATIONS,
                              num_minibatches=NUM_MINIBATCHES, eps_low=0.2, eps_high=0.28, aggregation="dapo",
                              kl_coef=0.02, max_completion_length=NEW_TOKENS)
        rl.check_options(self.o, batch_size=PROMPTS, reference="frozen")
        self.graphdef, state = init_state(model, tx, seed=seed, reference=True)
        self.mesh = make_mesh(1, 1, 1)
        self.state = place_state(state, self.mesh)
        self.step = jit_step(rl.make_pg_step(self.graphdef, tx, self.o, sched), self.state, self.mesh)
        self.sampler = online.make_kv_sampler(self.graphdef, max_new_tokens=NEW_TOKENS, temperature=1.0,
                                              eos_id=None)
        self.greedy = online.make_kv_sampler(self.graphdef, max_new_tokens=NEW_TOKENS, greedy=True, eos_id=None)
        self.logps = jax.jit(partial(rl.token_logps, self.graphdef))
        self.forward = jax.jit(partial(logits_fn, self.graphdef))
        v = self.cfg.vocab_size

        def filt(z):
            return jax.lax.fori_loop(0, NEW_TOKENS, lambda i, x: jnp.maximum(filter_logits(x, 1.0), x - 1.0), z)

        self.filt = jax.jit(filt)
        rng = np.random.default_rng(seed)
        lo = 3 if v > 300 else 32  # small LM: printable bytes
        prompts = rng.integers(lo, min(v - 3, 127) if v < 300 else v - 3, (PROMPTS, PROMPT_LEN)).astype(np.int32)
        self.prompts = prompts
        self.p_ids, self.p_mask = online.repeat_prompts(
            {"prompt_ids": prompts, "prompt_attention_mask": np.ones_like(prompts)}, GROUP)
        self.logits = jnp.asarray(rng.standard_normal((PROMPTS * GROUP, v)), jnp.float32)
        self.key = jax.random.key(seed)
        self.n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.state.params))

    def run_sample(self):
        self.key, sub = jax.random.split(self.key)
        s = self.sampler(self.state.params, self.state.model_state, self.p_ids, self.p_mask, sub)
        self.samples = jax.block_until_ready(s)

    def run_greedy(self):
        s = self.greedy(self.state.params, self.state.model_state, self.p_ids, self.p_mask, self.key)
        jax.block_until_ready(s)

    def run_host(self):
        samples = {f: np.asarray(v) for f, v in self.samples.items()}
        rewards, _ = online.score_parts(even_token_reward, self.p_ids, samples)
        self.batch = rl.pg_batch(samples, rewards, reward_name="even_token_reward", group_size=GROUP)
        self.host_metrics = rl.sample_metrics(self.batch, GROUP, prompt_len=PROMPT_LEN, eos_id=-1)

    def run_step(self):
        # the state is not advanced: every repeat updates from the same parameters (same work)
        _, m = self.step(self.state, global_batch(self.batch, self.mesh))
        self.metrics = jax.device_get(m)

    def run_logps(self):
        b = self.batch
        jax.block_until_ready(self.logps(self.state.params, self.state.model_state, b["ids"], b["attention_mask"]))

    def run_forward(self):
        b = self.batch
        jax.block_until_ready(self.forward(self.state.params, self.state.model_state, b["ids"],
                                           b["attention_mask"]))

    def run_filter(self):
        jax.block_until_ready(self.filt(self.logits))


PARTS = ("sample", "host", "step", "logps", "forward", "filter", "greedy")


def row(p: Parts, med: dict[str, float], compile_s: dict[str, float], trl: dict[str, float] | None = None) -> dict:
    rows, seq = PROMPTS * GROUP, PROMPT_LEN + NEW_TOKENS
    f = flops(p.cfg, rows, seq)
    update = med["step"] - 2 * med["logps"]
    it = med["sample"] + med["host"] + med["step"]
    fwd_rate, sample_rate = f["forward"] / med["forward"], f["forward"] / med["sample"]
    return {"model": p.name, "params": p.n_params, "rows (B·G)": f"{PROMPTS}·{GROUP}", "prompt+new": f"{PROMPT_LEN}+{NEW_TOKENS}",
            "sample_s": med["sample"], "host_s": med["host"], "logps_pass_s": med["logps"],
            "update_s": update, "step_s": med["step"], "iteration_s": it,
            "sample_share": med["sample"] / it, "step_share": med["step"] / it,
            "sampled_tokens_per_s": rows * NEW_TOKENS / med["sample"],
            "forward_s": med["forward"], "forward_gflops_per_s": fwd_rate / 1e9,
            "sample_gflops_per_s": sample_rate / 1e9, "fwd_over_sample_rate": fwd_rate / sample_rate,
            "filter_logits_s": med["filter"], "filter_share_of_sample": med["filter"] / med["sample"],
            "greedy_sample_s": med["greedy"], "sample_over_greedy": med["sample"] / med["greedy"],
            "step_gflops_per_s": f["step"] / med["step"] / 1e9,
            "update_tokens_per_s": NUM_ITERATIONS * rows * seq / med["step"],
            "compile_s": sum(compile_s.values()),
            **({"trl_sample_s": trl["sample_s"], "trl_score_s": trl["score_s"], "trl_update_s": trl["update_s"],
                "trl_round_s": trl["round_s"], "trl_sample_over_jalign": trl["sample_s"] / med["sample"],
                "trl_round_over_jalign": trl["round_s"] / it} if trl else {})}


class Peer:
    """``bench.peer_trl_grpo`` in a child process (``python`` = an interpreter with torch, transformers, trl):
    ``round(name)`` runs one TRL sampling round of that model and returns its times."""

    def __init__(self, python: str, built: list[Parts], settings: dict, workdir: str):
        import json
        import subprocess
        import sys

        from jalign.models.checkpoints import SMALL_LM_DIR

        models = []
        for p in built:
            m = {"name": p.name, "prompts": p.prompts.tolist()}
            if p.name == "small_lm":
                m["path"] = str(SMALL_LM_DIR)
            else:
                m |= {"d_model": p.cfg.d_model, "n_layers": p.cfg.n_layers, "vocab_size": p.cfg.vocab_size}
            models.append(m)
        spec = os.path.join(workdir, "spec.json")
        with open(spec, "w") as f:
            json.dump({"settings": settings, "models": models}, f)
        self.log = open(os.path.join(workdir, "peer.log"), "w")  # noqa: SIM115 — closed in close()
        self.proc = subprocess.Popen([python or sys.executable, "-m", "bench.peer_trl_grpo", spec], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.info = self._read("ready")

    def _read(self, key: str) -> dict:
        import json

        for line in self.proc.stdout:  # the trainer prints its own dicts (not JSON) to stdout too
            if line.startswith("{\""):
                out = json.loads(line)
                if key in out:
                    return out
        raise RuntimeError(f"bench.peer_trl_grpo ended (exit {self.proc.wait()}); see its log {self.log.name}")

    def round(self, name: str) -> dict:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return self._read("round_s")

    def close(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a smaller GPT-2-shaped model, 2 rounds")
    ap.add_argument("--out", help="output JSON (default bench/results/grpo.json)")
    ap.add_argument("--peer", metavar="PYTHON", help="also run TRL's GRPOTrainer (bench.peer_trl_grpo) with this "
                    "interpreter (torch, transformers, trl installed), alternating with jalign's rounds")
    args = ap.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    t_start, load0 = time.perf_counter(), os.getloadavg()
    built, compile_s = [], {}
    for name, model in models(args.quick):
        p = Parts(name, model)
        c = {}
        for part in PARTS:  # first call: compile (+ one run)
            t0 = time.perf_counter()
            getattr(p, f"run_{part}")()
            c[part] = time.perf_counter() - t0
        compile_s[name] = c
        built.append(p)
        print(name, {k: round(v, 2) for k, v in c.items()}, flush=True)
    settings = {"prompts": PROMPTS, "group_size": GROUP, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
                "num_iterations": NUM_ITERATIONS, "num_minibatches": NUM_MINIBATCHES, "rounds": rounds,
                "dtype": "float32", "quick": args.quick}
    peer = trl_times = None
    tmp = tempfile.TemporaryDirectory()
    if args.peer:
        peer = Peer(args.peer, built, settings, tmp.name)
        for p in built:  # warm-up round (not timed)
            peer.round(p.name)
        trl_times = {p.name: {k: [] for k in ("sample_s", "score_s", "update_s", "round_s")} for p in built}
    times = {p.name: {part: [] for part in PARTS} for p in built}
    for r in range(rounds):
        for p in built:
            for part in PARTS:
                t0 = time.perf_counter()
                getattr(p, f"run_{part}")()
                times[p.name][part].append(time.perf_counter() - t0)
            if peer:
                for k, v in peer.round(p.name).items():
                    trl_times[p.name][k].append(v)
        print(f"round {r + 1}/{rounds}", {n: {k: round(v[-1], 3) for k, v in d.items()} for n, d in times.items()},
              flush=True)
    if peer:
        peer.close()
    tmp.cleanup()
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}  # noqa: E731
    rows = [row(p, med(times[p.name]), compile_s[p.name], med(trl_times[p.name]) if peer else None) for p in built]
    wall = time.perf_counter() - t_start
    payload = {
        "description": (
            f"One GRPO iteration of the online trainer (python -m bench.grpo): KV-cache sampling of G={GROUP} "
            f"completions for each of B={PROMPTS} prompts ({PROMPT_LEN} prompt + {NEW_TOKENS} new tokens, EOS "
            "off), host scoring, and the jitted rl.make_pg_step (old-policy and reference log-prob passes + "
            f"{NUM_ITERATIONS} iterations × {NUM_MINIBATCHES} minibatches of clipped AdamW updates, dapo, k3 KL), "
            "float32. update_s = step_s − 2·logps_pass_s. Baseline in the same run: one forward pass over the "
            "same [B·G, T] batch; fwd_over_sample_rate = forward FLOP rate / sampling FLOP rate (same model "
            "FLOPs) = sample_s / forward_s. filter_logits_s: the sampler's per-token logit transform alone, "
            "N times; greedy_sample_s: the same sampler with greedy=True (no filter_logits, no categorical draw). "
            "Medians of alternating rounds. "
            + ("TRL columns: GRPOTrainer (bench.peer_trl_grpo) on the same shapes and settings, a child process "
               "alternating with jalign's rounds: trl_sample_s its generate, trl_score_s reward + log-prob passes, "
               "trl_update_s its optimiser steps, trl_round_s all; ratios TRL / jalign (> 1: jalign faster)."
               if args.peer else "TRL's GRPOTrainer not run.")),
        "settings": settings,
        "rows": rows,
        "times": times,
        "compile_s": compile_s,
        "wall_s": wall,
        "load_average": [max(a, b) for a, b in zip(load0, os.getloadavg(), strict=True)],
        **({"trl_times": trl_times, "peer": peer.info} if peer else
           {"peer": "TRL's GRPOTrainer not run (no --peer PYTHON); no ratio to TRL"}),
        "versions": {"jax": jax.__version__, **(peer.info["versions"] if peer else {})},
    }
    path = write_result("grpo", payload, args.out)
    for r in rows:
        print(r)
    print(f"wrote {path} in {wall:.0f} s")
    return payload


if __name__ == "__main__":
    main()

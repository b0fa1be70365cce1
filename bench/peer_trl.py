"""jalign's DPO training step against TRL's ``DPOTrainer`` on the same GPT-2 shapes, data and precision.

What is timed (one optimiser step each, batch already in memory):

* **TRL**: the real ``trl.DPOTrainer`` (``loss_type="sigmoid"``, β = 0.1, reference model = frozen copy,
  ``precompute_ref_log_probs=False``, dropout disabled, AdamW, ``max_grad_norm=1``) driven by
  ``trainer.train()``; a ``TrainerCallback`` records the wall time from ``on_step_begin`` to ``on_step_end``
  of every step: policy forward on the 2B concatenated chosen/rejected rows, reference forward under
  ``no_grad``, loss, backward, gradient clipping, ``optimizer.step()``, scheduler, ``zero_grad`` and TRL's
  per-step metric bookkeeping. Batch loading/collation happens before ``on_step_begin`` and is excluded. The
  first step of every ``train()`` call is dropped (warm-up). ``bf16=True`` is the trainer's bf16 autocast
  (fp32 master weights); ``bf16=False`` is plain fp32.
* **jalign**: one ``jax.jit``-compiled step with donated parameter/optimiser buffers:
  ``jalign.models`` GPT-2 (same config) forward on the 2B rows, reference log-probs computed in the step
  from a frozen copy of the initial parameters (``stop_gradient``; like with like — no caching),
  response log-probs by ``CausalLM.sequence_logps`` (``ModelConfig.fused_logps``, the trainer's default: fused
  unembedding + log-softmax, no ``[B, T, V]`` logits; ``--ablate-flag fused_logps`` measures it against full
  logits + ``causal_sequence_logps``) + ``jalign.losses.get("sigmoid")`` (β = 0.1), gradients,
  ``optax.chain(clip_by_global_norm(1), adamw)``. bf16 = ``ModelConfig(dtype="bfloat16",
  param_dtype="float32")`` (fp32 master weights, bf16 activations/matmuls, float32 logits).

Shapes: GPT-2 (head dim 64), vocab 8192, 8 pairs per step (16 rows), every row ``seq`` tokens, prompt =
``seq // 4`` tokens, response = the rest (its last token EOS). TRL gets the same token ids as text over a
word-level tokenizer (``"t<id>"`` words), so both sides see identical ids and masks.

Repeats alternate in the same process: for each config and dtype, ``--rounds`` times: ``--steps`` jalign
steps, ``--steps`` jalign steps with cached reference log-probs (``jalign_cached_ref_s``: the reference
log-probs of each batch computed once beforehand and not timed, so the step has no reference forward; reported
separately and never part of the ratio), then one TRL ``train()`` of ``--steps + 1`` steps. Medians over all
timed steps; ratio = ``trl_s / jalign_s`` (> 1: jalign faster; like with like, reference forward included). The matmul peak (``jnp.dot`` of two n×n matrices, f32 and bf16
inputs with ``preferred_element_type=float32``, best of repeats) is measured in the same run, before and
after the configs (best kept). MFU of the jalign step = model FLOPs / step time / peak of its dtype, with
model FLOPs = policy fwd+bwd (``6 N_matmul + 12 L T d`` per token, ``ModelConfig.flops_per_token``) plus
the reference forward (a third of that) over the 2B·seq tokens.

    python -m bench.peer_trl --out bench/results/peer_trl.json [--quick] [--configs 128/2/128,...]

Needs torch (CPU), transformers and trl besides jalign's dependencies (the ``peer`` extra).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench.harness import cpu_info
from bench.model import matmul_peak
from jalign.losses import PairwiseLogps, causal_sequence_logps, get
from jalign.models import ModelConfig, create_model
from jalign.runtime import tune_host_allocator

VOCAB = 8192
PAIRS = 8
BETA = 0.1
LR = 1e-5
PAD_ID, EOS_ID = 0, 1
CONFIGS = ((128, 2, 128), (256, 4, 256), (512, 6, 256))


def make_data(seq: int, n_batches: int, seed: int = 0):
    """Token ids ``[n_batches, 2·PAIRS, seq]`` (rows 0..P-1 chosen, P..2P-1 rejected; a pair shares its prompt)
    and the response mask (1 from ``seq // 4`` on)."""
    rng = np.random.default_rng(seed)
    p = seq // 4
    prompts = rng.integers(2, VOCAB, (n_batches, PAIRS, p))
    chosen = rng.integers(2, VOCAB, (n_batches, PAIRS, seq - p))
    rejected = rng.integers(2, VOCAB, (n_batches, PAIRS, seq - p))
    chosen[..., -1] = EOS_ID
    rejected[..., -1] = EOS_ID
    ids = np.concatenate([np.concatenate([prompts, chosen], -1), np.concatenate([prompts, rejected], -1)], axis=1)
    mask = np.zeros(ids.shape, np.int32)
    mask[..., p:] = 1
    return ids.astype(np.int32), mask


# ----------------------------------------------------------------------------------------------- jalign


def jalign_cfg(n_embd, n_layer, seq, dtype, **kw) -> ModelConfig:
    return ModelConfig(arch="gpt2", vocab_size=VOCAB, d_model=n_embd, n_layers=n_layer, n_heads=n_embd // 64,
                       max_seq_len=seq, dtype=dtype, param_dtype="float32", **kw)


def _pair_logps_fn(cfg: ModelConfig, graphdef):
    """``(params, ids, mask) -> (chosen logps [P], rejected logps [P])`` on the trainer's path: the fused
    unembedding + log-softmax (``cfg.fused_logps``, no ``[B, T, V]`` logits) or full logits."""

    def seq_logps(p, ids, mask):
        m = nnx.merge(graphdef, p)
        if cfg.fused_logps:
            lp, _ = m.sequence_logps(ids, mask)
        else:
            lp, _ = causal_sequence_logps(m(ids).logits, ids, mask)
        return lp[:PAIRS], lp[PAIRS:]

    return seq_logps


def make_jalign_step(cfg: ModelConfig):
    """(step, state): ``step(params, opt_state, ref_params, ids, mask) -> (params, opt_state, loss)``, jitted,
    params and optimiser state donated."""
    model = create_model(cfg, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    ref_params = jax.tree.map(jnp.copy, params)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(LR, weight_decay=0.0))
    opt_state = tx.init(params)
    dpo = get("sigmoid")

    seq_logps = _pair_logps_fn(cfg, graphdef)

    def loss_fn(p, ref_p, ids, mask):
        c, r = seq_logps(p, ids, mask)
        rc, rr = jax.lax.stop_gradient(seq_logps(ref_p, ids, mask))
        return dpo(PairwiseLogps(c, r, rc, rr), beta=BETA).mean()

    def step(p, o, ref_p, ids, mask):
        loss, g = jax.value_and_grad(loss_fn)(p, ref_p, ids, mask)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, loss

    return jax.jit(step, donate_argnums=(0, 1)), {"p": params, "o": opt_state, "ref": ref_params}


def make_cached_ref_steps(cfg: ModelConfig):
    """The option the headline excludes: reference log-probs computed once per batch before training
    (``jalign.train.reference``'s caching), so the step has no reference forward.

    Returns ``(ref_fn, step, state)``: ``ref_fn(ref_params, ids, mask) -> (ref_chosen, ref_rejected)`` (jitted)
    and ``step(params, opt_state, ref_chosen, ref_rejected, ids, mask) -> (params, opt_state, loss)``."""
    model = create_model(cfg, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    ref_params = jax.tree.map(jnp.copy, params)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(LR, weight_decay=0.0))
    dpo = get("sigmoid")

    seq_logps = _pair_logps_fn(cfg, graphdef)

    def step(p, o, rc, rr, ids, mask):
        def loss_fn(p):
            c, r = seq_logps(p, ids, mask)
            return dpo(PairwiseLogps(c, r, rc, rr), beta=BETA).mean()

        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, loss

    return (jax.jit(seq_logps), jax.jit(step, donate_argnums=(0, 1)),
            {"p": params, "o": tx.init(params), "ref": ref_params})


def jalign_flops_per_step(cfg: ModelConfig, seq: int) -> float:
    """Policy fwd+bwd plus reference fwd over the 2·PAIRS rows."""
    return cfg.flops_per_token(seq) * (4.0 / 3.0) * 2 * PAIRS * seq


# ----------------------------------------------------------------------------------------------- memory


def _proc_status_kb(*keys: str) -> dict[str, int]:
    txt = Path("/proc/self/status").read_text()
    out = {}
    for line in txt.splitlines():
        k, _, v = line.partition(":")
        if k in keys:
            out[k] = int(v.split()[0])
    return out


class StepMemory:
    """Peak resident memory a step adds, by the Linux high-water mark of this process.

    ``begin()`` resets ``VmHWM`` to the current ``VmRSS`` (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)
    and records ``VmRSS``; ``end()`` reads ``VmHWM``: the step's peak = ``VmHWM - VmRSS(before)``, i.e. the
    memory newly touched while the step ran (activations, gradients, temporaries, allocator growth) on top
    of what was already resident (both frameworks' models, optimiser states, caches). Buffers an allocator
    kept from the previous step are not counted again, so this is a lower bound on the step's working set;
    jalign's exact figure is XLA's buffer assignment (``compiled.memory_analysis()``), reported separately.
    Unavailable (None) off Linux.
    """

    def __init__(self):
        self.ok = Path("/proc/self/clear_refs").exists()
        self.peaks_mb: list[float] = []
        self._rss = 0

    def begin(self):
        if self.ok:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.ok = False
                return
            self._rss = _proc_status_kb("VmRSS")["VmRSS"]

    def end(self):
        if self.ok:
            self.peaks_mb.append((_proc_status_kb("VmHWM")["VmHWM"] - self._rss) / 1024)

    @property
    def peak_mb(self):
        return max(self.peaks_mb) if self.peaks_mb else None


def xla_step_memory_mb(compiled) -> float | None:
    """XLA's buffer assignment for the compiled step: arguments + outputs + temporaries - aliased (donated)."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / 2**20


# ----------------------------------------------------------------------------------------------- TRL


class _Timer:
    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.mem.begin()
                timer.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer.t0)
                timer.mem.end()

        self.cb = CB()
        self.times: list[float] = []
        self.mem = StepMemory()


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({_word(i): i for i in range(VOCAB)}, unk_token=_word(PAD_ID)))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=_word(PAD_ID), eos_token=_word(EOS_ID),
                                   unk_token=_word(PAD_ID))


def _word(i: int) -> str:
    """Token id -> word of the word-level tokenizer (special words must not be substrings of others)."""
    return {PAD_ID: "<pad>", EOS_ID: "<eos>"}.get(int(i), f"t{int(i)}")


def make_trl(n_embd, n_layer, seq, bf16: bool, ids, mask, steps: int, workdir: str):
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=seq, n_embd=n_embd, n_layer=n_layer, n_head=n_embd // 64,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
                     pad_token_id=PAD_ID)
    model = GPT2LMHeadModel(cfg)
    ref_model = copy.deepcopy(model).eval()
    for q in ref_model.parameters():
        q.requires_grad_(False)
    p = seq // 4
    rows = {"prompt": [], "chosen": [], "rejected": []}
    words = lambda a: " ".join(_word(i) for i in a)  # noqa: E731
    import trl

    # TRL < 0.20 appends EOS to every completion itself: give it the responses without their final EOS
    end = -1 if tuple(int(x) for x in trl.__version__.split(".")[:2]) < (0, 20) else None
    for b in range(ids.shape[0]):
        for i in range(PAIRS):
            rows["prompt"].append(words(ids[b, i, :p]))
            rows["chosen"].append(" " + words(ids[b, i, p:end]))
            rows["rejected"].append(" " + words(ids[b, PAIRS + i, p:end]))
    args = DPOConfig(output_dir=workdir, per_device_train_batch_size=PAIRS, max_steps=steps, learning_rate=LR,
                     beta=BETA, loss_type=["sigmoid"] if end is None else "sigmoid", max_length=seq, bf16=bf16, fp16=False, use_cpu=True,
                     logging_steps=10**6, save_strategy="no", report_to="none", max_grad_norm=1.0,
                     dataloader_num_workers=0, disable_tqdm=True, seed=0, weight_decay=0.0,
                     lr_scheduler_type="constant")
    timer = _Timer()
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_dict(rows),
                         processing_class=word_tokenizer(), callbacks=[timer.cb])
    # identical tokens: the trainer's tokenised prompt/completions are exactly our ids
    ex = trainer.train_dataset[0]
    key = "prompt_ids" if "prompt_ids" in ex else "prompt_input_ids"  # TRL >= 0.20 / older
    got = list(ex[key]) + list(ex[key.replace("prompt", "chosen")])
    if got != ids[0, 0].tolist():
        raise RuntimeError(f"TRL tokenisation differs from the jalign ids: {got[:8]}... vs {ids[0, 0, :8]}...")
    return trainer, timer


# ----------------------------------------------------------------------------------------------- main


def time_jalign_steps(step, st, jids, jmask, steps: int, mem=None):
    """``steps`` jalign steps on batches ``1..steps`` (state ``st`` updated in place): (times, last loss)."""
    times, loss = [], None
    for i in range(steps):
        if mem is not None:
            mem.begin()
        t0 = time.perf_counter()
        st["p"], st["o"], loss = step(st["p"], st["o"], st["ref"], jids[i + 1], jmask[i + 1])
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
        if mem is not None:
            mem.end()
    return times, loss


def time_trl_steps(trainer, timer) -> list[float]:
    """One ``trainer.train()``: the step times after the first (warm-up) step."""
    timer.times.clear()
    trainer.train()
    return list(timer.times[1:])


def run_config(n_embd, n_layer, seq, dtype, rounds, steps, workdir, peaks, jalign_only=False, **cfg_kw):
    ids, mask = make_data(seq, steps + 1)
    cfg = jalign_cfg(n_embd, n_layer, seq, dtype, **cfg_kw)
    step, st = make_jalign_step(cfg)
    jids, jmask = jnp.asarray(ids), jnp.asarray(mask)
    t0 = time.perf_counter()
    step = step.lower(st["p"], st["o"], st["ref"], jids[0], jmask[0]).compile()  # AOT: also gives the memory plan
    xla_mb = xla_step_memory_mb(step)
    st["p"], st["o"], loss = step(st["p"], st["o"], st["ref"], jids[0], jmask[0])
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    # policy == reference at step 0, so the loss is log 2 up to the rounding of two differently fused forwards
    tol = 1e-3 if dtype == "float32" else 5e-2
    if not np.isfinite(float(loss)) or abs(float(loss) - np.log(2)) > tol:
        raise RuntimeError(f"jalign first DPO loss {float(loss)} != log 2 (tolerance {tol})")
    ref_fn, cstep, cst = make_cached_ref_steps(cfg)
    cached_refs = [ref_fn(cst["ref"], jids[i], jmask[i]) for i in range(steps + 1)]  # precomputed, not timed
    cst["p"], cst["o"], _ = cstep(cst["p"], cst["o"], *cached_refs[0], jids[0], jmask[0])
    trainer = timer = None
    if not jalign_only:
        trainer, timer = make_trl(n_embd, n_layer, seq, dtype == "bfloat16", ids, mask, steps + 1, workdir)
    j_times, t_times, c_times, jmem = [], [], [], StepMemory()
    for _ in range(rounds):
        ts, loss = time_jalign_steps(step, st, jids, jmask, steps, jmem)
        j_times += ts
        for i in range(steps):
            t0 = time.perf_counter()
            cst["p"], cst["o"], closs = cstep(cst["p"], cst["o"], *cached_refs[i + 1], jids[i + 1], jmask[i + 1])
            closs.block_until_ready()
            c_times.append(time.perf_counter() - t0)
        if trainer is not None:
            t_times += time_trl_steps(trainer, timer)
    j = statistics.median(j_times)
    row = {"n_embd": n_embd, "n_layer": n_layer, "seq": seq, "dtype": dtype, "jalign_s": j,
           "trl_s": statistics.median(t_times) if t_times else None}
    row["ratio"] = row["trl_s"] / j if t_times else None
    flops = jalign_flops_per_step(cfg, seq)
    row.update({"jalign_s_min": min(j_times), "trl_s_min": min(t_times) if t_times else None,
                "jalign_times": j_times, "trl_times": t_times, "jalign_compile_s": compile_s,
                "jalign_model_gflops_per_step": flops / 1e9,
                "jalign_mfu": flops / j / (max(peaks[dtype]) * 1e9),
                "trl_mfu": flops / row["trl_s"] / (max(peaks[dtype]) * 1e9) if t_times else None,
                "jalign_step_peak_rss_mb": jmem.peak_mb, "jalign_xla_step_memory_mb": xla_mb,
                "trl_step_peak_rss_mb": timer.mem.peak_mb if timer is not None else None,
                "jalign_cached_ref_s": statistics.median(c_times), "jalign_cached_ref_times": c_times,
                "jalign_loss_last": float(loss), "load_average_1m": os.getloadavg()[0], **({"model_kw": cfg_kw} if cfg_kw else {})})
    return row


def ablate(configs, rounds: int, steps: int, dtypes=("bfloat16",), flag: str = "mixed_matmul") -> list[dict]:
    """jalign only: ``ModelConfig(flag=False)`` vs ``flag=True`` (e.g. plain einsum + autodiff vs
    ``mixed_matmul``), everything else at its default, alternating steps in one process."""
    rows = []
    for (n_embd, n_layer, seq), dtype in ((c, d) for c in configs for d in dtypes):
        ids, mask = make_data(seq, steps)
        jids, jmask = jnp.asarray(ids), jnp.asarray(mask)
        variants = {"off": {flag: False}, "on": {flag: True}}
        built = {}
        for name, kw in variants.items():
            cfg = jalign_cfg(n_embd, n_layer, seq, dtype, **kw)
            step, st = make_jalign_step(cfg)
            st["p"], st["o"], loss = step(st["p"], st["o"], st["ref"], jids[0], jmask[0])
            loss.block_until_ready()
            built[name] = (step, st, [])
        for _ in range(rounds):
            for step, st, times in built.values():
                for i in range(steps):
                    t0 = time.perf_counter()
                    st["p"], st["o"], loss = step(st["p"], st["o"], st["ref"], jids[i], jmask[i])
                    loss.block_until_ready()
                    times.append(time.perf_counter() - t0)
        row = {"n_embd": n_embd, "n_layer": n_layer, "seq": seq, "dtype": dtype,
               **{f"{k}_s": statistics.median(v[2]) for k, v in built.items()},
               **{f"{k}_times": v[2] for k, v in built.items()}, "load_average_1m": os.getloadavg()[0]}
        row["flag"] = flag
        row["speedup"] = row["off_s"] / row["on_s"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_times")}), flush=True)
    return rows


def markdown_table(d: dict) -> str:
    """The results table (markdown) from a ``peer_trl`` JSON."""
    pk = d["matmul_peak_gflops"]

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = ["| n_embd | layers | seq | dtype | jalign s/step | TRL s/step | ratio TRL/jalign | jalign MFU | TRL MFU "
             "| jalign step MB (RSS / XLA plan) | TRL step MB (RSS) | jalign s/step, cached ref |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["configs"]:
        trl_mfu = r.get("trl_mfu")
        lines.append(
            f"| {r['n_embd']} | {r['n_layer']} | {r['seq']} | {r['dtype']} | {r['jalign_s']:.3f} | {f(r['trl_s'], '.3f')} "
            f"| {f(r['ratio'], '.2f')} | {100 * r['jalign_mfu']:.1f}% | {f(None if trl_mfu is None else 100 * trl_mfu, '.1f')}"
            f"{'' if trl_mfu is None else '%'} | {f(r.get('jalign_step_peak_rss_mb'), '.0f')} / "
            f"{f(r.get('jalign_xla_step_memory_mb'), '.0f')} | {f(r.get('trl_step_peak_rss_mb'), '.0f')} "
            f"| {f(r.get('jalign_cached_ref_s'), '.3f')} |")
    lines.append("")
    lines.append(f"Matmul peak measured in the same run: {pk['float32']:.0f} GFLOP/s float32, "
                 f"{pk['bfloat16']:.0f} GFLOP/s bfloat16 (f32 accumulation). Versions: "
                 + ", ".join(f"{k} {v}" for k, v in d.get("versions", {}).items()) + ".")
    if d.get("host_allocator_tuned"):
        lines.append("Host allocator tuned for the whole process, both frameworks (`jalign.runtime.tune_host_allocator`): "
                     "buffers freed by the previous step are reused, so the RSS columns count only memory a step "
                     "touches beyond them (a lower bound); XLA's plan is jalign's exact step memory.")
    return "\n".join(lines)


def main(argv=None) -> int:
    # Before any JAX computation; both frameworks run in this process, so the setting applies to both.
    host_allocator = tune_host_allocator()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON to write")
    ap.add_argument("--table", metavar="JSON", help="print the markdown table of an existing result and exit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round (TRL: +1 warm-up per train())")
    ap.add_argument("--configs", default=",".join(f"{a}/{b}/{c}" for a, b, c in CONFIGS),
                    help="n_embd/n_layer/seq,...")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 steps")
    ap.add_argument("--matmul-n", type=int, default=1024)
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--plain-matmul", action="store_true",
                    help="jalign with ModelConfig(mixed_matmul=False): plain einsum + autodiff (recorded as model_kw)")
    ap.add_argument("--ablate", action="store_true",
                    help="jalign only (no torch needed): ModelConfig(FLAG=False) vs True, same run")
    ap.add_argument("--ablate-flag", default="mixed_matmul", help="boolean ModelConfig field for --ablate")
    args = ap.parse_args(argv)
    args.host_allocator_tuned = host_allocator
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return 0
    if not args.out:
        ap.error("--out is required")
    configs = [tuple(int(x) for x in spec.split("/")) for spec in args.configs.split(",")]
    if args.ablate:
        rows = ablate(configs, args.rounds, args.steps, args.dtypes.split(","), args.ablate_flag)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"ablation": rows, "host_allocator_tuned": host_allocator,
                                              "cpu": cpu_info(), "time": time.strftime("%Y-%m-%d %H:%M:%S")},
                                             indent=2))
        return 0
    if args.quick:
        args.rounds, args.steps = 1, 2
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    peaks = {"float32": [], "bfloat16": []}

    def measure_peaks():
        for dt in peaks:
            peaks[dt].append(matmul_peak(args.matmul_n, jnp.dtype(dt), 5) / 1e9)

    measure_peaks()
    rows = []
    workdir = tempfile.mkdtemp(prefix="peer_trl_")  # TRL's output_dir (nothing is saved)
    for n_embd, n_layer, seq in configs:
        for dtype in args.dtypes.split(","):
            kw = {"mixed_matmul": False} if args.plain_matmul else {}
            r = run_config(n_embd, n_layer, seq, dtype, args.rounds, args.steps, workdir, peaks, **kw)
            rows.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                              if not k.endswith("_times")}), flush=True)
            _write(args.out, _payload(rows, peaks, args))  # partial results survive a later failure
    measure_peaks()
    _write(args.out, _payload(rows, peaks, args))
    print(args.out)
    return 0


def _payload(rows, peaks, args) -> dict:
    import torch
    import transformers
    import trl

    for r in rows:  # MFU against the best peak of the whole run
        r["jalign_mfu"] = r["jalign_model_gflops_per_step"] / r["jalign_s"] / max(peaks[r["dtype"]])
        if r["trl_s"]:
            r["trl_mfu"] = r["jalign_model_gflops_per_step"] / r["trl_s"] / max(peaks[r["dtype"]])
    return {
        "configs": rows,
        "matmul_peak_gflops": {dt: max(v) for dt, v in peaks.items()},
        "matmul_peak_gflops_all": peaks,
        "matmul_n": args.matmul_n,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__, "torch_threads": torch.get_num_threads()},
        "host_allocator_tuned": getattr(args, "host_allocator_tuned", None),  # jalign.runtime.tune_host_allocator
        "cpu": cpu_info(),
        "load_average": os.getloadavg(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _write(out, payload: dict) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())

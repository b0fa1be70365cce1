"""The training loop: config → model, data, objective, jitted sharded step, checkpoints, metrics.

``train(cfg)`` runs every mode (SFT, offline preference optimisation, online sampling + scoring). Tests and
library users may inject a ``model``, ``source``, ``reward_fn`` or ``loss`` object instead of registry names.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jalign import losses
from jalign.errors import UserError
from jalign.tokenizers import ByteTokenizer
from jalign.train import distributed, online, pairwise, plugins, rl
from jalign.train import sharding as shd
from jalign.train.checkpoint import Checkpointer
from jalign.train.export import check_export_target, export_model
from jalign.train.metrics import MetricsLogger
from jalign.train.objectives import check_batch, make_objective
from jalign.train.plugins.models import as_reward_model, is_causal_lm, is_reward_model
from jalign.train.probes import ProbeRunner, nll_probe, reward_probe
from jalign.train.reference import make_reference_fn
from jalign.train.step import init_state, jit_step, make_optimizer, make_train_step, place_state
from jalign.train.workdir import WorkdirLock, open_run, trim_jsonl

log = logging.getLogger("jalign.train")


class NonFiniteError(FloatingPointError):
    """Training stopped on a non-finite loss or gradient; the offending update was not applied."""

    def __init__(self, step: int, quantities: list[str], last_checkpoint: int | None, directory: str | None):
        self.step, self.quantities, self.last_checkpoint = step, quantities, last_checkpoint
        where = (f"last good checkpoint: step {last_checkpoint} in {directory}" if last_checkpoint is not None
                 else "no checkpoint was written")
        super().__init__(f"non-finite {' and '.join(quantities)} at step {step}; the update was not applied "
                         f"and training stopped ({where})")


@dataclasses.dataclass
class TrainResult:
    state: Any
    history: list[dict]
    graphdef: Any
    mesh: Any
    start_step: int
    final_step: int
    probes: list[dict] = dataclasses.field(default_factory=list)
    message: str = ""  # e.g. why nothing was trained (a finished run)


def train(cfg, *, model=None, source=None, reward_fn=None, loss=None, probes=None) -> TrainResult:
    """Run ``cfg`` (see :func:`jalign.train.config.base_config`); returns the final state and the history.

    ``probes`` (see :mod:`jalign.train.probes`) are evaluated on the state at the start, every ``probe.every``
    updates and at the end; their scalars join the logged metrics, their records ``TrainResult.probes`` and
    ``workdir/probes.jsonl``.

    Raises:
      ConfigError: resuming a workdir whose run was made with other defining keys (model, loss, data, seed,
        optim, mode, online; listed with old → new values), or ``checkpoint.resume=False`` over a workdir
        with checkpoints without ``checkpoint.fresh=True`` (docs/training.md, "The workdir lifecycle").
      WorkdirBusyError: another live run holds ``cfg.workdir`` (its lock file ``.lock`` names pid and host).
      NonFiniteError: a non-finite loss or gradient norm (training stops; checkpoints stay as they were).
    """
    distributed.initialize(cfg.distributed.coordinator, cfg.distributed.num_processes,
                           cfg.distributed.process_id)
    is_main = jax.process_index() == 0
    if cfg.train.export:  # the export target is checked before anything is written (the workdir included)
        check_export_target(Path(cfg.train.export), cfg.workdir or None)
    # One run per workdir: process 0 holds workdir/.lock for the whole run (released on exit, also on a crash).
    lock = WorkdirLock(cfg.workdir).acquire() if cfg.workdir and is_main else None
    try:
        return _train(cfg, model=model, source=source, reward_fn=reward_fn, loss=loss, probes=probes)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, *, model, source, reward_fn, loss, probes) -> TrainResult:
    pi, pc = jax.process_index(), jax.process_count()
    is_main = pi == 0
    workdir = Path(cfg.workdir) if cfg.workdir else None
    # Fresh, resume, finished or refused (a changed config, resume=False over a used workdir): decided before
    # anything is built, so a refusal is immediate (jalign.train.workdir.open_run).
    plan = open_run(cfg, workdir, is_main=is_main, sync=_barrier if pc > 1 else lambda name: None) if workdir else None
    mesh = shd.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.batch_size % ways or (cfg.data.batch_size // pc) % max(1, ways // pc):
        raise UserError(f"data.batch_size={cfg.data.batch_size} is not divisible by the batch-parallel devices "
                        f"mesh.data*mesh.fsdp={ways} ({pc} process(es)); change data.batch_size or the mesh")
    # The loss is resolved and validated once ("logic:<name>" → compiled logic loss); objectives use it as is.
    pair = (pairwise.PairOptions.from_config(cfg.online)
            if cfg.mode == "online" and cfg.online.algorithm in pairwise.PAIR_ALGORITHMS else None)
    if pair is not None:
        if pc > 1:
            raise UserError(f"online.algorithm={pair.algorithm!r} runs in a single process (got {pc})")
        pairwise.check_options(pair, loss_name=cfg.loss.name if loss is None else loss,
                               loss_hparams=dict(cfg.loss.hparams), reference=cfg.loss.reference,
                               mitigation=cfg.loss.mitigation)
    pg = (rl.PGOptions.from_config(cfg.online)
          if cfg.mode == "online" and cfg.online.algorithm and pair is None else None)
    if pg is not None:
        rl.check_options(pg, batch_size=cfg.data.batch_size, reference=cfg.loss.reference,
                         accum_steps=cfg.optim.accum_steps)
    bound = None if cfg.mode in ("sft", "reward") or pg is not None or pair is not None else losses.bind(
        cfg.loss.name if loss is None else loss, **dict(cfg.loss.hparams))
    spec = None if bound is None else bound.spec

    if model is None:
        model = plugins.make_model(cfg.model.name, seed=cfg.seed, **dict(cfg.model.kwargs))
    if pg is not None and pg.algorithm == "ppo":  # the policy and its critic, one parameter tree
        model = rl.with_value_head(model, seed=cfg.seed)
    if cfg.mode == "reward":  # a causal LM gets a fresh scalar head (its unembedding is dropped)
        model = as_reward_model(model, seed=cfg.seed)
    if source is None:
        source = plugins.make_data(cfg.data.name, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len,
                                   seed=cfg.seed, process_index=pi, process_count=pc, **dict(cfg.data.kwargs))
    if cfg.train.export:  # fail before training, not after
        if not (is_causal_lm(rl.policy_of(model)) or is_reward_model(model)):
            raise UserError(f"train.export: only jalign.models.CausalLM / RewardModel models can be exported, got "
                            f"{type(model).__name__}")
    probes = list(probes or [])
    if cfg.eval.every and cfg.mode == "reward":  # held-out pairs: the source with data.kwargs | eval.data_kwargs
        held_out = plugins.make_data(cfg.data.name, batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len,
                                     seed=cfg.seed, process_index=pi, process_count=pc,
                                     **{**dict(cfg.data.kwargs), **dict(cfg.eval.data_kwargs)})
        probes.append(reward_probe([next(held_out) for _ in range(cfg.eval.batches)], every=cfg.eval.every,
                                   name="eval", **dict(cfg.reward_model)))
    elif cfg.eval.every:  # held-out next-token loss (e.g. pretraining on text_windows)
        if not hasattr(source, "eval_batches"):
            raise UserError(f"eval.every={cfg.eval.every}: data source {cfg.data.name!r} has no held-out batches "
                             "(eval_batches); set eval.every=0")
        probes.append(nll_probe(source.eval_batches(cfg.eval.batches), every=cfg.eval.every, name="eval"))
    hparams = dict(cfg.reward_model) if cfg.mode == "reward" else None
    if pg is not None:
        objective = rl.PGBatch()
        frozen = pg.needs_reference
    elif pair is not None:
        objective = pairwise.make_objective(pair, cfg.loss.name if loss is None else loss, dict(cfg.loss.hparams))
        frozen = True
    else:
        objective = make_objective(cfg.mode, bound, hparams, mitigation=cfg.loss.mitigation,
                                   reference=cfg.loss.reference)
        frozen = cfg.mode not in ("sft", "reward") and cfg.loss.reference == "frozen" and spec.needs_reference
    tx, schedule = make_optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = init_state(model, tx, seed=cfg.seed, reference=frozen)
    if spec is not None and cfg.loss.reference == "cached" and spec.needs_reference:
        if not hasattr(source, "add_fields"):
            raise UserError("loss.reference='cached' needs reference log-prob fields in the batches; this data "
                             "source cannot add them (precompute with jalign.train.reference) — or use 'frozen'")
        source.add_fields(make_reference_fn(graphdef, state.params, state.model_state, spec.kind))
    rules = dict(cfg.mesh.rules)
    state = place_state(state, mesh, rules)
    if pg is not None:
        pure_step = rl.make_pg_step(graphdef, tx, pg, schedule)
    else:
        pure_step = make_train_step(graphdef, objective, tx, schedule, accum_steps=cfg.optim.accum_steps)
    step_fn = jit_step(pure_step, state, mesh, donate=jax.default_backend() != "cpu", rules=rules)
    sampler = reward = None
    if cfg.mode == "online":
        make = online.make_kv_sampler if is_causal_lm(rl.policy_of(model)) else online.make_sampler
        sampler = make(graphdef, max_new_tokens=cfg.online.max_new_tokens, temperature=cfg.online.temperature,
                       mixture_beta=float(cfg.online.mixture_beta))
        reward = reward_fn or plugins.check_reward(cfg.online.reward, dict(cfg.online.reward_kwargs))

    ckpt = None
    start = 0
    if workdir and cfg.checkpoint.enabled:
        ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
        if plan.resume_steps:
            state, data_state = _restore_newest_intact(ckpt, plan, state, workdir, is_main)
            source.set_state(data_state)
            start = int(state.step)
    if workdir and start == cfg.train.steps:
        ckpt.close()
        msg = (f"workdir {workdir}: run {plan.run_id} is already finished at step {start} (train.steps="
               f"{cfg.train.steps}); nothing was trained. Raise train.steps to continue it")
        log.warning(msg)
        return TrainResult(state=state, history=[], graphdef=graphdef, mesh=mesh, start_step=start,
                           final_step=start, message=msg)
    if workdir and is_main:
        (workdir / "config.json").write_text(cfg.to_json(indent=2))
        dropped = trim_jsonl(workdir / "metrics.jsonl", start)  # rows an interrupted run logged after `start`
        if dropped:
            log.info("workdir %s: dropped %d metrics rows after step %d (resumed from its checkpoint)",
                     workdir, dropped, start)
    logger = MetricsLogger(workdir, tensorboard=cfg.train.tensorboard, is_main=is_main)
    meta = {"config": json.loads(cfg.to_json()), "process_count": pc, "run_id": plan.run_id if plan else None}
    bar = tqdm(total=cfg.train.steps, initial=start, disable=not (cfg.train.progress and is_main),
               dynamic_ncols=True, desc=f"{cfg.mode}")
    step = start
    runner = ProbeRunner(probes, workdir, is_main=is_main, start=start)
    final = cfg.train.steps
    if runner.probes and start < final:
        init = runner(start, graphdef, state, start=start, final=final)
        if init:
            logger.log(start, init)
    try:
        for step in range(start + 1, cfg.train.steps + 1):
            t0 = time.perf_counter()
            local = next(source)
            host_metrics = {}
            if sampler is not None and pair is not None:
                key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0x5A)
                local, host_metrics = pairwise.sample_round(
                    pair, sampler, reward, state.params, state.ref_params, state.model_state,
                    np.asarray(local["prompt_ids"]), np.asarray(local["prompt_attention_mask"]), key,
                    reward_kwargs=dict(cfg.online.reward_kwargs))
            elif sampler is not None and pg is not None:
                local, host_metrics = _pg_batch(cfg, sampler, reward, state, local, mesh)
            elif sampler is not None:  # reward/<component> of a combined reward
                local, host_metrics = _online_batch(cfg, spec, sampler, reward, state, local, mesh)
            check_batch(objective, local, where=f"step {step} batch (process {pi})")
            state_new, m = step_fn(state, shd.global_batch(local, mesh))
            m = {k: float(v) for k, v in jax.device_get(m).items()} | host_metrics
            m["step_time_s"] = time.perf_counter() - t0
            bad = [q for q, f in (("loss", "finite/loss"), ("gradients", "finite/grads")) if not m[f]]
            if bad:
                logger.log(step, m)
                if ckpt:
                    ckpt.wait()
                raise NonFiniteError(step, bad, ckpt.latest_step() if ckpt else None,
                                     str(ckpt.directory) if ckpt else None)
            state = state_new
            probed = runner(step, graphdef, state, start=start, final=final)
            m.update(probed)
            if probed or step % cfg.train.log_every == 0 or step == cfg.train.steps:
                logger.log(step, m)
                bar.set_postfix(loss=f"{m['loss']:.4f}", refresh=False)
            bar.update(1)
            if ckpt and ((cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or step == cfg.train.steps):
                ckpt.save(step, state, source.get_state(), {**meta, "step": step})
            if step == cfg.debug.exit_after_step:
                os._exit(17)  # simulated crash (tests): no cleanup, async saves may be unfinished
    finally:
        bar.close()
        runner.close()
        logger.close()
        if ckpt:
            ckpt.close()
    if cfg.train.export:
        export_model(graphdef, state, cfg.train.export, is_main=is_main, workdir=cfg.workdir or None)
    return TrainResult(state=state, history=logger.history, graphdef=graphdef, mesh=mesh, start_step=start,
                       final_step=int(state.step), probes=runner.records)


def _restore_newest_intact(ckpt, plan, like, workdir, is_main):
    """Restore the newest checkpoint of ``plan.resume_steps`` that restores; damaged newer ones (a restore
    that raises: truncated or missing files) are named in a warning and moved to
    ``workdir/archive/<run id>/damaged/<step>`` so that the run can save those steps again."""
    damaged = []
    for s in plan.resume_steps:
        try:
            state, data_state, _ = ckpt.restore(s, like=like)
        except Exception as e:  # noqa: BLE001 — the files on disk are outside our control; any failure = damaged
            first = (str(e).strip().splitlines() or [""])[0][:300]
            log.warning("workdir %s: checkpoint step %d in %s is damaged and cannot be restored (%s: %s); "
                        "falling back to the previous checkpoint", workdir, s, ckpt.directory, type(e).__name__,
                        first)
            damaged.append(s)
            continue
        if damaged:
            if is_main:
                dest = workdir / "archive" / plan.run_id / "damaged"
                dest.mkdir(parents=True, exist_ok=True)
                for d in damaged:
                    shutil.move(str(ckpt.directory / str(d)), str(dest / str(d)))
                log.warning("workdir %s: resuming from step %d; damaged checkpoint(s) %s moved to %s", workdir, s,
                            damaged, dest)
            ckpt.reload()
        return state, data_state
    raise UserError(f"workdir {workdir}: every checkpoint of run {plan.run_id} is damaged (steps {damaged} in "
                    f"{ckpt.directory}); start a new run with checkpoint.resume=False checkpoint.fresh=True")


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _online_batch(cfg, spec, sampler, reward, state, local, mesh):
    """Sample K completions per (process-local) prompt with the current policy and score them; return the batch
    and the metrics of the reward's parts (``reward/<part>``: a combined reward's components)."""
    k = cfg.online.num_samples
    p_ids, p_mask = online.repeat_prompts(local, k)
    g = shd.global_batch({"ids": p_ids, "mask": p_mask}, mesh)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0x5A)
    samples = sampler(state.params, state.model_state, g["ids"], g["mask"], key)
    samples = {f: distributed.local_rows(v) for f, v in samples.items()}
    rewards, parts = online.score_parts(reward, p_ids, samples, **dict(cfg.online.reward_kwargs))
    return online.build_batch(spec.kind, samples, rewards, k), online.part_metrics(parts)


def _pg_batch(cfg, sampler, reward, state, local, mesh):
    """The clipped policy-gradient batch (``[B·G, T]`` + ``rewards``) and its host metrics (lengths, rewards)."""
    k = cfg.online.num_samples
    p_ids, p_mask = online.repeat_prompts(local, k)
    g = shd.global_batch({"ids": p_ids, "mask": p_mask}, mesh)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0x5A)
    samples = sampler(state.params, state.model_state, g["ids"], g["mask"], key)
    samples = {f: distributed.local_rows(v) for f, v in samples.items()}
    rewards, parts = online.score_parts(reward, p_ids, samples, **dict(cfg.online.reward_kwargs))
    name = getattr(reward, "__name__", None) or str(cfg.online.reward)
    batch = rl.pg_batch(samples, rewards, reward_name=name, group_size=k)
    metrics = rl.sample_metrics(batch, k, prompt_len=p_ids.shape[1], eos_id=ByteTokenizer.eos_id)
    return batch, metrics | online.part_metrics(parts)


def summarize(history: list[dict]) -> dict:
    """First/last loss and step count of a history (for the CLI). A row without a loss (the probes' row at
    the start, before any update) counts as logged; the losses are those of the first and last updates."""
    if not history:
        return {}
    trained = [h for h in history if "loss" in h]
    out = {"steps_logged": len(history)}
    if trained:
        out |= {"first_loss": trained[0]["loss"], "last_loss": trained[-1]["loss"]}
    out["last"] = {k: v for k, v in history[-1].items() if isinstance(v, float) and np.isfinite(v)}
    return out

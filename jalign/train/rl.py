"""The clipped policy-gradient step of ``mode="online"`` with ``online.algorithm`` set (GRPO, RLOO, REINFORCE++).

One trainer step = one sampling round: the loop samples G = ``online.num_samples`` completions per prompt
and scores them on the host (:func:`pg_batch`); the jitted step (:func:`make_pg_step`) then

1. computes the per-token log-probs of the sampling policy (``old_logps``, the current parameters, no
   gradient), its per-token entropy, and — when a KL term is configured — the frozen reference's per-token
   log-probs, all once;
2. computes the advantages of ``algorithm`` (:func:`advantages`);
3. runs ``num_iterations`` × ``num_minibatches`` optimiser updates on :func:`jalign.losses.policy_clip` with
   those fixed ``old_logps`` / reference log-probs / advantages (a ``lax.scan``; minibatch j = rows
   j·N/M … (j+1)·N/M − 1 of the N = B·G samples, groups stay together when G divides N/M).

Log-probs and entropies are those of ``softmax(logits / temperature)``, the distribution sampled from (as
TRL does). If any update's loss or gradient norm is non-finite, the state is left as it was before the step
and ``finite/loss`` / ``finite/grads`` say which (the loop then stops with ``NonFiniteError``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign import losses
from jalign.divergences import kl_estimate
from jalign.errors import UserError
from jalign.train.batch import SEQ
from jalign.train.step import TrainState, logits_fn

ALGORITHMS = ("grpo", "rloo", "reinforce++", "reinforce++_baseline")
KL_PENALTIES = ("auto", "loss", "reward")
KL_ESTIMATORS = ("k1", "k2", "k3")
# Where the KL term goes when online.kl_penalty="auto": GRPO puts k3 in the loss (TRL); RLOO and REINFORCE++
# subtract β·KL from the reward (TRL's RLOO, OpenRLHF).
DEFAULT_KL_PENALTY = {"grpo": "loss", "rloo": "reward", "reinforce++": "reward", "reinforce++_baseline": "reward"}


@dataclasses.dataclass(frozen=True)
class PGOptions:
    """The options of the clipped policy-gradient step (config keys ``online.*`` of the same names)."""

    algorithm: str = "grpo"
    group_size: int = 2  # online.num_samples
    num_iterations: int = 1
    num_minibatches: int = 1
    eps_low: float = 0.2
    eps_high: float = 0.2
    aggregation: str = "grpo"
    importance_level: str = "token"
    scale_rewards: str = "group"
    kl_coef: float = 0.0
    kl_penalty: str = "auto"
    kl_estimator: str = "k1"  # of the KL penalty in the reward (the loss term is always k3, TRL's GRPO)
    max_completion_length: int = 8  # online.max_new_tokens: the "dr_grpo" normaliser
    temperature: float = 1.0

    @property
    def kl_in(self) -> str:
        """``"loss"`` or ``"reward"``: where the KL term goes."""
        return DEFAULT_KL_PENALTY[self.algorithm] if self.kl_penalty == "auto" else self.kl_penalty

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    @classmethod
    def from_config(cls, online) -> PGOptions:
        keys = [f.name for f in dataclasses.fields(cls) if f.name not in ("group_size", "max_completion_length")]
        return cls(group_size=int(online.num_samples), max_completion_length=int(online.max_new_tokens),
                   **{k: online[k] for k in keys})


def check_options(o: PGOptions, *, batch_size: int, reference: str, accum_steps: int = 1) -> None:
    """The rules of the ``online.*`` keys of the clipped policy-gradient modes; ``UserError`` naming the key.

    ``batch_size`` is ``data.batch_size`` (prompts), ``reference`` is ``loss.reference``."""

    def need(ok, key, value, what):
        if not ok:
            raise UserError(f"config {key}={value!r} must be {what}")

    need(o.algorithm in ALGORITHMS, "online.algorithm", o.algorithm, f"one of {ALGORITHMS} (or '' for loss.name)")
    need(o.aggregation in losses.rl.AGGREGATIONS, "online.aggregation", o.aggregation,
         f"one of {losses.rl.AGGREGATIONS}")
    need(o.importance_level in losses.rl.IMPORTANCE_LEVELS, "online.importance_level", o.importance_level,
         f"one of {losses.rl.IMPORTANCE_LEVELS}")
    need(o.scale_rewards in losses.rl.SCALES, "online.scale_rewards", o.scale_rewards, f"one of {losses.rl.SCALES}")
    need(o.kl_penalty in KL_PENALTIES, "online.kl_penalty", o.kl_penalty, f"one of {KL_PENALTIES}")
    need(o.kl_estimator in KL_ESTIMATORS, "online.kl_estimator", o.kl_estimator, f"one of {KL_ESTIMATORS}")
    for key, v, ok, what in (("eps_low", o.eps_low, 0 < o.eps_low < 1, "in (0, 1)"),
                             ("eps_high", o.eps_high, o.eps_high > 0, "> 0"),
                             ("kl_coef", o.kl_coef, o.kl_coef >= 0, ">= 0"),
                             ("temperature", o.temperature, o.temperature > 0, "> 0")):
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and ok, f"online.{key}", v,
             f"a finite number {what}")
    need(isinstance(o.num_iterations, int) and o.num_iterations >= 1, "online.num_iterations", o.num_iterations,
         "an integer >= 1")
    need(isinstance(o.num_minibatches, int) and o.num_minibatches >= 1, "online.num_minibatches",
         o.num_minibatches, "an integer >= 1")
    g = o.group_size
    if o.algorithm == "rloo" or (o.algorithm == "grpo" and o.scale_rewards == "group"):
        need(g >= 2, "online.num_samples", g, f">= 2 for online.algorithm={o.algorithm!r}"
             + (" with online.scale_rewards='group' (the group's std)" if o.algorithm == "grpo" else
                " (a leave-one-out baseline needs another sample)"))
    n = batch_size * g
    if n % o.num_minibatches:
        raise UserError(f"config online.num_minibatches={o.num_minibatches} does not divide the {n} samples of a "
                        f"step (data.batch_size={batch_size} prompts × online.num_samples={g})")
    if accum_steps != 1:
        raise UserError(f"config optim.accum_steps={accum_steps}: online.algorithm={o.algorithm!r} updates on "
                        "minibatches instead; set optim.accum_steps=1 and use online.num_minibatches")
    if o.needs_reference and reference not in ("frozen",):
        raise UserError(f"config online.kl_coef={o.kl_coef} needs the frozen reference (loss.reference='frozen'; "
                        f"its log-probs are computed once per sampling round), got loss.reference={reference!r}")


def token_logps(graphdef, params, model_state, ids, attention_mask, *, temperature: float = 1.0):
    """``(logps, entropy)``, both ``[N, T−1]``: log-prob of token t+1 and the entropy of the next-token
    distribution at t, under ``softmax(logits / temperature)`` (float32)."""
    logits = logits_fn(graphdef, params, model_state, ids, attention_mask)[:, :-1].astype(jnp.float32)
    logp_all = jax.nn.log_softmax(logits / temperature, axis=-1)
    lp = jnp.take_along_axis(logp_all, ids[:, 1:, None].astype(jnp.int32), -1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
    return lp, ent


def advantages(o: PGOptions, rewards, mask, old_logps=None, ref_logps=None):
    """The advantages of ``o.algorithm``: ``[N]`` (grpo, rloo) or ``[N, T]`` (reinforce++).

    With the KL penalty in the reward (``o.kl_in == "reward"``, ``kl_coef`` > 0) and kl_t the
    ``o.kl_estimator`` estimate of log π_old − log π_ref per token: grpo and rloo use the sequence reward
    r − kl_coef·Σ_t m_t·kl_t; reinforce++ puts −kl_coef·kl_t on every token (:func:`reinforce_pp_advantages`).
    """
    r = jnp.asarray(rewards, jnp.float32)
    kl_t = None
    if o.kl_in == "reward" and o.kl_coef > 0:
        kl_t = jnp.where(mask > 0, kl_estimate(old_logps, ref_logps, o.kl_estimator), 0.0)
    if o.algorithm.startswith("reinforce++"):
        return losses.reinforce_pp_advantages(
            r, mask, token_kl=kl_t, kl_coef=o.kl_coef if kl_t is not None else 0.0,
            group_size=o.group_size if o.algorithm == "reinforce++_baseline" else None)
    if kl_t is not None:
        r = r - o.kl_coef * kl_t.sum(-1)
    if o.algorithm == "rloo":
        return losses.leave_one_out_advantages(r, o.group_size)
    return losses.group_advantages(r, o.group_size, scale=o.scale_rewards)


def make_pg_step(graphdef, tx: optax.GradientTransformation, o: PGOptions, schedule=None):
    """``step(state, batch) -> (state, metrics)`` (not jitted; see :func:`jalign.train.step.jit_step`).

    ``batch``: ``ids``/``mask``/``attention_mask`` ``[N, T]`` (N = B·G samples, response mask aligned with
    ``ids``) and ``rewards`` ``[N]``. Metrics: ``loss`` (mean over the updates of the step), ``grad_norm``
    (mean), ``entropy`` (mean over completion tokens, sampling policy), ``kl`` (mean k3 of the sampling policy
    against the reference over completion tokens; only with a reference), ``clip_ratio/{low,high,region}``
    (TRL's: the share of completion tokens with w < 1 − ε_low and A < 0, w > 1 + ε_high and A > 0, either;
    means over the updates), ``advantages/{mean,std}``, ``finite/{loss,grads}`` and ``lr``.
    """
    kl_loss = o.kl_in == "loss" and o.kl_coef > 0
    n_up = o.num_iterations * o.num_minibatches

    def step(state: TrainState, batch):
        ids, mask, attn = (batch[f] for f in SEQ)
        m = (mask[:, 1:] > 0).astype(jnp.float32)
        n = ids.shape[0]
        mb = n // o.num_minibatches
        sg = jax.lax.stop_gradient
        old_lp, ent = token_logps(graphdef, sg(state.params), state.model_state, ids, attn,
                                  temperature=o.temperature)
        ref_lp = None
        if o.needs_reference:
            ref_lp, _ = token_logps(graphdef, sg(state.ref_params), state.model_state, ids, attn,
                                    temperature=o.temperature)
        adv = sg(advantages(o, batch["rewards"], m, old_lp, ref_lp))
        tokens_all = jnp.maximum(m.sum(), 1.0)

        def loss_fn(params, rows):
            sl = lambda x: jax.lax.dynamic_slice_in_dim(x, rows, mb, 0)  # noqa: E731
            lp, _ = token_logps(graphdef, params, state.model_state, sl(ids), sl(attn), temperature=o.temperature)
            mm, a, old = sl(m), sl(adv), sl(old_lp)
            ref = sl(ref_lp) if kl_loss else None
            loss = losses.policy_clip(lp, old, a, mm, eps_low=o.eps_low, eps_high=o.eps_high,
                                      aggregation=o.aggregation, importance_level=o.importance_level,
                                      ref_logps=ref, kl_coef=o.kl_coef if kl_loss else 0.0,
                                      max_completion_length=o.max_completion_length)
            if o.aggregation == "dapo" and o.num_minibatches > 1:  # normalise by the sampling round's tokens
                loss = loss * jnp.maximum(mm.sum(), 1.0) * o.num_minibatches / tokens_all
            log_ratio = lp - old
            if o.importance_level == "sequence":
                log_ratio = ((mm * log_ratio).sum(-1) / jnp.maximum(mm.sum(-1), 1.0))[:, None]
            w = jnp.exp(log_ratio)
            a2 = a if a.ndim == 2 else a[:, None]
            low = ((w < 1 - o.eps_low) & (a2 < 0)).astype(jnp.float32)
            high = ((w > 1 + o.eps_high) & (a2 > 0)).astype(jnp.float32)
            tok = jnp.maximum(mm.sum(), 1.0)
            low, high = (jnp.broadcast_to(x, mm.shape) * mm for x in (low, high))
            return loss, {"low": low.sum() / tok, "high": high.sum() / tok, "region": (low + high).sum() / tok}

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def body(carry, j):
            params, opt_state, ok = carry
            (loss, clip), grads = grad_fn(params, (j % o.num_minibatches) * mb)
            gnorm = optax.tree.norm(grads)
            updates, new_opt = tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            good = jnp.isfinite(loss) & jnp.isfinite(gnorm)
            keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(good, x, y), a, b)  # noqa: E731
            out = {"loss": loss, "grad_norm": gnorm, "finite/loss": jnp.isfinite(loss),
                   "finite/grads": jnp.isfinite(gnorm), **{f"clip_ratio/{k}": v for k, v in clip.items()}}
            return (keep(new_params, params), keep(new_opt, opt_state), ok & good), out

        (params, opt_state, ok), per = jax.lax.scan(body, (state.params, state.opt_state, jnp.asarray(True)),
                                                    jnp.arange(n_up))
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
        key = jax.random.wrap_key_data(state.rng)
        new_state = state.replace(params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
                                  step=jnp.where(ok, state.step + 1, state.step),
                                  rng=jnp.where(ok, jax.random.key_data(jax.random.split(key)[0]), state.rng))
        tok = jnp.maximum(m.sum(), 1.0)
        metrics = {k: v.mean() for k, v in per.items() if not k.startswith("finite/")}
        metrics |= {"finite/loss": per["finite/loss"].all(), "finite/grads": per["finite/grads"].all(),
                    "entropy": (ent * m).sum() / tok}
        adv_tok = jnp.broadcast_to(adv if adv.ndim == 2 else adv[:, None], m.shape)
        a_mean = (adv_tok * m).sum() / tok
        metrics |= {"advantages/mean": a_mean,
                    "advantages/std": jnp.sqrt((m * jnp.square(adv_tok - a_mean)).sum() / tok)}
        if ref_lp is not None:
            metrics["kl"] = (kl_estimate(old_lp, jnp.where(m > 0, ref_lp, old_lp), "k3") * m).sum() / tok
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    return step


class PGBatch:
    """What ``check_batch`` needs to validate a policy-gradient batch (``[N, T]`` + ``rewards [N]``)."""

    kind = "online_pg"
    fields = (*SEQ, "rewards")
    optional: tuple[str, ...] = ()


def pg_batch(samples: dict, rewards: np.ndarray, *, reward_name: str = "reward", group_size: int = 1) -> dict:
    """The step's batch from sampler output and host rewards; ``UserError`` on a wrong shape or a
    non-finite reward (naming the reward, the prompt and the sample)."""
    s = {k: np.asarray(v) for k, v in samples.items()}
    r = np.asarray(rewards)
    n = s["ids"].shape[0]
    if r.shape != (n,):
        raise UserError(f"reward {reward_name!r} returned shape {r.shape}, expected ({n},)")
    r = r.astype(np.float32)
    if not np.isfinite(r).all():
        i = int(np.argwhere(~np.isfinite(r))[0, 0])
        raise UserError(f"reward {reward_name!r} returned a non-finite reward {r[i]} for prompt {i // group_size}, "
                        f"sample {i % group_size} ({int((~np.isfinite(r)).sum())} of {n} non-finite); training "
                        "stopped before the update")
    return {"ids": s["ids"], "mask": s["mask"], "attention_mask": s["attention_mask"], "rewards": r}


def sample_metrics(batch: dict, group_size: int, *, prompt_len: int, eos_id: int) -> dict:
    """Host metrics of a sampling round (float64 numpy): ``completions/{mean,min,max}_length``,
    ``completions/clipped_ratio`` (share of completions without EOS: cut at ``max_new_tokens``),
    ``reward/mean``, ``reward/std`` (unbiased, over the batch), ``reward/group_std`` (mean over prompts of the
    unbiased std of its G rewards) and ``frac_reward_zero_std`` (share of prompts whose G rewards are all
    equal, std < 1e-8: no GRPO signal)."""
    resp = np.asarray(batch["mask"])[:, prompt_len:] != 0
    ids = np.asarray(batch["ids"])[:, prompt_len:]
    lengths = resp.sum(-1).astype(np.float64)
    eos = ((ids == eos_id) & resp).any(-1)
    r = np.asarray(batch["rewards"], np.float64)
    out = {"completions/mean_length": lengths.mean(), "completions/min_length": lengths.min(),
           "completions/max_length": lengths.max(), "completions/clipped_ratio": float((~eos).mean()),
           "reward/mean": r.mean(), "reward/std": r.std(ddof=1) if r.size > 1 else 0.0}
    if group_size > 1:
        gstd = r.reshape(-1, group_size).std(-1, ddof=1)
        out |= {"reward/group_std": gstd.mean(), "frac_reward_zero_std": float((gstd < 1e-8).mean())}
    return {k: float(v) for k, v in out.items()}

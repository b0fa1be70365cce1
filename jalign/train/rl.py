"""The clipped policy-gradient step of ``mode="online"`` with ``online.algorithm`` set (GRPO, RLOO, REINFORCE++,
PPO with a critic).

One trainer step = one sampling round: the loop samples G = ``online.num_samples`` completions per prompt
and scores them on the host (:func:`pg_batch`); the jitted step (:func:`make_pg_step`) then

1. computes the per-token log-probs of the sampling policy (``old_logps``, the current parameters, no
   gradient), its per-token entropy, and — when a KL term is configured — the frozen reference's per-token
   log-probs, all once;
2. computes the advantages of ``algorithm`` (:func:`advantages`; ppo: GAE over the critic's values of the
   :class:`ActorCritic` model, also computed once);
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
from flax import nnx

from jalign import losses
from jalign.divergences import kl_estimate
from jalign.errors import UserError
from jalign.models import CausalLM, reward_model_from_causal_lm
from jalign.train.batch import SEQ
from jalign.train.step import TrainState, logits_fn

ALGORITHMS = ("grpo", "rloo", "reinforce++", "reinforce++_baseline", "ppo")
KL_PENALTIES = ("auto", "loss", "reward")
KL_ESTIMATORS = ("k1", "k2", "k3")
# Where the KL term goes when online.kl_penalty="auto": GRPO puts k3 in the loss (TRL); RLOO and REINFORCE++
# subtract β·KL from the reward (TRL's RLOO, OpenRLHF).
DEFAULT_KL_PENALTY = {"grpo": "loss", "rloo": "reward", "reinforce++": "reward", "reinforce++_baseline": "reward",
                      "ppo": "reward"}


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
    reward_clip: float = 0.0  # > 0: rewards clipped to [-reward_clip, reward_clip] before the advantages
    # ppo: GAE over the critic's per-token values, clipped value loss
    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.1
    cliprange_value: float = 0.2
    whiten_advantages: bool = True

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

    need(o.algorithm in ALGORITHMS, "online.algorithm", o.algorithm, f"one of {ALGORITHMS} (or '' for loss.name; 'pairwise', 'nash_md': docs/rl.md)")
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
                             ("temperature", o.temperature, o.temperature > 0, "> 0"),
                             ("reward_clip", o.reward_clip, o.reward_clip >= 0, ">= 0 (0: off)"),
                             ("gamma", o.gamma, 0 <= o.gamma <= 1, "in [0, 1]"),
                             ("lam", o.lam, 0 <= o.lam <= 1, "in [0, 1]"),
                             ("vf_coef", o.vf_coef, o.vf_coef >= 0, ">= 0"),
                             ("cliprange_value", o.cliprange_value, o.cliprange_value > 0, "> 0")):
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


def advantages(o: PGOptions, rewards, mask, old_logps=None, ref_logps=None, values=None):
    """The advantages of ``o.algorithm``: ``[N]`` (grpo, rloo) or ``[N, T]`` (reinforce++, ppo), and the
    returns ``[N, T]`` for ppo (``None`` otherwise).

    Rewards are first clipped to ±``o.reward_clip`` when it is > 0. ppo: token rewards −kl_coef·kl_t plus the
    sequence reward on the last completion token, :func:`jalign.losses.gae` over the sampling-time ``values``
    (γ = ``o.gamma``, λ = ``o.lam``), then :func:`jalign.losses.masked_whiten` if ``o.whiten_advantages``.

    With the KL penalty in the reward (``o.kl_in == "reward"``, ``kl_coef`` > 0) and kl_t the
    ``o.kl_estimator`` estimate of log π_old − log π_ref per token: grpo and rloo use the sequence reward
    r − kl_coef·Σ_t m_t·kl_t; reinforce++ puts −kl_coef·kl_t on every token (:func:`reinforce_pp_advantages`).
    """
    r = jnp.asarray(rewards, jnp.float32)
    if o.reward_clip > 0:
        r = jnp.clip(r, -o.reward_clip, o.reward_clip)
    kl_t = None
    if o.kl_in == "reward" and o.kl_coef > 0:
        kl_t = jnp.where(mask > 0, kl_estimate(old_logps, ref_logps, o.kl_estimator), 0.0)
    if o.algorithm == "ppo":
        t = mask.shape[-1]
        last = jnp.argmax(jnp.where(mask > 0, jnp.arange(t), -1), axis=-1)
        tok = jax.nn.one_hot(last, t, dtype=jnp.float32) * r[:, None]
        if kl_t is not None:
            tok = tok - o.kl_coef * kl_t
        adv, ret = losses.gae(tok * mask, values, mask, gamma=o.gamma, lam=o.lam)
        return (losses.masked_whiten(adv, mask) if o.whiten_advantages else adv), ret
    if o.algorithm.startswith("reinforce++"):
        return losses.reinforce_pp_advantages(
            r, mask, token_kl=kl_t, kl_coef=o.kl_coef if kl_t is not None else 0.0,
            group_size=o.group_size if o.algorithm == "reinforce++_baseline" else None), None
    if kl_t is not None:
        r = r - o.kl_coef * kl_t.sum(-1)
    if o.algorithm == "rloo":
        return losses.leave_one_out_advantages(r, o.group_size), None
    return losses.group_advantages(r, o.group_size, scale=o.scale_rewards), None


class LogitsValue(nnx.Module):
    """A critic for any model that returns logits: its own copy of the model and a linear head on the logits,
    initialised to 0 (every value starts at 0). ``values(ids, attention_mask) -> [B, T]``."""

    def __init__(self, trunk: nnx.Module, vocab_size: int, *, rngs: nnx.Rngs):
        self.trunk = trunk
        self.head = nnx.Linear(vocab_size, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def values(self, ids, attention_mask=None):
        out = self.trunk(ids, attention_mask)
        return self.head(getattr(out, "logits", out).astype(jnp.float32))[..., 0]


class ActorCritic(nnx.Module):
    """The policy and its critic as one module (one parameter tree, one optimiser): calling it gives the
    policy's output (so samplers and log-prob functions see the policy); ``values(ids, attention_mask)`` the
    critic's per-token values ``[B, T]`` (position t: the value of the state after token t)."""

    def __init__(self, policy: nnx.Module, critic: nnx.Module):
        self.policy, self.critic = policy, critic

    def __call__(self, ids, attention_mask=None):
        return self.policy(ids, attention_mask)

    def values(self, ids, attention_mask=None):
        return self.critic.values(ids, attention_mask)


def policy_of(model):
    """The policy of an :class:`ActorCritic` (what is sampled from and exported); any other model itself."""
    return model.policy if isinstance(model, ActorCritic) else model


def with_value_head(model: nnx.Module, *, seed: int = 0) -> ActorCritic:
    """``model`` with a critic for ``online.algorithm="ppo"``: a :class:`jalign.models.CausalLM` gets a
    :class:`jalign.models.RewardModel` initialised from its own trunk (a copy) with a fresh per-token value
    head (:func:`jalign.models.reward_model_from_causal_lm`, drawn from ``seed``); any other model a
    :class:`LogitsValue` over a copy of itself. An :class:`ActorCritic` is returned as it is."""
    if isinstance(model, ActorCritic):
        return model
    if isinstance(model, CausalLM):
        return ActorCritic(model, reward_model_from_causal_lm(model, seed=seed))
    vocab = getattr(model, "vocab_size", None)
    if vocab is None:
        raise UserError(f"online.algorithm='ppo': cannot build a critic for a {type(model).__name__} without a "
                        "vocab_size attribute; pass an ActorCritic model")
    return ActorCritic(model, LogitsValue(nnx.clone(model), int(vocab), rngs=nnx.Rngs(seed)))


def make_pg_step(graphdef, tx: optax.GradientTransformation, o: PGOptions, schedule=None):
    """``step(state, batch) -> (state, metrics)`` (not jitted; see :func:`jalign.train.step.jit_step`).

    ``batch``: ``ids``/``mask``/``attention_mask`` ``[N, T]`` (N = B·G samples, response mask aligned with
    ``ids``) and ``rewards`` ``[N]``. Metrics: ``loss`` (mean over the updates of the step), ``grad_norm``
    (mean), ``entropy`` (mean over completion tokens, sampling policy), ``kl`` (mean k3 of the sampling policy
    against the reference over completion tokens; only with a reference), ``clip_ratio/{low,high,region}``
    (TRL's: the share of completion tokens with w < 1 − ε_low and A < 0, w > 1 + ε_high and A > 0, either;
    means over the updates), ``advantages/{mean,std}``, ``finite/{loss,grads}`` and ``lr``. ppo adds
    ``value_loss`` (the clipped value loss, mean over the updates), ``value_clip_ratio`` (share of completion
    tokens where the clipped term is the larger), ``values/mean`` and ``returns/mean`` (sampling time); its loss
    is the policy loss + ``vf_coef``·value loss.

    ppo's value loss per completion token (TRL's ``PPOTrainer``): ½·max((V − R)², (V_old + clip(V − V_old,
    ±cliprange_value) − R)²) with R the GAE returns and V_old the critic's values at sampling time, averaged
    over the completion tokens of the minibatch.
    """
    kl_loss = o.kl_in == "loss" and o.kl_coef > 0
    ppo = o.algorithm == "ppo"

    def values_fn(params, model_state, ids, attn):
        return nnx.merge(graphdef, params, model_state).values(ids, attn)[:, :-1].astype(jnp.float32)
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
        old_v = values_fn(sg(state.params), state.model_state, ids, attn) if ppo else None
        adv, ret = advantages(o, batch["rewards"], m, old_lp, ref_lp, old_v)
        adv = sg(adv)
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
            aux = {"clip_ratio/low": low.sum() / tok, "clip_ratio/high": high.sum() / tok,
                   "clip_ratio/region": (low + high).sum() / tok}
            if ppo:
                v, v_old, r = values_fn(params, state.model_state, sl(ids), sl(attn)), sl(old_v), sg(sl(ret))
                v_clip = v_old + jnp.clip(v - v_old, -o.cliprange_value, o.cliprange_value)
                l1, l2 = jnp.square(v - r), jnp.square(v_clip - r)
                vf = 0.5 * (jnp.maximum(l1, l2) * mm).sum() / tok
                aux |= {"value_loss": vf, "value_clip_ratio": ((l2 > l1) * mm).sum() / tok}
                loss = loss + o.vf_coef * vf
            return loss, aux

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
                   "finite/grads": jnp.isfinite(gnorm), **clip}
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
        if ppo:
            metrics |= {"values/mean": (old_v * m).sum() / tok, "returns/mean": (ret * m).sum() / tok}
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

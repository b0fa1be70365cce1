"""Pure, jitted training steps: ``train_step(state, batch) -> (state, metrics)``.

The model is split once (``nnx.split``) into a static ``graphdef`` and array pytrees; the step merges them
back inside ``jit``. The state holds trainable parameters, the optimiser state, the other model variables,
optionally the frozen reference parameters, the step counter and the RNG key data. Shardings come from
:mod:`jalign.train.sharding`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jalign.losses import causal_sequence_logps, sequence_logps
from jalign.train import sharding as shd
from jalign.train.batch import SEQ


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a step reads and writes (a pytree; checkpointed as a whole).

    Attributes:
      params: trainable parameters (``nnx.State`` of ``nnx.Param``).
      opt_state: optax state.
      model_state: the model's other variables (not trained).
      ref_params: frozen reference parameters (a copy of the initial ``params``) or ``None``.
      step: int32 scalar, number of completed updates.
      rng: uint32 key data (``jax.random.key_data``), advanced every step.
    """

    params: Any
    opt_state: Any
    model_state: Any
    ref_params: Any
    step: jax.Array
    rng: jax.Array

    def replace(self, **kw) -> TrainState:
        return dataclasses.replace(self, **kw)


def make_schedule(lr: float, total_steps: int, *, schedule: str = "cosine", warmup_steps: int = 0,
                  end_lr_fraction: float = 0.0) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine / linear decay to
    ``lr·end_lr_fraction`` at ``total_steps`` (or constant)."""
    if schedule == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
                                    [warmup_steps])
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1),
                                                  end_value=lr * end_lr_fraction)
    if schedule == "linear":
        decay = optax.linear_schedule(lr, lr * end_lr_fraction, max(total_steps - warmup_steps, 1))
        if warmup_steps == 0:
            return decay
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), decay], [warmup_steps])
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, linear")


def make_optimizer(optim, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(tx, schedule)`` from an ``optim`` config section (see :func:`jalign.train.config.base_config`)."""
    sched = make_schedule(optim.lr, total_steps, schedule=optim.schedule, warmup_steps=optim.warmup_steps,
                          end_lr_fraction=optim.end_lr_fraction)
    if optim.name == "sgd":
        opt = optax.sgd(sched)
    elif optim.name == "adam":
        opt = optax.adam(sched, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    elif optim.name == "adamw":
        mask = None
        if optim.get("decay_matrices_only", False):  # no decay on biases, norm scales (ndim < 2)
            mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # noqa: E731
        opt = optax.adamw(sched, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                          mask=mask)
    else:
        raise ValueError(f"unknown optimizer {optim.name!r}; valid: adamw, adam, sgd")
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), opt) if optim.grad_clip > 0 else opt
    return tx, sched


def split_model(model: nnx.Module):
    """``(graphdef, params, model_state)`` with ``params`` the ``nnx.Param`` variables."""
    return nnx.split(model, nnx.Param, ...)


def stack_trees(trees):
    """Stack pytrees of identical structure on a new leading axis (the seed axis of a batched run):
    leaf ``[...]`` of each of the ``S`` trees → leaf ``[S, ...]``. ``jax.vmap`` of a step over the result runs
    ``S`` independent copies in one compiled call."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def replicate_tree(tree, n: int):
    """``n`` copies of ``tree`` stacked on a new leading axis (:func:`stack_trees` of ``[tree] * n``)."""
    return stack_trees([tree] * n)


def tree_index(tree, i: int):
    """Slice ``i`` of every leaf on the leading axis: copy ``i`` of a stacked tree (the inverse of
    :func:`stack_trees`)."""
    return jax.tree.map(lambda x: x[i], tree)


def init_state(model: nnx.Module, tx: optax.GradientTransformation, *, seed: int = 0,
               reference: bool = True):
    """``(graphdef, state)``: the initial :class:`TrainState` (with a frozen reference copy if asked)."""
    graphdef, params, rest = split_model(model)
    ref = jax.tree.map(jnp.copy, params) if reference else None
    state = TrainState(params=params, opt_state=tx.init(params), model_state=rest, ref_params=ref,
                       step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(seed)))
    return graphdef, state


def logits_fn(graphdef, params, model_state, ids, attention_mask):
    """Logits ``[B, T, V]`` of the merged model.

    The model is called as ``model(ids_BxT, mask_BxT)`` with the attention mask as the *second positional*
    argument, which both the test ``TinyLM`` (``attention_mask=``) and :class:`jalign.models.CausalLM`
    (``mask_BxT=``, positions derived from the mask, so left and right padding give the same logits) accept.
    Models returning an object with ``.logits`` (``CausalLMOutput``) are unwrapped.
    """
    out = nnx.merge(graphdef, params, model_state)(ids, attention_mask)
    return getattr(out, "logits", out)


def make_logps_fn(graphdef, params, model_state):
    """``(ids, mask, attention_mask) -> (logps [B], lengths [B])``: summed response log-probs, shifted by one.

    A :class:`jalign.models.CausalLM` with ``cfg.fused_logps`` (the default) uses its fused
    :meth:`~jalign.models.CausalLM.sequence_logps`; other models go through their logits."""

    def fn(ids, mask, attention_mask):
        model = nnx.merge(graphdef, params, model_state)
        if getattr(getattr(model, "cfg", None), "fused_logps", False) and hasattr(model, "sequence_logps"):
            return model.sequence_logps(ids, mask, attention_mask)  # no [B, T, V] logits (ModelConfig.fused_logps)
        out = model(ids, attention_mask)
        logits = getattr(out, "logits", out)
        return causal_sequence_logps(logits, ids, mask)  # == sequence_logps(logits[:, :-1], ids[:, 1:], ...)

    return fn


@dataclasses.dataclass(eq=False)
class ExampleLogp:
    """``logp(params, example) -> scalar``: the summed response log-prob of one trainer-layout sequence.

    ``example`` is a dict of ``[T]`` arrays ``ids``, ``mask``, ``attention_mask``. The object is hashable by
    identity, so its bound method is a valid static ``logp_fn`` of the jitted diagnostics (one compilation
    per shape). ``model_state`` (the model's non-trainable variables) is fixed at construction.
    """

    graphdef: Any
    model_state: Any

    def logp(self, params, example):
        ids, mask, attn = (jnp.asarray(example[f])[None] for f in SEQ)
        logits = logits_fn(self.graphdef, params, self.model_state, ids, attn)
        return sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])[0][0]

    def batch_logps(self, params, batch, prefix=""):
        """``(logps [B], lengths [B])`` of ``batch[prefix + 'ids']`` etc. (one forward pass)."""
        ids, mask, attn = (batch[f"{prefix}{f}"] for f in SEQ)
        logits = logits_fn(self.graphdef, params, self.model_state, ids, attn)
        return sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])


def _microbatches(batch, n: int):
    """``[B, ...] -> [n, B/n, ...]`` with microbatch i = rows i, i+n, i+2n, … (each stays spread over the
    data-parallel devices)."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1), batch)


def _unmicro(x):
    return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


def make_train_step(graphdef, objective, tx: optax.GradientTransformation, schedule=None, *,
                    accum_steps: int = 1):
    """The pure step ``train_step(state, batch) -> (state, metrics)`` (not jitted; see :func:`jit_step`).

    The objective's ``loss_sum`` receives ``objective.make_model_fn(graphdef, params, model_state)`` when the
    objective defines one (reward models: scores), else :func:`make_logps_fn`.
    Loss = Σ_microbatches loss_sum(microbatch) / denominator(full batch), so gradient accumulation over
    ``accum_steps`` strided microbatches equals the full-batch gradient (up to float summation order).
    If the loss or the gradient norm is non-finite the returned state is the input state unchanged and
    ``metrics['finite/loss']`` / ``metrics['finite/grads']`` say which quantity failed.
    """

    # What the objective sees of the model: summed response log-probs, or its own function (reward models).
    model_fn = getattr(objective, "make_model_fn", None) or make_logps_fn

    def train_step(state: TrainState, batch):
        batch = {k: batch[k] for k in (*objective.fields, *objective.optional) if k in batch}
        denom = objective.denominator(batch)
        ref_fn = None
        if state.ref_params is not None:
            ref_fn = make_logps_fn(graphdef, jax.lax.stop_gradient(state.ref_params), state.model_state)

        def micro_loss(params, mb):
            total, per_ex = objective.loss_sum(model_fn(graphdef, params, state.model_state), ref_fn, mb)
            return total / denom, per_ex

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
        if accum_steps == 1:
            (loss, per_ex), grads = grad_fn(state.params, batch)
        else:
            n = batch[objective.fields[0]].shape[0]
            if n % accum_steps:
                raise ValueError(f"batch size {n} is not divisible by accum_steps={accum_steps}")

            def body(carry, mb):
                g_acc, l_acc = carry
                (l, pe), g = grad_fn(state.params, mb)
                return (jax.tree.map(jnp.add, g_acc, g), l_acc + l), pe

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, loss), per_ex = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32)),
                                                 _microbatches(batch, accum_steps))
            per_ex = jax.tree.map(_unmicro, per_ex)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite_loss, finite_grads = jnp.isfinite(loss), jnp.isfinite(grad_norm)
        ok = finite_loss & finite_grads
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        key = jax.random.wrap_key_data(state.rng)
        new_state = state.replace(
            params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
            step=jnp.where(ok, state.step + 1, state.step),
            rng=jnp.where(ok, jax.random.key_data(jax.random.split(key)[0]), state.rng))
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite/loss": finite_loss,
                   "finite/grads": finite_grads, **objective.metrics(per_ex)}
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    return train_step


def state_shardings(state: TrainState, mesh, rules=None):
    """Shardings of every state leaf (:func:`jalign.train.sharding.tree_shardings`: a parameter's
    ``out_sharding`` annotation through the logical-axis ``rules``, else the default shape rule)."""
    return shd.tree_shardings(state, mesh, rules)


def jit_step(train_step, state: TrainState, mesh, *, donate: bool = False, rules=None):
    """``jax.jit`` of ``train_step`` with NamedSharding: state by the parameter rule, batch over
    ``(data, fsdp)``, metrics replicated."""
    st = state_shardings(state, mesh, rules)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(train_step, in_shardings=(st, shd.batch_sharding(mesh)), out_shardings=(st, rep),
                   donate_argnums=(0,) if donate else ())


def place_state(state: TrainState, mesh, rules=None) -> TrainState:
    """Put ``state`` on ``mesh`` with :func:`state_shardings`."""
    return jax.device_put(state, state_shardings(state, mesh, rules))

"""A generic f-DPG training loop over any sampler and log-prob function (used for the categorical toys).

The loop only needs three functions, so any model plugs in (for the causal LM, :mod:`jalign.studies.fdpg_lm`
has a trainer that also compiles once for every divergence and target):

* ``sample_fn(params, key, n) -> samples`` — draw n samples from the policy with parameters ``params``
  (for an LM: token arrays of completions; for the toy: integer outcomes);
* ``log_prob_fn(params, samples) -> [n]`` — log π_params(x), differentiable in ``params`` (for an LM: summed
  response-token log-probs, e.g. :func:`jalign.losses.sequence_logps`);
* ``target_log_prob_fn(samples) -> [n]`` — the unnormalised target log P(x) (e.g.
  :func:`jalign.fdpg.targets.pointwise_target_logps` of the base LM's log-probs and b(x)).

Per step: draw a batch from the proposal (π_θ on-policy, or the frozen copy q off-policy), update the running
IS estimate of log Z, take an optax step on the mean f-DPG surrogate (with the self-normalised baseline
B = Ê_π[−f'] if ``baseline=True``), and off-policy replace q by π_θ every ``replace_every`` steps when the IS
estimate of KL(p‖π_θ) is below KL(p‖q). ``eval_every`` steps run inside one ``lax.scan``; between chunks the
loop checks for non-finite loss or parameters and raises (training never continues on NaN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jalign import divergences as _div
from jalign.fdpg import metrics as _metrics
from jalign.fdpg import proposals as _proposals
from jalign.losses.fdpg import baseline_estimate, fdpg, logz_estimate, logz_init, logz_update


@dataclasses.dataclass(frozen=True)
class FDPGConfig:
    """Hyperparameters of :func:`train`.

    Attributes:
      divergence: a name or :class:`~jalign.divergences.Divergence`.
      steps: optimiser steps (a multiple of ``eval_every``).
      batch_size: samples per step.
      learning_rate: Adam learning rate.
      proposal: ``"on_policy"`` or ``"off_policy"``.
      replace_every: off-policy: steps between proposal-replacement checks.
      baseline: subtract the self-normalised IS estimate of E_π[pseudo-reward].
      eval_every: steps per scanned chunk (NaN check and ``eval_fn`` between chunks).
      log_z: ``None`` (default) uses the running IS estimate of log Z; a number uses that known log Z
        (the running estimate is still tracked and reported).
    """

    divergence: Any = "js"
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-2
    proposal: str = "on_policy"
    replace_every: int = 10
    baseline: bool = True
    eval_every: int = 100
    log_z: float | None = None

    def __post_init__(self):
        _div.get(self.divergence)
        if self.proposal not in ("on_policy", "off_policy"):
            raise ValueError(f"FDPGConfig: proposal={self.proposal!r} must be 'on_policy' or 'off_policy'")
        for name in ("steps", "batch_size", "replace_every", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"FDPGConfig: {name}={getattr(self, name)!r} must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"FDPGConfig: learning_rate={self.learning_rate!r} must be > 0")
        if self.steps % self.eval_every:
            raise ValueError(f"FDPGConfig: steps={self.steps} must be a multiple of eval_every={self.eval_every}")


def train(
    params,
    *,
    sample_fn: Callable[[Any, Any, int], Any],
    log_prob_fn: Callable[[Any, Any], Any],
    target_log_prob_fn: Callable[[Any], Any],
    config: FDPGConfig,
    key,
    eval_fn: Callable[[Any], dict] | None = None,
):
    """Train a policy with f-DPG.

    Args:
      params: initial policy parameters (a pytree; usually the base model a's, so π_0 = a).
      sample_fn, log_prob_fn, target_log_prob_fn: see the module docstring.
      config: :class:`FDPGConfig`.
      key: PRNG key.
      eval_fn: ``params -> dict of scalars`` evaluated at step 0 and after every chunk (e.g. exact toy metrics).

    Returns:
      ``(params, history)`` where history has ``step``, ``loss`` (chunk means), ``log_z``, ``replacements``
      and one list per ``eval_fn`` key.

    Raises:
      FloatingPointError: a non-finite loss or parameter, naming the chunk's last step.
    """
    div = _div.get(config.divergence)
    opt = optax.adam(config.learning_rate)
    off = config.proposal == "off_policy"

    def step(carry, key):
        params, opt_state, logz, prop, i = carry
        q_params = prop.params if off else params
        x = sample_fn(q_params, key, config.batch_size)
        lq = jax.lax.stop_gradient(log_prob_fn(q_params, x))
        lP = jax.lax.stop_gradient(target_log_prob_fn(x))
        logz = logz_update(logz, lP, lq)
        log_z_est = logz_estimate(logz)[0]
        log_z = log_z_est if config.log_z is None else jnp.asarray(config.log_z, log_z_est.dtype)

        def loss_fn(p):
            lpi = log_prob_fn(p, x)
            b = baseline_estimate(lpi, lP, lq, divergence=div, log_z=log_z) if config.baseline else 0.0
            b = jax.lax.stop_gradient(b)
            return fdpg(lpi, lP, lq, divergence=div, baseline=b, log_z=log_z, validate=False).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if off:
            kl_pi = _metrics.is_divergence("forward_kl", log_prob_fn(params, x), lP, lq, log_z=log_z)
            kl_q = _metrics.is_divergence("forward_kl", lq, lP, lq, log_z=log_z)
            new_prop, _ = _proposals.maybe_replace(prop, params, kl_pi, kl_q)
            check = (i + 1) % config.replace_every == 0
            prop = jax.tree.map(lambda n, o: jnp.where(check, n, o), new_prop, prop)
        return (params, opt_state, logz, prop, i + 1), (loss, log_z_est)

    @jax.jit
    def chunk(carry, key):
        return jax.lax.scan(step, carry, jax.random.split(key, config.eval_every))

    carry = (params, opt.init(params), logz_init(1), _proposals.proposal_init(params), jnp.asarray(0))
    history: dict[str, list] = {"step": [0], "loss": [float("nan")], "log_z": [float("nan")], "replacements": [0]}
    if eval_fn is not None:
        for k, v in eval_fn(params).items():
            history[k] = [float(v)]
    for c in range(config.steps // config.eval_every):
        key, sub = jax.random.split(key)
        carry, (losses, log_zs) = chunk(carry, sub)
        s = (c + 1) * config.eval_every
        losses = np.asarray(losses)
        finite_params = all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(carry[0]))
        if not (np.isfinite(losses).all() and finite_params):
            raise FloatingPointError(
                f"f-DPG ({div!r}): non-finite loss or parameters by step {s}; stopping (no silent NaN)"
            )
        history["step"].append(s)
        history["loss"].append(float(losses.mean()))
        history["log_z"].append(float(np.asarray(log_zs)[-1]))
        history["replacements"].append(int(carry[3].replacements))
        if eval_fn is not None:
            for k, v in eval_fn(carry[0]).items():
                history[k].append(float(v))
    return carry[0], history


def categorical_sampler(log_prob_all: Callable[[Any], Any]):
    """``(sample_fn, log_prob_fn)`` for a categorical policy given ``log_prob_all(params) -> [K]``."""

    def sample_fn(params, key, n):
        return jax.random.categorical(key, log_prob_all(params), shape=(n,))

    def log_prob_fn(params, x):
        return log_prob_all(params)[x]

    return sample_fn, log_prob_fn


def train_exact(
    params,
    *,
    log_prob_all,
    log_p,
    divergence,
    steps: int,
    learning_rate: float,
    record_every: int = 1,
    batched: bool = False,
):
    """Adam on the exact D_f(π_θ‖p) (categorical problems; autodiff of :func:`jalign.divergences.divergence`).

    Args:
      params: initial parameters; with ``batched=True`` a pytree with a leading axis of independent starts
        (multi-start, vmapped into one compiled program).
      log_prob_all: ``params -> [K]`` log π over all outcomes.
      log_p: the normalised target, ``[K]``.
      divergence: a name or :class:`~jalign.divergences.Divergence`.
      steps, learning_rate, record_every: Adam steps, rate, and trajectory stride.

    Returns:
      ``(params, trajectory)`` with trajectory the parameters every ``record_every`` steps, ``[steps //
      record_every, ...]`` (after the batch axis when ``batched``).

    Raises:
      FloatingPointError: non-finite final parameters (unbatched). With ``batched=True`` every start is
        returned as it ended and the caller must mask non-finite starts (e.g. χ² overflowing from a start far
        from p).
    """
    opt = optax.adam(learning_rate)
    div = _div.get(divergence)

    def loss(p):
        return _div.divergence(div, log_prob_all(p), log_p)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    def rec(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=record_every)
        return carry, carry[0]

    def run(p):
        (p, _), traj = jax.lax.scan(rec, (p, opt.init(p)), None, length=steps // record_every)
        return p, traj

    p, traj = jax.jit(jax.vmap(run) if batched else run)(params)
    if not batched and not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(p)):
        raise FloatingPointError(f"exact training ({div!r}): non-finite parameters")
    return p, traj


__all__ = ["FDPGConfig", "categorical_sampler", "train", "train_exact"]

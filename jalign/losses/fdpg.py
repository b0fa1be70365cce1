"""f-DPG: distributional policy gradients for any f-divergence to any evaluable target.

Go, Korbak, Kruszewski, Rozen, Ryu, Dymetman, "Aligning Language Models with Preferences through
f-divergence Minimization", ICML 2023 (arXiv 2302.08215).

For a target p = P/Z (P evaluable, Z unknown) and a policy π_θ, the gradient of D_f(π_θ‖p) = Σ p f(π_θ/p) is

    ∇_θ D_f(π_θ‖p) = E_{x~π_θ}[ f'(π_θ(x)/p(x)) ∇_θ log π_θ(x) ]
                   = E_{x~q}[ (π_θ(x)/q(x)) · f'(π_θ(x)/p(x)) · ∇_θ log π_θ(x) ]   (any proposal q),

a policy gradient with pseudo-reward r_θ(x) = −f'(π_θ(x)/p(x)). The per-sample surrogate here is

    ℓ(x) = −sg[ w(x) · (r_θ(x) − B) ] · log π_θ(x),      w = π_θ/q,  x ~ q,

with sg = stop_gradient on the importance weight and the pseudo-reward. **Sign convention:** the mean of ℓ
over samples is a loss to *minimise*: E_q[∇ℓ] = ∇_θ D_f(π_θ‖p), so gradient descent on the surrogate is
gradient descent on D_f. A constant baseline B (subtracted from the pseudo-reward) leaves the expectation
unchanged because E_q[w ∇log π_θ] = ∇Σπ_θ = 0. The value of ℓ carries no meaning; only its gradient does.

Unnormalised targets: pass ``log_z`` (an estimate of log Z); :class:`LogZState` keeps a running
importance-sampling estimate Ẑ = mean over all samples so far of P(x)/q(x) (unbiased for any q that covers
p), one per context for conditional targets (:func:`logz_init`, :func:`logz_update`, :func:`logz_estimate`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign import divergences as _div
from jalign.losses._registry import register
from jalign.losses._types import SampledLogps, pytree_dataclass

_PAPER = (
    "Go et al., Aligning Language Models with Preferences through f-divergence Minimization, "
    "ICML 2023 (arXiv 2302.08215)"
)


def _f(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_inputs(div: _div.Divergence, **arrays: Any) -> None:
    """Raise ``ValueError`` naming the argument and index of the first invalid value (concrete inputs only)."""
    shapes = {}
    for name, v in arrays.items():
        shapes[name] = tuple(np.shape(v))
        if not _concrete(v):
            continue
        a = np.asarray(v, dtype=np.float64)
        bad = np.isnan(a) | (a == np.inf)
        if name not in ("target_logps",):
            bad |= a == -np.inf
        elif (a == -np.inf).any() and not math.isfinite(div.slope_at_inf):
            idx = tuple(int(i) for i in np.argwhere(a == -np.inf)[0])
            raise ValueError(
                f"fdpg: target_logps is -inf (target probability 0) at index {idx}, where "
                f"{div!r} is infinite and its pseudo-reward -f'(inf) is unbounded; use a divergence with "
                f"finite f'(inf) (forward_kl, js, tv, chi2, alpha<1) or a target with full support"
            )
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
            raise ValueError(f"fdpg: {name} is not finite at index {idx} ({int(bad.sum())} bad in total)")
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError:
        raise ValueError(f"fdpg: argument shapes do not broadcast: {shapes}") from None


def pseudo_rewards(policy_logps, target_logps, proposal_logps, *, divergence, log_z=0.0):
    """Importance log-weights and pseudo-rewards of proposal samples (both treated as constants).

    Args:
      policy_logps: log π_θ(x) of samples x ~ q, ``[B]`` (gradients are stopped here).
      target_logps: log P(x) of the (possibly unnormalised) target, ``[B]``.
      proposal_logps: log q(x), ``[B]``.
      divergence: a name from :func:`jalign.divergences.names` or a :class:`~jalign.divergences.Divergence`.
      log_z: log Z (estimate) subtracted from ``target_logps``; scalar or ``[B]``.

    Returns:
      ``(log_w, r)``: log w = log π_θ − log q and r = −f'(π_θ/p), ``[B]`` each.
    """
    div = _div.get(divergence)
    lpi = jax.lax.stop_gradient(_f(policy_logps))
    log_p = _f(target_logps) - _f(log_z)
    log_w = lpi - _f(proposal_logps)
    return log_w, div.pseudo_reward(lpi - log_p)


def fdpg(
    policy_logps,
    target_logps,
    proposal_logps,
    *,
    divergence,
    baseline=0.0,
    log_z=0.0,
    validate: bool = True,
):
    """Per-sample f-DPG surrogate ℓ = −sg[(π_θ/q)·(−f'(π_θ/p) − B)] · log π_θ for samples x ~ q.

    E_{x~q}[∇_θ ℓ(x)] = ∇_θ D_f(π_θ‖p): minimise the batch mean. With ``divergence="forward_kl"`` this is
    DPG/GDC (pseudo-reward p/π_θ); with ``"reverse_kl"`` and p ∝ a·exp(r/β) it is KL-regularised RL (see
    :func:`jalign.fdpg.targets.rlhf_target_logps`).

    Args:
      policy_logps: log π_θ(x), ``[B]`` (differentiable; for sequences the summed token log-probs).
      target_logps: log P(x) of the target, ``[B]``; may be unnormalised (then pass ``log_z``). ``-inf``
        (a zero of the target, e.g. b(x) = 0) is allowed for divergences with finite f'(∞).
      proposal_logps: log q(x) of the proposal that drew x, ``[B]``; on-policy, pass ``policy_logps``
        (it is detached here).
      divergence: a name (``"forward_kl"``, ``"reverse_kl"``, ``"js"``, ``"tv"``, ``"chi2"``,
        ``"reverse_chi2"``, ``"alpha"`` = α ½) or a :class:`~jalign.divergences.Divergence`
        (e.g. ``jalign.divergences.alpha(0.3)``). Static under ``jit`` (close over it).
      baseline: B subtracted from the pseudo-reward (scalar or ``[B]``, treated as a constant).
      log_z: log Z of the target (scalar or ``[B]``, e.g. ``logz_estimate(state)[context_ids]``).
      validate: check (outside ``jit``) that the inputs are finite and broadcast; raise ``ValueError``
        naming the argument and index otherwise.

    Returns:
      Per-sample surrogate losses ``[B]`` (float32 or wider).

    >>> import jax, jax.numpy as jnp
    >>> from jalign.losses import fdpg
    >>> logits = jnp.zeros(3); x = jnp.array([0, 1, 2])          # π uniform, p = (½, ¼, ¼)
    >>> g = jax.grad(lambda l: fdpg(jax.nn.log_softmax(l)[x], jnp.log(jnp.array([.5, .25, .25])),
    ...              jnp.log(jnp.ones(3) / 3), divergence="forward_kl").mean())(logits)
    >>> [round(float(v), 4) for v in g]   # ∇ KL(p‖softmax) = π − p
    [-0.1667, 0.0833, 0.0833]
    """
    div = _div.get(divergence)
    if validate:
        _check_inputs(
            div,
            policy_logps=policy_logps,
            target_logps=target_logps,
            proposal_logps=proposal_logps,
            baseline=baseline,
            log_z=log_z,
        )
    lpi = _f(policy_logps)
    log_w, r = pseudo_rewards(lpi, target_logps, proposal_logps, divergence=div, log_z=log_z)
    b = _f(baseline)
    if div.name == "forward_kl":
        # w·(−f') = (π/q)·(p/π) = p/q, in log space: no inf·0 when π ≪ p.
        log_p = _f(target_logps) - _f(log_z)
        weighted = jnp.exp(log_p - _f(proposal_logps)) - jnp.exp(log_w) * b
    else:
        weighted = jnp.exp(log_w) * (r - b)
    return -jax.lax.stop_gradient(weighted) * lpi


def baseline_estimate(policy_logps, target_logps, proposal_logps, *, divergence, log_z=0.0):
    """Self-normalised IS estimate of E_{π_θ}[r_θ] = Σ w r / Σ w over a batch (a scalar baseline)."""
    log_w, r = pseudo_rewards(policy_logps, target_logps, proposal_logps, divergence=divergence, log_z=log_z)
    w = jax.nn.softmax(log_w)
    return jnp.sum(w * jnp.where(w > 0, r, 0.0))


# ---------------------------------------------------------------------------------------------------------
# Running importance-sampling estimate of log Z, one per context.


@pytree_dataclass
class LogZState:
    """Running estimate of log Z = log E_q[P(x)/q(x)] per context.

    Attributes:
      log_sum: log Σ_i P(x_i)/q(x_i) over all samples seen for each context, ``[C]`` (−inf before any).
      count: number of samples seen per context, ``[C]``.
    """

    log_sum: Any
    count: Any


def logz_init(num_contexts: int = 1, dtype=jnp.float32) -> LogZState:
    """An empty :class:`LogZState` for ``num_contexts`` contexts (unconditional targets: 1)."""
    if not isinstance(num_contexts, (int, np.integer)) or num_contexts < 1:
        raise ValueError(f"logz_init: num_contexts={num_contexts!r} must be a positive integer")
    return LogZState(
        log_sum=jnp.full((int(num_contexts),), -jnp.inf, dtype), count=jnp.zeros((int(num_contexts),), dtype)
    )


def logz_update(state: LogZState, target_logps, proposal_logps, context_ids=None) -> LogZState:
    """Add samples x_i ~ q(·|c_i) to the running estimate: log_sum[c] ← logaddexp(log_sum[c], log Σ P/q).

    Args:
      state: the current :class:`LogZState`.
      target_logps: log P(x_i | c_i), unnormalised, ``[B]``.
      proposal_logps: log q(x_i | c_i), ``[B]``.
      context_ids: integer context of each sample in ``[0, C)``, ``[B]``; ``None`` means context 0.

    Returns:
      The updated state (pure; jit-able).
    """
    lw = _f(target_logps) - _f(proposal_logps)
    C = state.log_sum.shape[0]
    if context_ids is None:
        ids = jnp.zeros(lw.shape, jnp.int32)
    else:
        ids = jnp.asarray(context_ids)
        if _concrete(ids) and ids.size and (int(ids.min()) < 0 or int(ids.max()) >= C):
            raise ValueError(f"logz_update: context_ids must lie in [0, {C}), got range [{ids.min()}, {ids.max()}]")
        ids = ids.astype(jnp.int32)
    if _concrete(lw) and np.isnan(np.asarray(lw)).any():
        raise ValueError("logz_update: target_logps - proposal_logps is NaN")
    m = jax.ops.segment_max(lw, ids, num_segments=C)
    m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
    s = jax.ops.segment_sum(jnp.exp(lw - m_safe[ids]), ids, num_segments=C)
    batch_lse = jnp.where(s > 0, m_safe + jnp.log(jnp.where(s > 0, s, 1.0)), -jnp.inf)
    n = jax.ops.segment_sum(jnp.ones_like(lw), ids, num_segments=C)
    log_sum = jnp.logaddexp(state.log_sum, batch_lse.astype(state.log_sum.dtype))
    return LogZState(log_sum=log_sum, count=state.count + n.astype(state.count.dtype))


def logz_estimate(state: LogZState):
    """log Ẑ = log_sum − log count per context, ``[C]``; NaN for contexts with no samples yet."""
    return jnp.where(state.count > 0, state.log_sum - jnp.log(jnp.maximum(state.count, 1.0)), jnp.nan)


# ---------------------------------------------------------------------------------------------------------
# Registry entry (kind "sampled").


@register(
    "fdpg",
    kind="sampled",
    formula="-sg[(π/q)·(-f'(π/(P/Z)) - B)]·log π,  x ~ q",
    paper=_PAPER,
    needs_reference=False,
    margin_based=False,
    notes=(
        "Descent on the mean surrogate = descent on D_f(π‖p). divergence: forward_kl (= DPG/GDC), reverse_kl, "
        "js (with the ½; the reference code drops it), tv, chi2 = χ²(p‖π), reverse_chi2 = χ²(π‖p), alpha "
        "(α = ½) or a Divergence object; log_z: log of the target's normaliser; baseline: B."
    ),
)
def _fdpg_registered(batch: SampledLogps, *, divergence: Any = "js", baseline: float = 0.0, log_z: float = 0.0):
    """Registry form of :func:`fdpg` on a :class:`SampledLogps` batch."""
    return fdpg(
        batch.policy_logps,
        batch.target_logps,
        batch.proposal_logps,
        divergence=divergence,
        baseline=baseline,
        log_z=log_z,
        validate=False,
    )


__all__ = [
    "LogZState",
    "baseline_estimate",
    "fdpg",
    "logz_estimate",
    "logz_init",
    "logz_update",
    "pseudo_rewards",
]

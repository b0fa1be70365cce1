"""Proposals for f-DPG: on-policy (q = π_θ) and off-policy with replacement (the DPG "offline" mode).

Off-policy (Parshakova et al. 2019; Khalifa et al. 2021; Go et al. 2023): samples come from a frozen copy q of
the policy; every N steps the estimate of KL(p‖π_θ) is compared with that of KL(p‖q) (both from the same
samples of q, :func:`jalign.fdpg.metrics.is_divergence` with ``"forward_kl"``) and q is replaced by π_θ if
π_θ is closer to the target. The state is a pytree of parameters, so the rule is pure and jit-able.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jalign.losses import pytree_dataclass


def on_policy(policy_logps):
    """The on-policy proposal log-probs: log q = sg[log π_θ] for samples drawn from π_θ itself."""
    return jax.lax.stop_gradient(policy_logps)


@pytree_dataclass
class ProposalState:
    """An off-policy proposal: its parameters and the last estimate of KL(p‖q).

    Attributes:
      params: the proposal's parameters (a pytree of the policy's structure).
      kl: estimate of KL(p‖q) at the last comparison (``inf`` before any).
      replacements: how many times q has been replaced.
    """

    params: Any
    kl: Any
    replacements: Any


def proposal_init(params) -> ProposalState:
    """An off-policy proposal that starts as a copy of ``params`` (typically the initial policy = a)."""
    return ProposalState(params=params, kl=jnp.asarray(jnp.inf, jnp.float32), replacements=jnp.asarray(0))


def maybe_replace(state: ProposalState, policy_params, kl_policy, kl_proposal) -> tuple[ProposalState, Any]:
    """Replace q by π_θ when the estimate of KL(p‖π_θ) is below that of KL(p‖q).

    Args:
      state: the current :class:`ProposalState`.
      policy_params: π_θ's parameters (same pytree structure as ``state.params``).
      kl_policy: estimate of KL(p‖π_θ).
      kl_proposal: estimate of KL(p‖q) from the same samples (pass ``state.kl`` to compare with the
        stored value instead).

    Returns:
      ``(new_state, replaced)``; ``replaced`` is a boolean scalar. A NaN estimate never replaces.
    """
    replaced = jnp.asarray(kl_policy) < jnp.asarray(kl_proposal)
    params = jax.tree.map(lambda new, old: jnp.where(replaced, new, old), policy_params, state.params)
    kl = jnp.where(replaced, kl_policy, kl_proposal).astype(jnp.float32)
    return ProposalState(params=params, kl=kl, replacements=state.replacements + replaced.astype(jnp.int32)), replaced


__all__ = ["ProposalState", "maybe_replace", "on_policy", "proposal_init"]

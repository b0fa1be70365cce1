"""f-DPG beyond the loss: targets, proposals and metrics (pure math), plus the toy and a generic loop.

* :mod:`jalign.fdpg.targets` — EBM targets over a base model a: pointwise P = a·b, distributional
  P = a·exp(λ·φ) with λ by moment matching (exact / importance-sampled), RLHF P = a·exp(r/β).
* :mod:`jalign.fdpg.proposals` — on-policy, and off-policy with replacement when KL(p‖π) improves.
* :mod:`jalign.fdpg.metrics` — KL(p‖π), KL(π‖p), JS, TV, entropy, KL(π‖a), E_π[b] (exact and IS), exact
  gradient-estimator variance, distinct-n.
* :mod:`jalign.fdpg.toy` — exactly solvable categorical problems and restricted policy families.
* :mod:`jalign.fdpg.loop` — a training loop over any sampler + log-prob function (the categorical toys);
  depends on optax.

The causal-LM side (word constraint, T-byte sample space of an LM, a one-compile multi-divergence trainer) is
:mod:`jalign.studies.fdpg_lm`, in the LLM-stack layer.

The loss itself is :func:`jalign.losses.fdpg`; the divergences are :mod:`jalign.divergences`.
"""

from jalign.fdpg import metrics, proposals, targets

__all__ = ["metrics", "proposals", "targets"]

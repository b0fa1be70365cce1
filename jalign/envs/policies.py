"""Policies for bandits: tabular softmax and linear (log-linear) softmax.

* Tabular: π(y | x) = softmax(θ_x)_y with θ ``[..., K]``; :func:`tabular_init` starts at π_ref (θ = ln π_ref).
* Linear: π(y | x) ∝ π_ref(y | x)·exp(w·φ(x, y)), features φ ``[X, K, D]``, parameters w ``[D]``; w = 0 is
  π_ref. With one-hot features (:func:`one_hot_features`) the linear policy is the tabular one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tabular_init(ref_logps):
    """Logits that give π = π_ref (a copy of ln π_ref)."""
    return jnp.asarray(ref_logps, jnp.float32)


def tabular_logps(logits):
    """ln softmax(logits) over the last axis."""
    return jax.nn.log_softmax(logits, axis=-1)


def linear_init(num_features: int):
    """w = 0 (the policy is π_ref)."""
    return jnp.zeros((num_features,), jnp.float32)


def linear_logps(w_D, features_XxKxD, ref_logps_XxK=None):
    """ln π(y | x) = ln softmax_y(ln π_ref(y | x) + w·φ(x, y)), ``[X, K]``."""
    scores = jnp.einsum("xkd,d->xk", jnp.asarray(features_XxKxD, jnp.float32), w_D)
    if ref_logps_XxK is not None:
        scores = scores + ref_logps_XxK
    return jax.nn.log_softmax(scores, axis=-1)


def one_hot_features(num_contexts: int, num_arms: int):
    """φ(x, y) = e_{x·K + y}: ``[X, K, X·K]`` (linear policy = tabular policy)."""
    return jnp.eye(num_contexts * num_arms, dtype=jnp.float32).reshape(num_contexts, num_arms, -1)

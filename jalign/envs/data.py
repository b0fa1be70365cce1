"""Off-policy pair data: y ~ μ1, y' ~ μ2 drawn independently (the CoPG setting), optionally labelled.

Pure functions of PRNG keys; probabilities are given explicitly (μ1, μ2 are arbitrary and need not be the
policy being trained).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jalign.envs.bandit import check_probs
from jalign.envs.preferences import sample_preferences


def _log(p):
    return jnp.log(jnp.asarray(p, jnp.float32))


def sample_pairs(key, mu1_K, mu2_K, n: int):
    """``n`` independent pairs (a, b) with a ~ μ1, b ~ μ2: two int32 arrays ``[n]``."""
    if int(n) < 1:
        raise ValueError(f"sample_pairs: argument n={n!r} must be >= 1")
    mu1_K = check_probs("sample_pairs", "mu1_K", mu1_K)
    mu2_K = check_probs("sample_pairs", "mu2_K", mu2_K, mu1_K.shape)
    k1, k2 = jax.random.split(key)
    a = jax.random.categorical(k1, _log(mu1_K), shape=(n,))
    b = jax.random.categorical(k2, _log(mu2_K), shape=(n,))
    return a.astype(jnp.int32), b.astype(jnp.int32)


def sample_labelled_pairs(key, mu1_K, mu2_K, rewards_K, n: int, model: str = "bradley_terry", *, scale=1.0):
    """Pairs from μ1 × μ2 with preference labels: ``(a, b, a_wins)``, ``a_wins`` ~ P(a ≻ b) under ``model``."""
    kp, kl = jax.random.split(key)
    a, b = sample_pairs(kp, mu1_K, mu2_K, n)
    r = jnp.asarray(rewards_K, jnp.float32)
    return a, b, sample_preferences(kl, r[a], r[b], model, scale=scale)


def sample_contextual_pairs(key, context_probs_X, mu1_XxK, mu2_XxK, n: int):
    """``n`` triples (x, a, b): x ~ ρ, a ~ μ1(·|x), b ~ μ2(·|x); three int32 arrays ``[n]``."""
    if int(n) < 1:
        raise ValueError(f"sample_contextual_pairs: argument n={n!r} must be >= 1")
    context_probs_X = check_probs("sample_contextual_pairs", "context_probs_X", context_probs_X)
    mu1_XxK = check_probs("sample_contextual_pairs", "mu1_XxK", mu1_XxK)
    mu2_XxK = check_probs("sample_contextual_pairs", "mu2_XxK", mu2_XxK, mu1_XxK.shape)
    kx, k1, k2 = jax.random.split(key, 3)
    x = jax.random.categorical(kx, _log(context_probs_X), shape=(n,))
    a = jax.random.categorical(k1, _log(mu1_XxK)[x])
    b = jax.random.categorical(k2, _log(mu2_XxK)[x])
    return x.astype(jnp.int32), a.astype(jnp.int32), b.astype(jnp.int32)

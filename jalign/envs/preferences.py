"""Preference models P(a ≻ b) = F(R(a) − R(b)) on known rewards, and sampling from them.

* ``"bradley_terry"``: F(d) = σ(d / scale) (logistic noise);
* ``"thurstone"``: F(d) = Φ(d / (√2·scale)) (two independent N(R, scale²) utilities);
* ``"linear"``: F(d) = clip(½ + d / (2·scale), 0, 1) (uniform noise / the linear-link model);
* ``"hard"``: F(d) = 1[d > 0] + ½·1[d = 0] (a noiseless annotator).

All models satisfy F(−d) = 1 − F(d) (so P(a ≻ b) + P(b ≻ a) = 1, and ties are ½).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

PREFERENCE_MODELS = ("bradley_terry", "thurstone", "linear", "hard")


def preference_prob(rewards_a, rewards_b, model: str = "bradley_terry", *, scale: float = 1.0):
    """P(a ≻ b) under ``model`` (elementwise)."""
    if model not in PREFERENCE_MODELS:
        raise ValueError(f"preference_prob: argument model={model!r} must be one of {PREFERENCE_MODELS}")
    if not isinstance(scale, jax.core.Tracer) and not float(scale) > 0:
        raise ValueError(f"preference_prob: argument scale={scale!r} must be > 0")
    d = jnp.asarray(rewards_a, jnp.float32) - jnp.asarray(rewards_b, jnp.float32)
    if model == "bradley_terry":
        return jax.nn.sigmoid(d / scale)
    if model == "thurstone":
        return ndtr(d / (jnp.sqrt(2.0) * scale))
    if model == "linear":
        return jnp.clip(0.5 + d / (2.0 * scale), 0.0, 1.0)
    return jnp.where(d > 0, 1.0, jnp.where(d < 0, 0.0, 0.5))


def preference_matrix(rewards_K, model: str = "bradley_terry", *, scale: float = 1.0):
    """``P[a, b]`` = P(a ≻ b) for all arm pairs, ``[K, K]``."""
    r = jnp.asarray(rewards_K, jnp.float32)
    return preference_prob(r[..., :, None], r[..., None, :], model, scale=scale)


def sample_preferences(key, rewards_a, rewards_b, model: str = "bradley_terry", *, scale: float = 1.0):
    """Boolean labels ``a_wins`` ~ Bernoulli(P(a ≻ b)) (elementwise)."""
    p = preference_prob(rewards_a, rewards_b, model, scale=scale)
    return jax.random.bernoulli(key, p)

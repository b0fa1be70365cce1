"""Bandits with known rewards and their exact KL-regularised objectives.

A policy over K arms is given by its log-probabilities ``logps_K`` (any leading batch axes broadcast). With a
reference policy π_ref and β > 0:

* E_π[R] = Σ_y π(y)·R(y);  KL(π‖π_ref) = Σ_y π(y)·(ln π(y) − ln π_ref(y));
* J_β(π) = E_π[R] − β·KL(π‖π_ref) = E_π[R^π_β] with R^π_β(y) = R(y) − β·ln π(y)/π_ref(y);
* the unique maximiser π*(y) = π_ref(y)·exp(R(y)/β)/Z, Z = Σ_y π_ref(y)·exp(R(y)/β), and J_β(π*) = β·ln Z;
* regret(π) = J_β(π*) − J_β(π) = β·KL(π‖π*) ≥ 0;
* :func:`beta_for_kl`: the β at which KL(π*_β‖π_ref) is a given value (comparisons at matched KL).

A contextual bandit adds contexts x ~ ρ: R(x, y), π_ref(y | x), and J_β = E_{x~ρ}[J_β(π(·|x))].

Everything is a pure function of arrays (no Python state), so ``jax.vmap`` over seeds, β or bandits works.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jalign.losses import pytree_dataclass
from jalign.numerics import as_float, check_positive


def _check_beta(fn: str, beta) -> None:
    check_positive(fn, "beta", beta)


_f32 = as_float


def _plogp_ratio(logps, ref_logps):
    """π·(ln π − ln π_ref), 0 where π = 0 (safe for gradients)."""
    p = jnp.exp(logps)
    safe = jnp.where(p > 0, logps - ref_logps, 0.0)
    return p * safe


def expected_reward(logps_K, rewards_K):
    """E_{y~π}[R(y)] over the last axis."""
    return jnp.sum(jnp.exp(_f32(logps_K)) * _f32(rewards_K), axis=-1)


def kl(logps_K, ref_logps_K):
    """KL(π‖π_ref) = Σ_y π(y)·(ln π(y) − ln π_ref(y)) over the last axis."""
    return jnp.sum(_plogp_ratio(_f32(logps_K), _f32(ref_logps_K)), axis=-1)


def objective(logps_K, rewards_K, ref_logps_K, beta):
    """J_β(π) = E_π[R] − β·KL(π‖π_ref) over the last axis."""
    _check_beta("objective", beta)
    return expected_reward(logps_K, rewards_K) - _f32(beta) * kl(logps_K, ref_logps_K)


def regularised_rewards(logps_K, rewards_K, ref_logps_K, beta):
    """R^π_β(y) = R(y) − β·(ln π(y) − ln π_ref(y)), elementwise."""
    _check_beta("regularised_rewards", beta)
    return _f32(rewards_K) - _f32(beta) * (_f32(logps_K) - _f32(ref_logps_K))


def optimal_logps(rewards_K, ref_logps_K, beta):
    """ln π*(y) with π* ∝ π_ref·exp(R/β) (last axis)."""
    _check_beta("optimal_logps", beta)
    return jax.nn.log_softmax(_f32(ref_logps_K) + _f32(rewards_K) / _f32(beta), axis=-1)


def optimal_value(rewards_K, ref_logps_K, beta):
    """J_β(π*) = β·ln Σ_y π_ref(y)·exp(R(y)/β)."""
    _check_beta("optimal_value", beta)
    beta = _f32(beta)
    return beta * jax.nn.logsumexp(_f32(ref_logps_K) + _f32(rewards_K) / beta, axis=-1)


def regret(logps_K, rewards_K, ref_logps_K, beta):
    """J_β(π*) − J_β(π), computed as the identical β·KL(π‖π*) (≥ 0, no cancellation near the optimum)."""
    return _f32(beta) * kl(logps_K, optimal_logps(rewards_K, ref_logps_K, beta))


def beta_for_kl(rewards_K, ref_logps_K, target_kl, *, beta_min=1e-4, beta_max=1e4, iters=100):
    """The β at which the optimum π_β ∝ π_ref·exp(R/β) has KL(π_β‖π_ref) = ``target_kl`` (last axis).

    KL(π_β‖π_ref) decreases strictly in β for rewards that are not constant on the support of π_ref
    (d KL/d(1/β) = Var_{π_β}(R)/β > 0), from the KL of the best arms (β → 0) to 0 (β → ∞), so bisection on
    ln β finds it; ``iters`` halvings of [ln β_min, ln β_max] (100 reach float64 resolution). Used to compare
    policies of different rewards at matched KL. A target outside the attainable range returns the nearest
    end (β_min or β_max); check the attained KL. jit- and vmap-able (over rewards and targets).

    Args:
      rewards_K: R ``[K]`` (or ``[..., K]``).
      ref_logps_K: ln π_ref ``[K]`` (broadcast against the rewards).
      target_kl: the KL to reach (nats, ≥ 0; broadcast against the leading axes).
      beta_min, beta_max: the bracket (0 < β_min < β_max).
      iters: bisection steps (≥ 1).

    Returns:
      β with the leading shape of the rewards (float32 or wider).

    >>> import jax.numpy as jnp
    >>> ref = jnp.log(jnp.full(3, 1 / 3))
    >>> b = beta_for_kl(jnp.array([1.0, 0.0, -1.0]), ref, 0.2)
    >>> round(float(kl(optimal_logps(jnp.array([1.0, 0.0, -1.0]), ref, b), ref)), 5)
    0.2
    """
    check_positive("beta_for_kl", "beta_min", beta_min)
    check_positive("beta_for_kl", "beta_max", beta_max)
    if not isinstance(beta_min, jax.core.Tracer) and not isinstance(beta_max, jax.core.Tracer):
        if not beta_min < beta_max:
            raise ValueError(f"beta_for_kl: arguments beta_min={beta_min!r} < beta_max={beta_max!r} required")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"beta_for_kl: argument iters={iters!r} must be an integer >= 1")
    r, ref = _f32(rewards_K), _f32(ref_logps_K)
    target = _f32(target_kl)
    shape = jnp.broadcast_shapes(r.shape[:-1], ref.shape[:-1], target.shape)
    lo = jnp.full(shape, jnp.log(_f32(beta_min)))
    hi = jnp.full(shape, jnp.log(_f32(beta_max)))

    def body(_, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        k = kl(optimal_logps(r, ref, jnp.exp(mid)[..., None]), ref)
        above = k > target  # KL too large: β must grow
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def overlap(probs_a, probs_b):
    """Σ_y min(p_a(y), p_b(y)) = 1 − TV(p_a, p_b) ∈ [0, 1] over the last axis (1 = identical)."""
    return jnp.sum(jnp.minimum(_f32(probs_a), _f32(probs_b)), axis=-1)


@pytree_dataclass
class Bandit:
    """A K-armed bandit with known rewards and a reference policy (a pytree: vmap over stacks of bandits).

    Attributes:
      rewards: R(y), ``[K]``.
      ref_logps: ln π_ref(y), ``[K]``.
    """

    rewards: jax.Array
    ref_logps: jax.Array

    @property
    def num_arms(self) -> int:
        return self.rewards.shape[-1]

    def objective(self, logps_K, beta):
        return objective(logps_K, self.rewards, self.ref_logps, beta)

    def optimal_logps(self, beta):
        return optimal_logps(self.rewards, self.ref_logps, beta)

    def optimal_value(self, beta):
        return optimal_value(self.rewards, self.ref_logps, beta)

    def regret(self, logps_K, beta):
        return regret(logps_K, self.rewards, self.ref_logps, beta)


@pytree_dataclass
class ContextualBandit:
    """A contextual bandit: contexts x ~ ρ, rewards R(x, y), reference π_ref(y | x).

    Attributes:
      rewards: R(x, y), ``[X, K]``.
      ref_logps: ln π_ref(y | x), ``[X, K]``.
      context_logps: ln ρ(x), ``[X]``.
    """

    rewards: jax.Array
    ref_logps: jax.Array
    context_logps: jax.Array

    def _avg(self, per_context_X):
        return jnp.sum(jnp.exp(_f32(self.context_logps)) * per_context_X, axis=-1)

    def expected_reward(self, logps_XxK):
        return self._avg(expected_reward(logps_XxK, self.rewards))

    def kl(self, logps_XxK):
        return self._avg(kl(logps_XxK, self.ref_logps))

    def objective(self, logps_XxK, beta):
        return self._avg(objective(logps_XxK, self.rewards, self.ref_logps, beta))

    def optimal_logps(self, beta):
        return optimal_logps(self.rewards, self.ref_logps, beta)

    def optimal_value(self, beta):
        return self._avg(optimal_value(self.rewards, self.ref_logps, beta))

    def regret(self, logps_XxK, beta):
        return self.optimal_value(beta) - self.objective(logps_XxK, beta)


def k_armed(rewards_K, ref_probs_K=None) -> Bandit:
    """A :class:`Bandit` from rewards and reference probabilities (uniform when ``None``)."""
    rewards_K = _f32(rewards_K)
    if rewards_K.ndim != 1 or rewards_K.shape[0] < 2:
        raise ValueError(f"k_armed: argument 'rewards_K' must be 1-D with >= 2 arms, got {rewards_K.shape}")
    if ref_probs_K is None:
        ref = jnp.full(rewards_K.shape, -jnp.log(rewards_K.shape[0]), rewards_K.dtype)
    else:
        ref = jnp.log(check_probs("k_armed", "ref_probs_K", ref_probs_K, rewards_K.shape))
    return Bandit(rewards=rewards_K, ref_logps=ref)


def check_probs(fn: str, name: str, probs, shape=None):
    """Concrete probability vectors (last axis) must be finite, ≥ 0 and sum to 1; returns them as float32."""
    p = _f32(probs)
    if shape is not None and tuple(p.shape) != tuple(shape):
        raise ValueError(f"{fn}: argument {name!r} must have shape {tuple(shape)}, got {tuple(p.shape)}")
    if not isinstance(probs, jax.core.Tracer):
        v = np.asarray(p, np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"{fn}: argument {name!r} must be finite and >= 0")
        if not np.allclose(v.sum(-1), 1.0, atol=1e-5):
            raise ValueError(f"{fn}: argument {name!r} must sum to 1 over the last axis, got {v.sum(-1)}")
    return p


def random_bandit(key, num_arms: int, *, reward_scale: float = 1.0, uniform_reference: bool = False) -> Bandit:
    """A random K-armed bandit: R ~ N(0, reward_scale²), π_ref ~ Dirichlet(1) (or uniform)."""
    kr, kp = jax.random.split(key)
    rewards = reward_scale * jax.random.normal(kr, (num_arms,))
    if uniform_reference:
        ref = jnp.full((num_arms,), -jnp.log(num_arms))
    else:
        ref = jnp.log(jax.random.dirichlet(kp, jnp.ones(num_arms)))
    return Bandit(rewards=rewards, ref_logps=ref)


def random_contextual_bandit(key, num_contexts: int, num_arms: int, *, reward_scale: float = 1.0) -> ContextualBandit:
    """A random contextual bandit: R ~ N(0, s²), π_ref(·|x) ~ Dirichlet(1), ρ ~ Dirichlet(1)."""
    kr, kp, kc = jax.random.split(key, 3)
    return ContextualBandit(
        rewards=reward_scale * jax.random.normal(kr, (num_contexts, num_arms)),
        ref_logps=jnp.log(jax.random.dirichlet(kp, jnp.ones(num_arms), (num_contexts,))),
        context_logps=jnp.log(jax.random.dirichlet(kc, jnp.ones(num_contexts))),
    )

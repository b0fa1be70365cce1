"""f-DPG metrics: exact on categorical problems, importance-sampled from proposal samples, distinct-n for text.

Exact (every outcome's log-prob known): :func:`exact_metrics` — KL(p‖π), KL(π‖p), JS(π,p), TV(π,p), entropy
H(π), KL(π‖a), E_π[b] / E_π[r]; :func:`exact_gradient_moments` — the mean and covariance trace of the
per-sample f-DPG gradient estimator under a proposal (the estimator's variance, exactly).

From samples x_i ~ q (``policy_logps`` log π(x_i), ``target_logps`` log P(x_i) unnormalised,
``proposal_logps`` log q(x_i)): :func:`is_divergence` estimates D_f(π‖p) = E_q[(p/q)·f(π/p)] with
p = P/Ẑ, Ẑ the IS estimate (1/N)Σ P/q unless ``log_z`` is given; :func:`is_expectation` estimates E_π[v]
(self-normalised by default).
"""

from __future__ import annotations

import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

from jalign import divergences as _div


def _f(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ---------------------------------------------------------------------------------------------------------
# Exact (categorical).


def entropy(log_pi, axis: int = -1):
    """H(π) = −Σ π log π (zero-probability outcomes contribute 0)."""
    log_pi = _f(log_pi)
    fin = jnp.isfinite(log_pi)
    safe = jnp.where(fin, log_pi, 0.0)
    return -jnp.sum(jnp.where(fin, jnp.exp(safe) * safe, 0.0), axis=axis)


def expectation(log_pi, values, axis: int = -1):
    """E_π[v] = Σ π v."""
    return jnp.sum(jnp.exp(_f(log_pi)) * _f(values), axis=axis)


def exact_metrics(log_pi, log_p, *, log_a=None, b=None, reward=None) -> dict:
    """The f-DPG metrics of a categorical policy against a normalised target.

    Args:
      log_pi: log π over all outcomes, ``[..., K]``.
      log_p: log p (normalised), ``[..., K]``.
      log_a: log a, the base model (optional): adds ``kl_pi_a`` = KL(π‖a).
      b: constraint b(x) (optional): adds ``expected_b`` = E_π[b].
      reward: r(x) (optional): adds ``expected_reward`` = E_π[r].

    Returns:
      dict with ``kl_p_pi`` = KL(p‖π), ``kl_pi_p`` = KL(π‖p), ``js``, ``tv``, ``entropy`` (and the optional
      keys above).
    """
    out = {
        "kl_p_pi": _div.divergence("forward_kl", log_pi, log_p),
        "kl_pi_p": _div.divergence("reverse_kl", log_pi, log_p),
        "js": _div.divergence("js", log_pi, log_p),
        "tv": _div.divergence("tv", log_pi, log_p),
        "entropy": entropy(log_pi),
    }
    if log_a is not None:
        out["kl_pi_a"] = _div.divergence("reverse_kl", log_pi, log_a)
    if b is not None:
        out["expected_b"] = expectation(log_pi, b)
    if reward is not None:
        out["expected_reward"] = expectation(log_pi, reward)
    return out


def exact_gradient_moments(jac_KxP, log_pi, log_p, log_q, *, divergence, baseline=0.0):
    """Exact mean and covariance trace of the one-sample f-DPG gradient estimator under x ~ q.

    The per-sample gradient of the surrogate (:func:`jalign.losses.fdpg`) is
    g(x) = w(x)·(f'(π/p)(x) + B)·∇log π(x) with w = π/q (B the baseline subtracted from the pseudo-reward
    −f'). Then E_q[g] = ∇D_f(π‖p) and the estimator's variance is tr Cov_q[g] = E_q‖g‖² − ‖E_q g‖².

    Args:
      jac_KxP: ∇_θ log π(x) for every outcome x, ``[K, P]`` (e.g. ``jax.jacobian`` of the log-probs).
      log_pi: log π, ``[K]``.
      log_p: log p (normalised), ``[K]``.
      log_q: log q, ``[K]`` (on-policy: ``log_pi``).
      divergence: a name or a :class:`~jalign.divergences.Divergence`.
      baseline: B, a constant.

    Returns:
      dict ``mean`` ([P], = ∇D_f), ``second_moment`` (E_q‖g‖²), ``trace_cov`` (tr Cov_q[g]) and
      ``relative_variance`` = tr Cov / ‖E g‖² (the inverse signal-to-noise ratio of one sample).
    """
    d = _div.get(divergence)
    lpi, lp, lq = _f(log_pi), _f(log_p), _f(log_q)
    coef = jnp.exp(lpi - lq) * (d.f_prime_log(lpi - lp) + baseline)
    g = coef[:, None] * _f(jac_KxP)
    q = jnp.exp(lq)
    mean = q @ g
    second = q @ jnp.sum(g * g, axis=-1)
    trace_cov = second - jnp.sum(mean * mean)
    return {
        "mean": mean,
        "second_moment": second,
        "trace_cov": trace_cov,
        "relative_variance": trace_cov / jnp.sum(mean * mean),
    }


# ---------------------------------------------------------------------------------------------------------
# Importance-sampled estimates.


def is_log_z(target_logps, proposal_logps):
    """log Ẑ = log (1/N) Σ P(x_i)/q(x_i) from x_i ~ q."""
    lw = _f(target_logps) - _f(proposal_logps)
    return jax.nn.logsumexp(lw) - math.log(lw.shape[-1])


def is_divergence(divergence, policy_logps, target_logps, proposal_logps, *, log_z=None):
    """IS estimate of D_f(π‖p) = E_q[(p/q)·f(π/p)] = (1/N) Σ_i term(log π_i − log q_i, log p_i − log q_i).

    The term p·f(π/p) (:func:`jalign.divergences.terms`, zeros of p handled) is positively homogeneous, so the 1/q factor is applied in log space. With
    ``log_z=None`` the target is normalised by the IS estimate :func:`is_log_z` from the same samples
    (consistent, slightly biased). forward_kl gives KL(p‖π), reverse_kl KL(π‖p).
    """
    if log_z is None:
        log_z = is_log_z(target_logps, proposal_logps)
    lq = _f(proposal_logps)
    lp = _f(target_logps) - _f(log_z)
    return jnp.mean(_div.terms(divergence, _f(policy_logps) - lq, lp - lq))


def is_expectation(values, policy_logps, proposal_logps, *, self_normalised: bool = True):
    """IS estimate of E_π[v] from x_i ~ q: Σ w v / Σ w (self-normalised) or (1/N) Σ w v, w = π/q."""
    lw = _f(policy_logps) - _f(proposal_logps)
    v = _f(values)
    if self_normalised:
        return jax.nn.softmax(lw) @ v
    return jnp.mean(jnp.exp(lw) * v)


def is_entropy(policy_logps, proposal_logps, *, self_normalised: bool = True):
    """IS estimate of H(π) = E_π[−log π]."""
    return is_expectation(-_f(policy_logps), policy_logps, proposal_logps, self_normalised=self_normalised)


def is_kl_policy_base(policy_logps, base_logps, proposal_logps, *, self_normalised: bool = True):
    """IS estimate of KL(π‖a) = E_π[log π − log a]."""
    return is_expectation(
        _f(policy_logps) - _f(base_logps), policy_logps, proposal_logps, self_normalised=self_normalised
    )


# ---------------------------------------------------------------------------------------------------------
# Text diversity.


def distinct_n(sequences, n: int, lengths=None) -> float:
    """Distinct-n: the number of distinct n-grams over the total number of n-grams in a set of sequences.

    Args:
      sequences: token ids ``[N, T]`` (array or list of lists).
      n: n-gram order ≥ 1.
      lengths: valid length of each sequence ``[N]`` (default: all T; ragged lists use their own lengths).

    Returns:
      A float in [0, 1]; 0.0 when there are no n-grams.
    """
    if int(n) < 1:
        raise ValueError(f"distinct_n: n={n!r} must be >= 1")
    seqs = [list(map(int, s)) for s in sequences]
    if lengths is not None:
        lengths = [int(x) for x in np.asarray(lengths).reshape(-1)]
        if len(lengths) != len(seqs):
            raise ValueError(f"distinct_n: {len(lengths)} lengths for {len(seqs)} sequences")
        for i, (s, ln) in enumerate(zip(seqs, lengths, strict=True)):
            if not 0 <= ln <= len(s):
                raise ValueError(f"distinct_n: lengths[{i}]={ln} outside [0, {len(s)}]")
        seqs = [s[:ln] for s, ln in zip(seqs, lengths, strict=True)]
    grams: Counter = Counter()
    for s in seqs:
        for i in range(len(s) - n + 1):
            grams[tuple(s[i : i + n])] += 1
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


__all__ = [
    "distinct_n",
    "entropy",
    "exact_gradient_moments",
    "exact_metrics",
    "expectation",
    "is_divergence",
    "is_entropy",
    "is_expectation",
    "is_kl_policy_base",
    "is_log_z",
]

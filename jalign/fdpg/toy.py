"""Exactly computable f-DPG toys: a categorical target over K ordered outcomes and small policy families.

The default problem (:func:`bimodal_toy`) is an RLHF-style target over K = 40 outcomes x = 0..K−1:
a broad unimodal base model a (a discretised Gaussian, mean 12, std 8), a binary "constraint" b(x) = 1 on two
separated blocks [5, 11) and [26, 32), and the target p ∝ a·exp(b/β), β = ¼ — two modes of unequal mass
(0.83 / 0.13) with a thin background, full support so that every divergence is finite. Alignment is E_π[b]; diversity is H(π) (and KL(π‖a)).

Policy families (``init(toy) -> params``, ``log_probs(params) -> [K]``):

* :class:`GaussianFamily` — discretised Gaussian, θ = (μ, log σ): unimodal, so it *cannot* represent the
  bimodal p; this is where mode-seeking (reverse KL) vs mass-covering (forward KL) shows.
* :class:`SoftmaxFamily` — a full softmax, θ ∈ R^K: every divergence's minimiser is p itself, only the
  dynamics differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class CategoricalToy:
    """A categorical alignment problem with every probability known.

    Attributes:
      x: outcome positions, ``[K]`` float.
      log_a: log a, the base model (normalised), ``[K]``.
      b: the constraint / reward b(x) ∈ {0, 1}, ``[K]``.
      log_P: log P, the unnormalised target, ``[K]``.
      beta: β of the target P = a·exp(b/β).
    """

    x: np.ndarray
    log_a: np.ndarray
    b: np.ndarray
    log_P: np.ndarray
    beta: float

    @property
    def K(self) -> int:
        return int(self.x.shape[0])

    @property
    def log_z(self) -> float:
        m = self.log_P.max()
        return float(m + np.log(np.exp(self.log_P - m).sum()))

    @property
    def log_p(self) -> np.ndarray:
        return self.log_P - self.log_z


def _log_gauss(x, mu, sigma):
    s = -0.5 * ((x - mu) / sigma) ** 2
    return s - jax.nn.logsumexp(s)


def bimodal_toy(
    K: int = 40,
    *,
    base_mean: float = 12.0,
    base_std: float = 8.0,
    modes: tuple[tuple[int, int], ...] = ((5, 11), (26, 32)),
    beta: float = 0.25,
) -> CategoricalToy:
    """The bimodal RLHF-style target p ∝ a·exp(b/β) over ``K`` outcomes.

    Args:
      K: number of outcomes.
      base_mean, base_std: the discretised Gaussian base model a.
      modes: half-open blocks [lo, hi) where b = 1.
      beta: β > 0; smaller β concentrates p on the blocks.
    """
    if K < 4:
        raise ValueError(f"bimodal_toy: K={K} must be >= 4")
    if not beta > 0:
        raise ValueError(f"bimodal_toy: beta={beta!r} must be > 0")
    x = np.arange(K, dtype=np.float64)
    la = np.asarray(_log_gauss(jnp.asarray(x), base_mean, base_std), np.float64)
    la = la - np.log(np.exp(la).sum())
    b = np.zeros(K)
    for lo, hi in modes:
        if not 0 <= lo < hi <= K:
            raise ValueError(f"bimodal_toy: mode block [{lo}, {hi}) outside [0, {K})")
        b[lo:hi] = 1.0
    return CategoricalToy(x=x, log_a=la, b=b, log_P=la + b / beta, beta=float(beta))


@dataclasses.dataclass(frozen=True)
class GaussianFamily:
    """Discretised Gaussian policy over the toy's positions: log π_k ∝ −(x_k − μ)²/(2σ²), θ = (μ, log σ)."""

    x: Any

    def init(self, mean: float, std: float):
        return jnp.array([mean, np.log(std)], jnp.float32)

    def log_probs(self, params):
        return _log_gauss(jnp.asarray(self.x, params.dtype), params[0], jnp.exp(params[1]))


@dataclasses.dataclass(frozen=True)
class SoftmaxFamily:
    """Full softmax policy: log π = log_softmax(θ), θ ∈ R^K."""

    K: int

    def init(self, log_a):
        return jnp.asarray(log_a, jnp.float32)

    def log_probs(self, params):
        return jax.nn.log_softmax(params)


__all__ = ["CategoricalToy", "GaussianFamily", "SoftmaxFamily", "bimodal_toy"]

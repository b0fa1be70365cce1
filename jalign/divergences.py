"""f-divergences D_f(π‖p) in log space: generators f, derivatives f', exact values, and a registry by name.

Convention (f-DPG, Go et al., ICML 2023, arXiv 2302.08215): for a policy π and a target p,

    D_f(π‖p) = Σ_x p(x) · f(π(x) / p(x)),        f convex, f(1) = 0,

and every function here takes the *log-ratio* t = log π − log p instead of the ratio u = π/p, so that
nothing overflows when π and p are sequence probabilities (log-probs of −200 are ordinary). Names follow the
paper's directions: ``forward_kl`` is KL(p‖π) (the original DPG/GDC objective, mass-covering),
``reverse_kl`` is KL(π‖p) (RL with a KL penalty, mode-seeking). χ² is named the same way:
``chi2`` = χ²(p‖π) (forward, mass-covering) and ``reverse_chi2`` = χ²(π‖p) (reverse, mode-seeking).

============  ======================  ===========================  ==========================  ===============
name          D_f(π‖p)                f(u)                         f'(u) (t = log u)           pseudo-reward −f'
============  ======================  ===========================  ==========================  ===============
forward_kl    KL(p‖π)                 −log u                       −1/u = −e^{−t}              p/π
reverse_kl    KL(π‖p)                 u log u                      log u + 1 = t + 1           −t − 1
js            JS(π, p)  (see below)   ½[u log u − (1+u) log((1+u)/2)]  ½ log(2u/(1+u))         ½ softplus(−t) − ½ log 2
tv            TV(π, p) = ½Σ|π−p|      ½|u − 1|                     ½ sign(u − 1)               −½ sign(t)
chi2          χ²(p‖π) = Σ(p−π)²/π     (1 − u)²/u                   1 − 1/u² = −expm1(−2t)      expm1(−2t)
reverse_chi2  χ²(π‖p) = Σ(π−p)²/p     (u − 1)²                     2(u − 1) = 2 expm1(t)       −2 expm1(t)
alpha         Amari α-divergence      (u^α − 1 − α(u−1))/(α(α−1))  (u^{α−1} − 1)/(α−1)         −expm1((α−1)t)/(α−1)
============  ======================  ===========================  ==========================  ===============

**Jensen–Shannon convention.** ``js`` is the standard Jensen–Shannon divergence *with* the ½:
JS(π, p) = ½ KL(π‖m) + ½ KL(p‖m), m = (π + p)/2, in nats, symmetric and bounded by log 2; its f' is
½ log(2u/(1+u)). The f-DPG reference code drops the ½ in the loss (but keeps it in the JS metric); that only
doubles the gradient, i.e. the learning rate. Here the loss and the metric use the same JS.

**α family.** f_α(u) = (u^α − 1 − α(u − 1)) / (α(α − 1)); α → 1 is u log u − u + 1 (reverse KL; the linear
term integrates to 0), α → 0 is −log u + u − 1 (forward KL), α = ½ is 4·Hellinger² = 2 Σ(√π − √p)²,
α = 2 is ½ χ²(π‖p), α = −1 is ½ χ²(p‖π). α ≥ 1 is mode-seeking, α ≤ 0 mass-covering.

Zeros: where p(x) = 0 < π(x) the term p·f(π/p) is its limit π(x)·f'(∞) (``slope_at_inf``: ∞ for reverse
KL, reverse χ² and α > 1, so that those divergences are infinite); where π(x) = 0 < p(x) the term is
p(x)·f(0) (``f_at_zero``: ∞ for forward KL, χ² and α ≤ 0). Outcomes with π = p = 0 contribute 0.

Sample-based estimates of KL(π‖π_ref) from y ~ π (Schulman's k1, k2, k3, as RLHF trainers add them to
their losses) are :func:`kl_estimate`.

>>> import jax.numpy as jnp
>>> from jalign import divergences
>>> log_pi = jnp.log(jnp.array([0.5, 0.5])); log_p = jnp.log(jnp.array([0.25, 0.75]))
>>> round(float(divergences.divergence("tv", log_pi, log_p)), 6)
0.25
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

LOG2 = math.log(2.0)


def _float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.float32)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def log_abs_expm1(x):
    """log|e^x − 1|, stable for large |x| (= x + log(1 − e^{−x}) for x > 0)."""
    x = _float(x)
    pos = x > 0
    xp = jnp.where(pos, x, 1.0)
    xn = jnp.where(pos, -1.0, x)
    return jnp.where(pos, xp + jnp.log(-jnp.expm1(-xp)), jnp.log(-jnp.expm1(xn)))


def _scaled_sq_expm1(log_s, d, cut: float = 30.0):
    """e^{log_s}·(e^d − 1)², exact-gradient safe: direct for |d| < cut, in log space beyond (no 0·inf)."""
    small = jnp.abs(d) < cut
    d_small = jnp.where(small, d, 0.0)
    d_large = jnp.where(small, cut, d)
    return jnp.where(
        small, jnp.exp(log_s) * jnp.expm1(d_small) ** 2, jnp.exp(log_s + 2.0 * log_abs_expm1(d_large))
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Divergence:
    """An f-divergence D_f(π‖p) = Σ p f(π/p), given by functions of the log-ratio t = log π − log p.

    Attributes:
      name: registry name (``"alpha"`` divergences carry their α in ``params``).
      f_log: t ↦ f(e^t).
      f_prime_log: t ↦ f'(e^t); the f-DPG pseudo-reward is −f'(π/p).
      term: (log π, log p) ↦ p·f(π/p), computed stably for finite log-probs (used by :func:`divergence`).
      f_at_zero: f(0) = lim_{u→0} f(u) (may be ``inf``).
      slope_at_inf: lim_{u→∞} f(u)/u = f'(∞) (may be ``inf``).
      params: hyperparameters (e.g. ``{"alpha": 0.5}``); part of equality and hashing.
      description: the divergence in words.

    Equality and hashing use ``(name, params)``, so a :class:`Divergence` can be a static argument of
    ``jax.jit``.
    """

    name: str
    f_log: Callable[[Any], Any]
    f_prime_log: Callable[[Any], Any]
    term: Callable[[Any, Any], Any]
    f_at_zero: float
    slope_at_inf: float
    params: tuple[tuple[str, float], ...] = ()
    description: str = ""

    def f(self, u):
        """The generator f(u) at ratios u = π/p > 0."""
        return self.f_log(jnp.log(_float(u)))

    def f_prime(self, u):
        """The derivative f'(u) at ratios u = π/p > 0."""
        return self.f_prime_log(jnp.log(_float(u)))

    def pseudo_reward(self, t):
        """The f-DPG pseudo-reward r = −f'(e^t) at log-ratios t = log π − log p."""
        return -self.f_prime_log(t)

    def __eq__(self, other):
        return isinstance(other, Divergence) and (self.name, self.params) == (other.name, other.params)

    def __hash__(self):
        return hash(("Divergence", self.name, self.params))

    def __repr__(self):
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"Divergence({self.name!r}{', ' + ps if ps else ''})"


# ---------------------------------------------------------------------------------------------------------
# The divergences. Each `term(lq, lp)` is p·f(π/p) for finite log-probs lq = log π, lp = log p.


def _forward_kl() -> Divergence:
    return Divergence(
        name="forward_kl",
        f_log=lambda t: -_float(t),
        f_prime_log=lambda t: -jnp.exp(-_float(t)),
        term=lambda lq, lp: jnp.exp(lp) * (lp - lq),
        f_at_zero=math.inf,
        slope_at_inf=0.0,
        description="KL(p‖π) = Σ p log(p/π) (mass-covering; f-DPG with it is DPG/GDC)",
    )


def _reverse_kl() -> Divergence:
    return Divergence(
        name="reverse_kl",
        f_log=lambda t: _float(t) * jnp.exp(_float(t)),
        f_prime_log=lambda t: _float(t) + 1.0,
        term=lambda lq, lp: jnp.exp(lq) * (lq - lp),
        f_at_zero=0.0,
        slope_at_inf=math.inf,
        description="KL(π‖p) = Σ π log(π/p) (mode-seeking; with p ∝ a·exp(r/β) it is KL-regularised RL)",
    )


def _js() -> Divergence:
    def f_log(t):
        t = _float(t)
        return 0.5 * (jnp.exp(t) * (LOG2 - jax.nn.softplus(-t)) + (LOG2 - jax.nn.softplus(t)))

    def term(lq, lp):
        t = lq - lp
        return 0.5 * (jnp.exp(lq) * (LOG2 - jax.nn.softplus(-t)) + jnp.exp(lp) * (LOG2 - jax.nn.softplus(t)))

    return Divergence(
        name="js",
        f_log=f_log,
        f_prime_log=lambda t: 0.5 * (LOG2 - jax.nn.softplus(-_float(t))),
        term=term,
        f_at_zero=0.5 * LOG2,
        slope_at_inf=0.5 * LOG2,
        description="JS(π,p) = ½KL(π‖m) + ½KL(p‖m), m = (π+p)/2, in nats, ≤ log 2 (with the ½)",
    )


def _tv() -> Divergence:
    return Divergence(
        name="tv",
        f_log=lambda t: 0.5 * jnp.abs(jnp.expm1(_float(t))),
        f_prime_log=lambda t: 0.5 * jnp.sign(_float(t)),
        term=lambda lq, lp: 0.5 * jnp.abs(jnp.exp(lq) - jnp.exp(lp)),
        f_at_zero=0.5,
        slope_at_inf=0.5,
        description="TV(π,p) = ½ Σ |π − p| ∈ [0, 1]; f'(1) taken as 0",
    )


def _chi2() -> Divergence:
    # χ²(p‖π) = Σ (p − π)²/π = Σ π (e^{−t} − 1)², generator (1 − u)²/u.
    return Divergence(
        name="chi2",
        f_log=lambda t: jnp.exp(_float(t)) * jnp.expm1(-_float(t)) ** 2,
        f_prime_log=lambda t: -jnp.expm1(-2.0 * _float(t)),
        term=lambda lq, lp: _scaled_sq_expm1(lq, lp - lq),
        f_at_zero=math.inf,
        slope_at_inf=1.0,
        description="Neyman-direction χ²(p‖π) = Σ (p − π)²/π (forward, mass-covering)",
    )


def _reverse_chi2() -> Divergence:
    # χ²(π‖p) = Σ (π − p)²/p = Σ p (e^t − 1)², generator (u − 1)².
    return Divergence(
        name="reverse_chi2",
        f_log=lambda t: jnp.expm1(_float(t)) ** 2,
        f_prime_log=lambda t: 2.0 * jnp.expm1(_float(t)),
        term=lambda lq, lp: _scaled_sq_expm1(lp, lq - lp),
        f_at_zero=1.0,
        slope_at_inf=math.inf,
        description="Pearson χ²(π‖p) = Σ (π − p)²/p (reverse, mode-seeking)",
    )


def alpha(alpha: float = 0.5) -> Divergence:
    """Amari's α-divergence, f_α(u) = (u^α − 1 − α(u − 1)) / (α(α − 1)); α = 0, 1 are the KL limits.

    Args:
      alpha: α, any finite real. α = 1 gives u log u − u + 1 (reverse KL), α = 0 gives −log u + u − 1 (forward
        KL), α = ½ gives 2 Σ(√π − √p)².

    Returns:
      A :class:`Divergence` named ``"alpha"`` with ``params == (("alpha", α),)``.
    """
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"divergence 'alpha': hyperparameter alpha={alpha!r} must be a finite number") from None
    if not math.isfinite(a):
        raise ValueError(f"divergence 'alpha': hyperparameter alpha={a!r} must be finite")
    params = (("alpha", a),)
    desc = f"Amari α-divergence, α = {a}"
    if a == 1.0:
        return Divergence(
            name="alpha",
            f_log=lambda t: _float(t) * jnp.exp(_float(t)) - jnp.expm1(_float(t)),
            f_prime_log=lambda t: _float(t),
            term=lambda lq, lp: jnp.exp(lq) * (lq - lp) - (jnp.exp(lq) - jnp.exp(lp)),
            f_at_zero=1.0,
            slope_at_inf=math.inf,
            params=params,
            description=desc + " (reverse KL + Σ(p − π))",
        )
    if a == 0.0:
        return Divergence(
            name="alpha",
            f_log=lambda t: jnp.expm1(_float(t)) - _float(t),
            f_prime_log=lambda t: -jnp.expm1(-_float(t)),
            term=lambda lq, lp: jnp.exp(lp) * (lp - lq) + (jnp.exp(lq) - jnp.exp(lp)),
            f_at_zero=math.inf,
            slope_at_inf=1.0,
            params=params,
            description=desc + " (forward KL + Σ(π − p))",
        )
    c = a * (a - 1.0)

    def f_log(t):
        t = _float(t)
        return (jnp.expm1(a * t) - a * jnp.expm1(t)) / c

    def term(lq, lp):
        # p·f(π/p) = (p^{1−α} π^α − p − α(π − p)) / (α(α − 1))
        return (jnp.exp((1.0 - a) * lp + a * lq) - jnp.exp(lp) - a * (jnp.exp(lq) - jnp.exp(lp))) / c

    return Divergence(
        name="alpha",
        f_log=f_log,
        f_prime_log=lambda t: jnp.expm1((a - 1.0) * _float(t)) / (a - 1.0),
        term=term,
        f_at_zero=(1.0 / a) if a > 0 else math.inf,
        slope_at_inf=(1.0 / (1.0 - a)) if a < 1 else math.inf,
        params=params,
        description=desc,
    )


_REGISTRY: dict[str, Callable[..., Divergence]] = {
    "forward_kl": _forward_kl,
    "reverse_kl": _reverse_kl,
    "js": _js,
    "tv": _tv,
    "chi2": _chi2,
    "reverse_chi2": _reverse_chi2,
    "alpha": alpha,
}


def names() -> list[str]:
    """The registered divergence names."""
    return list(_REGISTRY)


def register(name: str, factory: Callable[..., Divergence]) -> None:
    """Register ``factory(**params) -> Divergence`` under ``name`` (names are unique)."""
    if name in _REGISTRY:
        raise ValueError(f"divergence {name!r} is already registered")
    _REGISTRY[name] = factory


def get(divergence: str | Divergence, **params: Any) -> Divergence:
    """Resolve a name (with optional hyperparameters, e.g. ``get("alpha", alpha=0.3)``) or pass an object through.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or invalid hyperparameters.
      TypeError: neither a string nor a :class:`Divergence`.
    """
    if isinstance(divergence, Divergence):
        if params:
            raise ValueError(f"divergence {divergence!r} is already built; got extra hyperparameters {params}")
        return divergence
    if not isinstance(divergence, str):
        raise TypeError(f"divergence must be a name or a Divergence, got {type(divergence).__name__}")
    if divergence not in _REGISTRY:
        close = difflib.get_close_matches(divergence, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown divergence {divergence!r}.{hint} Valid divergences: {', '.join(_REGISTRY)}"
        )
    try:
        return _REGISTRY[divergence](**params)
    except TypeError as e:
        raise ValueError(f"divergence {divergence!r}: invalid hyperparameters {params}: {e}") from None


def terms(div: str | Divergence, log_pi, log_p):
    """The elementwise terms p(x)·f(π(x)/p(x)) of D_f(π‖p), with the zero-probability limits.

    Where p = 0 < π the term is π·f'(∞) (``slope_at_inf``), where π = 0 < p it is p·f(0) (``f_at_zero``),
    and 0 where both vanish. The term is positively homogeneous: terms(lπ + s, lp + s) = e^s·terms(lπ, lp),
    which the importance-sampling estimators use. Gradients with respect to finite entries are exact (the
    zero cases are masked with the double-``where`` trick).
    """
    d = get(div)
    lq, lp = jnp.broadcast_arrays(_float(log_pi), _float(log_p))
    lq_fin = jnp.isfinite(lq)
    lp_fin = jnp.isfinite(lp)
    both = lq_fin & lp_fin
    finite_term = d.term(jnp.where(both, lq, 0.0), jnp.where(both, lp, 0.0))
    pi = jnp.exp(jnp.where(lq_fin, lq, -jnp.inf))
    p = jnp.exp(jnp.where(lp_fin, lp, -jnp.inf))
    p_zero = pi * d.slope_at_inf if math.isfinite(d.slope_at_inf) else jnp.full_like(pi, jnp.inf)
    q_zero = p * d.f_at_zero if math.isfinite(d.f_at_zero) else jnp.full_like(p, jnp.inf)
    return jnp.where(both, finite_term, jnp.where(lq_fin, p_zero, jnp.where(lp_fin, q_zero, 0.0)))


def divergence(div: str | Divergence, log_pi, log_p, *, axis: int = -1):
    """The exact D_f(π‖p) = Σ_x p(x) f(π(x)/p(x)) of two normalised distributions given as log-probs.

    ``log_pi`` and ``log_p`` may contain ``-inf`` (zero probability); the limits described in the module
    docstring are used (see :func:`terms`), giving ``inf`` where the divergence is infinite.

    Args:
      div: a name from :func:`names` or a :class:`Divergence`.
      log_pi: log π, ``[..., K]``.
      log_p: log p, ``[..., K]`` (broadcastable with ``log_pi``).
      axis: the outcome axis.

    Returns:
      D_f(π‖p), the outcome axis reduced.

    >>> import jax.numpy as jnp
    >>> lp = jnp.log(jnp.array([0.2, 0.8])); lq = jnp.log(jnp.array([0.5, 0.5]))
    >>> round(float(divergence("reverse_kl", lq, lp)), 6)  # 0.5 log 2.5 + 0.5 log 0.625
    0.223144
    """
    return jnp.sum(terms(div, log_pi, log_p), axis=axis)


# ---------------------------------------------------------------------------------------------------------
# Sample-based estimators of KL(π‖π_ref)

_KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logps, ref_logps, kind):
    """Schulman's per-sample estimators of KL(π‖π_ref) for samples y ~ π, elementwise.

    With the log-ratio l = log π_ref(y) − log π(y):

    * ``"k1"``: −l = log π(y) − log π_ref(y). Unbiased, high variance, negative for some samples.
    * ``"k2"``: l²/2. Biased (its mean is the second-order approximation of the KL), ≥ 0, low variance.
    * ``"k3"``: e^l − 1 − l (computed as ``expm1(l) − l``). Unbiased (E_π[e^l] = 1), ≥ 0, low variance.

    As *values*, E_π[k1] = E_π[k3] = KL(π‖π_ref) exactly. As *loss terms* differentiated through log π with
    the samples held fixed, their expected gradients differ: k1 gives 0, k2 gives ∇KL(π‖π_ref) and k3
    gives ∇KL(π_ref‖π) (the reverse direction). k3 is the estimator TRL's GRPO adds to its per-token loss.

    Args:
      logps: log π of the sampled tokens or sequences (any shape).
      ref_logps: log π_ref of the same samples (broadcastable with ``logps``).
      kind: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
      The estimates, elementwise, in float32 or wider.

    Raises:
      ValueError: unknown ``kind``.

    References:
      J. Schulman, Approximating KL Divergence, blog post, 2020 (http://joschu.net/blog/kl-approx.html).

    >>> import jax.numpy as jnp
    >>> lp = jnp.log(jnp.array([0.5])); ref = jnp.log(jnp.array([0.25]))  # l = −log 2
    >>> [round(float(kl_estimate(lp, ref, k)[0]), 6) for k in ("k1", "k2", "k3")]
    [0.693147, 0.240227, 0.193147]
    """
    if kind not in _KL_KINDS:
        raise ValueError(f"kl_estimate: unknown kind={kind!r}; valid kinds: {', '.join(_KL_KINDS)}")
    logps, ref_logps = _float(logps), _float(ref_logps)
    log_ratio = ref_logps - logps
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * jnp.square(log_ratio)
    return jnp.expm1(log_ratio) - log_ratio


__all__ = ["Divergence", "alpha", "divergence", "get", "kl_estimate", "log_abs_expm1", "names", "register",
           "terms"]

"""The preference-game lab: exact expected updates of online preference optimisation on a K-armed bandit.

A single prompt, K arms, a tabular softmax policy π = softmax(θ), θ ∈ R^K, a reference μ (``ref_logps`` = ln μ,
full support), τ > 0 and a preference matrix P[y, y'] = P(y ≻ y') with P + Pᵀ = 1 (transitive or cyclic).
Every update is the exact expectation over the sampled pair and the sampled label, so a run is deterministic:
"seeds" are initial logits, and :func:`train_game` is ``jax.jit``-ed end to end (``lax.scan``) and vmap-able over
initial logits, step sizes, τ, mixing weights, sampling distributions and method indices.

Methods (index = position in :data:`GAME_METHODS`); g = ln π − ln μ, h(y_w, y_l) = g(y_w) − g(y_l):

* ``nash_md`` — Nash mirror descent (Munos et al.) with step η: the geometric mixture
  π^μ ∝ π^{1−ητ}·μ^{ητ}, then π' ∝ π^μ·exp(η·P(y ≻ π^μ)), P(y ≻ π^μ) = (P·π^μ)(y) (the opponent drawn from the
  mixture, the label from P; exact in the tabular case, no sampling).
* ``online_ipo`` — Calandriello et al.: both samples from stop-gradient(π), labels from P, IPO loss
  (h − 1/(2τ))²; a gradient step on the exact expected loss.
* ``ipo_md`` — the same with both samples from the stop-gradient geometric mixture π^{1−β}·μ^β
  (β = ``beta_mix``).
* ``online_dpo`` — online sampling as online IPO, DPO loss −ln σ(τ·h).
* ``online_slic`` — online sampling as online IPO, SLiC's calibration hinge with the reference,
  max(0, 1 − τ·h) (TRL's ``hinge``).
* ``offline_ipo`` — IPO with both samples from a fixed distribution μ_s (``sampling_probs``).

The gradient methods minimise the exact expected loss with the sampler s held fixed (stop-gradient):

    L(θ; s) = Σ_{y, y'} s(y)·s(y')·[P(y ≻ y')·ℓ(h(y, y')) + P(y' ≻ y)·ℓ(h(y', y))],

whose θ-gradient is the expected stochastic gradient of one sampled, labelled pair; the per-pair losses are
the registered :mod:`jalign.losses` ``"ipo"`` (summed log-ratios), ``"dpo"`` and ``"hinge"`` with β = τ.
Fixed points (exact, derived in ``docs/games.md``): online IPO's is the regularised Nash equilibrium
π*_τ ∝ μ·exp(P π*_τ/τ); offline IPO's is μ·exp(P μ_s/τ)/Z; IPO-MD's (β) and Nash-MD's at a constant step η
(β = ητ) are both μ·exp(P π*_{τ/(1−β)}/τ)/Z, which tends to π*_τ as β → 0 (Nash-MD with a decaying step
reaches π*_τ); online DPO's on a Bradley–Terry P(y ≻ y') = σ(r(y) − r(y')) is the RLHF optimum μ·exp(r/τ)/Z.

Preference models (each returns P with P + Pᵀ = 1 and diagonal ½): :func:`bradley_terry_pref`,
:func:`thurstone_pref`, :func:`rock_paper_scissors_pref` (cyclic, with optional antisymmetric noise),
:func:`antisymmetric_pref` (random antisymmetric logits), :func:`pref_from_logits`.

Computation is in float32, float64 for float64 inputs under ``jax.enable_x64``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from jalign import losses
from jalign.envs.games import regularized_nash
from jalign.numerics import float_dtype, is_concrete

__all__ = [
    "GAME_METHODS",
    "antisymmetric_pref",
    "bradley_terry_pref",
    "game_gradient",
    "game_loss",
    "game_method_index",
    "game_step",
    "mixture_fixed_point",
    "nash_gap",
    "offline_ipo_fixed_point",
    "nash_residual",
    "pref_from_logits",
    "rock_paper_scissors_pref",
    "thurstone_pref",
    "train_game",
]

GAME_METHODS = ("nash_md", "online_ipo", "ipo_md", "online_dpo", "online_slic", "offline_ipo")
_LOSS_OF = {"online_ipo": "ipo", "ipo_md": "ipo", "online_dpo": "dpo", "online_slic": "slic", "offline_ipo": "ipo"}


def game_method_index(method) -> int | jax.Array:
    """Index of a method name in :data:`GAME_METHODS` (ints and arrays pass through)."""
    if isinstance(method, str):
        if method not in GAME_METHODS:
            raise ValueError(f"argument method={method!r} must be one of {GAME_METHODS}")
        return GAME_METHODS.index(method)
    if is_concrete(method) and np.ndim(method) == 0 and not 0 <= int(method) < len(GAME_METHODS):
        raise ValueError(f"argument method={method!r} must be an index in [0, {len(GAME_METHODS)})")
    return method


# --------------------------------------------------------------------------------------------------------
# Preference models
# --------------------------------------------------------------------------------------------------------


def _check_scale(fn, scale):
    if is_concrete(scale):
        s = np.asarray(scale)
        if s.ndim != 0 or not (np.isfinite(s) and s > 0):
            raise ValueError(f"{fn}: argument scale={scale!r} must be a finite scalar > 0")


def _rewards(fn, rewards):
    r = jnp.asarray(rewards)
    if r.ndim != 1:
        raise ValueError(f"{fn}: argument 'rewards' must be 1-D (one entry per arm), got shape {tuple(r.shape)}")
    r = r.astype(float_dtype(r))
    if is_concrete(rewards) and not np.all(np.isfinite(np.asarray(r))):
        raise ValueError(f"{fn}: argument 'rewards' must be finite, got {np.asarray(r)}")
    return r


def pref_from_logits(logits):
    """P = σ(L) for an antisymmetric logit matrix L (Lᵀ = −L), so P + Pᵀ = 1 and the diagonal is ½.

    The antisymmetric part ½(L − Lᵀ) is used, so any square ``logits`` gives a valid preference matrix.
    """
    L = jnp.asarray(logits)
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"pref_from_logits: argument 'logits' must be a square matrix, got shape {tuple(L.shape)}")
    L = L.astype(float_dtype(L))
    return jax.nn.sigmoid(0.5 * (L - L.T))


def bradley_terry_pref(rewards, scale=1.0):
    """Bradley–Terry preferences P[y, y'] = σ((r(y) − r(y'))/scale), ``[K, K]``."""
    _check_scale("bradley_terry_pref", scale)
    r = _rewards("bradley_terry_pref", rewards)
    return jax.nn.sigmoid((r[:, None] - r[None, :]) / scale)


def thurstone_pref(rewards, scale=1.0):
    """Thurstone preferences P[y, y'] = Φ((r(y) − r(y'))/(√2·scale)) (utilities r + N(0, scale²)), ``[K, K]``."""
    _check_scale("thurstone_pref", scale)
    r = _rewards("thurstone_pref", rewards)
    return ndtr((r[:, None] - r[None, :]) / (np.sqrt(2.0) * scale))


def rock_paper_scissors_pref(win_prob=0.9, noise=0.0, key=None, num_arms=3):
    """Cyclic preferences: arm y beats arm y+1 (mod K) with probability ``win_prob``, plus logit noise.

    L[y, y+1] = logit(win_prob) = −L[y+1, y] (indices mod K; other pairs 0), then
    L ← L + noise·(E − Eᵀ)/√2 with E_ij ~ N(0, 1) i.i.d. (when ``key`` is given), and P = σ(L).
    With K = 3 and no noise this is rock–paper–scissors: every arm beats one and loses to one, so no arm is a
    Condorcet winner; with a uniform μ its regularised equilibrium is uniform for every τ.

    Args:
      win_prob: P(y ≻ y+1) ∈ (½, 1) without noise.
      noise: standard deviation of the antisymmetric logit noise (≥ 0; needs ``key`` when > 0).
      key: PRNG key for the noise.
      num_arms: K ≥ 3 (static).
    """
    fn = "rock_paper_scissors_pref"
    if is_concrete(win_prob) and not 0.5 < float(win_prob) < 1.0:
        raise ValueError(f"{fn}: argument win_prob={win_prob!r} must be in (0.5, 1)")
    if is_concrete(noise) and not float(noise) >= 0:
        raise ValueError(f"{fn}: argument noise={noise!r} must be >= 0")
    if int(num_arms) < 3:
        raise ValueError(f"{fn}: argument num_arms={num_arms!r} must be >= 3")
    if key is None and is_concrete(noise) and float(noise) > 0:
        raise ValueError(f"{fn}: argument key is required when noise={noise!r} > 0")
    k = int(num_arms)
    dtype = float_dtype(win_prob, noise)
    w = jnp.asarray(win_prob, dtype)
    cyc = jnp.roll(jnp.eye(k, dtype=dtype), 1, axis=1)  # cyc[y, y+1] = 1
    L = (jnp.log(w) - jnp.log1p(-w)) * (cyc - cyc.T)
    if key is not None:
        e = jax.random.normal(key, (k, k), dtype)
        L = L + noise * (e - e.T) / np.sqrt(2.0)
    return jax.nn.sigmoid(L)


def antisymmetric_pref(key, num_arms, scale=1.0, dtype=jnp.float32):
    """Random (generally non-transitive) preferences P = σ(scale·(E − Eᵀ)/√2), E_ij ~ N(0, 1), ``[K, K]``."""
    _check_scale("antisymmetric_pref", scale)
    if int(num_arms) < 2:
        raise ValueError(f"antisymmetric_pref: argument num_arms={num_arms!r} must be >= 2")
    e = jax.random.normal(key, (int(num_arms), int(num_arms)), dtype)
    return jax.nn.sigmoid(scale * (e - e.T) / np.sqrt(2.0))


# --------------------------------------------------------------------------------------------------------
# Exact expected losses and updates
# --------------------------------------------------------------------------------------------------------


def _pair_loss(kind: str, h, tau):
    """ℓ(h) of the registered loss with β = τ on reference-corrected margins h."""
    zero = jnp.zeros_like(h)
    batch = losses.PairwiseLogps(chosen_logps=h, rejected_logps=zero, ref_chosen_logps=zero, ref_rejected_logps=zero)
    if kind == "ipo":
        return losses.get("ipo")(batch, beta=tau, ipo_average=False, validate=False)
    if kind == "dpo":
        return losses.get("dpo")(batch, beta=tau, validate=False)
    return losses.get("hinge")(batch, beta=tau, validate=False)


def _mixture_logps(logps, lmu, beta):
    """ln of the geometric mixture π^{1−β}·μ^β / Z."""
    return jax.nn.log_softmax((1.0 - beta) * logps + beta * lmu)


def _objective(kind, logits, sampler, P, lmu, tau):
    """L(θ; s) = Σ_{a,b} s_a s_b [P_ab ℓ(g_a − g_b) + P_ba ℓ(g_b − g_a)]."""
    g = jax.nn.log_softmax(logits) - lmu
    h = g[:, None] - g[None, :]
    w = sampler[:, None] * sampler[None, :]
    ell = P * _pair_loss(kind, h, tau) + P.T * _pair_loss(kind, -h, tau)
    return jnp.sum(w * ell)


def _sampler(method, logits, lmu, beta_mix, sampling_probs):
    logps = jax.lax.stop_gradient(jax.nn.log_softmax(logits))
    if method == "ipo_md":
        return jnp.exp(_mixture_logps(logps, lmu, beta_mix))
    if method == "offline_ipo":
        return sampling_probs
    return jnp.exp(logps)


def _prepare(fn, pref, ref_logps, tau, *extra):
    dtype = float_dtype(pref, ref_logps, tau, *[x for x in extra if x is not None])
    lmu = jnp.asarray(ref_logps)
    if lmu.ndim != 1:
        raise ValueError(f"{fn}: argument 'ref_logps' must be 1-D, got shape {tuple(lmu.shape)}")
    lmu = lmu.astype(dtype)
    k = lmu.shape[0]
    P = jnp.asarray(pref)
    if P.shape != (k, k):
        raise ValueError(f"{fn}: argument 'pref' must have shape ({k}, {k}) to match ref_logps, got {tuple(P.shape)}")
    P = P.astype(dtype)
    if is_concrete(pref):
        v = np.asarray(P, np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > 1):
            raise ValueError(f"{fn}: argument 'pref' must have entries in [0, 1], got {v}")
        err = np.abs(v + v.T - 1.0).max()
        if not err <= 1e-5:
            raise ValueError(f"{fn}: argument 'pref' must satisfy pref + pref.T = 1; max |pref + pref.T - 1| = {err:.3g}")
    if is_concrete(ref_logps):
        v = np.asarray(lmu, np.float64)
        if not np.all(np.isfinite(v)) or not abs(np.exp(v).sum() - 1.0) <= 1e-5:
            raise ValueError(f"{fn}: argument 'ref_logps' must be finite log-probabilities (full support, exp sums "
                             f"to 1), got {v}")
    if is_concrete(tau):
        t = np.asarray(tau)
        if t.ndim != 0 or not (np.isfinite(t) and t > 0):
            raise ValueError(f"{fn}: argument tau={tau!r} must be a finite scalar > 0")
    return P, lmu, jnp.asarray(tau, dtype), dtype


def _check_beta_mix(fn, beta_mix):
    if is_concrete(beta_mix):
        b = np.asarray(beta_mix)
        if b.ndim != 0 or not 0.0 <= float(b) <= 1.0:
            raise ValueError(f"{fn}: argument beta_mix={beta_mix!r} must be a scalar in [0, 1]")


def _check_sampling(fn, sampling_probs, k, dtype):
    if sampling_probs is None:
        return jnp.full((k,), 1.0 / k, dtype)  # unused unless method is offline_ipo
    s = jnp.asarray(sampling_probs)
    if s.shape != (k,):
        raise ValueError(f"{fn}: argument 'sampling_probs' must have shape ({k},), got {tuple(s.shape)}")
    if is_concrete(sampling_probs):
        v = np.asarray(s, np.float64)
        if not np.all(np.isfinite(v)) or np.any(v < 0) or not abs(v.sum() - 1.0) <= 1e-5:
            raise ValueError(f"{fn}: argument 'sampling_probs' must be probabilities summing to 1, got {v}")
    return s.astype(dtype)


def game_loss(method: str, logits, pref, ref_logps, tau, *, beta_mix=0.0, sampling_probs=None):
    """The exact expected loss L(θ; s) of a gradient method, the sampler s held at stop-gradient.

    L(θ; s) = Σ_{y,y'} s(y)·s(y')·[P(y ≻ y')·ℓ(h(y, y')) + P(y' ≻ y)·ℓ(h(y', y))], h(y, y') = g(y) − g(y'),
    g = ln softmax(θ) − ln μ, with s = π (online_*), s ∝ π^{1−β}μ^β (ipo_md) or s = μ_s (offline_ipo), and
    ℓ(h) = (h − 1/(2τ))² (IPO), −ln σ(τh) (DPO) or max(0, 1 − τh) (SLiC).

    Args:
      method: one of :data:`GAME_METHODS` except ``"nash_md"`` (static).
      logits: θ, ``[K]``.
      pref: P, ``[K, K]`` (P + Pᵀ = 1).
      ref_logps: ln μ, ``[K]`` (finite).
      tau: τ > 0.
      beta_mix: β ∈ [0, 1] of ``ipo_md``.
      sampling_probs: μ_s ``[K]`` of ``offline_ipo`` (required there).

    Returns:
      The scalar L(θ; s); ``jax.grad`` of it in ``logits`` is the expected stochastic gradient (:func:`game_gradient`).

    References:
      Calandriello et al., Human alignment of large language models through online preference optimisation,
      ICML 2024 (arXiv 2403.08635); Azar et al., AISTATS 2024 (IPO); Rafailov et al., NeurIPS 2023 (DPO);
      Zhao et al., arXiv 2305.10425 (SLiC).
    """
    fn = "game_loss"
    if method not in _LOSS_OF:
        raise ValueError(f"{fn}: argument method={method!r} must be one of {tuple(_LOSS_OF)} (nash_md has no loss; "
                         "see game_step)")
    P, lmu, tau, dtype = _prepare(fn, pref, ref_logps, tau, logits)
    _check_beta_mix(fn, beta_mix)
    if method == "offline_ipo" and sampling_probs is None:
        raise ValueError(f"{fn}: argument sampling_probs is required for method 'offline_ipo'")
    s_K = _check_sampling(fn, sampling_probs, lmu.shape[0], dtype)
    logits = jnp.asarray(logits, dtype)
    sampler = _sampler(method, logits, lmu, jnp.asarray(beta_mix, dtype), s_K)
    return _objective(_LOSS_OF[method], logits, sampler, P, lmu, tau)


def game_gradient(method: str, logits, pref, ref_logps, tau, *, beta_mix=0.0, sampling_probs=None):
    """∇_θ :func:`game_loss` (the sampler not differentiated): the expected gradient of one labelled pair.

    For online IPO it is 4·π ⊙ (g − E_π[g] − (P π − ½)/τ), which vanishes exactly at π*_τ.
    """
    return jax.grad(lambda t: game_loss(method, t, pref, ref_logps, tau, beta_mix=beta_mix,
                                        sampling_probs=sampling_probs))(jnp.asarray(logits))


def _step(method_idx, logits, P, lmu, tau, eta, beta_mix, sampling_probs):
    """One update of every method (``lax.switch`` on the index); returns the new logits."""

    def nash_md(_):
        logps_mix = _mixture_logps(jax.nn.log_softmax(logits), lmu, eta * tau)
        return jax.nn.log_softmax(logps_mix + eta * (P @ jnp.exp(logps_mix)))

    def gradient_step(name):
        def run(_):
            def loss(t):
                return _objective(_LOSS_OF[name], t, _sampler(name, t, lmu, beta_mix, sampling_probs), P, lmu, tau)

            return logits - eta * jax.grad(loss)(logits)

        return run

    branches = [nash_md] + [gradient_step(m) for m in GAME_METHODS[1:]]
    return jax.lax.switch(method_idx, branches, None)


def game_step(method, logits, pref, ref_logps, tau, lr, *, beta_mix=0.0, sampling_probs=None):
    """One exact expected update with step size η = ``lr``; returns the new logits ``[K]``.

    * ``nash_md``: θ' = ln softmax(ln π^μ + η·P π^μ), ln π^μ = ln softmax((1 − ητ)·ln π + ητ·ln μ)
      (requires ητ ≤ 1);
    * gradient methods: θ' = θ − η·∇_θ L(θ; s) (:func:`game_gradient`).
    """
    fn = "game_step"
    idx = game_method_index(method)
    P, lmu, tau, dtype = _prepare(fn, pref, ref_logps, tau, logits, lr)
    _check_beta_mix(fn, beta_mix)
    _check_lr(fn, lr, tau, idx)
    if is_concrete(idx) and int(idx) == GAME_METHODS.index("offline_ipo") and sampling_probs is None:
        raise ValueError(f"{fn}: argument sampling_probs is required for method 'offline_ipo'")
    s_K = _check_sampling(fn, sampling_probs, lmu.shape[0], dtype)
    return _step(idx, jnp.asarray(logits, dtype), P, lmu, tau, jnp.asarray(lr, dtype), jnp.asarray(beta_mix, dtype),
                 s_K)


def _check_lr(fn, lr, tau, idx):
    if not is_concrete(lr):
        return
    v = np.asarray(lr)
    if v.ndim != 0 or not (np.isfinite(v) and v > 0):
        raise ValueError(f"{fn}: argument lr={lr!r} must be a finite scalar > 0")
    if is_concrete(idx, tau) and int(idx) == 0 and float(v) * float(tau) > 1.0:
        raise ValueError(f"{fn}: argument lr={lr!r} must satisfy lr·tau <= 1 for nash_md (the mixture weight ητ)")


@functools.partial(jax.jit, static_argnames=("steps", "record_every"))
def _train_game(method_idx, P, lmu, tau, lr, lr_decay, beta_mix, sampling_probs, init_logits, *, steps, record_every):
    def step(c, _):
        theta, t = c
        eta = lr / (1.0 + lr_decay * t)
        return (_step(method_idx, theta, P, lmu, tau, eta, beta_mix, sampling_probs), t + 1), None

    def block(c, _):
        c, _ = jax.lax.scan(step, c, None, length=record_every)
        return c, jax.nn.log_softmax(c[0])

    c0 = (init_logits, jnp.zeros((), lr.dtype))
    _, curve = jax.lax.scan(block, c0, None, length=steps // record_every)
    return jnp.concatenate([jax.nn.log_softmax(init_logits)[None], curve], 0)


def train_game(method, pref, ref_logps, tau, *, lr, steps, init_logits=None, record_every=1, lr_decay=0.0,
               beta_mix=0.0, sampling_probs=None):
    """Run ``steps`` exact expected updates of ``method`` from ``init_logits`` (default ln μ); jitted.

    The step size at step t = 0, 1, … is η_t = lr/(1 + lr_decay·t) (``lr_decay = 0``: constant; Munos et al.'s
    analysis of Nash-MD uses η_t ∝ 1/t, e.g. lr_decay = lr·τ/2). Each step is :func:`game_step`. Everything is
    traced (one compilation per shape, dtype, ``steps`` and ``record_every``), so ``jax.vmap`` over
    ``init_logits`` (random initialisations play the role of seeds), ``lr``, ``tau``, ``beta_mix``,
    ``sampling_probs``, ``pref`` or a method index works.

    Args:
      method: a name in :data:`GAME_METHODS` or its index.
      pref: P ``[K, K]``, P + Pᵀ = 1.
      ref_logps: ln μ ``[K]`` (finite).
      tau: τ > 0.
      lr: the step size η > 0 (for ``nash_md`` ητ ≤ 1 is required).
      steps: number of updates (a positive multiple of ``record_every``; static).
      init_logits: θ_0 ``[K]`` (default ln μ).
      record_every: record ln π every this many steps (static).
      lr_decay: ≥ 0, the step-size decay above.
      beta_mix: β ∈ [0, 1], the mixing weight of ``ipo_md``.
      sampling_probs: μ_s ``[K]`` of ``offline_ipo`` (required there).

    Returns:
      ln π_t, ``[steps // record_every + 1, K]``; row 0 is the initial policy, row i is after i·record_every steps.

    References:
      Munos et al., Nash learning from human feedback, ICML 2024 (arXiv 2312.00886);
      Calandriello et al., ICML 2024 (arXiv 2403.08635).
    """
    fn = "train_game"
    idx = game_method_index(method)
    P, lmu, tau, dtype = _prepare(fn, pref, ref_logps, tau, lr, init_logits)
    _check_beta_mix(fn, beta_mix)
    _check_lr(fn, lr, tau, idx)
    if is_concrete(lr_decay) and not (np.ndim(lr_decay) == 0 and float(lr_decay) >= 0):
        raise ValueError(f"{fn}: argument lr_decay={lr_decay!r} must be a scalar >= 0")
    steps, record_every = int(steps), int(record_every)
    if steps < 1 or record_every < 1 or steps % record_every:
        raise ValueError(f"{fn}: argument steps={steps} must be a positive multiple of record_every={record_every}")
    if is_concrete(idx) and int(idx) == GAME_METHODS.index("offline_ipo") and sampling_probs is None:
        raise ValueError(f"{fn}: argument sampling_probs is required for method 'offline_ipo'")
    k = lmu.shape[0]
    s_K = _check_sampling(fn, sampling_probs, k, dtype)
    theta0 = lmu if init_logits is None else jnp.asarray(init_logits)
    if theta0.shape != (k,):
        raise ValueError(f"{fn}: argument 'init_logits' must have shape ({k},), got {tuple(theta0.shape)}")
    return _train_game(jnp.asarray(idx, jnp.int32), P, lmu, tau, jnp.asarray(lr, dtype), jnp.asarray(lr_decay, dtype),
                       jnp.asarray(beta_mix, dtype), s_K, theta0.astype(dtype), steps=steps,
                       record_every=record_every)


# --------------------------------------------------------------------------------------------------------
# Distance to the regularised Nash equilibrium
# --------------------------------------------------------------------------------------------------------


def nash_residual(logps, pref, ref_logps, tau):
    """Fixed-point residual max_y |π(y) − T(π)(y)|, T(π) ∝ μ·exp(P π/τ), over the last axis of ``logps``."""
    P, lmu, tau, dtype = _prepare("nash_residual", pref, ref_logps, tau, logps)
    pi = jnp.exp(jnp.asarray(logps, dtype))
    t_pi = jax.nn.softmax(lmu + (pi @ P.T) / tau, axis=-1)
    return jnp.max(jnp.abs(pi - t_pi), axis=-1)


def nash_gap(logps, pref, ref_logps, tau, *, nash_logps=None):
    """Distance of policies ``logps`` ``[..., K]`` to π*_τ = :func:`jalign.envs.regularized_nash`.

    Returns ``{"kl": KL(π*_τ‖π), "tv": ½·Σ|π − π*_τ|, "max_abs": max_y |π − π*_τ|, "residual":``
    :func:`nash_residual` ``}``, each of shape ``logps.shape[:-1]``. ``nash_logps`` skips the solve.
    """
    P, lmu, tau, dtype = _prepare("nash_gap", pref, ref_logps, tau, logps)
    star = regularized_nash(P, lmu, tau) if nash_logps is None else jnp.asarray(nash_logps, dtype)
    lp = jnp.asarray(logps, dtype)
    pi, p_star = jnp.exp(lp), jnp.exp(star)
    return {
        "kl": jnp.sum(p_star * (star - lp), axis=-1),
        "tv": 0.5 * jnp.sum(jnp.abs(pi - p_star), axis=-1),
        "max_abs": jnp.max(jnp.abs(pi - p_star), axis=-1),
        "residual": nash_residual(lp, P, lmu, tau),
    }


# --------------------------------------------------------------------------------------------------------
# Closed-form fixed points of the biased methods
# --------------------------------------------------------------------------------------------------------


def mixture_fixed_point(pref, ref_logps, tau, beta):
    """ln of the common fixed point of IPO-MD (``beta_mix`` = β) and of Nash-MD at a constant step (β = η·τ).

    The sampler (IPO-MD) or the mixture (Nash-MD) sits at π*_{τ/(1−β)}, the equilibrium of the game with the
    larger regularisation τ/(1 − β), and the policy is its IPO response

        π_β ∝ μ·exp(P π*_{τ/(1−β)}/τ),

    which is π*_τ at β = 0 and O(β) away from it otherwise (derivation in ``docs/games.md``).

    Args:
      pref: P ``[K, K]``, P + Pᵀ = 1.
      ref_logps: ln μ ``[K]`` (finite).
      tau: τ > 0.
      beta: β ∈ [0, 1).

    Returns:
      ln π_β, ``[K]``.
    """
    fn = "mixture_fixed_point"
    P, lmu, tau, dtype = _prepare(fn, pref, ref_logps, tau, beta)
    if is_concrete(beta):
        b = np.asarray(beta)
        if b.ndim != 0 or not 0.0 <= float(b) < 1.0:
            raise ValueError(f"{fn}: argument beta={beta!r} must be a scalar in [0, 1)")
    beta = jnp.asarray(beta, dtype)
    inner = jnp.exp(regularized_nash(P, lmu, tau / (1.0 - beta)))
    return jax.nn.log_softmax(lmu + P @ inner / tau)


def offline_ipo_fixed_point(pref, ref_logps, tau, sampling_probs):
    """ln of offline IPO's fixed point on a fixed sampling distribution μ_s: π ∝ μ·exp(P μ_s/τ).

    It equals π*_τ exactly when μ_s = π*_τ (the fixed-point equation of :func:`jalign.envs.regularized_nash`).
    """
    fn = "offline_ipo_fixed_point"
    P, lmu, tau, dtype = _prepare(fn, pref, ref_logps, tau, sampling_probs)
    s = _check_sampling(fn, sampling_probs, lmu.shape[0], dtype)
    return jax.nn.log_softmax(lmu + P @ s / tau)

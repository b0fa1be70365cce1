"""The KL-estimator bandit lab: where the KL term goes decides the policy an on-policy RLHF method converges to.

A tabular softmax policy π = softmax(θ) over K arms with known rewards r, a reference π_ref and β > 0. Each
variant's per-sample loss ℓ(θ; y) is differentiated through ln π_θ(y) with the sample y held fixed (the
GRPO/PPO convention); its *exact expected gradient* is Σ_y π(y)·∇_θ ℓ(θ; y), computed here as the gradient of
the surrogate Σ_y sg(π(y))·ℓ(θ; y) (sg = stop-gradient). With the advantage A(y) = r(y) − E_π[r] (the exact
leave-one-out / RLOO baseline; a baseline does not change the expected gradient):

* ``"reward_penalty"`` (PPO / REINFORCE with the KL penalty in the reward): ℓ = −sg(R(y) − E_π[R])·ln π(y),
  R(y) = r(y) − β·(ln π(y) − ln π_ref(y)). Expected gradient −∇J_β(π), J_β = E_π[r] − β·KL(π‖π_ref); fixed
  point π* ∝ π_ref·exp(r/β).
* ``"k1"``, ``"k2"``, ``"k3"`` (the KL estimator in the loss, as GRPO does):
  ℓ = −sg(A(y))·ln π(y) + β·k(ln π(y), ln π_ref(y)) with k the estimator of
  :func:`jalign.divergences.kl_estimate`. With c(y) = ∂k/∂ln π(y) the KL part's expected gradient is
  E_π[c·∇ln π]: k1 (c = 1) gives 0 (no regularisation: the policy collapses onto the best arm); k2
  (c = ln π/π_ref) gives ∇KL(π‖π_ref) (fixed point π*); k3 (c = 1 − π_ref/π) gives
  −Σ_y π_ref(y)·∇ln π(y) = ∇KL(π_ref‖π), whose fixed point is π(y) = β·π_ref(y)/(β − A(y)) (see
  :func:`kl_fixed_point`).

:func:`train_kl_lab` runs full-batch gradient descent on the exact expected gradient (jitted, ``lax.scan``);
vmap it over keys (random initial logits), β, variant indices or bandits. :func:`aggregation_token_weights`
shows the per-token gradient weights of :func:`jalign.losses.policy_clip`'s aggregations (the length bias of
``"grpo"`` that ``"dr_grpo"`` removes).

References:
  J. Schulman, Approximating KL Divergence, 2020 (http://joschu.net/blog/kl-approx.html).
  Shao et al., DeepSeekMath (GRPO), 2024 (arXiv 2402.03300).
  Liu et al., Understanding R1-Zero-Like Training: A Critical Perspective (Dr. GRPO), 2025 (arXiv 2503.20783).
  Ahmadian et al., Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback
  in LLMs (RLOO), 2024 (arXiv 2402.14740).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jalign import losses
from jalign.divergences import kl_estimate
from jalign.envs.bandit import Bandit, check_probs, regret
from jalign.envs.policies import tabular_logps
from jalign.numerics import as_float, check_positive

KL_LAB_VARIANTS = ("reward_penalty", "k1", "k2", "k3")


def kl_lab_variant_index(variant) -> int | jax.Array:
    """Index of a variant name in :data:`KL_LAB_VARIANTS` (ints and arrays pass through)."""
    if isinstance(variant, str):
        if variant not in KL_LAB_VARIANTS:
            raise ValueError(f"argument variant={variant!r} must be one of {KL_LAB_VARIANTS}")
        return KL_LAB_VARIANTS.index(variant)
    return variant


_check_positive = check_positive
_f32 = as_float


def _surrogate(variant, logits_K, rewards_K, ref_logps_K, beta):
    logps = tabular_logps(_f32(logits_K))
    ref = _f32(ref_logps_K)
    r = _f32(rewards_K)
    beta = _f32(beta)
    pi = jax.lax.stop_gradient(jnp.exp(logps))  # the sampling distribution (samples held fixed)

    def _reward_penalty(_):
        shaped = r - beta * (jax.lax.stop_gradient(logps) - ref)
        adv = shaped - jnp.sum(pi * shaped)
        return -adv * logps

    def _in_loss(kind):
        def f(_):
            adv = r - jnp.sum(pi * r)
            return -adv * logps + beta * kl_estimate(logps, ref, kind)
        return f

    branches = [_reward_penalty, _in_loss("k1"), _in_loss("k2"), _in_loss("k3")]
    per_arm = jax.lax.switch(variant, branches, None)
    # Arms with π = 0 are never sampled: their (possibly non-finite) per-sample loss must not leak.
    return jnp.sum(jnp.where(pi > 0, pi * per_arm, 0.0))


def kl_lab_surrogate(variant, logits_K, bandit: Bandit, beta):
    """The surrogate Σ_y sg(π(y))·ℓ(θ; y) whose gradient is the variant's exact expected gradient.

    Its *value* is not an objective of the method (the sampling weights and the advantages are constants);
    only its gradient in ``logits_K`` is meaningful. See the module docstring for ℓ of each variant.

    Args:
      variant: a name in :data:`KL_LAB_VARIANTS` or its index (an int array under vmap).
      logits_K: tabular logits θ ``[K]``.
      bandit: the :class:`~jalign.envs.Bandit` (rewards r, ln π_ref).
      beta: β > 0.

    Returns:
      A scalar (float32 or wider).
    """
    _check_positive("kl_lab_surrogate", "beta", beta)
    return _surrogate(kl_lab_variant_index(variant), logits_K, bandit.rewards, bandit.ref_logps, beta)


_grad = jax.jit(jax.grad(_surrogate, argnums=1))


def kl_lab_gradient(variant, logits_K, bandit: Bandit, beta):
    """Exact expected gradient E_{y~π}[∇_θ ℓ(θ; y)] (samples held fixed) of a variant's loss, ``[K]``.

    In closed form, with ∇_θ ln π(y) = e_y − π and c(y) the per-arm coefficient,
    g = Σ_y π(y)·c(y)·(e_y − π), i.e. g_k = π_k·(c_k − E_π[c]), where

    * ``"reward_penalty"``: c = −(R − E_π[R]), R = r − β·ln π/π_ref, so g = −∇J_β(π);
    * ``"k1"``: c = −A + β (the β part cancels: g = −∇E_π[r]);
    * ``"k2"``: c = −A + β·ln π/π_ref, so g = −∇E_π[r] + β·∇KL(π‖π_ref);
    * ``"k3"``: c = −A + β·(1 − π_ref/π), so g = −∇E_π[r] + β·∇KL(π_ref‖π), g_k = −π_k·A_k + β·(π_k − π_ref,k).

    This is the gradient of the loss (descend along it). Jitted; vmap-able over every argument.
    """
    _check_positive("kl_lab_gradient", "beta", beta)
    return _grad(kl_lab_variant_index(variant), logits_K, bandit.rewards, bandit.ref_logps, beta)


def _k3_fixed_point(r, ref_p, beta):
    """π(y) = β·π_ref(y)/(u + r_max − r(y)), u = β − r_max + E_π[r] found by geometric bisection."""
    support = ref_p > 0
    r_max = jnp.max(jnp.where(support, r, -jnp.inf))
    gap = jnp.where(support, r_max - r, 0.0)  # ≥ 0 on the support

    def mass(u):
        return jnp.sum(jnp.where(support, beta * ref_p / (u + gap), 0.0))

    # mass(u) is decreasing; mass(u) ≤ β/u and mass(u) ≥ β·π_ref(best arms)/u bracket the root.
    best = jnp.sum(jnp.where(support & (gap == 0), ref_p, 0.0))
    lo, hi = jnp.log(beta * best), jnp.log(beta)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_much = mass(jnp.exp(mid)) > 1.0
        return jnp.where(too_much, mid, lo), jnp.where(too_much, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 100, body, (lo, hi))
    u = jnp.exp(0.5 * (lo + hi))
    p = jnp.where(support, beta * ref_p / (u + gap), 0.0)
    return p / jnp.sum(p)  # removes the last ulp-level mismatch of the bisection


def kl_fixed_point(rewards, ref_probs, beta, kind):
    """The policy a variant's exact expected-gradient dynamics converge to (probabilities, last axis).

    * ``"reward_penalty"`` and ``"k2"``: π* ∝ π_ref·exp(r/β), the maximiser of E_π[r] − β·KL(π‖π_ref).
    * ``"k1"``: the expected gradient is that of E_π[r] alone, so π collapses onto the best arm (one-hot on
      argmax r over the support of π_ref). With tied best arms every distribution on them is a fixed point;
      the π_ref-weighted one is returned.
    * ``"k3"``: the stationarity condition of g_k = −π_k·A_k + β·(π_k − π_ref,k) = 0 (A = r − E_π[r]) is

          π(y) = β·π_ref(y)/(β − A(y)) = β·π_ref(y)/(β − r(y) + λ),   λ = E_π[r].

      Normalisation alone determines λ: Σ_y π(y)·(β − r(y) + λ) = β·Σ_y π_ref(y) = β gives λ = E_π[r] once
      Σπ = 1, so λ is the unique root of Σ_y β·π_ref(y)/(β − r(y) + λ) = 1 on λ > max r − β (the sum
      decreases from ∞ to 0 there), found by bisection. The result is not π*: it is the stationary point of
      E_π[r] − β·KL(π_ref‖π), the reverse KL.

    Args:
      rewards: r ``[K]``.
      ref_probs: π_ref ``[K]`` (non-negative, summing to 1).
      beta: β > 0 (a traced scalar under vmap).
      kind: ``"reward_penalty"``, ``"k1"``, ``"k2"`` or ``"k3"`` (static).

    Returns:
      The fixed-point probabilities ``[K]`` (float32 or wider).

    Raises:
      ValueError: unknown ``kind``; β not finite and > 0; ``ref_probs`` not a probability vector.
    """
    if kind not in KL_LAB_VARIANTS:
        raise ValueError(f"kl_fixed_point: unknown kind={kind!r}; valid kinds: {', '.join(KL_LAB_VARIANTS)}")
    _check_positive("kl_fixed_point", "beta", beta)
    r = _f32(rewards)
    ref_p = check_probs("kl_fixed_point", "ref_probs", ref_probs, r.shape)
    beta = _f32(beta)
    support = ref_p > 0
    if kind in ("reward_penalty", "k2"):
        logits = jnp.where(support, jnp.log(jnp.where(support, ref_p, 1.0)) + r / beta, -jnp.inf)
        return jax.nn.softmax(logits)
    if kind == "k1":
        r_max = jnp.max(jnp.where(support, r, -jnp.inf))
        p = jnp.where(support & (r == r_max), ref_p, 0.0)
        return p / jnp.sum(p)
    return _k3_fixed_point(r, ref_p, beta)


@functools.partial(jax.jit, static_argnames=("steps", "record_every"))
def _train(key, variant, bandit, beta, lr, init_scale, *, steps, record_every):
    noise = jax.random.normal(key, bandit.rewards.shape, jnp.float32)
    logits0 = _f32(bandit.ref_logps) + init_scale * noise

    def step(theta, _):
        g = _grad(variant, theta, bandit.rewards, bandit.ref_logps, beta)
        return theta - lr * g, None

    def block(theta, _):
        theta, _ = jax.lax.scan(step, theta, None, length=record_every)
        return theta, tabular_logps(theta)

    _, curve = jax.lax.scan(block, logits0, None, length=steps // record_every)
    curve = jnp.concatenate([tabular_logps(logits0)[None], curve], 0)
    return {"logps": curve, "regret": regret(curve, bandit.rewards, bandit.ref_logps, beta)}


def train_kl_lab(key, variant, bandit: Bandit, beta, *, lr=1.0, steps=5000, record_every=50, init_scale=0.0):
    """Full-batch gradient descent θ ← θ − lr·g on tabular logits with a variant's exact expected gradient.

    The initial logits are ln π_ref + init_scale·ξ, ξ ~ N(0, I) from ``key`` (``init_scale=0``: start at
    π_ref, and the key does not matter). Jitted end to end (``lax.scan``); vmap over ``key``, ``variant``
    (an int index), ``beta``, ``lr``, ``init_scale`` or stacked bandits. Near a fixed point the Hessian of the
    KL terms in the logits is β·(diag π − ππᵀ), whose eigenvalues are below β, so lr < 2/β is stable there.

    Args:
      key: PRNG key (the random initialisation).
      variant: a name in :data:`KL_LAB_VARIANTS` or its index.
      bandit: the :class:`~jalign.envs.Bandit`.
      beta: β > 0.
      lr: step size > 0.
      steps, record_every: the schedule (static); ``steps`` a positive multiple of ``record_every``.
      init_scale: standard deviation ≥ 0 of the logit perturbation.

    Returns:
      ``{"logps": [steps//record_every + 1, K], "regret": [...]}``, the regret J_β(π*) − J_β(π) of the
      KL-regularised objective (index 0 is the initial policy).
    """
    _check_positive("train_kl_lab", "beta", beta)
    _check_positive("train_kl_lab", "lr", lr)
    if not isinstance(init_scale, jax.core.Tracer):
        v = np.asarray(init_scale, np.float64)
        if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
            raise ValueError(f"train_kl_lab: argument init_scale={init_scale!r} must be finite and >= 0")
    if int(steps) < 1 or int(record_every) < 1 or int(steps) % int(record_every):
        raise ValueError(f"train_kl_lab: steps={steps} must be a positive multiple of record_every={record_every}")
    return _train(key, kl_lab_variant_index(variant), bandit, beta, lr, init_scale,
                  steps=int(steps), record_every=int(record_every))


def aggregation_token_weights(lengths, advantages, aggregation, *, max_completion_length=None):
    """Per-token gradient weights −∂L/∂ln π_t of :func:`jalign.losses.policy_clip` on-policy (ratio 1).

    A batch of B completions of the given lengths (right-padded to T = max(lengths), or
    ``max_completion_length``) with per-sequence advantages; the loss is evaluated at logps = old_logps (w = 1),
    where every token's weight is A_b/N with N the aggregation's normaliser: ``"grpo"`` N = B·n_b (each
    sequence's own length n_b: a length bias, short sequences weigh more per token), ``"dr_grpo"`` N = B·T
    (the same for every token, as in the unbiased A·∇ln π(y) = A·Σ_t ∇ln π(y_t)), ``"bnpo"``/``"dapo"``
    N = Σ_b n_b. Computed by ``jax.grad`` of ``policy_clip`` (no closed form is used).

    Args:
      lengths: completion lengths ``[B]`` (concrete positive ints).
      advantages: per-sequence advantages ``[B]``.
      aggregation: a ``policy_clip`` aggregation.
      max_completion_length: T (default max(lengths)).

    Returns:
      ``[B, T]`` weights (0 on padding).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or np.any(lengths < 1):
        raise ValueError(f"aggregation_token_weights: argument lengths={lengths.tolist()} must be positive, 1-D")
    t = int(lengths.max()) if max_completion_length is None else int(max_completion_length)
    if t < lengths.max():
        raise ValueError(f"aggregation_token_weights: max_completion_length={max_completion_length} < max(lengths)")
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
    logps0 = jnp.full(mask.shape, -1.0, jnp.float32)

    def loss(lp):
        return losses.policy_clip(lp, jax.lax.stop_gradient(lp), jnp.asarray(advantages, jnp.float32), mask,
                                  aggregation=aggregation, max_completion_length=t)

    return -jax.grad(loss)(logps0)


def aggregation_sequence_coefficients(lengths, aggregation, *, max_completion_length=None):
    """The weight c(y) with which one on-policy sample y of length n(y) enters the gradient, per aggregation.

    For a single completion (B = 1) of length n with unit advantage, every token of ``policy_clip``'s loss
    gets the same weight (:func:`aggregation_token_weights`), so −∇L = c·Σ_t ∇ln π(y_t | y_<t) = c·∇ln π(y):
    ``"grpo"`` c = 1/n(y) (the length bias), ``"dr_grpo"`` c = 1/T (the same for every y), ``"bnpo"`` and
    ``"dapo"`` c = 1/n(y) as well for one completion. Read off ``jax.grad`` of ``policy_clip``.

    Args:
      lengths: the K responses' lengths ``[K]`` (concrete positive ints).
      aggregation: a ``policy_clip`` aggregation.
      max_completion_length: T (default max(lengths)).

    Returns:
      ``c`` ``[K]`` (float32).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or np.any(lengths < 1):
        raise ValueError(f"aggregation_sequence_coefficients: argument lengths={lengths.tolist()} must be "
                         "positive, 1-D")
    t = int(lengths.max()) if max_completion_length is None else int(max_completion_length)
    out = [aggregation_token_weights([int(n)], [1.0], aggregation, max_completion_length=t)[0, 0] for n in lengths]
    return jnp.stack(out).astype(jnp.float32)


def aggregation_lab_gradient(logits_K, rewards_K, coefficients_K):
    """Exact expected loss gradient of the on-policy clipped objective on a tabular response-level softmax.

    Responses y ~ π = softmax(θ) with rewards r, the exact baseline (A = r − E_π[r]) and the aggregation's
    per-sample coefficient c(y) (:func:`aggregation_sequence_coefficients`): the loss gradient is
    g = −Σ_y π(y)·A(y)·c(y)·∇ln π(y), i.e. g_k = −π_k·(A_k·c_k − E_π[A·c]). With c constant (Dr. GRPO) it is
    −c·∇E_π[r]: responses with equal rewards keep their probability ratio. With c = 1/n (GRPO) it is not the
    gradient of E_π[r]; among equally rewarded responses the shorter ones' probability moves faster (down if
    their advantage is negative: wrong answers drift to longer ones).

    Returns:
      ``[K]`` (float32 or wider). Jitted callers vmap over any argument.
    """
    lp = tabular_logps(_f32(logits_K))
    pi = jnp.exp(lp)
    r = _f32(rewards_K)
    a = (r - jnp.sum(pi * r)) * _f32(coefficients_K)
    return -pi * (a - jnp.sum(pi * a))


@functools.partial(jax.jit, static_argnames=("steps", "record_every"))
def train_aggregation_lab(logits_K, rewards_K, coefficients_K, *, lr=1.0, steps=2000, record_every=100):
    """Gradient descent θ ← θ − lr·g with :func:`aggregation_lab_gradient`; returns ln π ``[steps//record_every + 1, K]``.

    ``steps`` must be a positive multiple of ``record_every`` (static).
    """
    if int(steps) < 1 or int(record_every) < 1 or int(steps) % int(record_every):
        raise ValueError(f"train_aggregation_lab: steps={steps} must be a positive multiple of "
                         f"record_every={record_every}")

    def step(theta, _):
        return theta - lr * aggregation_lab_gradient(theta, rewards_K, coefficients_K), None

    def block(theta, _):
        theta, _ = jax.lax.scan(step, theta, None, length=record_every)
        return theta, tabular_logps(theta)

    theta0 = _f32(logits_K)
    _, curve = jax.lax.scan(block, theta0, None, length=steps // record_every)
    return jnp.concatenate([tabular_logps(theta0)[None], curve], 0)

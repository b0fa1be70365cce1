"""The pure mathematics of on-line RLHF: PPO/GRPO clipped objectives, group advantages, GAE, reward models.

Conventions follow TRL's trainers (``GRPOTrainer``, ``PPOTrainer``, ``RewardTrainer``) where they define
them; every deviation is stated in the function's docstring.

* :func:`policy_clip`: the clipped surrogate −min(w·A, clip(w, 1−ε_low, 1+ε_high)·A) per completion token,
  with token-level (PPO/GRPO) or sequence-level (GSPO) importance weights w, an optional per-token k3 KL
  penalty against a reference, and TRL's four aggregations ``"grpo"``, ``"bnpo"``, ``"dr_grpo"``,
  ``"dapo"``.
* :func:`group_advantages`: GRPO's A = (r − mean_group r) / (std + ε), with the group's, the batch's or no
  standard deviation (Dr. GRPO).
* :func:`gae`: generalised advantage estimation with a value head (PPO), right-padded completions.
* :func:`reward_model_loss`: the Bradley–Terry reward-model loss with an optional margin and TRL's
  reward-centering term.
* :func:`nash_md_pg`: the Nash-MD policy-gradient surrogate −(P(y ≻ y') − ½ − β·sg(log π/μ))·log π(y).

The KL estimators (k1, k2, k3) are :func:`jalign.divergences.kl_estimate`.

Every function is pure and ``jax.jit``-able. Validation (hyperparameters, shapes, 0/1 masks, finite values
at the positions that count) runs only on concrete inputs: under ``jit``/``vmap`` the values are abstract
and the checks are skipped. String options and ``group_size`` select the computation and must be static
under ``jit`` (close over them or use ``static_argnames``).

References:
  Schulman et al., Proximal Policy Optimization Algorithms, 2017 (arXiv 1707.06347).
  Schulman et al., High-Dimensional Continuous Control Using Generalized Advantage Estimation, ICLR 2016
  (arXiv 1506.02438).
  Zheng et al., Secrets of RLHF in Large Language Models Part I: PPO, 2023 (arXiv 2307.04964).
  Shao et al., DeepSeekMath (GRPO), 2024 (arXiv 2402.03300).
  Yu et al., DAPO: An Open-Source LLM Reinforcement Learning System at Scale, 2025 (arXiv 2503.14476).
  Liu et al., Understanding R1-Zero-Like Training: A Critical Perspective (Dr. GRPO), 2025
  (arXiv 2503.20783).
  Zheng et al., Group Sequence Policy Optimization (GSPO), 2025 (arXiv 2507.18071).
  Ouyang et al., Training language models to follow instructions with human feedback, NeurIPS 2022
  (arXiv 2203.02155) — the pairwise reward-model loss.
  Eisenstein et al., Helping or Herding? Reward Model Ensembles Mitigate but do not Eliminate Reward
  Hacking, 2023 (arXiv 2312.09244) — reward centering.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jalign.divergences import kl_estimate
from jalign.losses._common import as_float

AGGREGATIONS = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_LEVELS = ("token", "sequence")
SCALES = ("group", "batch", "none")


# ----------------------------------------------------------------------------------------------------------
# Validation (concrete values only; abstract values under jit / vmap pass through).


def _concrete(x: Any) -> np.ndarray | None:
    if x is None or isinstance(x, jax.core.Tracer):
        return None
    try:
        arr = np.asarray(x)
    except Exception:  # noqa: BLE001 - not array-like: leave it to jnp to complain
        return None
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.number) or arr.dtype == np.dtype("bfloat16"):
        return arr
    return None


def _check_choice(fn: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{fn}: unknown {name}={value!r}; valid values: {', '.join(choices)}")


def _check_scalar(fn: str, name: str, value: Any, pred, desc: str) -> None:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{fn}: hyperparameter {name}={value!r} must be a number {desc}")
    v = _concrete(value)
    if v is None:
        return
    v = v.astype(np.float64)
    if not (np.all(np.isfinite(v)) and np.all(pred(v))):
        raise ValueError(f"{fn}: hyperparameter {name}={value!r} must be finite and {desc}")


def _check_shape(fn: str, name: str, x: Any, shapes: list[tuple[int, ...]], what: str) -> None:
    s = tuple(np.shape(x))
    if s not in shapes:
        raise ValueError(f"{fn}: argument {name!r} must have shape {what}, got {s}")


def _check_mask(fn: str, mask: Any) -> np.ndarray | None:
    m = _concrete(mask)
    if m is None:
        return None
    m = m.astype(np.float64)
    bad = ~np.isin(m, (0.0, 1.0))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{fn}: argument 'mask' is not 0/1 at index {idx} ({int(bad.sum())} bad in total)")
    return m.astype(bool)


def _check_finite(fn: str, name: str, x: Any, where: np.ndarray | None = None) -> None:
    v = _concrete(x)
    if v is None:
        return
    bad = ~np.isfinite(v.astype(np.float64))
    if where is not None:
        bad &= np.broadcast_to(where, bad.shape)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        at = f" at index {idx}" if idx else ""
        raise ValueError(f"{fn}: argument {name!r} is not finite{at} ({int(bad.sum())} bad in total)")


def _num(x):
    """A hyperparameter for arithmetic: Python numbers stay weakly typed (they adopt the data's dtype)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x
    return as_float(x)


# ----------------------------------------------------------------------------------------------------------
# Clipped policy objective (PPO / GRPO / DAPO / Dr. GRPO / GSPO)


def policy_clip(
    logps,
    old_logps,
    advantages,
    mask,
    *,
    eps_low=0.2,
    eps_high=0.2,
    aggregation="grpo",
    importance_level="token",
    ref_logps=None,
    kl_coef=0.0,
    max_completion_length=None,
):
    """The clipped surrogate objective over completion tokens, aggregated to a scalar loss to minimise.

    Per completion token t of sequence b, with m the completion mask and A the advantage (a per-sequence
    advantage is broadcast to the sequence's tokens):

        ℓ_bt = −min(w_bt·A_bt, clip(w_bt, 1 − ε_low, 1 + ε_high)·A_bt) + kl_coef·k3_bt,

    * ``importance_level="token"`` (PPO, GRPO): w_bt = exp(logp_bt − old_logp_bt).
    * ``importance_level="sequence"`` (GSPO): w_bt = exp(Σ_t m_bt·(logp_bt − old_logp_bt) / max(Σ_t m_bt, 1))
      for every token of sequence b (the length-normalised sequence ratio; the gradient flows through every
      token's log-prob).
    * k3_bt = exp(ref_bt − logp_bt) − (ref_bt − logp_bt) − 1, the k3 estimator of KL(π‖π_ref) (see
      :func:`jalign.divergences.kl_estimate`), added per token *before* aggregation, as TRL does.

    Aggregations (TRL ``GRPOConfig.loss_type``), with S = Σ_bt m_bt·ℓ_bt:

    * ``"grpo"``: (1/B)·Σ_b [Σ_t m_bt·ℓ_bt / max(Σ_t m_bt, 1)] — each sequence's token mean, then the mean
      over sequences (a sequence with no completion token contributes 0 but still counts in B).
    * ``"bnpo"``: S / max(Σ_bt m_bt, 1) — the token mean over the batch.
    * ``"dr_grpo"``: S / (B·max_completion_length), ``max_completion_length`` defaulting to T.
    * ``"dapo"``: S / max(Σ_bt m_bt, 1). In TRL the normaliser is the number of completion tokens in the
      *global* batch (all gradient-accumulation micro-batches and processes) divided by the number of
      processes; here it is the token count of the arrays passed in, so on one micro-batch ``"dapo"`` and
      ``"bnpo"`` coincide. Under ``jit`` with a batch sharded over devices the count is global (XLA inserts
      the reduction). To reproduce TRL's value under gradient accumulation, multiply by
      (tokens in this micro-batch)/(tokens in the accumulated batch).

    ``old_logps`` is treated as data: pass ``jax.lax.stop_gradient(logps)`` for the on-policy case (TRL's
    ``num_iterations=1``, where w = 1 and the gradient is the policy gradient). ``ref_logps`` and
    ``advantages`` are data too (no ``stop_gradient`` is applied to them). Entries where ``mask`` is 0 may
    hold anything (NaN included): they are replaced before any arithmetic, so neither the value nor the
    gradient sees them.

    Args:
      logps: log π_θ of the completion tokens, ``[B, T]``.
      old_logps: log π_old of the same tokens (the sampling policy), ``[B, T]``.
      advantages: per-sequence ``[B]`` or per-token ``[B, T]`` advantages.
      mask: completion mask ``[B, T]`` (0/1 or bool).
      eps_low: lower clip range ε_low ∈ (0, 1).
      eps_high: upper clip range ε_high > 0 (ε_high > ε_low is DAPO's "clip-higher").
      aggregation: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"`` or ``"dapo"``.
      importance_level: ``"token"`` or ``"sequence"``.
      ref_logps: log π_ref of the tokens ``[B, T]``; required when ``kl_coef`` ≠ 0 (ignored when ``kl_coef``
        is a concrete 0, as TRL skips the reference when β = 0).
      kl_coef: β ≥ 0, the weight of the per-token k3 penalty.
      max_completion_length: the ``"dr_grpo"`` normaliser's length (a positive integer; TRL's
        ``max_completion_length``); ``None`` means T. Ignored by the other aggregations.

    Returns:
      The scalar loss, float32 or wider.

    Raises:
      ValueError: unknown ``aggregation``/``importance_level``; ``eps_low`` ∉ (0, 1); ``eps_high`` ≤ 0;
        ``kl_coef`` < 0; ``max_completion_length`` not a positive integer; ``kl_coef`` ≠ 0 without
        ``ref_logps``; wrong shapes; a non-0/1 mask; non-finite values at masked-in positions.

    References:
      Schulman et al., PPO, 2017 (arXiv 1707.06347); Shao et al., GRPO, 2024 (arXiv 2402.03300); Yu et al.,
      DAPO, 2025 (arXiv 2503.14476); Liu et al., Dr. GRPO, 2025 (arXiv 2503.20783); Zheng et al., GSPO, 2025
      (arXiv 2507.18071); TRL ``GRPOTrainer._compute_loss``.

    >>> import jax.numpy as jnp
    >>> lp = jnp.log(jnp.array([[0.5, 0.5, 0.5]])); old = jnp.log(jnp.array([[0.25, 0.5, 0.5]]))
    >>> m = jnp.array([[1.0, 1.0, 0.0]])
    >>> # token 0: w = 2 → clipped to 1.2 for A = 1; token 1: w = 1. Mean over the 2 tokens: −(1.2 + 1)/2
    >>> round(float(policy_clip(lp, old, jnp.ones(1), m)), 6)
    -1.1
    """
    fn = "policy_clip"
    _check_choice(fn, "aggregation", aggregation, AGGREGATIONS)
    _check_choice(fn, "importance_level", importance_level, IMPORTANCE_LEVELS)
    _check_scalar(fn, "eps_low", eps_low, lambda v: (v > 0) & (v < 1), "in (0, 1)")
    _check_scalar(fn, "eps_high", eps_high, lambda v: v > 0, "> 0")
    _check_scalar(fn, "kl_coef", kl_coef, lambda v: v >= 0, ">= 0")
    if max_completion_length is not None:
        _check_scalar(fn, "max_completion_length", max_completion_length,
                      lambda v: (v >= 1) & (v == np.round(v)), "a positive integer")

    shape = tuple(np.shape(logps))
    if len(shape) != 2:
        raise ValueError(f"{fn}: argument 'logps' must have shape [B, T], got {shape}")
    b, t = shape
    for name, x in (("old_logps", old_logps), ("mask", mask), ("ref_logps", ref_logps)):
        if x is not None:
            _check_shape(fn, name, x, [shape], f"[B, T] = {shape} (as 'logps')")
    _check_shape(fn, "advantages", advantages, [(b,), shape], f"[B] = ({b},) or [B, T] = {shape}")

    kl_c = _concrete(kl_coef)
    use_kl = not (kl_c is not None and np.all(kl_c == 0))
    if use_kl and ref_logps is None:
        raise ValueError(f"{fn}: argument 'ref_logps' is required when kl_coef={kl_coef!r} is not 0")

    valid_np = _check_mask(fn, mask)
    _check_finite(fn, "logps", logps, valid_np)
    _check_finite(fn, "old_logps", old_logps, valid_np)
    if use_kl:
        _check_finite(fn, "ref_logps", ref_logps, valid_np)
    adv_where = None if valid_np is None else (valid_np if np.ndim(advantages) == 2 else valid_np.any(-1))
    _check_finite(fn, "advantages", advantages, adv_where)

    valid = jnp.asarray(mask) > 0
    m = valid.astype(as_float(logps).dtype)
    # Replace masked-out entries before any arithmetic (the double-where trick): garbage there (NaN, ±inf)
    # must reach neither the value nor the gradient.
    lp = jnp.where(valid, as_float(logps), 0.0)
    old = jnp.where(valid, as_float(old_logps), 0.0)
    adv = as_float(advantages)
    adv = jnp.where(valid, adv, 0.0) if adv.ndim == 2 else jnp.where(valid.any(-1), adv, 0.0)[:, None]

    log_ratio = lp - old
    n_tokens = m.sum(-1)
    if importance_level == "sequence":
        log_ratio = ((m * log_ratio).sum(-1) / jnp.maximum(n_tokens, 1.0))[:, None]
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - _num(eps_low), 1.0 + _num(eps_high))
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    if use_kl:
        ref = jnp.where(valid, as_float(ref_logps), 0.0)
        per_token = per_token + _num(kl_coef) * kl_estimate(lp, ref, "k3")
    per_token = jnp.where(valid, jnp.broadcast_to(per_token, m.shape), 0.0)

    if aggregation == "grpo":
        return jnp.mean(per_token.sum(-1) / jnp.maximum(n_tokens, 1.0))
    total = per_token.sum()
    if aggregation == "dr_grpo":
        length = t if max_completion_length is None else _num(max_completion_length)
        return total / (b * length)
    # "bnpo" and "dapo" (local batch: see the docstring)
    return total / jnp.maximum(m.sum(), 1.0)


# ----------------------------------------------------------------------------------------------------------
# Group-relative advantages (GRPO, Dr. GRPO)


def group_advantages(rewards, group_size, *, scale="group", eps=1e-4):
    """GRPO's group-relative advantages for G = ``group_size`` completions per prompt.

    The rewards are grouped consecutively (completions b·G … b·G + G − 1 belong to prompt b, TRL's layout):

        A_i = (r_i − mean_{j ∈ g(i)} r_j) / s,

    with s = std_{g(i)}(r) + ε for ``scale="group"``, s = std_batch(r) + ε (the standard deviation of all
    rewards in the batch, TRL's ``scale_rewards="batch"``) for ``scale="batch"``, and s = 1 for
    ``scale="none"`` (Dr. GRPO). The standard deviations are the unbiased ones (ddof = 1, torch's default as
    TRL uses it). Unscaled, A_i = ((G − 1)/G)·(r_i − mean_{j≠i} r_j), i.e. (G − 1)/G times the RLOO
    advantage. In TRL the batch statistics are over the batch gathered from all processes; here over the
    rewards passed in.

    Args:
      rewards: scalar rewards ``[B]``, B divisible by ``group_size``.
      group_size: G ≥ 1 (static under ``jit``); ``scale="group"`` needs G ≥ 2 (and ``"batch"`` needs B ≥ 2)
        for the unbiased standard deviation to exist.
      scale: ``"group"``, ``"batch"`` or ``"none"``.
      eps: ε ≥ 0 added to the standard deviation.

    Returns:
      The advantages ``[B]``, float32 or wider.

    Raises:
      ValueError: ``group_size`` not a positive integer or not dividing B (the message names both);
        unknown ``scale``; ``eps`` < 0; ``rewards`` not 1-D or (when concrete) not finite; a standard
        deviation over a single reward.

    References:
      Shao et al., DeepSeekMath (GRPO), 2024 (arXiv 2402.03300); Liu et al., Dr. GRPO, 2025
      (arXiv 2503.20783); TRL ``GRPOTrainer`` (``scale_rewards``).

    >>> import jax.numpy as jnp
    >>> group_advantages(jnp.array([1.0, 0.0, 2.0, 2.0]), 2, scale="none").tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    fn = "group_advantages"
    _check_choice(fn, "scale", scale, SCALES)
    _check_scalar(fn, "eps", eps, lambda v: v >= 0, ">= 0")
    shape = tuple(np.shape(rewards))
    if len(shape) != 1:
        raise ValueError(f"{fn}: argument 'rewards' must have shape [B], got {shape}")
    n = shape[0]
    if isinstance(group_size, (bool, np.bool_)) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"{fn}: group_size={group_size!r} must be a positive integer")
    if n % group_size:
        raise ValueError(f"{fn}: group_size={group_size} does not divide the batch size B={n}")
    if scale == "group" and group_size < 2:
        raise ValueError(f"{fn}: group_size={group_size} with scale='group': the unbiased std needs >= 2 rewards")
    if scale == "batch" and n < 2:
        raise ValueError(f"{fn}: batch size B={n} with scale='batch': the unbiased std needs >= 2 rewards")
    _check_finite(fn, "rewards", rewards)

    r = as_float(rewards)
    grouped = r.reshape(n // group_size, group_size)
    centred = grouped - grouped.mean(-1, keepdims=True)
    if scale == "group":
        centred = centred / (jnp.std(grouped, axis=-1, ddof=1, keepdims=True) + _num(eps))
    elif scale == "batch":
        centred = centred / (jnp.std(r, ddof=1) + _num(eps))
    return centred.reshape(n)


# ----------------------------------------------------------------------------------------------------------
# Generalised advantage estimation (PPO with a value head)


def gae(rewards, values, mask, *, gamma, lam):
    """Generalised advantage estimates and returns over completion tokens, by a reverse ``lax.scan``.

    For each sequence, with V_t the value at completion token t and V = 0 after the last completion token:

        δ_t = r_t + γ·V_{t+1} − V_t,        A_t = Σ_{l≥0} (γλ)^l·δ_{t+l} = δ_t + γλ·A_{t+1},
        R_t = A_t + V_t.

    ``rewards`` are per token (typically −β·KL_t at every token plus the sequence score on the last one).
    Masked positions of ``rewards`` and ``values`` are read as 0 (the values there may be garbage, NaN
    included), and the outputs are 0 there. For right-padded masks (a completion shorter than T) this is
    exactly the recursion above on each completion; it is also what TRL's ``PPOTrainer`` computes (rewards
    and values zero-filled past the end). A mask with interior holes is read the same way: a hole is a step
    with zero reward and zero value.

    Args:
      rewards: per-token rewards ``[B, T]``.
      values: value estimates V_t ``[B, T]`` (treated as data).
      mask: completion mask ``[B, T]`` (0/1 or bool).
      gamma: discount γ ∈ [0, 1].
      lam: GAE λ ∈ [0, 1].

    Returns:
      ``(advantages, returns)``, both ``[B, T]``, float32 or wider, 0 where ``mask`` is 0.

    Raises:
      ValueError: ``gamma`` or ``lam`` outside [0, 1]; shapes differ or are not 2-D; a non-0/1 mask;
        non-finite values at masked-in positions.

    References:
      Schulman et al., GAE, ICLR 2016 (arXiv 1506.02438); Zheng et al., Secrets of RLHF I, 2023
      (arXiv 2307.04964).

    >>> import jax.numpy as jnp
    >>> adv, ret = gae(jnp.array([[0.0, 1.0, 0.0]]), jnp.array([[0.5, 0.5, 9.0]]), jnp.array([[1, 1, 0]]),
    ...                gamma=1.0, lam=1.0)
    >>> adv.tolist(), ret.tolist()  # returns = rewards-to-go: 1, 1 (the padded value 9 is never read)
    ([[0.5, 0.5, 0.0]], [[1.0, 1.0, 0.0]])
    """
    fn = "gae"
    _check_scalar(fn, "gamma", gamma, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    _check_scalar(fn, "lam", lam, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    shape = tuple(np.shape(rewards))
    if len(shape) != 2:
        raise ValueError(f"{fn}: argument 'rewards' must have shape [B, T], got {shape}")
    for name, x in (("values", values), ("mask", mask)):
        _check_shape(fn, name, x, [shape], f"[B, T] = {shape} (as 'rewards')")
    valid_np = _check_mask(fn, mask)
    _check_finite(fn, "rewards", rewards, valid_np)
    _check_finite(fn, "values", values, valid_np)

    valid = jnp.asarray(mask) > 0
    dtype = jnp.result_type(as_float(rewards), as_float(values))  # one dtype for the scan carry
    r = jnp.where(valid, as_float(rewards), 0.0).astype(dtype)
    v = jnp.where(valid, as_float(values), 0.0).astype(dtype)
    g = jnp.asarray(gamma).astype(dtype)
    gl = (jnp.asarray(gamma) * jnp.asarray(lam)).astype(dtype)

    def step(carry, x):
        next_value, next_adv = carry
        r_t, v_t = x
        adv_t = r_t + g * next_value - v_t + gl * next_adv
        return (v_t, adv_t), adv_t

    zeros = jnp.zeros(shape[:1], r.dtype)
    _, adv_tb = jax.lax.scan(step, (zeros, zeros), (r.T, v.T), reverse=True)
    adv = jnp.where(valid, adv_tb.T, 0.0)
    return adv, jnp.where(valid, adv + v, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Reward model


def reward_model_loss(chosen_rewards, rejected_rewards, *, margin=None, center_coef=0.0):
    """The pairwise (Bradley–Terry) reward-model loss per pair, TRL ``RewardTrainer`` conventions.

        ℓ = −log σ(r_c − r_r − margin) + center_coef·(r_c + r_r)²,

    computed with ``jax.nn.log_sigmoid`` (finite value and gradient at any margin). The centering term
    (TRL's ``center_rewards_coefficient``) pulls the reward scale's free offset towards 0. TRL returns the
    batch mean; this returns the per-pair losses.

    Args:
      chosen_rewards: r_c, the reward model's scores of the chosen responses ``[B]``.
      rejected_rewards: r_r, the scores of the rejected responses ``[B]``.
      margin: optional margin, a scalar or ``[B]`` (``None`` = 0).
      center_coef: centering coefficient ≥ 0.

    Returns:
      Per-pair losses ``[B]``, float32 or wider.

    Raises:
      ValueError: shapes differ; ``center_coef`` < 0; non-finite rewards or margin (when concrete).

    References:
      Ouyang et al., InstructGPT, NeurIPS 2022 (arXiv 2203.02155); Touvron et al., Llama 2, 2023
      (arXiv 2307.09288) — the margin; Eisenstein et al., 2023 (arXiv 2312.09244) — centering.

    >>> import jax.numpy as jnp
    >>> round(float(reward_model_loss(jnp.zeros(1), jnp.zeros(1))[0]), 6)  # log 2
    0.693147
    """
    fn = "reward_model_loss"
    _check_scalar(fn, "center_coef", center_coef, lambda v: v >= 0, ">= 0")
    shape = tuple(np.shape(chosen_rewards))
    _check_shape(fn, "rejected_rewards", rejected_rewards, [shape], f"{shape} (as 'chosen_rewards')")
    if margin is not None and tuple(np.shape(margin)) not in ((), shape):
        raise ValueError(f"{fn}: argument 'margin' must be a scalar or have shape {shape}, "
                         f"got {tuple(np.shape(margin))}")
    _check_finite(fn, "chosen_rewards", chosen_rewards)
    _check_finite(fn, "rejected_rewards", rejected_rewards)
    _check_finite(fn, "margin", margin)

    rc, rr = as_float(chosen_rewards), as_float(rejected_rewards)
    z = rc - rr
    if margin is not None:
        z = z - _num(margin)
    loss = -jax.nn.log_sigmoid(z)
    c = _concrete(center_coef)
    if c is None or np.any(c != 0):
        loss = loss + _num(center_coef) * jnp.square(rc + rr)
    return loss


# ----------------------------------------------------------------------------------------------------------
# Leave-one-out and REINFORCE++ advantages


def leave_one_out_advantages(rewards, group_size):
    """RLOO's advantages A_i = r_i − mean_{j≠i, j ∈ g(i)} r_j for G = ``group_size`` consecutive completions
    per prompt (= G/(G − 1) times :func:`group_advantages` with ``scale="none"``).

    Args:
      rewards: ``[B]``, B divisible by ``group_size``.
      group_size: G ≥ 2.

    Returns:
      ``[B]`` advantages, float32 or wider.

    Raises:
      ValueError: ``group_size`` < 2 or not dividing B; ``rewards`` not 1-D or not finite (when concrete).

    References:
      Kool et al., Buy 4 REINFORCE Samples, Get a Baseline for Free!, ICLR-W 2019; Ahmadian et al., Back to
      Basics, ACL 2024 (arXiv 2402.14740).

    >>> import jax.numpy as jnp
    >>> leave_one_out_advantages(jnp.array([1.0, 0.0, 2.0, 2.0]), 2).tolist()
    [1.0, -1.0, 0.0, 0.0]
    """
    fn = "leave_one_out_advantages"
    shape = tuple(np.shape(rewards))
    if len(shape) != 1:
        raise ValueError(f"{fn}: argument 'rewards' must have shape [B], got {shape}")
    if isinstance(group_size, (bool, np.bool_)) or not isinstance(group_size, (int, np.integer)) or group_size < 2:
        raise ValueError(f"{fn}: group_size={group_size!r} must be an integer >= 2 (a leave-one-out baseline "
                         "needs another sample)")
    if shape[0] % group_size:
        raise ValueError(f"{fn}: group_size={group_size} does not divide the batch size B={shape[0]}")
    _check_finite(fn, "rewards", rewards)
    r = as_float(rewards).reshape(-1, group_size)
    return (r - (r.sum(-1, keepdims=True) - r) / (group_size - 1)).reshape(-1)


def masked_whiten(x, mask, *, eps=1e-8):
    """(x − μ)/√max(σ², ε) over the positions where ``mask`` is 1, with μ and σ² the masked mean and
    (population) variance of the whole array; 0 where ``mask`` is 0. OpenRLHF's global advantage
    normalisation for REINFORCE++.

    >>> import jax.numpy as jnp
    >>> masked_whiten(jnp.array([[1.0, 3.0, 7.0]]), jnp.array([[1, 1, 0]])).tolist()
    [[-1.0, 1.0, 0.0]]
    """
    valid = jnp.asarray(mask) > 0
    m = valid.astype(as_float(x).dtype)
    v = jnp.where(valid, as_float(x), 0.0)
    n = jnp.maximum(m.sum(), 1.0)
    mean = v.sum() / n
    var = (m * jnp.square(v - mean)).sum() / n
    return jnp.where(valid, (v - mean) * jax.lax.rsqrt(jnp.maximum(var, _num(eps))), 0.0)


def reinforce_pp_advantages(rewards, mask, *, token_kl=None, kl_coef=0.0, group_size=None, eps=1e-8):
    """REINFORCE++ advantages per completion token (Hu, 2025; OpenRLHF's ``reinforce`` and
    ``reinforce_baseline`` estimators).

    1. With ``group_size`` = G (REINFORCE++-baseline) the sequence rewards are centred by their group mean:
       r ← r − mean_{g(i)} r (groups of G consecutive completions); with ``None`` they are used as they are.
    2. Token rewards: r_t = −kl_coef·kl_t at every completion token, plus r on the last completion token.
    3. Returns (γ = 1): G_t = Σ_{s ≥ t} m_s·r_s.
    4. Global whitening over every completion token of the batch: :func:`masked_whiten`.

    Args:
      rewards: sequence rewards ``[B]``.
      mask: completion mask ``[B, T]`` (right-padded: the last 1 of a row is its last token).
      token_kl: per-token KL estimates ``[B, T]`` (e.g. k1 = log π_old − log π_ref), data; required when
        ``kl_coef`` ≠ 0.
      kl_coef: β ≥ 0.
      group_size: G for the group-mean baseline, or ``None``.
      eps: the variance floor of the whitening.

    Returns:
      ``[B, T]`` advantages, 0 where ``mask`` is 0.

    References:
      Hu, REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models, 2025
      (arXiv 2501.03262); OpenRLHF ``experience_maker`` (advantage estimators ``reinforce``,
      ``reinforce_baseline``).

    >>> import jax.numpy as jnp
    >>> reinforce_pp_advantages(jnp.array([1.0, 0.0]), jnp.ones((2, 1))).tolist()
    [[1.0], [-1.0]]
    """
    fn = "reinforce_pp_advantages"
    _check_scalar(fn, "kl_coef", kl_coef, lambda v: v >= 0, ">= 0")
    shape = tuple(np.shape(mask))
    if len(shape) != 2:
        raise ValueError(f"{fn}: argument 'mask' must have shape [B, T], got {shape}")
    _check_shape(fn, "rewards", rewards, [shape[:1]], f"[B] = ({shape[0]},)")
    if token_kl is not None:
        _check_shape(fn, "token_kl", token_kl, [shape], f"[B, T] = {shape} (as 'mask')")
    valid_np = _check_mask(fn, mask)
    _check_finite(fn, "rewards", rewards)
    r = as_float(rewards)
    if group_size is not None:
        if isinstance(group_size, (bool, np.bool_)) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise ValueError(f"{fn}: group_size={group_size!r} must be a positive integer or None")
        if shape[0] % group_size:
            raise ValueError(f"{fn}: group_size={group_size} does not divide the batch size B={shape[0]}")
        g = r.reshape(-1, group_size)
        r = (g - g.mean(-1, keepdims=True)).reshape(-1)
    valid = jnp.asarray(mask) > 0
    m = valid.astype(r.dtype)
    t = shape[1]
    # the last completion token: the highest index with mask 1
    last = jnp.argmax(jnp.where(valid, jnp.arange(t), -1), axis=-1)
    tok = jax.nn.one_hot(last, t, dtype=r.dtype) * r[:, None] * valid.any(-1, keepdims=True)
    kl_c = _concrete(kl_coef)
    if not (kl_c is not None and np.all(kl_c == 0)):
        if token_kl is None:
            raise ValueError(f"{fn}: argument 'token_kl' is required when kl_coef={kl_coef!r} is not 0")
        _check_finite(fn, "token_kl", token_kl, valid_np)
        tok = tok - _num(kl_coef) * jnp.where(valid, as_float(token_kl), 0.0)
    tok = tok * m
    returns = jnp.flip(jnp.cumsum(jnp.flip(tok, -1), -1), -1)
    return masked_whiten(returns, mask, eps=eps)




# ----------------------------------------------------------------------------------------------------------
# Nash-MD policy gradient


def nash_md_pg(logps, ref_logps, preference, *, beta):
    """The Nash-MD policy-gradient surrogate per completion y ~ π (Munos et al., 2024, Nash-MD-PG).

        ℓ = −(p − ½ − β·sg(log π(y) − log μ(y)))·log π(y),

    with log π(y), log μ(y) the summed response log-probs of the policy and the reference, p = P(y ≻ y') the
    preference of y over an opponent y' drawn from the geometric mixture π^{1−β_mix}·μ^{β_mix} (a probability
    or a 0/½/1 label) and sg the stop-gradient. For y ~ π its expected gradient is

        E_y[∇ℓ] = −∇_θ [ E_{y~π} P(y ≻ y') − β·KL(π‖μ) ],

    the gradient of the regularised game's payoff against the (fixed) mixture: REINFORCE with the score
    function E[(log π/μ)·∇log π] = ∇KL(π‖μ) and ½ as a control variate (E[∇log π] = 0). TRL's
    ``NashMDTrainer`` uses the same score term (p − ½)·log π but weights each token's log-prob by its own
    log-ratio in the KL term (Σ_t sg(log π_t/μ_t)·log π_t); here the KL term is the sequence-level score
    function, whose expectation is exactly β·∇KL(π‖μ). The value of ℓ is a surrogate; only its gradient
    has a meaning.

    Args:
      logps: log π(y), ``[B]`` (differentiable).
      ref_logps: log μ(y), ``[B]`` (gradient stopped).
      preference: p = P(y ≻ y') ∈ [0, 1], ``[B]`` (gradient stopped).
      beta: the KL weight β ≥ 0 (Munos et al.'s τ).

    Returns:
      Per-completion losses ``[B]``.

    References:
      Munos et al., Nash Learning from Human Feedback, ICML 2024 (arXiv 2312.00886), Sec. 7 (Nash-MD-PG).
      Calandriello et al., Human Alignment of Large Language Models through Online Preference Optimisation,
      ICML 2024 (arXiv 2403.08635).

    >>> import jax.numpy as jnp
    >>> float(nash_md_pg(jnp.array([-2.0]), jnp.array([-2.0]), jnp.array([1.0]), beta=0.1)[0])  # −½·(−2)
    1.0
    """
    fn = "nash_md_pg"
    _check_scalar(fn, "beta", beta, lambda v: v >= 0, ">= 0")
    shape = tuple(np.shape(logps))
    for name, x in (("ref_logps", ref_logps), ("preference", preference)):
        _check_shape(fn, name, x, [shape], f"{shape} (as 'logps')")
    p = _concrete(preference)
    if p is not None and not (np.all(p >= 0) and np.all(p <= 1)):
        raise ValueError(f"{fn}: argument 'preference' must lie in [0, 1], got {p}")
    lp = as_float(logps)
    sg = jax.lax.stop_gradient
    adv = sg(as_float(preference)) - 0.5 - _num(beta) * sg(lp - as_float(ref_logps))
    return -adv * lp


__all__ = ["AGGREGATIONS", "IMPORTANCE_LEVELS", "SCALES", "gae", "group_advantages", "leave_one_out_advantages",
           "masked_whiten", "nash_md_pg", "policy_clip", "reinforce_pp_advantages", "reward_model_loss"]

"""Ranking accuracy on a contextual bandit: DPO's exact optimum, exact DPO training, and which pairs flip.

The laboratory of the ``rankings`` reproduction (Chen et al., *Preference Learning Algorithms Do Not Learn
Preference Rankings*, NeurIPS 2024, arXiv 2405.19534). A contextual bandit has true rewards r(x, y), a
reference μ(y|x) and contexts x ~ ρ; preferences are Bradley–Terry, P(a ≻ b | x) = σ(r(x, a) − r(x, b)).

* :func:`preference_pairs` enumerates every unordered pair {a, b} of each context, oriented so that the chosen
  response y_w has the larger true reward (p = P(y_w ≻ y_l) ≥ ½).
* :func:`population_dpo_loss` is DPO's population loss for pairs (a, b) ~ μ(·|x)·μ(·|x), labelled by the
  Bradley–Terry model, for a tabular softmax policy with logits θ:
  L(θ) = Σ_x ρ(x) Σ_{a≠b} μ(a|x) μ(b|x) P(a ≻ b|x) · (−ln σ(β·h_ab)),
  h_ab = (θ_a − ln μ(a|x)) − (θ_b − ln μ(b|x)). It is convex in θ; its minimisers are the logits of
  π* ∝ μ·exp(r/β) (:func:`dpo_optimum_logps`), where β·h_ab = r(x, a) − r(x, b).
* :func:`dpo_newton` minimises L exactly (Newton's method on the exact gradient and Hessian, a line search);
  :func:`dpo_gradient_descent` runs plain gradient descent on L and records the policy at given step budgets.

All functions are pure and ``jax.jit``/``jax.vmap``-able (over bandits/seeds); they keep the input dtype, so
under ``jax.enable_x64(True)`` everything is float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jalign.envs.bandit import ContextualBandit

__all__ = [
    "dpo_gradient_descent",
    "dpo_newton",
    "dpo_optimum_logps",
    "pair_logps",
    "population_dpo_loss",
    "preference_pairs",
    "random_ranking_bandit",
]


def _check_beta(fn: str, beta) -> None:
    if not isinstance(beta, jax.core.Tracer):
        v = np.asarray(beta)
        if v.ndim != 0 or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{fn}: argument beta={beta!r} must be a finite scalar > 0")


def random_ranking_bandit(key, num_contexts: int, num_arms: int, *, reward_scale: float = 1.0,
                          ref_scale: float = 2.0, dtype=jnp.float32) -> ContextualBandit:
    """A random contextual bandit with uniform contexts: r ~ N(0, reward_scale²), μ(·|x) = softmax(ref_scale·g),
    g ~ N(0, 1) independent of r (so the reference ranks pairs at chance on average).

    Args:
      key: PRNG key.
      num_contexts: X ≥ 1.
      num_arms: K ≥ 2.
      reward_scale: standard deviation of the true rewards (Bradley–Terry scale 1).
      ref_scale: spread of the reference logits; larger gives wider reference log-prob margins.
      dtype: float dtype of the arrays (float64 needs ``jax.enable_x64``).

    Returns:
      A :class:`~jalign.envs.ContextualBandit` with rewards and ref_logps ``[X, K]``, ρ uniform.
    """
    if num_contexts < 1:
        raise ValueError(f"random_ranking_bandit: argument num_contexts={num_contexts} must be >= 1")
    if num_arms < 2:
        raise ValueError(f"random_ranking_bandit: argument num_arms={num_arms} must be >= 2")
    kr, kg = jax.random.split(key)
    r = reward_scale * jax.random.normal(kr, (num_contexts, num_arms), dtype)
    ref = jax.nn.log_softmax(ref_scale * jax.random.normal(kg, (num_contexts, num_arms), dtype), axis=-1)
    ctx = jnp.full((num_contexts,), -jnp.log(jnp.asarray(num_contexts, dtype)), dtype)
    return ContextualBandit(rewards=r, ref_logps=ref, context_logps=ctx)


def preference_pairs(bandit: ContextualBandit):
    """Every unordered pair of every context, chosen = the larger true reward (ties: the lower index).

    Args:
      bandit: a contextual bandit with rewards ``[X, K]``.

    Returns:
      ``(ctx, chosen, rejected, pref_probs)``, each ``[X·K(K−1)/2]``: context and arm indices and
      p = σ(r(x, y_w) − r(x, y_l)) ≥ ½ (Bradley–Terry).
    """
    x_n, k = bandit.rewards.shape
    a, b = np.triu_indices(k, 1)
    ctx = jnp.repeat(jnp.arange(x_n), len(a))
    a = jnp.tile(jnp.asarray(a), x_n)
    b = jnp.tile(jnp.asarray(b), x_n)
    ra, rb = bandit.rewards[ctx, a], bandit.rewards[ctx, b]
    a_wins = ra >= rb
    chosen, rejected = jnp.where(a_wins, a, b), jnp.where(a_wins, b, a)
    p = jax.nn.sigmoid(jnp.abs(ra - rb))
    return ctx, chosen, rejected, p


def pair_logps(logps_XxK, ctx, chosen, rejected):
    """``(ln π(y_w|x), ln π(y_l|x))`` of the pairs, each ``[P]``."""
    return logps_XxK[ctx, chosen], logps_XxK[ctx, rejected]


def _context_loss(theta_K, ref_K, rewards_K, beta):
    """Σ_{a≠b} μ_a μ_b P(a ≻ b) (−ln σ(β h_ab)) for one context (the a = b terms are 0·…, dropped by the mask)."""
    u = theta_K - ref_K
    h = u[:, None] - u[None, :]
    w = jnp.exp(ref_K[:, None] + ref_K[None, :]) * (1.0 - jnp.eye(theta_K.shape[-1], dtype=theta_K.dtype))
    p = jax.nn.sigmoid(rewards_K[:, None] - rewards_K[None, :])
    return jnp.sum(w * p * -jax.nn.log_sigmoid(beta * h))


def population_dpo_loss(logits_XxK, bandit: ContextualBandit, beta):
    """DPO's population loss L(θ) on pairs (a, b) ~ μ·μ with Bradley–Terry labels (module docstring).

    Args:
      logits_XxK: tabular policy logits θ (π = softmax θ; L depends on θ only through π).
      bandit: the contextual bandit (rewards, reference μ, contexts ρ).
      beta: β > 0.

    Returns:
      The scalar L(θ) = Σ_x ρ(x) Σ_{a≠b} μ(a|x) μ(b|x) σ(r_a − r_b) · (−ln σ(β·h_ab)).

    References:
      Rafailov et al., Direct Preference Optimization, NeurIPS 2023 (arXiv 2305.18290).
    """
    _check_beta("population_dpo_loss", beta)
    per = jax.vmap(_context_loss, (0, 0, 0, None))(logits_XxK, bandit.ref_logps, bandit.rewards, beta)
    return jnp.sum(jnp.exp(bandit.context_logps) * per)


def dpo_optimum_logps(bandit: ContextualBandit, beta):
    """ln π*(y|x) of DPO's optimum π* ∝ μ·exp(r/β) (closed form; keeps the input dtype), ``[X, K]``."""
    _check_beta("dpo_optimum_logps", beta)
    return jax.nn.log_softmax(bandit.ref_logps + bandit.rewards / beta, axis=-1)


_STEPS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125)


def _newton_context(ref_K, rewards_K, beta, iters):
    k = ref_K.shape[-1]
    loss = lambda t: _context_loss(t, ref_K, rewards_K, beta)
    ones = jnp.ones((k, k), ref_K.dtype)
    steps = jnp.asarray(_STEPS, ref_K.dtype)

    def body(theta, _):
        g = jax.grad(loss)(theta)
        hess = jax.hessian(loss)(theta)
        # H·1 = 0 and g ⊥ 1, so (H + c·11ᵀ)⁻¹ g = H⁺ g (the Newton step with no shift of the logits).
        c = jnp.trace(hess) / k + jnp.finfo(ref_K.dtype).tiny
        d = jnp.linalg.solve(hess + c * ones / k, g)
        cand = theta[None, :] - steps[:, None] * d[None, :]
        cur = loss(theta)
        slack = 16 * jnp.finfo(ref_K.dtype).eps * jnp.abs(cur)  # round-off in the comparison, near the optimum
        ok = jax.vmap(loss)(cand) <= cur + slack  # nan compares False
        # the largest step that does not raise the loss (near the optimum: the full Newton step)
        return jnp.where(jnp.any(ok), cand[jnp.argmax(ok)], theta), None

    theta, _ = jax.lax.scan(body, ref_K, None, length=iters)
    return jax.nn.log_softmax(theta)


def dpo_newton(bandit: ContextualBandit, beta, *, iters: int = 40):
    """Minimise :func:`population_dpo_loss` exactly: Newton's method from θ = ln μ, per context.

    Each step solves with the exact Hessian (a weighted graph Laplacian, null space 1) and keeps the best of
    the largest of the step sizes 1, ½, …, 1/32 that does not raise the loss (beyond round-off).

    Args:
      bandit: the contextual bandit.
      beta: β > 0.
      iters: Newton steps (static).

    Returns:
      ln π of the minimiser, ``[X, K]`` (equal to :func:`dpo_optimum_logps` up to round-off).
    """
    _check_beta("dpo_newton", beta)
    if iters < 1:
        raise ValueError(f"dpo_newton: argument iters={iters} must be >= 1")
    return jax.vmap(_newton_context, (0, 0, None, None))(bandit.ref_logps, bandit.rewards, beta, iters)


def dpo_gradient_descent(bandit: ContextualBandit, beta, *, lr, budgets):
    """Plain gradient descent θ ← θ − lr·∇L(θ) on :func:`population_dpo_loss` from θ = ln μ.

    Args:
      bandit: the contextual bandit.
      beta: β > 0.
      lr: the learning rate (> 0); the dynamics of β·θ are β-free with lr = η/(β²·max ρ).
      budgets: increasing step counts (static, a tuple of ints ≥ 0) at which the policy is recorded.

    Returns:
      ln π after each budget, ``[len(budgets), X, K]``.
    """
    _check_beta("dpo_gradient_descent", beta)
    budgets = tuple(int(b) for b in budgets)
    if not budgets or budgets[0] < 0 or any(b2 < b1 for b1, b2 in zip(budgets, budgets[1:], strict=False)):
        raise ValueError(f"dpo_gradient_descent: argument budgets={budgets} must be non-negative and increasing")
    if not isinstance(lr, jax.core.Tracer) and not float(lr) > 0:
        raise ValueError(f"dpo_gradient_descent: argument lr={lr!r} must be > 0")
    grad = jax.grad(population_dpo_loss)

    def step(theta, _):
        return theta - lr * grad(theta, bandit, beta), None

    theta = bandit.ref_logps
    out, done = [], 0
    for b in budgets:
        if b > done:
            theta, _ = jax.lax.scan(step, theta, None, length=b - done)
            done = b
        out.append(jax.nn.log_softmax(theta, axis=-1))
    return jnp.stack(out)

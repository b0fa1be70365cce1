"""Mixtures of Bradley–Terry preference models over users, fitted by EM (MaxMin-RLHF's first step).

Each user u belongs to one latent group z_u ∈ {1..G}, drawn with the mixture weights α; group g has a reward
vector r_g ∈ R^K over K arms. A comparison n of arms (a_n, b_n) by user u_n gets the label l_n = 1 (a_n
preferred) with probability σ(r_g(a_n) − r_g(b_n)), so with s_n = 2·l_n − 1 its log-likelihood is
log σ(s_n·(r_g(a_n) − r_g(b_n))). The marginal log-likelihood is

    ℓ(r, α) = Σ_u log Σ_g α_g · Π_{n: u_n = u} σ(s_n·(r_g(a_n) − r_g(b_n))),

a product over all of a user's comparisons inside the sum over groups (a user's labels share one group).
EM (Chakraborty et al., 2024):

* E-step: responsibilities γ_{u,g} ∝ α_g·Π_{n: u_n = u} σ(s_n·d_{n,g}) (computed in log space);
* M-step: α_g = mean_u γ_{u,g}, and for every group the weighted, L2-penalised logistic regression
  max_{r_g} Σ_n γ_{u_n,g}·log σ(s_n·(r_g(a_n) − r_g(b_n))) − (l2/2)·‖r_g‖², by damped Newton steps
  (warm-started; each step takes the largest of the step sizes 1, ½, …, 2⁻²⁰ at which the objective,
  concave along the step, still increases, or none; so a step never lowers the objective, which makes the
  whole iteration a generalised EM whose objective never decreases).

The rewards are identifiable only up to one constant per group; they are kept at mean 0 over the arms (a
re-centring never lowers the objective: it leaves the likelihood unchanged and shrinks the penalty). With
l2 > 0 EM increases the penalised objective ℓ − (l2/2)·Σ_g ‖r_g‖² (returned as ``objective``), with l2 = 0
the log-likelihood itself.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_STEP_SIZES = tuple(2.0**-k for k in range(21))


class BTMixture(NamedTuple):
    """The result of :func:`fit_bt_mixture` (a pytree).

    Attributes:
      rewards: ``[G, K]`` each group's rewards over the arms, mean 0 over the arms.
      weights: ``[G]`` the mixture weights α (sum to 1).
      responsibilities: ``[U, G]`` P(z_u = g | user u's labels) under ``rewards`` and ``weights``.
      log_likelihood: ``[num_iters + 1]`` ℓ before each M-step and after the last one (the last entry is the
        log-likelihood of the returned parameters).
      objective: ``[num_iters + 1]`` ℓ − (l2/2)·Σ_g ‖r_g‖², the quantity EM never decreases (= the
        log-likelihood when l2 = 0).
    """

    rewards: jax.Array
    weights: jax.Array
    responsibilities: jax.Array
    log_likelihood: jax.Array
    objective: jax.Array


def _pair_logliks(rewards_GxK, a, b, sign):
    """[N, G] log σ(s_n·(r_g(a_n) − r_g(b_n)))."""
    d = rewards_GxK[:, a] - rewards_GxK[:, b]  # [G, N]
    return jax.nn.log_sigmoid(sign[None, :] * d).T


def _e_step(rewards_GxK, log_weights, user_ids, a, b, sign, num_users):
    per_user = jax.ops.segment_sum(_pair_logliks(rewards_GxK, a, b, sign), user_ids, num_segments=num_users)
    joint = per_user + log_weights[None, :]  # [U, G]
    norm = jax.nn.logsumexp(joint, axis=1)
    return jnp.exp(joint - norm[:, None]), jnp.sum(norm)


def _group_grad(r_K, c_N, a, b, sign, l2):
    """∇ of Σ_n c_n·log σ(s_n·(r(a_n) − r(b_n))) − (l2/2)·‖r‖², and the curvatures σ(d)·σ(−d) per pair."""
    k = r_K.shape[0]
    d = r_K[a] - r_K[b]
    # d/dd log σ(s·d) = s·σ(−s·d);  d²/dd² = −σ(d)·σ(−d)
    gd = c_N * sign * jax.nn.sigmoid(-sign * d)
    grad = jnp.zeros(k, r_K.dtype).at[a].add(gd).at[b].add(-gd) - l2 * r_K
    return grad, c_N * jax.nn.sigmoid(d) * jax.nn.sigmoid(-d)


def _newton_update(r_K, c_N, a, b, sign, l2):
    """One damped Newton step on the weighted, penalised logistic regression of one group (never worse)."""
    k = r_K.shape[0]
    grad, hd = _group_grad(r_K, c_N, a, b, sign, l2)
    # Σ_n h_n·(e_a − e_b)(e_a − e_b)ᵀ: PSD, annihilates the constant vector 1
    lap = (jnp.zeros((k, k), r_K.dtype).at[a, a].add(hd).at[b, b].add(hd).at[a, b].add(-hd).at[b, a].add(-hd))
    # + l2·I, + a term on the constant direction 1 (the loss is flat along it) and a tiny ridge
    scale = jnp.trace(lap) / k + l2 + 1e-12
    mat = lap + (l2 + 1e-9 * scale) * jnp.eye(k, dtype=r_K.dtype) + (scale / k) * jnp.ones((k, k), r_K.dtype)
    step = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(mat), grad)
    step = jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)
    # The objective is concave along the step, so its slope there decreases with α: the largest step size
    # whose slope is still ≥ 0 lies before the line's maximum and never lowers the objective (slopes do
    # not suffer the cancellation of comparing objective values near the optimum).
    sizes = jnp.asarray(_STEP_SIZES, r_K.dtype)
    slopes = jax.vmap(lambda t: jnp.dot(_group_grad(r_K + t * step, c_N, a, b, sign, l2)[0], step))(sizes)
    ok = slopes >= 0
    alpha = jnp.where(jnp.any(ok), sizes[jnp.argmax(ok)], 0.0)
    new = r_K + alpha * step
    # re-centre: the likelihood is unchanged and the penalty does not grow
    return new - jnp.mean(new)


def _m_step(rewards_GxK, resp_UxG, user_ids, a, b, sign, l2, m_steps):
    c = resp_UxG[user_ids].T  # [G, N] the weight of comparison n in group g

    def one_group(r_K, c_N):
        return jax.lax.fori_loop(0, m_steps, lambda _, r: _newton_update(r, c_N, a, b, sign, l2), r_K)

    rewards = jax.vmap(one_group)(rewards_GxK, c)
    weights = jnp.mean(resp_UxG, axis=0)
    return rewards, weights


@functools.partial(jax.jit, static_argnames=("num_users", "num_arms", "num_groups", "num_iters", "m_steps"))
def _fit(key, user_ids, a, b, sign, init_rewards, l2, *, num_users, num_arms, num_groups, num_iters, m_steps):
    dtype = sign.dtype
    penalty = lambda r: 0.5 * l2 * jnp.sum(r**2)
    if init_rewards is None:
        # random soft responsibilities (Dirichlet(1) per user) and one M-step from zero rewards
        resp = jax.random.dirichlet(key, jnp.ones(num_groups, dtype), (num_users,))
        rewards, weights = _m_step(jnp.zeros((num_groups, num_arms), dtype), resp, user_ids, a, b, sign, l2,
                                   m_steps)
    else:
        rewards = init_rewards - jnp.mean(init_rewards, axis=1, keepdims=True)
        weights = jnp.full((num_groups,), 1.0 / num_groups, dtype)

    def em(carry, _):
        rewards, weights = carry
        resp, ll = _e_step(rewards, jnp.log(weights), user_ids, a, b, sign, num_users)
        new = _m_step(rewards, resp, user_ids, a, b, sign, l2, m_steps)
        return new, (ll, ll - penalty(rewards))

    (rewards, weights), (lls, objs) = jax.lax.scan(em, (rewards, weights), None, length=num_iters)
    resp, ll = _e_step(rewards, jnp.log(weights), user_ids, a, b, sign, num_users)
    lls = jnp.concatenate([lls, ll[None]])
    objs = jnp.concatenate([objs, (ll - penalty(rewards))[None]])
    return BTMixture(rewards, weights, resp, lls, objs)


def _int_array(fn, name, x, shape_ok, shape_desc):
    v = jnp.asarray(x)
    if not shape_ok(v.shape):
        raise ValueError(f"{fn}: argument {name} of shape {v.shape} must be {shape_desc}")
    if not jnp.issubdtype(v.dtype, jnp.integer):
        raise ValueError(f"{fn}: argument {name} must hold integers, got dtype {v.dtype}")
    return v


def _positive_int(fn, name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{fn}: argument {name}={v!r} must be an integer >= {minimum}")
    return int(v)


def fit_bt_mixture(key, user_ids, pairs, labels, num_groups, *, num_users=None, num_arms=None, num_iters=50,
                   m_steps=5, l2=1e-3, init="random"):
    """Fit a mixture of Bradley–Terry models over users by EM (see the module docstring for the model).

    Args:
      key: a PRNG key (used by ``init="random"``).
      user_ids: ``[N]`` integer user of each comparison, in [0, num_users).
      pairs: ``[N, 2]`` integer arms (a_n, b_n) compared, in [0, num_arms).
      labels: ``[N]`` 1 (or True) if a_n was preferred, 0 if b_n was.
      num_groups: G ≥ 1, the number of latent groups.
      num_users: U (default: max(user_ids) + 1; must be given under ``jit``). Users without comparisons get
        the mixture weights as responsibilities.
      num_arms: K (default: max(pairs) + 1; must be given under ``jit``).
      num_iters: EM iterations (E-step then M-step), ≥ 1.
      m_steps: damped Newton steps per group per M-step, ≥ 1 (warm-started; a handful suffices for EM,
        more solve each M-step to convergence).
      l2: L2 penalty (l2/2)·‖r_g‖² ≥ 0 on each group's rewards. With l2 = 0 rewards of arms that always
        win (or lose) within a group diverge, slowly.
      init: ``"random"`` (random Dirichlet(1) responsibilities per user, then an M-step) or a ``[G, K]``
        array of initial rewards (with equal mixture weights).

    Returns:
      A :class:`BTMixture`: ``rewards [G, K]`` (mean 0 over arms), ``weights [G]``, ``responsibilities
      [U, G]`` (for the returned parameters), and the traces ``log_likelihood`` and ``objective``
      ``[num_iters + 1]``. The objective trace is non-decreasing (up to float rounding). Group labels are
      arbitrary (any permutation is an equally good fit); EM finds a local optimum, so compare a few keys by
      their final objective.

    Raises:
      ValueError: for malformed shapes or dtypes, ids or arms out of range, labels other than 0/1, or invalid
        num_groups / num_users / num_arms / num_iters / m_steps / l2 / init (value checks on concrete inputs).

    References:
      Chakraborty et al., *MaxMin-RLHF: Alignment with Diverse Human Preferences*, ICML 2024,
      arXiv 2402.08925 (EM for the reward mixture). Chen et al., *PAL: Pluralistic Alignment Framework*,
      2024, arXiv 2406.08469.
    """
    fn = "fit_bt_mixture"
    num_groups = _positive_int(fn, "num_groups", num_groups)
    num_iters = _positive_int(fn, "num_iters", num_iters)
    m_steps = _positive_int(fn, "m_steps", m_steps)
    user_ids = _int_array(fn, "user_ids", user_ids, lambda s: len(s) == 1, "[N]")
    n = user_ids.shape[0]
    pairs = _int_array(fn, "pairs", pairs, lambda s: s == (n, 2), f"[N, 2] = ({n}, 2) like user_ids")
    labels = jnp.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{fn}: argument labels of shape {labels.shape} must be [N] = ({n},) like user_ids")
    if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_
            or jnp.issubdtype(labels.dtype, jnp.floating)):
        raise ValueError(f"{fn}: argument labels must be 0/1 (or booleans), got dtype {labels.dtype}")
    concrete = lambda x: not isinstance(x, jax.core.Tracer)
    if n == 0:
        raise ValueError(f"{fn}: argument user_ids is empty; there are no comparisons to fit")
    for name, x, given in (("num_users", user_ids, num_users), ("num_arms", pairs, num_arms)):
        if given is None and not concrete(x):
            raise ValueError(f"{fn}: argument {name} must be given when the data are traced (under jit)")
    if num_users is None:
        num_users = int(np.max(np.asarray(user_ids))) + 1
    if num_arms is None:
        num_arms = int(np.max(np.asarray(pairs))) + 1
    num_users = _positive_int(fn, "num_users", num_users)
    num_arms = _positive_int(fn, "num_arms", num_arms)
    if concrete(user_ids):
        u = np.asarray(user_ids)
        if u.min() < 0 or u.max() >= num_users:
            raise ValueError(f"{fn}: argument user_ids has ids in [{u.min()}, {u.max()}], outside "
                             f"[0, num_users={num_users})")
    if concrete(pairs):
        p = np.asarray(pairs)
        if p.min() < 0 or p.max() >= num_arms:
            raise ValueError(f"{fn}: argument pairs has arms in [{p.min()}, {p.max()}], outside "
                             f"[0, num_arms={num_arms})")
    if concrete(labels):
        lv = np.asarray(labels)
        if not np.all((lv == 0) | (lv == 1)):
            bad = lv[(lv != 0) & (lv != 1)][:5]
            raise ValueError(f"{fn}: argument labels must be 0 or 1, got values such as {bad.tolist()}")
    if concrete(l2):
        lv = np.asarray(l2)
        if lv.shape != () or not np.issubdtype(lv.dtype, np.number) or not (np.isfinite(lv) and lv >= 0):
            raise ValueError(f"{fn}: argument l2={l2!r} must be a finite scalar >= 0")
    dtype = jnp.asarray(0.0).dtype  # float32, or float64 under jax.enable_x64
    if isinstance(init, str):
        if init != "random":
            raise ValueError(f"{fn}: argument init={init!r} must be 'random' or a [G, K] array of rewards")
        init_rewards = None
    else:
        init_rewards = jnp.asarray(init)
        if init_rewards.shape != (num_groups, num_arms):
            raise ValueError(f"{fn}: argument init of shape {init_rewards.shape} must be [G, K] = "
                             f"({num_groups}, {num_arms})")
        if concrete(init_rewards) and not np.all(np.isfinite(np.asarray(init_rewards))):
            raise ValueError(f"{fn}: argument init must be finite")
        init_rewards = init_rewards.astype(dtype)
    sign = 2.0 * labels.astype(dtype) - 1.0
    return _fit(key, user_ids, pairs[:, 0], pairs[:, 1], sign, init_rewards, jnp.asarray(l2, dtype),
                num_users=num_users, num_arms=num_arms, num_groups=num_groups, num_iters=num_iters,
                m_steps=m_steps)


def adjusted_rand_index(labels_a, labels_b, *, num_classes=None):
    """The adjusted Rand index (Hubert & Arabie, 1985) of two labellings of the same n items.

    With the contingency table n_ij = #{items with label i in ``labels_a`` and j in ``labels_b``}, row sums
    a_i, column sums b_j and C(m) = m·(m − 1)/2 (pairs):

        ARI = (Σ_ij C(n_ij) − E) / (½·(Σ_i C(a_i) + Σ_j C(b_j)) − E),   E = Σ_i C(a_i)·Σ_j C(b_j) / C(n).

    1 for identical partitions (whatever the label names), 0 in expectation for independent random ones,
    negative for worse than chance. When the denominator is 0 (both labellings put every item in one
    cluster, or both make every item its own cluster) the partitions are identical and the ARI is 1.
    Used to compare the groups EM recovers (argmax of the responsibilities) with planted ones: the label
    names are arbitrary.

    Args:
      labels_a, labels_b: ``[n]`` integer labels in [0, num_classes), n ≥ 2.
      num_classes: the number of label values (default: max label + 1 over both; must be given under
        ``jit``/``vmap``).

    Returns:
      The ARI, a scalar (float32 or wider).

    >>> round(float(adjusted_rand_index(jnp.array([0, 0, 1, 1]), jnp.array([1, 1, 0, 0]))), 6)
    1.0
    >>> round(float(adjusted_rand_index(jnp.array([0, 0, 1, 1]), jnp.array([0, 0, 1, 2]))), 6)
    0.571429

    References:
      Hubert & Arabie, *Comparing partitions*, Journal of Classification 2, 1985.
    """
    a, b = jnp.asarray(labels_a), jnp.asarray(labels_b)
    fn = "adjusted_rand_index"
    if a.ndim != 1 or a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(f"{fn}: arguments labels_a {a.shape} and labels_b {b.shape} must be [n] alike, n >= 2")
    for name, x in (("labels_a", a), ("labels_b", b)):
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"{fn}: argument {name} must hold integers, got dtype {x.dtype}")
    concrete = not isinstance(a, jax.core.Tracer) and not isinstance(b, jax.core.Tracer)
    if num_classes is None:
        if not concrete:
            raise ValueError(f"{fn}: argument num_classes must be given under jit / vmap")
        num_classes = int(max(np.max(np.asarray(a)), np.max(np.asarray(b)))) + 1
    num_classes = _positive_int(fn, "num_classes", num_classes)
    if concrete:
        lo = min(int(np.min(np.asarray(a))), int(np.min(np.asarray(b))))
        hi = max(int(np.max(np.asarray(a))), int(np.max(np.asarray(b))))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{fn}: labels in [{lo}, {hi}] outside [0, num_classes={num_classes})")
    dtype = jnp.promote_types(jnp.asarray(0.0).dtype, jnp.float32)
    table = jax.nn.one_hot(a, num_classes, dtype=dtype).T @ jax.nn.one_hot(b, num_classes, dtype=dtype)
    pairs = lambda m: m * (m - 1.0) / 2.0
    n = jnp.asarray(a.shape[0], dtype)
    index = jnp.sum(pairs(table))
    sa, sb = jnp.sum(pairs(table.sum(1))), jnp.sum(pairs(table.sum(0)))
    expected = sa * sb / pairs(n)
    denom = 0.5 * (sa + sb) - expected
    return jnp.where(denom == 0, 1.0, (index - expected) / jnp.where(denom == 0, 1.0, denom))

"""The KL-estimator bandit lab: exact expected gradients, fixed points, training, GRPO aggregation weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import envs, losses

R3 = np.array([1.0, 0.5, 0.0])
P3 = np.array([0.2, 0.3, 0.5])


# ---------------------------------------------------------------------------------------------------------
# Independent numpy transcriptions (float64)


def _np_logsoftmax(theta):
    z = theta - theta.max()
    return z - np.log(np.exp(z).sum())


def _np_estimator(lp, ref, kind):
    lr = ref - lp
    return {"k1": -lr, "k2": 0.5 * lr**2, "k3": np.exp(lr) - 1.0 - lr}[kind]


def _np_brute_force_gradient(variant, theta, r, ref_logp, beta, h=1e-6):
    """Σ_y π(y)·∇ℓ(θ; y) with the sample y, its weight π(y) and its advantage frozen at θ; ∇ by central FD."""
    lp0 = _np_logsoftmax(theta)
    pi0 = np.exp(lp0)
    if variant == "reward_penalty":
        shaped = r - beta * (lp0 - ref_logp)
        adv = shaped - pi0 @ shaped
    else:
        adv = r - pi0 @ r

    def per_sample(th, y):
        lp = _np_logsoftmax(th)[y]
        out = -adv[y] * lp
        if variant != "reward_penalty":
            out += beta * _np_estimator(lp, ref_logp[y], variant)
        return out

    g = np.zeros_like(theta)
    for y in range(len(theta)):
        for k in range(len(theta)):
            e = np.zeros_like(theta)
            e[k] = h
            g[k] += pi0[y] * (per_sample(theta + e, y) - per_sample(theta - e, y)) / (2 * h)
    return g


def _np_fd(f, theta, h=1e-6):
    g = np.zeros_like(theta)
    for k in range(len(theta)):
        e = np.zeros_like(theta)
        e[k] = h
        g[k] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def _np_k3_fixed_point(r, p, beta):
    """Bisection (float64) on λ of Σ β·p/(β − r + λ) = 1, λ > max r − β."""
    lo, hi = r.max() - beta + 1e-15, r.max() + 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (beta * p / (beta - r + mid)).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    return beta * p / (beta - r + 0.5 * (lo + hi))


def _random_problem(seed, k=5):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=k)
    ref = rng.dirichlet(np.ones(k))
    theta = np.log(ref) + rng.normal(size=k)
    return r, ref, theta


# ---------------------------------------------------------------------------------------------------------
# Exact expected gradients


@pytest.mark.parametrize("variant", envs.KL_LAB_VARIANTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_expected_gradient_matches_brute_force_sum(variant, seed):
    r, ref, theta = _random_problem(seed)
    beta = 0.7
    bandit = envs.k_armed(r, ref)
    got = envs.kl_lab_gradient(variant, jnp.asarray(theta, jnp.float32), bandit, beta)
    want = _np_brute_force_gradient(variant, theta, r, np.log(ref), beta)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_gradients_are_gradients_of_the_exact_objectives(seed):
    r, ref, theta = _random_problem(seed)
    beta = 0.3
    bandit = envs.k_armed(r, ref)
    lref = np.log(ref)

    def reward(th):
        return np.exp(_np_logsoftmax(th)) @ r

    def kl_fwd(th):  # KL(π‖π_ref)
        lp = _np_logsoftmax(th)
        return np.exp(lp) @ (lp - lref)

    def kl_rev(th):  # KL(π_ref‖π)
        return ref @ (lref - _np_logsoftmax(th))

    g = {v: np.asarray(envs.kl_lab_gradient(v, jnp.asarray(theta, jnp.float32), bandit, beta), np.float64)
         for v in envs.KL_LAB_VARIANTS}
    d_reward, d_fwd, d_rev = _np_fd(reward, theta), _np_fd(kl_fwd, theta), _np_fd(kl_rev, theta)
    tol = dict(atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(g["reward_penalty"], -(d_reward - beta * d_fwd), **tol)  # −∇J_β
    np.testing.assert_allclose(g["k1"], -d_reward, **tol)  # the k1 term contributes 0
    np.testing.assert_allclose(g["k2"], -d_reward + beta * d_fwd, **tol)  # ∇KL(π‖π_ref)
    np.testing.assert_allclose(g["k3"], -d_reward + beta * d_rev, **tol)  # ∇KL(π_ref‖π)


def test_k1_term_has_zero_expected_gradient_for_every_beta():
    r, ref, theta = _random_problem(3)
    bandit = envs.k_armed(r, ref)
    th = jnp.asarray(theta, jnp.float32)
    g = [np.asarray(envs.kl_lab_gradient("k1", th, bandit, b)) for b in (0.01, 1.0, 100.0)]
    np.testing.assert_allclose(g[0], g[1], atol=1e-6)
    np.testing.assert_allclose(g[0], g[2], atol=1e-5)


def test_k3_lab_gradient_equals_expectation_of_policy_clip_gradients():
    """The lab's k3 variant is π-weighted jax.grad of the real GRPO loss (one 1-token sample per arm)."""
    r, ref, theta = _random_problem(4, k=4)
    beta = 0.4
    bandit = envs.k_armed(r, ref)
    th = jnp.asarray(theta, jnp.float32)
    pi = np.exp(_np_logsoftmax(theta))
    adv = r - pi @ r
    total = np.zeros_like(theta)
    for y in range(len(r)):
        def loss(t, y=y):
            lp = jax.nn.log_softmax(t)[y].reshape(1, 1)
            return losses.policy_clip(lp, jax.lax.stop_gradient(lp), jnp.asarray([adv[y]], jnp.float32),
                                      jnp.ones((1, 1)), ref_logps=jnp.asarray([[np.log(ref[y])]], jnp.float32),
                                      kl_coef=beta)
        total += pi[y] * np.asarray(jax.grad(loss)(th), np.float64)
    np.testing.assert_allclose(np.asarray(envs.kl_lab_gradient("k3", th, bandit, beta)), total, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Fixed points


def test_issue_numbers():
    k3 = np.asarray(envs.kl_fixed_point(R3, P3, 0.5, "k3"))
    star = np.asarray(envs.kl_fixed_point(R3, P3, 0.5, "k2"))
    # The issue's rounded values; exactly, π_k3 = (0.565885, 0.221659, 0.212456) (third entry rounds to 0.212).
    np.testing.assert_allclose(k3, [0.566, 0.222, 0.213], atol=1e-3)
    np.testing.assert_allclose(star, [0.529, 0.292, 0.179], atol=1e-3)
    np.testing.assert_allclose(k3, [0.5658848, 0.2216592, 0.2124560], atol=2e-6)
    np.testing.assert_allclose(k3, _np_k3_fixed_point(R3, P3, 0.5), atol=2e-6)


@pytest.mark.parametrize("beta", [0.05, 0.5, 3.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_k3_fixed_point_solves_the_stationarity_condition(beta, seed):
    r, ref, _ = _random_problem(seed)
    p = np.asarray(envs.kl_fixed_point(r, ref, beta, "k3"), np.float64)
    want = _np_k3_fixed_point(r, ref, beta)
    np.testing.assert_allclose(p, want, rtol=2e-5, atol=1e-7)
    # π(y) = β·π_ref(y)/(β − A(y)), A = r − E_π[r]
    np.testing.assert_allclose(p, beta * ref / (beta - (r - p @ r)), rtol=1e-4)
    # and the exact expected k3 gradient vanishes there
    g = envs.kl_lab_gradient("k3", jnp.log(jnp.asarray(p, jnp.float32)), envs.k_armed(r, ref), beta)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_k3_fixed_point_two_arms_closed_form(beta):
    # r = (1, 0): π1·(β − 1 + π1) = β·p1  ⇒  π1 = ((1 − β) + √((1 − β)² + 4β·p1))/2
    p1 = 0.3
    want = 0.5 * ((1 - beta) + np.sqrt((1 - beta) ** 2 + 4 * beta * p1))
    got = np.asarray(envs.kl_fixed_point([1.0, 0.0], [p1, 1 - p1], beta, "k3"))
    np.testing.assert_allclose(got, [want, 1 - want], atol=1e-6)


def test_reward_penalty_and_k2_fixed_point_is_pi_star_and_k1_is_one_hot():
    r, ref, _ = _random_problem(5)
    beta = 0.8
    s = ref * np.exp(r / beta)
    for kind in ("reward_penalty", "k2"):
        np.testing.assert_allclose(np.asarray(envs.kl_fixed_point(r, ref, beta, kind)), s / s.sum(), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(envs.kl_fixed_point(r, ref, beta, "k1")), np.eye(5)[np.argmax(r)])


@pytest.mark.parametrize("variant", envs.KL_LAB_VARIANTS)
def test_trained_policies_reach_their_fixed_points(variant):
    beta = 0.5
    bandit = envs.k_armed(R3, P3)
    out = envs.train_kl_lab(jax.random.key(0), variant, bandit, beta, lr=1.0, steps=20000, record_every=1000)
    final = np.exp(np.asarray(out["logps"][-1], np.float64))
    target = np.asarray(envs.kl_fixed_point(R3, P3, beta, variant))
    if variant == "k1":  # no regularisation: collapse onto the best arm (1 − π_best ~ 1/t)
        assert final[0] > 0.999
        assert np.all(np.diff(np.exp(np.asarray(out["logps"][:, 0]))) > 0)
    else:
        np.testing.assert_allclose(final, target, atol=2e-5)
    if variant in ("reward_penalty", "k2"):
        assert float(out["regret"][-1]) < 1e-3
    if variant == "k3":  # the k3 fixed point is not π*: its regret stays away from 0
        star = np.asarray(envs.kl_fixed_point(R3, P3, beta, "k2"))
        want_regret = beta * final @ (np.log(final) - np.log(star))
        assert want_regret > 5e-3
        np.testing.assert_allclose(float(out["regret"][-1]), want_regret, rtol=1e-3)


def test_trained_from_random_initialisations_reach_pi_star():
    bandit = envs.k_armed(R3, P3)
    keys = jax.random.split(jax.random.key(1), 4)
    out = jax.vmap(lambda k: envs.train_kl_lab(k, "reward_penalty", bandit, 0.5, steps=20000, record_every=1000,
                                               init_scale=2.0))(keys)
    assert np.all(np.asarray(out["regret"][:, -1]) < 1e-3)
    assert np.all(np.asarray(out["regret"][:, 0]) > 1e-2)  # the initialisations really differ from π*


# ---------------------------------------------------------------------------------------------------------
# jit / vmap


def test_vmap_over_seeds_betas_and_variants_equals_per_run():
    bandit = envs.k_armed(R3, P3)
    keys = jax.random.split(jax.random.key(2), 3)
    betas = jnp.array([0.25, 0.5, 1.0])
    variants = jnp.array([0, 2, 3])
    kw = dict(lr=0.5, steps=200, record_every=50, init_scale=0.5)
    batched = jax.jit(jax.vmap(lambda k, b, v: envs.train_kl_lab(k, v, bandit, b, **kw)))(keys, betas, variants)
    for i in range(3):
        single = envs.train_kl_lab(keys[i], int(variants[i]), bandit, float(betas[i]), **kw)
        np.testing.assert_allclose(np.asarray(batched["logps"][i]), np.asarray(single["logps"]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(batched["regret"][i]), np.asarray(single["regret"]), atol=1e-6)


def test_fixed_point_vmaps_over_beta():
    betas = jnp.array([0.1, 0.5, 2.0])
    batched = jax.vmap(lambda b: envs.kl_fixed_point(R3, P3, b, "k3"))(betas)
    for i, b in enumerate([0.1, 0.5, 2.0]):
        np.testing.assert_allclose(np.asarray(batched[i]), _np_k3_fixed_point(R3, P3, b), atol=2e-6)


# ---------------------------------------------------------------------------------------------------------
# GRPO vs RLOO; Dr. GRPO's length bias


@pytest.mark.parametrize("group_size", [2, 3, 8])
def test_unscaled_grpo_advantage_is_rloo_times_g_minus_1_over_g(group_size):
    rng = np.random.default_rng(group_size)
    rewards = rng.normal(size=(5 * group_size,))
    grp = rewards.reshape(5, group_size)
    rloo = grp - (grp.sum(1, keepdims=True) - grp) / (group_size - 1)  # r_i − mean_{j≠i} r_j
    got = np.asarray(losses.group_advantages(jnp.asarray(rewards, jnp.float32), group_size, scale="none"))
    np.testing.assert_allclose(got, ((group_size - 1) / group_size * rloo).reshape(-1), atol=1e-5)


@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_dr_grpo_removes_the_length_bias_of_grpo(adv):
    lengths, advs = [2, 8], [adv, adv]
    w_grpo = np.asarray(envs.aggregation_token_weights(lengths, advs, "grpo"))
    w_dr = np.asarray(envs.aggregation_token_weights(lengths, advs, "dr_grpo"))
    mask = np.arange(8)[None, :] < np.array(lengths)[:, None]
    # grpo: A/(B·n_b) per token — the 2-token response's tokens weigh 4× the 8-token response's
    np.testing.assert_allclose(w_grpo, np.where(mask, adv / (2 * np.array(lengths)[:, None]), 0.0), atol=1e-7)
    np.testing.assert_allclose(w_grpo[0, 0] / w_grpo[1, 0], 4.0, rtol=1e-6)
    # dr_grpo: A/(B·T) for every token, proportional to the unbiased A·Σ_t ∇ln π(y_t)
    np.testing.assert_allclose(w_dr, np.where(mask, adv / (2 * 8), 0.0), atol=1e-7)
    # so the sequence weights (sums over tokens) are equal under grpo but ∝ length under dr_grpo
    np.testing.assert_allclose(w_grpo.sum(1), [adv / 2, adv / 2], atol=1e-7)
    np.testing.assert_allclose(w_dr.sum(1) / w_dr.sum(1)[0], [1.0, 4.0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_errors():
    bandit = envs.k_armed(R3, P3)
    with pytest.raises(ValueError, match="kind='k4'"):
        envs.kl_fixed_point(R3, P3, 0.5, "k4")
    with pytest.raises(ValueError, match="beta"):
        envs.kl_fixed_point(R3, P3, 0.0, "k3")
    with pytest.raises(ValueError, match="ref_probs"):
        envs.kl_fixed_point(R3, [0.5, 0.5, 0.5], 0.5, "k3")
    with pytest.raises(ValueError, match="variant='ppo'"):
        envs.kl_lab_gradient("ppo", jnp.zeros(3), bandit, 0.5)
    with pytest.raises(ValueError, match="beta"):
        envs.kl_lab_gradient("k3", jnp.zeros(3), bandit, -1.0)
    with pytest.raises(ValueError, match="lr"):
        envs.train_kl_lab(jax.random.key(0), "k3", bandit, 0.5, lr=0.0)
    with pytest.raises(ValueError, match="steps=10"):
        envs.train_kl_lab(jax.random.key(0), "k3", bandit, 0.5, steps=10, record_every=3)
    with pytest.raises(ValueError, match="init_scale"):
        envs.train_kl_lab(jax.random.key(0), "k3", bandit, 0.5, init_scale=-1.0)
    with pytest.raises(ValueError, match="lengths"):
        envs.aggregation_token_weights([0, 3], [1.0, 1.0], "grpo")


# ---------------------------------------------------------------------------------------------------------
# The two-length toy: exact expected gradients under the aggregations


def test_aggregation_sequence_coefficients():
    lengths = [2, 8, 5]
    np.testing.assert_allclose(np.asarray(envs.aggregation_sequence_coefficients(lengths, "grpo")),
                               [1 / 2, 1 / 8, 1 / 5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(envs.aggregation_sequence_coefficients(lengths, "dr_grpo")),
                               [1 / 8] * 3, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(envs.aggregation_sequence_coefficients(lengths, "dr_grpo", max_completion_length=16)),
        [1 / 16] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="lengths"):
        envs.aggregation_sequence_coefficients([0, 2], "grpo")


@pytest.mark.parametrize("seed", [0, 1])
def test_aggregation_lab_gradient_matches_numpy_fd(seed):
    rng = np.random.default_rng(seed)
    theta, r, c = rng.normal(size=4), rng.normal(size=4), 1.0 / rng.integers(1, 9, size=4)
    pi0 = np.exp(_np_logsoftmax(theta))
    adv = r - pi0 @ r

    def surrogate(th):  # Σ_y sg(π(y))·(−sg(A(y))·c(y)·ln π(y))
        return -(pi0 * adv * c) @ _np_logsoftmax(th)

    got = envs.aggregation_lab_gradient(jnp.asarray(theta, jnp.float32), jnp.asarray(r, jnp.float32),
                                        jnp.asarray(c, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), _np_fd(surrogate, theta), atol=2e-6)
    # constant c: −c·∇E_π[r]
    g = envs.aggregation_lab_gradient(jnp.asarray(theta, jnp.float32), jnp.asarray(r, jnp.float32),
                                      jnp.full(4, 0.25))
    np.testing.assert_allclose(np.asarray(g), -0.25 * _np_fd(lambda th: np.exp(_np_logsoftmax(th)) @ r, theta),
                               atol=2e-6)


def test_two_length_toy_grpo_drifts_to_long_wrong_answers_dr_grpo_does_not():
    r = jnp.array([1.0, 0.0, 0.0])  # correct short, wrong short, wrong long
    lengths = [2, 2, 8]
    theta0 = jnp.zeros(3)
    lp = {agg: np.asarray(envs.train_aggregation_lab(theta0, r, envs.aggregation_sequence_coefficients(lengths, agg),
                                                     lr=4.0, steps=400, record_every=100))
          for agg in ("grpo", "dr_grpo")}
    ratio = {k: v[:, 2] - v[:, 1] for k, v in lp.items()}  # ln π(wrong long)/π(wrong short)
    np.testing.assert_allclose(ratio["dr_grpo"], 0.0, atol=1e-5)
    assert np.all(np.diff(ratio["grpo"]) > 0) and ratio["grpo"][-1] > 0.5

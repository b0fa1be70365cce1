"""EM for a mixture of Bradley–Terry models over users: planted groups, monotone EM, numpy transcriptions."""

from math import comb

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import envs

K = 4
PLANTED = np.array([[3.0, 1.0, -1.0, -3.0], [-3.0, -1.0, 1.0, 3.0]])  # two groups with opposite preferences


def _planted_data(seed, num_users=24, per_user=40, rewards=PLANTED):
    rng = np.random.default_rng(seed)
    groups = np.arange(num_users) % 3 == 0  # a third of the users in group 1: a minority
    groups = groups.astype(int)
    uid = np.repeat(np.arange(num_users), per_user)
    a = rng.integers(0, K, uid.size)
    b = (a + rng.integers(1, K, uid.size)) % K
    p = 1 / (1 + np.exp(-(rewards[groups[uid], a] - rewards[groups[uid], b])))
    labels = (rng.random(uid.size) < p).astype(np.int32)
    return groups, uid, np.stack([a, b], 1), labels


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _np_em_quantities(rewards, weights, uid, pairs, labels, num_users):
    """Independent float64 transcription: per-user log-likelihoods, responsibilities, ℓ."""
    rewards = np.asarray(rewards, np.float64)
    s = 2.0 * labels - 1.0
    d = rewards[:, pairs[:, 0]] - rewards[:, pairs[:, 1]]  # [G, N]
    per_user = np.zeros((num_users, rewards.shape[0]))
    np.add.at(per_user, uid, _np_log_sigmoid(s[None, :] * d).T)
    joint = per_user + np.log(np.asarray(weights, np.float64))[None, :]
    mx = joint.max(1, keepdims=True)
    norm = mx[:, 0] + np.log(np.exp(joint - mx).sum(1))
    return np.exp(joint - norm[:, None]), norm.sum()


def _np_grad_loglik(rewards, resp, uid, pairs, labels, l2):
    """∂/∂r_g [ℓ − (l2/2)‖r‖²] by Fisher's identity: Σ_n γ_{u_n,g}·s_n·σ(−s_n·d_{n,g})·(e_a − e_b) − l2·r_g."""
    rewards = np.asarray(rewards, np.float64)
    s = 2.0 * labels - 1.0
    d = rewards[:, pairs[:, 0]] - rewards[:, pairs[:, 1]]
    coef = np.asarray(resp, np.float64)[uid].T * s[None, :] / (1 + np.exp(s[None, :] * d))  # [G, N]
    grad = -l2 * rewards
    for g in range(rewards.shape[0]):
        np.add.at(grad[g], pairs[:, 0], coef[g])
        np.add.at(grad[g], pairs[:, 1], -coef[g])
    return grad


def _np_bt_fit(pairs, labels, l2, iters=50):
    """Penalised Bradley–Terry MLE by plain Newton in numpy (mean-0 rewards), for one group's pooled labels."""
    r = np.zeros(K)
    s = 2.0 * labels - 1.0
    diff = np.eye(K)[pairs[:, 0]] - np.eye(K)[pairs[:, 1]]  # [N, K]
    for _ in range(iters):
        d = diff @ r
        grad = diff.T @ (s / (1 + np.exp(s * d))) - l2 * r
        h = 1 / (1 + np.exp(-d)) / (1 + np.exp(d))
        hess = (diff * h[:, None]).T @ diff + l2 * np.eye(K) + np.ones((K, K)) / K
        r = r + np.linalg.solve(hess, grad)
        r -= r.mean()
    return r


def _ari(x, y):
    """Adjusted Rand index of two labelings (Hubert & Arabie), numpy."""
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((xi.max() + 1, yi.max() + 1), int)
    np.add.at(table, (xi, yi), 1)
    index = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(1))
    cols = sum(comb(int(v), 2) for v in table.sum(0))
    expected = rows * cols / comb(len(x), 2)
    return (index - expected) / (0.5 * (rows + cols) - expected)


def test_numpy_ari_sanity():
    assert _ari([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert _ari([0, 0, 1, 1], [0, 1, 0, 1]) < 0


def test_recovers_planted_opposite_groups():
    groups, uid, pairs, labels = _planted_data(0)
    fit = envs.fit_bt_mixture(jax.random.key(0), uid, pairs, labels, 2, num_iters=30)
    assert fit.rewards.shape == (2, K) and fit.weights.shape == (2,) and fit.responsibilities.shape == (24, 2)
    found = np.asarray(jnp.argmax(fit.responsibilities, axis=1))
    assert _ari(groups, found) == 1.0
    assert np.asarray(fit.responsibilities).max(1).min() > 0.999  # every user's group is unambiguous
    # match the labels, then compare with the planted rewards (centred) and the group fractions
    perm = [found[groups == 0][0], found[groups == 1][0]]
    # responsibilities are one-hot, so each group's rewards are the penalised BT fit on its users' labels
    for g in (0, 1):
        mine = groups[uid] == g
        np.testing.assert_allclose(np.asarray(fit.rewards)[perm[g]], _np_bt_fit(pairs[mine], labels[mine], 1e-3),
                                   atol=2e-3)
        assert np.all(np.argsort(np.asarray(fit.rewards)[perm[g]]) == np.argsort(PLANTED[g]))
    np.testing.assert_allclose(np.asarray(fit.weights)[perm], [2 / 3, 1 / 3], atol=1e-3)
    np.testing.assert_allclose(np.asarray(fit.rewards).mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(float(jnp.sum(fit.weights)), 1.0, rtol=1e-6)


def test_trace_is_non_decreasing_and_matches_a_numpy_transcription():
    groups, uid, pairs, labels = _planted_data(1, num_users=12, per_user=25)
    for l2 in (0.0, 0.1):
        fit = envs.fit_bt_mixture(jax.random.key(3), uid, pairs, labels, 2, num_iters=15, m_steps=30, l2=l2)
        obj = np.asarray(fit.objective, np.float64)
        assert obj.shape == (16,)
        # float32: non-decreasing up to rounding of a sum of N terms (relative 1e-6)
        assert np.all(np.diff(obj) >= -1e-6 * np.abs(obj[:-1])), np.diff(obj)
        if l2 == 0.0:
            np.testing.assert_array_equal(fit.objective, fit.log_likelihood)
        resp, ll = _np_em_quantities(fit.rewards, fit.weights, uid, pairs, labels, 12)
        np.testing.assert_allclose(fit.log_likelihood[-1], ll, rtol=1e-5)
        np.testing.assert_allclose(fit.objective[-1], ll - 0.5 * l2 * np.sum(np.asarray(fit.rewards, np.float64) ** 2),
                                   rtol=1e-5)
        np.testing.assert_allclose(fit.responsibilities, resp, atol=1e-5)
        # a fixed point of EM is a stationary point of the (penalised) marginal likelihood
        np.testing.assert_allclose(fit.weights, resp.mean(0), atol=1e-5)
        grad = _np_grad_loglik(fit.rewards, resp, uid, pairs, labels, l2)
        np.testing.assert_allclose(grad, 0.0, atol=2e-3)


def test_trace_is_non_decreasing_within_1e_6_in_float64():
    groups, uid, pairs, labels = _planted_data(2, num_users=10, per_user=8)  # few labels: a slow, long climb
    with jax.enable_x64():
        fit = envs.fit_bt_mixture(jax.random.key(1), uid, pairs, labels, 3, num_iters=40, m_steps=40, l2=0.05)
        obj = np.asarray(fit.objective)
        assert obj.dtype == np.float64
        assert np.all(np.diff(obj) >= -1e-9), np.diff(obj)
        assert obj[-1] > obj[0] + 1.0  # it does climb
        resp, ll = _np_em_quantities(fit.rewards, fit.weights, uid, pairs, labels, 10)
        np.testing.assert_allclose(fit.log_likelihood[-1], ll, rtol=1e-12)
        np.testing.assert_allclose(fit.responsibilities, resp, atol=1e-12)


def test_one_group_is_the_penalised_bradley_terry_fit():
    _, uid, pairs, labels = _planted_data(3, num_users=6, per_user=30)
    with jax.enable_x64():
        fit = envs.fit_bt_mixture(jax.random.key(0), uid, pairs, labels, 1, num_iters=3, m_steps=30, l2=0.1)
        np.testing.assert_allclose(fit.weights, [1.0])
        np.testing.assert_allclose(fit.responsibilities, 1.0)
        # the penalised logistic regression's gradient vanishes; the rewards have mean 0
        grad = _np_grad_loglik(fit.rewards, np.ones((6, 1)), uid, pairs, labels, 0.1)
        np.testing.assert_allclose(grad, 0.0, atol=1e-9)
        np.testing.assert_allclose(np.sum(fit.rewards), 0.0, atol=1e-12)


def test_init_rewards_jit_and_a_user_without_labels():
    groups, uid, pairs, labels = _planted_data(0)
    keep = uid != 5  # user 5 gives no labels
    uid, pairs, labels = uid[keep], pairs[keep], labels[keep]
    init = PLANTED + 0.5  # not centred: the fit centres it
    fit = envs.fit_bt_mixture(jax.random.key(0), uid, pairs, labels, 2, num_iters=10, init=init)
    found = np.asarray(jnp.argmax(fit.responsibilities, axis=1))
    np.testing.assert_array_equal(np.delete(found, 5), np.delete(groups, 5))  # started at the truth: same labels
    np.testing.assert_allclose(fit.responsibilities[5], fit.weights, rtol=1e-6)  # prior only
    jitted = jax.jit(lambda k, u, p, l: envs.fit_bt_mixture(k, u, p, l, 2, num_users=24, num_arms=K, num_iters=10,
                                                            init=init))
    again = jitted(jax.random.key(0), uid, pairs, labels)
    np.testing.assert_allclose(again.rewards, fit.rewards, atol=1e-5)
    np.testing.assert_allclose(again.objective, fit.objective, rtol=1e-6)


def test_bad_inputs_raise_value_errors():
    _, uid, pairs, labels = _planted_data(0, num_users=3, per_user=4)
    key = jax.random.key(0)
    fit = envs.fit_bt_mixture
    with pytest.raises(ValueError, match="num_groups=0"):
        fit(key, uid, pairs, labels, 0)
    with pytest.raises(ValueError, match=r"pairs of shape \(12,\)"):
        fit(key, uid, pairs[:, 0], labels, 2)
    with pytest.raises(ValueError, match=r"labels of shape \(11,\)"):
        fit(key, uid, pairs, labels[:-1], 2)
    with pytest.raises(ValueError, match="must hold integers"):
        fit(key, uid.astype(float), pairs, labels, 2)
    with pytest.raises(ValueError, match="0 or 1"):
        fit(key, uid, pairs, labels * 2, 2)
    with pytest.raises(ValueError, match=r"outside \[0, num_users=2\)"):
        fit(key, uid, pairs, labels, 2, num_users=2)
    with pytest.raises(ValueError, match=r"outside \[0, num_arms=2\)"):
        fit(key, uid, pairs, labels, 2, num_arms=2)
    with pytest.raises(ValueError, match="l2=-1.0"):
        fit(key, uid, pairs, labels, 2, l2=-1.0)
    with pytest.raises(ValueError, match="num_iters=0"):
        fit(key, uid, pairs, labels, 2, num_iters=0)
    with pytest.raises(ValueError, match="init='kmeans'"):
        fit(key, uid, pairs, labels, 2, init="kmeans")
    with pytest.raises(ValueError, match=r"init of shape \(2, 3\)"):
        fit(key, uid, pairs, labels, 2, init=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        fit(key, uid[:0], pairs[:0], labels[:0], 2)


def _np_ari_by_pair_counting(a, b):
    """Brute force over all item pairs: the Rand index's agreement counts and their expectation."""
    a, b = np.asarray(a), np.asarray(b)
    n = len(a)
    same_a = [a[i] == a[j] for i in range(n) for j in range(i + 1, n)]
    same_b = [b[i] == b[j] for i in range(n) for j in range(i + 1, n)]
    both = sum(x and y for x, y in zip(same_a, same_b, strict=True))
    sa, sb, m = sum(same_a), sum(same_b), comb(n, 2)
    expected = sa * sb / m
    return (both - expected) / (0.5 * (sa + sb) - expected)


def test_adjusted_rand_index_hand_values_and_pair_counting():
    ari = envs.adjusted_rand_index
    # by hand: [0,0,1,1] vs [0,0,1,2]: Σ C(n_ij) = 1, Σ C(a_i) = 2, Σ C(b_j) = 1, C(4) = 6, E = 1/3:
    # (1 − 1/3) / (3/2 − 1/3) = 4/7
    assert float(ari(jnp.array([0, 0, 1, 1]), jnp.array([0, 0, 1, 2]))) == pytest.approx(4 / 7, abs=1e-6)
    # [0,0,0,1,1,1] vs [0,0,1,1,2,2]: Σ C(n_ij) = 2, Σ C(a_i) = 6, Σ C(b_j) = 3, C(6) = 15, E = 6/5:
    # (2 − 6/5) / (9/2 − 6/5) = 8/33
    assert float(ari(jnp.array([0, 0, 0, 1, 1, 1]), jnp.array([0, 0, 1, 1, 2, 2]))) == pytest.approx(8 / 33,
                                                                                                      abs=1e-6)
    # label names do not matter; identical partitions give 1, also the degenerate single cluster
    assert float(ari(jnp.array([0, 0, 1, 2]), jnp.array([2, 2, 0, 1]))) == pytest.approx(1.0, abs=1e-6)
    assert float(ari(jnp.zeros(5, jnp.int32), jnp.zeros(5, jnp.int32))) == 1.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 3, 17), rng.integers(0, 4, 17)
        want = _np_ari_by_pair_counting(a, b)
        assert float(ari(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(want, abs=1e-5)
        got = jax.jit(lambda x, y: ari(x, y, num_classes=4))(jnp.asarray(a), jnp.asarray(b))
        assert float(got) == pytest.approx(want, abs=1e-5)
    # independent random labellings: about 0 on average
    vals = [float(ari(jnp.asarray(rng.integers(0, 2, 200)), jnp.asarray(rng.integers(0, 2, 200))))
            for _ in range(20)]
    assert abs(np.mean(vals)) < 0.01


def test_adjusted_rand_index_bad_inputs():
    ari = envs.adjusted_rand_index
    with pytest.raises(ValueError, match="labels_a"):
        ari(jnp.array([0, 1, 1]), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        ari(jnp.array([0.0, 1.0]), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        ari(jnp.array([0, 3]), jnp.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be given"):
        jax.jit(ari)(jnp.array([0, 1]), jnp.array([0, 1]))

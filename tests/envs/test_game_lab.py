"""The preference-game lab (jalign.envs.game_lab) against numpy enumeration, finite differences and fixed points."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign.envs import game_lab as gl
from jalign.envs import regularized_nash

STEPS, EVERY = 20_000, 1_000  # one compilation per (K, dtype) for every method

# ------------------------------------------------------------------------------------------------------------
# Independent numpy transcriptions (float64)
# ------------------------------------------------------------------------------------------------------------


def np_log_softmax(t):
    t = np.asarray(t, np.float64)
    t = t - t.max()
    return t - np.log(np.exp(t).sum())


def np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def np_sampler(method, theta, lmu, beta_mix, mu_s):
    lp = np_log_softmax(theta)
    if method == "ipo_md":
        return np.exp(np_log_softmax((1 - beta_mix) * lp + beta_mix * lmu))
    if method == "offline_ipo":
        return np.asarray(mu_s, np.float64)
    return np.exp(lp)


def np_ell(kind, h, tau):
    if kind == "ipo":
        return (h - 1.0 / (2 * tau)) ** 2
    if kind == "dpo":
        return -np.log(np_sigmoid(tau * h))
    return max(0.0, 1.0 - tau * h)


def np_dell(kind, h, tau):
    if kind == "ipo":
        return 2.0 * (h - 1.0 / (2 * tau))
    if kind == "dpo":
        return -tau * np_sigmoid(-tau * h)
    return -tau if tau * h < 1.0 else 0.0


KIND = {"online_ipo": "ipo", "ipo_md": "ipo", "offline_ipo": "ipo", "online_dpo": "dpo", "online_slic": "slic"}


def np_expected(method, theta, P, lmu, tau, s, grad):
    """Sum over every ordered sample pair (a, b) ~ s⊗s and both labels of the loss or its θ-gradient."""
    k = len(theta)
    g = np_log_softmax(theta) - lmu
    kind = KIND[method]
    out = np.zeros(k) if grad else 0.0
    for a in range(k):
        for b in range(k):
            for w, l_, p_label in ((a, b, P[a, b]), (b, a, P[b, a])):
                prob = s[a] * s[b] * p_label
                h = g[w] - g[l_]
                if grad:  # ∂(ln π(w) − ln π(l))/∂θ = e_w − e_l
                    e = np.zeros(k)
                    e[w] += 1.0
                    e[l_] -= 1.0
                    out = out + prob * np_dell(kind, h, tau) * e
                else:
                    out += prob * np_ell(kind, h, tau)
    return out


def np_nash_md_step(theta, P, lmu, tau, eta):
    """π' ∝ π_mix·exp(η·E_{y'~π_mix, label~P}[1(y wins)]) by enumerating opponents and labels."""
    mix = np.exp(np_log_softmax((1 - eta * tau) * np_log_softmax(theta) + eta * tau * lmu))
    k = len(theta)
    payoff = np.array([sum(mix[b] * (P[a, b] * 1.0 + (1 - P[a, b]) * 0.0) for b in range(k)) for a in range(k)])
    return np_log_softmax(np.log(mix) + eta * payoff)


def np_residual(P, lmu, tau, logp):
    pi = np.exp(np.asarray(logp, np.float64))
    q = np.exp(np_log_softmax(lmu + P @ pi / tau))
    return float(np.abs(pi - q).max())


def np_tv(lp1, lp2):
    return 0.5 * float(np.abs(np.exp(np.asarray(lp1, np.float64)) - np.exp(np.asarray(lp2, np.float64))).sum())


def problems():
    """(name, P, ln μ) in float64: Bradley–Terry on K = 4 and rock–paper–scissors with noise on K = 3."""
    P_bt = gl.bradley_terry_pref(jnp.array([1.0, 0.5, 0.0, -0.3], jnp.float64))
    lmu4 = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4], jnp.float64))
    P_rps = gl.rock_paper_scissors_pref(jnp.float64(0.8), jnp.float64(0.3), jax.random.PRNGKey(0))
    lmu3 = jnp.log(jnp.array([0.5, 0.3, 0.2], jnp.float64))
    return [("bradley_terry", P_bt, lmu4), ("rps_noise", P_rps, lmu3)]


# ------------------------------------------------------------------------------------------------------------
# Preference models
# ------------------------------------------------------------------------------------------------------------


def test_preference_models_values_and_antisymmetry():
    r = np.array([0.3, -1.0, 2.0])
    bt = np.asarray(gl.bradley_terry_pref(jnp.asarray(r), scale=2.0))
    th = np.asarray(gl.thurstone_pref(jnp.asarray(r), scale=0.5))
    for i in range(3):
        for j in range(3):
            d = r[i] - r[j]
            assert bt[i, j] == pytest.approx(1 / (1 + math.exp(-d / 2.0)), abs=1e-6)
            assert th[i, j] == pytest.approx(0.5 * (1 + math.erf(d / (math.sqrt(2) * 0.5) / math.sqrt(2))), abs=1e-6)
    rps = np.asarray(gl.rock_paper_scissors_pref(0.9))
    np.testing.assert_allclose(rps, [[0.5, 0.9, 0.1], [0.1, 0.5, 0.9], [0.9, 0.1, 0.5]], atol=1e-6)
    noisy = np.asarray(gl.rock_paper_scissors_pref(0.9, 0.5, jax.random.PRNGKey(1), num_arms=5))
    anti = np.asarray(gl.antisymmetric_pref(jax.random.PRNGKey(2), 6, scale=3.0))
    L = np.array([[0.0, 2.0], [5.0, 1.0]])
    np.testing.assert_allclose(np.asarray(gl.pref_from_logits(L)), np_sigmoid(0.5 * (L - L.T)), atol=1e-7)
    for P in (bt, th, rps, noisy, anti):
        np.testing.assert_allclose(P + P.T, 1.0, atol=1e-6)
        np.testing.assert_allclose(np.diag(P), 0.5, atol=1e-7)
    e = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5, 5)), np.float64)
    cyc = np.roll(np.eye(5), 1, axis=1)
    L5 = math.log(0.9 / 0.1) * (cyc - cyc.T) + 0.5 * (e - e.T) / math.sqrt(2)
    np.testing.assert_allclose(noisy, np_sigmoid(L5), atol=1e-6)
    assert anti.shape == (6, 6) and np.all(anti >= 0) and np.all(anti <= 1)


# ------------------------------------------------------------------------------------------------------------
# Exact expected gradients
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["online_ipo", "ipo_md", "online_dpo", "online_slic", "offline_ipo"])
def test_expected_gradient_equals_enumeration_and_finite_differences(method):
    with jax.enable_x64():
        rng = np.random.default_rng(3)
        k, tau, beta_mix = 4, 0.7, 0.3
        P = np.asarray(gl.antisymmetric_pref(jax.random.PRNGKey(4), k, scale=2.0, dtype=jnp.float64))
        lmu = np_log_softmax(rng.normal(size=k))
        mu_s = np.exp(np_log_softmax(rng.normal(size=k)))
        theta = rng.normal(size=k)
        kw = dict(beta_mix=beta_mix, sampling_probs=jnp.asarray(mu_s))
        grad = np.asarray(gl.game_gradient(method, jnp.asarray(theta), jnp.asarray(P), jnp.asarray(lmu), tau, **kw))
        s = np_sampler(method, theta, lmu, beta_mix, mu_s)
        np.testing.assert_allclose(grad, np_expected(method, theta, P, lmu, tau, s, grad=True), rtol=1e-10, atol=1e-12)
        loss = float(gl.game_loss(method, jnp.asarray(theta), jnp.asarray(P), jnp.asarray(lmu), tau, **kw))
        assert loss == pytest.approx(np_expected(method, theta, P, lmu, tau, s, grad=False), rel=1e-12)
        # central differences of the exact expected loss with the sampler s held fixed
        eps = 1e-6
        fd = np.array([(np_expected(method, theta + eps * e, P, lmu, tau, s, False)
                        - np_expected(method, theta - eps * e, P, lmu, tau, s, False)) / (2 * eps) for e in np.eye(k)])
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
        assert abs(grad.sum()) < 1e-12  # softmax: shift invariance


def test_online_ipo_gradient_closed_form():
    with jax.enable_x64():
        _, P, lmu = problems()[1]
        theta, tau = np.array([0.4, -1.0, 0.2]), 0.3
        pi = np.exp(np_log_softmax(theta))
        g = np.log(pi) - np.asarray(lmu)
        expect = 4 * pi * (g - pi @ g - (np.asarray(P) @ pi - 0.5) / tau)
        got = gl.game_gradient("online_ipo", jnp.asarray(theta), P, lmu, tau)
        np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-12, atol=1e-14)


def test_nash_md_step_equals_enumeration_and_game_step_is_gradient_descent():
    with jax.enable_x64():
        _, P, lmu = problems()[0]
        theta, tau, eta = np.array([0.3, -0.2, 1.0, 0.0]), 0.4, 0.9
        got = gl.game_step("nash_md", jnp.asarray(theta), P, lmu, tau, eta)
        np.testing.assert_allclose(np.asarray(got), np_nash_md_step(theta, np.asarray(P), np.asarray(lmu), tau, eta),
                                   atol=1e-13)
        new = gl.game_step("online_dpo", jnp.asarray(theta), P, lmu, tau, 0.25)
        g = gl.game_gradient("online_dpo", jnp.asarray(theta), P, lmu, tau)
        np.testing.assert_allclose(np.asarray(new), theta - 0.25 * np.asarray(g), atol=1e-14)


# ------------------------------------------------------------------------------------------------------------
# Fixed points
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.5, 0.2])
def test_online_ipo_reaches_the_regularised_nash_equilibrium(tau):
    with jax.enable_x64():
        for _, P, lmu in problems():
            star = regularized_nash(P, lmu, tau)
            traj = gl.train_game("online_ipo", P, lmu, tau, lr=1.0, steps=STEPS, record_every=EVERY)
            assert np_residual(np.asarray(P), np.asarray(lmu), tau, traj[-1]) <= 1e-12
            assert np_tv(traj[-1], star) <= 1e-10
            gap = gl.nash_gap(traj, P, lmu, tau)
            assert float(gap["residual"][-1]) <= 1e-12 and float(gap["residual"][0]) > 1e-2
    # float32 as well
    with jax.enable_x64():
        _, P, lmu = (np.asarray(x) for x in problems()[1])
    traj = gl.train_game("online_ipo", jnp.asarray(P, jnp.float32), jnp.asarray(lmu, jnp.float32), tau, lr=1.0,
                         steps=STEPS, record_every=EVERY)
    assert traj.dtype == jnp.float32
    assert np_residual(np.asarray(P), np.asarray(lmu), tau, traj[-1]) <= 1e-5


def test_nash_md_and_ipo_md_fixed_points():
    """Constant step: both converge to μ·exp(P π*_{τ/(1−β)}/τ)/Z (β = ητ for Nash-MD), O(β) away from π*_τ;
    Nash-MD with η_t = lr/(1 + lr·τ/2·t) reaches π*_τ."""
    with jax.enable_x64():
        tau = 0.5
        for name, P, lmu in problems():
            Pn, lmun = np.asarray(P), np.asarray(lmu)
            for beta in (0.1, 0.3):
                inner = np.exp(np.asarray(regularized_nash(P, lmu, tau / (1 - beta))))
                closed = np_log_softmax(lmun + Pn @ inner / tau)
                md = gl.train_game("nash_md", P, lmu, tau, lr=beta / tau, steps=STEPS, record_every=EVERY)
                ipomd = gl.train_game("ipo_md", P, lmu, tau, lr=1.0, beta_mix=beta, steps=STEPS, record_every=EVERY)
                np.testing.assert_allclose(np.asarray(md[-1]), closed, atol=1e-10)
                np.testing.assert_allclose(np.asarray(ipomd[-1]), closed, atol=1e-10)
                assert np_residual(Pn, lmun, tau, closed) > 1e-5  # a biased fixed point at a constant step
            traj = gl.train_game("nash_md", P, lmu, tau, lr=1.0, lr_decay=tau / 2, steps=STEPS, record_every=EVERY)
            res = np.asarray(gl.nash_gap(traj, P, lmu, tau)["residual"])
            assert res[-1] <= 1e-5, (name, res[-1])
            assert res[-1] < res[len(res) // 2] < res[1]  # O(1/t)


def test_offline_ipo_reaches_nash_only_from_the_equilibrium_sampler():
    with jax.enable_x64():
        tau = 0.5
        for name, P, lmu in problems():
            Pn, lmun = np.asarray(P), np.asarray(lmu)
            k = len(lmun)
            mu_s = np.r_[np.full(k - 1, 0.1 / (k - 1)), 0.9]  # mostly the last arm
            traj = gl.train_game("offline_ipo", P, lmu, tau, lr=1.0, sampling_probs=jnp.asarray(mu_s), steps=STEPS,
                                 record_every=EVERY)
            np.testing.assert_allclose(np.asarray(traj[-1]), np_log_softmax(lmun + Pn @ mu_s / tau), atol=1e-10)
            star = regularized_nash(P, lmu, tau)
            dist = np_tv(traj[-1], star)
            assert dist == pytest.approx({"bradley_terry": 0.003018, "rps_noise": 0.22217}[name], abs=1e-5), (name, dist)
            assert np_residual(Pn, lmun, tau, traj[-1]) > 1e-3
            at_star = gl.train_game("offline_ipo", P, lmu, tau, lr=1.0, sampling_probs=jnp.exp(star), steps=STEPS,
                                    record_every=EVERY)
            assert np_residual(Pn, lmun, tau, at_star[-1]) <= 1e-5
            assert np_tv(at_star[-1], star) <= 1e-10


def test_online_dpo_limit_is_not_the_nash_equilibrium():
    with jax.enable_x64():
        tau = 0.5
        # Bradley–Terry in r: online DPO converges to the RLHF optimum μ·exp(r/τ)/Z ≠ π*_τ (Munos et al.)
        r = np.array([1.0, 0.5, 0.0, -0.3])
        (_, P, lmu), (_, P3, lmu3) = problems()
        dpo = gl.train_game("online_dpo", P, lmu, tau, lr=1.0, steps=STEPS, record_every=EVERY)
        rlhf = np_log_softmax(np.asarray(lmu) + r / tau)
        np.testing.assert_allclose(np.asarray(dpo[-1]), rlhf, atol=1e-8)
        tv_bt = np_tv(dpo[-1], regularized_nash(P, lmu, tau))
        assert tv_bt == pytest.approx(0.3235, abs=1e-3)
        # cyclic (noisy RPS): the limit solves DPO's stationarity Σ_b π_b (σ(τ(g_a − g_b)) − P_ab) = 0, not π*_τ
        dpo3 = gl.train_game("online_dpo", P3, lmu3, tau, lr=1.0, steps=STEPS, record_every=EVERY)
        pi = np.exp(np.asarray(dpo3[-1]))
        g = np.log(pi) - np.asarray(lmu3)
        stat = (np_sigmoid(tau * (g[:, None] - g[None, :])) - np.asarray(P3)) @ pi
        np.testing.assert_allclose(stat, 0.0, atol=1e-10)
        gap = gl.nash_gap(dpo3[-1], P3, lmu3, tau)
        assert float(gap["tv"]) == pytest.approx(0.0861, abs=1e-3)
        assert float(gap["residual"]) > 0.05


# ------------------------------------------------------------------------------------------------------------
# jit / vmap, diagnostics, validation
# ------------------------------------------------------------------------------------------------------------


def test_vmap_over_initialisations_and_step_sizes_equals_per_seed_runs():
    with jax.enable_x64():
        _, P, lmu = (np.asarray(x) for x in problems()[1])
    P, lmu = jnp.asarray(P, jnp.float32), jnp.asarray(lmu, jnp.float32)
    inits = jax.random.normal(jax.random.PRNGKey(5), (4, 3))
    lrs = jnp.array([0.1, 0.3, 0.5, 1.0])
    for method in ("online_ipo", "nash_md"):
        run = lambda th, lr, m=method: gl.train_game(m, P, lmu, 0.5, lr=lr, steps=200, record_every=20,  # noqa: E731
                                                   init_logits=th)
        batched = jax.jit(jax.vmap(run))(inits, lrs)
        assert batched.shape == (4, 11, 3)
        for i in range(4):
            np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(run(inits[i], float(lrs[i]))), atol=2e-6)
    # a vmapped method index
    idx = jnp.arange(len(gl.GAME_METHODS))
    by_method = jax.vmap(lambda m: gl.train_game(m, P, lmu, 0.5, lr=0.5, steps=40, record_every=20,
                                                 sampling_probs=jnp.exp(lmu), beta_mix=0.2))(idx)
    for i, m in enumerate(gl.GAME_METHODS):
        one = gl.train_game(m, P, lmu, 0.5, lr=0.5, steps=40, record_every=20, sampling_probs=jnp.exp(lmu),
                            beta_mix=0.2)
        np.testing.assert_allclose(np.asarray(by_method[i]), np.asarray(one), atol=2e-6)


def test_nash_gap_values():
    with jax.enable_x64():
        _, P, lmu = problems()[1]
        tau = 0.4
        star = np.asarray(regularized_nash(P, lmu, tau))
        lp = np_log_softmax(np.array([0.1, 0.5, -0.2]))
        gap = gl.nash_gap(jnp.stack([jnp.asarray(lp), jnp.asarray(star)]), P, lmu, tau)
        ps, p = np.exp(star), np.exp(lp)
        assert float(gap["kl"][0]) == pytest.approx(float(np.sum(ps * (star - lp))), rel=1e-12)
        assert float(gap["tv"][0]) == pytest.approx(np_tv(lp, star), rel=1e-12)
        assert float(gap["max_abs"][0]) == pytest.approx(float(np.abs(p - ps).max()), rel=1e-12)
        assert float(gap["residual"][0]) == pytest.approx(np_residual(np.asarray(P), np.asarray(lmu), tau, lp), rel=1e-12)
        assert float(gap["kl"][1]) == pytest.approx(0.0, abs=1e-13) and float(gap["residual"][1]) < 1e-13


def test_validation():
    P = gl.rock_paper_scissors_pref(0.8)
    lmu = jnp.log(jnp.ones(3) / 3)
    with pytest.raises(ValueError, match="method"):
        gl.train_game("nash", P, lmu, 0.5, lr=0.1, steps=10)
    with pytest.raises(ValueError, match="pref"):
        gl.train_game("online_ipo", P + 0.1, lmu, 0.5, lr=0.1, steps=10)
    with pytest.raises(ValueError, match="tau"):
        gl.train_game("online_ipo", P, lmu, 0.0, lr=0.1, steps=10)
    with pytest.raises(ValueError, match="lr"):
        gl.train_game("nash_md", P, lmu, 0.5, lr=3.0, steps=10)
    with pytest.raises(ValueError, match="steps"):
        gl.train_game("online_ipo", P, lmu, 0.5, lr=0.1, steps=10, record_every=3)
    with pytest.raises(ValueError, match="sampling_probs"):
        gl.train_game("offline_ipo", P, lmu, 0.5, lr=0.1, steps=10)
    with pytest.raises(ValueError, match="beta_mix"):
        gl.train_game("ipo_md", P, lmu, 0.5, lr=0.1, steps=10, beta_mix=1.5)
    with pytest.raises(ValueError, match="ref_logps"):
        gl.train_game("online_ipo", P, jnp.zeros(3), 0.5, lr=0.1, steps=10)
    with pytest.raises(ValueError, match="nash_md"):
        gl.game_loss("nash_md", lmu, P, lmu, 0.5)
    with pytest.raises(ValueError, match="win_prob"):
        gl.rock_paper_scissors_pref(0.4)
    with pytest.raises(ValueError, match="scale"):
        gl.bradley_terry_pref(jnp.zeros(3), scale=0.0)

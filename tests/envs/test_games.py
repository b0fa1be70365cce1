"""Preference games and the InfAlign calculus (jalign.envs.games) against independent numpy computations."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jalign.envs import best_of_n, calibrated_rewards, regularized_nash, win_rate

# ------------------------------------------------------------------------------------------------------------
# Independent numpy transcriptions (float64, written from the definitions)
# ------------------------------------------------------------------------------------------------------------


def np_best_of_n_bruteforce(mu, r, n):
    """Enumerate all K^n sample tuples; the output is the first sample attaining the largest reward.

    Taking the first best sample (a fixed tie-break by position) splits a tie class in proportion to μ, because
    given which samples land in the best class they are i.i.d. from μ restricted to the class.
    """
    k = len(mu)
    out = np.zeros(k)
    for tup in itertools.product(range(k), repeat=n):
        prob = np.prod([mu[i] for i in tup])
        best = tup[int(np.argmax([r[i] for i in tup]))]
        out[best] += prob
    return out


def np_win_rate(a, b, r):
    total = 0.0
    for i in range(len(a)):
        for j in range(len(b)):
            score = 1.0 if r[i] > r[j] else (0.5 if r[i] == r[j] else 0.0)
            total += a[i] * b[j] * score
    return total


def np_calibrated(mu, r):
    return np.array([sum(mu[j] for j in range(len(r)) if r[j] < r[i])
                     + 0.5 * sum(mu[j] for j in range(len(r)) if r[j] == r[i]) for i in range(len(r))])


def np_kl(p, q):
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def np_fixed_point_residual(P, lmu, tau, logp):
    """max_y |π(y) − T(π)(y)|, T(π) ∝ μ·exp(Pπ/τ), in float64."""
    pi = np.exp(np.asarray(logp, np.float64))
    t = np.asarray(lmu, np.float64) + np.asarray(P, np.float64) @ pi / tau
    q = np.exp(t - t.max())
    return float(np.abs(pi - q / q.sum()).max())


def scipy_nash(P, lmu, tau):
    """An independent solver: MINPACK's hybrid Newton on z − log_softmax(ln μ + P·softmax(z)/τ) = 0."""
    P, lmu = np.asarray(P, np.float64), np.asarray(lmu, np.float64)

    def log_softmax(t):
        t = t - t.max()
        return t - np.log(np.exp(t).sum())

    def eq(z):
        return z - log_softmax(lmu + P @ np.exp(log_softmax(z)) / tau)

    sol = scipy.optimize.root(eq, lmu.copy(), method="hybr", tol=1e-14)
    z = log_softmax(sol.x)
    assert np.abs(eq(z)).max() < 1e-10, sol.message
    return z


def bt_pref(r):
    d = np.asarray(r, np.float64)[:, None] - np.asarray(r, np.float64)[None, :]
    return 1.0 / (1.0 + np.exp(-d))


def rps_pref(noise=0.0, rng=None):
    P = np.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    if noise:
        e = noise * rng.uniform(-1, 1, (3, 3))
        e = np.triu(e, 1)
        e = e - e.T
        P = np.clip(P + e, 0.0, 1.0)
        P = 0.5 * (P + (1.0 - P.T))  # restore P + Pᵀ = 1 after clipping
    return P


def random_antisymmetric_pref(rng, k, scale=2.0):
    logits = scale * rng.normal(size=(k, k))
    logits = logits - logits.T
    return 1.0 / (1.0 + np.exp(-logits))


# ------------------------------------------------------------------------------------------------------------
# best_of_n
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mu, r, n",
    [
        ([0.2, 0.3, 0.5], [0.0, 1.0, 2.0], 3),  # distinct rewards
        ([0.2, 0.3, 0.5], [1.0, 1.0, 0.0], 3),  # the two top arms tie
        ([0.1, 0.4, 0.25, 0.25], [2.0, 0.5, 2.0, 0.5], 4),  # two tie classes
        ([0.3, 0.3, 0.4], [5.0, 5.0, 5.0], 2),  # all tied: BoN = μ
        ([0.0, 0.6, 0.4], [3.0, 1.0, 3.0], 3),  # a zero-mass arm inside the top class
        ([0.25, 0.75], [0.0, 1.0], 1),  # n = 1 is μ
    ],
)
def test_best_of_n_equals_brute_force_enumeration(mu, r, n):
    got = np.asarray(best_of_n(jnp.asarray(mu), jnp.asarray(r), n))
    want = np_best_of_n_bruteforce(np.array(mu), np.array(r), n)
    np.testing.assert_allclose(got, want, atol=2e-7)
    assert abs(got.sum() - 1.0) < 1e-6


def test_best_of_n_random_ties_bruteforce(rng):
    for _ in range(5):
        k, n = 4, 3
        mu = rng.dirichlet(np.ones(k))
        r = rng.integers(0, 2, k).astype(np.float64)  # many ties
        got = np.asarray(best_of_n(jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32), n))
        np.testing.assert_allclose(got, np_best_of_n_bruteforce(mu, r, n), atol=5e-7)


def test_best_of_n_large_n_small_tie_class_float64():
    """F^n − F⁻^n for a tiny class high up: no cancellation (float64 closed form with exact arithmetic)."""
    with jax.enable_x64():
        mu = np.array([1e-9, 1.0 - 2e-9, 1e-9])
        r = np.array([2.0, 0.0, 1.0])
        n = 1000
        got = np.asarray(best_of_n(jnp.asarray(mu), jnp.asarray(r), n))
        # arm 2: F = 1 − 1e-9, F⁻ = 1 − 2e-9; (F^n − F⁻^n) ≈ n·1e-9·(1 − …): exact via log1p / expm1 in numpy
        f_hi, f_lo = 1.0 - 1e-9, 1.0 - 2e-9
        want2 = np.exp(n * np.log1p(-1e-9)) - np.exp(n * np.log1p(-2e-9))
        np.testing.assert_allclose(got[2], want2, rtol=1e-6)
        np.testing.assert_allclose(got[0], 1.0 - f_hi ** n, rtol=1e-6)
        np.testing.assert_allclose(got[1], f_lo ** n, rtol=1e-9)


def test_worst_of_n_is_best_of_n_of_negated_rewards():
    mu, r = np.array([0.2, 0.3, 0.5]), np.array([0.0, 1.0, 2.0])
    got = np.asarray(best_of_n(jnp.asarray(mu), -jnp.asarray(r), 2))
    # worst of 2: P(min = y) = S(y)^2 − S⁺(y)^2 with S(y) = μ(r ≥ r(y))
    s = np.array([1.0, 0.8, 0.5])
    s_plus = np.array([0.8, 0.5, 0.0])
    np.testing.assert_allclose(got, s ** 2 - s_plus ** 2, atol=1e-7)


def test_kl_of_best_of_n_is_below_log_n_minus_one_minus_one_over_n(rng):
    """KL(BoN_n(μ)‖μ) ≤ ln n − (n−1)/n, with and without ties; strictly below on a finite set."""
    for n in (2, 4, 16):
        bound = np.log(n) - (n - 1) / n
        for ties in (False, True):
            mu = rng.dirichlet(np.ones(6))
            r = rng.integers(0, 3, 6).astype(float) if ties else rng.normal(size=6)
            b = np.asarray(best_of_n(jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32), n), np.float64)
            assert np_kl(b, mu) < bound - 1e-3


def test_kl_of_best_of_n_attains_the_bound_in_the_continuous_limit():
    """Distinct rewards and μ uniform on K arms: KL → ln n − (n−1)/n as K grows (the gap is O(1/K²))."""
    with jax.enable_x64():
        bon = jax.jit(best_of_n)  # one compilation per K (n is traced)
        for n in (2, 4, 16):
            bound = np.log(n) - (n - 1) / n
            gaps = []
            for k in (10, 100, 1000):
                mu = np.full(k, 1.0 / k)
                r = np.random.default_rng(k).permutation(k).astype(np.float64)
                b = np.asarray(bon(jnp.asarray(mu), jnp.asarray(r), n))
                # closed form for uniform μ, arm of rank j (1-based): (j/K)^n − ((j−1)/K)^n
                rank = np.argsort(np.argsort(r)) + 1
                np.testing.assert_allclose(b, (rank / k) ** n - ((rank - 1) / k) ** n, atol=1e-13)
                gaps.append(bound - np_kl(b, mu))
            assert all(g > 0 for g in gaps) and gaps[0] > gaps[1] > gaps[2]
            assert gaps[2] < 2e-5


def test_best_of_n_win_rate_over_reference_tends_to_n_over_n_plus_one():
    with jax.enable_x64():
        k, n = 2000, 3
        mu = np.full(k, 1.0 / k)
        r = np.arange(k, dtype=np.float64)
        b = best_of_n(jnp.asarray(mu), jnp.asarray(r), n)
        w = float(win_rate(b, jnp.asarray(mu), jnp.asarray(r)))
        assert abs(w - n / (n + 1)) < 1e-3


# ------------------------------------------------------------------------------------------------------------
# win_rate and calibrated_rewards
# ------------------------------------------------------------------------------------------------------------


def test_win_rate_equals_double_sum_with_ties(rng):
    for _ in range(5):
        k = 6
        a, b = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        r = rng.integers(0, 3, k).astype(np.float64)
        got = float(win_rate(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(r, jnp.float32)))
        assert abs(got - np_win_rate(a, b, r)) < 1e-6
        back = float(win_rate(jnp.asarray(b, jnp.float32), jnp.asarray(a, jnp.float32), jnp.asarray(r, jnp.float32)))
        assert abs(got + back - 1.0) < 1e-6
        assert abs(float(win_rate(jnp.asarray(a), jnp.asarray(a), jnp.asarray(r))) - 0.5) < 1e-6


def test_calibrated_rewards_by_definition_with_ties(rng):
    for _ in range(5):
        k = 7
        mu = rng.dirichlet(np.ones(k))
        r = rng.integers(0, 3, k).astype(np.float64)
        got = np.asarray(calibrated_rewards(jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32)))
        np.testing.assert_allclose(got, np_calibrated(mu, r), atol=1e-6)
        assert abs(float(np.dot(mu, got)) - 0.5) < 1e-6  # E_μ[C] = ½


def test_win_rate_over_reference_equals_expected_calibrated_reward(rng):
    """InfAlign: W(π ≻ μ) = E_π[C] exactly, for any π (including best-of-n of μ) and with ties."""
    for ties in (False, True):
        k = 8
        mu = rng.dirichlet(np.ones(k))
        r = rng.integers(0, 4, k).astype(np.float64) if ties else rng.normal(size=k)
        c = np.asarray(calibrated_rewards(jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32)), np.float64)
        pis = [rng.dirichlet(np.ones(k)) for _ in range(3)]
        pis.append(np.asarray(best_of_n(jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32), 4), np.float64))
        for pi in pis:
            pi = pi / pi.sum()
            w = float(win_rate(jnp.asarray(pi, jnp.float32), jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32)))
            assert abs(w - float(pi @ c)) < 1e-6
            assert abs(w - np_win_rate(pi, mu, r)) < 1e-6


def test_calibrated_rewards_invariant_to_strictly_increasing_transforms(rng):
    mu = rng.dirichlet(np.ones(6))
    r = np.array([0.3, -1.0, 0.3, 2.0, 0.1, -1.0])
    base = np.asarray(calibrated_rewards(jnp.asarray(mu, jnp.float32), jnp.asarray(r, jnp.float32)))
    for f in (np.exp, lambda x: x ** 3, lambda x: 5.0 * x - 7.0, np.arctan):
        got = np.asarray(calibrated_rewards(jnp.asarray(mu, jnp.float32), jnp.asarray(f(r), jnp.float32)))
        np.testing.assert_allclose(got, base, atol=1e-7)


def test_infalign_functions_jit_and_vmap(rng):
    k = 5
    mus = rng.dirichlet(np.ones(k), size=3).astype(np.float32)
    r = jnp.asarray([0.0, 1.0, 1.0, 2.0, -1.0])
    bon = jax.vmap(best_of_n, in_axes=(0, None, None))(jnp.asarray(mus), r, 3)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(bon[i]), np.asarray(best_of_n(jnp.asarray(mus[i]), r, 3)), atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.jit(best_of_n)(mus[0], r, 3)), np.asarray(best_of_n(mus[0], r, 3)), atol=1e-7)
    np.testing.assert_allclose(float(jax.jit(win_rate)(mus[0], mus[1], r)), float(win_rate(mus[0], mus[1], r)), atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.jit(calibrated_rewards)(mus[0], r)),
                               np.asarray(calibrated_rewards(mus[0], r)), atol=1e-7)


# ------------------------------------------------------------------------------------------------------------
# regularized_nash
# ------------------------------------------------------------------------------------------------------------


def _cases(rng):
    mu4 = rng.dirichlet(np.ones(4))
    mu3 = rng.dirichlet(np.ones(3))
    mu6 = rng.dirichlet(np.ones(6))
    return [
        ("bradley_terry", bt_pref(np.array([0.0, 1.0, -0.5, 2.0])), np.log(mu4)),
        ("rps_noise", rps_pref(0.2, rng), np.log(mu3)),
        ("random_antisymmetric", random_antisymmetric_pref(rng, 6), np.log(mu6)),
    ]


@pytest.mark.parametrize("tau", [1.0, 0.2, 0.05])
def test_regularized_nash_matches_scipy_root_and_has_small_residual_float64(tau):
    rng = np.random.default_rng(int(tau * 100))
    with jax.enable_x64():
        for name, P, lmu in _cases(rng):
            got = np.asarray(regularized_nash(jnp.asarray(P), jnp.asarray(lmu), tau))
            assert got.dtype == np.float64
            assert np_fixed_point_residual(P, lmu, tau, got) <= 1e-12, name
            np.testing.assert_allclose(np.exp(got), np.exp(scipy_nash(P, lmu, tau)), atol=1e-10, err_msg=name)


@pytest.mark.parametrize("tau", [1.0, 0.1, 0.02])
def test_regularized_nash_float32_residual_below_1e6(tau):
    rng = np.random.default_rng(7)
    f = jax.jit(regularized_nash)
    for name, P, lmu in _cases(rng):
        got = f(jnp.asarray(P, jnp.float32), jnp.asarray(lmu, jnp.float32), tau)
        assert got.dtype == jnp.float32
        assert np_fixed_point_residual(P, lmu, tau, got) <= 1e-6, name
        np.testing.assert_allclose(np.exp(np.asarray(got, np.float64)), np.exp(scipy_nash(P, lmu, tau)), atol=2e-6)


def test_regularized_nash_is_an_equilibrium_no_policy_beats_it(rng):
    """P_τ(π ≻ π*) = πᵀPπ* − τ·KL(π‖μ) + τ·KL(π*‖μ) ≤ ½ = P_τ(π* ≻ π*) for every π (checked on random π)."""
    with jax.enable_x64():
        P = random_antisymmetric_pref(rng, 5)
        mu = rng.dirichlet(np.ones(5))
        tau = 0.1
        star = np.exp(np.asarray(regularized_nash(jnp.asarray(P), jnp.asarray(np.log(mu)), tau)))
        value = lambda pi: pi @ P @ star - tau * np_kl(pi, mu) + tau * np_kl(star, mu)
        assert abs(value(star) - 0.5) < 1e-12
        for _ in range(200):
            pi = rng.dirichlet(np.ones(5) * rng.uniform(0.2, 3.0))
            assert value(pi) <= 0.5 + 1e-12
        # first-order: small perturbations lose second order
        d = rng.normal(size=5)
        d -= d.mean()
        for eps in (1e-3, 1e-4):
            assert value(star + eps * d) <= 0.5 + 1e-12


def test_regularized_nash_symmetric_rps_is_uniform():
    rps = rps_pref()
    lmu = np.log(np.full(3, 1.0 / 3.0))
    for tau in (5.0, 0.1, 0.01):
        got = np.exp(np.asarray(regularized_nash(jnp.asarray(rps, jnp.float32), jnp.asarray(lmu, jnp.float32), tau)))
        np.testing.assert_allclose(got, np.full(3, 1.0 / 3.0), atol=1e-6)


def test_regularized_nash_cyclic_small_tau_where_the_plain_iteration_fails():
    """Non-uniform μ on RPS with τ = 0.01: the plain iteration π ← T(π) cycles; the solver converges."""
    with jax.enable_x64():
        P = rps_pref()
        lmu = np.log(np.array([0.6, 0.3, 0.1]))
        tau = 0.01
        pi = np.exp(lmu)
        for _ in range(2000):
            t = lmu + P @ pi / tau
            pi = np.exp(t - t.max())
            pi /= pi.sum()
        assert np_fixed_point_residual(P, lmu, tau, np.log(pi)) > 0.1  # the undamped iteration does not settle
        got = np.asarray(regularized_nash(jnp.asarray(P), jnp.asarray(lmu), tau))
        assert np_fixed_point_residual(P, lmu, tau, got) <= 1e-12
        # τ → 0: the unregularised RPS equilibrium is uniform
        np.testing.assert_allclose(np.exp(got), np.full(3, 1 / 3), atol=0.05)


def test_regularized_nash_transitive_tiny_tau_concentrates_on_condorcet_winner():
    with jax.enable_x64():
        r = np.array([0.0, 1.5, -1.0, 0.7, 0.2])
        P = bt_pref(r)
        mu = np.array([0.4, 0.02, 0.3, 0.2, 0.08])  # the winner (arm 1) is rare under μ
        got = np.exp(np.asarray(regularized_nash(jnp.asarray(P), jnp.asarray(np.log(mu)), 1e-3)))
        assert got[1] > 1 - 1e-9
        assert np_fixed_point_residual(P, np.log(mu), 1e-3, np.log(got)) <= 1e-6


def test_regularized_nash_jit_vmap_and_zero_mass_arms(rng):
    P = random_antisymmetric_pref(rng, 4)
    mu = np.array([0.5, 0.0, 0.3, 0.2])
    with np.errstate(divide="ignore"):
        lmu = jnp.asarray(np.log(mu), jnp.float32)
    Pj = jnp.asarray(P, jnp.float32)
    eager = regularized_nash(Pj, lmu, 0.3)
    assert float(jnp.exp(eager[1])) == 0.0 and np.all(np.isfinite(np.asarray(eager)[[0, 2, 3]]))
    np.testing.assert_allclose(np.asarray(jax.jit(regularized_nash)(Pj, lmu, 0.3)), np.asarray(eager), atol=1e-6)
    taus = jnp.asarray([1.0, 0.3, 0.05])
    batched = jax.vmap(regularized_nash, in_axes=(None, None, 0))(Pj, lmu, taus)
    for i, t in enumerate([1.0, 0.3, 0.05]):
        np.testing.assert_allclose(np.exp(np.asarray(batched[i])), np.exp(np.asarray(regularized_nash(Pj, lmu, t))),
                                   atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------------


def test_validation_errors_name_the_argument():
    u3 = jnp.full(3, 1.0 / 3.0)
    lu3 = jnp.log(u3)
    rps = jnp.asarray(rps_pref())
    r3 = jnp.asarray([0.0, 1.0, 2.0])
    bad_sym = rps.at[0, 1].set(0.7)
    out_of_range = jnp.asarray([[0.5, 1.5, 0.0], [-0.5, 0.5, 1.0], [1.0, 0.0, 0.5]])
    cases = [
        (lambda: regularized_nash(bad_sym, lu3, 0.1), "pref"),
        (lambda: regularized_nash(out_of_range, lu3, 0.1), "pref"),
        (lambda: regularized_nash(rps[:2, :2], lu3, 0.1), "pref"),
        (lambda: regularized_nash(rps, lu3, 0.0), "tau=0.0"),
        (lambda: regularized_nash(rps, lu3, -1.0), "tau=-1.0"),
        (lambda: regularized_nash(rps, lu3 + 1.0, 0.1), "ref_logps"),
        (lambda: best_of_n(u3, r3, 0), "n=0"),
        (lambda: best_of_n(u3, r3[:2], 2), "rewards"),
        (lambda: best_of_n(u3 * 2, r3, 2), "ref_probs"),
        (lambda: best_of_n(jnp.asarray([1.2, -0.2, 0.0]), r3, 2), "ref_probs"),
        (lambda: win_rate(u3, jnp.asarray([0.5, 0.5]), r3), "probs_b"),
        (lambda: win_rate(u3, u3 * 0.5, r3), "probs_b"),
        (lambda: calibrated_rewards(u3 * 0.9, r3), "ref_probs"),
        (lambda: calibrated_rewards(u3, jnp.asarray([0.0, jnp.nan, 1.0])), "rewards"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
            call()

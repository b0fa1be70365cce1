"""CoPG / k-sample CoPG / RLOO / off-policy PG: gradients against the paper's formulas, exact expectations on
small categorical problems, registry round trips and input validation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import losses
from jalign.envs import bandit as bandit_lib


def _problem(rng, k=4):
    theta = rng.normal(size=k).astype(np.float32)
    ref = np.log(rng.dirichlet(np.ones(k))).astype(np.float32)
    R = rng.normal(size=k).astype(np.float32)
    return theta, ref, R


def _np_logsoftmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def _copg_pair(theta, ref, R, a, b, beta):
    lp = jax.nn.log_softmax(theta)
    ref, R = jnp.asarray(ref), jnp.asarray(R)
    return losses.copg(lp[a], ref[a], R[a], lp[b], ref[b], R[b], beta=beta)


def test_copg_value_closed_form(rng):
    lp_a, ref_a, r_a, lp_b, ref_b, r_b = (rng.normal(size=7).astype(np.float32) for _ in range(6))
    beta = 0.3
    want = (r_a - r_b - beta * ((lp_a - ref_a) - (lp_b - ref_b))) ** 2 / (2 * beta)
    got = losses.copg(lp_a, ref_a, r_a, lp_b, ref_b, r_b, beta=beta)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # unranked: symmetric in a <-> b
    np.testing.assert_allclose(losses.copg(lp_b, ref_b, r_b, lp_a, ref_a, r_a, beta=beta), got, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.05, 0.5, 3.0])
def test_copg_gradient_equals_card_formula(rng, beta):
    """∇_θ loss = −[(R_β(a) − R_β(b))∇ln π(a) + (R_β(b) − R_β(a))∇ln π(b)], tabular softmax ∇ln π(y) = e_y − π."""
    theta, ref, R = _problem(rng, k=5)
    for a, b in [(0, 1), (2, 4), (3, 3), (4, 0)]:
        got = np.asarray(jax.grad(_copg_pair)(theta, ref, R, a, b, beta))
        lp = _np_logsoftmax(theta)
        pi = np.exp(lp)
        rb = R - beta * (lp - ref)
        e = np.eye(5)
        ascent = (rb[a] - rb[b]) * (e[a] - pi) + (rb[b] - rb[a]) * (e[b] - pi)
        np.testing.assert_allclose(got, -ascent, rtol=2e-5, atol=2e-6)


def test_copg_surrogate_identity_and_gradient(rng):
    """Card eq.: ℓ (with R_{β/2}) = ΔR²/(2β) − copg; so ∇ℓ = −∇copg (β, not β/2, in the gradient)."""
    theta, ref, R = _problem(rng, k=4)
    beta = 0.7

    def surr(th, a, b):
        lp = jax.nn.log_softmax(th)
        return losses.copg_surrogate(lp[a], ref[a], R[a], lp[b], ref[b], R[b], beta=beta)

    for a, b in [(0, 1), (1, 3), (2, 0)]:
        np.testing.assert_allclose(
            surr(theta, a, b), (R[a] - R[b]) ** 2 / (2 * beta) - _copg_pair(theta, ref, R, a, b, beta), rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            jax.grad(surr)(theta, a, b), -jax.grad(_copg_pair)(theta, ref, R, a, b, beta), rtol=1e-5, atol=1e-6
        )


def test_copg_vanishes_at_optimum_for_every_pair(rng):
    theta, ref, R = _problem(rng, k=4)
    beta = 0.4
    theta_star = ref + R / beta  # π* ∝ π_ref·exp(R/β)
    for a, b in itertools.product(range(4), repeat=2):
        assert abs(float(_copg_pair(theta_star, ref, R, a, b, beta))) < 1e-10
        np.testing.assert_allclose(jax.grad(_copg_pair)(theta_star, ref, R, a, b, beta), 0.0, atol=1e-5)


def test_on_policy_expectation_is_twice_grad_J(rng):
    """E_{y,y'~π}[−∇copg(y, y')] = 2∇J_β(π), computed exactly over all K² pairs."""
    k, beta = 4, 0.6
    theta, ref, R = _problem(rng, k)
    pi = np.exp(_np_logsoftmax(theta))
    grad_pairs = jax.vmap(jax.vmap(jax.grad(_copg_pair), (None, None, None, None, 0, None)),
                          (None, None, None, 0, None, None))(theta, ref, R, jnp.arange(k), jnp.arange(k), beta)
    expected = np.einsum("a,b,abk->k", pi, pi, np.asarray(grad_pairs, np.float64))
    grad_J = jax.grad(lambda th: bandit_lib.objective(jax.nn.log_softmax(th), R, ref, beta))(theta)
    np.testing.assert_allclose(-expected, 2 * np.asarray(grad_J), rtol=1e-4, atol=1e-6)


def test_on_policy_copg_is_rloo_k2(rng):
    """Per pair, ∇copg = 2·∇rloo(K = 2, kl_coef = β): CoPG is RLOO with two samples (card)."""
    theta, ref, R = _problem(rng, k=4)
    beta = 0.5

    def rloo2(th, a, b):
        lp = jax.nn.log_softmax(th)
        idx = jnp.array([[a, b]])
        return losses.rloo(lp[idx], R[idx], ref[idx], kl_coef=beta)[0]

    for a, b in [(0, 1), (3, 2), (1, 1)]:
        np.testing.assert_allclose(
            jax.grad(_copg_pair)(theta, ref, R, a, b, beta), 2 * jax.grad(rloo2)(theta, a, b), rtol=1e-5, atol=1e-6
        )


def test_rloo_exactly_unbiased_on_policy(rng):
    """E_{y1..y3 ~ π}[−∇rloo] = ∇J_β, enumerating all K³ sample triples."""
    k, beta = 3, 0.4
    theta, ref, R = _problem(rng, k)
    pi = np.exp(_np_logsoftmax(theta))
    tuples = np.array(list(itertools.product(range(k), repeat=3)))
    weights = pi[tuples].prod(1)

    def loss(th):
        lp = jax.nn.log_softmax(th)
        per = losses.rloo(lp[tuples], R[tuples], ref[tuples], kl_coef=beta)
        return jnp.sum(jnp.asarray(weights, jnp.float32) * per)

    grad_J = jax.grad(lambda th: bandit_lib.objective(jax.nn.log_softmax(th), R, ref, beta))(theta)
    np.testing.assert_allclose(-jax.grad(loss)(theta), grad_J, rtol=1e-4, atol=1e-6)


def test_ksample_k2_equals_pairwise_and_registry(rng):
    lp, ref, r = (rng.normal(size=(6, 2)).astype(np.float32) for _ in range(3))
    direct = losses.copg(lp[:, 0], ref[:, 0], r[:, 0], lp[:, 1], ref[:, 1], r[:, 1], beta=0.25)
    np.testing.assert_allclose(losses.copg_ksample(lp, ref, r, beta=0.25), direct, rtol=1e-5, atol=1e-6)
    batch = losses.ScoredLogps(logps=lp, rewards=r, ref_logps=ref)
    np.testing.assert_allclose(losses.get("copg")(batch, beta=0.25), direct, rtol=1e-5, atol=1e-6)
    assert losses.spec("copg").kind == "scored"
    assert losses.spec("rloo").kind == "scored" and losses.spec("off_policy_pg").kind == "scored"


def test_ksample_value_and_gradient_leave_one_out(rng):
    """Σ_{i<j} form against numpy; −∂/∂ln π(y_i) = R_β(y_i) − mean_{j≠i} R_β(y_j)."""
    B, K, beta = 3, 5, 0.8
    lp, ref, r = (rng.normal(size=(B, K)).astype(np.float32) for _ in range(3))
    rb = r.astype(np.float64) - beta * (lp - ref)
    want = np.array([sum((rb[n, i] - rb[n, j]) ** 2 for i in range(K) for j in range(i + 1, K)) for n in range(B)])
    want /= 2 * beta * (K - 1)
    np.testing.assert_allclose(losses.copg_ksample(lp, ref, r, beta=beta), want, rtol=1e-5)
    g = jax.grad(lambda x: losses.copg_ksample(x, ref, r, beta=beta).sum())(lp)
    loo = rb - (rb.sum(1, keepdims=True) - rb) / (K - 1)
    np.testing.assert_allclose(g, -loo, rtol=1e-4, atol=1e-5)


def test_masked_equals_sliced(rng):
    lp, ref, r = (rng.normal(size=(2, 5)).astype(np.float32) for _ in range(3))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)
    for fn in (
        lambda x, rf, rw, m: losses.copg_ksample(x, rf, rw, beta=0.3, mask_BxK=m),
        lambda x, rf, rw, m: losses.rloo(x, rw, rf, kl_coef=0.3, mask_BxK=m),
        lambda x, rf, rw, m: losses.off_policy_pg(x, rf, rw, beta=0.3, baseline=0.2, mask_BxK=m),
    ):
        got = fn(lp, ref, r, mask)
        for n, kk in enumerate(mask.sum(1)):
            sl = slice(0, kk)
            np.testing.assert_allclose(got[n], fn(lp[n:n + 1, sl], ref[n:n + 1, sl], r[n:n + 1, sl], None)[0],
                                       rtol=1e-5, atol=1e-6)


def test_off_policy_pg_gradient_formula(rng):
    """∂/∂ln π(y_i) = −(1/k)(R_β(y_i) − b): coefficient is a constant (stop-gradient)."""
    lp, ref, r = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(3))
    b = np.array([0.1, -0.3, 0.7], np.float32)
    g = jax.grad(lambda x: losses.off_policy_pg(x, ref, r, beta=0.5, baseline=b).sum())(lp)
    np.testing.assert_allclose(g, -(r - 0.5 * (lp - ref) - b[:, None]) / 4, rtol=1e-5, atol=1e-6)


def test_jit_and_vmap_over_beta(rng):
    lp_a, ref_a, r_a, lp_b, ref_b, r_b = (rng.normal(size=5).astype(np.float32) for _ in range(6))
    args = (lp_a, ref_a, r_a, lp_b, ref_b, r_b)
    betas = jnp.array([0.1, 0.5, 2.0])
    f = lambda bt: losses.copg(*args, beta=bt)
    np.testing.assert_allclose(jax.jit(f)(0.5), f(0.5), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(betas), np.stack([f(float(bt)) for bt in betas]), rtol=1e-6)


def test_bad_hyperparameters_raise_naming_argument():
    z = np.zeros(3, np.float32)
    z2 = np.zeros((3, 2), np.float32)
    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta"):
            losses.copg(z, z, z, z, z, z, beta=beta)
        with pytest.raises(ValueError, match="beta"):
            losses.copg_ksample(z2, z2, z2, beta=beta)
        with pytest.raises(ValueError, match="beta"):
            losses.off_policy_pg(z2, z2, z2, beta=beta)
    with pytest.raises(ValueError, match="kl_coef"):
        losses.rloo(z2, z2, z2, kl_coef=-0.1)
    with pytest.raises(ValueError, match="ref_logps"):
        losses.rloo(z2, z2, None, kl_coef=0.1)
    with pytest.raises(ValueError, match="ref_logps"):
        losses.get("rloo")(losses.ScoredLogps(logps=z2, rewards=z2), kl_coef=0.1)
    np.testing.assert_allclose(losses.get("rloo")(losses.ScoredLogps(logps=z2, rewards=z2)), 0.0)
    with pytest.raises(ValueError, match="beta"):
        losses.get("copg")(losses.ScoredLogps(logps=z2, rewards=z2, ref_logps=z2), beta=0.0)
    with pytest.raises(ValueError, match="baseline"):
        losses.off_policy_pg(z2, z2, z2, beta=1.0, baseline=float("nan"))


def test_bad_inputs_raise_naming_argument():
    z = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="rewards_b"):
        losses.copg(z, z, z, z, z, np.zeros(4, np.float32), beta=0.5)
    bad = z.copy()
    bad[1] = np.nan
    with pytest.raises(ValueError, match="logps_a.*index \\(1,\\)"):
        losses.copg(bad, z, z, z, z, z, beta=0.5)
    with pytest.raises(ValueError, match="logps_BxK"):
        losses.copg_ksample(z, z, z, beta=0.5)
    with pytest.raises(ValueError, match="rewards"):
        losses.get("copg")(losses.ScoredLogps(logps=np.zeros((2, 2)), rewards=np.full((2, 2), np.inf),
                                              ref_logps=np.zeros((2, 2))), beta=0.5)


def test_bandit_ipo_is_registered_ipo_on_summed_logratios(rng):
    from jalign.envs.offline import ipo_pair_loss

    lw, ll, rw, rl = (rng.normal(size=5).astype(np.float32) for _ in range(4))
    h = (lw - rw) - (ll - rl)
    batch = losses.PairwiseLogps(chosen_logps=lw, rejected_logps=ll, ref_chosen_logps=rw, ref_rejected_logps=rl)
    registered = losses.get("ipo")(batch, beta=0.5, ipo_average=False)
    np.testing.assert_allclose(ipo_pair_loss(h, 0.5), registered, rtol=1e-5)
    np.testing.assert_allclose(ipo_pair_loss(h, 0.5), (h.astype(np.float64) - 1.0) ** 2, rtol=1e-5)


def test_copg_ksample_is_invariant_to_a_common_reward_offset_in_float32():
    """Σ_{i<j}(a_i − a_j)² computed with the mean subtracted first: a reward offset of 300 changes nothing
    (the form k·Σa² − (Σa)² cancels to 0 in float32 there)."""
    r = np.random.default_rng(3)
    lp = jnp.asarray(r.normal(-5, 1, (4, 3)), jnp.float32)
    ref = jnp.asarray(r.normal(-5, 1, (4, 3)), jnp.float32)
    rw = r.normal(0, 0.1, (4, 3))
    m = jnp.asarray([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], jnp.float32)
    beta = 0.5
    a = rw - beta * (np.asarray(lp, np.float64) - np.asarray(ref, np.float64))
    want = np.array([sum((a[b, i] - a[b, j]) ** 2 for i in range(3) for j in range(i + 1, 3)
                         if m[b, i] and m[b, j]) / (2 * beta * max(float(m[b].sum()) - 1, 1)) for b in range(4)])
    for offset in (0.0, 300.0):
        got = losses.copg_ksample(lp, ref, jnp.asarray(rw + offset, jnp.float32), beta=beta, mask_BxK=m)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)
    assert float(want[0]) > 1e-2  # the value the cancelling form lost

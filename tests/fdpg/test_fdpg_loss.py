"""f-DPG loss: exact expectation of the surrogate gradient = ∇D_f, RLHF equivalence, registry, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jalign import divergences as D
from jalign import losses
from jalign.losses import SampledLogps, fdpg
from jalign.losses.fdpg import baseline_estimate, logz_estimate, logz_init, logz_update

K, NP = 7, 3  # outcomes, policy parameters


def _problem(seed):
    r = np.random.default_rng(seed)
    W = r.normal(size=(K, NP))  # restricted family: logits = W θ (cannot represent p)
    theta = r.normal(size=NP) * 0.5
    log_P = np.log(r.dirichlet(np.ones(K))) + 3.7  # unnormalised target, log Z = 3.7
    log_q = np.log(r.dirichlet(np.ones(K)))
    return W, theta, log_P, log_q


def _expected_surrogate_grad(div, W, theta, log_P, log_q, *, on_policy, baseline=0.0, log_z=0.0):
    """Σ_x q(x) ∇_θ ℓ(x): every outcome is one 'sample', weighted by its proposal probability."""
    def per_outcome(th):
        lpi = jax.nn.log_softmax(W @ th)
        lq = lpi if on_policy else log_q
        return fdpg(lpi, log_P, lq, divergence=div, baseline=baseline, log_z=log_z, validate=False)

    jac = jax.jacobian(per_outcome)(theta)  # [K, NP]
    q = jnp.exp(jax.nn.log_softmax(W @ theta)) if on_policy else jnp.exp(log_q)
    return q @ jac


DIVS = [D.get(n) for n in D.names()] + [D.alpha(-1.0), D.alpha(0.0), D.alpha(1.0), D.alpha(2.0), D.alpha(0.3)]


@pytest.mark.parametrize("on_policy", [True, False], ids=["on_policy", "off_policy"])
def test_expected_surrogate_gradient_equals_gradient_of_exact_divergence(on_policy):
    """E_q[∇ℓ] = ∇_θ D_f(π_θ‖p) for every f, with a baseline and an unnormalised target (log Z given)."""
    with jax.enable_x64():
        for seed in (0, 1):
            W, theta, log_P, log_q = _problem(seed)
            log_z = float(jax.nn.logsumexp(log_P))
            log_p = log_P - log_z
            for div in DIVS:
                exact = jax.grad(lambda th, div=div, W=W, log_p=log_p: D.divergence(div, jax.nn.log_softmax(W @ th), log_p))(
                    theta
                )
                for B in (0.0, 0.37):
                    got = _expected_surrogate_grad(
                        div, W, theta, log_P, log_q, on_policy=on_policy, baseline=B, log_z=log_z
                    )
                    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=1e-12, err_msg=f"{div} B={B}")


def test_forward_kl_is_dpg_per_sample():
    """Per sample, forward-KL f-DPG's gradient is −(p/q)·∇log π (the DPG/GDC estimator)."""
    with jax.enable_x64():
        W, theta, log_P, log_q = _problem(3)
        log_p = log_P - jax.nn.logsumexp(log_P)
        jac_loss = jax.jacobian(lambda th: fdpg(jax.nn.log_softmax(W @ th), log_p, log_q, divergence="forward_kl"))(
            theta
        )
        jac_logpi = jax.jacobian(lambda th: jax.nn.log_softmax(W @ th))(theta)
        np.testing.assert_allclose(jac_loss, -np.exp(log_p - log_q)[:, None] * jac_logpi, rtol=1e-12)


def test_reverse_kl_with_rlhf_target_is_kl_regularised_rl():
    """β·∇ E_q[ℓ_RKL] = ∇[−E_π r + β KL(π‖a)] for p ∝ a·exp(r/β), any log Z offset (on- and off-policy)."""
    from jalign.fdpg.targets import rlhf_target_logps

    with jax.enable_x64():
        r = np.random.default_rng(5)
        W = r.normal(size=(K, NP))
        theta = r.normal(size=NP)
        log_a = np.log(r.dirichlet(np.ones(K)))
        reward = r.normal(size=K)
        log_q = np.log(r.dirichlet(np.ones(K)))
        for beta in (0.1, 2.0):
            log_P = rlhf_target_logps(log_a, reward, beta)

            def rl_objective(th, beta=beta):
                lpi = jax.nn.log_softmax(W @ th)
                return -jnp.exp(lpi) @ reward + beta * D.divergence("reverse_kl", lpi, log_a)

            want = jax.grad(rl_objective)(theta)
            for on_policy in (True, False):
                # log_z deliberately wrong (0): reverse-KL's pseudo-reward shifts by a constant, E[w ∇log π] = 0.
                got = beta * _expected_surrogate_grad("reverse_kl", W, theta, log_P, log_q, on_policy=on_policy)
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_registry_entry_matches_direct_call_and_validates():
    s = losses.spec("fdpg")
    assert s.kind == "sampled" and s.hparams == {"divergence": "js", "baseline": 0.0, "log_z": 0.0}
    assert not s.needs_reference
    r = np.random.default_rng(0)
    batch = SampledLogps(
        policy_logps=jnp.asarray(r.normal(size=5) - 3, jnp.float32),
        target_logps=jnp.asarray(r.normal(size=5) - 3, jnp.float32),
        proposal_logps=jnp.asarray(r.normal(size=5) - 3, jnp.float32),
    )
    fn = losses.get("fdpg")
    for div in ("tv", "reverse_kl", D.alpha(0.2)):
        want = fdpg(batch.policy_logps, batch.target_logps, batch.proposal_logps, divergence=div, baseline=0.1)
        np.testing.assert_allclose(fn(batch, divergence=div, baseline=0.1), want, rtol=1e-6)
    # Default divergence is JS.
    np.testing.assert_allclose(
        fn(batch), fdpg(batch.policy_logps, batch.target_logps, batch.proposal_logps, divergence="js"), rtol=1e-6
    )
    with pytest.raises(ValueError, match="Valid divergences: forward_kl, reverse_kl, js, tv"):
        fn(batch, divergence="kl")
    bad = SampledLogps(batch.policy_logps, batch.target_logps.at[2].set(jnp.nan), batch.proposal_logps)
    with pytest.raises(ValueError, match="'target_logps' is not finite at example 2"):
        fn(bad)
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        fn(batch, beta=0.1)


def test_direct_call_validation():
    x = jnp.zeros(4)
    with pytest.raises(ValueError, match="policy_logps is not finite at index \\(1,\\)"):
        fdpg(x.at[1].set(jnp.inf), x, x, divergence="js")
    with pytest.raises(ValueError, match="proposal_logps is not finite"):
        fdpg(x, x, x.at[0].set(-jnp.inf), divergence="js")
    with pytest.raises(ValueError, match="baseline is not finite"):
        fdpg(x, x, x, divergence="js", baseline=jnp.nan)
    with pytest.raises(ValueError, match="log_z is not finite"):
        fdpg(x, x, x, divergence="js", log_z=jnp.inf)
    with pytest.raises(ValueError, match="do not broadcast"):
        fdpg(x, jnp.zeros(3), x, divergence="js")
    with pytest.raises(ValueError, match="Valid divergences"):
        fdpg(x, x, x, divergence="hellinger")
    # A zero of the target (b(x) = 0) is fine where f'(∞) is finite, an error where it is not.
    tgt = x.at[2].set(-jnp.inf)
    for name, slope in (("forward_kl", 0.0), ("js", 0.5 * np.log(2)), ("tv", 0.5), ("chi2", 1.0)):
        g = jax.grad(lambda l, name=name: fdpg(l, tgt, x, divergence=name).sum())(x)
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g[2], slope, atol=1e-6)  # ℓ = w·f'(∞)·log π, w = 1
    with pytest.raises(ValueError, match="target_logps is -inf .*reverse_kl"):
        fdpg(x, tgt, x, divergence="reverse_kl")


def test_jit_equals_eager_and_sharded_equals_unsharded(mesh8):
    r = np.random.default_rng(1)
    args = [jnp.asarray(r.normal(size=16) - 20.0, jnp.float32) for _ in range(3)]
    for div in ("js", "forward_kl", D.alpha(1.5)):
        eager = fdpg(*args, divergence=div, baseline=0.2)
        f = jax.jit(lambda a, b, c, div=div: fdpg(a, b, c, divergence=div, baseline=0.2))
        np.testing.assert_allclose(f(*args), eager, rtol=1e-6)
        sharded = [jax.device_put(a, NamedSharding(mesh8, P("data"))) for a in args]
        np.testing.assert_allclose(f(*sharded), eager, rtol=1e-6)
        # Batched (vmap over a leading axis) == per-row.
        stacked = [jnp.stack([a, a[::-1]]) for a in args]
        vm = jax.vmap(lambda a, b, c, div=div: fdpg(a, b, c, divergence=div, baseline=0.2, validate=False))(*stacked)
        np.testing.assert_allclose(vm[0], eager, rtol=1e-6)


def test_sequence_scale_log_probs_float32_matches_float64():
    """Summed sequence log-probs (~ −300) with large importance ratios: no overflow, float64 values."""
    lpi = np.array([-300.0, -310.0, -295.5, -305.0])
    lP = np.array([-302.0, -290.0, -296.0, -330.0])
    lq = np.array([-301.0, -309.0, -300.0, -299.0])
    for name in ("forward_kl", "reverse_kl", "js", "tv", "chi2"):
        g32 = jax.grad(lambda x, n=name: fdpg(x, jnp.asarray(lP, jnp.float32), jnp.asarray(lq, jnp.float32),
                                              divergence=n).sum())(jnp.asarray(lpi, jnp.float32))
        with jax.enable_x64():
            g64 = jax.grad(lambda x, n=name: fdpg(x, lP, lq, divergence=n).sum())(jnp.asarray(lpi))
        assert np.all(np.isfinite(g32)), name
        np.testing.assert_allclose(g32, g64, rtol=1e-4, err_msg=name)


def test_baseline_estimate_is_self_normalised_mean_pseudo_reward():
    with jax.enable_x64():
        r = np.random.default_rng(2)
        lpi, lP, lq = (np.log(r.dirichlet(np.ones(6))) for _ in range(3))
        w = np.exp(lpi - lq)
        rew = np.exp(lP - lpi)  # forward KL: r = p/π
        got = baseline_estimate(lpi, lP, lq, divergence="forward_kl")
        np.testing.assert_allclose(got, np.sum(w * rew) / np.sum(w), rtol=1e-12)


def test_running_log_z_matches_numpy_and_is_consistent():
    with jax.enable_x64():
        r = np.random.default_rng(3)
        lP = r.normal(size=10)
        lq = r.normal(size=10)
        ids = np.array([0, 2, 2, 0, 0, 2, 2, 2, 0, 0])
        one = logz_update(logz_init(4, jnp.float64), lP, lq, ids)
        two = logz_update(logz_update(logz_init(4, jnp.float64), lP[:3], lq[:3], ids[:3]), lP[3:], lq[3:], ids[3:])
        est = logz_estimate(one)
        for c in (0, 2):
            m = ids == c
            np.testing.assert_allclose(est[c], np.log(np.mean(np.exp(lP[m] - lq[m]))), rtol=1e-12)
        np.testing.assert_allclose(logz_estimate(two)[np.array([0, 2])], est[np.array([0, 2])], rtol=1e-12)
        assert np.isnan(est[1]) and np.isnan(est[3])  # no samples yet
        np.testing.assert_array_equal(one.count, [5, 0, 5, 0])
        jitted = jax.jit(logz_update)(logz_init(4, jnp.float64), lP, lq, ids)
        np.testing.assert_allclose(logz_estimate(jitted)[np.array([0, 2])], est[np.array([0, 2])], rtol=1e-12)
    with pytest.raises(ValueError, match="context_ids must lie in \\[0, 4\\)"):
        logz_update(logz_init(4), jnp.zeros(2), jnp.zeros(2), jnp.array([0, 4]))
    with pytest.raises(ValueError, match="num_contexts"):
        logz_init(0)


def test_running_log_z_converges_to_true_log_z(key):
    """Unbiased Ẑ: 20k samples from a categorical proposal estimate log Z to < 0.02."""
    r = np.random.default_rng(4)
    lP = jnp.asarray(np.log(r.dirichlet(np.ones(10))) + 2.5, jnp.float32)
    lq = jnp.asarray(np.log(r.dirichlet(np.ones(10) * 5)), jnp.float32)
    x = jax.random.categorical(key, lq, shape=(20000,))
    st = logz_update(logz_init(1), lP[x], lq[x])
    assert abs(float(logz_estimate(st)[0]) - 2.5) < 0.02

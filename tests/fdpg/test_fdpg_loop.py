"""The generic f-DPG loop and the toy: short runs checked by exact metrics; config and NaN errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import divergences as D
from jalign.fdpg import loop as L
from jalign.fdpg import toy as T


def _small_problem():
    log_a = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
    log_P = log_a + jnp.array([0.0, 2.0, 0.0, 2.0])  # unnormalised RLHF-style target, β = ½, b = [0,1,0,1]
    return log_a, log_P, log_P - jax.nn.logsumexp(log_P)


@pytest.mark.parametrize("proposal", ["on_policy", "off_policy"])
def test_short_sampled_run_approaches_target_and_estimates_log_z(proposal):
    log_a, log_P, log_p = _small_problem()
    sm = T.SoftmaxFamily(4)
    sample_fn, log_prob_fn = L.categorical_sampler(sm.log_probs)
    cfg = L.FDPGConfig(divergence="forward_kl", steps=300, batch_size=128, learning_rate=0.05, proposal=proposal,
                       eval_every=100)
    kl0 = float(D.divergence("forward_kl", log_a, log_p))
    params, hist = L.train(sm.init(log_a), sample_fn=sample_fn, log_prob_fn=log_prob_fn,
                           target_log_prob_fn=lambda x: log_P[x], config=cfg, key=jax.random.key(0),
                           eval_fn=lambda th: {"kl_p_pi": D.divergence("forward_kl", sm.log_probs(th), log_p)})
    assert hist["step"] == [0, 100, 200, 300]
    assert hist["kl_p_pi"][0] == pytest.approx(kl0, rel=1e-5)
    assert hist["kl_p_pi"][-1] < 0.1 * kl0
    assert abs(hist["log_z"][-1] - float(jax.nn.logsumexp(log_P))) < 0.05
    if proposal == "off_policy":
        assert 1 <= hist["replacements"][-1] <= 30  # checks every 10 steps


def test_loop_raises_on_nan_and_bad_config():
    log_a, log_P, _ = _small_problem()
    sm = T.SoftmaxFamily(4)
    sample_fn, log_prob_fn = L.categorical_sampler(sm.log_probs)
    cfg = L.FDPGConfig(divergence="js", steps=10, batch_size=8, eval_every=10)
    with pytest.raises(FloatingPointError, match="non-finite loss or parameters by step 10"):
        L.train(sm.init(log_a), sample_fn=sample_fn, log_prob_fn=log_prob_fn,
                target_log_prob_fn=lambda x: log_P[x] * jnp.nan, config=cfg, key=jax.random.key(0))
    with pytest.raises(ValueError, match="Valid divergences"):
        L.FDPGConfig(divergence="kl")
    with pytest.raises(ValueError, match="proposal='offline'"):
        L.FDPGConfig(proposal="offline")
    with pytest.raises(ValueError, match="multiple of eval_every"):
        L.FDPGConfig(steps=150, eval_every=100)
    with pytest.raises(ValueError, match="learning_rate=0"):
        L.FDPGConfig(learning_rate=0)


def test_bimodal_toy_and_gaussian_family():
    toy = T.bimodal_toy()
    p = np.exp(toy.log_p)
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(toy.log_P - toy.log_a), np.exp(toy.b / toy.beta), rtol=1e-12)
    assert p[5:11].sum() > p[26:32].sum() > 0.1  # two modes, unequal
    fam = T.GaussianFamily(toy.x)
    # π_0 = a exactly (the base is the same discretised Gaussian).
    np.testing.assert_allclose(np.exp(fam.log_probs(fam.init(12.0, 8.0))), np.exp(toy.log_a), atol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        T.bimodal_toy(beta=0.0)
    with pytest.raises(ValueError, match="mode block"):
        T.bimodal_toy(modes=((30, 50),))


def test_exact_descent_reverse_kl_seeks_a_mode_forward_kl_covers():
    """On the default toy (2-parameter unimodal family): RKL's optimum sits on the heavy mode, FKL's is wide."""
    toy = T.bimodal_toy()
    fam = T.GaussianFamily(toy.x)
    out = {}
    for name in ("forward_kl", "reverse_kl"):
        th, traj = L.train_exact(fam.init(12.0, 8.0), log_prob_all=fam.log_probs, log_p=toy.log_p, divergence=name,
                                 steps=1500, learning_rate=0.05, record_every=500)
        assert traj.shape == (3, 2)
        out[name] = (float(th[0]), float(jnp.exp(th[1])))
    assert 5 <= out["reverse_kl"][0] <= 11 and out["reverse_kl"][1] < 2.5
    assert out["forward_kl"][1] > 7

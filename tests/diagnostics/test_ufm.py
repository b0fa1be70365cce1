"""Unconstrained-features model: Theorem 4's derivative and Theorem 5's gaining tokens vs autodiff / steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jalign.diagnostics import ufm

BETA = 0.1


def _losses():
    out = {"dpo": ufm.margin_loss("dpo", ref_chosen=-1.0, ref_rejected=-2.0, beta=BETA)}
    # IPO (Azar et al. 2023) written here from its definition: (h − 1/(2β))², h the log-ratio margin.
    out["ipo"] = lambda lw, ll: ((lw + 1.0) - (ll + 2.0) - 1.0 / (2 * BETA)) ** 2
    return out


def _setup(seed, V=9, d=4):
    r = np.random.default_rng(seed)
    return jnp.asarray(r.normal(size=d)), jnp.asarray(r.normal(size=(V, d))), 2, 5


@pytest.mark.parametrize("loss_name", ["dpo", "ipo"])
def test_theorem4_and_all_token_derivatives_match_autodiff(loss_name):
    loss = _losses()[loss_name]
    with jax.enable_x64():
        for seed in range(3):
            h, W, pos, neg = _setup(seed)
            lp = ufm.ufm_logprobs(h, W)
            a, b = jax.grad(loss, argnums=(0, 1))(lp[pos], lp[neg])
            np.testing.assert_allclose(a + b, 0.0, atol=1e-12)  # a margin loss: a = ℓ', b = −ℓ'
            lprime = a
            # Autodiff: d/dt ln π_z = ⟨∇ ln π_z, −∇L⟩ for every z (one JVP along −∇L).
            L = lambda hw, pos=pos, neg=neg: loss(ufm.ufm_logprobs(*hw)[pos], ufm.ufm_logprobs(*hw)[neg])
            gh, gW = jax.grad(L)((h, W))
            _, rates = jax.jvp(lambda hw: ufm.ufm_logprobs(*hw), ((h, W),), ((-gh, -gW),))
            np.testing.assert_allclose(ufm.token_logprob_derivatives(h, W, pos, neg, a, b), rates, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(ufm.theorem4_derivative(h, W, pos, neg, lprime), rates[pos], rtol=1e-10)
            # The Gram matrix is the Gram of the flattened log-prob gradients.
            J = jax.jacrev(lambda hw: ufm.ufm_logprobs(*hw))((h, W))
            Jf = np.stack([ravel_pytree(jax.tree.map(lambda x, z=z: x[z], J))[0] for z in range(W.shape[0])])
            np.testing.assert_allclose(ufm.logprob_gradient_gram(h, W), Jf @ Jf.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_name", ["dpo", "ipo"])
def test_theorem5_gaining_tokens_match_measured_small_step(loss_name):
    loss = _losses()[loss_name]
    lr = 1e-6
    with jax.enable_x64():
        for seed in range(4):
            h, W, pos, neg = _setup(10 + seed, V=12, d=5)
            lp0 = ufm.ufm_logprobs(h, W)
            a, b = jax.grad(loss, argnums=(0, 1))(lp0[pos], lp0[neg])
            lprime = a
            sim = ufm.ufm_simulate(h, W, pos, neg, loss, lr=lr, steps=1)
            delta = np.asarray(sim["logprobs"][1] - sim["logprobs"][0])
            rates = np.asarray(ufm.token_logprob_derivatives(h, W, pos, neg, a, b))
            np.testing.assert_allclose(delta / lr, rates, rtol=1e-3, atol=1e-4 * np.abs(rates).max())
            others = np.array([z not in (pos, neg) for z in range(12)])
            gain = np.asarray(ufm.predicted_gaining_tokens(h, W, pos, neg, lprime))
            np.testing.assert_array_equal(gain, others & (delta > 0))
            # The measured changes of the other tokens are ordered by ⟨W_z, W+ − W−⟩.
            score = np.asarray(ufm.theorem5_scores(W, pos, neg))
            np.testing.assert_array_equal(np.argsort(delta[others]), np.argsort(score[others]))


def test_likelihood_displacement_when_preferred_and_dispreferred_embeddings_align():
    """W+ ≈ W− (similar tokens): Theorem 4 predicts ln π(y+) falls under DPO, and it does along the run."""
    with jax.enable_x64():
        r = np.random.default_rng(3)
        V, d = 8, 4
        W = r.normal(size=(V, d))
        W[1] = W[0] + 0.05 * r.normal(size=d)  # y− = 1 nearly parallel to y+ = 0
        W[0] *= 0.3
        W[1] *= 1.0
        W, h = jnp.asarray(W), jnp.asarray(0.1 * r.normal(size=d))
        loss = ufm.margin_loss("dpo", beta=1.0)
        lp = ufm.ufm_logprobs(h, W)
        lprime = jax.grad(loss)(lp[0], lp[1])  # ℓ' = ∂L/∂ln π+ for a margin loss
        rate = float(ufm.theorem4_derivative(h, W, 0, 1, lprime))
        sim = ufm.ufm_simulate(h, W, 0, 1, loss, lr=1e-3, steps=20)
        traj = np.asarray(sim["logprobs"][:, 0])
        assert rate < 0 and traj[-1] < traj[0]
        np.testing.assert_allclose(traj[1] - traj[0], 1e-3 * rate, rtol=1e-2)


def test_bad_arguments():
    h, W = jnp.zeros(3), jnp.zeros((5, 3))
    with pytest.raises(ValueError, match="differ"):
        ufm.theorem4_derivative(h, W, 1, 1, -1.0)
    with pytest.raises(ValueError, match="neg=7"):
        ufm.theorem4_derivative(h, W, 1, 7, -1.0)
    with pytest.raises(ValueError, match=r"h \[d\]"):
        ufm.token_logprob_derivatives(jnp.zeros(4), W, 0, 1, 1.0, -1.0)


def test_largest_drop_matches_brute_force(rng):
    from jalign.diagnostics import largest_drop

    for _ in range(20):
        p = rng.random(int(rng.integers(1, 12)))
        best = 0.0
        for s in range(len(p)):
            for t in range(s + 1, len(p)):
                best = max(best, p[s] - p[t])
        drop, s, t = largest_drop(p)
        assert np.isclose(float(drop), best)
        if best > 0:
            assert np.isclose(p[int(s)] - p[int(t)], best) and int(s) < int(t)
    drop, _, _ = largest_drop(np.array([0.96, 0.5, 0.8, 0.27, 0.9]))
    assert np.isclose(float(drop), 0.69)
    np.testing.assert_allclose(largest_drop(np.array([[0.1, 0.2], [0.5, 0.1]]))[0], [0.0, 0.4])


def test_mass_gainers_by_hand():
    """Hand-computed gains; y+ / y− excluded."""
    from jalign.diagnostics import mass_gainers

    before = jnp.log(jnp.array([0.5, 0.2, 0.1, 0.1, 0.1]))
    after = jnp.log(jnp.array([0.3, 0.1, 0.35, 0.05, 0.2]))
    tok, gain = mass_gainers(before, after, k=2, exclude=(0, 1))
    np.testing.assert_array_equal(tok, [2, 4])
    np.testing.assert_allclose(gain, [0.25, 0.1], rtol=1e-5)
    with pytest.raises(ValueError, match="k must be"):
        mass_gainers(before, after, k=9)

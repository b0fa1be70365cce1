"""The clipped policy-gradient step (jalign.train.rl) on the fixed batch of test_train_pg.py: two minibatches
with GSPO's sequence ratio and the dapo normaliser; PPO (critic, GAE, value loss) against numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pg_helpers import G, _np_token_logps, _run, make_setup

from jalign.train import rl
from jalign.train.plugins import tiny
from jalign.train.step import init_state


@pytest.fixture(scope="module")
def setup():
    return make_setup()


def test_minibatches_sequence_ratio_and_dapo_normaliser(setup):
    """num_minibatches = 2: update 1 on samples 0–3 at θ0 (w = 1), update 2 on samples 4–7 at θ1 with GSPO's
    sequence ratio against the sampling-time log-probs; ``dapo`` divides each by (tokens of the round)/2."""
    from flax import nnx

    g, _, state, batch = setup
    el, eh = 0.005, 0.01
    _, _, met = _run(setup, algorithm="grpo", num_minibatches=2, aggregation="dapo", importance_level="sequence",
                     eps_low=el, eps_high=eh, scale_rewards="none")
    m = np.asarray(batch["mask"])[:, 1:].astype(np.float64)
    r = np.asarray(batch["rewards"], np.float64).reshape(-1, G)
    adv = (r - r.mean(-1, keepdims=True)).reshape(-1)
    half = m.sum() / 2
    old, _ = _np_token_logps(g, state.params, state.model_state, batch)
    first = (-adv[:4, None] * m[:4]).sum() / half
    ids, attn = jnp.asarray(batch["ids"][:4]), jnp.asarray(batch["attention_mask"][:4])

    def exact(params):  # the first update's on-policy objective
        logits = nnx.merge(g, params, state.model_state)(ids, attention_mask=attn)[:, :-1]
        lpj = jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1)[..., 0]
        return jnp.sum(-jnp.asarray(adv[:4, None] * m[:4], jnp.float32) * lpj) / half

    theta1 = jax.tree.map(jnp.subtract, state.params, jax.grad(exact)(state.params))
    lp1, _ = _np_token_logps(g, theta1, state.model_state, batch)
    w = np.exp(((lp1 - old) * m).sum(-1) / m.sum(-1))[4:, None]
    a = adv[4:, None]
    second = (-np.minimum(w * a, np.clip(w, 1 - el, 1 + eh) * a) * m[4:]).sum() / half
    np.testing.assert_allclose(met["loss"], (first + second) / 2, rtol=1e-4, atol=1e-6)
    low = (((w < 1 - el) & (a < 0)) * m[4:]).sum() / m[4:].sum()
    high = (((w > 1 + eh) & (a > 0)) * m[4:]).sum() / m[4:].sum()
    np.testing.assert_allclose([met["clip_ratio/low"], met["clip_ratio/high"]], [low / 2, high / 2], atol=1e-6)


def test_ppo_step_matches_gae_transcription(setup):
    """ppo, one update: policy part −A (w = 1) with A = whitened GAE over the critic's sampling-time values of
    the token rewards −β·k1 + r·[last]; value part vf_coef·½·mean (V − R)² (V = V_old: no clipping)."""
    from flax import nnx

    _, tx, _, batch = setup
    model = rl.with_value_head(tiny.tiny_lm(0, d_model=8, d_hidden=16), seed=0)
    model.critic.head.kernel[...] = 0.01 * jax.random.normal(jax.random.key(5), model.critic.head.kernel.shape)
    g, state = init_state(model, tx, reference=True)
    state = state.replace(ref_params=jax.tree.map(lambda x: x + 0.2, state.ref_params))
    beta, gamma, lam, vf = 0.05, 0.9, 0.8, 0.5
    _, _, met = _run((g, tx, state, batch), algorithm="ppo", kl_coef=beta, gamma=gamma, lam=lam, vf_coef=vf,
                     aggregation="bnpo")
    lp, _ = _np_token_logps(g, state.params, state.model_state, batch)
    ref, _ = _np_token_logps(g, state.ref_params, state.model_state, batch)
    values = np.asarray(nnx.merge(g, state.params, state.model_state).values(
        jnp.asarray(batch["ids"]), jnp.asarray(batch["attention_mask"])), np.float64)[:, :-1]
    m = np.asarray(batch["mask"])[:, 1:].astype(np.float64)
    r = np.asarray(batch["rewards"], np.float64)
    adv, ret = np.zeros_like(m), np.zeros_like(m)
    for b in range(m.shape[0]):
        idx = list(np.nonzero(m[b])[0])
        rew = [-beta * (lp[b, t] - ref[b, t]) + (r[b] if t == idx[-1] else 0.0) for t in idx]
        v = [values[b, t] for t in idx] + [0.0]
        a = 0.0
        for k in reversed(range(len(idx))):  # A_t = δ_t + γλ·A_{t+1}, δ_t = r_t + γ·V_{t+1} − V_t
            a = rew[k] + gamma * v[k + 1] - v[k] + gamma * lam * a
            adv[b, idx[k]], ret[b, idx[k]] = a, a + v[k]
    mu = adv[m > 0].mean()
    white = (adv - mu) / np.sqrt(max(((adv[m > 0] - mu) ** 2).mean(), 1e-8)) * m
    value_loss = 0.5 * (((values - ret) ** 2) * m).sum() / m.sum()
    np.testing.assert_allclose(met["value_loss"], value_loss, rtol=1e-4)
    np.testing.assert_allclose(met["loss"], (-white * m).sum() / m.sum() + vf * value_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(met["returns/mean"], (ret * m).sum() / m.sum(), rtol=1e-4, atol=1e-6)
    assert met["value_clip_ratio"] == 0.0 and met["clip_ratio/region"] == 0.0

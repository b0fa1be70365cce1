"""The clipped policy-gradient step (jalign.train.rl) on a fixed batch of sampled completions: logged loss,
metrics and gradient against numpy transcriptions (TRL's GRPO, OpenRLHF's REINFORCE++) and autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pg_helpers import (
    NEW,
    G,
    P,
    _np_aggregate,
    _np_clipped,
    _np_grpo_adv,
    _np_k3,
    _np_token_logps,
    _run,
    make_setup,
)

from jalign.train import rl
from jalign.train.plugins import tiny


@pytest.fixture(scope="module")
def setup():
    return make_setup()


@pytest.mark.parametrize("aggregation", ["dr_grpo"])  # the other aggregations: tests/losses/test_rl_losses.py
def test_grpo_step_loss_metrics_and_gradient(setup, aggregation):
    g, _, state, batch = setup
    beta = 0.1
    o, new, met = _run(setup, algorithm="grpo", kl_coef=beta, aggregation=aggregation)
    lp, ent = _np_token_logps(g, state.params, state.model_state, batch)
    ref, _ = _np_token_logps(g, state.ref_params, state.model_state, batch)
    m = np.asarray(batch["mask"])[:, 1:].astype(np.float64)
    adv = _np_grpo_adv(batch["rewards"], G)
    # num_iterations = 1: w = 1, so the per-token loss is −A + β·k3 and nothing is clipped
    want = _np_aggregate(-adv[:, None] + beta * _np_k3(lp, ref), m, aggregation, NEW)
    np.testing.assert_allclose(met["loss"], want, rtol=1e-5, atol=1e-7)
    assert met["clip_ratio/low"] == met["clip_ratio/high"] == met["clip_ratio/region"] == 0.0
    np.testing.assert_allclose(met["entropy"], (ent * m).sum() / m.sum(), rtol=1e-5)
    np.testing.assert_allclose(met["kl"], (_np_k3(lp, ref) * m).sum() / m.sum(), rtol=1e-4)
    assert met["finite/loss"] == met["finite/grads"] == 1.0
    np.testing.assert_allclose(met["advantages/mean"], (adv[:, None] * m).sum() / m.sum(), rtol=1e-4, atol=1e-6)

    # gradient (SGD, lr 1: params − new params) = autodiff of the exact on-policy expression
    ids, attn = jnp.asarray(batch["ids"]), jnp.asarray(batch["attention_mask"])
    mj, aj, refj = jnp.asarray(m, jnp.float32), jnp.asarray(adv, jnp.float32), jnp.asarray(ref, jnp.float32)

    def exact(params):
        from flax import nnx

        logits = nnx.merge(g, params, state.model_state)(ids, attention_mask=attn)[:, :-1]
        lpj = jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1)[..., 0]
        d = refj - lpj
        per = -aj[:, None] * lpj + beta * (jnp.exp(d) - d - 1)  # ∇(w·A) = A·∇log π at w = 1
        if aggregation == "grpo":
            return jnp.mean((per * mj).sum(-1) / mj.sum(-1))
        return (per * mj).sum() / (m.shape[0] * NEW)

    grads = jax.grad(exact)(state.params)
    got = jax.tree.map(jnp.subtract, state.params, new.params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-6)


def test_rloo_two_iterations_reuse_old_logps_and_clip(setup):
    """RLOO advantages; num_iterations = 2: the second update's ratio is π_θ1/π_old with π_old fixed at
    sampling time; its loss and clip fractions equal the numpy transcription at the parameters after the
    first update (clip-higher: ε_low < ε_high)."""
    g, tx, state, batch = setup
    el, eh = 0.01, 0.02
    kw = dict(algorithm="rloo", eps_low=el, eps_high=eh, aggregation="bnpo")
    _, mid, met1 = _run(setup, num_iterations=1, **kw)
    _, new, met = _run(setup, num_iterations=2, **kw)
    old, _ = _np_token_logps(g, state.params, state.model_state, batch)
    lp1, _ = _np_token_logps(g, mid.params, state.model_state, batch)
    m = np.asarray(batch["mask"])[:, 1:].astype(np.float64)
    r = np.asarray(batch["rewards"], np.float64).reshape(-1, G)
    adv = np.broadcast_to((r - (r.sum(-1, keepdims=True) - r) / (G - 1)).reshape(-1)[:, None], m.shape)
    first = _np_aggregate(-adv, m, "bnpo", NEW)
    np.testing.assert_allclose(met1["loss"], first, rtol=1e-5, atol=1e-7)
    assert met1["clip_ratio/region"] == 0.0 and "kl" not in met1  # kl_coef = 0: no reference evaluated
    per, low, high = _np_clipped(lp1, old, adv, m, el, eh)
    second = _np_aggregate(per, m, "bnpo", NEW)
    np.testing.assert_allclose(met["loss"], (first + second) / 2, rtol=1e-4)
    np.testing.assert_allclose(met["clip_ratio/low"], low / 2, atol=1e-6)
    np.testing.assert_allclose(met["clip_ratio/high"], high / 2, atol=1e-6)
    assert low > 0 and high > 0  # the first update moved the policy past both clip edges


def test_reinforce_pp_baseline_step_matches_openrlhf_transcription(setup):
    g, _, state, batch = setup
    beta = 0.05
    o, new, met = _run(setup, algorithm="reinforce++_baseline", kl_coef=beta)
    assert o.kl_in == "reward"
    lp, _ = _np_token_logps(g, state.params, state.model_state, batch)
    ref, _ = _np_token_logps(g, state.ref_params, state.model_state, batch)
    m = np.asarray(batch["mask"])[:, 1:].astype(np.float64)
    r = np.asarray(batch["rewards"], np.float64).reshape(-1, G)
    r = (r - r.mean(-1, keepdims=True)).reshape(-1)
    tok = -beta * (lp - ref) * m  # k1 penalty on every completion token
    for b in range(m.shape[0]):
        tok[b, np.nonzero(m[b])[0][-1]] += r[b]  # the sequence reward on the last token
    ret = np.cumsum(tok[:, ::-1], -1)[:, ::-1] * m
    mu = ret[m > 0].mean()
    adv = (ret - mu) / np.sqrt(max(((ret[m > 0] - mu) ** 2).mean(), 1e-8)) * m
    want = _np_aggregate(-adv, m, "grpo", NEW)
    np.testing.assert_allclose(met["loss"], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([met["advantages/mean"], met["advantages/std"]], [0.0, 1.0], atol=1e-5)
    assert "kl" in met and met["clip_ratio/region"] == 0.0


def test_sample_metrics_and_non_finite_reward(setup):
    _, _, _, batch = setup
    met = rl.sample_metrics(batch, G, prompt_len=P, eos_id=tiny.ByteTokenizer.eos_id)
    lengths = np.asarray(batch["mask"])[:, P:].sum(-1)
    assert (met["completions/min_length"], met["completions/max_length"]) == (lengths.min(), lengths.max())
    np.testing.assert_allclose(met["reward/std"], np.std(batch["rewards"], ddof=1), rtol=1e-6)
    assert met["frac_reward_zero_std"] == 0.25  # the group (0.5, 0.5)
    bad = {k: batch[k] for k in ("ids", "mask", "attention_mask")}
    with pytest.raises(rl.UserError, match=r"reward 'lexicon' returned a non-finite reward inf for prompt 1, sample 1"):
        rl.pg_batch(bad, np.array([0, 0, 0, np.inf, 0, 0, 0, 0.0]), reward_name="lexicon", group_size=G)


def test_reward_clip_and_kl_in_the_reward_of_sequence_advantages():
    """online.reward_clip clips r before the advantage; with kl_penalty='reward' grpo/rloo subtract
    β·Σ_t kl_t (k2 here) from each sequence reward."""
    r = np.array([2.0, -0.2, 0.1, -3.0])
    m = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], np.float32)
    old = -np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    ref = old + 0.3
    o = rl.PGOptions(algorithm="rloo", group_size=2, reward_clip=0.5, kl_coef=0.2, kl_estimator="k2")
    adv, ret = rl.advantages(o, r, jnp.asarray(m), jnp.asarray(old), jnp.asarray(ref))
    rc = np.clip(r, -0.5, 0.5) - 0.2 * (0.5 * 0.3 ** 2) * m.sum(-1)
    want = np.array([rc[0] - rc[1], rc[1] - rc[0], rc[2] - rc[3], rc[3] - rc[2]])
    np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-6)
    assert ret is None

"""The clipped policy-gradient step (jalign.train.rl) on a fixed batch of sampled completions: logged loss,
metrics and gradient against numpy transcriptions (TRL's GRPO, OpenRLHF's REINFORCE++) and autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _train_helpers import np_logsumexp

from jalign.train import online, rl
from jalign.train.plugins import tiny
from jalign.train.step import init_state, split_model

G, P, NEW = 2, 16, 4


@pytest.fixture(scope="module")
def setup():
    """A tiny model, a reference 0.3 away from it, and a fixed batch of 4 prompts × G sampled completions."""
    model = tiny.tiny_lm(0, d_model=8, d_hidden=16)
    ex = tiny.synthetic_prompt_examples(4, P, seed=1)
    p_ids = np.repeat(np.stack([e["prompt_ids"] for e in ex]), G, 0)
    p_mask = np.repeat(np.stack([e["prompt_attention_mask"] for e in ex]), G, 0)
    g, params, rest = split_model(model)
    s = online.make_sampler(g, max_new_tokens=NEW)(params, rest, jnp.asarray(p_ids), jnp.asarray(p_mask),
                                                   jax.random.key(3))
    rewards = np.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.9, -1.0, 0.3], np.float32)  # one zero-std group
    batch = rl.pg_batch(s, rewards, group_size=G)
    tx = optax.sgd(1.0)  # lr 1: the update is minus the gradient
    _, state = init_state(model, tx, reference=True)
    noise = jax.tree.map(lambda x: 0.3 * jax.random.normal(jax.random.key(7), x.shape), state.ref_params)
    state = state.replace(ref_params=jax.tree.map(jnp.add, state.ref_params, noise))
    return g, tx, state, batch


def _np_token_logps(g, params, model_state, batch):
    """log π(token t+1) and the entropy at t, float64 numpy from the model's logits."""
    from flax import nnx

    logits = np.asarray(nnx.merge(g, params, model_state)(jnp.asarray(batch["ids"]),
                                                          attention_mask=jnp.asarray(batch["attention_mask"])),
                        np.float64)[:, :-1]
    lp_all = logits - np_logsumexp(logits)[..., None]
    ids = np.asarray(batch["ids"])[:, 1:]
    lp = np.take_along_axis(lp_all, ids[..., None], -1)[..., 0]
    ent = -(np.exp(lp_all) * lp_all).sum(-1)
    return lp, ent


def _np_grpo_adv(r, g):
    r = np.asarray(r, np.float64).reshape(-1, g)
    return ((r - r.mean(-1, keepdims=True)) / (r.std(-1, ddof=1, keepdims=True) + 1e-4)).reshape(-1)


def _np_aggregate(per_token, m, aggregation, max_len):
    if aggregation == "grpo":
        return np.mean((per_token * m).sum(-1) / np.maximum(m.sum(-1), 1))
    if aggregation == "dr_grpo":
        return (per_token * m).sum() / (m.shape[0] * max_len)
    return (per_token * m).sum() / m.sum()


def _np_k3(lp, ref):
    d = ref - lp
    return np.exp(d) - d - 1


def _np_clipped(lp, old, adv_tok, m, eps_low, eps_high):
    w = np.exp(lp - old)
    per = -np.minimum(w * adv_tok, np.clip(w, 1 - eps_low, 1 + eps_high) * adv_tok)
    low = ((w < 1 - eps_low) & (adv_tok < 0)) * m
    high = ((w > 1 + eps_high) & (adv_tok > 0)) * m
    return per, low.sum() / m.sum(), high.sum() / m.sum()


def _run(setup, **kw):
    g, tx, state, batch = setup
    o = rl.PGOptions(group_size=G, max_completion_length=NEW, **kw)
    new, metrics = jax.jit(rl.make_pg_step(g, tx, o))(state, {k: jnp.asarray(v) for k, v in batch.items()})
    return o, new, {k: float(v) for k, v in metrics.items()}


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

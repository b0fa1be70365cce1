"""jalign.losses.rl (policy_clip, group_advantages, gae, reward_model_loss) and divergences.kl_estimate:
values against plain-Python/numpy transcriptions written here, exact expectations on a small categorical,
gradients against finite differences of the transcription, padding and jit invariances, input validation."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import divergences, losses

AGGS = ("grpo", "bnpo", "dr_grpo", "dapo")
LEVELS = ("token", "sequence")


# ----------------------------------------------------------------------------------------------------------
# Independent transcriptions (float64, loops over b and t)


def np_policy_clip(lp, old, adv, mask, *, eps_low, eps_high, aggregation, level, ref=None, kl_coef=0.0,
                   max_len=None):
    B, T = lp.shape
    loss = np.zeros((B, T))
    for b in range(B):
        n = sum(1 for t in range(T) if mask[b, t])
        seq_lr = sum(lp[b, t] - old[b, t] for t in range(T) if mask[b, t]) / max(n, 1)
        for t in range(T):
            if not mask[b, t]:
                continue
            lr = seq_lr if level == "sequence" else lp[b, t] - old[b, t]
            w = math.exp(lr)
            a = adv[b] if adv.ndim == 1 else adv[b, t]
            w_clip = min(max(w, 1.0 - eps_low), 1.0 + eps_high)
            value = -min(w * a, w_clip * a)
            if kl_coef:
                d = ref[b, t] - lp[b, t]
                value += kl_coef * (math.exp(d) - d - 1.0)
            loss[b, t] = value
    total = sum(loss[b, t] for b in range(B) for t in range(T))
    n_all = sum(1 for b in range(B) for t in range(T) if mask[b, t])
    if aggregation == "grpo":
        per_seq = [sum(loss[b]) / max(sum(1 for t in range(T) if mask[b, t]), 1) for b in range(B)]
        return sum(per_seq) / B
    if aggregation == "dr_grpo":
        return total / (B * (T if max_len is None else max_len))
    return total / max(n_all, 1)  # bnpo; dapo on one process, one micro-batch


def np_group_advantages(r, g, scale, eps=1e-4):
    r = np.asarray(r, np.float64)
    out = np.zeros_like(r)
    batch_std = np.std(r, ddof=1) if len(r) > 1 else np.nan
    for start in range(0, len(r), g):
        grp = r[start:start + g]
        for i in range(g):
            a = grp[i] - grp.mean()
            if scale == "group":
                a /= np.std(grp, ddof=1) + eps
            elif scale == "batch":
                a /= batch_std + eps
            out[start + i] = a
    return out


def np_gae(rewards, values, mask, gamma, lam):
    """A_t = Σ_l (γλ)^l δ_{t+l} over each completion (its mask is right-padded), V after the end = 0."""
    B, T = rewards.shape
    adv = np.zeros((B, T))
    for b in range(B):
        n = int(mask[b].sum())
        v = [values[b, t] for t in range(n)] + [0.0]
        delta = [rewards[b, t] + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** k * delta[t + k] for k in range(n - t))
    ret = np.where(mask > 0, adv + np.where(mask > 0, values, 0.0), 0.0)
    return adv, ret


# ----------------------------------------------------------------------------------------------------------
# Data


def _ragged_mask(B, T, rng):
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0], lengths[-1] = T, 0  # a full completion and an empty one
    return (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)


def _policy_data(rng, B=5, T=7, spread=0.3, garbage=True):
    mask = _ragged_mask(B, T, rng)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    old = lp + rng.normal(0.0, spread, size=(B, T))  # ratios on both sides of both clip boundaries
    ref = lp + rng.normal(0.0, 0.5, size=(B, T))
    adv_b = rng.normal(size=B)
    adv_bt = rng.normal(size=(B, T))
    if garbage:  # padding may hold anything
        for x in (lp, old, ref, adv_bt):
            x[mask == 0] = np.nan
    return lp, old, ref, adv_b, adv_bt, mask


# ----------------------------------------------------------------------------------------------------------
# policy_clip


@pytest.mark.parametrize("aggregation,level", list(itertools.product(AGGS, LEVELS)))
def test_policy_clip_matches_numpy_transcription(rng, aggregation, level):
    lp, old, ref, adv_b, adv_bt, mask = _policy_data(rng)
    w = np.exp((lp - old)[mask > 0])
    assert (w < 0.8).any() and (w > 1.28).any()  # both clip boundaries are active somewhere
    for adv, kl_coef, max_len in [(adv_b, 0.0, None), (adv_b, 0.05, None), (adv_bt, 0.05, 12),
                                  (adv_bt, 0.0, None)]:
        kw = dict(eps_low=0.2, eps_high=0.28, aggregation=aggregation, importance_level=level,
                  ref_logps=ref if kl_coef else None, kl_coef=kl_coef, max_completion_length=max_len)
        got = losses.policy_clip(lp.astype(np.float32), old.astype(np.float32), adv.astype(np.float32),
                                 mask, **kw)
        want = np_policy_clip(lp, old, adv, mask, eps_low=0.2, eps_high=0.28, aggregation=aggregation,
                              level=level, ref=ref, kl_coef=kl_coef, max_len=max_len)
        assert np.isfinite(float(got))
        np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-6)


def test_policy_clip_aggregations_differ_as_documented(rng):
    """Equal-length completions: grpo = bnpo = dapo; dr_grpo = bnpo·(tokens)/(B·L)."""
    lp, old, _, adv, _, _ = _policy_data(rng, garbage=False)
    mask = np.ones_like(lp, dtype=np.float32)
    mask[:, -2:] = 0  # every completion has T − 2 tokens
    vals = {a: float(losses.policy_clip(lp, old, adv, mask, aggregation=a)) for a in AGGS}
    np.testing.assert_allclose(vals["grpo"], vals["bnpo"], rtol=1e-6)
    np.testing.assert_allclose(vals["dapo"], vals["bnpo"], rtol=1e-6)
    B, T = lp.shape
    np.testing.assert_allclose(vals["dr_grpo"], vals["bnpo"] * (T - 2) / T, rtol=1e-6)


def test_policy_clip_on_policy_gradient_closed_form(rng):
    """old = sg(logps): w = 1, so ∂loss/∂logp_bt = −A_b·m_bt/(B·n_b) for grpo (token and sequence level)."""
    lp, _, _, adv, _, mask = _policy_data(rng, garbage=False)
    B = lp.shape[0]
    n = mask.sum(-1)
    want = -(adv / np.maximum(n, 1))[:, None] * mask / B
    for level in LEVELS:
        f = lambda x, level=level: losses.policy_clip(x, jax.lax.stop_gradient(x), adv, mask,  # noqa: E731
                                                      importance_level=level)
        g = jax.jit(jax.grad(f))(jnp.asarray(lp, jnp.float32))
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("aggregation,level", list(itertools.product(AGGS, LEVELS)))
def test_policy_clip_gradient_matches_finite_differences_of_transcription(rng, aggregation, level):
    lp, _, ref, adv_b, adv_bt, mask = _policy_data(rng, B=4, T=5, garbage=False)
    eps_low, eps_high, kl_coef = 0.2, 0.28, 0.1
    # Log-ratios away from the clip boundaries log 0.8 ≈ −0.22 and log 1.28 ≈ 0.25 (the objective has kinks
    # there), inside and outside the clip range: per token for "token", per sequence mean for "sequence".
    safe = np.array([-0.6, -0.4, -0.1, 0.0, 0.15, 0.4, 0.7])
    lr = rng.choice(safe, size=lp.shape)
    if level == "sequence":
        noise = rng.normal(0, 0.3, size=lp.shape) * mask
        noise -= (noise.sum(-1) / np.maximum(mask.sum(-1), 1))[:, None] * mask
        lr = rng.choice(safe, size=(lp.shape[0], 1)) + noise
    old = lp - lr
    for adv in (adv_b, adv_bt):
        kw = dict(eps_low=eps_low, eps_high=eps_high, aggregation=aggregation, importance_level=level,
                  ref_logps=ref, kl_coef=kl_coef)
        with jax.enable_x64():
            f = lambda x, adv=adv, kw=kw: losses.policy_clip(x, old, adv, mask, **kw)  # noqa: E731
            got = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(lp)))
        h = 1e-6
        fd = np.zeros_like(lp)
        for b, t in itertools.product(*map(range, lp.shape)):
            e = np.zeros_like(lp)
            e[b, t] = h
            f = [np_policy_clip(lp + s * e, old, adv, mask, eps_low=eps_low, eps_high=eps_high,
                                aggregation=aggregation, level=level, ref=ref, kl_coef=kl_coef) for s in (1, -1)]
            fd[b, t] = (f[0] - f[1]) / (2 * h)
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
        assert np.all(got[mask == 0] == 0)


def test_policy_clip_padding_invariance_and_garbage(rng):
    """Extra padded columns holding NaN change nothing (dr_grpo with a fixed max_completion_length)."""
    lp, old, ref, adv, adv_bt, mask = _policy_data(rng)
    pad = lambda x, v: np.concatenate([x, np.full((x.shape[0], 3), v, x.dtype)], axis=1)  # noqa: E731
    for agg, level in itertools.product(AGGS, LEVELS):
        kw = dict(aggregation=agg, importance_level=level, kl_coef=0.07, max_completion_length=10)
        a = losses.policy_clip(lp, old, adv, mask, ref_logps=ref, **kw)
        b = losses.policy_clip(pad(lp, np.nan), pad(old, np.inf), adv, pad(mask, 0), ref_logps=pad(ref, np.nan),
                               **kw)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    # ... and the gradient stays finite (garbage never reaches the backward pass either).
    for agg, level in [("grpo", "token"), ("dr_grpo", "sequence")]:
        kw = dict(aggregation=agg, importance_level=level, kl_coef=0.07)
        f = lambda x, kw=kw: losses.policy_clip(x, pad(old, np.inf), pad(adv_bt, np.nan), pad(mask, 0),  # noqa: E731
                                                ref_logps=pad(ref, np.nan), **kw)
        g = jax.jit(jax.grad(f))(jnp.asarray(pad(lp, np.nan)))
        assert np.isfinite(np.asarray(g)).all()
        assert np.all(np.asarray(g)[pad(mask, 0) == 0] == 0)


def test_policy_clip_jit_equals_eager(rng):
    lp, old, ref, adv, _, mask = _policy_data(rng)
    for agg, level in itertools.product(AGGS, LEVELS):
        kw = dict(aggregation=agg, importance_level=level, eps_low=0.1, eps_high=0.3)
        eager = losses.policy_clip(lp, old, adv, mask, ref_logps=ref, kl_coef=0.04, **kw)
        jitted = jax.jit(lambda *a, kw=kw: losses.policy_clip(*a[:4], ref_logps=a[4], kl_coef=a[5], **kw))(
            lp, old, adv, mask, ref, 0.04)
        np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)


def test_policy_clip_vmaps_over_kl_coef(rng):
    lp, old, ref, adv, _, mask = _policy_data(rng)
    coefs = jnp.array([0.01, 0.1, 1.0])
    got = jax.jit(jax.vmap(lambda c: losses.policy_clip(lp, old, adv, mask, ref_logps=ref, kl_coef=c)))(coefs)
    want = [losses.policy_clip(lp, old, adv, mask, ref_logps=ref, kl_coef=float(c)) for c in coefs]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# group_advantages


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("group_size", [2, 4])
def test_group_advantages_match_numpy(rng, scale, group_size):
    r = rng.normal(size=12)
    r[:group_size] = 0.5  # a group with zero variance: the advantages are 0, not NaN
    got = losses.group_advantages(r.astype(np.float32), group_size, scale=scale)
    np.testing.assert_allclose(np.asarray(got), np_group_advantages(r, group_size, scale), rtol=2e-5, atol=1e-5)
    assert np.all(np.asarray(got)[:group_size] == 0)
    jitted = jax.jit(losses.group_advantages, static_argnames=("group_size", "scale"))(
        r.astype(np.float32), group_size=group_size, scale=scale)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(got), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("G", [2, 3, 5])
def test_unscaled_group_advantages_are_scaled_rloo(rng, G):
    """(r_i − mean_group) = ((G − 1)/G)·(r_i − mean_{j≠i} r_j)."""
    r = rng.normal(size=4 * G)
    got = np.asarray(losses.group_advantages(r, G, scale="none"))
    for start in range(0, len(r), G):
        for i in range(G):
            others = [r[start + j] for j in range(G) if j != i]
            rloo = r[start + i] - sum(others) / (G - 1)
            np.testing.assert_allclose(got[start + i], (G - 1) / G * rloo, rtol=1e-5, atol=1e-6)


def test_group_advantages_errors():
    r = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"group_size=3 does not divide the batch size B=8"):
        losses.group_advantages(r, 3)
    with pytest.raises(ValueError, match="scale='std'"):
        losses.group_advantages(r, 2, scale="std")
    with pytest.raises(ValueError, match="group_size=0"):
        losses.group_advantages(r, 0)
    with pytest.raises(ValueError, match="group_size=1 with scale='group'"):
        losses.group_advantages(r, 1)
    with pytest.raises(ValueError, match="eps=-0.1"):
        losses.group_advantages(r, 2, eps=-0.1)
    with pytest.raises(ValueError, match="'rewards' must have shape"):
        losses.group_advantages(r.reshape(2, 4), 2)
    for bad in (np.nan, np.inf):
        rb = r.copy()
        rb[5] = bad
        with pytest.raises(ValueError, match=r"'rewards' is not finite at index \(5,\)"):
            losses.group_advantages(rb, 2)
    np.testing.assert_array_equal(losses.group_advantages(r, 1, scale="none"), 0)


# ----------------------------------------------------------------------------------------------------------
# gae


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (0.0, 1.0)])
def test_gae_matches_sum_of_discounted_deltas(rng, gamma, lam):
    B, T = 6, 8
    mask = _ragged_mask(B, T, rng)
    rewards, values = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    want_adv, want_ret = np_gae(rewards, values, mask, gamma, lam)
    rewards[mask == 0] = np.nan  # padding may hold anything
    values[mask == 0] = np.inf
    adv, ret = losses.gae(rewards.astype(np.float32), values.astype(np.float32), mask, gamma=gamma, lam=lam)
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)
    jadv, jret = jax.jit(lambda r, v, m: losses.gae(r, v, m, gamma=gamma, lam=lam))(
        rewards.astype(np.float32), values.astype(np.float32), mask)
    np.testing.assert_allclose(np.asarray(jadv), np.asarray(adv), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jret), np.asarray(ret), rtol=1e-6, atol=1e-6)


def test_gae_closed_forms_and_padding_invariance(rng):
    B, T = 4, 6
    mask = _ragged_mask(B, T, rng)
    r, v = rng.normal(size=(B, T)), rng.normal(size=(B, T))
    # γ = λ = 1: returns are the rewards-to-go over the completion (the values cancel).
    _, ret = losses.gae(r, v, mask, gamma=1.0, lam=1.0)
    rtg = np.flip(np.cumsum(np.flip(np.where(mask > 0, r, 0.0), -1), -1), -1) * mask
    np.testing.assert_allclose(np.asarray(ret), rtg, rtol=1e-5, atol=1e-5)
    # λ = 0: A is the one-step TD error.
    adv, _ = losses.gae(r, v, mask, gamma=0.9, lam=0.0)
    v_next = np.concatenate([v[:, 1:] * mask[:, 1:], np.zeros((B, 1))], -1)
    np.testing.assert_allclose(np.asarray(adv), (r + 0.9 * v_next - v) * mask, rtol=1e-5, atol=1e-5)
    # Padding columns on the right change nothing on the completion.
    padded = [np.concatenate([x, np.full((B, 3), fill)], -1) for x, fill in ((r, 5.0), (v, -7.0), (mask, 0.0))]
    a1, r1 = losses.gae(r, v, mask, gamma=0.95, lam=0.9)
    a2, r2 = losses.gae(*padded, gamma=0.95, lam=0.9)
    np.testing.assert_allclose(np.asarray(a2)[:, :T], np.asarray(a1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r2)[:, :T], np.asarray(r1), rtol=1e-6)
    assert np.all(np.asarray(a2)[:, T:] == 0) and np.all(np.asarray(r2)[:, T:] == 0)


def test_gae_errors():
    z = np.zeros((2, 3), np.float32)
    m = np.ones((2, 3), np.float32)
    for name, kw in [("gamma", dict(gamma=1.5, lam=0.9)), ("lam", dict(gamma=0.9, lam=-0.1)),
                     ("gamma", dict(gamma=np.nan, lam=0.9))]:
        with pytest.raises(ValueError, match=rf"hyperparameter {name}="):
            losses.gae(z, z, m, **kw)
    with pytest.raises(ValueError, match="'values' must have shape"):
        losses.gae(z, z[:, :2], m, gamma=1.0, lam=1.0)
    r = z.copy()
    r[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"'rewards' is not finite at index \(1, 2\)"):
        losses.gae(r, z, m, gamma=1.0, lam=1.0)
    m2 = m.copy()
    m2[1, 2] = 0
    losses.gae(r, z, m2, gamma=1.0, lam=1.0)  # NaN at a padded position is fine
    with pytest.raises(ValueError, match="'mask' is not 0/1"):
        losses.gae(z, z, m * 0.5, gamma=1.0, lam=1.0)


# ----------------------------------------------------------------------------------------------------------
# reward_model_loss


def test_reward_model_loss_closed_form(rng):
    rc, rr, margin = rng.normal(size=9), rng.normal(size=9), rng.uniform(0, 2, size=9)
    z = rc - rr - margin
    want = np.logaddexp(0.0, -z) + 0.01 * (rc + rr) ** 2
    got = losses.reward_model_loss(rc, rr, margin=margin, center_coef=0.01)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(losses.reward_model_loss(rc, rr, margin=0.5)),
                               np.logaddexp(0.0, -(rc - rr - 0.5)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(losses.reward_model_loss(rc, rr)), np.logaddexp(0.0, -(rc - rr)),
                               rtol=1e-5)
    # gradient: ∂ℓ/∂r_c = −σ(−z) + 2c(r_c + r_r)
    g = jax.jit(jax.grad(lambda x: losses.reward_model_loss(x, rr, margin=margin, center_coef=0.01).sum()))(rc)
    np.testing.assert_allclose(np.asarray(g), -1 / (1 + np.exp(z)) + 0.02 * (rc + rr), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_reward_model_loss_stable_at_huge_margins(dtype):
    rc = jnp.array([0.5, 0.5], dtype)
    rr = jnp.array([-0.5, -0.5], dtype)
    margin = jnp.array([1e4, -1e4], dtype)
    loss, grad = jax.jit(jax.value_and_grad(lambda x: losses.reward_model_loss(x, rr, margin=margin).sum()))(rc)
    per = np.asarray(losses.reward_model_loss(rc, rr, margin=margin), np.float64)
    assert np.isfinite(per).all() and np.isfinite(np.asarray(grad, np.float64)).all()
    z = 1.0 - np.asarray(margin, np.float64)
    np.testing.assert_allclose(per, [-z[0], 0.0], rtol=1e-2, atol=1e-30)  # ≈ 1e4 − 1 and ≈ e^{−1e4} = 0
    np.testing.assert_allclose(np.asarray(grad, np.float64), [-1.0, 0.0], atol=1e-6)
    assert float(loss) > 0


def test_reward_model_loss_errors():
    z = np.zeros(3)
    with pytest.raises(ValueError, match="center_coef=-1"):
        losses.reward_model_loss(z, z, center_coef=-1.0)
    with pytest.raises(ValueError, match="'rejected_rewards' must have shape"):
        losses.reward_model_loss(z, z[:2])
    with pytest.raises(ValueError, match="'margin' must be a scalar or have shape"):
        losses.reward_model_loss(z, z, margin=z[:2])
    with pytest.raises(ValueError, match="'chosen_rewards' is not finite"):
        losses.reward_model_loss(np.array([0.0, np.nan, 1.0]), z)
    with pytest.raises(ValueError, match="'margin' is not finite"):
        losses.reward_model_loss(z, z, margin=np.inf)


# ----------------------------------------------------------------------------------------------------------
# kl_estimate


def test_kl_estimate_closed_forms(rng):
    lp, ref = rng.normal(-2, 1, size=20), rng.normal(-2, 1, size=20)
    l = ref - lp  # noqa: E741
    want = {"k1": -l, "k2": 0.5 * l ** 2, "k3": np.exp(l) - 1 - l}
    for kind, w in want.items():
        got = np.asarray(divergences.kl_estimate(lp.astype(np.float32), ref.astype(np.float32), kind))
        np.testing.assert_allclose(got, w, rtol=2e-5, atol=1e-6)
    for kind in ("k2", "k3"):
        assert (np.asarray(divergences.kl_estimate(lp, ref, kind)) >= 0).all()
    # k3 keeps its relative accuracy for tiny log-ratios (expm1, no 1 + l − 1 cancellation): ≈ l²/2.
    tiny = np.float32(1e-4)
    np.testing.assert_allclose(float(divergences.kl_estimate(0.0, tiny, "k3")), 0.5e-8 + tiny ** 3 / 6, rtol=1e-2)
    with pytest.raises(ValueError, match="kind='k4'"):
        divergences.kl_estimate(lp, ref, "k4")


def test_kl_estimate_expectations_on_a_categorical(rng):
    """E_π[k1] = E_π[k3] = KL(π‖π_ref) exactly; as loss terms through log π (samples fixed) their expected
    gradients are 0 (k1), ∇KL(π‖π_ref) (k2) and ∇KL(π_ref‖π) (k3)."""
    theta_np, ref_np = rng.normal(size=5), np.log(rng.dirichlet(np.ones(5)))
    with jax.enable_x64():
        theta, ref = jnp.asarray(theta_np), jnp.asarray(ref_np)
        lp = jax.nn.log_softmax(theta)
        pi = np.exp(np.asarray(lp))
        kl = float(np.sum(pi * (np.asarray(lp) - np.asarray(ref))))
        for kind in ("k1", "k3"):
            e = float(np.sum(pi * np.asarray(divergences.kl_estimate(lp, ref, kind))))
            np.testing.assert_allclose(e, kl, rtol=1e-12)
        e2 = float(np.sum(pi * np.asarray(divergences.kl_estimate(lp, ref, "k2"))))
        assert abs(e2 - kl) > 1e-3  # k2 is biased

        def expected_surrogate(th, kind):
            lpt = jax.nn.log_softmax(th)
            return jnp.sum(jax.lax.stop_gradient(jnp.exp(lpt)) * divergences.kl_estimate(lpt, ref, kind))

        def kl_fwd(th):  # KL(π‖π_ref)
            lpt = jax.nn.log_softmax(th)
            return jnp.sum(jnp.exp(lpt) * (lpt - ref))

        def kl_rev(th):  # KL(π_ref‖π)
            return jnp.sum(jnp.exp(ref) * (ref - jax.nn.log_softmax(th)))

        grads = jax.jit(lambda th: ([jax.grad(expected_surrogate)(th, k) for k in ("k1", "k2", "k3")],
                                    jax.grad(kl_fwd)(th), jax.grad(kl_rev)(th)))
        (g1, g2, g3), g_fwd, g_rev = grads(theta)
        np.testing.assert_allclose(np.asarray(g1), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(g2), np.asarray(g_fwd), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(g3), np.asarray(g_rev), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# policy_clip validation


def test_policy_clip_errors(rng):
    lp, old, ref, adv, adv_bt, mask = _policy_data(rng, garbage=False)
    call = lambda **kw: losses.policy_clip(lp, old, adv, mask, **kw)  # noqa: E731
    for name, value in [("eps_low", 0.0), ("eps_low", 1.0), ("eps_low", -0.1), ("eps_low", np.nan),
                        ("eps_high", 0.0), ("eps_high", -1.0), ("kl_coef", -0.5),
                        ("max_completion_length", 0), ("max_completion_length", 2.5)]:
        with pytest.raises(ValueError, match=rf"hyperparameter {name}="):
            call(**{name: value})
    call(eps_high=1.5)  # TRL-style large upper clip ranges are allowed
    with pytest.raises(ValueError, match="aggregation='sum'"):
        call(aggregation="sum")
    with pytest.raises(ValueError, match="importance_level='seq'"):
        call(importance_level="seq")
    with pytest.raises(ValueError, match="'ref_logps' is required when kl_coef=0.1"):
        call(kl_coef=0.1)
    with pytest.raises(ValueError, match="'old_logps' must have shape"):
        losses.policy_clip(lp, old[:, :3], adv, mask)
    with pytest.raises(ValueError, match="'advantages' must have shape"):
        losses.policy_clip(lp, old, adv[:2], mask)
    with pytest.raises(ValueError, match="'logps' must have shape"):
        losses.policy_clip(lp[0], old[0], adv, mask[0])
    with pytest.raises(ValueError, match="'mask' is not 0/1"):
        losses.policy_clip(lp, old, adv, mask * 2)
    bad = lp.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"'logps' is not finite at index \(0, 0\)"):
        losses.policy_clip(bad, old, adv, mask)
    bad_adv = adv.copy()
    bad_adv[0] = np.inf
    with pytest.raises(ValueError, match=r"'advantages' is not finite at index \(0,\)"):
        losses.policy_clip(lp, old, bad_adv, mask)
    # Under jit values are abstract: no value checks, the function traces and runs.
    assert np.isnan(float(jax.jit(lambda x: losses.policy_clip(x, old, adv, mask))(bad)))

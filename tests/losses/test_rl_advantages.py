"""jalign.losses.rl advantage estimators of the trainer: leave_one_out_advantages, masked_whiten,
reinforce_pp_advantages — against loop transcriptions (float64) written here, with padding garbage ignored."""

from __future__ import annotations

import numpy as np
import pytest

from jalign import losses


def test_leave_one_out_is_loop_formula_and_scaled_group_advantage():
    rng = np.random.default_rng(0)
    r = rng.normal(size=12)
    for g in (2, 3, 4):
        want = [r[i] - np.mean([r[j] for j in range((i // g) * g, (i // g + 1) * g) if j != i]) for i in range(12)]
        got = np.asarray(losses.leave_one_out_advantages(r, g))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got * (g - 1) / g, losses.group_advantages(r, g, scale="none"), rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(ValueError, match="group_size=1 must be an integer >= 2"):
        losses.leave_one_out_advantages(r, 1)
    with pytest.raises(ValueError, match="group_size=5 does not divide the batch size B=12"):
        losses.leave_one_out_advantages(r, 5)


def _loop_reinforce_pp(r, mask, kl, beta, g):
    r = np.array(r, np.float64)
    if g:
        for s in range(0, len(r), g):
            r[s:s + g] -= r[s:s + g].mean()
    b, t = mask.shape
    ret = np.zeros((b, t))
    for i in range(b):
        idx = [j for j in range(t) if mask[i, j]]
        for j in idx:  # G_j = Σ_{s ≥ j} (−β kl_s) + r (the last token carries the reward)
            ret[i, j] = sum(-beta * kl[i, s] for s in idx if s >= j) + r[i]
    vals = [ret[i, j] for i in range(b) for j in range(t) if mask[i, j]]
    mu, var = np.mean(vals), np.var(vals)
    return np.where(mask > 0, (ret - mu) / np.sqrt(max(var, 1e-8)), 0.0)


@pytest.mark.parametrize("g", [None, 2])
def test_reinforce_pp_matches_loop(g):
    rng = np.random.default_rng(1)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    r, kl = rng.normal(size=4), rng.normal(size=(4, 4))
    kl_garbage = np.where(mask > 0, kl, np.nan)  # padding may hold anything
    got = losses.reinforce_pp_advantages(r, mask, token_kl=kl_garbage, kl_coef=0.3, group_size=g)
    np.testing.assert_allclose(np.asarray(got), _loop_reinforce_pp(r, mask, kl, 0.3, g), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'token_kl' is required when kl_coef=0.3"):
        losses.reinforce_pp_advantages(r, mask, kl_coef=0.3)


def test_masked_whiten_zero_mean_unit_variance_on_mask():
    x = np.random.default_rng(2).normal(size=(3, 5)) * 4 + 7
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    w = np.asarray(losses.masked_whiten(x, mask))
    v = w[mask > 0]
    np.testing.assert_allclose([v.mean(), v.var()], [0.0, 1.0], atol=1e-5)
    assert (w[mask == 0] == 0).all()

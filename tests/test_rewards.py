"""jalign.rewards: the log-sigmoid transform, combinations (sum, AND, min) and per-prompt reference quantiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import rewards


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def test_log_sigmoid_transform_matches_numpy_and_broadcasts(rng):
    r = rng.normal(size=(4, 6)) * 3
    ref = rng.normal(size=(4, 1))
    got = rewards.log_sigmoid_transform(r, ref)
    assert got.shape == (4, 6) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_log_sigmoid(r - ref), rtol=1e-6, atol=1e-6)
    # the probability of beating the reference: exp(u) = σ(r − r_ref); u ≈ r − r_ref far below it
    np.testing.assert_allclose(np.exp(got), 1 / (1 + np.exp(-(r - ref))), rtol=1e-6)
    np.testing.assert_allclose(rewards.log_sigmoid_transform(-30.0, 0.0), -30.0 - np.log1p(np.exp(-30.0)), rtol=1e-7)
    np.testing.assert_allclose(rewards.log_sigmoid_transform(0.0, 0.0), -np.log(2.0), rtol=1e-7)


def test_log_sigmoid_transform_is_stable_at_plus_minus_1e4():
    r = jnp.array([-1e4, -1e4 + 0.5, 1e4, 1e4 - 0.5, 0.0], jnp.float32)
    ref = jnp.array([0.0, 0.0, 0.0, 0.0, 1e4], jnp.float32)
    u = rewards.log_sigmoid_transform(r, ref)
    assert bool(jnp.all(jnp.isfinite(u)))
    np.testing.assert_allclose(u, [-1e4, -1e4 + 0.5, 0.0, 0.0, -1e4], rtol=1e-7, atol=0)
    assert bool(jnp.all(u <= 0))
    # d u / d r = σ(r_ref − r): 1 far below the reference, 0 far above it; d u / d r_ref = −d u / d r
    gr, gref = jax.grad(lambda a, b: jnp.sum(rewards.log_sigmoid_transform(a, b)), argnums=(0, 1))(r, ref)
    assert bool(jnp.all(jnp.isfinite(gr))) and bool(jnp.all(jnp.isfinite(gref)))
    np.testing.assert_allclose(gr, [1.0, 1.0, 0.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(gref, -np.asarray(gr), atol=0)


def test_combine_modes_match_numpy(rng):
    m, n, s = 3, 4, 5
    rs = [rng.normal(size=(n, s)) * 2 for _ in range(m)]
    refs = [rng.normal(size=(n, 1)) for _ in range(m)]
    w = np.array([0.5, 2.0, 1.0])
    stack = np.stack(rs)
    np.testing.assert_allclose(rewards.combine(rs, "sum"), stack.sum(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rewards.combine(rs, "sum", weights=w), np.einsum("m,mns->ns", w, stack), rtol=1e-6,
                               atol=1e-6)
    trans = np.stack([_np_log_sigmoid(r - ref) for r, ref in zip(rs, refs, strict=True)])
    np.testing.assert_allclose(rewards.combine(rs, "transformed_sum", ref_rewards_list=refs), trans.sum(0),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rewards.combine(rs, "transformed_sum", ref_rewards_list=refs, weights=w),
                               np.einsum("m,mns->ns", w, trans), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rewards.combine(rs, "min"), stack.min(0), rtol=1e-6)
    np.testing.assert_allclose(rewards.combine(rs, "min", weights=w), (w[:, None, None] * stack).min(0), rtol=1e-6)
    # a stacked [M, ...] array is read as M rewards; scalar references broadcast
    np.testing.assert_allclose(rewards.combine(jnp.asarray(stack), "min"), stack.min(0), rtol=1e-6)
    np.testing.assert_allclose(rewards.combine(rs, "transformed_sum", ref_rewards_list=[0.0, 1.0, -1.0]),
                               sum(_np_log_sigmoid(r - c) for r, c in zip(rs, [0.0, 1.0, -1.0], strict=True)),
                               rtol=1e-6, atol=1e-6)
    # the transformed sum is the log-probability of beating every reference (independent properties)
    np.testing.assert_allclose(np.exp(rewards.combine(rs, "transformed_sum", ref_rewards_list=refs)),
                               np.prod([1 / (1 + np.exp(-(r - ref))) for r, ref in zip(rs, refs, strict=True)], 0),
                               rtol=1e-5)


def test_transformed_sum_is_an_and_while_the_raw_sum_trades_properties():
    # arm 0: excellent at helpfulness, bad at harmlessness; arm 1: good at both. References at 0.
    helpful = jnp.array([6.0, 1.0])
    harmless = jnp.array([-3.0, 1.0])
    raw = rewards.combine([helpful, harmless], "sum")
    np.testing.assert_allclose(raw, [3.0, 2.0])
    assert int(jnp.argmax(raw)) == 0  # the raw sum buys harmlessness with helpfulness
    anded = rewards.combine([helpful, harmless], "transformed_sum", ref_rewards_list=[0.0, 0.0])
    # log σ(6) + log σ(−3) = −3.0511 (P(good at both) ≈ 0.047) vs 2·log σ(1) = −0.6265 (P ≈ 0.53)
    np.testing.assert_allclose(anded, [_np_log_sigmoid(6.0) + _np_log_sigmoid(-3.0), 2 * _np_log_sigmoid(1.0)],
                               rtol=1e-6)
    np.testing.assert_allclose(anded, [-3.0510630, -0.6265234], rtol=1e-6)
    assert int(jnp.argmax(anded)) == 1
    # the min (egalitarian) combination agrees with the AND here
    assert int(jnp.argmax(rewards.combine([helpful, harmless], "min"))) == 1
    # saturation: polishing a good output pays less than fixing a bad one by the same amount
    gain_good = rewards.log_sigmoid_transform(5.0, 0.0) - rewards.log_sigmoid_transform(4.0, 0.0)
    gain_bad = rewards.log_sigmoid_transform(-3.0, 0.0) - rewards.log_sigmoid_transform(-4.0, 0.0)
    assert float(gain_bad) > 50 * float(gain_good)


def test_combine_gradient_and_jit():
    r1 = jnp.array([0.3, -2.0, 5.0])
    r2 = jnp.array([1.0, 0.0, -1.0])
    ref = [jnp.array(0.5), jnp.array(-0.5)]
    w = jnp.array([2.0, 0.5])
    fn = lambda a, b, w: jnp.sum(rewards.combine([a, b], "transformed_sum", ref_rewards_list=ref, weights=w))
    g1, g2 = jax.grad(fn, argnums=(0, 1))(r1, r2, w)
    sig = lambda x: 1 / (1 + np.exp(-np.asarray(x, np.float64)))
    # d/dr_i Σ w_i log σ(r_i − ref_i) = w_i·σ(ref_i − r_i)
    np.testing.assert_allclose(g1, 2.0 * sig(0.5 - np.asarray(r1)), rtol=1e-6)
    np.testing.assert_allclose(g2, 0.5 * sig(-0.5 - np.asarray(r2)), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(r1, r2, w), fn(r1, r2, w), rtol=1e-6)
    # vmap over weight vectors (traced weights skip the value checks)
    ws = jnp.array([[1.0, 1.0], [0.0, 3.0]])
    got = jax.vmap(lambda w: rewards.combine([r1, r2], "min", weights=w))(ws)
    np.testing.assert_allclose(got[1], np.minimum(0.0, 3.0 * np.asarray(r2)))


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.37, 0.5, 0.9, 0.999, 1.0])
def test_reference_quantile_matches_numpy_linear(q, rng):
    x = rng.normal(size=(5, 7))
    x[0, :3] = 0.25  # ties
    got = rewards.reference_quantile(x, q)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, np.quantile(x, q, axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, np.quantile(x, q, axis=1, method="linear"), rtol=1e-6, atol=1e-6)


def test_reference_quantile_edges_and_tracing(rng):
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(rewards.reference_quantile(x, 0.0), x.min(1))
    np.testing.assert_allclose(rewards.reference_quantile(x, 1.0), x.max(1))
    np.testing.assert_allclose(rewards.reference_quantile(x[:, :1], 0.3), x[:, 0])  # S = 1
    # h = (S − 1)·q = 1.5: halfway between the 2nd and 3rd smallest
    srt = np.sort(x, 1)
    np.testing.assert_allclose(rewards.reference_quantile(x, 0.5), 0.5 * (srt[:, 1] + srt[:, 2]), rtol=1e-6)
    qs = jnp.array([0.0, 0.2, 0.5, 1.0])
    got = jax.vmap(lambda q: rewards.reference_quantile(x, q))(qs)
    np.testing.assert_allclose(got, np.quantile(x, np.asarray(qs), axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(rewards.reference_quantile)(x, 0.3), np.quantile(x, 0.3, axis=1), rtol=1e-6)
    # the documented use: transform rewards against each prompt's reference quantile
    pol = rng.normal(size=(3, 2))
    u = rewards.log_sigmoid_transform(pol, rewards.reference_quantile(x, 0.5)[:, None])
    np.testing.assert_allclose(u, _np_log_sigmoid(pol - np.median(x, 1, keepdims=True)), rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_value_errors():
    r = [jnp.zeros(3), jnp.ones(3)]
    with pytest.raises(ValueError, match="mode='product'"):
        rewards.combine(r, "product")
    with pytest.raises(ValueError, match="non-empty"):
        rewards.combine([], "sum")
    with pytest.raises(ValueError, match="one shape"):
        rewards.combine([jnp.zeros(3), jnp.zeros(4)], "sum")
    with pytest.raises(ValueError, match="needs ref_rewards_list"):
        rewards.combine(r, "transformed_sum")
    with pytest.raises(ValueError, match="must hold 2 references"):
        rewards.combine(r, "transformed_sum", ref_rewards_list=[0.0])
    with pytest.raises(ValueError, match="do not broadcast"):
        rewards.combine(r, "transformed_sum", ref_rewards_list=[jnp.zeros(2), 0.0])
    with pytest.raises(ValueError, match="must broadcast to the rewards' shape"):
        rewards.combine(r, "transformed_sum", ref_rewards_list=[jnp.zeros((2, 3)), 0.0])
    with pytest.raises(ValueError, match="only used by modes 'transformed_sum' and 'maxmin'"):
        rewards.combine(r, "sum", ref_rewards_list=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"weights=\[1.0, -0.5\]"):
        rewards.combine(r, "sum", weights=[1.0, -0.5])
    with pytest.raises(ValueError, match="weights"):
        rewards.combine(r, "sum", weights=[1.0, float("nan")])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        rewards.combine(r, "min", weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="do not broadcast"):
        rewards.log_sigmoid_transform(jnp.zeros(3), jnp.zeros(2))
    x = jnp.zeros((2, 3))
    for q in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"q={q!r}"):
            rewards.reference_quantile(x, q)
    with pytest.raises(ValueError, match="scalar"):
        rewards.reference_quantile(x, [0.5, 0.6])
    with pytest.raises(ValueError, match=r"shape \(3,\) must be \[N, S\]"):
        rewards.reference_quantile(jnp.zeros(3), 0.5)
    with pytest.raises(ValueError, match="S >= 1"):
        rewards.reference_quantile(jnp.zeros((3, 0)), 0.5)


# ---------------------------------------------------------------------------------------------- ensembles
def test_ensemble_modes_against_numpy():
    """mean, min and mean − k·std (population and unbiased) equal numpy on random [M, N, S] members."""
    r = np.random.default_rng(0).normal(size=(5, 3, 4)) * 3.0 + 100.0  # a large offset: the std is centred
    np.testing.assert_allclose(rewards.ensemble(r, "mean"), r.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rewards.ensemble(r, "min"), r.min(0), rtol=1e-6)
    for ddof in (0, 1):
        want = r.mean(0) - 0.7 * r.std(0, ddof=ddof)
        np.testing.assert_allclose(rewards.ensemble(r, "mean_minus_std", k=0.7, ddof=ddof), want, rtol=1e-6)
        jitted = jax.jit(lambda x, k, d=ddof: rewards.ensemble(x, "mean_minus_std", k=k, ddof=d))
        np.testing.assert_allclose(jitted(jnp.asarray(r, jnp.float32), 0.7), want, rtol=1e-5)
    members = [r[i] for i in range(5)]  # a list of arrays == the stacked array
    np.testing.assert_allclose(rewards.ensemble(members, "mean_minus_std", k=2.0), rewards.ensemble(r, "mean_minus_std",
                               k=2.0), rtol=1e-6)
    one = r[:1]  # one member: mean = min = mean − k·std (population std 0)
    for mode in rewards.ENSEMBLE_MODES:
        np.testing.assert_allclose(rewards.ensemble(one, mode, k=5.0), r[0], rtol=1e-6)


def test_ensemble_gradient_of_the_penalty():
    """d/dr_m (mean − k·std) = 1/M − k·(r_m − r̄)/((M − ddof)·s), against autodiff."""
    r = jnp.asarray([0.3, -1.2, 2.0, 0.5])
    for ddof in (0, 1):
        g = jax.grad(lambda x, d=ddof: rewards.ensemble(x, "mean_minus_std", k=1.5, ddof=d))(r)
        x = np.asarray(r, np.float64)
        s = np.sqrt(((x - x.mean()) ** 2).sum() / (4 - ddof))
        np.testing.assert_allclose(g, 1 / 4 - 1.5 * (x - x.mean()) / ((4 - ddof) * s), rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "max"}, "mode='max'"),
    ({"mode": "mean_minus_std", "k": -1.0}, "k=-1.0 must be >= 0"),
    ({"mode": "mean", "ddof": 2}, "ddof=2 must be 0"),
])
def test_ensemble_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rewards.ensemble(np.zeros((2, 3)), **kwargs)


def test_ensemble_bad_members():
    with pytest.raises(ValueError, match="ddof=1 needs at least 2 members"):
        rewards.ensemble(np.zeros((1, 3)), "mean_minus_std", ddof=1)
    with pytest.raises(ValueError, match="different shapes"):
        rewards.ensemble([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="no members"):
        rewards.ensemble([])


# ---------------------------------------------------------------------------------------------------------
# CTRL: calibrate and ctrl_transform


def _np_calibrate(r, ref):
    """C_i = (#{ρ_ij < r_i} + ½·#{ρ_ij = r_i}) / m, a loop."""
    out = []
    for ri, row in zip(r, ref, strict=True):
        s = 0.0
        for x in row:
            s += 1.0 if x < ri else 0.5 if x == ri else 0.0
        out.append(s / len(row))
    return np.array(out)


def test_calibrate_matches_a_numpy_loop_with_ties(rng):
    ref = rng.integers(0, 5, size=(7, 9)).astype(np.float32)  # integer rewards: many ties
    r = np.concatenate([ref[:3, 0], rng.integers(-1, 7, size=4)]).astype(np.float32)  # some equal a sample
    got = rewards.calibrate(r, ref)
    assert got.shape == (7,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_calibrate(r, ref), rtol=0, atol=1e-7)
    # hand-worked: against {0, 1, 1, 3}: 0 ties one (1/8), 1 beats one and ties two (2/4), 4 beats all
    np.testing.assert_allclose(rewards.calibrate(jnp.array([0.0, 1.0, 4.0, -1.0]), jnp.array([0.0, 1.0, 1.0, 3.0])),
                               [0.125, 0.5, 1.0, 0.0], atol=0)
    # one shared [m] reference set equals it repeated per row
    np.testing.assert_array_equal(rewards.calibrate(r, ref[0]), rewards.calibrate(r, np.tile(ref[0], (7, 1))))
    # the mean of C over the reference samples themselves is exactly ½ (E_μ̂[C] = ½)
    np.testing.assert_allclose(rewards.calibrate(ref[0], np.tile(ref[0], (9, 1))).mean(), 0.5, atol=1e-7)


def test_calibrate_is_invariant_to_a_strictly_increasing_transform(rng):
    ref = rng.normal(size=(5, 8))
    r = np.concatenate([ref[:2, 3], rng.normal(size=3)])  # two ties with a sample
    c = rewards.calibrate(r, ref)
    for f in (lambda x: np.exp(2 * x), lambda x: x ** 3 + x, lambda x: 1 / (1 + np.exp(-x))):
        np.testing.assert_array_equal(rewards.calibrate(f(r), f(ref)), c)
    assert not np.allclose(c, rewards.calibrate(r ** 2, ref ** 2))  # a non-monotone map changes it


def test_calibrate_agrees_with_the_exact_calibrated_reward_of_the_empirical_reference(rng):
    from jalign.envs import calibrated_rewards

    arm_rewards = np.array([0.0, 1.0, 1.0, 2.5, -1.0, 2.5], np.float32)  # K = 6 arms with tied rewards
    draws = rng.integers(0, 6, size=40)  # m = 40 reference samples (arms)
    mu_hat = np.bincount(draws, minlength=6) / 40
    want = calibrated_rewards(jnp.asarray(mu_hat, jnp.float32), jnp.asarray(arm_rewards))
    got = rewards.calibrate(arm_rewards, np.tile(arm_rewards[draws], (6, 1)))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_ctrl_transform_values_and_errors():
    c = jnp.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(rewards.ctrl_transform(c, "identity"), c)
    np.testing.assert_allclose(rewards.ctrl_transform(c, "exp", 4.0), np.exp(4 * np.array([0.0, 0.25, 1.0])),
                               rtol=1e-6)
    np.testing.assert_allclose(rewards.ctrl_transform(c, "neg_exp", 3.0), -np.exp(-3 * np.array([0.0, 0.25, 1.0])),
                               rtol=1e-6)
    # jit with a traced t equals the eager value; the transforms are strictly increasing in c
    f = jax.jit(lambda x, t: rewards.ctrl_transform(x, "exp", t))
    np.testing.assert_allclose(f(c, 4.0), rewards.ctrl_transform(c, "exp", 4.0), rtol=1e-6)
    for kind in rewards.CTRL_TRANSFORMS:
        assert bool(jnp.all(jnp.diff(rewards.ctrl_transform(jnp.linspace(0, 1, 11), kind, 2.0)) > 0))
    with pytest.raises(ValueError, match=r"kind='square' must be one of"):
        rewards.ctrl_transform(c, "square")
    for bad in (0.0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match=r"argument t=.* must be a finite scalar > 0"):
            rewards.ctrl_transform(c, "exp", bad)


def test_calibrate_errors():
    with pytest.raises(ValueError, match=r"rewards_N of shape \(2, 2\) must be 1-D"):
        rewards.calibrate(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"ref_rewards_NxM of shape \(3, 4\) must be \[N, m\] with N=2"):
        rewards.calibrate(np.zeros(2), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"ref_rewards_NxM of shape \(2, 0\)"):
        rewards.calibrate(np.zeros(2), np.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"argument ref_rewards_NxM must be finite"):
        rewards.calibrate(np.zeros(2), np.array([[0.0, np.nan], [1.0, 2.0]]))


def _np_maxmin(rs, refs, w):
    """numpy transcription of MaxMin-RLHF's step: u_i = w_i·(r_i − ref_i), g* = first argmin_i of mean(u_i)."""
    u = np.stack([wi * (np.asarray(r, np.float64) - np.broadcast_to(ref, np.shape(r)))
                  for r, ref, wi in zip(rs, refs, w, strict=True)])
    means = u.reshape(len(rs), -1).mean(1)
    g = int(np.flatnonzero(means == means.min())[0])
    return u[g], g


def test_maxmin_mode_picks_the_worst_off_group_of_the_batch_like_numpy(rng):
    for trial in range(20):
        m, shape = 1 + trial % 4, ((6,), (3, 5))[trial % 2]
        rs = [rng.normal(size=shape) + rng.normal() for _ in range(m)]
        refs = [rng.normal(size=shape[:1] + (1,) * (len(shape) - 1)) for _ in range(m)]
        w = rng.uniform(0.5, 2.0, size=m)
        want, g = _np_maxmin(rs, refs, w)
        assert int(rewards.maxmin_group(rs, ref_rewards_list=refs, weights=w)) == g
        got = rewards.combine(rs, "maxmin", ref_rewards_list=refs, weights=w)
        assert got.shape == shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        want0, g0 = _np_maxmin(rs, [0.0] * m, np.ones(m))  # defaults: no references, unit weights
        assert int(rewards.maxmin_group(rs)) == g0
        np.testing.assert_allclose(rewards.combine(rs, "maxmin"), want0, rtol=1e-6)
    # the batch mean decides, not each output: group 1 is worse on average but better on output 0
    a, b = jnp.array([0.0, 3.0, 3.0]), jnp.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(rewards.combine([a, b], "maxmin"), b)
    np.testing.assert_allclose(rewards.combine([a, b], "min"), [0.0, 0.0, 0.0])  # per output: a different thing
    assert int(rewards.maxmin_group([a, a])) == 0  # ties: the first group
    assert int(jax.jit(rewards.maxmin_group)([a, b])) == 1  # jit-able
    with pytest.raises(ValueError, match="must hold 2 references"):
        rewards.combine([a, b], "maxmin", ref_rewards_list=[0.0])
    with pytest.raises(ValueError, match="one shape"):
        rewards.maxmin_group([a, jnp.zeros(2)])

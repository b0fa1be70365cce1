"""Online pairwise training (jalign.train.pairwise): the geometric-mixture samplers against numpy, the
preference labels' frequencies, the pair loss and the Nash-MD surrogate against numpy transcriptions, the
Nash-MD expected gradient against autodiff of the regularised payoff, and the config rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import np_log_sigmoid, np_logsumexp, np_seq_logps, small_cfg
from flax import nnx

from jalign import losses
from jalign.models import ModelConfig, create_model
from jalign.models import sample as kv_sample
from jalign.train import online, pairwise
from jalign.train.config import ConfigError, validate
from jalign.train.plugins import tiny
from jalign.train.step import make_logps_fn, split_model

P, NEW = 12, 3


def _np_log_mixture(z_pol, z_ref, beta, temperature=1.0):
    """log π_mix = log of π^{1−β}·μ^β renormalised, from the two softmaxes (float64)."""
    lp = np.asarray(z_pol, np.float64) / temperature
    lr = np.asarray(z_ref, np.float64) / temperature
    lp, lr = lp - np_logsumexp(lp)[..., None], lr - np_logsumexp(lr)[..., None]
    u = (1 - beta) * lp + beta * lr
    return u - np_logsumexp(u)[..., None]


@pytest.fixture(scope="module")
def tiny_setup():
    model = tiny.tiny_lm(0, d_model=8, d_hidden=16)
    g, params, rest = split_model(model)
    ref = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.key(5), x.shape), params)
    ex = tiny.synthetic_prompt_examples(4, P, seed=2)
    ids = np.stack([e["prompt_ids"] for e in ex])
    mask = np.stack([e["prompt_attention_mask"] for e in ex])
    return g, params, ref, rest, ids, mask


@pytest.fixture(scope="module")
def samplers(tiny_setup):
    """One compiled sampler each (prompt batches of 4 rows): the policy, the β = 0 mixture code path, and the
    mixture with β = 0.6 at temperature 0.8."""
    g = tiny_setup[0]
    return {"plain": online.make_sampler(g, max_new_tokens=NEW),
            "zero": online.make_sampler(g, max_new_tokens=NEW, mixture_beta=0.0),
            "mix": online.make_sampler(g, max_new_tokens=NEW, temperature=0.8, mixture_beta=0.6)}


def _logits(g, params, rest, ids, attn):
    out = nnx.merge(g, params, rest)(jnp.asarray(ids), jnp.asarray(attn))
    return np.asarray(getattr(out, "logits", out), np.float64)


def test_mixture_logits_is_the_renormalised_geometric_mixture():
    rng = np.random.default_rng(0)
    zp, zr = rng.normal(size=(3, 7)) * 3, rng.normal(size=(3, 7)) * 3
    for beta in (0.0, 0.3, 1.0):
        got = np.asarray(jax.nn.log_softmax(online.mixture_logits(zp, zr, beta) / 0.7), np.float64)
        np.testing.assert_allclose(got, _np_log_mixture(zp, zr, beta, 0.7), atol=2e-6)
    z = jnp.asarray(zp, jnp.float32)
    assert np.array_equal(np.asarray(online.mixture_logits(z, zr, 0.0)), np.asarray(z))


@pytest.fixture(scope="module")
def mixture_samples(tiny_setup, samplers):
    """2048 completions from the mixture (β = 0.6, temperature 0.8): the 4 prompts tiled, 512 rows each."""
    g, params, ref, rest, ids, mask = tiny_setup
    tiled = [jnp.asarray(np.tile(x, (512, 1))) for x in (ids, mask)]
    return {f: np.asarray(v) for f, v in samplers["mix"](params, rest, *tiled, jax.random.key(4), ref).items()}


def test_mixture_sampler_logps_are_the_numpy_mixture(tiny_setup, mixture_samples):
    """Every sampled token's log-prob (summed per completion) equals numpy's log π_mix of that token, from full
    forward passes of the policy and the reference over the sampled ids (β = 0.6, temperature 0.8)."""
    g, params, ref, rest, ids, mask = tiny_setup
    out_ids, attn, resp, logps = (mixture_samples[f][:8] for f in ("ids", "attention_mask", "mask", "logps"))
    lq = _np_log_mixture(_logits(g, params, rest, out_ids, attn), _logits(g, ref, rest, out_ids, attn), 0.6,
                         0.8)[:, :-1]
    picked = np.take_along_axis(lq, out_ids[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(logps, (picked * resp[:, 1:]).sum(-1), atol=1e-4)


def test_mixture_sampler_first_token_frequencies(tiny_setup, mixture_samples):
    """512 samples per prompt: the empirical distribution of the mixture's first token matches numpy's π_mix
    within 5 binomial standard errors on every token, and differs from the policy's own distribution."""
    g, params, ref, rest, ids, mask = tiny_setup
    n = 512
    for i in range(len(ids)):
        tok = mixture_samples["ids"][i::len(ids), P]
        zp, zr = (_logits(g, pr, rest, ids[i:i + 1], mask[i:i + 1])[0, -1] for pr in (params, ref))
        q = np.exp(_np_log_mixture(zp, zr, 0.6, 0.8))
        freq = np.bincount(tok, minlength=q.size) / n
        assert np.all(np.abs(freq - q) <= 5 * np.sqrt(q * (1 - q) / n) + 2e-3), i
        pol = np.exp(_np_log_mixture(zp, zr, 0.0, 0.8))
        assert np.abs(q - pol).sum() > 0.1  # the test has power: the mixture is not the policy


def test_mixture_at_beta_zero_is_policy_sampling_bitwise(tiny_setup, samplers):
    g, params, ref, rest, ids, mask = tiny_setup
    key = jax.random.key(9)
    plain = samplers["plain"](params, rest, jnp.asarray(ids), jnp.asarray(mask), key)
    mix = samplers["zero"](params, rest, jnp.asarray(ids), jnp.asarray(mask), key, ref)
    for f in ("ids", "mask", "attention_mask", "logps"):
        assert np.array_equal(np.asarray(plain[f]), np.asarray(mix[f])), f


@pytest.fixture(scope="module")
def lm_setup():
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, max_seq_len=16)
    model = create_model(cfg, seed=0)
    g, params, rest = split_model(model)
    ref = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(2), x.shape), params)
    ids = np.array([[0, 0, 1, 72, 105], [1, 65, 66, 67, 68]], np.int32)
    mask = (np.arange(5)[None] >= np.array([[2], [0]])).astype(np.int32)
    return g, params, ref, rest, ids, mask


def test_kv_mixture_sampler_beta_zero_bitwise_and_logps(lm_setup):
    """KV-cache path (CausalLM): β = 0 reproduces jalign.models.sample's tokens and log-probs bit for bit; at
    β = 0.5 the returned log-probs are numpy's log π_mix of the sampled tokens."""
    g, params, ref, rest, ids, mask = lm_setup
    key = jax.random.key(3)
    model = nnx.merge(g, params, rest)
    plain = kv_sample(model, ids, mask, key=key, max_new_tokens=4, eos_id=None)
    zero = online.make_kv_sampler(g, max_new_tokens=4, eos_id=None, mixture_beta=0.0)(params, rest, ids, mask, key,
                                                                                        ref)
    assert np.array_equal(np.asarray(zero["ids"])[:, 5:], np.asarray(plain.tokens))
    assert np.array_equal(np.asarray(zero["logps"]), np.asarray(jnp.sum(plain.logprobs * plain.response_mask, -1)))
    s = online.make_kv_sampler(g, max_new_tokens=4, eos_id=None, mixture_beta=0.5)(params, rest, ids, mask, key, ref)
    out, attn, resp = (np.asarray(s[f]) for f in ("ids", "attention_mask", "mask"))
    lq = _np_log_mixture(_logits(g, params, rest, out, attn), _logits(g, ref, rest, out, attn), 0.5)[:, :-1]
    picked = np.take_along_axis(lq, out[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(s["logps"]), (picked * resp[:, 1:]).sum(-1), atol=1e-4)
    assert not np.array_equal(out, np.asarray(zero["ids"]))


@pytest.mark.parametrize("temp", [1.0, 0.5])
def test_bradley_terry_label_frequency_is_sigma(temp):
    r1, r2 = np.full(20000, 0.7), np.full(20000, 0.2)
    p = pairwise.preference_probs(r1, r2, temperature=temp)
    sig = 1 / (1 + np.exp(-0.5 / temp))
    np.testing.assert_allclose(p, sig, rtol=1e-12)
    labels = pairwise.sample_labels(p, jax.random.key(0))
    assert abs(labels.mean() - sig) < 4 * np.sqrt(sig * (1 - sig) / 20000)
    assert np.array_equal(labels, pairwise.sample_labels(p, jax.random.key(0)))  # seeded


def test_judge_is_hard_with_fair_ties():
    r1 = np.array([1.0, 0.0] + [0.3] * 10000)
    r2 = np.array([0.0, 1.0] + [0.3] * 10000)
    p = pairwise.preference_probs(r1, r2, preference="judge")
    assert p[0] == 1 and p[1] == 0 and np.all(p[2:] == 0.5)
    lab = pairwise.sample_labels(p, jax.random.key(1))
    assert lab[0] and not lab[1] and abs(lab[2:].mean() - 0.5) < 4 * 0.5 / 100
    assert pairwise.preference_probs([800.0], [0.0], temperature=1.0)[0] == 1.0  # no overflow


def _np_pair_losses(lp_c, lp_r, ref_c, ref_r, n_c, n_r, beta):
    h = (lp_c - ref_c) - (lp_r - ref_r)
    h_avg = (lp_c - ref_c) / n_c - (lp_r - ref_r) / n_r
    return {"ipo": (h - 1 / (2 * beta)) ** 2, "ipo_avg": (h_avg - 1 / (2 * beta)) ** 2,
            "dpo": -np_log_sigmoid(beta * h), "hinge": np.maximum(0, 1 - beta * h)}


@pytest.mark.parametrize("name,hp,key", [("ipo", {"ipo_average": False}, "ipo"), ("ipo", {}, "ipo_avg"),
                                         ("dpo", {}, "dpo"), ("hinge", {}, "hinge")])
def test_pair_loss_on_a_built_batch_matches_numpy(tiny_setup, samplers, name, hp, key):
    """Samples → labels → pair_batch → the trainer's objective, against numpy log-probs from the logits and the
    loss formulas; the labels put the first sample on the chosen side exactly where they say."""
    g, params, ref, rest, ids, mask = tiny_setup
    first, second = ({f: np.asarray(v) for f, v in
                      samplers["plain"](params, rest, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(k)).items()}
                     for k in (6, 7))
    labels = np.array([True, False, False, True])
    batch = pairwise.pair_batch(first, second, labels)
    assert np.array_equal(batch["chosen_ids"][0], first["ids"][0])
    assert np.array_equal(batch["chosen_ids"][1], second["ids"][1])
    assert np.array_equal(batch["rejected_ids"][1], first["ids"][1])
    o = pairwise.PairOptions(algorithm="pairwise")
    obj = pairwise.make_objective(o, name, {"beta": 0.2, **hp})
    total, per = obj.loss_sum(make_logps_fn(g, params, rest), make_logps_fn(g, ref, rest), batch)
    np_lp = {side: np_seq_logps(_logits(g, pr, rest, batch[f"{side}_ids"], batch[f"{side}_attention_mask"]),
                                batch[f"{side}_ids"], batch[f"{side}_mask"])
             for side, pr in (("chosen", params), ("rejected", params))}
    np_ref = {side: np_seq_logps(_logits(g, ref, rest, batch[f"{side}_ids"], batch[f"{side}_attention_mask"]),
                                 batch[f"{side}_ids"], batch[f"{side}_mask"]) for side in ("chosen", "rejected")}
    n = {side: batch[f"{side}_mask"][:, 1:].sum(-1) for side in ("chosen", "rejected")}
    want = _np_pair_losses(np_lp["chosen"], np_lp["rejected"], np_ref["chosen"], np_ref["rejected"], n["chosen"],
                           n["rejected"], 0.2)[key]
    np.testing.assert_allclose(float(total), want.sum(), rtol=1e-4, atol=1e-4)
    m = obj.metrics(per)
    kl = np.concatenate([np_lp["chosen"] - np_ref["chosen"], np_lp["rejected"] - np_ref["rejected"]]).mean()
    np.testing.assert_allclose(float(m["kl"]), kl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(m["rewards/margins"]),
                               0.2 * ((np_lp["chosen"] - np_ref["chosen"]) - (np_lp["rejected"] - np_ref["rejected"])
                                      ).mean(), rtol=1e-4, atol=1e-5)  # metrics: β·(log-ratio margin)


def test_nash_md_pg_values_and_batch_gradient_match_numpy():
    lp = np.array([-3.0, -1.5, -4.0])
    ref = np.array([-2.5, -2.0, -4.0])
    p = np.array([0.9, 0.2, 0.5])
    beta = 0.3
    got = losses.nash_md_pg(jnp.asarray(lp), jnp.asarray(ref), jnp.asarray(p), beta=beta)
    np.testing.assert_allclose(np.asarray(got), -(p - 0.5 - beta * (lp - ref)) * lp, rtol=1e-6)
    g = jax.grad(lambda x: losses.nash_md_pg(x, jnp.asarray(ref), jnp.asarray(p), beta=beta).sum())(jnp.asarray(lp))
    np.testing.assert_allclose(np.asarray(g), -(p - 0.5 - beta * (lp - ref)), rtol=1e-6)  # ref-ratio stopped
    with pytest.raises(ValueError, match="preference"):
        losses.nash_md_pg(jnp.zeros(1), jnp.zeros(1), jnp.array([1.5]), beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        losses.nash_md_pg(jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), beta=-1.0)


def test_nash_md_expected_gradient_is_the_gradient_of_the_regularised_payoff():
    """Tabular softmax policy over K arms: E_{y~π}[∇ nash_md_pg] = −∇_θ[Σ_y π(y)·p(y) − β·KL(π‖μ)] with
    p(y) = P(y ≻ π_mix) held fixed (autodiff of the exact expression)."""
    K, beta = 5, 0.25
    rng = np.random.default_rng(3)
    theta = jnp.asarray(rng.normal(size=K))
    mu = jax.nn.log_softmax(jnp.asarray(rng.normal(size=K)))
    pref = jnp.asarray(rng.uniform(size=K))

    def expected_surrogate(th):
        lp = jax.nn.log_softmax(th)
        w = jax.lax.stop_gradient(jnp.exp(lp))  # y ~ π: the sampling weights carry no gradient
        return (w * losses.nash_md_pg(lp, mu, pref, beta=beta)).sum()

    def payoff(th):
        lp = jax.nn.log_softmax(th)
        pi = jnp.exp(lp)
        return (pi * pref).sum() - beta * (pi * (lp - mu)).sum()

    np.testing.assert_allclose(np.asarray(jax.grad(expected_surrogate)(theta)), -np.asarray(jax.grad(payoff)(theta)),
                               atol=1e-6)


def test_nash_md_objective_on_samples_matches_numpy(tiny_setup, samplers):
    g, params, ref, rest, ids, mask = tiny_setup
    s = samplers["plain"](params, rest, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(8))
    batch = {f: np.asarray(s[f]) for f in ("ids", "mask", "attention_mask")}
    batch["preference"] = np.array([0.9, 0.1, 0.5, 0.7], np.float32)
    obj = pairwise.make_objective(pairwise.PairOptions(algorithm="nash_md", kl_coef=0.2), "dpo")
    total, per = obj.loss_sum(make_logps_fn(g, params, rest), make_logps_fn(g, ref, rest), batch)
    lp = np_seq_logps(_logits(g, params, rest, batch["ids"], batch["attention_mask"]), batch["ids"], batch["mask"])
    lr = np_seq_logps(_logits(g, ref, rest, batch["ids"], batch["attention_mask"]), batch["ids"], batch["mask"])
    np.testing.assert_allclose(float(total), (-(batch["preference"] - 0.5 - 0.2 * (lp - lr)) * lp).sum(), rtol=1e-4)
    np.testing.assert_allclose(float(obj.metrics(per)["kl"]), (lp - lr).mean(), rtol=1e-4, atol=1e-5)


def _cfg(**over):
    base = dict(mode="online", data__name="synthetic_prompts", online__algorithm="pairwise", loss__name="ipo")
    return small_cfg(**{**base, **over})


@pytest.mark.parametrize("over,match", [
    (dict(online__mixture_beta=1.5), r"online\.mixture_beta=1\.5 must be a number in \[0, 1\]"),
    (dict(online__num_samples=4), r"online\.num_samples=4 must be 2 with online\.algorithm='pairwise'"),
    (dict(online__preference="thurstone"), r"online\.preference='thurstone' must be one of"),
    (dict(online__preference_temperature=0.0), r"online\.preference_temperature=0\.0 must be a finite number > 0"),
    (dict(loss__name="rloo"), r"loss\.name='rloo' must be a pairwise loss"),
    (dict(loss__reference="cached"), r"loss\.reference='cached' must be 'frozen'"),
    (dict(online__algorithm="nash_md", online__kl_coef=-0.1), r"online\.kl_coef=-0\.1 must be a finite number >= 0"),
    (dict(online__algorithm="grpo", online__mixture_beta=0.5), r"online\.mixture_beta=0\.5 is only used with"),
])
def test_config_rules_name_the_key(over, match):
    with pytest.raises(ConfigError, match=match):
        validate(_cfg(**over))


def test_config_rules_hparams():
    c = _cfg()
    c.loss.hparams.gamma = 1.0
    with pytest.raises(ConfigError, match=r"loss\.hparams \['gamma'\] unknown for loss 'ipo'"):
        validate(c)
    c = _cfg(online__algorithm="nash_md")
    c.loss.hparams.beta = 0.1
    with pytest.raises(ConfigError, match=r"not used with online\.algorithm='nash_md' \(its β is online\.kl_coef\)"):
        validate(c)
    validate(_cfg(online__mixture_beta=0.5, online__preference="judge"))  # IPO-MD with a judge: valid

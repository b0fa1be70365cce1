"""f-DPG on a causal LM (jalign.studies.fdpg_lm): word constraint, sample space, estimates and the trainer.

A tiny GPT-2 (1 layer, d = 16) stands in for the small LM. With T = 1 new token the sample space is the 259
tokens, so every quantity is exact: a's first-token distribution is tilted so that the one-letter word "a"
has probability ≈ 7%, and p ∝ a·e^{λ·1[x = "a"]}.
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import divergences as D
from jalign.fdpg import targets as TG
from jalign.models import ModelConfig, create_model
from jalign.studies import fdpg_lm as LM
from jalign.tokenizers import ByteTokenizer

BOS = ByteTokenizer.bos_id
A = ord("a")


def _enc(s: bytes | list) -> list[int]:
    return list(s)


# ---------------------------------------------------------------------------------------------------------
# The word constraint.


@pytest.mark.parametrize(
    ("text", "expected"),
    [(b"this is it", 1), (b"is", 1), (b"this", 0), (b"isx", 0), (b"_is", 0), (b"is_", 0), (b"(is)", 1),
     (b"IS is", 1), (b"IS", 0), (b"xis is", 1), (b"i s", 0), (b"9is", 0), (b"is9", 0), (b"\xc3is.", 1)],
)
def test_word_indicator_crafted(text, expected):
    assert float(LM.word_indicator(jnp.asarray([_enc(text)]), "is")[0]) == expected
    assert bool(re.search(rb"\bis\b", text)) == bool(expected) or text == b"\xc3is."  # \xc3 is a non-word byte


def test_word_indicator_special_tokens_are_boundaries_and_never_match():
    toks = jnp.asarray([[BOS, ord("i"), ord("s"), 258], [ord("i"), 256, ord("s"), 32], [256, 257, 258, 256]])
    np.testing.assert_array_equal(LM.word_indicator(toks, "is"), [1.0, 0.0, 0.0])


def test_word_indicator_matches_regex_on_random_strings():
    rng = np.random.default_rng(0)
    pieces = [b"is", b" ", b"_", b"x", b".", b"i", b"s", b"9", b"IS"]
    rows = [b"".join(pieces[j] for j in rng.integers(0, len(pieces), 5)).ljust(10, b"x")[:10] for _ in range(400)]
    toks = np.array([list(r) for r in rows], np.int32)
    got = np.asarray(jax.jit(lambda t: LM.word_indicator(t, "is"))(toks))
    want = [float(bool(re.search(rb"\bis\b", bytes(row.tolist())))) for row in toks]
    np.testing.assert_array_equal(got, want)
    sub = [float(b"is" in bytes(row.tolist())) for row in toks]
    np.testing.assert_array_equal(LM.word_indicator(toks, "is", whole_word=False), sub)
    assert 0.03 < np.mean(want) < np.mean(sub) < 0.9


def test_word_indicator_errors_and_short_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        LM.word_indicator(jnp.zeros((1, 3), jnp.int32), "")
    with pytest.raises(ValueError, match="ASCII letters"):
        LM.word_indicator(jnp.zeros((1, 3), jnp.int32), "a b")
    with pytest.raises(ValueError, match="integers"):
        LM.word_indicator(jnp.zeros((1, 3)), "is")
    np.testing.assert_array_equal(LM.word_indicator(jnp.asarray([[ord("i")]]), "is"), [0.0])


# ---------------------------------------------------------------------------------------------------------
# A tiny LM whose first token is "a" with probability ≈ 7%.


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, max_seq_len=8)
    graphdef, params = LM.split_lm(create_model(cfg, seed=0))
    u = np.zeros(16, np.float32)
    u[0] = 1.0
    params["final_norm"]["scale"].set_value(jnp.full((16,), 0.1))
    params["final_norm"]["bias"].set_value(jnp.asarray(u))
    params["embed"].set_value(params["embed"][...].at[A].set(jnp.asarray(3.0 * u)))
    space = LM.LMSpace(graphdef, 1, BOS)
    return space, params


def _exact(space, params):
    """log π over the 259 single-token samples."""
    return _LP[space](params, jnp.arange(259, dtype=jnp.int32)[:, None])


class _Jitted(dict):
    def __missing__(self, space):
        self[space] = jax.jit(space.log_probs)
        return self[space]


_LP = _Jitted()


@pytest.fixture(scope="module")
def sampled(tiny):
    space, params = tiny
    x, lq = jax.jit(lambda p, k: space.sample(p, k, 4096))(params, jax.random.key(1))
    return np.asarray(x), np.asarray(lq)


@pytest.fixture(scope="module")
def base_set(sampled):
    return sampled[0]


def test_lm_space_is_a_distribution_and_sampler_logps_match(tiny, sampled):
    space1, params = tiny
    la = _exact(space1, params)
    assert abs(float(jax.nn.logsumexp(la))) < 1e-5
    assert 0.05 < float(jnp.exp(la[A])) < 0.1
    space2 = LM.LMSpace(space1.graphdef, 2, BOS)
    allx = jnp.asarray(list(itertools.product(range(259), repeat=2)), jnp.int32)
    assert abs(float(jax.nn.logsumexp(_LP[space2](params, allx)))) < 1e-4  # Σ over V^2 = 1
    x, lq = sampled
    np.testing.assert_allclose(lq, np.asarray(la)[x[:, 0]], atol=1e-4)  # sampler log-probs = exact log π(x)
    freq = np.bincount(x[:, 0], minlength=259) / len(x)  # the sampler draws from π: frequency of "a"
    assert abs(freq[A] - float(jnp.exp(la[A]))) < 4 * np.sqrt(0.1 / len(x))


def test_lambda_fit_on_lm_samples_reaches_the_moment(tiny, base_set):
    space, params = tiny
    phi = LM.word_indicator(base_set, "a")
    la = _LP[space](params, base_set)
    lam, _, err = TG.fit_lambda_is(phi[:, None], la, la, jnp.array([0.5]))
    est = LM.base_estimates(la, phi, lam[0])
    assert float(err) <= 1e-5 and abs(float(est["expected_phi"]) - 0.5) <= 1e-5
    r = float(phi.mean())
    np.testing.assert_allclose(float(lam[0]), np.log((1 - r) / r), rtol=1e-4)  # closed form for binary φ
    # exact moment of p_λ on the 259 outcomes: within the sampling error of r̂ (4096 samples)
    lp = _exact(space, params) + lam[0] * (jnp.arange(259) == A)
    assert abs(float(jax.nn.softmax(lp)[A]) - 0.5) < 0.06


def test_base_estimates_and_kl_p_pi_against_exact(tiny, base_set):
    space, params = tiny
    la_all = _exact(space, params)
    b_all = (jnp.arange(259) == A).astype(jnp.float32)
    lam = 3.0
    log_P = la_all + lam * b_all
    log_z, log_p = jax.nn.logsumexp(log_P), jax.nn.log_softmax(log_P)
    phi = LM.word_indicator(base_set, "a")
    la = _LP[space](params, base_set)
    est = LM.base_estimates(la, phi, lam)
    # the same estimates in float64 numpy on the same samples (w ∝ e^{λφ}, q = a)
    ph, la64 = np.asarray(phi, np.float64), np.asarray(la, np.float64)
    w = np.exp(lam * ph) / np.exp(lam * ph).sum()
    lz = np.log(np.mean(np.exp(lam * ph)))
    want = {"log_z": lz, "expected_phi": w @ ph, "entropy": -(w @ (la64 + lam * ph - lz)),
            "kl_p_a": lam * (w @ ph) - lz, "ess": 1 / (w * w).sum()}
    for k, v in want.items():
        np.testing.assert_allclose(float(est[k]), v, rtol=1e-4, err_msg=k)
    # and against the exact values on the 259 outcomes (sampling error of 4096 draws)
    np.testing.assert_allclose(float(est["log_z"]), float(log_z), atol=0.1)
    np.testing.assert_allclose(float(est["expected_phi"]), float(jnp.exp(log_p[A])), atol=0.05)
    np.testing.assert_allclose(float(est["kl_p_a"]), float(D.divergence("reverse_kl", log_p, la_all)), atol=0.1)
    # KL(p‖π) for a different π (uniform): IS on a's samples vs exact
    lpi = jnp.full((4096,), -np.log(259.0))
    kl = LM.kl_p_pi_from_base(lpi, la, phi, lam, est["log_z"])
    np.testing.assert_allclose(float(kl), float(D.divergence("forward_kl", jnp.full((259,), -np.log(259.0)), log_p)),
                               atol=0.1)


def test_diversity_counts():
    toks = np.array([list(b"ab ab"), list(b"ab cd"), list(b"ab ab")], np.int32)
    d = LM.diversity(toks)
    assert d["distinct_1w"] == pytest.approx(2 / 6)  # words: ab ab | ab cd | ab ab
    assert d["distinct_2w"] == pytest.approx(2 / 3)  # bigrams: (ab ab), (ab cd), (ab ab)
    assert d["distinct_4b"] == pytest.approx(4 / 6)  # "ab a", "b ab" (twice each), "ab c", "b cd"


# ---------------------------------------------------------------------------------------------------------
# The trainer.


@pytest.fixture(scope="module")
def trainer(tiny, base_set):
    space, params = tiny
    return LM.FDPGLMTrainer(space, params, word="a", divergences=["forward_kl", "reverse_kl", "js", "tv"],
                            batch_size=64, learning_rate=3e-2, eval_every=2, replace_every=1,
                            base_tokens=base_set[:1024])


@pytest.mark.parametrize("divergence", ["js", "reverse_kl"])
def test_fdpg_steps_move_the_tiny_lm_towards_p_exactly(tiny, trainer, divergence):
    space, params = tiny
    lam = 3.0
    b_all = (jnp.arange(259) == A).astype(jnp.float32)
    log_p = jax.nn.log_softmax(_exact(space, params) + lam * b_all)
    new, hist = trainer.run(params, divergence=divergence, lam=lam, steps=4, key=jax.random.key(0))
    before, after = _exact(space, params), _exact(space, new)
    # exact alignment E_π[b] = π("a") rises towards E_p[b] and the exact D_f(π‖p) falls
    assert float(jnp.exp(before[A])) < float(jnp.exp(after[A])) < float(jnp.exp(log_p[A]))
    assert float(D.divergence(divergence, after, log_p)) < float(D.divergence(divergence, before, log_p))
    assert hist["step"] == [2, 4] and hist["replacements"] == [0, 0]
    assert hist["kl_p_pi_final"] < hist["kl_p_pi_init"]
    # the on-policy estimates (chunk averages) lie within sampling error of the exact start/end range
    lo, hi = float(jnp.exp(before[A])), float(jnp.exp(after[A]))
    assert lo - 0.06 < hist["expected_phi"][0] < hist["expected_phi"][1] < hi + 0.06
    h = [float(-(jnp.exp(v) @ v)) for v in (before, after)]  # entropy per token = H(π) for T = 1
    assert min(h) - 0.3 < hist["entropy_per_token"][0] < max(h) + 0.3


def test_off_policy_run_replaces_the_proposal(tiny, trainer):
    space, params = tiny
    _, hist = trainer.run(params, divergence="forward_kl", lam=3.0, steps=4, key=jax.random.key(0),
                          proposal="off_policy")
    assert hist["replacements"][-1] >= 1 and hist["kl_p_pi_final"] < hist["kl_p_pi_init"]


def test_trainer_errors_and_nan(tiny, trainer):
    space, params = tiny
    with pytest.raises(ValueError, match="chi2"):
        trainer.run(params, divergence="chi2", lam=1.0, steps=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="multiple"):
        trainer.run(params, divergence="js", lam=1.0, steps=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="lam"):
        trainer.run(params, divergence="js", lam=float("inf"), steps=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="proposal"):
        trainer.run(params, divergence="js", lam=1.0, steps=2, key=jax.random.key(0), proposal="mixed")
    with pytest.raises(ValueError, match="batch_size"):
        LM.FDPGLMTrainer(space, params, word="a", divergences=["js"], batch_size=3, learning_rate=1e-3,
                         eval_every=1, base_tokens=np.zeros((4, 1), np.int32))
    bad = jax.tree.map(lambda x: x * jnp.nan, params)
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.run(bad, divergence="js", lam=1.0, steps=2, key=jax.random.key(0))


# ---------------------------------------------------------------------------------------------------------
# Seeds batched in one program (FDPGLMTrainer.run_seeds): seed s is run(key=keys[s]).


@pytest.mark.parametrize(("divergence", "proposal"), [("js", "on_policy"), ("forward_kl", "off_policy")])
def test_run_seeds_equals_the_per_seed_runs(tiny, trainer, divergence, proposal):
    """The key invariance of the batched seeds: the vmapped step over a seed axis is the per-seed step.

    Same samples (tokens enter every recorded metric exactly: E_π[φ], distinct-n), same updates up to float
    round-off (batched products may sum in another order; Adam turns round-off in near-zero gradient entries
    into steps of up to the learning rate, 3e-2 here, so the parameters are compared as a whole: the difference
    against the size of the update, and the policies' log-probs on a's samples)."""
    _, params = tiny
    keys = [jax.random.key(s) for s in (3, 11, 42)]
    kw = dict(divergence=divergence, lam=3.0, steps=2, proposal=proposal)
    new_S, hists = trainer.run_seeds(params, keys=keys, **kw)
    assert len(hists) == 3
    for s, key in enumerate(keys):
        new, h = trainer.run(params, key=key, **kw)
        flat = [np.concatenate([np.ravel(x) for x in xs]) for xs in (
            jax.tree.leaves(params), jax.tree.leaves(new), [np.asarray(v)[s] for v in jax.tree.leaves(new_S)])]
        step, diff = np.linalg.norm(flat[1] - flat[0]), np.linalg.norm(flat[2] - flat[1])
        assert step > 0.1 and diff < 5e-3 * step, (step, diff)  # the batched update is the per-seed update
        lp_S = trainer._policy_logps(jax.tree.map(lambda v, s=s: v[s], new_S), trainer.base_tokens)
        np.testing.assert_allclose(lp_S, trainer._policy_logps(new, trainer.base_tokens), rtol=1e-3, atol=1e-3)
        assert hists[s]["step"] == h["step"] == [2]
        assert hists[s]["replacements"] == h["replacements"]
        for k in ("expected_phi", "distinct_4b", "distinct_1w"):  # functions of the sampled tokens only
            assert hists[s][k] == h[k], k
        for k in ("entropy_per_token", "kl_pi_a", "kl_pi_p", "log_z", "grad_cosine", "kl_p_pi_init"):
            np.testing.assert_allclose(hists[s][k], h[k], rtol=1e-4, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(hists[s]["kl_p_pi_final"], h["kl_p_pi_final"], rtol=1e-3)
    # the seeds are different runs (different samples), not copies of one
    assert len({h["expected_phi"][0] for h in hists}) == 3
    assert len({round(h["kl_p_pi_final"], 6) for h in hists}) == 3
    if proposal == "off_policy":
        assert hists[0]["replacements"][-1] >= 1


def test_run_seeds_errors(tiny, trainer):
    _, params = tiny
    with pytest.raises(ValueError, match="keys"):
        trainer.run_seeds(params, divergence="js", lam=1.0, steps=2, keys=jax.random.split(jax.random.key(0),
                                                                                            (2, 2)))
    with pytest.raises(ValueError, match="multiple"):
        trainer.run_seeds(params, divergence="js", lam=1.0, steps=3, keys=[jax.random.key(0)])

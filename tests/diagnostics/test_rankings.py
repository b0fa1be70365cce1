"""Ranking accuracy and top-k indicators (jalign.diagnostics.rankings) against independent numpy computations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign.diagnostics import (
    dpo_loss_at_flip,
    idealized_ranking_accuracy,
    ranking_accuracy,
    topk_entropy,
    topk_mass,
)

# ------------------------------------------------------------------------------------------------------------
# numpy transcriptions
# ------------------------------------------------------------------------------------------------------------


def np_ranking_accuracy(w, l_, nw=None, nl=None):
    hits = 0
    for i in range(len(w)):
        a, b = (w[i], l_[i]) if nw is None else (w[i] / nw[i], l_[i] / nl[i])
        hits += 1 if a > b else 0
    return hits / len(w)


def np_idealized(rw, rl, p, beta):
    return float(np.mean([1.0 if rw[i] - rl[i] + math.log(p[i] / (1 - p[i])) / beta > 0 else 0.0
                          for i in range(len(rw))]))


def np_dpo_loss_at_flip(rw, rl, beta):
    return np.array([math.log1p(math.exp(-beta * (rl[i] - rw[i]))) for i in range(len(rw))])


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_topk(logits, k, renormalize):
    """Sort the probabilities of each row, keep the k largest; mass, entropy (renormalised or raw)."""
    p = np_softmax(logits).reshape(-1, logits.shape[-1])
    mass, ent = [], []
    for row in p:
        top = np.sort(row)[::-1][:k]
        mass.append(top.sum())
        q = top / top.sum() if renormalize else top
        ent.append(-sum(v * math.log(v) for v in q if v > 0))
    shape = logits.shape[:-1]
    return np.array(mass).reshape(shape), np.array(ent).reshape(shape)


# ------------------------------------------------------------------------------------------------------------
# ranking accuracy
# ------------------------------------------------------------------------------------------------------------


def test_ranking_accuracy_matches_numpy_and_is_strict_on_ties(rng):
    w = rng.normal(size=50).astype(np.float32)
    l_ = rng.normal(size=50).astype(np.float32)
    l_[:10] = w[:10]  # exact ties count as wrong
    got = float(ranking_accuracy(jnp.asarray(w), jnp.asarray(l_)))
    assert got == pytest.approx(np_ranking_accuracy(w, l_), abs=1e-7)
    assert float(ranking_accuracy(jnp.asarray(w), jnp.asarray(w))) == 0.0
    assert float(ranking_accuracy(jnp.asarray([-1.0, -3.0]), jnp.asarray([-2.0, -2.0]))) == 0.5


def test_ranking_accuracy_length_normalised(rng):
    n = 40
    nw = rng.integers(1, 30, n)
    nl = rng.integers(1, 30, n)
    w = (rng.normal(size=n) - 1.0) * nw
    l_ = (rng.normal(size=n) - 1.0) * nl
    w[:5] = l_[:5] / nl[:5] * nw[:5]  # equal per-token log-probs: ties after normalisation
    got = float(ranking_accuracy(jnp.asarray(w), jnp.asarray(l_), chosen_lengths=jnp.asarray(nw),
                                 rejected_lengths=jnp.asarray(nl)))
    want = np_ranking_accuracy(w.astype(np.float32), l_.astype(np.float32),
                               nw.astype(np.float32), nl.astype(np.float32))
    assert got == pytest.approx(want, abs=1e-7)
    # normalisation changes the answer: long chosen with the same per-token log-prob loses unnormalised
    args = (jnp.asarray([-20.0]), jnp.asarray([-4.0]))
    assert float(ranking_accuracy(*args)) == 0.0
    assert float(ranking_accuracy(*args, chosen_lengths=jnp.asarray([10]), rejected_lengths=jnp.asarray([1]))) == 1.0


def test_idealized_ranking_accuracy_matches_numpy(rng):
    n = 60
    rw, rl = rng.normal(size=n) * 3, rng.normal(size=n) * 3
    p = rng.uniform(0.01, 0.99, n)
    for beta in (0.1, 1.0, 5.0):
        got = float(idealized_ranking_accuracy(jnp.asarray(rw, jnp.float32), jnp.asarray(rl, jnp.float32),
                                               jnp.asarray(p, jnp.float32), beta))
        want = np_idealized(rw.astype(np.float32), rl.astype(np.float32), p.astype(np.float32), beta)
        assert got == pytest.approx(want, abs=1e-7)


def test_idealized_accuracy_is_the_ranking_accuracy_of_the_exact_optimum():
    """π* ∝ π_ref·exp(r*/β) on a bandit: its ranking accuracy on pairs equals the idealised formula."""
    rng = np.random.default_rng(3)
    with jax.enable_x64():
        k, beta = 12, 0.5
        ref = np.log(rng.dirichlet(np.ones(k)))
        r = rng.normal(size=k)
        opt = ref + r / beta
        opt = opt - np.log(np.exp(opt).sum())
        i, j = np.triu_indices(k, 1)
        swap = r[i] < r[j]  # y_w is the arm with the larger true reward
        wi, li = np.where(swap, j, i), np.where(swap, i, j)
        p = 1.0 / (1.0 + np.exp(-(r[wi] - r[li])))
        got = float(idealized_ranking_accuracy(jnp.asarray(ref[wi]), jnp.asarray(ref[li]), jnp.asarray(p), beta))
        want = float(ranking_accuracy(jnp.asarray(opt[wi]), jnp.asarray(opt[li])))
        assert got == want
        assert 0.0 < got < 1.0  # the reference misranks some pairs that the optimum does not flip


def test_idealized_accuracy_stable_logit_near_one():
    # p = 1 − 1e-12 in float64: logit ≈ 27.63; a naive log(p/(1−p)) in float32 would be inf
    with jax.enable_x64():
        p = jnp.asarray([1 - 1e-12])
        assert float(idealized_ranking_accuracy(jnp.asarray([-27.0]), jnp.asarray([0.0]), p, 1.0)) == 1.0
        assert float(idealized_ranking_accuracy(jnp.asarray([-28.0]), jnp.asarray([0.0]), p, 1.0)) == 0.0


def test_dpo_loss_at_flip_matches_numpy_and_the_dpo_loss_at_the_flip(rng):
    rw, rl = rng.normal(size=20) * 5, rng.normal(size=20) * 5
    for beta in (0.1, 1.0):
        got = np.asarray(dpo_loss_at_flip(jnp.asarray(rw, jnp.float32), jnp.asarray(rl, jnp.float32), beta))
        np.testing.assert_allclose(got, np_dpo_loss_at_flip(rw, rl, beta), rtol=2e-5, atol=1e-6)
        # a policy with ln π(y_w) = ln π(y_l) (exactly at the flip): DPO's loss −log σ(β·h) equals it
        lp = rng.normal(size=20)
        h = (lp - rw) - (lp - rl)
        np.testing.assert_allclose(got, np.log1p(np.exp(-beta * h)), rtol=2e-5, atol=1e-6)
    # large margins stay finite (log_sigmoid form): m = −1e4 gives 1e4·β
    big = dpo_loss_at_flip(jnp.asarray([1e4]), jnp.asarray([0.0]), 1.0)
    assert float(big[0]) == pytest.approx(1e4)


# ------------------------------------------------------------------------------------------------------------
# top-k indicators
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_mass_and_entropy_match_numpy(rng, k):
    logits = (rng.normal(size=(3, 4, 16)) * 2).astype(np.float32)
    for renorm in (True, False):
        mass, ent = np_topk(logits.astype(np.float64), k, renorm)
        np.testing.assert_allclose(np.asarray(topk_mass(jnp.asarray(logits), k)), mass, rtol=1e-5, atol=1e-6)
        got = np.asarray(topk_entropy(jnp.asarray(logits), k, renormalize=renorm))
        np.testing.assert_allclose(got, ent, rtol=1e-5, atol=1e-6)
    # the raw top-k entropy is M·(H_renorm − ln M)
    m = np.asarray(topk_mass(jnp.asarray(logits), k), np.float64)
    h = np.asarray(topk_entropy(jnp.asarray(logits), k), np.float64)
    raw = np.asarray(topk_entropy(jnp.asarray(logits), k, renormalize=False), np.float64)
    np.testing.assert_allclose(raw, m * (h - np.log(m)), rtol=1e-5, atol=1e-6)
    assert np.all(h <= np.log(k) + 1e-6)


def test_topk_at_full_vocabulary_is_mass_one_and_full_entropy(rng):
    logits = rng.normal(size=(5, 9)).astype(np.float32) * 3
    p = np_softmax(logits)
    full = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(np.asarray(topk_mass(jnp.asarray(logits), 9)), np.ones(5), atol=1e-6)
    for renorm in (True, False):
        np.testing.assert_allclose(np.asarray(topk_entropy(jnp.asarray(logits), 9, renormalize=renorm)), full,
                                   rtol=1e-5)


def test_topk_handles_ties_bf16_and_masked_vocabulary():
    # ties at the k-th place: the mass does not depend on which tied token is kept
    logits = jnp.log(jnp.asarray([0.4, 0.2, 0.2, 0.2]))
    assert float(topk_mass(logits, 2)) == pytest.approx(0.6, abs=1e-6)
    assert float(topk_entropy(logits, 2)) == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3),
                                                           abs=1e-6)
    # bf16 logits are reduced in float32
    bf = jnp.asarray([[3.0, 1.0, 0.5, -2.0]], jnp.bfloat16)
    assert topk_mass(bf, 2).dtype == jnp.float32
    mass, ent = np_topk(np.asarray(bf, np.float64), 2, True)
    np.testing.assert_allclose(np.asarray(topk_mass(bf, 2)), mass, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(topk_entropy(bf, 2)), ent, rtol=1e-6)
    # −inf logits (masked tokens) inside the top k contribute 0, not nan
    masked = jnp.asarray([0.0, 0.0, -jnp.inf, -jnp.inf])
    assert float(topk_mass(masked, 3)) == pytest.approx(1.0)
    assert float(topk_entropy(masked, 3)) == pytest.approx(math.log(2), abs=1e-6)
    assert float(topk_entropy(masked, 4, renormalize=False)) == pytest.approx(math.log(2), abs=1e-6)


# ------------------------------------------------------------------------------------------------------------
# jit == no-jit, vmap
# ------------------------------------------------------------------------------------------------------------


def test_jit_equals_eager(rng):
    w, l_ = jnp.asarray(rng.normal(size=16), jnp.float32), jnp.asarray(rng.normal(size=16), jnp.float32)
    nw, nl = jnp.asarray(rng.integers(1, 9, 16)), jnp.asarray(rng.integers(1, 9, 16))
    p = jnp.asarray(rng.uniform(0.05, 0.95, 16), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(4, 11)), jnp.float32)
    pairs = [
        (ranking_accuracy(w, l_), jax.jit(ranking_accuracy)(w, l_)),
        (ranking_accuracy(w, l_, chosen_lengths=nw, rejected_lengths=nl),
         jax.jit(lambda a, b, c, d: ranking_accuracy(a, b, chosen_lengths=c, rejected_lengths=d))(w, l_, nw, nl)),
        (idealized_ranking_accuracy(w, l_, p, 0.3), jax.jit(idealized_ranking_accuracy)(w, l_, p, 0.3)),
        (dpo_loss_at_flip(w, l_, 0.3), jax.jit(dpo_loss_at_flip)(w, l_, 0.3)),
        (topk_mass(logits, 3), jax.jit(topk_mass, static_argnums=1)(logits, 3)),
        (topk_entropy(logits, 3), jax.jit(topk_entropy, static_argnums=1)(logits, 3)),
        (topk_entropy(logits, 3, renormalize=False),
         jax.jit(lambda x: topk_entropy(x, 3, renormalize=False))(logits)),
    ]
    for eager, jitted in pairs:
        np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-7)
    # vmap over a batch of problems equals the per-problem values
    ws = jnp.stack([w, l_])
    got = jax.vmap(ranking_accuracy)(ws, ws[::-1])
    np.testing.assert_allclose(np.asarray(got), [float(ranking_accuracy(w, l_)), float(ranking_accuracy(l_, w))])


# ------------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------------


def test_validation_errors_name_the_argument():
    a = jnp.zeros(3)
    cases = [
        (lambda: ranking_accuracy(a, jnp.zeros(4)), "rejected_logps"),
        (lambda: ranking_accuracy(a, a, chosen_lengths=jnp.ones(3)), "rejected_lengths"),
        (lambda: ranking_accuracy(a, a, chosen_lengths=jnp.ones(3), rejected_lengths=jnp.zeros(3)),
         "rejected_lengths"),
        (lambda: ranking_accuracy(a, a, chosen_lengths=jnp.ones(2), rejected_lengths=jnp.ones(3)), "chosen_lengths"),
        (lambda: idealized_ranking_accuracy(a, a, jnp.full(3, 0.5), 0.0), "beta=0.0"),
        (lambda: idealized_ranking_accuracy(a, a, jnp.asarray([0.5, 1.0, 0.2]), 0.1), "pref_probs"),
        (lambda: idealized_ranking_accuracy(a, a, jnp.asarray([0.5, 0.0, 0.2]), 0.1), "pref_probs"),
        (lambda: idealized_ranking_accuracy(a, a, jnp.full(2, 0.5), 0.1), "pref_probs"),
        (lambda: dpo_loss_at_flip(a, a, -1.0), "beta=-1.0"),
        (lambda: dpo_loss_at_flip(a, jnp.zeros(2), 0.1), "ref_rejected_logps"),
        (lambda: topk_mass(jnp.zeros((2, 5)), 0), "k=0"),
        (lambda: topk_mass(jnp.zeros((2, 5)), 6), "k=6"),
        (lambda: topk_entropy(jnp.zeros((2, 5)), 9), "k=9"),
        (lambda: topk_entropy(jnp.zeros((2, 5)), 2.5), "k=2.5"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=needle):
            call()

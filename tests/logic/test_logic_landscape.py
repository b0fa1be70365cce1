"""Structures, truth tables, counts, the entailment order and its monotonicity, equivalence classes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

from jalign import logic
from jalign.logic import M_l, M_w, PreferenceStructure
from jalign.losses import PairwiseLogps

# Card: CPO worlds TT both, TF ✓, FT ✗, FF excluded (order TT, TF, FT, FF; first letter = M_w).
CARD_TABLES = {
    "cpo": ["✓✗", "✓", "✗", "·"],
    "orpo": ["·", "✓", "✗", "·"],
    "uncpo": ["✓", "✓", "✗", "✓"],
}


@pytest.mark.parametrize("name", sorted(CARD_TABLES))
def test_truth_tables(name):
    rows = logic.decompile(name).truth_table()
    assert [r["world"] for r in rows] == ["TT", "TF", "FT", "FF"]
    assert [(r["M_w"], r["M_l"]) for r in rows] == [(True, True), (True, False), (False, True), (False, False)]
    assert [r["label"] for r in rows] == CARD_TABLES[name]


def test_dpo_truth_table_has_the_dpo_ratio_worlds():
    # ✓ worlds = models of M_w ∧ Ref_l, ✗ worlds = models of M_l ∧ Ref_w (so WMC ratio = π_w ref_l / π_l ref_w)
    s = logic.decompile("dpo")
    assert s.variables == ("M_w", "M_l", "Ref_w", "Ref_l")
    for w, c, x in zip(logic.worlds(4), s.check_mask, s.cross_mask, strict=True):
        assert c == (w[0] and w[3])
        assert x == (w[1] and w[2])


def test_counts():
    assert [logic.count_losses(n) for n in range(5)] == [4, 16, 256, 65536, 4294967296]
    assert logic.count_losses(4) == 4 ** (2**4)
    with pytest.raises(ValueError, match="n_vars"):
        logic.count_losses(-1)
    for n in (1, 2):
        labels = {s.labels for s in logic.enumerate_losses(n)}
        assert len(labels) == logic.count_losses(n)


def test_enumerated_structures_realise_their_labels():
    for labels in [(0, 1, 2, 3), (3, 3, 0, 1), (1, 1, 1, 1), (2, 0, 2, 0)]:
        s = logic.from_labels(labels, ("M_w", "M_l"))
        assert s.labels == labels
    all2 = list(logic.enumerate_losses(2))
    assert all2[0].labels == (0, 0, 0, 0) and all2[-1].labels == (3, 3, 3, 3)
    assert all(s.labels == tuple("·✓✗B".index(ch) for ch in s.name) for s in all2)


def test_classical_core_entailment_implies_structure_entailment():
    cores = [M_w & ~M_l, ~M_l, M_w, M_l >> M_w, sympy.true, M_w | M_l, M_w & M_l]
    conds = [sympy.true, M_w | M_l, sympy.Xor(M_w, M_l)]
    adds = [sympy.false, M_w & M_l]
    for p2, p1, c, a in itertools.product(cores, cores, conds, adds):
        if sympy.satisfiable(p2 & ~p1) is False:  # p2 ⊨ p1 classically
            s2 = PreferenceStructure(core=p2, conditioning=c, additive=a, variables=("M_w", "M_l"))
            s1 = PreferenceStructure(core=p1, conditioning=c, additive=a, variables=("M_w", "M_l"))
            assert logic.entails(s2, s1), (p2, p1, c, a)


def _all_losses_on_random_probs(structures, rng, n=256):
    """−log σ(ρ) of every structure at n random probability pairs, [S, n] (float64, one kernel)."""
    p = rng.uniform(1e-4, 1 - 1e-4, size=(2, n))
    with jax.enable_x64():
        rho = np.asarray(logic.rho_many(structures, jnp.log(jnp.asarray(p.T))))
    with np.errstate(invalid="ignore", over="ignore"):
        return np.logaddexp(0.0, -rho)


@pytest.fixture(scope="module")
def landscape():
    S = list(logic.enumerate_losses(2))
    L = _all_losses_on_random_probs(S, np.random.default_rng(1))
    return S, L


def test_entailment_orders_losses_on_random_probabilities(landscape):
    S, L = landscape
    C = np.stack([s.check_mask for s in S])
    X = np.stack([s.cross_mask for s in S])
    le = np.all(C[:, None] <= C[None], -1) & np.all(X[:, None] >= X[None], -1)  # le[i, j]: S[i] ⊨ S[j]
    defined = ~np.isnan(L).any(1)
    n_checked = 0
    for i, j in zip(*np.nonzero(le), strict=True):
        if defined[i] and defined[j]:
            with np.errstate(invalid="ignore"):
                ok = (L[i] >= L[j] - 1e-12) | (L[i] == L[j])  # inf ≥ inf
            assert ok.all(), (S[i].name, S[j].name)
            n_checked += 1
    assert n_checked > 5000  # 3^8 = 6561 comparable pairs in B_8, minus those with the undefined bottom-most


def test_rho_many_matches_compiled_losses(landscape, rng):
    S, _ = landscape
    p = rng.uniform(1e-3, 1 - 1e-3, size=(2, 16))
    with jax.enable_x64():
        b = PairwiseLogps(chosen_logps=jnp.log(p[0]), rejected_logps=jnp.log(p[1]))
        many = np.asarray(logic.rho_many(S, jnp.stack([b.chosen_logps, b.rejected_logps], -1)))
        for i in (1, 77, 140, 201, 255):
            np.testing.assert_allclose(many[i], logic.compile_rho(S[i])(b), rtol=1e-12)
    assert np.isnan(many[0]).all()  # all worlds excluded: undefined


def test_hasse_diagram_is_the_boolean_lattice_b8(landscape):
    S, _ = landscape
    edges = logic.hasse_edges(S)
    assert len(edges) == 8 * 2**7  # B_8 has 8·2^7 covering pairs
    for i, j in edges:
        assert logic.entails(S[i], S[j]) and logic.rank(S[j]) == logic.rank(S[i]) + 1
    assert sorted(logic.rank(s) for s in S) == sorted(bin(k).count("1") for k in range(256))


def test_relations_between_named_losses():
    d = logic.decompile
    assert logic.relation(d("dpo"), d("ipo")) == "equivalent"
    assert logic.relation(d("cpo"), d("simpo")) == "equivalent"
    assert logic.relation(d("cpo"), d("uncpo")) == "entails"
    assert logic.relation(d("orpo"), d("uncpo")) == "entails"
    assert logic.relation(d("uncpo"), d("orpo")) == "entailed"
    assert logic.relation(d("cpo"), d("orpo")) == "incomparable"
    assert logic.relation(d("ceunl"), d("ce")) == "entails"
    assert logic.relation(d("ceunl"), d("unl")) == "entails"
    assert logic.relation(d("ce"), d("uncpo")) == "entails" and logic.relation(d("unl"), d("uncpo")) == "entails"
    # ρ(cCPO) = log π_w/(π_l(1−π_w)) vs ρ(CPO) = log π_w/π_l: CPO has one more ✗ world (TT)
    assert logic.relation(d("cpo"), d("ccpo")) == "entails"
    assert logic.relation(d("cfunl"), d("ccpo")) == "entails"
    # the reference-free CPO against DPO: lifted to four variables they are incomparable
    assert logic.relation(d("cpo"), d("dpo")) == "incomparable"
    # same ρ, different worlds: ✓{TT,TF} ✗{FT,FF} (= CE) and ✓{TF} ✗{FF}
    a = logic.from_labels((0, 1, 0, 2), ("M_w", "M_l"))
    assert logic.relation(a, d("ce")) == "same-rho"


def test_equivalence_classes_are_exactly_the_equal_loss_functions(landscape):
    S, L = landscape
    classes = logic.equivalence_classes(S)
    assert sum(len(c) for c in classes) == 256
    assert len(classes) == 190
    for c in classes:
        for j in c[1:]:
            np.testing.assert_allclose(L[j], L[c[0]], rtol=1e-9, atol=1e-12)
    reps = [c[0] for c in classes if not np.isnan(L[c[0]]).any()]
    R = L[reps]
    # distinct classes differ somewhere on the random points
    fin = np.where(np.isfinite(R), R, 1e300)
    diff = np.abs(fin[:, None, :] - fin[None, :, :]).max(-1)
    np.fill_diagonal(diff, 1.0)
    assert diff.min() > 1e-9
    # the 15 labellings with ✗ empty (✓ non-empty) all give loss 0, the 15 with ✓ empty give +inf
    sizes = sorted(len(c) for c in classes)
    assert sizes.count(15) == 3  # ✗-free (loss 0), ✓-free (loss ∞), and ✓ = ✗ (ρ = 0, loss log 2)


def test_structure_validation():
    with pytest.raises(ValueError, match="not listed"):
        PreferenceStructure(core=M_w, variables=("M_l",))
    with pytest.raises(ValueError, match="cannot parse"):
        PreferenceStructure(core="M_w &&& M_l")
    with pytest.raises(ValueError, match="labels"):
        logic.from_labels((0, 1, 4, 0), ("M_w", "M_l"))
    with pytest.raises(ValueError, match="monomial"):
        logic.decompile_ratio("M_w + M_l", "M_l")
    with pytest.raises(ValueError, match="more than once"):
        logic.decompile_ratio("M_w*(1 - M_w)", "M_l")
    with pytest.raises(ValueError, match="constant factor"):
        logic.decompile_ratio("2*M_w", "M_l")
    with pytest.raises(KeyError, match="Valid:"):
        logic.decompile("nope")
    s = PreferenceStructure(core="M_l >> M_w", conditioning="M_w | M_l", additive="M_w & M_l")
    assert logic.equivalent(s, logic.decompile("cpo"))

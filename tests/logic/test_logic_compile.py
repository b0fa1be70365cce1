"""The semantic-loss compiler against closed forms written independently in numpy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

from jalign import logic
from jalign.logic import M_l, M_w, PreferenceStructure, Ref_l, Ref_w
from jalign.losses import PairwiseLogps


def _probs(rng, n=64, lo=1e-3, hi=1 - 1e-3):
    return rng.uniform(lo, hi, size=(4, n))


def _batch(pw, pl, rw=None, rl=None):
    f = lambda p: None if p is None else jnp.asarray(np.log(p))
    return PairwiseLogps(chosen_logps=f(pw), rejected_logps=f(pl), ref_chosen_logps=f(rw), ref_rejected_logps=f(rl))


def _nls(z):  # −log σ(z) in numpy
    return np.logaddexp(0.0, -z)


CLOSED_FORMS = {
    # the card's closed forms of ρ (inside −log σ(·))
    "cpo": lambda w, l, rw, rl: np.log(w / l),
    "orpo": lambda w, l, rw, rl: np.log((w / (1 - w)) / (l / (1 - l))),
    "dpo": lambda w, l, rw, rl: np.log(w / rw) - np.log(l / rl),
    "uncpo": lambda w, l, rw, rl: np.log((l * w + 1 - l) / (l * (1 - w))),
    "ref_variant": lambda w, l, rw, rl: np.log(w * rl * (1 - l) / (l * rw * (1 - w))),
    # jalign's landscape losses
    "ccpo": lambda w, l, rw, rl: np.log(w / (l * (1 - w))),
    "cfunl": lambda w, l, rw, rl: np.log(w * (1 - l) / l),
    "ce": lambda w, l, rw, rl: np.log(w / (1 - w)),
    "unl": lambda w, l, rw, rl: np.log((1 - l) / l),
    "ceunl": lambda w, l, rw, rl: np.log(w * (1 - l) / (1 - w * (1 - l))),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_closed_forms(name, rng):
    w, l, rw, rl = _probs(rng)
    with jax.enable_x64():
        got = np.asarray(logic.compile(logic.decompile(name))(_batch(w, l, rw, rl)))
    np.testing.assert_allclose(got, _nls(CLOSED_FORMS[name](w, l, rw, rl)), rtol=1e-10, atol=1e-12)


def test_semantic_loss_of_unconditioned_structures_is_xu_semantic_loss(rng):
    # With P_C = ⊤, P_A = ⊥: WMC(✓) + WMC(✗) = 1, so −log σ(ρ) = −log WMC(P) (Xu et al. 2018).
    w, l, _, _ = _probs(rng)
    with jax.enable_x64():
        b = _batch(w, l)
        np.testing.assert_allclose(logic.compile(logic.decompile("ce"))(b), -np.log(w), rtol=1e-10)
        np.testing.assert_allclose(logic.compile(logic.decompile("unl"))(b), -np.log1p(-l), rtol=1e-10)
        np.testing.assert_allclose(logic.compile(logic.decompile("ceunl"))(b), -np.log(w * (1 - l)), rtol=1e-10)


@pytest.mark.parametrize("beta", [0.1, 2.5])
def test_f_parameterisations(beta, rng):
    w, l, rw, rl = _probs(rng)
    rho = np.log(w / rw) - np.log(l / rl)
    s = logic.decompile("dpo")
    with jax.enable_x64():
        b = _batch(w, l, rw, rl)
        np.testing.assert_allclose(logic.compile(s, "logistic", beta=beta)(b), _nls(beta * rho), rtol=1e-10)
        np.testing.assert_allclose(
            logic.compile(s, "hinge", beta=beta)(b), np.maximum(0, 1 - beta * rho), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(logic.compile(s, "squared", beta=beta)(b), (rho - 1 / (2 * beta)) ** 2, rtol=1e-10)
        np.testing.assert_allclose(logic.compile_rho(s)(b), rho, rtol=1e-10, atol=1e-12)


def _brute_wmc(p_NxB, mask, n):
    total = np.zeros(p_NxB.shape[1])
    for world, keep in zip(itertools.product([True, False], repeat=n), mask, strict=True):
        if keep:
            total += np.prod([p if t else 1 - p for p, t in zip(p_NxB, world, strict=True)], axis=0)
    return total


def test_log_wmc_matches_brute_force(rng):
    p = rng.uniform(0.01, 0.99, size=(3, 10))
    with jax.enable_x64():
        logw = jnp.asarray(np.log(p.T))
        for mask_bits in [0b10110010, 0b00000001, 0b11111111]:
            mask = np.array([(mask_bits >> i) & 1 for i in range(8)], bool)
            got = logic.log_wmc(logw, mask)
            np.testing.assert_allclose(np.exp(got), _brute_wmc(p, mask, 3), rtol=1e-10)


@pytest.mark.parametrize("trial", range(6))
def test_general_decompiler_round_trip_on_random_monomial_ratios(trial, rng):
    """compile(decompile_ratio(t, b)) == −log σ(log t/b) for random monomials over the four variables."""
    r = np.random.default_rng(trial)
    syms = [M_w, M_l, Ref_w, Ref_l]
    while True:
        st = r.integers(0, 3, size=4)  # 0 absent, 1 π, 2 (1 − π)
        sb = r.integers(0, 3, size=4)
        if st.any() and sb.any():
            break
    mono = lambda codes: sympy.Mul(*[s if c == 1 else (1 - s) for s, c in zip(syms, codes, strict=True) if c])
    top, bot = mono(st), mono(sb)
    s = logic.decompile_ratio(top, bot)
    w, l, rw, rl = _probs(rng)
    vals = {"M_w": w, "M_l": l, "Ref_w": rw, "Ref_l": rl}
    num = lambda codes: np.prod(
        [vals[str(v)] if c == 1 else 1 - vals[str(v)] for v, c in zip(syms, codes, strict=True) if c], axis=0
    )
    with jax.enable_x64():
        got = logic.compile(s)(_batch(w, l, rw, rl))
    np.testing.assert_allclose(got, _nls(np.log(num(st) / num(sb))), rtol=1e-9, atol=1e-12)


def test_equivalent_formulas_give_identical_losses(rng):
    cpo = logic.decompile("cpo")
    # the same semantics written differently: implication as a disjunction, De Morgan, redundant terms
    alt = PreferenceStructure(
        core=~M_l | M_w,
        conditioning=~(~M_w & ~M_l),
        additive=(M_w & M_l) | (M_w & M_l & ~M_w),
    )
    # and a different core that agrees with CPO's on every world P_C keeps (FF is excluded)
    alt2 = PreferenceStructure(core=M_w, conditioning=M_w | M_l, additive=M_w & M_l)
    w, l, _, _ = _probs(rng)
    b = _batch(w, l)
    for s in (alt, alt2):
        assert logic.equivalent(s, cpo)
    for f in ("logistic", "squared"):
        ref = np.asarray(logic.compile(cpo, f, beta=0.7)(b))
        for s in (alt, alt2):
            np.testing.assert_array_equal(logic.compile(s, f, beta=0.7)(b), ref)


def test_jit_equals_no_jit(rng):
    w, l, rw, rl = _probs(rng)
    b = _batch(w, l, rw, rl)
    for name in ("dpo", "uncpo", "ref_variant", "orpo"):
        fn = logic.compile(logic.decompile(name), beta=0.3)
        with jax.disable_jit():
            eager = np.asarray(fn(b))
        np.testing.assert_allclose(jax.jit(fn)(b), eager, rtol=1e-6)
        np.testing.assert_allclose(fn(b), eager, rtol=1e-6)


@pytest.mark.parametrize("name", ["cpo", "uncpo", "ref_variant", "ceunl"])
def test_finite_values_and_gradients_at_extreme_log_probs(name):
    lp = jnp.asarray([-1e-8, -1e-20, 0.0, -1e-3, -50.0, -1e4, -3.0, -700.0], jnp.float32)
    b = PairwiseLogps(
        chosen_logps=lp, rejected_logps=lp[::-1], ref_chosen_logps=jnp.roll(lp, 3), ref_rejected_logps=jnp.roll(lp, 5)
    )
    fn = logic.compile(logic.decompile(name))
    vals = fn(b)
    assert np.all(np.isfinite(vals)), vals
    grads = jax.grad(lambda x: fn(x, validate=False).sum())(b)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g)), (name, g)


def test_log1mexp_accuracy():
    import mpmath

    mpmath.mp.dps = 120
    a = np.array([-1e-10, -1e-5, -0.1, -0.69, -0.7, -1.0, -20.0, -100.0])
    exact = np.array([float(mpmath.log(1 - mpmath.exp(mpmath.mpf(float(x))))) for x in a])
    with jax.enable_x64():
        np.testing.assert_allclose(logic.log1mexp(jnp.asarray(a)), exact, rtol=1e-14)
    got32 = np.asarray(logic.log1mexp(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(got32, exact.astype(np.float32), rtol=1e-6, atol=1e-30)  # e^-100 underflows


def test_custom_variables_bind_through_fields(rng):
    # A new variable Len (e.g. "the response is short") bound to a callable; ρ = log π_w·q / π_l.
    Len = logic.var("Len")
    s = logic.decompile_ratio(M_w * Len, M_l)
    q = rng.uniform(0.1, 0.9, 16)
    w, l, _, _ = _probs(rng, 16)
    with jax.enable_x64():
        b = _batch(w, l)
        fn = logic.compile(s, fields={"Len": lambda batch: jnp.log(jnp.asarray(q))})
        np.testing.assert_allclose(fn(b), _nls(np.log(w * q / l)), rtol=1e-10)
    with pytest.raises(ValueError, match="Len"):
        logic.compile(s)


def test_bad_inputs_raise_clear_errors(rng):
    s = logic.decompile("dpo")
    w, l, rw, rl = _probs(rng, 4)
    with pytest.raises(ValueError, match="beta"):
        logic.compile(s, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        logic.compile(s, beta=float("nan"))
    with pytest.raises(ValueError, match="valid: logistic"):
        logic.compile(s, f="exp")
    fn = logic.compile(s)
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        fn(_batch(w, l))
    bad = np.log(w)
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"'chosen_logps' is not finite at example 2"):
        fn(PairwiseLogps(jnp.asarray(bad), jnp.log(l), jnp.log(rw), jnp.log(rl)))
    pos = np.log(l)
    pos[1] = 0.5
    with pytest.raises(ValueError, match=r"'rejected_logps'.*<= 0.*example 1"):
        fn(PairwiseLogps(jnp.log(w), jnp.asarray(pos), jnp.log(rw), jnp.log(rl)))
    with pytest.raises(ValueError, match="shape"):
        fn(PairwiseLogps(jnp.log(w)[None], jnp.log(l)[None], jnp.log(rw)[None], jnp.log(rl)[None]))
    empty = PreferenceStructure(core=M_w, conditioning=sympy.false, additive=sympy.false)
    with pytest.raises(ValueError, match="no ✓ and no ✗"):
        logic.compile(empty)


def test_degenerate_structures_have_limit_losses(rng):
    w, l, _, _ = _probs(rng, 8)
    b = _batch(w, l)
    never_wrong = PreferenceStructure(core=M_w, conditioning=M_w, additive=sympy.false)  # ✗ = ∅
    never_right = PreferenceStructure(core=M_w, conditioning=~M_w, additive=sympy.false)  # ✓ = ∅
    np.testing.assert_array_equal(logic.compile(never_wrong)(b), 0.0)
    assert np.all(np.isinf(logic.compile(never_right)(b)))


def test_gradients_match_autodiff_of_the_closed_form(rng):
    w, l, rw, rl = _probs(rng, 16)
    with jax.enable_x64():
        b = _batch(w, l, rw, rl)
        fn = logic.compile(logic.decompile("ref_variant"), beta=0.7)

        def closed(batch):
            lw, ll = batch.chosen_logps, batch.rejected_logps
            rho = (lw - jnp.log1p(-jnp.exp(lw))) - (ll - jnp.log1p(-jnp.exp(ll)))
            rho = rho + batch.ref_rejected_logps - batch.ref_chosen_logps
            return -jax.nn.log_sigmoid(0.7 * rho)

        g1 = jax.grad(lambda x: fn(x, validate=False).sum())(b)
        g2 = jax.grad(lambda x: closed(x).sum())(b)
        for a, c in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
            np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-12)
        from jax.test_util import check_grads

        check_grads(lambda lw: fn(PairwiseLogps(lw, b.rejected_logps, b.ref_chosen_logps,
                                                              b.ref_rejected_logps), validate=False),
                                  (b.chosen_logps,), order=1, modes=["rev"])


def test_batched_equals_per_example_and_sharded_equals_unsharded(rng, mesh8):
    w, l, _, _ = _probs(rng, 16)
    b = _batch(w, l)
    fn = logic.compile(logic.decompile("uncpo"))
    full = np.asarray(fn(b))
    singles = [float(fn(_batch(w[i : i + 1], l[i : i + 1]))[0]) for i in (0, 7, 15)]
    np.testing.assert_allclose(full[[0, 7, 15]], singles, rtol=1e-6)
    sharding = jax.sharding.NamedSharding(mesh8, jax.sharding.PartitionSpec("data"))
    bs = jax.tree.map(lambda x: jax.device_put(x, sharding), b)
    np.testing.assert_allclose(jax.jit(fn)(bs), full, rtol=1e-6)

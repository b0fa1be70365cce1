"""jalign.losses.bind: a loss resolved and validated once, the fast function equal to the registry's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import losses


def _batch(n=5, seed=0):
    r = np.random.default_rng(seed)
    f = lambda: jnp.asarray(r.normal(-20, 3, n), jnp.float32)  # noqa: E731
    return losses.PairwiseLogps(f(), f(), f(), f(), jnp.asarray(r.integers(3, 9, n)), jnp.asarray(r.integers(3, 9, n)))


def test_bound_equals_the_registry_and_the_closed_form():
    b = _batch()
    dpo = losses.bind("dpo", beta=0.3)
    assert dpo.spec is losses.spec("dpo") and dpo.kind == "pairwise" and dpo.needs_reference
    assert dpo.hparams == {**losses.spec("dpo").hparams, "beta": 0.3}
    h = (b.chosen_logps - b.ref_chosen_logps) - (b.rejected_logps - b.ref_rejected_logps)
    want = np.logaddexp(0.0, -0.3 * np.asarray(h, np.float64))  # −log σ(βh)
    np.testing.assert_allclose(dpo(b), want, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(dpo)(b), dpo(b), rtol=1e-6)
    np.testing.assert_array_equal(dpo.validated(b), losses.get("dpo")(b, beta=0.3))
    # a bound loss re-bound: hyperparameters merged, the same core function
    again = losses.bind(dpo, beta=0.5)
    assert again.hparams["beta"] == 0.5 and again.spec is dpo.spec


def test_errors_are_raised_at_bind_time():
    with pytest.raises(KeyError, match="Did you mean: dpo"):
        losses.bind("dpoo")
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['betta'\]"):
        losses.bind("dpo", betta=0.1)
    with pytest.raises(ValueError, match="beta"):
        losses.bind("dpo", beta=-1.0)
    with pytest.raises(TypeError, match="registered name or an object with a .spec"):
        losses.bind(3)


def test_prefix_resolver_and_loss_objects():
    import jalign.logic  # registers "logic:"

    b = _batch()
    cpo = losses.bind("logic:cpo", beta=1.0)
    assert cpo.name == "logic:cpo" and cpo.kind == "pairwise"
    np.testing.assert_allclose(cpo(b), jalign.logic.as_loss("cpo")(b, beta=1.0), rtol=1e-6)
    with pytest.raises(ValueError, match="already registered"):
        losses.register_resolver("logic:", lambda name: None)

    class Plain:  # a loss object without the registry's validate= keyword
        spec = losses.spec("ipo")

        def __call__(self, batch, beta=0.1, ipo_average=True):
            return jnp.full(batch.chosen_logps.shape, beta)

    bound = losses.bind(Plain(), beta=0.7)
    np.testing.assert_array_equal(bound(b), np.float32(0.7))
    np.testing.assert_array_equal(bound.validated(b), np.float32(0.7))

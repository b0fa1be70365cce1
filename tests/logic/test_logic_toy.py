import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jalign import logic
from jalign.logic.toy import CategoricalToy, LogLinearToy, train_curves


def _manual(loss, toy, seed, steps, lr):
    params = toy.init(jax.random.key(seed))
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        g = jax.grad(lambda p: loss(toy.logps(p), validate=False).mean())(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state

    cw = []
    for _ in range(steps):
        cw.append(float(toy.logps(params).chosen_logps.mean()))
        params, state = step(params, state)
    cw.append(float(toy.logps(params).chosen_logps.mean()))
    return np.array(cw)


@pytest.mark.parametrize("toy", [CategoricalToy(n_responses=5, chosen=(0,), rejected=(1,)), LogLinearToy(dim=3)])
def test_train_curves_matches_a_plain_adam_loop(toy):
    loss = logic.compile(logic.decompile("uncpo"))
    out = train_curves(loss, toy.logps, toy.init, seeds=[3, 4], steps=5, learning_rate=0.1)
    assert out["chosen_logps"].shape == (2, 6)
    for row, seed in enumerate([3, 4]):
        np.testing.assert_allclose(out["chosen_logps"][row], _manual(loss, toy, seed, 5, 0.1), rtol=1e-5, atol=1e-6)


def test_cross_entropy_structure_drives_the_winner_to_its_exact_optimum():
    # ce: −log σ(log π_w/(1−π_w)) = −log π_w; with free logits the optimum is π_w → 1.
    toy = CategoricalToy(n_responses=4, chosen=(0,), rejected=(1,))
    out = train_curves(logic.compile(logic.decompile("ce")), toy.logps, toy.init, seeds=[0], steps=300,
                       learning_rate=0.1)
    np.testing.assert_allclose(out["loss"][0], -out["chosen_logps"][0], rtol=1e-5, atol=1e-6)
    assert out["chosen_logps"][0, -1] > -0.01


def test_non_finite_training_raises():
    toy = CategoricalToy(n_responses=3, chosen=(0,), rejected=(1,))
    bad = lambda batch, validate=False: jnp.log(batch.chosen_logps)  # log of a negative number: NaN
    with pytest.raises(FloatingPointError, match="non-finite loss at seed 0, step 0"):
        train_curves(bad, toy.logps, toy.init, seeds=[0], steps=2)


def test_toy_validation():
    with pytest.raises(ValueError, match="chosen"):
        CategoricalToy(n_responses=3, chosen=(0, 5), rejected=(1, 2))
    with pytest.raises(ValueError, match="differ"):
        CategoricalToy(n_responses=3, chosen=(0,), rejected=(0,))
    with pytest.raises(ValueError, match="similarity"):
        LogLinearToy(similarity=1.0)

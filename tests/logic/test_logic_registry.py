"""Round trip: compile(decompile(x)) equals the preference term of the registered loss x.

Covers whatever names exist in ``jalign.losses`` at test time (names not registered on this branch skip).
Per-loss mapping (documented in docs/logic.md): registry loss x with hyperparameters hp equals
``scale · compile(decompile(structure), f, beta=β(hp))`` on batches with unit lengths and with every
hyperparameter listed under ``zero`` set to 0 (terms outside the logic); ``residual="chosen-only"`` marks losses
with a term that cannot be switched off but depends on the chosen response only (ORPO's NLL).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import logic, losses
from jalign.losses import PairwiseLogps

_NLL_WEIGHTS = ("alpha", "cpo_alpha", "lambda_", "nll_weight", "lambda_nll")
_beta = lambda hp: hp["beta"]

ROUND_TRIP = {
    "sigmoid": dict(structure="dpo", f="logistic", beta=_beta, zero=("label_smoothing",)),
    "dpo": dict(structure="dpo", f="logistic", beta=_beta, zero=("label_smoothing",)),
    "cdpo": dict(structure="dpo", f="logistic", beta=_beta, zero=("label_smoothing",)),
    "robust": dict(structure="dpo", f="logistic", beta=_beta, zero=("label_smoothing",)),
    "ipo": dict(structure="ipo", f="squared", beta=_beta, zero=()),
    "hinge": dict(structure="dpo", f="hinge", beta=_beta, zero=()),  # SLiC with a reference model
    "rdpo": dict(structure="rdpo", f="logistic", beta=_beta, zero=("alpha",)),
    "dpop": dict(structure="dpop", f="logistic", beta=_beta, zero=("lambda_", "dpop_lambda", "lambda_dpop")),
    "cpo": dict(structure="cpo", f="logistic", beta=_beta, zero=_NLL_WEIGHTS),
    "simpo": dict(structure="simpo", f="logistic", beta=_beta, zero=("gamma", "simpo_gamma", "gamma_beta_ratio")),
    # original SLiC: max(0, δ − ρ) = δ · max(0, 1 − ρ/δ)
    "slic": dict(
        structure="slic", f="hinge", beta=lambda hp: 1.0 / hp["delta"], scale=lambda hp: hp["delta"], zero=_NLL_WEIGHTS
    ),
    # ORPO: NLL(y_w) + λ·(−log σ(log odds ratio)); λ is TRL's ``beta``, or ``lambda_``
    "orpo": dict(
        structure="orpo",
        f="logistic",
        beta=lambda hp: 1.0,
        scale=lambda hp: hp.get("lambda_", hp.get("beta")),
        zero=(),
        residual="chosen-only",
    ),
}


def _batch(rng, n=32, chosen=None):
    p = rng.uniform(0.02, 0.98, size=(4, n))
    lp = np.log(p)
    if chosen is not None:
        lp[0] = chosen
    lp[2] = np.minimum(lp[2], lp[0])  # ref_chosen ≤ chosen: DPOP's positive penalty is 0
    ones = np.ones(n)
    return PairwiseLogps(*(jnp.asarray(x) for x in lp), chosen_lengths=jnp.asarray(ones), rejected_lengths=jnp.asarray(ones))


def test_every_decompilable_registered_loss_has_a_mapping():
    missing = sorted(set(losses.names()) & set(logic.names()) - set(ROUND_TRIP))
    assert not missing, f"add these to ROUND_TRIP: {missing}"


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_compiled_structure_equals_registered_loss(name, rng):
    if name not in losses.names():
        pytest.skip(f"{name!r} is not registered on this branch")
    m = ROUND_TRIP[name]
    spec = losses.spec(name)
    hp = dict(spec.hparams)
    kw = {k: 0.0 for k in m["zero"] if k in hp}
    hp.update(kw)
    scale = m.get("scale", lambda hp: 1.0)(hp)
    compiled = logic.compile(logic.decompile(m["structure"]), m["f"], beta=m["beta"](hp))
    registered = losses.get(name)
    with jax.enable_x64():
        b = _batch(rng)
        got = np.asarray(registered(b, **kw))
        want = scale * np.asarray(compiled(b))
        if m.get("residual") == "chosen-only":
            b2 = _batch(np.random.default_rng(7), chosen=np.asarray(b.chosen_logps))
            r1 = got - want
            r2 = np.asarray(registered(b2, **kw)) - scale * np.asarray(compiled(b2))
            np.testing.assert_allclose(r1, r2, rtol=1e-6, atol=1e-8)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)

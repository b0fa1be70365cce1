"""Bad input raises clear errors naming the argument/field (and the example); good input passes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jalign import losses
from jalign.losses import _validate
from tests.losses.cases import (
    listwise_data,
    pairwise_data,
    to_listwise,
    to_pairwise,
    to_unpaired,
    unpaired_data,
)


@pytest.fixture
def pw(rng):
    return pairwise_data(rng, b=5)


def _check(name, batch, **hp):
    """Run exactly the wrapper's checks (hyperparameters, then batch) without evaluating the loss."""
    s = losses.spec(name)
    unknown = sorted(set(hp) - set(s.hparams))
    if unknown:  # the wrapper's own check; exercised through get() below as well
        losses.get(name)(batch, **hp)
    merged = {**s.hparams, **hp}
    _validate.check_hparams(name, merged, rules=s.hparam_rules, defaults=s.hparams, nullable=s.nullable)
    _validate.check_batch(s, batch, merged)


def test_shape_mismatch_names_both_fields(pw):
    b = to_pairwise({**pw, "ll": pw["ll"][:4]})
    with pytest.raises(ValueError, match=r"'rejected_logps' has shape \(4,\) but 'chosen_logps' has shape \(5,\)"):
        losses.get("dpo")(b)


def test_wrong_rank_is_rejected(pw):
    b = to_pairwise({**pw, "lw": pw["lw"][:, None]})
    with pytest.raises(ValueError, match="'chosen_logps' must have 1 dimension"):
        losses.get("dpo")(b)


@pytest.mark.parametrize("field", ["nw", "nl"])
def test_negative_lengths_name_field_and_example(pw, field):
    pw[field][3] = -2
    name = {"nw": "chosen_lengths", "nl": "rejected_lengths"}[field]
    with pytest.raises(ValueError, match=rf"'{name}' is negative at example 3"):
        losses.get("simpo")(to_pairwise(pw))
    # even for losses that do not read lengths, a negative length is malformed data
    with pytest.raises(ValueError, match=rf"'{name}' is negative at example 3"):
        losses.get("dpo")(to_pairwise(pw))


def test_zero_length_is_an_empty_response_for_length_losses(pw):
    pw["nl"][1] = 0
    with pytest.raises(ValueError, match=r"'rejected_lengths' is zero \(empty response\) at example 1"):
        losses.get("sigmoid_norm")(to_pairwise(pw))
    _check("dpo", to_pairwise(pw))  # DPO does not divide by lengths


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("field,key", [("chosen_logps", "lw"), ("ref_rejected_logps", "rl")])
def test_non_finite_logps_name_field_and_example(pw, bad, field, key):
    pw[key][2] = bad
    with pytest.raises(ValueError, match=rf"'{field}' is not finite at example 2 \(1 bad in total\)"):
        losses.get("ipo")(to_pairwise(pw))


@pytest.mark.parametrize("beta", [0.0, -0.1, np.nan, np.inf])
@pytest.mark.parametrize("name", ["dpo", "ipo", "simpo", "kto", "lipo"])
def test_beta_must_be_positive_and_finite(name, beta):
    batch = {"pairwise": to_pairwise(pairwise_data(np.random.default_rng(0), 3)),
             "unpaired": to_unpaired(unpaired_data(np.random.default_rng(0), 3)),
             "listwise": to_listwise(listwise_data(np.random.default_rng(0), 3))}[losses.spec(name).kind]
    with pytest.raises(ValueError, match=r"hyperparameter beta=.* must be > 0"):
        losses.get(name)(batch, beta=beta)


@pytest.mark.parametrize("eps", [-0.01, 0.5, 0.7, np.nan])
@pytest.mark.parametrize("name", ["dpo", "cdpo", "robust", "aot", "cpo"])
def test_label_smoothing_outside_half_open_interval(pw, name, eps):
    with pytest.raises(ValueError, match=r"label_smoothing=.* must be in \[0, 0.5\)"):
        losses.get(name)(to_pairwise(pw), label_smoothing=eps)


def test_exo_pair_needs_positive_label_smoothing(pw):
    with pytest.raises(ValueError, match=r"label_smoothing=0.0 must be in \(0, 0.5\)"):
        losses.get("exo_pair")(to_pairwise(pw), label_smoothing=0.0)


@pytest.mark.parametrize("hp,match", [
    ({"rpo_alpha": -1.0}, "rpo_alpha=-1.0 must be >= 0"),
    ({"ipo_average": 1}, "ipo_average=1 must be a bool"),
    ({"reward_shift": np.nan}, "reward_shift=nan must be finite"),
    ({"discopop_tau": 0.0}, "discopop_tau=0.0 must be > 0"),
    ({"gamma": np.inf}, "gamma=inf must be finite"),
    ({"beta": None}, "beta=None is not allowed"),
    ({"beta": "0.1"}, "beta='0.1' must be a number"),
])
def test_other_hyperparameters(pw, hp, match):
    name = {"rpo_alpha": "rpo", "ipo_average": "ipo", "reward_shift": "bco_pair", "discopop_tau": "discopop",
            "gamma": "simpo", "beta": "dpo"}[next(iter(hp))]
    with pytest.raises((ValueError, TypeError), match=match):
        losses.get(name)(to_pairwise(pw), **hp)


def test_unknown_hyperparameter_is_a_type_error_listing_valid_ones(pw):
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['betta'\]; valid: \['beta', 'label_smoothing'\]"):
        losses.get("dpo")(to_pairwise(pw), betta=0.2)


def test_missing_reference_fields(pw):
    b = to_pairwise(pw, reference=False)
    with pytest.raises(ValueError, match="needs batch field 'ref_chosen_logps', which is None"):
        losses.get("dpo")(b)
    _check("simpo", b)  # reference-free: fine


def test_missing_lengths_only_where_needed(pw):
    b = losses.PairwiseLogps(chosen_logps=pw["lw"], rejected_logps=pw["ll"], ref_chosen_logps=pw["rw"],
                             ref_rejected_logps=pw["rl"])
    with pytest.raises(ValueError, match="needs batch field 'chosen_lengths'"):
        losses.get("ipo")(b)  # TRL's default averages over tokens
    _check("ipo", b, ipo_average=False)
    with pytest.raises(ValueError, match="needs batch field 'chosen_lengths'"):
        losses.get("sft")(b)


def test_wrong_batch_type(pw):
    with pytest.raises(TypeError, match="expects a UnpairedLogps batch, got PairwiseLogps"):
        losses.get("kto")(to_pairwise(pw))


def test_unknown_loss_name_lists_close_matches():
    with pytest.raises(KeyError, match=r"unknown loss 'dpoo'.*Did you mean: .*dpo"):
        losses.get("dpoo")
    with pytest.raises(KeyError, match=r"Did you mean: .*sigmoid_norm"):
        losses.get("sigmoid_nrom")
    with pytest.raises(KeyError, match="Registered losses: .*ipo"):
        losses.get("zzzzzzzz")


def test_kto_needs_kl_fields_unless_z0_given(rng):
    u = unpaired_data(rng, 4)
    b = losses.UnpairedLogps(logps=u["logps"], ref_logps=u["ref_logps"], desirable=u["desirable"])
    with pytest.raises(ValueError, match="needs batch field 'kl_logps'"):
        losses.get("kto")(b)
    _check("kto", b, z0=0.5)
    with pytest.raises(ValueError, match="z0=None needs batch fields 'kl_logps'"):
        losses.get("kto")(b, validate=False)  # the core refuses too (a static check, also under jit)


def test_desirable_must_be_binary(rng):
    u = unpaired_data(rng, 4)
    u["desirable"] = np.array([1, 0, 2, 1])
    with pytest.raises(ValueError, match=r"'desirable' is not 0/1 \(or bool\) at example 2"):
        losses.get("bco")(to_unpaired(u))


def test_listwise_mask_and_padding_validation(rng):
    l = listwise_data(rng, b=3, k=4, ragged=False)
    l["mask"] = np.ones((3, 4), bool)
    l["mask"][1, 3] = False
    l["logps"][1, 3] = np.nan  # padding: ignored
    l["lengths"][1, 3] = 0
    _check("pro", to_listwise(l))
    l["logps"][2, 0] = np.inf  # valid entry: rejected
    with pytest.raises(ValueError, match=r"'logps' is not finite at example 2, position \(0,\)"):
        losses.get("pro")(to_listwise(l))
    l["logps"][2, 0] = -1.0
    l["mask"] = l["mask"].astype(float)
    l["mask"][0, 0] = 0.5
    with pytest.raises(ValueError, match=r"'mask' is not 0/1"):
        losses.get("lipo")(to_listwise(l))


def test_validate_false_and_jit_skip_value_checks(pw):
    pw["lw"][0] = np.nan
    b = to_pairwise(pw)
    out = np.asarray(jax.jit(lambda b: losses.get("dpo")(b))(b))  # abstract values: not checked under jit
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    with pytest.raises(ValueError, match="not finite"):
        losses.get("dpo")(b)


def test_sequence_logps_bad_shapes_and_labels():
    logits = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"labels has shape \(2, 4\)"):
        losses.sequence_logps(logits, np.zeros((2, 4), int), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\)"):
        losses.sequence_logps(logits, np.zeros((2, 3), int), np.ones((2, 2)))
    labels = np.array([[0, 1, 7], [0, -100, 2]])
    with pytest.raises(ValueError, match=r"labels out of range \[0, 5\) at example 0, position \(2,\) \(value 7\)"):
        losses.sequence_logps(logits, labels, np.ones((2, 3)))
    labels[0, 2] = 4  # -100 under a zero mask is padding: fine
    mask = np.array([[1, 1, 1], [1, 0, 1]])
    lp, n = losses.sequence_logps(logits, labels, mask)
    np.testing.assert_allclose(np.asarray(lp), [-3 * np.log(5), -2 * np.log(5)], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(n), [3, 2])


def test_bfloat16_batches_are_validated(pw):
    import jax.numpy as jnp

    pw["ll"][4] = np.nan
    b = losses.PairwiseLogps(**{k: jnp.asarray(v, jnp.bfloat16) for k, v in to_pairwise(pw).__dict__.items()})
    with pytest.raises(ValueError, match="'rejected_logps' is not finite at example 4"):
        losses.get("dpo")(b)

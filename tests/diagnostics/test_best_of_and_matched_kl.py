"""jalign.diagnostics.evaluation.best_of_groups (best-of-n draws from samples) and value_at_kl (a metric read off a
training trajectory at a matched KL): hand-worked values, a Monte-Carlo check of best-of-n, errors."""

import math

import numpy as np
import pytest

from jalign.diagnostics.evaluation import best_of_groups, value_at_kl, win_rate


def test_best_of_groups_hand_values():
    s = np.array([[1.0, 5.0, 2.0, 0.0, 3.0, 3.0], [-1.0, -2.0, -3.0, 7.0, 0.0, 0.0]])
    np.testing.assert_array_equal(best_of_groups(s, 2), [[5.0, 2.0, 3.0], [-1.0, 7.0, 0.0]])
    np.testing.assert_array_equal(best_of_groups(s, 3), [[5.0, 3.0], [-1.0, 7.0]])
    np.testing.assert_array_equal(best_of_groups(s, 1), s)


def test_best_of_n_against_best_of_n_of_the_same_distribution_is_a_half_and_against_one_sample_n_over_n_plus_1():
    # continuous scores: W(BoN(μ) ≻ μ) = N/(N+1); W(BoN(μ) ≻ BoN(μ)) = ½
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 4 * 50)), rng.normal(size=(400, 4 * 50))
    w = win_rate(best_of_groups(a, 4), b[:, :50])
    assert abs(w["win_rate"] - 0.8) < 4 * w["se"] + 1e-3
    w = win_rate(best_of_groups(a, 4), best_of_groups(b, 4))
    assert abs(w["win_rate"] - 0.5) < 4 * w["se"] + 1e-3


def test_value_at_kl_interpolates_on_the_first_passage():
    kls, vals = [0.0, 1.0, 3.0, 2.0, 5.0], [0.5, 0.6, 0.8, 0.7, 0.9]
    assert value_at_kl(kls, vals, 0.0) == 0.5
    assert value_at_kl(kls, vals, 0.5) == pytest.approx(0.55)
    assert value_at_kl(kls, vals, 2.0) == pytest.approx(0.7)  # on 1 → 3 (first passage), not at the 4th point
    assert value_at_kl(kls, vals, 4.0) == pytest.approx(0.7 + (4.0 - 2.0) / 3.0 * 0.2)  # on 2 → 5
    assert math.isnan(value_at_kl(kls, vals, 6.0))
    assert value_at_kl([0.0, 1.0, 1.0], [0.5, 0.6, 0.9], 1.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="1-D of one length"):
        value_at_kl([0.0, 1.0], [0.5], 0.5)
    with pytest.raises(ValueError, match="multiple of n=4"):
        best_of_groups(np.zeros((2, 6)), 4)

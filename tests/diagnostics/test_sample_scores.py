"""Baseline pair scores and the rank correlation: edit distance against the textbook recursion, the last
hidden inner product against a loop (any padding), Spearman against its closed form and with ties."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from jalign.diagnostics.sample_scores import edit_distance, last_hidden_inner_product, spearman


def _naive_edit(a, b):
    @functools.cache
    def d(i, j):
        if i == 0:
            return j
        if j == 0:
            return i
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def test_edit_distance_matches_recursion(rng):
    cases = [([], []), ([1, 2, 3], []), ([], [4]), ([1, 2, 3], [1, 2, 3]), (list(b"kitten"), list(b"sitting")),
             (list(b"flaw"), list(b"lawn"))]
    cases += [(list(rng.integers(0, 3, rng.integers(0, 12))), list(rng.integers(0, 3, rng.integers(0, 12))))
              for _ in range(40)]
    for a, b in cases:
        assert edit_distance(a, b) == _naive_edit(tuple(a), tuple(b)), (a, b)
        assert edit_distance(a, b) == edit_distance(b, a)
    assert edit_distance(list(b"kitten"), list(b"sitting")) == 3


def test_last_hidden_inner_product_loop_and_padding(rng):
    B, T, D = 4, 7, 5
    hw, hl = rng.normal(size=(B, T, D)), rng.normal(size=(B, T + 2, D))
    lw, ll = [3, 7, 1, 5], [2, 9, 4, 9]
    mw = np.array([[1] * n + [0] * (T - n) for n in lw])  # right padding
    ml = np.array([[0] * (T + 2 - n) + [1] * n for n in ll])  # left padding
    got = last_hidden_inner_product(hw.astype(np.float32), hl.astype(np.float32), mw, ml)
    want = [hw[i, lw[i] - 1] @ hl[i, T + 1] for i in range(B)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(ValueError, match="rejected_attention_mask: row 2 has no real token"):
        ml2 = ml.copy()
        ml2[2] = 0
        last_hidden_inner_product(hw, hl, mw, ml2)
    with pytest.raises(ValueError, match="need"):
        last_hidden_inner_product(hw, hl, mw[:, :3], ml)


def test_spearman(rng):
    x, y = rng.normal(size=9), rng.normal(size=9)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    closed = 1 - 6 * np.sum((rx - ry) ** 2) / (9 * (81 - 1))  # no ties
    assert spearman(x, y) == pytest.approx(closed, abs=1e-12)
    assert spearman([0, 25, 50, 75, 100], [5.0, 1.0, -2.0, -3.0, -9.0]) == pytest.approx(-1.0)
    # ties take their average rank: ranks x = [0, 1.5, 1.5, 3], y = [0, 1, 2, 3]
    rxt, ryt = np.array([0, 1.5, 1.5, 3]) - 1.5, np.arange(4) - 1.5
    assert spearman([1, 2, 2, 5], [1, 2, 3, 4]) == pytest.approx(
        (rxt @ ryt) / np.sqrt((rxt @ rxt) * (ryt @ ryt)))
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        spearman([1, np.nan], [1, 2])


def test_difference_components_closed_form(rng):
    from jalign.diagnostics.displacement import difference_components

    # W+ = (2, 0), W− = (1, 3): W+ − W− = (1, −3) → parallel |1·2|/2 = 1, orthogonal 3
    par, orth = difference_components(np.array([2.0, 0.0]), np.array([1.0, 3.0]))
    assert float(par) == pytest.approx(1.0) and float(orth) == pytest.approx(3.0)
    wp, wm = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    par, orth = difference_components(wp, wm)
    d = wp - wm
    u = wp / np.linalg.norm(wp, axis=-1, keepdims=True)
    np.testing.assert_allclose(par, np.abs((d * u).sum(-1)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(par) ** 2 + np.asarray(orth) ** 2, (d * d).sum(-1), rtol=1e-4)
    with pytest.raises(ValueError, match="differ"):
        difference_components(wp, wm[:, :3])

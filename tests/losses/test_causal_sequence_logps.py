"""causal_sequence_logps: the causal shift done on the targets equals slicing the logits (values and grads)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import losses


def _numpy_causal(logits, ids, mask):
    """Σ_{t≥1} mask[t] · log softmax(logits[t-1])[ids[t]] in float64, by a loop."""
    b, t, _ = logits.shape
    out, n = np.zeros(b), np.zeros(b)
    for i in range(b):
        for j in range(1, t):
            if mask[i, j]:
                row = logits[i, j - 1].astype(np.float64)
                out[i] += row[ids[i, j]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
                n[i] += 1
    return out, n


def test_causal_sequence_logps_matches_slicing_and_numpy(rng):
    b, t, v = 3, 9, 13
    logits = jnp.asarray(rng.normal(0, 2.0, (b, t, v)), jnp.float32)
    ids = rng.integers(0, v, (b, t))
    mask = np.zeros((b, t), np.int32)
    mask[0, 3:] = 1
    mask[1, 5:8] = 1  # right padding after the response
    mask[2, 8] = 1    # a one-token response at the very end
    lp, n = jax.jit(losses.causal_sequence_logps)(logits, ids, mask)
    want, want_n = _numpy_causal(np.asarray(logits), ids, mask)
    np.testing.assert_allclose(np.asarray(lp), want, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(n), want_n)
    ref, ref_n = losses.sequence_logps(logits[:, :-1], ids[:, 1:], mask[:, 1:])
    np.testing.assert_allclose(np.asarray(lp), np.asarray(ref), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(n), np.asarray(ref_n))

    def f_new(x):
        return (losses.causal_sequence_logps(x, ids, mask)[0] * jnp.arange(1.0, b + 1)).sum()

    def f_old(x):
        return (losses.sequence_logps(x[:, :-1], ids[:, 1:], mask[:, 1:])[0] * jnp.arange(1.0, b + 1)).sum()

    g_new, g_old = jax.jit(jax.grad(f_new))(logits), jax.jit(jax.grad(f_old))(logits)
    np.testing.assert_allclose(np.asarray(g_new), np.asarray(g_old), rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(g_new)[:, -1] == 0.0)  # the last position predicts nothing


def test_causal_sequence_logps_rejects_bad_labels_and_shapes(rng):
    logits = jnp.zeros((2, 4, 5), jnp.float32)
    ids = np.array([[0, 1, 2, 7], [0, 1, 2, 3]])  # 7 >= V under the mask
    with pytest.raises(ValueError, match=r"ids out of range \[0, 5\) at example 0, position \(3,\)"):
        losses.causal_sequence_logps(logits, ids, np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match="mask has shape"):
        losses.causal_sequence_logps(logits, ids % 5, np.ones((2, 3), np.int32))


def test_out_of_range_ids_are_reported_at_their_own_position():
    import pytest

    from jalign.losses.sequence import causal_sequence_logps

    ids = np.array([[1, 2, 99, 3]])
    with pytest.raises(ValueError, match=r"ids out of range \[0, 10\) at example 0, position \(2,\) \(value 99\)"):
        causal_sequence_logps(np.zeros((1, 4, 10), np.float32), ids, np.array([[0, 1, 1, 1]]))
    # position 0 is never scored, and masked positions may hold anything (e.g. padding ids)
    causal_sequence_logps(np.zeros((1, 4, 10), np.float32), np.array([[99, 2, 3, -1]]), np.array([[1, 1, 1, 0]]))

"""CHES scores: definition by naive loops, padding invariance, length normalisation, helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import diagnostics as dg


def _naive(hw, hl, mw, ml, length_normalized=False):
    """Definition 2/3 by explicit double loops over positions (numpy float64)."""
    hw, hl = np.asarray(hw, np.float64), np.asarray(hl, np.float64)
    out = []
    for b in range(hw.shape[0]):
        pw = [k for k in range(hw.shape[1]) if mw[b, k]]
        pl = [k for k in range(hl.shape[1]) if ml[b, k]]
        cross = sum(float(hw[b, k] @ hl[b, j]) for k in pw for j in pl)
        self_ = sum(float(hw[b, k] @ hw[b, j]) for k in pw for j in pw)
        if length_normalized:
            cross, self_ = cross / (len(pw) * len(pl)), self_ / len(pw) ** 2
        out.append(cross - self_)
    return np.array(out)


@pytest.mark.parametrize("length_normalized", [False, True])
def test_scores_equal_naive_double_loop(rng, length_normalized):
    B, T, T2, D = 4, 7, 5, 3
    hw, hl = rng.normal(size=(B, T, D)), rng.normal(size=(B, T2, D))
    mw = rng.random((B, T)) < 0.6
    ml = rng.random((B, T2)) < 0.6
    mw[:, 0] = ml[:, 0] = True
    got = dg.ches_scores(hw.astype(np.float32), hl.astype(np.float32), mw, ml, length_normalized=length_normalized)
    np.testing.assert_allclose(np.asarray(got), _naive(hw, hl, mw, ml, length_normalized), rtol=1e-5, atol=1e-5)
    jitted = jax.jit(lambda *a: dg.ches_scores(*a, length_normalized=length_normalized))(
        hw.astype(np.float32), hl.astype(np.float32), mw, ml
    )
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(got), rtol=1e-6)


def test_length_normalised_closed_form():
    """Constant hidden states u (chosen) and v (rejected): CHES = n+n−⟨u,v⟩ − n+²‖u‖², LN = ⟨u,v⟩ − ‖u‖²."""
    u, v = np.array([1.0, 2.0, -1.0]), np.array([0.5, -1.0, 3.0])
    T = 6
    for nw, nl in [(1, 1), (3, 5), (6, 2)]:
        hw = np.broadcast_to(u, (1, T, 3)).astype(np.float32)
        hl = np.broadcast_to(v, (1, T, 3)).astype(np.float32)
        mw = (np.arange(T) < nw)[None]
        ml = (np.arange(T) >= T - nl)[None]
        c = float(dg.ches_scores(hw, hl, mw, ml)[0])
        ln = float(dg.ches_scores(hw, hl, mw, ml, length_normalized=True)[0])
        assert np.isclose(c, nw * nl * (u @ v) - nw**2 * (u @ u), rtol=1e-6)
        assert np.isclose(ln, u @ v - u @ u, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_finite_and_accurate_at_4096_by_512(dtype):
    B, T, D = 2, 512, 4096
    k1, k2 = jax.random.split(jax.random.key(1))
    scale = 50.0  # large activations: fp16 sums of squares would overflow
    hw = (scale * jax.random.normal(k1, (B, T, D))).astype(dtype)
    hl = (scale * jax.random.normal(k2, (B, T, D))).astype(dtype)
    mw = jnp.arange(T)[None] < jnp.array([[300], [512]])
    ml = jnp.arange(T)[None] >= jnp.array([[12], [200]])
    got = np.asarray(dg.ches_scores(hw, hl, mw, ml))
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    h64w, h64l = np.asarray(hw.astype(jnp.float32), np.float64), np.asarray(hl.astype(jnp.float32), np.float64)
    sw = (h64w * np.asarray(mw)[..., None]).sum(1)
    sl = (h64l * np.asarray(ml)[..., None]).sum(1)
    ref = (sw * sl).sum(-1) - (sw * sw).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    assert np.all(got < 0)  # independent noise: the self term dominates


def test_padding_junk_does_not_leak():
    hw = np.ones((1, 4, 2), np.float32)
    hw[0, 3] = np.nan
    hl = np.ones((1, 4, 2), np.float32)
    hl[0, 0] = np.inf
    m = np.array([[1, 1, 1, 0]])
    ml = np.array([[0, 1, 1, 1]])
    assert float(dg.ches_scores(hw, hl, m, ml)[0]) == 3 * 3 * 2 - 9 * 2


def test_bad_inputs_raise():
    h = np.zeros((2, 3, 4), np.float32)
    m = np.ones((2, 3))
    empty = m.copy()
    empty[1] = 0
    with pytest.raises(ValueError, match="rejected_mask.*example 1"):
        dg.ches_scores(h, h, m, empty)
    with pytest.raises(ValueError, match="chosen_mask has shape"):
        dg.ches_scores(h, h, m[:, :2], m)
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        dg.ches_scores(h[0], h, m, m)
    bad = h.copy()
    bad[0, 1, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite score at example 0"):
        dg.ches_scores(bad, h, m, m)


# ----------------------------------------------------------------------------------------------------------
# Model helper: padding side and amount do not change the scores.


def _causal_model(key, V=13, D=8):
    k = jax.random.split(key, 5)
    p = {
        "emb": jax.random.normal(k[0], (V, D)),
        "pos": 0.3 * jax.random.normal(k[1], (64, D)),
        "wq": jax.random.normal(k[2], (D, D)) / np.sqrt(D),
        "wk": jax.random.normal(k[3], (D, D)) / np.sqrt(D),
        "wv": jax.random.normal(k[4], (D, D)) / np.sqrt(D),
    }

    def apply(ids, att):
        pos = jnp.clip(jnp.cumsum(att, -1) - 1, 0)
        x = p["emb"][ids] + p["pos"][pos]
        q, kk, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
        s = jnp.einsum("bid,bjd->bij", q, kk) / np.sqrt(D)
        T = ids.shape[1]
        allowed = (jnp.arange(T)[None, :] <= jnp.arange(T)[:, None])[None] & (att[:, None, :] > 0)
        s = jnp.where(allowed, s, -1e9)
        return jnp.tanh(x + jnp.einsum("bij,bjd->bid", jax.nn.softmax(s, -1), v))

    return apply, jax.jit(apply)


def _records(rng, n, V=13):
    out = []
    for _ in range(n):
        p = list(map(int, rng.integers(1, V, rng.integers(1, 5))))
        out.append({
            "prompt": p,
            "chosen": list(map(int, rng.integers(1, V, rng.integers(1, 6)))),
            "rejected": list(map(int, rng.integers(1, V, rng.integers(1, 6)))),
        })
    return out


def test_model_scores_invariant_to_padding_and_equal_unpadded_definition(key, rng):
    apply_eager, apply = _causal_model(key)
    recs = _records(rng, 6)
    P, W, L = ([r[f] for r in recs] for f in ("prompt", "chosen", "rejected"))
    ref, ref_ln = [], []
    for p, w, l_ in zip(P, W, L, strict=True):
        # Unpadded, one record at a time: positions len(p)−1 … len(p)+len(y)−2 predict the response.
        hs = []
        for y in (w, l_):
            ids = jnp.asarray([p + y])
            h = np.asarray(apply_eager(ids, jnp.ones_like(ids)))[0]
            hs.append(h[len(p) - 1 : len(p) + len(y) - 1])
        ones_w, ones_l = np.ones((1, len(w)), bool), np.ones((1, len(l_)), bool)
        ref.append(_naive(hs[0][None], hs[1][None], ones_w, ones_l)[0])
        ref_ln.append(_naive(hs[0][None], hs[1][None], ones_w, ones_l, length_normalized=True)[0])
    for side in ("right", "left"):
        for max_length in (16, 20):
            got = dg.ches_from_model(apply, P, W, L, padding_side=side, max_length=max_length)
            np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-4, err_msg=f"{side} {max_length}")
    ln = dg.ches_from_model(apply, P, W, L, padding_side="left", max_length=16, length_normalized=True)
    np.testing.assert_allclose(np.asarray(ln), ref_ln, rtol=1e-5, atol=1e-5)
    # Pre-padded inputs (left-padded to 20): hidden states + predictor mask from the response mask.
    pw = dg.pack_prompt_response(P, W, padding_side="left", max_length=20)
    pl = dg.pack_prompt_response(P, L, padding_side="left", max_length=20)
    hw, mw = dg.response_hidden_states(apply, pw["input_ids"], pw["attention_mask"], pw["response_mask"])
    hl, ml = dg.response_hidden_states(apply, pl["input_ids"], pl["attention_mask"], pl["response_mask"])
    np.testing.assert_array_equal(mw, pw["predictor_mask"])
    np.testing.assert_allclose(np.asarray(dg.ches_scores(hw, hl, mw, ml)), ref, rtol=1e-5, atol=1e-4)
    # Dataset scorer in chunks (last chunk partial) equals one batch.
    full = dg.score_dataset(apply, recs, batch_size=4, max_length=16, progress=False)
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-4)


def test_pack_predictor_mask_and_errors():
    pk = dg.pack_prompt_response([[5, 6]], [[7, 8, 9]], padding_side="left", max_length=7, pad_id=0)
    np.testing.assert_array_equal(pk["input_ids"][0], [0, 0, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(pk["response_mask"][0], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(pk["predictor_mask"][0], [0, 0, 0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="record 1: field 'chosen' is empty"):
        dg.pack_prompt_response([[1], [2]], [[3], []], field="chosen")
    with pytest.raises(ValueError, match="record 0: prompt \\+ response has 4 tokens"):
        dg.pack_prompt_response([[1, 2]], [[3, 4]], max_length=3)
    with pytest.raises(ValueError, match="record 0: field 'prompt' is empty"):
        dg.pack_prompt_response([[]], [[3, 4]])
    with pytest.raises(ValueError, match="record 2: field 'rejected' is empty"):
        dg.score_dataset(lambda i, a: None, [{"prompt": [1], "chosen": [1], "rejected": [1]}] * 2
                         + [{"prompt": [1], "chosen": [1], "rejected": []}], progress=False)


def test_predictor_mask_errors():
    np.testing.assert_array_equal(dg.predictor_mask([[0, 0, 1, 1, 0]]), [[0, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="empty response at example 1"):
        dg.predictor_mask([[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="example 0 is not one contiguous span"):
        dg.predictor_mask([[0, 1, 0, 1]])
    with pytest.raises(ValueError, match="starts at position 0"):
        dg.predictor_mask([[1, 1, 0]])
    with pytest.raises(ValueError, match="marks padding at example 0"):
        dg.response_hidden_states(None, np.zeros((1, 3)), np.array([[1, 1, 0]]), np.array([[0, 1, 1]]))


def test_ranking_and_filtering():
    s = np.array([3.0, -1.0, 2.0, -5.0, 0.0, 2.0])
    np.testing.assert_array_equal(dg.rank_by_ches(s), [3, 1, 4, 2, 5, 0])
    np.testing.assert_array_equal(dg.lowest_ches_indices(s, 0.5), [1, 3, 4])
    np.testing.assert_array_equal(dg.lowest_ches_indices(s, 0.01), [3])
    assert dg.filter_lowest_ches(list("abcdef"), s, 1 / 3) == ["b", "d"]
    subs = dg.percentile_subsets(s, 2, (0, 50, 100))
    np.testing.assert_array_equal(subs[0], [1, 3])
    np.testing.assert_array_equal(subs[100], [0, 5])
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            dg.lowest_ches_indices(s, bad)
    with pytest.raises(ValueError, match="non-finite value at index 1"):
        dg.rank_by_ches([0.0, np.nan])

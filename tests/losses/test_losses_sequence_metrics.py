"""sequence_logps against a numpy loop (masking, padding, dtypes), preference_metrics values, the catalogue."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign import losses
from jalign.losses import catalogue


def _numpy_sequence_logps(logits, labels, mask):
    b, t, _ = logits.shape
    out, n = np.zeros(b), np.zeros(b)
    for i in range(b):
        for j in range(t):
            if mask[i, j]:
                row = logits[i, j].astype(np.float64)
                out[i] += row[labels[i, j]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
                n[i] += 1
    return out, n


def _data(rng, b=3, t=7, v=11):
    logits = rng.normal(0, 3.0, (b, t, v))
    labels = rng.integers(0, v, (b, t))
    mask = np.zeros((b, t), bool)
    for i, (s, e) in enumerate([(0, 7), (2, 5), (3, 4)][:b]):
        mask[i, s:e] = True
    return logits, labels, mask


def test_sequence_logps_matches_numpy_loop(rng):
    logits, labels, mask = _data(rng)
    lp, n = jax.jit(losses.sequence_logps)(logits.astype(np.float32), labels, mask)
    want_lp, want_n = _numpy_sequence_logps(logits.astype(np.float32), labels, mask)
    np.testing.assert_allclose(np.asarray(lp), want_lp, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(n), want_n)
    assert lp.dtype == jnp.float32


def test_sequence_logps_padding_invariance(rng):
    logits, labels, mask = _data(rng)
    lp, n = losses.sequence_logps(logits.astype(np.float32), labels, mask)
    # append 5 padded positions with huge / non-finite logits and ignore-index labels
    pad_logits = np.concatenate([logits, np.full((3, 5, 11), 1e30)], axis=1)
    pad_logits[0, -1, 0] = np.nan
    pad_labels = np.concatenate([labels, np.full((3, 5), -100)], axis=1)
    pad_mask = np.concatenate([mask, np.zeros((3, 5), bool)], axis=1)
    lp2, n2 = losses.sequence_logps(pad_logits.astype(np.float32), pad_labels, pad_mask)
    np.testing.assert_allclose(np.asarray(lp2), np.asarray(lp), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(n2), np.asarray(n))
    # and the gradient w.r.t. padded logits is zero
    g = jax.jit(jax.grad(lambda x: losses.sequence_logps(x, pad_labels, pad_mask)[0].sum()))(
        jnp.asarray(np.nan_to_num(pad_logits, nan=0.0, posinf=1e30), jnp.float32))
    assert np.all(np.asarray(g)[:, 7:] == 0.0)


def test_sequence_logps_bf16_computes_in_float32(rng):
    logits, labels, mask = _data(rng)
    lb = jnp.asarray(logits, jnp.bfloat16)
    lp, _ = losses.sequence_logps(lb, labels, mask)
    assert lp.dtype == jnp.float32
    want, _ = _numpy_sequence_logps(np.asarray(lb.astype(jnp.float32)), labels, mask)
    np.testing.assert_allclose(np.asarray(lp), want, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_preference_metrics_values(beta, rng):
    lw, ll, rw, rl = (rng.normal(-20, 5, 9) for _ in range(4))
    b = losses.PairwiseLogps(chosen_logps=lw, rejected_logps=ll, ref_chosen_logps=rw, ref_rejected_logps=rl)
    m = {k: float(v) for k, v in losses.preference_metrics(b, beta=beta).items()}
    cw, cl = beta * (lw - rw), beta * (ll - rl)
    want = {
        "rewards/chosen": cw.mean(), "rewards/rejected": cl.mean(), "rewards/margins": (cw - cl).mean(),
        "rewards/accuracies": (cw > cl).mean(), "logps/chosen": lw.mean(), "logps/rejected": ll.mean(),
    }
    assert set(m) == set(want)
    for k in want:
        assert m[k] == pytest.approx(want[k], rel=1e-5, abs=1e-5), k


def test_preference_metrics_reference_free_uses_zero_reference(rng):
    lw, ll = rng.normal(-20, 5, 4), rng.normal(-20, 5, 4)
    m = losses.preference_metrics(losses.PairwiseLogps(chosen_logps=lw, rejected_logps=ll), beta=0.5)
    assert float(m["rewards/chosen"]) == pytest.approx(0.5 * lw.mean(), rel=1e-5)


def test_committed_catalogue_matches_registry():
    doc = Path(__file__).resolve().parents[2] / catalogue.DOC
    assert doc.exists(), "run python -m jalign.losses.catalogue"
    assert doc.read_text() == catalogue.render(), "docs/losses.md is stale: python -m jalign.losses.catalogue"


def test_every_loss_documents_formula_and_paper():
    for name in losses.names():
        s = losses.spec(name)
        if s.kind in ("pairwise", "unpaired", "listwise"):
            assert s.formula and s.paper, name
            doc = s.fn.__doc__ or ""
            assert "References" in doc or "TRL" in doc, name
            assert len(doc) > 80, name

"""The likelihood-displacement probe: values equal an independent numpy computation (log-probs, changes, the
largest drop of π(y+), next-token and candidate gainers as a numpy top-k of the probability change), its
positions, its batch layout, bad input, and its use inside the trainer."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from jalign.diagnostics import probe_batch, probe_positions
from jalign.train import plugins, train
from jalign.train.config import base_config
from jalign.train.plugins.tiny import tiny_lm
from jalign.train.probes import displacement_probe
from jalign.train.step import init_state, logits_fn

V = 259


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_seq_logps(lg, ids, mask):
    lp = _np_log_softmax(lg)
    b, t, _ = lp.shape
    return np.array([sum(lp[i, s, ids[i, s + 1]] for s in range(t - 1) if mask[i, s + 1]) for i in range(b)])


def _np_topk(gain, k):
    """Independent top-k: stable argsort of the negated gain (ties: lower index first)."""
    idx = np.argsort(-gain, axis=-1, kind="stable")[..., :k]
    return idx, np.take_along_axis(gain, idx, axis=-1)


def _batch():
    # prompts of different lengths; single-token pairs and a multi-token pair with a shared prefix
    prompts = [[257, 5, 6, 7], [257, 9], [257, 4, 4, 4, 4, 3]]
    chosen = [[30, 258], [40, 41, 42, 258], [50, 51, 258]]
    rejected = [[31, 258], [40, 41, 43, 44, 258], [52, 258]]
    cands = [[30, 258], [31, 258], [40, 258], [60, 61, 258]]
    return probe_batch(prompts, chosen, rejected, candidates=cands, pad_id=256, max_length=12)


def test_probe_batch_layout():
    b = _batch()
    assert b["chosen_ids"].shape == (3, 12) and b["candidate_ids"].shape == (3, 4, 12)
    np.testing.assert_array_equal(b["chosen_ids"][1], [257, 9, 40, 41, 42, 258] + [256] * 6)
    np.testing.assert_array_equal(b["chosen_mask"][1], [0, 0, 1, 1, 1, 1] + [0] * 6)
    np.testing.assert_array_equal(b["rejected_attention_mask"][1], [1] * 7 + [0] * 5)
    np.testing.assert_array_equal(b["candidate_ids"][2, 3], [257, 4, 4, 4, 4, 3, 60, 61, 258, 256, 256, 256])
    np.testing.assert_array_equal(b["candidate_mask"][2, 3], [0] * 6 + [1, 1, 1, 0, 0, 0])
    # per-prompt candidate lists, and their errors
    per = probe_batch([[1], [2]], [[3], [3]], [[4], [5]], candidates=[[[3], [4]], [[5], [6]]])
    np.testing.assert_array_equal(per["candidate_ids"][1, :, 1], [5, 6])
    with pytest.raises(ValueError, match="prompt 1 has 1 candidates"):
        probe_batch([[1], [2]], [[3], [3]], [[4], [5]], candidates=[[[3], [4]], [[5]]])
    with pytest.raises(ValueError, match="field 'rejected' is empty"):
        probe_batch([[1]], [[3]], [[]])
    with pytest.raises(ValueError, match="more than max_length=3"):
        probe_batch([[1, 2]], [[3, 4]], [[5]], max_length=3)


def test_probe_positions_first_and_divergence_any_padding():
    b = _batch()
    np.testing.assert_array_equal(probe_positions(b, "first"), [3, 1, 5])
    # pair 1: responses 40 41 42 vs 40 41 43 differ at the third response token
    np.testing.assert_array_equal(probe_positions(b, "divergence"), [3, 3, 5])
    left = {k: np.roll(v, 2, axis=-1) for k, v in b.items()}  # shift right by 2 (all rows padded by >= 3)
    np.testing.assert_array_equal(probe_positions(left, "divergence"), [5, 5, 7])
    same = probe_batch([[1]], [[3, 4]], [[3, 4, 5]])
    with pytest.raises(ValueError, match="prefix"):
        probe_positions(same, "divergence")
    with pytest.raises(ValueError, match="position must be one of"):
        probe_positions(b, "last")


def _states():
    model = tiny_lm(3, d_model=8, d_hidden=16)
    gd, st = init_state(model, optax.sgd(0.1), reference=False)
    keys = jax.random.split(jax.random.key(7), 3)
    states = [st]
    for kk in keys:  # three perturbed parameter sets: a trajectory whose π(y+) rises and falls
        leaves, tdef = jax.tree.flatten(st.params)
        ks = jax.random.split(kk, len(leaves))
        new = [x + 0.8 * jax.random.normal(k_, x.shape, x.dtype) for x, k_ in zip(leaves, ks, strict=True)]
        states.append(st.replace(params=jax.tree.unflatten(tdef, new)))
    return gd, states


def test_probe_values_equal_independent_numpy():
    b = _batch()
    gd, states = _states()
    k = 4
    probe = displacement_probe(b, k=k, position="divergence", every=1)
    recs = [probe(i, gd, s) for i, s in enumerate(states)]

    def np_eval(s):
        lw = np.asarray(logits_fn(gd, s.params, s.model_state, b["chosen_ids"], b["chosen_attention_mask"]))
        ll = np.asarray(logits_fn(gd, s.params, s.model_state, b["rejected_ids"], b["rejected_attention_mask"]))
        B, C, T = b["candidate_ids"].shape
        lc = np.asarray(logits_fn(gd, s.params, s.model_state, b["candidate_ids"].reshape(B * C, T),
                                  b["candidate_attention_mask"].reshape(B * C, T)))
        pos = [3, 3, 5]
        return {"w": _np_seq_logps(lw, b["chosen_ids"], b["chosen_mask"]),
                "l": _np_seq_logps(ll, b["rejected_ids"], b["rejected_mask"]),
                "next": np.stack([_np_log_softmax(lw[i, p]) for i, p in enumerate(pos)]),
                "c": _np_seq_logps(lc, b["candidate_ids"].reshape(B * C, T),
                                   b["candidate_mask"].reshape(B * C, T)).reshape(B, C)}

    ref = [np_eval(s) for s in states]
    probs = np.stack([np.exp(r["w"]) for r in ref])  # [steps, B]
    for t, (rec, r) in enumerate(zip(recs, ref, strict=True)):
        np.testing.assert_allclose(rec["chosen_logps"], r["w"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(rec["rejected_logps"], r["l"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(rec["chosen_change"], r["w"] - ref[0]["w"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rec["rejected_change"], r["l"] - ref[0]["l"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rec["candidate_logps"], r["c"], rtol=1e-5, atol=1e-4)
        # largest drop of π(y+) so far: max over s < u <= t of p_s − p_u (0 if it never fell)
        p = probs[: t + 1]
        want = np.array([max([p[s_, i] - p[u, i] for u in range(t + 1) for s_ in range(u)] + [0.0])
                         for i in range(p.shape[1])])
        np.testing.assert_allclose(rec["chosen_prob_largest_drop"], want, rtol=1e-4, atol=1e-6)
        assert rec["mean_largest_drop"] == pytest.approx(want.mean(), rel=1e-4, abs=1e-6)
        assert rec["frac_chosen_down"] == pytest.approx(np.mean(r["w"] - ref[0]["w"] < 0))
        # gainers: an independent numpy top-k of π_now − π_start
        gi, gv = _np_topk(np.exp(r["next"]) - np.exp(ref[0]["next"]), k)
        np.testing.assert_allclose(rec["token_gains"], gv, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(rec["token_gainers"][:, 0], gi[:, 0])
        ci, cv = _np_topk(np.exp(r["c"]) - np.exp(ref[0]["c"]), k)
        np.testing.assert_allclose(rec["candidate_gains"], cv, rtol=1e-4, atol=1e-9)
        if t > 0:
            np.testing.assert_array_equal(rec["candidate_gainers"], ci)
    assert recs[0]["mean_chosen_change"] == 0.0 and np.all(np.asarray(recs[0]["token_gains"]) == 0)
    assert max(recs[-1]["chosen_prob_largest_drop"]) > 0  # the trajectory does fall somewhere


def test_bad_input():
    b = _batch()
    with pytest.raises(ValueError, match="missing field"):
        displacement_probe({k: v for k, v in b.items() if k != "rejected_mask"})
    with pytest.raises(ValueError, match="candidate fields must come together"):
        displacement_probe({k: v for k, v in b.items() if k != "candidate_mask"})
    with pytest.raises(ValueError, match="k must be >= 1"):
        displacement_probe(b, k=0)
    with pytest.raises(ValueError, match="chosen_mask has shape"):
        displacement_probe({**b, "chosen_mask": b["chosen_mask"][:, :5]})
    gd, states = _states()
    bad = states[0].replace(params=jax.tree.map(lambda x: x * np.nan, states[0].params))
    with pytest.raises(ValueError, match="non-finite chosen log-prob at pair 0"):
        displacement_probe(b)(0, gd, bad)


def test_probe_inside_the_trainer_tracks_the_run():
    c = base_config()
    c.data.batch_size, c.data.seq_len = 8, 24
    c.data.kwargs.num_examples = 64
    c.model.kwargs.d_model, c.model.kwargs.d_hidden = 8, 16
    c.optim.name, c.optim.lr, c.optim.schedule, c.optim.grad_clip = "sgd", 0.5, "constant", 0.0
    c.train.steps, c.train.progress, c.mesh.data = 3, False, 1
    src = plugins.make_data(c.data.name, batch_size=4, seq_len=24, seed=11, num_examples=64)
    batch = {k: np.asarray(v) for k, v in next(src).items()}
    probe = displacement_probe(batch, every=2, k=3, name="disp")
    res = train(c, probes=[probe])
    assert [r["step"] for r in res.probes] == [0, 2, 3]
    last = res.probes[-1]
    direct = displacement_probe(batch, k=3).evaluate(res.graphdef, res.state)
    np.testing.assert_allclose(last["chosen_logps"], direct["chosen"], rtol=1e-6)
    np.testing.assert_allclose(last["chosen_change"],
                               np.asarray(direct["chosen"]) - np.asarray(res.probes[0]["chosen_logps"]), atol=1e-4)
    logged = {r["step"]: r for r in res.history if "disp/mean_chosen" in r}
    assert sorted(logged) == [0, 2, 3]
    assert logged[3]["disp/mean_chosen_change"] == pytest.approx(last["mean_chosen_change"])
    # DPO on these pairs raises the margin on the probe set
    assert np.mean(np.subtract(last["chosen_logps"], last["rejected_logps"])) > np.mean(
        np.subtract(res.probes[0]["chosen_logps"], res.probes[0]["rejected_logps"]))

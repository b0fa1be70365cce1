"""The ranking-accuracy and top-k probes on the tiny model: values against numpy computations from independently
computed logits / log-probs, no effect on the training trajectory, bad arguments."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _train_helpers import np_logsumexp, np_seq_logps, small_cfg

from jalign.tokenizers import ByteTokenizer
from jalign.train import plugins, train
from jalign.train.online import make_sampler
from jalign.train.probes import ranking_probe, topk_probe
from jalign.train.step import logits_fn

BETA = 0.5
PROMPTS = ["ab", "hello", "x y"]
KS = (1, 5, 10)
NEW = 6


def _probe_batch(cfg, n=8):
    src = plugins.make_data(cfg.data.name, batch_size=n, seq_len=cfg.data.seq_len, seed=321,
                             **dict(cfg.data.kwargs))
    return {k: np.asarray(v) for k, v in next(src).items()}


def _np_logps(graphdef, params, model_state, batch, side):
    logits = logits_fn(graphdef, params, model_state, batch[f"{side}_ids"], batch[f"{side}_attention_mask"])
    return np_seq_logps(np.asarray(logits), batch[f"{side}_ids"], batch[f"{side}_mask"])


def _np_prompts():
    tok = ByteTokenizer()
    seqs = [[tok.bos_id] + list(p.encode()) for p in PROMPTS]
    P = max(map(len, seqs))
    ids = np.full((len(seqs), P), tok.pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, P - len(s):], mask[i, P - len(s):] = s, 1
    return ids, mask


def _np_indicators(logits, resp_mask):
    """Token-weighted means of M_k, H_k (renormalised) and H at the positions predicting a sampled token."""
    z = np.asarray(logits, np.float64)[:, :-1]
    w = np.asarray(resp_mask, np.float64)[:, 1:]
    logp = z - np_logsumexp(z)[..., None]
    p = np.exp(logp)
    ps = -np.sort(-p, axis=-1)
    out = {"entropy": (-(p * logp).sum(-1) * w).sum() / w.sum(), "tokens": w.sum()}
    for k in KS:
        top = ps[..., :k]
        m = top.sum(-1)
        q = top / m[..., None]
        out[f"mass_top{k}"] = (m * w).sum() / w.sum()
        out[f"entropy_top{k}"] = (-(q * np.log(q)).sum(-1) * w).sum() / w.sum()
    return out


@pytest.fixture(scope="module")
def run():
    cfg = small_cfg(train__steps=4, loss__name="dpo")
    batch = _probe_batch(cfg)
    p = np.random.default_rng(0).uniform(0.05, 0.95, batch["chosen_ids"].shape[0])
    probes = [ranking_probe(batch, every=2, pref_probs=p, beta=BETA),
              topk_probe(PROMPTS, every=2, k=KS, max_new_tokens=NEW, seed=3, reward_fn=plugins.get_reward("count_token")),
              topk_probe(PROMPTS, every=0, k=KS, max_new_tokens=NEW, greedy=True, name="greedy")]
    res = train(cfg, probes=probes)
    plain = train(small_cfg(train__steps=4, loss__name="dpo"))
    return {"res": res, "plain": plain, "batch": batch, "p": p}


def test_probes_do_not_change_training(run):
    res, plain = run["res"], run["plain"]
    assert [r["loss"] for r in res.history if "loss" in r] == [r["loss"] for r in plain.history]
    for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(plain.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    recs = [(r["step"], r["probe"]) for r in res.probes]
    assert recs == [(0, "ranking"), (0, "topk"), (0, "greedy"), (2, "ranking"), (2, "topk"), (4, "ranking"),
                    (4, "topk"), (4, "greedy")]


def test_ranking_probe_values(run):
    res, batch, p = run["res"], run["batch"], run["p"]
    st = res.state
    w = _np_logps(res.graphdef, st.params, st.model_state, batch, "chosen")
    l_ = _np_logps(res.graphdef, st.params, st.model_state, batch, "rejected")
    rw = _np_logps(res.graphdef, st.ref_params, st.model_state, batch, "chosen")
    rl = _np_logps(res.graphdef, st.ref_params, st.model_state, batch, "rejected")
    nw, nl = batch["chosen_mask"][:, 1:].sum(-1), batch["rejected_mask"][:, 1:].sum(-1)
    assert np.min(np.abs(w - l_)) > 1e-3 and np.min(np.abs(w / nw - l_ / nl)) > 1e-4  # no near-ties
    logit = np.log(p / (1 - p))
    assert np.min(np.abs(rw - rl + logit / BETA)) > 1e-3
    last = [r for r in res.probes if r["probe"] == "ranking"][-1]
    assert last["step"] == 4
    np.testing.assert_allclose(last["chosen_logps"], w, rtol=1e-5, atol=1e-4)
    acc = np.mean(w > l_)
    assert last["accuracy"] == pytest.approx(acc)
    assert last["accuracy_normalized"] == pytest.approx(np.mean(w / nw > l_ / nl))
    assert last["ref_accuracy"] == pytest.approx(np.mean(rw > rl))
    assert last["ref_accuracy_normalized"] == pytest.approx(np.mean(rw / nw > rl / nl))
    ideal = np.mean(rw - rl + logit / BETA > 0)
    assert last["idealized_accuracy"] == pytest.approx(ideal)
    assert last["alignment_gap"] == pytest.approx(ideal - acc)
    # at step 0 the policy is the reference
    first = res.probes[0]
    assert first["step"] == 0 and first["accuracy"] == first["ref_accuracy"] == pytest.approx(np.mean(rw > rl))
    logged = {r["step"]: r for r in res.history if "ranking/accuracy" in r}
    assert sorted(logged) == [0, 2, 4] and logged[4]["ranking/alignment_gap"] == pytest.approx(ideal - acc)


def test_ranking_probe_reference_from_batch_fields():
    cfg = small_cfg(train__steps=1, loss__name="dpo")
    batch = _probe_batch(cfg)
    B = batch["chosen_ids"].shape[0]
    rng = np.random.default_rng(1)
    rw, rl = rng.normal(size=B) * 3, rng.normal(size=B) * 3
    p = rng.uniform(0.1, 0.9, B)
    res = train(cfg, probes=[ranking_probe({**batch, "ref_chosen_logps": rw, "ref_rejected_logps": rl}, every=0,
                                           pref_probs=p, beta=2.0)])
    rec = res.probes[-1]
    nw, nl = batch["chosen_mask"][:, 1:].sum(-1), batch["rejected_mask"][:, 1:].sum(-1)
    assert rec["ref_accuracy"] == pytest.approx(np.mean(rw > rl))
    assert rec["ref_accuracy_normalized"] == pytest.approx(np.mean(rw / nw > rl / nl))
    assert rec["idealized_accuracy"] == pytest.approx(np.mean(rw - rl + np.log(p / (1 - p)) / 2.0 > 0))


def test_topk_probe_values(run):
    res = run["res"]
    st = res.state
    ids, mask = _np_prompts()
    sampler = make_sampler(res.graphdef, max_new_tokens=NEW)  # TinyLM: the trainer's plain sampler
    s = sampler(st.params, st.model_state, ids, mask, jax.random.key(3))
    logits = np.asarray(logits_fn(res.graphdef, st.params, st.model_state, s["ids"], s["attention_mask"]))
    want = _np_indicators(logits, s["mask"])
    last = [r for r in res.probes if r["probe"] == "topk"][-1]
    assert last["step"] == 4 and last["tokens"] == int(want["tokens"]) > 0
    for key, v in want.items():
        assert last[key] == pytest.approx(v, rel=1e-4, abs=1e-5), key
    assert last["mean_length"] == pytest.approx(want["tokens"] / len(PROMPTS))
    assert 0 < last["mass_top1"] < last["mass_top5"] < last["mass_top10"] < 1
    # the reward of the same completions: the fraction of response tokens equal to ord("a"), counted here
    p = ids.shape[1]
    toks, resp = np.asarray(s["ids"])[:, p:], np.asarray(s["mask"])[:, p:]
    want_r = [((t == ord("a")) & (m == 1)).sum() / max(m.sum(), 1) for t, m in zip(toks, resp, strict=True)]
    np.testing.assert_allclose(last["rewards"], want_r, rtol=1e-6)
    assert last["reward"] == pytest.approx(np.mean(want_r), rel=1e-6)
    assert "reward" not in [r for r in res.probes if r["probe"] == "greedy"][-1]
    assert last["entropy_top10"] <= np.log(10) + 1e-6


def test_topk_probe_greedy_follows_the_argmax(run):
    """Greedy completions rebuilt here token by token from numpy argmaxes; the indicators along them."""
    res = run["res"]
    st = res.state
    ids, mask = _np_prompts()
    eos, pad = ByteTokenizer.eos_id, ByteTokenizer.pad_id
    for step, params in ((0, st.ref_params), (4, st.params)):  # step 0: the initial model (= the reference)
        seq, att = ids.copy(), mask.copy()
        resp = np.zeros_like(mask)
        done = np.zeros(len(PROMPTS), bool)
        for _ in range(NEW):
            z = np.asarray(logits_fn(res.graphdef, params, st.model_state, seq, att))[:, -1]
            tok = np.where(done, pad, z.argmax(-1))
            live = (~done).astype(np.int32)
            seq, att, resp = (np.concatenate([a, b[:, None]], 1) for a, b in ((seq, tok), (att, live), (resp, live)))
            done |= tok == eos
        logits = np.asarray(logits_fn(res.graphdef, params, st.model_state, seq, att))
        want = _np_indicators(logits, resp)
        rec = next(r for r in res.probes if r["probe"] == "greedy" and r["step"] == step)
        for key, v in want.items():
            assert rec[key] == pytest.approx(v, rel=1e-4, abs=1e-5), (step, key)


def test_bad_arguments():
    cfg = small_cfg()
    batch = _probe_batch(cfg)
    with pytest.raises(ValueError, match="pref_probs and beta"):
        ranking_probe(batch, pref_probs=np.full(8, 0.5))
    with pytest.raises(ValueError, match="beta must be"):
        ranking_probe(batch, pref_probs=np.full(8, 0.5), beta=-1.0)
    with pytest.raises(ValueError, match="open interval"):
        ranking_probe(batch, pref_probs=np.full(8, 1.0), beta=1.0)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        ranking_probe(batch, pref_probs=np.full(3, 0.5), beta=1.0)
    with pytest.raises(ValueError, match="missing field"):
        ranking_probe({"chosen_ids": batch["chosen_ids"]})
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk_probe(PROMPTS, k=(0, 5))
    with pytest.raises(ValueError, match="max_new_tokens"):
        topk_probe(PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="non-empty"):
        topk_probe([])
    with pytest.raises(ValueError, match="reward_fn must be callable"):
        topk_probe(PROMPTS, reward_fn="lexicon")
    # the idealised accuracy without any reference log-probs (loss without a reference: no frozen copy)
    no_ref = small_cfg(train__steps=1, loss__name="simpo")
    with pytest.raises(ValueError, match="needs reference log-probs"):
        train(no_ref, probes=[ranking_probe(_probe_batch(no_ref), pref_probs=np.full(8, 0.5), beta=1.0)])
    # k larger than the vocabulary
    with pytest.raises(ValueError, match="exceeds the vocabulary"):
        train(small_cfg(train__steps=1, loss__name="dpo"), probes=[topk_probe(PROMPTS, k=10_000)])

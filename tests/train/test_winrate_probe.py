"""The win-rate probe on the tiny model: win rate, rewards and Monte-Carlo KL against numpy computations from
independently rebuilt samples."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _train_helpers import np_seq_logps, small_cfg

from jalign.diagnostics.evaluation import win_rate
from jalign.tokenizers import ByteTokenizer
from jalign.train import plugins, train
from jalign.train.online import make_sampler
from jalign.train.probes import winrate_probe
from jalign.train.step import logits_fn

PROMPTS = ["ab", "hello", "x y", "zz"]
N, NEW = 3, 6


def _np_prompts():
    tok = ByteTokenizer()
    seqs = [[tok.bos_id] + list(p.encode()) for p in PROMPTS]
    P = max(map(len, seqs))
    ids = np.full((len(seqs), P), tok.pad_id, np.int32)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, P - len(s):], mask[i, P - len(s):] = s, 1
    return np.repeat(ids, N, 0), np.repeat(mask, N, 0)


def _count_a(s, p):
    toks, resp = np.asarray(s["ids"])[:, p:], np.asarray(s["mask"])[:, p:]
    return np.array([((t == ord("a")) & (m == 1)).sum() / max(m.sum(), 1) for t, m in zip(toks, resp, strict=True)])


@pytest.fixture(scope="module")
def run():
    probe = winrate_probe(PROMPTS, plugins.get_reward("count_token"), n=N, every=0, max_new_tokens=NEW, seed=5)
    res = train(small_cfg(train__steps=4, loss__name="dpo", optim__lr=3e-2), probes=[probe])
    return res, probe


def test_winrate_probe_values(run):
    res, probe = run
    rows = [r for r in res.probes if r["probe"] == "winrate"]
    first, last = rows[0], rows[-1]
    assert (first["step"], last["step"]) == (0, 4)
    # at the start the baseline is the policy itself: identical log-probs, KL exactly 0
    assert first["kl_k1"] == 0.0 and first["kl_k3"] == 0.0
    ids, mask = _np_prompts()
    sampler = make_sampler(res.graphdef, max_new_tokens=NEW)  # TinyLM: the trainer's plain sampler
    st = res.state
    b_params, b_state = probe.baseline
    pol = sampler(st.params, st.model_state, ids, mask, jax.random.key(5))
    base = sampler(b_params, b_state, ids, mask, jax.random.key(6))
    r_pol = _count_a(pol, ids.shape[1]).reshape(len(PROMPTS), N)
    r_base = _count_a(base, ids.shape[1]).reshape(len(PROMPTS), N)
    np.testing.assert_allclose(last["rewards"], r_pol, rtol=1e-6)
    np.testing.assert_allclose(last["baseline_rewards"], r_base, rtol=1e-6)
    # win rate: every (policy, baseline) pair of a prompt, ties ½, mean over prompts; SE over prompts
    w = np.array([np.mean([(a > b) + 0.5 * (a == b) for a in r_pol[i] for b in r_base[i]])
                  for i in range(len(PROMPTS))])
    assert last["win_rate"] == pytest.approx(w.mean(), abs=1e-12)
    assert last["win_rate_se"] == pytest.approx(w.std(ddof=1) / np.sqrt(len(w)), abs=1e-12)
    assert last["win_rate"] == pytest.approx(win_rate(r_pol, r_base)["win_rate"])
    # Monte-Carlo KL of the policy's samples against the baseline, from numpy log-probs
    args = (pol["ids"], pol["attention_mask"])
    lp = np_seq_logps(np.asarray(logits_fn(res.graphdef, st.params, st.model_state, *args)), np.asarray(pol["ids"]),
                      np.asarray(pol["mask"]))
    lp_b = np_seq_logps(np.asarray(logits_fn(res.graphdef, b_params, b_state, *args)), np.asarray(pol["ids"]),
                        np.asarray(pol["mask"]))
    d = (lp - lp_b).reshape(len(PROMPTS), N)
    assert last["kl_k1"] == pytest.approx(d.mean(), rel=1e-4, abs=1e-6)
    assert last["kl_k3"] == pytest.approx(np.mean(np.exp(-d) - 1 + d), rel=1e-4, abs=1e-6)
    assert last["kl_k1"] != 0.0  # the policy moved away from the baseline
    assert last["reward"] == pytest.approx(r_pol.mean(), abs=1e-12)


def test_winrate_probe_bad_arguments():
    fn = plugins.get_reward("count_token")
    for kw, msg in (({"n": 0}, "n must be"), ({"max_new_tokens": 0}, "max_new_tokens"),
                    ({"temperature": 0.0}, "temperature"), ({"every": -1}, "every")):
        with pytest.raises(ValueError, match=msg):
            winrate_probe(PROMPTS, fn, **kw)
    with pytest.raises(ValueError, match="callable"):
        winrate_probe(PROMPTS, "count_token")

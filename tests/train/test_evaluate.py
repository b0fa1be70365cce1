"""`jalign eval` (jalign.train.evaluate): win rate and its SE, mean reward, Monte-Carlo KL, distinct-n against
numpy and hand counts; the MC-KL against the exact KL of a tiny enumerable model; user errors; one CLI run of
the shipped small LM against itself."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jalign.models import ModelConfig, create_model, save_pretrained
from jalign.train import evaluate as E

# ---------------------------------------------------------------------------------------------------------
# Statistics against numpy


def test_win_rate_and_se_against_numpy_with_ties():
    pol = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0], [2.0, 2.0, 2.0], [1.0, 4.0, 0.5]])
    base = np.array([[2.0, 2.0], [0.0, 1.0], [2.0, 3.0], [0.5, 0.5]])
    per = []
    for a, b in zip(pol, base, strict=True):
        s = 0.0
        for x in a:
            for y in b:
                s += 1.0 if x > y else 0.5 if x == y else 0.0
        per.append(s / (len(a) * len(b)))
    per = np.array(per)
    got = E.win_rate(pol, base)
    assert got["win_rate"] == pytest.approx(per.mean(), abs=1e-12)
    assert got["se"] == pytest.approx(per.std(ddof=1) / math.sqrt(4), abs=1e-12)
    # hand count (wins, ties, losses) per prompt: (2, 2, 2), (2, 2, 2), (0, 3, 3), (4, 2, 0)
    assert per[0] == pytest.approx((2 + 0.5 * 2) / 6)
    assert per[2] == pytest.approx((0 + 0.5 * 3) / 6)
    assert per[3] == pytest.approx((4 + 0.5 * 2) / 6)
    assert (got["wins"], got["ties"], got["losses"], got["comparisons"]) == (8, 9, 7, 24)
    # antisymmetry: W(a, b) + W(b, a) = 1 per prompt
    assert E.win_rate(base, pol)["win_rate"] == pytest.approx(1 - got["win_rate"], abs=1e-12)
    assert math.isnan(E.win_rate(pol[:1], base[:1])["se"])
    with pytest.raises(ValueError, match="finite"):
        E.win_rate(np.array([[np.nan]]), np.array([[0.0]]))


def test_per_prompt_mean_se_and_mc_kl_against_numpy():
    rng = np.random.default_rng(0)
    lp = rng.normal(-20, 3, size=(6, 5))
    ref = lp + rng.normal(-0.5, 1.0, size=(6, 5))
    d = lp - ref
    got = E.mc_kl(lp, ref)
    m = d.mean(1)
    assert got["k1"] == pytest.approx(m.mean(), abs=1e-12)
    assert got["k1_se"] == pytest.approx(m.std(ddof=1) / math.sqrt(6), abs=1e-12)
    k3 = (np.exp(-d) - 1 + d).mean(1)
    assert got["k3"] == pytest.approx(k3.mean(), rel=1e-12)
    assert got["k3_se"] == pytest.approx(k3.std(ddof=1) / math.sqrt(6), rel=1e-10)
    assert got["samples"] == 30
    mean, se = E.per_prompt_mean_se(np.full((4, 3), 1e8) + np.arange(4)[:, None])  # no cancellation
    assert mean == pytest.approx(1e8 + 1.5) and se == pytest.approx(np.std(np.arange(4), ddof=1) / 2, rel=1e-12)


def test_distinct_n_hand_counts():
    seqs = [[1, 2, 3, 1, 2], [1, 2], [4]]
    # unigrams: 1,2,3,1,2,1,2,4 → 8 total, distinct {1,2,3,4} = 4
    assert E.distinct_n(seqs, 1) == 4 / 8
    # bigrams: (1,2),(2,3),(3,1),(1,2),(1,2) → 5 total, distinct 3
    assert E.distinct_n(seqs, 2) == 3 / 5
    # trigrams: (1,2,3),(2,3,1),(3,1,2) → 3 distinct of 3
    assert E.distinct_n(seqs, 3) == 1.0
    assert E.distinct_n([[1]], 2) == 0.0
    with pytest.raises(ValueError, match="n=0"):
        E.distinct_n(seqs, 0)


# ---------------------------------------------------------------------------------------------------------
# Monte-Carlo KL against the exact KL of a tiny model (vocab 5, 2 new tokens: 25 completions)

V, T = 5, 2


def _tiny(seed):
    m = create_model(ModelConfig(vocab_size=V, d_model=16, n_layers=1, n_heads=2, max_seq_len=8), seed=seed)
    m.embed.set_value(m.embed[...] * 8.0)  # sharper next-token distributions: a KL between two seeds worth estimating
    return m


def _np_seq_logps(model, prompt, seqs):
    ids = np.concatenate([np.repeat(prompt, len(seqs), 0), seqs], 1)
    logits = np.asarray(model(jnp.asarray(ids), jnp.ones(ids.shape, jnp.int32)).logits, np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = prompt.shape[1]
    return sum(logp[np.arange(len(seqs)), p + t - 1, seqs[:, t]] for t in range(seqs.shape[1]))


def test_mc_kl_matches_exact_kl_on_an_enumerable_model():
    pol, ref = _tiny(0), _tiny(1)
    prompt = np.array([[1, 3]], np.int32)
    seqs = np.array([[a, b] for a in range(V) for b in range(V)], np.int32)
    lp_p, lp_r = _np_seq_logps(pol, prompt, seqs), _np_seq_logps(ref, prompt, seqs)
    assert np.exp(lp_p).sum() == pytest.approx(1.0, abs=1e-5)
    exact = float(np.exp(lp_p) @ (lp_p - lp_r))
    assert exact > 0.05  # a KL worth estimating

    n_prompts, n = 40, 50  # the same prompt 40 times: 2000 samples, SE over 40 groups
    ids, mask = np.repeat(prompt, n_prompts * n, 0), np.ones((n_prompts * n, 2), np.int32)
    smp = E._sample(pol, ids, mask, jax.random.key(0), max_new_tokens=T, temperature=1.0, eos_id=None, pad_id=0,
                    batch_size=1000)
    lp_pol = E._sequence_logps(pol, smp, 1000)
    lp_ref = E._sequence_logps(ref, smp, 1000)
    # the evaluator's sequence log-probs equal numpy's on the sampled completions
    comp = smp["completion_ids"]
    np.testing.assert_allclose(lp_pol, _np_seq_logps(pol, prompt, comp), atol=2e-4)
    np.testing.assert_allclose(lp_ref, _np_seq_logps(ref, prompt, comp), atol=2e-4)
    got = E.mc_kl(lp_pol.reshape(n_prompts, n), lp_ref.reshape(n_prompts, n))
    assert abs(got["k1"] - exact) < 4 * got["k1_se"], (got, exact)
    assert abs(got["k3"] - exact) < 4 * got["k3_se"], (got, exact)
    assert got["k1_se"] < 0.2 * exact


# ---------------------------------------------------------------------------------------------------------
# User errors


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("The movie was\n\nI think that\nThe food\nOverall the service\n")
    return p


def test_load_prompts(tmp_path, prompts):
    assert E.load_prompts(prompts) == ["The movie was", "I think that", "The food", "Overall the service"]
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a", "chosen": "x"}\n\n{"prompt": "b"}\n')
    assert E.load_prompts(j) == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(E.EvalError, match=r"bad.jsonl:2: .*'prompt'"):
        E.load_prompts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(E.EvalError, match=r"empty.txt: no prompts"):
        E.load_prompts(empty)


def test_user_errors(tmp_path, prompts):
    with pytest.raises(E.EvalError, match="nope: no such model directory"):
        E.evaluate(str(tmp_path / "nope"), "small_lm", "lexicon", prompts)
    with pytest.raises(FileNotFoundError, match="missing.txt: no such prompt file"):
        E.evaluate("small_lm", "small_lm", "lexicon", tmp_path / "missing.txt")
    other = tmp_path / "other"
    save_pretrained(create_model(ModelConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2, max_seq_len=64)),
                    other)
    with pytest.raises(E.EvalError, match=r"other/config.json:\d+: vocabulary mismatch: the baseline has vocab_size=300.*vocab_size=259"):
        E.evaluate("small_lm", str(other), "lexicon", prompts)
    with pytest.raises(E.EvalError, match="'lexicn'.*Did you mean: lexicon"):
        E.evaluate("small_lm", "small_lm", "lexicn", prompts)
    with pytest.raises(E.EvalError, match="no such reward-model directory"):
        E.evaluate("small_lm", "small_lm", f"rm:{tmp_path / 'rm'}", prompts)
    from jalign.models import create_reward_model

    save_pretrained(create_reward_model(ModelConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2,
                                                    max_seq_len=64)), tmp_path / "rm300")
    with pytest.raises(E.EvalError, match=r"rm300/config.json: vocabulary mismatch.*vocab_size=300"):
        E.evaluate("small_lm", "small_lm", f"rm:{tmp_path / 'rm300'}", prompts)
    with pytest.raises(E.EvalError, match="--best-of 1"):
        E.evaluate("small_lm", "small_lm", "lexicon", prompts, best_of=1)
    with pytest.raises(E.EvalError, match="--n 0"):
        E.evaluate("small_lm", "small_lm", "lexicon", prompts, n=0)


def test_cli_errors_exit_2(tmp_path, prompts, capsys):
    from jalign.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["eval", "--policy", "small_lm", "--baseline", "small_lm", "--judge", "lexicon",
                 "--data", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"jalign eval: error: {empty}: no prompts (the file is empty)"]
    assert main(["eval", "--policy", str(tmp_path / "x"), "--baseline", "small_lm", "--judge", "lexicon",
                 "--data", str(prompts)]) == 2
    assert "x: no such model directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# One CLI run: the shipped small LM against itself


def test_cli_small_lm_against_itself(tmp_path, prompts, capsys):
    from jalign.cli import main

    data = tmp_path / "p8.txt"
    data.write_text("\n".join(["The movie was", "I think that", "The food", "Overall the service", "My friend said",
                               "The book is", "Yesterday I", "This place"]) + "\n")
    out = tmp_path / "out"
    rc = main(["eval", "--policy", "small_lm", "--baseline", "small_lm", "--judge", "count_token",
               "--judge-kwargs", '{"token": 101}', "--data", str(data), "--n", "4", "--best-of", "2",
               "--max-new-tokens", "16", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    w = res["win_rate"]
    assert w["prompts"] == 8 and w["comparisons"] == 8 * 16
    assert abs(w["win_rate"] - 0.5) < 3 * w["se"], w  # the same model: 0.5 within its standard error
    # the reported win rate and reward means are those of the saved judge scores
    sp, sb = np.array(res["policy"]["scores"]), np.array(res["baseline"]["scores"])
    assert w["win_rate"] == pytest.approx(E.win_rate(sp, sb)["win_rate"], abs=1e-12)
    assert res["policy"]["reward_mean"] == pytest.approx(sp.mean(), abs=1e-12)
    # the same model as policy and reference: every d = ln π − ln π_ref is exactly 0
    assert res["kl"]["k1"] == 0.0 and res["kl"]["k3"] == 0.0
    assert 1 <= res["policy"]["lengths"]["mean"] <= 16 and res["policy"]["lengths"]["max"] <= 16
    assert 0 < res["policy"]["distinct_2"] <= 1
    b = res["best_of_n"]
    assert b["N"] == 2 and b["kl_bound"] == pytest.approx(math.log(2) - 0.5)
    # best-of-2 under the judge: each kept score is the larger of its two policy draws
    cand = np.array(b["candidate_scores"])
    assert cand.shape == (8, 4, 2)
    np.testing.assert_array_equal(np.array(b["scores"]), cand.max(-1))
    assert b["reward_mean"] == pytest.approx(cand.max(-1).mean(), abs=1e-12) and b["reward_mean"] >= cand.mean()
    assert b["win_rate"]["win_rate"] == pytest.approx(E.win_rate(cand.max(-1), sb)["win_rate"], abs=1e-12)
    assert {p.name for p in out.iterdir()} >= {"results.json", "report.md", "eval.png", "eval.pdf"}
    assert "win rate" in capsys.readouterr().out
    assert "| policy |" in (out / "report.md").read_text()


def test_rm_judge_scores_the_unpadded_prompt_and_completion(tmp_path):
    """``rm:A,B`` = the mean of two reward models' scores of [prompt, completion] at its last real token."""
    from jalign.models import create_reward_model, load_reward_model

    cfg = ModelConfig(vocab_size=259, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)
    for i in range(2):
        save_pretrained(create_reward_model(cfg, seed=i), tmp_path / f"rm{i}")
    pad = 256
    judge, desc = E.make_judge(f"rm:{tmp_path / 'rm0'},{tmp_path / 'rm1'}", vocab_size=259, pad_id=pad)
    assert "rm0" in desc and "rm1" in desc
    # left-padded prompts, right-padded completions of different lengths
    prompts = [[257, 65, 66], [257, 67]]
    comps = [[70, 71, 258], [72]]
    p_ids = np.full((2, 3), pad, np.int32)
    p_ids[0], p_ids[1, 1:] = prompts[0], prompts[1]
    c_ids = np.full((2, 3), pad, np.int32)
    c_mask = np.zeros((2, 3), np.int32)
    for i, c in enumerate(comps):
        c_ids[i, :len(c)], c_mask[i, :len(c)] = c, 1
    got = judge(p_ids, c_ids, c_mask)
    models = [load_reward_model(tmp_path / f"rm{i}") for i in range(2)]
    want = [np.mean([float(m.rewards(jnp.asarray([p + c], jnp.int32))[0]) for m in models])
            for p, c in zip(prompts, comps, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert abs(want[0] - want[1]) > 1e-6  # the rows really differ

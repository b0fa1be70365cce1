"""`jalign diagnose` end to end on a tiny byte-level CausalLM: every reported number against an independent
computation in this file (the model forwarded here, log_softmax + gather in numpy), and the input errors."""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.cli import main
from jalign.models import ModelConfig, create_model, load_pretrained, safetensors_io, save_pretrained

BETA = 0.5
BOS, EOS = 257, 258
CFG = dict(arch="gpt2", vocab_size=259, d_model=16, n_layers=1, n_heads=2, max_seq_len=64, bos_id=BOS, eos_id=EOS,
           pad_id=256)
RECORDS = [
    {"prompt": "ab", "chosen": " cd", "rejected": " xyz!", "pref_prob": 0.7},
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green", "score_chosen": 4.0, "score_rejected": 1.0},
    {"prompt": "1+1=", "chosen": "2", "rejected": "11", "score_chosen": 2.0, "score_rejected": 2.5},
    {"prompt": "Hi", "chosen": " hello there", "rejected": " go", "score_chosen": 3.0, "score_rejected": 0.0},
    {"prompt": "Q: cat? A:", "chosen": " meow", "rejected": " woof woof", "score_chosen": 1.0,
     "score_rejected": 0.5},
]


def _write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("diag")
    base = save_pretrained(create_model(ModelConfig(**CFG), seed=0), d / "base")
    pert = d / "perturbed"
    pert.mkdir()
    shutil.copy(base / "config.json", pert / "config.json")
    rng = np.random.default_rng(1)
    t = safetensors_io.load_file(base / "model.safetensors")
    t = {k: (v + 0.3 * rng.standard_normal(v.shape).astype(v.dtype)) for k, v in t.items()}
    safetensors_io.save_file(t, pert / "model.safetensors", metadata={"format": "pt"})
    big = save_pretrained(create_model(ModelConfig(**{**CFG, "vocab_size": 300}), seed=0), d / "bigvocab")
    data = _write_jsonl(d / "pairs.jsonl", RECORDS)
    return {"dir": d, "base": base, "pert": pert, "big": big, "data": data}


# ---------------------------------------------------------------------------------------------------------
# The independent computation.


def _encode(prompt, response):
    p = [BOS] + list(prompt.encode())
    return p + list(response.encode()) + [EOS], len(p)


L = CFG["max_seq_len"]


def _padded(prompt, response):
    """Right-padded to the context with token 0 and no attention mask: causal attention keeps every real
    position independent of what follows, so this path shares nothing with the tool's padding."""
    ids, plen = _encode(prompt, response)
    return np.asarray(ids + [0] * (L - len(ids)), np.int32), plen, len(ids)


_DIRECT = {}


def _direct(model_dir):
    """Per pair: summed response log-probs, lengths, CHES and CHES-LN (hidden states summed at the positions
    predicting a response token)."""
    if str(model_dir) in _DIRECT:
        return _DIRECT[str(model_dir)]
    model = load_pretrained(model_dir)
    seqs = [_padded(r["prompt"], r[side]) for r in RECORDS for side in ("chosen", "rejected")]
    res = jax.jit(lambda ids: model(ids, return_hidden=True))(jnp.asarray(np.stack([s[0] for s in seqs])))
    logits = np.asarray(res.logits, np.float64)
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    hid = np.asarray(res.hidden_states, np.float64)
    out = {k: [] for k in ("w", "l", "nw", "nl", "ches", "ches_ln")}
    for i in range(len(RECORDS)):
        S, n = {}, {}
        for j, (side, key) in enumerate((("chosen", "w"), ("rejected", "l"))):
            ids, plen, end = seqs[2 * i + j]
            out[key].append(sum(logp[2 * i + j, t - 1, ids[t]] for t in range(plen, end)))
            out["n" + key].append(end - plen)
            S[side], n[side] = hid[2 * i + j, plen - 1:end - 1].sum(0), end - plen
        cross, self_ = S["chosen"] @ S["rejected"], S["chosen"] @ S["chosen"]
        out["ches"].append(cross - self_)
        out["ches_ln"].append(cross / (n["chosen"] * n["rejected"]) - self_ / n["chosen"] ** 2)
    _DIRECT[str(model_dir)] = res = {k: np.asarray(v, np.float64) for k, v in out.items()}
    return res


def _acc(w, l_):
    return float(np.mean(w > l_))


def _run(setup, out, *extra):
    rc = main(["diagnose", "--data", str(setup["data"]), "--out", str(out), "--beta", str(BETA), "--no-progress",
               *extra])
    return rc, json.loads((out / "results.json").read_text()) if rc == 0 else None


# ---------------------------------------------------------------------------------------------------------


def test_reference_equals_policy(setup, tmp_path):
    rc, res = _run(setup, tmp_path / "a", "--policy", str(setup["base"]), "--entanglement-pairs", "0")
    assert rc == 0
    d = _direct(setup["base"])
    pp = res["pairs"]
    np.testing.assert_allclose(pp["chosen_logps"], d["w"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(pp["rejected_logps"], d["l"], rtol=1e-5, atol=1e-4)
    assert pp["chosen_lengths"] == list(d["nw"]) and pp["rejected_lengths"] == list(d["nl"])
    assert np.min(np.abs(d["w"] - d["l"])) > 1e-2  # no near-ties: the accuracies below are exact
    rk = res["ranking"]
    assert rk["policy"]["summed"] == pytest.approx(_acc(d["w"], d["l"]))
    assert rk["policy"]["length_normalized"] == pytest.approx(_acc(d["w"] / d["nw"], d["l"] / d["nl"]))
    assert rk["reference"] == rk["policy"]
    # reference = policy: no displacement at all
    assert pp["chosen_change"] == [0.0] * len(RECORDS) and pp["rejected_change"] == [0.0] * len(RECORDS)
    assert res["displacement"]["chosen_down"] == 0 and res["inputs"]["reference_is_policy"]
    # idealised accuracy: p = 0.7 (pref_prob) for pair 0, σ(score difference) for the others → logit(p)
    logit = np.array([math.log(0.7 / 0.3)] + [r["score_chosen"] - r["score_rejected"] for r in RECORDS[1:]])
    ideal = np.mean(d["w"] - d["l"] + logit / BETA > 0)
    assert rk["idealized"]["value"] == pytest.approx(ideal) and rk["idealized"]["pairs"] == len(RECORDS)
    assert rk["idealized"]["p_from"] == ["pref_prob", "scores"]
    # misranked pairs and the loss at the flip −ln σ(β·(rp_l − rp_w)) = ln(1 + exp(β·(rp_w − rp_l)))
    mis = ~(d["w"] > d["l"])
    assert res["misranked"]["pairs"] == list(np.flatnonzero(mis))
    np.testing.assert_allclose(pp["dpo_loss_at_flip"], np.log1p(np.exp(BETA * (d["w"] - d["l"]))), rtol=1e-4)
    # CHES under the reference, and its ranking (descending)
    np.testing.assert_allclose(pp["ches"], d["ches"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(pp["ches_ln"], d["ches_ln"], rtol=1e-4, atol=1e-4)
    assert res["ches"]["order"] == list(np.argsort(-d["ches"], kind="stable"))
    assert res["entanglement"] is None
    for f in ("report.md", "report.html", "logp_changes.png", "margin_vs_flip_loss.png"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Ranking accuracy" in md and "## Likelihood displacement" in md
    assert (tmp_path / "a" / "report.html").read_text().count("<table>") == md.count("\n|---")

    # an explicit --reference identical to the policy gives the same numbers (computed twice)
    rc, res2 = _run(setup, tmp_path / "b", "--policy", str(setup["base"]), "--reference", str(setup["base"]),
                    "--entanglement-pairs", "0")
    assert rc == 0 and not res2["inputs"]["reference_is_policy"]
    np.testing.assert_allclose(res2["pairs"]["chosen_change"], 0.0, atol=1e-5)
    np.testing.assert_allclose(res2["pairs"]["rejected_change"], 0.0, atol=1e-5)
    assert res2["ranking"]["policy"] == res2["ranking"]["reference"] == rk["policy"]


def test_perturbed_policy(setup, tmp_path):
    rc, res = _run(setup, tmp_path / "p", "--policy", str(setup["pert"]), "--reference", str(setup["base"]),
                   "--entanglement-pairs", "5", "--seed", "0")  # two gradient chunks (4 + 1)
    assert rc == 0
    pol, ref = _direct(setup["pert"]), _direct(setup["base"])
    pp = res["pairs"]
    dw, dl = pol["w"] - ref["w"], pol["l"] - ref["l"]
    assert np.min(np.abs(dw)) > 1e-2 and np.min(np.abs(dl)) > 1e-2
    np.testing.assert_allclose(pp["chosen_change"], dw, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(pp["rejected_change"], dl, rtol=1e-4, atol=2e-4)
    assert res["displacement"]["chosen_down"] == int((dw < 0).sum())
    assert res["displacement"]["both_down"] == int(((dw < 0) & (dl < 0)).sum())
    assert np.min(np.abs(pol["w"] - pol["l"])) > 1e-2 and np.min(np.abs(ref["w"] - ref["l"])) > 1e-2
    assert res["ranking"]["policy"]["summed"] == pytest.approx(_acc(pol["w"], pol["l"]))
    assert res["ranking"]["reference"]["summed"] == pytest.approx(_acc(ref["w"], ref["l"]))
    assert res["ranking"]["reference"]["length_normalized"] == pytest.approx(
        _acc(ref["w"] / ref["nw"], ref["l"] / ref["nl"]))
    mis = ~(ref["w"] > ref["l"])
    assert res["misranked"]["count"] == int(mis.sum())
    assert res["misranked"]["flipped_by_policy"] == int((mis & (pol["w"] > pol["l"])).sum())
    np.testing.assert_allclose(pp["ches"], ref["ches"], rtol=1e-4, atol=1e-3)  # CHES is the reference's

    # entanglement on the sampled pairs: cosines from per-example gradients taken here
    ent = res["entanglement"]
    idx = np.sort(np.random.default_rng(0).choice(len(RECORDS), size=5, replace=False))
    assert ent["pairs"] == list(idx)
    model = load_pretrained(setup["pert"])
    gd, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    @jax.grad
    def grad_logp(params, ids, target):  # target[t] = 1 where ids[t] is a response token
        lsm = jax.nn.log_softmax(nnx.merge(gd, params, rest)(ids[None]).logits[0, :-1], -1)
        return jnp.sum(jnp.take_along_axis(lsm, ids[1:, None], -1)[:, 0] * target[1:])

    def grad(prompt, response):
        ids, plen, end = _padded(prompt, response)
        target = ((np.arange(L) >= plen) & (np.arange(L) < end)).astype(np.float32)
        g = grad_logp(params, jnp.asarray(ids), jnp.asarray(target))
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]).astype(np.float64)

    cos, inner = [], []
    for i in idx:
        gw, gl = (grad(RECORDS[i]["prompt"], RECORDS[i][s]) for s in ("chosen", "rejected"))
        inner.append(gw @ gl)
        cos.append(gw @ gl / np.sqrt((gw @ gw) * (gl @ gl)))
    np.testing.assert_allclose(ent["stats"]["cosine"], cos, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ent["stats"]["inner"], inner, rtol=1e-3)
    # DPO weights a = −βσ(−βh), b = −a with h the implicit-reward margin
    h = dw[idx] - dl[idx]
    a = -BETA / (1 + np.exp(BETA * h))
    dpo = ent["losses"]["sigmoid"]
    np.testing.assert_allclose(dpo["a"], a, rtol=1e-4)
    np.testing.assert_allclose(dpo["b"], -a, rtol=1e-4)
    assert set(ent["losses"]) == {"sigmoid", "ipo", "simpo"}
    # the case labels follow the first-order changes −(a‖g_w‖² + b⟨g_w,g_l⟩), −(a⟨g_w,g_l⟩ + b‖g_l‖²)
    st = ent["stats"]
    for name, r in ent["losses"].items():
        a_, b_ = np.asarray(r["a"]), np.asarray(r["b"])
        up = -(a_ * np.asarray(st["chosen_sq_norm"]) + b_ * np.asarray(st["inner"])) >= 0
        down = -(a_ * np.asarray(st["inner"]) + b_ * np.asarray(st["rejected_sq_norm"])) <= 0
        expect = np.where(up & down, 0, np.where(down, 1, np.where(up, 2, 3)))
        assert r["case"] == list(expect), name


def test_listwise_file_gives_every_ordered_pair(setup, tmp_path):
    data = _write_jsonl(tmp_path / "lw.jsonl", [
        {"prompt": "x", "completions": [" a", " bb", " c"], "scores": [3.0, 1.0, 2.0]},
        {"prompt": "y", "completions": [" d", " e"], "ranks": [2, 1]},  # ranks alone: no preference probability
    ])
    rc = main(["diagnose", "--policy", str(setup["base"]), "--data", str(data), "--out", str(tmp_path / "o"),
               "--entanglement-pairs", "0", "--no-progress"])
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert rc == 0 and res["n_pairs"] == 4 and res["pairs"]["line"] == [1, 1, 1, 2]
    # pairs (a ≻ bb), (a ≻ c), (c ≻ bb): score differences 2, 1, 1 → p = σ(difference)
    np.testing.assert_allclose(res["pairs"]["pref_prob"][:3], 1 / (1 + np.exp(-np.array([2.0, 1.0, 1.0]))))
    assert res["pairs"]["pref_prob"][3] is None
    assert res["ranking"]["idealized"]["pairs"] == 3 and res["ranking"]["idealized"]["p_from"] == ["scores"]


# ---------------------------------------------------------------------------------------------------------
# Errors: exit 2, one line naming the file (and line).


def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    return err


def test_vocabulary_mismatch(setup, capsys, tmp_path):
    err = _err(capsys, ["diagnose", "--policy", str(setup["base"]), "--reference", str(setup["big"]),
                        "--data", str(setup["data"]), "--out", str(tmp_path)])
    line = next(i for i, ln in enumerate((setup["big"] / "config.json").read_text().splitlines(), 1)
                if '"vocab_size"' in ln)
    assert f"{setup['big'] / 'config.json'}:{line}: vocabulary mismatch" in err
    assert "vocab_size=300" in err and "vocab_size=259" in err


def test_empty_data_file(setup, capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    err = _err(capsys, ["diagnose", "--policy", str(setup["base"]), "--data", str(empty), "--out", str(tmp_path)])
    assert err == f"jalign diagnose: {empty}: empty data file (no records)"


def test_pair_longer_than_context(setup, capsys, tmp_path):
    recs = RECORDS[:2] + [{"prompt": "p" * 40, "chosen": " ok", "rejected": " " + "r" * 30}] + RECORDS[2:]
    data = _write_jsonl(tmp_path / "long.jsonl", recs)
    err = _err(capsys, ["diagnose", "--policy", str(setup["base"]), "--data", str(data), "--out", str(tmp_path)])
    assert f"{data}:3: pair longer than the model's context: prompt + rejected is 73 tokens > 64" in err


def test_invalid_record_and_missing_model(setup, capsys, tmp_path):
    data = _write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], {"prompt": "x", "chosen": "same", "rejected": "same"}])
    err = _err(capsys, ["diagnose", "--policy", str(setup["base"]), "--data", str(data), "--out", str(tmp_path)])
    assert f"{data}:2: field 'rejected': identical to chosen" in err
    err = _err(capsys, ["diagnose", "--policy", str(tmp_path / "nope"), "--data", str(setup["data"]),
                        "--out", str(tmp_path)])
    assert f"{tmp_path / 'nope'}: no such model directory" in err


# ---------------------------------------------------------------------------------------------------------
# Where the lost mass went; top-k indicators; --run.


def _probs(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


_FORWARD = {}


def _forward(model_dir):
    """``ids -> logits [len(ids), V]`` (float64): one jitted forward of the sequence right-padded with token 0
    to the context, no attention mask (causal: the padding after a position does not change it)."""
    if str(model_dir) not in _FORWARD:
        model = load_pretrained(model_dir)
        fwd = jax.jit(lambda x: model(x).logits[0])

        def f(ids):
            return np.asarray(fwd(jnp.asarray([list(ids) + [0] * (L - len(ids))], jnp.int32)), np.float64)[:len(ids)]

        _FORWARD[str(model_dir)] = f
    return _FORWARD[str(model_dir)]


def _first_position_probs(model_dir):
    """softmax of the logits at the last prompt token of each chosen sequence (predicting its first token)."""
    out = []
    for r in RECORDS:
        ids, plen = _encode(r["prompt"], r["chosen"])
        out.append(_probs(_forward(model_dir)(ids)[plen - 1]))
    return np.stack(out)


def test_where_the_lost_mass_went(setup, tmp_path):
    rc, res = _run(setup, tmp_path / "m", "--policy", str(setup["pert"]), "--reference", str(setup["base"]),
                   "--entanglement-pairs", "0", "--sample-prompts", "0")
    assert rc == 0 and res["topk"] is None
    dw = _direct(setup["pert"])["w"] - _direct(setup["base"])["w"]
    rows = np.flatnonzero(dw < 0)
    assert len(rows) > 0
    lm = res["lost_mass"]
    assert lm["pairs"] == list(rows)
    gain = _first_position_probs(setup["pert"])[rows] - _first_position_probs(setup["base"])[rows]  # [R, V]
    first = [_encode(RECORDS[i]["prompt"], RECORDS[i]["chosen"])[0][_encode(RECORDS[i]["prompt"], "")[1]]
             for i in rows]
    first_change = np.mean([gain[j, t] for j, t in enumerate(first)])
    gain[np.arange(len(rows)), first] = 0.0  # the chosen first token itself is left out
    mean_gain = gain.mean(0)
    top = lm["top_tokens"]
    assert len(top) == 10
    np.testing.assert_allclose([t["mean_gain"] for t in top], np.sort(mean_gain)[::-1][:10], rtol=1e-3, atol=1e-6)
    for t in top:
        assert t["mean_gain"] == pytest.approx(mean_gain[t["token"]], rel=1e-3, abs=1e-6)
        # pairs whose own 5 largest gains include the token
        assert t["pairs_in_top_k"] == int(sum(t["token"] in np.argsort(-g)[:5] for g in gain))
        i = t["token"]
        want = {256: "<pad>", 257: "<bos>", 258: "<eos>"}.get(i, repr(bytes([i]))[2:-1] if i < 256 else None)
        assert t["text"] == want
    np.testing.assert_allclose(np.asarray(lm["token_gains"]), -np.sort(-gain, axis=-1)[:, :5], rtol=1e-3, atol=1e-6)
    assert lm["first_chosen_token"] == first
    assert lm["mean_first_chosen_token_prob_change"] == pytest.approx(first_change, rel=1e-3, abs=1e-6)
    md = (tmp_path / "m" / "report.md").read_text()
    assert "## Where the lost mass went" in md and f"| 1 | {top[0]['token']} |" in md
    # roles swapped, no chosen log-prob falls; without a reference nothing changes: the section is omitted
    rc, res0 = _run(setup, tmp_path / "n", "--policy", str(setup["base"]), "--reference", str(setup["pert"]),
                    "--entanglement-pairs", "0", "--sample-prompts", "0")
    assert rc == 0 and res0["displacement"]["chosen_down"] == 0 and res0["lost_mass"] is None
    assert "Where the lost mass went" not in (tmp_path / "n" / "report.md").read_text()
    rc, res0 = _run(setup, tmp_path / "n2", "--policy", str(setup["base"]), "--entanglement-pairs", "0",
                    "--sample-prompts", "0")
    assert rc == 0 and res0["lost_mass"] is None


def _np_topk(model, prompt_ids, completion):
    """M_k, H_k (k = 1, 5, 10; renormalised), H at the positions predicting the completion's tokens (sums, count)."""
    ids = list(prompt_ids) + list(completion)
    p = _probs(model(ids))[len(prompt_ids) - 1:len(ids) - 1]
    ps = -np.sort(-p, axis=-1)
    out = {"entropy": -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1).sum()}
    for k in (1, 5, 10):
        m = ps[:, :k].sum(-1)
        q = ps[:, :k] / m[:, None]
        out[f"mass_top{k}"], out[f"entropy_top{k}"] = m.sum(), -(q * np.log(q)).sum(-1).sum()
    return out, len(completion)


def _np_greedy(model, prompt_ids, n):
    ids = list(prompt_ids)
    for _ in range(n):
        t = int(np.argmax(model(ids)[-1]))
        ids.append(t)
        if t == EOS:
            break
    return ids[len(prompt_ids):]


def test_topk_indicators(setup, tmp_path):
    new = 5
    rc, res = _run(setup, tmp_path / "t", "--policy", str(setup["pert"]), "--reference", str(setup["base"]),
                   "--entanglement-pairs", "0", "--sample-prompts", "3", "--max-new-tokens", str(new))
    assert rc == 0
    tk = res["topk"]
    assert tk["prompts"] == [r["prompt"] for r in RECORDS[:3]] and tk["max_new_tokens"] == new
    for label, d in (("policy", setup["pert"]), ("reference", setup["base"])):
        model = _forward(d)
        for decoding in ("greedy", "sampled"):
            rep = tk["models"][label][decoding]
            sums, count = {}, 0
            for i, prompt in enumerate(tk["prompts"]):
                pids = [BOS] + list(prompt.encode())
                comp = rep["completions"][i]
                if decoding == "greedy":
                    assert comp == _np_greedy(model, pids, new), (label, i)
                assert 1 <= len(comp) <= new and (len(comp) == new or comp[-1] == EOS)
                s, c = _np_topk(model, pids, comp)
                for k_, v in s.items():
                    sums[k_] = sums.get(k_, 0.0) + v
                count += c
            assert rep["tokens"] == count and rep["mean_length"] == pytest.approx(count / 3)
            for k_, v in sums.items():
                assert rep[k_] == pytest.approx(v / count, rel=1e-4, abs=1e-5), (label, decoding, k_)
    md = (tmp_path / "t" / "report.md").read_text()
    assert "## Top-k indicators on the models' own completions" in md
    assert md.count("| policy | greedy |") == 1 and md.count("| reference | sampled |") == 1
    rc = main(["diagnose", "--policy", str(setup["base"]), "--data", str(setup["data"]), "--out",
               str(tmp_path / "x"), "--max-new-tokens", "0", "--no-progress"])
    assert rc == 2


def test_run_over_checkpoints(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "train"))
    from _train_helpers import np_seq_logps, small_cfg

    from jalign.train import plugins, train
    from jalign.train.step import logits_fn

    def cfg(steps, workdir=""):
        c = small_cfg(train__steps=steps, loss__name="dpo")
        c.workdir = workdir
        c.checkpoint.every = 2 if workdir else 0
        c.checkpoint.async_save = False
        return c

    wd = tmp_path / "run"
    full = train(cfg(4, str(wd)))
    half = train(cfg(2))  # the same run stopped at step 2 (deterministic), independent of the checkpoints
    c = cfg(4)
    src = plugins.make_data(c.data.name, batch_size=c.data.batch_size, seq_len=c.data.seq_len, seed=c.seed,
                            **dict(c.data.kwargs))
    batches = [next(src) for _ in range(2)]
    batch = {k: np.concatenate([np.asarray(b[k]) for b in batches])[:12] for k in batches[0]}
    init = plugins.make_model(c.model.name, seed=c.seed, **dict(c.model.kwargs))
    gd0, p0, r0 = nnx.split(init, nnx.Param, ...)

    def lps(gd, params, rest):
        return [np_seq_logps(np.asarray(logits_fn(gd, params, rest, batch[f"{s}_ids"], batch[f"{s}_attention_mask"])),
                             batch[f"{s}_ids"], batch[f"{s}_mask"]) for s in ("chosen", "rejected")]

    want = {0: lps(gd0, p0, r0), 2: lps(half.graphdef, half.state.params, half.state.model_state),
            4: lps(full.graphdef, full.state.params, full.state.model_state)}
    nw, nl = batch["chosen_mask"][:, 1:].sum(-1), batch["rejected_mask"][:, 1:].sum(-1)

    out = tmp_path / "o"
    rc = main(["diagnose", "--run", str(wd), "--out", str(out), "--max-pairs", "12", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["run"]["steps"] == [0, 2, 4] and res["run"]["pairs"] == 12
    w0, l0 = want[0]
    for row in res["over_training"]:
        w, l_ = want[row["step"]]
        assert np.min(np.abs(w - l_)) > 1e-3
        assert row["accuracy"] == pytest.approx(np.mean(w > l_))
        assert row["accuracy_normalized"] == pytest.approx(np.mean(w / nw > l_ / nl))
        assert row["mean_chosen_change"] == pytest.approx(np.mean(w - w0), abs=1e-4)
        assert row["mean_rejected_change"] == pytest.approx(np.mean(l_ - l0), abs=1e-4)
        assert row["mean_margin"] == pytest.approx(np.mean(w - l_), rel=1e-4, abs=1e-4)
        if row["step"]:
            assert np.min(np.abs(w - w0)) > 1e-4
        assert row["frac_chosen_down"] == pytest.approx(np.mean(w - w0 < 0))
    assert (out / "diagnostics_over_training.png").stat().st_size > 0
    assert "| 4 |" in (out / "report.md").read_text()
    # the same on a preference file of the user's
    data = _write_jsonl(tmp_path / "p.jsonl", RECORDS)
    rc = main(["diagnose", "--run", str(wd), "--data", str(data), "--out", str(tmp_path / "f"), "--no-progress"])
    assert rc == 0
    resf = json.loads((tmp_path / "f" / "results.json").read_text())
    assert resf["run"]["pairs"] == len(RECORDS) and resf["over_training"][0]["mean_chosen_change"] == 0.0
    # errors: not a workdir; a workdir without checkpoints
    assert main(["diagnose", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((wd / "config.json").read_text())
    assert main(["diagnose", "--run", str(tmp_path / "bare"), "--out", str(tmp_path / "e")]) == 2
    assert "no checkpoint" in capsys.readouterr().err

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

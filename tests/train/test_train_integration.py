"""The trainer with the real pieces: jalign.models transformers, jalign.data grain pipelines, the lexicon reward.

A tiny GPT-2 config (registered model ``causal_lm``) stands in for the small LM for speed; the data are the
built-in ``sentiment_pairs`` through the real grain pipeline (registered ``builtin_*`` sources).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import apply_overrides, np_seq_logps
from flax import nnx

from jalign import losses
from jalign.data import builtin
from jalign.models import CausalLM, forward
from jalign.tokenizers import ByteTokenizer
from jalign.train import ConfigError, base_config, load_config, online, plugins, train
from jalign.train.batch import PAIRWISE_FIELDS
from jalign.train.objectives import make_objective
from jalign.train.sharding import MODEL_AXES_RULES, make_mesh
from jalign.train.step import make_logps_fn, split_model, state_shardings

TOK = ByteTokenizer()
TINY = {"arch": "gpt2", "vocab_size": 259, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 160}
P, T, N = 48, 144, 64  # max prompt length, sequence length, records used


def _cfg(**over):
    c = base_config()
    c.model.name = "causal_lm"
    for k, v in TINY.items():
        c.model.kwargs[k] = v
    c.data.name = "builtin_pairwise"
    c.data.batch_size = 4
    c.data.seq_len = T
    c.data.kwargs.n = N
    c.data.kwargs.max_prompt_len = P
    c.optim.name = "adam"
    c.optim.lr = 1e-2
    c.optim.schedule = "constant"
    c.train.steps = 2
    c.train.progress = False
    c.train.tensorboard = False
    c.mesh.data = 1
    return apply_overrides(c, over)


def _source(name="builtin_pairwise", batch_size=4, seed=0):
    return plugins.make_data(name, batch_size=batch_size, seq_len=T, seed=seed, n=N, max_prompt_len=P)


def _model(seed=0) -> CausalLM:
    return plugins.make_model("causal_lm", seed=seed, **TINY)


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    """A persistent XLA compilation cache for this module: the trainer jits a new step per ``train()`` call,
    and runs with the same config (resume, 6 vs 3 steps with a constant schedule) compile the same program."""
    from jax._src import compilation_cache

    old = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                                                "jax_persistent_cache_min_entry_size_bytes")}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    yield
    for k, v in old.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def frozen6():
    """6 DPO steps (frozen reference) of the tiny GPT-2 on sentiment pairs: shared by several tests."""
    return train(_cfg(train__steps=6, loss__reference="frozen"))


def _np_gpt2_logits(model: CausalLM, ids_T: np.ndarray) -> np.ndarray:
    """An independent float64 numpy GPT-2 forward of ONE unpadded sequence (positions 0..T-1, causal)."""
    p = {".".join(map(str, k)): np.asarray(v.get_value(), np.float64)
         for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    cfg = model.cfg

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.norm_eps) * p[f"{name}.scale"] + p[f"{name}.bias"]

    t = len(ids_T)
    x = p["embed"][ids_T] + p["pos_embed"][np.arange(t)]
    causal = np.tril(np.ones((t, t), bool))
    for i in range(cfg.n_layers):
        a = f"layers.{i}.attn"
        h = ln(x, f"layers.{i}.attn_norm")
        q, k, v = (np.einsum("td,dhk->thk", h, p[f"{a}.w{c}"]) + p[f"{a}.b{c}"] for c in "qkv")
        s = np.einsum("thk,shk->hts", q, k) / np.sqrt(cfg.head_dim)
        s = np.where(causal[None], s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shk,hkd->td", w, v, p[f"{a}.wo"]) + p[f"{a}.bo"]
        h = ln(x, f"layers.{i}.mlp_norm")
        u = h @ p[f"layers.{i}.mlp.w_in"] + p[f"layers.{i}.mlp.b_in"]
        u = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u**3)))
        x = x + u @ p[f"layers.{i}.mlp.w_out"] + p[f"layers.{i}.mlp.b_out"]
    return ln(x, "final_norm") @ p["embed"].T


def _direct_logps(model, ids, mask, attn):
    """Per row: the *unpadded* sequence (the attention mask's tokens, in order) through an independent numpy
    GPT-2, then the summed response log-probs ``Σ_t mask[t+1] log p(ids[t+1] | ids[≤t])`` in numpy."""
    out = []
    for i, m, a in zip(ids, mask, attn, strict=True):
        keep = np.asarray(a).astype(bool)
        seq, msk = np.asarray(i)[keep], np.asarray(m)[keep]
        out.append(float(np_seq_logps(_np_gpt2_logits(model, seq)[None], seq[None], msk[None])[0]))
    return np.asarray(out)


# ---------------------------------------------------------------------------------------------------------
# Adapters


def test_builtin_sources_match_the_records_and_tokenizer():
    recs = builtin.load("sentiment_pairs", n=N)
    b = next(_source())
    assert sorted(b) == sorted(PAIRWISE_FIELDS)
    assert b["chosen_ids"].shape == (4, T)
    # the same first batch through the SFT and prompt adapters (same seed -> same order)
    s, p = next(_source("builtin_sft")), next(_source("builtin_prompts"))
    np.testing.assert_array_equal(s["ids"], b["chosen_ids"])
    np.testing.assert_array_equal(s["mask"], b["chosen_mask"])
    assert p["prompt_ids"].shape == (4, P)
    for r in range(4):
        n_att = int(b["chosen_attention_mask"][r].sum())
        row = b["chosen_ids"][r, :n_att]
        text = bytes(int(t) for t in row if t < 256).decode()
        rec = next(x for x in recs if x["prompt"] + x["chosen"] == text)
        ids, m = TOK.encode_pair(rec["prompt"], rec["chosen"])
        np.testing.assert_array_equal(row, ids)
        np.testing.assert_array_equal(b["chosen_mask"][r, :n_att], m)
        # left-padded prompt = [BOS] prompt at the right end
        want = TOK.encode(rec["prompt"], add_bos=True)
        np.testing.assert_array_equal(p["prompt_ids"][r, P - len(want):], want)
        assert (p["prompt_ids"][r, : P - len(want)] == TOK.pad_id).all()
        np.testing.assert_array_equal(p["prompt_attention_mask"][r], [0] * (P - len(want)) + [1] * len(want))


def test_lexicon_reward_decodes_completions():
    texts = [" The food was very good.", " The staff was not friendly. Caf\u00e9 food was awful."]
    ids = np.full((2, 60), TOK.pad_id, np.int32)
    mask = np.zeros((2, 60), np.int32)
    for i, t in enumerate(texts):
        enc = TOK.encode(t, add_eos=True)
        ids[i, : len(enc)], mask[i, : len(enc)] = enc, 1
    r = plugins.get_reward("lexicon")(None, ids, mask)
    np.testing.assert_array_equal(r, np.float32([builtin.lexicon_reward(t) for t in texts]))
    assert r[0] > 0 > r[1]


def test_unknown_data_kwarg_and_wrong_kind_are_refused():
    with pytest.raises(TypeError, match=r"max_promt_len.*valid: .*max_prompt_len"):
        plugins.make_data("builtin_pairwise", batch_size=4, seq_len=T, seed=0, max_promt_len=3)
    with pytest.raises(ValueError, match="word_constraint.*scored.*needs a pairwise"):
        plugins.make_data("builtin_pairwise", batch_size=4, seq_len=T, seed=0, dataset="word_constraint")
    with pytest.raises(ValueError, match="max_prompt_len=200"):
        plugins.make_data("builtin_pairwise", batch_size=4, seq_len=T, seed=0, max_prompt_len=200)


# ---------------------------------------------------------------------------------------------------------
# (a) padding invariance through the whole path


def test_trainer_logps_equal_direct_unpadded_model_logps(frozen6):
    model = _model()
    b = next(_source())
    g, params, rest = split_model(model)
    fn = jax.jit(make_logps_fn(g, params, rest))
    direct = {}
    for side in ("chosen", "rejected"):
        ids, mask, attn = (b[f"{side}_{f}"] for f in ("ids", "mask", "attention_mask"))
        trainer, _ = fn(ids, mask, attn)
        direct[side] = _direct_logps(model, ids, mask, attn)
        np.testing.assert_allclose(np.asarray(trainer), direct[side], rtol=1e-5)
        assert np.all(direct[side] < -50)  # ~90 response bytes under a random model: not trivially 0
    # two rows also through jalign.models.forward + jalign.losses.sequence_logps on the unpadded sequence
    for r in range(2):
        keep = b["chosen_attention_mask"][r].astype(bool)
        seq, m = jnp.asarray(b["chosen_ids"][r][keep][None]), jnp.asarray(b["chosen_mask"][r][keep][None])
        lp, _ = losses.sequence_logps(forward(model, seq).logits[:, :-1], seq[:, 1:], m[:, 1:])
        np.testing.assert_allclose(float(lp[0]), direct["chosen"][r], rtol=1e-5)
    # and through train(): step 1's metrics come from the same log-probs (computed before the update)
    h = frozen6.history[0]
    np.testing.assert_allclose(h["logps/chosen"], direct["chosen"].mean(), rtol=1e-5)
    np.testing.assert_allclose(h["logps/rejected"], direct["rejected"].mean(), rtol=1e-5)
    np.testing.assert_allclose(h["loss"], np.log(2.0), rtol=1e-6)  # reference = initial policy


# ---------------------------------------------------------------------------------------------------------
# (b) cached vs frozen reference


def test_cached_reference_equals_frozen_with_the_real_model(frozen6):
    frozen = frozen6
    cached = train(_cfg(train__steps=6, loss__reference="cached"))
    assert frozen.state.ref_params is not None and cached.state.ref_params is None
    for a, b in zip(frozen.history, cached.history, strict=True):
        for k in ("loss", "rewards/margins", "rewards/chosen", "grad_norm"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    init = jax.tree.leaves(split_model(_model())[1])
    assert max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(init, jax.tree.leaves(frozen.state.params), strict=True)) > 1e-3  # it moved
    for x, y in zip(jax.tree.leaves(frozen.state.params), jax.tree.leaves(cached.state.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# (c) resume with the grain iterator state


def test_resume_with_grain_state_is_bit_identical(tmp_path, frozen6):
    full = frozen6
    wd = str(tmp_path / "run")
    first = train(_cfg(train__steps=3, workdir=wd, checkpoint__async_save=False))
    data_state = json.loads((tmp_path / "run/checkpoints/3/data/metadata").read_text())
    assert data_state == {"next_index": 3}  # the grain iterator after 3 batches
    resumed = train(_cfg(train__steps=6, workdir=wd, checkpoint__async_save=False))
    assert first.final_step == 3 and resumed.start_step == 3 and resumed.final_step == 6
    for x, y in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(full.state.opt_state), jax.tree.leaves(resumed.state.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal([h["loss"] for h in full.history[3:]], [h["loss"] for h in resumed.history])


# ---------------------------------------------------------------------------------------------------------
# (d) config typos


def test_config_typo_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*Did you mean: optim\.lr.*Valid keys: .*data\.seq_len"):
        load_config("experiments/dpo_small_lm.py", ["optim.lrr=1e-3"])
    cfg = load_config("experiments/dpo_small_lm.py", ["model.kwargs.dtyp='bfloat16'"])
    with pytest.raises(TypeError, match=r"dtyp"):
        plugins.make_model(cfg.model.name, seed=0, **dict(cfg.model.kwargs))


def test_experiment_configs_load_and_name_registered_entries():
    for name in ("sft_small_lm", "dpo_small_lm", "rloo_small_lm"):
        c = load_config(f"experiments/{name}.py")
        assert c.model.name in plugins.MODELS and c.data.name in plugins.DATA
        assert c.data.kwargs.max_prompt_len < c.data.seq_len


# ---------------------------------------------------------------------------------------------------------
# Online: the KV-cache sampler


def test_kv_sampler_logps_equal_trainer_logps():
    model = _model(seed=1)
    g, params, rest = split_model(model)
    p = next(_source("builtin_prompts"))
    ids, pmask = online.repeat_prompts(p, 2)  # the shapes of the online test below (shared compilation)
    s = online.make_kv_sampler(g, max_new_tokens=8)
    out = {k: np.asarray(v) for k, v in s(params, rest, jnp.asarray(ids), jnp.asarray(pmask),
                                           jax.random.key(3)).items()}
    assert out["ids"].shape == (8, P + 8)
    np.testing.assert_array_equal(out["ids"][:, :P], ids)
    np.testing.assert_array_equal(out["mask"][:, :P], 0)
    np.testing.assert_array_equal(out["attention_mask"][:, P:], out["mask"][:, P:])
    recomputed, _ = jax.jit(make_logps_fn(g, params, rest))(out["ids"], out["mask"], out["attention_mask"])
    np.testing.assert_allclose(out["logps"], np.asarray(recomputed), rtol=1e-5)
    # left-padded prompt + response == the unpadded sequence through the model
    np.testing.assert_allclose(out["logps"], _direct_logps(model, out["ids"], out["mask"], out["attention_mask"]),
                               rtol=1e-5)


@pytest.mark.parametrize("loss", ["rloo", pytest.param("copg", marks=pytest.mark.slow)])
def test_online_small_lm_first_step_equals_independent_recomputation(loss):
    k, new = 2, 8
    cfg = _cfg(mode="online", data__name="builtin_prompts", loss__name=loss,
               loss__reference="frozen" if loss == "copg" else "none", online__num_samples=k,
               online__max_new_tokens=new, online__reward="lexicon", train__steps=2, optim__lr=1e-3)
    res = train(cfg)
    assert [h["step"] for h in res.history] == [1, 2]
    # recompute step 1 outside the loop: same prompts, same sampling key, same sampler, same reward
    model = _model()
    g, params, rest = split_model(model)
    p = next(_source("builtin_prompts"))
    ids, mask = online.repeat_prompts(p, k)
    key = jax.random.fold_in(jax.random.wrap_key_data(jax.random.key_data(jax.random.key(0))), 0x5A)
    samples = online.make_kv_sampler(g, max_new_tokens=new)(params, rest, jnp.asarray(ids), jnp.asarray(mask), key)
    rewards = online.score(plugins.get_reward("lexicon"), ids, samples)
    batch = {f: jnp.asarray(v) for f, v in online.build_batch("scored", samples, rewards, k).items()}
    obj = make_objective("online", loss, {})
    lp_fn = make_logps_fn(g, params, rest)
    total = jax.jit(lambda b: obj.loss_sum(lp_fn, lp_fn if loss == "copg" else None, b)[0] / obj.denominator(b))
    np.testing.assert_allclose(res.history[0]["loss"], float(total(batch)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.history[0]["reward/mean"], float(np.mean(rewards)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Sharding of jalign.models parameters (``axes`` metadata)


def test_model_axes_shard_by_logical_rules():
    model = _model()
    mesh = make_mesh(2, 2, 2)
    from jalign.train.step import init_state, make_optimizer

    tx, _ = make_optimizer(_cfg().optim, 2)
    _, st = init_state(model, tx, reference=False)
    sh = state_shardings(st, mesh)
    axes = model.layers[0].attn.wq.get_metadata()["axes"]
    assert axes == ("embed", "heads", "head_dim")
    assert tuple(sh.params["layers"][0]["attn"]["wq"].get_value().spec) == ("fsdp", "tensor", None)
    assert tuple(sh.params["layers"][0]["mlp"]["w_in"].get_value().spec) == ("fsdp", "tensor")
    assert tuple(sh.params["embed"].get_value().spec) == (None, "fsdp")  # vocab 259 is not divisible by 2
    assert tuple(sh.params["pos_embed"].get_value().spec) == (None, "fsdp")
    assert MODEL_AXES_RULES["vocab"] == "tensor"
    sh2 = state_shardings(st, mesh, {"embed": "tensor"})  # mesh.rules override the model's table
    assert tuple(sh2.params["layers"][0]["attn"]["wq"].get_value().spec) == ("tensor", None, None)


@pytest.mark.slow
def test_sharded_2x2x2_run_equals_one_device(frozen6):
    eight = train(_cfg(train__steps=2, mesh__data=2, mesh__fsdp=2, mesh__tensor=2))
    for a, b in zip(frozen6.history[:2], eight.history, strict=True):
        for k in ("loss", "grad_norm", "rewards/margins"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)

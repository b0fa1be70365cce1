"""Reward models: scores against Hugging Face *ForSequenceClassification golden fixtures, export round trip,
the last-token rule, the value head, ensembles of reward models, bad checkpoints."""

import json
import shutil
from pathlib import Path

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jalign.errors import FileFormatError
from jalign.models import (
    ModelConfig,
    RewardEnsemble,
    RewardModel,
    create_model,
    create_reward_model,
    forward,
    join_prompt_completion,
    last_token_index,
    load_pretrained,
    load_reward_model,
    reward_model_from_causal_lm,
    safetensors_io,
    save_pretrained,
    score,
)

GOLDEN = Path(__file__).parent / "golden"
ARCHS = ["gpt2", "llama", "qwen2"]
LABELS = {"gpt2": 1, "llama": 1, "qwen2": 2}  # qwen2_rm has a 2-wide head: the general case
HF_NAMES = {"gpt2": "GPT2ForSequenceClassification", "llama": "LlamaForSequenceClassification",
            "qwen2": "Qwen2ForSequenceClassification"}


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_match_huggingface(arch):
    """Pooled scores (unpadded; row 0 left-, row 1 right-padded) and per-token scores == transformers."""
    model = load_reward_model(GOLDEN / f"{arch}_rm")
    assert isinstance(model, RewardModel) and model.cfg.arch == arch and model.num_labels == LABELS[arch]
    assert model.cfg.pad_id == 0
    ref = np.load(GOLDEN / f"{arch}_rm" / "ref.npz")
    out = score(model, jnp.asarray(ref["ids"]))
    assert out.scores.shape == (2, LABELS[arch]) and np.abs(ref["scores"]).max() > 0.1
    np.testing.assert_allclose(out.scores, ref["scores"], atol=2e-5, rtol=1e-5)
    m = ref["mask_pad"].astype(bool)
    assert (~m[0, :4]).all() and (~m[1, 9:]).all() and (ref["ids_pad"][~m] == 0).all()
    pad = score(model, jnp.asarray(ref["ids_pad"]), jnp.asarray(ref["mask_pad"]))
    np.testing.assert_allclose(pad.scores, ref["scores_pad"], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(pad.token_scores)[m], ref["token_scores_pad"][m], atol=2e-5, rtol=1e-5)
    # HF's rule (last id != pad_token_id) gives the same mask here: no real token is the pad id.
    np.testing.assert_array_equal(last_token_index(ref["ids_pad"] != 0), [11, 8])


@pytest.mark.parametrize("arch", ARCHS)
def test_export_round_trip_and_layout(arch, tmp_path):
    """save_pretrained(load_reward_model(x)) writes x's tensors bit for bit and a config transformers reads as
    the same *ForSequenceClassification (architectures, num_labels/id2label, pad_token_id); re-import is exact."""
    model = load_reward_model(GOLDEN / f"{arch}_rm")
    save_pretrained(model, tmp_path)
    a = safetensors_io.load_file(GOLDEN / f"{arch}_rm" / "model.safetensors")
    b = safetensors_io.load_file(tmp_path / "model.safetensors")
    assert sorted(a) == sorted(b) and b["score.weight"].shape == (LABELS[arch], 32)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    hf = json.loads((GOLDEN / f"{arch}_rm" / "config.json").read_text())
    ours = json.loads((tmp_path / "config.json").read_text())
    assert ours["architectures"] == hf["architectures"] == [HF_NAMES[arch]]
    assert ours["num_labels"] == LABELS[arch] == len(ours["id2label"])
    assert len(hf.get("id2label") or "01") == LABELS[arch]  # transformers omits id2label for its default, 2
    for k in ("model_type", "vocab_size", "pad_token_id", "eos_token_id", "tie_word_embeddings"):
        assert ours[k] == hf[k], k
    again = load_reward_model(tmp_path)
    assert again.cfg == model.cfg and again.num_labels == model.num_labels
    chex.assert_trees_all_equal(nnx.state(again, nnx.Param), nnx.state(model, nnx.Param), strict=True)


def test_last_token_index_is_hf_rule():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 2, size=(50, 9))
    mask[0] = 0  # a row without tokens: index 0, as HF's argmax
    want = (np.arange(9) * mask).argmax(-1)
    np.testing.assert_array_equal(last_token_index(jnp.asarray(mask)), want)
    assert want[0] == 0 and int(last_token_index(None, 9)) == 8


def test_from_causal_lm_head_on_last_hidden_state():
    """The trunk is the LM's (same final hidden states); score = h[last] @ head; values = every position's."""
    cfg = ModelConfig(arch="llama", vocab_size=40, d_model=16, n_layers=1, n_heads=2, d_ff=32, tie_embeddings=False)
    lm = create_model(cfg, seed=1)
    rm = reward_model_from_causal_lm(lm, seed=3)
    assert not hasattr(rm, "lm_head") and rm.score[...].shape == (16, 1)
    head = np.random.default_rng(3).standard_normal((16, 1), np.float32) * np.float32(cfg.init_std)
    np.testing.assert_array_equal(rm.score[...], head)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 40, size=(3, 7)))
    mask = jnp.asarray([[1] * 7, [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    h = np.asarray(forward(lm, ids, mask, return_hidden=True).hidden_states)
    out = score(rm, ids, mask, return_hidden=True)
    np.testing.assert_allclose(out.hidden_states, h, atol=1e-6)
    np.testing.assert_allclose(out.scores[:, 0], h[[0, 1, 2], [6, 6, 3]] @ head[:, 0], atol=1e-5)
    np.testing.assert_allclose(rm.values(ids, mask), h @ head[:, 0], atol=1e-5)
    np.testing.assert_allclose(rm.rewards(ids, mask), out.scores[:, 0], atol=1e-6)


def test_padding_does_not_change_the_reward():
    rm = create_reward_model(ModelConfig(arch="qwen2", vocab_size=30, d_model=16, n_layers=2, n_heads=2), seed=0)
    seq = jnp.asarray([[5, 6, 7, 8, 9]])
    r = float(rm.rewards(seq)[0])
    left = jnp.asarray([[0, 0, 5, 6, 7, 8, 9]])
    right = jnp.asarray([[5, 6, 7, 8, 9, 0, 0]])
    np.testing.assert_allclose(rm.rewards(left, left != 0)[0], r, atol=1e-5)
    np.testing.assert_allclose(rm.rewards(right, right != 0)[0], r, atol=1e-5)


def test_wide_head_refuses_scalar_uses():
    rm = load_reward_model(GOLDEN / "qwen2_rm")
    with pytest.raises(ValueError, match="num_labels=1.*num_labels=2"):
        rm.rewards(jnp.asarray([[3, 4]]))
    with pytest.raises(FileFormatError, match="num_labels=2, 1 needed"):
        load_reward_model(GOLDEN / "qwen2_rm", num_labels=1)
    with pytest.raises(ValueError, match="member 0 has num_labels=2"):
        RewardEnsemble([rm])


def test_head_shape_mismatch_named(tmp_path):
    shutil.copy(GOLDEN / "llama_rm" / "model.safetensors", tmp_path)
    c = json.loads((GOLDEN / "llama_rm" / "config.json").read_text())
    c["id2label"] = {"0": "a", "1": "b"}
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(FileFormatError, match=r"'score.weight' has shape \(1, 32\), config expects \(2, 32\)"):
        load_reward_model(tmp_path)


def test_wrong_kind_of_checkpoint_is_named():
    with pytest.raises(FileFormatError, match="not a \\*ForSequenceClassification.*reward_model_from_causal_lm"):
        load_reward_model(GOLDEN / "llama")
    with pytest.raises(FileFormatError, match="sequence-classification.*load_reward_model"):
        load_pretrained(GOLDEN / "llama_rm")


def test_ensemble_of_reward_models():
    """Members score like the models alone; mean / min / mean − k·std against numpy; a left-padded prompt
    joined to a right-padded completion scores like the unpadded sequence."""
    cfg = ModelConfig(arch="gpt2", vocab_size=30, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)
    models = [create_reward_model(cfg, seed=s) for s in range(3)]
    prompts = np.array([[0, 0, 4, 5], [6, 7, 8, 9]])
    p_mask = (prompts != 0).astype(np.int32)
    comps = np.array([[10, 11, 12], [13, 0, 0]])
    c_mask = np.array([[1, 1, 1], [1, 0, 0]])
    ids, mask = join_prompt_completion(prompts, p_mask, comps, c_mask)
    ens = RewardEnsemble(models, "mean_minus_std", k=0.5, ddof=1, batch_size=1)
    members = ens.members(ids, mask)
    for m, row in zip(models, members, strict=True):
        alone = [float(m.rewards(jnp.asarray([[4, 5, 10, 11, 12]]))[0]), float(m.rewards(jnp.asarray([[6, 7, 8, 9, 13]]))[0])]
        np.testing.assert_allclose(row, alone, atol=1e-5)
    np.testing.assert_allclose(ens(ids, mask), members.mean(0) - 0.5 * members.std(0, ddof=1), atol=1e-6)
    np.testing.assert_allclose(RewardEnsemble(models, "min")(ids, mask), members.min(0), atol=1e-6)
    np.testing.assert_allclose(RewardEnsemble(models)(ids, mask), members.mean(0), atol=1e-6)
    other = create_reward_model(cfg.replace(vocab_size=31), seed=0)
    with pytest.raises(ValueError, match="vocab_size=31.*share a tokenizer"):
        RewardEnsemble([models[0], other])
    with pytest.raises(ValueError, match="mode='max'"):
        RewardEnsemble(models, "max")

"""mode="reward": the logged loss / accuracy / margin against numpy from the model's scores, learning a
separable data set, held-out evaluation, export, config errors, and reward models as an online reward."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import apply_overrides, np_log_sigmoid
from flax import nnx

from jalign.errors import UserError
from jalign.models import ModelConfig, create_reward_model, load_reward_model, save_pretrained, score
from jalign.train import train
from jalign.train.config import ConfigError, base_config, validate
from jalign.train.objectives import make_objective
from jalign.train.plugins import get_reward
from jalign.train.plugins.tiny import InMemoryBatchSource, synthetic_pairwise_examples
from jalign.train.step import init_state, make_optimizer, make_train_step

MODEL = dict(arch="gpt2", vocab_size=259, d_model=16, n_layers=1, n_heads=2, max_seq_len=32)


def reward_cfg(**over):
    c = base_config()
    c.mode = "reward"
    c.model.name = "causal_lm"
    for k, v in MODEL.items():
        c.model.kwargs[k] = v
    c.data.name = "synthetic_pairwise"
    c.data.batch_size = 8
    c.data.seq_len = 24
    c.data.kwargs.num_examples = 64
    c.optim.name = "adam"
    c.optim.lr = 1e-2
    c.optim.schedule = "constant"
    c.train.steps = 4
    c.train.progress = False
    c.train.tensorboard = False
    c.mesh.data = 1
    return apply_overrides(c, over)


def _np_scores(rm, batch):
    out = {}
    for s in ("chosen", "rejected"):
        out[s] = np.asarray(score(rm, jnp.asarray(batch[f"{s}_ids"]), jnp.asarray(batch[f"{s}_attention_mask"]))
                            .scores[:, 0], np.float64)
    return out["chosen"], out["rejected"]


def test_step_metrics_equal_numpy_from_scores():
    """Loss = mean(−log σ(r_c − r_r − m) + c·(r_c + r_r)²), accuracy, margin and mean rewards of one batch,
    recomputed in float64 numpy from the model's scores of the last real tokens (also accumulated)."""
    rm = create_reward_model(ModelConfig(**MODEL), seed=0)
    batch = {k: np.stack([e[k] for e in synthetic_pairwise_examples(6, 24, seed=3)]) for k in
             synthetic_pairwise_examples(1, 24)[0]}
    batch["rejected_ids"][2] = batch["chosen_ids"][2]  # a tie (r_c == r_r) counts as not accurate
    batch["rejected_attention_mask"][2] = batch["chosen_attention_mask"][2]
    batch["rejected_mask"][2] = batch["chosen_mask"][2]
    rc, rr = _np_scores(rm, batch)
    assert rc[2] == rr[2] and np.std(rc - rr) > 1e-3
    margin, center = 0.3, 0.05
    objective = make_objective("reward", hparams={"margin": margin, "center_coef": center})
    tx, _ = make_optimizer(apply_overrides(base_config(), {"optim__name": "sgd", "optim__grad_clip": 0.0}).optim, 1)
    graphdef, state = init_state(rm, tx, reference=False)
    _, m = jax.jit(make_train_step(graphdef, objective, tx))(state, batch)
    want = np.mean(-np_log_sigmoid(rc - rr - margin) + center * (rc + rr) ** 2)
    np.testing.assert_allclose(float(m["loss"]), want, rtol=1e-5)
    assert 0 < np.mean(rc > rr) < 1
    np.testing.assert_allclose(float(m["accuracy"]), np.mean(rc > rr), rtol=1e-6)
    np.testing.assert_allclose(float(m["margin"]), np.mean(rc - rr), atol=1e-6)
    np.testing.assert_allclose(float(m["rewards/chosen"]), rc.mean(), atol=1e-6)
    np.testing.assert_allclose(float(m["rewards/rejected"]), rr.mean(), atol=1e-6)
    # a per-pair margin field replaces the configured one; 2 accumulated microbatches give the same loss
    per_pair = np.linspace(-1, 1, 6).astype(np.float32)
    _, m2 = jax.jit(make_train_step(graphdef, objective, tx, accum_steps=2))(state, {**batch, "margin": per_pair})
    np.testing.assert_allclose(float(m2["loss"]), np.mean(-np_log_sigmoid(rc - rr - per_pair) + center * (rc + rr) ** 2),
                               rtol=1e-5)


def test_separable_pairs_are_learned_and_evaluated_held_out(tmp_path):
    """Chosen = positive word, rejected = negative word: held-out accuracy rises from chance to ≥ 0.9; the
    held-out metrics equal a recomputation from the exported model's scores."""
    out = tmp_path / "rm"
    cfg = reward_cfg(train__steps=30, eval__every=30, eval__batches=2, train__export=str(out))
    cfg.eval.data_kwargs.data_seed = 11
    validate(cfg)
    res = train(cfg)
    first, last = res.history[0], res.history[-1]
    assert first["step"] == 0 and last["step"] == 30
    assert first["eval/accuracy"] <= 0.75 and last["eval/accuracy"] >= 0.9
    assert last["eval/margin"] > first["eval/margin"] + 0.5 and last["eval/loss"] < 0.4 < first["eval/loss"]
    rm = load_reward_model(out, num_labels=1)
    held = InMemoryBatchSource(synthetic_pairwise_examples(64, 24, 11), 8, seed=0)
    pairs = [next(held) for _ in range(2)]
    rc, rr = map(np.concatenate, zip(*[_np_scores(rm, b) for b in pairs], strict=True))
    assert last["eval/pairs"] == 16
    np.testing.assert_allclose(last["eval/accuracy"], np.mean(rc > rr))
    np.testing.assert_allclose(last["eval/margin"], np.mean(rc - rr), atol=1e-5)
    np.testing.assert_allclose(last["eval/loss"], np.mean(-np_log_sigmoid(rc - rr)), atol=1e-5)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["GPT2ForSequenceClassification"]
    params = nnx.state(nnx.merge(res.graphdef, res.state.params, res.state.model_state), nnx.Param)
    np.testing.assert_array_equal(params["score"][...], rm.score[...])


def test_config_errors_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"reward_model.center_coef=-0.1 must be >= 0"):
        validate(reward_cfg(reward_model__center_coef=-0.1))
    with pytest.raises(ConfigError, match=r"reward_model.margin=inf must be a finite number"):
        validate(reward_cfg(reward_model__margin=float("inf")))
    with pytest.raises(ConfigError, match=r"eval.every=5 in mode='reward' needs held-out pairs.*eval.data_kwargs"):
        validate(reward_cfg(eval__every=5))
    with pytest.raises(ConfigError, match=r"loss.mitigation='masked' must be 'none' in mode='reward'"):
        validate(reward_cfg(loss__mitigation="masked"))
    tiny = reward_cfg(model__name="tiny")
    tiny.model.kwargs = {}
    with pytest.raises(UserError, match="mode='reward' needs a jalign.models transformer.*TinyLM"):
        train(tiny)
    wide = create_reward_model(ModelConfig(**MODEL), num_labels=2)
    save_pretrained(wide, tmp_path / "wide")
    cfg = reward_cfg(model__name="pretrained")
    cfg.model.kwargs = {"path": str(tmp_path / "wide")}
    with pytest.raises(UserError, match="num_labels=2; a reward needs a scalar head"):
        train(cfg)
    cfg = reward_cfg(data__name="synthetic_sft")
    with pytest.raises(ValueError, match=r"missing field\(s\) \['chosen_ids'"):
        train(cfg)


def test_reward_model_checkpoints_as_an_online_reward(tmp_path):
    """reward='reward_model' on a left-padded prompt + completion == the ensemble of the models' scores of the
    unpadded sequences (mean − k·std, unbiased)."""
    dirs = []
    for s in range(2):
        save_pretrained(create_reward_model(ModelConfig(**MODEL, pad_id=256), seed=s), tmp_path / f"m{s}")
        dirs.append(str(tmp_path / f"m{s}"))
    prompts = np.array([[256, 257, 40, 41], [257, 50, 51, 52]])
    comps = np.array([[60, 258, 256], [61, 62, 258]])
    cmask = np.array([[1, 1, 0], [1, 1, 1]])
    fn = get_reward("reward_model")
    got = fn(prompts, comps, cmask, path=dirs, mode="mean_minus_std", k=2.0, ddof=1)
    seqs = jnp.asarray([[257, 40, 41, 60, 258, 0, 0], [257, 50, 51, 52, 61, 62, 258]])
    seq_mask = jnp.asarray([[1] * 5 + [0, 0], [1] * 7])  # right-padded: the unpadded sequences' scores
    members = np.array([np.asarray(score(load_reward_model(d), seqs, seq_mask).scores[:, 0]) for d in dirs])
    np.testing.assert_allclose(got, members.mean(0) - 2.0 * members.std(0, ddof=1), atol=1e-5)
    np.testing.assert_allclose(fn(prompts, comps, cmask, path=dirs[0]), members[0], atol=1e-5)
    with pytest.raises(UserError, match="mode='median'"):
        fn(prompts, comps, cmask, path=dirs, mode="median")


def test_summary_skips_the_probe_row_without_a_loss():
    from jalign.train.loop import summarize

    hist = [{"step": 0, "eval/accuracy": 0.5}, {"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6, "accuracy": 1.0}]
    assert summarize(hist) == {"steps_logged": 3, "first_loss": 0.7, "last_loss": 0.6,
                               "last": {"loss": 0.6, "accuracy": 1.0}}

"""Combined rewards in the trainer (``online.reward = "combine:<mode>:<components>"``): values against
jalign.rewards.combine and a numpy transcription, user errors naming the key, components in the logged metrics."""

from __future__ import annotations

import numpy as np
import pytest
from _train_helpers import small_cfg

from jalign import rewards as RW
from jalign.data.builtin import lexicon_reward
from jalign.errors import UserError
from jalign.losses import LossSpec
from jalign.train import online, plugins, train
from jalign.train.plugins import tiny


def _batch():
    # 2 prompts × 3 samples (consecutive, as repeat_prompts lays them out); completions of 4 tokens
    prompts = np.repeat(np.array([[1, 2, 3], [4, 5, 6]]), 3, axis=0)
    ids = np.array([[97, 97, 98, 99], [97, 98, 98, 98], [99, 99, 99, 99],
                    [97, 97, 97, 97], [98, 97, 99, 99], [97, 98, 97, 0]])
    mask = np.ones_like(ids)
    mask[5, 3] = 0
    return prompts, ids, mask


def _np_count(ids, mask, token):
    return ((ids == token) * mask).sum(-1) / mask.sum(-1)


def test_combined_reward_equals_combine_of_the_components():
    prompts, ids, mask = _batch()
    a, b = _np_count(ids, mask, 97), _np_count(ids, mask, 98)
    kw = {"a": {"token": 97}, "b": {"token": 98}}
    fn = plugins.get_reward("combine:sum:a=count_token,b=count_token")
    out = fn(prompts, ids, mask, **kw, weights=[1.0, 0.5])
    np.testing.assert_allclose(out["a"], a, rtol=1e-6)
    np.testing.assert_allclose(out["b"], b, rtol=1e-6)
    np.testing.assert_allclose(out["reward"], a + 0.5 * b, rtol=1e-6)
    np.testing.assert_allclose(out["reward"], RW.combine([a, b], "sum", weights=[1.0, 0.5]), rtol=1e-6)
    out = plugins.get_reward("combine:min:a=count_token,b=count_token")(prompts, ids, mask, **kw)
    np.testing.assert_allclose(out["reward"], np.minimum(a, b), rtol=1e-6)

    # transformed sum: a fixed reference for a, the per-prompt median of the 3 samples for b
    fn = plugins.get_reward("combine:transformed_sum:a=count_token,b=count_token")
    out = fn(prompts, ids, mask, **kw, refs=[0.25, "quantile:0.5"])
    ref_b = np.repeat([np.median(b[:3]), np.median(b[3:])], 3)
    log_sig = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
    want = log_sig(a - 0.25) + log_sig(b - ref_b)
    np.testing.assert_allclose(out["reward"], want, rtol=1e-6)
    np.testing.assert_allclose(out["reward"], RW.combine([a, b], "transformed_sum", ref_rewards_list=[
        np.full(6, 0.25), ref_b]), rtol=1e-6)
    np.testing.assert_allclose(out["b/transformed"], log_sig(b - ref_b), rtol=1e-6)
    # the online scorer returns the rewards and the parts, and their logged means
    samples = {"ids": np.concatenate([prompts, ids], 1), "mask": np.concatenate([np.zeros_like(prompts), mask], 1)}
    r, parts = online.score_parts(fn, prompts, samples, **kw, refs=[0.25, "quantile:0.5"])
    np.testing.assert_allclose(r, want, rtol=1e-6)
    assert sorted(parts) == ["a", "a/transformed", "b", "b/transformed"]
    m = online.part_metrics(parts)
    assert m["reward/a"] == pytest.approx(a.mean()) and m["reward/b/transformed"] == pytest.approx(
        log_sig(b - ref_b).mean(), rel=1e-6)
    np.testing.assert_allclose(online.score(fn, prompts, samples, **kw, refs=[0.25, "quantile:0.5"]), want,
                               rtol=1e-6)


def test_conciseness_reward_closed_form():
    prompts, ids, mask = _batch()
    fn = plugins.get_reward("conciseness")
    np.testing.assert_allclose(fn(prompts, ids, mask, max_len=8), 1 - mask.sum(-1) / 8)  # 4 or 3 tokens
    np.testing.assert_allclose(fn(prompts, ids, mask, max_len=2), 0.0)  # at or beyond max_len: 0
    np.testing.assert_allclose(fn(prompts, ids, np.zeros_like(mask)), 1.0)
    with pytest.raises(UserError, match="max_len=0"):
        fn(prompts, ids, mask, max_len=0)
    out = plugins.get_reward("combine:min:lexicon,conciseness")(prompts, ids, mask, conciseness={"max_len": 8})
    np.testing.assert_allclose(out["reward"], np.minimum(out["lexicon"], 1 - mask.sum(-1) / 8), rtol=1e-6)
    # scale multiplies each reward; a bad scale is a UserError naming it
    np.testing.assert_allclose(fn(prompts, ids, mask, max_len=8, scale=20.0), 20 * (1 - mask.sum(-1) / 8), rtol=1e-6)
    lex = plugins.get_reward("lexicon")
    texts = [b"the food was good", b"not good at all!!"]
    tids = np.array([list(t) for t in texts])
    want = np.asarray([lexicon_reward(t.decode()) for t in texts])
    assert want[0] > 0 > want[1]
    np.testing.assert_allclose(lex(prompts[:2], tids, np.ones_like(tids), scale=4.0), 4 * want, rtol=1e-6)
    for name, f in (("conciseness", fn), ("lexicon", lex)):
        for bad in (0.0, -1.0, float("inf"), True):
            with pytest.raises(UserError, match=f"reward '{name}' argument scale="):
                f(prompts, ids, mask, scale=bad)


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("combine:avg:lexicon", {}, r"online.reward='combine:avg:lexicon' must be 'combine:<mode>"),
    ("combine:sum", {}, r"must be 'combine:<mode>:<reward>"),
    ("combine:sum:lexicn", {}, r"component 'lexicn': unknown reward 'lexicn'.*Did you mean: lexicon"),
    ("combine:sum:lexicon,lexicon", {}, r"label 'lexicon' is repeated"),
    ("combine:sum:x=combine", {}, r"unknown reward 'combine'"),
    ("combine:sum:lexicon,count_token", {"weights": [1.0]}, r"online.reward_kwargs.weights=\[1.0\] must be a list of 2"),
    ("combine:sum:lexicon,count_token", {"weights": [1.0, -1.0]}, r"finite numbers >= 0"),
    ("combine:sum:lexicon,count_token", {"refs": [0.0, 0.0]}, r"refs=.*only used by modes 'transformed_sum' and 'maxmin'"),
    ("combine:transformed_sum:lexicon,count_token", {}, r"online.reward_kwargs.refs=None.*needs a list of 2"),
    ("combine:transformed_sum:lexicon,count_token", {"refs": [0.0, "quantile:2"]},
     r"refs\[1\]='quantile:2' \(component 'count_token'\).*\[0, 1\]"),
    ("combine:transformed_sum:lexicon,count_token", {"refs": [0.0, "median"]}, r"refs\[1\]='median'"),
    ("combine:sum:lexicon,count_token", {"count_token": {"tokn": 3}},
     r"online.reward_kwargs.count_token: reward 'count_token' got unknown argument\(s\) \['tokn'\]"),
    ("combine:sum:lexicon,count_token", {"lexicn": {}}, r"unknown key\(s\) \['lexicn'\]"),
    ("count_token", {"tokn": 3}, r"online.reward_kwargs: reward 'count_token' got unknown argument\(s\) \['tokn'\]"),
])
def test_bad_combined_rewards_are_user_errors_naming_the_key(name, kwargs, match):
    with pytest.raises(UserError, match=match):
        plugins.check_reward(name, kwargs)


def _rloo_free(sb):  # a tiny policy-gradient loss: −(r − mean r)·log π, per prompt
    r = sb.rewards
    return -((r - r.mean(-1, keepdims=True)) * sb.logps).sum(-1)


_rloo = _rloo_free
_rloo.spec = LossSpec(name="pg_test", kind="scored", fn=_rloo_free, hparams={}, formula="", paper="",
                      needs_reference=False)


def test_online_training_logs_every_component_and_refuses_bad_kwargs_before_training():
    cfg = small_cfg(mode="online", data__name="synthetic_prompts", data__batch_size=4, train__steps=2,
                    online__num_samples=2, online__max_new_tokens=3, loss__reference="none")
    cfg.online.reward = "combine:transformed_sum:a=count_token,b=count_token"
    cfg.online.reward_kwargs.a = {"token": 97}
    cfg.online.reward_kwargs.b = {"token": 98}
    cfg.online.reward_kwargs.refs = [0.0, "quantile:0.5"]
    res = train(cfg, loss=_rloo, model=tiny.tiny_lm(0, d_model=8, d_hidden=16))
    assert len(res.history) == 2
    for h in res.history:
        for k in ("reward/mean", "reward/a", "reward/b", "reward/a/transformed", "reward/b/transformed"):
            assert np.isfinite(h[k]), k
        # the combined reward is the sum of the components' transformed values (same samples)
        assert h["reward/mean"] == pytest.approx(h["reward/a/transformed"] + h["reward/b/transformed"], rel=1e-5)
        assert 0.0 <= h["reward/a"] <= 1.0
    cfg.online.reward_kwargs.refs = [0.0]
    with pytest.raises(UserError, match=r"online.reward_kwargs.refs=\[0.0\]"):
        train(cfg, loss=_rloo, model=tiny.tiny_lm(0, d_model=8, d_hidden=16))


def test_reward_model_checkpoints_as_components(tmp_path):
    """Two trained-reward-model checkpoints (reward_model, one per property) as the AND of a combined reward."""
    from jalign.models import ModelConfig, create_reward_model, save_pretrained

    cfg = dict(arch="gpt2", vocab_size=259, d_model=16, n_layers=1, n_heads=2, max_seq_len=32, pad_id=256)
    for s in range(2):
        save_pretrained(create_reward_model(ModelConfig(**cfg), seed=s), tmp_path / f"m{s}")
    prompts = np.array([[256, 257, 40, 41], [256, 257, 40, 41], [257, 50, 51, 52], [257, 50, 51, 52]])
    comps = np.array([[60, 258, 256], [61, 62, 258], [63, 258, 256], [64, 65, 66]])
    cmask = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]])
    kw = {"helpful": {"path": str(tmp_path / "m0")}, "harmless": {"path": str(tmp_path / "m1")},
          "refs": ["quantile:0.5", 0.0]}
    name = "combine:transformed_sum:helpful=reward_model,harmless=reward_model"
    fn = plugins.check_reward(name, kw)
    out = fn(prompts, comps, cmask, **kw)
    single = plugins.get_reward("reward_model")
    h = single(prompts, comps, cmask, path=str(tmp_path / "m0"))
    s = single(prompts, comps, cmask, path=str(tmp_path / "m1"))
    np.testing.assert_allclose(out["helpful"], h, rtol=1e-6)
    ref_h = np.repeat([np.median(h[:2]), np.median(h[2:])], 2)  # per prompt, over its 2 samples
    log_sig = lambda x: -np.logaddexp(0.0, -np.asarray(x, np.float64))  # noqa: E731
    np.testing.assert_allclose(out["reward"], log_sig(h - ref_h) + log_sig(s), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match=r"online.reward_kwargs.helpful: reward 'reward_model' got unknown"):
        plugins.check_reward(name, {**kw, "helpful": {"pth": "x"}})


def test_rm_prefix_is_the_reward_model_reward(tmp_path):
    """``rm:PATH`` scores like ``reward_model`` with that path; ``rm:A,B`` like the ensemble of both."""
    from jalign.models import ModelConfig, create_reward_model, save_pretrained

    cfg = dict(arch="gpt2", vocab_size=259, d_model=16, n_layers=1, n_heads=2, max_seq_len=32, pad_id=256)
    for s in range(2):
        save_pretrained(create_reward_model(ModelConfig(**cfg), seed=s), tmp_path / f"m{s}")
    prompts = np.array([[256, 257, 40, 41], [257, 50, 51, 52]])
    comps = np.array([[60, 258, 256], [61, 62, 258]])
    cmask = np.array([[1, 1, 0], [1, 1, 1]])
    a, b = str(tmp_path / "m0"), str(tmp_path / "m1")
    single = plugins.get_reward("reward_model")
    ra, rb = (single(prompts, comps, cmask, path=p) for p in (a, b))
    assert not np.allclose(ra, rb)
    np.testing.assert_allclose(plugins.get_reward(f"rm:{a}")(prompts, comps, cmask), ra, rtol=1e-6)
    both = plugins.check_reward(f"rm:{a},{b}", {"mode": "min"})
    np.testing.assert_allclose(both(prompts, comps, cmask, mode="min"), np.minimum(ra, rb), rtol=1e-6)
    with pytest.raises(UserError, match="no checkpoint directory"):
        plugins.get_reward("rm:")
    with pytest.raises(UserError, match="unknown"):
        plugins.check_reward(f"rm:{a}", {"pth": 1})


def test_maxmin_combined_reward_optimises_the_worst_off_component_of_the_batch():
    prompts, ids, mask = _batch()
    a, b = _np_count(ids, mask, 97), _np_count(ids, mask, 98)
    fn = plugins.get_reward("combine:maxmin:a=count_token,b=count_token")
    kw = {"a": {"token": 97}, "b": {"token": 98}}
    for refs in (None, [0.0, 0.0], [0.3, 0.0], [0.0, -0.5]):
        ua, ub = a - (refs or [0, 0])[0], b - (refs or [0, 0])[1]
        g = 0 if ua.mean() <= ub.mean() else 1  # numpy: the lower batch mean (ties: the first)
        out = fn(prompts, ids, mask, **kw, **({"refs": refs} if refs else {}))
        np.testing.assert_allclose(out["reward"], (ua, ub)[g], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(out["maxmin/group"], np.full(len(a), g))
        np.testing.assert_allclose(out["a"], a, rtol=1e-6)
        np.testing.assert_allclose(out["b"], b, rtol=1e-6)
    # both branches are exercised: without references b is worse off (means 0.44 vs 0.26), with a's reference 0.3
    # a is
    assert b.mean() < a.mean() and (a - 0.3).mean() < b.mean()

"""CTRL rewards in the trainer (``online.reward = "ctrl:<base>:<file>[,transform=…][,t=…]"``): the calibrated,
transformed reward on hand-made prompt ids against a numpy transcription, the reference-rewards file, and user
errors naming the key and value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jalign.errors import UserError
from jalign.tokenizers import ByteTokenizer
from jalign.train import online, plugins
from jalign.train.plugins.rewards import REFERENCE_FORMAT, load_reference_rewards, write_reference_rewards

PAD = 0
REF = {(1, 2, 3): [0.0, 0.25, 0.25, 0.5], (4, 5): [0.5, 0.5, 1.0]}  # m = 4 and m = 3 reference rewards


def _ref_file(tmp_path, table=REF, pad=PAD, name="ref.json"):
    recs = [{"prompt": f"p{i}", "prompt_ids": list(k), "rewards": v} for i, (k, v) in enumerate(table.items())]
    p = tmp_path / name
    p.write_text(json.dumps({"format": REFERENCE_FORMAT, "reward": "count_token", "pad_id": pad, "prompts": recs}))
    return p


def _batch():
    # 2 prompts × 3 samples, left-padded with PAD to width 4; count_token(97) of 4-token completions
    prompts = np.array([[0, 1, 2, 3]] * 3 + [[0, 0, 4, 5]] * 3)
    ids = np.array([[97, 98, 98, 98], [97, 97, 98, 98], [99, 99, 99, 99],
                    [97, 97, 97, 98], [97, 97, 97, 97], [97, 97, 98, 98]])
    return prompts, ids, np.ones_like(ids)


def _np_ctrl(r, refs, t):
    c = np.array([np.mean([1.0 if x < ri else 0.5 if x == ri else 0.0 for x in ref]) for ri, ref in zip(r, refs, strict=True)])
    return c, np.exp(t * c)


def test_ctrl_reward_on_hand_made_prompts(tmp_path):
    path = _ref_file(tmp_path)
    prompts, ids, mask = _batch()
    r = np.array([0.25, 0.5, 0.0, 0.75, 1.0, 0.5])
    refs = [REF[(1, 2, 3)]] * 3 + [REF[(4, 5)]] * 3
    c, phi = _np_ctrl(r, refs, 2.5)
    np.testing.assert_allclose(c, [0.5, 0.875, 0.125, 2 / 3, 5 / 6, 1 / 3], atol=1e-12)  # by hand
    fn = plugins.get_reward(f"ctrl:count_token:{path},t=2.5")
    out = fn(prompts, ids, mask, token=97)
    np.testing.assert_allclose(out["raw"], r, atol=1e-7)
    np.testing.assert_allclose(out["calibrated"], c, atol=1e-6)
    np.testing.assert_allclose(out["reward"], phi, rtol=1e-6)
    # other transforms; the default is exp with t = 4
    out = plugins.get_reward(f"ctrl:count_token:{path},transform=neg_exp,t=3")(prompts, ids, mask, token=97)
    np.testing.assert_allclose(out["reward"], -np.exp(-3 * c), rtol=1e-6)
    out = plugins.get_reward(f"ctrl:count_token:{path},transform=identity")(prompts, ids, mask, token=97)
    np.testing.assert_allclose(out["reward"], c, atol=1e-6)
    out = plugins.get_reward(f"ctrl:count_token:{path}")(prompts, ids, mask, token=97)
    np.testing.assert_allclose(out["reward"], np.exp(4 * c), rtol=1e-6)
    # the online scorer logs the parts
    samples = {"ids": np.concatenate([prompts, ids], 1), "mask": np.concatenate([np.zeros_like(prompts), mask], 1)}
    rew, parts = online.score_parts(fn, prompts, samples, token=97)
    np.testing.assert_allclose(rew, phi, rtol=1e-6)
    assert sorted(parts) == ["calibrated", "raw"]


def test_reference_file_round_trip_with_the_byte_tokenizer(tmp_path):
    tok = ByteTokenizer()
    prompts = ["Write a short review of the cafe.\n", "Hi.\n"]
    path = write_reference_rewards(tmp_path / "r.json", prompts, [[0.1, 0.2], [0.3, 0.3, 0.5]], tok, reward="lexicon")
    pad, table, texts = load_reference_rewards(path)
    assert pad == tok.pad_id == 256
    key = (tok.bos_id, *prompts[1].encode())
    np.testing.assert_allclose(table[key], [0.3, 0.3, 0.5])
    assert texts[key] == prompts[1]
    # the trainer's left-padded prompt ids find their entry; the completion "zz" is scored by count_token
    row = np.array([[tok.pad_id] * 5 + list(key)])
    out = plugins.get_reward(f"ctrl:count_token:{path},transform=identity")(
        row, np.array([[122, 122]]), np.ones((1, 2), int), token=122)
    assert out["raw"].tolist() == [1.0] and out["calibrated"].tolist() == [1.0]


def test_ctrl_user_errors(tmp_path):
    path = _ref_file(tmp_path)
    prompts, ids, mask = _batch()
    with pytest.raises(UserError, match=r"t='0' must be a finite number > 0"):
        plugins.get_reward(f"ctrl:count_token:{path},t=0")
    with pytest.raises(UserError, match=r"t='abc' must be a finite number > 0"):
        plugins.get_reward(f"ctrl:count_token:{path},t=abc")
    with pytest.raises(UserError, match=r"transform='square' must be one of"):
        plugins.get_reward(f"ctrl:count_token:{path},transform=square")
    with pytest.raises(UserError, match=r"unknown option 'tau'"):
        plugins.get_reward(f"ctrl:count_token:{path},tau=2")
    with pytest.raises(UserError, match=r"must be 'ctrl:<base reward>:<reference-rewards file>"):
        plugins.get_reward("ctrl:count_token")
    with pytest.raises(UserError, match=r"base reward: unknown reward 'lexicn'.*Did you mean: lexicon"):
        plugins.get_reward(f"ctrl:lexicn:{path}")
    with pytest.raises(UserError, match=r"nope.json: no such reference-rewards file"):
        plugins.get_reward(f"ctrl:count_token:{tmp_path / 'nope.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other", "prompts": []}))
    with pytest.raises(UserError, match=r"bad.json: key 'format'='other'"):
        plugins.get_reward(f"ctrl:count_token:{bad}")
    bad.write_text(json.dumps({"format": REFERENCE_FORMAT, "pad_id": 0,
                               "prompts": [{"prompt_ids": [1], "rewards": [0.1, float('nan')]}]}))
    with pytest.raises(UserError, match=r"prompts\[0\].rewards must be a non-empty list of finite numbers"):
        plugins.get_reward(f"ctrl:count_token:{bad}")
    # a prompt that is not in the file: named by its text and ids
    fn = plugins.get_reward(f"ctrl:count_token:{path}")
    with pytest.raises(UserError, match=r"the prompt .* \(token ids \[7, 8\]\) is not in the reference-rewards file"):
        fn(np.array([[0, 7, 8]]), ids[:1], mask[:1], token=97)
    # the base reward's arguments are checked before training
    with pytest.raises(UserError, match=r"unknown argument\(s\) \['tokn'\]"):
        plugins.check_reward(f"ctrl:count_token:{path}", {"tokn": 97})
    assert plugins.check_reward(f"ctrl:count_token:{path}", {"token": 97}) is not None

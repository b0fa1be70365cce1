"""grain pipelines: truncation policy, exact batch contents vs a plain-Python reference, shuffling, sharding,
and resumption from a saved iterator state."""

import json

import jax
import numpy as np
import pytest

from jalign.data.pipeline import (
    Featurizer,
    make_dataset,
    restore_iterator_state,
    save_iterator_state,
    tokenize_pair,
)
from jalign.data.tfds_builders import build
from jalign.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
BOS, EOS, PAD = TOK.bos_id, TOK.eos_id, TOK.pad_id


class WordTokenizer:
    """A word-level test tokenizer with no BOS (like many HF tokenizers) and the same interface."""

    pad_id, bos_id, eos_id, vocab_size = 0, None, 1, 1000

    def __init__(self):
        self.vocab = {}

    def _id(self, w):
        return self.vocab.setdefault(w, 2 + len(self.vocab))

    def encode(self, text, *, add_bos=False, add_eos=False):
        return [self._id(w) for w in text.split()] + ([self.eos_id] if add_eos else [])

    def encode_pair(self, prompt, response):
        p, r = self.encode(prompt), self.encode(response, add_eos=True)
        return p + r, [0] * len(p) + [1] * len(r)


def _pairs(n):
    return [{"prompt": f"Q{i}:" + "x" * (i % 7), "chosen": f" good {i}", "rejected": f" bad{'!' * (i % 5)}"}
            for i in range(n)]  # fmt: skip


def test_truncation_policy_byte_tokenizer():
    t = tokenize_pair(TOK, "abcdefghij", "xyz", max_prompt_len=4, max_response_len=2)
    assert t.prompt == [BOS, ord("h"), ord("i"), ord("j")] and t.prompt_truncated
    assert t.response == [ord("x"), ord("y")] and t.response_truncated  # no EOS: the response did not end
    t = tokenize_pair(TOK, "ab", "xyz", max_prompt_len=4, max_response_len=4)
    assert t.prompt == [BOS, ord("a"), ord("b")] and t.response == [*b"xyz", EOS]
    assert not t.prompt_truncated and not t.response_truncated


def test_truncation_policy_without_bos():
    tok = WordTokenizer()
    t = tokenize_pair(tok, "a b c d e", "u v w", max_prompt_len=2, max_response_len=3)
    assert t.prompt == tok.encode("d e") and t.response == tok.encode("u v w")  # EOS cut (budget 3)
    assert t.prompt_truncated and t.response_truncated


def _reference_pairwise(rec, P, R):
    """Plain-Python reference for one pairwise example (independent of the Featurizer)."""
    T = P + R
    out = {}
    pb = list(rec["prompt"].encode())
    p = [BOS] + pb[-(P - 1) :] if len(pb) + 1 > P else [BOS] + pb
    for side in ("chosen", "rejected"):
        r = (list(rec[side].encode()) + [EOS])[:R]
        ids = p + r + [PAD] * (T - len(p) - len(r))
        out[f"{side}_ids"] = ids
        out[f"{side}_mask"] = [0] * len(p) + [1] * len(r) + [0] * (T - len(p) - len(r))
        out[f"{side}_attention_mask"] = [1] * (len(p) + len(r)) + [0] * (T - len(p) - len(r))
        out[f"{side}_lengths"] = len(r)
    out["prompt_lengths"] = len(p)
    return out


def test_batches_match_plain_python_reference_in_source_order():
    recs = _pairs(10)
    P, R = 5, 6
    ds = make_dataset(recs, kind="pairwise", tokenizer=TOK, batch_size=4, max_prompt_len=P, max_response_len=R,
                      shuffle=False, shard_index=0, shard_count=1)  # fmt: skip
    batches = list(ds)
    assert len(batches) == 2  # 10 // 4 with drop_remainder
    for b_i, b in enumerate(batches):
        assert b["chosen_ids"].shape == (4, P + R) and b["chosen_ids"].dtype == np.int32
        for j in range(4):
            i = 4 * b_i + j
            ref = _reference_pairwise(recs[i], P, R)
            assert b["index"][j] == i
            for k, v in ref.items():
                np.testing.assert_array_equal(b[k][j], v, err_msg=f"{k} of example {i}")


def test_final_partial_batch_padded_with_invalid_rows():
    ds = make_dataset(_pairs(6), kind="pairwise", tokenizer=TOK, batch_size=4, max_prompt_len=8,
                      max_response_len=8, shuffle=False, drop_remainder=False, shard_index=0, shard_count=1)  # fmt: skip
    b = list(ds)[-1]
    np.testing.assert_array_equal(b["valid_example"], [True, True, False, False])
    assert (b["chosen_ids"][2:] == PAD).all() and (b["chosen_attention_mask"][2:] == 0).all()


def test_shuffle_is_a_seeded_permutation_per_epoch():
    def order(seed, epochs=2):
        ds = make_dataset(_pairs(12), kind="pairwise", tokenizer=TOK, batch_size=3, max_prompt_len=8,
                          max_response_len=8, seed=seed, num_epochs=epochs, shard_index=0, shard_count=1)  # fmt: skip
        return [int(i) for b in ds for i in b["index"]]

    a = order(0)
    assert a == order(0)  # deterministic
    assert a != order(1)
    e1, e2 = a[:12], a[12:]
    assert sorted(e1) == sorted(e2) == list(range(12))  # each epoch is a permutation
    assert e1 != e2 and e1 != list(range(12))  # reshuffled per epoch


def test_sharding_partitions_the_data_evenly():
    n, count = 14, 3
    shards = []
    for i in range(count):
        ds = make_dataset(_pairs(n), kind="pairwise", tokenizer=TOK, batch_size=1, max_prompt_len=8,
                          max_response_len=8, seed=3, shard_index=i, shard_count=count)  # fmt: skip
        shards.append([int(b["index"][0]) for b in ds])
    assert all(len(s) == n // count for s in shards)
    flat = sorted(x for s in shards for x in s)
    assert flat == list(range(count * (n // count)))  # disjoint, covering all but the n % count left over
    assert set(shards[1]) == set(range(1, 12, 3))  # strided


def test_default_shard_is_the_jax_process():
    ds = make_dataset(_pairs(5), kind="pairwise", tokenizer=TOK, batch_size=1, max_prompt_len=8,
                      max_response_len=8, shuffle=False)  # fmt: skip
    assert jax.process_count() == 1 and [int(b["index"][0]) for b in ds] == list(range(5))


@pytest.mark.parametrize("stop", [0, 1, 3, 5])
def test_resume_from_saved_state_sees_exactly_the_same_batches(tmp_path, stop):
    kw = dict(kind="pairwise", tokenizer=TOK, batch_size=3, max_prompt_len=6, max_response_len=6, seed=7,
              num_epochs=3, shard_index=1, shard_count=2)  # fmt: skip
    recs = _pairs(11)
    it = iter(make_dataset(recs, **kw))
    for _ in range(stop):
        next(it)
    save_iterator_state(it, tmp_path / "state.json")
    json.loads((tmp_path / "state.json").read_text())  # plain JSON
    rest = list(it)
    fresh = iter(make_dataset(recs, **kw))  # a new process rebuilding the same pipeline
    restore_iterator_state(fresh, tmp_path / "state.json")
    resumed = list(fresh)
    assert len(rest) == len(resumed) == (3 * (11 // 2)) // 3 - stop  # 5 per shard x 3 epochs / batch 3
    for a, b in zip(rest, resumed, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_unpaired_scored_listwise_fields():
    un = [
        {"prompt": "p", "completion": "abc", "label": True},
        {"prompt": "q", "completion": "de", "label": False},
    ]
    b = next(iter(make_dataset(un, kind="unpaired", tokenizer=TOK, batch_size=2, max_prompt_len=4,
                               max_response_len=8, shuffle=False, shard_index=0, shard_count=1)))  # fmt: skip
    np.testing.assert_array_equal(b["desirable"], [True, False])
    np.testing.assert_array_equal(b["lengths"], [4, 3])  # response + EOS
    np.testing.assert_array_equal(b["mask"].sum(1), b["lengths"])
    sc = [{"prompt": "p", "completion": "abc", "reward": 0.5}]
    b = next(iter(make_dataset(sc, kind="scored", tokenizer=TOK, batch_size=1, max_prompt_len=4,
                               max_response_len=8, shuffle=False, shard_index=0, shard_count=1)))  # fmt: skip
    assert b["reward"].dtype == np.float32 and b["reward"][0] == 0.5
    lw = [
        {
            "prompt": "p",
            "completions": ["a", "bb", "c"],
            "scores": [1.0, 3.0, 1.0],
            "ranks": [2, 1, 2],
            "ties": True,
        }
    ]
    b = next(iter(make_dataset(lw, kind="listwise", tokenizer=TOK, batch_size=1, max_prompt_len=4,
                               max_response_len=4, max_responses=4, shuffle=False, shard_index=0,
                               shard_count=1)))  # fmt: skip
    assert b["ids"].shape == (1, 4, 8)
    np.testing.assert_array_equal(b["valid"][0], [True, True, True, False])
    np.testing.assert_array_equal(b["scores"][0], [1.0, 3.0, 1.0, 0.0])
    np.testing.assert_array_equal(b["lengths"][0], [2, 3, 2, 0])
    np.testing.assert_array_equal(b["ids"][0, 1, :5], [BOS, ord("p"), ord("b"), ord("b"), EOS])
    with pytest.raises(ValueError, match="3 completions > max_responses=2"):
        Featurizer("listwise", TOK, 4, 4, 2)((0, lw[0]))


def test_tfds_source_gives_the_same_batches_as_records(tmp_path):
    recs = _pairs(8)
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    src = build("pairwise", f, data_dir=tmp_path / "tfds").as_data_source()["train"]
    kw = dict(kind="pairwise", tokenizer=TOK, batch_size=4, max_prompt_len=6, max_response_len=6, seed=2,
              shard_index=0, shard_count=1)  # fmt: skip
    for a, b in zip(make_dataset(recs, **kw), make_dataset(src, **kw), strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_prompt_len": 0}, "max_prompt_len"),
        ({"shard_index": 2, "shard_count": 2}, "shard_index"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"kind": "nope"}, "kind"),
    ],
)
def test_invalid_arguments(kw, msg):
    base = dict(kind="pairwise", tokenizer=TOK, batch_size=2, max_prompt_len=4, max_response_len=4,
                shard_index=0, shard_count=1)  # fmt: skip
    with pytest.raises(ValueError, match=msg):
        make_dataset(_pairs(4), **{**base, **kw})


def _unpack(row_batch, b, s, side):
    """Tokens of (row b, slot s, side) from a packed batch, and their response mask."""
    sel = (row_batch["segment_ids"][b] == s + 1) & (row_batch["side"][b] == side)
    return (
        row_batch["ids"][b][sel].tolist(),
        row_batch["mask"][b][sel].tolist(),
        row_batch["positions"][b][sel].tolist(),
    )


def test_packing_pairwise_holds_every_example_exactly_as_padding_does():
    recs = _pairs(13)
    P, R = 6, 7
    kw = dict(kind="pairwise", tokenizer=TOK, max_prompt_len=P, max_response_len=R, shuffle=False,
              shard_index=0, shard_count=1)  # fmt: skip
    padded = {
        int(i): (b, j) for b in make_dataset(recs, batch_size=1, **kw) for j, i in enumerate(b["index"])
    }
    packed = list(
        make_dataset(recs, batch_size=2, pack=True, pack_len=40, max_segments=4, drop_remainder=False, **kw)
    )
    seen = []
    for pb in packed:
        assert pb["ids"].shape[1] == 40 and pb["index"].shape[1] == 4
        for b in range(pb["ids"].shape[0]):
            # block-diagonal attention ids: one per sequence, consecutive
            seq = pb["sequence_ids"][b]
            assert ((seq > 0) == (pb["segment_ids"][b] > 0)).all() and (pb["ids"][b][seq == 0] == PAD).all()
            for s in np.flatnonzero(pb["segment_valid"][b]):
                i = int(pb["index"][b, s])
                seen.append(i)
                ref, j = padded[i]
                for side, name in ((1, "chosen"), (2, "rejected")):
                    ids, mask, pos = _unpack(pb, b, s, side)
                    n = int(ref[f"{name}_attention_mask"][j].sum())
                    assert ids == ref[f"{name}_ids"][j][:n].tolist()
                    assert mask == ref[f"{name}_mask"][j][:n].tolist()
                    assert pos == list(range(n))
                    assert pb[f"{name}_lengths"][b, s] == ref[f"{name}_lengths"][j]
    assert sorted(seen) == list(range(13))  # every example once, none cut or dropped


def test_packing_resume_and_errors(tmp_path):
    recs = [{"prompt": "p" * (i % 5), "completion": "c" * (1 + i % 9), "reward": float(i)} for i in range(30)]
    kw = dict(kind="scored", tokenizer=TOK, batch_size=2, max_prompt_len=5, max_response_len=10, seed=1,
              num_epochs=2, shard_index=0, shard_count=1, pack=True, max_segments=3)  # fmt: skip
    it = iter(make_dataset(recs, **kw))
    next(it), next(it)
    state = json.loads(json.dumps(it.get_state()))
    rest = list(it)
    fresh = iter(make_dataset(recs, **kw))
    fresh.set_state(state)
    resumed = list(fresh)
    assert len(rest) == len(resumed) > 0
    for a, b in zip(rest, resumed, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(
            a["reward"], np.where(a["segment_valid"], a["index"] % 30, 0).astype(np.float32)
        )
    with pytest.raises(ValueError, match="pack_len=10 < 15"):
        make_dataset(recs, **{**kw, "pack_len": 10})
    with pytest.raises(ValueError, match="listwise"):
        lw = [{"prompt": "p", "completions": ["a", "b"], "scores": [1.0, 0.0], "ranks": [1, 2]}]
        make_dataset(lw, kind="listwise", tokenizer=TOK, batch_size=1, max_prompt_len=2, max_response_len=2,
                     max_responses=2, pack=True, shard_index=0, shard_count=1)  # fmt: skip


def test_kto_mismatched_pairs():
    un = [{"prompt": f"p{i}", "completion": "c" * (i + 1), "label": i % 2 == 0} for i in range(3)]
    b = next(iter(make_dataset(un, kind="unpaired", tokenizer=TOK, batch_size=4, max_prompt_len=4,
                               max_response_len=8, shuffle=False, drop_remainder=False, kl_pairs=True,
                               shard_index=0, shard_count=1)))  # fmt: skip
    for i in range(3):
        j = (i + 1) % 3
        expect = [BOS, *f"p{i}".encode(), *b"c" * (j + 1), EOS]
        assert (
            b["kl_ids"][i][: len(expect)].tolist() == expect and (b["kl_ids"][i][len(expect) :] == PAD).all()
        )
        assert b["kl_mask"][i].tolist() == [0] * 3 + [1] * (j + 2) + [0] * (12 - 5 - j)
        assert b["kl_lengths"][i] == j + 2
    assert (b["kl_attention_mask"][3] == 0).all()
    with pytest.raises(ValueError, match="kl_pairs"):
        make_dataset(_pairs(4), kind="pairwise", tokenizer=TOK, batch_size=2, max_prompt_len=4,
                     max_response_len=4, kl_pairs=True, shard_index=0, shard_count=1)  # fmt: skip

"""Readers: each layout people have -> canonical records, with exact expected values."""

import json

import pytest

from jalign.data import readers
from jalign.data.io import write_jsonl, write_parquet
from jalign.data.schema import competition_ranks

H, A = "\n\nHuman:", "\n\nAssistant:"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_split_hh_single_turn():
    c = f"{H} How do I boil an egg?{A} Put it in boiling water for nine minutes."
    r = f"{H} How do I boil an egg?{A} Eggs are birds."
    assert readers.split_hh(c, r) == (
        f"{H} How do I boil an egg?{A}",
        " Put it in boiling water for nine minutes.",
        " Eggs are birds.",
    )


def test_split_hh_multi_turn_and_shared_response_start():
    # The responses share their first word: the prompt must still end at the last "\n\nAssistant:".
    ctx = f"{H} Hi{A} Hello.{H} Name a colour."
    c, r = f"{ctx}{A} Blue is nice.", f"{ctx}{A} Blue."
    p, rc, rr = readers.split_hh(c, r)
    assert p == ctx + A and rc == " Blue is nice." and rr == " Blue."
    assert p + rc == c and p + rr == r


def test_split_hh_without_assistant_turn_is_an_error():
    with pytest.raises(readers.FieldError, match="Assistant"):
        readers.split_hh(f"{H} a", f"{H} b")


def test_hh_file(tmp_path):
    f = _jsonl(tmp_path / "hh.jsonl", [{"chosen": f"{H} q{A} yes", "rejected": f"{H} q{A} no"}])
    recs, rep = readers.read(f)
    assert rep.format == "hh" and rep.kind == "pairwise"
    assert recs == [{"prompt": f"{H} q{A}", "chosen": " yes", "rejected": " no"}]


def test_ultrafeedback_messages_rendered_and_scores_kept(tmp_path):
    row = {
        "prompt": "Name a prime.", "prompt_id": "ab12",
        "chosen": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],
        "rejected": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "9"}],
        "messages": [], "score_chosen": 9.0, "score_rejected": 2.0,
    }  # fmt: skip
    recs, rep = readers.read(_jsonl(tmp_path / "uf.jsonl", [row]))
    assert rep.format == "ultrafeedback"
    assert recs == [{"prompt": f"{H} Name a prime.{A}", "chosen": " 7", "rejected": " 9",
                     "score_chosen": 9.0, "score_rejected": 2.0}]  # fmt: skip


def test_ultrafeedback_prefix_mismatch_names_field(tmp_path):
    row = {
        "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
        "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}],
    }
    _, rep = readers.read_with_lines(_jsonl(tmp_path / "uf.jsonl", [row]))
    assert [(e.line, e.field) for e in rep.errors] == [(1, "rejected")]


def test_tldr_unpaired_scored_listwise(tmp_path):
    tl = {"prompt": "SUBREDDIT: r/x TITLE: t POST: p TL;DR:", "chosen": " short", "rejected": " long"}
    assert readers.read(_jsonl(tmp_path / "a.jsonl", [tl]))[0] == [tl]
    un = [{"prompt": "p", "completion": "c", "label": True}, {"prompt": "p", "completion": "d", "label": 0},
          {"prompt": "p", "completion": "e", "label": "false"}]  # fmt: skip
    recs, rep = readers.read(_jsonl(tmp_path / "b.jsonl", un))
    assert rep.format == "unpaired" and [r["label"] for r in recs] == [True, False, False]
    sc = {"prompt": "p", "completion": "c", "reward": 2}
    recs, rep = readers.read(_jsonl(tmp_path / "c.jsonl", [sc]))
    assert rep.format == "scored" and recs[0]["reward"] == 2.0 and isinstance(recs[0]["reward"], float)
    lw = [{"prompt": "p", "completions": ["a", "b", "c", "d"], "scores": [3, 5, 5, 1]},
          {"prompt": "p", "responses": ["a", "b", "c"], "ranks": [2, 1, 3]},
          {"prompt": "p", "completions": ["a", "b", "c"], "ranks": [1, 2, 2]}]  # fmt: skip
    recs, rep = readers.read(_jsonl(tmp_path / "d.jsonl", lw))
    assert rep.format == "listwise"
    assert recs[0]["ranks"] == [3, 1, 1, 4] and recs[0]["ties"] is True
    assert (
        recs[1]["scores"] == [-2.0, -1.0, -3.0] and recs[1]["ranks"] == [2, 1, 3] and recs[1]["ties"] is False
    )
    assert recs[2]["ranks"] == [1, 2, 2] and recs[2]["ties"] is True


def test_competition_ranks_against_sorting_definition():
    scores = [0.5, 2.0, 2.0, -1.0, 0.5, 3.0]
    # rank = 1 + number of strictly better entries
    assert competition_ranks(scores) == [4, 2, 2, 6, 4, 1]


def test_listwise_ranks_disagreeing_with_scores_is_invalid(tmp_path):
    row = {"prompt": "p", "completions": ["a", "b"], "scores": [1.0, 2.0], "ranks": [1, 2]}
    _, rep = readers.read_with_lines(_jsonl(tmp_path / "d.jsonl", [row]))
    assert [(e.line, e.field) for e in rep.errors] == [(1, "ranks")]


def _oasst_rows():
    return [
        {"message_id": "m1", "parent_id": None, "role": "prompter", "text": "What is 2+2?", "rank": None},
        {"message_id": "a1", "parent_id": "m1", "role": "assistant", "text": "4", "rank": 0},
        {"message_id": "a2", "parent_id": "m1", "role": "assistant", "text": "5", "rank": 2},
        {"message_id": "a3", "parent_id": "m1", "role": "assistant", "text": "four", "rank": 1},
        {"message_id": "a4", "parent_id": "m1", "role": "assistant", "text": "22", "rank": None},
        {"message_id": "m2", "parent_id": "a1", "role": "prompter", "text": "And 3+3?", "rank": None},
        {"message_id": "b1", "parent_id": "m2", "role": "assistant", "text": "6", "rank": 1},
        {"message_id": "b2", "parent_id": "m2", "role": "assistant", "text": "six", "rank": 0},
    ]


def test_oasst_tree_to_listwise(tmp_path):
    f = _jsonl(tmp_path / "oa.jsonl", _oasst_rows())
    recs, rep = readers.read(f)
    assert rep.format == "oasst" and rep.kind == "listwise"
    assert recs[0]["prompt"] == f"{H} What is 2+2?{A}"
    assert recs[0]["completions"] == [" 4", " 5", " four"] and recs[0]["ranks"] == [1, 3, 2]
    assert recs[1]["prompt"] == f"{H} What is 2+2?{A} 4{H} And 3+3?{A}"
    assert recs[1]["completions"] == [" 6", " six"] and recs[1]["ranks"] == [2, 1]
    assert rep.notes["oasst_unranked_replies_ignored"] == 1


def test_oasst_tree_to_pairwise_all_ordered_pairs(tmp_path):
    f = _jsonl(tmp_path / "oa.jsonl", _oasst_rows())
    recs, _ = readers.read(f, kind="pairwise")
    pairs = [(r["chosen"], r["rejected"]) for r in recs]
    assert pairs == [(" 4", " 5"), (" 4", " four"), (" four", " 5"), (" six", " 6")]


def test_oasst_unknown_parent_reported(tmp_path):
    rows = _oasst_rows() + [
        {"message_id": "z", "parent_id": "nope", "role": "assistant", "text": "x", "rank": 0}
    ]
    _, rep = readers.read_with_lines(_jsonl(tmp_path / "oa.jsonl", rows))
    assert [(e.line, e.field) for e in rep.errors] == [(9, "parent_id")]


@pytest.mark.parametrize(
    "row,fmt",
    [
        ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}, "hh"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "pairwise"),
        ({"chosen": [{"role": "assistant", "content": "a"}], "rejected": []}, "ultrafeedback"),
        ({"prompt": "p", "completion": "c", "label": True}, "unpaired"),
        ({"prompt": "p", "completion": "c", "reward": 1.0}, "scored"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [1, 2]}, "listwise"),
        ({"message_id": "m", "parent_id": None, "role": "prompter", "text": "t"}, "oasst"),
    ],
)
def test_format_detection(tmp_path, row, fmt):
    assert readers.detect_format(_jsonl(tmp_path / "x.jsonl", [row])) == fmt


def test_format_override(tmp_path):
    # A TL;DR-style file read as "scored" on purpose: every record lacks 'completion' -> reported.
    f = _jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    _, rep = readers.read_with_lines(f, format="scored")
    assert rep.format == "scored" and [(e.line, e.field) for e in rep.errors] == [(1, "completion")]
    with pytest.raises(ValueError, match="unknown format"):
        readers.read(f, format="nope")
    with pytest.raises(ValueError, match="cannot detect"):
        readers.read(_jsonl(tmp_path / "y.jsonl", [{"foo": 1}]))


def test_parquet_and_json_array_read_like_jsonl(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}", "score_chosen": float(i),
             "score_rejected": -1.0} for i in range(5)]  # fmt: skip
    a, _ = readers.read(write_jsonl(rows, tmp_path / "x.jsonl"))
    b, rep = readers.read(write_parquet(rows, tmp_path / "x.parquet"))
    (tmp_path / "x.json").write_text(json.dumps(rows))
    c, _ = readers.read(tmp_path / "x.json")
    assert a == b == c == rows and rep.n_lines == 5


def test_parquet_binary_column_with_non_utf8_bytes_is_reported(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "prompt": pa.array([b"ok", b"bad \xff"], pa.binary()),
        "chosen": ["a", "b"], "rejected": ["c", "d"],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "x.parquet")
    recs, rep = readers.read_with_lines(tmp_path / "x.parquet")
    assert [r for _, r in recs] == [{"prompt": "ok", "chosen": "a", "rejected": "c"}]
    assert [(e.line, e.field) for e in rep.errors] == [(2, "<bytes>")]

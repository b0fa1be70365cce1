"""Built-in data sets: determinism, validity, and each set's defining property."""

import json
import math

import pytest

from jalign.cli import main
from jalign.data import builtin, readers
from jalign.data.schema import validate_record
from jalign.tokenizers import ByteTokenizer


@pytest.mark.parametrize("name", builtin.names())
def test_deterministic_valid_and_sized_by_card(name):
    card = builtin.card(name)
    a = builtin.load(name)
    assert len(a) == card.size
    assert a == builtin.load(name, seed=card.seed)
    assert json.dumps(a) == json.dumps(builtin.load(name))  # byte-identical
    assert builtin.load(name, n=7, seed=card.seed + 1) != a[:7]
    for r in a:
        validate_record(card.kind, r)


def test_registry_names():
    assert set(builtin.names()) == {"sentiment_pairs", "persona_yesno", "word_constraint", "entangle_one_token",
                                    "entangle_short_suffix", "entangle_long_suffix"}  # fmt: skip
    with pytest.raises(KeyError, match="valid"):
        builtin.load("nope")


def test_lexicon_reward_closed_form():
    sq = lambda s: s / math.sqrt(s * s + 15.0)
    assert builtin.lexicon_reward("The food was good.") == pytest.approx(sq(1.9))
    assert builtin.lexicon_reward("The food was not good.") == pytest.approx(sq(-0.75 * 1.9))
    assert builtin.lexicon_reward("very really awful") == pytest.approx(sq(-3.1 * 1.6))
    assert builtin.lexicon_reward("good but bland") == pytest.approx(sq(1.9 - 1.5))
    assert builtin.lexicon_reward("nothing here") == 0.0


def test_sentiment_pairs_chosen_scores_higher():
    for r in builtin.load("sentiment_pairs", n=64):
        assert r["score_chosen"] == builtin.lexicon_reward(r["chosen"])
        assert r["score_rejected"] == builtin.lexicon_reward(r["rejected"])
        assert r["score_chosen"] >= r["score_rejected"] + 0.05


def test_persona_pairs():
    recs = builtin.load("persona_yesno")
    statements = [r["meta"]["statement"] for r in recs]
    assert len(set(statements)) == 160
    counts = {}
    for r in recs:
        m = r["meta"]
        counts[m["pair"]] = counts.get(m["pair"], 0) + 1
        assert r["prompt"] == builtin.PERSONA_QUESTION.format(statement=m["statement"])
        assert len(r["chosen"].split()) == len(r["rejected"].split()) == 1  # one-word answers
        likes = m["statement"].startswith(tuple(builtin._LIKE))
        prosocial = any(x in m["statement"] for x in builtin._PROSOCIAL)
        assert m["endorsed"] == (likes == prosocial)
        assert m["pair"] == "No>Never" if not m["endorsed"] else m["pair"] in ("Yes>No", "Sure>Yes")
    assert counts == {"No>Never": 80, "Yes>No": 40, "Sure>Yes": 40}
    custom = builtin.load("persona_yesno", n=4, pairs=[(" Yes", " No")])
    assert {(r["chosen"], r["rejected"]) for r in custom} == {(" Yes", " No")}


def test_contains_word():
    assert builtin.contains_word("The River.", "river")
    assert not builtin.contains_word("rivers and riverbanks", "river")


def test_word_constraint_reward_is_the_constraint_and_balanced():
    recs = builtin.load("word_constraint", n=100)
    for i, r in enumerate(recs):
        w = r["meta"]["target"]
        assert f'"{w}"' in r["prompt"]
        assert r["reward"] == float(builtin.contains_word(r["completion"], w)) == float(i % 2 == 0)
    assert sum(r["reward"] for r in recs) == 50


@pytest.mark.parametrize("variant", ["one_token", "short_suffix", "long_suffix"])
def test_entangle_pairs_differ_in_exactly_one_word(variant):
    tok = ByteTokenizer()
    for r in builtin.load(f"entangle_{variant}", n=64):
        c, rj, m = r["chosen"].split(), r["rejected"].split(), r["meta"]
        diff = [i for i, (a, b) in enumerate(zip(c, rj, strict=True)) if a != b]
        assert diff == [m["word_index"]] and len(c) == len(rj)
        assert c[3] == m["chosen_word"] + "." and rj[3] == m["rejected_word"] + "."
        assert builtin.lexicon_reward(m["chosen_word"]) > 0 > builtin.lexicon_reward(m["rejected_word"])
        n_suffix = len(m["suffix"].split())
        assert {"one_token": n_suffix == 0, "short_suffix": 3 <= n_suffix <= 6,
                "long_suffix": n_suffix >= 30}[variant]  # fmt: skip
        # Byte tokenizer: the ids differ only inside the adjective's byte span; the shared tail is
        # "." + suffix + EOS.
        ic, _ = tok.encode_pair(r["prompt"], r["chosen"])
        ir, _ = tok.encode_pair(r["prompt"], r["rejected"])
        pre = next(i for i, (a, b) in enumerate(zip(ic, ir, strict=False)) if a != b)
        post = next(i for i, (a, b) in enumerate(zip(ic[::-1], ir[::-1], strict=False)) if a != b)
        start = len(tok.encode(r["prompt"], add_bos=True)) + len(
            f" The {r['prompt'].split()[2]} was ".encode()
        )
        assert pre >= start and len(ic) - post <= start + len(m["chosen_word"].encode())
        assert post >= len(("." + m["suffix"]).encode()) + 1


def test_cli_generate_then_inspect(tmp_path, capsys):
    out = tmp_path / "persona.jsonl"
    assert main(["data", "generate", "persona_yesno", "--out", str(out), "--n", "20"]) == 0
    recs, rep = readers.read(out)
    assert rep.format == "pairwise" and [{k: v for k, v in r.items()} for r in recs] == builtin.load(
        "persona_yesno", n=20
    )
    capsys.readouterr()
    assert main(["data", "list", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {c["name"]: c["size"] for c in cards}["sentiment_pairs"] == 512

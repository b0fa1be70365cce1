"""Tokenizers: HF tokenizer.json through `tokenizers`, and the BOS/EOS policy (no duplicates)."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from jalign.tokenizers import ByteTokenizer, HFTokenizer, load_tokenizer

WORDS = ["[UNK]", "<s>", "</s>", "<pad>", "hello", "world", "how", "are", "you", "?"]


@pytest.fixture
def word_tok(tmp_path):
    """WordLevel tokenizer whose post-processor adds <s> ... </s> (the usual source of duplicates)."""
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["<s>", "</s>", "<pad>"])
    t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    t.save(str(tmp_path / "tokenizer.json"))
    assert t.encode("hello world").ids == [1, 4, 5, 2]  # the raw tokenizer would add BOS/EOS itself
    return HFTokenizer(tmp_path)


def test_interface_and_ids(word_tok):
    assert (word_tok.bos_id, word_tok.eos_id, word_tok.pad_id, word_tok.vocab_size) == (1, 2, 3, 10)
    assert word_tok.encode("hello world") == [4, 5]
    assert word_tok.encode("hello", add_bos=True, add_eos=True) == [1, 4, 2]
    assert word_tok.decode([1, 4, 5, 2, 3]) == "hello world"


def test_pair_exactly_one_bos_and_eos(word_tok):
    ids, mask = word_tok.encode_pair("how are you ?", "hello world")
    assert ids == [1, 6, 7, 8, 9, 4, 5, 2] and mask == [0] * 5 + [1] * 3
    # Text that already carries the BOS / EOS strings: kept once, never doubled.
    ids2, mask2 = word_tok.encode_pair("<s> how are you ?", "hello world </s>")
    assert (ids2, mask2) == (ids, mask)
    assert ids2.count(1) == 1 and ids2.count(2) == 1 and ids2[0] == 1 and ids2[-1] == 2


def test_pair_interior_special_tokens_rejected(word_tok):
    with pytest.raises(ValueError, match="prompt text contains special token '</s>'"):
        word_tok.encode_pair("hello </s> world", "you")
    with pytest.raises(ValueError, match="response text contains special token '<s>'"):
        word_tok.encode_pair("hello", "<s> world")


def test_no_bos_tokenizer(tmp_path):
    """Qwen2-style: no BOS token; EOS from tokenizer_config.json; pad falls back to EOS."""
    vocab = {"[UNK]": 0, "<|endoftext|>": 1, "hi": 2, "there": 3}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.add_special_tokens(["<|endoftext|>"])
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    tok = load_tokenizer(str(tmp_path))
    assert tok.bos_id is None and tok.eos_id == 1 and tok.pad_id == 1
    assert tok.encode_pair("hi", "there") == ([2, 3, 1], [0, 1, 1])
    assert tok.encode_pair("hi", "there<|endoftext|>") == ([2, 3, 1], [0, 1, 1])


def test_bpe_round_trip(tmp_path):
    t = Tokenizer(models.BPE(unk_token=None))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(["the policy follows the reference", "a reward model ranks responses"] * 20, trainer)
    t.save(str(tmp_path / "tok.json"))
    tok = HFTokenizer(tmp_path / "tok.json")
    text = "the reward follows — ünïcode too"
    ids, mask = tok.encode_pair("the policy ", text)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and ids.count(tok.bos_id) == 1
    assert tok.decode(ids) == "the policy " + text
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == text


def test_byte_tokenizer_policy():
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer)
    ids, mask = tok.encode_pair("Q: 2+2?", " 4")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids.count(tok.bos_id) == 1 and ids.count(tok.eos_id) == 1
    assert mask == [0] * 8 + [1] * 3 and tok.decode(ids) == "Q: 2+2? 4"


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        HFTokenizer(tmp_path)

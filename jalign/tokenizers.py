"""Tokenizers: a file-free byte-level tokenizer (the default for built-in experiments) and Hugging Face
``tokenizer.json`` files through the ``tokenizers`` package.

BOS/EOS policy for prompt + response concatenation (:meth:`ByteTokenizer.encode_pair`):
``[BOS] prompt response [EOS]`` — exactly one BOS, at the start of the prompt, and exactly one EOS, at the
end of the response; the response mask covers the response tokens and the EOS (the model learns to stop).
Neither piece is encoded with its own BOS/EOS, so no duplicates arise when they are joined.

For Hugging Face tokenizers (:class:`HFTokenizer`) the same policy holds, with three rules for the ways
duplicates usually creep in:

* the tokenizer's own post-processor (e.g. a template that adds ``<s> ... </s>``) is never applied —
  pieces are encoded with ``add_special_tokens=False`` and BOS/EOS are added by the policy alone;
* a prompt whose text already starts with the BOS string (a chat template) keeps that single BOS, and a
  response whose text already ends with the EOS string keeps that single EOS — nothing is added twice;
* a BOS or EOS anywhere else in the prompt or response is an error (``ValueError`` naming the piece).

A tokenizer without a BOS token (Qwen2) gets no BOS; ``pad_id`` is the pad token, else the EOS
(padding is always masked, so its value never reaches a loss).
"""

from __future__ import annotations

from collections.abc import Sequence


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, then PAD=256, BOS=257, EOS=258 (``vocab_size`` = 259)."""

    pad_id = 256
    bos_id = 257
    eos_id = 258
    vocab_size = 259

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode expects str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes back to text; special tokens are dropped, invalid UTF-8 is replaced (U+FFFD)."""
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def encode_pair(self, prompt: str, response: str) -> tuple[list[int], list[int]]:
        """``([BOS] prompt response [EOS], response_mask)`` following the module's BOS/EOS policy."""
        p = self.encode(prompt, add_bos=True)
        r = self.encode(response, add_eos=True)
        return p + r, [0] * len(p) + [1] * len(r)


def _special_id(tok, explicit: str | None, candidates: tuple[str, ...]) -> int | None:
    for name in ((explicit,) if explicit is not None else candidates):
        i = tok.token_to_id(name)
        if i is not None:
            return i
        if explicit is not None:
            raise ValueError(f"special token {explicit!r} is not in the tokenizer's vocabulary")
    return None


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (via the ``tokenizers`` package) with the :class:`ByteTokenizer`
    interface (``encode``, ``decode``, ``encode_pair``, ``pad_id``, ``bos_id``, ``eos_id``, ``vocab_size``).

    Special tokens come from the arguments, else from a ``tokenizer_config.json`` next to the file, else from
    common names (``<s>``/``<|begin_of_text|>``/``<|endoftext|>``...). ``bos_id`` may be None (no BOS).
    """

    _BOS = ("<s>", "<|begin_of_text|>", "<bos>", "[BOS]")
    _EOS = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[EOS]")
    _PAD = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>")

    def __init__(self, path, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None):
        import json
        from pathlib import Path

        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file}: tokenizer.json not found")
        self._tok = Tokenizer.from_file(str(file))
        cfg_file = file.parent / "tokenizer_config.json"
        conf = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}

        def from_conf(key):
            v = conf.get(key)
            return v.get("content") if isinstance(v, dict) else v

        self.bos_id = _special_id(self._tok, bos_token or from_conf("bos_token"), self._BOS)
        self.eos_id = _special_id(self._tok, eos_token or from_conf("eos_token"), self._EOS)
        if self.eos_id is None:
            raise ValueError(f"{file}: no EOS token found (pass eos_token=...)")
        pad = _special_id(self._tok, pad_token or from_conf("pad_token"), self._PAD)
        self.pad_id = pad if pad is not None else self.eos_id
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text`` (no post-processor specials); BOS/EOS only when asked (and BOS exists)."""
        if not isinstance(text, str):
            raise TypeError(f"HFTokenizer.encode expects str, got {type(text).__name__}")
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        bos = [self.bos_id] if add_bos and self.bos_id is not None else []
        return bos + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens dropped."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def encode_pair(self, prompt: str, response: str) -> tuple[list[int], list[int]]:
        """``([BOS] prompt response [EOS], response_mask)`` following the module's BOS/EOS policy."""
        p = self.encode(prompt)
        r = self.encode(response)
        if self.bos_id is not None and p[:1] == [self.bos_id]:
            p = p[1:]
        if r[-1:] == [self.eos_id]:
            r = r[:-1]
        specials = {self.bos_id, self.eos_id} - {None}
        for name, ids in (("prompt", p), ("response", r)):
            bad = [i for i in ids if i in specials]
            if bad:
                raise ValueError(
                    f"encode_pair: the {name} text contains special token {self._tok.id_to_token(bad[0])!r} "
                    "inside it (only a leading BOS in the prompt or a trailing EOS in the response is allowed)"
                )
        p = ([self.bos_id] if self.bos_id is not None else []) + p
        r = r + [self.eos_id]
        return p + r, [0] * len(p) + [1] * len(r)


def load_tokenizer(spec: str = "byte", **kw) -> ByteTokenizer | HFTokenizer:
    """``"byte"`` → :class:`ByteTokenizer`; a ``tokenizer.json`` path or a directory holding one → HFTokenizer."""
    if spec == "byte":
        return ByteTokenizer()
    return HFTokenizer(spec, **kw)

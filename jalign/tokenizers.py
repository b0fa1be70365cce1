"""Tokenizers: a file-free byte-level tokenizer (the default for built-in experiments) and Hugging Face
``tokenizer.json`` files through the ``tokenizers`` package.

BOS/EOS policy for prompt + response concatenation (:meth:`ByteTokenizer.encode_pair`):
``[BOS] prompt response [EOS]`` — exactly one BOS, at the start of the prompt, and exactly one EOS, at the
end of the response; the response mask covers the response tokens and the EOS (the model learns to stop).
Neither piece is encoded with its own BOS/EOS, so no duplicates arise when they are joined.
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

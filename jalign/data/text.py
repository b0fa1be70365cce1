"""Offline text for language-model pretraining: CPython's ``pydoc_data.topics`` and generated sentences.

``pydoc_data.topics`` holds the text of ``help()`` topics (~0.46 MB of English prose and code, available
offline in every CPython install). Each document is encoded with :class:`jalign.tokenizers.ByteTokenizer` as
``[BOS] bytes [EOS]`` and the documents are concatenated into one token stream; the last ``val_fraction`` of
every document is held out. Training windows are random slices of the stream
(the trainer's ``text_windows`` data source, :mod:`jalign.train.plugins.data`).
"""

from __future__ import annotations

import numpy as np

from jalign.tokenizers import ByteTokenizer

SOURCES = ("pydoc_topics",)

_SUBJECTS = ["the model", "a reward", "the policy", "the reference", "a sample", "the loss", "the gradient"]
_VERBS = ["increases", "decreases", "matches", "bounds", "ignores", "follows"]
_OBJECTS = ["the margin", "the divergence", "the likelihood", "the temperature", "the baseline", "the prior"]


def template_text(n_sentences: int, seed: int = 0) -> list[str]:
    """Simple generated sentences ("When the loss decreases, the policy follows the prior.")."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sentences):
        s, v, o = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
        s2, v2 = rng.choice(_SUBJECTS), rng.choice(_VERBS)
        out.append(f"When {s} {v} {o}, {s2} {v2} {rng.choice(_OBJECTS)}.")
    return out


def corpus_documents(sources: tuple[str, ...] = SOURCES, n_template: int = 0, seed: int = 0) -> list[str]:
    """The documents of ``sources`` in a fixed order, plus one document of ``n_template`` generated sentences."""
    docs: list[str] = []
    for src in sources:
        if src == "pydoc_topics":
            from pydoc_data.topics import topics

            docs += [topics[k] for k in sorted(topics)]
        else:
            raise ValueError(f"corpus source {src!r} unknown; known: {SOURCES}")
    if n_template:
        docs.append(" ".join(template_text(n_template, seed)))
    return docs


def encode_corpus(docs: list[str], val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation token streams: each document ``[BOS] bytes [EOS]``, its tail held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    tok = ByteTokenizer()
    train, val = [], []
    for d in docs:
        ids = tok.encode(d, add_bos=True, add_eos=True)
        cut = len(ids) - int(len(ids) * val_fraction)
        train.append(ids[:cut])
        val.append(ids[cut:])
    return np.concatenate(train).astype(np.int32), np.concatenate(val).astype(np.int32)


def sample_windows(stream: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``[batch, length]`` windows of ``stream`` starting at uniformly random offsets."""
    if len(stream) <= length:
        raise ValueError(f"token stream of {len(stream)} tokens is too short for windows of {length}")
    starts = rng.integers(0, len(stream) - length, size=batch)
    return stream[starts[:, None] + np.arange(length)[None]]

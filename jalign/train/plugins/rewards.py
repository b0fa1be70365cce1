"""Reward plug-ins (``online.reward``): ``fn(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T],
**online.reward_kwargs) -> rewards [N]`` (numpy, on the host).

* ``lexicon`` — the sentiment lexicon scorer of :mod:`jalign.data.builtin`
  (:func:`~jalign.data.builtin.lexicon_reward`, in (−1, 1)) on the decoded completion bytes;
* ``count_token`` — the fraction of response tokens equal to ``token`` (a scripted reward for tests and demos).
"""

from __future__ import annotations

import numpy as np

from jalign.data.builtin import lexicon_reward
from jalign.train.plugins.registry import register_reward


def decode_completion(ids: np.ndarray, mask: np.ndarray) -> str:
    """Text of a byte-tokenizer completion: the masked tokens, special ids (PAD/BOS/EOS) dropped."""
    toks = [int(t) for t, m in zip(ids, mask, strict=True) if m and t < 256]
    return bytes(toks).decode("utf-8", errors="replace")


@register_reward("lexicon")
def lexicon(prompt_ids, completion_ids, completion_mask) -> np.ndarray:
    """Sentiment of each completion by the built-in lexicon scorer (:func:`jalign.data.builtin.lexicon_reward`)."""
    ids, mask = np.asarray(completion_ids), np.asarray(completion_mask)
    return np.asarray([lexicon_reward(decode_completion(i, m)) for i, m in zip(ids, mask, strict=True)],
                      np.float32)


@register_reward("count_token")
def count_token(prompt_ids, completion_ids, completion_mask, *, token: int = ord("a")) -> np.ndarray:
    """Fraction of response tokens equal to ``token`` (a scripted reward for tests and demos)."""
    m = np.asarray(completion_mask, np.float32)
    hits = (np.asarray(completion_ids) == token) * m
    return hits.sum(-1) / np.maximum(m.sum(-1), 1.0)

"""Reward plug-ins (``online.reward``): ``fn(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T],
**online.reward_kwargs) -> rewards [N]`` (numpy, on the host).

* ``lexicon`` — the sentiment lexicon scorer of :mod:`jalign.data.builtin`
  (:func:`~jalign.data.builtin.lexicon_reward`, in (−1, 1)) on the decoded completion bytes;
* ``count_token`` — the fraction of response tokens equal to ``token`` (a scripted reward for tests and demos);
* ``reward_model`` — trained reward models (:func:`jalign.models.load_reward_model` checkpoints): ``path`` one
  directory or a list of them (an ensemble), combined by ``mode`` = ``"mean"`` / ``"min"`` /
  ``"mean_minus_std"`` (``k``, ``ddof``; :func:`jalign.rewards.ensemble`); each scores prompt + completion at
  its last real token. Prompt padding is recognised by ``pad_id`` (default: the first model's
  ``pad_token_id``). Models are loaded once per set of arguments.
"""

from __future__ import annotations

import functools

import numpy as np

from jalign.data.builtin import lexicon_reward
from jalign.errors import UserError
from jalign.models import RewardEnsemble, join_prompt_completion, load_reward_model
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


@functools.lru_cache(maxsize=8)
def _ensemble(paths: tuple[str, ...], mode: str, k: float, ddof: int) -> RewardEnsemble:
    return RewardEnsemble([load_reward_model(p, num_labels=1) for p in paths], mode, k=k, ddof=ddof)


@register_reward("reward_model")
def reward_model(prompt_ids, completion_ids, completion_mask, *, path, mode: str = "mean", k: float = 1.0,
                 ddof: int = 0, pad_id: int | None = None) -> np.ndarray:
    """The score of (prompt, completion) under one reward-model checkpoint or the ensemble of several."""
    paths = (path,) if isinstance(path, str) else tuple(str(p) for p in path)
    if not paths:
        raise UserError("reward 'reward_model': online.reward_kwargs.path is empty (one directory or a list)")
    try:
        ens = _ensemble(paths, mode, float(k), int(ddof))
    except ValueError as e:  # bad mode / k / ddof, a wide head, members that do not share a vocabulary
        raise UserError(f"reward 'reward_model': {e}") from None
    pad = ens.models[0].cfg.pad_id if pad_id is None else pad_id
    if pad is None:
        raise UserError("reward 'reward_model': the reward model's config.json has no pad_token_id; set "
                        "online.reward_kwargs.pad_id (the prompts' padding token)")
    prompt_ids = np.asarray(prompt_ids)
    ids, mask = join_prompt_completion(prompt_ids, prompt_ids != pad, completion_ids, completion_mask)
    return ens(ids, mask)

"""Plug-in points of the trainer: models, data sources and reward functions by name.

The config names a model (``model.name``), a data source (``data.name``) and, for online runs, a reward
(``online.reward``). The entries for :mod:`jalign.models` and :mod:`jalign.data` (``small_lm``,
``pretrained``, ``causal_lm``; ``builtin_pairwise``, ``builtin_sft``, ``builtin_prompts``; reward ``lexicon``)
live in :mod:`jalign.train.plugins`; new ones are registered the same way, e.g.::

    @register_model("pretrained")
    def _pretrained(*, seed, path): return jalign.models.load_pretrained(path)

Factories:

* model: ``factory(*, seed, **model.kwargs) -> nnx.Module`` called as ``model(ids, attention_mask=m)``;
* data: ``factory(*, batch_size, seq_len, seed, process_index, process_count, **data.kwargs) -> source``,
  an iterator of process-local numpy batches with ``get_state()`` / ``set_state()``;
* reward: ``fn(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T], **kwargs) -> rewards [N]``
  (numpy, on the host).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import numpy as np

from jalign.train import testing

MODELS: dict[str, Callable] = {}
DATA: dict[str, Callable] = {}
REWARDS: dict[str, Callable] = {}


def _register(table: dict, what: str, name: str):
    def deco(fn):
        if name in table:
            raise ValueError(f"{what} {name!r} is already registered")
        table[name] = fn
        return fn

    return deco


def register_model(name: str):
    return _register(MODELS, "model", name)


def register_data(name: str):
    return _register(DATA, "data source", name)


def register_reward(name: str):
    return _register(REWARDS, "reward", name)


def _lookup(table: dict, what: str, name: str) -> Callable:
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown {what} {name!r}.{hint} Registered: {', '.join(sorted(table))}")
    return table[name]


def _call(fn: Callable, what: str, name: str, kwargs: dict):
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = sorted(set(kwargs) - set(params))
        if bad:
            raise TypeError(f"{what} {name!r} got unknown argument(s) {bad}; valid: {sorted(params)}")
    return fn(**kwargs)


def make_model(name: str, *, seed: int, **kwargs):
    return _call(_lookup(MODELS, "model", name), "model", name, {"seed": seed, **kwargs})


def make_data(name: str, **kwargs):
    return _call(_lookup(DATA, "data source", name), "data source", name, kwargs)


def get_reward(name: str) -> Callable:
    return _lookup(REWARDS, "reward", name)


# ---------------------------------------------------------------------------------------------------------
# Built-in entries (tiny model, synthetic data, a scripted reward)


@register_model("tiny")
def _tiny(*, seed: int, vocab_size: int = 259, d_model: int = 16, d_hidden: int = 32):
    return testing.tiny_lm(seed, vocab_size=vocab_size, d_model=d_model, d_hidden=d_hidden)


def _source(examples, batch_size, seed, process_index, process_count):
    return testing.InMemoryBatchSource(examples, batch_size, seed=seed, process_index=process_index,
                                       process_count=process_count)


@register_data("synthetic_pairwise")
def _pairwise(*, batch_size, seq_len, seed, process_index=0, process_count=1, num_examples: int = 256):
    return _source(testing.synthetic_pairwise_examples(num_examples, seq_len, seed), batch_size, seed,
                   process_index, process_count)


@register_data("synthetic_sft")
def _sft(*, batch_size, seq_len, seed, process_index=0, process_count=1, num_examples: int = 256):
    return _source(testing.synthetic_sft_examples(num_examples, seq_len, seed), batch_size, seed,
                   process_index, process_count)


@register_data("synthetic_prompts")
def _prompts(*, batch_size, seq_len, seed, process_index=0, process_count=1, num_examples: int = 64,
             prompt_len: int = 16):
    return _source(testing.synthetic_prompt_examples(num_examples, prompt_len, seed), batch_size, seed,
                   process_index, process_count)


@register_reward("count_token")
def count_token(prompt_ids, completion_ids, completion_mask, *, token: int = ord("a")) -> np.ndarray:
    """Fraction of response tokens equal to ``token`` (a scripted reward for tests and demos)."""
    m = np.asarray(completion_mask, np.float32)
    hits = (np.asarray(completion_ids) == token) * m
    return hits.sum(-1) / np.maximum(m.sum(-1), 1.0)


# The real model (jalign.models) and data pipelines (jalign.data): see jalign/train/plugins.py.
# file_* and builtin_unpaired data sources: jalign/train/sources.py.
from jalign.train import plugins, sources  # noqa: E402,F401

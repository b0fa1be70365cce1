"""The tables of the trainer's plug-ins: models, data sources and reward functions by name.

The config names a model (``model.name``), a data source (``data.name``) and, for online runs, a reward
(``online.reward``). This module holds only the tables and the decorators; the entries live in the modules
of :mod:`jalign.train.plugins` (one per kind), which import nothing but this registry and lower layers, and
are registered when ``jalign.train.plugins`` is imported. A new entry is registered the same way, e.g.::

    from jalign.train.plugins import register_model

    @register_model("my_model")
    def _my_model(*, seed, path): return jalign.models.load_pretrained(path)

Factories:

* model: ``factory(*, seed, **model.kwargs) -> nnx.Module`` called as ``model(ids, attention_mask=m)``;
* data: ``factory(*, batch_size, seq_len, seed, process_index, process_count, **data.kwargs) -> source``,
  an iterator of process-local numpy batches with ``get_state()`` / ``set_state()``;
* reward: ``fn(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T], **kwargs) -> rewards [N]``
  (numpy, on the host), or a mapping with the rewards under ``"reward"`` and named per-sample parts
  (``[N]`` each) beside them, which the online loop logs as ``reward/<part>`` (see
  :func:`jalign.train.online.score_parts`).

A reward name may also carry a prefix resolved by a function registered with
:func:`register_reward_resolver`: ``combine:<mode>:<components>`` (:mod:`jalign.train.plugins.rewards`) builds
a combined reward from registered ones.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from jalign.errors import BadArgumentsError, UnknownNameError

MODELS: dict[str, Callable] = {}
DATA: dict[str, Callable] = {}
REWARDS: dict[str, Callable] = {}
REWARD_RESOLVERS: dict[str, Callable] = {}  # prefix -> resolver(spec after "prefix:") -> reward fn


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


def register_reward_resolver(prefix: str):
    """Register ``resolver(spec) -> reward fn`` for the reward names ``"<prefix>:<spec>"``; the resolver
    raises a :class:`~jalign.errors.UserError` for a malformed spec. The reward fn may carry
    ``check_kwargs(kwargs)``, which :func:`check_reward` calls."""
    return _register(REWARD_RESOLVERS, "reward prefix", prefix)


def _lookup(table: dict, what: str, name: str) -> Callable:
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown {what} {name!r}.{hint} Registered: {', '.join(sorted(table))}")
    return table[name]


def _call(fn: Callable, what: str, name: str, kwargs: dict):
    """``fn(**kwargs)`` after checking the arguments against its signature (unknown or missing ones are a
    :class:`~jalign.errors.BadArgumentsError`, a user error naming them)."""
    sig = inspect.signature(fn)
    params = sig.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = sorted(set(kwargs) - set(params))
        if bad:
            raise BadArgumentsError(f"{what} {name!r} got unknown argument(s) {bad}; valid: {sorted(params)}")
    missing = sorted(k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs
                     and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    if missing:
        raise BadArgumentsError(f"{what} {name!r} needs argument(s) {missing} (model.kwargs / data.kwargs)")
    return fn(**kwargs)


def make_model(name: str, *, seed: int, **kwargs):
    return _call(_lookup(MODELS, "model", name), "model", name, {"seed": seed, **kwargs})


def make_data(name: str, **kwargs):
    return _call(_lookup(DATA, "data source", name), "data source", name, kwargs)


def get_reward(name: str) -> Callable:
    """The reward function of a registered name, or of a ``"<prefix>:<spec>"`` name through its resolver."""
    prefix, sep, spec = str(name).partition(":")
    if sep and prefix in REWARD_RESOLVERS:
        return REWARD_RESOLVERS[prefix](spec)
    return _lookup(REWARDS, "reward", name)


def check_reward(name: str, kwargs: dict, *, key: str = "online.reward_kwargs") -> Callable:
    """Resolve ``name`` and check ``kwargs`` against it before any training (a :class:`~jalign.errors.UserError`
    naming ``key`` otherwise): a plain reward's keyword arguments against its signature, a resolved one's
    through its ``check_kwargs``. Returns the reward function."""
    fn = get_reward(name)
    kwargs = dict(kwargs)
    if hasattr(fn, "check_kwargs"):
        fn.check_kwargs(kwargs)
        return fn
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names = [k for k, p in list(params.items())[3:]  # after (prompt_ids, completion_ids, completion_mask)
                 if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        bad = sorted(set(kwargs) - set(names))
        if bad:
            raise BadArgumentsError(f"config {key}: reward {name!r} got unknown argument(s) {bad}; valid: "
                                    f"{sorted(names)}")
    return fn

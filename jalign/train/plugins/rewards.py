"""Reward plug-ins (``online.reward``): ``fn(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T],
**online.reward_kwargs) -> rewards [N]`` (numpy, on the host).

* ``lexicon`` — the sentiment lexicon scorer of :mod:`jalign.data.builtin`
  (:func:`~jalign.data.builtin.lexicon_reward`, in (−1, 1)) on the decoded completion bytes, times ``scale``
  (default 1; e.g. ``scale = 1/T`` puts the score on a Bradley–Terry logit scale of temperature T);
* ``count_token`` — the fraction of response tokens equal to ``token`` (a scripted reward for tests and demos);
* ``conciseness`` — 1 − min(n, ``max_len``)/``max_len`` for a completion of n response tokens (EOS included):
  1 for an immediate EOS, 0 at ``max_len`` tokens or more; times ``scale`` (default 1);
* ``reward_model`` — trained reward models (:func:`jalign.models.load_reward_model` checkpoints): ``path`` one
  directory or a list of them (an ensemble), combined by ``mode`` = ``"mean"`` / ``"min"`` /
  ``"mean_minus_std"`` (``k``, ``ddof``; :func:`jalign.rewards.ensemble`); each scores prompt + completion at
  its last real token. Prompt padding is recognised by ``pad_id`` (default: the first model's
  ``pad_token_id``). Models are loaded once per set of arguments.
* ``combine:<mode>:<components>`` — several registered rewards combined by :func:`jalign.rewards.combine`
  (raw sum, sum of log-sigmoid-transformed rewards = AND, per-sample minimum, or MaxMin: the worst-off
  group per batch); every component is logged.

Combined rewards (``online.reward = "combine:<mode>:<component>,<component>,..."``):

* ``<mode>``: ``sum`` (Σ_i w_i·r_i), ``transformed_sum`` (Σ_i w_i·log σ(r_i − r_ref,i), Wang et al., 2024),
  ``min`` (min_i w_i·r_i, per sample) or ``maxmin`` (MaxMin-RLHF, Chakraborty et al., 2024: per sampled batch,
  the rewards w_g·(r_g − r_ref,g) of the one component g whose batch mean is lowest — the group that is worst
  off under the current policy; :func:`jalign.rewards.maxmin_group`);
* ``<component>``: ``[<label>=]<registered reward>``; the label (default: the reward's name) names the
  component's keyword arguments and its logged metrics, so one reward can appear twice under two labels
  (``a=count_token,b=count_token``);
* ``online.reward_kwargs.<label>``: that component's own keyword arguments (a dict; optional);
* ``online.reward_kwargs.weights``: one non-negative weight per component (optional, default all 1);
* ``online.reward_kwargs.refs`` (``transformed_sum``: required; ``maxmin``: optional, default 0, the value each
  group's utility is read against, e.g. its reward model's mean on reference samples): one reference per component, either a
  number (a fixed r_ref) or ``"quantile:<q>"``: per prompt, the q-quantile of that component's rewards over the
  K samples of the prompt in the batch (:func:`jalign.rewards.reference_quantile`). The paper takes the
  quantile over samples of the *base* policy; online, the samples are the current policy's, so the reference
  moves with training (a group-relative reference, like GRPO's baseline).

The combined reward returns ``{"reward": combined, "<label>": r_i, "<label>/transformed": log σ(r_i −
r_ref,i)}`` (the last for ``transformed_sum`` only), and for ``maxmin`` also ``"maxmin/group"`` (g, the same for
every sample of the batch, so its logged mean is the index of the group optimised at that step); the online loop
logs the mean of every part as
``reward/<part>`` (the combined reward itself as ``reward/mean``, as for any reward).

Calibrated rewards, CTRL (``online.reward = "ctrl:<base reward>:<file>[,transform=<kind>][,t=<t>]"``;
Balashankar et al., 2024, arXiv 2412.19792):

* ``<base reward>``: the reward to calibrate, any reward name (``lexicon``, ``rm:PATH``, …; not ``ctrl:``);
  ``online.reward_kwargs`` are its keyword arguments;
* ``<file>``: the **reference rewards** of the prompts (:func:`write_reference_rewards`): for each training
  prompt, the base reward of m samples of the reference policy μ (e.g. the SFT policy), drawn once before RL;
* per row, C = μ̂(r < r(y)) + ½·μ̂(r = r(y)) against its prompt's m reference rewards
  (:func:`jalign.rewards.calibrate`), then Φ(C) (:func:`jalign.rewards.ctrl_transform`): ``transform`` =
  ``exp`` (default, exp(t·c), for best-of-n decoding), ``neg_exp`` (−exp(−t·c), worst-of-n) or ``identity``
  (calibrated RL); ``t`` > 0, default 4.

The reference is sampled before training and kept fixed (as the paper calibrates against the base policy),
not re-drawn from the current policy: a reward plug-in has no model, and the frozen reference of a KL term
does not change, so its samples need drawing once. Prompts are matched by token ids (the file stores each
prompt's ids without padding, and the pad id); a training prompt missing from the file is a
:class:`~jalign.errors.UserError` naming it. The reward returns ``{"reward": Φ(C), "raw": r,
"calibrated": C}``, so the online loop logs ``reward/raw`` (the base reward) and ``reward/calibrated``
(the empirical win rate against the reference) beside ``reward/mean``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jalign import rewards as RW
from jalign.data.builtin import lexicon_reward
from jalign.errors import BadArgumentsError, FileFormatError, MissingFileError, UserError
from jalign.models import RewardEnsemble, join_prompt_completion, load_reward_model
from jalign.train.plugins.registry import (
    REWARDS,
    check_reward,
    get_reward,
    register_reward,
    register_reward_resolver,
)


def decode_completion(ids: np.ndarray, mask: np.ndarray) -> str:
    """Text of a byte-tokenizer completion: the masked tokens, special ids (PAD/BOS/EOS) dropped."""
    toks = [int(t) for t, m in zip(ids, mask, strict=True) if m and t < 256]
    return bytes(toks).decode("utf-8", errors="replace")


@register_reward("lexicon")
def lexicon(prompt_ids, completion_ids, completion_mask, *, scale: float = 1.0) -> np.ndarray:
    """Sentiment of each completion by the built-in lexicon scorer (:func:`jalign.data.builtin.lexicon_reward`),
    times ``scale``."""
    _check_scale("lexicon", scale)
    ids, mask = np.asarray(completion_ids), np.asarray(completion_mask)
    r = np.asarray([lexicon_reward(decode_completion(i, m)) for i, m in zip(ids, mask, strict=True)], np.float64)
    return (float(scale) * r).astype(np.float32)


def _check_scale(name: str, scale) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(scale)) and float(scale) > 0):
        raise UserError(f"config online.reward_kwargs: reward {name!r} argument scale={scale!r} must be a finite "
                        "number > 0")


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


@register_reward("conciseness")
def conciseness(prompt_ids, completion_ids, completion_mask, *, max_len: int = 48, scale: float = 1.0) -> np.ndarray:
    """``scale``·(1 − min(n, max_len)/max_len) with n the number of response tokens (the mask's sum, EOS included)."""
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise UserError(f"config online.reward_kwargs: reward 'conciseness' argument max_len={max_len!r} must be an "
                        "integer >= 1")
    _check_scale("conciseness", scale)
    n = np.asarray(completion_mask, np.float64).sum(-1)
    return (float(scale) * (1.0 - np.minimum(n, max_len) / max_len)).astype(np.float32)


_RESERVED = ("weights", "refs")


def _bad(msg: str) -> UserError:
    return UserError(f"config {msg}")


def _parse_ref(label: str, i: int, v):
    """A reference: a finite number, or ``("quantile", q)`` for ``"quantile:<q>"``."""
    where = f"online.reward_kwargs.refs[{i}]={v!r} (component {label!r})"
    if isinstance(v, bool):
        raise _bad(f"{where} must be a number or 'quantile:<q>' with q in [0, 1]")
    if isinstance(v, (int, float, np.integer, np.floating)):
        if not math.isfinite(float(v)):
            raise _bad(f"{where} must be finite")
        return float(v)
    if isinstance(v, str) and v.startswith("quantile:"):
        try:
            q = float(v.split(":", 1)[1])
        except ValueError:
            q = math.nan
        if not 0.0 <= q <= 1.0:
            raise _bad(f"{where}: the quantile level must be a number in [0, 1]")
        return ("quantile", q)
    raise _bad(f"{where} must be a number or 'quantile:<q>' with q in [0, 1]")


def _group_quantile(prompt_ids: np.ndarray, r: np.ndarray, q: float) -> np.ndarray:
    """Per row, the q-quantile of ``r`` over the rows with the same prompt (the K samples of a prompt)."""
    _, inv = np.unique(np.asarray(prompt_ids), axis=0, return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    out = np.empty_like(r, dtype=np.float32)
    for g in np.unique(inv):
        sel = inv == g
        out[sel] = float(np.asarray(RW.reference_quantile(r[sel][None, :], q))[0])
    return out


class CombinedReward:
    """A reward built from registered rewards by :func:`jalign.rewards.combine` (see the module docstring).

    ``CombinedReward(spec)`` with ``spec = "<mode>:<component>,..."`` (the part after ``combine:``);
    calling it as a reward function, ``fn(prompt_ids, completion_ids, completion_mask, **online.reward_kwargs)``,
    returns ``{"reward": [N], "<label>": [N], ...}``. :meth:`check_kwargs` validates the keyword arguments
    (the trainer calls it before training); every error is a :class:`~jalign.errors.UserError` naming the
    config key and value.
    """

    def __init__(self, spec: str):
        name = f"combine:{spec}"
        mode, sep, comps = spec.partition(":")
        if not sep or mode not in RW.COMBINE_MODES or not comps.strip():
            raise _bad(f"online.reward={name!r} must be 'combine:<mode>:<reward>[,<reward>...]' with <mode> one of "
                       f"{RW.COMBINE_MODES}, e.g. 'combine:transformed_sum:lexicon,count_token'")
        self.name, self.mode = name, mode
        self.labels, self.rewards, self.fns = [], [], []
        for item in comps.split(","):
            label, eq, reward = item.strip().partition("=")
            reward = (reward if eq else label).strip()
            label = label.strip()
            if not label or not reward:
                raise _bad(f"online.reward={name!r}: empty component in {comps!r} (write <reward> or <label>=<reward>)")
            if reward.startswith("combine:") or reward not in REWARDS:
                try:
                    get_reward(reward)  # raises UnknownNameError with suggestions
                except UserError as e:
                    raise _bad(f"online.reward={name!r}: component {label!r}: {e}") from None
                raise _bad(f"online.reward={name!r}: component {label!r} must be a registered reward, not a "
                           f"combined one ({reward!r})")
            if label in self.labels or label in _RESERVED or "/" in label:
                raise _bad(f"online.reward={name!r}: component label {label!r} is repeated or reserved (labels must "
                           f"be unique, without '/', and not one of {_RESERVED}); use <label>=<reward>")
            self.labels.append(label)
            self.rewards.append(reward)
            self.fns.append(get_reward(reward))

    def check_kwargs(self, kwargs: Mapping) -> tuple[list[dict], np.ndarray | None, list | None]:
        """Validate ``online.reward_kwargs``; return (each component's kwargs, weights or None, refs or None)."""
        kwargs = dict(kwargs)
        unknown = sorted(set(kwargs) - set(self.labels) - set(_RESERVED))
        if unknown:
            raise _bad(f"online.reward_kwargs: unknown key(s) {unknown} for online.reward={self.name!r}; valid: "
                       f"the component labels {self.labels} (their own arguments) and {list(_RESERVED)}")
        m = len(self.labels)
        weights = None
        if kwargs.get("weights") is not None:
            w = kwargs["weights"]
            ok = isinstance(w, (list, tuple)) and len(w) == m and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in w)
            if not ok:
                raise _bad(f"online.reward_kwargs.weights={w!r} must be a list of {m} finite numbers >= 0, one per "
                           f"component {self.labels}")
            weights = np.asarray(w, np.float32)
        refs = None
        if self.mode == "transformed_sum" or (self.mode == "maxmin" and kwargs.get("refs") is not None):
            r = kwargs.get("refs")
            if not isinstance(r, (list, tuple)) or len(r) != m:
                raise _bad(f"online.reward_kwargs.refs={r!r}: online.reward={self.name!r} needs a list of {m} "
                           f"references, one per component {self.labels} (numbers or 'quantile:<q>')")
            refs = [_parse_ref(lab, i, v) for i, (lab, v) in enumerate(zip(self.labels, r, strict=True))]
        elif kwargs.get("refs") is not None:
            raise _bad(f"online.reward_kwargs.refs={kwargs['refs']!r} is only used by modes 'transformed_sum' and "
                       f"'maxmin', not {self.mode!r} (online.reward={self.name!r})")
        comp_kwargs = []
        for label, reward, fn in zip(self.labels, self.rewards, self.fns, strict=True):
            ck = kwargs.get(label) or {}
            if hasattr(ck, "to_dict"):  # an ml_collections ConfigDict
                ck = ck.to_dict()
            if not isinstance(ck, Mapping):
                raise _bad(f"online.reward_kwargs.{label}={ck!r} must be a dict of reward {reward!r}'s arguments")
            ck = dict(ck)
            params = list(inspect.signature(fn).parameters.items())[3:]
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for _, p in params):
                bad = sorted(set(ck) - {k for k, _ in params})
                if bad:
                    raise BadArgumentsError(f"config online.reward_kwargs.{label}: reward {reward!r} got unknown "
                                            f"argument(s) {bad}; valid: {sorted(k for k, _ in params)}")
            comp_kwargs.append(ck)
        return comp_kwargs, weights, refs

    def __call__(self, prompt_ids, completion_ids, completion_mask, **kwargs) -> dict[str, np.ndarray]:
        comp_kwargs, weights, refs = self.check_kwargs(kwargs)
        parts = {}
        values = []
        for label, reward, fn, ck in zip(self.labels, self.rewards, self.fns, comp_kwargs, strict=True):
            r = np.asarray(fn(prompt_ids, completion_ids, completion_mask, **ck), np.float32)
            if r.shape != (np.shape(completion_ids)[0],):
                raise ValueError(f"reward {reward!r} (component {label!r}) returned shape {r.shape}, expected "
                                 f"({np.shape(completion_ids)[0]},)")
            values.append(r)
            parts[label] = r
        ref_arrays = None
        if refs is not None:
            ref_arrays = [np.full_like(r, v) if not isinstance(v, tuple) else _group_quantile(prompt_ids, r, v[1])
                          for r, v in zip(values, refs, strict=True)]
            if self.mode == "transformed_sum":
                for label, r, ref in zip(self.labels, values, ref_arrays, strict=True):
                    parts[f"{label}/transformed"] = np.asarray(RW.log_sigmoid_transform(r, ref), np.float32)
        combined = RW.combine(values, self.mode, ref_rewards_list=ref_arrays, weights=weights)
        if self.mode == "maxmin":
            g = int(RW.maxmin_group(values, ref_rewards_list=ref_arrays, weights=weights))
            parts["maxmin/group"] = np.full(len(values[0]), g, np.float32)
        return {"reward": np.asarray(combined, np.float32), **parts}


@register_reward_resolver("combine")
def combine_reward(spec: str) -> CombinedReward:
    """``combine:<mode>:<components>``: a :class:`CombinedReward` (see the module docstring)."""
    return CombinedReward(spec)


@register_reward_resolver("rm")
def rm_reward(spec: str):
    """``rm:PATH`` or ``rm:PATH1,PATH2,...``: the reward-model checkpoint at PATH, or the ensemble of several
    (:func:`reward_model` with ``path`` fixed; ``mode``, ``k``, ``ddof``, ``pad_id`` from ``online.reward_kwargs``)."""
    paths = [p for p in spec.split(",") if p]
    if not paths:
        raise UserError(f"reward 'rm:{spec}': no checkpoint directory after 'rm:' (rm:PATH or rm:PATH1,PATH2)")
    path = paths[0] if len(paths) == 1 else paths

    def rm(prompt_ids, completion_ids, completion_mask, *, mode: str = "mean", k: float = 1.0, ddof: int = 0,
           pad_id: int | None = None) -> np.ndarray:
        return reward_model(prompt_ids, completion_ids, completion_mask, path=path, mode=mode, k=k, ddof=ddof,
                            pad_id=pad_id)

    rm.__name__ = f"rm:{spec}"
    return rm


# ----------------------------------------------------------------------------------------------------------
# CTRL: calibrated rewards against per-prompt reference samples

REFERENCE_FORMAT = "jalign.reference_rewards/1"


def _prompt_key(ids, pad_id: int) -> tuple[int, ...]:
    """The prompt's token ids without its (left) padding."""
    ids = [int(t) for t in np.asarray(ids).reshape(-1)]
    i = 0
    while i < len(ids) and ids[i] == pad_id:
        i += 1
    return tuple(ids[i:])


def write_reference_rewards(path, prompts: Sequence[str], rewards_PxM, tokenizer, *, reward: str = "") -> Path:
    """Write the reference-rewards file of a ``ctrl:`` reward: for each prompt, its token ids (encoded as the
    trainer's prompt data: ``tokenizer.encode_pair(prompt, "")``'s prompt part, BOS included) and the base
    rewards of m ≥ 1 samples of the reference policy (``rewards_PxM[i]``; m may differ between prompts).

    The file is JSON: ``{"format", "reward", "pad_id", "prompts": [{"prompt", "prompt_ids", "rewards"}]}``.
    Returns the path."""
    if len(prompts) != len(rewards_PxM):
        raise ValueError(f"write_reference_rewards: {len(prompts)} prompts but {len(rewards_PxM)} reward rows")
    recs = []
    for p, r in zip(prompts, rewards_PxM, strict=True):
        ids, mask = tokenizer.encode_pair(p, "")
        plen = mask.index(1) if 1 in mask else len(mask)
        r = [float(v) for v in np.asarray(r, np.float64).reshape(-1)]
        if not r or not all(math.isfinite(v) for v in r):
            raise ValueError(f"write_reference_rewards: prompt {p!r}: rewards must be a non-empty list of finite "
                             f"numbers, got {r!r}")
        recs.append({"prompt": p, "prompt_ids": [int(t) for t in ids[:plen]], "rewards": r})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": REFERENCE_FORMAT, "reward": reward, "pad_id": int(tokenizer.pad_id), "prompts": recs}
    path.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    return path


def load_reference_rewards(path) -> tuple[int, dict[tuple[int, ...], np.ndarray], dict[tuple[int, ...], str]]:
    """``(pad_id, {prompt ids: rewards [m]}, {prompt ids: prompt text})`` of a reference-rewards file
    (:func:`write_reference_rewards`); a :class:`~jalign.errors.UserError` names the file and the bad entry.
    Read once per (path, modification time)."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{path}: no such reference-rewards file (write it with "
                               "jalign.train.plugins.rewards.write_reference_rewards)")
    st = p.stat()
    return _load_reference(str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _load_reference(path: str, _mtime_ns: int, _size: int):
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path}: not a reference-rewards JSON file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != REFERENCE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise FileFormatError(f"{path}: key 'format'={got!r}; expected {REFERENCE_FORMAT!r}")
    pad = doc.get("pad_id")
    if isinstance(pad, bool) or not isinstance(pad, int):
        raise FileFormatError(f"{path}: key 'pad_id'={pad!r} must be an integer token id")
    recs = doc.get("prompts")
    if not isinstance(recs, list) or not recs:
        raise FileFormatError(f"{path}: key 'prompts' must be a non-empty list of records")
    table, texts = {}, {}
    for i, rec in enumerate(recs):
        ids = rec.get("prompt_ids") if isinstance(rec, dict) else None
        r = rec.get("rewards") if isinstance(rec, dict) else None
        if not (isinstance(ids, list) and ids and all(isinstance(t, int) and not isinstance(t, bool) for t in ids)):
            raise FileFormatError(f"{path}: prompts[{i}].prompt_ids={ids!r} must be a non-empty list of token ids")
        if not (isinstance(r, list) and r and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and math.isfinite(v) for v in r)):
            raise FileFormatError(f"{path}: prompts[{i}].rewards must be a non-empty list of finite numbers")
        key = _prompt_key(ids, pad)
        if key in table:
            raise FileFormatError(f"{path}: prompts[{i}] repeats the prompt {rec.get('prompt', key)!r}")
        table[key] = np.asarray(r, np.float32)
        texts[key] = str(rec.get("prompt", ""))
    return pad, table, texts


def _parse_ctrl(spec: str) -> tuple[str, str, str, float]:
    name = f"ctrl:{spec}"
    usage = (f"online.reward={name!r} must be 'ctrl:<base reward>:<reference-rewards file>[,transform=<kind>]"
             f"[,t=<t>]', e.g. 'ctrl:lexicon:runs/ref_rewards.json,t=4' (kind one of {RW.CTRL_TRANSFORMS})")
    head, opts = spec, {}
    while True:  # trailing key=value options
        rest, sep, last = head.rpartition(",")
        if not sep or "=" not in last:
            break
        k, _, v = last.partition("=")
        k = k.strip()
        if k not in ("transform", "t"):
            raise _bad(f"online.reward={name!r}: unknown option {k!r} (valid: 'transform', 't')")
        if k in opts:
            raise _bad(f"online.reward={name!r}: option {k!r} given twice")
        opts[k] = v.strip()
        head = rest
    base, sep, path = head.rpartition(":")
    if not sep or not base.strip() or not path.strip():
        raise _bad(usage)
    base, path = base.strip(), path.strip()
    if base.startswith("ctrl:") or base == "ctrl":
        raise _bad(f"online.reward={name!r}: the base reward cannot itself be a 'ctrl:' reward")
    kind = opts.get("transform", "exp")
    if kind not in RW.CTRL_TRANSFORMS:
        raise _bad(f"online.reward={name!r}: transform={kind!r} must be one of {RW.CTRL_TRANSFORMS}")
    t_txt = opts.get("t", "4")
    try:
        t = float(t_txt)
    except ValueError:
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise _bad(f"online.reward={name!r}: t={t_txt!r} must be a finite number > 0")
    return base, path, kind, t


class CalibratedReward:
    """CTRL's reward Φ(C) of a base reward calibrated against per-prompt reference rewards (module docstring).

    ``CalibratedReward(spec)`` with ``spec = "<base>:<file>[,transform=<kind>][,t=<t>]"`` (the part after
    ``ctrl:``); called as a reward function it returns ``{"reward": Φ(C) [N], "raw": r [N], "calibrated": C [N]}``.
    """

    def __init__(self, spec: str):
        self.name = f"ctrl:{spec}"
        self.base, self.path, self.kind, self.t = _parse_ctrl(spec)
        try:
            self.fn = get_reward(self.base)
        except UserError as e:
            raise _bad(f"online.reward={self.name!r}: base reward: {e}") from None
        self.pad_id, self.table, self.texts = load_reference_rewards(self.path)

    def check_kwargs(self, kwargs: Mapping) -> None:
        """``online.reward_kwargs`` are the base reward's arguments: checked against it."""
        check_reward(self.base, dict(kwargs))

    def reference(self, prompt_ids) -> list[np.ndarray]:
        """The reference rewards of each row's prompt (a :class:`~jalign.errors.UserError` for a prompt that is
        not in the file)."""
        out = []
        for row in np.asarray(prompt_ids):
            key = _prompt_key(row, self.pad_id)
            if key not in self.table:
                text = decode_completion(np.asarray(key), np.ones(len(key), bool)) if key else ""
                raise UserError(f"config online.reward={self.name!r}: the prompt {text!r} (token ids {list(key)[:12]}"
                                f"{' …' if len(key) > 12 else ''}) is not in the reference-rewards file {self.path} "
                                f"({len(self.table)} prompts); write the file for the training prompts")
            out.append(self.table[key])
        return out

    def __call__(self, prompt_ids, completion_ids, completion_mask, **kwargs) -> dict[str, np.ndarray]:
        r = np.asarray(self.fn(prompt_ids, completion_ids, completion_mask, **kwargs), np.float32)
        n = np.shape(completion_ids)[0]
        if r.shape != (n,):
            raise ValueError(f"reward {self.base!r} returned shape {r.shape}, expected ({n},)")
        refs = self.reference(prompt_ids)
        c = np.empty(n, np.float32)
        for m in sorted({len(x) for x in refs}):  # rows whose references have m samples: one call
            rows = np.array([i for i, x in enumerate(refs) if len(x) == m])
            c[rows] = np.asarray(RW.calibrate(r[rows], np.stack([refs[i] for i in rows])), np.float32)
        phi = np.asarray(RW.ctrl_transform(c, self.kind, self.t), np.float32)
        return {"reward": phi, "raw": r, "calibrated": c}


@register_reward_resolver("ctrl")
def ctrl_reward(spec: str) -> CalibratedReward:
    """``ctrl:<base>:<file>[,transform=<kind>][,t=<t>]``: a :class:`CalibratedReward` (module docstring)."""
    return CalibratedReward(spec)

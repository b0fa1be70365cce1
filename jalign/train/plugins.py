"""Registry entries for the real pieces: :mod:`jalign.models` transformers and :mod:`jalign.data` pipelines.

Models (``model.name``; ``model.kwargs`` are passed on):

* ``small_lm``: the pretrained 0.86M-parameter byte-level GPT-2 (:func:`jalign.models.load_small_lm`);
  kwargs are ``ModelConfig`` overrides (e.g. ``dtype="bfloat16"``).
* ``pretrained``: ``path=`` a Hugging Face GPT-2 / Llama / Qwen2 safetensors directory
  (:func:`jalign.models.load_pretrained`), plus ``ModelConfig`` overrides.
* ``causal_lm``: a freshly initialised :class:`jalign.models.CausalLM`; kwargs are ``ModelConfig`` fields
  (``arch``, ``d_model``, ``n_layers``, …), initialised from the run's ``seed``.

Data (``data.name``; built-in data sets of :mod:`jalign.data.builtin` through the grain pipeline of
:func:`jalign.data.pipeline.make_dataset`, byte tokenizer):

* ``builtin_pairwise``: pairwise batches ``chosen_*`` / ``rejected_*`` (the pipeline's field names are the
  trainer's already);
* ``builtin_sft``: the *chosen* response of each pair as an SFT batch ``ids``, ``mask``, ``attention_mask``;
* ``builtin_prompts``: only the prompts, **left-padded** to ``max_prompt_len`` (``prompt_ids``,
  ``prompt_attention_mask``) for online sampling;
* ``builtin_scored``: the same pairs as a *scored* batch for offline policy-gradient losses (CoPG): ``ids`` /
  ``mask`` / ``attention_mask`` ``[B, 2, T]`` (sample 0 = the pair's first response, sample 1 = its second)
  and ``rewards [B, 2]``, each response scored on its own by the registered reward ``reward`` (default
  ``lexicon``) on its decoded bytes. The preference label is not used: CoPG's loss is symmetric in the two
  samples, so the pair is unranked (offline CoPG trains on exactly DPO's / IPO's pairs, with rewards).

kwargs: ``dataset`` (a :func:`jalign.data.builtin.names` entry of the pairwise kind, default
``sentiment_pairs``), ``n`` / ``data_seed`` (size and generator seed of the data set), ``max_prompt_len``
(the response budget is ``data.seq_len - max_prompt_len``). The batch order is shuffled with the run's
``seed``. Adapter conventions (see :class:`GrainBatchSource`): the pipeline right-pads ``[BOS] prompt
response [EOS]`` with a response mask aligned with ``ids``, which is the trainer's convention; the model
derives positions from the attention mask, so left-padded prompts (online) and right-padded sequences give the
same log-probs as unpadded ones.

Rewards (``online.reward``): ``lexicon`` — the sentiment lexicon scorer of :mod:`jalign.data.builtin`
(:func:`~jalign.data.builtin.lexicon_reward`, in (−1, 1)) on the decoded completion bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import numpy as np

from jalign.tokenizers import ByteTokenizer
from jalign.train.registry import register_data, register_model, register_reward

# ---------------------------------------------------------------------------------------------------------
# Models


@register_model("small_lm")
def _small_lm(*, seed: int, **overrides):
    from jalign.models import load_small_lm

    del seed  # pretrained weights
    return load_small_lm(**overrides)


@register_model("pretrained")
def _pretrained(*, seed: int, path: str, **overrides):
    from jalign.models import load_pretrained

    del seed
    return load_pretrained(path, **overrides)


@register_model("causal_lm")
def _causal_lm(*, seed: int, **config):
    from jalign.models import ModelConfig, create_model

    return create_model(ModelConfig(**config), seed=seed)


def is_causal_lm(model) -> bool:
    """Whether ``model`` is a :class:`jalign.models.CausalLM` (it then gets the KV-cache sampler online)."""
    from jalign.models import CausalLM

    return isinstance(model, CausalLM)


# ---------------------------------------------------------------------------------------------------------
# Data

PAIRWISE_FIELDS = tuple(f"{s}_{f}" for s in ("chosen", "rejected") for f in ("ids", "mask", "attention_mask"))


def to_sft(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pairwise batch -> SFT batch on the chosen responses (``chosen_ids`` -> ``ids`` etc.)."""
    return {f: batch[f"chosen_{f}"] for f in ("ids", "mask", "attention_mask")}


def to_prompts(batch: Mapping[str, np.ndarray], max_prompt_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Left-padded prompts ``[B, max_prompt_len]`` from a right-padded pipeline batch.

    Row b's prompt is ``chosen_ids[b, :prompt_lengths[b]]`` (``[BOS] prompt``, truncated from the left by the
    pipeline); it is placed at the right end so that sampled tokens follow it directly.
    """
    ids = np.asarray(batch["chosen_ids"])
    p_len = np.asarray(batch["prompt_lengths"])
    out = np.full((ids.shape[0], max_prompt_len), pad_id, np.int32)
    att = np.zeros((ids.shape[0], max_prompt_len), np.int32)
    for b, n in enumerate(p_len):
        n = int(n)
        if n == 0 or n > max_prompt_len:
            raise ValueError(f"row {b}: prompt length {n} not in [1, max_prompt_len={max_prompt_len}]")
        out[b, max_prompt_len - n:] = ids[b, :n]
        att[b, max_prompt_len - n:] = 1
    return {"prompt_ids": out, "prompt_attention_mask": att}


class GrainBatchSource:
    """The trainer's batch-source interface over a :mod:`jalign.data.pipeline` grain iterator.

    ``next()`` returns ``adapt(pipeline batch)`` (only the fields the trainer needs, with its names) plus any
    fields added by :meth:`add_fields`; ``get_state()`` / ``set_state()`` are the grain iterator's
    (``{"next_index": k}``, JSON), so a checkpoint resumes exactly where the iterator was.

    Args:
      dataset: the grain ``IterDataset`` (one process's shard; its batch size is the process-local one).
      adapt: batch -> trainer batch.
    """

    def __init__(self, dataset, adapt: Callable[[dict], dict]):
        self._it = iter(dataset)
        self._adapt = adapt
        self._extra: list[Callable] = []

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        out = self._adapt(next(self._it))
        for fn in self._extra:
            out.update({k: np.asarray(v) for k, v in fn(out).items()})
        return out

    def add_fields(self, fn: Callable[[dict], dict]) -> None:
        """Add fields ``fn(batch) -> {name: [B, ...]}`` to every batch (e.g. reference log-probs from the
        initial model, :func:`jalign.train.reference.make_reference_fn`; computed per batch when it is drawn,
        which equals precomputing them per example)."""
        self._extra.append(fn)

    def get_state(self) -> dict:
        return copy.deepcopy(self._it.get_state())

    def set_state(self, state: Mapping) -> None:
        self._it.set_state(dict(state))


def to_scored(batch: Mapping[str, np.ndarray], reward_fn: Callable, prompts: Mapping[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
    """Pairwise batch -> scored batch ``[B, 2, T]`` + ``rewards [B, 2]`` (``reward_fn`` on each response)."""
    out = {f: np.stack([batch[f"chosen_{f}"], batch[f"rejected_{f}"]], axis=1) for f in ("ids", "mask",
                                                                                         "attention_mask")}
    r = [np.asarray(reward_fn(prompts["prompt_ids"], batch[f"{s}_ids"], batch[f"{s}_mask"]), np.float32)
         for s in ("chosen", "rejected")]
    out["rewards"] = np.stack(r, axis=1)
    if not np.isfinite(out["rewards"]).all():
        row = int(np.argwhere(~np.isfinite(out["rewards"]).all(1))[0, 0])
        raise ValueError(f"builtin_scored: the reward of row {row} is not finite")
    return out


def _builtin_source(adapt_name: str, *, batch_size, seq_len, seed, process_index, process_count,
                    dataset, n, data_seed, max_prompt_len, reward="lexicon"):
    from jalign.data import builtin
    from jalign.data.pipeline import make_dataset

    if batch_size % process_count:
        raise ValueError(f"data.batch_size={batch_size} is not divisible by process_count={process_count}")
    if not 1 <= max_prompt_len < seq_len:
        raise ValueError(f"data.kwargs.max_prompt_len={max_prompt_len} must be in [1, data.seq_len={seq_len})")
    kind = builtin.card(dataset).kind
    if kind != "pairwise":
        raise ValueError(f"data.kwargs.dataset={dataset!r} is a {kind} data set; builtin_{adapt_name} needs a "
                         f"pairwise one: {[m for m in builtin.names() if builtin.card(m).kind == 'pairwise']}")
    records = builtin.load(dataset, n=n, seed=data_seed)
    tok = ByteTokenizer()
    ds = make_dataset(records, kind="pairwise", tokenizer=tok, batch_size=batch_size // process_count,
                      max_prompt_len=max_prompt_len, max_response_len=seq_len - max_prompt_len, seed=seed,
                      num_epochs=None, shard_index=process_index, shard_count=process_count)
    adapt = {
        "pairwise": lambda b: {f: b[f] for f in PAIRWISE_FIELDS},
        "sft": to_sft,
        "prompts": lambda b: to_prompts(b, max_prompt_len, tok.pad_id),
        "scored": lambda b: to_scored(b, _reward_fn(reward), to_prompts(b, max_prompt_len, tok.pad_id)),
    }[adapt_name]
    return GrainBatchSource(ds, adapt)


def _register_builtin(adapt_name: str):
    @register_data(f"builtin_{adapt_name}")
    def factory(*, batch_size, seq_len, seed, process_index=0, process_count=1, dataset: str = "sentiment_pairs",
                n: int | None = None, data_seed: int | None = None, max_prompt_len: int = 48):
        return _builtin_source(adapt_name, batch_size=batch_size, seq_len=seq_len, seed=seed,
                               process_index=process_index, process_count=process_count, dataset=dataset, n=n,
                               data_seed=data_seed, max_prompt_len=max_prompt_len)

    return factory


for _name in ("pairwise", "sft", "prompts"):
    _register_builtin(_name)


def _reward_fn(name: str) -> Callable:
    from jalign.train.registry import get_reward

    return get_reward(name)


@register_data("builtin_scored")
def _builtin_scored(*, batch_size, seq_len, seed, process_index=0, process_count=1, dataset: str = "sentiment_pairs",
                    n: int | None = None, data_seed: int | None = None, max_prompt_len: int = 48,
                    reward: str = "lexicon"):
    _reward_fn(reward)  # unknown reward names fail here, before any batch is drawn
    return _builtin_source("scored", batch_size=batch_size, seq_len=seq_len, seed=seed,
                           process_index=process_index, process_count=process_count, dataset=dataset, n=n,
                           data_seed=data_seed, max_prompt_len=max_prompt_len, reward=reward)


# ---------------------------------------------------------------------------------------------------------
# Rewards


def decode_completion(ids: np.ndarray, mask: np.ndarray) -> str:
    """Text of a byte-tokenizer completion: the masked tokens, special ids (PAD/BOS/EOS) dropped."""
    toks = [int(t) for t, m in zip(ids, mask, strict=True) if m and t < 256]
    return bytes(toks).decode("utf-8", errors="replace")


@register_reward("lexicon")
def lexicon(prompt_ids, completion_ids, completion_mask) -> np.ndarray:
    """Sentiment of each completion by the built-in lexicon scorer (:func:`jalign.data.builtin.lexicon_reward`)."""
    from jalign.data.builtin import lexicon_reward

    ids, mask = np.asarray(completion_ids), np.asarray(completion_mask)
    return np.asarray([lexicon_reward(decode_completion(i, m)) for i, m in zip(ids, mask, strict=True)],
                      np.float32)

"""Data-source plug-ins over jalign's built-in data (``data.name``; ``data.kwargs`` are passed on).

Built-in preference data sets of :mod:`jalign.data.builtin` through the grain pipeline of
:func:`jalign.data.pipeline.make_dataset`, byte tokenizer:

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

* ``builtin_unpaired`` — a built-in pairwise set split into desirable (chosen) and undesirable (rejected)
  examples, so unpaired losses run on the same data as the pairwise ones.
* ``text_windows`` — language-model pretraining (``mode="sft"``): random windows of ``data.seq_len`` tokens
  of the offline text of :mod:`jalign.data.text` (every position after the first is scored), and held-out
  windows for the evaluation probe (``eval.every``). kwargs: ``sources``, ``n_template``, ``val_fraction``.

Users' own files: :mod:`jalign.train.plugins.files`; the tiny test data: :mod:`jalign.train.plugins.tiny`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping

import numpy as np

from jalign.data import builtin, text
from jalign.data.pipeline import check_truncation, make_dataset
from jalign.errors import UserError
from jalign.tokenizers import ByteTokenizer
from jalign.train.batch import (
    check_sizes,
    pairwise,
    pairwise_to_unpaired,
    to_prompts,
    to_scored,
    to_sft,
    to_unpaired,
)
from jalign.train.plugins.registry import get_reward, register_data

log = logging.getLogger(__name__)


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


def pipeline_dataset(records, kind, tok, *, batch_size, seq_len, seed, process_index, process_count,
                     max_prompt_len, where="data", allow_repeat=False, **kw):
    """The grain pipeline of ``records`` for one process: process-local batches of a global ``batch_size``,
    prompts of at most ``max_prompt_len`` tokens, responses of at most ``seq_len - max_prompt_len``, shuffled
    with ``seed``, repeated without end (:func:`jalign.data.pipeline.make_dataset`).

    Fewer records than one batch (each batch would repeat records) is a :class:`~jalign.errors.UserError`
    naming ``where`` and the counts, unless ``allow_repeat`` (then a warning)."""
    if len(records) < batch_size:
        msg = (f"{where}: {len(records)} {kind} record(s) cannot fill one batch of data.batch_size={batch_size}; "
               "every batch would repeat records")
        if not allow_repeat:
            raise UserError(f"{msg}. Use more data or a smaller data.batch_size (or data.kwargs.allow_repeat=True)")
        log.warning("%s (data.kwargs.allow_repeat=True)", msg)
    return make_dataset(records, kind=kind, tokenizer=tok, batch_size=batch_size // process_count,
                        max_prompt_len=max_prompt_len, max_response_len=seq_len - max_prompt_len, seed=seed,
                        num_epochs=None, shard_index=process_index, shard_count=process_count, **kw)


def _checked(records, kind, tok, *, dataset, seq_len, max_prompt_len):
    """Truncation of a built-in data set measured and logged before training (record i is "line" i + 1);
    pairs it makes identical refuse the run (:func:`jalign.data.pipeline.check_truncation`)."""
    kept, _ = check_truncation(list(enumerate(records, start=1)), kind=kind, tokenizer=tok,
                               max_prompt_len=max_prompt_len, max_response_len=seq_len - max_prompt_len,
                               path=f"builtin:{dataset}")
    return kept


def _builtin_source(adapt_name: str, *, batch_size, seq_len, seed, process_index, process_count,
                    dataset, n, data_seed, max_prompt_len, reward="lexicon"):
    check_sizes(f"builtin_{adapt_name}", batch_size=batch_size, seq_len=seq_len, max_prompt_len=max_prompt_len,
                process_count=process_count)
    kind = builtin.card(dataset).kind
    if kind != "pairwise":
        raise ValueError(f"data.kwargs.dataset={dataset!r} is a {kind} data set; builtin_{adapt_name} needs a "
                         f"pairwise one: {[m for m in builtin.names() if builtin.card(m).kind == 'pairwise']}")
    tok = ByteTokenizer()
    records = _checked(builtin.load(dataset, n=n, seed=data_seed), "pairwise", tok, dataset=dataset, seq_len=seq_len,
                       max_prompt_len=max_prompt_len)
    ds = pipeline_dataset(records, "pairwise", tok, batch_size=batch_size, seq_len=seq_len, seed=seed,
                          process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                          where=f"builtin:{dataset}")
    adapt = {
        "pairwise": pairwise,
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
    return get_reward(name)


@register_data("builtin_scored")
def _builtin_scored(*, batch_size, seq_len, seed, process_index=0, process_count=1, dataset: str = "sentiment_pairs",
                    n: int | None = None, data_seed: int | None = None, max_prompt_len: int = 48,
                    reward: str = "lexicon"):
    _reward_fn(reward)  # unknown reward names fail here, before any batch is drawn
    return _builtin_source("scored", batch_size=batch_size, seq_len=seq_len, seed=seed,
                           process_index=process_index, process_count=process_count, dataset=dataset, n=n,
                           data_seed=data_seed, max_prompt_len=max_prompt_len, reward=reward)


@register_data("builtin_unpaired")
def _builtin_unpaired(*, batch_size, seq_len, seed, process_index=0, process_count=1,
                      dataset: str = "sentiment_pairs", n: int | None = None, data_seed: int | None = None,
                      max_prompt_len: int = 48, kl_pairs: bool = True):
    check_sizes("builtin_unpaired", batch_size=batch_size, seq_len=seq_len, max_prompt_len=max_prompt_len,
                process_count=process_count)
    kind = builtin.card(dataset).kind
    if kind != "pairwise":
        raise ValueError(f"data.kwargs.dataset={dataset!r} is a {kind} data set; builtin_unpaired splits a "
                         f"pairwise one: {[m for m in builtin.names() if builtin.card(m).kind == 'pairwise']}")
    records = _checked(pairwise_to_unpaired(builtin.load(dataset, n=n, seed=data_seed)), "unpaired", ByteTokenizer(),
                       dataset=dataset, seq_len=seq_len, max_prompt_len=max_prompt_len)
    ds = pipeline_dataset(records, "unpaired", ByteTokenizer(), batch_size=batch_size, seq_len=seq_len, seed=seed,
                          process_index=process_index, process_count=process_count, max_prompt_len=max_prompt_len,
                          kl_pairs=kl_pairs, where=f"builtin:{dataset}")
    return GrainBatchSource(ds, to_unpaired)


class TextWindowSource:
    """Random windows of a token stream as SFT batches (language-model pretraining); resumable.

    Batch ``k`` (counted from 0) holds the global rows drawn by ``default_rng([seed, k])`` (uniform window
    starts, :func:`jalign.data.text.sample_windows`); this process receives its slice of them. Fields:
    ``ids`` ``[b, seq_len]``, ``mask`` and ``attention_mask`` all ones (every token after the first is
    predicted: the SFT objective is the mean next-token cross-entropy). The state is ``{"batch": k}``.
    :meth:`eval_batches` gives fixed windows of the held-out stream.
    """

    def __init__(self, train_ids: np.ndarray, val_ids: np.ndarray, *, batch_size: int, seq_len: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if batch_size % process_count:
            raise ValueError(f"text_windows: data.batch_size={batch_size} is not divisible by process_count="
                             f"{process_count}")
        for name, stream in (("training", train_ids), ("held-out", val_ids)):
            if len(stream) <= seq_len:
                raise ValueError(f"text_windows: the {name} text has {len(stream)} tokens, too few for windows of "
                                 f"data.seq_len={seq_len}")
        self.train_ids, self.val_ids = train_ids, val_ids
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.process_index, self.process_count = process_index, process_count
        self._k = 0

    def _fields(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        ones = np.ones(rows.shape, np.int32)
        return {"ids": rows.astype(np.int32), "mask": ones, "attention_mask": ones.copy()}

    def _local(self, rows: np.ndarray) -> np.ndarray:
        b = self.batch_size // self.process_count
        return rows[self.process_index * b:(self.process_index + 1) * b]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rows = text.sample_windows(self.train_ids, self.batch_size, self.seq_len,
                                   np.random.default_rng([self.seed, self._k]))
        self._k += 1
        return self._fields(self._local(rows))

    def eval_batches(self, n: int) -> list[dict[str, np.ndarray]]:
        """``n`` fixed batches of held-out windows (batch i drawn by ``default_rng([1000, i])``)."""
        return [self._fields(self._local(text.sample_windows(self.val_ids, self.batch_size, self.seq_len,
                                                             np.random.default_rng([1000, i]))))
                for i in range(n)]

    def get_state(self) -> dict:
        return {"batch": self._k}

    def set_state(self, state: Mapping) -> None:
        if set(state) != {"batch"}:
            raise ValueError(f"text_windows state must have the key 'batch'; got {sorted(state)}")
        self._k = int(state["batch"])


@register_data("text_windows")
def _text_windows(*, batch_size, seq_len, seed, process_index=0, process_count=1,
                  sources: tuple[str, ...] = text.SOURCES, n_template: int = 0, val_fraction: float = 0.05):
    docs = text.corpus_documents(tuple(sources), int(n_template), int(seed))
    train_ids, val_ids = text.encode_corpus(docs, float(val_fraction))
    return TextWindowSource(train_ids, val_ids, batch_size=batch_size, seq_len=seq_len, seed=seed,
                            process_index=process_index, process_count=process_count)

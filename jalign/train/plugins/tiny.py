"""The tiny plug-ins: a tiny causal LM (model ``tiny``), an in-memory batch source and synthetic data
(``synthetic_pairwise``, ``synthetic_sft``, ``synthetic_prompts``) — the base config's defaults, for tests and
demos that run in seconds. They fix the trainer's two plug-in interfaces, which the real transformer
(``jalign.models``) and the grain pipelines (``jalign.data``) implement too:

* **model**: a Flax NNX module called as ``model(ids_BxT, attention_mask=mask_BxT)`` returning logits
  ``[B, T, V]`` or an object with ``.logits``;
* **batch source**: an iterator of numpy dicts (the *process-local* rows of each global batch) with
  ``get_state() -> JSON-serialisable`` and ``set_state(state)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jalign.tokenizers import ByteTokenizer
from jalign.train.plugins.registry import register_data, register_model


class TinyLM(nnx.Module):
    """A minimal causal LM: embedding, a causal masked running mean of the context, a GELU MLP, unembedding.

    ``h_t = E[x_t]``, ``c_t = Σ_{s≤t} m_s h_s / max(1, Σ_{s≤t} m_s)`` (m = attention mask),
    ``logits_t = W_out · gelu(W_1 [h_t; c_t] + b_1)``. Causal by construction (``c_t`` only sees s ≤ t)
    and padding-aware (masked positions never enter ``c``). Not a transformer; it only fixes the interface.
    """

    def __init__(self, vocab_size: int = ByteTokenizer.vocab_size, d_model: int = 16, d_hidden: int = 32,
                 *, rngs: nnx.Rngs):
        self.vocab_size = vocab_size
        self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        self.mlp = nnx.Linear(2 * d_model, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, vocab_size, rngs=rngs)

    def __call__(self, ids_BxT, attention_mask=None):
        ids_BxT = jnp.asarray(ids_BxT)
        if attention_mask is None:
            attention_mask = jnp.ones(ids_BxT.shape, jnp.float32)
        m_BxTx1 = jnp.asarray(attention_mask, jnp.float32)[..., None]
        h_BxTxD = self.embed(ids_BxT)
        c_BxTxD = jnp.cumsum(h_BxTxD * m_BxTx1, axis=1) / jnp.maximum(jnp.cumsum(m_BxTx1, axis=1), 1.0)
        z = jax.nn.gelu(self.mlp(jnp.concatenate([h_BxTxD, c_BxTxD], axis=-1)))
        return self.out(z)


def tiny_lm(seed: int = 0, **kwargs) -> TinyLM:
    """``TinyLM(**kwargs)`` initialised from ``seed``."""
    return TinyLM(**kwargs, rngs=nnx.Rngs(seed))


# ----------------------------------------------------------------------------------------------------------
# In-memory batch source


class InMemoryBatchSource:
    """Batches of a fixed list of examples, reshuffled every epoch by seed; resumable.

    Each global batch holds ``batch_size`` examples; this process receives rows
    ``[process_index·b, (process_index+1)·b)`` of it, ``b = batch_size / process_count`` (per-process data
    sharding). The state ``{"epoch", "position"}`` is JSON-serialisable; ``set_state(get_state())`` resumes
    exactly where the iterator was. Incomplete final batches of an epoch are dropped.

    Args:
      examples: a list of dicts of equally shaped numpy arrays (one example each).
      batch_size: global batch size.
      seed: shuffling seed (epoch e uses the permutation of ``default_rng([seed, e])``); ``shuffle=False``
        keeps the order.
      process_index, process_count: this process's slice of each global batch.
    """

    def __init__(self, examples: Sequence[Mapping[str, np.ndarray]], batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, process_index: int = 0, process_count: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if batch_size % process_count:
            raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
        if len(examples) < batch_size:
            raise ValueError(f"{len(examples)} examples cannot fill one batch of batch_size={batch_size}")
        keys = set(examples[0])
        for i, ex in enumerate(examples):
            if set(ex) != keys:
                raise ValueError(f"example {i} has fields {sorted(ex)}, expected {sorted(keys)}")
        self._data = {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in sorted(keys)}
        self.num_examples = len(examples)
        self.batch_size = batch_size
        self.seed, self.shuffle = seed, shuffle
        self.process_index, self.process_count = process_index, process_count
        self._state = {"epoch": 0, "position": 0}

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, pos = self._state["epoch"], self._state["position"]
        if pos + self.batch_size > self.num_examples:
            epoch, pos = epoch + 1, 0
        idx = self._order(epoch)[pos: pos + self.batch_size]
        local = self.batch_size // self.process_count
        idx = idx[self.process_index * local: (self.process_index + 1) * local]
        self._state = {"epoch": epoch, "position": pos + self.batch_size}
        return {k: v[idx] for k, v in self._data.items()}

    def add_fields(self, fn) -> None:
        """Add per-example fields ``fn(all stacked examples) -> {name: [N, ...]}`` (e.g. cached reference
        log-probs, :mod:`jalign.train.reference`)."""
        new = fn(dict(self._data))
        for k, v in new.items():
            v = np.asarray(v)
            if v.shape[:1] != (self.num_examples,):
                raise ValueError(f"added field {k!r} has shape {v.shape}; expected leading {self.num_examples}")
            self._data[k] = v

    def get_state(self) -> dict:
        return copy.deepcopy(self._state)

    def set_state(self, state: Mapping) -> None:
        if set(state) != {"epoch", "position"}:
            raise ValueError(f"InMemoryBatchSource state must have keys epoch, position; got {sorted(state)}")
        self._state = {"epoch": int(state["epoch"]), "position": int(state["position"])}


# ----------------------------------------------------------------------------------------------------------
# Synthetic examples (byte tokenizer, BOS prompt response EOS, right padding)

_POS = ["good", "great", "kind", "happy", "calm", "bright"]
_NEG = ["bad", "awful", "rude", "sad", "dull", "grim"]
_TOPICS = ["the day", "my cat", "this film", "the food", "our trip", "the book"]


def _pad(ids: list[int], mask: list[int], seq_len: int, what: str) -> dict[str, np.ndarray]:
    tok = ByteTokenizer()
    if len(ids) > seq_len:
        raise ValueError(f"{what}: {len(ids)} tokens exceed seq_len={seq_len}")
    n = len(ids)
    pad = seq_len - n
    return {
        "ids": np.asarray(ids + [tok.pad_id] * pad, np.int32),
        "mask": np.asarray(mask + [0] * pad, np.int32),
        "attention_mask": np.asarray([1] * n + [0] * pad, np.int32),
    }


def synthetic_pairwise_examples(n: int, seq_len: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Sentiment-style preference pairs: the chosen response uses a positive word, the rejected a negative one.

    Prompt ``"<topic> is"``, responses ``" <word>."``; encoded ``[BOS] prompt response [EOS]`` with the
    :class:`~jalign.tokenizers.ByteTokenizer`, right-padded to ``seq_len``.
    """
    rng = np.random.default_rng(seed)
    tok = ByteTokenizer()
    out = []
    for i in range(n):
        prompt = f"{_TOPICS[rng.integers(len(_TOPICS))]} is"
        c = _pad(*tok.encode_pair(prompt, f" {_POS[rng.integers(len(_POS))]}."), seq_len, f"example {i}")
        r = _pad(*tok.encode_pair(prompt, f" {_NEG[rng.integers(len(_NEG))]}."), seq_len, f"example {i}")
        out.append({f"chosen_{k}": v for k, v in c.items()} | {f"rejected_{k}": v for k, v in r.items()})
    return out


def synthetic_sft_examples(n: int, seq_len: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Prompt/response demonstrations (positive responses only), fields ``ids``, ``mask``, ``attention_mask``."""
    return [{k.removeprefix("chosen_"): v for k, v in ex.items() if k.startswith("chosen_")}
            for ex in synthetic_pairwise_examples(n, seq_len, seed)]


def synthetic_prompt_examples(n: int, prompt_len: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Prompts only, *left*-padded to ``prompt_len`` (fields ``prompt_ids``, ``prompt_attention_mask``)."""
    rng = np.random.default_rng(seed)
    tok = ByteTokenizer()
    out = []
    for i in range(n):
        ids = tok.encode(f"{_TOPICS[rng.integers(len(_TOPICS))]} is", add_bos=True)
        if len(ids) > prompt_len:
            raise ValueError(f"example {i}: prompt of {len(ids)} tokens exceeds prompt_len={prompt_len}")
        pad = prompt_len - len(ids)
        out.append({"prompt_ids": np.asarray([tok.pad_id] * pad + ids, np.int32),
                    "prompt_attention_mask": np.asarray([0] * pad + [1] * len(ids), np.int32)})
    return out


# ----------------------------------------------------------------------------------------------------------
# Registry entries


@register_model("tiny")
def _tiny(*, seed: int, vocab_size: int = 259, d_model: int = 16, d_hidden: int = 32):
    return tiny_lm(seed, vocab_size=vocab_size, d_model=d_model, d_hidden=d_hidden)


def _source(examples, batch_size, seed, process_index, process_count):
    return InMemoryBatchSource(examples, batch_size, seed=seed, process_index=process_index,
                               process_count=process_count)


@register_data("synthetic_pairwise")
def _pairwise(*, batch_size, seq_len, seed, process_index=0, process_count=1, num_examples: int = 256,
              data_seed: int | None = None):
    """``data_seed`` (default: the run's seed) draws the examples, e.g. another one for held-out pairs."""
    data_seed = seed if data_seed is None else data_seed
    return _source(synthetic_pairwise_examples(num_examples, seq_len, data_seed), batch_size, seed, process_index,
                   process_count)


@register_data("synthetic_sft")
def _sft(*, batch_size, seq_len, seed, process_index=0, process_count=1, num_examples: int = 256):
    return _source(synthetic_sft_examples(num_examples, seq_len, seed), batch_size, seed, process_index,
                   process_count)


@register_data("synthetic_prompts")
def _prompts(*, batch_size, seq_len, seed, process_index=0, process_count=1, num_examples: int = 64,
             prompt_len: int = 16):
    return _source(synthetic_prompt_examples(num_examples, prompt_len, seed), batch_size, seed, process_index,
                   process_count)

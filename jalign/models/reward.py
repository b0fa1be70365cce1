"""Reward models and value heads: a transformer trunk with a linear score head (Hugging Face's
``*ForSequenceClassification`` layout).

A :class:`RewardModel` is the trunk of :class:`jalign.models.CausalLM` (embeddings, blocks, final norm; the
same parameter names) plus ``score`` ``[D, num_labels]``, a linear layer without bias applied to the final
hidden state of every position (the *token scores*, ``[B, T, num_labels]``; with ``num_labels=1`` the per-token
value head of PPO). The sequence's score is the token score of its **last non-padding token**: the rightmost
position where the mask is 1 (:func:`last_token_index`), so left- and right-padded rows score like the
unpadded sequences. Hugging Face pools the same position, finding it from ``input_ids != pad_token_id``; pass
``mask_BxT = ids != pad_id`` for exactly that rule (they agree whenever no real token equals the pad id).

Checkpoints: :func:`jalign.models.load_reward_model` / :func:`jalign.models.save_pretrained` read and write
``GPT2ForSequenceClassification``, ``LlamaForSequenceClassification`` and ``Qwen2ForSequenceClassification``
(``score.weight`` ``[num_labels, D]``). :func:`reward_model_from_causal_lm` starts a reward model from a
causal LM (e.g. an SFT policy) with a fresh head, as TRL's ``RewardTrainer`` does.

:class:`RewardEnsemble` scores prompt + completion pairs with one or several reward models and combines them
with :func:`jalign.rewards.ensemble` (mean, min, mean − k·std) into one reward.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jalign import rewards as reward_math
from jalign.models.config import ModelConfig
from jalign.models.layers import _param
from jalign.models.transformer import CausalLM, Decoder, check_token_ids, init_on_host

Array = jax.Array


@struct.dataclass
class RewardModelOutput:
    """``scores`` ``[B, num_labels]`` float32 (the last non-padding token's), ``token_scores``
    ``[B, T, num_labels]`` float32 (every position; meaningless at padding), ``hidden_states`` ``[B, T, D]``
    (after the final norm) or None."""

    scores: Array
    token_scores: Array
    hidden_states: Array | None = None


def last_token_index(mask_BxT: Array | None, T: int | None = None) -> Array:
    """Index ``[B]`` of the rightmost position with ``mask == 1`` (0 for a row without any; ``T - 1`` for every
    row when ``mask_BxT`` is None) — Hugging Face's ``(arange(T) · mask).argmax(-1)``."""
    if mask_BxT is None:
        return jnp.full((), T - 1, jnp.int32)
    m = jnp.asarray(mask_BxT) != 0
    return jnp.argmax(jnp.arange(m.shape[-1], dtype=jnp.int32) * m, axis=-1).astype(jnp.int32)


class RewardModel(Decoder):
    """A transformer trunk with a linear score head. ``model(ids_BxT, mask_BxT=None)`` →
    :class:`RewardModelOutput`.

    Args (of ``__init__``):
      cfg: the trunk's :class:`~jalign.models.ModelConfig` (``tie_embeddings`` only matters for export: no
        unembedding is built).
      num_labels: width of the head (1 for a reward model / value head).

    Args (of ``__call__``): ``ids_BxT``, ``mask_BxT`` (1 = real token, either side padded), ``positions_BxT``
    as for :class:`~jalign.models.CausalLM`; ``return_hidden`` also returns the final hidden states.
    """

    def __init__(self, cfg: ModelConfig, *, num_labels: int = 1, rngs: nnx.Rngs):
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ValueError(f"RewardModel: num_labels must be a positive int, got {num_labels!r}")
        super().__init__(cfg, rngs=rngs)
        self.num_labels = num_labels
        self.score = _param(rngs, (cfg.d_model, num_labels), ("embed", None), cfg)

    def __call__(self, ids_BxT: Array, mask_BxT: Array | None = None, positions_BxT: Array | None = None, *,
                 return_hidden: bool = False) -> RewardModelOutput:
        h, _ = self._hidden(ids_BxT, mask_BxT, positions_BxT, None)
        dt = self.cfg.compute_dtype
        token_scores = jnp.einsum("btd,dl->btl", h, self.score[...].astype(dt), preferred_element_type=jnp.float32)
        idx = jnp.broadcast_to(last_token_index(mask_BxT, h.shape[1]), (h.shape[0],))
        scores = jnp.take_along_axis(token_scores, idx[:, None, None], axis=1)[:, 0]
        return RewardModelOutput(scores=scores, token_scores=token_scores,
                                 hidden_states=h.astype(jnp.float32) if return_hidden else None)

    def _scalar_head(self, what: str) -> None:
        if self.num_labels != 1:
            raise ValueError(f"RewardModel.{what}: needs a scalar head (num_labels=1), this model has "
                             f"num_labels={self.num_labels}")

    def rewards(self, ids_BxT: Array, mask_BxT: Array | None = None) -> Array:
        """The scalar reward ``[B]`` of each sequence (its last non-padding token's score; ``num_labels=1``)."""
        self._scalar_head("rewards")
        return self(ids_BxT, mask_BxT).scores[:, 0]

    def values(self, ids_BxT: Array, mask_BxT: Array | None = None) -> Array:
        """The per-token value head ``[B, T]`` (the score of every position's hidden state; ``num_labels=1``)."""
        self._scalar_head("values")
        return self(ids_BxT, mask_BxT).token_scores[..., 0]


def create_reward_model(cfg: ModelConfig, *, num_labels: int = 1, seed: int = 0) -> RewardModel:
    """A freshly initialised :class:`RewardModel` (host init as :func:`jalign.models.create_model`; the head is
    normal(0, ``cfg.init_std``), as Hugging Face initialises ``score``)."""
    return init_on_host(lambda: RewardModel(cfg, num_labels=num_labels, rngs=nnx.Rngs(0)), cfg, seed)


def reward_model_from_causal_lm(lm: CausalLM, *, num_labels: int = 1, seed: int = 0,
                                init_std: float | None = None) -> RewardModel:
    """A :class:`RewardModel` with ``lm``'s trunk (its parameters, copied) and a fresh head drawn from
    normal(0, ``init_std`` or ``lm.cfg.init_std``) with ``numpy.random.default_rng(seed)``; ``lm``'s unembedding
    is dropped. The starting point of reward-model training from an SFT policy."""
    if not isinstance(lm, CausalLM):
        raise TypeError(f"reward_model_from_causal_lm: expected a jalign.models.CausalLM, got {type(lm).__name__}")
    cfg = lm.cfg
    std = cfg.init_std if init_std is None else float(init_std)
    src = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(lm, nnx.Param))}
    abstract = nnx.eval_shape(lambda: RewardModel(cfg, num_labels=num_labels, rngs=nnx.Rngs(0)))
    gd, st = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(st):
        name = ".".join(map(str, path))
        if name == "score":
            head = rng.standard_normal(var.shape, np.float32) * np.float32(std)
            var.set_value(jnp.asarray(head.astype(cfg.params_dtype)))
        else:
            var.set_value(jnp.array(src[name], copy=True))
    return nnx.merge(gd, st)


@functools.partial(nnx.jit, static_argnames=("return_hidden",))
def _score(model, ids_BxT, mask_BxT, positions_BxT, return_hidden):
    return model(ids_BxT, mask_BxT, positions_BxT, return_hidden=return_hidden)


def score(model: RewardModel, ids_BxT: Array, mask_BxT: Array | None = None, positions_BxT: Array | None = None, *,
          return_hidden: bool = False) -> RewardModelOutput:
    """``model(...)`` compiled with ``nnx.jit`` (ids are range-checked here, outside the jit)."""
    check_token_ids(ids_BxT, model.cfg.vocab_size, "ids_BxT")
    return _score(model, ids_BxT, mask_BxT, positions_BxT, return_hidden)


def join_prompt_completion(prompt_ids, prompt_mask, completion_ids, completion_mask):
    """``(ids, mask)`` ``[N, P + T]``: each prompt followed by its completion; the masks mark real tokens, so
    a left-padded prompt and a right-padded completion score like the unpadded sequence."""
    ids = np.concatenate([np.asarray(prompt_ids), np.asarray(completion_ids)], axis=1).astype(np.int32)
    mask = np.concatenate([np.asarray(prompt_mask) != 0, np.asarray(completion_mask) != 0], axis=1)
    return ids, mask.astype(np.int32)


class RewardEnsemble:
    """One or several scalar reward models used as one reward.

    ``ensemble(ids, mask)`` → ``[N]``: every member scores the sequences (last non-padding token) and the
    scores are combined by :func:`jalign.rewards.ensemble` (``mode`` = ``"mean"``, ``"min"`` or
    ``"mean_minus_std"`` with ``k`` and ``ddof``). Members must share the tokenizer (same ``vocab_size``).
    :meth:`members` returns the ``[M, N]`` member scores. Sequences are scored ``batch_size`` rows at a time.
    """

    def __init__(self, models: Sequence[RewardModel], mode: str = "mean", *, k: float = 1.0, ddof: int = 0,
                 batch_size: int = 64):
        models = list(models)
        if not models:
            raise ValueError("RewardEnsemble: no reward models")
        for i, m in enumerate(models):
            if not isinstance(m, RewardModel):
                raise TypeError(f"RewardEnsemble: member {i} is a {type(m).__name__}, not a RewardModel")
            if m.num_labels != 1:
                raise ValueError(f"RewardEnsemble: member {i} has num_labels={m.num_labels}; a reward needs a "
                                 "scalar head (num_labels=1)")
            if m.cfg.vocab_size != models[0].cfg.vocab_size:
                raise ValueError(f"RewardEnsemble: member {i} has vocab_size={m.cfg.vocab_size}, member 0 has "
                                 f"{models[0].cfg.vocab_size}; members must share a tokenizer")
        reward_math.ensemble(np.zeros((len(models), 1)), mode, k=k, ddof=ddof)  # validates mode, k, ddof
        if batch_size < 1:
            raise ValueError(f"RewardEnsemble: batch_size={batch_size} must be >= 1")
        self.models, self.mode, self.k, self.ddof, self.batch_size = models, mode, k, ddof, batch_size

    def members(self, ids_NxT, mask_NxT=None) -> np.ndarray:
        """Member scores ``[M, N]`` float32."""
        ids = np.asarray(ids_NxT)
        mask = np.ones(ids.shape, np.int32) if mask_NxT is None else np.asarray(mask_NxT)
        out = []
        for m in self.models:
            rows = [np.asarray(score(m, jnp.asarray(ids[i:i + self.batch_size]),
                                     jnp.asarray(mask[i:i + self.batch_size])).scores[:, 0])
                    for i in range(0, ids.shape[0], self.batch_size)]
            out.append(np.concatenate(rows) if rows else np.zeros((0,), np.float32))
        return np.stack(out).astype(np.float32)

    def __call__(self, ids_NxT, mask_NxT=None) -> np.ndarray:
        r = reward_math.ensemble(self.members(ids_NxT, mask_NxT), self.mode, k=self.k, ddof=self.ddof)
        return np.asarray(r, np.float32)

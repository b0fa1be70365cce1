"""Ranking-accuracy and over-optimisation probes (Chen et al., 2024; Shi et al., 2024) on the probe protocol.

* :class:`ranking_probe` — ranking accuracy of the policy on a fixed pairwise probe batch, summed and
  length-normalised (:func:`jalign.diagnostics.ranking_accuracy`); with reference log-probs also the
  reference's, and with preference probabilities and β the idealised ranking accuracy
  (:func:`jalign.diagnostics.idealized_ranking_accuracy`) and the alignment gap idealised − actual;
* :class:`topk_probe` — top-k mass and top-k entropy (:func:`jalign.diagnostics.topk_mass`,
  :func:`jalign.diagnostics.topk_entropy`) of the policy's next-token distributions along its own sampled
  completions of fixed prompts (fixed sampling key), the policy's mean token entropy there and, optionally, a
  reward of the same completions (a measure of their quality).

Both follow :mod:`jalign.train.probes.runner`: they read the state and never change it.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jalign import diagnostics as dg
from jalign.tokenizers import ByteTokenizer
from jalign.train.batch import PAIRWISE_FIELDS
from jalign.train.distributed import host_value
from jalign.train.online import make_kv_sampler, make_sampler, score
from jalign.train.plugins.models import is_causal_lm
from jalign.train.step import logits_fn, make_logps_fn


@functools.partial(jax.jit, static_argnums=(0,))
def _pair_logps(graphdef, params, model_state, batch):
    lp = make_logps_fn(graphdef, params, model_state)
    w, nw = lp(batch["chosen_ids"], batch["chosen_mask"], batch["chosen_attention_mask"])
    l, nl = lp(batch["rejected_ids"], batch["rejected_mask"], batch["rejected_attention_mask"])
    f = jnp.float32
    return w.astype(f), l.astype(f), nw.astype(f), nl.astype(f)


class ranking_probe:  # noqa: N801 - used like a function, as jalign.train.probes.logps_probe
    """Ranking accuracy (Chen et al., 2024) of the policy on a fixed pairwise probe batch, every ``every`` steps.

    With π the policy, the probe logs the strict ranking accuracy mean 1[ln π(y_w|x) > ln π(y_l|x)] on summed
    and on length-normalised (divided by the number of scored response tokens) log-probs. Where reference
    log-probs rp = ln π_ref(y|x) are available (batch fields ``ref_chosen_logps``/``ref_rejected_logps``, else
    the state's frozen reference parameters) it also logs the reference's accuracies, and with
    ``pref_probs`` p and ``beta`` the idealised ranking accuracy mean 1[rp_w − rp_l + logit(p)/β > 0] and the
    alignment gap = idealised − actual (summed) accuracy.

    Args:
      batch: a pairwise batch in the trainer's layout (``chosen_ids``/``_mask``/``_attention_mask`` and the
        same for ``rejected``, ``[B, T]``); optional ``ref_chosen_logps``/``ref_rejected_logps`` ``[B]``.
      every: evaluate every ``every`` updates (``0``: only at the start and the end).
      pref_probs: optional ``[B]`` preference probabilities p = P(y_w ≻ y_l) ∈ (0, 1); needs ``beta``.
      beta: β > 0 of the idealised ranking accuracy; needs ``pref_probs``.
      name: scalar prefix.

    Returns per call: ``chosen_logps``/``rejected_logps`` lists ``[B]`` and the scalars ``accuracy``,
    ``accuracy_normalized``; with a reference ``ref_accuracy``, ``ref_accuracy_normalized``; with p and β
    ``idealized_accuracy`` and ``alignment_gap``.

    Raises:
      ValueError: missing fields, inconsistent shapes, p outside (0, 1), β ≤ 0, p without β (or β without p),
        or p and β without any source of reference log-probs (at the first call).

    References:
      Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024
      (arXiv 2405.19534).
    """

    def __init__(self, batch: dict, *, every: int = 10, pref_probs=None, beta: float | None = None,
                 name: str = "ranking"):
        missing = [f for f in PAIRWISE_FIELDS if f not in batch]
        if missing:
            raise ValueError(f"ranking_probe: batch is missing field(s) {missing}")
        self.batch = {k: np.asarray(v) for k, v in batch.items()}
        B = self.batch["chosen_ids"].shape[0]
        has_ref = ["ref_chosen_logps" in batch, "ref_rejected_logps" in batch]
        if any(has_ref) and not all(has_ref):
            raise ValueError("ranking_probe: batch fields ref_chosen_logps and ref_rejected_logps must come together")
        if (pref_probs is None) != (beta is None):
            raise ValueError(f"ranking_probe: pref_probs and beta must be given together, got "
                             f"pref_probs={'None' if pref_probs is None else 'an array'}, beta={beta!r}")
        if pref_probs is not None:
            p = np.asarray(pref_probs, np.float64)
            if p.shape != (B,):
                raise ValueError(f"ranking_probe: pref_probs must have shape ({B},), got {p.shape}")
            if not np.all((p > 0) & (p < 1)):
                raise ValueError(f"ranking_probe: pref_probs must lie in the open interval (0, 1), got {p}")
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
                raise ValueError(f"ranking_probe: beta must be a finite number > 0, got {beta!r}")
            self.pref_probs, self.beta = p, float(beta)
        else:
            self.pref_probs = self.beta = None
        if int(every) < 0:
            raise ValueError(f"ranking_probe: every must be >= 0, got {every}")
        self.every, self.name = int(every), name
        self._pairs = {k: self.batch[k] for k in PAIRWISE_FIELDS}
        self._ref = None

    def _reference(self, graphdef, state):
        if "ref_chosen_logps" in self.batch:
            return (np.asarray(self.batch["ref_chosen_logps"], np.float32),
                    np.asarray(self.batch["ref_rejected_logps"], np.float32))
        if state.ref_params is not None:
            if self._ref is None:  # the reference is frozen: computed once
                w, l, _, _ = host_value(_pair_logps(graphdef, state.ref_params, state.model_state, self._pairs))
                self._ref = (np.asarray(w), np.asarray(l))
            return self._ref
        if self.pref_probs is not None:
            raise ValueError(f"probe {self.name!r}: the idealised ranking accuracy needs reference log-probs: give "
                             "the batch fields ref_chosen_logps/ref_rejected_logps or train with a frozen reference")
        return None

    def __call__(self, step, graphdef, state):
        w, l, nw, nl = (np.asarray(x) for x in host_value(
            _pair_logps(graphdef, state.params, state.model_state, self._pairs)))
        for what, x in (("chosen", w), ("rejected", l)):
            if not np.all(np.isfinite(x)):
                raise ValueError(f"ranking_probe {self.name!r}: non-finite {what} log-prob at pair "
                                 f"{int(np.argmax(~np.isfinite(x)))}")
        acc = float(dg.ranking_accuracy(w, l))
        out = {"chosen_logps": w, "rejected_logps": l, "accuracy": acc,
               "accuracy_normalized": float(dg.ranking_accuracy(w, l, chosen_lengths=np.maximum(nw, 1),
                                                                rejected_lengths=np.maximum(nl, 1)))}
        ref = self._reference(graphdef, state)
        if ref is not None:
            rw, rl = ref
            out["ref_accuracy"] = float(dg.ranking_accuracy(rw, rl))
            out["ref_accuracy_normalized"] = float(dg.ranking_accuracy(
                rw, rl, chosen_lengths=np.maximum(nw, 1), rejected_lengths=np.maximum(nl, 1)))
            if self.pref_probs is not None:
                ideal = float(dg.idealized_ranking_accuracy(rw, rl, self.pref_probs.astype(np.float32), self.beta))
                out["idealized_accuracy"] = ideal
                out["alignment_gap"] = ideal - acc
        return out


def _left_pad(prompts, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(prompts, dict):
        if "prompt_ids" not in prompts or "prompt_mask" not in prompts:
            raise ValueError("topk_probe: a prompts dict needs the fields prompt_ids and prompt_mask (left-padded)")
        ids, mask = np.asarray(prompts["prompt_ids"], np.int32), np.asarray(prompts["prompt_mask"], np.int32)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"topk_probe: prompt_ids {ids.shape} and prompt_mask {mask.shape} must be equal [N, P]")
        return ids, mask
    seqs = []
    for p in prompts:
        if isinstance(p, str):
            p = ByteTokenizer().encode(p, add_bos=True)
        seqs.append([int(t) for t in p])
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("topk_probe: prompts must be a non-empty list of non-empty prompts")
    P = max(len(s) for s in seqs)
    ids = np.full((len(seqs), P), pad_id, np.int32)
    mask = np.zeros((len(seqs), P), np.int32)
    for i, s in enumerate(seqs):
        ids[i, P - len(s):], mask[i, P - len(s):] = s, 1
    return ids, mask


@functools.partial(jax.jit, static_argnums=(0, 1))
def sample_indicators(graphdef, ks, params, model_state, ids, attention_mask, mask):
    """Token-weighted means of the top-k indicators along sampled completions (jitted; ``graphdef``, ``ks`` static).

    Over the positions t with ``mask[t + 1] = 1`` (those predicting a sampled token), with p_t the softmax of
    the model's logits: ``mass_top{k}`` = mean M_k(p_t), ``entropy_top{k}`` = mean renormalised H_k(p_t) for
    each k of ``ks``, ``entropy`` = mean H(p_t), and ``tokens`` = the number of such positions.
    """
    logits = logits_fn(graphdef, params, model_state, ids, attention_mask)[:, :-1].astype(jnp.float32)
    w = mask[:, 1:].astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)

    def mean(x):
        return jnp.sum(x * w) / n

    logp = jax.nn.log_softmax(logits, axis=-1)
    ent = -jnp.sum(jnp.where(jnp.isfinite(logp), jnp.exp(logp) * logp, 0.0), axis=-1)
    out = {"entropy": mean(ent), "tokens": w.sum()}
    for k in ks:
        out[f"mass_top{k}"] = mean(dg.topk_mass(logits, k))
        out[f"entropy_top{k}"] = mean(dg.topk_entropy(logits, k))
    return out


class topk_probe:  # noqa: N801 - used like a function, as jalign.train.probes.logps_probe
    """Top-k over-optimisation indicators (Shi et al., 2024) on the policy's own completions of fixed prompts.

    At each call the current policy samples ``max_new_tokens`` tokens per prompt with a fixed key (the
    trainer's samplers: :func:`jalign.train.online.make_kv_sampler` for a :class:`jalign.models.CausalLM`,
    :func:`jalign.train.online.make_sampler` otherwise; ``greedy`` for argmax decoding). Along each completion,
    at every position t predicting a sampled token (EOS included), with p_t = softmax(logits_t) the policy's
    next-token distribution, it averages over all such positions of all prompts

    * the top-k mass M_k = Σ_{i≤k} p_(i) (:func:`jalign.diagnostics.topk_mass`),
    * the renormalised top-k entropy H_k (:func:`jalign.diagnostics.topk_entropy`),
    * the entropy H(p_t) = −Σ_v p_t(v) ln p_t(v).

    Args:
      prompts: left-padded ``{"prompt_ids", "prompt_mask"}`` ``[N, P]``, or a list of token-id lists, or a
        list of strings (byte tokenizer with BOS).
      every: evaluate every ``every`` updates (``0``: only at the start and the end).
      k: the k of the indicators (ints, each 1 ≤ k ≤ V).
      max_new_tokens: completion length.
      temperature: sampling temperature (> 0).
      greedy: argmax decoding instead of sampling.
      seed: the fixed sampling key ``jax.random.key(seed)``.
      eos_id, pad_id: the tokenizer's ids (default: the byte tokenizer's).
      reward_fn: optional reward of the completions, with the signature of the trainer's reward plug-ins
        (``fn(prompt_ids [N, P], completion_ids [N, T], completion_mask [N, T]) -> [N]``, e.g.
        ``jalign.train.plugins.get_reward("lexicon")``), scored on the same completions as the indicators.
      name: scalar prefix.

    Returns per call: scalars ``mass_top{k}``, ``entropy_top{k}`` for each k, ``entropy``, ``tokens`` (number
    of positions averaged) and ``mean_length`` (sampled tokens per prompt); with ``reward_fn`` also
    ``rewards`` (one per completion) and their mean ``reward``.

    References:
      Shi et al., Understanding Likelihood Over-optimisation in Direct Alignment Algorithms (arXiv 2410.11677).
    """

    def __init__(self, prompts, *, every: int = 10, k: Sequence[int] = (1, 5, 10), max_new_tokens: int = 16,
                 temperature: float = 1.0, greedy: bool = False, seed: int = 0, eos_id: int = ByteTokenizer.eos_id,
                 pad_id: int = ByteTokenizer.pad_id, reward_fn=None, name: str = "topk"):
        try:
            ks = tuple(sorted({operator.index(x) for x in ((k,) if isinstance(k, int) else k)}))
        except TypeError:
            raise ValueError(f"topk_probe: k must be an int or a sequence of ints, got {k!r}") from None
        if not ks or ks[0] < 1:
            raise ValueError(f"topk_probe: k must be >= 1, got {k!r}")
        if int(max_new_tokens) < 1:
            raise ValueError(f"topk_probe: max_new_tokens must be >= 1, got {max_new_tokens}")
        if not temperature > 0:
            raise ValueError(f"topk_probe: temperature must be > 0, got {temperature}")
        if int(every) < 0:
            raise ValueError(f"topk_probe: every must be >= 0, got {every}")
        self.prompt_ids, self.prompt_mask = _left_pad(prompts, pad_id)
        self.ks, self.every, self.name = ks, int(every), name
        self.max_new_tokens, self.temperature, self.greedy, self.seed = int(max_new_tokens), temperature, greedy, seed
        self.eos_id, self.pad_id = eos_id, pad_id
        if reward_fn is not None and not callable(reward_fn):
            raise ValueError(f"topk_probe: reward_fn must be callable, got {reward_fn!r}")
        self.reward_fn = reward_fn
        self._sampler = self._graphdef = None

    def sample(self, graphdef, state) -> dict:
        """The completions of the current policy (the sampler's dict: ``ids``, ``attention_mask``, ``mask``)."""
        if self._sampler is None or self._graphdef is not graphdef:
            causal = is_causal_lm(nnx.merge(graphdef, state.params, state.model_state))
            make = make_kv_sampler if causal else make_sampler
            self._sampler = make(graphdef, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                 greedy=self.greedy, eos_id=self.eos_id, pad_id=self.pad_id)
            self._graphdef = graphdef
        return self._sampler(state.params, state.model_state, jnp.asarray(self.prompt_ids),
                             jnp.asarray(self.prompt_mask), jax.random.key(self.seed))

    def __call__(self, step, graphdef, state):
        V = int(jax.eval_shape(lambda: logits_fn(graphdef, state.params, state.model_state,
                                                 self.prompt_ids[:1, :1], self.prompt_mask[:1, :1])).shape[-1])
        if self.ks[-1] > V:
            raise ValueError(f"topk_probe {self.name!r}: k={self.ks[-1]} exceeds the vocabulary size V={V}")
        s = self.sample(graphdef, state)
        out = host_value(sample_indicators(graphdef, self.ks, state.params, state.model_state, s["ids"],
                                     s["attention_mask"], s["mask"]))
        res = {k_: float(v) for k_, v in out.items()}
        res["tokens"] = int(res["tokens"])
        res["mean_length"] = float(np.asarray(host_value(s["mask"])).sum() / self.prompt_ids.shape[0])
        if self.reward_fn is not None:
            samples = {f: np.asarray(host_value(s[f])) for f in ("ids", "mask")}
            r = score(self.reward_fn, self.prompt_ids, samples)
            if r.shape != (self.prompt_ids.shape[0],):
                raise ValueError(f"topk_probe {self.name!r}: reward_fn returned shape {r.shape}, expected "
                                 f"({self.prompt_ids.shape[0]},)")
            res["rewards"] = [float(v) for v in r]
            res["reward"] = float(r.mean())
        return res

"""Win rate against a baseline policy while training: the evaluation of ``jalign eval`` as a probe.

:class:`winrate_probe` samples ``n`` completions per fixed prompt from the current policy and from a frozen
baseline policy (by default the policy the run started from), scores both with a reward (any trainer reward
plug-in, a reward model included: ``jalign.train.plugins.get_reward("rm:PATH")``), and logs

* ``win_rate`` and ``win_rate_se``: :func:`jalign.diagnostics.evaluation.win_rate` — within prompt i every
  policy completion is compared with every baseline completion, ties ½; the standard error is over prompts;
* ``reward`` / ``reward_se`` and ``baseline_reward``: mean rewards (prompts as the unit);
* ``kl_k1``, ``kl_k3`` (with ``_se``): the Monte-Carlo KL(π‖π_base) of the policy's samples
  (:func:`jalign.diagnostics.evaluation.mc_kl`; biased when ``temperature != 1``, since the samples then do
  not come from π).

It follows :mod:`jalign.train.probes.runner`: it reads the state and never changes it. The baseline and its
sampling key are fixed, so its completions are drawn and scored at the first call only and reused after.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jalign.diagnostics.evaluation import mc_kl, per_prompt_mean_se, win_rate
from jalign.tokenizers import ByteTokenizer
from jalign.train.distributed import host_value
from jalign.train.online import make_kv_sampler, make_sampler, score
from jalign.train.plugins.models import is_causal_lm
from jalign.train.probes.rankings import _left_pad
from jalign.train.step import logits_fn


@functools.partial(jax.jit, static_argnums=(0,))
def sampled_logps(graphdef, params, model_state, ids, attention_mask, mask):
    """Σ_t mask[t+1]·ln p(ids[t+1] | ids[≤t]) per row: the log-probability of each sampled completion ``[N]``
    (float32 softmax; jitted, ``graphdef`` static)."""
    logits = logits_fn(graphdef, params, model_state, ids, attention_mask)[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    tok = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(mask[:, 1:] > 0, tok, 0.0), axis=-1)


class winrate_probe:  # noqa: N801 - used like a function, as jalign.train.probes.logps_probe
    """Win rate of the policy over a frozen baseline under a reward, on fixed prompts (see the module docstring).

    Args:
      prompts: left-padded ``{"prompt_ids", "prompt_mask"}`` ``[P, L]``, or a list of token-id lists, or a list
        of strings (byte tokenizer with BOS). At least two prompts give a standard error.
      reward_fn: ``fn(prompt_ids [N, L], completion_ids [N, T], completion_mask [N, T]) -> [N]`` (the trainer's
        reward plug-ins).
      baseline: ``(params, model_state)`` of the baseline (same ``graphdef`` as the policy), or ``None``: the
        policy at the probe's first call — the start of the run (after a resume: the resumed policy).
      n: completions per prompt from each model.
      every: evaluate every ``every`` updates (``0``: only at the start and the end).
      max_new_tokens, temperature: sampling; ``seed``: the fixed keys (policy ``seed``, baseline ``seed + 1``).
      eos_id, pad_id: the tokenizer's ids (default: the byte tokenizer's).
      name: scalar prefix.

    Returns per call the scalars above and ``rewards``/``baseline_rewards`` (``[P][n]`` lists).
    """

    def __init__(self, prompts, reward_fn, *, baseline=None, n: int = 4, every: int = 10, max_new_tokens: int = 16,
                 temperature: float = 1.0, seed: int = 0, eos_id: int = ByteTokenizer.eos_id,
                 pad_id: int = ByteTokenizer.pad_id, name: str = "winrate"):
        if not callable(reward_fn):
            raise ValueError(f"winrate_probe: reward_fn must be callable, got {reward_fn!r}")
        if int(n) < 1:
            raise ValueError(f"winrate_probe: n must be >= 1, got {n}")
        if int(max_new_tokens) < 1:
            raise ValueError(f"winrate_probe: max_new_tokens must be >= 1, got {max_new_tokens}")
        if not temperature > 0:
            raise ValueError(f"winrate_probe: temperature must be > 0, got {temperature}")
        if int(every) < 0:
            raise ValueError(f"winrate_probe: every must be >= 0, got {every}")
        ids, mask = _left_pad(prompts, pad_id)
        self.num_prompts, self.n = ids.shape[0], int(n)
        self.prompt_ids = np.repeat(ids, self.n, axis=0)  # prompt i's n rows are consecutive
        self.prompt_mask = np.repeat(mask, self.n, axis=0)
        self.reward_fn, self.baseline, self.every, self.name = reward_fn, baseline, int(every), name
        self.max_new_tokens, self.temperature, self.seed = int(max_new_tokens), float(temperature), int(seed)
        self.eos_id, self.pad_id = eos_id, pad_id
        self._sampler = self._graphdef = None
        self._base_rewards = None  # the baseline and its key are fixed: its samples are drawn and scored once

    def _sample(self, graphdef, params, model_state, seed):
        if self._sampler is None or self._graphdef is not graphdef:
            make = make_kv_sampler if is_causal_lm(nnx.merge(graphdef, params, model_state)) else make_sampler
            self._sampler = make(graphdef, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                 eos_id=self.eos_id, pad_id=self.pad_id)
            self._graphdef = graphdef
        return self._sampler(params, model_state, jnp.asarray(self.prompt_ids), jnp.asarray(self.prompt_mask),
                             jax.random.key(seed))

    def _rewards(self, s) -> np.ndarray:
        samples = {f: np.asarray(host_value(s[f])) for f in ("ids", "mask")}
        r = np.asarray(score(self.reward_fn, self.prompt_ids, samples), np.float64)
        if r.shape != (self.prompt_ids.shape[0],):
            raise ValueError(f"winrate_probe {self.name!r}: reward_fn returned shape {r.shape}, expected "
                             f"({self.prompt_ids.shape[0]},)")
        return r.reshape(self.num_prompts, self.n)

    def __call__(self, step, graphdef, state):
        if self.baseline is None:  # a copy: the trainer may donate the state's buffers
            self.baseline = jax.tree.map(jnp.copy, (state.params, state.model_state))
        b_params, b_state = self.baseline
        pol = self._sample(graphdef, state.params, state.model_state, self.seed)
        if self._base_rewards is None:
            self._base_rewards = self._rewards(self._sample(graphdef, b_params, b_state, self.seed + 1))
        r_pol, r_base = self._rewards(pol), self._base_rewards
        wr = win_rate(r_pol, r_base)
        args = (pol["ids"], pol["attention_mask"], pol["mask"])
        lp = np.asarray(host_value(sampled_logps(graphdef, state.params, state.model_state, *args)), np.float64)
        lp_b = np.asarray(host_value(sampled_logps(graphdef, b_params, b_state, *args)), np.float64)
        kl = mc_kl(lp.reshape(self.num_prompts, self.n), lp_b.reshape(self.num_prompts, self.n))
        reward, reward_se = per_prompt_mean_se(r_pol)
        return {"win_rate": wr["win_rate"], "win_rate_se": wr["se"], "reward": reward, "reward_se": reward_se,
                "baseline_reward": float(r_base.mean()), "kl_k1": kl["k1"], "kl_k1_se": kl["k1_se"],
                "kl_k3": kl["k3"], "kl_k3_se": kl["k3_se"], "rewards": r_pol.tolist(),
                "baseline_rewards": r_base.tolist()}

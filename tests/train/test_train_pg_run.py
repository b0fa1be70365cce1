"""mode='online' with online.algorithm: short runs on a learnable reward, config errors, non-finite rewards."""

from __future__ import annotations

import numpy as np
import pytest
from _train_helpers import small_cfg

from jalign.errors import UserError
from jalign.train import train
from jalign.train.config import ConfigError, validate
from jalign.train.plugins import tiny


def _ascii(p, ids, m):
    """Share of ASCII bytes in the completion (128 of the tiny model's 259 tokens: ~0.5 at the start)."""
    return ((ids < 128) * m).sum(-1) / np.maximum(m.sum(-1), 1)


def _cfg(**over):
    kw = dict(mode="online", data__name="synthetic_prompts", data__batch_size=8, train__steps=12,
              online__num_samples=4, online__max_new_tokens=4)
    c = small_cfg(**(kw | over))
    c.optim.name, c.optim.lr = "adam", 0.05
    return c


@pytest.mark.parametrize("algorithm,extra", [("grpo", dict(online__num_iterations=2, online__eps_high=0.28,
                                                             online__aggregation="dapo", online__kl_coef=0.01)),
                                             ("reinforce++", dict(online__kl_coef=0.01)),
                                             ("ppo", dict(online__kl_coef=0.01, online__num_iterations=2,
                                                          train__steps=16))])
def test_short_run_raises_the_reward(algorithm, extra):
    res = train(_cfg(online__algorithm=algorithm, **extra), reward_fn=_ascii,
                model=tiny.tiny_lm(0, d_model=8, d_hidden=16))
    r = [h["reward/mean"] for h in res.history]
    assert len(r) == extra.get("train__steps", 12) and all(0 <= x <= 1 for x in r)
    assert np.mean(r[:3]) < 0.65 and np.mean(r[-3:]) > 0.75, r
    last = res.history[-1]
    for key in ("entropy", "kl", "clip_ratio/low", "clip_ratio/high", "clip_ratio/region", "completions/mean_length",
                "completions/min_length", "completions/max_length", "completions/clipped_ratio", "reward/std",
                "frac_reward_zero_std"):
        assert np.isfinite(last[key]), key
    assert last["completions/max_length"] <= 4 and last["kl"] >= 0


def test_non_finite_reward_stops_training():
    def flaky(p, ids, m):
        return np.where(np.arange(len(ids)) == 5, np.nan, 0.0)

    with pytest.raises(UserError, match=r"reward 'flaky' returned a non-finite reward nan for prompt 1, sample 1"):
        train(_cfg(online__algorithm="grpo"), reward_fn=flaky, model=tiny.tiny_lm(0, d_model=8, d_hidden=16))


@pytest.mark.parametrize("over,msg", [
    (dict(online__eps_low=1.5), r"online.eps_low=1.5 must be a finite number in \(0, 1\)"),
    (dict(online__eps_low=0.0), r"online.eps_low=0.0 must be a finite number in \(0, 1\)"),
    (dict(online__eps_high=-0.1), r"online.eps_high=-0.1 must be a finite number > 0"),
    (dict(online__aggregation="mean"), r"online.aggregation='mean' must be one of \('grpo', 'bnpo', 'dr_grpo'"),
    (dict(online__algorithm="ppo2"), r"online.algorithm='ppo2' must be one of"),
    (dict(online__importance_level="seq"), r"online.importance_level='seq' must be one of"),
    (dict(online__scale_rewards="std"), r"online.scale_rewards='std' must be one of"),
    (dict(online__kl_penalty="both"), r"online.kl_penalty='both' must be one of"),
    (dict(online__num_samples=1), r"online.num_samples=1 must be >= 2 for online.algorithm='grpo' with "
                                  r"online.scale_rewards='group'"),
    (dict(online__num_minibatches=3), r"online.num_minibatches=3 does not divide the 32 samples of a step "
                                      r"\(data.batch_size=8 prompts × online.num_samples=4\)"),
    (dict(online__num_iterations=0), r"online.num_iterations=0 must be an integer >= 1"),
    (dict(online__kl_coef=0.1, loss__reference="none"), r"online.kl_coef=0.1 needs the frozen reference"),
    (dict(optim__accum_steps=2), r"optim.accum_steps=2: online.algorithm='grpo' updates on minibatches"),
    (dict(online__gamma=1.5), r"online.gamma=1.5 must be a finite number in \[0, 1\]"),
    (dict(online__lam=-0.1), r"online.lam=-0.1 must be a finite number in \[0, 1\]"),
    (dict(online__cliprange_value=0.0), r"online.cliprange_value=0.0 must be a finite number > 0"),
    (dict(online__vf_coef=-1.0), r"online.vf_coef=-1.0 must be a finite number >= 0"),
    (dict(online__reward_clip=-1.0), r"online.reward_clip=-1.0 must be a finite number >= 0 \(0: off\)"),
])
def test_config_errors(over, msg):
    c = _cfg(online__algorithm="grpo")
    for k, v in over.items():
        node = c
        *path, leaf = k.split("__")
        for p in path:
            node = node[p]
        node[leaf] = v
    with pytest.raises(ConfigError, match=msg):
        validate(c)


def test_rloo_needs_two_samples_and_hparams_are_refused():
    with pytest.raises(ConfigError, match=r"online.num_samples=1 must be >= 2 for online.algorithm='rloo'"):
        validate(_cfg(online__algorithm="rloo", online__num_samples=1))
    c = _cfg(online__algorithm="grpo")
    c.loss.hparams.beta = 0.1
    with pytest.raises(ConfigError, match=r"loss.hparams \['beta'\] are not used with online.algorithm='grpo'"):
        validate(c)

"""Invariances of the clipped policy-gradient runs: a PPO run (the ActorCritic model, two updates per round)
resumes bit-identically; a GRPO run on a 4-way data-parallel mesh equals the single-device run."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _train_helpers import small_cfg

from jalign.train import train
from jalign.train.plugins import tiny


@pytest.mark.slow
def test_ppo_resume_equals_an_uninterrupted_run(tmp_path):
    def cfg(workdir, steps):
        c = small_cfg(mode="online", data__name="synthetic_prompts", data__batch_size=4, train__steps=steps,
                      online__num_samples=2, online__max_new_tokens=3, online__algorithm="ppo",
                      online__num_iterations=2, online__kl_coef=0.05, workdir=str(workdir), checkpoint__every=2,
                      checkpoint__async_save=False, train__tensorboard=False)
        c.data.kwargs.num_examples = 8
        return c

    reward = lambda p, ids, m: ((ids < 128) * m).sum(-1) / np.maximum(m.sum(-1), 1)  # noqa: E731
    full = train(cfg(tmp_path / "full", 4), model=tiny.tiny_lm(0, d_model=8, d_hidden=16), reward_fn=reward)
    train(cfg(tmp_path / "part", 2), model=tiny.tiny_lm(0, d_model=8, d_hidden=16), reward_fn=reward)
    resumed = train(cfg(tmp_path / "part", 4), model=tiny.tiny_lm(0, d_model=8, d_hidden=16), reward_fn=reward)
    assert resumed.start_step == 2 and resumed.final_step == 4
    for key in ("loss", "value_loss", "reward/mean", "kl"):
        assert [h[key] for h in resumed.history] == [h[key] for h in full.history[2:]], key
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_grpo_on_a_data_parallel_mesh_equals_one_device():
    def run(ways):
        c = small_cfg(mode="online", data__name="synthetic_prompts", data__batch_size=8, train__steps=3,
                      online__num_samples=2, online__max_new_tokens=3, online__algorithm="grpo",
                      online__num_minibatches=2, online__num_iterations=2, online__kl_coef=0.05,
                      online__aggregation="dapo", mesh__data=ways)
        reward = lambda p, ids, m: ((ids < 128) * m).sum(-1) / np.maximum(m.sum(-1), 1)  # noqa: E731
        return train(c, model=tiny.tiny_lm(0, d_model=8, d_hidden=16), reward_fn=reward)

    one, four = run(1), run(4)
    for key in ("loss", "kl", "entropy", "reward/mean", "clip_ratio/region", "grad_norm"):
        np.testing.assert_allclose([h[key] for h in four.history], [h[key] for h in one.history], rtol=2e-4,
                                   atol=1e-6, err_msg=key)

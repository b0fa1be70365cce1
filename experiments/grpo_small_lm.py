"""Online GRPO from the small LM with the built-in sentiment lexicon as a scripted reward (docs/training.md,
"Online RL"; options in docs/rl.md).

    python -m jalign.cli train --config experiments/grpo_small_lm.py workdir=runs/grpo_small_lm \
        model.name=pretrained model.kwargs.path=runs/sft/export

Each step samples ``online.num_samples`` = 4 completions of up to 48 bytes for each of 4 prompts of
``sentiment_pairs``, scores them with the lexicon reward, and makes ``online.num_iterations`` = 2 clipped updates
(DAPO's clip-higher ε_low = 0.2, ε_high = 0.28, token-level ``dapo`` aggregation) against the sampling policy's
log-probs, with the k3 KL term to the frozen initial policy (β = ``online.kl_coef``). Set
``online.algorithm=rloo``, ``reinforce++`` or ``reinforce++_baseline`` for the other estimators. Start from an SFT
policy (see experiments/rloo_small_lm.py: from the pretrained small LM nearly every reward is 0).
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "online"
    c.model.name = "small_lm"
    c.data.name = "builtin_prompts"
    c.data.batch_size = 4
    c.data.seq_len = 144
    c.data.kwargs.dataset = "sentiment_pairs"
    c.data.kwargs.max_prompt_len = 48
    c.loss.reference = "frozen"
    c.online.algorithm = "grpo"
    c.online.num_samples = 4
    c.online.max_new_tokens = 48
    c.online.temperature = 1.0
    c.online.reward = "lexicon"
    c.online.num_iterations = 2
    c.online.eps_low = 0.2
    c.online.eps_high = 0.28
    c.online.aggregation = "dapo"
    c.online.kl_coef = 0.02
    c.optim.lr = 5e-4
    c.optim.schedule = "constant"
    c.train.steps = 30
    c.train.log_every = 5
    c.mesh.data = 1
    c.checkpoint.every = 0
    c.checkpoint.keep = 1
    return c

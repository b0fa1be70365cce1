"""Online RLOO from the pretrained small LM with the built-in sentiment lexicon as a scripted reward.

    python -m jalign.cli train --config experiments/rloo_small_lm.py workdir=runs/rloo_small_lm

Each step samples ``online.num_samples`` completions of ``online.max_new_tokens`` bytes per prompt of the
``sentiment_pairs`` data set with the KV-cache sampler of jalign.models, scores them with
``jalign.data.builtin.lexicon_reward`` (reward ``lexicon``) and takes an RLOO step. For CoPG set
``loss.name=copg``.

Start from an SFT policy (the pretrained small LM almost never writes a lexicon word, so from it nearly every
reward is 0 and nothing is learned)::

    python -m jalign.cli train --config experiments/sft_small_lm.py workdir=runs/sft train.export=runs/sft/export
    python -m jalign.cli train --config experiments/rloo_small_lm.py workdir=runs/rloo train.steps=60 \
        model.name=pretrained model.kwargs.path=runs/sft/export

Measured (docs/training.md): mean lexicon reward 0.22 → 0.93 in 60 steps — by reward hacking: with no KL term
the policy collapses onto ' warm warm warm …' (every lexicon hit counts), the textbook failure that
KL-regularised objectives exist to prevent.
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
    c.loss.name = "rloo"
    c.loss.reference = "none"
    c.online.num_samples = 4
    c.online.max_new_tokens = 48
    c.online.temperature = 1.0
    c.online.reward = "lexicon"
    c.optim.lr = 5e-4
    c.optim.schedule = "constant"
    c.train.steps = 30
    c.train.log_every = 5
    c.mesh.data = 1
    c.checkpoint.every = 0
    c.checkpoint.keep = 1
    return c

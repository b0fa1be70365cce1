"""SFT of the pretrained small LM on the chosen (positive) reviews of the built-in sentiment pairs.

    python -m jalign.cli train --config experiments/sft_small_lm.py workdir=/tmp/sft_small_lm
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "sft"
    c.model.name = "small_lm"
    c.data.name = "builtin_sft"
    c.data.batch_size = 8
    c.data.seq_len = 144
    c.data.kwargs.dataset = "sentiment_pairs"
    c.data.kwargs.max_prompt_len = 48
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 5
    c.train.steps = 60
    c.train.log_every = 5
    c.mesh.data = 1
    c.checkpoint.every = 30
    c.checkpoint.keep = 1
    return c

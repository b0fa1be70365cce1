"""SFT of the pretrained small LM on the chosen (positive) reviews of the built-in sentiment pairs.

    python -m jalign.cli train --config experiments/sft_small_lm.py workdir=runs/sft_small_lm \
        train.export=runs/sft_small_lm/export

``train.export`` writes the final policy in the Hugging Face layout; online RL then starts from it with
``model.name=pretrained model.kwargs.path=runs/sft_small_lm/export`` (see experiments/rloo_small_lm.py).
Measured (docs/training.md): 200 steps, NLL 0.27 nats/byte at the end; ~94% of samples then contain a
lexicon word (the pretrained small LM: almost none).
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
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 5
    c.train.steps = 200
    c.train.log_every = 5
    c.mesh.data = 1
    c.checkpoint.every = 0  # with a workdir, e.g. checkpoint.every=100 (without one it is a ConfigError)
    c.checkpoint.keep = 1
    return c

"""SFT of the tiny causal LM on synthetic prompt/response demonstrations; runs on CPU in seconds."""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "sft"
    c.data.name = "synthetic_sft"
    c.data.batch_size = 16
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 5
    c.train.steps = 60
    c.train.log_every = 5
    c.checkpoint.every = 0  # with a workdir, e.g. checkpoint.every=20 (without one it is a ConfigError)
    return c

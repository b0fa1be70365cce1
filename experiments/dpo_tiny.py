"""DPO on the tiny causal LM and synthetic sentiment pairs; runs on CPU in seconds.

    python -m jalign.cli train --config experiments/dpo_tiny.py workdir=runs/dpo_tiny
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "preference"
    c.model.name = "tiny"
    c.data.name = "synthetic_pairwise"
    c.data.batch_size = 16
    c.data.seq_len = 32
    c.loss.name = "dpo"
    c.loss.hparams.beta = 0.1
    c.loss.reference = "frozen"
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 5
    c.optim.grad_clip = 1.0
    c.train.steps = 60
    c.train.log_every = 5
    c.checkpoint.every = 0  # with a workdir, e.g. checkpoint.every=20 (without one it is a ConfigError)
    c.checkpoint.keep = 2
    return c

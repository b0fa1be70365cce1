"""DPO from the pretrained small LM (jalign.models.load_small_lm) on the built-in sentiment pairs.

    python -m jalign.cli train --config experiments/dpo_small_lm.py workdir=runs/dpo_small_lm

Real model + real data: the 0.86M-parameter byte-level GPT-2 of jalign/assets/small_lm, the
``sentiment_pairs`` built-in data set through the grain pipeline (byte tokenizer, right padding, prompts
<= 48 bytes, responses <= 96 bytes; none is truncated). Defaults run on 2 CPU cores in about a minute.
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "preference"
    c.model.name = "small_lm"
    c.data.name = "builtin_pairwise"
    c.data.batch_size = 8
    c.data.seq_len = 144
    c.data.kwargs.dataset = "sentiment_pairs"
    c.data.kwargs.max_prompt_len = 48
    c.loss.name = "dpo"
    c.loss.hparams.beta = 0.1
    c.loss.reference = "frozen"
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 5
    c.optim.grad_clip = 1.0
    c.train.steps = 60
    c.train.log_every = 1
    c.mesh.data = 1
    c.checkpoint.every = 0  # with a workdir, e.g. checkpoint.every=30 (without one it is a ConfigError)
    c.checkpoint.keep = 1
    return c

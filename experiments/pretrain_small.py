"""The small byte-level GPT-2 shipped in jalign/assets/small_lm: pretraining is the trainer in SFT mode.

    jalign pretrain --out runs/small_lm          # = jalign train --config pretrain_small, plus export and curve
    jalign train --config pretrain_small workdir=runs/small_lm/run train.export=runs/small_lm/hf

Random windows of 129 tokens (128 next-token predictions each) of CPython's ``pydoc_data.topics`` text
(``text_windows``; byte tokenizer, ``[BOS] document [EOS]`` concatenated, the last 5% of every document held
out); the SFT objective is the mean next-token cross-entropy; AdamW (β₂ = 0.95, weight decay 0.1 on matrices
only), warmup then cosine decay to 10% of the peak learning rate, global-norm clipping at 1; the held-out loss
is logged every 100 steps (``eval/nll``).
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "sft"
    c.seed = 0
    c.model.name = "causal_lm"
    c.model.kwargs.update(dict(arch="gpt2", vocab_size=259, d_model=128, n_layers=4, n_heads=4, max_seq_len=256,
                               bos_id=257, eos_id=258, pad_id=256))
    c.data.name = "text_windows"
    c.data.batch_size = 16
    c.data.seq_len = 129
    c.data.kwargs.update(dict(sources=("pydoc_topics",), n_template=0, val_fraction=0.05))
    c.optim.name = "adamw"
    c.optim.lr = 3e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 50
    c.optim.end_lr_fraction = 0.1
    c.optim.weight_decay = 0.1
    c.optim.decay_matrices_only = True
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.grad_clip = 1.0
    c.train.steps = 1000
    c.train.log_every = 1
    c.eval.every = 100
    c.eval.batches = 8
    c.mesh.data = 1
    c.checkpoint.every = 0
    c.checkpoint.keep = 1
    return c

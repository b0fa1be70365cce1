"""Offline CoPG from the pretrained small LM on the built-in sentiment pairs, each response scored by the lexicon.

    python -m jalign.cli train --config experiments/copg_small_lm.py workdir=/tmp/copg_small_lm

Same model, data, batch size, optimiser and steps as experiments/dpo_small_lm.py, but the data source is
``builtin_scored``: every pair of ``sentiment_pairs`` becomes K = 2 unranked samples of one prompt with their
scripted rewards R = ``jalign.data.builtin.lexicon_reward(response)``, and the loss is CoPG (registered ``copg``,
kind ``scored``): ``(1/(2β))·(R(y_a) − R(y_b) − β·[ln π/π_ref(y_a) − ln π/π_ref(y_b)])²`` (Flet-Berliac et al.,
2024). DPO and IPO on the same pairs:

    python -m jalign.cli train --config experiments/dpo_small_lm.py workdir=/tmp/dpo
    python -m jalign.cli train --config experiments/dpo_small_lm.py loss.name=ipo workdir=/tmp/ipo

A β sweep of the three methods: ``python -m experiments.sweep_copg_dpo_ipo`` (see its docstring).
Defaults run on 2 CPU cores in about a minute.
"""

from jalign.train.config import base_config


def get_config():
    c = base_config()
    c.mode = "preference"  # offline: a fixed data set; the scored batches carry their rewards
    c.model.name = "small_lm"
    c.data.name = "builtin_scored"
    c.data.batch_size = 8
    c.data.seq_len = 144
    c.data.kwargs.dataset = "sentiment_pairs"
    c.data.kwargs.max_prompt_len = 48
    c.data.kwargs.reward = "lexicon"
    c.loss.name = "copg"
    c.loss.hparams.beta = 0.1
    c.loss.reference = "frozen"
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 5
    c.optim.grad_clip = 1.0
    c.train.steps = 60
    c.train.log_every = 1
    c.mesh.data = 1
    c.checkpoint.every = 30
    c.checkpoint.keep = 1
    return c

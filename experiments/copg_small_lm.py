"""Offline CoPG from the pretrained small LM on the built-in sentiment pairs, each response scored by the lexicon.

    python -m jalign.cli train --config experiments/copg_small_lm.py workdir=runs/copg_small_lm

Same model, data, batch size, optimiser and steps as experiments/dpo_small_lm.py, but the data source is
``builtin_scored``: every pair of ``sentiment_pairs`` becomes K = 2 unranked samples of one prompt with their
scripted rewards R = ``jalign.data.builtin.lexicon_reward(response)``, and the loss is CoPG (registered ``copg``,
kind ``scored``): ``(1/(2β))·(R(y_a) − R(y_b) − β·[ln π/π_ref(y_a) − ln π/π_ref(y_b)])²`` (Flet-Berliac et al.,
2024). DPO and IPO on the same pairs:

    python -m jalign.cli train --config experiments/dpo_small_lm.py workdir=runs/dpo
    python -m jalign.cli train --config experiments/dpo_small_lm.py loss.name=ipo workdir=runs/ipo

A β sweep of the three methods: ``python -m experiments.sweep_copg_dpo_ipo`` (see its docstring).
Defaults run on 2 CPU cores in about a minute.
"""

import importlib.util
from pathlib import Path


def _dpo_small_lm_config():
    path = Path(__file__).with_name("dpo_small_lm.py")
    spec = importlib.util.spec_from_file_location("_jalign_experiment_dpo_small_lm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    """experiments/dpo_small_lm.py with the scored data source and the CoPG loss (everything else equal)."""
    c = _dpo_small_lm_config()
    c.data.name = "builtin_scored"  # the scored batches carry their rewards; pairs are not ranked
    c.data.kwargs.reward = "lexicon"
    c.loss.name = "copg"
    return c

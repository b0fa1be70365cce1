"""Research trainers that run their own jitted step on top of the trainer's building blocks.

* :mod:`jalign.studies.entanglement` — :class:`~jalign.studies.entanglement.PairwiseWeightedTrainer`: every
  pairwise loss and both gradient-entanglement mitigations through one compiled step (chain rule);
* :mod:`jalign.studies.fdpg_lm` — f-DPG on a causal LM (word constraint, one-compile multi-divergence trainer).

They import from :mod:`jalign.train` (step, batch layout, probes) and are used by the reproductions.
"""

"""Probes: diagnostics evaluated on a fixed probe set while training runs (every probe in one place).

* :mod:`~jalign.train.probes.runner` — the protocol (``name``, ``every``, ``__call__(step, graphdef, state)``)
  and :class:`ProbeRunner`, which the training loop calls;
* :class:`logps_probe`, :class:`nll_probe` — summed log-probs of fixed pairs; held-out next-token loss;
* :class:`entanglement_probe` — gradient entanglement of a margin loss (Yuan et al., 2025);
* :class:`displacement_probe` — likelihood displacement (Razin et al., 2025);
* :class:`ranking_probe` — ranking accuracy, idealised ranking accuracy and the alignment gap (Chen et al., 2024);
* :class:`reward_probe` — a reward model's loss, accuracy and margin on held-out pairs (``mode="reward"``);
* :class:`topk_probe` — top-k mass / entropy and entropy on the policy's own samples (Shi et al., 2024);
* :class:`winrate_probe` — win rate over a frozen baseline under a reward, mean reward, Monte-Carlo KL (``jalign eval``).

Pass them as ``jalign.train.train(cfg, probes=[...])``.
"""

from jalign.train.probes.displacement import displacement_probe
from jalign.train.probes.entanglement import entanglement_probe
from jalign.train.probes.logps import logps_probe, nll_probe
from jalign.train.probes.rankings import ranking_probe, topk_probe
from jalign.train.probes.reward import reward_probe
from jalign.train.probes.runner import Probe, ProbeRunner, due, scalars
from jalign.train.probes.winrate import winrate_probe

__all__ = ["Probe", "ProbeRunner", "displacement_probe", "due", "entanglement_probe", "logps_probe",
           "nll_probe", "ranking_probe", "reward_probe", "scalars", "topk_probe", "winrate_probe"]

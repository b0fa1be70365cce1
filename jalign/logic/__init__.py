"""Symbolic DPA logic: preference structures, the semantic-loss compiler and decompiler, the loss landscape.

Richardson, Srikumar & Sabharwal, *Understanding the Logic of Direct Preference Alignment through Logic*,
ICML 2025 (arXiv 2412.17696). See docs/logic.md.

>>> from jalign import logic
>>> logic.relation(logic.decompile("dpo"), logic.decompile("ipo"))
'equivalent'
>>> logic.count_losses(2)
256

Training with a compiled loss: ``jalign.train.train(cfg, loss=logic.as_loss("ccpo"))`` or, in a config,
``loss.name = "logic:ccpo"`` (names starting with :data:`LOGIC_PREFIX`; :func:`is_logic_name`, :func:`from_name`,
see :mod:`jalign.logic.loss`).
"""

from jalign.logic.compile import DEFAULT_FIELDS, F_FORMULAS, compile, compile_rho, log1mexp, log_wmc, rho_many
from jalign.logic.decompile import KNOWN, KnownLoss, decompile, decompile_ratio, known, names, sem
from jalign.logic.landscape import (
    count_losses,
    entails,
    enumerate_losses,
    equivalence_classes,
    equivalent,
    hasse_edges,
    label_string,
    lift,
    rank,
    relation,
    same_rho,
    wmc_polynomial,
)
from jalign.logic.loss import LOGIC_PREFIX, LogicLoss, as_loss, from_name, is_logic_name
from jalign.logic.structure import (
    LABEL_TEXT,
    M_l,
    M_w,
    PreferenceStructure,
    Ref_l,
    Ref_w,
    from_labels,
    models,
    var,
    worlds,
)

__all__ = [
    "DEFAULT_FIELDS",
    "F_FORMULAS",
    "KNOWN",
    "LABEL_TEXT",
    "LOGIC_PREFIX",
    "KnownLoss",
    "LogicLoss",
    "M_l",
    "M_w",
    "PreferenceStructure",
    "Ref_l",
    "Ref_w",
    "as_loss",
    "compile",
    "compile_rho",
    "count_losses",
    "decompile",
    "decompile_ratio",
    "entails",
    "enumerate_losses",
    "equivalence_classes",
    "equivalent",
    "from_labels",
    "from_name",
    "hasse_edges",
    "is_logic_name",
    "known",
    "label_string",
    "lift",
    "log1mexp",
    "log_wmc",
    "models",
    "names",
    "rank",
    "relation",
    "rho_many",
    "same_rho",
    "sem",
    "var",
    "wmc_polynomial",
    "worlds",
]

"""Paper reproductions: one module per reproduction, discovered automatically.

A reproduction module defines::

    NAME = "copg-bandit"              # the name used by `jalign reproduce NAME`
    DESCRIPTION = "one line"
    def run(out: pathlib.Path, *, quick: bool = True) -> dict: ...   # writes figures + results.json
    def plot_from_results(out: pathlib.Path) -> list[str]: ...  # redraws the figures from out/results.json alone

It must contain no math of its own (that lives in ``jalign``): it wires experiments, saves results as JSON and
draws figures from the saved JSON. ``run`` returns a dict with at least ``{"claims": [...]}``; every claim
is built with :func:`jalign.reporting.make_claim` (paper, claim, measured, status, source, evidence; status one
of :data:`jalign.reporting.STATUSES`), computed by the module's ``claims(res)`` from the saved results with
the pass rules of its ``RULES`` dict (the report refuses a claim without evidence).

What every ``run`` shares lives in :mod:`paper_repro._common`: ``output_dir(out)``, then, once the results
(claims included) are computed, ``finish(out, results, plot_from_results, t0=...)`` writes ``results.json``
atomically, draws the figures from it and returns the results with the figure files under ``"figures"``;
``plot_from_results`` is ``draw_figures(out, read_results(out), FIGURES)`` over ``(name, draw)`` pairs.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def registry() -> dict[str, ModuleType]:
    """Map reproduction name → module."""
    out: dict[str, ModuleType] = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        name = getattr(module, "NAME", None)
        if name:
            out[name] = module
    return out

"""What every reproduction's ``run`` shares: the output directory, writing ``results.json``, drawing the figures.

A reproduction computes its results dict (claims included), then hands it to :func:`finish`, which stamps the
wall time, writes ``out/results.json`` atomically and draws the figures from that file alone (the figures are
never drawn from in-memory results, so ``plot_from_results`` redraws exactly what ``run`` drew). Its figures
are a list of ``(name, draw)`` pairs, ``draw(results) -> matplotlib figure``, saved by :func:`draw_figures`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jalign.plotting import savefig, style

RESULTS = "results.json"


def output_dir(out: str | Path) -> Path:
    """``out`` as a :class:`~pathlib.Path`, created (with its parents) if it does not exist."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(out: Path, res: dict, *, indent: int = 1, ensure_ascii: bool = True) -> Path:
    """Write ``res`` as ``out/results.json`` atomically (a temporary file, then a rename); return the path."""
    path = Path(out) / RESULTS
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=indent, ensure_ascii=ensure_ascii))
    tmp.replace(path)
    return path


def read_results(out: str | Path) -> dict:
    """The results dict saved in ``out/results.json``."""
    return json.loads((Path(out) / RESULTS).read_text())


def draw_figures(out: Path, res: dict, figures: Iterable[tuple[str, Callable[[dict], Any]]]) -> list[str]:
    """Draw every ``(name, draw)`` of ``figures`` from ``res`` in the jalign style (:func:`jalign.plotting.style`)
    and save it as ``out/name.png`` and ``out/name.pdf``; return the names of the files written, in order."""
    written = []
    with style():
        for name, draw in figures:
            written.extend(p.name for p in savefig(draw(res), out, name))
    return written


def finish(out: Path, res: dict, draw: Callable[[Path], list[str]], *, t0: float | None = None, indent: int = 1,
           ensure_ascii: bool = True) -> dict:
    """The tail of every ``run``: save ``res`` and draw the figures from the saved file; return ``res``.

    Args:
      out: the output directory (exists; see :func:`output_dir`).
      res: the JSON-serialisable results, with their ``"claims"``.
      draw: the reproduction's ``plot_from_results``: draws every figure from ``out/results.json`` and returns
        the names of the files written, which the returned dict gets as ``"figures"`` (the saved file does not).
      t0: the run's start (:func:`time.time`); when given, ``res["seconds"]`` = the wall time so far, rounded
        to 0.1 s, is set before saving.
      indent, ensure_ascii: the JSON layout of the saved file (:func:`json.dumps`).

    Returns:
      ``res`` (the same dict, updated as described).
    """
    if t0 is not None:
        res["seconds"] = round(time.time() - t0, 1)
    write_results(out, res, indent=indent, ensure_ascii=ensure_ascii)
    res["figures"] = draw(out)
    return res

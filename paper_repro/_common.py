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


# ---------------------------------------------------------------------------------------------------------
# Claims with evidence (jalign.reporting): the statuses every reproduction's ``claims(res)`` uses.

ONE_SEED = "measured on one seed (one training run), so inconclusive; holds with ≥ 3 seeds only if "


def _fmt(x) -> str:
    import math

    return "nan" if x is None or not math.isfinite(float(x)) else f"{float(x):.4g}"


def _seeded(mean, lo, hi, n, threshold, above, rule) -> tuple[str, dict, str]:
    import math

    from jalign.reporting import MIN_SEEDS, evidence, interval_status

    ok_iv = math.isfinite(lo) and math.isfinite(hi)
    status = interval_status(lo, hi, threshold, above=above) if n >= MIN_SEEDS and ok_iv else "inconclusive"
    ev = evidence("seeds", rule=rule, seeds=n, estimate=mean, interval=(lo, hi) if ok_iv else None)
    if ok_iv:
        text = f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}] (95% t, {n} seeds)"
    else:
        text = f"{_fmt(mean)} ({n} seed{'s' if n != 1 else ''}, no interval)"
    if n < MIN_SEEDS:
        text += f"; fewer than {MIN_SEEDS} seeds, so inconclusive"
    return status, ev, text


def seeded(values, threshold: float, *, above: bool, rule: str) -> tuple[str, dict, str]:
    """A seeded claim "the per-seed statistic ``values`` lies above (``above``) / below ``threshold``":
    ``(status, evidence, text)`` from the 95% t-interval (:func:`jalign.reporting.t_interval`) and
    :func:`jalign.reporting.interval_status`; "inconclusive" with fewer than ``MIN_SEEDS`` seeds."""
    import numpy as np

    from jalign.reporting import t_interval

    v = np.asarray(values, np.float64).ravel()
    n = int(np.isfinite(v).sum())
    mean, lo, hi = t_interval(v)
    return _seeded(mean, lo, hi, n, threshold, above, rule)


def seeded_moments(mean: float, sd: float, n: int, threshold: float, *, above: bool, rule: str):
    """:func:`seeded` from saved moments over seeds (mean, unbiased sd, count)."""
    from jalign.reporting import t_interval_from_moments

    m, lo, hi = t_interval_from_moments(mean, sd, n)
    return _seeded(m, lo, hi, int(n), threshold, above, rule)


def one_seed(estimate, *, need: str, passes: bool) -> tuple[str, dict, str]:
    """A claim measured on one seed (one training run): always "inconclusive". ``need`` is the rule a run with
    ≥ 3 seeds would have to pass (its threshold fixed here); the text gives the one-seed point verdict."""
    from jalign.reporting import evidence

    text = f"one seed: {'passes' if passes else 'fails'} on this seed (no interval)"
    return "inconclusive", evidence("seeds", rule=ONE_SEED + need, seeds=1, estimate=estimate), text


def exact(ok: bool, estimate, rule: str) -> tuple[str, dict]:
    """An exact claim (closed forms, exact optima, deterministic constructions; tolerance in ``rule``)."""
    from jalign.reporting import evidence

    return ("holds" if ok else "does not hold"), evidence("exact", rule=rule, estimate=estimate)


def by_construction(rule: str, estimate=None) -> tuple[str, dict]:
    """A row that cannot fail: the code makes it true (``rule`` says why)."""
    from jalign.reporting import evidence

    return "by construction", evidence("construction", rule=rule, estimate=estimate)


def not_here(rule: str) -> tuple[str, dict]:
    """A claim that needs models or data not available here."""
    from jalign.reporting import evidence

    return "not reproducible here", evidence("none", rule=rule, seeds=0)


def seeded_all(named_values: dict, threshold: float, *, above: bool, rule: str) -> tuple[str, dict, str]:
    """A seeded claim that needs several per-seed statistics on the claimed side of ``threshold`` at once
    (``named_values``: name → per-seed values, each judged by :func:`seeded`): "holds" when every one holds,
    "does not hold" when any does not hold, else "inconclusive". The evidence is that of the deciding
    statistic (the first that does not hold, else the first inconclusive one, else the one whose interval comes
    closest to the threshold); the text lists every statistic."""
    import math

    parts = {k: seeded(v, threshold, above=above, rule=rule) for k, v in named_values.items()}
    statuses = [p[0] for p in parts.values()]
    if "does not hold" in statuses:
        status = "does not hold"
        key = next(k for k, p in parts.items() if p[0] == status)
    elif "inconclusive" in statuses:
        status = "inconclusive"
        key = next(k for k, p in parts.items() if p[0] == status)
    else:
        status = "holds"

        def margin(p):
            iv = p[1]["interval"]
            return math.inf if iv is None else (iv[0] - threshold if above else threshold - iv[1])

        key = min(parts, key=lambda k: margin(parts[k]))
    text = "; ".join(f"{k}: {p[2]}" for k, p in parts.items())
    return status, parts[key][1], f"{text} → {status} (deciding: {key})"

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


def combine(parts) -> tuple[str, dict, str]:
    """A conjunction of seeded claims, each already decided: ``parts`` is a list of ``(name, (status, evidence,
    text))`` from :func:`seeded`. The conjunction holds when every part holds, does not hold when some part does
    not hold, and is inconclusive otherwise. The evidence is the deciding part's: the first failing part, else
    the first inconclusive one, else the last part (every part holds). The text gives every part's interval."""
    if not parts:
        raise ValueError("combine needs at least one part")
    failing = [p for p in parts if p[1][0] == "does not hold"]
    open_ = [p for p in parts if p[1][0] == "inconclusive"]
    decide = failing[0] if failing else open_[0] if open_ else parts[-1]
    status = "does not hold" if failing else "inconclusive" if open_ else "holds"
    text = "; ".join(f"{name}: {r[2]}" for name, r in parts)
    if len(parts) > 1:
        text += f" (deciding part: {decide[0]})"
    return status, decide[1][1], text


def seeded_all(parts, threshold: float, *, above: bool, rule: str) -> tuple[str, dict, str]:
    """:func:`combine` of ``seeded(values, threshold, above=above, rule=rule)`` for every ``(name, values)`` of
    ``parts``: "every per-seed statistic lies above (``above``) / below ``threshold``"."""
    return combine([(name, seeded(v, threshold, above=above, rule=rule)) for name, v in parts])


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



CACHE_ENV = "JALIGN_REPRO_CACHE"


def shared(key: dict, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``compute()``, or the value an earlier reproduction of the same ``jalign reproduce`` command computed for
    the same ``key`` (a JSON-serialisable description of everything the value depends on); returns
    ``(value, reused)``.

    The values live in the directory named by the environment variable ``JALIGN_REPRO_CACHE`` (set by
    ``jalign reproduce``: a temporary directory of the command, shared by its worker processes, or ``--cache
    DIR``); without it every call computes. A value is pickled after :func:`jax.device_get` (so it must be a
    pytree of arrays and picklable leaves) and written atomically; a reused value's arrays are put back on the
    default device. Computing is deterministic here, so a reused value is bit for bit the one ``compute`` would
    return (the SFT reference that rankings, reward-transforms and maxmin start from is the use).
    """
    import hashlib
    import os
    import pickle

    import jax

    root = os.environ.get(CACHE_ENV)
    if not root:
        return compute(), False
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(root) / "values" / f"{digest}.pkl"
    if path.is_file():
        try:
            value = pickle.loads(path.read_bytes())
        except Exception:  # noqa: BLE001 - an unreadable entry is recomputed (and rewritten)
            value = None
        else:
            return jax.tree.map(lambda x: jax.device_put(x) if hasattr(x, "dtype") else x, value), True
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(jax.device_get(value)))
    tmp.replace(path)
    return value, False

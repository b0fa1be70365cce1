"""The command line every small-LM experiment driver shares (``python -m experiments.NAME``): ``--workdir``,
``--out``, ``--plot-only``, ``--overwrite`` and one flag per entry of the driver's ``SETTINGS`` (a tuple
setting takes several values of its elements' type); the run's results go to ``--out`` as JSON, then the
figure is drawn from that file."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main(argv, *, doc: str, name: str, settings: dict, run, plot_from_results, check=None) -> None:
    """Parse ``argv``, run ``run(workdir, settings)`` unless ``--plot-only``, save, and draw.

    Args:
      doc: the driver's module docstring (its first line is the description).
      name: the driver's name: default ``--workdir runs/NAME`` and ``--out experiments/results/NAME.json``.
      settings: the defaults; each key becomes ``--key-with-dashes``.
      run: ``run(workdir: Path, settings: dict) -> dict`` (JSON-serialisable results).
      plot_from_results: ``plot_from_results(res, out: Path) -> list[Path]``.
      check: optional ``check(settings) -> str | None``: an error message for bad settings (exit before work).
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--workdir", default=f"runs/{name}")
    ap.add_argument("--out", default=f"experiments/results/{name}.json")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    ap.add_argument("--overwrite", action="store_true", help="delete an existing --workdir first")
    for k, v in settings.items():
        many = isinstance(v, tuple)
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v[0]) if many else type(v), nargs="+" if many else None,
                        default=v)
    a = ap.parse_args(argv)
    out = Path(a.out)
    if not a.plot_only:
        s = {k: tuple(getattr(a, k)) if isinstance(v, tuple) else getattr(a, k) for k, v in settings.items()}
        msg = check(s) if check else None
        if msg:
            raise SystemExit(msg)
        wd = Path(a.workdir)
        if wd.exists():
            if not a.overwrite:
                raise SystemExit(f"--workdir {wd}: exists; pass --overwrite to delete it, or choose another")
            shutil.rmtree(wd)
        res = run(wd, s)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    res = json.loads(out.read_text(encoding="utf-8"))
    for p in plot_from_results(res, out):
        print("wrote", p)


def save_figure(fig, out: Path) -> list[Path]:
    """Save ``fig`` next to ``out`` as PNG and PDF (dpi 120), close it, and return the two paths."""
    import matplotlib.pyplot as plt

    paths = [Path(out).with_suffix(".png"), Path(out).with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths

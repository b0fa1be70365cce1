"""One consistent matplotlib style for every jalign figure; figures are saved as PNG and PDF."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STYLE = {
    "figure.figsize": (6.0, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "pdf.fonttype": 42,
    "svg.hashsalt": "jalign",
}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


@contextlib.contextmanager
def style():
    """``with style(): ...`` applies the jalign figure style."""
    with plt.rc_context({**STYLE, "axes.prop_cycle": matplotlib.cycler(color=COLORS)}):
        yield


def savefig(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.png`` and ``out_dir/name.pdf`` (deterministic metadata); close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"Creator": None, "Producer": None, "CreationDate": None})
    plt.close(fig)
    return paths


def styled(fn):
    """Decorator: run a figure-drawing function under :func:`style`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with style():
            return fn(*args, **kwargs)

    return wrapper


def plot_loss_curve(curve_json: str | Path, out_png: str | Path) -> Path:
    """Draw train (per step, and a 25-step running mean) and validation loss from ``loss_curve.json``
    (written by ``jalign pretrain``)."""
    d = json.loads(Path(curve_json).read_text())
    tr, va = np.asarray(d["train"]), np.asarray(d["val"])
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(tr[:, 0], tr[:, 1], color="0.8", lw=0.6, label="train (batch)")
    k = min(25, len(tr))
    ax.plot(tr[k - 1 :, 0], np.convolve(tr[:, 1], np.ones(k) / k, mode="valid"), lw=1.2, label=f"train ({k}-step mean)")
    ax.plot(va[:, 0], va[:, 1], "o-", ms=3, lw=1.2, label="validation")
    ax.axhline(np.log(259), ls=":", color="k", lw=0.8, label="uniform (log 259)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/byte)")
    ax.set_title(f"small LM, {d['n_params'] / 1e6:.2f}M params")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png

"""Metric sinks: JSONL (always), TensorBoard event files (optional), a tqdm progress bar with ETA."""

from __future__ import annotations

import json
import math
from pathlib import Path

from jalign.train.tensorboard import EventWriter


class MetricsLogger:
    """Writes one JSON object per logged step to ``workdir/metrics.jsonl`` and scalars to
    ``workdir/tensorboard/``; only process 0 writes. ``workdir=None`` keeps the records in memory only
    (``self.history``)."""

    def __init__(self, workdir: str | Path | None, *, tensorboard: bool = True, is_main: bool = True):
        self.history: list[dict] = []
        self._jsonl = self._tb = None
        if workdir and is_main:
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(workdir / "metrics.jsonl", "a")
            if tensorboard:
                self._tb = EventWriter(workdir / "tensorboard")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        rec = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self.history.append(rec)
        if self._jsonl:
            self._jsonl.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                                          for k, v in rec.items()}) + "\n")
            self._jsonl.flush()
        if self._tb:
            self._tb.scalars(step, {k: v for k, v in rec.items() if k != "step"})
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

"""The workdir of a training run: an exclusive lock, the run's identity, resume checks, archiving.

Files (written by process 0 only)::

    .lock            advisory lock (``fcntl.flock``) held while a run uses the workdir; holds the owner's
                     ``{"pid", "host", "started"}`` as JSON (emptied on a clean exit)
    run.json         ``{"run_id", "created"}``: the identity of the run whose checkpoints are in checkpoints/
    config.json      the configuration of the last run started or resumed here
    metrics.jsonl    one row per logged step; trimmed to the checkpoint's step on resume
    checkpoints/     orbax checkpoints (:mod:`jalign.train.checkpoint`); each step's metadata has the run id
    archive/<run id>/   an earlier run moved aside by ``checkpoint.fresh=True`` (and damaged checkpoints)

Lifecycle: see docs/training.md ("The workdir lifecycle").
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

from jalign.errors import WorkdirBusyError

log = logging.getLogger("jalign.train")

LOCK_FILE = ".lock"
RUN_FILE = "run.json"
# What a run leaves in its workdir (moved to archive/<run id>/ by checkpoint.fresh=True).
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "probes.jsonl", "tensorboard", "config.json", RUN_FILE)
# Config keys that define a run: a resume with other values is refused (train.steps may grow).
DEFINING = ("model", "loss", "data", "seed", "optim", "mode", "online")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class WorkdirLock:
    """An exclusive advisory lock on ``workdir/.lock`` (``fcntl.flock``), released by :meth:`release` or
    when the process dies (the kernel drops flock locks of dead processes).

    :meth:`acquire` fails at once with :class:`~jalign.errors.WorkdirBusyError` naming the workdir and the
    owner's pid and host while another live process holds it; a lock file left by a dead process (the lock
    is free but its owner record remains) is taken over with a warning naming the old owner.
    """

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_FILE
        self._fd: int | None = None
        self.stale_owner: dict | None = None

    def acquire(self) -> WorkdirLock:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = _read_owner(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = (f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}"
                   if owner else "owner unknown")
            raise WorkdirBusyError(
                f"workdir {self.workdir} is in use by another run ({who}); two runs in one workdir would "
                "overwrite each other's checkpoints and metrics. Wait for it to finish, stop it, or choose "
                "another workdir") from None
        owner = _read_owner(fd)
        if owner:
            self.stale_owner = owner
            log.warning("workdir %s: taking over a stale lock of pid %s on host %s (started %s), which no "
                        "longer holds it (the process ended without releasing it, e.g. killed)",
                        self.workdir, owner.get("pid"), owner.get("host"), owner.get("started"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no owner record (a left-over record = a dead owner)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_owner(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None


def read_run(workdir: Path) -> dict | None:
    """The ``run.json`` record of ``workdir`` (None when there is none)."""
    p = Path(workdir) / RUN_FILE
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise WorkdirBusyError(f"{p}: not valid JSON ({e}); the workdir's run record is damaged") from None


def write_run(workdir: Path, run_id: str) -> dict:
    rec = {"run_id": run_id, "created": _now()}
    _atomic_text(Path(workdir) / RUN_FILE, json.dumps(rec, indent=2))
    return rec


def new_run_id() -> str:
    return uuid.uuid4().hex


def archive_run(workdir: Path, run_id: str | None) -> Path:
    """Move the outputs of the run in ``workdir`` to ``workdir/archive/<run id>/`` (nothing is deleted)."""
    workdir = Path(workdir)
    dest = workdir / "archive" / (run_id or f"unnamed-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    n = 1
    while dest.exists():
        dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
        n += 1
    dest.mkdir(parents=True)
    for name in RUN_OUTPUTS:
        src = workdir / name
        if src.exists():
            shutil.move(str(src), str(dest / name))
    return dest


def trim_jsonl(path: Path, step: int) -> int:
    """Keep only the rows of ``path`` with ``row["step"] <= step`` (atomic rewrite); returns rows dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if int(json.loads(ln)["step"]) <= step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut by a crash mid-write
    if len(keep) != len(lines):
        _atomic_text(path, "".join(k + "\n" for k in keep))
    return len(lines) - len(keep)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def config_diff(old: dict, new: dict, *, keys: tuple[str, ...] = DEFINING) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every dotted key under ``keys`` whose value differs (missing = ``<absent>``)."""
    fo, fn = _flatten(old), _flatten(new)
    out = []
    for k in sorted(set(fo) | set(fn)):
        if k.split(".")[0] not in keys:
            continue
        a, b = fo.get(k, "<absent>"), fn.get(k, "<absent>")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
                and not isinstance(b, bool) and float(a) == float(b):
            continue
        if a != b:
            out.append((k, a, b))
    return out

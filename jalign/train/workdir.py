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

import dataclasses
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
    """``(key, old, new)`` for every dotted key under ``keys`` whose value differs (missing = ``<absent>``).

    A key absent from ``old`` whose new value is its default in :func:`jalign.train.config.base_config` is not a
    change: the old run's config was written before the key existed (e.g. ``online.algorithm``)."""
    from jalign.train.config import base_config

    fo, fn = _flatten(old), _flatten(new)
    defaults = _flatten(json.loads(base_config().to_json()))
    out = []
    for k in sorted(set(fo) | set(fn)):
        if k.split(".")[0] not in keys:
            continue
        a, b = fo.get(k, "<absent>"), fn.get(k, "<absent>")
        if a == "<absent>" and k in defaults and defaults[k] == b:
            continue
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
                and not isinstance(b, bool) and float(a) == float(b):
            continue
        if a != b:
            out.append((k, a, b))
    return out


# ----------------------------------------------------------------------------------------------------------
# What a run does with its workdir: start fresh, resume, or stop (finished / refused)


@dataclasses.dataclass
class RunPlan:
    """The decision :func:`open_run` takes for a workdir.

    Attributes:
      run_id: the id of the run this process continues or starts (stored in ``run.json`` and in every
        checkpoint's metadata).
      resume_steps: the run's finalised checkpoint steps, newest first (empty: a fresh start).
      finished: the newest checkpoint is at ``train.steps`` already: nothing is trained.
      fresh: a new run (``run.json`` to be written).
    """

    run_id: str
    resume_steps: list[int]
    finished: bool = False
    fresh: bool = False


def checkpoint_steps(directory: Path) -> list[int]:
    """Finalised checkpoint steps in ``directory`` (orbax renames a save to ``<step>`` only when complete)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def checkpoint_meta(directory: Path, step: int) -> dict | None:
    """The JSON metadata of checkpoint ``step`` (``{"step", "config", "run_id", ...}``); None if unreadable."""
    try:
        return json.loads((Path(directory) / str(int(step)) / "meta" / "metadata").read_text())
    except (OSError, ValueError):
        return None


def _fmt(v) -> str:
    return json.dumps(v) if not isinstance(v, str) or v == "<absent>" else repr(v)


def open_run(cfg, workdir: Path, *, is_main: bool = True, sync=lambda name: None) -> RunPlan:
    """Decide what a run with ``cfg`` does in ``workdir`` (held under its lock); see docs/training.md.

    * no checkpoints: a fresh run (a new run id; the files of an earlier run that never checkpointed are
      moved to ``archive/<its id>/``);
    * checkpoints and ``checkpoint.resume`` (default): resume the run, after checking that every key that
      defines it (:data:`DEFINING`) is unchanged (``train.steps`` may grow); a run at ``train.steps``
      already is finished;
    * checkpoints and ``checkpoint.resume=False`` (or checkpoints disabled): refused unless
      ``checkpoint.fresh=True``, which moves the earlier run to ``archive/<run id>/`` and starts a new one.

    Only process 0 (``is_main``) changes files; ``sync(name)`` is a barrier between processes.

    Raises:
      ConfigError: changed defining keys (listed ``key: old → new``), ``train.steps`` below the checkpoint's
        step, or ``resume=False`` in a workdir with checkpoints without ``checkpoint.fresh=True``.
    """
    from jalign.train.config import ConfigError

    workdir = Path(workdir)
    ck_dir = workdir / "checkpoints"
    sync("jalign_open_run_read")
    record = read_run(workdir)
    steps = checkpoint_steps(ck_dir)
    old_id = record.get("run_id") if record else None
    label = f"run {old_id}" if old_id else "an earlier run"
    archive = False
    if steps and (cfg.checkpoint.fresh or not (cfg.checkpoint.resume and cfg.checkpoint.enabled)):
        if not cfg.checkpoint.fresh:
            why = "checkpoint.resume=False" if cfg.checkpoint.enabled else "checkpoint.enabled=False"
            raise ConfigError(
                f"workdir {workdir} holds the checkpoints of {label} (steps {steps[0]}..{steps[-1]}); {why} "
                f"would start a new run over them. Set checkpoint.fresh=True to move that run to "
                f"{workdir / 'archive' / (old_id or '<new id>')}/ and start afresh, resume it "
                "(checkpoint.resume=True), or use another workdir")
        archive = True
    elif not steps and (workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").stat().st_size:
        archive = True  # an earlier run that never saved a checkpoint: keep its files, start afresh
    if archive or not steps:
        sync("jalign_open_run_archive")
        if is_main:
            if archive:
                dest = archive_run(workdir, old_id)
                log.warning("workdir %s: %s (checkpoints: %s) was moved to %s; starting a new run", workdir,
                            label, steps or "none", dest)
        run_id = new_run_id()
        if is_main:
            write_run(workdir, run_id)
        sync("jalign_open_run_archived")
        return RunPlan(run_id=run_id, resume_steps=[], fresh=True)

    run_id = old_id or new_run_id()  # checkpoints without run.json (written before run ids existed)
    foreign = {s: m.get("run_id") for s in steps if (m := checkpoint_meta(ck_dir, s)) and m.get("run_id")
               not in (None, run_id)}
    if foreign:
        raise ConfigError(f"workdir {workdir}: checkpoints {sorted(foreign)} belong to other runs "
                          f"({sorted(set(foreign.values()))}) than {label}; move them away or use another workdir")
    newest = steps[-1]
    meta = next((m for s in reversed(steps) if (m := checkpoint_meta(ck_dir, s)) is not None), None)
    if meta is not None and "config" in meta:
        diff = config_diff(meta["config"], json.loads(cfg.to_json()))
        if diff:
            lines = "; ".join(f"{k}: {_fmt(a)} → {_fmt(b)}" for k, a, b in diff)
            raise ConfigError(
                f"workdir {workdir} holds {label} at step {meta.get('step', newest)} with a different "
                f"configuration: {lines}. Resuming would continue its weights under other settings. Keep the "
                "stored values (workdir/config.json), use another workdir, or start a new run here with "
                "checkpoint.resume=False checkpoint.fresh=True (the old run is archived)")
    if newest > cfg.train.steps:
        raise ConfigError(f"config train.steps={cfg.train.steps} is below step {newest} of {label} in workdir "
                          f"{workdir}; train.steps may only grow on resume")
    if is_main and record is None:
        write_run(workdir, run_id)
    return RunPlan(run_id=run_id, resume_steps=sorted(steps, reverse=True), finished=newest == cfg.train.steps)

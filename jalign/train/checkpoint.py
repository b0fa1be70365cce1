"""Checkpoints with orbax: train state (parameters, optimiser, reference, step, RNG) + data-iterator state.

Layout of ``workdir/checkpoints``::

    <step>/                       one directory per saved step (orbax CheckpointManager)
      state/                      the TrainState as a nested dict of arrays (orbax StandardSave, OCDBT),
                                  keys = pytree paths: params/embed/embedding, opt_state/0/mu/..., rng, step
      data/metadata               JSON: the batch source's get_state()
      meta/metadata               JSON: {"step", "config", "process_count"}
    data_states/<step>/process_<i>.json   multi-process runs only: every process's own iterator state
                                          (written before the orbax save is requested)
      _CHECKPOINT_METADATA, commit_success.txt    written by orbax when the step is finalised
    <step>.orbax-checkpoint-tmp-<ts>/             an unfinished save: never listed, removed on next start

orbax writes each save into a temporary directory and renames it only when complete (atomic finalisation),
so a run killed mid-save leaves a ``*.orbax-checkpoint-tmp-*`` directory that :meth:`Checkpointer.latest_step`
ignores. ``keep`` is orbax's ``max_to_keep``. Arrays are restored with the shardings of the abstract state.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    raise TypeError(f"unsupported pytree key {k!r}")


def to_nested_dict(tree) -> dict:
    """The leaves of ``tree`` as a nested dict keyed by their pytree paths (``.value`` of nnx Variables
    dropped); the inverse is :func:`from_nested_dict` with the same tree structure."""
    out: dict = {}
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        names = [_key_name(k) for k in path]
        if len(names) > 1 and names[-1] == "value":
            names = names[:-1]
        names = names or ["_"]
        node = out
        for n in names[:-1]:
            node = node.setdefault(n, {})
            if not isinstance(node, dict):
                raise ValueError(f"pytree path {'/'.join(names)} collides with a leaf")
        if names[-1] in node:
            raise ValueError(f"two pytree leaves map to the checkpoint key {'/'.join(names)}")
        node[names[-1]] = leaf
    return out


def from_nested_dict(nested: dict, like) -> Any:
    """Rebuild a pytree with the structure of ``like`` from :func:`to_nested_dict` output."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    vals = []
    for path, _ in leaves:
        names = [_key_name(k) for k in path]
        if len(names) > 1 and names[-1] == "value":
            names = names[:-1]
        node = nested
        for n in names or ["_"]:
            node = node[n]
        vals.append(node)
    return jax.tree_util.tree_unflatten(treedef, vals)


class Checkpointer:
    """Save / restore ``(TrainState, data_state)`` under ``directory`` keeping the ``keep`` newest steps."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 cleanup_tmp_directories=True, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest *finalised* step (unfinished tmp directories are ignored), or ``None``."""
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def _data_file(self, step: int) -> Path:
        return self.directory / "data_states" / str(int(step)) / f"process_{jax.process_index()}.json"

    def save(self, step: int, state, data_state: Any, meta: dict | None = None) -> None:
        """Request a save of ``state`` at ``step`` (asynchronous if configured; :meth:`wait` blocks).

        With several processes each one's data state goes to ``data_states/<step>/process_<i>.json``
        (orbax's JSON items are written by the primary process only).
        """
        if jax.process_count() > 1:
            path = self._data_file(step)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data_state))
            os.replace(tmp, path)
            kept = self.all_steps()
            for old in (self.directory / "data_states").iterdir():
                if old.name.isdigit() and kept and int(old.name) < min(kept) and int(old.name) != step:
                    shutil.rmtree(old, ignore_errors=True)
        self._mngr.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(to_nested_dict(state)),
                                    data=ocp.args.JsonSave(data_state),
                                    meta=ocp.args.JsonSave(meta or {})),
            force=True,
        )

    def restore(self, step: int | None, like) -> tuple[Any, Any, dict]:
        """``(state, data_state, meta)`` at ``step`` (default: latest); ``like`` gives structure, dtypes and
        shardings (concrete arrays or ``jax.ShapeDtypeStruct`` with ``sharding``)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no finalised checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, to_nested_dict(like))
        r = self._mngr.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        data = r.data
        if jax.process_count() > 1:
            data = json.loads(self._data_file(step).read_text())
        return from_nested_dict(r.state, like), data, dict(r.meta or {})

    def reload(self) -> None:
        """Re-read the directory (after checkpoints were moved away by hand or by the trainer)."""
        self._mngr.reload()

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

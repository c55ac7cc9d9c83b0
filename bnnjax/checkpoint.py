"""Run directories and training checkpoints (orbax).

A run directory holds::

    config.json       the TrainConfig with its defaults resolved
                      (TrainConfig.to_dict(resolved=True)), written when
                      the run starts or resumes
    metrics.jsonl     one JSON object per epoch per seed, flushed at once
    checkpoints/      orbax CheckpointManager steps, one per saved epoch
    *.png             plots written at the end

:func:`prepare_run_dir` refuses to touch a directory that already holds
files unless the caller resumes. :class:`Checkpointer` saves a pytree of
arrays (parameters, batch statistics, optimizer state) with a small JSON
record (epoch, step, leaf paths) through ``orbax.checkpoint``: each save
is written to a temporary directory and renamed when complete, so a kill
during a save leaves the previous checkpoint loadable (the temporary
directory is ignored and removed at the next start). A checkpoint that
cannot be restored, or that was written for another model, raises
:class:`CheckpointError` naming the directory and what to do.

In a multi-process job every process creates the :class:`Checkpointer`
and calls :meth:`~Checkpointer.save` and :meth:`~Checkpointer.restore`
together (orbax writes collectively: process 0 the metadata and
replicated arrays, each process the shards only it holds), on a directory
every host can reach. The other helpers write files: call them from
process 0 only.

``orbax.checkpoint`` is imported when a :class:`Checkpointer` is created,
not at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np

__all__ = [
    "CONFIG_FILE",
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "CheckpointError",
    "Checkpointer",
    "append_metrics",
    "prepare_run_dir",
    "read_config",
    "read_metrics",
    "truncate_metrics",
    "write_config",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the model."""


def prepare_run_dir(path: str | os.PathLike[str], *, resume: bool) -> str:
    """Checks a run directory before anything is written.

    Args:
      path: the run directory.
      resume: continue the run stored there.

    Returns:
      The absolute path.

    Raises:
      FileExistsError: if ``path`` is a file, or holds files and ``resume``
        is false.
      FileNotFoundError: if ``resume`` is true and ``path`` holds no
        ``config.json``.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(
            f"Run directory {path!r} is a file; choose another --out."
        )
    entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
    if resume:
        if CONFIG_FILE not in entries:
            raise FileNotFoundError(
                f"Nothing to resume in {path!r}: it holds no {CONFIG_FILE}. "
                "Start a new run without --resume."
            )
    elif entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise FileExistsError(
            f"Run directory {path!r} is not empty (holds {shown}); pass "
            "--resume to continue that run, or choose another --out. "
            "Nothing was overwritten."
        )
    return path


def write_config(path: str, config: Mapping[str, Any]) -> None:
    """Writes ``config.json`` (atomically: temporary file, then rename)."""
    os.makedirs(path, exist_ok=True)
    target = os.path.join(path, CONFIG_FILE)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(config), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, target)


def read_config(path: str) -> dict[str, Any]:
    """Reads ``config.json`` from a run directory.

    Raises:
      FileNotFoundError: if it is missing.
      ValueError: if it is not a JSON object.
    """
    target = os.path.join(path, CONFIG_FILE)
    try:
        with open(target) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{target}: not valid JSON ({e}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{target}: expected a JSON object.")
    return config


def append_metrics(path: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends records to ``metrics.jsonl``, one line each, and flushes."""
    with open(os.path.join(path, METRICS_FILE), "a") as f:
        for record in records:
            f.write(json.dumps(dict(record), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl``; a missing file gives ``[]``.

    A last line cut short by a kill is skipped; any other unreadable line
    raises ``ValueError`` naming the line.
    """
    target = os.path.join(path, METRICS_FILE)
    if not os.path.exists(target):
        return []
    with open(target) as f:
        lines = f.read().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(
                f"{target}:{number}: not a JSON object: {line[:80]!r}"
            ) from None
    return records


def truncate_metrics(path: str, *, last_epoch: int) -> list[dict[str, Any]]:
    """Keeps only the records of epochs ``<= last_epoch``; returns them.

    Used when resuming: epochs logged after the last checkpoint are run
    again and must not appear twice.
    """
    kept = [r for r in read_metrics(path) if r.get("epoch", 0) <= last_epoch]
    target = os.path.join(path, METRICS_FILE)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        for record in kept:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return kept


def _leaf_paths(tree: Any) -> list[str]:
    return [
        jax.tree_util.keystr(path)
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


class Checkpointer:
    """Saves and restores one run's training state with orbax.

    The state (any pytree of arrays) is stored as a flat mapping from leaf
    index to array, next to a JSON record with the leaf paths, shapes and
    dtypes, the epoch and anything the caller adds. Restoring checks that
    record against the state the caller expects before reading arrays, so a
    checkpoint of another model fails with the first differing leaf named.

    Args:
      directory: where the steps go (created if missing).
      max_to_keep: how many recent checkpoints to keep.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_to_keep: int = 2
    ):
        import orbax.checkpoint as ocp  # heavy: imported lazily

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_epoch(self) -> int | None:
        """The most recent complete checkpoint's epoch, or ``None``."""
        return self._manager.latest_step()

    def all_epochs(self) -> list[int]:
        """Epochs of every complete checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(
        self, epoch: int, state: Any, info: Mapping[str, Any] | None = None
    ) -> None:
        """Saves ``state`` as the checkpoint of ``epoch`` (blocking).

        Args:
          epoch: the number of completed epochs (the orbax step).
          state: a pytree of arrays.
          info: JSON-serialisable values stored alongside.
        """
        ocp = self._ocp
        leaves = jax.tree.leaves(state)
        meta = {
            **dict(info or {}),
            "epoch": int(epoch),
            "paths": _leaf_paths(state),
            "shapes": [list(np.shape(x)) for x in leaves],
            "dtypes": [str(np.dtype(x.dtype)) for x in leaves],
        }
        arrays = {f"{i:05d}": x for i, x in enumerate(leaves)}
        self._manager.save(
            int(epoch),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def info(self, epoch: int | None = None) -> dict[str, Any]:
        """The JSON record saved with a checkpoint (default: the latest).

        Raises:
          CheckpointError: if there is no checkpoint or it is unreadable.
        """
        ocp = self._ocp
        if epoch is None:
            epoch = self.latest_epoch()
        if epoch is None:
            raise CheckpointError(f"No checkpoint in {self.directory!r}.")
        where = os.path.join(self.directory, str(epoch))
        try:
            meta = self._manager.restore(
                epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )["meta"]
        except Exception as e:  # orbax raises many types
            raise CheckpointError(
                f"Checkpoint {where!r} is unreadable or incomplete "
                f"({type(e).__name__}: {str(e)[:300]}). Delete it to resume "
                "from the previous checkpoint, or start a new run in another "
                "directory."
            ) from e
        if not isinstance(meta, dict) or meta.get("epoch") != epoch:
            raise CheckpointError(
                f"Checkpoint {where!r} has an invalid record: {meta!r}."
            )
        return dict(meta)

    def restore(
        self,
        like: Any,
        epoch: int | None = None,
        *,
        sharding: jax.sharding.Sharding | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Restores the checkpoint of ``epoch`` (default: the latest).

        Arrays are read straight into their target sharding, whatever the
        devices that saved them: a checkpoint saved on ``N`` devices (or
        hosts) restores on ``M``.

        Args:
          like: a pytree with the expected structure, shapes and dtypes
            (arrays or ``jax.ShapeDtypeStruct``), e.g. a freshly initialised
            state. A leaf's ``sharding`` (a ``jax.Array``'s, or a
            ``ShapeDtypeStruct``'s when set) is its target sharding.
          epoch: which checkpoint; default the latest complete one.
          sharding: target sharding of every leaf, overriding ``like``'s.
            Leaves with neither go to the default device in a single
            process, and are replicated on every device of a multi-process
            job.

        Returns:
          ``(state, info)``: the state in ``like``'s structure and the JSON
          record saved with it.

        Raises:
          CheckpointError: if there is no checkpoint, it cannot be read, or
            it holds another structure, shape or dtype than ``like``.
        """
        ocp = self._ocp
        meta = self.info(epoch)
        epoch = meta["epoch"]
        where = os.path.join(self.directory, str(epoch))
        hint = (
            f"Delete {where!r} to resume from the previous checkpoint, or "
            "start a new run in another directory."
        )
        leaves, treedef = jax.tree.flatten(like)
        expected: dict[str, list[Any]] = {
            "paths": _leaf_paths(like),
            "shapes": [list(np.shape(x)) for x in leaves],
            "dtypes": [str(np.dtype(x.dtype)) for x in leaves],
        }
        for key, want in expected.items():
            got = meta.get(key)
            if got != want:
                raise CheckpointError(
                    f"Checkpoint {where!r} does not match this model: "
                    f"{_first_difference(key, got, want, expected['paths'])}."
                    " Was it written with another configuration? "
                    f"{hint}"
                )
        abstract = {
            f"{i:05d}": jax.ShapeDtypeStruct(
                np.shape(x), x.dtype, sharding=_target_sharding(x, sharding)
            )
            for i, x in enumerate(leaves)
        }
        try:
            arrays = self._manager.restore(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract)
                ),
            )["state"]
        except Exception as e:  # orbax raises many types
            raise CheckpointError(
                f"Checkpoint {where!r} could not be restored "
                f"({type(e).__name__}: {str(e)[:300]}). {hint}"
            ) from e
        state = jax.tree.unflatten(
            treedef, [arrays[f"{i:05d}"] for i in range(len(leaves))]
        )
        return state, dict(meta)

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _target_sharding(
    leaf: Any, sharding: jax.sharding.Sharding | None
) -> jax.sharding.Sharding:
    if sharding is not None:
        return sharding
    own = getattr(leaf, "sharding", None)
    if isinstance(own, jax.sharding.Sharding):
        return own
    if jax.process_count() == 1:
        return jax.sharding.SingleDeviceSharding(jax.devices()[0])
    from bnnjax import distributed

    return distributed.replicated(distributed.data_mesh())


def _first_difference(
    key: str, got: Any, want: list[Any], paths: list[str]
) -> str:
    if not isinstance(got, list):
        return f"its record has no {key!r}"
    if len(got) != len(want):
        return f"it holds {len(got)} arrays, the model needs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            return f"{key[:-1]} of {paths[i]} is {g}, the model needs {w}"
    return f"{key} differ"  # pragma: no cover - lists compared unequal

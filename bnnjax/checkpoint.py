"""Run directories and training checkpoints (orbax).

A run directory holds::

    config.json       the TrainConfig with its defaults resolved
                      (TrainConfig.to_dict(resolved=True)), written when
                      the run starts or resumes
    metrics.jsonl     one JSON object per epoch per seed, flushed at once
    checkpoints/      orbax CheckpointManager steps, one per saved epoch
    *.png             plots written at the end
    .lock             while a process owns the directory: its PID
                      (bnnjax.training.rundir.lock_run_dir)

:func:`prepare_run_dir` refuses to touch a directory that already holds
files unless the caller resumes. :class:`Checkpointer` saves a pytree of
arrays (parameters, batch statistics, optimizer state) with a small JSON
record (epoch, step, leaf paths) through ``orbax.checkpoint``: each save
is written to a temporary directory and renamed when complete, so a kill
during a save leaves the previous checkpoint loadable (the temporary
directory is ignored and removed at the next start). A checkpoint that
cannot be restored, or that was written for another model, raises
:class:`CheckpointError` naming the directory and what to do.

A full file system raises :class:`DiskFullError`, naming what could not
be written and the last complete checkpoint: a checkpoint that did not
fit is removed, and ``config.json`` and ``metrics.jsonl`` are left as
they were before the failed write. A run directory that cannot be created
or written raises :class:`RunDirectoryError`, which says why, and one
that another process holds (``bnnjax.training.rundir.lock_run_dir``)
raises :class:`RunDirectoryInUseError`, which names that process.

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

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np

__all__ = [
    "CONFIG_FILE",
    "CHECKPOINT_DIR",
    "LOCK_FILE",
    "METRICS_FILE",
    "CheckpointError",
    "Checkpointer",
    "DiskFullError",
    "RunDirectoryError",
    "RunDirectoryInUseError",
    "append_metrics",
    "is_disk_full",
    "last_complete_epoch",
    "prepare_run_dir",
    "read_config",
    "read_metrics",
    "run_dir_error",
    "truncate_metrics",
    "write_config",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not match the model."""


class RunDirectoryError(OSError):
    """A run directory cannot be created or written; the message says why.

    Attributes:
      path: the run directory.
    """

    def __init__(self, message: str, *, path: str, code: int | None = None):
        super().__init__(message)
        self.errno = code
        self.path = path


class RunDirectoryInUseError(OSError):
    """Another process holds the run directory's lock.

    Attributes:
      path: the run directory.
      pid: the process that holds it (``None`` if it has not written its
        PID yet).
      purpose: what that process said it is doing (e.g. ``"training"``).
    """

    def __init__(self, path: str, pid: int | None, purpose: str | None):
        who = "another process" if pid is None else f"process {pid}"
        if purpose:
            who += f" ({purpose})"
        super().__init__(
            f"The run directory {path} is in use by {who}; wait until it "
            "ends, or use another directory."
        )
        self.errno = errno.EWOULDBLOCK
        self.path = path
        self.pid = pid
        self.purpose = purpose


class DiskFullError(OSError):
    """A write in a run directory failed: its file system is full.

    Attributes:
      path: what could not be written.
      last_epoch: the epoch of the last complete checkpoint, which is kept
        intact, or ``None`` if there is none.
    """

    def __init__(
        self, path: str, *, last_epoch: int | None, code: int = errno.ENOSPC
    ):
        full = (
            "The disk quota is exceeded"
            if code == errno.EDQUOT
            else "The disk is full"
        )
        kept = (
            "there is no complete checkpoint"
            if last_epoch is None
            else f"the last complete checkpoint is epoch {last_epoch}"
        )
        super().__init__(f"{full}: could not write {path}; {kept}.")
        self.errno = code
        self.path = path
        self.last_epoch = last_epoch


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) is a full file system.

    Python's writes raise ``OSError`` with ``errno.ENOSPC`` (or
    ``EDQUOT``); orbax's tensorstore writes raise a ``ValueError`` whose
    text starts ``RESOURCE_EXHAUSTED`` and ends with the OS error.
    """
    stack: list[BaseException | None] = [error]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        text = str(e)
        if "RESOURCE_EXHAUSTED" in text and (
            "No space left" in text
            or "os_error_code='28'" in text
            or "quota" in text.lower()
        ):
            return True
        stack += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return False


def run_dir_error(path: str, error: OSError, *, action: str) -> OSError:
    """The error for ``action`` (``"create"``, ``"write in"``) on a run dir.

    Args:
      path: the run directory.
      error: what the operating system raised.
      action: what failed, as in "cannot ACTION the run directory".

    Returns:
      A :class:`DiskFullError` for a full file system, otherwise a
      :class:`RunDirectoryError` naming ``path`` and the reason in words
      (``"/a/b is a file, not a directory"``, ``"the file system is
      read-only"``, ``"permission denied: /a is not writable"``).
    """
    if is_disk_full(error):
        return DiskFullError(
            path,
            last_epoch=last_complete_epoch(path),
            code=error.errno or errno.ENOSPC,
        )
    return RunDirectoryError(
        f"Cannot {action} the run directory {path}: {_why(path, error)}.",
        path=path,
        code=error.errno,
    )


def _why(path: str, error: OSError) -> str:
    """The reason for a failed ``error`` on ``path``, in words."""
    if error.errno == errno.ENOTDIR:
        parent = path
        while parent != os.path.dirname(parent):
            if os.path.exists(parent) and not os.path.isdir(parent):
                return f"{parent} is a file, not a directory"
            parent = os.path.dirname(parent)
        return "a part of the path is not a directory"
    if error.errno == errno.EROFS:
        return "the file system is read-only"
    if error.errno in (errno.EACCES, errno.EPERM):
        parent = path
        while not os.path.exists(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        return f"permission denied: {parent} is not writable"
    return (error.strerror or str(error)).lower()


def last_complete_epoch(run_dir: str) -> int | None:
    """The epoch of the last complete checkpoint in a run directory.

    Read from the listing, without orbax: a checkpoint is complete once
    orbax has renamed its temporary directory to the epoch number.
    """
    epochs = _complete_epochs(os.path.join(run_dir, CHECKPOINT_DIR))
    return max(epochs) if epochs else None


def _complete_epochs(directory: str) -> list[int]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        int(name)
        for name in names
        if name.isdigit() and os.path.isdir(os.path.join(directory, name))
    )


def prepare_run_dir(path: str | os.PathLike[str], *, resume: bool) -> str:
    """Checks a run directory before anything is written.

    Args:
      path: the run directory.
      resume: continue the run stored there.

    Returns:
      The absolute path.

    Raises:
      RunDirectoryError: if ``path`` is a file.
      FileExistsError: if ``path`` holds files and ``resume`` is false.
      FileNotFoundError: if ``resume`` is true and ``path`` holds no
        ``config.json``.

    The lock file (``.lock``, see ``bnnjax.training.rundir.lock_run_dir``)
    does not count as a file.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirectoryError(
            f"Cannot use {path} as the run directory: it is a file, not a "
            "directory.",
            path=path,
        )
    entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
    entries = [e for e in entries if e != LOCK_FILE]
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
    """Writes ``config.json`` (atomically: temporary file, then rename).

    If the write fails (a full disk), the previous ``config.json`` is
    left as it was and the temporary file is removed.
    """
    os.makedirs(path, exist_ok=True)
    text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
    _replace_file(os.path.join(path, CONFIG_FILE), text)


def _replace_file(target: str, text: str) -> None:
    """Replaces ``target`` by ``text`` through a temporary file."""
    tmp = target + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


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
    """Appends records to ``metrics.jsonl``, one line each, and flushes.

    All or nothing: if the write fails (a full disk), the file is cut
    back to its previous length.
    """
    data = "".join(
        json.dumps(dict(record), sort_keys=True) + "\n" for record in records
    ).encode()
    fd = os.open(
        os.path.join(path, METRICS_FILE),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


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
    _replace_file(
        os.path.join(path, METRICS_FILE),
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept),
    )
    return kept


def _leaf_paths(tree: Any) -> list[str]:
    return [
        jax.tree_util.keystr(path)
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _leaf_record(tree: Any) -> dict[str, list[Any]]:
    """The leaf paths, shapes and dtypes a checkpoint records of ``tree``."""
    leaves = jax.tree.leaves(tree)
    return {
        "paths": _leaf_paths(tree),
        "shapes": [list(np.shape(x)) for x in leaves],
        "dtypes": [str(np.dtype(x.dtype)) for x in leaves],
    }


def _flat_arrays(tree: Any) -> dict[str, Any]:
    """``tree``'s leaves by zero-padded index, as a checkpoint stores them."""
    return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}


class Checkpointer:
    """Saves and restores one run's training state with orbax.

    The state (any pytree of arrays) is stored as a flat mapping from leaf
    index to array, next to a JSON record with the leaf paths, shapes and
    dtypes, the epoch and anything the caller adds. Restoring checks that
    record against the state the caller expects before reading arrays, so a
    checkpoint of another model fails with the first differing leaf named.
    A checkpoint may hold further named pytrees beside the state (``extra``
    of :meth:`save`, e.g. the parameters of the best validation epoch),
    written in the same step, so they are complete exactly when the state is.

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
        self,
        epoch: int,
        state: Any,
        info: Mapping[str, Any] | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Saves ``state`` as the checkpoint of ``epoch`` (blocking).

        Args:
          epoch: the number of completed epochs (the orbax step).
          state: a pytree of arrays.
          info: JSON-serialisable values stored alongside.
          extra: further pytrees of arrays saved in the same checkpoint,
            by item name (not ``"state"`` or ``"meta"``); read back with
            ``restore(like, item=NAME)``.

        Raises:
          DiskFullError: if the file system is full. orbax's writer
            threads of the save are waited for, then the partial
            checkpoint is removed; the earlier ones are intact. What
            orbax's writer threads log about the failure is dropped.
        """
        ocp = self._ocp
        extra = dict(extra or {})
        reserved = sorted({"state", "meta"} & set(extra))
        if reserved:
            raise ValueError(
                f"Checkpointer.save: extra item names {reserved} are taken by "
                "the checkpoint itself; use other names."
            )
        meta = {
            **dict(info or {}),
            "epoch": int(epoch),
            **_leaf_record(state),
        }
        if extra:
            meta["extra"] = {
                name: _leaf_record(tree) for name, tree in extra.items()
            }
        items = {
            name: ocp.args.StandardSave(_flat_arrays(tree))
            for name, tree in {"state": state, **extra}.items()
        }
        with _WriterNoise() as noise:
            try:
                self._manager.save(
                    int(epoch),
                    args=ocp.args.Composite(
                        **items, meta=ocp.args.JsonSave(meta)
                    ),
                    force=True,
                )
                self._manager.wait_until_finished()
            except Exception as e:
                if not is_disk_full(e):
                    raise
                noise.discard()
                _join_writer_threads(_WRITER_JOIN_TIMEOUT_S)
                self._remove_partial(int(epoch))
                epochs = _complete_epochs(self.directory)
                raise DiskFullError(
                    os.path.join(self.directory, str(int(epoch))),
                    last_epoch=epochs[-1] if epochs else None,
                ) from e

    def _remove_partial(self, epoch: int) -> None:
        """Removes the temporary directory of a save that failed."""
        if jax.process_index() != 0:
            return
        pattern = os.path.join(
            glob.escape(self.directory), f"{epoch}.orbax-checkpoint-tmp*"
        )
        for partial in glob.glob(pattern):
            shutil.rmtree(partial, ignore_errors=True)

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
        item: str = "state",
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
          item: which pytree: ``"state"`` (default) or the name of one
            saved as ``extra``.

        Returns:
          ``(tree, info)``: the item in ``like``'s structure and the JSON
          record saved with the checkpoint.

        Raises:
          CheckpointError: if there is no checkpoint, it cannot be read, it
            has no such item, or the item has another structure, shape or
            dtype than ``like``.
        """
        ocp = self._ocp
        meta = self.info(epoch)
        epoch = meta["epoch"]
        where = os.path.join(self.directory, str(epoch))
        hint = (
            f"Delete {where!r} to resume from the previous checkpoint, or "
            "start a new run in another directory."
        )
        if item == "state":
            record = meta
        else:
            saved = meta.get("extra") or {}
            if item not in saved:
                raise CheckpointError(
                    f"Checkpoint {where!r} holds no {item!r} item (it holds "
                    f"{['state', *sorted(saved)]})."
                )
            record = saved[item]
        leaves, treedef = jax.tree.flatten(like)
        expected: dict[str, list[Any]] = _leaf_record(like)
        for key, want in expected.items():
            got = record.get(key)
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
                    **{item: ocp.args.StandardRestore(abstract)}
                ),
            )[item]
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


_WRITER_JOIN_TIMEOUT_S = 60.0


def _join_writer_threads(timeout: float) -> None:
    """Waits for orbax's writer threads after a failed save.

    When one write of a save fails, orbax's other writer threads of that
    save go on (each write fails in turn on a full disk). Waiting for them
    before the partial checkpoint is removed keeps them from writing into
    it as it goes, and keeps them from running into the interpreter's
    shutdown if the process exits on the error (they would then log
    errors such as "cannot schedule new futures after interpreter
    shutdown"). Waits at most ``timeout`` seconds in all.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is threading.current_thread() or not thread.is_alive():
            continue
        if not type(thread).__module__.startswith("orbax."):
            continue
        # Thread's own join: orbax's raises the thread's error.
        threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))


class _WriterNoise:
    """Holds back what orbax's writer threads report while a save runs.

    When a write fails, orbax logs the error with a traceback from each
    of its writer threads (absl logging), and tensorstore reports "Event
    loop is closed" as an unraisable exception for every write still
    pending; :meth:`Checkpointer.save` raises one error that says it all.
    While held, records of the ``absl`` and ``asyncio`` loggers and
    unraisable exceptions are kept; on exit they are passed on as usual
    (late, in order), unless :meth:`discard` was called.
    """

    _LOGGERS = ("absl", "asyncio")

    def __init__(self) -> None:
        self._records: list[logging.LogRecord] = []
        self._unraisable: list[Any] = []
        self._discard = False

    def __enter__(self) -> _WriterNoise:
        for name in self._LOGGERS:
            logging.getLogger(name).addFilter(self._hold)
        self._hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable.append
        return self

    def _hold(self, record: logging.LogRecord) -> bool:
        self._records.append(record)
        return False

    def discard(self) -> None:
        """Drops what was held instead of passing it on."""
        self._discard = True

    def __exit__(self, *exc: object) -> None:
        if self._discard:
            # Writes still pending in tensorstore report "Event loop is
            # closed" after the save has failed, and orbax's other writer
            # threads may log the same full disk once more, up to the
            # process's exit; drop those (only those) from now on. The
            # lasting filter goes on before the holding one comes off.
            for name in self._LOGGERS:
                logging.getLogger(name).addFilter(_late_disk_full_report)
        for name in self._LOGGERS:
            logging.getLogger(name).removeFilter(self._hold)
        sys.unraisablehook = self._hook
        if self._discard:
            sys.unraisablehook = _without_closed_loop(self._hook)
            return
        for record in self._records:
            logging.getLogger(record.name).handle(record)
        for unraisable in self._unraisable:
            self._hook(unraisable)


def _without_closed_loop(hook: Any) -> Any:
    """``hook`` that drops the reports of orbax's abandoned writes.

    After a full disk, writes still pending report
    ``RuntimeError('Event loop is closed')``, or, when the interpreter
    exits while one of orbax's write coroutines is unfinished, whatever
    that coroutine raised during shutdown (``ImportError: sys.meta_path
    is None``). Reports about anything else pass to ``hook``.
    """

    def filtered(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == (
            "Event loop is closed"
        ):
            return
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and _ORBAX_PATH in code.co_filename:
            return
        hook(unraisable)

    return filtered


_ORBAX_PATH = f"{os.sep}orbax{os.sep}"


def _late_disk_full_report(record: logging.LogRecord) -> bool:
    """Drops a writer thread's late report of a full disk (a log filter).

    After :meth:`Checkpointer.save` has raised :class:`DiskFullError`,
    orbax's writer threads that were still running can log the same
    failure (``RESOURCE_EXHAUSTED ... No space left on device``) with a
    traceback, and asyncio reports each of orbax's write tasks whose
    failure nobody retrieved ("Task exception was never retrieved",
    naming the orbax coroutine). Records from orbax's files, or naming
    them, that report a full file system are dropped; every other record
    passes.
    """
    if (
        _ORBAX_PATH not in record.pathname
        and _ORBAX_PATH not in record.getMessage()
    ):
        return True
    error = record.exc_info[1] if record.exc_info else None
    if error is not None and is_disk_full(error):
        return False
    return not is_disk_full(ValueError(record.getMessage()))


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

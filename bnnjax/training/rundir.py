"""The run directory: its owner, default name, resume checks and loading.

A run directory holds ``config.json``, ``metrics.jsonl``, the plots and
the checkpoints that :func:`bnnjax.train.run` writes.
:func:`lock_run_dir` makes one process its owner at a time,
:func:`load_checkpoint` rebuilds a run's model and state from it, and
:func:`check_resume_config` refuses to resume it with other settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnjax import checkpoint as ckpt
from bnnjax.training import selection as selection_lib
from bnnjax.training.config import TrainConfig
from bnnjax.training.step import TrainState, build_training, init_state

__all__ = [
    "RESUMABLE_CHANGES",
    "check_resume_config",
    "run_dir_problem",
    "default_out_dir",
    "load_checkpoint",
    "lock_run_dir",
]

RESUMABLE_CHANGES = ("epochs", "out_dir", "devices", "data_dir")
"""The :class:`~bnnjax.train.TrainConfig` fields a resumed run may change."""


def run_dir_problem(path: str) -> str | None:
    """Why ``path`` is not a run directory of ``bnnjax train``, or None.

    Returns:
      A phrase to follow the path (``"does not exist"``, ``"is not a
      directory"``, ``"is not a bnnjax run directory (no config.json)"``),
      or ``None`` for a run directory.
    """
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isdir(path):
        return "is not a directory"
    if not os.path.isfile(os.path.join(path, ckpt.CONFIG_FILE)):
        return f"is not a bnnjax run directory (no {ckpt.CONFIG_FILE})"
    return None


@dataclasses.dataclass
class _Held:
    """A run directory lock this process holds, and how often."""

    fd: int | None  # None: an unwritable directory without a lock file
    count: int
    created_dir: bool


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()
_PID_WAIT_SECONDS = 1.0


@contextlib.contextmanager
def lock_run_dir(
    path: str | os.PathLike[str], *, purpose: str, create: bool = True
) -> Iterator[str]:
    """Makes this process the run directory's only user while in the block.

    An exclusive ``flock`` on the file ``.lock``
    (:data:`bnnjax.checkpoint.LOCK_FILE`) in the directory, which holds
    the owner's PID and ``purpose``. Another process that asks for it
    meanwhile gets :class:`~bnnjax.checkpoint.RunDirectoryInUseError` at
    once (no waiting). The kernel releases the lock when its process
    ends, however it ends: a lock file left by a killed process blocks
    nobody. The lock is re-entrant within a process (a nested
    ``lock_run_dir`` on the same directory, from any thread, shares the
    outer one), and it is released, and its file removed, when the
    outermost block ends. It works across hosts only on file systems
    whose ``flock`` does (local ones, and NFS).

    Args:
      path: the run directory.
      purpose: what the holder does, shown to the process refused (e.g.
        ``"training"``, ``"export"``).
      create: create the directory (and its parents) if missing, as a run
        about to write there does; a directory created here is removed
        again if it is left empty. ``False`` (a reader): the directory
        must exist, and when no lock file can be created there (a
        read-only or full file system, no permission) and none exists, no
        writer can be using it and the block runs without a lock.

    Yields:
      The directory's absolute path.

    Raises:
      bnnjax.checkpoint.RunDirectoryInUseError: if another process holds
        the lock.
      bnnjax.checkpoint.RunDirectoryError: if the directory cannot be
        created or its lock file cannot be written.
      bnnjax.checkpoint.DiskFullError: if its file system is full.
      FileNotFoundError: if ``create`` is false and there is no directory.
    """
    path = os.path.abspath(os.fspath(path))
    key = os.path.realpath(path)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            held = _acquire(path, purpose, create=create)
            _HELD[key] = held
        else:
            held.count += 1
    try:
        yield path
    finally:
        with _HELD_GUARD:
            held.count -= 1
            if held.count == 0:
                del _HELD[key]
                _release(path, held)


def _acquire(path: str, purpose: str, *, create: bool) -> _Held:
    """Takes the lock of ``path`` (not held by this process yet)."""
    lock_file = os.path.join(path, ckpt.LOCK_FILE)
    if not create and not os.path.isdir(path):
        raise FileNotFoundError(f"There is no run directory {path}.")
    created_dir = False
    while True:
        if create and not os.path.isdir(path):
            try:
                os.makedirs(path)
                created_dir = True
            except FileExistsError:
                pass  # made by another process meanwhile, or a file
            except OSError as e:
                raise ckpt.run_dir_error(path, e, action="create") from None
        fd, writable = _open_lock_file(path, lock_file, create=create)
        if fd is None:
            return _Held(fd=None, count=1, created_dir=False)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, holder = _read_holder(fd)
            os.close(fd)
            raise ckpt.RunDirectoryInUseError(path, pid, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # The file may have been removed by its last holder between our
        # open and flock: then our lock is on a file nobody else will
        # open. Try again with the file now at that name.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_file))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if writable:
        # Without room for the PID (a full disk) the lock still holds; a
        # process refused is then told "another process".
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {purpose}\n".encode())
    return _Held(fd=fd, count=1, created_dir=created_dir)


def _open_lock_file(
    path: str, lock_file: str, *, create: bool
) -> tuple[int | None, bool]:
    """``(fd, writable)`` of the lock file; ``(None, False)``: no lock.

    A reader (``create=False``) that cannot create the lock file opens an
    existing one read-only (``flock`` needs no write access), and without
    one it needs no lock: no writer can have started there.
    """
    try:
        return os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644), True
    except OSError as e:
        if create or e.errno not in _UNWRITABLE:
            raise ckpt.run_dir_error(path, e, action="write in") from None
    try:
        return os.open(lock_file, os.O_RDONLY), False
    except FileNotFoundError:
        return None, False


_UNWRITABLE = (
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EDQUOT,
)


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """``(pid, purpose)`` from a held lock file; waits for a new holder."""
    deadline = time.monotonic() + _PID_WAIT_SECONDS
    while True:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        pid, _, purpose = text.partition(" ")
        if pid.isdigit():
            return int(pid), purpose or None
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.01)  # the holder has the lock but not written yet


def _release(path: str, held: _Held) -> None:
    """Removes the lock file, unlocks, and removes a directory left empty."""
    if held.fd is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(path, ckpt.LOCK_FILE))
    os.close(held.fd)  # releases the flock
    if held.created_dir:
        with contextlib.suppress(OSError):
            os.rmdir(path)  # only if nothing was written


def default_out_dir(now: datetime.datetime | None = None) -> str:
    """``runs/<YYYYmmdd-HHMMSS>`` (relative to the working directory)."""
    now = now or datetime.datetime.now()
    return os.path.join("runs", now.strftime("%Y%m%d-%H%M%S"))


def check_resume_config(out_dir: str, config: TrainConfig) -> None:
    """Checks that ``config`` may resume the run in ``out_dir``.

    Resolved values are compared (:meth:`TrainConfig.resolved`): a field
    left ``None`` matches the value its default gave the run, so
    ``learning_rate=None`` and the preset's learning rate given explicitly
    resume the same run. A ``None`` in ``config.json`` (older versions)
    stands for the default.

    Raises:
      ValueError: if a field other than :data:`RESUMABLE_CHANGES` differs
        from the run's ``config.json``; the message lists them with the
        values the run used.
    """
    saved_config = TrainConfig.from_dict(ckpt.read_config(out_dir))
    saved_values = saved_config.resolved().to_dict()
    current = config.resolved().to_dict()
    different = [
        f"{name}={saved_values[name]!r} (now {current[name]!r})"
        for name in current
        if name not in RESUMABLE_CHANGES and saved_values[name] != current[name]
    ]
    if different:
        raise ValueError(
            f"Cannot resume the run in {out_dir!r}: it was started with "
            + "; ".join(different)
            + ". Resume with the same settings (only epochs may change), or "
            "start a new run in another directory."
        )


def load_checkpoint(
    out_dir: str | os.PathLike[str],
    *,
    epoch: int | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[nn.Module, TrainState, dict[str, Any]]:
    """Loads a run's model and training state from its directory.

    A checkpoint written on any number of devices or hosts loads on any
    other: the arrays are read straight into ``sharding``. For a run with
    ``select="best_val"`` the state holds the selected parameters and
    batch statistics (per seed, those of the best validation epoch up to
    the checkpoint's; ``bnnjax.training.selection``), the ones its test
    result was measured on, and ``info["selected_epoch_per_seed"]`` names
    their epochs.

    Args:
      out_dir: a run directory written by :func:`bnnjax.train.run`.
      epoch: which checkpoint (default: the latest complete one).
      sharding: where every array goes, e.g.
        ``bnnjax.distributed.replicated(mesh)``. ``None``: the default
        device in a single process; replicated on every device in a
        multi-process job (where every process must call this).

    Returns:
      ``(model, state, info)``: the linen model, the :class:`TrainState`
      (leading seed axis, in ``config.seeds`` order) and the checkpoint's
      record (``epoch``, ``step``, ...).

    Raises:
      FileNotFoundError: if ``out_dir`` holds no run.
      bnnjax.checkpoint.CheckpointError: for a missing, corrupt or
        mismatched checkpoint.
    """
    out_dir = os.fspath(out_dir)
    config = TrainConfig.from_dict(ckpt.read_config(out_dir))
    with ckpt.Checkpointer(
        os.path.join(out_dir, ckpt.CHECKPOINT_DIR),
        max_to_keep=config.max_to_keep,
    ) as checkpointer:
        info = checkpointer.info(epoch)
        sample = jnp.zeros((1, *info["image_shape"]), jnp.float32)
        model, tx, _, _ = build_training(
            config, sample, info["num_classes"], info["steps_per_epoch"]
        )
        like = jax.eval_shape(
            lambda: init_state(
                model,
                tx,
                config.seeds,
                sample,
                sign_init=config.preset.sign_init,
            )
        )
        state, info = checkpointer.restore(
            like, info["epoch"], sharding=sharding
        )
        if config.select == "best_val":
            selection = selection_lib.restore_selection(
                checkpointer, state, info, sharding=sharding
            )
            state = selection_lib.selected_state(state, selection)
            info["selected_epoch_per_seed"] = list(selection.epoch)
    return model, state, info

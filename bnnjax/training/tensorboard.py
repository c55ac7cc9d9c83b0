"""TensorBoard event files from the per-epoch ``metrics.jsonl`` records.

:class:`TensorBoardWriter` writes each epoch's records as TensorBoard
scalars, so a run can be watched live with ``tensorboard --logdir`` beside
other runs; ``metrics.jsonl`` stays the record of the run. The events are
written by `tensorboardX <https://github.com/lanpa/tensorboardX>`_, which
needs no TensorFlow; it is the ``tensorboard`` extra
(``pip install 'bnnjax[tensorboard]'``) and is imported only when a writer
is made.

Layout, under the log directory: one TensorBoard run per seed,
``seed_<n>/``, and with more than one seed a ``mean/`` run holding the mean
over the seeds. The seeds of one run and the runs of other directories
then share each chart. Tags are the record's keys (``val_accuracy``,
``train_loss``, ``learning_rate``, ...); nested records are joined with
``/`` (``flip_ratio_layers/dense_0``, ``latent/head/std``), which
TensorBoard shows as one section per top-level key. The step is the epoch
(1-based). Values are stored as 32-bit floats, as TensorBoard stores every
scalar.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

__all__ = [
    "LOG_DIR_NAME",
    "MEAN_RUN",
    "TensorBoardWriter",
    "check_installed",
    "scalar_tags",
]

LOG_DIR_NAME = "tensorboard"
"""The log directory's name inside a run directory."""

MEAN_RUN = "mean"
"""The TensorBoard run that holds the mean over seeds."""

# Keys that say which record this is rather than what was measured.
_IDENTITY_KEYS = frozenset({"epoch", "seed", "step"})

_MISSING_EXTRA = (
    "TensorBoard logging needs the tensorboardX package, which is not "
    "installed; install it with: pip install 'bnnjax[tensorboard]'"
)


def check_installed() -> None:
    """Checks that tensorboardX (the ``tensorboard`` extra) is installed.

    Call it before a run starts, so that a missing extra is reported before
    the data is loaded; :class:`TensorBoardWriter` checks too.

    Raises:
      ModuleNotFoundError: naming the install command, if it is not.
    """
    try:
        import tensorboardX.event_file_writer
        import tensorboardX.proto.event_pb2
        import tensorboardX.summary  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(_MISSING_EXTRA) from err


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from _leaves(value[key], f"{prefix}/{key}")
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        yield prefix, float(value)


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` record, by TensorBoard tag.

    Args:
      record: one epoch's record for one seed.

    Returns:
      Every number in ``record`` except ``epoch``, ``seed`` and ``step``,
      keyed by its key path joined with ``/``, in sorted order. Strings,
      booleans, ``None`` and lists are left out.

    Example:
      >>> record = {"epoch": 2, "val_loss": 0.5, "latent": {"h": {"std": 1}}}
      >>> scalar_tags(record)
      {'latent/h/std': 1.0, 'val_loss': 0.5}
    """
    tags: dict[str, float] = {}
    for key in sorted(record):
        if key not in _IDENTITY_KEYS:
            tags.update(_leaves(record[key], str(key)))
    return tags


def _mean_tags(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean over seeds of each tag every seed has."""
    common = set(per_seed[0]).intersection(*per_seed[1:])
    return {
        tag: sum(tags[tag] for tags in per_seed) / len(per_seed)
        for tag in sorted(common)
    }


class _EventFile:
    """One TensorBoard run's event file, written synchronously."""

    def __init__(self, tbx: Any, run_dir: str, *, start_epoch: int) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self._tbx = tbx
        # Event files are named by the second they were opened in; the
        # suffix keeps a resumed run's file apart from (and sorted after)
        # one opened in the same second.
        suffix = f".from-epoch-{start_epoch:06d}" if start_epoch else ""
        self._events = tbx.event_file_writer.EventsWriter(
            os.path.join(run_dir, "events"), suffix
        )
        # TensorBoard's restart marker: a later marker in the same run hides
        # the points at and after its step written before it.
        event_pb2 = tbx.proto.event_pb2
        self._events.write_event(
            event_pb2.Event(
                wall_time=time.time(),
                step=start_epoch + 1,
                session_log=event_pb2.SessionLog(
                    status=event_pb2.SessionLog.START
                ),
            )
        )

    def write(self, step: int, tags: Mapping[str, float]) -> None:
        summary = self._tbx.summary.Summary(
            value=[
                value
                for tag, scalar in tags.items()
                for value in self._tbx.summary.scalar(tag, scalar).value
            ]
        )
        self._events.write_event(
            self._tbx.proto.event_pb2.Event(
                wall_time=time.time(), step=step, summary=summary
            )
        )

    def flush(self) -> None:
        self._events.flush()

    def close(self) -> None:
        self._events.close()


class TensorBoardWriter:
    """Writes per-epoch metrics records as TensorBoard event files.

    One call of :meth:`write_epoch` per epoch, with that epoch's records
    (one per seed, as ``metrics.jsonl`` holds them); each call ends with a
    flush, so TensorBoard shows the epoch as soon as it is written. Use it
    as a context manager, or call :meth:`close` at the end.

    A resumed run passes the epoch it resumes from as ``start_epoch``.
    Each seed's event file then starts with TensorBoard's restart marker
    at the next epoch, so the points an interrupted run wrote after its
    last checkpoint are replaced by the resumed run's, as
    ``metrics.jsonl`` is truncated to that checkpoint. A resumed run adds
    a new event file and never rewrites the earlier ones.

    Args:
      log_dir: the log directory (created on the first write); in a run
        directory, ``os.path.join(run_dir, LOG_DIR_NAME)``.
      start_epoch: the number of epochs already complete: 0 for a new
        run, the last checkpoint's epoch when resuming.

    Raises:
      ModuleNotFoundError: if tensorboardX (the ``tensorboard`` extra) is
        not installed.
      ValueError: for a negative ``start_epoch``.

    Example:
      >>> import tempfile
      >>> records = [{"epoch": 1, "seed": 0, "val_loss": 0.5}]
      >>> with tempfile.TemporaryDirectory() as log_dir:
      ...     with TensorBoardWriter(log_dir) as writer:
      ...         writer.write_epoch(1, records)
      ...     print(os.listdir(log_dir))
      ['seed_0']
    """

    def __init__(
        self, log_dir: str | os.PathLike[str], *, start_epoch: int = 0
    ) -> None:
        check_installed()
        import tensorboardX

        if isinstance(start_epoch, bool) or start_epoch < 0:
            raise ValueError(
                f"start_epoch={start_epoch!r}; expected an epoch count >= 0."
            )
        self._tbx = tensorboardX
        self.log_dir = os.fspath(log_dir)
        self.start_epoch = start_epoch
        self._files: dict[str, _EventFile] = {}
        self._closed = False

    def _file(self, run: str) -> _EventFile:
        if run not in self._files:
            self._files[run] = _EventFile(
                self._tbx,
                os.path.join(self.log_dir, run),
                start_epoch=self.start_epoch,
            )
        return self._files[run]

    def write_epoch(
        self,
        epoch: int,
        records: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    ) -> None:
        """Writes one epoch's records and flushes them to disk.

        Args:
          epoch: the epoch (1-based), the TensorBoard step.
          records: the epoch's ``metrics.jsonl`` records, one per seed,
            each with its ``seed``; or one record.

        Raises:
          ValueError: after :meth:`close`, or for a record without a
            ``seed`` or two records with the same seed.
        """
        if self._closed:
            raise ValueError("write_epoch on a closed TensorBoardWriter.")
        if isinstance(records, Mapping):
            records = [records]
        seeds = [record.get("seed") for record in records]
        if None in seeds or len(set(seeds)) != len(seeds):
            raise ValueError(
                f"records of epoch {epoch} have seeds {seeds}; expected one "
                "record per seed, each with its 'seed'."
            )
        per_seed = [scalar_tags(record) for record in records]
        runs = {
            f"seed_{seed}": tags
            for seed, tags in zip(seeds, per_seed, strict=True)
        }
        if len(per_seed) > 1:
            runs[MEAN_RUN] = _mean_tags(per_seed)
        for run, tags in runs.items():
            self._file(run).write(epoch, tags)
        self.flush()

    def flush(self) -> None:
        """Writes every pending event to disk (and syncs the files)."""
        for events in self._files.values():
            events.flush()

    def close(self) -> None:
        """Flushes and closes the event files; closing twice is a no-op."""
        for events in self._files.values():
            events.close()
        self._files.clear()
        self._closed = True

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

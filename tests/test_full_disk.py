"""A run directory on a full file system: one line, nothing corrupted.

Real full disks are small tmpfs mounts (skipped where mounting is not
permitted, e.g. not as root); the Python-side writers are also tested
with an injected ``ENOSPC``.
"""

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from unittest import mock

import jax.numpy as jnp
from absl.testing import absltest, parameterized
from cli_helpers import run_cli
from fs_helpers import mount_tmpfs

from bnnjax import checkpoint, train

FLAGS = [
    "--hidden",
    "16",
    "--epochs",
    "3",
    "--batch-size",
    "500",
    "--no-progress",
]
_CHILD = "import sys; from bnnjax import cli; sys.exit(cli.main(sys.argv[1:]))"
_TMP_CHECKPOINT = re.compile(r"\.orbax-checkpoint-tmp")
_ORBAX_FULL = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "00000/0.0" in OCDBT database at '
    'local file "/x/ocdbt.process_0/": Failed writing: "/x/d/1": Failed to '
    "write 744152 bytes to file 17: No space left on device "
    "[os_error_code='28']"
)


def _no_space(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _read_metrics_epochs(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line)["epoch"] for line in f]


def _partial_checkpoints(out):
    directory = os.path.join(out, "checkpoints")
    return [n for n in os.listdir(directory) if _TMP_CHECKPOINT.search(n)]


class _Tmp(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)


class IsDiskFullTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("enospc", _no_space("/x"), True),
        ("edquot", OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        ("orbax", _ORBAX_FULL, True),
        ("other_oserror", OSError(errno.EACCES, "Permission denied"), False),
        ("other_valueerror", ValueError("RESOURCE_EXHAUSTED: memory"), False),
    )
    def test_recognises_a_full_disk(self, error, full):
        self.assertEqual(checkpoint.is_disk_full(error), full)

    def test_looks_through_causes(self):
        try:
            try:
                raise _ORBAX_FULL
            except ValueError as e:
                raise RuntimeError("save failed") from e
        except RuntimeError as e:
            self.assertTrue(checkpoint.is_disk_full(e))


class AbandonedWriteReportsTest(absltest.TestCase):
    """The unraisable-hook filter installed after a full disk."""

    def _reports(self, *unraisables):
        seen = []
        hook = checkpoint._without_closed_loop(seen.append)
        for u in unraisables:
            hook(u)
        return seen

    def test_drops_closed_loop_and_orbax_coroutines_only(self):
        orbax_coroutine = types.SimpleNamespace(
            cr_code=types.SimpleNamespace(
                co_filename=os.path.join(
                    "site-packages", "orbax", "checkpoint", "serialization.py"
                )
            )
        )
        other_coroutine = types.SimpleNamespace(
            cr_code=types.SimpleNamespace(co_filename="/app/mine.py")
        )
        closed = types.SimpleNamespace(
            exc_value=RuntimeError("Event loop is closed"), object=None
        )
        shutdown = types.SimpleNamespace(
            exc_value=ImportError("sys.meta_path is None"),
            object=orbax_coroutine,
        )
        mine = types.SimpleNamespace(
            exc_value=ImportError("sys.meta_path is None"),
            object=other_coroutine,
        )
        plain = types.SimpleNamespace(exc_value=ValueError("x"), object=None)
        self.assertEqual(
            self._reports(closed, shutdown, mine, plain), [mine, plain]
        )


class LateWriterLogTest(absltest.TestCase):
    """The log filter for orbax's late reports of a full disk."""

    def _record(self, pathname, msg, error=None):
        exc_info = (type(error), error, None) if error is not None else None
        return logging.LogRecord(
            "absl", logging.ERROR, pathname, 1, msg, None, exc_info
        )

    def test_drops_orbax_disk_full_reports_only(self):
        orbax_file = os.path.join(
            "site-packages", "orbax", "checkpoint", "future.py"
        )
        keep = checkpoint._late_disk_full_report
        self.assertFalse(
            keep(self._record(orbax_file, "raised an exception", _ORBAX_FULL))
        )
        self.assertFalse(keep(self._record(orbax_file, str(_ORBAX_FULL))))
        self.assertTrue(
            keep(self._record(orbax_file, "raised", ValueError("other")))
        )
        self.assertTrue(keep(self._record("/app/mine.py", str(_ORBAX_FULL))))
        # asyncio's report of an orbax write task nobody awaited.
        task = (
            "Task exception was never retrieved\nfuture: <Task finished "
            "coro=<write_fragment() defined at "
            f"{orbax_file}:188> exception=ValueError('RESOURCE_EXHAUSTED')>"
        )
        asyncio_file = os.path.join("asyncio", "base_events.py")
        self.assertFalse(keep(self._record(asyncio_file, task, _ORBAX_FULL)))
        self.assertTrue(
            keep(self._record(asyncio_file, task, ValueError("other")))
        )
        self.assertTrue(
            keep(
                self._record(
                    asyncio_file,
                    "Task exception was never retrieved",
                    _ORBAX_FULL,
                )
            )
        )


class WritersTest(_Tmp):
    """``ENOSPC`` injected into the writes of the Python-side files."""

    def test_metrics_append_is_all_or_nothing(self):
        checkpoint.append_metrics(self.tmp, [{"epoch": 1}])
        path = os.path.join(self.tmp, checkpoint.METRICS_FILE)
        before = os.path.getsize(path)
        real_write = os.write

        def half_then_full(fd, data):
            if len(data) > 4:
                return real_write(fd, bytes(data[:4]))
            raise _no_space(path)

        with (
            mock.patch("os.write", side_effect=half_then_full),
            self.assertRaises(OSError) as cm,
        ):
            checkpoint.append_metrics(self.tmp, [{"epoch": 2}, {"epoch": 2}])
        self.assertEqual(cm.exception.errno, errno.ENOSPC)
        self.assertEqual(os.path.getsize(path), before)
        self.assertEqual(checkpoint.read_metrics(self.tmp), [{"epoch": 1}])

    def test_config_is_replaced_whole_or_not_at_all(self):
        checkpoint.write_config(self.tmp, {"epochs": 1})
        real_open = open

        def full_open(path, mode="r", *args, **kwargs):
            f = real_open(path, mode, *args, **kwargs)
            if "w" in mode:  # the file exists, its write fails
                f.close()
                raise _no_space(path)
            return f

        with (
            mock.patch("builtins.open", side_effect=full_open),
            self.assertRaises(OSError),
        ):
            checkpoint.write_config(self.tmp, {"epochs": 2})
        self.assertEqual(checkpoint.read_config(self.tmp), {"epochs": 1})
        self.assertEqual(os.listdir(self.tmp), [checkpoint.CONFIG_FILE])


class _Held(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


class _RaisesInDel:
    def __del__(self):
        raise RuntimeError("Event loop is closed")


class _LateWriter(threading.Thread):
    """Stands in for an orbax writer thread still writing after a failure.

    Its class names an orbax module, as orbax's writer threads' do.
    """

    __module__ = "orbax.checkpoint._src.futures.future"

    def __init__(self, directory):
        super().__init__(name="late_writer", daemon=True)
        self.directory = directory
        self.wrote = False

    def run(self):
        time.sleep(0.3)
        with open(os.path.join(self.directory, "late"), "w") as f:
            f.write("written after the save failed")
        self.wrote = True
        logging.getLogger("absl").error("late writer failed")


class CheckpointerTest(_Tmp):
    """orbax's ``RESOURCE_EXHAUSTED`` and its writer-thread noise."""

    def setUp(self):
        super().setUp()
        self.handler = _Held()
        logger = logging.getLogger("absl")
        logger.addHandler(self.handler)
        self.addCleanup(logger.removeHandler, self.handler)
        self.unraisable = []
        hook = sys.unraisablehook
        sys.unraisablehook = self.unraisable.append
        self.addCleanup(setattr, sys, "unraisablehook", hook)
        self.state = {"w": jnp.arange(6.0), "b": jnp.ones(2)}

    def _save_that(self, checkpointer, error):
        """A manager save that writes part, makes noise, then fails."""

        def save(step, args, force):
            os.makedirs(
                os.path.join(
                    checkpointer.directory, f"{step}.orbax-checkpoint-tmp"
                )
            )
            logging.getLogger("absl").error("writer thread failed")
            _RaisesInDel()  # an unraisable exception, as tensorstore's
            if error is not None:
                raise error

        return mock.patch.object(
            checkpointer._manager, "save", side_effect=save
        )

    def test_full_disk_one_error_no_noise_no_partial(self):
        directory = os.path.join(self.tmp, "checkpoints")
        with checkpoint.Checkpointer(directory) as checkpointer:
            checkpointer.save(1, self.state)
            with (
                self._save_that(checkpointer, _ORBAX_FULL),
                self.assertRaises(checkpoint.DiskFullError) as cm,
            ):
                checkpointer.save(2, self.state)
            self.assertEqual(checkpointer.all_epochs(), [1])
        error = cm.exception
        self.assertEqual(error.last_epoch, 1)
        self.assertEqual(error.errno, errno.ENOSPC)
        self.assertEqual(error.path, os.path.join(directory, "2"))
        self.assertEqual(
            str(error),
            f"The disk is full: could not write {directory}/2; the last "
            "complete checkpoint is epoch 1.",
        )
        self.assertEqual(os.listdir(directory), ["1"])
        self.assertEqual(self.handler.records, [])
        self.assertEqual(self.unraisable, [])
        # The earlier checkpoint is intact.
        with checkpoint.Checkpointer(directory) as checkpointer:
            restored, info = checkpointer.restore(self.state)
        self.assertEqual(info["epoch"], 1)
        self.assertEqual(restored["w"].tolist(), [0, 1, 2, 3, 4, 5])

    def test_full_disk_waits_for_writers_before_removing_the_partial(self):
        directory = os.path.join(self.tmp, "checkpoints")
        writers = []

        def save(step, args, force):
            partial = os.path.join(directory, f"{step}.orbax-checkpoint-tmp")
            os.makedirs(partial)
            writers.append(_LateWriter(partial))
            writers[-1].start()
            raise _ORBAX_FULL

        with checkpoint.Checkpointer(directory) as checkpointer:
            checkpointer.save(1, self.state)
            with (
                mock.patch.object(
                    checkpointer._manager, "save", side_effect=save
                ),
                self.assertRaises(checkpoint.DiskFullError),
            ):
                checkpointer.save(2, self.state)
        (writer,) = writers
        # The writer finished inside save(): what it wrote went with the
        # partial checkpoint, and its report was held back with the rest.
        self.assertFalse(writer.is_alive())
        self.assertTrue(writer.wrote)
        self.assertEqual(os.listdir(directory), ["1"])
        self.assertEqual(self.handler.records, [])

    def test_other_failures_keep_their_error_and_their_logs(self):
        directory = os.path.join(self.tmp, "checkpoints")
        with checkpoint.Checkpointer(directory) as checkpointer:
            other = ValueError("INVALID_ARGUMENT: something else")
            with (
                self._save_that(checkpointer, other),
                self.assertRaises(ValueError) as cm,
            ):
                checkpointer.save(1, self.state)
        self.assertIs(cm.exception, other)
        self.assertEqual(
            [r.getMessage() for r in self.handler.records],
            ["writer thread failed"],
        )
        self.assertLen(self.unraisable, 1)
        # The filter is gone: later records pass straight through.
        logging.getLogger("absl").error("after")
        self.assertLen(self.handler.records, 2)


class InjectedRunTest(_Tmp):
    """A whole run whose metrics write meets a full disk at epoch 2."""

    def test_cli_says_it_in_one_line_and_resume_completes(self):
        out = os.path.join(self.tmp, "run")
        real_append = checkpoint.append_metrics

        def append(path, records):
            records = list(records)
            if records[0]["epoch"] == 2:
                raise _no_space(os.path.join(path, checkpoint.METRICS_FILE))
            real_append(path, records)

        with mock.patch.object(checkpoint, "append_metrics", append):
            status, stdout, stderr = run_cli(["train", *FLAGS, "--out", out])
        self.assertEqual((status, stdout), (1, ""))
        self.assertEqual(
            stderr,
            "bnnjax train: error: The disk is full: could not write "
            f"{out}/metrics.jsonl; the last complete checkpoint is epoch 1. "
            "Free space on that disk, then continue with "
            f"`bnnjax train --resume --out {out}`.\n",
        )
        self.assertEqual(_read_metrics_epochs(out), [1])
        self.assertFalse(os.path.exists(os.path.join(out, ".lock")))

        status, _, stderr = run_cli(["train", "--resume", "--out", out])
        self.assertEqual(status, 0, stderr)
        self.assertEqual(_read_metrics_epochs(out), [1, 2, 3])

    def test_python_api_raises_disk_full_error(self):
        out = os.path.join(self.tmp, "run")
        config = train.TrainConfig(
            hidden=(16,), epochs=1, batch_size=500, out_dir=out
        )
        with (
            mock.patch.object(
                checkpoint, "write_config", side_effect=_no_space(out)
            ),
            self.assertRaises(checkpoint.DiskFullError) as cm,
        ):
            train.run(config, make_plots=False)
        self.assertIsNone(cm.exception.last_epoch)
        self.assertIn("there is no complete checkpoint", str(cm.exception))


class RealFullDiskTest(_Tmp):
    """``bnnjax train`` in a real process on a tmpfs that fills up.

    A checkpoint of the ``--hidden 16`` MLP takes about 220 KB of tmpfs,
    config.json and metrics.jsonl a 4 KB page each: 128 KB holds no
    checkpoint, 400 KB one (sometimes two: what orbax writes varies by a
    few pages), never the three of the run.
    """

    @parameterized.named_parameters(
        ("no_checkpoint_fits", "128k", (None,)),
        ("a_checkpoint_fits", "400k", (1, 2)),
    )
    def test_one_line_then_resume_after_freeing_space(self, size, possible):
        mount = os.path.join(self.tmp, "disk")
        mount_tmpfs(self, mount, f"size={size}")
        out = os.path.join(mount, "run")
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, "train", *FLAGS, "--out", out],
            capture_output=True,
            text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            timeout=300,
            check=False,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stdout, "")
        last = checkpoint.last_complete_epoch(out)
        self.assertIn(last, possible)
        kept = (
            "there is no complete checkpoint"
            if last is None
            else f"the last complete checkpoint is epoch {last}"
        )
        self.assertRegex(
            result.stderr,
            rf"\Abnnjax train: error: The disk is full: could not write "
            rf"{re.escape(out)}/checkpoints/{(last or 0) + 1}; {kept}\. "
            r"Free space on that disk, then continue with "
            rf"`bnnjax train --resume --out {re.escape(out)}`\.\n\Z",
        )
        self.assertEqual(_partial_checkpoints(out), [])
        self.assertEqual(checkpoint.read_config(out)["epochs"], 3)
        self.assertEqual(
            sorted(os.listdir(out)),
            ["checkpoints", "config.json", "metrics.jsonl"],
        )
        if last is not None:
            _, _, info = train.load_checkpoint(out)
            self.assertEqual(info["epoch"], last)

        subprocess.run(["mount", "-o", "remount,size=4m", mount], check=True)
        status, _, stderr = run_cli(["train", "--resume", "--out", out])
        self.assertEqual(status, 0, stderr)
        self.assertEqual(_read_metrics_epochs(out), [1, 2, 3])
        self.assertEqual(checkpoint.last_complete_epoch(out), 3)


if __name__ == "__main__":
    absltest.main()

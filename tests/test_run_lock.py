"""One process per run directory: the lock of ``lock_run_dir``.

Real processes hold the lock: a small holder script, and a real
``bnnjax train`` refused to a second ``train``, a ``--resume`` and an
``export``, then
killed with SIGKILL and resumed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from cli_helpers import run_cli
from fs_helpers import mount_tmpfs

from bnnjax import checkpoint, cli
from bnnjax.training import rundir

_TIMEOUT_SECONDS = 240
_CHILD = "import sys; from bnnjax import cli; sys.exit(cli.main(sys.argv[1:]))"
_HOLDER = (
    "import sys\n"
    "from bnnjax.training.rundir import lock_run_dir\n"
    "with lock_run_dir(sys.argv[1], purpose='holding'):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)
_ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _lock_file(path):
    return os.path.join(path, checkpoint.LOCK_FILE)


def _read(path):
    with open(path) as f:
        return f.read()


class _TmpDirTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _start(self, argv, **kwargs):
        proc = subprocess.Popen(
            [sys.executable, "-c", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_ENV,
            **kwargs,
        )
        self.addCleanup(_stop, proc)
        return proc


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


class LockRunDirTest(_TmpDirTest):
    def test_holds_the_pid_and_leaves_nothing_behind(self):
        run = os.path.join(self.tmp, "new")
        with rundir.lock_run_dir(run, purpose="testing") as path:
            self.assertEqual(path, run)
            self.assertEqual(_read(_lock_file(run)), f"{os.getpid()} testing\n")
            # Re-entrant in one process: a nested lock shares the outer.
            with rundir.lock_run_dir(run, purpose="reading"):
                pass
            self.assertTrue(os.path.exists(_lock_file(run)))
        # It created the directory and nothing was written: both gone.
        self.assertFalse(os.path.exists(run))

        kept = os.path.join(self.tmp, "kept")
        os.makedirs(kept)
        with open(os.path.join(kept, "notes.txt"), "w") as f:
            f.write("keep")
        with rundir.lock_run_dir(kept, purpose="testing"):
            pass
        self.assertEqual(os.listdir(kept), ["notes.txt"])

    def test_a_reader_needs_an_existing_directory(self):
        missing = os.path.join(self.tmp, "missing")
        with (
            self.assertRaisesRegex(FileNotFoundError, "no run directory"),
            rundir.lock_run_dir(missing, purpose="export", create=False),
        ):
            pass
        self.assertFalse(os.path.exists(missing))

    def test_a_reader_of_a_read_only_directory_needs_no_lock(self):
        mount = os.path.join(self.tmp, "ro")
        mount_tmpfs(self, mount, "size=64k,ro")
        with rundir.lock_run_dir(mount, purpose="export", create=False):
            self.assertEqual(os.listdir(mount), [])
        with (
            self.assertRaisesRegex(
                checkpoint.RunDirectoryError, "the file system is read-only"
            ),
            rundir.lock_run_dir(mount, purpose="training"),
        ):
            pass

    def test_another_process_is_refused_until_its_holder_dies(self):
        run = os.path.join(self.tmp, "run")
        holder = self._start([_HOLDER, run], stdin=subprocess.PIPE)
        self.assertEqual(holder.stdout.readline(), "held\n")
        with (
            self.assertRaises(checkpoint.RunDirectoryInUseError) as cm,
            rundir.lock_run_dir(run, purpose="testing"),
        ):
            self.fail("locked twice")
        error = cm.exception
        self.assertEqual((error.pid, error.purpose), (holder.pid, "holding"))
        self.assertEqual(error.path, run)
        self.assertIn(f"{run} is in use by process {holder.pid}", str(error))
        self.assertIsInstance(error, OSError)

        # SIGKILL: the kernel drops the lock; the file stays, stale.
        holder.kill()
        holder.wait(timeout=60)
        self.assertEqual(_read(_lock_file(run)), f"{holder.pid} holding\n")
        with rundir.lock_run_dir(run, purpose="testing"):
            self.assertEqual(_read(_lock_file(run)), f"{os.getpid()} testing\n")
        self.assertFalse(os.path.exists(_lock_file(run)))


class TrainLockTest(_TmpDirTest):
    """Real ``bnnjax train`` processes on one directory."""

    def test_second_run_and_resume_refused_then_sigkill_and_resume(self):
        out = os.path.join(self.tmp, "run")
        flags = ["--hidden", "16", "--batch-size", "500", "--no-progress"]
        # Long enough to outlive the two refused processes; killed below.
        holder = self._start(
            [_CHILD, "train", *flags, "--epochs", "1000", "--out", out]
        )
        first = os.path.join(out, "checkpoints", "1")
        deadline = time.monotonic() + _TIMEOUT_SECONDS
        while not (
            os.path.isdir(first)
            and os.path.exists(_lock_file(out))
            and _read(_lock_file(out)).startswith(f"{holder.pid} ")
        ):
            if holder.poll() is not None:
                self.fail(f"the run ended early: {holder.stderr.read()}")
            self.assertLess(time.monotonic(), deadline, "no checkpoint")
            time.sleep(0.05)

        second = self._start(
            [_CHILD, "train", *flags, "--epochs", "2", "--out", out]
        )
        resumed = self._start([_CHILD, "train", "--resume", "--out", out])
        for proc in (second, resumed):
            stdout, stderr = proc.communicate(timeout=_TIMEOUT_SECONDS)
            self.assertEqual(proc.returncode, 1, stderr)
            self.assertEqual(stdout, "")
            self.assertEqual(
                stderr,
                f"bnnjax train: error: The run directory {out} is in use "
                f"by process {holder.pid} (training); wait until it ends, "
                "or use another directory.\n",
            )
        # export reads under the same lock: refused while training runs.
        model_file = os.path.join(self.tmp, "model.bnnjax")
        status, stdout, stderr = run_cli(["export", out, "-o", model_file])
        self.assertEqual((status, stdout), (1, ""))
        self.assertEqual(
            stderr,
            f"bnnjax export: error: The run directory {out} is in use by "
            f"process {holder.pid} (training); wait until it ends, or use "
            "another directory.\n",
        )
        self.assertFalse(os.path.exists(model_file))
        self.assertIsNone(holder.poll())  # refusing touched nothing

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        self.assertEqual(_read(_lock_file(out)), f"{holder.pid} training\n")
        last = checkpoint.last_complete_epoch(out)
        self.assertGreaterEqual(last, 1)
        # The stale lock file of the killed run blocks nothing.
        status = cli.main(
            ["train", "--resume", "--epochs", str(last + 1), "--out", out]
        )
        self.assertEqual(status, 0)
        self.assertFalse(os.path.exists(_lock_file(out)))
        self.assertEqual(checkpoint.last_complete_epoch(out), last + 1)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            epochs = [json.loads(line)["epoch"] for line in f]
        self.assertEqual(epochs, list(range(1, last + 2)))
        status, _, stderr = run_cli(["export", out, "-o", model_file])
        self.assertEqual(status, 0, stderr)
        self.assertFalse(os.path.exists(_lock_file(out)))


if __name__ == "__main__":
    absltest.main()

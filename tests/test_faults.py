"""Real faults on a real ``bnnjax train`` process: SIGKILL during a
checkpoint write, SIGTERM and SIGINT mid-run, SIGKILL of a run that
augments its batches, then ``--resume``.

Each test starts the CLI in a child process, delivers the signal at a
chosen moment, checks what the run directory holds, resumes in-process and
requires the final parameters to equal those of an uninterrupted run bit
for bit.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import chex
import jax
from absl.testing import absltest, parameterized

from bnnjax import _cli_train, cli, train

EPOCHS = 5
FLAGS = [
    "--hidden",
    "16",
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "500",
    "--seed",
    "0,1",
    "--no-progress",
]
AUGMENTED = [*FLAGS, "--augment", "crop_flip"]
_TMP_CHECKPOINT = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
_CHILD = "import sys; from bnnjax import cli; sys.exit(cli.main(sys.argv[1:]))"
_TIMEOUT_SECONDS = 240


def _start(out_dir, flags=FLAGS):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, "train", *flags, "--out", out_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _final_params(out_dir):
    _, state, info = train.load_checkpoint(out_dir)
    return jax.device_get(state.params), info


def _wait_for(proc, condition, what):
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (status {proc.returncode}) before {what}:"
                f" {proc.stderr.read()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class FaultTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.reference = os.path.join(cls.tmp, "reference")
        status = cli.main(["train", *FLAGS, "--out", cls.reference])
        assert status == 0, status
        cls.want, info = _final_params(cls.reference)
        assert info["epoch"] == EPOCHS, info

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _resume_and_compare(self, out_dir):
        status = cli.main(["train", "--resume", "--out", out_dir])
        self.assertEqual(status, 0)
        got, info = _final_params(out_dir)
        self.assertEqual(info["epoch"], EPOCHS)
        chex.assert_trees_all_equal(got, self.want, strict=True)
        with open(os.path.join(out_dir, "metrics.jsonl")) as f:
            epochs = [json.loads(line)["epoch"] for line in f]
        # One record per seed and epoch: nothing lost, nothing repeated.
        self.assertEqual(
            epochs, [e for e in range(1, EPOCHS + 1) for _ in "01"]
        )

    def test_sigkill_during_checkpoint_write(self):
        out_dir = os.path.join(self.tmp, "killed")
        checkpoints = os.path.join(out_dir, "checkpoints")
        proc = _start(out_dir)
        try:
            while True:
                # Freeze the child the moment a checkpoint of epoch >= 2
                # is being written; kill it only if the write is still
                # unfinished (else let it run on to the next one).
                def writing():
                    try:
                        names = os.listdir(checkpoints)
                    except OSError:
                        return False
                    return any(
                        (m := _TMP_CHECKPOINT.match(n)) and int(m[1]) >= 2
                        for n in names
                    )

                _wait_for(proc, writing, "a checkpoint write at epoch >= 2")
                proc.send_signal(signal.SIGSTOP)
                partial = [
                    n
                    for n in os.listdir(checkpoints)
                    if _TMP_CHECKPOINT.match(n)
                ]
                if partial:
                    proc.kill()
                    break
                proc.send_signal(signal.SIGCONT)
            self.assertEqual(proc.wait(timeout=60), -signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        epoch_being_written = int(_TMP_CHECKPOINT.match(partial[0])[1])
        # The partial write is on disk; the previous checkpoint loads.
        self.assertTrue(os.path.isdir(os.path.join(checkpoints, partial[0])))
        _, info = _final_params(out_dir)
        self.assertEqual(info["epoch"], epoch_being_written - 1)
        self._resume_and_compare(out_dir)
        self.assertEqual(
            [n for n in os.listdir(checkpoints) if _TMP_CHECKPOINT.match(n)],
            [],
        )

    @parameterized.named_parameters(
        ("sigterm", signal.SIGTERM, 143, "terminated"),
        ("sigint", signal.SIGINT, 130, "interrupted"),
    )
    def test_signal_mid_run_then_resume(self, signum, status, word):
        out_dir = os.path.join(self.tmp, f"signal-{signum}")
        first = os.path.join(out_dir, "checkpoints", "1")
        proc = _start(out_dir)
        try:
            _wait_for(
                proc, lambda: os.path.isdir(first), "the first checkpoint"
            )
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, status, err)
        self.assertIn(f"bnnjax train: {word}", err)
        self.assertIn(f"--resume --out {out_dir}", err)
        self.assertNotIn("Traceback", err)
        _, info = _final_params(out_dir)
        self.assertGreaterEqual(info["epoch"], 1)
        self._resume_and_compare(out_dir)


class AugmentedFaultTest(absltest.TestCase):
    """A run that augments on the device, killed and resumed, ends where
    the uninterrupted run ends: the draws depend on (seed, step) only."""

    def test_sigkill_then_resume_is_bit_identical(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        reference = os.path.join(tmp, "reference")
        self.assertEqual(cli.main(["train", *AUGMENTED, "--out", reference]), 0)
        want, _ = _final_params(reference)
        out_dir = os.path.join(tmp, "killed")
        first = os.path.join(out_dir, "checkpoints", "1")
        proc = _start(out_dir, AUGMENTED)
        try:
            _wait_for(
                proc, lambda: os.path.isdir(first), "the first checkpoint"
            )
            proc.kill()
            self.assertEqual(proc.wait(timeout=60), -signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        _, info = _final_params(out_dir)
        self.assertLess(info["epoch"], EPOCHS)
        self.assertEqual(cli.main(["train", "--resume", "--out", out_dir]), 0)
        with open(os.path.join(out_dir, "config.json")) as f:
            self.assertEqual(json.load(f)["augment"], "crop_flip")
        got, info = _final_params(out_dir)
        self.assertEqual(info["epoch"], EPOCHS)
        chex.assert_trees_all_equal(got, want, strict=True)


class StopOnSignalTest(parameterized.TestCase):
    """The CLI's handler defers a signal to a step boundary once armed."""

    def setUp(self):
        super().setUp()
        self.before = {
            s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)
        }
        self.stop = _cli_train._StopOnSignal()
        self.stop.install()
        self.addCleanup(self.stop.restore)

    @parameterized.named_parameters(
        ("sigterm", signal.SIGTERM, _cli_train._Terminated),
        ("sigint", signal.SIGINT, KeyboardInterrupt),
    )
    def test_before_first_step_raises_at_once(self, signum, error):
        with self.assertRaises(error):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler runs before this returns

    @parameterized.named_parameters(
        ("sigterm", signal.SIGTERM, _cli_train._Terminated),
        ("sigint", signal.SIGINT, KeyboardInterrupt),
    )
    def test_armed_waits_for_the_next_check(self, signum, error):
        self.stop.check()  # the first step ran
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # nothing raised: the signal is only recorded
        with self.assertRaises(error):
            self.stop.check()

    def test_second_signal_raises_at_once(self):
        self.stop.check()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        with self.assertRaises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

    def test_restore_puts_back_the_previous_handlers(self):
        self.assertEqual(signal.getsignal(signal.SIGTERM), self.stop._handle)
        self.stop.restore()
        for signum, handler in self.before.items():
            self.assertIs(signal.getsignal(signum), handler)


if __name__ == "__main__":
    absltest.main()

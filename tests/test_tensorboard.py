"""Tests for bnnjax.training.tensorboard: event files TensorBoard reads back.

The files are read with TensorBoard's own event accumulator, the reader
behind ``tensorboard --logdir``, so tags, steps, values and the purge of a
resumed run are checked as TensorBoard shows them.
"""

import os
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
from absl.testing import absltest
from cli_helpers import run_cli
from tensorboard.backend.event_processing import event_accumulator

from bnnjax import checkpoint as ckpt
from bnnjax import train
from bnnjax.training import tensorboard as tb


def _read(run_dir):
    """{tag: [(step, value), ...]} of one TensorBoard run directory."""
    accumulator = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    return {
        tag: [(s.step, s.value) for s in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def _f32(x):
    return float(np.float32(x))


def _record(epoch, seed, val_accuracy, **extra):
    return {
        "epoch": epoch,
        "seed": seed,
        "step": 10 * epoch,
        "val_accuracy": val_accuracy,
        **extra,
    }


class ScalarTagsTest(absltest.TestCase):
    def test_nested_keys_join_with_slash_and_identity_keys_are_left_out(self):
        record = {
            "epoch": 3,
            "seed": 1,
            "step": 30,
            "train_loss": 0.25,
            "flip_ratio_layers": {"head": 0.5, "dense_0": 0.125},
            "latent": {"head": {"std": 2, "mean": -1.5}},
            "method": "ste",
            "converged": True,
            "note": None,
            "per_class": [1.0, 2.0],
        }
        self.assertEqual(
            tb.scalar_tags(record),
            {
                "flip_ratio_layers/dense_0": 0.125,
                "flip_ratio_layers/head": 0.5,
                "latent/head/mean": -1.5,
                "latent/head/std": 2.0,
                "train_loss": 0.25,
            },
        )
        self.assertEqual(
            list(tb.scalar_tags(record)), sorted(tb.scalar_tags(record))
        )


class TensorBoardWriterTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.log_dir = tmp.name

    def test_one_seed_writes_each_epoch_at_its_step(self):
        with tb.TensorBoardWriter(self.log_dir) as writer:
            for epoch in (1, 2, 3):
                writer.write_epoch(
                    epoch,
                    [
                        _record(
                            epoch,
                            0,
                            0.1 * epoch,
                            latent={"head": {"std": 0.01 * epoch}},
                        )
                    ],
                )
        self.assertEqual(os.listdir(self.log_dir), ["seed_0"])
        scalars = _read(os.path.join(self.log_dir, "seed_0"))
        self.assertEqual(
            scalars,
            {
                "val_accuracy": [(e, _f32(0.1 * e)) for e in (1, 2, 3)],
                "latent/head/std": [(e, _f32(0.01 * e)) for e in (1, 2, 3)],
            },
        )

    def test_seeds_are_runs_and_the_mean_is_one_more(self):
        with tb.TensorBoardWriter(self.log_dir) as writer:
            for epoch in (1, 2):
                writer.write_epoch(
                    epoch,
                    [
                        _record(epoch, 3, 0.5 + epoch, train_loss=1.0),
                        _record(epoch, 7, 0.25 + epoch),
                    ],
                )
        self.assertEqual(
            sorted(os.listdir(self.log_dir)), ["mean", "seed_3", "seed_7"]
        )
        seed_3 = _read(os.path.join(self.log_dir, "seed_3"))
        seed_7 = _read(os.path.join(self.log_dir, "seed_7"))
        mean = _read(os.path.join(self.log_dir, "mean"))
        self.assertEqual(seed_3["val_accuracy"], [(1, 1.5), (2, 2.5)])
        self.assertEqual(seed_3["train_loss"], [(1, 1.0), (2, 1.0)])
        self.assertEqual(seed_7, {"val_accuracy": [(1, 1.25), (2, 2.25)]})
        # The mean covers the tags every seed has.
        self.assertEqual(mean, {"val_accuracy": [(1, 1.375), (2, 2.375)]})

    def test_a_single_record_is_accepted(self):
        with tb.TensorBoardWriter(self.log_dir) as writer:
            writer.write_epoch(1, _record(1, 2, 0.75))
        self.assertEqual(
            _read(os.path.join(self.log_dir, "seed_2")),
            {"val_accuracy": [(1, 0.75)]},
        )

    def test_each_epoch_is_on_disk_before_close(self):
        writer = tb.TensorBoardWriter(self.log_dir)
        writer.write_epoch(1, [_record(1, 0, 0.5)])
        self.assertEqual(
            _read(os.path.join(self.log_dir, "seed_0")),
            {"val_accuracy": [(1, 0.5)]},
        )
        writer.write_epoch(2, [_record(2, 0, 0.625)])
        self.assertEqual(
            _read(os.path.join(self.log_dir, "seed_0")),
            {"val_accuracy": [(1, 0.5), (2, 0.625)]},
        )
        writer.close()
        writer.close()
        with self.assertRaisesRegex(ValueError, "closed"):
            writer.write_epoch(3, [_record(3, 0, 0.75)])

    def test_resume_replaces_the_epochs_after_the_checkpoint(self):
        # An interrupted run wrote epochs 1-3; its last checkpoint is epoch
        # 1, so the resumed run trains epochs 2-4 again.
        with tb.TensorBoardWriter(self.log_dir) as writer:
            for epoch in (1, 2, 3):
                writer.write_epoch(epoch, [_record(epoch, 0, 0.5)])
        with tb.TensorBoardWriter(self.log_dir, start_epoch=1) as writer:
            for epoch in (2, 3, 4):
                writer.write_epoch(epoch, [_record(epoch, 0, 0.25 * epoch)])
        run_dir = os.path.join(self.log_dir, "seed_0")
        self.assertLen(os.listdir(run_dir), 2)
        self.assertEqual(
            _read(run_dir),
            {"val_accuracy": [(1, 0.5), (2, 0.5), (3, 0.75), (4, 1.0)]},
        )

    def test_resume_at_the_last_written_epoch_keeps_one_point_per_step(self):
        with tb.TensorBoardWriter(self.log_dir) as writer:
            for epoch in (1, 2):
                writer.write_epoch(epoch, [_record(epoch, 0, 0.5)])
        with tb.TensorBoardWriter(self.log_dir, start_epoch=1) as writer:
            writer.write_epoch(2, [_record(2, 0, 0.75)])
        self.assertEqual(
            _read(os.path.join(self.log_dir, "seed_0")),
            {"val_accuracy": [(1, 0.5), (2, 0.75)]},
        )

    def test_bad_records_and_start_epoch_are_refused(self):
        with tb.TensorBoardWriter(self.log_dir) as writer:
            with self.assertRaisesRegex(ValueError, r"seeds \[0, 0\]"):
                writer.write_epoch(1, [_record(1, 0, 0.5), _record(1, 0, 0.5)])
            with self.assertRaisesRegex(ValueError, "each with its 'seed'"):
                writer.write_epoch(1, [{"epoch": 1, "val_accuracy": 0.5}])
        with self.assertRaisesRegex(ValueError, "start_epoch=-1"):
            tb.TensorBoardWriter(self.log_dir, start_epoch=-1)

    def test_missing_extra_names_the_install_command(self):
        tb.check_installed()
        message = (
            r"needs the tensorboardX .* pip install 'bnnjax\[tensorboard\]'"
        )
        with mock.patch.dict(sys.modules, {"tensorboardX": None}):
            with self.assertRaisesRegex(ModuleNotFoundError, message):
                tb.check_installed()
            with self.assertRaisesRegex(ModuleNotFoundError, message):
                tb.TensorBoardWriter(self.log_dir)
        self.assertEqual(os.listdir(self.log_dir), [])

    def test_tensorboardx_is_imported_only_by_a_writer(self):
        code = (
            "import sys\nimport bnnjax\n"
            "import bnnjax.training.tensorboard as tb\n"
            "assert 'tensorboardX' not in sys.modules\n"
            "tb.TensorBoardWriter(sys.argv[1]).close()\n"
            "assert 'tensorboardX' in sys.modules\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, self.log_dir],
            capture_output=True,
            text=True,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)


class TrainingRunTest(absltest.TestCase):
    def test_a_real_run_matches_its_metrics_jsonl(self):
        # The intended wiring: one write_epoch per on_epoch call.
        with tempfile.TemporaryDirectory() as out_dir:
            config = train.TrainConfig(
                hidden=(16,),
                epochs=2,
                batch_size=200,
                seeds=(0, 1),
                out_dir=out_dir,
            )
            log_dir = os.path.join(out_dir, tb.LOG_DIR_NAME)
            with tb.TensorBoardWriter(log_dir) as writer:
                train.run(config, on_epoch=writer.write_epoch, make_plots=False)
            records = ckpt.read_metrics(out_dir)
            self.assertLen(records, 4)
            for seed in (0, 1):
                scalars = _read(os.path.join(log_dir, f"seed_{seed}"))
                mine = [r for r in records if r["seed"] == seed]
                tags = tb.scalar_tags(mine[0])
                self.assertContainsSubset({"val_accuracy", "train_loss"}, tags)
                self.assertTrue([t for t in tags if "/" in t])  # nested keys
                self.assertEqual(sorted(scalars), sorted(tags))
                for tag in tags:
                    self.assertEqual(
                        scalars[tag],
                        [
                            (r["epoch"], _f32(tb.scalar_tags(r)[tag]))
                            for r in mine
                        ],
                        tag,
                    )
            mean = _read(os.path.join(log_dir, "mean"))
            self.assertEqual(
                mean["val_accuracy"],
                [
                    (
                        epoch,
                        _f32(
                            sum(
                                r["val_accuracy"]
                                for r in records
                                if r["epoch"] == epoch
                            )
                            / 2
                        ),
                    )
                    for epoch in (1, 2)
                ],
            )


class CliTest(absltest.TestCase):
    def test_train_tensorboard_writes_every_epoch(self):
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = os.path.join(tmp, "run")
            status, _, stderr = run_cli(
                [
                    "train",
                    "--hidden",
                    "16",
                    "--epochs",
                    "2",
                    "--batch-size",
                    "500",
                    "--no-progress",
                    "--tensorboard",
                    "--out",
                    out_dir,
                ]
            )
            self.assertEqual(status, 0, stderr)
            log_dir = os.path.join(out_dir, tb.LOG_DIR_NAME)
            self.assertEqual(os.listdir(log_dir), ["seed_0"])
            scalars = _read(os.path.join(log_dir, "seed_0"))
            records = ckpt.read_metrics(out_dir)
            self.assertEqual(
                scalars["val_accuracy"],
                [(r["epoch"], _f32(r["val_accuracy"])) for r in records],
            )

    def test_train_without_the_flag_writes_no_event_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = os.path.join(tmp, "run")
            args = ["train", "--hidden", "16", "--epochs", "1"]
            status, _, stderr = run_cli([*args, "--out", out_dir])
            self.assertEqual(status, 0, stderr)
            self.assertNotIn(tb.LOG_DIR_NAME, os.listdir(out_dir))

    def test_train_tensorboard_without_the_extra_is_a_bad_argument(self):
        with mock.patch.dict(sys.modules, {"tensorboardX": None}):
            status, stdout, stderr = run_cli(
                ["train", "--tensorboard", "--out", "never-made"]
            )
        self.assertEqual((status, stdout), (2, ""))
        self.assertIn("pip install 'bnnjax[tensorboard]'", stderr)
        self.assertLen(stderr.splitlines(), 1)
        self.assertFalse(os.path.exists("never-made"))


if __name__ == "__main__":
    absltest.main()

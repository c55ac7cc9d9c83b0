"""Tests for the ``bnnjax train`` command (``cli.main`` called in-process)."""

import importlib.util
import json
import os
import shutil
import tempfile
import unittest
from unittest import mock

import pytest
from absl.testing import absltest, parameterized
from cli_helpers import run_cli

from bnnjax import data, presets, train

FAST = ["--hidden", "16", "--epochs", "1", "--batch-size", "500"]


class CliTrainTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_help_lists_choices_and_true_defaults(self):
        status, out, _ = run_cli(["train", "--help"])
        self.assertEqual(status, 0)
        d = train.TrainConfig()
        for text in (
            "{mlp,cnn,tutorial_cnn,resnet20,resnet18,reactnet}",
            "NAME[:OPTION=VALUE...]",
            "scaled_sigmoid k=2, scale=mean_abs_dev, scale_adaptive=true",
            f"(default: {d.epochs})",
            f"(default: {d.batch_size})",
            "(default: mnist-sample)",
            "(default: scaled_sigmoid)",
            "(default: cosine)",
            "(default: " + ",".join(map(str, d.hidden)) + ")",
            "runs/<YYYYmmdd-HHMMSS>",
            "Hubara et al. 2016",
        ):
            self.assertIn(text, " ".join(out.split()), text)
        table = out.split("methods (--method)")[1]
        for name in presets.METHOD_NAMES:  # each listed with its lr
            self.assertRegex(table, rf"\n  {name} +lr ")

    def test_train_prints_one_json_line_with_results(self):
        cwd = os.getcwd()
        os.chdir(self.tmp)
        self.addCleanup(os.chdir, cwd)
        status, out, err = run_cli(["train", *FAST, "--seed", "0,1"])
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertLen(lines, 1)
        result = json.loads(lines[0])
        for key in (
            "test_accuracy",
            "val_accuracy",
            "epochs",
            "train_seconds",
            "examples_per_second",
            "binary_params",
            "real_params",
            "latent_bytes",
            "packed_bytes",
            "test_accuracy_std",
            "test_accuracy_per_seed",
            "val_accuracy_per_seed",
        ):
            self.assertIn(key, result)
        self.assertEqual(result["seeds"], [0, 1])
        self.assertLen(result["test_accuracy_per_seed"], 2)
        self.assertEqual(result["epochs"], 1)
        self.assertEqual(result["binary_params"], 784 * 16 + 16 * 10)
        self.assertLess(result["packed_bytes"], result["latent_bytes"] / 30)
        # Default run directory: runs/<timestamp> under the working dir.
        self.assertEqual(
            os.path.dirname(result["out_dir"]),
            os.path.join(os.path.realpath(self.tmp), "runs"),
        )
        # Progress on stderr: off a terminal, one line per epoch.
        self.assertIn("epoch 1: train loss", err)

    def test_seed_flag_repeats_and_resume(self):
        out_dir = os.path.join(self.tmp, "run")
        status, out, err = run_cli(
            ["train", *FAST, "--seed", "3", "--seed", "5", "--out", out_dir]
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["seeds"], [3, 5])
        status, out, err = run_cli(
            ["train", "--resume", "--out", out_dir, "--epochs", "2"]
        )
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertEqual(result["epochs"], 2)
        self.assertEqual(result["resumed_from_epoch"], 1)
        self.assertEqual(result["seeds"], [3, 5])
        # A setting that differs from the saved run is refused.
        status, out, err = run_cli(
            ["train", "--resume", "--out", out_dir, "--method", "bnn"]
        )
        self.assertEqual((status, out), (1, ""))
        self.assertIn("method='scaled_sigmoid' (now 'bnn')", err)

    @parameterized.named_parameters(
        ("method", ["--method", "magic"], "unknown method 'magic'"),
        ("model", ["--model", "vgg"], "invalid choice: 'vgg'"),
        ("epochs", ["--epochs", "0"], "expected a positive integer"),
        ("batch", ["--batch-size", "x"], "expected a positive integer"),
        ("lr", ["--lr", "-1"], "expected a finite positive number"),
        ("hidden", ["--hidden", "64,0"], "layer widths"),
        ("seed", ["--seed", "-1"], "seeds"),
        ("val", ["--val-fraction", "1.5"], r"in \(0, 1\)"),
        ("unknown", ["--colour", "red"], "unrecognized arguments"),
        ("hidden_cnn", ["--model", "cnn", "--hidden", "8"], "--hidden"),
        ("resume_no_out", ["--resume"], "--resume needs --out"),
        (
            "method_option",
            ["--method", "scaled_sigmoid:kk=4"],
            r"unknown option 'kk'.*\['k', 'scale', 'scale_adaptive'\]",
        ),
        (
            "method_option_value",
            ["--method", "scaled_sigmoid:scale=median"],
            "Unknown scale 'median'",
        ),
        (
            "data_dir_local",
            ["--data-dir", "/x", "--dataset", "idx:/y"],
            "only used for TFDS names",
        ),
        ("devices_zero", ["--devices", "0"], "expected a positive integer"),
        (
            "devices_split",
            ["--devices", "3", "--batch-size", "100"],
            "does not split evenly over 3 devices",
        ),
        ("process_id", ["--process-id", "-1"], "non-negative integer"),
        (
            "processes_without_coordinator",
            ["--num-processes", "2", "--process-id", "0"],
            "coordinator",
        ),
        (
            "cnn_real",
            ["--model", "cnn", "--no-binary-activations"],
            "binary_activations=False",
        ),
    )
    def test_bad_flags_exit_2(self, flags, message):
        out_dir = os.path.join(self.tmp, "never")
        out_flags = [] if "--resume" in flags else ["--out", out_dir]
        status, out, err = run_cli(["train", *flags, *out_flags])
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertRegex(err, message)
        self.assertFalse(os.path.exists(out_dir))

    def test_bad_data_exits_2_and_taken_directory_exits_1(self):
        missing = os.path.join(self.tmp, "no-such-dir")
        out_dir = os.path.join(self.tmp, "out")
        status, out, err = run_cli(
            ["train", "--dataset", f"idx:{missing}", "--out", out_dir]
        )
        self.assertEqual((status, out), (2, ""))  # a bad argument
        self.assertIn(missing, err)
        self.assertFalse(os.path.exists(out_dir))

        empty = os.path.join(self.tmp, "empty-data")
        os.makedirs(empty)
        status, _, err = run_cli(
            ["train", "--dataset", f"idx:{empty}", "--out", out_dir]
        )
        self.assertEqual(status, 2)
        self.assertIn("lacks the expected files", err)

        status, _, err = run_cli(
            ["train", "--dataset", "not a dataset!", "--out", out_dir]
        )
        self.assertEqual(status, 2)
        self.assertIn("Unknown dataset spec", err)

        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "keep.txt"), "w") as f:
            f.write("precious")
        status, out, err = run_cli(["train", *FAST, "--out", out_dir])
        self.assertEqual((status, out), (1, ""))
        self.assertIn("not empty", err)
        self.assertEqual(os.listdir(out_dir), ["keep.txt"])

        status, _, err = run_cli(
            ["train", "--resume", "--out", os.path.join(self.tmp, "x")]
        )
        self.assertEqual(status, 1)
        self.assertIn("Nothing to resume", err)

    @unittest.skipIf(
        importlib.util.find_spec("tensorflow_datasets") is None,
        "needs the data extra",
    )
    def test_offline_tfds_fails_fast_naming_local_files(self):
        out_dir = os.path.join(self.tmp, "out")
        tfds_dir = os.path.join(self.tmp, "tfds")
        with mock.patch.object(data, "_download_possible", return_value=False):
            status, out, err = run_cli(
                [
                    "train",
                    "--dataset",
                    "kmnist",
                    "--data-dir",
                    tfds_dir,
                    "--out",
                    out_dir,
                ]
            )
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"'kmnist' is not prepared in {tfds_dir}", err)
        self.assertIn("'idx:DIR'", err)
        self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(out_dir))

    @unittest.skipIf(
        importlib.util.find_spec("tensorflow_datasets") is None,
        "needs the data extra",
    )
    def test_trains_on_a_tfds_dataset(self):
        import tensorflow_datasets as tfds

        out_dir = os.path.join(self.tmp, "out")
        with (
            tfds.testing.mock_data(
                num_examples=200, policy=tfds.testing.MockPolicy.USE_CODE
            ),
            mock.patch.object(data, "_download_possible", return_value=True),
        ):
            status, out, err = run_cli(
                [
                    "train",
                    "--dataset",
                    "fashion_mnist",
                    "--data-dir",
                    os.path.join(self.tmp, "tfds"),
                    "--hidden",
                    "16",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "60",
                    "--no-progress",
                    "--out",
                    out_dir,
                ]
            )
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertEqual(result["dataset"], "fashion_mnist")
        self.assertEqual(result["steps"], 3)  # 180 of 200 after validation
        self.assertTrue(0 <= result["test_accuracy"] <= 1)

    def test_method_parts_from_the_command_line(self):
        out_dir = os.path.join(self.tmp, "parts")
        method = "scaled_sigmoid:k=4:scale_adaptive=false"
        status, out, err = run_cli(
            ["train", *FAST, "--method", method, "--out", out_dir]
        )
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertEqual(result["method"], "scaled_sigmoid")
        self.assertEqual(
            result["method_options"], {"k": 4.0, "scale_adaptive": False}
        )
        with open(os.path.join(out_dir, "config.json")) as f:
            config = train.TrainConfig.from_dict(json.load(f))
        self.assertEqual(config.preset.kernel_binarizer.surrogate.k, 4.0)
        # Resuming with other options is refused; with the same, accepted.
        status, _, err = run_cli(
            [
                "train",
                "--resume",
                "--out",
                out_dir,
                "--method",
                "scaled_sigmoid",
            ]
        )
        self.assertEqual(status, 1)
        self.assertIn("method_options", err)
        status, _, err = run_cli(
            [
                "train",
                "--resume",
                "--out",
                out_dir,
                "--method",
                method,
                "--epochs",
                "2",
            ]
        )
        self.assertEqual(status, 0, err)

    def test_demo_still_works(self):
        status, out, _ = run_cli(["demo", "--json"])
        self.assertEqual(status, 0)
        self.assertIn("surrogate_slopes", json.loads(out))


@pytest.mark.slow
class DefaultRunTest(absltest.TestCase):
    def test_default_run_reaches_useful_accuracy(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        status, out, err = run_cli(["train", "--out", os.path.join(tmp, "run")])
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertGreater(result["val_accuracy"], 0.95)
        self.assertGreater(result["test_accuracy"], 0.94)


if __name__ == "__main__":
    absltest.main()

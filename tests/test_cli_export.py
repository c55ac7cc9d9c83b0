"""Tests for ``bnnjax export`` and ``bnnjax predict`` (in-process)."""

import gzip
import json
import os
import shutil
import struct
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from cli_helpers import run_cli

import bnnjax
from bnnjax import export

TRAIN = [
    "train",
    "--hidden",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "250",
    "--seed",
    "3,4",
    "--no-progress",
]


def _write_idx(directory, side):
    """A tiny MNIST-family IDX dataset with ``side x side`` images."""
    os.makedirs(directory)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        with gzip.open(f"{directory}/{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(
                struct.pack(">iiii", 2051, n, side, side) + images.tobytes()
            )
        with gzip.open(f"{directory}/{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">ii", 2049, n) + labels.tobytes())


class ExportPredictTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.run_dir = os.path.join(cls.tmp, "run")
        status, out, err = run_cli([*TRAIN, "--out", cls.run_dir])
        assert status == 0, err
        cls.trained = json.loads(out)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _path(self, name):
        return os.path.join(self.tmp, name)

    def test_export_then_predict(self):
        path = self._path("model.bnnjax")
        status, out, err = run_cli(["export", self.run_dir, "-o", path])
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertLen(lines, 1)
        exported = json.loads(lines[0])
        self.assertEqual(exported["file_bytes"], os.path.getsize(path))
        self.assertEqual(exported["seed"], 3)  # the run's first seed
        self.assertEqual(exported["epoch"], 1)
        self.assertEqual(exported["architecture"], "BinaryMLP")
        # 784*32 + 32*32 binary weights at 1 bit; the real last layer and
        # batch norm at 32 bits; the float32 checkpoint at 32 bits.
        self.assertEqual(exported["float32_bytes"], self.trained["train_bytes"])
        self.assertGreater(exported["compression_ratio"], 10)
        # Proof that nothing changed: the run's own test split.
        self.assertEqual(exported["prediction_agreement"], 1.0)
        self.assertEqual(
            exported["packed_test_accuracy"], exported["float_test_accuracy"]
        )
        self.assertAlmostEqual(
            exported["float_test_accuracy"],
            self.trained["test_accuracy_per_seed"][0],
            places=6,
        )
        self.assertLessEqual(
            exported["max_abs_logit_difference"],
            1e-5 * exported["max_abs_logit"],
        )

        status, out, err = run_cli(["predict", path])
        self.assertEqual(status, 0, err)
        predicted = json.loads(out)
        self.assertEqual(predicted["dataset"], "mnist-sample")
        self.assertEqual(
            predicted["test_accuracy"], exported["packed_test_accuracy"]
        )
        self.assertEqual(predicted["file_bytes"], exported["file_bytes"])
        self.assertEqual(predicted["test_examples"], 1000)
        self.assertAlmostEqual(
            predicted["compression_ratio"], exported["compression_ratio"]
        )

    def test_other_seed_and_metadata(self):
        path = self._path("seed4.bnnjax")
        status, out, err = run_cli(
            ["export", self.run_dir, "-o", path, "--seed", "4", "--no-verify"]
        )
        self.assertEqual(status, 0, err)
        result = json.loads(out)
        self.assertNotIn("packed_test_accuracy", result)
        packed = export.load(path)
        self.assertEqual(packed.metadata["seed"], 4)
        self.assertEqual(packed.metadata["dataset"], "mnist-sample")
        self.assertEqual(packed.metadata["method"], "scaled_sigmoid")
        status, out, _ = run_cli(["predict", path, "--dataset", "mnist-sample"])
        self.assertEqual(status, 0)
        self.assertAlmostEqual(
            json.loads(out)["test_accuracy"],
            self.trained["test_accuracy_per_seed"][1],
            places=6,
        )

    def test_existing_file_is_kept_unless_forced(self):
        path = self._path("taken.bnnjax")
        with open(path, "wb") as f:
            f.write(b"precious")
        status, out, err = run_cli(["export", self.run_dir, "-o", path])
        self.assertEqual((status, out), (1, ""))
        self.assertIn("exists; pass --force", err)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        status, _, err = run_cli(
            ["export", self.run_dir, "-o", path, "--force", "--no-verify"]
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(export.load(path).architecture, "BinaryMLP")

    def test_bad_export_arguments(self):
        path = self._path("never.bnnjax")
        status, out, err = run_cli(
            ["export", self.run_dir, "-o", path, "--seed", "9"]
        )
        self.assertEqual((status, out), (2, ""))
        self.assertIn("--seed 9 was not trained in this run", err)
        self.assertIn("[3, 4]", err)

        status, _, err = run_cli(
            ["export", self.run_dir, "-o", path, "--epoch", "7"]
        )
        self.assertEqual(status, 1)
        self.assertIn("bnnjax export: error:", err)

        missing = self._path("no-run")
        status, _, err = run_cli(["export", missing, "-o", path])
        self.assertEqual(status, 2)  # a bad argument, not a failed run
        self.assertIn(missing, err)
        self.assertIn("run directory", err)
        self.assertFalse(os.path.exists(path))

        status, _, err = run_cli(["export", self.run_dir])
        self.assertEqual(status, 2)
        self.assertIn("-o/--output", err)

    def test_output_that_cannot_be_written(self):
        a_file = self._path("notes.txt")
        with open(a_file, "w") as f:
            f.write("x")
        missing = self._path("no/such/folder")
        fix = "give -o a file in a folder you can write to."
        for output, why in (
            (f"{missing}/m.bnnjax", f"the folder {missing} does not exist"),
            (f"{a_file}/m.bnnjax", f"{a_file} is a file, not a folder"),
        ):
            status, out, err = run_cli(["export", self.run_dir, "-o", output])
            self.assertEqual((status, out), (2, ""), err)
            self.assertEqual(
                err,
                f"bnnjax export: error: cannot write {output}: {why}; {fix}\n",
            )
        self.assertFalse(os.path.exists(self._path("no")))

    def test_predict_rejects_corrupt_foreign_and_mismatched(self):
        path = self._path("good.bnnjax")
        status, _, err = run_cli(
            ["export", self.run_dir, "-o", path, "--no-verify"]
        )
        self.assertEqual(status, 0, err)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x01
        corrupt = self._path("corrupt.bnnjax")
        with open(corrupt, "wb") as f:
            f.write(data)
        status, out, err = run_cli(["predict", corrupt])
        self.assertEqual((status, out), (1, ""))
        self.assertIn("checksum mismatch", err)

        foreign = self._path("foreign.bin")
        with open(foreign, "wb") as f:
            f.write(b"\x80\x04K\x01.")  # a pickle
        status, _, err = run_cli(["predict", foreign])
        self.assertEqual(status, 1)
        self.assertIn("not a bnnjax packed model", err)

        small = self._path("small-idx")
        _write_idx(small, side=20)
        status, out, err = run_cli(
            ["predict", path, "--dataset", f"idx:{small}"]
        )
        self.assertEqual((status, out), (2, ""))
        self.assertIn("784 features", err)
        self.assertIn("(10, 20, 20, 1)", err)

        status, _, err = run_cli(["predict", path, "--dataset", "nope!"])
        self.assertEqual(status, 2)
        self.assertIn("Unknown dataset spec", err)

    def test_float_run_has_nothing_to_pack(self):
        run_dir = self._path("float-run")
        status, _, err = run_cli(
            [*TRAIN, "--method", "float", "--seed", "0", "--out", run_dir]
        )
        self.assertEqual(status, 0, err)
        path = self._path("float.bnnjax")
        status, out, err = run_cli(["export", run_dir, "-o", path])
        self.assertEqual((status, out), (1, ""))
        self.assertIn("cannot export this run", err)
        self.assertFalse(os.path.exists(path))

    def test_predict_refuses_a_model_of_your_own(self):
        # A format-2 file holds no code: the CLI cannot run it.
        model = bnnjax.nn.linen.BinaryDense(10)
        x = jnp.ones((2, 784))
        path = self._path("own.bnnjax")
        export.export_model(
            model, model.init(jax.random.key(0), x), path, example_inputs=x
        )
        status, out, err = run_cli(["predict", path])
        self.assertEqual((status, out), (2, ""))
        self.assertIn(
            "holds a model of your own (bnnjax.nn.linen.BinaryDense)", err
        )
        self.assertIn("model=...", err)


if __name__ == "__main__":
    absltest.main()

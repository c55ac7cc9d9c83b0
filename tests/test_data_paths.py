"""Every dataset path the CLI reads fails with one line naming the path and
the fix: ``bnnjax train``, ``compare`` and ``predict`` exit 2, print no
traceback and no raw ``[Errno ...]``; the library raises a
:class:`bnnjax.data.DatasetPathError` that is also the built-in error."""

import builtins
import errno
import gzip
import os
import pickle
import shutil
import struct
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from cli_helpers import run_cli

from bnnjax import data, export, train

FAST = ["--hidden", "16", "--epochs", "1", "--batch-size", "500"]


def _idx_bytes(array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return (
        header
        + struct.pack(f">{array.ndim}I", *array.shape)
        + (array.astype(">u1").tobytes())
    )


def _write_idx_set(directory, prefix=""):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}{split}-{kind}-ubyte.gz"
            with gzip.open(os.path.join(directory, name), "wb") as f:
                f.write(_idx_bytes(array))


def _write_cifar_set(directory):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [
        *(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test_batch.bin",
    ]:
        records = rng.integers(0, 256, (2, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        with open(os.path.join(directory, name), "wb") as f:
            f.write(records.tobytes())


class _Paths(parameterized.TestCase):
    """A temporary directory and a packed model file for ``predict``."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        config = train.TrainConfig(hidden=(16,))
        model = config.make_model(10)
        sample = jnp.zeros((1, 28, 28, 1), jnp.float32)
        variables = model.init(
            jax.random.key(0), sample, train=False, progress=jnp.float32(0)
        )
        packed = export.pack_model(
            model, variables, metadata={"dataset": "mnist-sample"}
        )
        cls.model_file = os.path.join(cls.root, "model.bnnjax")
        export.save(packed, cls.model_file)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(dir=self.root)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def run_command(self, command, spec, *extra):
        if command == "compare":
            argv = ["compare", "--methods", "bnn", "--dataset", spec, *FAST]
        elif command == "train":
            out = self.path("run")
            argv = ["train", "--dataset", spec, *FAST, "--out", out]
        else:
            argv = ["predict", self.model_file, "--dataset", spec]
        return run_cli([*argv, *extra])

    def assert_fails(self, command, spec, *patterns, extra=(), status=2):
        got, out, err = self.run_command(command, spec, *extra)
        self.assertEqual((got, out), (status, ""), err)
        self.assertLen(err.strip().splitlines(), 1, err)
        self.assertStartsWith(err, f"bnnjax {command}: error: ")
        self.assertNotIn("Traceback", err)
        self.assertNotIn("Errno", err)
        for pattern in patterns:
            self.assertRegex(err, pattern)
        return err


COMMANDS = (
    ("train", "train"),
    ("compare", "compare"),
    ("predict", "predict"),
)
IDX_FIX = r"give 'idx:DIR' .*train-images-idx3-ubyte"


class CliDataPathsTest(_Paths):
    @parameterized.named_parameters(*COMMANDS)
    def test_idx_directory_missing(self, command):
        missing = self.path("absent")
        self.assert_fails(
            command, f"idx:{missing}", f"'{missing}' does not exist", IDX_FIX
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_idx_directory_without_the_files(self, command):
        os.makedirs(self.path("empty"))
        with open(self.path("empty", "notes.txt"), "w") as f:
            f.write("x")
        self.assert_fails(
            command,
            f"idx:{self.path('empty')}",
            f"'{self.path('empty')}' lacks the expected files "
            r"train-images-idx3-ubyte\[.gz\]",
            "Found: notes.txt",
            "Put the files there, or give 'idx:DIR' the directory",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_idx_names_a_file(self, command):
        _write_idx_set(self.path("mnist"))
        member = self.path("mnist", "train-images-idx3-ubyte.gz")
        self.assert_fails(
            command,
            f"idx:{member}",
            "names a file, not a directory",
            f"'idx:{self.path('mnist')}'",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_idx_file_truncated(self, command):
        _write_idx_set(self.path("mnist"))
        member = self.path("mnist", "t10k-labels-idx1-ubyte.gz")
        with gzip.open(member, "rb") as f:
            payload = f.read()
        with gzip.open(member, "wb") as f:
            f.write(payload[:-3])
        self.assert_fails(
            command,
            f"idx:{self.path('mnist')}",
            f"{member}: payload truncated",
            "download it again",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_idx_file_unreadable(self, command):
        _write_idx_set(self.path("mnist"))
        member = self.path("mnist", "train-labels-idx1-ubyte.gz")
        real_open = builtins.open

        def guarded(file, *args, **kwargs):
            if os.fspath(file) == member:
                raise PermissionError(
                    errno.EACCES, "Permission denied", os.fspath(file)
                )
            return real_open(file, *args, **kwargs)

        with mock.patch.object(builtins, "open", guarded):
            self.assert_fails(
                command,
                f"idx:{self.path('mnist')}",
                f"cannot read IDX file {member}: permission denied; make it "
                "readable",
            )

    @parameterized.named_parameters(*COMMANDS)
    def test_idx_directory_unreadable(self, command):
        _write_idx_set(self.path("mnist"))
        directory = self.path("mnist")
        real_listdir = os.listdir

        def guarded(path="."):
            if os.fspath(path) == directory:
                raise PermissionError(
                    errno.EACCES, "Permission denied", directory
                )
            return real_listdir(path)

        with mock.patch.object(os, "listdir", guarded):
            self.assert_fails(
                command,
                f"idx:{directory}",
                f"cannot read IDX directory {directory}: permission denied",
            )

    @parameterized.named_parameters(*COMMANDS)
    def test_idx_directory_with_two_datasets(self, command):
        _write_idx_set(self.path("emnist"), prefix="emnist-digits-")
        _write_idx_set(self.path("emnist"), prefix="emnist-letters-")
        self.assert_fails(
            command,
            f"idx:{self.path('emnist')}",
            "several IDX datasets",
            "'idx:DIR/PREFIX'",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_cifar_directory_missing(self, command):
        missing = self.path("absent")
        self.assert_fails(
            command,
            f"cifar:{missing}",
            f"'{missing}' does not exist; give 'cifar:DIR' a directory that "
            "holds data_batch_1.bin",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_cifar_directory_without_the_files(self, command):
        os.makedirs(self.path("empty"))
        self.assert_fails(
            command,
            f"cifar:{self.path('empty')}",
            "lacks the expected files data_batch_1.bin",
            "Extract cifar-10-binary.tar.gz there",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_cifar_names_a_file(self, command):
        _write_cifar_set(self.path("cifar"))
        member = self.path("cifar", "test_batch.bin")
        self.assert_fails(
            command,
            f"cifar:{member}",
            f"'{member}' is a file, not a directory; give 'cifar:DIR' the "
            "directory",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_cifar_file_truncated(self, command):
        _write_cifar_set(self.path("cifar"))
        member = self.path("cifar", "data_batch_3.bin")
        with open(member, "r+b") as f:
            f.truncate(100)
        self.assert_fails(
            command,
            f"cifar:{self.path('cifar')}",
            f"{member}: 100 bytes",
            "Download cifar-10-binary.tar.gz again",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_cifar_pickled_version(self, command):
        os.makedirs(self.path("py"))
        with open(self.path("py", "data_batch_1"), "wb") as f:
            pickle.dump({"x": 1}, f)
        self.assert_fails(
            command,
            f"cifar:{self.path('py')}",
            "pickled 'python version'",
            "Download the binary version",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_unknown_spec(self, command):
        self.assert_fails(
            command,
            "mnist_sample.npz",
            "Unknown dataset spec 'mnist_sample.npz'",
            "'idx:DIR'",
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_spec_without_directory(self, command):
        self.assert_fails(command, "idx:", "names no directory; use 'idx:DIR'")

    @parameterized.named_parameters(*COMMANDS)
    def test_data_dir_with_local_files(self, command):
        _write_idx_set(self.path("mnist"))
        self.assert_fails(
            command,
            f"idx:{self.path('mnist')}",
            "only used for TFDS names",
            extra=["--data-dir", self.tmp],
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_data_dir_is_a_file(self, command):
        not_a_dir = self.path("file")
        with open(not_a_dir, "w") as f:
            f.write("x")
        self.assert_fails(
            command,
            "mnist",
            f"TFDS data directory '{not_a_dir}' \\(--data-dir\\) is a file",
            extra=["--data-dir", not_a_dir],
        )

    @parameterized.named_parameters(*COMMANDS)
    def test_tfds_dataset_unavailable_exits_1(self, command):
        error = data.DatasetUnavailableError("cannot be downloaded (test)")
        with mock.patch.object(data, "load_tfds", side_effect=error) as load:
            self.assert_fails(
                command,
                "mnist",
                "cannot be downloaded",
                extra=["--data-dir", self.tmp],
                status=1,
            )
        load.assert_called_once_with("mnist", data_dir=self.tmp)

    def test_predict_model_file_missing_or_a_directory(self):
        for path, what in (
            (self.path("absent.bnnjax"), "does not exist"),
            (self.tmp, "is a directory"),
        ):
            status, out, err = run_cli(["predict", path])
            self.assertEqual((status, out), (2, ""))
            self.assertEqual(
                err,
                f"bnnjax predict: error: {path} {what}; give a file written "
                "by `bnnjax export RUN_DIR -o FILE`.\n",
            )

    def test_predict_reads_a_good_idx_directory(self):
        _write_idx_set(self.path("mnist"))
        status, _, err = run_cli(
            [
                "predict",
                self.model_file,
                "--dataset",
                f"idx:{self.path('mnist')}",
            ]
        )
        self.assertEqual(status, 0, err)


class DatasetPathErrorTest(_Paths):
    def test_errors_are_also_the_builtin_ones(self):
        with self.assertRaises(FileNotFoundError) as ctx:
            data.load_idx(self.path("absent"))
        self.assertIsInstance(ctx.exception, data.DatasetPathError)
        self.assertEqual(ctx.exception.path, self.path("absent"))
        self.assertIsNone(ctx.exception.errno)

        _write_idx_set(self.path("mnist"))
        member = self.path("mnist", "t10k-images-idx3-ubyte.gz")
        with open(member, "wb") as f:
            f.write(b"\x00\x00\x08")
        with self.assertRaises(ValueError) as ctx:
            data.load_idx(self.path("mnist"))
        self.assertIsInstance(ctx.exception, data.DatasetPathError)
        self.assertEqual(ctx.exception.path, member)

        with (
            mock.patch.object(
                builtins,
                "open",
                side_effect=PermissionError(errno.EACCES, "Permission denied"),
            ),
            self.assertRaises(OSError) as ctx,
        ):
            data.read_idx(member)
        self.assertIsInstance(ctx.exception, data.DatasetPathError)
        self.assertEqual(ctx.exception.errno, errno.EACCES)
        self.assertNotIn("Errno", str(ctx.exception))


if __name__ == "__main__":
    absltest.main()

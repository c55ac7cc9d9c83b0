"""Tests of bnnjax.data: IDX/CIFAR readers, embedded sample, specs, batches."""

import dataclasses
import functools
import gzip
import importlib.util
import os
import pathlib
import pickle
import shutil
import struct
import sys
import tempfile
import unittest
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from bnnjax import data

try:
    import tensorflow_datasets as tfds
except ImportError:
    tfds = None

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
SAMPLE_NPZ = REPO / "bnnjax" / "_data" / "mnist_sample.npz"
NO_MNIST = f"real MNIST IDX files not present at {MNIST_DIR}"
NO_TFDS = 'tensorflow-datasets not installed (pip install "bnnjax[data]")'

_IDX_FORMATS = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _idx_bytes(array, code=0x08):
    """An IDX file written independently of the reader under test."""
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(_IDX_FORMATS[code]).tobytes()


def _write(path, payload, gz=False):
    path = pathlib.Path(path)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return str(path)


def _write_idx_set(directory, arrays, *, prefix="", test="t10k", gz=False):
    """Writes {train,test}_{images,labels} as IDX files named like MNIST."""
    names = {}
    for split, stem in (("train", "train"), ("test", test)):
        for kind, ndim in (("images", 3), ("labels", 1)):
            name = f"{prefix}{stem}-{kind}-idx{ndim}-ubyte" + (
                ".gz" if gz else ""
            )
            _write(
                os.path.join(directory, name),
                _idx_bytes(arrays[f"{split}_{kind}"]),
                gz,
            )
            names[f"{split}_{kind}"] = name
    return names


def _small_arrays(seed=0, n_train=12, n_test=5, num_classes=4):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 3, 2), np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % num_classes,
        "test_images": rng.integers(0, 256, (n_test, 3, 2), np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % num_classes,
    }


@functools.cache
def _real_mnist():
    return data.load_idx(MNIST_DIR)


def _load_script():
    path = REPO / "scripts" / "make_mnist_sample.py"
    spec = importlib.util.spec_from_file_location("make_mnist_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _TmpDirMixin:
    def tmpdir(self):
        directory = tempfile.mkdtemp(prefix="bnnjax_data_test_")
        self.addCleanup(shutil.rmtree, directory)
        return directory


class ReadIdxTest(_TmpDirMixin, parameterized.TestCase):
    @parameterized.product(code=sorted(_IDX_FORMATS), gz=(False, True))
    def test_round_trip(self, code, gz):
        values = np.arange(-30, 30).reshape(3, 4, 5) * 3
        if code == 0x08:
            values = values + 90
        if code in (0x0D, 0x0E):
            values = values / 7.0
        want = values.astype(np.dtype(_IDX_FORMATS[code]).newbyteorder("="))
        path = _write(
            os.path.join(self.tmpdir(), "a.idx" + (".gz" if gz else "")),
            _idx_bytes(want, code),
            gz,
        )
        got = data.read_idx(path)
        self.assertEqual(got.dtype, want.dtype)
        self.assertTrue(got.dtype.isnative)
        self.assertEqual(got.shape, (3, 4, 5))
        np.testing.assert_array_equal(got, want)
        got[0, 0, 0] = 0  # writable, not a view of the file's bytes
        self.assertEqual(got[0, 0, 0], 0)

    def test_gzip_detected_by_content_not_name(self):
        want = np.arange(6, dtype=np.uint8).reshape(2, 3)
        path = _write(
            os.path.join(self.tmpdir(), "plain-name"), _idx_bytes(want), True
        )
        np.testing.assert_array_equal(data.read_idx(path), want)

    @parameterized.named_parameters(
        ("wrong_magic", b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab",
         False, "magic number"),
        ("unknown_type_code", b"\x00\x00\x0a\x01" + struct.pack(">I", 2)
         + b"ab", False, "unknown IDX type code 0x0A"),
        ("zero_dims", b"\x00\x00\x08\x00", False, "0 dimensions"),
        ("too_short", b"\x00\x00", False, "shorter than"),
        ("truncated_header", b"\x00\x00\x08\x03\x00\x00\x00\x02", False,
         "truncated IDX header"),
        ("truncated_payload", b"\x00\x00\x0b\x01" + struct.pack(">I", 4)
         + b"\x00" * 7, False, r"truncated: shape \(4,\) of int16 needs 8"),
        ("trailing_bytes", b"\x00\x00\x08\x01" + struct.pack(">I", 2)
         + b"abc", False, "trailing bytes"),
        ("truncated_payload_gz", b"\x00\x00\x08\x02"
         + struct.pack(">II", 3, 3) + b"\x00" * 8, True, "truncated"),
    )  # fmt: skip
    def test_corrupt_file_raises_naming_it(self, payload, gz, message):
        path = _write(os.path.join(self.tmpdir(), "bad-file"), payload, gz)
        with self.assertRaisesRegex(ValueError, "bad-file") as ctx:
            data.read_idx(path)
        self.assertRegex(str(ctx.exception), message)

    def test_corrupt_gzip_stream(self):
        payload = gzip.compress(_idx_bytes(np.arange(1000) % 256))
        path = _write(os.path.join(self.tmpdir(), "cut.gz"), payload[:-30])
        with self.assertRaisesRegex(ValueError, "cut.gz.*gzip"):
            data.read_idx(path)

    def test_missing_file(self):
        with self.assertRaises(FileNotFoundError):
            data.read_idx(os.path.join(self.tmpdir(), "nope"))


class LoadIdxTest(_TmpDirMixin, parameterized.TestCase):
    @parameterized.parameters(False, True)
    def test_loads_directory(self, gz):
        arrays = _small_arrays()
        directory = self.tmpdir()
        _write_idx_set(directory, arrays, gz=gz)
        ds = data.load_idx(directory)
        for split in ("train", "test"):
            images = getattr(ds, f"{split}_images")
            labels = getattr(ds, f"{split}_labels")
            self.assertEqual(images.dtype, np.uint8)
            self.assertEqual(labels.dtype, np.int32)
            np.testing.assert_array_equal(
                images, arrays[f"{split}_images"][..., None]
            )
            np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])
        self.assertEqual(ds.image_shape, (3, 2, 1))
        self.assertEqual(ds.num_classes, 4)
        self.assertEqual(ds.name, f"idx:{directory}")

    def test_prefers_uncompressed_copy(self):
        directory = self.tmpdir()
        _write_idx_set(directory, _small_arrays(seed=1), gz=True)
        plain = _small_arrays(seed=2)
        _write_idx_set(directory, plain)
        ds = data.load_idx(directory)
        np.testing.assert_array_equal(
            ds.train_images[..., 0], plain["train_images"]
        )

    def test_emnist_style_prefixes(self):
        directory = self.tmpdir()
        balanced = _small_arrays(seed=3, num_classes=7)
        digits = _small_arrays(seed=4, n_train=6)
        _write_idx_set(
            directory, balanced, prefix="emnist-balanced-", test="test"
        )
        _write_idx_set(directory, digits, prefix="emnist-digits-", test="test")
        with self.assertRaisesRegex(
            ValueError, "emnist-balanced-.*emnist-digits-.*prefix="
        ):
            data.load_idx(directory)
        ds = data.load_idx(directory, prefix="emnist-digits")
        np.testing.assert_array_equal(
            ds.train_images[..., 0], digits["train_images"]
        )
        self.assertEqual(ds.name, f"idx:{directory}/emnist-digits-")
        via_spec = data.load_dataset(f"idx:{directory}/emnist-balanced-")
        np.testing.assert_array_equal(
            via_spec.test_labels, balanced["test_labels"]
        )
        self.assertEqual(via_spec.num_classes, 7)

    def test_single_prefixed_set_found_without_prefix(self):
        directory = self.tmpdir()
        arrays = _small_arrays(seed=5)
        _write_idx_set(directory, arrays, prefix="kmnist-", gz=True)
        ds = data.load_idx(directory)
        np.testing.assert_array_equal(ds.test_labels, arrays["test_labels"])

    def test_count_mismatch_names_both_files(self):
        directory = self.tmpdir()
        arrays = _small_arrays()
        arrays["test_labels"] = arrays["test_labels"][:-1]
        _write_idx_set(directory, arrays)
        with self.assertRaisesRegex(
            ValueError,
            r"t10k-images-idx3-ubyte holds 5 images but .*"
            r"t10k-labels-idx1-ubyte holds 4 labels",
        ):
            data.load_idx(directory)

    def test_corrupt_member_file_is_named(self):
        directory = self.tmpdir()
        names = _write_idx_set(directory, _small_arrays())
        path = os.path.join(directory, names["train_images"])
        _write(path, pathlib.Path(path).read_bytes()[:-1])
        with self.assertRaisesRegex(
            ValueError, "train-images-idx3-ubyte: payload truncated"
        ):
            data.load_idx(directory)

    def test_wrong_image_dtype(self):
        directory = self.tmpdir()
        arrays = _small_arrays()
        _write_idx_set(directory, arrays)
        _write(
            os.path.join(directory, "train-images-idx3-ubyte"),
            _idx_bytes(arrays["train_images"], 0x0B),
        )
        with self.assertRaisesRegex(ValueError, "uint8 images.*int16"):
            data.load_idx(directory)

    def test_missing_files_lists_expected_and_found(self):
        directory = self.tmpdir()
        arrays = _small_arrays()
        _write(
            os.path.join(directory, "train-images-idx3-ubyte"),
            _idx_bytes(arrays["train_images"]),
        )
        _write(os.path.join(directory, "notes.txt"), b"hello")
        with self.assertRaises(FileNotFoundError) as ctx:
            data.load_idx(directory)
        message = str(ctx.exception)
        self.assertIn(r"t10k-images-idx3-ubyte[.gz]", message)
        self.assertIn(r"train-labels-idx1-ubyte[.gz]", message)
        self.assertIn("Found: notes.txt, train-images-idx3-ubyte", message)

    def test_missing_directory(self):
        missing = os.path.join(self.tmpdir(), "absent")
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            data.load_idx(missing)

    @unittest.skipUnless(MNIST_DIR.is_dir(), NO_MNIST)
    def test_real_mnist(self):
        ds = _real_mnist()
        self.assertEqual(ds.train_images.shape, (60000, 28, 28, 1))
        self.assertEqual(ds.test_images.shape, (10000, 28, 28, 1))
        self.assertEqual(ds.train_images.dtype, np.uint8)
        self.assertEqual(ds.train_labels.dtype, np.int32)
        self.assertEqual(ds.num_classes, 10)
        np.testing.assert_array_equal(np.unique(ds.train_labels), range(10))
        np.testing.assert_array_equal(np.unique(ds.test_labels), range(10))
        # Published facts: the first training digit is a 5, the first test
        # digit a 7; pixels span 0..255.
        self.assertEqual(ds.train_labels[0], 5)
        self.assertEqual(ds.test_labels[0], 7)
        self.assertEqual(ds.train_images.max(), 255)


def _cifar_bytes(rng, num_records, labels=None):
    raw = rng.integers(0, 256, (num_records, 3073), np.uint8)
    raw[:, 0] = rng.integers(0, 10, num_records) if labels is None else labels
    return raw.tobytes()


class _Touch:
    """Unpickling this creates a file: evidence that a pickle was loaded."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


class Cifar10Test(_TmpDirMixin, parameterized.TestCase):
    def _write_set(self, directory, records=2):
        rng = np.random.default_rng(0)
        files = {}
        names = [f"data_batch_{i}.bin" for i in range(1, 6)]
        for name in [*names, "test_batch.bin"]:
            files[name] = _cifar_bytes(rng, records)
            _write(os.path.join(directory, name), files[name])
        return files

    @parameterized.parameters("", "cifar-10-batches-bin")
    def test_decodes_nhwc_pixel_by_pixel(self, subdirectory):
        directory = self.tmpdir()
        folder = os.path.join(directory, subdirectory)
        os.makedirs(folder, exist_ok=True)
        files = self._write_set(folder)
        ds = data.load_cifar10(directory)
        self.assertEqual(ds.train_images.shape, (10, 32, 32, 3))
        self.assertEqual(ds.test_images.shape, (2, 32, 32, 3))
        self.assertEqual(ds.train_images.dtype, np.uint8)
        self.assertEqual(ds.train_labels.dtype, np.int32)
        self.assertEqual(ds.num_classes, 10)
        raw = files["test_batch.bin"]
        for r in range(2):
            base = r * 3073
            self.assertEqual(ds.test_labels[r], raw[base])
            for c in range(3):
                for y in range(32):
                    for x in range(32):
                        want = raw[base + 1 + c * 1024 + y * 32 + x]
                        if ds.test_images[r, y, x, c] != want:
                            self.fail(f"pixel {(r, y, x, c)} differs")
        # Training batches are concatenated in order 1..5.
        raw = files["data_batch_3.bin"]
        np.testing.assert_array_equal(ds.train_labels[4:6], [raw[0], raw[3073]])
        self.assertEqual(
            ds.train_images[5, 31, 0, 2], raw[3073 + 1 + 2048 + 992]
        )

    def test_bad_record_size_names_file(self):
        directory = self.tmpdir()
        self._write_set(directory)
        path = os.path.join(directory, "data_batch_2.bin")
        _write(path, pathlib.Path(path).read_bytes()[:-5])
        with self.assertRaisesRegex(
            ValueError, r"data_batch_2\.bin: 6141 bytes .* 3073-byte"
        ):
            data.load_cifar10(directory)

    def test_label_out_of_range(self):
        directory = self.tmpdir()
        self._write_set(directory)
        rng = np.random.default_rng(1)
        _write(
            os.path.join(directory, "test_batch.bin"),
            _cifar_bytes(rng, 3, labels=[1, 57, 2]),
        )
        with self.assertRaisesRegex(ValueError, "record 1 has label byte 57"):
            data.load_cifar10(directory)

    @parameterized.parameters("", "cifar-10-batches-py")
    def test_refuses_pickled_version_without_loading_it(self, subdirectory):
        directory = self.tmpdir()
        folder = os.path.join(directory, subdirectory)
        os.makedirs(folder, exist_ok=True)
        marker = pathlib.Path(self.tmpdir()) / "unpickled"
        payload = pickle.dumps(_Touch(marker))
        for name in [
            *(f"data_batch_{i}" for i in range(1, 6)),
            "test_batch",
            "batches.meta",
        ]:
            _write(os.path.join(folder, name), payload)
        # The payload works: loading a copy of it creates its marker.
        control = marker.with_name("control")
        pickle.loads(pickle.dumps(_Touch(control)))
        self.assertTrue(control.exists())
        with (
            mock.patch.object(pickle, "load", side_effect=AssertionError),
            mock.patch.object(pickle, "loads", side_effect=AssertionError),
            self.assertRaisesRegex(ValueError, "pickled.*refuses.*binary"),
        ):
            data.load_dataset(f"cifar:{directory}")
        self.assertFalse(marker.exists())

    def test_missing_files_listed(self):
        directory = self.tmpdir()
        _write(os.path.join(directory, "data_batch_1.bin"), b"")
        with self.assertRaisesRegex(
            FileNotFoundError, r"test_batch\.bin.*Found: data_batch_1\.bin"
        ):
            data.load_cifar10(directory)
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            data.load_cifar10(os.path.join(directory, "absent"))


class MnistSampleTest(parameterized.TestCase):
    def test_contents(self):
        ds = data.load_mnist_sample()
        self.assertEqual(ds.train_images.shape, (6000, 28, 28, 1))
        self.assertEqual(ds.test_images.shape, (1000, 28, 28, 1))
        self.assertEqual(ds.train_images.dtype, np.uint8)
        self.assertEqual(ds.test_images.dtype, np.uint8)
        self.assertEqual(ds.train_labels.dtype, np.int32)
        self.assertEqual(ds.test_labels.dtype, np.int32)
        self.assertEqual(ds.num_classes, 10)
        self.assertEqual(ds.name, "mnist-sample")
        np.testing.assert_array_equal(np.bincount(ds.train_labels), [600] * 10)
        np.testing.assert_array_equal(np.bincount(ds.test_labels), [100] * 10)
        self.assertEqual(ds.train_images.max(), 255)

    def test_file_is_small_and_pickle_free(self):
        self.assertLess(SAMPLE_NPZ.stat().st_size, 3 * 1024 * 1024)
        with np.load(SAMPLE_NPZ, allow_pickle=False) as npz:
            self.assertEqual(
                sorted(npz.files),
                [
                    "seed",
                    "test_images",
                    "test_labels",
                    "test_source_indices",
                    "train_images",
                    "train_labels",
                    "train_source_indices",
                ],
            )
            for key in npz.files:
                self.assertFalse(npz[key].dtype.hasobject, key)
            self.assertEqual(int(npz["seed"]), 0)
        self.assertTrue((SAMPLE_NPZ.parent / "LICENSE-MNIST.txt").is_file())

    @unittest.skipUnless(MNIST_DIR.is_dir(), NO_MNIST)
    def test_identical_to_real_mnist_at_recorded_indices(self):
        real = _real_mnist()
        sample = data.load_mnist_sample()
        with np.load(SAMPLE_NPZ, allow_pickle=False) as npz:
            train_index = npz["train_source_indices"]
            test_index = npz["test_source_indices"]
        self.assertTrue(np.all(np.diff(train_index) > 0))
        self.assertTrue(np.all(np.diff(test_index) > 0))
        for i in (0, 1, 2999, 5999):
            self.assertEqual(
                sample.train_images[i].tobytes(),
                real.train_images[train_index[i]].tobytes(),
            )
        np.testing.assert_array_equal(
            sample.train_images, real.train_images[train_index]
        )
        np.testing.assert_array_equal(
            sample.train_labels, real.train_labels[train_index]
        )
        np.testing.assert_array_equal(
            sample.test_images, real.test_images[test_index]
        )
        np.testing.assert_array_equal(
            sample.test_labels, real.test_labels[test_index]
        )

    @unittest.skipUnless(MNIST_DIR.is_dir(), NO_MNIST)
    def test_script_reproduces_the_sample(self):
        script = _load_script()
        rebuilt = script.build_sample(_real_mnist())
        with np.load(SAMPLE_NPZ, allow_pickle=False) as npz:
            self.assertEqual(sorted(npz.files), sorted(rebuilt))
            for key, value in rebuilt.items():
                self.assertEqual(npz[key].dtype, value.dtype, key)
                np.testing.assert_array_equal(npz[key], value, err_msg=key)


class LoadDatasetTest(_TmpDirMixin, parameterized.TestCase):
    def test_mnist_sample(self):
        ds = data.load_dataset("mnist-sample")
        np.testing.assert_array_equal(
            ds.test_labels, data.load_mnist_sample().test_labels
        )
        self.assertEqual(ds.image_shape, (28, 28, 1))

    def test_idx_and_cifar_directories(self):
        directory = self.tmpdir()
        arrays = _small_arrays()
        _write_idx_set(directory, arrays, gz=True)
        ds = data.load_dataset(f"idx:{directory}")
        np.testing.assert_array_equal(ds.train_labels, arrays["train_labels"])
        self.assertEqual(ds.name, f"idx:{directory}")
        cifar = self.tmpdir()
        Cifar10Test._write_set(self, cifar, records=1)
        ds = data.load_dataset(f"cifar:{cifar}")
        self.assertEqual(ds.train_images.shape, (5, 32, 32, 3))
        self.assertEqual(ds.name, f"cifar:{cifar}")

    @parameterized.parameters(
        "", "MNIST", "mnist sample", "/data/mnist", "foo:bar", "npz:x"
    )
    def test_unknown_spec(self, spec):
        with self.assertRaisesRegex(
            ValueError,
            "Unknown dataset spec.*'mnist-sample'.*'idx:DIR'.*'cifar:DIR'"
            ".*TFDS name",
        ):
            data.load_dataset(spec)

    @parameterized.parameters("idx:", "cifar:")
    def test_spec_without_directory(self, spec):
        with self.assertRaisesRegex(ValueError, "names no directory"):
            data.load_dataset(spec)

    @parameterized.parameters("idx", "cifar")
    def test_missing_directory(self, kind):
        missing = os.path.join(self.tmpdir(), "absent", "deeper")
        with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
            data.load_dataset(f"{kind}:{missing}")

    def test_directory_typo_is_not_taken_for_a_prefix(self):
        directory = self.tmpdir()
        _write_idx_set(directory, _small_arrays())
        with self.assertRaisesRegex(
            FileNotFoundError, "'.*/mnsit' does not exist.*prefix 'mnsit'"
        ):
            data.load_dataset(f"idx:{directory}/mnsit")

    def test_data_dir_only_for_tfds(self):
        with self.assertRaisesRegex(ValueError, "only used for TFDS"):
            data.load_dataset("mnist-sample", data_dir="/tmp")

    def test_spec_must_be_a_string(self):
        with self.assertRaisesRegex(TypeError, "string"):
            data.load_dataset(pathlib.Path("idx:/x"))


def _indexed_dataset(n_train=103, n_test=7):
    """Images encode their own index, so splits can be decoded exactly."""
    index = np.arange(n_train)
    images = np.zeros((n_train, 2, 1, 1), np.uint8)
    images[:, 0, 0, 0] = index % 256
    images[:, 1, 0, 0] = index // 256
    labels = np.concatenate(
        [np.zeros(60), np.ones(30), np.full(n_train - 90, 2)]
    ).astype(np.int32)
    return data.Dataset(
        train_images=images,
        train_labels=labels,
        test_images=np.full((n_test, 2, 1, 1), 7, np.uint8),
        test_labels=np.zeros(n_test, np.int32),
        num_classes=3,
        name="indexed",
    )


def _decode(images):
    return images[..., 0, 0, 0] + 256 * images[..., 1, 0, 0].astype(int)


class SplitValidationTest(parameterized.TestCase):
    def test_disjoint_covering_stratified(self):
        ds = _indexed_dataset()
        train, val = data.split_validation(ds, size=20, seed=3)
        train_index, val_index = (
            _decode(train.train_images),
            _decode(val.images),
        )
        self.assertLen(val_index, 20)
        self.assertEmpty(np.intersect1d(train_index, val_index))
        np.testing.assert_array_equal(
            np.sort(np.concatenate([train_index, val_index])), np.arange(103)
        )
        # Labels travel with their images; both parts keep the file order.
        np.testing.assert_array_equal(val.labels, ds.train_labels[val_index])
        np.testing.assert_array_equal(
            train.train_labels, ds.train_labels[train_index]
        )
        self.assertTrue(np.all(np.diff(val_index) > 0))
        # Class sizes 60/30/13 of 103 -> quotas 11.65/5.83/2.52 -> 12/6/2.
        np.testing.assert_array_equal(np.bincount(val.labels), [12, 6, 2])
        self.assertEqual(val.images.dtype, np.uint8)
        self.assertEqual(val.labels.dtype, np.int32)

    def test_deterministic_in_seed(self):
        ds = _indexed_dataset()
        a = _decode(data.split_validation(ds, size=30, seed=0)[1].images)
        b = _decode(data.split_validation(ds, size=30, seed=0)[1].images)
        c = _decode(data.split_validation(ds, size=30, seed=1)[1].images)
        np.testing.assert_array_equal(a, b)
        self.assertFalse(np.array_equal(a, c))

    def test_fraction_and_untouched_test_set(self):
        ds = _indexed_dataset()
        before = ds.train_images.copy()
        train, val = data.split_validation(ds, fraction=0.1, seed=0)
        self.assertLen(val.labels, 10)  # round(0.1 * 103)
        self.assertLen(train.train_labels, 93)
        self.assertTrue(np.shares_memory(train.test_images, ds.test_images))
        np.testing.assert_array_equal(train.test_images, ds.test_images)
        np.testing.assert_array_equal(train.test_labels, ds.test_labels)
        np.testing.assert_array_equal(ds.train_images, before)
        self.assertEqual(train.num_classes, 3)
        self.assertIn("validation set of 10 (seed=0)", train.source)

    @parameterized.named_parameters(
        ("size_zero", {"size": 0}, "between 1 and 102"),
        ("size_all", {"size": 103}, "between 1 and 102"),
        ("size_more", {"size": 500}, "between 1 and 102"),
        ("fraction_zero", {"fraction": 0.0}, r"in \(0, 1\)"),
        ("fraction_one", {"fraction": 1.0}, r"in \(0, 1\)"),
        ("fraction_rounds_to_zero", {"fraction": 0.001}, "gives size=0"),
        ("both", {"size": 5, "fraction": 0.1}, "exactly one"),
        ("neither", {}, "exactly one"),
        ("float_size", {"size": 5.0}, "between 1 and 102"),
    )
    def test_errors(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            data.split_validation(_indexed_dataset(), seed=0, **kwargs)

    def test_negative_seed(self):
        with self.assertRaisesRegex(ValueError, "non-negative int"):
            data.split_validation(_indexed_dataset(), size=5, seed=-1)


class DatasetTest(parameterized.TestCase):
    def _kwargs(self, **overrides):
        kwargs = {
            "train_images": np.zeros((4, 2, 2, 1), np.uint8),
            "train_labels": np.array([0, 1, 2, 1], np.int32),
            "test_images": np.zeros((2, 2, 2, 1), np.uint8),
            "test_labels": np.array([0, 2], np.int32),
            "num_classes": 3,
            "name": "tiny",
        }
        kwargs.update(overrides)
        return kwargs

    def test_read_only_views(self):
        kwargs = self._kwargs()
        ds = data.Dataset(**kwargs)
        with self.assertRaisesRegex(ValueError, "read-only"):
            ds.train_images[0, 0, 0, 0] = 1
        kwargs["train_images"][0, 0, 0, 0] = 9  # the caller's array is not
        self.assertEqual(ds.train_images[0, 0, 0, 0], 9)  # a view of it
        with self.assertRaises(dataclasses.FrozenInstanceError):
            ds.num_classes = 4
        self.assertEqual(
            repr(ds),
            "Dataset(name='tiny', train=(4, 2, 2, 1), test=(2, 2, 2, 1),"
            " num_classes=3)",
        )
        self.assertEqual(ds.train.images.shape, (4, 2, 2, 1))
        self.assertEqual(ds.test.labels.tolist(), [0, 2])

    @parameterized.named_parameters(
        ("float_images", {"train_images": np.zeros((4, 2, 2, 1))}, TypeError,
         "train_images must be a uint8"),
        ("int64_labels", {"test_labels": np.array([0, 2])}, TypeError,
         "test_labels must be an int32"),
        ("nhw_images", {"train_images": np.zeros((4, 2, 2), np.uint8)},
         ValueError, r"\(N, H, W, C\)"),
        ("count_mismatch", {"test_labels": np.array([0], np.int32)},
         ValueError, r"shape \(2,\)"),
        ("label_range", {"train_labels": np.array([0, 1, 3, 1], np.int32)},
         ValueError, r"\[0, num_classes=3\)"),
        ("image_shapes", {"test_images": np.zeros((2, 3, 2, 1), np.uint8)},
         ValueError, "same"),
        ("num_classes", {"num_classes": 0}, ValueError, "positive int"),
    )  # fmt: skip
    def test_validation(self, overrides, error, message):
        with self.assertRaisesRegex(error, message):
            data.Dataset(**self._kwargs(**overrides))


class PreprocessTest(parameterized.TestCase):
    def test_to_float(self):
        pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
        with jax.numpy_dtype_promotion("strict"):
            got = jax.jit(data.to_float)(pixels)
        self.assertEqual(got.dtype, jnp.float32)
        self.assertEqual(got.shape, (4, 8, 8, 1))
        self.assertEqual(float(got.min()), 0.0)
        self.assertEqual(float(got.max()), 1.0)
        np.testing.assert_allclose(
            got.ravel(), np.arange(256, dtype=np.float32) / 255, rtol=1e-7
        )

    def test_to_float_rejects_float_input(self):
        with self.assertRaisesRegex(TypeError, "uint8.*float32"):
            data.to_float(np.zeros((2, 2), np.float32))

    @parameterized.parameters(
        ((5, 28, 28, 1), (5, 784)),
        ((3, 5, 4, 4, 3), (3, 5, 48)),
        ((28, 28, 1), (784,)),
    )
    def test_flatten(self, shape, want):
        x = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
        got = jax.jit(data.flatten)(x)
        self.assertEqual(got.shape, want)
        self.assertEqual(got.dtype, jnp.uint8)
        np.testing.assert_array_equal(got, x.reshape(want))

    def test_flatten_needs_three_axes(self):
        with self.assertRaisesRegex(ValueError, r"\(\.\.\., H, W, C\)"):
            data.flatten(np.zeros((4, 5)))


def _batches(n=23, **kwargs):
    images = np.arange(n, dtype=np.int64).reshape(n, 1, 1, 1) * 10
    labels = np.arange(n)
    kwargs = {"batch_size": 5, "seed": 0, "epoch": 0} | kwargs
    return list(data.iterate_batches(images, labels, **kwargs))


class IterateBatchesTest(parameterized.TestCase):
    def test_deterministic_per_seed_and_epoch(self):
        first = np.concatenate([y for _, y in _batches()])
        again = np.concatenate([y for _, y in _batches()])
        next_epoch = np.concatenate([y for _, y in _batches(epoch=1)])
        other_seed = np.concatenate([y for _, y in _batches(seed=1)])
        np.testing.assert_array_equal(first, again)
        self.assertFalse(np.array_equal(first, next_epoch))
        self.assertFalse(np.array_equal(first, other_seed))
        self.assertFalse(np.array_equal(first, np.sort(first)))

    def test_images_and_labels_stay_paired(self):
        for x, y in _batches(seed=4, epoch=2):
            np.testing.assert_array_equal(x[:, 0, 0, 0], 10 * y)

    def test_every_example_once_without_drop_remainder(self):
        batches = _batches(drop_remainder=False)
        self.assertLen(batches, 5)
        self.assertEqual([len(y) for _, y in batches], [5, 5, 5, 5, 3])
        labels = np.concatenate([y for _, y in batches])
        np.testing.assert_array_equal(np.sort(labels), np.arange(23))

    def test_drop_remainder(self):
        batches = _batches(seed=2)
        self.assertLen(batches, 4)
        labels = np.concatenate([y for _, y in batches])
        self.assertEqual([len(y) for _, y in batches], [5] * 4)
        self.assertLen(np.unique(labels), 20)

    def test_no_shuffle_keeps_order(self):
        labels = np.concatenate([y for _, y in _batches(shuffle=False)])
        np.testing.assert_array_equal(labels, np.arange(20))

    def test_several_seeds_stack_independent_orders(self):
        stacked = _batches(seed=[0, 1, 2], epoch=3, drop_remainder=False)
        self.assertLen(stacked, 5)
        self.assertEqual(stacked[0][0].shape, (3, 5, 1, 1, 1))
        self.assertEqual(stacked[0][1].shape, (3, 5))
        self.assertEqual(stacked[-1][0].shape, (3, 3, 1, 1, 1))
        for row, seed in enumerate((0, 1, 2)):
            single = _batches(seed=seed, epoch=3, drop_remainder=False)
            for (xs, ys), (x, y) in zip(stacked, single, strict=True):
                np.testing.assert_array_equal(xs[row], x)
                np.testing.assert_array_equal(ys[row], y)
        self.assertFalse(np.array_equal(stacked[0][1][0], stacked[0][1][1]))
        self.assertEqual(_batches(seed=[7])[0][1].shape, (1, 5))

    def test_leaves_global_numpy_random_alone(self):
        # Reads the legacy global state only to check nothing drew from it.
        state = np.random.get_state()[1].copy()  # noqa: NPY002
        _batches(seed=[0, 1])
        data.split_validation(_indexed_dataset(), size=5, seed=0)
        after = np.random.get_state()[1]  # noqa: NPY002
        np.testing.assert_array_equal(after, state)

    @parameterized.parameters(
        (23, 5, True, 4), (23, 5, False, 5), (20, 5, True, 4),
        (20, 5, False, 4), (3, 5, True, 0), (3, 5, False, 1), (0, 5, False, 0),
    )  # fmt: skip
    def test_num_batches(self, n, batch_size, drop_remainder, want):
        self.assertEqual(
            data.num_batches(
                n, batch_size=batch_size, drop_remainder=drop_remainder
            ),
            want,
        )
        if want:
            self.assertLen(
                _batches(
                    n, batch_size=batch_size, drop_remainder=drop_remainder
                ),
                want,
            )

    @parameterized.named_parameters(
        ("batch_zero", {"batch_size": 0}, "positive int"),
        ("batch_bool", {"batch_size": True}, "positive int"),
        ("no_batch", {"batch_size": 50}, "gives no batch"),
        ("negative_seed", {"seed": -1}, "seed=-1"),
        ("float_seed", {"seed": 1.5}, "seed=1.5"),
        ("empty_seeds", {"seed": []}, "at least one seed"),
        ("negative_epoch", {"epoch": -2}, "epoch=-2"),
    )
    def test_errors_raised_at_call(self, kwargs, message):
        images = np.zeros((23, 1, 1, 1), np.uint8)
        kwargs = {"batch_size": 5, "seed": 0, "epoch": 0} | kwargs
        with self.assertRaisesRegex(ValueError, message):
            data.iterate_batches(images, np.zeros(23), **kwargs)

    def test_length_mismatch(self):
        with self.assertRaisesRegex(ValueError, "same leading length"):
            data.iterate_batches(
                np.zeros((4, 2)), np.zeros(5), batch_size=2, seed=0, epoch=0
            )


class PrefetchTest(parameterized.TestCase):
    def test_yields_device_arrays_in_order_ahead_of_use(self):
        pulled = []

        def source():
            for i in range(5):
                pulled.append(i)
                yield {"x": np.full((2, 3), i, np.uint8), "y": np.int32(i)}

        stream = data.prefetch_to_device(source(), size=2)
        self.assertEqual(pulled, [])  # lazy until the first next()
        first = next(stream)
        self.assertEqual(pulled, [0, 1])
        self.assertIsInstance(first["x"], jax.Array)
        self.assertEqual(first["x"].dtype, jnp.uint8)
        rest = list(stream)
        self.assertLen(rest, 4)
        values = [int(b["y"]) for b in [first, *rest]]
        self.assertEqual(values, [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(rest[-1]["x"], np.full((2, 3), 4))

    def test_feeds_a_jitted_step(self):
        images = np.arange(40, dtype=np.uint8).reshape(10, 2, 2, 1)
        batches = data.iterate_batches(
            images, np.arange(10), batch_size=5, seed=[0, 1], epoch=0
        )
        step = jax.jit(lambda x: data.flatten(data.to_float(x)).sum(axis=-1))
        sums = [step(x) for x, _ in data.prefetch_to_device(batches, 1)]
        self.assertLen(sums, 2)
        self.assertEqual(sums[0].shape, (2, 5))
        total = sum(float(s.sum()) for s in sums)
        self.assertAlmostEqual(total, 2 * images.sum() / 255, places=3)

    @parameterized.parameters(0, -1, 1.5)
    def test_bad_size(self, size):
        with self.assertRaisesRegex(ValueError, "size"):
            data.prefetch_to_device(iter([]), size)


class TfdsMissingTest(parameterized.TestCase):
    def test_missing_extra_names_it(self):
        with (
            mock.patch.dict(sys.modules, {"tensorflow_datasets": None}),
            self.assertRaisesRegex(
                ImportError, r'pip install "bnnjax\[data\]".*mnist-sample'
            ),
        ):
            data.load_dataset("mnist")


_REAL_PROBE = data._download_possible


@unittest.skipIf(tfds is None, NO_TFDS)
class TfdsTest(_TmpDirMixin, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # These tests simulate a machine where TFDS could download (mocked
        # data, or a mocked failing download); the reachability probe is
        # tested on its own below.
        probe = mock.patch.object(data, "_download_possible", return_value=True)
        probe.start()
        self.addCleanup(probe.stop)

    def _mock(self, num_examples=6):
        return tfds.testing.mock_data(
            num_examples=num_examples,
            policy=tfds.testing.MockPolicy.USE_CODE,
        )

    @parameterized.parameters(
        ("mnist", (28, 28, 1), 10),
        ("fashion_mnist", (28, 28, 1), 10),
        ("kmnist", (28, 28, 1), 10),
        ("cifar10", (32, 32, 3), 10),
        ("emnist/balanced", (28, 28, 1), 47),
    )
    def test_mock_data(self, name, image_shape, num_classes):
        with self._mock(num_examples=6):
            ds = data.load_dataset(name, data_dir=self.tmpdir())
            want = tfds.data_source(name, split="test")
            want_images = np.stack([want[i]["image"] for i in range(6)])
            want_labels = [int(want[i]["label"]) for i in range(6)]
        self.assertEqual(ds.train_images.shape, (6, *image_shape))
        self.assertEqual(ds.test_images.shape, (6, *image_shape))
        self.assertEqual(ds.train_images.dtype, np.uint8)
        self.assertEqual(ds.train_labels.dtype, np.int32)
        self.assertEqual(ds.num_classes, num_classes)
        self.assertEqual(ds.name, name)
        np.testing.assert_array_equal(ds.test_images, want_images)
        np.testing.assert_array_equal(ds.test_labels, want_labels)

    def test_unknown_name(self):
        with self.assertRaisesRegex(
            ValueError, "TFDS has no dataset named 'no_such_set'.*idx:DIR"
        ):
            data.load_dataset("no_such_set", data_dir=self.tmpdir())

    def test_offline_and_not_prepared(self):
        offline = OSError("network is unreachable")
        with (
            mock.patch.object(
                tfds.core.DatasetBuilder,
                "download_and_prepare",
                side_effect=offline,
            ),
            self.assertRaisesRegex(
                RuntimeError,
                "'mnist' is not prepared in .* could not be downloaded and"
                " prepared: OSError: network is unreachable.*'idx:DIR'.*"
                "'cifar:DIR'.*'mnist-sample'",
            ),
        ):
            data.load_dataset("mnist", data_dir=self.tmpdir())

    def test_missing_image_decoder_names_the_extra(self):
        no_pil = ImportError("Decoding images with NumPy requires PIL.")
        source = "tensorflow_datasets.core.data_sources.base.BaseDataSource"
        with (
            self._mock(num_examples=2),
            mock.patch(f"{source}.__getitem__", side_effect=no_pil),
            self.assertRaisesRegex(
                ImportError, r"Pillow or OpenCV.*bnnjax\[data\]"
            ),
        ):
            data.load_dataset("mnist", data_dir=self.tmpdir())

    def test_offline_fails_at_once_naming_local_files(self):
        # The probe cannot connect: no download is attempted at all.
        with (
            mock.patch.object(data, "_download_possible", _REAL_PROBE),
            mock.patch.dict(os.environ, {"https_proxy": "", "HTTPS_PROXY": ""}),
            mock.patch(
                "socket.create_connection", side_effect=OSError("unreachable")
            ) as connect,
            mock.patch.object(tfds, "data_source") as source,
            self.assertRaisesRegex(
                RuntimeError,
                r"cannot be downloaded: this machine cannot reach "
                r"storage\.googleapis\.com.*'idx:DIR'.*'mnist-sample'",
            ),
        ):
            data.load_dataset("mnist", data_dir=self.tmpdir())
        connect.assert_called_once()
        source.assert_not_called()

    def test_download_probe(self):
        with mock.patch.dict(
            os.environ, {"https_proxy": "", "HTTPS_PROXY": ""}
        ):
            with mock.patch("socket.create_connection", side_effect=OSError):
                self.assertFalse(_REAL_PROBE())
            with mock.patch("socket.create_connection") as connect:
                self.assertTrue(_REAL_PROBE())
            connect.return_value.close.assert_called_once()
        # Behind a proxy a direct connection says nothing: assume possible.
        with (
            mock.patch.dict(os.environ, {"HTTPS_PROXY": "http://proxy:3128"}),
            mock.patch("socket.create_connection") as connect,
        ):
            self.assertTrue(_REAL_PROBE())
        connect.assert_not_called()

    def test_download_disabled_and_not_prepared(self):
        with self.assertRaisesRegex(
            RuntimeError, r"not prepared .*\(download=False\)"
        ):
            data.load_tfds("mnist", data_dir=self.tmpdir(), download=False)


if __name__ == "__main__":
    absltest.main()

"""Derives bnnjax/_data/mnist_sample.npz from the real MNIST IDX files.

Usage (from the repository root)::

    python scripts/make_mnist_sample.py [--mnist-dir ../shared/data/mnist]
        [--output bnnjax/_data/mnist_sample.npz] [--check]

``--mnist-dir`` holds ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz`` (read with bnnjax's own IDX reader,
``bnnjax.data.load_idx``). ``--check`` rebuilds the sample in memory and
compares it with ``--output`` instead of writing: exit status 0 if every
array is identical, 1 otherwise.

The draw: for each digit 0-9, ``TRAIN_PER_CLASS`` indices of the training
file and ``TEST_PER_CLASS`` of the test file, chosen without replacement by
``numpy.random.default_rng(SEED)`` (training draws first, then test, class by
class); the chosen indices are sorted, so the sample keeps the files' order.
Pixels and labels are copied unchanged. The npz holds only numeric arrays
(loadable with ``allow_pickle=False``): ``train_images`` (N, 28, 28, 1)
uint8, ``train_labels`` int32, ``test_images``, ``test_labels``,
``train_source_indices`` / ``test_source_indices`` (int32 positions in the
original files) and ``seed``. It is written as a deflated zip with fixed
timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Sequence

import numpy as np

from bnnjax import data

SEED = 0
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
NUM_CLASSES = 10

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MNIST_DIR = os.path.join(_ROOT, "..", "shared", "data", "mnist")
DEFAULT_OUTPUT = os.path.join(_ROOT, "bnnjax", "_data", "mnist_sample.npz")


def _draw(
    labels: np.ndarray, per_class: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices: ``per_class`` of each class, without replacement."""
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(NUM_CLASSES)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def build_sample(
    mnist: data.Dataset,
    *,
    seed: int = SEED,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
) -> dict[str, np.ndarray]:
    """Returns the sample's arrays, drawn from the full MNIST dataset.

    Args:
      mnist: the full MNIST dataset (60000 training, 10000 test images).
      seed: seed of ``numpy.random.default_rng``.
      train_per_class: training images per digit.
      test_per_class: test images per digit.

    Returns:
      The arrays to store in the npz, keyed by name.
    """
    rng = np.random.default_rng(seed)
    train = _draw(mnist.train_labels, train_per_class, rng)
    test = _draw(mnist.test_labels, test_per_class, rng)
    return {
        "train_images": mnist.train_images[train],
        "train_labels": mnist.train_labels[train],
        "test_images": mnist.test_images[test],
        "test_labels": mnist.test_labels[test],
        "train_source_indices": train,
        "test_source_indices": test,
        "seed": np.asarray(seed, np.int64),
    }


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes an ``np.load``-compatible compressed npz with fixed metadata."""
    with zipfile.ZipFile(
        path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
    ) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(
                f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mnist-dir",
        default=DEFAULT_MNIST_DIR,
        help="directory of the MNIST IDX files (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        default=DEFAULT_OUTPUT,
        help="npz file to write (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with --output instead of writing it",
    )
    args = parser.parse_args(argv)
    arrays = build_sample(data.load_idx(args.mnist_dir))
    if args.check:
        with np.load(args.output, allow_pickle=False) as stored:
            same = sorted(stored.files) == sorted(arrays) and all(
                stored[key].dtype == value.dtype
                and np.array_equal(stored[key], value)
                for key, value in arrays.items()
            )
        print(f"{args.output}: {'identical' if same else 'DIFFERS'}")
        return 0 if same else 1
    write_npz(args.output, arrays)
    print(
        f"wrote {args.output}: {os.path.getsize(args.output)} bytes,"
        f" {len(arrays['train_labels'])} train +"
        f" {len(arrays['test_labels'])} test images, seed {SEED}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

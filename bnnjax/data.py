"""Datasets as numpy arrays, and batches that keep a jitted step fed.

Every loader returns a :class:`Dataset`: four numpy arrays (images ``uint8``
in NHWC layout, labels ``int32``) plus the class count and a description of
where the data came from. Sources:

* ``mnist-sample``: a class-balanced sample of the real MNIST digits (6000
  training and 1000 test images) that ships inside the package, so examples
  and tests run offline. See ``bnnjax/_data/LICENSE-MNIST.txt``.
* IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST), gzipped or not, read
  from an explicit directory with numpy only (:func:`load_idx`).
* The *binary* version of CIFAR-10 (:func:`load_cifar10`). The pickled
  "python version" is refused: unpickling a downloaded file can run code.
* TFDS datasets by name through ``tfds.data_source`` (ArrayRecord, no
  TensorFlow), when the ``data`` extra is installed (:func:`load_tfds`).

:func:`load_dataset` turns a string such as ``"idx:~/data/mnist"`` into one
of these calls; it is the only function here that parses strings. Nothing
happens at import: no file is read or created and ``tensorflow_datasets`` is
imported only inside :func:`load_tfds`.

A local path that does not hold its dataset (a missing directory or file, a
file that cannot be read or is not in the format) raises a
:class:`DatasetPathError` whose one-line message names the path and what to
do; it is also the built-in error for the cause (``FileNotFoundError``,
``ValueError`` or ``OSError``).

For training, :func:`split_validation` holds out part of the *training*
arrays, :func:`iterate_batches` yields shuffled numpy batches (one
independent order per seed, stacked, for a trainer that vmaps over seeds)
and :func:`prefetch_to_device` keeps the next batches already on the device.
:func:`to_float` and :func:`flatten` are the preprocessing, written with
``jax.numpy`` so they can run inside the jitted step on ``uint8`` batches.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import math
import numbers
import os
import re
import socket
import struct
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax._batches import (
    check_seed,
    iterate_batches,
    num_batches,
    prefetch_to_device,
)

__all__ = [
    "Dataset",
    "DatasetPathError",
    "DatasetSpecError",
    "DatasetUnavailableError",
    "Examples",
    "flatten",
    "iterate_batches",
    "load_cifar10",
    "load_dataset",
    "load_idx",
    "load_mnist_sample",
    "load_tfds",
    "num_batches",
    "prefetch_to_device",
    "read_idx",
    "split_validation",
    "to_float",
]

PathLike = str | os.PathLike[str]

# Spawn keys separate the random streams derived from one user seed (the
# epoch orders of bnnjax._batches use BATCH_STREAM = 1).
_SPLIT_STREAM = 2

_SPEC_FORMS = (
    "'mnist-sample' (the MNIST sample shipped with bnnjax)",
    "'idx:DIR' (MNIST-family IDX files in DIR; 'idx:DIR/PREFIX-' selects"
    " files named PREFIX-train-images-idx3-ubyte, ... e.g. EMNIST)",
    "'cifar:DIR' (the binary version of CIFAR-10 in DIR)",
    "a TFDS name such as 'mnist', 'fashion_mnist', 'kmnist', 'cifar10' or"
    " 'emnist/balanced' (needs the data extra: pip install \"bnnjax[data]\")",
)
_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?")
_EXTRA_HINT = 'pip install "bnnjax[data]"'
_LOCAL_HINT = (
    "To train without TFDS, use local files instead: 'idx:DIR' (MNIST-family"
    " IDX files), 'cifar:DIR' (binary CIFAR-10) or the embedded"
    " 'mnist-sample'."
)


class DatasetUnavailableError(RuntimeError):
    """A TFDS dataset is neither prepared locally nor downloadable."""


class DatasetPathError(Exception):
    """A local path does not hold the dataset it should.

    The message is one line that names the path and the fix. Every
    instance is also the built-in error for its cause, so existing
    ``except`` clauses keep working: a :class:`FileNotFoundError` (the
    directory or a file is missing), a :class:`ValueError` (a file is not
    in the expected format, or the path is a file where a directory is
    expected) or an :class:`OSError` (a file or directory cannot be read,
    e.g. permission denied).

    Attributes:
      path: the path at fault.
    """

    def __init__(self, message: str, *, path: PathLike):
        super().__init__(message)
        self.path = os.fspath(path)


class DatasetSpecError(ValueError):
    """A dataset spec (``--dataset``, ``--data-dir``) is not one accepted.

    The message names the spec and the accepted forms. Nothing was read.
    """


class _MissingDataError(DatasetPathError, FileNotFoundError):
    """A dataset directory or file does not exist."""


class _InvalidDataError(DatasetPathError, ValueError):
    """A dataset path exists but does not hold what its reader expects."""


class _UnreadableDataError(DatasetPathError, OSError):
    """A dataset file or directory exists but cannot be read."""


def _unreadable(path: PathLike, error: OSError, what: str) -> DatasetPathError:
    """The one-line error for ``what`` at ``path`` that raised ``error``."""
    path = os.fspath(path)
    if isinstance(error, FileNotFoundError):
        return _MissingDataError(
            f"{what} {path} does not exist; check the path.", path=path
        )
    reason = (error.strerror or type(error).__name__).lower()
    if isinstance(error, PermissionError):
        fix = "make it readable (chmod), or copy it to a folder you can read"
    elif isinstance(error, IsADirectoryError):
        fix = "remove that directory or rename it"
    else:
        fix = "check the disk and the file, or copy it elsewhere"
    result = _UnreadableDataError(
        f"cannot read {what} {path}: {reason}; {fix}.", path=path
    )
    result.errno = error.errno
    return result


def _listdir(directory: PathLike, what: str) -> list[str]:
    """``os.listdir``, with a :class:`DatasetPathError` naming ``what``."""
    try:
        return os.listdir(directory)
    except OSError as e:
        raise _unreadable(directory, e, what) from None


# TFDS downloads most datasets (and its pre-prepared copies) from Google
# Cloud Storage; reaching it is the cheap test that a download can work.
_DOWNLOAD_HOST = "storage.googleapis.com"
_PROBE_TIMEOUT_SECONDS = 2.0


def _download_possible() -> bool:
    """Whether TFDS's download host is reachable (True behind a proxy)."""
    if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY")):
        return True
    try:
        socket.create_connection(
            (_DOWNLOAD_HOST, 443), timeout=_PROBE_TIMEOUT_SECONDS
        ).close()
    except OSError:
        return False
    return True


class Examples(NamedTuple):
    """Images and their labels, e.g. one split of a :class:`Dataset`."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset held in memory as numpy arrays.

    The arrays are stored as read-only views, so a ``Dataset`` cannot be
    changed in place (the caller's arrays stay writable). Use
    ``dataclasses.replace`` to derive a new one; it is validated again.

    Attributes:
      train_images: ``(N, H, W, C)`` ``uint8`` training images.
      train_labels: ``(N,)`` ``int32`` training labels in
        ``[0, num_classes)``.
      test_images: ``(M, H, W, C)`` ``uint8`` test images (same ``H, W, C``).
      test_labels: ``(M,)`` ``int32`` test labels.
      num_classes: number of classes; labels lie in ``[0, num_classes)``.
      name: short identifier, e.g. ``"mnist-sample"``, ``"idx:/data/mnist"``
        or a TFDS name.
      source: human-readable description of where the arrays came from.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str
    source: str = ""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.num_classes, numbers.Integral)
            or isinstance(self.num_classes, bool)
            or self.num_classes < 1
        ):
            raise ValueError(
                "Dataset.num_classes must be a positive int, got"
                f" {self.num_classes!r}."
            )
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            _check_examples(images, labels, f"Dataset.{split}_")
            if labels.size and (
                labels.min() < 0 or labels.max() >= self.num_classes
            ):
                raise ValueError(
                    f"Dataset.{split}_labels must lie in [0, num_classes="
                    f"{self.num_classes}), got values in [{labels.min()},"
                    f" {labels.max()}]."
                )
            for field, array in (("images", images), ("labels", labels)):
                view = array.view()
                view.flags.writeable = False
                object.__setattr__(self, f"{split}_{field}", view)
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                "Dataset train and test images must have the same (H, W, C),"
                f" got {self.train_images.shape[1:]} and"
                f" {self.test_images.shape[1:]}."
            )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.train_images.shape},"
            f" test={self.test_images.shape}, num_classes={self.num_classes})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The ``(H, W, C)`` shape of one image."""
        return tuple(self.train_images.shape[1:])

    @property
    def train(self) -> Examples:
        """The training images and labels."""
        return Examples(self.train_images, self.train_labels)

    @property
    def test(self) -> Examples:
        """The test images and labels."""
        return Examples(self.test_images, self.test_labels)


def _check_examples(images: Any, labels: Any, what: str) -> None:
    """Raises if ``images``/``labels`` are not uint8 NHWC / int32 of one N."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(
            f"{what}images must be a uint8 numpy array, got"
            f" {type(images).__name__} of dtype"
            f" {getattr(images, 'dtype', '?')}."
        )
    if images.ndim != 4:
        raise ValueError(
            f"{what}images must have shape (N, H, W, C), got {images.shape}."
        )
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32:
        raise TypeError(
            f"{what}labels must be an int32 numpy array, got"
            f" {type(labels).__name__} of dtype"
            f" {getattr(labels, 'dtype', '?')}."
        )
    if labels.shape != images.shape[:1]:
        raise ValueError(
            f"{what}labels must have shape ({images.shape[0]},) to match the"
            f" images, got {labels.shape}."
        )


def _to_labels(labels: np.ndarray, what: str) -> np.ndarray:
    """Returns integer ``labels`` as int32, raising if they do not fit."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what}: labels must be integers, got dtype {labels.dtype}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 2**31 - 1):
        raise ValueError(
            f"{what}: labels must lie in [0, 2**31), got values in"
            f" [{labels.min()}, {labels.max()}]."
        )
    return labels.astype(np.int32)


# ----------------------------------------------------------------------------
# IDX files (MNIST family)
# ----------------------------------------------------------------------------

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_NAME = re.compile(
    r"(?P<prefix>.*?)(?P<split>train|t10k|test)-(?P<kind>images-idx3|"
    r"labels-idx1)-ubyte(?P<gz>\.gz)?"
)
_IDX_ROLES = (
    ("train", "images-idx3"),
    ("train", "labels-idx1"),
    ("test", "images-idx3"),
    ("test", "labels-idx1"),
)


_IDX_FILES = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte,"
    " t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may end in"
    " .gz)"
)
_REPLACE_IDX = (
    " The file is damaged or not an IDX file: download it again (MNIST's"
    " train-images-idx3-ubyte.gz, ...) and replace it."
)


def _read_file(path: PathLike, what: str) -> bytes:
    """The bytes of a dataset file; one-line errors naming ``what``."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _unreadable(path, e, what) from None


def _read_bytes(path: PathLike) -> bytes:
    """Reads a file, gunzipping it when it starts with the gzip magic."""
    data = _read_file(path, "IDX file")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise _InvalidDataError(
                f"{os.fspath(path)}: corrupt or truncated gzip data ({e})."
                + _REPLACE_IDX,
                path=path,
            ) from e
    return data


def _bad_idx(name: str, problem: str) -> DatasetPathError:
    return _InvalidDataError(f"{name}: {problem}" + _REPLACE_IDX, path=name)


def read_idx(path: PathLike) -> np.ndarray:
    """Reads one IDX file (the MNIST file format), gzipped or not.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09``
    int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E``
    float64), the number of dimensions and then each dimension as a
    big-endian uint32; the big-endian payload follows. A file is treated as
    gzipped when it starts with the gzip magic bytes, whatever its name.

    Args:
      path: the file to read.

    Returns:
      A writable array in native byte order with the header's shape and
      dtype.

    Raises:
      DatasetPathError: naming the file and the fix; a
        ``FileNotFoundError`` if ``path`` does not exist, an ``OSError`` if
        it cannot be read, a ``ValueError`` if the gzip stream is corrupt,
        the magic number or type code is wrong, or the payload is shorter
        or longer than the header's dimensions require.
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise _bad_idx(
            name,
            f"not an IDX file: {len(data)} bytes, shorter than the 4-byte"
            " magic number.",
        )
    if data[0] != 0 or data[1] != 0:
        raise _bad_idx(
            name,
            "not an IDX file: the magic number starts with"
            f" 0x{data[:2].hex()}, expected 0x0000.",
        )
    if data[2] not in _IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise _bad_idx(
            name,
            f"unknown IDX type code 0x{data[2]:02X}; expected one of {codes}.",
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise _bad_idx(name, "the IDX header declares 0 dimensions.")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise _bad_idx(
            name,
            f"truncated IDX header: {ndim} dimensions need {offset} bytes,"
            f" the file has {len(data)}.",
        )
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - offset
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise _bad_idx(
            name,
            f"payload {problem}: shape {shape} of {dtype.name} needs"
            f" {expected} bytes after the header, found {actual}.",
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _listing(directory: PathLike, limit: int = 20) -> str:
    """The sorted entries of ``directory``, shortened to ``limit`` names."""
    names = sorted(_listdir(directory, "directory"))
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown or "nothing"


def _check_directory(directory: str, what: str, spec: str, holds: str) -> None:
    """Raises a one-line :class:`DatasetPathError` unless a directory.

    Args:
      directory: the path.
      what: the kind of data, e.g. ``"IDX"``.
      spec: the spec form that takes the directory, e.g. ``"'idx:DIR'"``.
      holds: the files the directory must hold.
    """
    if os.path.isdir(directory):
        return
    if os.path.exists(directory):
        raise _InvalidDataError(
            f"{what} directory {directory!r} is a file, not a directory; give"
            f" {spec} the directory that holds {holds}.",
            path=directory,
        )
    raise _MissingDataError(
        f"{what} directory {directory!r} does not exist; give {spec} a"
        f" directory that holds {holds}.",
        path=directory,
    )


def _find_idx_files(
    directory: str, prefix: str | None
) -> tuple[str, dict[tuple[str, str], str]]:
    """Returns the prefix used and the path of each of the four IDX files."""
    _check_directory(directory, "IDX", "'idx:DIR'", _IDX_FILES)
    # (prefix, role) -> candidate file names.
    found: dict[str, dict[tuple[str, str], list[str]]] = {}
    for entry in _listdir(directory, "IDX directory"):
        match = _IDX_NAME.fullmatch(entry)
        if not match or not os.path.isfile(os.path.join(directory, entry)):
            continue
        file_prefix = match["prefix"]
        if file_prefix and not file_prefix.endswith("-"):
            continue
        split = "train" if match["split"] == "train" else "test"
        roles = found.setdefault(file_prefix, {})
        roles.setdefault((split, match["kind"]), []).append(entry)
    complete = sorted(p for p, roles in found.items() if len(roles) == 4)
    if prefix is None:
        if len(complete) > 1:
            raise _InvalidDataError(
                f"{directory!r} holds several IDX datasets, with file-name"
                f" prefixes {complete}; choose one with load_idx(directory,"
                " prefix=...) or the spec 'idx:DIR/PREFIX'.",
                path=directory,
            )
        prefix = complete[0] if complete else ""
    elif prefix and not prefix.endswith("-"):
        prefix += "-"
    roles = found.get(prefix, {})
    missing = [role for role in _IDX_ROLES if role not in roles]
    if missing:
        expected = ", ".join(
            f"{prefix}{'train' if s == 'train' else 't10k'}-{k}-ubyte[.gz]"
            for s, k in _IDX_ROLES
        )
        raise _MissingDataError(
            f"IDX directory {directory!r} lacks the expected files {expected}"
            " ('test' may replace 't10k'). Found: "
            f"{_listing(directory)}. Put the files there, or give 'idx:DIR'"
            " the directory that holds them.",
            path=directory,
        )

    def preference(entry: str) -> tuple[bool, bool]:
        # t10k before test, uncompressed before gzipped.
        return ("-test-" in f"-{entry}", entry.endswith(".gz"))

    paths = {
        role: os.path.join(directory, min(roles[role], key=preference))
        for role in _IDX_ROLES
    }
    return prefix, paths


def load_idx(directory: PathLike, *, prefix: str | None = None) -> Dataset:
    """Loads an MNIST-family dataset from IDX files in a directory.

    The directory must hold ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``; the
    uncompressed file wins if both exist). ``test`` may replace ``t10k``,
    and every name may carry a prefix ending in ``-``, as EMNIST's
    ``emnist-balanced-train-images-idx3-ubyte``. MNIST, Fashion-MNIST and
    KMNIST use these names unchanged. EMNIST stores each image transposed
    relative to MNIST; the pixels are returned as stored.

    Args:
      directory: the directory holding the files.
      prefix: file-name prefix selecting one dataset when the directory
        holds several (e.g. ``"emnist-balanced-"``; a missing trailing
        ``-`` is added). ``None`` picks the only complete set of files.

    Returns:
      A :class:`Dataset` with ``(N, H, W, 1)`` uint8 images, int32 labels and
      ``num_classes`` one more than the largest label.

    Raises:
      DatasetPathError: with a one-line message naming the path and the
        fix. It is a ``FileNotFoundError`` if the directory does not exist
        or lacks one of the four files (the message lists the expected
        names and what was found); an ``OSError`` if a file cannot be read;
        a ``ValueError`` if ``directory`` is a file, a file is corrupt (see
        :func:`read_idx`), images are not 3-D uint8 or labels not 1-D, the
        image and label counts differ, or several prefixes match and
        ``prefix`` is ``None``.
      ValueError: if labels are not integers.
    """
    directory = os.fspath(os.path.expanduser(directory))
    prefix, paths = _find_idx_files(directory, prefix)
    arrays = {}
    for split in ("train", "test"):
        images_path = paths[(split, "images-idx3")]
        labels_path = paths[(split, "labels-idx1")]
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise _InvalidDataError(
                f"{images_path}: expected (N, H, W) uint8 images, got shape"
                f" {images.shape} of {images.dtype}; this is not an"
                " MNIST-family image file: replace it with one.",
                path=images_path,
            )
        if labels.ndim != 1:
            raise _InvalidDataError(
                f"{labels_path}: expected (N,) labels, got shape"
                f" {labels.shape}; this is not an MNIST-family label file:"
                " replace it with one.",
                path=labels_path,
            )
        if len(images) != len(labels):
            raise _InvalidDataError(
                f"{images_path} holds {len(images)} images but {labels_path}"
                f" holds {len(labels)} labels; the two files come from"
                " different datasets or one is incomplete: download both"
                " again.",
                path=images_path,
            )
        arrays[f"{split}_images"] = images[..., None]
        arrays[f"{split}_labels"] = _to_labels(labels, labels_path)
    largest = max(
        (
            int(arrays[k].max())
            for k in ("train_labels", "test_labels")
            if arrays[k].size
        ),
        default=0,
    )
    names = ", ".join(os.path.basename(paths[role]) for role in _IDX_ROLES)
    spec_path = os.path.join(directory, prefix) if prefix else directory
    return Dataset(
        **arrays,
        num_classes=largest + 1,
        name=f"idx:{spec_path}",
        source=f"IDX files in {directory}: {names}",
    )


# ----------------------------------------------------------------------------
# CIFAR-10, binary version
# ----------------------------------------------------------------------------

_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = ("test_batch.bin",)
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_PICKLED = (
    *(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
)


_CIFAR_FILES = (
    "data_batch_1.bin ... data_batch_5.bin and test_batch.bin (the"
    " extracted cifar-10-binary.tar.gz)"
)
_REPLACE_CIFAR = (
    " Download cifar-10-binary.tar.gz again and extract it in place of"
    " this file."
)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one CIFAR-10 binary batch into NHWC uint8 images and labels."""
    data = _read_file(path, "CIFAR-10 file")
    if not data or len(data) % _CIFAR_RECORD:
        raise _InvalidDataError(
            f"{path}: {len(data)} bytes is not a positive multiple of the"
            f" {_CIFAR_RECORD}-byte CIFAR-10 record (1 label byte + 3072"
            " pixel bytes): the file is truncated or not CIFAR-10 binary."
            + _REPLACE_CIFAR,
            path=path,
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise _InvalidDataError(
            f"{path}: record {bad} has label byte {labels[bad]}, not a"
            " CIFAR-10 class (0-9); is this CIFAR-100? 'cifar:DIR' reads"
            " CIFAR-10's binary version only.",
            path=path,
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def load_cifar10(directory: PathLike) -> Dataset:
    """Loads the binary version of CIFAR-10 from a directory.

    Reads ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
    ``test_batch.bin`` from ``directory`` or from its subdirectory
    ``cifar-10-batches-bin`` (the layout of the extracted
    ``cifar-10-binary.tar.gz``). Each record is one label byte followed by
    3072 pixel bytes: the red, green and blue 32x32 planes, row by row.

    The pickled "python version" (``data_batch_1`` without ``.bin``,
    ``batches.meta``) is never read: unpickling a downloaded file can run
    arbitrary code.

    Args:
      directory: the directory holding the batch files.

    Returns:
      A :class:`Dataset` with ``(N, 32, 32, 3)`` uint8 images (NHWC), int32
      labels and ``num_classes=10``.

    Raises:
      DatasetPathError: with a one-line message naming the path and the
        fix. It is a ``FileNotFoundError`` if the directory does not exist
        or lacks a batch file (the message lists the expected names and
        what was found); an ``OSError`` if a file cannot be read; a
        ``ValueError`` if ``directory`` is a file, only the pickled version
        is present, a file's size is not a multiple of the 3073-byte
        record, or a label exceeds 9.
    """
    directory = os.fspath(os.path.expanduser(directory))
    _check_directory(directory, "CIFAR-10", "'cifar:DIR'", _CIFAR_FILES)
    candidates = [directory, os.path.join(directory, "cifar-10-batches-bin")]
    for folder in candidates:
        if all(
            os.path.isfile(os.path.join(folder, name))
            for name in _CIFAR_TRAIN + _CIFAR_TEST
        ):
            break
    else:
        for pickled in (
            directory,
            os.path.join(directory, "cifar-10-batches-py"),
        ):
            if os.path.isdir(pickled) and any(
                os.path.exists(os.path.join(pickled, name))
                for name in _CIFAR_PICKLED
            ):
                raise _InvalidDataError(
                    f"{pickled!r} holds the pickled 'python version' of"
                    " CIFAR-10, which bnnjax refuses to load for safety"
                    " (unpickling a downloaded file can run arbitrary code)."
                    " Download the binary version (cifar-10-binary.tar.gz,"
                    " files data_batch_1.bin ... test_batch.bin) and point"
                    " 'cifar:DIR' at its directory.",
                    path=pickled,
                )
        raise _MissingDataError(
            f"CIFAR-10 directory {directory!r} (or its cifar-10-batches-bin"
            f" subdirectory) lacks the expected files"
            f" {', '.join(_CIFAR_TRAIN + _CIFAR_TEST)}. Found:"
            f" {_listing(directory)}. Extract cifar-10-binary.tar.gz there,"
            " or give 'cifar:DIR' the directory that holds the files.",
            path=directory,
        )
    splits = {}
    for split, names in (("train", _CIFAR_TRAIN), ("test", _CIFAR_TEST)):
        parts = [_read_cifar_batch(os.path.join(folder, n)) for n in names]
        splits[f"{split}_images"] = np.concatenate([p[0] for p in parts])
        splits[f"{split}_labels"] = np.concatenate([p[1] for p in parts])
    return Dataset(
        **splits,
        num_classes=10,
        name=f"cifar:{directory}",
        source=f"CIFAR-10 binary version in {folder}",
    )


# ----------------------------------------------------------------------------
# Embedded MNIST sample
# ----------------------------------------------------------------------------

_SAMPLE = "mnist_sample.npz"


def load_mnist_sample() -> Dataset:
    """Loads the small real MNIST sample that ships with bnnjax.

    6000 training images (600 per class) from MNIST's training set and 1000
    test images (100 per class) from its test set, drawn without replacement
    with a fixed seed by ``scripts/make_mnist_sample.py`` and kept in the
    files' original order. Pixels are unchanged. MNIST is by Yann LeCun,
    Corinna Cortes and Christopher J.C. Burges and distributed under CC
    BY-SA 3.0; see ``bnnjax/_data/LICENSE-MNIST.txt``.

    Returns:
      A :class:`Dataset` with ``(N, 28, 28, 1)`` uint8 images, int32 labels
      and ``num_classes=10``.

    Raises:
      FileNotFoundError: if bnnjax was installed without its package data.
    """
    resource = importlib.resources.files("bnnjax") / "_data" / _SAMPLE
    try:
        with resource.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            arrays = {
                key: npz[key]
                for key in (
                    "train_images",
                    "train_labels",
                    "test_images",
                    "test_labels",
                )
            }
    except FileNotFoundError:
        raise FileNotFoundError(
            f"bnnjax/_data/{_SAMPLE} is missing: bnnjax was installed without"
            " its package data. Reinstall bnnjax, or use 'idx:DIR' with the"
            " MNIST IDX files."
        ) from None
    return Dataset(
        **arrays,
        num_classes=10,
        name="mnist-sample",
        source=(
            "class-balanced sample of MNIST (LeCun, Cortes, Burges; CC BY-SA"
            " 3.0) shipped as bnnjax/_data/mnist_sample.npz"
        ),
    )


# ----------------------------------------------------------------------------
# TFDS (optional extra)
# ----------------------------------------------------------------------------


def _import_tfds() -> Any:
    """Imports tensorflow_datasets, naming the extra if it is missing."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "Loading a TFDS dataset needs tensorflow-datasets, which could"
            f" not be imported ({e}). Install the extra: {_EXTRA_HINT}. "
            + _LOCAL_HINT
        ) from e
    return tfds


def _source_to_examples(
    source: Sequence[dict[str, Any]],
    image_key: str,
    label_key: str,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every record of a TFDS data source into numpy arrays."""
    images, labels = [], []
    for i in range(len(source)):
        try:
            record = source[i]
        except ImportError as e:
            raise ImportError(
                f"Decoding the images of {what} needs Pillow or OpenCV ({e})."
                f" {_EXTRA_HINT} installs Pillow."
            ) from e
        images.append(np.asarray(record[image_key]))
        labels.append(record[label_key])
    if not images:
        raise ValueError(f"{what} has no examples.")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"{what}: images have different shapes {sorted(shapes)[:5]}; a"
            " Dataset needs one (H, W, C)."
        )
    stacked = np.stack(images)
    if stacked.dtype != np.uint8:
        raise ValueError(
            f"{what}: images have dtype {stacked.dtype}; a Dataset needs"
            " uint8 images."
        )
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    if stacked.ndim != 4:
        raise ValueError(
            f"{what}: expected (H, W) or (H, W, C) images, got"
            f" {stacked.shape[1:]}."
        )
    return stacked, _to_labels(np.asarray(labels), what)


def load_tfds(
    name: str,
    *,
    data_dir: PathLike | None = None,
    download: bool = True,
    train_split: str = "train",
    test_split: str = "test",
) -> Dataset:
    """Loads a TFDS image-classification dataset as numpy arrays.

    Uses ``tfds.data_source`` (ArrayRecord random access), which reads
    without TensorFlow. Decoding real (PNG/JPEG-encoded) images needs Pillow
    or OpenCV. Preparing a dataset that is not yet in ``data_dir`` needs
    network access and, for most image datasets, TensorFlow once
    (``pip install tensorflow-cpu``); after that, reading is TF-free.
    Offline, TFDS would retry each download for minutes before failing, so
    before a download this function checks, in about a second, that TFDS's
    download host resolves and accepts a connection (skipped when an
    ``https_proxy``/``HTTPS_PROXY`` variable routes traffic through a
    proxy) and fails at once if it does not; ``download=False`` never
    touches the network.

    The image and label features are the dataset's ``supervised_keys``
    (``("image", "label")`` if it declares none).

    Args:
      name: a registered TFDS name, optionally with config and version
        (``"mnist"``, ``"emnist/balanced"``, ``"cifar10:3.0.2"``).
      data_dir: TFDS data directory; ``None`` uses TFDS's default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: whether TFDS may download and prepare a missing dataset.
      train_split: TFDS split used as training data.
      test_split: TFDS split used as test data.

    Returns:
      A :class:`Dataset` with uint8 NHWC images, int32 labels and the
      label feature's ``num_classes``.

    Raises:
      ImportError: if tensorflow-datasets is not installed, or neither
        Pillow nor OpenCV is there to decode images; the message names the
        extra, ``pip install "bnnjax[data]"``.
      ValueError: if TFDS has no dataset ``name``, or its images are not
        fixed-shape uint8 or its labels not integers.
      DatasetPathError: if ``data_dir`` exists but is not a directory.
      DatasetUnavailableError: (a ``RuntimeError``) if the dataset is not
        prepared in ``data_dir`` and could
        not be downloaded and prepared (offline, or ``download=False``).
    """
    if data_dir is not None:
        data_dir = os.fspath(os.path.expanduser(data_dir))
        if os.path.exists(data_dir) and not os.path.isdir(data_dir):
            raise _InvalidDataError(
                f"TFDS data directory {data_dir!r} (--data-dir) is a file,"
                " not a directory; give the directory TFDS prepared the"
                " dataset in (it holds a folder per dataset, e.g. mnist/), or"
                " leave it out for $TFDS_DATA_DIR or ~/tensorflow_datasets.",
                path=data_dir,
            )
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(
            f"TFDS has no dataset named {name!r}. Accepted dataset specs: "
            + "; ".join(_SPEC_FORMS)
            + "."
        ) from None
    prepared = builder.is_prepared()
    if not prepared and download and not _download_possible():
        raise DatasetUnavailableError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}"
            " and cannot be downloaded: this machine cannot reach"
            f" {_DOWNLOAD_HOST} (offline?). Prepare it on a machine with"
            " network access and copy the directory, or pass its location"
            " as the TFDS data directory. " + _LOCAL_HINT
        )
    try:
        train_source, test_source = tfds.data_source(
            name,
            split=[train_split, test_split],
            data_dir=data_dir,
            download=download,
        )
    except Exception as e:
        if prepared:
            raise
        action = "downloaded and prepared" if download else "read"
        why = "" if download else " (download=False)"
        raise DatasetUnavailableError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}"
            f" and could not be {action}{why}: {type(e).__name__}: {e}. "
            "Preparing needs network access and, for most image datasets,"
            " TensorFlow once (pip install tensorflow-cpu); reading a"
            " prepared dataset needs neither. " + _LOCAL_HINT
        ) from e
    info = train_source.dataset_info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    if image_key not in features or label_key not in features:
        raise ValueError(
            f"TFDS dataset {name!r} has features {sorted(features)}; expected"
            f" an image feature {image_key!r} and a label {label_key!r}."
        )
    num_classes = getattr(features[label_key], "num_classes", None)
    if not num_classes:
        raise ValueError(
            f"TFDS dataset {name!r}: feature {label_key!r} is not a class"
            " label (it has no num_classes)."
        )
    arrays = {}
    for split, source, split_name in (
        ("train", train_source, train_split),
        ("test", test_source, test_split),
    ):
        images, labels = _source_to_examples(
            source, image_key, label_key, f"TFDS {name!r} split {split_name!r}"
        )
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    return Dataset(
        **arrays,
        num_classes=int(num_classes),
        name=name,
        source=(
            f"tfds.data_source({name!r}, split=[{train_split!r},"
            f" {test_split!r}]) from {builder.data_dir}"
        ),
    )


# ----------------------------------------------------------------------------
# The string edge
# ----------------------------------------------------------------------------


def load_dataset(spec: str, *, data_dir: PathLike | None = None) -> Dataset:
    """Loads the dataset named by a string; the entry point for the CLI.

    Accepted forms:

    * ``"mnist-sample"``: the MNIST sample shipped with bnnjax
      (:func:`load_mnist_sample`).
    * ``"idx:DIR"``: MNIST-family IDX files in ``DIR`` (:func:`load_idx`).
      ``"idx:DIR/PREFIX-"``, where ``DIR/PREFIX-`` is not a directory, selects
      files named ``PREFIX-train-images-idx3-ubyte`` etc. in ``DIR`` (e.g.
      ``"idx:~/emnist/emnist-balanced-"``).
    * ``"cifar:DIR"``: the binary version of CIFAR-10 in ``DIR``
      (:func:`load_cifar10`).
    * a TFDS name (``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``,
      ``"cifar10"``, ``"emnist/balanced"``, ...): :func:`load_tfds` with
      ``download=True``, with the ``data`` extra installed. Offline, a
      dataset that is not prepared fails within seconds with a message
      naming the local alternatives.

    Args:
      spec: one of the forms above.
      data_dir: TFDS data directory; only valid with a TFDS name.

    Returns:
      The :class:`Dataset`.

    Raises:
      TypeError: if ``spec`` is not a string.
      DatasetSpecError: (a ``ValueError``) if ``spec`` has none of the
        accepted forms (the message lists them), ``DIR`` is empty, or
        ``data_dir`` is given with a local source.
      ValueError: if the loader raises it.
      DatasetPathError: if a local path does not hold the dataset (see
        :func:`load_idx`, :func:`load_cifar10`), or ``data_dir`` is not a
        directory; also a ``FileNotFoundError`` if a local directory or its
        files are missing.
      ImportError: for a TFDS name without tensorflow-datasets installed.
      DatasetUnavailableError: (a ``RuntimeError``) for a TFDS dataset
        that is not prepared and cannot be
        downloaded.
    """
    if not isinstance(spec, str):
        raise TypeError(
            f"load_dataset(spec) takes a string, got {type(spec).__name__}."
        )
    kind, sep, path = spec.partition(":")
    is_local = spec == "mnist-sample" or (sep and kind in ("idx", "cifar"))
    if is_local and data_dir is not None:
        raise DatasetSpecError(
            f"data_dir={os.fspath(data_dir)!r} (--data-dir) is only used for"
            f" TFDS names; dataset spec {spec!r} reads local files: leave"
            " the data directory out."
        )
    if spec == "mnist-sample":
        return load_mnist_sample()
    if sep and kind in ("idx", "cifar"):
        if not path:
            raise DatasetSpecError(
                f"Dataset spec {spec!r} names no directory; use '{kind}:DIR'."
            )
        path = os.path.expanduser(path)
        if kind == "cifar":
            return load_cifar10(path)
        parent, base = os.path.split(path)
        parent = parent or "."
        if os.path.isfile(path):
            raise _InvalidDataError(
                f"Dataset spec {spec!r} names a file, not a directory; give"
                f" 'idx:DIR' the directory that holds it: 'idx:{parent}'.",
                path=path,
            )
        if os.path.isdir(path) or not base or not os.path.isdir(parent):
            return load_idx(path)
        names = _listdir(parent, "IDX directory")
        if not any(name.startswith(base) for name in names):
            raise _MissingDataError(
                f"IDX directory {path!r} does not exist, and no file in"
                f" {parent!r} starts with the prefix {base!r}; give 'idx:DIR'"
                f" a directory that holds {_IDX_FILES}.",
                path=path,
            )
        return load_idx(parent, prefix=base)
    if _TFDS_NAME.fullmatch(spec):
        return load_tfds(spec, data_dir=data_dir)
    raise DatasetSpecError(
        f"Unknown dataset spec {spec!r}. Accepted forms: "
        + "; ".join(_SPEC_FORMS)
        + "."
    )


# ----------------------------------------------------------------------------
# Validation split, preprocessing
# ----------------------------------------------------------------------------


def split_validation(
    dataset: Dataset,
    *,
    size: int | None = None,
    fraction: float | None = None,
    seed: int,
) -> tuple[Dataset, Examples]:
    """Holds out a stratified validation set from the training data.

    Only the training arrays are split; the test arrays pass through
    untouched. The split is stratified: class ``c`` with ``n_c`` of the
    ``n`` training examples gives ``size * n_c / n`` of them to validation,
    rounded by largest remainder so the total is exactly ``size``; which
    examples is a random choice determined by ``seed``. Both parts keep the
    original order, are disjoint and together cover the training set.

    Args:
      dataset: the dataset to split.
      size: number of validation examples, in ``[1, n - 1]``.
      fraction: fraction of the training examples to hold out, in
        ``(0, 1)``; rounded to the nearest count. Give ``size`` or
        ``fraction``, not both.
      seed: non-negative int; the same seed gives the same split.

    Returns:
      ``(train, validation)``: a :class:`Dataset` whose training arrays are
      the remaining examples (test arrays unchanged), and the held-out
      :class:`Examples`.

    Raises:
      ValueError: if neither or both of ``size`` and ``fraction`` are given,
        the resulting size is 0 or at least the number of training
        examples, or ``seed`` is not a non-negative int.
    """
    n = len(dataset.train_labels)
    if (size is None) == (fraction is None):
        raise ValueError(
            "split_validation needs exactly one of size= or fraction=, got"
            f" size={size!r}, fraction={fraction!r}."
        )
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"split_validation fraction={fraction!r}; expected a number"
                " in (0, 1)."
            )
        size = round(fraction * n)
        what = f"fraction={fraction!r} of {n} examples gives size={size}"
    else:
        what = f"size={size!r}"
    if (
        not isinstance(size, numbers.Integral)
        or isinstance(size, bool)
        or not 1 <= size <= n - 1
    ):
        raise ValueError(
            f"split_validation {what}; the validation set needs between 1"
            f" and {n - 1} of the {n} training examples."
        )
    check_seed(seed, "split_validation seed")
    labels = dataset.train_labels
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,))
    )
    counts = np.bincount(labels, minlength=dataset.num_classes)
    take, remainder = np.divmod(size * counts, n)  # exact integer quotas
    # Largest remainders get the leftover places; ties go to lower classes.
    order = np.lexsort((np.arange(len(counts)), -remainder))
    take[order[: size - int(take.sum())]] += 1
    # A random order within each class, then the first take[c] of class c.
    shuffled = rng.permutation(n)
    by_class = shuffled[np.argsort(labels[shuffled], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    held = np.concatenate(
        [by_class[s : s + t] for s, t in zip(starts, take, strict=True)]
    )
    mask = np.zeros(n, bool)
    mask[held] = True
    train = dataclasses.replace(
        dataset,
        train_images=dataset.train_images[~mask],
        train_labels=dataset.train_labels[~mask],
        source="; ".join(
            filter(
                None,
                [
                    dataset.source,
                    f"training data minus a stratified validation set of"
                    f" {size} (seed={seed})",
                ],
            )
        ),
    )
    validation = Examples(
        dataset.train_images[mask], dataset.train_labels[mask]
    )
    return train, validation


def to_float(images: jax.typing.ArrayLike) -> jax.Array:
    """Maps uint8 pixels to float32 in ``[0, 1]``: ``x / 255``.

    No per-dataset standardisation: binary networks follow the first layer
    with batch norm, and ``[0, 1]`` keeps the pixels' meaning. For inputs in
    ``[-1, 1]`` use ``2 * to_float(x) - 1``. Works inside ``jax.jit``, so the
    host can send ``uint8`` batches (a quarter of the bytes) to the device.

    Args:
      images: uint8 array of any shape.

    Returns:
      A float32 array of the same shape.

    Raises:
      TypeError: if ``images`` is not uint8 (e.g. already float).
    """
    images = jnp.asarray(images)
    if images.dtype != jnp.uint8:
        raise TypeError(
            f"to_float expects uint8 pixels, got dtype {images.dtype};"
            " already-float images must not be divided by 255 again."
        )
    return images.astype(jnp.float32) / 255.0


def flatten(images: jax.typing.ArrayLike) -> jax.Array:
    """Flattens the last three ``(H, W, C)`` axes, for MLP inputs.

    Leading axes are kept, so ``(B, H, W, C)`` becomes ``(B, H*W*C)`` and a
    seed-stacked ``(S, B, H, W, C)`` becomes ``(S, B, H*W*C)``.

    Args:
      images: array with at least three axes.

    Returns:
      The array reshaped to ``images.shape[:-3] + (H*W*C,)``.

    Raises:
      ValueError: if ``images`` has fewer than three axes.
    """
    images = jnp.asarray(images)
    if images.ndim < 3:
        raise ValueError(
            f"flatten expects (..., H, W, C) images, got shape {images.shape}."
        )
    return images.reshape((*images.shape[:-3], -1))

"""1-bit export: a trained model in one self-describing file, and inference.

:func:`pack_model` turns a trained reference model (``BinaryMLP``,
``BinaryNetCNN`` or ``BiRealResNet`` from :mod:`bnnjax.models.linen` with
its ``{"params", "batch_stats"}``, or the same from
:mod:`bnnjax.models.nnx`) into a
:class:`PackedModel`: binary kernels packed 32 signs per ``uint32`` word,
per-channel kernel scales, the real layers' parameters, batch norm folded
into thresholds where that is exact, and a small program (a list of ops)
that :func:`predict` runs with nothing but those arrays: no latent weights,
no flax module.
:func:`save`/:func:`load` write and read it; :func:`export_model` does
``pack_model`` + ``save``.

Models of your own (any linen or nnx model whose binary layers are
:mod:`bnnjax.nn` layers, grouped convolutions included, or layers converted
by :func:`bnnjax.binarize_model`) pack their binary layers the same way and
keep every other parameter and batch statistic; since a file never holds
code, :func:`predict` runs the model's own code (``model=``) with each
binary layer computed from the packed arrays (flax method interception for
linen, module surgery for nnx). Fully binary layers are bit-identical where
no bias follows them; a bias may be added with or without a fused
multiply-add (one rounding) depending on how XLA fuses either program.

Numerics (what "identical" means):

* Binary kernels are stored as the signs of the float model's own
  binarized kernel ``kernel_binarizer(latent)`` and its per-output-channel
  magnitude ``alpha``, so ``alpha * sign`` equals it bit for bit.
* A layer with ``+-1`` inputs computes the exact integer count ``c`` (XNOR-
  popcount). When batch norm and ``sign`` follow, they fold into an
  integer threshold per channel, ``bit = (c >= t) != flip``, found by
  evaluating the float model's batch norm
  (:func:`bnnjax.packed.batch_norm`, the same XLA operations) on
  ``fl(alpha * c)``: gamma < 0 (``flip``), gamma == 0 (a constant), ties
  at the threshold and ``-0.0`` (``sign(0) = +1``) resolve as in the float
  model evaluated at ``fl(alpha * c)``. A max pool between the layer and
  the batch norm commutes with the monotone map ``c -> fl(alpha * c)``
  and runs on the counts.
* A layer with real inputs followed by batch norm and ``sign`` folds into
  a float threshold (:func:`bnnjax.packed.fold_batch_norm_sign`), exact
  for the float32 value the layer produces.
* Everywhere else (real layers, batch norm before a residual add or the
  logits) the float model's operations are repeated in the same order.

Since the binary layers compute ``(x @ S) * alpha`` (the sign product
first, the scale after it; :mod:`bnnjax.nn`), a layer with ``+-1`` inputs
computes an exact integer ``c`` in float32 (``|c| <= n < 2**24``) and then
``fl(alpha * c)``: the value the folded thresholds are evaluated on. Fully
binary layers therefore agree bit for bit, also where a threshold sits on a
reachable count (untrained batch norm: running mean 0, beta 0). Dense
layers with real inputs run the float layer's own product on more than 2
rows: ``S`` unpacked to ``+-1.0`` from the bits, the same float32 dot, then
``* alpha`` (:func:`bnnjax.packed.binary_weight_dense`, ``"unpack"``), so
they agree bit for bit too (tested on every reference MLP). On 1 or 2 rows
the multiply-free lookup, and for convolutions with real inputs the im2col
product, sum in another order than the float dot, so their outputs, and a
folded sign only where a pre-activation lies within that rounding of its
threshold, can differ. The tests require identical argmax on every
reference architecture and bound the logits by ``max |packed - float| <=
1e-5 * max |float|`` (measured: bit-identical for every reference
architecture at the tested sizes; about ``1e-6`` relative for the lookup).

File format (versions 1 and 2), all integers little-endian::

    offset  size  content
    0       8     magic b"\\x89BNNJAX\\n"
    8       4     format version (uint32), 1 or 2
    12      8     header length H (uint64)
    20      H     header: UTF-8 JSON object (see below)
    ...           zero bytes up to a multiple of 64: the payload start P
    P       L     payload: the arrays, raw C-order bytes, each starting at
                  a multiple of 64 from P, zero bytes between
    P + L   32    SHA-256 of every preceding byte of the file

Header keys: ``format`` (``"bnnjax.packed"``), ``format_version``,
``bnnjax_version``, ``jax_version``, ``architecture`` (class name),
``config`` (the model's constructor fields as JSON), ``binarizers``,
``program`` (``{"input", "output", "ops"}``), ``arrays`` (``name ->
{"dtype", "shape", "offset", "nbytes"}``, dtypes ``<u4``, ``<i4``, ``<f4``,
``|u1`` only), ``payload_bytes`` ``L``, ``payload_sha256`` (of the payload
alone: a fingerprint of the weights), ``float32_bytes`` and ``deploy_bytes``
(of the source variables, see :mod:`bnnjax.summary`), ``bit_layout``,
``metadata`` (free JSON, e.g. the training run and dataset; absent in older
files). Binary kernels are ``<u4`` words of shape ``(out, *kernel_size,
ceil(in / 32))``: bit ``i % 32`` (least significant first) of word ``i //
32`` is input feature ``i``, 1 means ``+1``, padding bits are 0
(:func:`bnnjax.packed.pack_kernel`). Loading never unpickles: arrays are
read with ``np.frombuffer`` from a dtype whitelist.

Version 1 (written for the reference architectures, so older bnnjax reads
them) holds ``program``; version 2 (models of your own) holds ``model``
instead: ``{"api": "linen" | "nnx", "class", "call_kwargs", "layers",
"variables"}``, one entry per binary layer (module ``path``, ``kind``
``"dense"``/``"conv"``, ``input`` ``"real"``/``"bits"``, the kernel
binarizer, ``n_in``, ``features``, the window and ``feature_group_count``
for convolutions, and the names of its ``kernel`` words, ``alpha`` and
``bias`` arrays) and the names of the other variables'
arrays (``"variables/<collection or state path>"``). A version this module
does not know, or a header whose version disagrees with the prefix, is
refused.

Writing is atomic: a temporary file in the destination directory is
written, flushed, ``fsync``-ed and renamed over the destination with
``os.replace``; a failure leaves no partial file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as flax_linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util
from jax import lax

from bnnjax import _version
from bnnjax import convert as convert_lib
from bnnjax import packed as packed_lib
from bnnjax.binarize import Binarizer
from bnnjax.models import _common as models_common
from bnnjax.models import linen as models_linen
from bnnjax.models import nnx as models_nnx
from bnnjax.nn import _common as nn_common
from bnnjax.nn import linen as bnn_linen
from bnnjax.nn import nnx as bnn_nnx
from bnnjax.nn._common import LATENT_KERNEL
from bnnjax.scale import NoScale, reduce_axes
from bnnjax.summary import summary as summary_fn

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PackedModel",
    "PackedSizes",
    "export_model",
    "file_sizes",
    "load",
    "pack_model",
    "predict",
    "save",
]

MAGIC = b"\x89BNNJAX\n"
"""First 8 bytes of every packed model file."""

FORMAT_VERSION = 2
"""Newest version of the file format this module writes and reads.

Version 1 (reference architectures: a program of ops) is still written for
those models, so older bnnjax reads them; version 2 adds models of your own
(packed layers run by the model's code). Both are read.
"""

_PROGRAM_VERSION = 1  # files of the reference architectures

_FORMAT = "bnnjax.packed"
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
_DIGEST_BYTES = 32
_ALIGN = 64
_DTYPES = {
    "<u4": np.dtype("<u4"),
    "<i4": np.dtype("<i4"),
    "<f4": np.dtype("<f4"),
    "|u1": np.dtype("|u1"),
}
_BIT_LAYOUT = (
    "binary kernels: <u4 words (out, *kernel_size, ceil(in/32)); bit i%32 "
    "(LSB first) of word i//32 is input feature i; 1 = +1 (latent >= 0), "
    "0 = -1; padding bits 0"
)


class PackedSizes(NamedTuple):
    """Sizes for a compression report.

    Attributes:
      file_bytes: bytes of the packed model file.
      float32_bytes: bytes of the source ``params`` and ``batch_stats``
        at 32 bits per value.
    """

    file_bytes: int
    float32_bytes: int

    @property
    def compression_ratio(self) -> float:
        """``float32_bytes / file_bytes``."""
        return self.float32_bytes / self.file_bytes if self.file_bytes else 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class PackedModel:
    """A packed model: JSON-able header and named numpy arrays.

    Build with :func:`pack_model` or :func:`load`; run with
    :func:`predict`. The prepared device arrays and compiled program are
    cached on the instance.

    Attributes:
      header: the file header (see the module docstring).
      arrays: the arrays, by name.
    """

    header: Mapping[str, Any]
    arrays: Mapping[str, np.ndarray]
    _cache: dict = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def architecture(self) -> str:
        """Class name of the exported model (``"BinaryMLP"``, ...)."""
        return self.header["architecture"]

    @property
    def config(self) -> Mapping[str, Any]:
        """The model's constructor fields, as stored."""
        return self.header["config"]

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The free JSON stored at export (empty if none)."""
        return self.header.get("metadata") or {}

    @property
    def float32_bytes(self) -> int:
        """Bytes of the source variables at 32 bits per value."""
        return int(self.header["float32_bytes"])


# --------------------------------------------------------------------------
# Converting a linen model into a program over packed arrays.


def _json_value(value: Any) -> Any:
    """Model fields as JSON: binarizers, dtypes and tuples converted."""
    if isinstance(value, Binarizer):
        return _binarizer_json(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    with contextlib.suppress(TypeError):
        return np.dtype(value).name
    return repr(value)


def _binarizer_json(b: Binarizer) -> dict[str, Any]:
    surrogate = {"name": b.surrogate.name, **dataclasses.asdict(b.surrogate)}
    scale = None
    if b.scale is not None:
        scale = {"name": b.scale.name, **dataclasses.asdict(b.scale)}
    axis = list(b.axis) if isinstance(b.axis, tuple) else b.axis
    return {
        "surrogate": surrogate,
        "scale": scale,
        "axis": axis,
        "center": b.center,
        "standardize": b.standardize,
    }


def _model_config(model: Any) -> dict[str, Any]:
    fields = {}
    for f in dataclasses.fields(model):
        if f.name in ("parent", "name") or f.name.startswith("_"):
            continue
        fields[f.name] = _json_value(getattr(model, f.name))
    return fields


@dataclasses.dataclass
class _Value:
    """A value of the program: its name and what it holds."""

    name: str
    kind: str  # "real" (float), "bits" (bool, True = +1), "count" (int32)
    alpha: np.ndarray | None = None  # count: per-channel kernel scale
    alpha_name: str | None = None
    n: int | None = None  # count: fan-in


class _Builder:
    """Emits ops and arrays while walking a model's parameter tree."""

    def __init__(self, params: Mapping, stats: Mapping, where: str):
        self.params = params
        self.stats = stats
        self.where = where
        self.arrays: dict[str, np.ndarray] = {}
        self.ops: list[dict[str, Any]] = []
        self.used: set[tuple[str, str, str]] = set()
        self._count = 0

    # -- bookkeeping

    def _name(self) -> str:
        self._count += 1
        return f"v{self._count}"

    def _array(self, name: str, value: np.ndarray, dtype: str) -> str:
        if name in self.arrays:
            raise ValueError(f"{self.where}: array {name!r} written twice.")
        self.arrays[name] = np.ascontiguousarray(value, _DTYPES[dtype])
        return name

    def _emit(self, op: str, inputs, **fields) -> str:
        out = self._name()
        self.ops.append({"op": op, "in": inputs, "out": out, **fields})
        return out

    def _param(self, path: str, name: str, tree: str = "params") -> np.ndarray:
        node = self.params if tree == "params" else self.stats
        for part in path.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(
                    f"{self.where}: {tree} have no {path!r}; the variables do "
                    "not match the model (export needs the model that "
                    "produced them)."
                )
            node = node[part]
        if name not in node:
            raise ValueError(f"{self.where}: {tree}[{path!r}] has no {name!r}.")
        self.used.add((tree, path, name))
        value = np.asarray(node[name])
        if value.dtype != np.float32:
            raise ValueError(
                f"{self.where}: {tree}[{path!r}][{name!r}] has dtype "
                f"{value.dtype}; export supports float32 models only."
            )
        if not np.isfinite(value).all():
            raise ValueError(
                f"{self.where}: {tree}[{path!r}][{name!r}] is not finite."
            )
        return value

    def check_features(self, path: str, shape, expected: int) -> None:
        if shape[-1] != expected:
            raise ValueError(
                f"{self.where}: {path} has {shape[-1]} output features but "
                f"the model has {expected}: the variables do not match the "
                "model."
            )

    def check_all_used(self) -> None:
        """Every parameter and statistic must have gone into the program."""
        for tree, node in (
            ("params", self.params),
            ("batch_stats", self.stats),
        ):
            flat = traverse_util.flatten_dict(dict(node)) if node else {}
            for key in flat:
                entry = (tree, "/".join(key[:-1]), key[-1])
                if entry not in self.used:
                    raise ValueError(
                        f"{self.where}: {tree}[{'/'.join(key)!r}] is not used "
                        "by the model: the variables do not match the model."
                    )

    def has(self, path: str, name: str) -> bool:
        node = self.params
        for part in path.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return name in node

    # -- ops

    def input(self) -> _Value:
        return _Value("input", "real")

    def flatten(self, x: _Value) -> _Value:
        return dataclasses.replace(x, name=self._emit("flatten", x.name))

    def relu(self, x: _Value) -> _Value:
        return _Value(self._emit("relu", self._real(x).name), "real")

    def sign(self, x: _Value) -> _Value:
        if x.kind == "bits":
            return x
        return _Value(self._emit("sign", self._real(x).name), "bits")

    def mean(self, x: _Value, axes: Sequence[int]) -> _Value:
        name = self._emit("mean", self._real(x).name, axes=list(axes))
        return _Value(name, "real")

    def add(self, x: _Value, y: _Value) -> _Value:
        name = self._emit("add", [self._real(x).name, self._real(y).name])
        return _Value(name, "real")

    def max_pool(self, x: _Value, window, strides, padding) -> _Value:
        """Max pool of reals or counts (it commutes with ``fl(alpha * c)``)."""
        x = self._real(x) if x.kind == "bits" else x
        name = self._emit(
            "max_pool",
            x.name,
            window=list(window),
            strides=list(strides),
            padding=[list(p) for p in padding],
        )
        return dataclasses.replace(x, name=name)

    def avg_pool(self, x: _Value, window, strides, padding: str) -> _Value:
        name = self._emit(
            "avg_pool",
            self._real(x).name,
            window=list(window),
            strides=list(strides),
            padding=padding,
            count_include_pad=False,
        )
        return _Value(name, "real")

    def _real(self, x: _Value) -> _Value:
        """Counts become real: ``fl(alpha * c)``; bits are not real."""
        if x.kind == "real":
            return x
        if x.kind == "count":
            name = self._emit("scale", x.name, alpha=x.alpha_name)
            return _Value(name, "real")
        raise ValueError(f"{self.where}: internal error, bits used as reals.")

    def dense(self, path: str, x: _Value, features: int) -> _Value:
        value = self._param(path, "kernel")
        self.check_features(path, value.shape, features)
        kernel = self._array(f"{path}/kernel", value, "<f4")
        bias = None
        if self.has(path, "bias"):
            bias = self._array(f"{path}/bias", self._param(path, "bias"), "<f4")
        name = self._emit("dense", self._real(x).name, kernel=kernel, bias=bias)
        return _Value(name, "real")

    def conv(
        self, path: str, x: _Value, features: int, strides, padding
    ) -> _Value:
        kernel = self._param(path, "kernel")
        self.check_features(path, kernel.shape, features)
        if kernel.ndim != 4:
            raise ValueError(f"{self.where}: {path} is not a 2D convolution.")
        bias = None
        if self.has(path, "bias"):
            bias = self._array(f"{path}/bias", self._param(path, "bias"), "<f4")
        name = self._emit(
            "conv",
            self._real(x).name,
            kernel=self._array(f"{path}/kernel", kernel, "<f4"),
            bias=bias,
            strides=list(strides),
            padding=[list(p) for p in padding],
        )
        return _Value(name, "real")

    def batch_norm(self, path: str, x: _Value, epsilon: float) -> _Value:
        x = self._real(x)
        names = {}
        for key, tree in (
            ("mean", "batch_stats"),
            ("var", "batch_stats"),
            ("scale", "params"),
            ("bias", "params"),
        ):
            names[key] = self._array(
                f"{path}/{key}", self._param(path, key, tree), "<f4"
            )
        name = self._emit("batch_norm", x.name, epsilon=epsilon, **names)
        return _Value(name, "real")

    def batch_norm_sign(self, path: str, x: _Value, epsilon: float) -> _Value:
        """``sign(batch_norm(x))`` folded into a threshold: bits out."""
        stats = [
            self._param(path, "mean", "batch_stats"),
            self._param(path, "var", "batch_stats"),
            self._param(path, "scale"),
            self._param(path, "bias"),
        ]
        try:
            threshold, flip = packed_lib.fold_batch_norm_sign(*stats, epsilon)
        except ValueError as error:
            raise ValueError(f"{self.where}: {path}: {error}") from None
        flip_name = self._array(f"{path}/flip", flip.astype(np.uint8), "|u1")
        if x.kind == "real":
            name = self._emit(
                "threshold",
                x.name,
                threshold=self._array(f"{path}/threshold", threshold, "<f4"),
                flip=flip_name,
            )
            return _Value(name, "bits")
        if x.kind != "count":
            raise ValueError(f"{self.where}: batch norm of bits at {path}.")
        try:
            t, flip = packed_lib.fold_count_threshold(
                threshold, flip, x.alpha, x.n
            )
        except ValueError as error:
            raise ValueError(f"{self.where}: {path}: {error}") from None
        name = self._emit(
            "count_threshold",
            x.name,
            threshold=self._array(f"{path}/count_threshold", t, "<i4"),
            flip=flip_name,
        )
        return _Value(name, "bits")

    def _binary_kernel(
        self, path: str, binarizer: Binarizer
    ) -> tuple[str, str, np.ndarray]:
        """Packs ``binarizer(latent)``: (words name, alpha name, alpha)."""
        latent = self._param(path, LATENT_KERNEL)
        if self.has(path, "bias"):
            raise ValueError(
                f"{self.where}: {path} has a bias; export supports binary "
                "layers without bias (the reference models put batch norm "
                "after them)."
            )
        words, alpha = _signs_and_scale(latent, binarizer, self.where, path)
        return (
            self._array(f"{path}/kernel", words, "<u4"),
            self._array(f"{path}/alpha", alpha, "<f4"),
            alpha,
        )

    def binary(
        self,
        path: str,
        x: _Value,
        binarizer: Binarizer,
        features: int,
        conv: Mapping[str, Any] | None = None,
    ) -> _Value:
        """A BinaryDense (``conv=None``) or BinaryConv layer.

        Bits in: exact counts out (``kind="count"``, scaled later by
        ``alpha``); real values in: ``x @ (alpha * S)`` out.
        """
        x = self._real(x) if x.kind == "count" else x
        kernel_shape = self._param(path, LATENT_KERNEL).shape
        self.check_features(path, kernel_shape, features)
        if conv is not None and kernel_shape[:-2] != tuple(conv["kernel_size"]):
            raise ValueError(
                f"{self.where}: {path} has a kernel of shape {kernel_shape}; "
                f"the model has a {conv['kernel_size']} window."
            )
        words, alpha_name, alpha = self._binary_kernel(path, binarizer)
        n_in = int(kernel_shape[-2])
        fields: dict[str, Any] = {
            "kernel": words,
            "alpha": alpha_name,
            "n_in": n_in,
            "features": int(kernel_shape[-1]),
            "input": "bits" if x.kind == "bits" else "real",
        }
        op = "binary_dense"
        fan_in = n_in
        if conv is not None:
            op = "binary_conv"
            fields.update(conv)
            fan_in = n_in * math.prod(kernel_shape[:-2])
            if x.kind == "bits" and conv["pad_value"] not in (-1.0, 0.0, 1.0):
                raise ValueError(
                    f"{self.where}: {path} pads binary activations with "
                    f"pad_value={conv['pad_value']!r}; export supports -1, "
                    "0 and 1."
                )
        name = self._emit(op, x.name, **fields)
        if x.kind == "bits":
            return _Value(name, "count", alpha, alpha_name, fan_in)
        return _Value(name, "real")


def _signs_and_scale(
    latent: np.ndarray, binarizer: Binarizer, where: str, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """Packs ``binarizer(latent) = alpha * sign``: (words, alpha).

    ``words`` is ``uint32 (out, *kernel_size, ceil(in / 32))`` (the file
    layout), ``alpha`` float32 ``(out,)``, taken from the binarizer's own
    output so ``alpha * sign`` equals it bit for bit.
    """
    if binarizer.stochastic:
        raise ValueError(
            f"{where}: the kernel binarizer of {path} uses "
            f"{type(binarizer.surrogate).__name__}, whose forward pass "
            "is random; export needs a deterministic binarizer."
        )
    axes = reduce_axes(latent.ndim, binarizer.axis)
    if axes not in (
        tuple(range(latent.ndim)),
        tuple(range(latent.ndim - 1)),
    ):
        raise ValueError(
            f"{where}: the kernel binarizer of {path} has "
            f"axis={binarizer.axis!r}; export supports one scale per "
            "tensor (axis=None) or per output channel (axis=-1)."
        )
    kernel = np.asarray(binarizer(jnp.asarray(latent), progress=1.0))
    out = kernel.shape[-1]
    magnitude = np.abs(kernel).reshape(-1, out)
    alpha = magnitude[0].astype(np.float32)
    if not (np.isfinite(alpha).all() and (magnitude == alpha).all()):
        raise ValueError(
            f"{where}: the kernel binarizer of {path} does not give "
            "alpha * sign(W) with one finite alpha per output channel."
        )
    bits = ~np.signbit(kernel)  # alpha * (+-1); also right for alpha == 0
    return _pack_words(np.moveaxis(bits, -1, 0)), alpha


def _pack_words(bits: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`bnnjax.packed.pack_bits` on the last axis."""
    n = bits.shape[-1]
    words = -(-n // packed_lib.WORD_BITS)
    as_bytes = np.packbits(bits, axis=-1, bitorder="little")
    pad = [(0, 0)] * (bits.ndim - 1) + [(0, 4 * words - as_bytes.shape[-1])]
    as_bytes = np.ascontiguousarray(np.pad(as_bytes, pad))
    return as_bytes.view("<u4").reshape(*bits.shape[:-1], words)


def _is_plain_sign(binarizer: Binarizer) -> bool:
    """Whether ``binarizer`` is a per-example ``sign``: no scale, no
    centring, deterministic (a scale or centring of activations depends on
    the whole batch)."""
    scale_free = binarizer.scale is None or isinstance(binarizer.scale, NoScale)
    return scale_free and not binarizer.center and not binarizer.stochastic


def _check_sign_activation(model: Any, field: str) -> Binarizer:
    act = getattr(model, field)
    if not _is_plain_sign(act):
        raise ValueError(
            f"{type(model).__name__}.{field}={act!r}: export supports sign "
            "activations (scale=None, center=False, deterministic); a scale "
            "or centring of activations depends on the whole batch."
        )
    return act


def _check_dtypes(model: Any) -> None:
    for field in ("dtype", "param_dtype"):
        value = getattr(model, field)
        if value is not None and np.dtype(value) != np.float32:
            raise ValueError(
                f"{type(model).__name__}.{field}={value!r}: export supports "
                "float32 models only."
            )


def _same_pads(kernel_size: Sequence[int]) -> list[tuple[int, int]]:
    # 'SAME' with stride 1: (k - 1) // 2 low, the rest high, any input size.
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size]


def _program_mlp(model: Any, b: _Builder) -> _Value:
    act_binary = model.binary_activations
    if act_binary:
        _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    x = b.flatten(b.input())
    depth = len(model.hidden)
    for i, width in enumerate(model.hidden):
        x = b.binary(f"dense_{i}", x, model.kernel_binarizer, width)
        norm = f"dense_norm_{i}"
        next_binarizes = act_binary and (i < depth - 1 or model.binary_last)
        if next_binarizes:
            x = b.batch_norm_sign(norm, x, eps)
        else:
            x = b.batch_norm(norm, x, eps)
            if not act_binary:
                x = b.relu(x)
    if not model.binary_last:
        return b.dense("head", x, model.num_classes)
    x = b.binary("head", x, model.kernel_binarizer, model.num_classes)
    return b.batch_norm("head_norm", x, eps)


def _program_cnn(model: Any, b: _Builder) -> _Value:
    _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    x = b.input()
    widths = models_common.scale_widths(
        models_common.BINARYNET_CNN_CONV, model.width_multiplier
    )
    for i, width in enumerate(widths):
        conv = {
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "dilation": [1, 1],
            "padding": [list(p) for p in _same_pads((3, 3))],
            "pad_value": float(model.pad_value) if i > 0 else 0.0,
        }
        x = b.binary(f"conv_{i}", x, model.kernel_binarizer, width, conv)
        if i % 2 == 1:
            x = b.max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)))
        x = b.batch_norm_sign(f"conv_norm_{i}", x, eps)
    x = b.flatten(x)
    dense = models_common.scale_widths(
        models_common.BINARYNET_CNN_DENSE, model.width_multiplier
    )
    for i, width in enumerate(dense):
        x = b.binary(f"dense_{i}", x, model.kernel_binarizer, width)
        x = b.batch_norm_sign(f"dense_norm_{i}", x, eps)
    x = b.binary("head", x, model.kernel_binarizer, model.num_classes)
    return b.batch_norm("head_norm", x, eps)


def _program_resnet(model: Any, b: _Builder) -> _Value:
    _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    k = model.stem_kernel_size
    x = b.conv(
        "stem_conv",
        b.input(),
        model.stem_features,
        (model.stem_strides,) * 2,
        models_common.stem_padding(k),
    )
    x = b.batch_norm("stem_norm", x, eps)
    if model.stem_max_pool:
        x = b.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    layout = models_common.bireal_layout(
        model.stage_sizes, model.stage_features
    )
    for i, (features, strides) in enumerate(layout):
        block = f"blocks_{i}"
        conv = {
            "kernel_size": [3, 3],
            "strides": [strides, strides],
            "dilation": [1, 1],
            "padding": [[1, 1], [1, 1]],
            "pad_value": float(model.pad_value),
        }
        y = b.binary(
            f"{block}/conv", b.sign(x), model.kernel_binarizer, features, conv
        )
        y = b.batch_norm(f"{block}/norm", y, eps)
        shortcut = x
        if b.has(f"{block}/shortcut_conv", "kernel"):
            if strides != 1:
                shortcut = b.avg_pool(
                    shortcut, (strides, strides), (strides, strides), "SAME"
                )
            shortcut = b.conv(
                f"{block}/shortcut_conv",
                shortcut,
                features,
                (1, 1),
                ((0, 0), (0, 0)),
            )
            shortcut = b.batch_norm(f"{block}/shortcut_norm", shortcut, eps)
        x = b.add(y, shortcut)
    return b.dense("head", b.mean(x, (1, 2)), model.num_classes)


_PROGRAMS: dict[type, Callable[[Any, _Builder], _Value]] = {
    models_linen.BinaryMLP: _program_mlp,
    models_linen.BinaryNetCNN: _program_cnn,
    models_linen.BiRealResNet: _program_resnet,
}
_NNX_REFERENCE = (
    models_nnx.BinaryMLP,
    models_nnx.BinaryNetCNN,
    models_nnx.BiRealResNet,
)


def _nnx_path_to_linen(path: Sequence[Any]) -> tuple[str, ...]:
    # nnx ``blocks[3].conv`` is linen ``blocks_3/conv``.
    names: list[str] = []
    for part in path:
        if isinstance(part, int):
            names[-1] = f"{names[-1]}_{part}"
        else:
            names.append(str(part))
    return tuple(names)


def _nnx_collection(model: Any, kind: type) -> dict[str, Any]:
    pure = nnx.to_pure_dict(nnx.state(model, kind))
    flat = traverse_util.flatten_dict(pure)
    return traverse_util.unflatten_dict(
        {_nnx_path_to_linen(k): np.asarray(v) for k, v in flat.items()}
    )


def _linen_twin(model: Any) -> tuple[Any, dict[str, Any]]:
    """The linen reference model and variables equal to an nnx one.

    The nnx and linen reference models compute the same function from the
    same parameters (tested in ``tests/test_models.py``); their parameter
    trees differ only in list indices (nnx ``dense[1]`` is linen
    ``dense_1``).
    """
    if isinstance(model, models_nnx.BinaryMLP):
        norm = model.dense_norm[0]
        twin = models_linen.BinaryMLP(
            hidden=tuple(model.hidden),
            num_classes=model.num_classes,
            binary_activations=model.binary_activations,
            binary_last=model.binary_last,
            kernel_binarizer=model.kernel_binarizer,
            activation_binarizer=model.activation_binarizer,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    elif isinstance(model, models_nnx.BinaryNetCNN):
        norm = model.conv_norm[0]
        twin = models_linen.BinaryNetCNN(
            num_classes=model.num_classes,
            width_multiplier=model.width_multiplier,
            kernel_binarizer=model.kernel_binarizer,
            activation_binarizer=model.activation_binarizer,
            pad_value=model.conv[1].pad_value,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    elif isinstance(model, models_nnx.BiRealResNet):
        norm, stem, conv = (
            model.stem_norm,
            model.stem_conv,
            model.blocks[0].conv,
        )
        twin = models_linen.BiRealResNet(
            stage_sizes=model.stage_sizes,
            stage_features=model.stage_features,
            num_classes=model.num_classes,
            stem_features=stem.out_features,
            stem_kernel_size=stem.kernel_size[0],
            stem_strides=stem.strides[0]
            if isinstance(stem.strides, Sequence)
            else stem.strides,
            stem_max_pool=model.stem_max_pool,
            kernel_binarizer=conv.kernel_binarizer,
            activation_binarizer=conv.input_binarizer,
            pad_value=conv.pad_value,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    else:
        raise TypeError(
            "pack_model supports BinaryMLP, BinaryNetCNN and BiRealResNet "
            f"from bnnjax.models.nnx, got {type(model).__name__}."
        )
    variables = {
        "params": _nnx_collection(model, nnx.Param),
        "batch_stats": _nnx_collection(model, nnx.BatchStat),
    }
    return twin, variables


def pack_model(
    model: Any,
    variables: Mapping[str, Any] | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    example_inputs: Any = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> PackedModel:
    """Packs a trained model for 1-bit inference.

    Two kinds of model:

    * **Reference architectures** (:class:`bnnjax.models.linen.BinaryMLP`,
      :class:`~bnnjax.models.linen.BinaryNetCNN`,
      :class:`~bnnjax.models.linen.BiRealResNet`, float32, or the
      :mod:`bnnjax.models.nnx` model of the same name): the file holds a
      program of ops, with batch norm and ``sign`` folded into thresholds,
      that :func:`predict` runs with nothing but the file (format
      version 1).
    * **Models of your own** (format version 2): any linen or nnx model
      whose binary layers are :mod:`bnnjax.nn` layers (``BinaryDense``/
      ``BinaryLinear``, ``BinaryConv``, grouped and depthwise included) or
      ``Dense``/``Conv`` layers converted by :func:`bnnjax.binarize_model`.
      The file holds those layers packed (signs, scales, biases) and every
      other parameter and batch statistic; Python code is never stored, so
      :func:`predict` needs the model definition (``model=``) and runs its
      code with each binary layer computed from the packed arrays. Binary
      layers take real inputs or plain ``sign`` activations
      (``input_binarizer`` with no scale and no centring); other layers run
      as written.

    Kernel binarizers must be deterministic with one scale per tensor or
    per output channel; every array must be float32.

    Args:
      model: the model (linen: unbound; nnx: holding its trained
        variables).
      variables: for a linen model, ``{"params": ..., ...}`` as returned
        by ``model.init`` and updated by training (every collection is
        stored); for an nnx model, ``None``.
      metadata: JSON-serialisable facts to keep in the header under
        ``"metadata"`` (e.g. the dataset and training run); not used for
        inference.
      example_inputs: a linen model of your own only: one call's
        positional inputs (an array, a ``jax.ShapeDtypeStruct`` or a tuple
        of them), traced abstractly once to find the binary layers in call
        order.
      call_kwargs: a model of your own only: JSON keyword arguments of
        every inference call, stored in the file (e.g. ``{"train":
        False}``); nnx models are also switched to ``eval()``.

    Returns:
      The :class:`PackedModel`; :func:`predict` on it matches
      ``model.apply(variables, x, train=False)`` (reference architectures)
      or ``model.apply(variables, x, **call_kwargs)`` (models of your own).

    Raises:
      TypeError: for an unsupported model, a missing ``example_inputs``, or
        ``metadata``/``call_kwargs`` that are not JSON objects.
      ValueError: for unsupported settings, mismatched variables or
        non-finite values, naming the layer.
    """
    metadata = _check_metadata(metadata)
    reference = isinstance(model, _NNX_REFERENCE) or type(model) in _PROGRAMS
    if not reference:
        if not isinstance(model, (nnx.Module, flax_linen.Module)):
            raise TypeError(
                "pack_model expects a flax linen or nnx model, got "
                f"{type(model).__name__}."
            )
        return _pack_generic(
            model,
            variables,
            example_inputs,
            _json_kwargs(call_kwargs),
            metadata,
        )
    if example_inputs is not None or call_kwargs is not None:
        raise ValueError(
            f"{type(model).__name__} is a reference architecture: "
            "example_inputs and call_kwargs apply to models of your own."
        )
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise ValueError(
                f"{type(model).__name__} is an nnx model, which holds its "
                "own variables: call pack_model(model) without variables."
            )
        model, variables = _linen_twin(model)
    program = _PROGRAMS.get(type(model))
    if program is None:
        raise TypeError(
            f"pack_model supports {sorted(c.__name__ for c in _PROGRAMS)} "
            f"from bnnjax.models.linen, got {type(model).__name__}."
        )
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            "pack_model expects variables {'params': ..., 'batch_stats': "
            f"...}}, got {type(variables).__name__} with keys "
            f"{sorted(variables) if isinstance(variables, Mapping) else '?'}."
        )
    _check_dtypes(model)
    where = type(model).__name__
    b = _Builder(variables["params"], variables.get("batch_stats", {}), where)
    output = b._real(program(model, b))
    b.check_all_used()
    counted = {
        k: variables[k] for k in ("params", "batch_stats") if k in variables
    }
    sizes = summary_fn(counted)
    header = {
        "format": _FORMAT,
        "format_version": _PROGRAM_VERSION,
        "bnnjax_version": _bnnjax_version(),
        "jax_version": jax.__version__,
        "architecture": type(model).__name__,
        "config": _model_config(model),
        "binarizers": {
            "kernel": _binarizer_json(model.kernel_binarizer),
            "activation": _binarizer_json(model.activation_binarizer),
        },
        "bit_layout": _BIT_LAYOUT,
        "program": {"input": "input", "output": output.name, "ops": b.ops},
        "float32_bytes": int(sizes.float32_bytes),
        "deploy_bytes": int(sizes.deploy_bytes),
        "metadata": metadata,
    }
    return PackedModel(header=header, arrays=dict(b.arrays))


def _json_mapping(value: Any, what: str, hint: str) -> dict[str, Any]:
    """``value`` (a string-keyed mapping of JSON values, or None) as the
    plain dict a JSON round trip gives; a ``TypeError`` naming ``what``
    otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) for k in value
    ):
        raise TypeError(
            f"{what} must be a mapping with string keys, got "
            f"{type(value).__name__}."
        )
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must hold JSON values ({hint}): {e}") from None


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    return _json_mapping(
        metadata,
        "metadata",
        "str, numbers, bool, None, lists, dicts; finite floats only",
    )


def _bnnjax_version() -> str:
    return _version.__version__


# --------------------------------------------------------------------------
# Models of your own: bnnjax.binarize_model conversions and bnnjax.nn layers.
#
# The file holds the packed binary layers and the other variables; the
# model's own code runs the rest. Python code is never stored: predict
# takes the model (its definition) as an argument, as loading any Flax
# checkpoint does, and runs it with every binary layer replaced by a packed
# computation (flax method interception for linen, module surgery for nnx).

_LINEN_BINARY = (bnn_linen.BinaryDense, bnn_linen.BinaryConv)
_NNX_BINARY = (
    bnn_nnx.BinaryLinear,
    bnn_nnx.BinaryConv,
    convert_lib.BinarizedLinear,
    convert_lib.BinarizedConv,
)
_DENSE_LAYERS = (
    bnn_linen.BinaryDense,
    bnn_nnx.BinaryLinear,
    convert_lib.BinarizedLinear,
    flax_linen.Dense,
)
_PREFIX_BINARY = "binary/"
_PREFIX_VARIABLE = "variables/"


@dataclasses.dataclass(frozen=True)
class _LayerSpec:
    """What a binary layer computes, in JSON-able form."""

    path: tuple[Any, ...]  # module path (linen: str names; nnx: str/int)
    kind: str  # "dense" or "conv"
    kernel_param: str  # "latent_kernel" (bnnjax.nn) or "kernel" (converted)
    kernel_binarizer: Binarizer
    input: str  # "real" or "bits"
    use_bias: bool
    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: Any = None  # canonical: a name or (low, high) pairs
    kernel_dilation: tuple[int, ...] = ()
    feature_group_count: int = 1
    pad_value: float = 0.0

    @property
    def name(self) -> str:
        return "/".join(str(p) for p in self.path)

    def json(self) -> dict[str, Any]:
        entry = {
            "path": list(self.path),
            "kind": self.kind,
            "input": self.input,
            "kernel_binarizer": _binarizer_json(self.kernel_binarizer),
            "use_bias": self.use_bias,
        }
        if self.kind == "conv":
            padding = self.padding
            entry.update(
                kernel_size=list(self.kernel_size),
                strides=list(self.strides),
                padding=padding
                if isinstance(padding, str)
                else [list(p) for p in padding],
                kernel_dilation=list(self.kernel_dilation),
                feature_group_count=self.feature_group_count,
                pad_value=self.pad_value,
            )
        return entry


def _input_kind(binarizer: Binarizer | None, where: str) -> str:
    if binarizer is None:
        return "real"
    if not _is_plain_sign(binarizer):
        raise ValueError(
            f"{where}: input_binarizer={binarizer!r}; export supports real "
            "inputs (None) or sign activations (scale=None, center=False, "
            "deterministic): an input scale or centring depends on the batch."
        )
    return "bits"


def _layer_spec(
    path: tuple[Any, ...],
    module: Any,
    where: str,
    rule: Any = None,
) -> _LayerSpec:
    """The spec of a bnnjax.nn layer, or of a flax layer with its rule."""
    if rule is not None:  # a flax Dense/Conv converted by binarize_model
        kernel_binarizer = rule.kernel_binarizer
        input_binarizer = rule.input_binarizer
        pad_value = rule.pad_value
        kernel_param = "kernel"
    else:
        kernel_binarizer = module.kernel_binarizer
        input_binarizer = module.input_binarizer
        pad_value = getattr(module, "pad_value", 0.0)
        kernel_param = (
            "kernel"
            if isinstance(module, convert_lib._BinarizedLayer)
            else LATENT_KERNEL
        )
    layer = f"{where} layer {'/'.join(map(str, path))!r}"
    dtype = getattr(module, "dtype", None)
    if dtype is not None and np.dtype(dtype) != np.float32:
        raise ValueError(
            f"{layer} has dtype={dtype!r}; export supports float32 only."
        )
    common = {
        "path": tuple(path),
        "kernel_param": kernel_param,
        "kernel_binarizer": kernel_binarizer,
        "input": _input_kind(input_binarizer, layer),
        "use_bias": bool(module.use_bias),
    }
    if isinstance(module, _DENSE_LAYERS):
        return _LayerSpec(kind="dense", **common)
    kernel_size = nn_common.canonicalize_kernel_size(module.kernel_size)
    rank = len(kernel_size)
    padding = nn_common.canonicalize_padding(module.padding, rank)
    pad_value = nn_common.check_pad_value(pad_value, padding)
    mode = isinstance(padding, str) and padding in nn_common._MODE_PADDINGS
    if common["input"] == "bits" and not mode and pad_value not in (-1, 0, 1):
        raise ValueError(
            f"{layer} pads binary activations with pad_value={pad_value!r}; "
            "export supports -1, 0 and 1."
        )
    return _LayerSpec(
        kind="conv",
        kernel_size=tuple(kernel_size),
        strides=tuple(
            nn_common.canonicalize_window("strides", module.strides, rank)
        ),
        padding=padding,
        kernel_dilation=tuple(
            nn_common.canonicalize_window(
                "kernel_dilation", module.kernel_dilation, rank
            )
        ),
        feature_group_count=int(module.feature_group_count),
        pad_value=pad_value,
        **common,
    )


def _spec_from_json(entry: Mapping[str, Any]) -> _LayerSpec:
    """The runtime fields of a stored spec (the binarizer stays JSON)."""
    conv = entry["kind"] == "conv"
    padding = entry.get("padding")
    if conv and not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _LayerSpec(
        path=tuple(entry["path"]),
        kind=entry["kind"],
        kernel_param="",
        kernel_binarizer=None,  # type: ignore[arg-type]
        input=entry["input"],
        use_bias=bool(entry["use_bias"]),
        kernel_size=tuple(entry.get("kernel_size", ())),
        strides=tuple(entry.get("strides", ())),
        padding=padding,
        kernel_dilation=tuple(entry.get("kernel_dilation", ())),
        feature_group_count=int(entry.get("feature_group_count", 1)),
        pad_value=float(entry.get("pad_value", 0.0)),
    )


def _float_twin_linen(model: Any) -> Any:
    """The float model of a converted linen module (same fields)."""
    base = getattr(type(model), "_bnnjax_float_type", None)
    if base is None:
        return model
    twin = model.copy()
    object.__setattr__(twin, "__class__", base)
    return twin


def _is_linen_layer_call(context: Any, converted: Mapping[str, Any]) -> bool:
    if context.method_name != "__call__":
        return False
    if isinstance(context.module, _LINEN_BINARY):
        return True
    path = "/".join(context.module.path)
    return path in converted and convert_lib._linen_layer_call(context)


def _call_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    if args:
        return args[0]
    if "inputs" in kwargs:
        return kwargs["inputs"]
    raise TypeError("a binary layer was called without inputs.")


def _linen_specs(
    model: Any,
    variables: Mapping[str, Any],
    example_args: tuple[Any, ...],
    call_kwargs: Mapping[str, Any],
    where: str,
) -> tuple[Any, list[_LayerSpec]]:
    """The float model and its binary layers, in call order (one trace)."""
    converted = dict(getattr(model, "binarized_layers", {}))
    float_model = _float_twin_linen(model)
    specs: dict[str, _LayerSpec] = {}

    def record(next_fun, args, kwargs, context):
        if _is_linen_layer_call(context, converted):
            path = tuple(context.module.path)
            name = "/".join(path)
            if name not in specs:
                specs[name] = _layer_spec(
                    path, context.module, where, converted.get(name)
                )
        return next_fun(*args, **kwargs)

    def forward(variables, args):
        return float_model.apply(variables, *args, **call_kwargs)

    with flax_linen.intercept_methods(record):
        try:
            jax.eval_shape(forward, variables, example_args)
        except flax.errors.ScopeParamNotFoundError as error:
            raise ValueError(
                f"{where}: the variables do not match the model: {error}"
            ) from None
    missing = sorted(set(converted) - set(specs))
    if missing:
        raise ValueError(
            f"{where}: the example call does not reach the binarized layers "
            f"{missing}."
        )
    if not specs:
        raise ValueError(
            f"{where} has no binary layer (bnnjax.nn layers or layers "
            "converted by bnnjax.binarize_model) on the example call."
        )
    return float_model, list(specs.values())


def _nnx_specs(model: Any, where: str) -> list[tuple[_LayerSpec, Any]]:
    found = [
        (_layer_spec(tuple(path), module, where), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, _NNX_BINARY)
    ]
    if not found:
        raise ValueError(
            f"{where} has no binary layer (bnnjax.nn.nnx layers or layers "
            "converted by bnnjax.binarize_model)."
        )
    return found


def _float32_leaf(value: Any, where: str, name: str) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype != np.float32:
        raise ValueError(
            f"{where}: {name} has dtype {value.dtype}; export supports "
            "float32 models only."
        )
    if not np.isfinite(value).all():
        raise ValueError(f"{where}: {name} is not finite.")
    return value


def _pack_layer(
    spec: _LayerSpec,
    latent: Any,
    bias: Any,
    where: str,
    arrays: dict[str, np.ndarray],
) -> dict[str, Any]:
    name = spec.name
    latent = _float32_leaf(latent, where, f"{name}/{spec.kernel_param}")
    want_rank = 2 if spec.kind == "dense" else len(spec.kernel_size) + 2
    if latent.ndim != want_rank:
        raise ValueError(
            f"{where}: {name} has a kernel of shape {latent.shape}, not a "
            f"{spec.kind} kernel."
        )
    words, alpha = _signs_and_scale(latent, spec.kernel_binarizer, where, name)
    entry = spec.json()
    entry["n_in"] = int(latent.shape[-2])
    entry["features"] = int(latent.shape[-1])
    entry["kernel"] = f"{_PREFIX_BINARY}{name}/kernel"
    entry["alpha"] = f"{_PREFIX_BINARY}{name}/alpha"
    arrays[entry["kernel"]] = words
    arrays[entry["alpha"]] = alpha
    entry["bias"] = None
    if spec.use_bias:
        entry["bias"] = f"{_PREFIX_BINARY}{name}/bias"
        arrays[entry["bias"]] = _float32_leaf(bias, where, f"{name}/bias")
    return entry


def _packed_keys(spec: _LayerSpec, *prefix: str) -> set[tuple[Any, ...]]:
    """Variable keys a packed layer replaces: its kernel and bias."""
    return {
        (*prefix, *spec.path, spec.kernel_param),
        (*prefix, *spec.path, "bias"),
    }


def _store_variables(
    flat: Mapping[tuple[Any, ...], Any],
    skip: set[tuple[Any, ...]],
    where: str,
    arrays: dict[str, np.ndarray],
) -> None:
    """Every variable but ``skip`` as a float32 ``variables/...`` array."""
    for key, value in flat.items():
        if tuple(key) in skip:
            continue
        name = "/".join(map(str, key))
        arrays[_PREFIX_VARIABLE + name] = _float32_leaf(value, where, name)


def _json_kwargs(call_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    value = _json_mapping(call_kwargs, "call_kwargs", "e.g. train=False")
    if call_kwargs is None:
        return value
    if value != dict(call_kwargs):
        raise TypeError(
            "call_kwargs must survive a JSON round trip unchanged (use "
            f"lists, not tuples), got {dict(call_kwargs)!r}."
        )
    return value


def _pack_generic(
    model: Any,
    variables: Mapping[str, Any] | None,
    example_inputs: Any,
    call_kwargs: dict[str, Any],
    metadata: dict[str, Any],
) -> PackedModel:
    """pack_model for models of your own (see :func:`pack_model`)."""
    where = type(model).__name__
    arrays: dict[str, np.ndarray] = {}
    layers: list[dict[str, Any]] = []
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise ValueError(
                f"{where} is an nnx model, which holds its own variables: "
                "call pack_model(model) without variables."
            )
        api = "nnx"
        found = _nnx_specs(model, where)
        skip = set()
        for spec, module in found:
            latent = getattr(module, spec.kernel_param)[...]
            bias = None if module.bias is None else module.bias[...]
            layers.append(_pack_layer(spec, latent, bias, where, arrays))
            skip.update(_packed_keys(spec))
        state = nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
        _store_variables(traverse_util.flatten_dict(state), skip, where, arrays)
        counted: Any = model
        labels = None
        float_class = type(model)
    else:
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError(
                f"{where}: pack_model expects variables {{'params': ...}} for "
                "a linen model."
            )
        if example_inputs is None:
            raise TypeError(
                f"{where} is not a reference architecture: pack_model needs "
                "example_inputs (one call's positional inputs, e.g. "
                "jnp.ones((1, 28, 28, 1))) to find its binary layers."
            )
        if not isinstance(example_inputs, tuple):
            example_inputs = (example_inputs,)
        api = "linen"
        float_model, specs = _linen_specs(
            model, variables, example_inputs, call_kwargs, where
        )
        params = variables["params"]
        skip = set()
        for spec in specs:
            node = params
            for part in spec.path:
                node = node.get(part, {}) if isinstance(node, Mapping) else {}
            if spec.kernel_param not in node:
                raise ValueError(
                    f"{where}: params have no {spec.name}/"
                    f"{spec.kernel_param}; the variables do not match the "
                    "model."
                )
            bias = node.get("bias") if spec.use_bias else None
            layers.append(
                _pack_layer(spec, node[spec.kernel_param], bias, where, arrays)
            )
            skip.update(_packed_keys(spec, "params"))
        flat = traverse_util.flatten_dict(dict(variables))
        _store_variables(flat, skip, where, arrays)
        binary_kernels = {("params", *s.path, s.kernel_param) for s in specs}
        labels = traverse_util.unflatten_dict(
            {
                k[1:]: "binary" if k in binary_kernels else "real"
                for k in flat
                if k[0] == "params"
            }
        )
        counted = {k: variables[k] for k in variables}
        float_class = type(float_model)
    sizes = summary_fn(counted, labels=labels)
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "bnnjax_version": _bnnjax_version(),
        "jax_version": jax.__version__,
        "architecture": float_class.__name__,
        "model": {
            "api": api,
            "class": f"{float_class.__module__}.{float_class.__qualname__}",
            "call_kwargs": call_kwargs,
            "layers": layers,
            "variables": sorted(
                n for n in arrays if n.startswith(_PREFIX_VARIABLE)
            ),
        },
        "bit_layout": _BIT_LAYOUT,
        "float32_bytes": int(sizes.float32_bytes),
        "deploy_bytes": int(sizes.deploy_bytes),
        "metadata": metadata,
    }
    return PackedModel(header=header, arrays=arrays)


# -- running a model of your own from the packed arrays


def _prepare_layer(
    entry: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    words = jnp.asarray(arrays[entry["kernel"]])
    prepared: dict[str, Any] = {"alpha": jnp.asarray(arrays[entry["alpha"]])}
    if entry["bias"] is not None:
        prepared["bias"] = jnp.asarray(arrays[entry["bias"]])
    if entry["input"] == "bits":
        prepared["xnor"] = packed_lib.prepare_xnor_kernel(words)
        if entry["kind"] == "conv" and entry["pad_value"] == 0.0:
            prepared["tap_sums"] = packed_lib.kernel_tap_sums(
                words, entry["n_in"]
            )
    else:
        prepared["weights"] = packed_lib.prepare_binary_weights(
            words, entry["n_in"]
        )
    return prepared


def _packed_layer_call(
    spec: _LayerSpec, n_in: int, a: Mapping[str, Any], inputs: Any
) -> jax.Array:
    """A binary layer from its packed arrays: what its float layer computes.

    ``(binarize_in(x) @ S) * alpha + bias`` (dense) or the convolution
    with ``S``, padded as the float layer pads; ``+-1`` inputs by
    XNOR-popcount (exact counts), real inputs by
    :func:`bnnjax.packed.binary_weight_dense`/``binary_weight_conv``.
    """
    x = jnp.asarray(inputs)
    x = x.astype(jnp.float32)
    alpha = a["alpha"]
    if spec.kind == "dense":
        if spec.input == "bits":
            counts = packed_lib.xnor_dense(
                packed_lib.pack_bits(x >= 0), a["xnor"], n_in
            )
            y = counts.astype(jnp.float32) * _row(alpha, counts.ndim)
        else:
            y = packed_lib.binary_weight_dense(x, a["weights"], alpha)
    else:
        rank = len(spec.kernel_size)
        batch_shape = x.shape[: x.ndim - rank - 1]
        x = x.reshape(-1, *x.shape[x.ndim - rank - 1 :])
        pads = nn_common.explicit_padding(
            spec.padding,
            x.shape[1:-1],
            spec.kernel_size,
            spec.strides,
            spec.kernel_dilation,
        )
        window = {
            "kernel_size": spec.kernel_size,
            "strides": spec.strides,
            "dilation": spec.kernel_dilation,
            "feature_group_count": spec.feature_group_count,
        }
        mode = (
            isinstance(spec.padding, str)
            and spec.padding in nn_common._MODE_PADDINGS
        )
        if spec.input == "bits":
            bits = x >= 0
            pad_value = spec.pad_value
            if mode:
                bits = nn_common.pad_inputs(bits, spec.padding, pads)
                pads, pad_value = ((0, 0),) * rank, 1.0
            counts = packed_lib.xnor_conv(
                bits,
                a["xnor"],
                n_in=n_in,
                padding=pads,
                pad_value=pad_value,
                tap_sums=a.get("tap_sums"),
                **window,
            )
            y = counts.astype(jnp.float32) * _row(alpha, counts.ndim)
        else:
            x = nn_common.pad_inputs(x, spec.padding, pads, spec.pad_value)
            y = packed_lib.binary_weight_conv(
                x,
                a["weights"],
                alpha,
                padding=((0, 0),) * rank,
                **window,
            )
        y = y.reshape(*batch_shape, *y.shape[1:])
    if "bias" in a:
        y = y + _row(a["bias"], y.ndim)
    return y


class _PackedArray(nnx.Variable):
    """A packed layer's array inside an nnx model (not a parameter)."""


class _PackedNnxLayer(nnx.Module):
    """Stands in for an nnx binary layer: computes from packed arrays."""

    def __init__(self, spec: _LayerSpec, n_in: int, prepared: Mapping):
        self.spec = spec
        self.n_in = n_in
        leaves, self.treedef = jax.tree_util.tree_flatten(dict(prepared))
        self.leaves = nnx.List([_PackedArray(v) for v in leaves])

    def __call__(self, inputs, *args, **kwargs):
        del args, kwargs  # progress, out_sharding: no effect at inference
        prepared = jax.tree_util.tree_unflatten(
            self.treedef, [v[...] for v in self.leaves]
        )
        return _packed_layer_call(self.spec, self.n_in, prepared, inputs)


def _model_name(model: Any) -> str:
    cls = type(model)
    if isinstance(model, flax_linen.Module):
        cls = getattr(cls, "_bnnjax_float_type", cls)
    return cls.__name__


def _generic_runner(packed: PackedModel, model: Any):
    """(jitted function of (state, images), state) for ``model``."""
    spec = packed.header["model"]
    where = packed.architecture
    api = "nnx" if isinstance(model, nnx.Module) else "linen"
    if api != spec["api"]:
        raise ValueError(
            f"this file holds a {spec['api']} model; got a {api} model."
        )
    if _model_name(model) != where:
        raise ValueError(
            f"this file holds a {where} ({spec['class']}); got a model of "
            f"class {_model_name(model)}."
        )
    arrays = packed.arrays
    call_kwargs = dict(spec["call_kwargs"])
    entries = spec["layers"]
    specs = [_spec_from_json(e) for e in entries]
    prepared = {
        s.name: _prepare_layer(e, arrays)
        for s, e in zip(specs, entries, strict=True)
    }
    n_in = {s.name: int(e["n_in"]) for s, e in zip(specs, entries, strict=True)}
    variables = {
        name[len(_PREFIX_VARIABLE) :]: jnp.asarray(arrays[name])
        for name in spec["variables"]
    }
    if api == "linen":
        float_model = _float_twin_linen(model)
        by_name = {s.name: s for s in specs}
        tree = traverse_util.unflatten_dict(
            {tuple(k.split("/")): v for k, v in variables.items()}
        )

        def run(state, images):
            layer_arrays, variables = state
            seen = set()

            def interceptor(next_fun, args, kwargs, context):
                name = "/".join(context.module.path)
                s = by_name.get(name)
                if s is not None and context.method_name == "__call__":
                    seen.add(name)
                    return _packed_layer_call(
                        s,
                        n_in[name],
                        layer_arrays[name],
                        _call_input(args, kwargs),
                    )
                return next_fun(*args, **kwargs)

            with flax_linen.intercept_methods(interceptor):
                out = float_model.apply(variables, images, **call_kwargs)
            if len(seen) != len(by_name):
                raise ValueError(
                    f"the model does not call the packed layers "
                    f"{sorted(set(by_name) - seen)}: it is not the exported "
                    f"{where}."
                )
            return out

        return jax.jit(run), (prepared, tree)
    clone = nnx.clone(model)
    modules = {tuple(p): m for p, m in nnx.iter_modules(clone)}
    replacements = {}
    for s in specs:
        module = modules.get(s.path)
        if not isinstance(module, (*_NNX_BINARY, nnx.Linear, nnx.Conv)):
            raise ValueError(
                f"the model has no dense or conv layer at {s.name}: it is not "
                f"the exported {where}."
            )
        replacements[id(module)] = _PackedNnxLayer(
            s, n_in[s.name], prepared[s.name]
        )
    clone = convert_lib._replace_modules(clone, replacements)
    state = nnx.state(clone, (nnx.Param, nnx.BatchStat))
    pure = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    names = {"/".join(map(str, k)): k for k in pure}
    if set(names) != set(variables):
        raise ValueError(
            f"the model's parameters and batch statistics do not match the "
            f"file: missing {sorted(set(variables) - set(names))[:5]}, "
            f"unexpected {sorted(set(names) - set(variables))[:5]}."
        )
    nnx.replace_by_pure_dict(
        state,
        traverse_util.unflatten_dict(
            {names[n]: v for n, v in variables.items()}
        ),
    )
    nnx.update(clone, state)
    clone.eval()
    graphdef, state = nnx.split(clone)

    def run_nnx(state, images):
        return nnx.merge(graphdef, state)(images, **call_kwargs)

    return jax.jit(run_nnx), state


# --------------------------------------------------------------------------
# The file.


def _payload(arrays: Mapping[str, np.ndarray]) -> tuple[dict, list[bytes]]:
    manifest = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(arrays):
        value = np.asarray(arrays[name])
        dtype = (
            value.dtype.newbyteorder("<")
            if value.dtype.itemsize > 1
            else value.dtype
        )
        key = dtype.str
        if key not in _DTYPES:
            raise ValueError(
                f"array {name!r} has dtype {value.dtype}; the format stores "
                f"{sorted(_DTYPES)} only."
            )
        data = np.ascontiguousarray(value, dtype).tobytes()
        pad = -offset % _ALIGN
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        manifest[name] = {
            "dtype": key,
            "shape": [int(d) for d in value.shape],
            "offset": offset,
            "nbytes": len(data),
        }
        chunks.append(data)
        offset += len(data)
    return manifest, chunks


def _file_chunks(packed: PackedModel):
    """Yields the file's bytes in order (the SHA-256 trailer last)."""
    manifest, payload = _payload(packed.arrays)
    digest = hashlib.sha256()
    for chunk in payload:
        digest.update(chunk)
    header = dict(packed.header)
    header["arrays"] = manifest
    header["payload_bytes"] = sum(len(c) for c in payload)
    header["payload_sha256"] = digest.hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, int(header["format_version"]), len(text))
    pad = b"\0" * (-(len(prefix) + len(text)) % _ALIGN)
    whole = hashlib.sha256()
    for chunk in (prefix, text, pad, *payload):
        whole.update(chunk)
        yield chunk
    yield whole.digest()


def save(packed: PackedModel, path: str | os.PathLike) -> int:
    """Writes ``packed`` to ``path`` atomically; returns the file's bytes.

    The bytes go to a temporary file in the same directory, which is
    flushed, ``fsync``-ed and renamed over ``path`` (``os.replace``); on
    any error the temporary file is removed and ``path`` is untouched.

    Args:
      packed: the model.
      path: destination file (its directory must exist).

    Returns:
      The size of the written file in bytes.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            for chunk in _file_chunks(packed):
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename; best effort
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return size


def export_model(
    model: Any,
    variables: Mapping[str, Any] | None,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    example_inputs: Any = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> PackedSizes:
    """:func:`pack_model` then :func:`save`; returns the sizes.

    Args:
      model: the linen or nnx model (see :func:`pack_model`).
      variables: a linen model's trained variables; ``None`` for an nnx
        model.
      path: destination file.
      metadata: JSON facts stored in the header (see :func:`pack_model`).
      example_inputs: see :func:`pack_model` (linen models of your own).
      call_kwargs: see :func:`pack_model` (models of your own).

    Returns:
      :class:`PackedSizes` with the file's bytes and the float32 bytes of
      ``variables``.
    """
    packed = pack_model(
        model,
        variables,
        metadata=metadata,
        example_inputs=example_inputs,
        call_kwargs=call_kwargs,
    )
    return PackedSizes(save(packed, path), packed.float32_bytes)


def _fail(path: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def load(path: str | os.PathLike) -> PackedModel:
    """Reads a packed model file, verifying it before using any byte.

    Checks, in order: the magic bytes (a foreign file), the SHA-256 trailer
    over the whole file (any flipped byte, a truncated file), the format
    version, the JSON header and its array table. Arrays are read with
    ``np.frombuffer`` from a dtype whitelist; nothing is unpickled.

    Args:
      path: the file.

    Returns:
      The :class:`PackedModel` (arrays are read-only views of the file's
      bytes).

    Raises:
      ValueError: naming the file, for a foreign, corrupt, truncated or
        newer-format file.
      OSError: if the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise _fail(
            path,
            f"not a bnnjax packed model: it starts with {data[:8]!r}, "
            f"expected the magic bytes {MAGIC!r}.",
        )
    if len(data) < _PREFIX.size + _DIGEST_BYTES:
        raise _fail(path, f"truncated: only {len(data)} bytes.")
    body, trailer = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != trailer:
        raise _fail(
            path,
            "checksum mismatch: the file is corrupt or truncated (its last "
            "32 bytes are not the SHA-256 of the rest).",
        )
    _, version, header_len = _PREFIX.unpack_from(data)
    if not 1 <= version <= FORMAT_VERSION:
        raise _fail(
            path,
            f"format version {version} is not supported; this bnnjax reads "
            f"versions 1 to {FORMAT_VERSION}"
            + (" (upgrade bnnjax)." if version > FORMAT_VERSION else "."),
        )
    start = _PREFIX.size
    if header_len > len(body) - start:
        raise _fail(path, f"header length {header_len} exceeds the file.")
    try:
        header = json.loads(data[start : start + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"the header is not JSON: {error}") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise _fail(path, f"the header does not describe a {_FORMAT!r} file.")
    if header.get("format_version") != version:
        raise _fail(
            path,
            f"the header says format version {header.get('format_version')!r}"
            f", the file starts with version {version}.",
        )
    payload_start = start + header_len + (-(start + header_len) % _ALIGN)
    payload = body[payload_start:]
    try:
        expected = int(header["payload_bytes"])
        manifest = header["arrays"]
        payload_digest = header["payload_sha256"]
    except (KeyError, TypeError, ValueError):
        raise _fail(path, "the header lacks its array table.") from None
    if len(payload) != expected:
        raise _fail(
            path,
            f"payload has {len(payload)} bytes, the header says {expected}.",
        )
    if hashlib.sha256(payload).hexdigest() != payload_digest:
        raise _fail(path, "payload checksum mismatch.")
    arrays = {}
    if not isinstance(manifest, dict):
        raise _fail(path, "the array table is not an object.")
    for name, entry in manifest.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise _fail(
                path, f"array {name!r} has an invalid table entry {entry!r}."
            ) from None
        count = math.prod(shape)
        if (
            min(shape, default=0) < 0
            or nbytes != count * dtype.itemsize
            or offset < 0
            or offset + nbytes > len(payload)
        ):
            raise _fail(path, f"array {name!r} does not fit the payload.")
        arrays[name] = np.frombuffer(payload, dtype, count, offset).reshape(
            shape
        )
    result = PackedModel(header=header, arrays=arrays)
    if version == _PROGRAM_VERSION or "model" not in header:
        _check_program(result, path)
    else:
        _check_model(result, path)
    return result


def file_sizes(path: str | os.PathLike) -> PackedSizes:
    """File bytes and source float32 bytes of a packed model file.

    Loads (and so verifies) the file.
    """
    packed = load(path)
    return PackedSizes(os.path.getsize(path), packed.float32_bytes)


# --------------------------------------------------------------------------
# Running the program.

_ARRAY_FIELDS = {
    "binary_dense": ("kernel", "alpha"),
    "binary_conv": ("kernel", "alpha"),
    "threshold": ("threshold", "flip"),
    "count_threshold": ("threshold", "flip"),
    "scale": ("alpha",),
    "batch_norm": ("mean", "var", "scale", "bias"),
    "dense": ("kernel", "bias"),
    "conv": ("kernel", "bias"),
    "flatten": (),
    "relu": (),
    "sign": (),
    "mean": (),
    "add": (),
    "max_pool": (),
    "avg_pool": (),
}


def _check_program(packed: PackedModel, path: str) -> None:
    try:
        program = packed.header["program"]
        ops = program["ops"]
        defined = {program["input"]}
        for op in ops:
            kind = op["op"]
            if kind not in _ARRAY_FIELDS:
                raise _fail(path, f"unknown op {kind!r}.")
            inputs = op["in"] if isinstance(op["in"], list) else [op["in"]]
            missing = [v for v in inputs if v not in defined]
            if missing:
                raise _fail(path, f"op {kind!r} reads undefined {missing}.")
            for field in _ARRAY_FIELDS[kind]:
                name = op.get(field)
                if name is not None and name not in packed.arrays:
                    raise _fail(path, f"op {kind!r} needs array {name!r}.")
            defined.add(op["out"])
        if program["output"] not in defined:
            raise _fail(path, "the program's output is never computed.")
    except (KeyError, TypeError) as error:
        raise _fail(path, f"malformed program: {error!r}.") from None


def _check_model(packed: PackedModel, path: str) -> None:
    """Checks a version-2 header: its layers and variables exist."""
    try:
        spec = packed.header["model"]
        if spec["api"] not in ("linen", "nnx"):
            raise _fail(path, f"unknown model api {spec['api']!r}.")
        if not isinstance(spec["call_kwargs"], dict):
            raise _fail(path, "call_kwargs is not an object.")
        for entry in spec["layers"]:
            if entry["kind"] not in ("dense", "conv"):
                raise _fail(path, f"unknown layer kind {entry['kind']!r}.")
            if entry["input"] not in ("real", "bits"):
                raise _fail(path, f"unknown layer input {entry['input']!r}.")
            int(entry["n_in"])
            _spec_from_json(entry)
            for field in ("kernel", "alpha", "bias"):
                name = entry[field]
                if name is not None and name not in packed.arrays:
                    raise _fail(path, f"layer needs array {name!r}.")
        for name in spec["variables"]:
            if name not in packed.arrays:
                raise _fail(path, f"variable array {name!r} is missing.")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        if isinstance(error, ValueError) and str(error).startswith(path):
            raise
        raise _fail(path, f"malformed model description: {error!r}.") from None


def _prepare(packed: PackedModel) -> list[dict[str, jax.Array]]:
    """Device arrays per op, in the layouts the kernels want."""
    arrays = packed.arrays
    prepared = []
    for op in packed.header["program"]["ops"]:
        kind = op["op"]
        mine: dict[str, jax.Array] = {}
        for field in _ARRAY_FIELDS[kind]:
            name = op.get(field)
            if name is not None:
                mine[field] = jnp.asarray(arrays[name])
        if kind in ("threshold", "count_threshold"):
            mine["flip"] = mine["flip"] != 0
        if kind in ("binary_dense", "binary_conv"):
            words = mine.pop("kernel")
            if op["input"] == "bits":
                if kind == "binary_conv" and op["pad_value"] == 0.0:
                    mine["tap_sums"] = packed_lib.kernel_tap_sums(
                        words, op["n_in"]
                    )
                mine["xnor"] = packed_lib.prepare_xnor_kernel(words)
            else:
                weights = packed_lib.prepare_binary_weights(words, op["n_in"])
                mine["words_t"] = weights.words_t
                mine["bytes_t"] = weights.bytes_t
        prepared.append(mine)
    return prepared


def _row(v: jax.Array, ndim: int) -> jax.Array:
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _pool(x, init, fn, window, strides, padding):
    pads = (
        padding
        if isinstance(padding, str)
        else [(0, 0), *map(tuple, padding), (0, 0)]
    )
    return lax.reduce_window(
        x, init, fn, (1, *window, 1), (1, *strides, 1), pads
    )


def _run_op(op: Mapping[str, Any], a: Mapping[str, jax.Array], env: dict):
    kind = op["op"]
    if kind == "add":
        x, y = (env[v] for v in op["in"])
        return x + y
    x = env[op["in"]]
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "relu":
        return jnp.maximum(x, 0)
    if kind == "sign":
        return x >= 0
    if kind == "mean":
        return jnp.mean(x, axis=tuple(op["axes"]))
    if kind == "scale":
        return x.astype(jnp.float32) * _row(a["alpha"], x.ndim)
    if kind in ("threshold", "count_threshold"):
        return (x >= _row(a["threshold"], x.ndim)) != _row(a["flip"], x.ndim)
    if kind == "batch_norm":
        return packed_lib.batch_norm(
            x, a["mean"], a["var"], a["scale"], a["bias"], op["epsilon"]
        )
    if kind == "dense":
        y = lax.dot_general(x, a["kernel"], (((x.ndim - 1,), (0,)), ((), ())))
        return y + _row(a["bias"], y.ndim) if "bias" in a else y
    if kind == "conv":
        y = lax.conv_general_dilated(
            x,
            a["kernel"],
            tuple(op["strides"]),
            [tuple(p) for p in op["padding"]],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + _row(a["bias"], y.ndim) if "bias" in a else y
    if kind == "max_pool":
        init = (
            -jnp.inf
            if jnp.issubdtype(x.dtype, jnp.floating)
            else jnp.iinfo(x.dtype).min
        )
        return _pool(
            x,
            jnp.asarray(init, x.dtype),
            lax.max,
            op["window"],
            op["strides"],
            op["padding"],
        )
    if kind == "avg_pool":
        args = (op["window"], op["strides"], op["padding"])
        y = _pool(x, jnp.asarray(0, x.dtype), lax.add, *args)
        ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
        return y / _pool(ones, jnp.asarray(0, x.dtype), lax.add, *args)
    if kind == "binary_dense":
        if op["input"] == "bits":
            return packed_lib.xnor_dense(
                packed_lib.pack_bits(x), a["xnor"], op["n_in"]
            )
        weights = packed_lib.BinaryWeights(
            a["words_t"], a["bytes_t"], op["n_in"]
        )
        return packed_lib.binary_weight_dense(x, weights, a["alpha"])
    if kind == "binary_conv":
        window = {
            "kernel_size": op["kernel_size"],
            "strides": op["strides"],
            "dilation": op["dilation"],
            "padding": [tuple(p) for p in op["padding"]],
            "pad_value": op["pad_value"],
        }
        if op["input"] == "bits":
            return packed_lib.xnor_conv(
                x,
                a["xnor"],
                n_in=op["n_in"],
                tap_sums=a.get("tap_sums"),
                **window,
            )
        weights = packed_lib.BinaryWeights(
            a["words_t"],
            a["bytes_t"],
            op["n_in"] * math.prod(op["kernel_size"]),
        )
        return packed_lib.binary_weight_conv(x, weights, a["alpha"], **window)
    raise ValueError(f"unknown op {kind!r}")  # _check_program prevents it


def _execute(program: Mapping[str, Any], prepared, images: jax.Array):
    env = {program["input"]: images}
    for op, arrays in zip(program["ops"], prepared, strict=True):
        env[op["out"]] = _run_op(op, arrays, env)
    return env[program["output"]]


def _check_images(packed: PackedModel, images: jax.Array) -> None:
    ops = packed.header["program"]["ops"]
    first = next(
        (o for o in ops if o["op"] in ("binary_dense", "binary_conv", "conv")),
        None,
    )
    if packed.architecture == "BinaryMLP":
        n = math.prod(images.shape[1:]) if images.ndim >= 2 else None
        if n != first["n_in"]:
            raise ValueError(
                f"BinaryMLP was exported for inputs of {first['n_in']} "
                f"features per example, got images of shape {images.shape}."
            )
    elif images.ndim != 4:
        raise ValueError(
            f"{packed.architecture} expects images (batch, height, width, "
            f"channels), got shape {images.shape}."
        )


def predict(
    packed: PackedModel,
    images: jax.typing.ArrayLike,
    *,
    batch_size: int | None = None,
    model: Any = None,
) -> jax.Array:
    """Logits of a packed model, from its packed arrays.

    Reference architectures (format version 1): matches
    ``model.apply(variables, images, train=False)`` of the exported model
    from the file alone (see the module docstring for the numerics).
    Models of your own (version 2): ``model`` is required; its code runs
    with every binary layer computed from the packed arrays and every
    other parameter and batch statistic taken from the file, as
    ``model.apply(variables, images, **call_kwargs)`` (linen) or
    ``model(images, **call_kwargs)`` in ``eval()`` mode (nnx) with the
    exported variables. The computation is jit-compiled once per input
    shape and cached on ``packed`` (per model object).

    Args:
      packed: from :func:`pack_model` or :func:`load`.
      images: inputs as the float model takes them (reference
        architectures: cast to float32).
      batch_size: run in chunks of this many examples (default: all).
      model: for a model of your own, its definition: the linen module
        (float or converted by :func:`bnnjax.binarize_model`; its variables
        are not used) or an nnx model of the same structure (cloned; its
        values are replaced by the file's). Must be ``None`` for the
        reference architectures.

    Returns:
      ``(batch, ...)`` outputs (``(batch, num_classes)`` float32 logits
      for the reference architectures).

    Raises:
      ValueError: for inputs of the wrong shape, a missing or mismatched
        ``model``.
    """
    images = jnp.asarray(images)
    if images.ndim < 1:
        raise ValueError("predict expects a batch of inputs.")
    if "model" in packed.header:
        if model is None:
            spec = packed.header["model"]
            raise ValueError(
                f"this file holds a {spec['api']} model of your own "
                f"({spec['class']}); its code is not stored: pass the model "
                "definition, predict(packed, images, model=...)."
            )
        key = ("model", id(model))
        if key not in packed._cache:
            packed._cache[key] = (model, *_generic_runner(packed, model))
        _, run, prepared = packed._cache[key]
    else:
        if model is not None:
            raise ValueError(
                f"this file holds a {packed.architecture} program that runs "
                "from the file alone: call predict without model."
            )
        if images.dtype != jnp.float32:
            images = images.astype(jnp.float32)
        _check_images(packed, images)
        if "run" not in packed._cache:
            program = packed.header["program"]
            packed._cache["run"] = (
                jax.jit(functools.partial(_execute, program)),
                _prepare(packed),
            )
        run, prepared = packed._cache["run"]
    n = images.shape[0]
    if batch_size is None or batch_size >= n:
        return run(prepared, images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    parts = [
        run(prepared, images[i : i + batch_size])
        for i in range(0, n, batch_size)
    ]
    return jnp.concatenate(parts, axis=0)

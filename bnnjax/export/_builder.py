"""The program builder: ops and arrays emitted from a parameter tree.

A reference architecture is compiled into a list of ops over named values
(:mod:`bnnjax.export._programs` walks the model; :class:`_Builder` emits
the ops and their arrays). Each value is ``"real"`` (float32), ``"bits"``
(bool, ``True`` is ``+1``) or ``"count"`` (the exact int32 XNOR-popcount of
a binary layer with ``+-1`` inputs, scaled later by its ``alpha``). Batch
norm followed by ``sign`` folds into a threshold: an integer one per
channel on counts (:func:`bnnjax.packed.fold_count_threshold`), a float
one on reals (:func:`bnnjax.packed.fold_batch_norm_sign`). Every other
float operation is repeated as the float model runs it;
:doc:`/guides/file_format` states what agrees bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from flax import traverse_util

from bnnjax import packed as packed_lib
from bnnjax.binarize import Binarizer
from bnnjax.export._kernels import _signs_and_scale
from bnnjax.export._schema import _DTYPES
from bnnjax.nn.functional import LATENT_KERNEL


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

    def __init__(
        self, params: Mapping[str, Any], stats: Mapping[str, Any], where: str
    ) -> None:
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

    def _emit(self, op: str, inputs: str | list[str], **fields: Any) -> str:
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

    def check_features(
        self, path: str, shape: tuple[int, ...], expected: int
    ) -> None:
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

    def params_shape(self, path: str, name: str) -> tuple[int, ...]:
        """The shape of a parameter, without marking it used."""
        node = self.params
        for part in path.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(
                    f"{self.where}: params have no {path!r}; the variables "
                    "do not match the model."
                )
            node = node[part]
        if name not in node:
            raise ValueError(f"{self.where}: params[{path!r}] has no {name!r}.")
        return tuple(np.shape(node[name]))

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

    def concat(self, values: Sequence[_Value]) -> _Value:
        """Reals concatenated along the channels (the last axis)."""
        name = self._emit("concat", [self._real(v).name for v in values])
        return _Value(name, "real")

    def rsign(self, path: str, x: _Value) -> _Value:
        """ReActNet's RSign, ``sign(x - beta)``, folded into ``x >= beta``.

        IEEE subtraction makes ``x - beta >= 0`` and ``x >= beta`` the same
        test; the program stores ``beta`` as the threshold of a ``threshold``
        op (no flip).
        """
        beta = self._param(path, "beta")
        name = self._emit(
            "threshold",
            self._real(x).name,
            threshold=self._array(f"{path}/threshold", beta, "<f4"),
            flip=self._array(
                f"{path}/flip", np.zeros(beta.shape, np.uint8), "|u1"
            ),
        )
        return _Value(name, "bits")

    def rprelu(self, path: str, x: _Value) -> _Value:
        """ReActNet's RPReLU, ``PReLU(x - gamma) + zeta`` per channel."""
        names = {
            key: self._array(f"{path}/{key}", self._param(path, key), "<f4")
            for key in ("gamma", "zeta", "negative_slope")
        }
        return _Value(self._emit("rprelu", self._real(x).name, **names), "real")

    def max_pool(
        self,
        x: _Value,
        window: Sequence[int],
        strides: Sequence[int],
        padding: Sequence[tuple[int, int]],
    ) -> _Value:
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

    def avg_pool(
        self,
        x: _Value,
        window: Sequence[int],
        strides: Sequence[int],
        padding: str,
    ) -> _Value:
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
        self,
        path: str,
        x: _Value,
        features: int,
        strides: Sequence[int],
        padding: Sequence[tuple[int, int]],
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
        stats = (
            self._param(path, "mean", "batch_stats"),
            self._param(path, "var", "batch_stats"),
            self._param(path, "scale"),
            self._param(path, "bias"),
        )
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
        # A count carries its kernel scale and fan-in.
        alpha, n = cast(np.ndarray, x.alpha), cast(int, x.n)
        try:
            t, flip = packed_lib.fold_count_threshold(threshold, flip, alpha, n)
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

"""Schema of a packed model: constants, types and JSON checks.

The vocabulary every other part of :mod:`bnnjax.export` shares: the magic
bytes and format versions, the array dtypes the file may hold, the
:class:`PackedModel` and :class:`PackedSizes` types, the op table of a
reference program, the stored description of a binary layer of a model of
your own (:class:`_LayerSpec`), and the checks that turn user metadata and
call arguments into plain JSON. The layout of the file is described in
:doc:`/guides/file_format`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import numpy as np

from bnnjax import _version
from bnnjax.binarize import Binarizer, Surrogate
from bnnjax.scale import Scale

# Public as bnnjax.export.MAGIC and FORMAT_VERSION (documented there).
MAGIC = b"\x89BNNJAX\n"
FORMAT_VERSION = 2

_PROGRAM_VERSION = 1  # files of the reference architectures

_FORMAT = "bnnjax.packed"
_DTYPES: dict[str, np.dtype] = {
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

# Array names of a model of your own: packed layers and other variables.
_PREFIX_BINARY = "binary/"
_PREFIX_VARIABLE = "variables/"

# The ops of a reference program and the array fields each one reads.
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
    "concat": (),
    "rprelu": ("gamma", "zeta", "negative_slope"),
    "max_pool": (),
    "avg_pool": (),
}


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
      header: the file header (see :doc:`/guides/file_format`).
      arrays: the arrays, by name.
    """

    header: Mapping[str, Any]
    arrays: Mapping[str, np.ndarray]
    _cache: dict[Any, Any] = dataclasses.field(
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
# Python values as header JSON.


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
    # A Binarizer stores its surrogate and scale resolved, never as names.
    rule = cast(Surrogate, b.surrogate)
    surrogate = {"name": rule.name, **dataclasses.asdict(rule)}
    scale = None
    if b.scale is not None:
        estimator = cast(Scale, b.scale)
        scale = {"name": estimator.name, **dataclasses.asdict(estimator)}
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


def _bnnjax_version() -> str:
    return _version.__version__


# --------------------------------------------------------------------------
# The stored description of a binary layer of a model of your own.


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


def _spec_from_json(entry: Mapping[str, Any]) -> _LayerSpec:
    """The runtime fields of a stored spec (the binarizer stays JSON)."""
    conv = entry["kind"] == "conv"
    padding: Any = entry.get("padding")
    if conv and not isinstance(padding, str):
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _LayerSpec(
        path=tuple(entry["path"]),
        kind=entry["kind"],
        kernel_param="",
        # Read back, the rule stays JSON: no Binarizer is rebuilt.
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

"""Validation, defaults and layouts shared by the linen and nnx models.

Pure Python and ``jax.numpy`` only: no Module classes, no state. Each
model's settings are checked by one function here (:func:`check_mlp`,
:func:`check_cnn`, :func:`check_block_rules`, :func:`check_resnet`,
:func:`check_reactnet_rules`, :func:`check_reactnet`),
called from the linen model's ``__post_init__`` and the nnx model's
constructor, so the two APIs accept the same settings, raise the same
errors in the same order, and build the same layer lists.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax._validate import is_int as _is_int
from bnnjax._validate import is_real as _is_real
from bnnjax.binarize import Binarizer
from bnnjax.nn._checks import (
    check_binarizer,
    check_pad_value,
    check_positive_int,
)
from bnnjax.nn._formulation import ConvImpl, check_conv_impl
from bnnjax.nn._precision import check_sign_product_dtype
from bnnjax.nn._residuals import Residuals, check_residuals

__all__ = [
    "APPROX_SIGN_ACTIVATION",
    "BINARYNET_CNN_CONV",
    "BINARYNET_CNN_DENSE",
    "BINARYNET_CNN_POOLS",
    "CNN_PADDINGS",
    "LARQ_MNIST_CNN",
    "REACTNET_A",
    "REACTNET_SMALL",
    "RESNET18",
    "RESNET20",
    "SIGN_ACTIVATION",
    "SMALL_INPUT_SIZE",
    "SMALL_STEM",
    "CnnLayout",
    "bireal_layout",
    "bireal_widths",
    "check_block_rules",
    "check_bool",
    "check_cnn",
    "check_cnn_padding",
    "check_dense_features",
    "check_image_batch",
    "check_mlp",
    "check_momentum",
    "check_pool_after",
    "check_positive_float",
    "check_positive_int",
    "check_rate",
    "check_reactnet",
    "check_reactnet_rules",
    "check_resnet",
    "check_small_input_stem",
    "check_train",
    "check_widths",
    "cnn_layout",
    "cnn_min_input_size",
    "cnn_spatial_size",
    "describe_cnn_layout",
    "flatten_batch",
    "reactnet_layout",
    "scale_widths",
    "stem_layout",
    "stem_padding",
    "use_small_stem",
]

SIGN_ACTIVATION = Binarizer(surrogate="clipped_ste", scale=None)
"""BinaryNet's activation: ``sign(x)`` with the hardtanh (clipped) STE."""

APPROX_SIGN_ACTIVATION = Binarizer(surrogate="approx_sign", scale=None)
"""Bi-Real Net's activation: ``sign(x)`` with the ApproxSign gradient."""

BINARYNET_CNN_CONV = (128, 128, 256, 256, 512, 512)
"""BinaryNet's CIFAR-10 convolutions; a 2x2 max pool follows every second."""

BINARYNET_CNN_POOLS = (1, 3, 5)
"""Indices of BinaryNet's CIFAR-10 convolutions a 2x2 max pool follows."""

BINARYNET_CNN_DENSE = (1024, 1024)
"""BinaryNet's CIFAR-10 hidden dense layers."""

CNN_PADDINGS = ("SAME", "VALID")
"""The paddings a ``BinaryNetCNN`` gives all its convolutions."""

LARQ_MNIST_CNN: Mapping[str, Any] = MappingProxyType(
    {
        "conv_features": (32, 64, 64),
        "pool_after": (0, 1),
        "dense_features": (64,),
        "padding": "VALID",
    }
)
"""The binary CNN of Larq's MNIST tutorial, as ``BinaryNetCNN`` fields:
``32C3 - MP2 - 64C3 - MP2 - 64C3 - 64FC - 10FC`` with valid padding."""

RESNET18: Mapping[str, Any] = MappingProxyType(
    {
        "stage_sizes": (2, 2, 2, 2),
        "stage_features": (64, 128, 256, 512),
        "num_classes": 1000,
        "stem_features": 64,
        "stem_kernel_size": 7,
        "stem_strides": 2,
        "stem_max_pool": True,
    }
)
"""Bi-Real Net-18: the ImageNet ResNet-18 layout."""

RESNET20: Mapping[str, Any] = MappingProxyType(
    {
        "stage_sizes": (3, 3, 3),
        "stage_features": (16, 32, 64),
        "num_classes": 10,
        "stem_features": 16,
        "stem_kernel_size": 3,
        "stem_strides": 1,
        "stem_max_pool": False,
    }
)
"""The CIFAR ResNet-20 layout (He et al, 2016) with Bi-Real blocks."""


REACTNET_A: Mapping[str, Any] = MappingProxyType(
    {
        "stage_sizes": (1, 2, 2, 6, 2),
        "stem_features": 32,
        "stem_strides": 2,
        "num_classes": 1000,
    }
)
"""ReActNet-A: MobileNet-v1's layout for ImageNet (32 -> 64 -> 128 -> 256
-> 512 -> 1024 channels over 13 blocks)."""

REACTNET_SMALL: Mapping[str, Any] = MappingProxyType(
    {
        "stage_sizes": (1, 2, 2, 2),
        "stem_features": 32,
        "stem_strides": 1,
        "num_classes": 10,
    }
)
"""A ReActNet-A for 28x28 and 32x32 images: stride-1 stem, the 1024-channel
stage and four of the six 512-channel blocks left out."""


def check_bool(name: str, value: object) -> bool:
    """Returns ``value`` if it is a bool, else raises ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be a bool, got {value!r} of type "
            f"{type(value).__name__}."
        )
    return bool(value)


def check_train(value: object) -> bool:
    """Checks the linen ``train`` flag, a static Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            "train must be a Python bool (it selects batch statistics or "
            f"running averages at trace time), got {value!r} of type "
            f"{type(value).__name__}."
        )
    return bool(value)


def check_widths(name: str, value: object) -> tuple[int, ...]:
    """Returns ``value`` as a non-empty tuple of positive ints.

    Raises:
      TypeError: if ``value`` is not a sequence of ints.
      ValueError: if it is empty or holds a value below 1.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a non-empty sequence of positive ints, got "
            f"{value!r} of type {type(value).__name__}."
        )
    if not value:
        raise ValueError(
            f"{name} must be a non-empty sequence of positive ints, got "
            f"{value!r}."
        )
    if not all(_is_int(v) for v in value):
        raise TypeError(f"{name} must hold ints, got {tuple(value)!r}.")
    if any(v < 1 for v in value):
        raise ValueError(
            f"{name} must hold positive ints, got {tuple(value)!r}."
        )
    return tuple(int(v) for v in value)


def check_positive_float(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises unless finite and > 0."""
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
    return float(value)


def check_rate(name: str, value: object) -> float:
    """Returns a dropout rate in ``[0, 1)`` as a float, or raises."""
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number in [0, 1), got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    return float(value)


def check_momentum(name: str, value: object) -> float:
    """Returns a batch-norm momentum in ``[0, 1]`` as a float, or raises."""
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number in [0, 1], got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    return float(value)


def scale_widths(widths: Sequence[int], multiplier: float) -> tuple[int, ...]:
    """``max(1, round(w * multiplier))`` for each width ``w``.

    Python's ``round`` rounds halves to even: ``round(2.5) == 2``.
    """
    return tuple(max(1, round(w * multiplier)) for w in widths)


def bireal_widths(
    stage_sizes: object,
    stage_features: object,
    stem_features: int,
    width_multiplier: float,
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The stem's channels and the :func:`bireal_layout` of a Bi-Real net,
    every channel count scaled by :func:`scale_widths`.

    Returns:
      ``(stem_features, layout)``; ``width_multiplier=1`` leaves both as
      given.
    """
    layout = bireal_layout(stage_sizes, stage_features)
    (stem,) = scale_widths((stem_features,), width_multiplier)
    scaled = scale_widths([f for f, _ in layout], width_multiplier)
    return stem, tuple((f, s) for f, (_, s) in zip(scaled, layout, strict=True))


def bireal_layout(
    stage_sizes: object, stage_features: object
) -> tuple[tuple[int, int], ...]:
    """``(features, strides)`` of every binary convolution of a Bi-Real net.

    A stage of ``n`` basic blocks holds ``2 n`` binary 3x3 convolutions, each
    with its own shortcut. The first convolution of every stage but the
    first has stride 2.

    Raises:
      TypeError, ValueError: for invalid or mismatched stage lists, naming
        ``stage_sizes`` or ``stage_features``.
    """
    sizes = check_widths("stage_sizes", stage_sizes)
    features = check_widths("stage_features", stage_features)
    if len(sizes) != len(features):
        raise ValueError(
            f"stage_sizes={sizes!r} and stage_features={features!r} must "
            "have one entry per stage, got "
            f"{len(sizes)} and {len(features)}."
        )
    layout = []
    for stage, (size, width) in enumerate(zip(sizes, features, strict=True)):
        for conv in range(2 * size):
            layout.append((width, 2 if stage > 0 and conv == 0 else 1))
    return tuple(layout)


def stem_padding(kernel_size: int) -> tuple[tuple[int, int], ...]:
    """PyTorch-style stem padding: ``(k - 1) // 2`` low, ``k // 2`` high."""
    return (((kernel_size - 1) // 2, kernel_size // 2),) * 2


SMALL_INPUT_SIZE = 64
"""Largest image side for which ``small_input_stem=None`` picks the small
stem: MNIST's 28x28, CIFAR's 32x32 and Tiny ImageNet's 64x64 get it,
ImageNet's 224x224 does not."""

SMALL_STEM: Mapping[str, Any] = MappingProxyType(
    {"kernel_size": 3, "strides": 1, "max_pool": False}
)
"""The CIFAR-style stem of a ResNet for small images: a 3x3 convolution
with stride 1 and no max pool (He et al, 2016, section 4.2)."""


def check_small_input_stem(value: object) -> bool | None:
    """Returns ``value`` if it is a bool or ``None``, else raises
    ``TypeError``."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise TypeError(
        "small_input_stem must be True, False or None (choose by input "
        f"size), got {value!r} of type {type(value).__name__}."
    )


def use_small_stem(
    small_input_stem: bool | None, image_size: Sequence[int] | None
) -> bool:
    """Whether a ResNet uses :data:`SMALL_STEM` instead of its stem fields.

    Args:
      small_input_stem: the model's setting; a bool decides.
      image_size: ``(height, width)`` of the inputs, or ``None`` if unknown.

    Returns:
      ``small_input_stem`` if it is a bool; otherwise whether the shorter
      side of ``image_size`` is at most :data:`SMALL_INPUT_SIZE` (``False``
      when the size is unknown).
    """
    if small_input_stem is not None:
        return bool(small_input_stem)
    if image_size is None:
        return False
    return min(image_size) <= SMALL_INPUT_SIZE


def stem_layout(
    small: bool, kernel_size: int, strides: int, max_pool: bool
) -> tuple[int, int, bool]:
    """``(kernel_size, strides, max_pool)`` of the stem that runs.

    :data:`SMALL_STEM`'s if ``small``, else the given ones.
    """
    if small:
        return (
            SMALL_STEM["kernel_size"],
            SMALL_STEM["strides"],
            SMALL_STEM["max_pool"],
        )
    return kernel_size, strides, max_pool


def check_block_rules(
    *,
    kernel_binarizer: object,
    activation_binarizer: object,
    pad_value: object,
    bn_momentum: object,
    bn_epsilon: object,
    sign_product_dtype: jax.typing.DTypeLike | str | None,
    residuals: Residuals,
    conv_impl: ConvImpl,
) -> None:
    """Checks the binarizer, padding and batch-norm settings of a Bi-Real
    block or net.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_sign_product_dtype(sign_product_dtype)
    check_residuals(residuals)
    check_conv_impl(conv_impl)
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("activation_binarizer", activation_binarizer)
    check_pad_value(pad_value, "SAME")
    check_momentum("bn_momentum", bn_momentum)
    check_positive_float("bn_epsilon", bn_epsilon)


def check_mlp(
    *,
    hidden: object,
    num_classes: object,
    binary_activations: object,
    binary_last: object,
    kernel_binarizer: object,
    activation_binarizer: object,
    input_dropout_rate: object,
    dropout_rate: object,
    bn_momentum: object,
    bn_epsilon: object,
    sign_product_dtype: jax.typing.DTypeLike | str | None,
    residuals: Residuals,
) -> tuple[int, ...]:
    """Checks the settings of a ``BinaryMLP``.

    Returns:
      ``hidden`` as a tuple of ints.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_sign_product_dtype(sign_product_dtype)
    check_residuals(residuals)
    hidden = check_widths("hidden", hidden)
    check_positive_int("num_classes", num_classes)
    check_bool("binary_activations", binary_activations)
    check_bool("binary_last", binary_last)
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("activation_binarizer", activation_binarizer)
    check_rate("input_dropout_rate", input_dropout_rate)
    check_rate("dropout_rate", dropout_rate)
    check_momentum("bn_momentum", bn_momentum)
    check_positive_float("bn_epsilon", bn_epsilon)
    return hidden


class CnnLayout(NamedTuple):
    """The layers of a ``BinaryNetCNN``, widths scaled by its multiplier."""

    conv: tuple[int, ...]
    """Output channels of every 3x3 convolution."""
    pool_after: tuple[int, ...]
    """Indices of the convolutions a 2x2/stride-2 max pool follows."""
    dense: tuple[int, ...]
    """Widths of the hidden dense layers (may be empty)."""
    padding: str
    """``'SAME'`` or ``'VALID'``, for every convolution."""


def check_pool_after(value: object, num_convs: int) -> tuple[int, ...]:
    """Returns ``value`` as a tuple of increasing indices in
    ``[0, num_convs)``.

    Raises:
      TypeError: if ``value`` is not a sequence of ints.
      ValueError: for repeated, unsorted or out-of-range indices.
    """
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not all(_is_int(v) for v in value)
    ):
        raise TypeError(
            "pool_after must be a sequence of ints (indices of the "
            f"convolutions a max pool follows), got {value!r} of type "
            f"{type(value).__name__}."
        )
    indices = tuple(int(v) for v in value)
    in_range = all(0 <= i < num_convs for i in indices)
    increasing = all(a < b for a, b in itertools.pairwise(indices))
    if not (in_range and increasing):
        raise ValueError(
            f"pool_after must hold distinct, increasing indices in [0, "
            f"{num_convs}) (one per convolution of conv_features), got "
            f"{tuple(value)!r}."
        )
    return indices


def check_dense_features(value: object) -> tuple[int, ...]:
    """Returns ``value`` as a (possibly empty) tuple of positive ints.

    Raises:
      TypeError: if ``value`` is not a sequence of ints.
      ValueError: if it holds a value below 1.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            "dense_features must be a sequence of positive ints (may be "
            f"empty), got {value!r} of type {type(value).__name__}."
        )
    return check_widths("dense_features", value) if value else ()


def check_cnn_padding(value: object) -> str:
    """Returns ``value`` if it is one of :data:`CNN_PADDINGS`.

    Raises:
      TypeError: if ``value`` is not a string.
      ValueError: for another string.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"padding must be one of {CNN_PADDINGS}, got {value!r} of type "
            f"{type(value).__name__}."
        )
    if value not in CNN_PADDINGS:
        raise ValueError(
            f"padding must be one of {CNN_PADDINGS}, got {value!r}."
        )
    return value


def cnn_layout(
    conv_features: Sequence[int],
    pool_after: Sequence[int],
    dense_features: Sequence[int],
    padding: str,
    width_multiplier: float,
) -> CnnLayout:
    """The :class:`CnnLayout` of checked ``BinaryNetCNN`` settings.

    Every width but the head's becomes :func:`scale_widths`'s
    ``max(1, round(c * width_multiplier))``.
    """
    return CnnLayout(
        conv=scale_widths(conv_features, width_multiplier),
        pool_after=tuple(int(i) for i in pool_after),
        dense=scale_widths(dense_features, width_multiplier),
        padding=str(padding),
    )


def describe_cnn_layout(layout: CnnLayout) -> str:
    """``layout`` in words, for error messages."""
    return (
        f"{len(layout.conv)} 3x3 convolutions with padding="
        f"{layout.padding!r} and {len(layout.pool_after)} 2x2 max pools"
    )


def cnn_min_input_size(layout: CnnLayout) -> int:
    """Smallest image side a ``BinaryNetCNN`` of ``layout`` accepts.

    Going back from a 1-pixel map: a 2x2/stride-2 max pool needs twice its
    output, a ``'VALID'`` 3x3 convolution two pixels more (``'SAME'`` keeps
    the size). BinaryNet's layout needs 8, Larq's MNIST tutorial's 18.
    """
    size = 1
    for i in reversed(range(len(layout.conv))):
        if i in layout.pool_after:
            size *= 2
        if layout.padding == "VALID":
            size += 2
    return size


def cnn_spatial_size(
    layout: CnnLayout, input_size: Sequence[int]
) -> tuple[int, int]:
    """``(height, width)`` of the last feature map of a ``BinaryNetCNN``.

    Args:
      layout: the model's :class:`CnnLayout`.
      input_size: ``(height, width)`` of the images, positive ints.

    Returns:
      The map's size after every convolution (``'VALID'``: 2 pixels less)
      and max pool (half, rounded down).

    Raises:
      ValueError: if the map would vanish, naming the smallest accepted
        input size (:func:`cnn_min_input_size`).
    """
    size = tuple(int(s) for s in input_size)
    minimum = cnn_min_input_size(layout)
    if min(size) < minimum:
        raise ValueError(
            f"input_size must be (height, width), each at least {minimum} "
            f"({describe_cnn_layout(layout)}), got {size!r}."
        )
    out = []
    for side in size:
        for i in range(len(layout.conv)):
            side -= 2 if layout.padding == "VALID" else 0
            side //= 2 if i in layout.pool_after else 1
        out.append(side)
    return out[0], out[1]


def check_cnn(
    *,
    num_classes: object,
    width_multiplier: object,
    conv_features: object,
    pool_after: object,
    dense_features: object,
    padding: object,
    kernel_binarizer: object,
    activation_binarizer: object,
    pad_value: object,
    bn_momentum: object,
    bn_epsilon: object,
    sign_product_dtype: jax.typing.DTypeLike | str | None,
    residuals: Residuals,
    conv_impl: ConvImpl = "auto",
) -> CnnLayout:
    """Checks the settings of a ``BinaryNetCNN``.

    Args:
      num_classes: number of outputs (positive int).
      width_multiplier: scales every width but the head's (finite, > 0).
      conv_features: widths of the 3x3 convolutions (non-empty, positive).
      pool_after: distinct, increasing indices in
        ``[0, len(conv_features))`` of the convolutions a 2x2 max pool
        follows.
      dense_features: widths of the hidden dense layers (positive; may be
        empty).
      padding: ``'SAME'`` or ``'VALID'``.
      kernel_binarizer: a :class:`bnnjax.Binarizer`.
      activation_binarizer: a :class:`bnnjax.Binarizer`.
      pad_value: a finite real number the padding can honour.
      bn_momentum: in ``[0, 1]``.
      bn_epsilon: finite and > 0.
      sign_product_dtype: ``"auto"``, ``None`` or ``jnp.bfloat16``.
      residuals: ``"auto"``, ``"packed"`` or ``"unpacked"``.
      conv_impl: ``"auto"``, ``"xla"`` or ``"patches"``.

    Returns:
      The model's :class:`CnnLayout` (widths scaled by
      ``width_multiplier``).

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_sign_product_dtype(sign_product_dtype)
    check_residuals(residuals)
    check_conv_impl(conv_impl)
    check_positive_int("num_classes", num_classes)
    multiplier = check_positive_float("width_multiplier", width_multiplier)
    conv = check_widths("conv_features", conv_features)
    pools = check_pool_after(pool_after, len(conv))
    dense = check_dense_features(dense_features)
    padding = check_cnn_padding(padding)
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("activation_binarizer", activation_binarizer)
    check_pad_value(pad_value, padding)
    check_momentum("bn_momentum", bn_momentum)
    check_positive_float("bn_epsilon", bn_epsilon)
    return cnn_layout(conv, pools, dense, padding, multiplier)


def check_resnet(
    *,
    stage_sizes: object,
    stage_features: object,
    num_classes: object,
    stem_features: object,
    stem_kernel_size: object,
    stem_strides: object,
    stem_max_pool: object,
    width_multiplier: object,
    small_input_stem: object = None,
    **block_rules: Any,
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Checks the settings of a ``BiRealResNet``.

    Args:
      stage_sizes: basic blocks per stage.
      stage_features: channels of each stage.
      num_classes: number of outputs.
      stem_features: channels of the stem convolution.
      stem_kernel_size: its window.
      stem_strides: its stride.
      stem_max_pool: whether a max pool follows the stem.
      width_multiplier: scales every channel count (finite, > 0).
      small_input_stem: ``True``, ``False`` or ``None``.
      **block_rules: the settings of :func:`check_block_rules`.

    Returns:
      ``(stem_features, layout)`` scaled by ``width_multiplier``, as
      :func:`bireal_widths` returns them.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    bireal_layout(stage_sizes, stage_features)
    check_positive_int("num_classes", num_classes)
    check_positive_int("stem_features", stem_features)
    check_positive_int("stem_kernel_size", stem_kernel_size)
    check_positive_int("stem_strides", stem_strides)
    check_bool("stem_max_pool", stem_max_pool)
    multiplier = check_positive_float("width_multiplier", width_multiplier)
    check_small_input_stem(small_input_stem)
    check_block_rules(**block_rules)
    return bireal_widths(
        stage_sizes,
        stage_features,
        int(cast(int, stem_features)),
        multiplier,
    )


def reactnet_layout(
    stage_sizes: object, stem_features: int, width_multiplier: float
) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    """The stem's channels and ``(in, out, strides)`` of every ReActNet
    block.

    The stem has ``max(1, round(stem_features * width_multiplier))``
    channels; the first block of every stage doubles the channels (by
    concatenation), and has stride 2 in every stage but the first.

    Raises:
      TypeError, ValueError: for an invalid ``stage_sizes``.
    """
    sizes = check_widths("stage_sizes", stage_sizes)
    (channels,) = scale_widths((stem_features,), width_multiplier)
    stem = channels
    layout = []
    for stage, size in enumerate(sizes):
        for block in range(size):
            out = 2 * channels if block == 0 else channels
            strides = 2 if stage > 0 and block == 0 else 1
            layout.append((channels, out, strides))
            channels = out
    return stem, tuple(layout)


def check_reactnet_rules(
    *,
    kernel_binarizer: object,
    activation_binarizer: object,
    pad_value: object,
    bn_momentum: object,
    bn_epsilon: object,
    residuals: Residuals,
    conv_impl: ConvImpl,
) -> None:
    """Checks the binarizer, padding and batch-norm settings of a ReActNet
    block or net.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_residuals(residuals)
    check_conv_impl(conv_impl)
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("activation_binarizer", activation_binarizer)
    check_pad_value(pad_value, "SAME")
    check_momentum("bn_momentum", bn_momentum)
    check_positive_float("bn_epsilon", bn_epsilon)


def check_reactnet(
    *,
    stage_sizes: object,
    stem_features: object,
    stem_strides: object,
    num_classes: object,
    width_multiplier: object,
    **rules: Any,
) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    """Checks the settings of a ``ReActNet``.

    Args:
      stage_sizes: blocks per stage.
      stem_features: channels of the stem convolution (before scaling).
      stem_strides: its stride.
      num_classes: number of outputs.
      width_multiplier: scales the stem's channels (finite, > 0).
      **rules: the settings of :func:`check_reactnet_rules`.

    Returns:
      ``(stem_features, layout)`` of :func:`reactnet_layout`.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_widths("stage_sizes", stage_sizes)
    stem = check_positive_int("stem_features", stem_features)
    check_positive_int("stem_strides", stem_strides)
    check_positive_int("num_classes", num_classes)
    multiplier = check_positive_float("width_multiplier", width_multiplier)
    check_reactnet_rules(**rules)
    return reactnet_layout(stage_sizes, stem, multiplier)


def check_image_batch(
    model: str,
    shape: Sequence[int],
    *,
    min_size: int = 1,
    reason: str | None = None,
) -> None:
    """Checks ``(batch, height, width, channels)`` inputs.

    Args:
      model: the model's name, for the messages.
      shape: the inputs' shape.
      min_size: smallest accepted height and width.
      reason: why the model needs ``min_size``, for the message.

    Raises:
      ValueError: for another rank, or a spatial size below ``min_size``.
    """
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            f"{model} expects images of shape (batch, height, width, "
            f"channels), got inputs of shape {shape}."
        )
    if min(shape[1:3]) < min_size:
        why = f" ({reason})" if reason else ""
        raise ValueError(
            f"{model} needs images of at least {min_size}x{min_size} "
            f"pixels{why}, got inputs of shape {shape}."
        )


def flatten_batch(model: str, x: jax.typing.ArrayLike) -> jax.Array:
    """Flattens ``(batch, ...)`` inputs to ``(batch, features)``.

    Raises:
      ValueError: for inputs without a batch axis and a feature axis.
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{model} expects inputs of shape (batch, features) or "
            f"(batch, height, width, channels), got inputs of shape "
            f"{x.shape}."
        )
    return jnp.reshape(x, (x.shape[0], -1))

"""Validation, defaults and layouts shared by the linen and nnx models.

Pure Python and ``jax.numpy`` only: no Module classes, no state. Each
model's settings are checked by one function here (:func:`check_mlp`,
:func:`check_cnn`, :func:`check_block_rules`, :func:`check_resnet`),
called from the linen model's ``__post_init__`` and the nnx model's
constructor, so the two APIs accept the same settings, raise the same
errors in the same order, and build the same layer lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

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
from bnnjax.nn._precision import check_sign_product_dtype

__all__ = [
    "APPROX_SIGN_ACTIVATION",
    "BINARYNET_CNN_CONV",
    "BINARYNET_CNN_DENSE",
    "RESNET18",
    "RESNET20",
    "SIGN_ACTIVATION",
    "bireal_layout",
    "check_block_rules",
    "check_bool",
    "check_cnn",
    "check_image_batch",
    "check_mlp",
    "check_momentum",
    "check_positive_float",
    "check_positive_int",
    "check_rate",
    "check_resnet",
    "check_train",
    "check_widths",
    "flatten_batch",
    "scale_widths",
    "stem_padding",
]

SIGN_ACTIVATION = Binarizer(surrogate="clipped_ste", scale=None)
"""BinaryNet's activation: ``sign(x)`` with the hardtanh (clipped) STE."""

APPROX_SIGN_ACTIVATION = Binarizer(surrogate="approx_sign", scale=None)
"""Bi-Real Net's activation: ``sign(x)`` with the ApproxSign gradient."""

BINARYNET_CNN_CONV = (128, 128, 256, 256, 512, 512)
"""BinaryNet's CIFAR-10 convolutions; a 2x2 max pool follows every second."""

BINARYNET_CNN_DENSE = (1024, 1024)
"""BinaryNet's CIFAR-10 hidden dense layers."""

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
    """``round(w * multiplier)`` for each width, at least 1."""
    return tuple(max(1, round(w * multiplier)) for w in widths)


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


def check_block_rules(
    *,
    kernel_binarizer: object,
    activation_binarizer: object,
    pad_value: object,
    bn_momentum: object,
    bn_epsilon: object,
    sign_product_dtype: jax.typing.DTypeLike | str | None,
) -> None:
    """Checks the binarizer, padding and batch-norm settings of a Bi-Real
    block or net.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_sign_product_dtype(sign_product_dtype)
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
) -> tuple[int, ...]:
    """Checks the settings of a ``BinaryMLP``.

    Returns:
      ``hidden`` as a tuple of ints.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_sign_product_dtype(sign_product_dtype)
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


def check_cnn(
    *,
    num_classes: object,
    width_multiplier: object,
    kernel_binarizer: object,
    activation_binarizer: object,
    pad_value: object,
    bn_momentum: object,
    bn_epsilon: object,
    sign_product_dtype: jax.typing.DTypeLike | str | None,
) -> float:
    """Checks the settings of a ``BinaryNetCNN``.

    Returns:
      ``width_multiplier`` as a float.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    check_sign_product_dtype(sign_product_dtype)
    check_positive_int("num_classes", num_classes)
    multiplier = check_positive_float("width_multiplier", width_multiplier)
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("activation_binarizer", activation_binarizer)
    check_pad_value(pad_value, "SAME")
    check_momentum("bn_momentum", bn_momentum)
    check_positive_float("bn_epsilon", bn_epsilon)
    return multiplier


def check_resnet(
    *,
    stage_sizes: object,
    stage_features: object,
    num_classes: object,
    stem_features: object,
    stem_kernel_size: object,
    stem_strides: object,
    stem_max_pool: object,
    **block_rules: Any,
) -> tuple[tuple[int, int], ...]:
    """Checks the settings of a ``BiRealResNet``.

    Args:
      stage_sizes: basic blocks per stage.
      stage_features: channels of each stage.
      num_classes: number of outputs.
      stem_features: channels of the stem convolution.
      stem_kernel_size: its window.
      stem_strides: its stride.
      stem_max_pool: whether a max pool follows the stem.
      **block_rules: the settings of :func:`check_block_rules`.

    Returns:
      The ``(features, strides)`` layout of :func:`bireal_layout`.

    Raises:
      TypeError, ValueError: naming the invalid setting.
    """
    layout = bireal_layout(stage_sizes, stage_features)
    check_positive_int("num_classes", num_classes)
    check_positive_int("stem_features", stem_features)
    check_positive_int("stem_kernel_size", stem_kernel_size)
    check_positive_int("stem_strides", stem_strides)
    check_bool("stem_max_pool", stem_max_pool)
    check_block_rules(**block_rules)
    return layout


def check_image_batch(
    model: str, shape: Sequence[int], *, min_size: int = 1
) -> None:
    """Checks ``(batch, height, width, channels)`` inputs.

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
        raise ValueError(
            f"{model} needs images of at least {min_size}x{min_size} "
            f"pixels, got inputs of shape {shape}."
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

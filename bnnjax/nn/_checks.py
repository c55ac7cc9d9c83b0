"""Argument checks of the binary layers, raised where the user passes them.

Each check names the argument, the value received and what is allowed, and
returns the value in canonical form (``canonicalize_*``) or unchanged
(``check_*``). :mod:`bnnjax.nn.linen` calls them at construction or first
call, :mod:`bnnjax.nn.nnx` in the constructors, and
:mod:`bnnjax.nn.functional` on every call, so all three raise the same
errors. Pure Python: no arrays are touched, only shapes and settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from bnnjax._validate import is_int as _is_int
from bnnjax.binarize import Binarizer, Surrogate
from bnnjax.scale import Scale

PaddingLike = str | int | Sequence[int | tuple[int, int]]
"""What the layers accept as ``padding``, as ``flax.linen.Conv``."""

CanonicalPadding = str | tuple[tuple[int, int], ...]
"""An upper-case padding name or one ``(low, high)`` pair per dimension."""

_CONSTANT_PADDINGS = ("SAME", "SAME_LOWER", "VALID", "CAUSAL")
MODE_PADDINGS = {"CIRCULAR": "wrap", "REFLECT": "reflect"}
"""Paddings that copy input values, with their ``jnp.pad`` mode."""
_PADDING_NAMES = _CONSTANT_PADDINGS + tuple(MODE_PADDINGS)

__all__ = [
    "MODE_PADDINGS",
    "CanonicalPadding",
    "PaddingLike",
    "canonicalize_kernel_size",
    "canonicalize_padding",
    "canonicalize_window",
    "check_bias",
    "check_binarizer",
    "check_binarizer_key",
    "check_conv_inputs",
    "check_conv_rank",
    "check_dense_inputs",
    "check_feature_groups",
    "check_finite_float",
    "check_pad_value",
    "check_positive_int",
    "conv_kernel_shape",
]


def check_positive_int(name: str, value: object) -> int:
    """Returns ``value`` as an int, or raises unless it is an int >= 1.

    Args:
      name: argument name used in the error message.
      value: the value to check.

    Raises:
      TypeError: if ``value`` is not an int (bools are rejected).
      ValueError: if ``value < 1``.
    """
    if not _is_int(value):
        raise TypeError(
            f"{name} must be a positive int, got {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def check_finite_float(name: str, value: object) -> float:
    """Returns ``value`` as a float, or raises unless a finite real number.

    Raises:
      TypeError: if ``value`` is not a real number (bools are rejected).
      ValueError: if it is NaN or infinite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return float(value)


def check_binarizer(
    name: str, value: object, *, optional: bool = False
) -> Binarizer | None:
    """Returns ``value`` if it is a :class:`bnnjax.Binarizer`, else raises.

    Args:
      name: argument name used in the error message (``kernel_binarizer``).
      value: the value to check.
      optional: whether ``None`` is allowed.

    Raises:
      TypeError: naming the value received and how to wrap it, e.g. a
        surrogate name or :class:`bnnjax.Surrogate` goes in
        ``bnnjax.Binarizer(surrogate=...)``.
    """
    if isinstance(value, Binarizer) or (optional and value is None):
        return value
    allowed = "a bnnjax.Binarizer" + (" or None" if optional else "")
    if isinstance(value, (str, Surrogate)):
        hint = (
            f" Wrap it: {name}=bnnjax.Binarizer(surrogate={value!r}, "
            "scale=..., axis=...)."
        )
    elif isinstance(value, Scale):
        hint = f" Wrap it: {name}=bnnjax.Binarizer(scale={value!r})."
    else:
        hint = ""
    raise TypeError(
        f"{name} must be {allowed}, got {value!r} of type "
        f"{type(value).__name__}.{hint}"
    )


def canonicalize_kernel_size(
    kernel_size: int | Sequence[int],
) -> tuple[int, ...]:
    """Returns ``kernel_size`` as a tuple of positive ints.

    As in flax, an int ``k`` means a one-dimensional window ``(k,)``; write
    ``(k, k)`` for a 2D convolution.

    Raises:
      TypeError: if ``kernel_size`` is not an int or a sequence of ints.
      ValueError: if it is empty or holds a value below 1.
    """
    if _is_int(kernel_size):
        return (check_positive_int("kernel_size", kernel_size),)
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        if not kernel_size:
            raise ValueError(
                "kernel_size must be an int or a non-empty sequence of "
                "positive ints, got an empty sequence."
            )
        if all(_is_int(k) for k in kernel_size):
            if any(k < 1 for k in kernel_size):
                raise ValueError(
                    "kernel_size must hold positive ints, got "
                    f"{tuple(kernel_size)!r}."
                )
            return tuple(int(k) for k in kernel_size)
    raise TypeError(
        "kernel_size must be an int or a sequence of positive ints, got "
        f"{kernel_size!r}."
    )


def canonicalize_window(
    name: str, value: int | Sequence[int] | None, rank: int
) -> tuple[int, ...]:
    """Returns ``strides`` or ``kernel_dilation`` as ``rank`` positive ints.

    ``None`` means 1 (flax's convention) and an int applies to every
    spatial dimension.

    Args:
      name: argument name used in error messages.
      value: ``None``, an int or a sequence of ``rank`` ints.
      rank: number of spatial dimensions (``len(kernel_size)``).

    Raises:
      TypeError: for other types.
      ValueError: for a wrong length or a value below 1.
    """
    if value is None:
        return (1,) * rank
    if _is_int(value):
        return (check_positive_int(name, value),) * rank
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(_is_int(v) for v in value)
    ):
        if len(value) != rank:
            raise ValueError(
                f"{name}={tuple(value)!r} has {len(value)} entries, but "
                f"kernel_size has {rank} spatial dimensions; pass an int or "
                f"{rank} ints."
            )
        if any(v < 1 for v in value):
            raise ValueError(
                f"{name} must hold positive ints, got {tuple(value)!r}."
            )
        return tuple(int(v) for v in value)
    raise TypeError(
        f"{name} must be None, an int or a sequence of {rank} ints, got "
        f"{value!r}."
    )


def canonicalize_padding(padding: PaddingLike, rank: int) -> CanonicalPadding:
    """Returns flax-style ``padding`` as a name or ``rank`` (low, high) pairs.

    Accepts what ``flax.linen.Conv`` accepts: ``'SAME'``, ``'SAME_LOWER'``,
    ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'`` (1D only), an
    int (the same on both sides of every spatial dimension), or a sequence
    of ``rank`` entries, each an int or a ``(low, high)`` pair.

    Args:
      padding: the padding specification.
      rank: number of spatial dimensions.

    Returns:
      The upper-cased name, or a tuple of ``rank`` ``(low, high)`` int pairs.

    Raises:
      ValueError: for an unknown name, a wrong length, or ``'CAUSAL'`` with
        more than one spatial dimension.
      TypeError: for other types.
    """
    if isinstance(padding, str):
        name = padding.upper()
        if name not in _PADDING_NAMES:
            raise ValueError(
                f"padding={padding!r} is not a known padding; expected one "
                f"of {list(_PADDING_NAMES)}, an int, or a sequence of "
                f"{rank} ints or (low, high) pairs."
            )
        if name == "CAUSAL" and rank != 1:
            raise ValueError(
                "padding='CAUSAL' is only defined for 1D convolutions, but "
                f"kernel_size has {rank} spatial dimensions."
            )
        return name
    if _is_int(padding):
        return ((int(padding), int(padding)),) * rank
    if isinstance(padding, Sequence):
        pairs = []
        for p in padding:
            if _is_int(p):
                pairs.append((int(p), int(p)))
            elif (
                isinstance(p, Sequence)
                and len(p) == 2
                and all(_is_int(q) for q in p)
            ):
                pairs.append((int(p[0]), int(p[1])))
            else:
                raise TypeError(
                    f"padding={padding!r}: each entry must be an int or a "
                    f"(low, high) pair of ints, got {p!r}."
                )
        if len(pairs) != rank:
            raise ValueError(
                f"padding={padding!r} has {len(pairs)} entries, but "
                f"kernel_size has {rank} spatial dimensions."
            )
        return tuple(pairs)
    raise TypeError(
        f"padding must be a str, an int or a sequence of ints or (low, high) "
        f"pairs, got {padding!r}."
    )


def check_pad_value(pad_value: object, padding: CanonicalPadding) -> float:
    """Returns ``pad_value`` as a float if ``padding`` can honour it.

    ``'CIRCULAR'`` and ``'REFLECT'`` pad with input values, not a constant,
    so they only accept the default ``pad_value=0.0``.

    Raises:
      TypeError: if ``pad_value`` is not a real number.
      ValueError: if it is not finite, or is nonzero with ``'CIRCULAR'`` or
        ``'REFLECT'`` padding.
    """
    if isinstance(pad_value, (bool, np.bool_)) or not isinstance(
        pad_value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"pad_value must be a real number, got {pad_value!r} of type "
            f"{type(pad_value).__name__}."
        )
    value = float(pad_value)
    if not math.isfinite(value):
        raise ValueError(f"pad_value must be finite, got {pad_value!r}.")
    if padding in MODE_PADDINGS and value != 0.0:
        raise ValueError(
            f"pad_value={pad_value!r} cannot be honoured with "
            f"padding={padding!r}, which pads with input values; use "
            "padding='SAME', 'SAME_LOWER', 'CAUSAL' or explicit pads, or "
            "pad_value=0.0."
        )
    return value


def check_feature_groups(
    feature_group_count: int,
    out_features: int,
    in_features: int | None = None,
    *,
    out_name: str = "features",
) -> int:
    """Checks that ``feature_group_count`` divides the feature counts.

    Args:
      feature_group_count: number of groups (``in_features`` for a
        depthwise convolution).
      out_features: number of output features.
      in_features: number of input features, when known.
      out_name: name of the output-feature argument in error messages
        (``features`` in linen, ``out_features`` in nnx).

    Returns:
      ``feature_group_count`` as an int.

    Raises:
      TypeError, ValueError: naming the counts that are not divisible.
    """
    groups = check_positive_int("feature_group_count", feature_group_count)
    for name, count in (("in_features", in_features), (out_name, out_features)):
        if count is not None and count % groups:
            raise ValueError(
                f"feature_group_count={groups} must divide {name}={count}; "
                f"use a divisor of {count} (feature_group_count={count} "
                "with features a multiple of it is a depthwise convolution)."
            )
    return groups


def conv_kernel_shape(
    kernel_size: Sequence[int],
    in_features: int,
    out_features: int,
    feature_group_count: int = 1,
    *,
    out_name: str = "features",
) -> tuple[int, ...]:
    """Shape of a convolution kernel: ``(*kernel_size, in / groups, out)``.

    Raises:
      TypeError, ValueError: if ``feature_group_count`` does not divide
        both feature counts.
    """
    groups = check_feature_groups(
        feature_group_count, out_features, in_features, out_name=out_name
    )
    return (*kernel_size, in_features // groups, out_features)


def check_dense_inputs(
    inputs_shape: Sequence[int], kernel_shape: Sequence[int]
) -> None:
    """Checks a dense kernel's rank and the inputs' feature count.

    Raises:
      ValueError: for a kernel that is not ``(in_features, features)`` or
        inputs whose last axis is not ``in_features``.
    """
    if len(kernel_shape) != 2:
        raise ValueError(
            "A dense latent_kernel must have shape (in_features, features), "
            f"got shape {tuple(kernel_shape)}."
        )
    if len(inputs_shape) < 1 or inputs_shape[-1] != kernel_shape[0]:
        raise ValueError(
            f"inputs of shape {tuple(inputs_shape)} do not match a "
            f"latent_kernel of shape {tuple(kernel_shape)}: expected inputs "
            f"of shape (..., {kernel_shape[0]})."
        )


def check_conv_rank(
    inputs_shape: Sequence[int], kernel_size: Sequence[int]
) -> None:
    """Checks that inputs have the spatial axes ``kernel_size`` needs.

    Raises:
      ValueError: if ``len(inputs_shape) < len(kernel_size) + 1``.
    """
    kernel_size = tuple(kernel_size)
    rank = len(kernel_size)
    if len(inputs_shape) < rank + 1:
        raise ValueError(
            f"kernel_size={kernel_size} has {rank} spatial dimensions, so "
            f"inputs need shape ([batch...,] {', '.join(['spatial'] * rank)}"
            f", features) of rank >= {rank + 1}; got inputs of shape "
            f"{tuple(inputs_shape)}. An int kernel_size k means (k,), a 1D "
            "convolution; write (k, k) for 2D."
        )


def check_conv_inputs(
    inputs_shape: Sequence[int],
    kernel_shape: Sequence[int],
    feature_group_count: int,
) -> None:
    """Checks a convolution kernel against the inputs.

    Args:
      inputs_shape: ``(*batch, *spatial, in_features)``.
      kernel_shape: ``(*kernel_size, in_features / groups, features)``.
      feature_group_count: number of feature groups.

    Raises:
      ValueError: for a kernel of rank below 3, inputs of too low a rank
        for the kernel's spatial dimensions, or mismatched feature counts.
    """
    if len(kernel_shape) < 3:
        raise ValueError(
            "A convolution latent_kernel must have shape (*kernel_size, "
            "in_features // feature_group_count, features) with at least "
            f"one spatial dimension, got shape {tuple(kernel_shape)}."
        )
    check_conv_rank(inputs_shape, kernel_shape[:-2])
    groups = check_feature_groups(
        feature_group_count, kernel_shape[-1], inputs_shape[-1]
    )
    if kernel_shape[-2] * groups != inputs_shape[-1]:
        raise ValueError(
            f"inputs of shape {tuple(inputs_shape)} have "
            f"{inputs_shape[-1]} features, but a latent_kernel of shape "
            f"{tuple(kernel_shape)} with feature_group_count={groups} "
            f"expects {kernel_shape[-2] * groups}."
        )


def check_bias(bias_shape: Sequence[int] | None, features: int) -> None:
    """Checks that a bias, if any, has shape ``(features,)``.

    Raises:
      ValueError: naming the expected and the received shape.
    """
    if bias_shape is not None and tuple(bias_shape) != (features,):
        raise ValueError(
            f"bias must have shape ({features},) to match the kernel's "
            f"features, got shape {tuple(bias_shape)}."
        )


def check_binarizer_key(
    name: str, binarizer: Binarizer | None, key: jax.Array | None
) -> jax.Array | None:
    """Returns ``key``, or raises if a stochastic ``binarizer`` lacks one.

    Args:
      name: argument name of the binarizer (``kernel_binarizer``); the key
        argument is named after it (``kernel_key``).
      binarizer: the binarizer, or ``None``.
      key: the PRNG key passed with it, or ``None``.

    Raises:
      ValueError: if ``binarizer`` is stochastic and ``key`` is ``None``.
    """
    if binarizer is not None and binarizer.stochastic and key is None:
        prefix = name.removesuffix("_binarizer")
        raise ValueError(
            f"{name} uses the stochastic surrogate "
            f"{type(binarizer.surrogate).__name__}, which draws random "
            f"signs: pass {prefix}_key=jax.random.key(...)."
        )
    return key

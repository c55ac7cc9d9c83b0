"""Pure functions shared by the linen and nnx binary layers.

The layers in :mod:`bnnjax.nn.linen` and :mod:`bnnjax.nn.nnx` only allocate
parameters and call :func:`binary_dense` or :func:`binary_conv`; a model
converter can call the same functions on existing parameters. This module
holds no Module classes and keeps no state.

Order of operations in both layers (``x`` inputs, ``W`` latent kernel)::

    x_b = binarize_in(x)                    # skipped when input_binarizer=None
    S, alpha = sign(W), scale(W)            # binarize_k(W) = alpha * S
    x_b, S, alpha, b = cast to the computation dtype
    y   = (x_b @ S) * alpha + b             # dense
    y   = conv_valid(pad(x_b, pad_value), S) * alpha + b    # convolution

Each tensor is binarized in its own dtype (statistics accumulate in at least
float32) and the result is cast to the computation dtype, which follows
flax: ``dtype`` if given, else the promoted dtype of the inputs and
parameters (at least float32 for integer inputs).

The kernel scale ``alpha`` (one value per output feature, or per tensor)
multiplies the product's output rather than the kernel. Both orders are
the same function, with the same gradients up to rounding; this one
computes the product of the signs exactly as packed 1-bit inference
(``bnnjax.export``) does, saves an elementwise pass over the kernel, and
keeps the product of ``+-1`` inputs and ``+-1`` signs a sum of integers. A
scale laid out along other kernel axes is folded into the kernel,
``x_b @ (alpha * S)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnnjax._validate import is_int as _is_int
from bnnjax.binarize import Binarizer, Surrogate, _forward_is_sign
from bnnjax.scale import NoScale, Scale

LATENT_KERNEL = "latent_kernel"
"""Name of the real-valued latent kernel in linen parameter trees."""

DEFAULT_KERNEL_BINARIZER = Binarizer(axis=-1)
"""The layers' default kernel rule: the founding method per output channel.

Scaled sigmoid surrogate and mean-absolute-deviation scale, one ``alpha``
per output feature (the last kernel axis).
"""

PaddingLike = str | int | Sequence[int | tuple[int, int]]
CanonicalPadding = str | tuple[tuple[int, int], ...]

_CONSTANT_PADDINGS = ("SAME", "SAME_LOWER", "VALID", "CAUSAL")
_MODE_PADDINGS = {"CIRCULAR": "wrap", "REFLECT": "reflect"}
_PADDING_NAMES = _CONSTANT_PADDINGS + tuple(_MODE_PADDINGS)

__all__ = [
    "DEFAULT_KERNEL_BINARIZER",
    "LATENT_KERNEL",
    "binary_conv",
    "binary_dense",
    "canonicalize_kernel_size",
    "canonicalize_padding",
    "canonicalize_window",
    "check_binarizer",
    "check_conv_inputs",
    "check_conv_rank",
    "check_dense_inputs",
    "check_feature_groups",
    "check_pad_value",
    "check_positive_int",
    "compute_dtype",
    "conv_kernel_shape",
    "explicit_padding",
    "pad_inputs",
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


def check_pad_value(pad_value: float, padding: CanonicalPadding) -> float:
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
    if padding in _MODE_PADDINGS and value != 0.0:
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


def compute_dtype(
    *args: jax.typing.ArrayLike | None,
    dtype: jax.typing.DTypeLike | None = None,
) -> jnp.dtype:
    """The computation dtype, by flax's rule.

    ``dtype`` if given, else ``jnp.result_type`` of the non-None ``args``,
    promoted to at least float32 if that is not inexact (as
    ``flax.linen.dtypes.canonicalize_dtype``).
    """
    if dtype is None:
        dtype = jnp.result_type(*(a for a in args if a is not None))
        if not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(jnp.float32, dtype)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}.")
    return dtype


def explicit_padding(
    padding: CanonicalPadding,
    spatial_shape: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    kernel_dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Resolves a canonical padding into explicit ``(low, high)`` pairs.

    ``'SAME'``/``'SAME_LOWER'``/``'VALID'`` give the pads
    ``lax.conv_general_dilated`` would use; ``'CAUSAL'`` pads
    ``dilation * (k - 1)`` on the left; ``'CIRCULAR'``/``'REFLECT'`` use
    flax's ``((k_d - 1) // 2, k_d // 2)`` with ``k_d`` the dilated kernel
    size.

    Args:
      padding: output of :func:`canonicalize_padding`.
      spatial_shape: spatial shape of the inputs.
      kernel_size: spatial shape of the kernel.
      strides: window strides.
      kernel_dilation: kernel dilation.

    Returns:
      One ``(low, high)`` pair per spatial dimension.
    """
    if not isinstance(padding, str):
        return tuple(padding)
    dilated = tuple(
        (k - 1) * d + 1
        for k, d in zip(kernel_size, kernel_dilation, strict=True)
    )
    if padding in ("SAME", "SAME_LOWER", "VALID"):
        return tuple(
            tuple(p)
            for p in lax.padtype_to_pads(
                spatial_shape, dilated, strides, padding
            )
        )
    if padding == "CAUSAL":
        return ((dilated[0] - 1, 0),)
    return tuple(((k - 1) // 2, k // 2) for k in dilated)


def pad_inputs(
    inputs: jax.Array,
    padding: CanonicalPadding,
    pads: Sequence[tuple[int, int]],
    pad_value: float = 0.0,
) -> jax.Array:
    """Pads the spatial axes of ``(batch, *spatial, features)`` inputs.

    Constant paddings fill with ``pad_value`` (negative pads crop, as in
    ``lax.conv_general_dilated``); ``'CIRCULAR'`` wraps and ``'REFLECT'``
    reflects.

    Args:
      inputs: array with one batch axis and one feature axis.
      padding: output of :func:`canonicalize_padding`.
      pads: output of :func:`explicit_padding`.
      pad_value: the constant for constant paddings.

    Returns:
      The padded array, in ``inputs``' dtype.
    """
    if all(p == (0, 0) for p in pads):
        return inputs
    if isinstance(padding, str) and padding in _MODE_PADDINGS:
        widths = [(0, 0), *pads, (0, 0)]
        return jnp.pad(inputs, widths, mode=_MODE_PADDINGS[padding])
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
    return lax.pad(inputs, jnp.asarray(pad_value, inputs.dtype), config)


def _conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    # Channels-last inputs/outputs and (*spatial, in, out) kernels, as flax.
    lhs = (0, ndim - 1, *range(1, ndim - 1))
    rhs = (ndim - 1, ndim - 2, *range(ndim - 2))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _key_for(
    name: str, binarizer: Binarizer | None, key: jax.Array | None
) -> jax.Array | None:
    if binarizer is not None and binarizer.stochastic and key is None:
        prefix = name.removesuffix("_binarizer")
        raise ValueError(
            f"{name} uses the stochastic surrogate "
            f"{type(binarizer.surrogate).__name__}, which draws random "
            f"signs: pass {prefix}_key=jax.random.key(...)."
        )
    return key


def _binarize_operands(
    inputs: jax.Array,
    latent_kernel: jax.Array,
    bias: jax.Array | None,
    *,
    kernel_binarizer: Binarizer,
    input_binarizer: Binarizer | None,
    progress: jax.typing.ArrayLike | None,
    kernel_key: jax.Array | None,
    input_key: jax.Array | None,
    dtype: jax.typing.DTypeLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """Binarizes inputs and kernel, then casts them to one dtype.

    Returns ``(x, kernel, bias, out_scale)``. When the kernel's scale is one
    value per output feature (the last kernel axis) or per tensor, the
    kernel is returned as its signs and ``out_scale`` is the scale as a
    ``(features,)`` vector (or ``None`` without a scale), to multiply the
    product's output: ``(x @ sign(W)) * alpha``, the same function as
    ``x @ (alpha * sign(W))``, with the scale applied where packed 1-bit
    inference applies it. Any other scale layout is folded into the kernel
    and ``out_scale`` is ``None``.
    """
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("input_binarizer", input_binarizer, optional=True)
    kernel_key = _key_for("kernel_binarizer", kernel_binarizer, kernel_key)
    input_key = _key_for("input_binarizer", input_binarizer, input_key)
    dtype = compute_dtype(inputs, latent_kernel, bias, dtype=dtype)
    x = inputs
    if input_binarizer is not None:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(dtype)
        x = input_binarizer(x, progress=progress, key=input_key)
    kernel, alpha = kernel_binarizer.signs_and_scale(
        latent_kernel, progress=progress, key=kernel_key
    )
    out_scale = None
    if alpha is not None:
        if all(d == 1 for d in alpha.shape[:-1]):
            out_scale = jnp.reshape(alpha, (-1,)).astype(dtype)
        else:
            kernel = alpha * kernel
    if bias is not None:
        bias = bias.astype(dtype)
    return x.astype(dtype), kernel.astype(dtype), bias, out_scale


def _scale_outputs(y: jax.Array, out_scale: jax.Array | None) -> jax.Array:
    """Multiplies the last axis of ``y`` by a per-feature (or scalar) scale."""
    if out_scale is None:
        return y
    return y * jnp.reshape(out_scale, (1,) * (y.ndim - 1) + (-1,))


_SIGN_PRODUCT_DTYPES = (jnp.dtype(jnp.bfloat16),)


AUTO = "auto"
# Measured with jitted value-and-grad timings of binary_dense with sign
# inputs on one pinned core of an AVX-512 BF16 CPU (jax 0.10.2,
# 2026-11-26; shapes 1-256 rows, 10-2048 features): a bfloat16 dense
# product of signs is 1.06-1.10x faster per training step from 64 rows
# and 128 features up (1.5x for inference), but slower below (the casts
# dominate: 0.86x at 8 rows, 0.96x at 10 features); bfloat16
# convolutions were no faster than float32 at any size tried.
_AUTO_MIN_ROWS = 64
_AUTO_MIN_FEATURES = 128
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def _cpuinfo_has_bfloat16(lines: Iterable[str]) -> bool:
    """Whether the first ``flags`` line of ``/proc/cpuinfo`` names a
    bfloat16 dot-product instruction set."""
    for line in lines:
        if line.startswith("flags"):
            return bool(set(line.partition(":")[2].split()) & _BF16_CPU_FLAGS)
    return False


@functools.cache
def _cpu_multiplies_bfloat16() -> bool:
    """Whether this x86 CPU has bfloat16 dot-product instructions."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return _cpuinfo_has_bfloat16(f)
    except OSError:  # not Linux
        return False


def bfloat16_dense_is_faster(rows: int, features: int) -> bool:
    """Whether ``sign_product_dtype="auto"`` picks bfloat16 for a dense
    product of ``rows`` input rows and ``features`` outputs.

    True on the CPU backend of an x86 CPU with bfloat16 dot instructions
    (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``) for products of
    at least 64 rows and 128 features, where it was measured faster.
    False elsewhere, including GPUs and TPUs, where the gain has not been
    measured yet (pass ``sign_product_dtype=jnp.bfloat16`` to opt in).
    """
    return (
        rows >= _AUTO_MIN_ROWS
        and features >= _AUTO_MIN_FEATURES
        and jax.default_backend() == "cpu"
        and _cpu_multiplies_bfloat16()
    )


def check_sign_product_dtype(
    value: jax.typing.DTypeLike | str | None,
) -> jax.typing.DTypeLike | str | None:
    """Returns ``value`` if it is ``None``, ``"auto"`` or bfloat16."""
    if value is None or (isinstance(value, str) and value == AUTO):
        return value
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype not in _SIGN_PRODUCT_DTYPES:
        shown = repr(value) if dtype is None else dtype.name
        raise ValueError(
            f"sign_product_dtype={shown}; expected None, 'auto' or "
            "jnp.bfloat16 (int8 is not offered: a NaN sign would become a "
            "finite integer and hide a diverged run)."
        )
    return value


def _sign_product_dtype(
    requested: jax.typing.DTypeLike | str | None,
    input_binarizer: Binarizer | None,
    kernel_binarizer: Binarizer,
    compute: jnp.dtype,
    *,
    contraction: int,
    pad_value: float = 0.0,
    auto_is_faster: bool = False,
) -> jnp.dtype | None:
    """The operand dtype of an exact low-precision product, or None.

    ``"auto"`` is bfloat16 where the product is exact in it and
    ``auto_is_faster``, else None; an explicit bfloat16 raises where the
    product would not be exact.
    """
    if requested is None:
        return None
    check_sign_product_dtype(requested)
    auto = isinstance(requested, str)
    if auto and not auto_is_faster:
        return None
    requested = jnp.dtype(jnp.bfloat16 if auto else requested)
    problems = []
    if input_binarizer is None:
        problems.append("the inputs are real (input_binarizer=None)")
    else:
        if not isinstance(input_binarizer.scale, (type(None), NoScale)):
            problems.append("the input binarizer has a scale")
        if not _forward_is_sign(input_binarizer.surrogate):
            name = type(input_binarizer.surrogate).__name__
            problems.append(
                f"the input surrogate {name} overrides forward (its values "
                "need not be +-1)"
            )
    if not _forward_is_sign(kernel_binarizer.surrogate):
        name = type(kernel_binarizer.surrogate).__name__
        problems.append(
            f"the kernel surrogate {name} overrides forward (its values "
            "need not be +-1)"
        )
    if pad_value not in (-1.0, 0.0, 1.0):
        problems.append(f"pad_value={pad_value} is not in {{-1, 0, 1}}")
    if compute != jnp.dtype(jnp.float32):
        problems.append(f"the computation dtype is {compute}, not float32")
    if contraction > 2**24:
        problems.append(
            f"the contraction has {contraction} terms, more than float32 "
            "sums exactly (2**24)"
        )
    if problems and auto:
        return None
    if problems:
        raise ValueError(
            f"sign_product_dtype={requested} computes the product of +-1 "
            "inputs and +-1 kernel signs exactly in low precision, but "
            + "; ".join(problems)
            + ". Use sign_product_dtype=None."
        )
    return requested


def _product(
    product: Callable[..., jax.Array],
    x: jax.Array,
    kernel: jax.Array,
    operand_dtype: jnp.dtype | None,
) -> jax.Array:
    """``product(x, kernel)``, with +-1 operands cast to ``operand_dtype``.

    The products of +-1 values are integers, summed exactly in float32 (up
    to 2**24 terms), so the result equals the float32 product bit for bit
    (NaN stays NaN: bfloat16 has it). The backward pass is the float32
    product's: the cotangents are real, so they never go through the
    low-precision operands.
    """
    if operand_dtype is None:
        return product(x, kernel)

    @jax.custom_vjp
    def exact(a, b):
        return product(
            a.astype(operand_dtype),
            b.astype(operand_dtype),
            preferred_element_type=a.dtype,
        )

    def fwd(a, b):
        return exact(a, b), (a, b)

    def bwd(residuals, g):
        a, b = residuals
        return jax.vjp(product, a, b)[1](g)

    exact.defvjp(fwd, bwd)
    return exact(x, kernel)


def _add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    if bias is None:
        return y
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


def binary_dense(
    inputs: jax.typing.ArrayLike,
    latent_kernel: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    kernel_binarizer: Binarizer,
    input_binarizer: Binarizer | None = None,
    progress: jax.typing.ArrayLike | None = None,
    kernel_key: jax.Array | None = None,
    input_key: jax.Array | None = None,
    dtype: jax.typing.DTypeLike | None = None,
    precision: lax.PrecisionLike = None,
    sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO,
) -> jax.Array:
    """A dense layer with a binarized kernel (and optionally inputs).

    Forward::

        y = binarize_in(x) @ binarize_k(W) + b

    where ``binarize_k = kernel_binarizer`` (``alpha * sign(W)``, e.g. one
    ``alpha`` per output feature with ``axis=-1``) and ``binarize_in =
    input_binarizer`` (identity when ``None``). The contraction is over the
    last axis of ``x``. Backward: each binarizer's surrogate gradient; the
    gradient reaches the latent ``W`` and, through ``binarize_in``, ``x``.

    Args:
      inputs: ``(..., in_features)`` array.
      latent_kernel: real-valued ``(in_features, features)`` kernel.
      bias: ``(features,)`` bias or ``None``.
      kernel_binarizer: the rule applied to ``latent_kernel``.
      input_binarizer: the rule applied to ``inputs``, or ``None`` for
        real-valued inputs.
      progress: training progress in ``[0, 1]`` passed to both binarizers
        (used by :class:`bnnjax.EdeSurrogate`); may be traced.
      kernel_key: PRNG key for a stochastic ``kernel_binarizer``.
      input_key: PRNG key for a stochastic ``input_binarizer``.
      dtype: computation dtype; by default the promoted dtype of
        ``inputs``, ``latent_kernel`` and ``bias``.
      precision: ``lax.dot_general`` precision.
      sign_product_dtype: the operand dtype of the forward product when
        the inputs and the kernel are both binarized (every operand
        ``+-1``). ``jnp.bfloat16``: the signs are cast to bfloat16 and
        summed in float32, which is exact (up to ``2**24`` terms):
        outputs and gradients are bit for bit those of float32; the
        backward products stay in float32. Raises ``ValueError`` where
        the product would not be exact (real inputs, an input scale, a
        surrogate whose forward is not ``sign``, a computation dtype
        other than float32). ``"auto"`` (default): bfloat16 where it is
        exact and :func:`bfloat16_dense_is_faster` (measured faster), the
        computation dtype elsewhere; never an error. ``None``: always the
        computation dtype.

    Returns:
      ``(..., features)`` array in the computation dtype.

    Raises:
      TypeError: if a binarizer is not a :class:`bnnjax.Binarizer`.
      ValueError: for mismatched shapes or a missing key.
    """
    inputs = jnp.asarray(inputs)
    latent_kernel = jnp.asarray(latent_kernel)
    bias = None if bias is None else jnp.asarray(bias)
    check_dense_inputs(inputs.shape, latent_kernel.shape)
    _check_bias(bias, latent_kernel.shape[-1])
    x, kernel, bias, out_scale = _binarize_operands(
        inputs,
        latent_kernel,
        bias,
        kernel_binarizer=kernel_binarizer,
        input_binarizer=input_binarizer,
        progress=progress,
        kernel_key=kernel_key,
        input_key=input_key,
        dtype=dtype,
    )
    dimension_numbers = (((x.ndim - 1,), (0,)), ((), ()))

    def product(a, b, preferred_element_type=None):
        return lax.dot_general(
            a,
            b,
            dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    product_dtype = _sign_product_dtype(
        sign_product_dtype,
        input_binarizer,
        kernel_binarizer,
        x.dtype,
        contraction=latent_kernel.shape[0],
        auto_is_faster=bfloat16_dense_is_faster(
            math.prod(x.shape[:-1]), latent_kernel.shape[-1]
        ),
    )
    y = _product(product, x, kernel, product_dtype)
    return _add_bias(_scale_outputs(y, out_scale), bias)


def _check_bias(bias: jax.Array | None, features: int) -> None:
    if bias is not None and bias.shape != (features,):
        raise ValueError(
            f"bias must have shape ({features},) to match the kernel's "
            f"features, got shape {bias.shape}."
        )


def binary_conv(
    inputs: jax.typing.ArrayLike,
    latent_kernel: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    *,
    strides: int | Sequence[int] | None = 1,
    padding: PaddingLike = "SAME",
    kernel_dilation: int | Sequence[int] | None = 1,
    feature_group_count: int = 1,
    pad_value: float = 0.0,
    kernel_binarizer: Binarizer,
    input_binarizer: Binarizer | None = None,
    progress: jax.typing.ArrayLike | None = None,
    kernel_key: jax.Array | None = None,
    input_key: jax.Array | None = None,
    dtype: jax.typing.DTypeLike | None = None,
    precision: lax.PrecisionLike = None,
    sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO,
) -> jax.Array:
    """A convolution with a binarized kernel (and optionally inputs).

    Forward::

        y = conv_valid(pad(binarize_in(x), pad_value), binarize_k(W)) + b

    Padding is applied explicitly *after* input binarization, so with a
    ``+-1`` input binarizer and ``pad_value=-1`` (or ``+1``) every value
    the kernel sees is ``+-1`` (Larq's ``pad_values``); ``pad_value=0``
    reproduces ``flax.linen.Conv``. ``pad_value`` is used as is, not
    multiplied by the input binarizer's scale. ``'CIRCULAR'`` and
    ``'REFLECT'`` pad with input values and need ``pad_value=0``.

    Inputs are channels-last, ``(*batch, *spatial, in_features)``; as in
    flax, several batch axes are flattened for the convolution and
    restored, and inputs without a batch axis are accepted.

    Args:
      inputs: ``(*batch, *spatial, in_features)`` array.
      latent_kernel: real-valued ``(*kernel_size, in_features /
        feature_group_count, features)`` kernel.
      bias: ``(features,)`` bias or ``None``.
      strides: int or one int per spatial dimension (``None`` means 1).
      padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, ``'CIRCULAR'``,
        ``'REFLECT'``, ``'CAUSAL'``, an int, or one int or ``(low, high)``
        pair per spatial dimension.
      kernel_dilation: int or one int per spatial dimension.
      feature_group_count: number of feature groups; ``in_features`` gives
        a depthwise convolution.
      pad_value: constant the inputs are padded with.
      kernel_binarizer: the rule applied to ``latent_kernel``.
      input_binarizer: the rule applied to ``inputs``, or ``None`` for
        real-valued inputs.
      progress: training progress in ``[0, 1]`` passed to both binarizers;
        may be traced.
      kernel_key: PRNG key for a stochastic ``kernel_binarizer``.
      input_key: PRNG key for a stochastic ``input_binarizer``.
      dtype: computation dtype; by default the promoted dtype of the
        operands.
      precision: ``lax.conv_general_dilated`` precision.
      sign_product_dtype: ``None``, ``"auto"`` or ``jnp.bfloat16``, as in
        :func:`binary_dense`; bfloat16 also needs ``pad_value`` in
        ``{-1, 0, 1}``. ``"auto"`` (default) keeps the computation dtype:
        bfloat16 convolutions were measured no faster on CPU.

    Returns:
      ``(*batch, *out_spatial, features)`` array in the computation dtype.

    Raises:
      TypeError: if a binarizer or a window argument has the wrong type.
      ValueError: for mismatched shapes, an invalid padding or pad_value,
        a feature_group_count that does not divide the features, or a
        missing key.
    """
    inputs = jnp.asarray(inputs)
    latent_kernel = jnp.asarray(latent_kernel)
    bias = None if bias is None else jnp.asarray(bias)
    check_conv_inputs(inputs.shape, latent_kernel.shape, feature_group_count)
    _check_bias(bias, latent_kernel.shape[-1])
    kernel_size = latent_kernel.shape[:-2]
    rank = len(kernel_size)
    strides = canonicalize_window("strides", strides, rank)
    kernel_dilation = canonicalize_window(
        "kernel_dilation", kernel_dilation, rank
    )
    padding = canonicalize_padding(padding, rank)
    pad_value = check_pad_value(pad_value, padding)

    x, kernel, bias, out_scale = _binarize_operands(
        inputs,
        latent_kernel,
        bias,
        kernel_binarizer=kernel_binarizer,
        input_binarizer=input_binarizer,
        progress=progress,
        kernel_key=kernel_key,
        input_key=input_key,
        dtype=dtype,
    )
    batch_shape = x.shape[: x.ndim - rank - 1]
    x = jnp.reshape(x, (-1, *x.shape[x.ndim - rank - 1 :]))
    pads = explicit_padding(
        padding, x.shape[1:-1], kernel_size, strides, kernel_dilation
    )
    x = pad_inputs(x, padding, pads, pad_value)

    def product(a, b, preferred_element_type=None):
        return lax.conv_general_dilated(
            a,
            b,
            strides,
            "VALID",
            rhs_dilation=kernel_dilation,
            dimension_numbers=_conv_dimension_numbers(a.ndim),
            feature_group_count=int(feature_group_count),
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    product_dtype = _sign_product_dtype(
        sign_product_dtype,
        input_binarizer,
        kernel_binarizer,
        x.dtype,
        contraction=math.prod(latent_kernel.shape[:-1]),
        pad_value=pad_value,
    )
    y = _product(product, x, kernel, product_dtype)
    y = jnp.reshape(y, (*batch_shape, *y.shape[1:]))
    return _add_bias(_scale_outputs(y, out_scale), bias)

"""Functional binary layers: the math behind the linen and nnx layers.

The layers in :mod:`bnnjax.nn.linen` and :mod:`bnnjax.nn.nnx` only allocate
parameters and call :func:`binary_dense`, :func:`binary_conv`, or
ReActNet's activations :func:`rsign` and :func:`rprelu`; a model converter
can call the same functions on existing parameters. This module holds no
Module classes and keeps no state.

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

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from bnnjax.binarize import Binarizer
from bnnjax.nn import _formulation, _precision, _residuals
from bnnjax.nn._checks import (
    MODE_PADDINGS,
    CanonicalPadding,
    PaddingLike,
    canonicalize_padding,
    canonicalize_window,
    check_bias,
    check_binarizer,
    check_binarizer_key,
    check_conv_inputs,
    check_dense_inputs,
    check_pad_value,
)
from bnnjax.nn._formulation import max_pool, patches_conv_is_faster
from bnnjax.nn._precision import AUTO
from bnnjax.nn._residuals import dense_packing_saves

LATENT_KERNEL = "latent_kernel"
"""Name of the real-valued latent kernel in linen parameter trees."""

DEFAULT_KERNEL_BINARIZER = Binarizer(axis=-1)
"""The layers' default kernel rule: the founding method per output channel.

Scaled sigmoid surrogate and mean-absolute-deviation scale, one ``alpha``
per output feature (the last kernel axis).
"""

__all__ = [
    "DEFAULT_KERNEL_BINARIZER",
    "LATENT_KERNEL",
    "RSIGN_BINARIZER",
    "binary_conv",
    "binary_dense",
    "compute_dtype",
    "dense_packing_saves",
    "explicit_padding",
    "max_pool",
    "pad_inputs",
    "patches_conv_is_faster",
    "rprelu",
    "rsign",
]


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
      padding: a padding name or pairs, as ``canonicalize_padding`` returns.
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
            (low, high)
            for low, high in lax.padtype_to_pads(
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
      padding: a padding name or pairs, as ``canonicalize_padding`` returns.
      pads: output of :func:`explicit_padding`.
      pad_value: the constant for constant paddings.

    Returns:
      The padded array, in ``inputs``' dtype.
    """
    if all(p == (0, 0) for p in pads):
        return inputs
    if isinstance(padding, str) and padding in MODE_PADDINGS:
        widths = [(0, 0), *pads, (0, 0)]
        return jnp.pad(inputs, widths, mode=MODE_PADDINGS[padding])
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
    return lax.pad(inputs, jnp.asarray(pad_value, inputs.dtype), config)


def _conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    # Channels-last inputs/outputs and (*spatial, in, out) kernels, as flax.
    lhs = (0, ndim - 1, *range(1, ndim - 1))
    rhs = (ndim - 1, ndim - 2, *range(ndim - 2))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


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
    residuals: _residuals.Residuals,
) -> tuple[
    jax.Array,
    jax.Array,
    jax.Array | None,
    jax.Array | None,
    tuple[bool, bool],
    bool,
]:
    """Binarizes inputs and kernel, then casts them to one dtype.

    Returns ``(x, kernel, bias, out_scale, packed, kernel_is_signs)``. When the
    kernel's scale is one value per output feature (the last kernel axis) or
    per tensor, the kernel is returned as its signs and ``out_scale`` is the
    scale as a ``(features,)`` vector (or ``None`` without a scale), to
    multiply the product's output: ``(x @ sign(W)) * alpha``, the same
    function as ``x @ (alpha * sign(W))``, with the scale applied where
    packed 1-bit inference applies it. Any other scale layout is folded into
    the kernel and ``out_scale`` is ``None``. ``packed`` is ``(pack_inputs,
    pack_kernel)``: which operands of the product the residual policy keeps
    as bits (``_residuals.packed_residuals_apply``); with
    ``residuals="packed"`` the input binarizer also keeps its window as
    bits. ``kernel_is_signs`` is False where the scale was folded into the
    kernel.
    """
    check_binarizer("kernel_binarizer", kernel_binarizer)
    check_binarizer("input_binarizer", input_binarizer, optional=True)
    kernel_key = check_binarizer_key(
        "kernel_binarizer", kernel_binarizer, kernel_key
    )
    input_key = check_binarizer_key(
        "input_binarizer", input_binarizer, input_key
    )
    dtype = compute_dtype(inputs, latent_kernel, bias, dtype=dtype)
    x = inputs
    if input_binarizer is not None:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(dtype)
        x = input_binarizer(
            x,
            progress=progress,
            key=input_key,
            pack_residuals=residuals == "packed",
        )
    kernel, alpha = kernel_binarizer.signs_and_scale(
        latent_kernel, progress=progress, key=kernel_key
    )
    out_scale = None
    kernel_is_signs = True
    if alpha is not None:
        if all(d == 1 for d in alpha.shape[:-1]):
            out_scale = jnp.reshape(alpha, (-1,)).astype(dtype)
        else:
            kernel = alpha * kernel
            kernel_is_signs = False
    if bias is not None:
        bias = bias.astype(dtype)
    packed = _residuals.packed_residuals_apply(
        residuals,
        input_binarizer,
        kernel_binarizer,
        kernel_is_signs=kernel_is_signs,
    )
    return (
        x.astype(dtype),
        kernel.astype(dtype),
        bias,
        out_scale,
        packed,
        kernel_is_signs,
    )


def _scale_outputs(y: jax.Array, out_scale: jax.Array | None) -> jax.Array:
    """Multiplies the last axis of ``y`` by a per-feature (or scalar) scale."""
    if out_scale is None:
        return y
    return y * jnp.reshape(out_scale, (1,) * (y.ndim - 1) + (-1,))


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
    residuals: _residuals.Residuals = "auto",
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
        surrogate whose forward is not ``sign``, a kernel scale that is
        not one value per output feature or per tensor, which multiplies
        the kernel before the product, a computation dtype other than
        float32). ``"auto"`` (default): bfloat16 where it is
        exact and :func:`bnnjax.nn.bfloat16_dense_is_faster`, the
        computation dtype elsewhere; never an error. ``None``: always the
        computation dtype.
      residuals: what the layer keeps for the backward pass.
        ``"packed"`` keeps each ``+-1`` operand of the product (the
        kernel's signs when its scale multiplies the output; the inputs
        when ``input_binarizer`` has no scale and a ``sign`` forward) as
        bits, one per entry, instead of in the computation dtype, and
        restores it for the backward products; an input binarizer whose
        surrogate's derivative is an indicator (the STE family) keeps its
        window as bits instead of the real inputs
        (``binarize(..., pack_residuals=True)``). The outputs are the
        same and the gradients are the unpacked path's bit for bit, on
        every finite input; a ``NaN`` sign (a diverged run) is kept as
        ``-1``, so the outputs computed from it are ``NaN`` either way
        and only the values of such a step's gradients may differ. Real
        operands are kept as they are. ``"unpacked"``: autodiff's
        residuals. ``"auto"`` (default): ``"packed"`` on the CPU backend
        for products of at least 1,024 rows and 4,096 input features,
        where packing lowered a binary training step's temporary memory,
        else ``"unpacked"`` (packing raised it in smaller layers; on
        accelerators it is not measured yet; see
        :func:`bnnjax.nn.functional.dense_packing_saves`).

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
    residuals = _residuals.resolve_dense_residuals(
        _residuals.check_residuals(residuals),
        rows=math.prod(inputs.shape[:-1]),
        in_features=latent_kernel.shape[0],
    )
    check_bias(None if bias is None else bias.shape, latent_kernel.shape[-1])
    x, kernel, bias, out_scale, packed, kernel_is_signs = _binarize_operands(
        inputs,
        latent_kernel,
        bias,
        kernel_binarizer=kernel_binarizer,
        input_binarizer=input_binarizer,
        progress=progress,
        kernel_key=kernel_key,
        input_key=input_key,
        dtype=dtype,
        residuals=residuals,
    )
    dimension_numbers = (((x.ndim - 1,), (0,)), ((), ()))

    def product(
        a: jax.Array,
        b: jax.Array,
        preferred_element_type: jax.typing.DTypeLike | None = None,
    ) -> jax.Array:
        return lax.dot_general(
            a,
            b,
            dimension_numbers,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )

    product_dtype = _precision.resolve_sign_product_dtype(
        sign_product_dtype,
        input_binarizer,
        kernel_binarizer,
        x.dtype,
        contraction=latent_kernel.shape[0],
        kernel_is_signs=kernel_is_signs,
        auto_dtype=(
            _precision.BFLOAT16
            if _precision.bfloat16_dense_is_faster(
                math.prod(x.shape[:-1]), latent_kernel.shape[-1]
            )
            else None
        ),
    )
    y = _product(product, x, kernel, product_dtype, packed)
    return _add_bias(_scale_outputs(y, out_scale), bias)


def _product(
    product: Callable[..., jax.Array],
    x: jax.Array,
    kernel: jax.Array,
    product_dtype: jnp.dtype | None,
    packed: tuple[bool, bool],
) -> jax.Array:
    """The layer's product, in the sign-product dtype, with the residual
    policy's packed operands (``packed = (pack_inputs, pack_kernel)``)."""

    def exact(a: jax.Array, b: jax.Array) -> jax.Array:
        return _precision.sign_product(product, a, b, product_dtype)

    return _residuals.product_with_residuals(
        exact, x, kernel, pack_a=packed[0], pack_b=packed[1]
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
    conv_impl: _formulation.ConvImpl = "auto",
    residuals: _residuals.Residuals = "auto",
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
        ``{-1, 0, 1}``. ``"auto"`` (default): on the CPU backend, a
        patches convolution with at least 5 input features (per group)
        whose operands are exactly -1, 0 and +1
        (the conditions of an exact bfloat16 product) multiplies int8
        copies with int32 sums, bit-identical to float32 and measured
        faster in whole binary CNN training steps
        (``bnnjax.nn._formulation.conv_patches``); else the
        computation dtype (a bfloat16 convolution was no faster than
        float32 on CPU; see the benchmarks page).
      conv_impl: ``"xla"`` (``lax.conv_general_dilated``), ``"patches"``
        (shifted slices concatenated along channels and one matrix
        product; ungrouped convolutions only) or ``"auto"`` (default:
        patches on the CPU backend where it measured faster, see
        :func:`~bnnjax.nn.functional.patches_conv_is_faster`). The two
        are equal bit for bit on ``+-1`` operands and up to float
        rounding otherwise; gradients follow the chosen form.
      residuals: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``, as
        in :func:`binary_dense`, except that ``"auto"`` keeps autodiff's
        residuals in a convolution (packing is not measured to save
        there without slowing the step); the packed inputs are the
        binarized inputs before padding.

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
    residuals = _residuals.check_residuals(residuals)
    check_bias(None if bias is None else bias.shape, latent_kernel.shape[-1])
    kernel_size = latent_kernel.shape[:-2]
    rank = len(kernel_size)
    strides = canonicalize_window("strides", strides, rank)
    kernel_dilation = canonicalize_window(
        "kernel_dilation", kernel_dilation, rank
    )
    padding = canonicalize_padding(padding, rank)
    pad_value = check_pad_value(pad_value, padding)
    conv_impl = _formulation.check_conv_impl(conv_impl)
    if conv_impl == "patches" and feature_group_count != 1:
        raise ValueError(
            f"conv_impl='patches' computes ungrouped convolutions, got "
            f"feature_group_count={feature_group_count}; use 'xla' or "
            "'auto'."
        )

    x, kernel, bias, out_scale, packed, kernel_is_signs = _binarize_operands(
        inputs,
        latent_kernel,
        bias,
        kernel_binarizer=kernel_binarizer,
        input_binarizer=input_binarizer,
        progress=progress,
        kernel_key=kernel_key,
        input_key=input_key,
        dtype=dtype,
        residuals=residuals,
    )
    batch_shape = x.shape[: x.ndim - rank - 1]
    x = jnp.reshape(x, (-1, *x.shape[x.ndim - rank - 1 :]))
    pads = explicit_padding(
        padding, x.shape[1:-1], kernel_size, strides, kernel_dilation
    )
    patches = conv_impl == "patches" or (
        conv_impl == "auto"
        and _formulation.patches_conv_is_faster(
            in_features=latent_kernel.shape[-2],
            features=latent_kernel.shape[-1],
            kernel_size=kernel_size,
            feature_group_count=int(feature_group_count),
        )
    )
    product_dtype = _precision.resolve_sign_product_dtype(
        sign_product_dtype,
        input_binarizer,
        kernel_binarizer,
        x.dtype,
        contraction=math.prod(latent_kernel.shape[:-1]),
        pad_value=pad_value,
        kernel_is_signs=kernel_is_signs,
        auto_dtype=_precision.conv_sign_product_dtype(
            patches, in_features=latent_kernel.shape[-2]
        ),
    )
    # int8 operands are cast inside the patches product (int8 patches).
    int8 = product_dtype == _precision.INT8
    if int8:
        product_dtype = None

    def product(
        a: jax.Array,
        b: jax.Array,
        preferred_element_type: jax.typing.DTypeLike | None = None,
    ) -> jax.Array:
        # Padding inside the product: a packed input operand is the +-1
        # binarized inputs, before pad_value (which may be 0) is added.
        a = pad_inputs(a, padding, pads, pad_value)
        if patches:
            return _formulation.conv_patches(
                a,
                b,
                strides,
                kernel_dilation,
                precision=precision,
                preferred_element_type=preferred_element_type,
                int8_operands=int8,
            )
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

    y = _product(product, x, kernel, product_dtype, packed)
    y = jnp.reshape(y, (*batch_shape, *y.shape[1:]))
    return _add_bias(_scale_outputs(y, out_scale), bias)


# --------------------------------------------------------------------------
# ReActNet's generalized activations (Liu et al, 2020).

RSIGN_BINARIZER = Binarizer(surrogate="approx_sign", scale=None)
""":func:`rsign`'s default rule: ``sign`` with Bi-Real Net's ApproxSign
gradient, as ReActNet."""


def _per_channel(v: jax.Array, ndim: int, dtype: jnp.dtype) -> jax.Array:
    """A ``(channels,)`` vector shaped to broadcast over ``ndim`` axes."""
    return jnp.reshape(v.astype(dtype), (1,) * (ndim - 1) + (-1,))


def _check_channels(
    name: str, param_shape: tuple[int, ...], inputs_shape: tuple[int, ...]
) -> None:
    if inputs_shape == ():
        raise ValueError(
            f"{name} needs inputs of shape (..., channels), got a scalar."
        )
    if param_shape != (inputs_shape[-1],):
        raise ValueError(
            f"{name} has shape {param_shape}, one value per channel of "
            f"inputs of shape {inputs_shape} needs ({inputs_shape[-1]},)."
        )


def rsign(
    inputs: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    *,
    binarizer: Binarizer = RSIGN_BINARIZER,
    progress: jax.typing.ArrayLike | None = None,
    key: jax.Array | None = None,
    dtype: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """ReActNet's RSign: ``sign`` with a learnable threshold per channel.

    Forward, for channel ``c`` of channels-last inputs::

        y = binarize(x - beta_c)        # sign(x - beta_c): +1 where x >= beta_c

    Backward, through the binarizer's surrogate derivative ``s'``::

        dL/dx      =  dL/dy * s'(x - beta_c)
        dL/dbeta_c = -sum of dL/dy * s'(x - beta_c) over every position
                      (batch and spatial) of channel c

    With a plain sign rule (no scale, no centring) ``y`` is ``+1`` exactly
    where ``x >= beta_c`` (IEEE subtraction ``x - beta_c`` is zero only for
    ``x == beta_c`` and keeps the sign of the exact difference), which is
    how packed inference (:mod:`bnnjax.export`) evaluates it.

    Args:
      inputs: ``(..., channels)`` array.
      beta: ``(channels,)`` thresholds.
      binarizer: the rule applied to ``x - beta``; default ``sign`` with the
        ApproxSign gradient (``bnnjax.Binarizer(surrogate="approx_sign",
        scale=None)``), as ReActNet.
      progress: training progress in ``[0, 1]`` for the binarizer (used by
        :class:`bnnjax.EdeSurrogate`); may be traced.
      key: PRNG key for a stochastic ``binarizer``.
      dtype: computation dtype; by default the promoted dtype of ``inputs``
        and ``beta``.

    Returns:
      ``binarize(x - beta)``, the shape of ``inputs``, in the computation
      dtype.

    Raises:
      TypeError: if ``binarizer`` is not a :class:`bnnjax.Binarizer`.
      ValueError: for a ``beta`` of another shape than ``(channels,)`` or a
        stochastic binarizer without ``key``.

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """
    check_binarizer("binarizer", binarizer)
    if binarizer.stochastic and key is None:
        raise ValueError(
            f"binarizer uses the stochastic surrogate "
            f"{type(binarizer.surrogate).__name__}, which draws random "
            "signs: pass key=jax.random.key(...)."
        )
    inputs = jnp.asarray(inputs)
    beta = jnp.asarray(beta)
    _check_channels("beta", beta.shape, inputs.shape)
    dtype = compute_dtype(inputs, beta, dtype=dtype)
    shifted = inputs.astype(dtype) - _per_channel(beta, inputs.ndim, dtype)
    return binarizer(shifted, progress=progress, key=key).astype(dtype)


def rprelu(
    inputs: jax.typing.ArrayLike,
    gamma: jax.typing.ArrayLike,
    zeta: jax.typing.ArrayLike,
    negative_slope: jax.typing.ArrayLike,
    *,
    dtype: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """ReActNet's RPReLU: a PReLU shifted on both axes, per channel.

    Forward, for channel ``c`` of channels-last inputs, ``z = x - gamma_c``::

        y = z + zeta_c              if z >= 0
          = a_c * z + zeta_c        otherwise      (a = negative_slope)

    Backward (``g = dL/dy``; the sums run over every position of channel
    ``c``)::

        dL/dx       = g           if z >= 0 else  a_c * g
        dL/dgamma_c = -sum(dL/dx)
        dL/dzeta_c  =  sum(g)
        dL/da_c     =  sum(g * z where z < 0)

    Args:
      inputs: ``(..., channels)`` array.
      gamma: ``(channels,)`` input shifts.
      zeta: ``(channels,)`` output shifts.
      negative_slope: ``(channels,)`` slopes below the shifted origin.
      dtype: computation dtype; by default the promoted dtype of the
        operands.

    Returns:
      The shape of ``inputs``, in the computation dtype.

    Raises:
      ValueError: for parameters of another shape than ``(channels,)``.

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """
    inputs = jnp.asarray(inputs)
    gamma, zeta, negative_slope = (
        jnp.asarray(v) for v in (gamma, zeta, negative_slope)
    )
    for name, value in (
        ("gamma", gamma),
        ("zeta", zeta),
        ("negative_slope", negative_slope),
    ):
        _check_channels(name, value.shape, inputs.shape)
    dtype = compute_dtype(inputs, gamma, zeta, negative_slope, dtype=dtype)
    n = inputs.ndim
    z = inputs.astype(dtype) - _per_channel(gamma, n, dtype)
    y = jnp.where(z >= 0, z, _per_channel(negative_slope, n, dtype) * z)
    return y + _per_channel(zeta, n, dtype)

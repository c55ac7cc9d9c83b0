"""Formulation dispatch: which exact form of a convolution or pool runs.

XLA's CPU backend computes convolutions and pooling gradients with generic
loops that are slow next to oneDNN (TensorFlow's kernels). Two rewrites
compute the same values from matrix products and reshapes, which XLA's CPU
backend runs through its fast dot and fused elementwise kernels:

* **patches**: a convolution as one matrix product over shifted slices
  concatenated along channels (``im2col``)::

      P[n, o, (k, c)] = x_pad[n, o * s + k * d, c]     # k over the window
      y = P @ reshape(W, (prod(kernel_size) * c_in, c_out))

  Every output is the same sum of the same products in another order: with
  ``+-1`` inputs and ``+-1`` kernel signs the terms are integers and the
  result equals ``lax.conv_general_dilated``'s bit for bit; with real
  inputs it agrees up to float rounding. ``"auto"`` picks it on the CPU
  backend for the shapes where it measured faster
  (:func:`patches_conv_is_faster`); ``"xla"`` always uses
  ``lax.conv_general_dilated``; ``"patches"`` always uses the rewrite.
  Its backward pass is written out: the kernel gradient is one product
  contracting ``P`` and ``dy`` over their shared rows, where autodiff's
  transpose had XLA's CPU backend copy ``dy`` into a transposed layout
  first.
* **reshape pool**: a max pool whose windows tile the input (window equal
  to strides, ``'VALID'``) as a reshape and a max over the window axes,
  with a backward pass that sends each window's cotangent to its first
  maximum in row-major order, as XLA's ``select_and_scatter`` does: values
  and gradients equal ``flax.linen.max_pool``'s bit for bit, ties
  included. Used on the CPU backend, where the select-and-scatter backward
  was most of a small CNN's step.

On GPUs XLA calls cuDNN, where no gain is established: both keep XLA's
operations there. See the benchmarks page for the measurements.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

ConvImpl = Literal["auto", "xla", "patches"]
CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "patches")

# Where XLA's convolution stayed faster on CPU: narrow layers
# (benchmarks/conv_formulations.py; the training speed results page).
_NARROW_FEATURES = 16
_IMAGE_FEATURES = 4

__all__ = [
    "CONV_IMPLS",
    "ConvImpl",
    "check_conv_impl",
    "conv_patches",
    "max_pool",
    "patches_conv_is_faster",
    "reshape_pool_applies",
]


def check_conv_impl(value: object) -> ConvImpl:
    """Returns ``value`` if it names a convolution formulation."""
    if not isinstance(value, str) or value not in CONV_IMPLS:
        raise ValueError(
            f"conv_impl={value!r}; expected one of "
            f"{', '.join(repr(v) for v in CONV_IMPLS)}."
        )
    return value  # type: ignore[return-value]


def patches_conv_is_faster(
    *,
    in_features: int,
    features: int,
    kernel_size: Sequence[int],
    feature_group_count: int = 1,
) -> bool:
    """Whether ``conv_impl="auto"`` picks the patches formulation.

    True on the CPU backend for ungrouped convolutions with a window of
    more than one pixel, except narrow ones (more than 4 and at most 16
    input features into at most 16 features). The rule follows
    measurements on an x86 CPU with AVX-512 (the training speed results
    page): whole training steps of two binary CNNs were faster with every
    convolution as patches than with XLA's, and faster than with a
    per-layer mix chosen from single-layer timings; alone, image, strided
    and wide layers were faster as patches and only narrow layers lost
    clearly. False elsewhere, GPUs and TPUs included.
    """
    narrow = _IMAGE_FEATURES < in_features <= _NARROW_FEATURES and (
        features <= _NARROW_FEATURES
    )
    return (
        not narrow
        and feature_group_count == 1
        and math.prod(kernel_size) > 1
        and jax.default_backend() == "cpu"
    )


def _patches(
    x: jax.Array,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    kernel_dilation: tuple[int, ...],
) -> jax.Array:
    """``(batch, *out_spatial, prod(kernel_size) * c)`` shifted slices of
    ``x`` concatenated along channels, window offsets row-major."""
    spatial = x.shape[1:-1]
    out = tuple(
        (n - (k - 1) * d - 1) // s + 1
        for n, k, d, s in zip(
            spatial, kernel_size, kernel_dilation, strides, strict=True
        )
    )
    slices = []
    for offset in itertools.product(*(range(k) for k in kernel_size)):
        start = tuple(
            i * d for i, d in zip(offset, kernel_dilation, strict=True)
        )
        limit = tuple(
            b + (o - 1) * s + 1
            for b, o, s in zip(start, out, strides, strict=True)
        )
        slices.append(
            lax.slice(
                x,
                (0, *start, 0),
                (x.shape[0], *limit, x.shape[-1]),
                (1, *strides, 1),
            )
        )
    return slices[0] if len(slices) == 1 else jnp.concatenate(slices, -1)


def conv_patches(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    kernel_dilation: Sequence[int],
    *,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
    int8_operands: bool = False,
) -> jax.Array:
    """A ``'VALID'`` channels-last convolution as one matrix product.

    Forward, with ``P`` the patches (``M = batch * prod(out_spatial)``
    rows, ``K = prod(kernel_size) * in_features`` columns) and ``W`` the
    kernel as a ``(K, features)`` matrix::

        y = P @ W

    Backward, written out (``jax.custom_vjp``) rather than left to
    autodiff::

        dW = P^T @ dy          # one product contracting the M rows
        dP = dy @ W^T;  dx = the transpose of the patch gather applied to dP

    The values are those of autodiff through ``y = P @ W``; autodiff's
    transpose of the product asks for ``dy`` transposed to ``(features,
    M)`` and XLA's CPU backend materialized that copy, which contracting
    ``P`` and ``dy`` over their shared leading axis avoids (faster binary
    CNN training steps on an x86 CPU; the figures are on the training
    speed results page).

    With ``int8_operands=True`` (for inputs and kernel that hold only
    -1, 0 and +1: signs and a padding of 0 or +-1), ``P`` and ``W`` are
    cast to int8 and multiplied with int32 accumulation, which is exact
    and equals the float32 product bit for bit (up to ``2**24`` terms);
    the int8 patches are the residual the kernel gradient is computed
    from (a quarter of float32's bytes). A NaN in the inputs or the kernel
    makes every output it reaches NaN, as in float32 (an int8 cast would
    turn it into a finite number). On the CPU backend of an x86 CPU with
    AVX-512 both this product and its patches measured faster than
    float32's (the training speed results page).

    Args:
      x: ``(batch, *spatial, in_features)`` inputs, already padded.
      kernel: ``(*kernel_size, in_features, features)`` kernel.
      strides: one stride per spatial dimension.
      kernel_dilation: one dilation per spatial dimension.
      precision: ``jnp.dot`` precision.
      preferred_element_type: accumulation and result dtype of the
        forward product (the backward products accumulate in the
        cotangent's dtype and return each operand's dtype).
      int8_operands: compute the forward product on int8 copies of ``x``
        and ``kernel``; only for values in ``{-1, 0, 1}`` (or NaN), which
        the caller guarantees (other values would be truncated).

    Returns:
      ``(batch, *out_spatial, features)``, the values of
      ``lax.conv_general_dilated`` with ``'VALID'`` padding.
    """
    kernel_size = tuple(int(k) for k in kernel.shape[:-2])
    strides = tuple(int(s) for s in strides)
    dilation = tuple(int(d) for d in kernel_dilation)

    def forward(
        a: jax.Array, b: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        matrix = jnp.reshape(b, (-1, b.shape[-1]))
        if int8_operands:
            signs = _patches(a.astype(jnp.int8), kernel_size, strides, dilation)
            return _int8_product(signs, a, matrix), (signs, matrix)
        patches = _patches(a, kernel_size, strides, dilation)
        y = jnp.dot(
            patches,
            matrix,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
        return y, (patches, matrix)

    def _int8_product(
        signs: jax.Array, a: jax.Array, matrix: jax.Array
    ) -> jax.Array:
        y = jnp.dot(
            signs,
            matrix.astype(jnp.int8),
            preferred_element_type=jnp.int32,
        )
        dtype = preferred_element_type or jnp.result_type(a, matrix)
        # NaN where an input in the window or a kernel entry is NaN.
        window_nan = _patches(
            jnp.any(jnp.isnan(a), axis=-1, keepdims=True),
            kernel_size,
            strides,
            dilation,
        )
        column_nan = jnp.any(jnp.isnan(matrix), axis=0)
        nan = jnp.any(window_nan, axis=-1, keepdims=True) | jnp.reshape(
            column_nan, (1,) * (y.ndim - 1) + column_nan.shape
        )
        return jnp.where(nan, jnp.nan, y).astype(dtype)

    @jax.custom_vjp
    def product(a: jax.Array, b: jax.Array) -> jax.Array:
        return forward(a, b)[0]

    def backward(
        residuals: tuple[jax.Array, jax.Array], g: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        patches, matrix = residuals
        rows = jnp.reshape(patches, (-1, patches.shape[-1]))
        if int8_operands:  # the signs again, exactly, in g's dtype
            rows = rows.astype(g.dtype)
        d_matrix = lax.dot_general(
            rows,
            jnp.reshape(g, (-1, g.shape[-1])),
            (((0,), (0,)), ((), ())),
            precision=precision,
        )
        d_patches = lax.dot_general(
            g,
            matrix,
            (((g.ndim - 1,), (1,)), ((), ())),
            precision=precision,
        )
        gather = jax.linear_transpose(
            lambda a: _patches(a, kernel_size, strides, dilation),
            jax.ShapeDtypeStruct(x.shape, x.dtype),
        )
        (dx,) = gather(d_patches.astype(x.dtype))
        return dx, jnp.reshape(d_matrix, kernel.shape).astype(kernel.dtype)

    product.defvjp(forward, backward)
    return product(x, kernel)


# --------------------------------------------------------------------------
# Max pooling over tiling windows.


def reshape_pool_applies(
    window_shape: Sequence[int],
    strides: Sequence[int] | None,
    padding: object,
) -> bool:
    """Whether :func:`max_pool` takes the reshape form on this backend."""
    window = tuple(window_shape)
    steps = (1,) * len(window) if strides is None else tuple(strides)
    return (
        steps == window
        and isinstance(padding, str)
        and padding == "VALID"
        and jax.default_backend() == "cpu"
    )


def _tiles(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """``(batch, *spatial, c)`` cropped to whole windows and reshaped to
    ``(batch, *out_spatial, prod(window), c)``, window offsets row-major."""
    rank = len(window)
    out = tuple(n // w for n, w in zip(x.shape[1:-1], window, strict=True))
    index = [slice(None)]
    index += [slice(0, o * w) for o, w in zip(out, window, strict=True)]
    x = x[tuple(index)]
    split = [x.shape[0]]
    for o, w in zip(out, window, strict=True):
        split += [o, w]
    x = jnp.reshape(x, (*split, x.shape[-1]))
    # (b, o1, w1, o2, w2, ..., c) -> (b, o1, o2, ..., w1, w2, ..., c)
    perm = (0, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2))
    x = jnp.transpose(x, (*perm, 2 * rank + 1))
    return jnp.reshape(x, (x.shape[0], *out, math.prod(window), x.shape[-1]))


def _untiles(
    t: jax.Array, window: tuple[int, ...], shape: tuple[int, ...]
) -> jax.Array:
    """Inverse of :func:`_tiles`, zero where the crop dropped pixels."""
    rank = len(window)
    out = t.shape[1 : 1 + rank]
    t = jnp.reshape(t, (t.shape[0], *out, *window, t.shape[-1]))
    perm = [0]
    for i in range(rank):
        perm += [1 + i, 1 + rank + i]
    t = jnp.transpose(t, (*perm, 2 * rank + 1))
    t = jnp.reshape(
        t,
        (
            t.shape[0],
            *(o * w for o, w in zip(out, window, strict=True)),
            t.shape[-1],
        ),
    )
    pads = [(0, 0, 0)]
    pads += [
        (0, n - o * w, 0)
        for n, o, w in zip(shape[1:-1], out, window, strict=True)
    ]
    pads.append((0, 0, 0))
    return lax.pad(t, jnp.zeros((), t.dtype), pads)


def _tiled_max_pool(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    @jax.custom_vjp
    def pool(a: jax.Array) -> jax.Array:
        return jnp.max(_tiles(a, window), axis=-2)

    def fwd(a: jax.Array) -> tuple[jax.Array, jax.Array]:
        return pool(a), a

    def bwd(a: jax.Array, g: jax.Array) -> tuple[jax.Array]:
        t = _tiles(a, window)
        first = jnp.argmax(t, axis=-2)  # the first maximum, as XLA's
        offsets = lax.broadcasted_iota(first.dtype, t.shape, t.ndim - 2)
        hot = offsets == first[..., None, :]
        gt = jnp.where(hot, g[..., None, :], jnp.zeros((), g.dtype))
        return (_untiles(gt, window, a.shape),)

    pool.defvjp(fwd, bwd)
    return pool(x)


def max_pool(
    inputs: jax.typing.ArrayLike,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
) -> jax.Array:
    """``flax.linen.max_pool``, as a reshape where the windows tile.

    Forward::

        y[n, o, c] = max_{k in window} x[n, o * s + k, c]

    Backward: each window's cotangent goes to its first maximum (row-major
    window order), as ``flax.linen.max_pool``'s. On the CPU backend, for
    windows equal to the strides and ``'VALID'`` padding, the windows are
    reshaped onto their own axis and reduced, with that backward written
    out (values and gradients equal flax's bit for bit); everything else
    calls ``flax.linen.max_pool``.

    Args:
      inputs: ``(batch, *spatial, features)`` array (or without batch axis,
        as flax).
      window_shape: window size per spatial dimension.
      strides: stride per spatial dimension (default: 1s, as flax).
      padding: ``'VALID'``, ``'SAME'`` or ``(low, high)`` pairs.

    Returns:
      The pooled array.
    """
    x = jnp.asarray(inputs)
    window = tuple(int(w) for w in window_shape)
    if (
        not reshape_pool_applies(window, strides, padding)
        or x.ndim < len(window) + 1
    ):
        return nn.max_pool(x, window, strides=strides, padding=padding)
    # Any batch axes (none included) flattened to one and restored.
    batch_shape = x.shape[: x.ndim - len(window) - 1]
    x = jnp.reshape(x, (-1, *x.shape[len(batch_shape) :]))
    y = _tiled_max_pool(x, window)
    return jnp.reshape(y, (*batch_shape, *y.shape[1:]))

"""Packed 1-bit kernels and inference on them, in pure JAX.

A binary kernel ``alpha * sign(W)`` needs one bit per weight. This module
packs the signs into ``uint32`` words and computes with the packed words
directly:

* fully binary layers (``+-1`` inputs and weights) by XNOR-popcount: for
  ``+-1`` vectors of length ``n`` stored as bits,
  ``dot(a, w) = n - 2 * popcount(a xor w)``;
* binary-weight layers with real inputs, ``x @ (alpha * sign(W))``, by a
  multiply-free lookup over packed bytes (small batches) or by unpacking
  blocks of the kernel next to the dot (large batches);
* convolutions by im2col (strided slices of the padded input) feeding the
  same dense kernels;
* batch norm followed by ``sign`` folded into a per-channel threshold.

Bit conventions (used everywhere, and in the files of
:mod:`bnnjax.export`):

* a value ``v`` is stored as bit 1 if ``v >= 0`` and bit 0 otherwise, so
  ``sign(0) = +1`` (also for ``-0.0``), as :func:`bnnjax.binarize`; bit 1
  means ``+1`` and bit 0 means ``-1``;
* along a packed axis of length ``n``, feature ``i`` is bit ``i % 32``
  (bit 0 is the least significant) of word ``i // 32``; the
  ``32 * ceil(n / 32) - n`` padding bits of the last word are 0;
* a flax kernel ``(*kernel_size, in, out)`` packs along its input axis into
  words of shape ``(out, *kernel_size, ceil(in / 32))``: one row of words
  per output feature (the file layout). :func:`prepare_xnor_kernel`
  transposes it once, at load time, to the word-major ``(words, out)``
  layout the XNOR-popcount loop streams.

Every function here is pure and jit-able; the ``prepare_*`` helpers and the
folding functions run once, at export or load time, on concrete arrays.

Design notes for XLA on CPU (measurements on the benchmarks page): XLA
compiles a fused reduction over the word axis to a scalar loop, so the
XNOR kernel is a loop over words instead, each step one
xor-popcount-add over a ``(rows, out)`` accumulator that XLA vectorizes
along ``out``. A plain unpack-then-dot is slower than float32
because XLA does not fuse the unpack into the dot; unpacking blocks of
output columns inside a loop keeps the unpacked block in cache.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "WORD_BITS",
    "BinaryWeights",
    "PackedKernel",
    "XnorKernel",
    "batch_norm",
    "binary_weight_conv",
    "binary_weight_dense",
    "fold_batch_norm_sign",
    "fold_count_threshold",
    "im2col",
    "kernel_tap_sums",
    "pack_bits",
    "pack_kernel",
    "prepare_binary_weights",
    "prepare_xnor_kernel",
    "unpack_bits",
    "unpack_kernel",
    "xnor_conv",
    "xnor_dense",
]

WORD_BITS = 32
"""Bits per packed word (``uint32``)."""

_LANES = 8  # uint32 words per 256-bit vector.
_UNROLL = 4  # xnor_dense: words per loop step (2 is slower, 8 no faster).
_XNOR_BLOCK = 512  # xnor_dense: output columns per block for wide layers
_XNOR_BLOCK_MIN_OUT = 2048  # with at least this many outputs
_XNOR_BLOCK_MIN_ROWS = 16  # and rows, where blocking pays off.
_LUT_MAX_ROWS = 2  # binary_weight_dense: lookup up to this many rows
_LUT_MAX_INPUTS = 4096  # and inputs: a 512 KiB table per row stays in L2.
_UNPACK_BLOCK_BYTES = 1 << 22  # unpacked float block size for large rows.


def _words_for(n: int) -> int:
    return -(-int(n) // WORD_BITS)


def _bit_shifts(ndim: int, axis: int) -> jax.Array:
    """``arange(32)`` as uint32, shaped to broadcast along ``axis``."""
    shape = [1] * ndim
    shape[axis] = WORD_BITS
    return jnp.arange(WORD_BITS, dtype=jnp.uint32).reshape(shape)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["words"],
    meta_fields=["n_in"],
)
@dataclasses.dataclass(frozen=True)
class PackedKernel:
    """Signs of a flax kernel, packed 32 per word along the input axis.

    Attributes:
      words: ``uint32`` array of shape ``(out, *kernel_size,
        ceil(in / 32))``; bit ``i % 32`` of word ``i // 32`` is 1 iff the
        latent weight for input feature ``i`` is ``>= 0``; padding bits
        are 0.
      n_in: the number of input features ``in`` (the words hold
        ``32 * ceil(in / 32)`` bits); static under ``jit`` (a pytree
        metadata field).
    """

    words: jax.Array
    n_in: int


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["words_t", "bytes_t"],
    meta_fields=["n_in"],
)
@dataclasses.dataclass(frozen=True)
class BinaryWeights:
    """A ``(n_in, out)`` binary kernel laid out for real-valued inputs.

    Built by :func:`prepare_binary_weights`; consumed by
    :func:`binary_weight_dense`.

    Attributes:
      words_t: ``uint32 (ceil(n_in / 32), out)``, input-major, for
        unpacking columns next to the dot.
      bytes_t: ``uint8 (ceil(n_in / 8), out)``, the same bits as bytes,
        for the lookup kernel (bit ``j`` of byte ``g`` is input
        ``8 g + j``).
      n_in: number of input features (static under ``jit``).
    """

    words_t: jax.Array
    bytes_t: jax.Array
    n_in: int


def pack_bits(bits: jax.typing.ArrayLike, axis: int = -1) -> jax.Array:
    """Packs a boolean (or 0/1) array into ``uint32`` words along ``axis``.

    Args:
      bits: array whose nonzero entries are 1 bits.
      axis: the axis to pack; its length ``n`` becomes ``ceil(n / 32)``.

    Returns:
      ``uint32`` words; bit ``i % 32`` of word ``i // 32`` is entry ``i``,
      padding bits are 0.

    Example:
      >>> import jax.numpy as jnp
      >>> pack_bits(jnp.array([True, False, True]))
      Array([5], dtype=uint32)
    """
    bits = jnp.asarray(bits)
    axis = axis % bits.ndim
    b = jnp.moveaxis(bits, axis, -1) != 0
    n = b.shape[-1]
    words = _words_for(n)
    pad = [(0, 0)] * (b.ndim - 1) + [(0, words * WORD_BITS - n)]
    b = jnp.pad(b.astype(jnp.uint32), pad)
    b = b.reshape(*b.shape[:-1], words, WORD_BITS)
    # Distinct powers of two: the sum is the bitwise OR.
    packed = jnp.sum(
        b << _bit_shifts(b.ndim, b.ndim - 1), axis=-1, dtype=jnp.uint32
    )
    return jnp.moveaxis(packed, -1, axis)


def unpack_bits(
    words: jax.typing.ArrayLike, n: int, axis: int = -1
) -> jax.Array:
    """Inverse of :func:`pack_bits`: the first ``n`` bits along ``axis``.

    Args:
      words: ``uint32`` words.
      n: number of bits to keep (``<= 32 * words.shape[axis]``).
      axis: the packed axis.

    Returns:
      A boolean array with ``n`` entries along ``axis``.
    """
    words = jnp.asarray(words)
    if words.dtype != jnp.uint32:
        raise TypeError(f"unpack_bits expects uint32 words, got {words.dtype}.")
    axis = axis % words.ndim
    w = jnp.moveaxis(words, axis, -1)
    if not 0 <= n <= WORD_BITS * w.shape[-1]:
        raise ValueError(
            f"n={n} bits do not fit in {w.shape[-1]} words of 32 bits."
        )
    bits = (w[..., None] >> _bit_shifts(w.ndim + 1, w.ndim)) & 1
    bits = bits.reshape(*w.shape[:-1], w.shape[-1] * WORD_BITS)[..., :n]
    return jnp.moveaxis(bits == 1, -1, axis)


def pack_kernel(latent: jax.typing.ArrayLike) -> PackedKernel:
    """Packs ``sign(latent)`` of a flax kernel along its input axis.

    ``latent >= 0`` gives bit 1 (``+1``), so ``sign(0) = +1`` for ``0.0``
    and ``-0.0``, as :func:`bnnjax.binarize`. NaN gives bit 0; export
    refuses non-finite kernels.

    Args:
      latent: real kernel of shape ``(*kernel_size, in, out)`` (rank >= 2).

    Returns:
      A :class:`PackedKernel` with words of shape ``(out, *kernel_size,
      ceil(in / 32))``.

    Example:
      >>> import jax.numpy as jnp
      >>> p = pack_kernel(jnp.array([[0.5, -1.0], [-0.0, 2.0], [-3.0, 0.0]]))
      >>> p.words, p.n_in
      (Array([[3],
             [6]], dtype=uint32), 3)
      >>> unpack_kernel(p)
      Array([[ 1., -1.],
             [ 1.,  1.],
             [-1.,  1.]], dtype=float32)
    """
    latent = jnp.asarray(latent)
    if latent.ndim < 2:
        raise ValueError(
            "pack_kernel expects a kernel of shape (..., in, out), got shape "
            f"{latent.shape}."
        )
    bits = jnp.moveaxis(latent >= 0, -1, 0)  # (out, *kernel_size, in)
    return PackedKernel(words=pack_bits(bits), n_in=int(latent.shape[-2]))


def unpack_kernel(
    packed: PackedKernel, dtype: jax.typing.DTypeLike = jnp.float32
) -> jax.Array:
    """Inverse of :func:`pack_kernel`: the ``+-1`` kernel ``(..., in, out)``.

    Args:
      packed: the packed kernel.
      dtype: dtype of the result.

    Returns:
      ``+1``/``-1`` array of shape ``(*kernel_size, in, out)``.
    """
    bits = unpack_bits(packed.words, packed.n_in)
    signs = jnp.where(bits, 1, -1).astype(dtype)
    return jnp.moveaxis(signs, 0, -1)


def _pad_last(x: jax.Array, size: int) -> jax.Array:
    extra = size - x.shape[-1]
    if extra == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["words_t"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class XnorKernel:
    """A packed ``+-1`` kernel laid out for :func:`xnor_dense`.

    Built once (at load time) by :func:`prepare_xnor_kernel`.

    Attributes:
      words_t: ``uint32 (W, out)``, word-major: row ``w`` holds word ``w``
        of every output feature's packed weights, so the XNOR loop reads
        one contiguous row per step and keeps the outputs on the vector
        axis. For convolutions ``W`` runs over ``(*kernel_size, words)``
        in :func:`im2col` order.
    """

    words_t: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        """``(out, W)``: the shape of the row-major kernel words."""
        return (self.words_t.shape[1], self.words_t.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the packed words."""
        return int(self.words_t.nbytes)


def prepare_xnor_kernel(words: jax.typing.ArrayLike) -> XnorKernel:
    """Lays out ``(out, ..., W)`` kernel words for :func:`xnor_dense`.

    Flattens the trailing axes into one word axis (for convolutions:
    ``(*kernel_size, W)`` in :func:`im2col` order) and transposes to the
    word-major ``(words, out)`` layout the kernel streams, once, so
    :func:`xnor_dense` does not copy the kernel on every call. The file
    format (:mod:`bnnjax.export`) keeps the row-major ``(out, ..., W)``
    words; this is a load-time view of them.

    Args:
      words: ``uint32`` array ``(out, ..., W)``.

    Returns:
      An :class:`XnorKernel`.
    """
    words = jnp.asarray(words)
    if words.dtype != jnp.uint32 or words.ndim < 2:
        raise TypeError(
            "prepare_xnor_kernel expects uint32 words (out, ..., W), got "
            f"{words.dtype} of shape {words.shape}."
        )
    return XnorKernel(words_t=words.reshape(words.shape[0], -1).T)


def _xnor_popcounts(a_t: jax.Array, k_t: jax.Array) -> jax.Array:
    """``sum_w popcount(a_t[w, r] ^ k_t[w, o])`` as ``uint32 (rows, out)``.

    One loop step per word: the step's xor-popcount-add over the
    ``(rows, out)`` accumulator is one elementwise fusion that XLA
    vectorizes along ``out`` (the minor axis).
    """
    words, rows = a_t.shape
    out = k_t.shape[1]

    def step(w: jax.Array, acc: jax.Array) -> jax.Array:
        bits = a_t[w][:, None] ^ k_t[w][None, :]
        return acc + lax.population_count(bits)

    acc = jnp.zeros((rows, out), jnp.uint32)
    return lax.fori_loop(0, words, step, acc, unroll=min(_UNROLL, words))


def xnor_dense(
    a_words: jax.typing.ArrayLike,
    k_words: XnorKernel | jax.typing.ArrayLike,
    n: int,
) -> jax.Array:
    """Dot products of packed ``+-1`` vectors: ``n - 2 popcount(a xor k)``.

    Forward::

        out[..., o] = sum_i a[..., i] * k[o, i]        (a, k in {-1, +1})
                    = n - 2 * sum_w popcount(a_words[..., w] ^ k_words[o, w])

    Exact when the padding bits of both operands are equal (zero, as
    :func:`pack_bits` and :func:`pack_kernel` write them): matching bits
    add nothing to the popcount.

    Layout (see the benchmarks page): a loop over the ``W`` words,
    unrolled 4 times, each step adding ``popcount(a[:, w] ^ k[w, :])`` to a
    ``uint32 (rows, out)`` accumulator, with the kernel word-major
    (:class:`XnorKernel`) so every step reads one contiguous row and XLA
    vectorizes along the outputs. For wide layers with many rows
    (``out >= 2048``, ``rows >= 16``) the outputs are processed in blocks
    of 512 columns so the accumulator stays in cache. A fused reduction
    over the word axis is slower on CPU: XLA emits a scalar loop for it.

    Args:
      a_words: ``uint32 (..., W_a)`` packed inputs.
      k_words: the kernel from :func:`prepare_xnor_kernel`, or its
        ``uint32 (out, W_k)`` words (transposed on every call),
        ``W_k >= W_a``.
      n: the true vector length (``<= 32 * W_a``).

    Returns:
      ``int32 (..., out)`` dot products, integers in ``[-n, n]`` of the
      parity of ``n``.
    """
    a = jnp.asarray(a_words)
    if isinstance(k_words, XnorKernel):
        k_t = k_words.words_t
    else:
        k = jnp.asarray(k_words)
        if k.ndim != 2:
            raise ValueError(
                "xnor_dense expects k_words (out, W) or an XnorKernel, got "
                f"shape {k.shape}."
            )
        k_t = k.T
    if a.dtype != jnp.uint32 or k_t.dtype != jnp.uint32:
        raise TypeError(
            f"xnor_dense expects uint32 words, got {a.dtype} and {k_t.dtype}."
        )
    if a.ndim < 1:
        raise ValueError(
            f"xnor_dense expects a_words (..., W), got shape {a.shape}."
        )
    words, out = k_t.shape
    if a.shape[-1] > words or n > WORD_BITS * a.shape[-1]:
        raise ValueError(
            f"a_words has {a.shape[-1]} words and k_words {words}; "
            f"need n={n} <= 32 * {a.shape[-1]} and W_a <= W_k."
        )
    batch = a.shape[:-1]
    a_t = _pad_last(a.reshape(-1, a.shape[-1]), words).T  # (W, rows)
    rows = a_t.shape[1]
    if out >= _XNOR_BLOCK_MIN_OUT and rows >= _XNOR_BLOCK_MIN_ROWS:
        blocks = out // _XNOR_BLOCK
        head = blocks * _XNOR_BLOCK

        def block(j: jax.Array) -> jax.Array:
            k_j = lax.dynamic_slice_in_dim(k_t, j * _XNOR_BLOCK, _XNOR_BLOCK, 1)
            return _xnor_popcounts(a_t, k_j)

        counts = lax.map(block, jnp.arange(blocks, dtype=jnp.int32))
        counts = counts.transpose(1, 0, 2).reshape(rows, head)
        if head < out:
            tail = _xnor_popcounts(a_t, k_t[:, head:])
            counts = jnp.concatenate([counts, tail], axis=1)
    else:
        counts = _xnor_popcounts(a_t, k_t)
    return (n - 2 * counts.astype(jnp.int32)).reshape(*batch, out)


def prepare_binary_weights(
    words: jax.typing.ArrayLike, n_in: int
) -> BinaryWeights:
    """Lays out ``(out, ..., W)`` kernel words for real-valued inputs.

    Args:
      words: ``uint32 (out, ..., W)`` packed kernel; trailing axes other
        than the last are flattened into the input axis (im2col order),
        so a convolution kernel ``(out, kh, kw, W)`` becomes a dense kernel
        over ``kh * kw * n_in`` inputs.
      n_in: input features per word row (``in`` of the flax kernel).

    Returns:
      A :class:`BinaryWeights`.
    """
    words = jnp.asarray(words)
    words_t, bytes_t = _binary_weight_layouts(words, n_in)
    k = n_in * math.prod(words.shape[1:-1])
    return BinaryWeights(words_t=words_t, bytes_t=bytes_t, n_in=k)


@functools.partial(jax.jit, static_argnums=1)
def _binary_weight_layouts(
    words: jax.Array, n_in: int
) -> tuple[jax.Array, jax.Array]:
    """:func:`prepare_binary_weights`'s two layouts, compiled as one
    program (it runs once per layer when a model is loaded)."""
    bits = unpack_bits(words, n_in).reshape(words.shape[0], -1)  # (out, K)
    return (
        pack_bits(bits).T,
        jnp.packbits(bits, axis=-1, bitorder="little").T,
    )


def _subset_sums(x: jax.Array) -> jax.Array:
    """``t[..., v] = sum_j (x[..., j] if bit j of v else -x[..., j])``.

    ``x`` has 8 entries on its last axis; the 256 signed sums are built
    with additions only (one doubling step per bit).
    """
    t = jnp.zeros((*x.shape[:-1], 1), x.dtype)
    for j in range(x.shape[-1]):
        xj = x[..., j : j + 1]
        t = jnp.concatenate([t - xj, t + xj], axis=-1)
    return t


def _lookup_dense(x: jax.Array, bytes_t: jax.Array) -> jax.Array:
    rows = x.shape[0]
    groups = bytes_t.shape[0]
    x = _pad_last(x, 8 * groups).reshape(rows, groups, 8)
    table = _subset_sums(x).reshape(rows, groups * 256)
    offsets = 256 * jnp.arange(groups, dtype=jnp.int32).reshape(groups, 1)
    index = bytes_t.astype(jnp.int32) + offsets  # (groups, out)
    return jnp.sum(jnp.take(table, index, axis=1), axis=1)


def _unpack_columns(
    words_t: jax.Array, n: int, dtype: jax.typing.DTypeLike
) -> jax.Array:
    """``(W, cols)`` words to the ``(n, cols)`` signs, ``+-1`` in ``dtype``.

    The float32 ``+-1.0`` is assembled from its bits (``0x3F800000`` is
    ``1.0``; a 0 bit sets the sign bit): one shift and one or per weight,
    no select or conversion, so unpacking costs little next to the dot.
    """
    w, cols = words_t.shape
    bits = (words_t[:, None, :] >> _bit_shifts(3, 1)) & 1
    pattern = ((bits ^ 1) << 31) | jnp.uint32(0x3F800000)
    signs = lax.bitcast_convert_type(pattern, jnp.float32)
    return signs.reshape(w * WORD_BITS, cols)[:n].astype(dtype)


def _unpack_dense(
    x: jax.Array, words_t: jax.Array, n: int, alpha: jax.Array | None
) -> jax.Array:
    w, out = words_t.shape
    target = max(_LANES, _UNPACK_BLOCK_BYTES // (4 * max(n, 1)))
    block = next(
        (b for b in range(min(out, target), 0, -1) if out % b == 0), out
    )

    def columns(cols: jax.Array) -> jax.Array:
        return x @ _unpack_columns(cols, n, x.dtype)

    if block >= out or block < _LANES:
        y = columns(words_t)
    else:
        blocks = out // block
        cols = words_t.reshape(w, blocks, block).transpose(1, 0, 2)
        y = lax.map(columns, cols)
        y = y.transpose(1, 0, 2).reshape(x.shape[0], out)
    # (x @ S) * alpha: the sign product first, as the bnnjax layers compute.
    return y if alpha is None else y * alpha.reshape(1, out)


def binary_weight_dense(
    x: jax.typing.ArrayLike,
    weights: BinaryWeights,
    alpha: jax.typing.ArrayLike | None = None,
    *,
    method: str = "auto",
) -> jax.Array:
    """``x @ (alpha * sign(W))`` for real ``x`` from packed signs only.

    Methods (``method``), all exact up to float rounding:

    * ``"lookup"`` (multiply-free): for every byte ``g`` of packed signs
      (8 inputs), the 256 signed sums ``sum_j +-x[8g + j]`` are built by
      additions; each output sums one table entry per byte. Work is
      ``rows * (n * 32 + n * out / 8)`` additions, so it wins for a few
      rows.
    * ``"unpack"``: unpacks blocks of output columns to ``+-1.0`` (about
      4 MiB each, so a block stays in cache), runs the float dot
      ``x @ S`` and scales, ``(x @ S) * alpha``: the product the
      :mod:`bnnjax.nn` layers compute, bit for bit where XLA runs the same
      dot. The dot's cost dominates for many rows: on CPU it is the float32
      layer's own cost, since 1-bit weights remove no multiply-add.
    * ``"auto"``: ``"lookup"`` for at most 2 rows of at most 4096 inputs
      (the table, ``n * 128`` bytes per row, stays in cache), else
      ``"unpack"`` (the crossover is on the benchmarks page).

    Args:
      x: ``(..., n_in)`` real inputs.
      weights: kernel from :func:`prepare_binary_weights`.
      alpha: optional ``(out,)`` per-output scale.
      method: ``"auto"``, ``"lookup"`` or ``"unpack"``.

    Returns:
      ``(..., out)`` array in ``x``'s (floating) dtype.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.shape[-1] != weights.n_in:
        raise ValueError(
            f"inputs of shape {x.shape} do not match a binary kernel with "
            f"{weights.n_in} input features."
        )
    if method not in ("auto", "lookup", "unpack"):
        raise ValueError(
            f"method={method!r}; expected 'auto', 'lookup' or 'unpack'."
        )
    batch = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if method == "auto":
        small = x2.shape[0] <= _LUT_MAX_ROWS and weights.n_in <= _LUT_MAX_INPUTS
        method = "lookup" if small else "unpack"
    out = weights.words_t.shape[-1]
    if alpha is not None:
        alpha = jnp.asarray(alpha, x.dtype).reshape(out)
    if method == "lookup":
        y = _lookup_dense(x2, weights.bytes_t.astype(jnp.uint8))
        if alpha is not None:
            y = y * alpha.reshape(1, out)
    else:
        y = _unpack_dense(x2, weights.words_t, weights.n_in, alpha)
    return y.reshape(*batch, out)


def _conv_geometry(
    spatial: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
) -> tuple[int, ...]:
    out = []
    for size, k, s, d, (lo, hi) in zip(
        spatial, kernel_size, strides, dilation, padding, strict=True
    ):
        span = (k - 1) * d + 1
        padded = size + lo + hi
        if padded < span:
            raise ValueError(
                f"a window of size {span} does not fit in a padded spatial "
                f"size of {padded}."
            )
        out.append((padded - span) // s + 1)
    return tuple(out)


def im2col(
    x: jax.typing.ArrayLike,
    kernel_size: Sequence[int],
    *,
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
    pad_value: float | bool | int = 0,
) -> jax.Array:
    """Windows of a channels-last array, for any dtype.

    Pads the spatial axes of ``(batch, *spatial, C)`` with ``pad_value``
    (negative pads crop) and gathers every window by strided slicing, the
    same windows as ``lax.conv_general_dilated`` with explicit padding.
    Unlike ``lax.conv_general_dilated_patches`` (a float convolution with a
    one-hot kernel, ``C * prod(kernel_size)`` multiply-adds per value) this
    copies values, so it also works on ``uint32`` words and booleans, and
    its window order ``(*kernel_size, C)`` matches a flax kernel's
    ``(*kernel_size, in)`` axes.

    Args:
      x: ``(batch, *spatial, C)`` array.
      kernel_size: window shape.
      strides: window strides.
      dilation: kernel dilation.
      padding: one ``(low, high)`` pair per spatial axis.
      pad_value: the padding constant.

    Returns:
      ``(batch, *out_spatial, *kernel_size, C)`` array.
    """
    x = jnp.asarray(x)
    rank = len(kernel_size)
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)]
    if any(p != (0, 0) for p in padding):
        x = lax.pad(x, jnp.asarray(pad_value, x.dtype), config)
    zero = ((0, 0),) * rank
    out = _conv_geometry(x.shape[1:-1], kernel_size, strides, dilation, zero)
    taps = []
    for offsets in itertools.product(*(range(k) for k in kernel_size)):
        start = [0, *(o * d for o, d in zip(offsets, dilation, strict=True)), 0]
        limit = [
            x.shape[0],
            *(
                s0 + (n - 1) * s + 1
                for s0, n, s in zip(start[1:-1], out, strides, strict=True)
            ),
            x.shape[-1],
        ]
        taps.append(lax.slice(x, start, limit, [1, *strides, 1]))
    patches = jnp.stack(taps, axis=-2)  # (batch, *out, taps, C)
    return patches.reshape(*patches.shape[:-2], *kernel_size, x.shape[-1])


def _padding_taps(
    spatial: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
) -> np.ndarray:
    """``(*out_spatial, taps)`` 0/1: which window taps read padding."""
    out = _conv_geometry(spatial, kernel_size, strides, dilation, padding)
    per_axis = []
    for size, k, s, d, (lo, _), n in zip(
        spatial, kernel_size, strides, dilation, padding, out, strict=True
    ):
        pos = np.arange(n)[:, None] * s + np.arange(k)[None, :] * d - lo
        per_axis.append((pos < 0) | (pos >= size))  # (out_i, k_i)
    outside = np.zeros((*out, *kernel_size), bool)
    for axis, mask in enumerate(per_axis):
        shape = [1] * (2 * len(out))
        shape[axis] = mask.shape[0]
        shape[len(out) + axis] = mask.shape[1]
        outside = outside | mask.reshape(shape)
    return outside.reshape(*out, -1).astype(np.int32)


def _check_groups(channels: int, groups: int, n_in: int, what: str) -> None:
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(
            f"feature_group_count must be a positive int, got {groups!r}."
        )
    if channels != groups * n_in:
        raise ValueError(
            f"{what} has {channels} input channels; the kernel expects "
            f"feature_group_count * n_in = {groups} * {n_in}."
        )


def _group_columns(k_t: jax.Array, groups: int) -> jax.Array:
    """``(K, G * O)`` column groups to ``(G, K, O)``."""
    rows, cols = k_t.shape
    return k_t.reshape(rows, groups, cols // groups).transpose(1, 0, 2)


def _group_patches(patches: jax.Array, groups: int, rank: int) -> jax.Array:
    """:func:`im2col` windows ``(batch, *out, *kernel_size, G * C)`` to
    ``(G, batch, *out, taps * C)``: each group's channels, window-major."""
    lead = patches.shape[: 1 + rank]
    per_group = patches.shape[-1] // groups
    patches = patches.reshape(*lead, -1, groups, per_group)
    return jnp.moveaxis(patches, -2, 0).reshape(groups, *lead, -1)


def _ungroup_outputs(y: jax.Array) -> jax.Array:
    """``(G, *lead, O)`` group outputs to ``(*lead, G * O)``."""
    y = jnp.moveaxis(y, 0, -2)
    return y.reshape(*y.shape[:-2], -1)


def xnor_conv(
    bits: jax.typing.ArrayLike,
    k_words: XnorKernel | jax.typing.ArrayLike,
    *,
    n_in: int,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
    pad_value: float,
    tap_sums: jax.typing.ArrayLike | None = None,
    feature_group_count: int = 1,
) -> jax.Array:
    """A convolution of ``+-1`` inputs with a packed ``+-1`` kernel.

    The inputs (``True`` = ``+1``) are padded, packed per pixel along the
    channels (per feature group), cut into windows by :func:`im2col` on
    the packed words, and reduced by :func:`xnor_dense`. Padding:

    * ``pad_value`` ``+1`` or ``-1``: padded bits are 1 or 0, exact;
    * ``pad_value`` ``0`` (zeros cannot be stored as bits): padded
      positions are stored as ``-1`` and the exact result is restored by
      adding, for every tap that reads padding, the sum of that tap's
      kernel weights over the input channels (``tap_sums``).

    Grouped convolutions (``feature_group_count = G``, as
    ``lax.conv_general_dilated``): input channels ``[g C/G, (g+1) C/G)``
    feed output channels ``[g O/G, (g+1) O/G)``; each group is its own
    XNOR-popcount product (``vmap`` over the groups), so a depthwise layer
    (``C/G = 1``) stores one bit per 32-bit word.

    Args:
      bits: ``(batch, *spatial, G * n_in)`` booleans.
      k_words: kernel words ``(out, *kernel_size, ceil(n_in / 32))`` or
        the same through :func:`prepare_xnor_kernel`.
      n_in: input channels per group (``in`` of the flax kernel).
      kernel_size: window shape.
      strides: window strides.
      dilation: kernel dilation.
      padding: one ``(low, high)`` pair per spatial axis.
      pad_value: ``-1``, ``0`` or ``1``.
      tap_sums: ``int32 (taps, out)`` kernel sums per tap, needed for
        ``pad_value=0`` with padding (see :func:`kernel_tap_sums`).
      feature_group_count: number of feature groups ``G``.

    Returns:
      ``int32 (batch, *out_spatial, out)`` exact dot products.
    """
    bits = jnp.asarray(bits, bool)
    if pad_value not in (-1, 0, 1):
        raise ValueError(
            f"pad_value={pad_value!r}: a binary-input convolution can pad "
            "with -1, 0 or 1 only."
        )
    groups = feature_group_count
    _check_groups(bits.shape[-1], groups, n_in, "bits")
    kernel_size = tuple(kernel_size)
    padding = tuple((low, high) for low, high in padding)
    rank = len(kernel_size)
    spatial = bits.shape[1:-1]
    padded = lax.pad(
        bits,
        jnp.asarray(pad_value > 0),
        [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)],
    )
    padded = padded.reshape(*padded.shape[:-1], groups, n_in)
    words = pack_bits(padded)  # (batch, *spatial', G, W)
    words = words.reshape(*words.shape[:-2], -1)
    patches = im2col(
        words,
        kernel_size,
        strides=strides,
        dilation=dilation,
        padding=((0, 0),) * rank,
    )  # (batch, *out, *kernel_size, G * W)
    lead = patches.shape[: 1 + rank]
    if not isinstance(k_words, XnorKernel):
        k_words = prepare_xnor_kernel(k_words)
    n = math.prod(kernel_size) * n_in
    if groups == 1:
        counts = xnor_dense(patches.reshape(*lead, -1), k_words, n)
    else:
        k_t = _group_columns(k_words.words_t, groups)
        counts = jax.vmap(lambda a, k: xnor_dense(a, XnorKernel(k), n))(
            _group_patches(patches, groups, rank), k_t
        )
        counts = _ungroup_outputs(counts)
    if pad_value == 0 and any(p != (0, 0) for p in padding):
        if tap_sums is None:
            raise ValueError("pad_value=0 with padding needs tap_sums.")
        outside = _padding_taps(
            spatial, kernel_size, strides, dilation, padding
        )
        correction = jnp.tensordot(
            jnp.asarray(outside), jnp.asarray(tap_sums, jnp.int32), axes=1
        )
        counts = counts + correction.reshape(1, *lead[1:], -1)
    return counts


def kernel_tap_sums(words: jax.typing.ArrayLike, n_in: int) -> jax.Array:
    """``int32 (taps, out)``: the sum of each tap's ``+-1`` weights.

    Args:
      words: ``(out, *kernel_size, ceil(n_in / 32))`` kernel words.
      n_in: input channels.
    """
    return _kernel_tap_sums(jnp.asarray(words), n_in)


@functools.partial(jax.jit, static_argnums=1)
def _kernel_tap_sums(words: jax.Array, n_in: int) -> jax.Array:
    """:func:`kernel_tap_sums` compiled as one program (once per layer
    when a model is loaded)."""
    ones = jnp.sum(
        lax.population_count(words).astype(jnp.int32), axis=-1
    ).reshape(words.shape[0], -1)
    return (2 * ones - n_in).T


def binary_weight_conv(
    x: jax.typing.ArrayLike,
    weights: BinaryWeights,
    alpha: jax.typing.ArrayLike | None = None,
    *,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Sequence[tuple[int, int]],
    pad_value: float = 0.0,
    method: str = "auto",
    feature_group_count: int = 1,
) -> jax.Array:
    """A convolution of real inputs with a packed binary kernel.

    :func:`im2col` (padding with ``pad_value``, any real) feeding
    :func:`binary_weight_dense`; ``weights`` comes from
    :func:`prepare_binary_weights` on the ``(out, *kernel_size, W)``
    kernel words. With ``feature_group_count = G`` each group of ``C/G``
    input channels and ``O/G`` outputs is its own product (``vmap`` over
    the groups), as ``lax.conv_general_dilated``.

    Returns:
      ``(batch, *out_spatial, out)`` real outputs.
    """
    x = jnp.asarray(x)
    groups = feature_group_count
    taps = math.prod(kernel_size)
    if weights.n_in % taps:
        raise ValueError(
            f"weights hold {weights.n_in} inputs per output, not a multiple "
            f"of the {taps} taps of a {tuple(kernel_size)} window."
        )
    _check_groups(x.shape[-1], groups, weights.n_in // taps, "x")
    patches = im2col(
        x,
        kernel_size,
        strides=strides,
        dilation=dilation,
        padding=padding,
        pad_value=pad_value,
    )
    lead = patches.shape[: 1 + len(kernel_size)]
    if groups == 1:
        patches = patches.reshape(*lead, -1)
        return binary_weight_dense(patches, weights, alpha, method=method)
    out = weights.words_t.shape[-1]
    scales = (
        None if alpha is None else jnp.reshape(alpha, (groups, out // groups))
    )

    def group(
        p: jax.Array,
        words_t: jax.Array,
        bytes_t: jax.Array,
        scale: jax.Array | None,
    ) -> jax.Array:
        w = BinaryWeights(words_t, bytes_t, weights.n_in)
        return binary_weight_dense(p, w, scale, method=method)

    y = jax.vmap(group)(
        _group_patches(patches, groups, len(kernel_size)),
        _group_columns(weights.words_t, groups),
        _group_columns(weights.bytes_t, groups),
        scales,
    )
    return _ungroup_outputs(y)


def batch_norm(
    y: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    var: jax.typing.ArrayLike,
    scale: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike,
    epsilon: float,
) -> jax.Array:
    """Eval-mode batch norm over the last axis, in flax's operation order.

    ``(y - mean) * (rsqrt(var + epsilon) * scale) + bias``, the sequence
    of ``flax.linen.BatchNorm`` with running averages, so XLA compiles it
    to the same float operations (on CPU it contracts the last multiply
    and add into one fused multiply-add).
    """
    y = jnp.asarray(y)
    c = y.shape[-1]

    def row(v: jax.typing.ArrayLike) -> jax.Array:
        return jnp.asarray(v, y.dtype).reshape((1,) * (y.ndim - 1) + (c,))

    mul = lax.rsqrt(row(var) + epsilon) * row(scale)
    return (y - row(mean)) * mul + row(bias)


@functools.partial(jax.jit, static_argnums=5)
def _bn_positive(
    y: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    epsilon: float,
) -> jax.Array:
    return batch_norm(y, mean, var, scale, bias, epsilon) >= 0


@functools.partial(jax.jit, static_argnums=2)
def _bn_mul(var: jax.Array, scale: jax.Array, epsilon: float) -> jax.Array:
    return lax.rsqrt(var + epsilon) * scale


_F32_NEG_INF_KEY = -0x7F800001
_F32_POS_INF_KEY = 0x7F800000


def _keys_to_f32(keys: np.ndarray) -> np.ndarray:
    """Inverse of the order-preserving map float32 -> int (see below)."""
    keys = np.asarray(keys, np.int64)
    bits = np.where(keys >= 0, keys, (-keys - 1) | 0x80000000)
    return bits.astype(np.uint32).view(np.float32)


def _smallest_true(
    pred: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Per channel, the smallest ``k`` in ``[lo, hi)`` with ``pred(k)``.

    ``pred`` is non-decreasing in ``k``; returns ``hi`` where it is never
    true. Vectorized binary search over int64 arrays.
    """
    lo = np.array(lo, np.int64)
    hi = np.array(hi, np.int64)
    while np.any(lo < hi):
        active = lo < hi
        mid = np.where(active, (lo + hi) // 2, lo)
        ok = pred(mid) & active
        hi = np.where(ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
    return lo


def fold_batch_norm_sign(
    mean: jax.typing.ArrayLike,
    var: jax.typing.ArrayLike,
    scale: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike,
    epsilon: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds ``sign(batch_norm(y))`` into a threshold and a flip per channel.

    Returns ``(threshold, flip)`` such that, for every finite float32
    ``y``::

        sign(batch_norm(y)) == +1   <=>   (y >= threshold) != flip

    with ``sign(0) = sign(-0.0) = +1`` and :func:`batch_norm` as XLA
    computes it on this backend. With ``mul = rsqrt(var + eps) * scale``,
    the normalized value is monotone in ``y``: non-decreasing for
    ``mul > 0`` (``flip = False``: ``+1`` at and above the threshold),
    non-increasing for ``mul < 0`` (``flip = True``: ``+1`` strictly below
    the threshold, ``sign(gamma (y - mu) / s + beta) = -sign(y - t)`` with
    the tie at ``t`` resolved as the float model resolves it), constant for
    ``mul == 0`` (``gamma == 0``: ``sign(beta)``, threshold ``-inf``).
    Rather than solving ``y = mu - beta / mul`` in real arithmetic (off by
    rounding at ties), the threshold is found by binary search over the
    ordered float32 values, evaluating the batch norm itself, so ties and
    ``-0.0`` resolve exactly as in the float model.

    Args:
      mean, var, scale, bias: ``(C,)`` batch-norm running mean and
        variance, scale and bias.
      epsilon: batch-norm epsilon.

    Returns:
      ``threshold`` float32 ``(C,)`` (``-inf``: always at or above; ``+inf``:
      never) and ``flip`` bool ``(C,)``.

    Raises:
      ValueError: for non-finite parameters or a negative variance.
    """
    params = [
        np.asarray(v, np.float32).reshape(-1) for v in (mean, var, scale, bias)
    ]
    c = params[0].shape[0]
    if any(p.shape != (c,) for p in params):
        raise ValueError("mean, var, scale and bias must have one shape (C,).")
    if not all(np.isfinite(p).all() for p in params):
        raise ValueError("batch-norm parameters must be finite.")
    if (params[1] < 0).any():
        raise ValueError("batch-norm variances must be >= 0.")
    mean, var, scale, bias = (jnp.asarray(p) for p in params)

    def positive(y: jax.Array) -> jax.Array:
        return _bn_positive(y, mean, var, scale, bias, epsilon)

    mul = np.asarray(_bn_mul(var, scale, epsilon))
    if not np.isfinite(mul).all():
        raise ValueError("rsqrt(var + epsilon) * scale overflows.")
    flip = mul < 0

    def pred(keys: np.ndarray) -> np.ndarray:
        y = jnp.asarray(_keys_to_f32(keys).reshape(1, c))
        return np.asarray(positive(y)).reshape(c) != flip

    lo = np.full(c, _F32_NEG_INF_KEY)
    hi = np.full(c, _F32_POS_INF_KEY + 1)
    key = _smallest_true(pred, lo, hi)
    threshold = np.where(
        key > _F32_POS_INF_KEY,
        np.float32(np.inf),
        _keys_to_f32(np.minimum(key, _F32_POS_INF_KEY)),
    ).astype(np.float32)
    # gamma == 0: a constant sign(beta); encode as threshold -inf.
    constant = mul == 0
    if constant.any():
        zero = jnp.zeros((1, c), jnp.float32)
        pos0 = np.asarray(positive(zero)).reshape(c)
        threshold = np.where(constant, np.float32(-np.inf), threshold)
        flip = np.where(constant, ~pos0, flip)
    return threshold.astype(np.float32), flip.astype(bool)


def fold_count_threshold(
    threshold: jax.typing.ArrayLike,
    flip: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Turns a float threshold on ``y = alpha * c`` into one on the count.

    For XNOR layers the exact pre-activation is an integer count
    ``c in [-n, n]`` and the float layer's output is ``y = fl(alpha * c)``
    (one rounding). Returns integer thresholds ``t`` with::

        (fl(alpha * c) >= threshold) != flip   <=>   (c >= t) != flip

    for every integer ``c`` in ``[-n, n]`` (``fl(alpha * c)`` is
    non-decreasing in ``c`` for ``alpha >= 0``; found by binary search over
    the counts, so rounding at the boundary is honoured).

    Args:
      threshold, flip: from :func:`fold_batch_norm_sign`.
      alpha: ``(C,)`` per-channel kernel scale, ``>= 0``.
      n: the fan-in (number of ``+-1`` terms in each count).

    Returns:
      ``t`` int32 ``(C,)`` (``-n``: always; ``n + 1``: never) and ``flip``.

    Raises:
      ValueError: for a negative or non-finite ``alpha``.
    """
    threshold = np.asarray(threshold, np.float32).reshape(-1)
    alpha = np.broadcast_to(
        np.asarray(alpha, np.float32).reshape(-1), threshold.shape
    )
    if not (np.isfinite(alpha).all() and (alpha >= 0).all()):
        raise ValueError("kernel scales alpha must be finite and >= 0.")

    def pred(c: np.ndarray) -> np.ndarray:
        return (alpha * c.astype(np.float32)).astype(np.float32) >= threshold

    lo = np.full(threshold.shape, -n)
    hi = np.full(threshold.shape, n + 1)
    t = _smallest_true(pred, lo, hi)
    return t.astype(np.int32), np.asarray(flip, bool).reshape(-1)

"""Boolean arrays stored as bits: eight entries per ``uint8``.

The residual policy of the binary layers keeps ``+-1`` operands and the
clipped STE's window masks for the backward pass in this form
(:mod:`bnnjax.nn._residuals`, :func:`bnnjax.binarize`). Bit ``i`` of the
flattened array is entry ``i``, in little-endian bit order within a byte
(``jnp.packbits(..., bitorder="little")``); the last byte is padded with
zeros.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["pack_bits", "unpack_bits"]


def pack_bits(mask: jax.Array) -> jax.Array:
    """Packs a boolean array into a ``uint8`` vector of ``ceil(size / 8)``."""
    return jnp.packbits(jnp.reshape(mask, (-1,)), bitorder="little")


def unpack_bits(bits: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The boolean array of ``shape`` that :func:`pack_bits` packed."""
    flat = jnp.unpackbits(bits, count=math.prod(shape), bitorder="little")
    return jnp.reshape(flat.astype(jnp.bool_), shape)

"""Boolean arrays stored as bits: eight entries per ``uint8``.

The residual policy of the binary layers keeps ``+-1`` operands and the
clipped STE's window masks for the backward pass in this form
(:mod:`bnnjax.nn._residuals`, :func:`bnnjax.binarize`). The last axis is
packed, eight entries to a byte in little-endian bit order
(``jnp.packbits(..., axis=-1, bitorder="little")``), the last byte of each
row padded with zeros; the leading axes stay as they are, so an array
sharded along its batch axis packs and unpacks shard by shard.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["pack_bits", "unpack_bits"]


def pack_bits(mask: jax.Array) -> jax.Array:
    """Packs a boolean array along its last axis: ``(..., ceil(n / 8))``
    ``uint8`` for ``(..., n)`` (a scalar is packed as ``(1,)``)."""
    return jnp.packbits(jnp.atleast_1d(mask), axis=-1, bitorder="little")


def unpack_bits(bits: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The boolean array of ``shape`` that :func:`pack_bits` packed."""
    count = shape[-1] if shape else 1
    flat = jnp.unpackbits(bits, axis=-1, count=count, bitorder="little")
    return jnp.reshape(flat.astype(jnp.bool_), shape)

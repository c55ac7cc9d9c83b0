"""Binary kernels as a packed model stores them: sign words and scales.

A kernel binarizer's output ``alpha * sign(W)`` is split into the signs,
packed 32 per ``uint32`` word along the input features, and one float32
magnitude per output channel, so that ``alpha * sign`` equals the float
model's binarized kernel bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import packed as packed_lib
from bnnjax.binarize import Binarizer
from bnnjax.scale import NoScale, reduce_axes


def _signs_and_scale(
    latent: np.ndarray, binarizer: Binarizer, where: str, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """Packs ``binarizer(latent) = alpha * sign``: (words, alpha).

    ``words`` is ``uint32 (out, *kernel_size, ceil(in / 32))`` (the file
    layout), ``alpha`` float32 ``(out,)``, taken from the binarizer's own
    output so ``alpha * sign`` equals it bit for bit.
    """
    if binarizer.stochastic:
        raise ValueError(
            f"{where}: the kernel binarizer of {path} uses "
            f"{type(binarizer.surrogate).__name__}, whose forward pass "
            "is random; export needs a deterministic binarizer."
        )
    axes = reduce_axes(latent.ndim, binarizer.axis)
    if axes not in (
        tuple(range(latent.ndim)),
        tuple(range(latent.ndim - 1)),
    ):
        raise ValueError(
            f"{where}: the kernel binarizer of {path} has "
            f"axis={binarizer.axis!r}; export supports one scale per "
            "tensor (axis=None) or per output channel (axis=-1)."
        )
    kernel = np.asarray(_binarized(jnp.asarray(latent), binarizer))
    out = kernel.shape[-1]
    magnitude = np.abs(kernel).reshape(-1, out)
    alpha = magnitude[0].astype(np.float32)
    if not (np.isfinite(alpha).all() and (magnitude == alpha).all()):
        raise ValueError(
            f"{where}: the kernel binarizer of {path} does not give "
            "alpha * sign(W) with one finite alpha per output channel."
        )
    bits = ~np.signbit(kernel)  # alpha * (+-1); also right for alpha == 0
    return _pack_words(np.moveaxis(bits, -1, 0)), alpha


@functools.partial(jax.jit, static_argnums=1)
def _binarized(latent: jax.Array, binarizer: Binarizer) -> jax.Array:
    """``binarizer(latent)`` at the end of training, compiled as one
    program (as the model's jitted forward pass computes it), not op by
    op."""
    return binarizer(latent, progress=1.0)


def _pack_words(bits: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`bnnjax.packed.pack_bits` on the last axis."""
    n = bits.shape[-1]
    words = -(-n // packed_lib.WORD_BITS)
    as_bytes = np.packbits(bits, axis=-1, bitorder="little")
    pad = [(0, 0)] * (bits.ndim - 1) + [(0, 4 * words - as_bytes.shape[-1])]
    as_bytes = np.ascontiguousarray(np.pad(as_bytes, pad))
    return as_bytes.view("<u4").reshape(*bits.shape[:-1], words)


def _is_plain_sign(binarizer: Binarizer) -> bool:
    """Whether ``binarizer`` is a per-example ``sign``: no scale, no
    centring, deterministic (a scale or centring of activations depends on
    the whole batch)."""
    scale_free = binarizer.scale is None or isinstance(binarizer.scale, NoScale)
    return scale_free and not binarizer.center and not binarizer.stochastic

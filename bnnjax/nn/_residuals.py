"""Residual policy: what a binary layer's product keeps for the backward pass.

Reverse-mode autodiff of ``y = product(a, b)`` (a dense product or a
convolution, linear in each operand) keeps both operands until the
backward pass: ``da = product_a^T(g, b)`` needs ``b`` and ``db =
product_b^T(a, g)`` needs ``a``. In a binary layer an operand that is a
sign (every entry ``+1`` or ``-1``: the kernel's signs, and the inputs
when an input binarizer without a scale gives them) carries one bit of
information per entry, but autodiff keeps it in the computation dtype, 32
bits per entry in float32.

``residuals="packed"`` keeps such an operand as bits instead: the forward
pass packs ``a > 0`` eight entries per ``uint8`` (``jnp.packbits``) and the
backward pass unpacks it to ``+-1`` in the operand's dtype and runs the
very products autodiff runs (``jax.vjp`` of ``product``). The unpacked
operand equals the saved one entry for entry, so the gradients are the
unpacked path's bit for bit. The forward values are unchanged (the
product runs on the operands as given). Real-valued operands are kept as
they are.

Exactness. A sign operand is exactly recovered from its bits when every
entry is ``+1`` or ``-1``. The binarizers' ``sign`` gives ``NaN`` for a
``NaN`` input (a diverged run); its bit is then ``0`` and unpacks to
``-1``. The forward output stays ``NaN`` and so does every gradient
computed from it, so a diverged step is still reported as diverged; only
the values of a ``NaN`` step's gradients may differ from the unpacked
path's.

``"auto"`` packs a dense layer's residuals on the CPU backend where that
measured as a saving of the training step's temporary memory (at least
1,024 rows and 4,096 input features, :func:`dense_packing_saves`) and
keeps autodiff's residuals everywhere else: packing's own buffers cost
more than the float32 residuals they replace in smaller layers, and
convolutions and accelerators are not measured to gain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast

import jax
import jax.numpy as jnp

from bnnjax import _bits
from bnnjax.binarize import Binarizer, Surrogate, _forward_is_sign
from bnnjax.scale import NoScale

Residuals = Literal["auto", "packed", "unpacked"]
RESIDUALS: tuple[str, ...] = ("auto", "packed", "unpacked")

# "auto" packs a dense layer's residuals on the CPU backend from these
# sizes on (the MLP grids of the training memory results page).
_AUTO_MIN_ROWS = 1024
_AUTO_MIN_IN_FEATURES = 4096

__all__ = [
    "RESIDUALS",
    "Residuals",
    "check_residuals",
    "dense_packing_saves",
    "pack_signs",
    "packed_residuals_apply",
    "product_with_residuals",
    "resolve_dense_residuals",
    "unpack_signs",
]


def check_residuals(value: object) -> Residuals:
    """Returns ``value`` if it is one of :data:`RESIDUALS`, else raises."""
    if not isinstance(value, str) or value not in RESIDUALS:
        raise ValueError(
            f"residuals={value!r}; expected one of {', '.join(RESIDUALS)} "
            "('packed': sign operands kept as bits for the backward pass; "
            "'unpacked': kept in the computation dtype; 'auto': packed "
            "where that measured as a saving, else unpacked)."
        )
    return cast(Residuals, value)


def dense_packing_saves(rows: int, in_features: int) -> bool:
    """Whether ``residuals="auto"`` packs a dense layer's residuals.

    True on the CPU backend for products of at least 1,024 rows and 4,096
    input features. The rule follows whole training steps of fully binary
    MLPs (BinaryNet's rule, every layer packed or none) compiled on an x86
    CPU: packing lowered the step's temporary memory only where the
    hidden layers had 4,096 or more features and the batch 1,024 or more
    rows, and raised it everywhere else measured (the packing and
    unpacking buffers outweigh float32 residuals of fewer rows or
    features); the step time did not change. False elsewhere, GPUs and
    TPUs included, where it is not measured.

    Args:
      rows: rows of the layer's product (every input axis but the last).
      in_features: input features (the kernel's first axis).
    """
    return (
        rows >= _AUTO_MIN_ROWS
        and in_features >= _AUTO_MIN_IN_FEATURES
        and jax.default_backend() == "cpu"
    )


def resolve_dense_residuals(
    residuals: Residuals, *, rows: int, in_features: int
) -> Residuals:
    """``residuals`` for a dense layer, ``"auto"`` made ``"packed"`` where
    :func:`dense_packing_saves` and ``"unpacked"`` elsewhere."""
    if residuals != "auto":
        return residuals
    return "packed" if dense_packing_saves(rows, in_features) else "unpacked"


def pack_signs(signs: jax.Array) -> jax.Array:
    """Packs a ``+-1`` array into bits along its last axis.

    ``(..., n)`` becomes ``(..., ceil(n / 8))`` ``uint8``: a set bit for
    ``+1``, eight entries to a byte in little-endian bit order
    (``jnp.packbits(..., axis=-1, bitorder="little")``).
    """
    return _bits.pack_bits(signs > 0)


def unpack_signs(
    bits: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype
) -> jax.Array:
    """The inverse of :func:`pack_signs`: ``+1`` for a set bit, else ``-1``.

    Args:
      bits: the packed ``uint8`` vector.
      shape: the shape of the packed array.
      dtype: the dtype of the result.
    """
    return jnp.where(_bits.unpack_bits(bits, shape), 1, -1).astype(dtype)


def _gives_signs(binarizer: Binarizer | None) -> bool:
    """Whether ``binarizer``'s outputs are ``+-1`` (no scale, sign forward)."""
    return (
        binarizer is not None
        and isinstance(binarizer.scale, (type(None), NoScale))
        and _forward_is_sign(cast(Surrogate, binarizer.surrogate))
    )


def packed_residuals_apply(
    residuals: Residuals,
    input_binarizer: Binarizer | None,
    kernel_binarizer: Binarizer,
    *,
    kernel_is_signs: bool,
) -> tuple[bool, bool]:
    """Which of a layer's two operands are kept as bits.

    Returns ``(pack_inputs, pack_kernel)``. An operand is packed when
    ``residuals`` is ``"packed"`` and it is a sign: the
    inputs when ``input_binarizer`` gives ``+-1`` (no scale, a ``sign``
    forward), the kernel when its scale is applied after the product
    (``kernel_is_signs``) and its surrogate's forward is ``sign``.
    ``"unpacked"`` packs neither, and so does ``"auto"`` here (a dense
    layer resolves ``"auto"`` first, :func:`resolve_dense_residuals`).

    Args:
      residuals: the policy.
      input_binarizer: the inputs' rule, or ``None`` for real inputs.
      kernel_binarizer: the kernel's rule.
      kernel_is_signs: whether the product's kernel operand is the
        kernel's signs (the scale multiplies the output).
    """
    if residuals != "packed":
        return False, False
    pack_kernel = kernel_is_signs and _forward_is_sign(
        cast(Surrogate, kernel_binarizer.surrogate)
    )
    return _gives_signs(input_binarizer), pack_kernel


def product_with_residuals(
    product: Callable[[jax.Array, jax.Array], jax.Array],
    a: jax.Array,
    b: jax.Array,
    *,
    pack_a: bool,
    pack_b: bool,
) -> jax.Array:
    """``product(a, b)``, keeping sign operands as bits for the backward.

    ``product`` must be linear in each argument (a dense product, a
    convolution, with any padding or casting inside). The forward value is
    ``product(a, b)``; the backward pass is ``jax.vjp(product, a, b)``'s,
    with ``a`` (if ``pack_a``) and ``b`` (if ``pack_b``) restored from
    their bits (see the module docstring for when that is exact).

    Args:
      product: the bilinear function.
      a: the first operand (inputs).
      b: the second operand (kernel).
      pack_a: keep ``a`` as bits (it must be ``+-1``).
      pack_b: keep ``b`` as bits (it must be ``+-1``).
    """
    if not (pack_a or pack_b):
        return product(a, b)
    a_shape, a_dtype = a.shape, a.dtype
    b_shape, b_dtype = b.shape, b.dtype

    def keep(x: jax.Array, pack: bool) -> jax.Array:
        return pack_signs(x) if pack else x

    def restore(
        r: jax.Array, pack: bool, shape: tuple[int, ...], dtype: jnp.dtype
    ) -> jax.Array:
        return unpack_signs(r, shape, dtype) if pack else r

    @jax.custom_vjp
    def packed(a: jax.Array, b: jax.Array) -> jax.Array:
        return product(a, b)

    def fwd(
        a: jax.Array, b: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return product(a, b), (keep(a, pack_a), keep(b, pack_b))

    def bwd(
        saved: tuple[jax.Array, jax.Array], g: jax.Array
    ) -> tuple[jax.Array, ...]:
        # Unpack only once g exists: without the barrier XLA may schedule
        # every layer's unpacking early, and the restored operands would
        # all be live at once.
        saved, g = jax.lax.optimization_barrier((saved, g))
        a = restore(saved[0], pack_a, a_shape, a_dtype)
        b = restore(saved[1], pack_b, b_shape, b_dtype)
        return jax.vjp(product, a, b)[1](g)

    packed.defvjp(fwd, bwd)
    return packed(a, b)

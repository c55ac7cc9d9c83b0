"""Precision dispatch: the operand dtype of the binary layers' product.

With ``+-1`` inputs and ``+-1`` kernel signs, every term of the forward
product is an integer, so bfloat16 operands summed in float32 give the
float32 result bit for bit (up to ``2**24`` terms). ``sign_product_dtype``
chooses the operands' dtype: ``None`` (the computation dtype),
``jnp.bfloat16`` (raises where the product would not be exact) or
``"auto"`` (bfloat16 where it is exact and :func:`bfloat16_dense_is_faster`,
else the computation dtype; never an error).

Why ``"auto"`` is this narrow: a bfloat16 dense product of signs is faster
on the CPU backend of an x86 CPU with bfloat16 dot instructions
(AVX512-BF16 or AMX-BF16) once it has at least 64 rows and 128 features
(32 rows from 1,024 features); below that the casts cost more than the
product saves, and bfloat16 convolutions are no faster than float32. On
other CPUs, GPUs and TPUs the gain is not established, so ``"auto"``
keeps float32 there; pass ``sign_product_dtype=jnp.bfloat16`` to opt in.
See the benchmarks page for the measurements.

Convolutions computed as patches on the CPU backend, with at least 5
input features, take int8 under ``"auto"`` instead
(:func:`conv_sign_product_dtype`): the patches and the
kernel signs as int8, summed in int32, exact under the same conditions;
both the product and the patches' construction measured faster than
float32's. int8 is not offered as an explicit ``sign_product_dtype``: a
NaN sign would become a finite integer and hide a diverged run, and the
patches convolution restores those NaNs itself. For dense layers int8 was no
faster than bfloat16 in whole training steps (the kernel's int8 copy and
the NaN checks cost what the product saves; see the benchmarks page).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import cast

import jax
import jax.numpy as jnp

from bnnjax.binarize import Binarizer, Surrogate, _forward_is_sign
from bnnjax.scale import NoScale

AUTO = "auto"
"""``sign_product_dtype="auto"``: bfloat16 where exact and faster."""

INT8 = jnp.dtype(jnp.int8)
BFLOAT16 = jnp.dtype(jnp.bfloat16)

_SIGN_PRODUCT_DTYPES = (BFLOAT16,)
_AUTO_MIN_ROWS = 64
_AUTO_MIN_FEATURES = 128
# Wide layers gain from fewer rows on.
_AUTO_WIDE_FEATURES = 1024
_AUTO_WIDE_MIN_ROWS = 32
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

__all__ = [
    "AUTO",
    "BFLOAT16",
    "INT8",
    "INT8_PATCHES_MIN_FEATURES",
    "bfloat16_dense_is_faster",
    "check_sign_product_dtype",
    "conv_sign_product_dtype",
    "resolve_sign_product_dtype",
    "sign_product",
]


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
    at least 64 rows and 128 features, or at least 32 rows and 1,024
    features, where bfloat16 measured faster (the training speed results
    page). False elsewhere, including GPUs and TPUs, where no gain is
    established (pass ``sign_product_dtype=jnp.bfloat16`` to opt in).
    """
    big_enough = (
        rows >= _AUTO_MIN_ROWS and features >= _AUTO_MIN_FEATURES
    ) or (rows >= _AUTO_WIDE_MIN_ROWS and features >= _AUTO_WIDE_FEATURES)
    return (
        big_enough
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


def resolve_sign_product_dtype(
    requested: jax.typing.DTypeLike | str | None,
    input_binarizer: Binarizer | None,
    kernel_binarizer: Binarizer,
    compute: jnp.dtype,
    *,
    contraction: int,
    pad_value: float = 0.0,
    kernel_is_signs: bool = True,
    auto_dtype: jnp.dtype | None = None,
) -> jnp.dtype | None:
    """The operand dtype of an exact low-precision product, or None.

    ``"auto"`` is ``auto_dtype`` (bfloat16 for a dense product where
    :func:`bfloat16_dense_is_faster`, :func:`conv_sign_product_dtype` for
    a convolution) where the product is exact, else None; an explicit
    bfloat16 raises where the product would not be exact.
    ``kernel_is_signs`` is False where the layer folded the kernel's scale
    into the kernel operand.
    """
    if requested is None:
        return None
    check_sign_product_dtype(requested)
    auto = isinstance(requested, str)
    if auto and auto_dtype is None:
        return None
    requested = jnp.dtype(auto_dtype if auto else requested)
    problems = []
    if input_binarizer is None:
        problems.append("the inputs are real (input_binarizer=None)")
    else:
        if not isinstance(input_binarizer.scale, (type(None), NoScale)):
            problems.append("the input binarizer has a scale")
        # A Binarizer stores its surrogate resolved, never as a name.
        if not _forward_is_sign(cast(Surrogate, input_binarizer.surrogate)):
            name = type(input_binarizer.surrogate).__name__
            problems.append(
                f"the input surrogate {name} overrides forward (its values "
                "need not be +-1)"
            )
    if not _forward_is_sign(cast(Surrogate, kernel_binarizer.surrogate)):
        name = type(kernel_binarizer.surrogate).__name__
        problems.append(
            f"the kernel surrogate {name} overrides forward (its values "
            "need not be +-1)"
        )
    if not kernel_is_signs:
        problems.append(
            "the kernel's scale is not one value per output feature or per "
            "tensor, so it multiplies the kernel before the product (its "
            "values are not +-1)"
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


def sign_product(
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
    def exact(a: jax.Array, b: jax.Array) -> jax.Array:
        return product(
            a.astype(operand_dtype),
            b.astype(operand_dtype),
            preferred_element_type=a.dtype,
        )

    def fwd(
        a: jax.Array, b: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return exact(a, b), (a, b)

    def bwd(
        residuals: tuple[jax.Array, jax.Array], g: jax.Array
    ) -> tuple[jax.Array, ...]:
        a, b = residuals
        return jax.vjp(product, a, b)[1](g)

    exact.defvjp(fwd, bwd)
    return exact(x, kernel)


INT8_PATCHES_MIN_FEATURES = 5
"""Input features (per group) from which ``"auto"`` builds int8 patches."""


def conv_sign_product_dtype(
    patches: bool, *, in_features: int
) -> jnp.dtype | None:
    """The operand dtype ``sign_product_dtype="auto"`` gives an exact
    convolution of signs: int8 for a convolution computed as patches on
    the CPU backend with at least :data:`INT8_PATCHES_MIN_FEATURES` input
    features, else None. On an x86 CPU with AVX-512 a layer's value and
    gradient with int8 patches measured faster than with float32's from
    6 input features on (most of all on large maps), about as fast at 5,
    and mostly slower at 3 and 4 (the figures are on the training speed
    results page). bfloat16 convolutions were no faster
    than float32 anywhere measured.

    Args:
      patches: whether the convolution is computed as patches.
      in_features: input features of the kernel (per group).
    """
    return (
        INT8
        if patches
        and in_features >= INT8_PATCHES_MIN_FEATURES
        and jax.default_backend() == "cpu"
        else None
    )

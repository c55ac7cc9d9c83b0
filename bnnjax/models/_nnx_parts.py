"""Pieces the nnx reference models share: rngs check, batch norm, dropout."""

from __future__ import annotations

from typing import TypedDict

import jax
from flax import nnx

__all__ = [
    "NormSettings",
    "apply_optional",
    "batch_norm",
    "check_rngs",
    "dropout",
]


def check_rngs(rngs: object) -> nnx.Rngs:
    """Returns ``rngs`` if it is an ``nnx.Rngs``; a ``TypeError`` otherwise."""
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(
            f"rngs must be an nnx.Rngs, got {rngs!r} of type "
            f"{type(rngs).__name__}; e.g. rngs=nnx.Rngs(0)."
        )
    return rngs


class NormSettings(TypedDict):
    """Keyword arguments of :func:`batch_norm` shared by a model's norms."""

    momentum: float
    epsilon: float
    dtype: jax.typing.DTypeLike | None
    param_dtype: jax.typing.DTypeLike
    rngs: nnx.Rngs


def batch_norm(
    features: int,
    *,
    momentum: float,
    epsilon: float,
    dtype: jax.typing.DTypeLike | None,
    param_dtype: jax.typing.DTypeLike,
    rngs: nnx.Rngs,
) -> nnx.BatchNorm:
    """``nnx.BatchNorm`` over ``features`` channels with these settings."""
    return nnx.BatchNorm(
        features,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout | None:
    """``nnx.Dropout(rate)``, or an empty attribute for ``rate == 0``."""
    return nnx.Dropout(rate, rngs=rngs) if rate > 0 else nnx.data(None)


def apply_optional(layer: nnx.Module | None, x: jax.Array) -> jax.Array:
    """``layer(x)``, or ``x`` when the layer is absent."""
    return x if layer is None else layer(x)

"""Pieces the nnx reference models share: rngs check, batch norm, dropout."""

from __future__ import annotations

from typing import TypedDict

import jax
from flax import nnx

from bnnjax.nn.nnx import check_rngs

__all__ = [
    "NormSettings",
    "apply_optional",
    "batch_norm",
    "check_rngs",
    "dropout",
]


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

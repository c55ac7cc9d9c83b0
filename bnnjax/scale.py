"""Scaling factors (``alpha``) for binarized tensors.

A binarized tensor is ``alpha * sign(x)``. ``alpha`` is a statistic of ``x``
computed per tensor or per channel. This module holds the statistics as pure
functions (``mean_abs``, ``mean_abs_dev``, ``std``) and, for configuration, one
frozen dataclass per statistic that adds the gradient policy
(``stop_gradient``).

Channels are named by the axes that are *kept*: ``axis=None`` reduces over every
axis (one scale per tensor); ``axis=-1`` on a ``(in, out)`` dense kernel or a
``(H, W, in, out)`` convolution kernel gives one scale per output channel.
Statistics are accumulated in float32 (or wider) and returned in the input's
dtype, with the reduced axes kept as size-1 dimensions so the result
broadcasts against the input without rank promotion.

This module imports neither flax nor optax.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

Axis = int | Sequence[int] | None

__all__ = [
    "MeanAbsDevScale",
    "MeanAbsScale",
    "NoScale",
    "Scale",
    "StdScale",
    "get_scale",
    "mean_abs",
    "mean_abs_dev",
    "reduce_axes",
    "std",
]


def reduce_axes(ndim: int, axis: Axis) -> tuple[int, ...]:
    """Returns the axes a statistic reduces over, given the channel axes kept.

    Args:
      ndim: rank of the tensor.
      axis: channel axis or axes to keep (negative values count from the
        end), or ``None`` for one statistic over the whole tensor.

    Returns:
      The sorted tuple of non-negative axes to reduce over.

    Raises:
      TypeError: if ``axis`` is not ``None``, an int or a sequence of ints.
      ValueError: if an axis is out of range, repeated, or if every axis is
        kept (nothing would be reduced, so every element would be its own
        channel).

    Example:
      >>> reduce_axes(4, -1)
      (0, 1, 2)
      >>> reduce_axes(2, None)
      (0, 1)
    """
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError(
            f"axis must be None, an int or a sequence of ints, got {axis!r}."
        )
    keep_raw = (axis,) if isinstance(axis, (int, np.integer)) else axis
    try:
        keep_list = list(keep_raw)
    except TypeError:
        raise TypeError(
            f"axis must be None, an int or a sequence of ints, got {axis!r}."
        ) from None
    keep = []
    for a in keep_list:
        if isinstance(a, (bool, np.bool_)) or not isinstance(
            a, (int, np.integer)
        ):
            raise TypeError(
                "axis must be None, an int or a sequence of ints, got "
                f"{axis!r}."
            )
        if not -ndim <= a < ndim:
            raise ValueError(
                f"axis {a} is out of range for a tensor of rank {ndim}; "
                f"expected values in [{-ndim}, {ndim - 1}]."
            )
        keep.append(int(a) % ndim)
    if len(set(keep)) != len(keep):
        raise ValueError(f"axis {axis!r} names the same axis twice.")
    if ndim > 0 and len(keep) == ndim:
        raise ValueError(
            f"axis {axis!r} keeps every axis of a rank-{ndim} tensor, so "
            "nothing is reduced; keep fewer axes (e.g. axis=-1 for one "
            "scale per output channel) or axis=None for one per tensor."
        )
    return tuple(a for a in range(ndim) if a not in keep)


def _accumulation_dtype(dtype: jax.typing.DTypeLike) -> jnp.dtype:
    # float32, or float64 for float64 input. Chosen explicitly (not by type
    # promotion) so it also works under jax_numpy_dtype_promotion="strict".
    dtype = jnp.dtype(dtype)
    return dtype if jnp.finfo(dtype).bits > 32 else jnp.dtype(jnp.float32)


def mean_abs(x: jax.typing.ArrayLike, axes: tuple[int, ...]) -> jax.Array:
    """XNOR-Net scale ``mean(|x|)`` over ``axes`` (kept as size-1 dims).

    ``mean(|x|)`` is the ``alpha`` that minimizes ``||x - alpha * sign(x)||^2``.

    Args:
      x: floating-point tensor.
      axes: axes to reduce over (see :func:`reduce_axes`).

    Returns:
      The statistic in ``x``'s dtype, broadcastable against ``x``.

    References:
      Rastegari et al, `XNOR-Net: ImageNet Classification Using Binary
      Convolutional Neural Networks <https://arxiv.org/abs/1603.05279>`_, 2016
    """
    x = jnp.asarray(x)
    acc = _accumulation_dtype(x.dtype)
    return jnp.mean(jnp.abs(x.astype(acc)), axis=axes, keepdims=True).astype(
        x.dtype
    )


def mean_abs_dev(x: jax.typing.ArrayLike, axes: tuple[int, ...]) -> jax.Array:
    """Mean absolute deviation ``mean(|x - mean(x)|)`` over ``axes``.

    The founding method's scale (its "Action I"): a robust measure of the
    spread of the weights that, unlike ``mean(|x|)``, does not grow when the
    weights drift away from zero together. It is positively homogeneous,
    ``mean_abs_dev(c * x) == c * mean_abs_dev(x)`` for ``c > 0``.

    Args:
      x: floating-point tensor.
      axes: axes to reduce over (see :func:`reduce_axes`).

    Returns:
      The statistic in ``x``'s dtype, broadcastable against ``x``.
    """
    x = jnp.asarray(x)
    xa = x.astype(_accumulation_dtype(x.dtype))
    centred = xa - jnp.mean(xa, axis=axes, keepdims=True)
    return jnp.mean(jnp.abs(centred), axis=axes, keepdims=True).astype(x.dtype)


def std(x: jax.typing.ArrayLike, axes: tuple[int, ...]) -> jax.Array:
    """Population standard deviation ``sqrt(mean((x - mean(x))^2))``.

    Args:
      x: floating-point tensor.
      axes: axes to reduce over (see :func:`reduce_axes`).

    Returns:
      The statistic in ``x``'s dtype, broadcastable against ``x``.
    """
    x = jnp.asarray(x)
    xa = x.astype(_accumulation_dtype(x.dtype))
    return jnp.std(xa, axis=axes, keepdims=True).astype(x.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scale(abc.ABC):
    """A scale estimator: ``alpha = statistic(x)`` per tensor or per channel.

    Subclasses implement :meth:`statistic`. Calling the estimator applies the
    gradient policy: by default ``alpha`` is a constant in the backward pass
    (``stop_gradient``), as in XNOR-Net and most BNN code; with
    ``stop_gradient=False`` the gradient also flows through ``alpha``.

    Attributes:
      stop_gradient: treat ``alpha`` as a constant in the backward pass.
    """

    name: ClassVar[str]
    stop_gradient: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.stop_gradient, bool):
            raise TypeError(
                f"{type(self).__name__}.stop_gradient must be a bool, got "
                f"{self.stop_gradient!r}."
            )

    @abc.abstractmethod
    def statistic(
        self, x: jax.Array, axes: tuple[int, ...]
    ) -> jax.Array:  # pragma: no cover - abstract
        """Returns the raw statistic over ``axes`` (kept as size-1 dims)."""

    def __call__(self, x: jax.typing.ArrayLike, axis: Axis = None) -> jax.Array:
        """Returns ``alpha`` for ``x``, broadcastable against ``x``.

        Args:
          x: floating-point tensor.
          axis: channel axis or axes kept (``None``: one scale per tensor).
        """
        x = jnp.asarray(x)
        alpha = self.statistic(x, reduce_axes(x.ndim, axis))
        return jax.lax.stop_gradient(alpha) if self.stop_gradient else alpha


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoScale(Scale):
    """``alpha = 1``: plain ``sign(x)`` (BinaryNet, Bi-Real activations)."""

    name: ClassVar[str] = "none"

    def statistic(self, x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape))
        return jnp.ones(shape, x.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeanAbsScale(Scale):
    """XNOR-Net scale ``alpha = mean(|x|)``; see :func:`mean_abs`."""

    name: ClassVar[str] = "mean_abs"

    def statistic(self, x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return mean_abs(x, axes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeanAbsDevScale(Scale):
    """Founding-method scale ``alpha = mean(|x - mean(x)|)``.

    See :func:`mean_abs_dev`.
    """

    name: ClassVar[str] = "mean_abs_dev"

    def statistic(self, x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return mean_abs_dev(x, axes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StdScale(Scale):
    """Standard-deviation scale ``alpha = std(x)``; see :func:`std`."""

    name: ClassVar[str] = "std"

    def statistic(self, x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return std(x, axes)


_SCALES: dict[str, type[Scale]] = {
    cls.name: cls for cls in (NoScale, MeanAbsScale, MeanAbsDevScale, StdScale)
}


def get_scale(name: str, **kwargs: Any) -> Scale:
    """Builds a scale estimator from its registered name.

    Args:
      name: one of ``"none"``, ``"mean_abs"``, ``"mean_abs_dev"``, ``"std"``.
      **kwargs: fields of the estimator (``stop_gradient``).

    Returns:
      The estimator.

    Raises:
      ValueError: for an unknown name, listing the valid ones.

    Example:
      >>> get_scale("mean_abs_dev")
      MeanAbsDevScale(stop_gradient=True)
    """
    try:
        cls = _SCALES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown scale {name!r}; expected one of {sorted(_SCALES)}."
        ) from None
    return cls(**kwargs)

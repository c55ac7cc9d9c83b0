"""Batch norm configured from a linen model's fields (the models' mixin)."""

from __future__ import annotations

from typing import Protocol

import flax.linen as nn
import jax

__all__ = ["NormMixin"]


class NormFields(Protocol):
    """The fields :class:`NormMixin` reads from the model it joins."""

    @property
    def bn_momentum(self) -> float: ...
    @property
    def bn_epsilon(self) -> float: ...
    @property
    def dtype(self) -> jax.typing.DTypeLike | None: ...
    @property
    def param_dtype(self) -> jax.typing.DTypeLike: ...


class NormMixin:
    """Batch norm configured from the model's fields."""

    def _norm(self: NormFields, train: bool, name: str) -> nn.BatchNorm:
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

"""Binary Flax layers, in two namespaces like ``flax.linen``/``flax.nnx``.

* :mod:`bnnjax.nn.linen`: ``BinaryDense``, ``BinaryConv``, and ReActNet's
  ``RSign`` and ``RPReLU``.
* :mod:`bnnjax.nn.nnx`: ``LatentParam``, ``BinaryLinear``, ``BinaryConv``,
  ``RSign``, ``RPReLU``.

Both store the real-valued latent kernel under ``LATENT_KERNEL =
"latent_kernel"`` and share the math in :mod:`bnnjax.nn.functional`.
Importing this package has no side effects.
"""

from bnnjax.nn import linen as linen
from bnnjax.nn import nnx as nnx
from bnnjax.nn._precision import (
    bfloat16_dense_is_faster as bfloat16_dense_is_faster,
)
from bnnjax.nn.functional import LATENT_KERNEL as LATENT_KERNEL

__all__ = ["LATENT_KERNEL", "bfloat16_dense_is_faster", "linen", "nnx"]

"""Reference binary architectures, in two namespaces like ``bnnjax.nn``.

* :mod:`bnnjax.models.linen`: ``BinaryMLP``, ``BinaryNetCNN``,
  ``tutorial_cnn``, ``BiRealBlock``, ``BiRealResNet``, ``bireal_resnet18``,
  ``bireal_resnet20``, ``ReActBlock``, ``ReActNet``, ``reactnet_a``,
  ``reactnet_small``.
* :mod:`bnnjax.models.nnx`: the same names for ``flax.nnx``.

The models are built from :mod:`bnnjax.nn` layers and flax's own
``BatchNorm``, ``Conv``/``Dense``/``Linear`` and pooling; they hold no
training code. Importing this package has no side effects.
"""

from bnnjax.models import linen as linen
from bnnjax.models import nnx as nnx

__all__ = ["linen", "nnx"]

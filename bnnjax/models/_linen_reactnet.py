"""ReActNet for ``flax.linen``: :class:`ReActBlock`, :class:`ReActNet`.

Part of :mod:`bnnjax.models.linen`, which re-exports every name here;
import them from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnjax.binarize import Binarizer
from bnnjax.models import _common
from bnnjax.models._linen_norm import NormMixin
from bnnjax.nn import _formulation
from bnnjax.nn._residuals import Residuals
from bnnjax.nn.functional import DEFAULT_KERNEL_BINARIZER
from bnnjax.nn.linen import BinaryConv, RPReLU, RSign

__all__ = ["ReActBlock", "ReActNet", "reactnet_a", "reactnet_small"]


class ReActBlock(NormMixin, nn.Module):
    """One ReActNet-A block: RSign, binary 3x3 and 1x1 convolutions.

    Forward, for inputs ``x`` with ``C`` channels (``RSign``, ``RPReLU``:
    :class:`bnnjax.nn.linen.RSign`, :class:`bnnjax.nn.linen.RPReLU`, each
    with its own parameters)::

        h = RPReLU(BN(BinaryConv3x3_s(RSign(x))) + shortcut(x))     # C
        b = RSign(h)
        y = RPReLU(BN(BinaryConv1x1(b)) + h)                        # C
          = RPReLU(concat(BN(BinaryConv1x1_0(b)) + h,
                          BN(BinaryConv1x1_1(b)) + h))               # 2C
        shortcut(x) = x                         (strides == 1)
                    = AvgPool_s(x)              (otherwise)

    ``features`` is ``C`` (keep the channels) or ``2C`` (double them by
    concatenating two 1x1 convolutions, each with its own batch norm and
    the same shortcut ``h``, as ReActNet-A). Both convolutions take the
    RSign's ``+-1`` outputs as they are (``input_binarizer=None``) and
    binarize their kernels with ``kernel_binarizer``; the shortcut pool is
    ``'SAME'`` and does not count padded values, as
    :class:`BiRealBlock`'s. Sub-modules: ``rsign_3x3``, ``conv_3x3``,
    ``norm_3x3``, ``rprelu_3x3``, ``rsign_1x1``, ``conv_1x1_j``,
    ``norm_1x1_j`` and ``rprelu_1x1``.

    Attributes:
      features: output channels, ``C`` or ``2C``.
      strides: stride of the 3x3 convolution and the shortcut pool.
      kernel_binarizer: rule for both binary kernels.
      activation_binarizer: the rule of both RSigns (applied to ``x -
        beta``); default sign with Bi-Real Net's ApproxSign gradient, as
        ReActNet.
      pad_value: constant the 3x3 convolution pads its ``+-1`` inputs with.
      bn_momentum: batch-norm running-average momentum.
      bn_epsilon: batch-norm epsilon.
      residuals: what the products of both binary convolutions keep for the
        backward pass: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``,
        as :class:`bnnjax.nn.linen.BinaryConv`'s. Gradients are bit for bit
        the same either way: it only changes the memory the backward pass
        keeps.
      conv_impl: how both binary convolutions are computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.linen.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise: it only
        changes the speed.
      dtype: computation dtype (default: inferred).
      param_dtype: parameter dtype (default float32).

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """

    features: int
    strides: int = 1
    _: dataclasses.KW_ONLY
    kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER
    activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION
    pad_value: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    residuals: Residuals = "auto"
    conv_impl: _formulation.ConvImpl = "auto"
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _common.check_positive_int("features", self.features)
        _common.check_positive_int("strides", self.strides)
        _common.check_reactnet_rules(
            kernel_binarizer=self.kernel_binarizer,
            activation_binarizer=self.activation_binarizer,
            pad_value=self.pad_value,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            residuals=self.residuals,
            conv_impl=self.conv_impl,
        )
        super().__post_init__()

    def _rsign(self, name: str) -> RSign:
        return RSign(
            binarizer=self.activation_binarizer,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    def _rprelu(self, name: str) -> RPReLU:
        return RPReLU(dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    def _conv(
        self, features: int, size: int, strides: int, name: str
    ) -> BinaryConv:
        return BinaryConv(
            features,
            (size, size),
            strides,
            padding=(size - 1) // 2,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=None,  # the RSign's outputs are +-1 already
            pad_value=self.pad_value,
            residuals=self.residuals,
            conv_impl=self.conv_impl,
            name=name,
        )

    @nn.compact
    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        train: bool,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the block to ``(batch, height, width, channels)`` inputs.

        Args:
          x: real-valued channels-last activations.
          train: use batch statistics or the running averages.
          progress: training progress in ``[0, 1]`` for every binarizer.

        Raises:
          ValueError: for inputs of another rank, or ``features`` neither
            the input channels nor twice them.
        """
        train = _common.check_train(train)
        x = jnp.asarray(x)
        _common.check_image_batch("ReActBlock", x.shape)
        channels = x.shape[-1]
        if self.features not in (channels, 2 * channels):
            raise ValueError(
                f"ReActBlock keeps or doubles the channels: features="
                f"{self.features} with inputs of {channels} channels (shape "
                f"{x.shape}); expected {channels} or {2 * channels}."
            )
        h = self._rsign("rsign_3x3")(x, progress=progress)
        h = self._conv(channels, 3, self.strides, "conv_3x3")(
            h, progress=progress
        )
        h = self._norm(train, "norm_3x3")(h)
        shortcut = x
        if self.strides != 1:
            window = (self.strides, self.strides)
            shortcut = nn.avg_pool(
                x,
                window,
                strides=window,
                padding="SAME",
                count_include_pad=False,
            )
        h = self._rprelu("rprelu_3x3")(h + shortcut)
        b = self._rsign("rsign_1x1")(h, progress=progress)
        outs = []
        for j in range(self.features // channels):
            y = self._conv(channels, 1, 1, f"conv_1x1_{j}")(
                b, progress=progress
            )
            outs.append(self._norm(train, f"norm_1x1_{j}")(y) + h)
        y = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        return self._rprelu("rprelu_1x1")(y)


class ReActNet(NormMixin, nn.Module):
    """ReActNet-A: a MobileNet-v1 layout of RSign/RPReLU binary blocks.

    Layers::

        stem_conv:  Conv(stem_features, 3x3, stem_strides), real -> BN
        blocks_i:   ReActBlock, stage by stage; the first block of every
                    stage doubles the channels, with stride 2 in every
                    stage but the first
        head:       global average pool -> Dense(num_classes), real

    The defaults are ReActNet-A for ImageNet (:func:`reactnet_a`): stem
    3x3/2 with 32 channels, ``stage_sizes=(1, 2, 2, 6, 2)``, 13 blocks
    with 64, 128, 256, 512 and 1024 channels. :func:`reactnet_small` is the
    variant for 28x28 and 32x32 images (MNIST, CIFAR-10): stem 3x3/1,
    ``stage_sizes=(1, 2, 2, 2)`` (64 to 512 channels, maps 32, 16, 8, 4 on
    CIFAR and 28, 14, 7, 4 on MNIST).

    Widths: the stem has ``max(1, round(stem_features *
    width_multiplier))`` channels ``c`` and the stage ``s`` blocks have
    ``c * 2 ** (s + 1)``, so every doubling stays exact (a width rounded
    on its own could be odd).

    Deviations from the authors' PyTorch code: the kernel rule defaults
    to ``bnnjax.Binarizer(axis=-1)`` (mean-absolute-deviation scale per
    output channel, scaled sigmoid gradient); theirs is ``mean(|W|)`` per
    output channel with a clipped straight-through gradient, closest to
    ``bnnjax.Binarizer(surrogate="clipped_ste", scale="mean_abs",
    axis=-1)``. The stride-2 shortcut pools with ``'SAME'`` padding, which
    equals their ``AvgPool2d(2, 2)`` on even sizes and also fits odd ones
    (MNIST's 7x7). Their two-step training (binary activations first,
    then binary weights) and the distributional loss are training code.

    Attributes:
      stage_sizes: blocks per stage.
      stem_features: channels of the real stem convolution (before the
        width multiplier).
      stem_strides: stride of the 3x3 stem (2 for ImageNet, 1 for small
        images).
      num_classes: number of outputs.
      width_multiplier: scales the stem's channels, and with them every
        block's; a positive finite float.
      kernel_binarizer: rule for every binary kernel.
      activation_binarizer: rule of every RSign (applied to ``x -
        beta``); default sign with Bi-Real Net's ApproxSign gradient.
      pad_value: constant the binary 3x3 convolutions pad their ``+-1``
        inputs with.
      bn_momentum: batch-norm running-average momentum (PyTorch: 0.9).
      bn_epsilon: batch-norm epsilon (PyTorch: 1e-5).
      residuals: what the products of every binary convolution keep for the
        backward pass: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``,
        as :class:`bnnjax.nn.linen.BinaryConv`'s. Gradients are bit for bit
        the same either way: it only changes the memory the backward pass
        keeps.
      conv_impl: how every binary convolution is computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.linen.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise: it only
        changes the speed.
      dtype: computation dtype of every layer (default: inferred).
      param_dtype: parameter dtype (default float32).

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020; Howard et al, `MobileNets: Efficient Convolutional Neural
      Networks for Mobile Vision Applications
      <https://arxiv.org/abs/1704.04861>`_, 2017
    """

    _: dataclasses.KW_ONLY
    stage_sizes: Sequence[int] = _common.REACTNET_A["stage_sizes"]
    stem_features: int = _common.REACTNET_A["stem_features"]
    stem_strides: int = _common.REACTNET_A["stem_strides"]
    num_classes: int = _common.REACTNET_A["num_classes"]
    width_multiplier: float = 1.0
    kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER
    activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION
    pad_value: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    residuals: Residuals = "auto"
    conv_impl: _formulation.ConvImpl = "auto"
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _common.check_reactnet(
            stage_sizes=self.stage_sizes,
            stem_features=self.stem_features,
            stem_strides=self.stem_strides,
            num_classes=self.num_classes,
            width_multiplier=self.width_multiplier,
            kernel_binarizer=self.kernel_binarizer,
            activation_binarizer=self.activation_binarizer,
            pad_value=self.pad_value,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            residuals=self.residuals,
            conv_impl=self.conv_impl,
        )
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        train: bool,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Returns ``(batch, num_classes)`` logits.

        Args:
          x: ``(batch, height, width, channels)`` images.
          train: use batch statistics (pass ``mutable=["batch_stats"]``) or
            the running averages.
          progress: training progress in ``[0, 1]`` for every binarizer.

        Raises:
          ValueError: for inputs of another rank.
          TypeError: if ``train`` is not a bool.
        """
        train = _common.check_train(train)
        x = jnp.asarray(x)
        _common.check_image_batch("ReActNet", x.shape)
        stem, layout = _common.reactnet_layout(
            self.stage_sizes, self.stem_features, self.width_multiplier
        )
        x = nn.Conv(
            stem,
            (3, 3),
            strides=self.stem_strides,
            padding=_common.stem_padding(3),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="stem_conv",
        )(x)
        x = self._norm(train, "stem_norm")(x)
        for i, (_, features, strides) in enumerate(layout):
            x = ReActBlock(
                features,
                strides,
                kernel_binarizer=self.kernel_binarizer,
                activation_binarizer=self.activation_binarizer,
                pad_value=self.pad_value,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
                residuals=self.residuals,
                conv_impl=self.conv_impl,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"blocks_{i}",
            )(x, train=train, progress=progress)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(x)


def reactnet_a(**kwargs: Any) -> ReActNet:
    """ReActNet-A for ImageNet-sized inputs (1000 classes).

    Args:
      **kwargs: :class:`ReActNet` fields overriding the layout (e.g.
        ``num_classes``, ``width_multiplier``) or the binarizers.
    """
    return ReActNet(**{**_common.REACTNET_A, **kwargs})


def reactnet_small(**kwargs: Any) -> ReActNet:
    """ReActNet-A's blocks for 28x28 and 32x32 images (10 classes).

    Layers: stem 3x3/1 conv (32) -> stages of 1, 2, 2 and 2 blocks with 64,
    128, 256 and 512 channels (strides 1, 2, 2, 2) -> global average pool
    -> dense: 14 binary convolutions.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = reactnet_small(width_multiplier=0.25)
      >>> x = jnp.ones((2, 28, 28, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> variables["params"]["blocks_0"]["rsign_3x3"]["beta"].shape
      (8,)
      >>> model.apply(variables, x, train=False).shape
      (2, 10)

    Args:
      **kwargs: :class:`ReActNet` fields overriding the layout or the
        binarizers.
    """
    return ReActNet(**{**_common.REACTNET_SMALL, **kwargs})

"""ReActNet for ``flax.nnx``: :class:`ReActBlock`, :class:`ReActNet`.

Part of :mod:`bnnjax.models.nnx`, which re-exports every name here;
import them from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bnnjax.binarize import Binarizer
from bnnjax.models import _common
from bnnjax.models import _nnx_parts as parts
from bnnjax.nn import _formulation
from bnnjax.nn._residuals import Residuals
from bnnjax.nn.functional import DEFAULT_KERNEL_BINARIZER
from bnnjax.nn.nnx import BinaryConv, RPReLU, RSign

__all__ = ["ReActBlock", "ReActNet", "reactnet_a", "reactnet_small"]


class ReActBlock(nnx.Module):
    """One ReActNet-A block: RSign, binary 3x3 and 1x1 convolutions.

    Forward as :class:`bnnjax.models.linen.ReActBlock`::

        h = RPReLU(BN(BinaryConv3x3_s(RSign(x))) + shortcut(x))
        y = RPReLU(concat_j(BN_j(BinaryConv1x1_j(RSign(h))) + h))

    with one 1x1 convolution when ``out_features == in_features`` and two
    (concatenated) when it is ``2 * in_features``. Attributes:
    ``rsign_3x3``, ``conv_3x3``, ``norm_3x3``, ``rprelu_3x3``,
    ``rsign_1x1``, ``conv_1x1`` and ``norm_1x1`` (``nnx.List``, one or two
    each) and ``rprelu_1x1``.

    Args:
      in_features: input channels ``C``.
      out_features: ``C`` or ``2C``.
      strides: stride of the 3x3 convolution and the shortcut pool.
      kernel_binarizer: rule for both binary kernels.
      activation_binarizer: the rule of both RSigns; default sign with
        Bi-Real Net's ApproxSign gradient.
      pad_value: constant the 3x3 convolution pads its ``+-1`` inputs with.
      bn_momentum: batch-norm running-average momentum.
      bn_epsilon: batch-norm epsilon.
      residuals: what the products of both binary convolutions keep for the
        backward pass: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``,
        as :class:`bnnjax.nn.nnx.BinaryConv`'s. Gradients are bit for bit the
        same either way: it only changes the memory the backward pass keeps.
      conv_impl: how both binary convolutions are computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise: it only
        changes the speed.
      dtype: computation dtype (default: inferred).
      param_dtype: parameter dtype (default float32).
      rngs: ``nnx.Rngs`` for the parameters and stochastic binarizers.

    Raises:
      TypeError, ValueError: naming the invalid argument.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        strides: int = 1,
        *,
        kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER,
        activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION,
        pad_value: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        residuals: Residuals = "auto",
        conv_impl: _formulation.ConvImpl = "auto",
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _common.check_positive_int("in_features", in_features)
        out_features = _common.check_positive_int("out_features", out_features)
        strides = _common.check_positive_int("strides", strides)
        if out_features not in (in_features, 2 * in_features):
            raise ValueError(
                "ReActBlock keeps or doubles the channels: out_features="
                f"{out_features} with in_features={in_features}; expected "
                f"{in_features} or {2 * in_features}."
            )
        _common.check_reactnet_rules(
            kernel_binarizer=kernel_binarizer,
            activation_binarizer=activation_binarizer,
            pad_value=pad_value,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            residuals=residuals,
            conv_impl=conv_impl,
        )
        rngs = parts.check_rngs(rngs)
        norm: parts.NormSettings = {
            "momentum": bn_momentum,
            "epsilon": bn_epsilon,
            "dtype": dtype,
            "param_dtype": param_dtype,
            "rngs": rngs,
        }
        c = in_features

        def rsign() -> RSign:
            return RSign(
                c,
                binarizer=activation_binarizer,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

        def conv(size: int, conv_strides: int) -> BinaryConv:
            return BinaryConv(
                c,
                c,
                (size, size),
                conv_strides,
                padding=(size - 1) // 2,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
                kernel_binarizer=kernel_binarizer,
                input_binarizer=None,  # the RSign's outputs are +-1 already
                pad_value=pad_value,
                residuals=residuals,
                conv_impl=conv_impl,
            )

        copies = out_features // in_features
        self.rsign_3x3 = rsign()
        self.conv_3x3 = conv(3, strides)
        self.norm_3x3 = parts.batch_norm(c, **norm)
        self.rprelu_3x3 = RPReLU(
            c, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.rsign_1x1 = rsign()
        self.conv_1x1 = nnx.List([conv(1, 1) for _ in range(copies)])
        self.norm_1x1 = nnx.List(
            [parts.batch_norm(c, **norm) for _ in range(copies)]
        )
        self.rprelu_1x1 = RPReLU(
            out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

        self.in_features = in_features
        self.out_features = out_features
        self.strides = strides

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the block to ``(batch, height, width, in_features)``.

        Args:
          x: real-valued channels-last activations.
          progress: training progress in ``[0, 1]`` for every binarizer.
        """
        x = jnp.asarray(x)
        _common.check_image_batch("ReActBlock", x.shape)
        h = self.rsign_3x3(x, progress=progress)
        h = self.norm_3x3(self.conv_3x3(h, progress=progress))
        shortcut = x
        if self.strides != 1:
            window = (self.strides, self.strides)
            shortcut = nnx.avg_pool(
                x,
                window,
                strides=window,
                padding="SAME",
                count_include_pad=False,
            )
        h = self.rprelu_3x3(h + shortcut)
        b = self.rsign_1x1(h, progress=progress)
        outs = [
            norm(conv(b, progress=progress)) + h
            for conv, norm in zip(self.conv_1x1, self.norm_1x1, strict=True)
        ]
        y = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        return self.rprelu_1x1(y)


class ReActNet(nnx.Module):
    """ReActNet-A: a MobileNet-v1 layout of RSign/RPReLU binary blocks.

    See :class:`bnnjax.models.linen.ReActNet` for the layer list, widths
    and deviations. The defaults are ReActNet-A (:func:`reactnet_a`);
    :func:`reactnet_small` is the variant for 28x28 and 32x32 images.
    Attributes: ``stem_conv``, ``stem_norm``, ``blocks`` (an ``nnx.List``
    of :class:`ReActBlock`) and ``head``.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = reactnet_small(
      ...     in_features=1, width_multiplier=0.25, rngs=nnx.Rngs(0))
      >>> len(model.blocks)
      7
      >>> model.eval()
      >>> model(jnp.ones((2, 28, 28, 1))).shape
      (2, 10)

    Args:
      in_features: input channels (3 for RGB images).
      stage_sizes: blocks per stage.
      stem_features: channels of the real stem convolution (before the
        width multiplier).
      stem_strides: stride of the 3x3 stem.
      num_classes: number of outputs.
      width_multiplier: scales the stem's channels, and with them every
        block's; a positive finite float.
      kernel_binarizer: rule for every binary kernel.
      activation_binarizer: rule of every RSign; default sign with Bi-Real
        Net's ApproxSign gradient.
      pad_value: constant the binary 3x3 convolutions pad their ``+-1``
        inputs with.
      bn_momentum: batch-norm running-average momentum (PyTorch: 0.9).
      bn_epsilon: batch-norm epsilon (PyTorch: 1e-5).
      residuals: what the products of every binary convolution keep for the
        backward pass: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``,
        as :class:`bnnjax.nn.nnx.BinaryConv`'s. Gradients are bit for bit the
        same either way: it only changes the memory the backward pass keeps.
      conv_impl: how every binary convolution is computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise: it only
        changes the speed.
      dtype: computation dtype of every layer (default: inferred).
      param_dtype: parameter dtype (default float32).
      rngs: ``nnx.Rngs`` for the parameters and stochastic binarizers.

    Raises:
      TypeError, ValueError: naming the invalid argument.
    """

    def __init__(
        self,
        *,
        in_features: int = 3,
        stage_sizes: Sequence[int] = _common.REACTNET_A["stage_sizes"],
        stem_features: int = _common.REACTNET_A["stem_features"],
        stem_strides: int = _common.REACTNET_A["stem_strides"],
        num_classes: int = _common.REACTNET_A["num_classes"],
        width_multiplier: float = 1.0,
        kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER,
        activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION,
        pad_value: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        residuals: Residuals = "auto",
        conv_impl: _formulation.ConvImpl = "auto",
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _common.check_positive_int("in_features", in_features)
        stem, layout = _common.check_reactnet(
            stage_sizes=stage_sizes,
            stem_features=stem_features,
            stem_strides=stem_strides,
            num_classes=num_classes,
            width_multiplier=width_multiplier,
            kernel_binarizer=kernel_binarizer,
            activation_binarizer=activation_binarizer,
            pad_value=pad_value,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            residuals=residuals,
            conv_impl=conv_impl,
        )
        rngs = parts.check_rngs(rngs)
        self.stem_conv = nnx.Conv(
            in_features,
            stem,
            (3, 3),
            stem_strides,
            padding=_common.stem_padding(3),
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.stem_norm = parts.batch_norm(
            stem,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.blocks = nnx.List(
            [
                ReActBlock(
                    c_in,
                    c_out,
                    strides,
                    kernel_binarizer=kernel_binarizer,
                    activation_binarizer=activation_binarizer,
                    pad_value=pad_value,
                    bn_momentum=bn_momentum,
                    bn_epsilon=bn_epsilon,
                    residuals=residuals,
                    conv_impl=conv_impl,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for c_in, c_out, strides in layout
            ]
        )
        self.head = nnx.Linear(
            layout[-1][1],
            num_classes,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

        self.in_features = in_features
        self.stage_sizes = tuple(stage_sizes)
        self.stem_features = stem_features
        self.stem_strides = stem_strides
        self.num_classes = num_classes
        self.width_multiplier = float(width_multiplier)
        self.kernel_binarizer = kernel_binarizer
        self.activation_binarizer = activation_binarizer
        self.pad_value = float(pad_value)

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Returns ``(batch, num_classes)`` logits.

        Args:
          x: ``(batch, height, width, in_features)`` images.
          progress: training progress in ``[0, 1]`` for every binarizer.

        Raises:
          ValueError: for inputs of another rank or channel count.
        """
        x = jnp.asarray(x)
        _common.check_image_batch("ReActNet", x.shape)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"ReActNet was built with in_features={self.in_features}, "
                f"got images with {x.shape[-1]} channels (shape {x.shape})."
            )
        x = self.stem_norm(self.stem_conv(x))
        for block in self.blocks:
            x = block(x, progress=progress)
        return self.head(jnp.mean(x, axis=(1, 2)))


def reactnet_a(*, rngs: nnx.Rngs, **kwargs: Any) -> ReActNet:
    """ReActNet-A for ImageNet-sized inputs (1000 classes).

    Args:
      rngs: ``nnx.Rngs`` for the parameters.
      **kwargs: :class:`ReActNet` arguments overriding the layout or the
        binarizers.
    """
    return ReActNet(**{**_common.REACTNET_A, **kwargs}, rngs=rngs)


def reactnet_small(*, rngs: nnx.Rngs, **kwargs: Any) -> ReActNet:
    """ReActNet-A's blocks for 28x28 and 32x32 images (10 classes).

    See :func:`bnnjax.models.linen.reactnet_small`; pass ``in_features=1``
    for MNIST.

    Args:
      rngs: ``nnx.Rngs`` for the parameters.
      **kwargs: :class:`ReActNet` arguments overriding the layout or the
        binarizers.
    """
    return ReActNet(**{**_common.REACTNET_SMALL, **kwargs}, rngs=rngs)

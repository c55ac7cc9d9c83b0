"""Reference binary networks for ``flax.nnx``.

* :class:`BinaryMLP`: the BinaryConnect / BinaryNet MNIST MLP.
* :class:`BinaryNetCNN`: BinaryNet's VGG-like CIFAR-10 network, its layout
  an argument; :func:`tutorial_cnn` is the small CNN of Larq's MNIST
  tutorial.
* :class:`BiRealResNet` (:func:`bireal_resnet18`, :func:`bireal_resnet20`)
  built from :class:`BiRealBlock`: binary ResNets with a real-valued
  shortcut around every binary convolution.
* :class:`ReActNet` (:func:`reactnet_a`, :func:`reactnet_small`) built from
  :class:`ReActBlock`: ReActNet-A's RSign/RPReLU blocks.

The architectures, defaults and errors are those of
:mod:`bnnjax.models.linen`; see there for the layer lists and references.
As nnx requires, input sizes are constructor arguments (``in_features``,
and ``input_size`` for the CNN's dense layers) and parameters are created
from ``rngs``. Models start in training mode, like ``nnx.BatchNorm`` and
``nnx.Dropout``: call ``model.eval()`` to use the running averages (and no
dropout) and ``model.train()`` to go back, or take an evaluation view
``nnx.view(model, use_running_average=True)`` (add ``deterministic=True``
for a model with dropout).

Models are called as ``model(x, progress=...)``; ``progress`` (a scalar in
``[0, 1]``, may be traced) reaches every binary layer. Latent kernels are
:class:`bnnjax.nn.nnx.LatentParam` (select them with
``nnx.state(model, LatentParam)``); real layers use ``nnx.Conv``,
``nnx.Linear`` and ``nnx.BatchNorm``. A layer followed by batch norm has no
bias: batch norm's learned shift makes it redundant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx

from bnnjax.binarize import Binarizer
from bnnjax.models import _common
from bnnjax.models import _nnx_parts as parts
from bnnjax.models._nnx_reactnet import (
    ReActBlock,
    ReActNet,
    reactnet_a,
    reactnet_small,
)
from bnnjax.nn import _formulation
from bnnjax.nn import functional as F
from bnnjax.nn._precision import AUTO
from bnnjax.nn._residuals import Residuals
from bnnjax.nn.functional import DEFAULT_KERNEL_BINARIZER
from bnnjax.nn.nnx import BinaryConv, BinaryLinear

__all__ = [
    "BiRealBlock",
    "BiRealResNet",
    "BinaryMLP",
    "BinaryNetCNN",
    "ReActBlock",
    "ReActNet",
    "bireal_resnet18",
    "bireal_resnet20",
    "reactnet_a",
    "reactnet_small",
    "tutorial_cnn",
]


class BinaryMLP(nnx.Module):
    """The BinaryConnect / BinaryNet MLP with batch norm after every layer.

    See :class:`bnnjax.models.linen.BinaryMLP` for the layer list,
    published sizes and deviations from the papers. Attributes ``dense``
    and ``dense_norm`` (``nnx.List``) hold the hidden layers, ``head`` and
    ``head_norm`` the output layer (``head_norm`` is ``None`` with a real
    head).

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = BinaryMLP(hidden=(32, 32), rngs=nnx.Rngs(0))
      >>> model.eval()
      >>> model(jnp.ones((2, 28, 28, 1))).shape
      (2, 10)

    Args:
      in_features: number of input features after flattening (MNIST: 784).
      hidden: widths of the hidden layers (non-empty, positive).
      num_classes: number of outputs.
      binary_activations: ``sign`` activations (BinaryNet) or ReLU
        (BinaryConnect).
      binary_last: binary head followed by batch norm (as published), or a
        real ``nnx.Linear`` with a bias.
      kernel_binarizer: rule for every binary kernel; default
        ``bnnjax.Binarizer(axis=-1)``.
      activation_binarizer: rule for the activations; default sign with
        BinaryNet's hardtanh straight-through gradient.
      input_dropout_rate: dropout rate on the input pixels (default 0).
      dropout_rate: dropout rate on real-valued hidden activations and the
        input of a real head (default 0).
      bn_momentum: batch-norm running-average momentum (BinaryNet: 0.9).
      bn_epsilon: batch-norm epsilon (BinaryNet: 1e-4).
      sign_product_dtype: operand dtype of the forward products of the
        layers whose inputs are binarized (``binary_activations``; the
        first layer sees real pixels): ``"auto"`` (default), ``None`` or
        ``jnp.bfloat16``, as :class:`bnnjax.nn.nnx.BinaryLinear`'s. Exact
        either way: it only changes the speed. With real activations
        there is nothing to apply it to, and ``jnp.bfloat16`` raises.
      residuals: what the products of every binary layer (the first included)
        keep for the backward pass: ``"auto"`` (default), ``"packed"`` or
        ``"unpacked"``, as :class:`bnnjax.nn.nnx.BinaryLinear`'s. Gradients
        are bit for bit the same either way: it only changes the memory the
        backward pass keeps.
      dtype: computation dtype of every layer (default: inferred).
      param_dtype: parameter dtype (default float32).
      rngs: ``nnx.Rngs`` for the parameters, dropout and stochastic
        binarizers.

    Raises:
      TypeError, ValueError: naming the invalid argument.
    """

    def __init__(
        self,
        *,
        in_features: int = 784,
        hidden: Sequence[int] = (1024, 1024, 1024),
        num_classes: int = 10,
        binary_activations: bool = True,
        binary_last: bool = True,
        kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER,
        activation_binarizer: Binarizer = _common.SIGN_ACTIVATION,
        input_dropout_rate: float = 0.0,
        dropout_rate: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-4,
        sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO,
        residuals: Residuals = "auto",
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _common.check_positive_int("in_features", in_features)
        hidden = _common.check_mlp(
            hidden=hidden,
            num_classes=num_classes,
            binary_activations=binary_activations,
            binary_last=binary_last,
            kernel_binarizer=kernel_binarizer,
            activation_binarizer=activation_binarizer,
            input_dropout_rate=input_dropout_rate,
            dropout_rate=dropout_rate,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            sign_product_dtype=sign_product_dtype,
            residuals=residuals,
        )
        rngs = parts.check_rngs(rngs)

        act = activation_binarizer if binary_activations else None
        norm: parts.NormSettings = {
            "momentum": bn_momentum,
            "epsilon": bn_epsilon,
            "dtype": dtype,
            "param_dtype": param_dtype,
            "rngs": rngs,
        }
        widths = (in_features, *hidden)
        self.dense = nnx.List(
            [
                BinaryLinear(
                    widths[i],
                    widths[i + 1],
                    use_bias=False,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                    kernel_binarizer=kernel_binarizer,
                    input_binarizer=act if i > 0 else None,
                    sign_product_dtype=sign_product_dtype if i > 0 else AUTO,
                    residuals=residuals,
                )
                for i in range(len(hidden))
            ]
        )
        self.dense_norm = nnx.List(
            [parts.batch_norm(w, **norm) for w in hidden]
        )
        self.head: BinaryLinear | nnx.Linear
        self.head_norm: nnx.BatchNorm | None
        if binary_last:
            self.head = BinaryLinear(
                hidden[-1],
                num_classes,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
                kernel_binarizer=kernel_binarizer,
                input_binarizer=act,
                sign_product_dtype=sign_product_dtype,
                residuals=residuals,
            )
            self.head_norm = parts.batch_norm(num_classes, **norm)
        else:
            self.head = nnx.Linear(
                hidden[-1],
                num_classes,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            self.head_norm = nnx.data(None)
        self.input_dropout = parts.dropout(input_dropout_rate, rngs)
        self.dropout = parts.dropout(dropout_rate, rngs)

        self.in_features = in_features
        self.hidden = hidden
        self.num_classes = num_classes
        self.binary_activations = binary_activations
        self.binary_last = binary_last
        self.kernel_binarizer = kernel_binarizer
        self.activation_binarizer = activation_binarizer

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Returns ``(batch, num_classes)`` logits.

        Args:
          x: ``(batch, features)`` or ``(batch, height, width, channels)``
            inputs, flattened to ``(batch, in_features)``.
          progress: training progress in ``[0, 1]`` for every binary layer.

        Raises:
          ValueError: for inputs without a batch axis or with a flattened
            size other than ``in_features``.
        """
        h = _common.flatten_batch("BinaryMLP", x)
        if h.shape[1] != self.in_features:
            raise ValueError(
                f"BinaryMLP was built with in_features={self.in_features}, "
                f"got inputs of {h.shape[1]} features after flattening to "
                f"{h.shape}."
            )
        real = not self.binary_activations
        h = parts.apply_optional(self.input_dropout, h)
        for i, (dense, norm) in enumerate(
            zip(self.dense, self.dense_norm, strict=True)
        ):
            if i > 0 and real:
                h = parts.apply_optional(self.dropout, h)
            h = norm(dense(h, progress=progress))
            if real:
                h = nnx.relu(h)
        if self.head_norm is None:
            return self.head(parts.apply_optional(self.dropout, h))
        if real:
            h = parts.apply_optional(self.dropout, h)
        # head_norm is set exactly when the head is binary (binary_last).
        head = cast(BinaryLinear, self.head)
        return self.head_norm(head(h, progress=progress))


class BinaryNetCNN(nnx.Module):
    """BinaryNet's VGG-like CIFAR-10 network, all weights binary.

    See :class:`bnnjax.models.linen.BinaryNetCNN` for the layer list,
    published size and deviations; :func:`tutorial_cnn` builds the small
    CNN of Larq's MNIST tutorial. Attributes: ``conv``/``conv_norm`` (one
    per entry of ``conv_features``; six by default), ``dense``/
    ``dense_norm`` (one per entry of ``dense_features``; two by default),
    ``head``/``head_norm``, and the layout arguments as given.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = BinaryNetCNN(width_multiplier=0.125, rngs=nnx.Rngs(0))
      >>> model.conv[0].latent_kernel.shape
      (3, 3, 3, 16)
      >>> model.eval()
      >>> model(jnp.ones((1, 32, 32, 3))).shape
      (1, 10)

    Args:
      in_features: input channels (CIFAR-10: 3).
      input_size: ``(height, width)`` of the inputs, which fixes the first
        dense layer's size (CIFAR-10: ``(32, 32)``); each at least what the
        layout needs for a 1x1 map (8 with the default layout).
      num_classes: number of outputs.
      width_multiplier: scales every width of ``conv_features`` and
        ``dense_features`` (not the head's) to ``max(1, round(c *
        width_multiplier))``; a positive finite float.
      conv_features: output channels of the 3x3 convolutions, before
        ``width_multiplier``; a non-empty sequence of positive ints (default
        BinaryNet's ``(128, 128, 256, 256, 512, 512)``).
      pool_after: 0-based indices of the convolutions a 2x2/stride-2 max
        pool follows; distinct and increasing, in
        ``[0, len(conv_features))`` (default ``(1, 3, 5)``).
      dense_features: widths of the hidden dense layers, before
        ``width_multiplier``; positive ints, may be empty (default
        ``(1024, 1024)``).
      padding: ``"SAME"`` (default) or ``"VALID"``, for every convolution.
      kernel_binarizer: rule for every kernel; default
        ``bnnjax.Binarizer(axis=-1)``.
      activation_binarizer: rule for the activations; default sign with the
        hardtanh straight-through gradient.
      pad_value: constant the binary activations are padded with (the
        first convolution pads its real inputs with zeros; only used with
        ``padding="SAME"``).
      bn_momentum: batch-norm running-average momentum (BinaryNet: 0.9).
      bn_epsilon: batch-norm epsilon (BinaryNet: 1e-4).
      sign_product_dtype: operand dtype of the forward products of the
        layers whose inputs are binarized (every layer but the first):
        ``"auto"`` (default; float32 in convolutions), ``None`` or
        ``jnp.bfloat16``, as :class:`bnnjax.nn.nnx.BinaryLinear`'s. Exact
        either way: it only changes the speed.
      residuals: what the products of every binary layer (the first included)
        keep for the backward pass: ``"auto"`` (default), ``"packed"`` or
        ``"unpacked"``, as :class:`bnnjax.nn.nnx.BinaryLinear`'s. Gradients
        are bit for bit the same either way: it only changes the memory the
        backward pass keeps.
      conv_impl: how every binary convolution is computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise (the first
        convolution's real pixels): it only changes the speed.
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
        input_size: tuple[int, int] = (32, 32),
        num_classes: int = 10,
        width_multiplier: float = 1.0,
        conv_features: Sequence[int] = _common.BINARYNET_CNN_CONV,
        pool_after: Sequence[int] = _common.BINARYNET_CNN_POOLS,
        dense_features: Sequence[int] = _common.BINARYNET_CNN_DENSE,
        padding: str = "SAME",
        kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER,
        activation_binarizer: Binarizer = _common.SIGN_ACTIVATION,
        pad_value: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-4,
        sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO,
        residuals: Residuals = "auto",
        conv_impl: _formulation.ConvImpl = "auto",
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _common.check_positive_int("in_features", in_features)
        size = _common.check_widths("input_size", input_size)
        if len(size) != 2:
            raise ValueError(
                f"input_size must be (height, width), got {size!r}."
            )
        layout = _common.check_cnn(
            num_classes=num_classes,
            width_multiplier=width_multiplier,
            conv_features=conv_features,
            pool_after=pool_after,
            dense_features=dense_features,
            padding=padding,
            kernel_binarizer=kernel_binarizer,
            activation_binarizer=activation_binarizer,
            pad_value=pad_value,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            sign_product_dtype=sign_product_dtype,
            residuals=residuals,
            conv_impl=conv_impl,
        )
        height, width = _common.cnn_spatial_size(layout, size)
        rngs = parts.check_rngs(rngs)

        act = activation_binarizer
        norm: parts.NormSettings = {
            "momentum": bn_momentum,
            "epsilon": bn_epsilon,
            "dtype": dtype,
            "param_dtype": param_dtype,
            "rngs": rngs,
        }
        conv = layout.conv
        channels = (in_features, *conv)
        self.conv = nnx.List(
            [
                BinaryConv(
                    channels[i],
                    channels[i + 1],
                    (3, 3),
                    padding=layout.padding,
                    use_bias=False,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                    kernel_binarizer=kernel_binarizer,
                    input_binarizer=act if i > 0 else None,
                    pad_value=pad_value if i > 0 else 0.0,
                    sign_product_dtype=sign_product_dtype if i > 0 else AUTO,
                    residuals=residuals,
                    conv_impl=conv_impl,
                )
                for i in range(len(conv))
            ]
        )
        self.conv_norm = nnx.List([parts.batch_norm(c, **norm) for c in conv])
        dense = layout.dense
        widths = (height * width * conv[-1], *dense, num_classes)
        linear = [
            BinaryLinear(
                widths[i],
                widths[i + 1],
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
                kernel_binarizer=kernel_binarizer,
                input_binarizer=act,
                sign_product_dtype=sign_product_dtype,
                residuals=residuals,
            )
            for i in range(len(widths) - 1)
        ]
        self.dense = nnx.List(linear[:-1])
        self.dense_norm = nnx.List([parts.batch_norm(w, **norm) for w in dense])
        self.head = linear[-1]
        self.head_norm = parts.batch_norm(num_classes, **norm)

        self.in_features = in_features
        self.input_size = size
        self.num_classes = num_classes
        self.width_multiplier = float(width_multiplier)
        self.conv_features = tuple(int(c) for c in conv_features)
        self.pool_after = layout.pool_after
        self.dense_features = tuple(int(c) for c in dense_features)
        self.padding = layout.padding
        self.pad_value = float(pad_value)
        self.kernel_binarizer = kernel_binarizer
        self.activation_binarizer = activation_binarizer

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Returns ``(batch, num_classes)`` logits.

        Args:
          x: ``(batch, *input_size, in_features)`` images.
          progress: training progress in ``[0, 1]`` for every binary layer.

        Raises:
          ValueError: for inputs of another shape.
        """
        h = jnp.asarray(x)
        want = (*self.input_size, self.in_features)
        if h.ndim != 4 or h.shape[1:] != want:
            raise ValueError(
                f"BinaryNetCNN was built for images of shape (batch, "
                f"{', '.join(map(str, want))}) (input_size, in_features), "
                f"got inputs of shape {h.shape}."
            )
        for i, (conv, norm) in enumerate(
            zip(self.conv, self.conv_norm, strict=True)
        ):
            h = conv(h, progress=progress)
            if i in self.pool_after:
                h = F.max_pool(h, (2, 2), strides=(2, 2))
            h = norm(h)
        h = jnp.reshape(h, (h.shape[0], -1))
        for dense, norm in zip(self.dense, self.dense_norm, strict=True):
            h = norm(dense(h, progress=progress))
        return self.head_norm(self.head(h, progress=progress))


class BiRealBlock(nnx.Module):
    """One Bi-Real block: a binary 3x3 convolution with a real shortcut.

    Forward ``y = BN(BinaryConv(sign(x))) + shortcut(x)``; see
    :class:`bnnjax.models.linen.BiRealBlock`. Attributes: ``conv``,
    ``norm`` and, when the shape changes, ``shortcut_conv`` (a real 1x1
    ``nnx.Conv`` after a ``strides`` average pool) and ``shortcut_norm``
    (otherwise ``None``).

    Args:
      in_features: input channels.
      out_features: output channels.
      strides: stride of the binary convolution and the shortcut pool.
      kernel_binarizer: rule for the binary kernel.
      activation_binarizer: rule for the convolution's inputs; default
        Bi-Real Net's ApproxSign.
      pad_value: constant the binary activations are padded with.
      bn_momentum: batch-norm running-average momentum.
      bn_epsilon: batch-norm epsilon.
      sign_product_dtype: operand dtype of the binary convolution's
        forward product: ``"auto"`` (default; float32 in convolutions),
        ``None`` or ``jnp.bfloat16``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Exact either way.
      residuals: what the binary convolution's product keeps for the backward
        pass: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Gradients are bit for bit the
        same either way: it only changes the memory the backward pass keeps.
      conv_impl: how the binary convolution is computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise: it only
        changes the speed.
      dtype: computation dtype (default: inferred).
      param_dtype: parameter dtype (default float32).
      rngs: ``nnx.Rngs`` for the parameters and stochastic binarizers.
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
        sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO,
        residuals: Residuals = "auto",
        conv_impl: _formulation.ConvImpl = "auto",
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _common.check_positive_int("in_features", in_features)
        out_features = _common.check_positive_int("out_features", out_features)
        strides = _common.check_positive_int("strides", strides)
        _common.check_block_rules(
            kernel_binarizer=kernel_binarizer,
            activation_binarizer=activation_binarizer,
            pad_value=pad_value,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            sign_product_dtype=sign_product_dtype,
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
        self.conv = BinaryConv(
            in_features,
            out_features,
            (3, 3),
            strides,
            padding=1,
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            kernel_binarizer=kernel_binarizer,
            input_binarizer=activation_binarizer,
            pad_value=pad_value,
            sign_product_dtype=sign_product_dtype,
            residuals=residuals,
            conv_impl=conv_impl,
        )
        self.norm = parts.batch_norm(out_features, **norm)
        self.shortcut_conv: nnx.Conv | None
        self.shortcut_norm: nnx.BatchNorm | None
        if strides != 1 or in_features != out_features:
            self.shortcut_conv = nnx.Conv(
                in_features,
                out_features,
                (1, 1),
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            self.shortcut_norm = parts.batch_norm(out_features, **norm)
        else:
            self.shortcut_conv = nnx.data(None)
            self.shortcut_norm = nnx.data(None)

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
          progress: training progress in ``[0, 1]`` for the binary layer.
        """
        x = jnp.asarray(x)
        _common.check_image_batch("BiRealBlock", x.shape)
        y = self.norm(self.conv(x, progress=progress))
        if self.shortcut_conv is None:
            return y + x
        shortcut = x
        if self.strides != 1:
            window = (self.strides, self.strides)
            shortcut = nnx.avg_pool(
                shortcut,
                window,
                strides=window,
                padding="SAME",
                count_include_pad=False,
            )
        # shortcut_norm is set exactly when shortcut_conv is.
        shortcut_norm = cast(nnx.BatchNorm, self.shortcut_norm)
        return y + shortcut_norm(self.shortcut_conv(shortcut))


class BiRealResNet(nnx.Module):
    """A binary ResNet with a real-valued shortcut around every binary conv.

    See :class:`bnnjax.models.linen.BiRealResNet` for the layer list,
    published sizes and deviations. The defaults are Bi-Real Net-18
    (:func:`bireal_resnet18`); :func:`bireal_resnet20` gives the CIFAR
    layout. Attributes: ``stem_conv``, ``stem_norm``, ``blocks`` (an
    ``nnx.List`` of :class:`BiRealBlock`, two per basic block) and ``head``.

    nnx builds every parameter in the constructor, so the small-image stem
    (see the linen model) is chosen there: pass ``input_size`` (or
    ``small_input_stem=True``); without either, the stem fields are used.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = bireal_resnet20(rngs=nnx.Rngs(0))
      >>> len(model.blocks)
      18
      >>> model.eval()
      >>> model(jnp.ones((1, 32, 32, 3))).shape
      (1, 10)

    Args:
      in_features: input channels (3 for RGB images).
      stage_sizes: basic blocks per stage (two binary convs each).
      stage_features: channels of each stage.
      num_classes: number of outputs.
      stem_features: channels of the real stem convolution.
      stem_kernel_size: its window.
      stem_strides: its stride.
      stem_max_pool: 3x3 max pool with stride 2 after the stem.
      small_input_stem: replace the stem by a 3x3 convolution with stride
        1 and no max pool (``True``), keep the stem fields (``False``), or
        choose by ``input_size`` (``None``, default): the small stem for
        images of at most 64 pixels on the shorter side, the stem fields
        when ``input_size`` is ``None``. The attribute holds the choice
        made (a bool).
      input_size: ``(height, width)`` of the inputs, only used to choose
        the stem when ``small_input_stem`` is ``None``; e.g. ``(28, 28)``
        for MNIST.
      width_multiplier: scales every channel count (the stem's and every
        stage's; not ``num_classes``) to ``max(1, round(c *
        width_multiplier))``; a positive finite float, default 1.0.
        ``stage_features`` keeps the unscaled widths.
      kernel_binarizer: rule for every binary kernel.
      activation_binarizer: rule for the binary convolutions' inputs;
        default Bi-Real Net's ApproxSign.
      pad_value: constant the binary activations are padded with.
      bn_momentum: batch-norm running-average momentum (PyTorch: 0.9).
      bn_epsilon: batch-norm epsilon (PyTorch: 1e-5).
      sign_product_dtype: operand dtype of every binary convolution's
        forward product: ``"auto"`` (default; float32 in convolutions),
        ``None`` or ``jnp.bfloat16``, as
        :class:`bnnjax.nn.nnx.BinaryConv`'s. Exact either way.
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
        stage_sizes: Sequence[int] = _common.RESNET18["stage_sizes"],
        stage_features: Sequence[int] = _common.RESNET18["stage_features"],
        num_classes: int = _common.RESNET18["num_classes"],
        stem_features: int = _common.RESNET18["stem_features"],
        stem_kernel_size: int = _common.RESNET18["stem_kernel_size"],
        stem_strides: int = _common.RESNET18["stem_strides"],
        stem_max_pool: bool = _common.RESNET18["stem_max_pool"],
        small_input_stem: bool | None = None,
        input_size: Sequence[int] | None = None,
        width_multiplier: float = 1.0,
        kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER,
        activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION,
        pad_value: float = 0.0,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO,
        residuals: Residuals = "auto",
        conv_impl: _formulation.ConvImpl = "auto",
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _common.check_positive_int("in_features", in_features)
        stem_width, layout = _common.check_resnet(
            stage_sizes=stage_sizes,
            stage_features=stage_features,
            num_classes=num_classes,
            stem_features=stem_features,
            stem_kernel_size=stem_kernel_size,
            stem_strides=stem_strides,
            stem_max_pool=stem_max_pool,
            width_multiplier=width_multiplier,
            small_input_stem=small_input_stem,
            kernel_binarizer=kernel_binarizer,
            activation_binarizer=activation_binarizer,
            pad_value=pad_value,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            sign_product_dtype=sign_product_dtype,
            residuals=residuals,
            conv_impl=conv_impl,
        )
        if input_size is not None:
            input_size = _common.check_widths("input_size", input_size)
            if len(input_size) != 2:
                raise ValueError(
                    f"input_size must be (height, width), got {input_size!r}."
                )
        rngs = parts.check_rngs(rngs)

        small = _common.use_small_stem(small_input_stem, input_size)
        k, stem_strides, stem_max_pool = _common.stem_layout(
            small, stem_kernel_size, stem_strides, stem_max_pool
        )
        self.stem_conv = nnx.Conv(
            in_features,
            stem_width,
            (k, k),
            stem_strides,
            padding=_common.stem_padding(k),
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.stem_norm = parts.batch_norm(
            stem_width,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        channels = (stem_width, *(features for features, _ in layout))
        self.blocks = nnx.List(
            [
                BiRealBlock(
                    channels[i],
                    features,
                    strides,
                    kernel_binarizer=kernel_binarizer,
                    activation_binarizer=activation_binarizer,
                    pad_value=pad_value,
                    sign_product_dtype=sign_product_dtype,
                    residuals=residuals,
                    conv_impl=conv_impl,
                    bn_momentum=bn_momentum,
                    bn_epsilon=bn_epsilon,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for i, (features, strides) in enumerate(layout)
            ]
        )
        self.head = nnx.Linear(
            channels[-1],
            num_classes,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

        self.in_features = in_features
        self.stage_sizes = tuple(stage_sizes)
        self.stage_features = tuple(stage_features)
        self.num_classes = num_classes
        self.stem_max_pool = stem_max_pool
        self.small_input_stem = small
        self.stem_features = stem_features
        self.width_multiplier = float(width_multiplier)

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Returns ``(batch, num_classes)`` logits.

        Args:
          x: ``(batch, height, width, in_features)`` images.
          progress: training progress in ``[0, 1]`` for every binary layer.

        Raises:
          ValueError: for inputs of another rank or channel count.
        """
        x = jnp.asarray(x)
        _common.check_image_batch("BiRealResNet", x.shape)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"BiRealResNet was built with in_features={self.in_features}"
                f", got images with {x.shape[-1]} channels (shape "
                f"{x.shape})."
            )
        x = self.stem_norm(self.stem_conv(x))
        if self.stem_max_pool:
            x = nnx.max_pool(
                x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))
            )
        for block in self.blocks:
            x = block(x, progress=progress)
        return self.head(jnp.mean(x, axis=(1, 2)))


def bireal_resnet18(*, rngs: nnx.Rngs, **kwargs: Any) -> BiRealResNet:
    """Bi-Real Net-18 for ImageNet-sized inputs (1000 classes).

    With ``input_size`` of at most 64x64 (MNIST, CIFAR) the stem is the
    CIFAR-style 3x3/1 convolution without max pool (see
    :class:`BiRealResNet`).

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = bireal_resnet18(
      ...     in_features=1, input_size=(28, 28), num_classes=10,
      ...     width_multiplier=0.0625, rngs=nnx.Rngs(0))
      >>> model.stem_conv.kernel.shape
      (3, 3, 1, 4)
      >>> model.eval()
      >>> model(jnp.ones((2, 28, 28, 1))).shape
      (2, 10)

    Args:
      rngs: ``nnx.Rngs`` for the parameters.
      **kwargs: :class:`BiRealResNet` arguments overriding the layout (e.g.
        ``num_classes``) or the binarizers.
    """
    return BiRealResNet(**{**_common.RESNET18, **kwargs}, rngs=rngs)


def bireal_resnet20(*, rngs: nnx.Rngs, **kwargs: Any) -> BiRealResNet:
    """ResNet-20 for CIFAR-sized inputs (10 classes) with Bi-Real blocks.

    Layers: stem 3x3 conv (16) -> 3 stages of 3 basic blocks (6 binary
    convolutions) with 16, 32 and 64 channels -> global average pool ->
    dense, 18 binary and 2 real layers.

    Args:
      rngs: ``nnx.Rngs`` for the parameters.
      **kwargs: :class:`BiRealResNet` arguments overriding the layout or
        the binarizers.
    """
    return BiRealResNet(**{**_common.RESNET20, **kwargs}, rngs=rngs)


def tutorial_cnn(*, rngs: nnx.Rngs, **kwargs: Any) -> BinaryNetCNN:
    """The binary CNN of Larq's MNIST tutorial, for 28x28x1 images.

    Layers (``C3``: 3x3 convolution with valid padding, ``MP2``: 2x2 max
    pool with stride 2, ``FC``: dense; batch norm after every layer)::

        32C3 - MP2 - 64C3 - MP2 - 64C3 - 64FC - 10FC

    28x28x1 images become 3x3x64 = 576 inputs of the first dense layer.
    :class:`BinaryNetCNN` with ``conv_features=(32, 64, 64)``,
    ``pool_after=(0, 1)``, ``dense_features=(64,)``, ``padding="VALID"``,
    ``in_features=1`` and ``input_size=(28, 28)``: the network of Larq's
    "Introduction to BNNs with Larq" (docs.larq.dev; 3 binary convolutions
    and 2 binary dense layers; about 98% test accuracy in 6 epochs there).
    See :func:`bnnjax.models.linen.tutorial_cnn` for the differences from
    Larq's (batch norm with a learned scale, the model's
    ``kernel_binarizer`` instead of ``ste_sign`` with weight clipping; the
    first layer sees the real pixels, as in Larq).

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = tutorial_cnn(rngs=nnx.Rngs(0))
      >>> model.dense[0].latent_kernel.shape
      (576, 64)
      >>> model.eval()
      >>> model(jnp.ones((2, 28, 28, 1))).shape
      (2, 10)

    Args:
      rngs: ``nnx.Rngs`` for the parameters.
      **kwargs: :class:`BinaryNetCNN` arguments overriding the layout, the
        input (``in_features``, ``input_size``) or the binarizers.

    References:
      Larq, `Introduction to BNNs with Larq
      <https://docs.larq.dev/larq/tutorials/mnist/>`_
    """
    defaults = {"in_features": 1, "input_size": (28, 28)}
    return BinaryNetCNN(
        **{**_common.LARQ_MNIST_CNN, **defaults, **kwargs}, rngs=rngs
    )

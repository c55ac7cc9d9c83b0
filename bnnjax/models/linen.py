"""Reference binary networks for ``flax.linen``.

* :class:`BinaryMLP`: the BinaryConnect / BinaryNet MNIST MLP.
* :class:`BinaryNetCNN`: BinaryNet's VGG-like CIFAR-10 network, its layout
  a field; :func:`tutorial_cnn` is the small CNN of Larq's MNIST tutorial.
* :class:`BiRealResNet` (:func:`bireal_resnet18`, :func:`bireal_resnet20`)
  built from :class:`BiRealBlock`: binary ResNets with a real-valued
  shortcut around every binary convolution.
* :class:`ReActNet` (:func:`reactnet_a`, :func:`reactnet_small`) built from
  :class:`ReActBlock`: ReActNet-A's learnable thresholds (RSign) and
  shifted PReLUs (RPReLU) on MobileNet-v1's layout.

Every model is called as ``model.apply(variables, x, train=...,
progress=...)``: ``train`` selects batch statistics (``True``, with
``mutable=["batch_stats"]``) or the running averages (``False``), as
``flax.linen.BatchNorm(use_running_average=not train)``; ``progress`` (a
scalar in ``[0, 1]``, may be traced) reaches every binary layer, for
annealed surrogates such as :class:`bnnjax.EdeSurrogate`. Latent kernels
are stored under ``"latent_kernel"``; the real-valued layers (first
convolutions, real heads, shortcuts, batch norm) use flax's own modules
and names. Sub-module names match the attribute paths of
:mod:`bnnjax.models.nnx` with list indices joined by ``_`` (nnx
``blocks[3].conv`` is linen ``blocks_3/conv``).

A layer followed by batch norm has no bias (``use_bias=False``): batch
norm's learned shift makes it redundant. Stochastic binarizers draw from
the layers' ``"binarize"`` rng stream and dropout from ``"dropout"``.
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
from bnnjax.models._linen_reactnet import (
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
from bnnjax.nn.linen import BinaryConv, BinaryDense

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


class BinaryMLP(NormMixin, nn.Module):
    """The BinaryConnect / BinaryNet MLP with batch norm after every layer.

    Layers, for ``hidden=(h_1, ..., h_L)`` and inputs flattened to
    ``(batch, d)``::

        dense_0:   BinaryDense(h_1), real inputs   -> BN -> act
        dense_i:   BinaryDense(h_(i+1))            -> BN -> act
        head:      BinaryDense(num_classes)        -> BN      (binary_last)
                   or nn.Dense(num_classes)                   (otherwise)

    ``act`` is ``sign`` (``binary_activations=True``, BinaryNet: the next
    layer binarizes its inputs with ``activation_binarizer``) or ReLU
    (``False``, BinaryConnect: binary weights, real activations). Every
    dense layer binarizes its kernel with ``kernel_binarizer``; the first
    sees the real-valued pixels. A real head (``binary_last=False``) sees
    real values: the batch-norm output, or its ReLU.

    Published sizes: BinaryNet's MNIST MLP is ``hidden=(4096, 4096,
    4096)``; the default ``(1024, 1024, 1024)`` is 4x smaller and trains
    much faster on a CPU.

    Deviations from the papers: no biases before batch norm (the Theano
    code kept them; batch norm's shift makes them redundant). The model
    returns logits; the papers' squared hinge (L2-SVM) loss belongs to the
    training code. Dropout (``input_dropout_rate``, ``dropout_rate``) only
    acts on real-valued signals: BinaryNet's MNIST script also dropped the
    +-1 hidden activations (rate 0.5), which makes them ternary.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = BinaryMLP(hidden=(32, 32))
      >>> x = jnp.ones((2, 28, 28, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> sorted(variables)
      ['batch_stats', 'params']
      >>> model.apply(variables, x, train=False).shape
      (2, 10)

    Attributes:
      hidden: widths of the hidden layers (non-empty, positive).
      num_classes: number of outputs.
      binary_activations: ``sign`` activations (BinaryNet) or ReLU
        (BinaryConnect).
      binary_last: binary head followed by batch norm (as published), or a
        real ``nn.Dense`` with a bias.
      kernel_binarizer: rule for every binary kernel; default
        ``bnnjax.Binarizer(axis=-1)`` (scaled sigmoid, one
        mean-absolute-deviation scale per output feature, which batch norm
        absorbs). BinaryNet's own rule is
        ``bnnjax.Binarizer(surrogate="clipped_ste", scale=None)``.
      activation_binarizer: rule for the activations; default
        ``bnnjax.Binarizer(surrogate="clipped_ste", scale=None)``, sign
        with BinaryNet's hardtanh straight-through gradient.
      input_dropout_rate: dropout rate on the input pixels (default 0).
      dropout_rate: dropout rate on real-valued hidden activations and the
        input of a real head (default 0).
      bn_momentum: batch-norm running-average momentum (BinaryNet: 0.9).
      bn_epsilon: batch-norm epsilon (BinaryNet: 1e-4).
      sign_product_dtype: operand dtype of the forward products of the
        layers whose inputs are binarized (``binary_activations``; the
        first layer sees real pixels): ``"auto"`` (default), ``None`` or
        ``jnp.bfloat16``, as :class:`bnnjax.nn.linen.BinaryDense`'s. Exact
        either way: it only changes the speed. With real activations
        there is nothing to apply it to, and ``jnp.bfloat16`` raises.
      residuals: what the products of every binary layer (the first included)
        keep for the backward pass: ``"auto"`` (default), ``"packed"`` or
        ``"unpacked"``, as :class:`bnnjax.nn.linen.BinaryDense`'s. Gradients
        are bit for bit the same either way: it only changes the memory the
        backward pass keeps.
      dtype: computation dtype of every layer (default: inferred).
      param_dtype: parameter dtype (default float32).

    References:
      Courbariaux et al, `BinaryConnect: Training Deep Neural Networks with
      binary weights during propagations <https://arxiv.org/abs/1511.00363>`_,
      2015; Hubara et al, `Binarized Neural Networks
      <https://arxiv.org/abs/1602.02830>`_, 2016
    """

    _: dataclasses.KW_ONLY
    hidden: Sequence[int] = (1024, 1024, 1024)
    num_classes: int = 10
    binary_activations: bool = True
    binary_last: bool = True
    kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER
    activation_binarizer: Binarizer = _common.SIGN_ACTIVATION
    input_dropout_rate: float = 0.0
    dropout_rate: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-4
    sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO
    residuals: Residuals = "auto"
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _common.check_mlp(
            hidden=self.hidden,
            num_classes=self.num_classes,
            binary_activations=self.binary_activations,
            binary_last=self.binary_last,
            kernel_binarizer=self.kernel_binarizer,
            activation_binarizer=self.activation_binarizer,
            input_dropout_rate=self.input_dropout_rate,
            dropout_rate=self.dropout_rate,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            sign_product_dtype=self.sign_product_dtype,
            residuals=self.residuals,
        )
        super().__post_init__()

    def _dropout(self, x: jax.Array, rate: float, train: bool) -> jax.Array:
        if rate == 0.0:
            return x
        return nn.Dropout(rate, deterministic=not train)(x)

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
          x: ``(batch, features)`` or ``(batch, height, width, channels)``
            inputs, flattened to ``(batch, features)``.
          train: use batch statistics (pass ``mutable=["batch_stats"]``)
            and dropout, or the running averages.
          progress: training progress in ``[0, 1]`` for every binary layer.

        Raises:
          ValueError: for inputs without a batch axis.
          TypeError: if ``train`` is not a bool.
        """
        train = _common.check_train(train)
        h = _common.flatten_batch("BinaryMLP", x)
        act = self.activation_binarizer if self.binary_activations else None
        h = self._dropout(h, self.input_dropout_rate, train)
        for i, width in enumerate(self.hidden):
            if i > 0 and act is None:
                h = self._dropout(h, self.dropout_rate, train)
            h = BinaryDense(
                width,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_binarizer=self.kernel_binarizer,
                input_binarizer=act if i > 0 else None,
                sign_product_dtype=self.sign_product_dtype if i > 0 else AUTO,
                residuals=self.residuals,
                name=f"dense_{i}",
            )(h, progress=progress)
            h = self._norm(train, f"dense_norm_{i}")(h)
            if act is None:
                h = nn.relu(h)
        if not self.binary_last:
            h = self._dropout(h, self.dropout_rate, train)
            return nn.Dense(
                self.num_classes,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="head",
            )(h)
        if act is None:
            h = self._dropout(h, self.dropout_rate, train)
        h = BinaryDense(
            self.num_classes,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=act,
            sign_product_dtype=self.sign_product_dtype,
            residuals=self.residuals,
            name="head",
        )(h, progress=progress)
        return self._norm(train, "head_norm")(h)


class BinaryNetCNN(NormMixin, nn.Module):
    """BinaryNet's VGG-like CIFAR-10 network, all weights binary.

    Layers (``C3``: 3x3 convolution, ``MP2``: 2x2 max pool with stride 2,
    ``FC``: dense; batch norm after every layer, ``sign`` activations in
    between), with the default fields::

        2x128C3 - MP2 - 2x256C3 - MP2 - 2x512C3 - MP2 - 2x1024FC - 10FC

    in the order of BinaryNet's code: ``conv -> [max pool] -> BN -> sign``.
    The layout is a field: ``conv_features`` lists the convolutions,
    ``pool_after`` the indices of those a max pool follows,
    ``dense_features`` the hidden dense layers (possibly none) between the
    flatten and the head, and ``padding`` the convolutions' padding;
    :func:`tutorial_cnn` builds the smaller network of Larq's MNIST
    tutorial with them. The first convolution sees the real-valued pixels
    (and pads them with zeros); every later layer binarizes its inputs with
    ``activation_binarizer`` and pads them with ``pad_value``. The head is
    binary and followed by batch norm. Widths other than the head's scale
    with ``width_multiplier``.

    Published size (default fields, 32x32x3 inputs): 4,574,592
    convolution and 9,447,424 dense latent weights, plus batch norm.

    Deviations from the paper: no biases before batch norm (the Theano code
    kept them); ``pad_value=0`` (default) pads binary activations with
    zeros, as the paper's code did, which makes border inputs ternary; use
    ``pad_value=-1.0`` or ``1.0`` for strictly binary inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = BinaryNetCNN(width_multiplier=0.125)
      >>> x = jnp.ones((1, 32, 32, 3))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> variables["params"]["conv_0"]["latent_kernel"].shape
      (3, 3, 3, 16)
      >>> model.apply(variables, x, train=False).shape
      (1, 10)

      A custom layout: two unpadded convolutions, one pool, no hidden dense
      layer (12x12 -> 10x10 -> 8x8 -> 4x4, so 4 * 4 * 8 inputs to the
      head):

      >>> model = BinaryNetCNN(
      ...     conv_features=(8, 8), pool_after=(1,), dense_features=(),
      ...     padding="VALID")
      >>> x = jnp.ones((1, 12, 12, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> variables["params"]["head"]["latent_kernel"].shape
      (128, 10)

    Attributes:
      num_classes: number of outputs.
      width_multiplier: scales every width ``c`` of ``conv_features`` and
        ``dense_features`` (not the head's) to
        ``max(1, round(c * width_multiplier))``; a positive finite float.
      conv_features: output channels of the 3x3 convolutions ``conv_i``,
        before ``width_multiplier``; a non-empty sequence of positive ints
        (default BinaryNet's ``(128, 128, 256, 256, 512, 512)``).
      pool_after: 0-based indices of the convolutions a 2x2/stride-2 max
        pool follows (before their batch norm); distinct and increasing, in
        ``[0, len(conv_features))``. Default ``(1, 3, 5)``: every second.
      dense_features: widths of the hidden dense layers ``dense_i`` between
        the flatten and the head, before ``width_multiplier``; positive
        ints, may be empty (default BinaryNet's ``(1024, 1024)``).
      padding: ``"SAME"`` (default) or ``"VALID"``, for every convolution.
        Each ``"VALID"`` convolution takes 2 pixels off each side of the
        map; a pool halves it (rounding down). Inputs must be at least as
        large as the layout needs for a 1x1 map (8x8 by default).
      kernel_binarizer: rule for every kernel; default
        ``bnnjax.Binarizer(axis=-1)``. BinaryNet's own rule is
        ``bnnjax.Binarizer(surrogate="clipped_ste", scale=None)``.
      activation_binarizer: rule for the activations; default sign with the
        hardtanh straight-through gradient, as BinaryNet.
      pad_value: constant the binary activations are padded with (only
        used with ``padding="SAME"``).
      bn_momentum: batch-norm running-average momentum (BinaryNet: 0.9).
      bn_epsilon: batch-norm epsilon (BinaryNet: 1e-4).
      sign_product_dtype: operand dtype of the forward products of the
        layers whose inputs are binarized (every layer but the first):
        ``"auto"`` (default; float32 in convolutions), ``None`` or
        ``jnp.bfloat16``, as :class:`bnnjax.nn.linen.BinaryDense`'s. Exact
        either way: it only changes the speed.
      residuals: what the products of every binary layer (the first included)
        keep for the backward pass: ``"auto"`` (default), ``"packed"`` or
        ``"unpacked"``, as :class:`bnnjax.nn.linen.BinaryDense`'s. Gradients
        are bit for bit the same either way: it only changes the memory the
        backward pass keeps.
      conv_impl: how every binary convolution is computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.linen.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise (the first
        convolution's real pixels): it only changes the speed.
      dtype: computation dtype of every layer (default: inferred).
      param_dtype: parameter dtype (default float32).

    References:
      Hubara et al, `Binarized Neural Networks
      <https://arxiv.org/abs/1602.02830>`_, 2016
    """

    _: dataclasses.KW_ONLY
    num_classes: int = 10
    width_multiplier: float = 1.0
    conv_features: Sequence[int] = _common.BINARYNET_CNN_CONV
    pool_after: Sequence[int] = _common.BINARYNET_CNN_POOLS
    dense_features: Sequence[int] = _common.BINARYNET_CNN_DENSE
    padding: str = "SAME"
    kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER
    activation_binarizer: Binarizer = _common.SIGN_ACTIVATION
    pad_value: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-4
    sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO
    residuals: Residuals = "auto"
    conv_impl: _formulation.ConvImpl = "auto"
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _cnn_layout(self)
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
          x: ``(batch, height, width, channels)`` images, at least as large
            as the layout needs (8x8 with the default fields).
          train: use batch statistics (pass ``mutable=["batch_stats"]``) or
            the running averages.
          progress: training progress in ``[0, 1]`` for every binary layer.

        Raises:
          ValueError: for inputs of another rank, or too small for the
            layout (the message gives the smallest size).
          TypeError: if ``train`` is not a bool.
        """
        train = _common.check_train(train)
        h = jnp.asarray(x)
        layout = _cnn_layout(self)
        _common.check_image_batch(
            "BinaryNetCNN",
            h.shape,
            min_size=_common.cnn_min_input_size(layout),
            reason=_common.describe_cnn_layout(layout),
        )
        act = self.activation_binarizer
        for i, features in enumerate(layout.conv):
            h = BinaryConv(
                features,
                (3, 3),
                padding=layout.padding,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_binarizer=self.kernel_binarizer,
                input_binarizer=act if i > 0 else None,
                pad_value=self.pad_value if i > 0 else 0.0,
                sign_product_dtype=self.sign_product_dtype if i > 0 else AUTO,
                residuals=self.residuals,
                conv_impl=self.conv_impl,
                name=f"conv_{i}",
            )(h, progress=progress)
            if i in layout.pool_after:
                h = F.max_pool(h, (2, 2), strides=(2, 2))
            h = self._norm(train, f"conv_norm_{i}")(h)
        h = jnp.reshape(h, (h.shape[0], -1))
        dense = layout.dense
        for i, width in enumerate((*dense, self.num_classes)):
            last = i == len(dense)
            h = BinaryDense(
                width,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_binarizer=self.kernel_binarizer,
                input_binarizer=act,
                sign_product_dtype=self.sign_product_dtype,
                residuals=self.residuals,
                name="head" if last else f"dense_{i}",
            )(h, progress=progress)
            h = self._norm(train, "head_norm" if last else f"dense_norm_{i}")(h)
        return h


def _cnn_layout(model: BinaryNetCNN) -> _common.CnnLayout:
    """Checks ``model``'s fields; returns its layout."""
    return _common.check_cnn(
        num_classes=model.num_classes,
        width_multiplier=model.width_multiplier,
        conv_features=model.conv_features,
        pool_after=model.pool_after,
        dense_features=model.dense_features,
        padding=model.padding,
        kernel_binarizer=model.kernel_binarizer,
        activation_binarizer=model.activation_binarizer,
        pad_value=model.pad_value,
        bn_momentum=model.bn_momentum,
        bn_epsilon=model.bn_epsilon,
        sign_product_dtype=model.sign_product_dtype,
        residuals=model.residuals,
        conv_impl=model.conv_impl,
    )


def tutorial_cnn(**kwargs: Any) -> BinaryNetCNN:
    """The binary CNN of Larq's MNIST tutorial, for 28x28x1 images.

    Layers (``C3``: 3x3 convolution with valid padding, ``MP2``: 2x2 max
    pool with stride 2, ``FC``: dense; batch norm after every layer)::

        32C3 - MP2 - 64C3 - MP2 - 64C3 - 64FC - 10FC

    28x28x1 images shrink to 26x26, 13x13, 11x11, 5x5 and 3x3, so the first
    dense layer sees 3x3x64 = 576 inputs: 3 binary convolutions and 2
    binary dense layers, 93,088 latent weights. It is
    :class:`BinaryNetCNN` with ``conv_features=(32, 64, 64)``,
    ``pool_after=(0, 1)``, ``dense_features=(64,)`` and
    ``padding="VALID"``; images must be at least 18x18.

    This is the network of Larq's "Introduction to BNNs with Larq"
    (docs.larq.dev), which says it reaches about 98% test accuracy on
    MNIST in 6 epochs. As
    in Larq, the first convolution sees the real-valued pixels, and every
    later layer binarizes its inputs with sign and the clipped
    straight-through gradient (the default ``activation_binarizer``, Larq's
    ``ste_sign``). Differences from the tutorial:

    * batch norm keeps a learned scale (the tutorial uses ``scale=False``);
    * the kernel rule is the model's ``kernel_binarizer``: by default
      bnnjax's founding rule ``bnnjax.Binarizer(axis=-1)`` (scaled sigmoid
      surrogate, one mean-absolute-deviation scale per output channel).
      Larq uses ``ste_sign`` with the latent weights clipped to
      ``[-1, 1]``: ``kernel_binarizer=bnnjax.Binarizer(
      surrogate="clipped_ste", scale=None)`` with
      :func:`bnnjax.optim.clip_latent_weights` in the optimizer;
    * batch-norm momentum and epsilon stay :class:`BinaryNetCNN`'s 0.9 and
      1e-4 (Keras: 0.99 and 1e-3).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = tutorial_cnn()
      >>> x = jnp.ones((2, 28, 28, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> variables["params"]["dense_0"]["latent_kernel"].shape
      (576, 64)
      >>> model.apply(variables, x, train=False).shape
      (2, 10)

    Args:
      **kwargs: :class:`BinaryNetCNN` fields overriding the layout (e.g.
        ``num_classes``, ``width_multiplier``) or the binarizers.

    References:
      Larq, `Introduction to BNNs with Larq
      <https://docs.larq.dev/larq/tutorials/mnist/>`_
    """
    return BinaryNetCNN(**{**_common.LARQ_MNIST_CNN, **kwargs})


class BiRealBlock(NormMixin, nn.Module):
    """One Bi-Real block: a binary 3x3 convolution with a real shortcut.

    Forward::

        y = BN(BinaryConv(sign(x)))  + shortcut(x)
        shortcut(x) = x                                  (same shape)
                    = BN(Conv1x1(AvgPool_s(x)))          (otherwise)

    ``sign`` is ``activation_binarizer`` (the convolution's input
    binarizer), so the real-valued ``x`` flows past every binary
    convolution. The shortcut's average pool (window and stride
    ``strides``, ``'SAME'`` padding that does not count padded zeros) and
    1x1 convolution are real-valued; the pool equals PyTorch's
    ``AvgPool2d(2)`` on even sizes and matches the convolution's output
    size on odd ones.

    Attributes:
      features: output channels.
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
        :class:`bnnjax.nn.linen.BinaryConv`'s. Exact either way.
      residuals: what the binary convolution's product keeps for the backward
        pass: ``"auto"`` (default), ``"packed"`` or ``"unpacked"``, as
        :class:`bnnjax.nn.linen.BinaryConv`'s. Gradients are bit for bit the
        same either way: it only changes the memory the backward pass keeps.
      conv_impl: how the binary convolution is computed: ``"auto"``
        (default), ``"xla"`` or ``"patches"``, as
        :class:`bnnjax.nn.linen.BinaryConv`'s. Equal bit for bit on
        ``+-1`` operands, up to float rounding otherwise: it only
        changes the speed.
      dtype: computation dtype (default: inferred).
      param_dtype: parameter dtype (default float32).
    """

    features: int
    strides: int = 1
    _: dataclasses.KW_ONLY
    kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER
    activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION
    pad_value: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO
    residuals: Residuals = "auto"
    conv_impl: _formulation.ConvImpl = "auto"
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _common.check_positive_int("features", self.features)
        _common.check_positive_int("strides", self.strides)
        _common.check_block_rules(
            kernel_binarizer=self.kernel_binarizer,
            activation_binarizer=self.activation_binarizer,
            pad_value=self.pad_value,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            sign_product_dtype=self.sign_product_dtype,
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
        """Applies the block to ``(batch, height, width, channels)`` inputs.

        Args:
          x: real-valued channels-last activations.
          train: use batch statistics or the running averages.
          progress: training progress in ``[0, 1]`` for the binary layer.
        """
        train = _common.check_train(train)
        x = jnp.asarray(x)
        _common.check_image_batch("BiRealBlock", x.shape)
        y = BinaryConv(
            self.features,
            (3, 3),
            self.strides,
            padding=1,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=self.activation_binarizer,
            pad_value=self.pad_value,
            sign_product_dtype=self.sign_product_dtype,
            residuals=self.residuals,
            conv_impl=self.conv_impl,
            name="conv",
        )(x, progress=progress)
        y = self._norm(train, "norm")(y)
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            if self.strides != 1:
                window = (self.strides, self.strides)
                shortcut = nn.avg_pool(
                    shortcut,
                    window,
                    strides=window,
                    padding="SAME",
                    count_include_pad=False,
                )
            shortcut = nn.Conv(
                self.features,
                (1, 1),
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="shortcut_conv",
            )(shortcut)
            shortcut = self._norm(train, "shortcut_norm")(shortcut)
        return y + shortcut


class BiRealResNet(NormMixin, nn.Module):
    """A binary ResNet with a real-valued shortcut around every binary conv.

    Layers::

        stem_conv:  Conv(stem_features, k x k, stem_strides), real -> BN
                    [-> MaxPool 3x3 / 2]                  (stem_max_pool)
        blocks_i:   BiRealBlock, 2 per basic block, stage by stage; the
                    first of every stage but the first has stride 2
        head:       global average pool -> Dense(num_classes), real

    The defaults are Bi-Real Net-18 (ImageNet, :func:`bireal_resnet18`):
    stem 7x7/2 with 64 channels and a max pool, ``stage_sizes=(2, 2, 2,
    2)`` basic blocks (16 binary convolutions) with ``stage_features=(64,
    128, 256, 512)``. :func:`bireal_resnet20` gives the CIFAR layout: stem
    3x3/1 with 16 channels, no max pool, ``stage_sizes=(3, 3, 3)`` with
    ``(16, 32, 64)`` features. A basic block of a standard ResNet (two
    convolutions, one shortcut) becomes two :class:`BiRealBlock`, each with
    its own shortcut.

    Small images (``small_input_stem``): the ImageNet stem (7x7/2 and a
    max pool, 4x downsampling) would shrink MNIST's 28x28 to 7x7 before
    the first block and to 1x1 before the last stage. For images of at
    most 64 pixels on their shorter side (``SMALL_INPUT_SIZE``) the stem is
    instead a 3x3 convolution with stride 1 and no max pool, as in the CIFAR
    ResNets and the CIFAR experiments of Bi-Real Net and IR-Net; with
    ``stem_features`` channels. ``small_input_stem=None`` (default) picks it
    from the inputs' size at ``init``/``apply``; ``True`` or ``False``
    forces it either way (``False``: the stem fields, whatever the size).
    ResNet-20's stem is already that 3x3/1 stem, so the setting changes
    nothing there. With ``None``, variables made on small images do not
    fit large ones (the stem kernels differ) and flax says so.

    Published size: Bi-Real Net-18 has 10,985,472 binary weights and
    704,040 real parameters (stem, 1x1 shortcuts, batch norm, head),
    11,689,512 in all, as ResNet-18.

    Deviations: none intended in the layers (no ReLU anywhere, as in the
    authors' PyTorch code: the stem is conv -> BN -> max pool). The kernel
    rule differs by default: ``bnnjax.Binarizer(axis=-1)`` scales by the
    mean absolute deviation with a scaled sigmoid gradient, while Bi-Real
    Net scales by ``mean(|W|)`` per output channel, closest to
    ``bnnjax.Binarizer(surrogate="clipped_ste", scale="mean_abs",
    axis=-1)``. Real-valued pre-training with a clip activation is
    training code.

    Attributes:
      stage_sizes: basic blocks per stage (two binary convs each).
      stage_features: channels of each stage.
      num_classes: number of outputs.
      stem_features: channels of the real stem convolution.
      stem_kernel_size: its window (padded ``(k - 1) // 2`` low and
        ``k // 2`` high, as PyTorch's ``padding=k // 2`` for odd ``k``).
      stem_strides: its stride.
      stem_max_pool: 3x3 max pool with stride 2 after the stem.
      small_input_stem: replace the stem by a 3x3 convolution with stride
        1 and no max pool (``True``), keep the stem fields (``False``), or
        choose by input size (``None``, default): the small stem for
        images of at most 64 pixels on the shorter side.
      width_multiplier: scales every channel count (the stem's and every
        stage's; not ``num_classes``) to ``max(1, round(c *
        width_multiplier))``; a positive finite float, default 1.0 (the
        published widths).
      kernel_binarizer: rule for every binary kernel.
      activation_binarizer: rule for the binary convolutions' inputs;
        default ``bnnjax.Binarizer(surrogate="approx_sign", scale=None)``.
      pad_value: constant the binary activations are padded with.
      bn_momentum: batch-norm running-average momentum (PyTorch: 0.9).
      bn_epsilon: batch-norm epsilon (PyTorch: 1e-5).
      sign_product_dtype: operand dtype of every binary convolution's
        forward product: ``"auto"`` (default; float32 in convolutions),
        ``None`` or ``jnp.bfloat16``, as
        :class:`bnnjax.nn.linen.BinaryConv`'s. Exact either way.
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
      Liu et al, `Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
      Improved Representational Capability and Advanced Training Algorithm
      <https://arxiv.org/abs/1808.00278>`_, 2018; He et al, `Deep Residual
      Learning for Image Recognition <https://arxiv.org/abs/1512.03385>`_,
      2016
    """

    _: dataclasses.KW_ONLY
    stage_sizes: Sequence[int] = _common.RESNET18["stage_sizes"]
    stage_features: Sequence[int] = _common.RESNET18["stage_features"]
    num_classes: int = _common.RESNET18["num_classes"]
    stem_features: int = _common.RESNET18["stem_features"]
    stem_kernel_size: int = _common.RESNET18["stem_kernel_size"]
    stem_strides: int = _common.RESNET18["stem_strides"]
    stem_max_pool: bool = _common.RESNET18["stem_max_pool"]
    small_input_stem: bool | None = None
    width_multiplier: float = 1.0
    kernel_binarizer: Binarizer = DEFAULT_KERNEL_BINARIZER
    activation_binarizer: Binarizer = _common.APPROX_SIGN_ACTIVATION
    pad_value: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    sign_product_dtype: jax.typing.DTypeLike | str | None = AUTO
    residuals: Residuals = "auto"
    conv_impl: _formulation.ConvImpl = "auto"
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _common.check_resnet(
            stage_sizes=self.stage_sizes,
            stage_features=self.stage_features,
            num_classes=self.num_classes,
            stem_features=self.stem_features,
            stem_kernel_size=self.stem_kernel_size,
            stem_strides=self.stem_strides,
            stem_max_pool=self.stem_max_pool,
            width_multiplier=self.width_multiplier,
            small_input_stem=self.small_input_stem,
            kernel_binarizer=self.kernel_binarizer,
            activation_binarizer=self.activation_binarizer,
            pad_value=self.pad_value,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            sign_product_dtype=self.sign_product_dtype,
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
          progress: training progress in ``[0, 1]`` for every binary layer.

        Raises:
          ValueError: for inputs of another rank.
          TypeError: if ``train`` is not a bool.
        """
        train = _common.check_train(train)
        x = jnp.asarray(x)
        _common.check_image_batch("BiRealResNet", x.shape)
        stem_features, layout = _common.bireal_widths(
            self.stage_sizes,
            self.stage_features,
            self.stem_features,
            self.width_multiplier,
        )
        small = _common.use_small_stem(self.small_input_stem, x.shape[1:3])
        k, stem_strides, max_pool = _common.stem_layout(
            small, self.stem_kernel_size, self.stem_strides, self.stem_max_pool
        )
        x = nn.Conv(
            stem_features,
            (k, k),
            strides=stem_strides,
            padding=_common.stem_padding(k),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="stem_conv",
        )(x)
        x = self._norm(train, "stem_norm")(x)
        if max_pool:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, (features, strides) in enumerate(layout):
            x = BiRealBlock(
                features,
                strides,
                kernel_binarizer=self.kernel_binarizer,
                activation_binarizer=self.activation_binarizer,
                pad_value=self.pad_value,
                sign_product_dtype=self.sign_product_dtype,
                residuals=self.residuals,
                conv_impl=self.conv_impl,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
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


def bireal_resnet18(**kwargs: Any) -> BiRealResNet:
    """Bi-Real Net-18 for ImageNet-sized inputs (1000 classes).

    On images of at most 64x64 pixels (MNIST, CIFAR) the stem is the
    CIFAR-style 3x3/1 convolution without max pool, unless
    ``small_input_stem=False`` (see :class:`BiRealResNet`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = bireal_resnet18(num_classes=10, width_multiplier=0.0625)
      >>> x = jnp.ones((2, 28, 28, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> variables["params"]["stem_conv"]["kernel"].shape
      (3, 3, 1, 4)
      >>> model.apply(variables, x, train=False).shape
      (2, 10)

    Args:
      **kwargs: :class:`BiRealResNet` fields overriding the layout (e.g.
        ``num_classes``) or the binarizers.
    """
    return BiRealResNet(**{**_common.RESNET18, **kwargs})


def bireal_resnet20(**kwargs: Any) -> BiRealResNet:
    """ResNet-20 for CIFAR-sized inputs (10 classes) with Bi-Real blocks.

    Layers: stem 3x3 conv (16) -> 3 stages of 3 basic blocks (6 binary
    convolutions) with 16, 32 and 64 channels -> global average pool ->
    dense, 18 binary and 2 real layers.

    Args:
      **kwargs: :class:`BiRealResNet` fields overriding the layout or the
        binarizers.
    """
    return BiRealResNet(**{**_common.RESNET20, **kwargs})

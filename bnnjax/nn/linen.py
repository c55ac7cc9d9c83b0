"""Binary layers for ``flax.linen``: dense, convolution, ReActNet activations.

:class:`BinaryDense` and :class:`BinaryConv` binarize their kernels (and
optionally inputs); :class:`RSign` and :class:`RPReLU` are ReActNet's
learnable-threshold sign and shifted PReLU.

The layers take ``flax.linen.Dense``/``Conv``'s argument names and defaults,
then add the binary extras (keyword-only): ``kernel_binarizer``,
``input_binarizer``, ``rng_collection`` and, for convolutions,
``pad_value``. The real-valued latent kernel is stored under
``LATENT_KERNEL = "latent_kernel"`` (not ``kernel``, so a float checkpoint
does not load silently) and the bias under ``bias``. The math lives in
:mod:`bnnjax.nn.functional` and is shared with :mod:`bnnjax.nn.nnx`.

flax arguments left out, because they do not fit a binary layer or would be
ignored: ``input_dilation`` (it inserts zeros between inputs, so they are no
longer binary), ``mask``, ``promote_dtype``, ``dot_general``/
``conv_general_dilated`` and their ``*_cls`` hooks. Passing one is a
``TypeError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bnnjax.binarize import Binarizer
from bnnjax.nn import (
    _checks,
    _formulation,
    _precision,
    _residuals,
    functional,
)
from bnnjax.nn._checks import PaddingLike
from bnnjax.nn.functional import LATENT_KERNEL

__all__ = ["LATENT_KERNEL", "BinaryConv", "BinaryDense", "RPReLU", "RSign"]

_default_kernel_init = nn.initializers.lecun_normal()
_default_bias_init = nn.initializers.zeros_init()


class _BinaryLayerLike(Protocol):
    """What :class:`_BinaryMixin` needs from the ``nn.Module`` it joins."""

    @property
    def kernel_binarizer(self) -> Binarizer: ...
    @property
    def input_binarizer(self) -> Binarizer | None: ...
    @property
    def rng_collection(self) -> str: ...
    def has_rng(self, name: str) -> bool: ...
    def make_rng(self, name: str = ...) -> jax.Array: ...
    def has_variable(self, col: str, name: str) -> bool: ...
    def get_variable(self, col: str, name: str, default: Any = ...) -> Any: ...


class _BinaryMixin:
    """Validation and key handling shared by the linen layers."""

    def _check_binarizers(self: _BinaryLayerLike) -> None:
        _checks.check_binarizer("kernel_binarizer", self.kernel_binarizer)
        _checks.check_binarizer(
            "input_binarizer", self.input_binarizer, optional=True
        )
        if not isinstance(self.rng_collection, str):
            raise TypeError(
                f"rng_collection must be a str, got {self.rng_collection!r}."
            )

    def _binarize_keys(
        self: _BinaryLayerLike,
    ) -> tuple[jax.Array | None, jax.Array | None]:
        """Draws (kernel_key, input_key) for stochastic binarizers."""

        def key_for(name: str, binarizer: Binarizer | None) -> jax.Array | None:
            if binarizer is None or not binarizer.stochastic:
                return None
            if not self.has_rng(self.rng_collection):
                raise ValueError(
                    f"{type(self).__name__}.{name} is stochastic "
                    f"({type(binarizer.surrogate).__name__}) and draws its "
                    f"signs from the {self.rng_collection!r} rng stream, "
                    "which was not given: pass rngs={"
                    f"'params': key, {self.rng_collection!r}: key2}} to "
                    f"init and rngs={{{self.rng_collection!r}: key}} to "
                    "apply."
                )
            return self.make_rng(self.rng_collection)

        return (
            key_for("kernel_binarizer", self.kernel_binarizer),
            key_for("input_binarizer", self.input_binarizer),
        )

    def _existing_kernel_shape(
        self: _BinaryLayerLike,
    ) -> tuple[int, ...] | None:
        if not self.has_variable("params", LATENT_KERNEL):
            return None
        return jnp.shape(
            nn.meta.unbox(self.get_variable("params", LATENT_KERNEL))
        )


class BinaryDense(_BinaryMixin, nn.Module):
    """A dense layer with a binarized kernel (and optionally inputs).

    Forward::

        y = binarize_in(x) @ binarize_k(W) + b

    with ``binarize_k = kernel_binarizer`` applied to the real-valued latent
    kernel ``W`` (by default the founding method: ``alpha * sign(W)`` with
    one mean-absolute-deviation ``alpha`` per output feature and a scaled
    sigmoid surrogate gradient) and ``binarize_in = input_binarizer``
    (identity when ``None``). The gradient reaches ``W`` through the
    kernel binarizer's surrogate.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import bnnjax
      >>> layer = BinaryDense(
      ...     4, input_binarizer=bnnjax.Binarizer(surrogate="clipped_ste",
      ...                                        scale=None))
      >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 3)))
      >>> sorted(variables["params"])
      ['bias', 'latent_kernel']
      >>> layer.apply(variables, jnp.ones((2, 3))).shape
      (2, 4)

    Attributes:
      features: number of output features.
      use_bias: whether to add a bias (default ``True``, as in flax).
      dtype: the dtype of the computation (default: infer from inputs and
        params).
      param_dtype: the dtype passed to the initializers (default float32).
      precision: ``lax.dot_general`` precision.
      kernel_init: initializer of the latent kernel ``(in, features)``.
      bias_init: initializer of the bias.
      kernel_binarizer: the rule applied to the latent kernel; default
        ``bnnjax.Binarizer(axis=-1)``, one scale per output feature.
      input_binarizer: the rule applied to the inputs, or ``None`` (default)
        for real-valued inputs, e.g. the first layer. A typical binary
        activation is ``bnnjax.Binarizer(surrogate="clipped_ste",
        scale=None)``.
      rng_collection: rng stream stochastic binarizers draw from (default
        ``"binarize"``).
      sign_product_dtype: operand dtype of the forward product when the
        inputs and the kernel are both binarized: ``"auto"`` (default:
        bfloat16 where that is exact and faster, see
        :func:`bnnjax.nn.bfloat16_dense_is_faster`), ``jnp.bfloat16``
        (exact; raises where it would not be) or ``None`` (the
        computation dtype). Outputs and gradients are bit for bit the
        same either way.
      residuals: what the product keeps for the backward pass:
        ``"packed"`` keeps each ``+-1`` operand (the kernel's signs;
        binarized inputs without a scale) and an STE window as bits,
        ``"unpacked"`` keeps autodiff's float residuals, and ``"auto"``
        (default) packs where that measured as a saving (on the CPU
        backend from 1,024 rows and 4,096 input features,
        :func:`bnnjax.nn.functional.dense_packing_saves`). Gradients are
        bit for bit the same either way; see
        :func:`bnnjax.nn.functional.binary_dense`.
    """

    features: int
    use_bias: bool = True
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32
    precision: lax.PrecisionLike = None
    kernel_init: jax.nn.initializers.Initializer = _default_kernel_init
    bias_init: jax.nn.initializers.Initializer = _default_bias_init
    _: dataclasses.KW_ONLY
    kernel_binarizer: Binarizer = functional.DEFAULT_KERNEL_BINARIZER
    input_binarizer: Binarizer | None = None
    rng_collection: str = "binarize"
    sign_product_dtype: jax.typing.DTypeLike | str | None = _precision.AUTO
    residuals: _residuals.Residuals = "auto"

    def __post_init__(self) -> None:
        _checks.check_positive_int("features", self.features)
        self._check_binarizers()
        _precision.check_sign_product_dtype(self.sign_product_dtype)
        _residuals.check_residuals(self.residuals)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the layer to ``(..., in_features)`` inputs.

        Args:
          inputs: array whose last axis holds the input features.
          progress: training progress in ``[0, 1]``, passed to both
            binarizers (needed by :class:`bnnjax.EdeSurrogate`); may be a
            traced scalar, so a schedule does not recompile.

        Returns:
          ``(..., features)`` array in the computation dtype.
        """
        inputs = jnp.asarray(inputs)
        existing = self._existing_kernel_shape()
        if existing is not None:
            _checks.check_dense_inputs(inputs.shape, existing)
        if inputs.ndim < 1:
            raise ValueError(
                "BinaryDense needs inputs of shape (..., in_features), got a "
                "scalar."
            )
        latent_kernel = self.param(
            LATENT_KERNEL,
            self.kernel_init,
            (inputs.shape[-1], self.features),
            self.param_dtype,
        )
        bias = None
        if self.use_bias:
            bias = self.param(
                "bias", self.bias_init, (self.features,), self.param_dtype
            )
        kernel_key, input_key = self._binarize_keys()
        return functional.binary_dense(
            inputs,
            latent_kernel,
            bias,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=self.input_binarizer,
            progress=progress,
            kernel_key=kernel_key,
            input_key=input_key,
            dtype=self.dtype,
            precision=self.precision,
            sign_product_dtype=self.sign_product_dtype,
            residuals=self.residuals,
        )


class BinaryConv(_BinaryMixin, nn.Module):
    """A convolution with a binarized kernel (and optionally inputs).

    Forward::

        y = conv_valid(pad(binarize_in(x), pad_value), binarize_k(W)) + b

    Padding is explicit and comes after input binarization: with a ``+-1``
    input binarizer and ``pad_value=-1`` or ``+1`` the kernel only sees
    ``+-1`` values (Larq's ``pad_values``); ``pad_value=0`` (default)
    matches ``flax.linen.Conv``. ``pad_value`` is not multiplied by the
    input binarizer's scale. Inputs are channels-last
    ``(*batch, *spatial, in_features)``; as in flax, an int ``kernel_size``
    ``k`` means ``(k,)``, a 1D convolution.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import bnnjax
      >>> layer = BinaryConv(
      ...     8, (3, 3), pad_value=-1.0,
      ...     input_binarizer=bnnjax.Binarizer(surrogate="clipped_ste",
      ...                                      scale=None))
      >>> x = jnp.ones((1, 5, 5, 4))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> variables["params"]["latent_kernel"].shape
      (3, 3, 4, 8)
      >>> layer.apply(variables, x).shape
      (1, 5, 5, 8)

    Attributes:
      features: number of convolution filters.
      kernel_size: the window's shape (an int ``k`` means ``(k,)``).
      strides: an int or one int per spatial dimension (default 1).
      padding: ``'SAME'`` (default), ``'SAME_LOWER'``, ``'VALID'``,
        ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'`` (1D), an int, or one int
        or ``(low, high)`` pair per spatial dimension.
      kernel_dilation: an int or one int per spatial dimension (default 1).
      feature_group_count: number of feature groups (default 1);
        ``in_features`` gives a depthwise convolution.
      use_bias: whether to add a bias (default ``True``, as in flax).
      dtype: the dtype of the computation (default: infer from inputs and
        params).
      param_dtype: the dtype passed to the initializers (default float32).
      precision: ``lax.conv_general_dilated`` precision.
      kernel_init: initializer of the latent kernel
        ``(*kernel_size, in_features // feature_group_count, features)``.
      bias_init: initializer of the bias.
      kernel_binarizer: the rule applied to the latent kernel; default
        ``bnnjax.Binarizer(axis=-1)``, one scale per output feature.
      input_binarizer: the rule applied to the inputs, or ``None`` (default)
        for real-valued inputs.
      pad_value: constant the (binarized) inputs are padded with; must be 0
        for ``'CIRCULAR'`` and ``'REFLECT'``.
      rng_collection: rng stream stochastic binarizers draw from (default
        ``"binarize"``).
      sign_product_dtype: operand dtype of the forward product when the
        inputs and the kernel are both binarized: ``"auto"`` (default:
        int8 with int32 sums for a patches convolution of at least 5
        input features on the CPU backend where the operands are
        exactly -1, 0 and +1, see
        ``bnnjax.nn._formulation.conv_patches``), ``jnp.bfloat16``
        (exact; raises where it would not be) or ``None`` (the
        computation dtype). Outputs are bit for bit the same either way,
        gradients too on integer-valued cotangents (up to float rounding
        of the kernel gradient's sums otherwise).
      residuals: what the product keeps for the backward pass:
        ``"packed"`` keeps each ``+-1`` operand (the kernel's signs;
        binarized inputs without a scale) and an STE window as bits,
        ``"unpacked"`` and ``"auto"`` (default) keep autodiff's float
        residuals. Gradients are bit
        for bit the same either way; see
        :func:`bnnjax.nn.functional.binary_conv`.
      conv_impl: how the convolution is computed: ``"auto"`` (default:
        the patches product on the CPU backend where it measured faster,
        see :func:`bnnjax.nn.functional.patches_conv_is_faster`),
        ``"xla"`` (``lax.conv_general_dilated``) or ``"patches"``. Equal
        bit for bit on +-1 operands, up to float rounding otherwise.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] | None = 1
    padding: PaddingLike = "SAME"
    _: dataclasses.KW_ONLY
    kernel_dilation: int | Sequence[int] | None = 1
    feature_group_count: int = 1
    use_bias: bool = True
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32
    precision: lax.PrecisionLike = None
    kernel_init: jax.nn.initializers.Initializer = _default_kernel_init
    bias_init: jax.nn.initializers.Initializer = _default_bias_init
    kernel_binarizer: Binarizer = functional.DEFAULT_KERNEL_BINARIZER
    input_binarizer: Binarizer | None = None
    pad_value: float = 0.0
    rng_collection: str = "binarize"
    sign_product_dtype: jax.typing.DTypeLike | str | None = _precision.AUTO
    residuals: _residuals.Residuals = "auto"
    conv_impl: _formulation.ConvImpl = "auto"

    def __post_init__(self) -> None:
        _checks.check_positive_int("features", self.features)
        _formulation.check_conv_impl(self.conv_impl)
        rank = len(_checks.canonicalize_kernel_size(self.kernel_size))
        _checks.canonicalize_window("strides", self.strides, rank)
        _checks.canonicalize_window(
            "kernel_dilation", self.kernel_dilation, rank
        )
        padding = _checks.canonicalize_padding(self.padding, rank)
        _checks.check_pad_value(self.pad_value, padding)
        _checks.check_feature_groups(self.feature_group_count, self.features)
        self._check_binarizers()
        _precision.check_sign_product_dtype(self.sign_product_dtype)
        _residuals.check_residuals(self.residuals)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Applies the convolution to ``(*batch, *spatial, in)`` inputs.

        Args:
          inputs: channels-last array; several (or no) batch axes are
            accepted, as in flax.
          progress: training progress in ``[0, 1]``, passed to both
            binarizers (needed by :class:`bnnjax.EdeSurrogate`); may be a
            traced scalar, so a schedule does not recompile.

        Returns:
          ``(*batch, *out_spatial, features)`` array in the computation
          dtype.
        """
        inputs = jnp.asarray(inputs)
        kernel_size = _checks.canonicalize_kernel_size(self.kernel_size)
        existing = self._existing_kernel_shape()
        if existing is not None:
            _checks.check_conv_inputs(
                inputs.shape, existing, self.feature_group_count
            )
        _checks.check_conv_rank(inputs.shape, kernel_size)
        kernel_shape = _checks.conv_kernel_shape(
            kernel_size,
            inputs.shape[-1],
            self.features,
            self.feature_group_count,
        )
        latent_kernel = self.param(
            LATENT_KERNEL, self.kernel_init, kernel_shape, self.param_dtype
        )
        bias = None
        if self.use_bias:
            bias = self.param(
                "bias", self.bias_init, (self.features,), self.param_dtype
            )
        kernel_key, input_key = self._binarize_keys()
        return functional.binary_conv(
            inputs,
            latent_kernel,
            bias,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=self.feature_group_count,
            pad_value=self.pad_value,
            kernel_binarizer=self.kernel_binarizer,
            input_binarizer=self.input_binarizer,
            progress=progress,
            kernel_key=kernel_key,
            input_key=input_key,
            dtype=self.dtype,
            precision=self.precision,
            sign_product_dtype=self.sign_product_dtype,
            residuals=self.residuals,
            conv_impl=self.conv_impl,
        )


class RSign(nn.Module):
    """ReActNet's RSign: ``sign(x - beta)`` with a learnable ``beta`` per
    channel.

    Forward and backward as :func:`bnnjax.nn.functional.rsign`::

        y          = binarize(x - beta)        # +1 where x >= beta (plain sign)
        dL/dx      = dL/dy * s'(x - beta)      # s: the binarizer's surrogate
        dL/dbeta   = -(dL/dy * s'(x - beta)) summed over all but the channels

    The outputs are the next binary layer's ``+-1`` inputs: give that layer
    ``input_binarizer=None`` (binarizing ``+-1`` again would evaluate the
    surrogate at ``+-1``, where ApproxSign's slope is 0). The threshold is
    stored under ``"beta"``, one per channel of the last axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = RSign()
      >>> x = jnp.array([[-0.5, 0.0, 0.3]])
      >>> variables = layer.init(jax.random.key(0), x)
      >>> variables["params"]["beta"].shape
      (3,)
      >>> layer.apply({"params": {"beta": jnp.array([0.0, 0.1, 0.3])}}, x)
      Array([[-1., -1.,  1.]], dtype=float32)

    Attributes:
      binarizer: the rule applied to ``x - beta``; default ``sign`` with
        Bi-Real Net's ApproxSign gradient, as ReActNet. Stochastic rules
        draw from the ``rng_collection`` stream.
      beta_init: initializer of ``beta`` ``(channels,)`` (default zeros:
        plain ``sign`` at initialization).
      dtype: the dtype of the computation (default: inferred).
      param_dtype: the dtype of ``beta`` (default float32).
      rng_collection: rng stream a stochastic binarizer draws from (default
        ``"binarize"``).

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """

    _: dataclasses.KW_ONLY
    binarizer: Binarizer = functional.RSIGN_BINARIZER
    beta_init: jax.nn.initializers.Initializer = _default_bias_init
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32
    rng_collection: str = "binarize"

    def __post_init__(self) -> None:
        _checks.check_binarizer("binarizer", self.binarizer)
        if not isinstance(self.rng_collection, str):
            raise TypeError(
                f"rng_collection must be a str, got {self.rng_collection!r}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Binarizes ``(..., channels)`` inputs against ``beta``.

        Args:
          inputs: channels-last array.
          progress: training progress in ``[0, 1]`` for the binarizer; may
            be traced.

        Returns:
          The shape of ``inputs``, in the computation dtype.
        """
        inputs = jnp.asarray(inputs)
        if inputs.ndim < 1:
            raise ValueError(
                "RSign needs inputs of shape (..., channels), got a scalar."
            )
        beta = self.param(
            "beta", self.beta_init, (inputs.shape[-1],), self.param_dtype
        )
        key = None
        if self.binarizer.stochastic:
            if not self.has_rng(self.rng_collection):
                raise ValueError(
                    f"RSign.binarizer is stochastic "
                    f"({type(self.binarizer.surrogate).__name__}) and draws "
                    f"its signs from the {self.rng_collection!r} rng stream, "
                    f"which was not given: pass rngs={{"
                    f"{self.rng_collection!r}: key}} to apply."
                )
            key = self.make_rng(self.rng_collection)
        return functional.rsign(
            inputs,
            beta,
            binarizer=self.binarizer,
            progress=progress,
            key=key,
            dtype=self.dtype,
        )


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma) + zeta`` per channel.

    Forward and backward as :func:`bnnjax.nn.functional.rprelu`, with
    ``z = x - gamma``::

        y = z + zeta                  if z >= 0
          = negative_slope * z + zeta otherwise

    ``gamma``, ``zeta`` and ``negative_slope`` hold one value per channel
    of the last axis, stored under those names. ``negative_slope`` starts
    at 0.25, PyTorch's ``nn.PReLU`` default that ReActNet uses (flax's
    scalar ``PReLU`` starts at 0.01); ``gamma`` and ``zeta`` at zero, a
    plain PReLU.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = RPReLU()
      >>> x = jnp.array([[-2.0, 1.0]])
      >>> variables = layer.init(jax.random.key(0), x)
      >>> sorted(variables["params"])
      ['gamma', 'negative_slope', 'zeta']
      >>> layer.apply(variables, x)
      Array([[-0.5,  1. ]], dtype=float32)

    Attributes:
      negative_slope_init: initial slope below the shifted origin.
      gamma_init: initializer of ``gamma`` (default zeros).
      zeta_init: initializer of ``zeta`` (default zeros).
      dtype: the dtype of the computation (default: inferred).
      param_dtype: the dtype of the parameters (default float32).

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """

    _: dataclasses.KW_ONLY
    negative_slope_init: float = 0.25
    gamma_init: jax.nn.initializers.Initializer = _default_bias_init
    zeta_init: jax.nn.initializers.Initializer = _default_bias_init
    dtype: jax.typing.DTypeLike | None = None
    param_dtype: jax.typing.DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _checks.check_finite_float(
            "negative_slope_init", self.negative_slope_init
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
        """Applies the activation to ``(..., channels)`` inputs.

        Returns:
          The shape of ``inputs``, in the computation dtype.
        """
        inputs = jnp.asarray(inputs)
        if inputs.ndim < 1:
            raise ValueError(
                "RPReLU needs inputs of shape (..., channels), got a scalar."
            )
        shape = (inputs.shape[-1],)
        gamma = self.param("gamma", self.gamma_init, shape, self.param_dtype)
        zeta = self.param("zeta", self.zeta_init, shape, self.param_dtype)
        slope = self.param(
            "negative_slope",
            nn.initializers.constant(self.negative_slope_init),
            shape,
            self.param_dtype,
        )
        return functional.rprelu(inputs, gamma, zeta, slope, dtype=self.dtype)

"""Binary layers for ``flax.nnx``: linear, convolution, ReActNet activations.

:class:`BinaryLinear` and :class:`BinaryConv` binarize their kernels (and
optionally inputs); :class:`RSign` and :class:`RPReLU` are ReActNet's
learnable-threshold sign and shifted PReLU.

The constructors take ``flax.nnx.Linear``/``Conv``'s argument names and
defaults, then add the binary extras (keyword-only): ``kernel_binarizer``,
``input_binarizer``, ``rng_collection`` and, for convolutions,
``pad_value``. The real-valued latent kernel is a :class:`LatentParam`
stored as ``self.latent_kernel``, so ``nnx.state(model, LatentParam)``
selects exactly the latent kernels; the bias is an ordinary ``nnx.Param``.
The math lives in :mod:`bnnjax.nn.functional` and is shared with
:mod:`bnnjax.nn.linen`.

flax arguments left out, because they do not fit a binary layer or would be
ignored: ``input_dilation`` (it inserts zeros between inputs, so they are no
longer binary), ``mask``, ``promote_dtype``, ``dot_general``/
``conv_general_dilated``, ``preferred_element_type`` and the call-time
``out_sharding``. Passing one is a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
from flax import nnx
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

__all__ = [
    "LATENT_KERNEL",
    "BinaryConv",
    "BinaryLinear",
    "LatentParam",
    "RPReLU",
    "RSign",
]

_default_kernel_init = nnx.initializers.lecun_normal()
_default_bias_init = nnx.initializers.zeros_init()


class LatentParam(nnx.Param[jax.Array]):
    """Real-valued latent weight; only its sign reaches the forward pass.

    The binary layers binarize it in every forward pass (``alpha *
    sign(w)``); the optimizer updates the real value. Select latent weights
    by type, e.g. ``nnx.state(model, LatentParam)``, to give them their own
    optimizer transform or clipping.
    """


def _binarize_stream(
    layer: str,
    rngs: nnx.Rngs,
    rng_collection: str,
    binarizers: Sequence[tuple[str, Binarizer | None]],
) -> nnx.RngStream | None:
    """Forks the stream stochastic binarizers draw from, as nnx.Dropout."""
    stochastic = [
        name for name, b in binarizers if b is not None and b.stochastic
    ]
    if not isinstance(rng_collection, str):
        raise TypeError(
            f"rng_collection must be a str, got {rng_collection!r}."
        )
    if not stochastic:
        return None
    try:
        return rngs[rng_collection].fork()
    except (KeyError, AttributeError):
        raise ValueError(
            f"{layer}: {' and '.join(stochastic)} is stochastic and draws "
            f"its signs from the {rng_collection!r} rng stream, but rngs has "
            f"neither a {rng_collection!r} nor a 'default' stream; pass e.g. "
            f"rngs=nnx.Rngs(0) or rngs=nnx.Rngs(params=0, "
            f"{rng_collection}=1)."
        ) from None


def check_rngs(rngs: object) -> nnx.Rngs:
    """Returns ``rngs`` if it is an ``nnx.Rngs``; a ``TypeError`` otherwise.

    Shared by the layers here and the models of :mod:`bnnjax.models.nnx`.
    """
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(
            f"rngs must be an nnx.Rngs, got {rngs!r} of type "
            f"{type(rngs).__name__}; e.g. rngs=nnx.Rngs(0)."
        )
    return rngs


class _BinaryLayer(nnx.Module):
    """Key handling shared by the nnx layers."""

    if TYPE_CHECKING:  # set by the subclasses' __init__
        rngs: nnx.RngStream | None
        kernel_binarizer: Binarizer
        input_binarizer: Binarizer | None

    def _binarize_keys(self) -> tuple[jax.Array | None, jax.Array | None]:
        """Draws (kernel_key, input_key) for stochastic binarizers."""

        def key_for(binarizer: Binarizer | None) -> jax.Array | None:
            if binarizer is None or not binarizer.stochastic:
                return None
            # __init__ forks a stream whenever a binarizer is stochastic.
            return cast(nnx.RngStream, self.rngs)()

        return key_for(self.kernel_binarizer), key_for(self.input_binarizer)


class BinaryLinear(_BinaryLayer):
    """A linear layer with a binarized kernel (and optionally inputs).

    Forward::

        y = binarize_in(x) @ binarize_k(W) + b

    with ``binarize_k = kernel_binarizer`` applied to the real-valued latent
    kernel ``W`` (a :class:`LatentParam`; by default the founding method:
    ``alpha * sign(W)`` with one mean-absolute-deviation ``alpha`` per
    output feature and a scaled sigmoid surrogate gradient) and
    ``binarize_in = input_binarizer`` (identity when ``None``).

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> import bnnjax
      >>> layer = BinaryLinear(3, 4, rngs=nnx.Rngs(0))
      >>> layer.latent_kernel.shape
      (3, 4)
      >>> layer(jnp.ones((2, 3))).shape
      (2, 4)

    Args:
      in_features: number of input features.
      out_features: number of output features.
      use_bias: whether to add a bias (default ``True``, as in flax).
      dtype: the dtype of the computation (default: infer from inputs and
        params).
      param_dtype: the dtype passed to the initializers (default float32).
      precision: ``lax.dot_general`` precision.
      kernel_init: initializer of the latent kernel
        ``(in_features, out_features)``.
      bias_init: initializer of the bias.
      rngs: ``nnx.Rngs``; the parameters draw from ``rngs.params()``, and a
        stochastic binarizer forks ``rngs[rng_collection]`` (falling back
        to the default stream), as ``nnx.Dropout`` does.
      kernel_metadata: metadata of the latent kernel's :class:`LatentParam`
        (e.g. sharding).
      bias_metadata: metadata of the bias ``nnx.Param``.
      kernel_binarizer: the rule applied to the latent kernel; default
        ``bnnjax.Binarizer(axis=-1)``, one scale per output feature.
      input_binarizer: the rule applied to the inputs, or ``None`` (default)
        for real-valued inputs. A typical binary activation is
        ``bnnjax.Binarizer(surrogate="clipped_ste", scale=None)``.
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

    Raises:
      TypeError: if a binarizer is not a :class:`bnnjax.Binarizer` or
        ``rngs`` is not an ``nnx.Rngs``.
      ValueError: for a non-positive feature count, or a stochastic
        binarizer without a stream to draw from.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        precision: lax.PrecisionLike = None,
        kernel_init: jax.nn.initializers.Initializer = _default_kernel_init,
        bias_init: jax.nn.initializers.Initializer = _default_bias_init,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
        kernel_binarizer: Binarizer = functional.DEFAULT_KERNEL_BINARIZER,
        input_binarizer: Binarizer | None = None,
        rng_collection: str = "binarize",
        sign_product_dtype: jax.typing.DTypeLike | str | None = _precision.AUTO,
        residuals: _residuals.Residuals = "auto",
    ):
        in_features = _checks.check_positive_int("in_features", in_features)
        out_features = _checks.check_positive_int("out_features", out_features)
        _checks.check_binarizer("kernel_binarizer", kernel_binarizer)
        _checks.check_binarizer(
            "input_binarizer", input_binarizer, optional=True
        )
        rngs = check_rngs(rngs)

        self.latent_kernel = LatentParam(
            kernel_init(
                rngs.params(), (in_features, out_features), param_dtype
            ),
            **kernel_metadata,
        )
        self.bias: nnx.Param[jax.Array] | None
        if use_bias:
            self.bias = nnx.Param(
                bias_init(rngs.params(), (out_features,), param_dtype),
                **bias_metadata,
            )
        else:
            self.bias = nnx.data(None)
        stream = _binarize_stream(
            "BinaryLinear",
            rngs,
            rng_collection,
            (
                ("kernel_binarizer", kernel_binarizer),
                ("input_binarizer", input_binarizer),
            ),
        )
        self.rngs = nnx.data(None) if stream is None else stream

        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel_binarizer = kernel_binarizer
        self.input_binarizer = input_binarizer
        self.rng_collection = rng_collection
        self.sign_product_dtype = _precision.check_sign_product_dtype(
            sign_product_dtype
        )
        self.residuals = _residuals.check_residuals(residuals)

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
          ``(..., out_features)`` array in the computation dtype.
        """
        kernel_key, input_key = self._binarize_keys()
        return functional.binary_dense(
            inputs,
            self.latent_kernel[...],
            None if self.bias is None else self.bias[...],
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


class BinaryConv(_BinaryLayer):
    """A convolution with a binarized kernel (and optionally inputs).

    Forward::

        y = conv_valid(pad(binarize_in(x), pad_value), binarize_k(W)) + b

    Padding is explicit and comes after input binarization: with a ``+-1``
    input binarizer and ``pad_value=-1`` or ``+1`` the kernel only sees
    ``+-1`` values (Larq's ``pad_values``); ``pad_value=0`` (default)
    matches ``flax.nnx.Conv``. ``pad_value`` is not multiplied by the
    input binarizer's scale. Inputs are channels-last
    ``(*batch, *spatial, in_features)``; as in flax, an int ``kernel_size``
    ``k`` means ``(k,)``, a 1D convolution.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> layer = BinaryConv(4, 8, (3, 3), pad_value=-1.0, rngs=nnx.Rngs(0))
      >>> layer.latent_kernel.shape
      (3, 3, 4, 8)
      >>> layer(jnp.ones((1, 5, 5, 4))).shape
      (1, 5, 5, 8)

    Args:
      in_features: number of input features.
      out_features: number of convolution filters.
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
        ``(*kernel_size, in_features // feature_group_count,
        out_features)``.
      bias_init: initializer of the bias.
      rngs: ``nnx.Rngs``; the parameters draw from ``rngs.params()``, and a
        stochastic binarizer forks ``rngs[rng_collection]`` (falling back
        to the default stream), as ``nnx.Dropout`` does.
      kernel_metadata: metadata of the latent kernel's :class:`LatentParam`.
      bias_metadata: metadata of the bias ``nnx.Param``.
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

    Raises:
      TypeError: for a wrongly typed argument (binarizers, window sizes,
        padding, ``rngs``).
      ValueError: for an invalid padding or pad_value, a
        ``feature_group_count`` that does not divide both feature counts, or
        a stochastic binarizer without a stream to draw from.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = 1,
        *,
        padding: PaddingLike = "SAME",
        kernel_dilation: int | Sequence[int] | None = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        precision: lax.PrecisionLike = None,
        kernel_init: jax.nn.initializers.Initializer = _default_kernel_init,
        bias_init: jax.nn.initializers.Initializer = _default_bias_init,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
        kernel_binarizer: Binarizer = functional.DEFAULT_KERNEL_BINARIZER,
        input_binarizer: Binarizer | None = None,
        pad_value: float = 0.0,
        rng_collection: str = "binarize",
        sign_product_dtype: jax.typing.DTypeLike | str | None = _precision.AUTO,
        residuals: _residuals.Residuals = "auto",
        conv_impl: _formulation.ConvImpl = "auto",
    ):
        in_features = _checks.check_positive_int("in_features", in_features)
        out_features = _checks.check_positive_int("out_features", out_features)
        kernel_size = _checks.canonicalize_kernel_size(kernel_size)
        rank = len(kernel_size)
        strides = _checks.canonicalize_window("strides", strides, rank)
        kernel_dilation = _checks.canonicalize_window(
            "kernel_dilation", kernel_dilation, rank
        )
        padding = _checks.canonicalize_padding(padding, rank)
        pad_value = _checks.check_pad_value(pad_value, padding)
        kernel_shape = _checks.conv_kernel_shape(
            kernel_size,
            in_features,
            out_features,
            feature_group_count,
            out_name="out_features",
        )
        _checks.check_binarizer("kernel_binarizer", kernel_binarizer)
        _checks.check_binarizer(
            "input_binarizer", input_binarizer, optional=True
        )
        rngs = check_rngs(rngs)

        self.latent_kernel = LatentParam(
            kernel_init(rngs.params(), kernel_shape, param_dtype),
            **kernel_metadata,
        )
        self.bias: nnx.Param[jax.Array] | None
        if use_bias:
            self.bias = nnx.Param(
                bias_init(rngs.params(), (out_features,), param_dtype),
                **bias_metadata,
            )
        else:
            self.bias = nnx.data(None)
        stream = _binarize_stream(
            "BinaryConv",
            rngs,
            rng_collection,
            (
                ("kernel_binarizer", kernel_binarizer),
                ("input_binarizer", input_binarizer),
            ),
        )
        self.rngs = nnx.data(None) if stream is None else stream

        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.kernel_shape = kernel_shape
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.feature_group_count = int(feature_group_count)
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel_binarizer = kernel_binarizer
        self.input_binarizer = input_binarizer
        self.pad_value = pad_value
        self.rng_collection = rng_collection
        self.sign_product_dtype = _precision.check_sign_product_dtype(
            sign_product_dtype
        )
        self.residuals = _residuals.check_residuals(residuals)
        self.conv_impl = _formulation.check_conv_impl(conv_impl)

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
          ``(*batch, *out_spatial, out_features)`` array in the computation
          dtype.
        """
        kernel_key, input_key = self._binarize_keys()
        return functional.binary_conv(
            inputs,
            self.latent_kernel[...],
            None if self.bias is None else self.bias[...],
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


class RSign(nnx.Module):
    """ReActNet's RSign: ``sign(x - beta)`` with a learnable ``beta`` per
    channel.

    Forward and backward as :func:`bnnjax.nn.functional.rsign` (see
    :class:`bnnjax.nn.linen.RSign`)::

        y          = binarize(x - beta)        # +1 where x >= beta (plain sign)
        dL/dx      = dL/dy * s'(x - beta)      # s: the binarizer's surrogate
        dL/dbeta   = -(dL/dy * s'(x - beta)) summed over all but the channels

    The threshold is the ``nnx.Param`` ``beta`` of shape
    ``(num_features,)``. Give the next binary layer ``input_binarizer=None``:
    its inputs are already ``+-1``.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> layer = RSign(3, rngs=nnx.Rngs(0))
      >>> layer.beta[...] = jnp.array([0.0, 0.1, 0.3])
      >>> layer(jnp.array([[-0.5, 0.0, 0.3]]))
      Array([[-1., -1.,  1.]], dtype=float32)

    Args:
      num_features: number of channels (the inputs' last axis).
      binarizer: the rule applied to ``x - beta``; default ``sign`` with
        Bi-Real Net's ApproxSign gradient, as ReActNet.
      beta_init: initializer of ``beta`` (default zeros).
      dtype: the dtype of the computation (default: inferred).
      param_dtype: the dtype of ``beta`` (default float32).
      rngs: ``nnx.Rngs``; ``beta`` draws from ``rngs.params()`` and a
        stochastic binarizer forks ``rngs[rng_collection]``.
      rng_collection: rng stream a stochastic binarizer draws from (default
        ``"binarize"``).

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """

    def __init__(
        self,
        num_features: int,
        *,
        binarizer: Binarizer = functional.RSIGN_BINARIZER,
        beta_init: jax.nn.initializers.Initializer = _default_bias_init,
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
        rng_collection: str = "binarize",
    ):
        num_features = _checks.check_positive_int("num_features", num_features)
        _checks.check_binarizer("binarizer", binarizer)
        rngs = check_rngs(rngs)
        self.beta = nnx.Param(
            beta_init(rngs.params(), (num_features,), param_dtype)
        )
        stream = _binarize_stream(
            "RSign", rngs, rng_collection, (("binarizer", binarizer),)
        )
        self.rngs = nnx.data(None) if stream is None else stream
        self.num_features = num_features
        self.binarizer = binarizer
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.rng_collection = rng_collection

    def __call__(
        self,
        inputs: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
    ) -> jax.Array:
        """Binarizes ``(..., num_features)`` inputs against ``beta``.

        Args:
          inputs: channels-last array.
          progress: training progress in ``[0, 1]`` for the binarizer; may
            be traced.

        Returns:
          The shape of ``inputs``, in the computation dtype.
        """
        key = None
        if self.binarizer.stochastic:
            # __init__ forks a stream whenever the binarizer is stochastic.
            key = cast(nnx.RngStream, self.rngs)()
        return functional.rsign(
            inputs,
            self.beta[...],
            binarizer=self.binarizer,
            progress=progress,
            key=key,
            dtype=self.dtype,
        )


class RPReLU(nnx.Module):
    """ReActNet's RPReLU: ``PReLU(x - gamma) + zeta`` per channel.

    Forward and backward as :func:`bnnjax.nn.functional.rprelu` (see
    :class:`bnnjax.nn.linen.RPReLU`), with ``z = x - gamma``::

        y = z + zeta                  if z >= 0
          = negative_slope * z + zeta otherwise

    ``gamma``, ``zeta`` and ``negative_slope`` are ``nnx.Param`` of shape
    ``(num_features,)``; the slope starts at 0.25 (PyTorch's ``nn.PReLU``,
    as ReActNet), the shifts at zero.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> layer = RPReLU(2, rngs=nnx.Rngs(0))
      >>> layer(jnp.array([[-2.0, 1.0]]))
      Array([[-0.5,  1. ]], dtype=float32)

    Args:
      num_features: number of channels (the inputs' last axis).
      negative_slope_init: initial slope below the shifted origin.
      gamma_init: initializer of ``gamma`` (default zeros).
      zeta_init: initializer of ``zeta`` (default zeros).
      dtype: the dtype of the computation (default: inferred).
      param_dtype: the dtype of the parameters (default float32).
      rngs: ``nnx.Rngs`` the initializers draw from.

    References:
      Liu et al, `ReActNet: Towards Precise Binary Neural Network with
      Generalized Activation Functions <https://arxiv.org/abs/2003.03488>`_,
      2020
    """

    def __init__(
        self,
        num_features: int,
        *,
        negative_slope_init: float = 0.25,
        gamma_init: jax.nn.initializers.Initializer = _default_bias_init,
        zeta_init: jax.nn.initializers.Initializer = _default_bias_init,
        dtype: jax.typing.DTypeLike | None = None,
        param_dtype: jax.typing.DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        num_features = _checks.check_positive_int("num_features", num_features)
        slope = _checks.check_finite_float(
            "negative_slope_init", negative_slope_init
        )
        rngs = check_rngs(rngs)
        shape = (num_features,)
        self.gamma = nnx.Param(gamma_init(rngs.params(), shape, param_dtype))
        self.zeta = nnx.Param(zeta_init(rngs.params(), shape, param_dtype))
        self.negative_slope = nnx.Param(jnp.full(shape, slope, param_dtype))
        self.num_features = num_features
        self.dtype = dtype
        self.param_dtype = param_dtype

    def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
        """Applies the activation to ``(..., num_features)`` inputs.

        Returns:
          The shape of ``inputs``, in the computation dtype.
        """
        return functional.rprelu(
            inputs,
            self.gamma[...],
            self.zeta[...],
            self.negative_slope[...],
            dtype=self.dtype,
        )

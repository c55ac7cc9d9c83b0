"""The binarizer: ``alpha * sign(x)`` with a surrogate gradient.

One ``jax.custom_vjp`` core computes the forward binarization and borrows its
backward pass from a *surrogate*: a smooth function (the ``proxy``) whose
derivative replaces the zero-almost-everywhere derivative of ``sign``.
Surrogates are frozen, validated dataclasses; each states its forward and
backward rule and exposes ``proxy`` and ``derivative`` so tests can check the
one against the other. Every surrogate is registered by a snake_case name
(:func:`get_surrogate`); two of them, ``identity`` and ``hardtanh``, are not
binarizers but the real-valued relaxations a full-precision baseline of the
same architecture uses (their forward is ``x`` and ``clip(x, -1, 1)``).

Conventions:

* ``sign(0) = +1``. A binarized tensor never contains 0 (``jnp.sign`` would
  make it ternary). NaN stays NaN so a diverged run is not hidden.
* Statistics (scales, the scaled sigmoid's width) are computed per tensor
  (``axis=None``) or per channel (``axis`` names the channel axes kept).
* Surrogate math runs in at least float32 and the gradient is returned in the
  input's dtype, so bfloat16 and float16 weights get accurate, finite
  gradients.

This module imports neither flax nor optax.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from typing import Any, ClassVar, cast

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import _bits
from bnnjax import scale as scale_lib
from bnnjax._validate import is_int, is_real
from bnnjax.scale import _accumulation_dtype

Aux = tuple[jax.Array, ...]

__all__ = [
    "DETERMINISTIC_SURROGATE_NAMES",
    "SURROGATE_NAMES",
    "AnnealedScaledSigmoidSurrogate",
    "ApproxSignSurrogate",
    "Binarizer",
    "ClippedSteSurrogate",
    "EdeSurrogate",
    "HardTanhSurrogate",
    "IdentitySurrogate",
    "ScaledSigmoidSurrogate",
    "SigmoidSurrogate",
    "SteSurrogate",
    "StochasticSurrogate",
    "Surrogate",
    "SwishSignSurrogate",
    "binarize",
    "get_surrogate",
]


def _sign(x: jax.Array) -> jax.Array:
    # +1 for x >= 0 (including -0.0), -1 for x < 0, NaN for NaN. Never 0.
    return jnp.sign(x) + (x == 0).astype(x.dtype)


def _logistic_fraction(
    z: jax.Array, scale: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """``scale * sigmoid(z) (1 - sigmoid(z))`` as ``(numerator, denominator)``.

    ``s (1 - s) = e / (1 + e)^2`` with ``e = exp(-|z|)``: the function is
    even and ``e`` lies in ``(0, 1]``, so nothing overflows and nothing
    cancels; the relative error is about 1e-6 everywhere, where
    ``s * (1 - s)`` in float32 loses all digits in the tails (``1 - s``
    rounds to 0 for ``z > 17``). One ``exp`` and (by the caller) one
    division; see :meth:`Surrogate._slope_fraction` for why the division
    is left to the caller.
    """
    e = jnp.exp(-jnp.abs(z))
    return e * scale, jnp.square(1 + e)


def _check_positive(owner: object, field: str, value: object) -> None:
    """Raises unless ``value`` is a finite, positive real number."""
    cls = type(owner).__name__
    if not is_real(value):
        raise TypeError(
            f"{cls}.{field} must be a real number (int or float), got "
            f"{value!r} of type {type(value).__name__}. Scheduled or traced "
            "values go through binarize(..., progress=...)."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{cls}.{field} must be finite and > 0, got {value!r}."
        )


def _check_progress(
    owner: object, progress: jax.typing.ArrayLike | None
) -> jax.typing.ArrayLike:
    """Returns ``progress``; raises unless it is a scalar in ``[0, 1]`` (or
    traced)."""
    if progress is None:
        raise ValueError(
            f"{type(owner).__name__} anneals with training progress: pass "
            "binarize(..., progress=step / total_steps), a scalar in [0, 1] "
            "(it may be traced)."
        )
    if jnp.ndim(progress) != 0:
        raise ValueError(
            "progress must be a scalar, got an array of shape "
            f"{jnp.shape(progress)}."
        )
    if not isinstance(progress, jax.core.Tracer):
        value = float(np.asarray(progress))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {value!r}.")
    return progress


@dataclasses.dataclass(frozen=True, kw_only=True)
class Surrogate(abc.ABC):
    """Base class of surrogate gradients for :func:`binarize`.

    A surrogate defines the backward pass of ``sign``: it imitates a smooth
    function ``proxy(x)`` and uses ``derivative(x) = d proxy / dx`` as the
    gradient of ``sign`` at ``x``. Subclasses implement :meth:`proxy` and
    :meth:`derivative`; they may override :meth:`prepare` to compute values
    the rule needs from the whole tensor (a width, a schedule, random
    thresholds), :meth:`forward` for a non-deterministic forward pass, and
    :meth:`window` where the derivative is an indicator (0 or 1), so the
    backward pass can keep one bit per entry.

    ``aux`` is the tuple returned by :meth:`prepare`, a constant in the
    backward pass. Subclasses must stay frozen and hashable (they are static
    arguments under ``jit``).
    """

    name: ClassVar[str]
    stochastic: ClassVar[bool] = False

    def prepare(
        self,
        x: jax.Array,
        axes: tuple[int, ...],
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
    ) -> Aux:
        """Returns the constants the rule needs; none by default.

        Args:
          x: the tensor being binarized (after optional centring).
          axes: axes statistics reduce over (see :func:`bnnjax.reduce_axes`).
          progress: training progress in ``[0, 1]`` for annealed surrogates
            (ignored by the others); may be a traced scalar.
          key: PRNG key for stochastic surrogates (ignored by the others).
        """
        del x, axes, progress, key
        return ()

    def forward(self, x: jax.Array, aux: Aux) -> jax.Array:
        """Forward value: ``sign(x)`` with ``sign(0) = +1``."""
        del aux
        return _sign(x)

    @abc.abstractmethod
    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        """The smooth function whose derivative is borrowed."""

    @abc.abstractmethod
    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        """``d proxy(x) / dx``: the gradient used for ``sign`` at ``x``."""

    def window(self, x: jax.Array, aux: Aux) -> jax.Array | None:
        """Where :meth:`derivative` is 1, for a rule whose derivative is an
        indicator (0 or 1); ``None`` (the default) for any other rule.

        Where it is not None, ``derivative(x, aux)`` equals
        ``window(x, aux).astype(x.dtype)`` exactly, so the backward pass
        can keep the boolean window, one bit per entry, instead of ``x``
        (``binarize(..., pack_residuals=True)``).
        """
        del x, aux
        return None

    def _slope_fraction(
        self, x: jax.Array, aux: Aux
    ) -> tuple[jax.Array, jax.Array] | None:
        """``derivative(x, aux)`` as ``(numerator, denominator)``, or None.

        The backward pass then computes ``(g * numerator) / denominator``,
        with the division last. XLA does not duplicate an expensive
        operation (``exp``, a division) into several consumers, so it
        materialises the result of the last one: with the division last
        that is the finished gradient, read once by each optimizer
        update, as the float gradient is. With ``g * (n / d)`` it
        materialises the slope instead, and the optimizer's fusions then
        re-read it.
        """
        del x, aux
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteSurrogate(Surrogate):
    """Identity straight-through estimator.

    Forward: ``sign(x)``. Backward: ``d/dx = 1`` everywhere (proxy ``x``).

    References:
      Bengio et al, `Estimating or Propagating Gradients Through Stochastic
      Neurons for Conditional Computation <https://arxiv.org/abs/1308.3432>`_,
      2013
    """

    name: ClassVar[str] = "ste"

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return x

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.ones_like(x)

    def window(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.ones(x.shape, jnp.bool_)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClippedSteSurrogate(Surrogate):
    """Clipped straight-through estimator (BinaryNet's hardtanh window).

    Forward: ``sign(x)``. Backward: ``d/dx = 1`` if ``|x| <= clip_value``
    else ``0`` (proxy ``clip(x, -clip_value, clip_value)``); the window is
    closed, as in BinaryNet and Larq's ``ste_sign``.

    Attributes:
      clip_value: half-width of the window where the gradient passes.

    References:
      Hubara et al, `Binarized Neural Networks
      <https://arxiv.org/abs/1602.02830>`_, 2016
    """

    name: ClassVar[str] = "clipped_ste"
    clip_value: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(self, "clip_value", self.clip_value)

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.clip(x, -self.clip_value, self.clip_value)

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return (jnp.abs(x) <= self.clip_value).astype(x.dtype)

    def window(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.abs(x) <= self.clip_value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApproxSignSurrogate(Surrogate):
    """Bi-Real Net's ApproxSign: a piecewise quadratic approximation of sign.

    Forward: ``sign(x)``. Proxy: ``2x - x|x|`` for ``|x| <= 1``, else
    ``sign(x)``. Backward: ``d/dx = 2 - 2|x|`` for ``|x| <= 1``, else ``0``.

    References:
      Liu et al, `Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
      Improved Representational Capability and Advanced Training Algorithm
      <https://arxiv.org/abs/1808.00278>`_, 2018
    """

    name: ClassVar[str] = "approx_sign"

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.where(jnp.abs(x) <= 1, 2 * x - x * jnp.abs(x), _sign(x))

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.maximum(2 - 2 * jnp.abs(x), 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwishSignSurrogate(Surrogate):
    """BNN+'s SwishSign.

    Forward: ``sign(x)``. Proxy: ``2 s (1 + beta x (1 - s)) - 1`` with
    ``s = sigmoid(beta x)``. Backward:
    ``d/dx = 2 beta s (1 - s) (2 + beta x (1 - 2 s))``, equal to
    ``beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))`` but finite
    for large ``|beta x|``.

    Attributes:
      beta: sharpness; larger approaches sign.

    References:
      Darabi et al, `BNN+: Improved Binary Network Training
      <https://arxiv.org/abs/1812.11800>`_, 2018
    """

    name: ClassVar[str] = "swish_sign"
    beta: float = 5.0

    def __post_init__(self) -> None:
        _check_positive(self, "beta", self.beta)

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        z = self.beta * x
        s = jax.nn.sigmoid(z)
        return 2 * s * (1 + z * (1 - s)) - 1

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        numerator, denominator = self._slope_fraction(x, aux)
        return numerator / denominator

    def _slope_fraction(
        self, x: jax.Array, aux: Aux
    ) -> tuple[jax.Array, jax.Array]:
        del aux
        # With e = exp(-|z|): s (1 - s) = e / (1 + e)^2 and
        # z (1 - 2 s) = -|z| (1 - e) / (1 + e), so the slope is
        # 2 beta e (2 (1 + e) - |z| (1 - e)) / (1 + e)^3: one exp, one
        # division, no overflow.
        a = jnp.abs(self.beta * x)
        e = jnp.exp(-a)
        one_e = 1 + e
        numerator = (2 * self.beta) * e * (2 * one_e - a * (1 - e))
        return numerator, one_e * one_e * one_e


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdeSurrogate(Surrogate):
    """IR-Net's Error Decay Estimator (EDE): an annealed ``tanh``.

    Forward: ``sign(x)``. Proxy: ``k tanh(t x)``. Backward:
    ``d/dx = k t (1 - tanh(t x)^2)``, where the schedule follows the paper:
    ``t = t_min * 10^(progress * log10(t_max / t_min))`` and
    ``k = max(1 / t, 1)``. Early in training (``progress = 0``) the rule is a
    wide, STE-like window; at the end it approaches sign.

    ``progress`` (``step / total_steps``, in ``[0, 1]``) is a traced argument
    of :func:`binarize`, so changing it does not recompile.

    Attributes:
      t_min: ``t`` at ``progress = 0`` (paper: ``0.1``).
      t_max: ``t`` at ``progress = 1`` (paper: ``10``).

    References:
      Qin et al, `Forward and Backward Information Retention for Accurate
      Binary Neural Networks <https://arxiv.org/abs/1909.10788>`_, 2020
    """

    name: ClassVar[str] = "ede"
    t_min: float = 0.1
    t_max: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self, "t_min", self.t_min)
        _check_positive(self, "t_max", self.t_max)
        if self.t_min > self.t_max:
            raise ValueError(
                f"EdeSurrogate needs t_min <= t_max, got t_min={self.t_min!r}, "
                f"t_max={self.t_max!r}."
            )

    def schedule(
        self, progress: jax.typing.ArrayLike, dtype: jax.typing.DTypeLike
    ) -> tuple[jax.Array, jax.Array]:
        """Returns ``(k, t)`` at ``progress`` as ``dtype`` scalars."""
        p = jnp.asarray(progress).astype(dtype)
        t = self.t_min * jnp.power(
            10.0, p * math.log10(self.t_max / self.t_min)
        )
        t = t.astype(dtype)
        return jnp.maximum(1 / t, 1).astype(dtype), t

    def prepare(
        self,
        x: jax.Array,
        axes: tuple[int, ...],
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
    ) -> Aux:
        del axes, key
        progress = _check_progress(self, progress)
        return self.schedule(progress, _accumulation_dtype(x.dtype))

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        k, t = aux
        return k * jnp.tanh(t * x)

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        numerator, denominator = self._slope_fraction(x, aux)
        return numerator / denominator

    def _slope_fraction(
        self, x: jax.Array, aux: Aux
    ) -> tuple[jax.Array, jax.Array]:
        k, t = aux
        # 1 - tanh(u)^2 = 4 sigmoid(2u) (1 - sigmoid(2u)): one exp.
        return _logistic_fraction(2 * t * x, 4 * k * t)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SigmoidSurrogate(Surrogate):
    """Sigmoid with a fixed width.

    Forward: ``sign(x)``. Proxy: ``2 sigmoid(beta x) - 1``. Backward:
    ``d/dx = 2 beta sigmoid(beta x) (1 - sigmoid(beta x))``.

    The width ``1 / beta`` ignores the weights' scale; compare
    :class:`ScaledSigmoidSurrogate`.

    Attributes:
      beta: sharpness; larger approaches sign.
    """

    name: ClassVar[str] = "sigmoid"
    beta: float = 5.0

    def __post_init__(self) -> None:
        _check_positive(self, "beta", self.beta)

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return 2 * jax.nn.sigmoid(self.beta * x) - 1

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        numerator, denominator = self._slope_fraction(x, aux)
        return numerator / denominator

    def _slope_fraction(
        self, x: jax.Array, aux: Aux
    ) -> tuple[jax.Array, jax.Array]:
        del aux
        return _logistic_fraction(self.beta * x, 2 * self.beta)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaledSigmoidSurrogate(Surrogate):
    """The founding method's sigmoid whose width follows the weights' spread.

    Forward: ``sign(x)``. Proxy: ``2 sigmoid(k x / s) - 1``. Backward:
    ``d/dx = (2k / s) sigmoid(k x / s) (1 - sigmoid(k x / s))``, where
    ``s = mean(|x - mean(x)|)`` is the mean absolute deviation of the tensor
    (per tensor or per channel, following ``binarize``'s ``axis``), held
    constant in the backward pass. A tensor with no spread (``s = 0``) uses
    ``s = 1``.

    Because the width scales with the weights, the rule is invariant to their
    scale: with the mean-absolute-deviation ``alpha``,
    ``binarize(c w) = c binarize(w)`` and the gradient at ``c w`` equals the
    gradient at ``w`` for every ``c > 0``. A fixed-width rule either vanishes
    (large weights) or degenerates into a plain STE (small weights).

    ``k = 2`` (default) makes the peak slope of ``alpha * proxy`` equal to 1,
    the STE's, when ``alpha`` is the mean absolute deviation.

    Attributes:
      k: sharpness in units of the spread.
    """

    name: ClassVar[str] = "scaled_sigmoid"
    k: float = 2.0

    def __post_init__(self) -> None:
        _check_positive(self, "k", self.k)

    def prepare(
        self,
        x: jax.Array,
        axes: tuple[int, ...],
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
    ) -> Aux:
        del progress, key
        spread = scale_lib.mean_abs_dev(
            x.astype(_accumulation_dtype(x.dtype)), axes
        )
        width = jnp.where(spread > 0, spread, jnp.ones_like(spread))
        return (jax.lax.stop_gradient(width),)

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        (width,) = aux
        return 2 * jax.nn.sigmoid(self.k * x / width) - 1

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        numerator, denominator = self._slope_fraction(x, aux)
        return numerator / denominator

    def _slope_fraction(
        self, x: jax.Array, aux: Aux
    ) -> tuple[jax.Array, jax.Array]:
        (width,) = aux
        # One division per channel, then multiplications per element.
        c = self.k / width
        return _logistic_fraction(c * x, 2 * c)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnnealedScaledSigmoidSurrogate(Surrogate):
    """The founding method's scaled sigmoid, sharpened during training.

    Forward: ``sign(x)``. Proxy: ``2 sigmoid(k x / s) - 1``. Backward:
    ``d/dx = (2k / s) sigmoid(k x / s) (1 - sigmoid(k x / s))``, with
    ``s = mean(|x - mean(x)|)`` per tensor or channel, as
    :class:`ScaledSigmoidSurrogate` (``s = 1`` for a tensor with no spread;
    held constant in the backward pass), and a sharpness that grows
    geometrically with ``progress = step / total_steps``, as IR-Net's EDE
    anneals its ``t``::

        k = k_start * (k_end / k_start) ** progress

    Early in training the window is wide (most weights get a gradient);
    at the end it is ``k_end / k_start`` times narrower, closer to
    ``sign``. The width still follows the weights' spread, so the rule
    keeps the founding method's scale invariance at every ``progress``.
    ``progress`` is a traced argument of :func:`binarize`, so changing it
    does not recompile.

    Attributes:
      k_start: sharpness at ``progress = 0`` (in units of the spread).
      k_end: sharpness at ``progress = 1`` (``>= k_start``).

    References:
      Qin et al, `Forward and Backward Information Retention for Accurate
      Binary Neural Networks <https://arxiv.org/abs/1909.10788>`_, 2020
      (the annealing schedule)
    """

    name: ClassVar[str] = "annealed_scaled_sigmoid"
    k_start: float = 2.0
    k_end: float = 8.0

    def __post_init__(self) -> None:
        for field in ("k_start", "k_end"):
            value = getattr(self, field)
            if not (is_real(value) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"AnnealedScaledSigmoidSurrogate.{field} must be finite "
                    f"and > 0, got {value!r}."
                )
        if self.k_start > self.k_end:
            raise ValueError(
                "AnnealedScaledSigmoidSurrogate needs k_start <= k_end, got "
                f"k_start={self.k_start!r}, k_end={self.k_end!r}."
            )

    def sharpness(self, progress: jax.typing.ArrayLike) -> jax.Array:
        """``k`` at ``progress`` (float32)."""
        p = jnp.asarray(progress, jnp.float32)
        return self.k_start * (self.k_end / self.k_start) ** p

    def prepare(
        self,
        x: jax.Array,
        axes: tuple[int, ...],
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
    ) -> Aux:
        progress = _check_progress(self, progress)
        (width,) = ScaledSigmoidSurrogate().prepare(x, axes, key=key)
        k = self.sharpness(progress).astype(width.dtype)
        return width / k, k

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        unit, _ = aux
        return 2 * jax.nn.sigmoid(x / unit) - 1

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        unit, _ = aux
        s = jax.nn.sigmoid(x / unit)
        return (2 / unit) * s * (1 - s)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StochasticSurrogate(Surrogate):
    """BinaryConnect's stochastic binarization.

    Forward: ``+1`` with probability ``p = clip((x + 1) / 2, 0, 1)`` (the hard
    sigmoid), else ``-1``; drawn as ``sign(x - u)`` with
    ``u ~ Uniform[-1, 1)`` from the ``key`` given to :func:`binarize`.
    Proxy: the expected output ``E[b] = 2p - 1 = clip(x, -1, 1)``.
    Backward: ``d/dx = 1`` if ``|x| <= 1`` else ``0``.

    References:
      Courbariaux et al, `BinaryConnect: Training Deep Neural Networks with
      binary weights during propagations <https://arxiv.org/abs/1511.00363>`_,
      2015
    """

    name: ClassVar[str] = "stochastic"
    stochastic: ClassVar[bool] = True

    def prepare(
        self,
        x: jax.Array,
        axes: tuple[int, ...],
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
    ) -> Aux:
        del axes, progress
        if key is None:
            raise ValueError(
                "StochasticSurrogate draws random signs: pass "
                "binarize(..., key=jax.random.key(...))."
            )
        acc = _accumulation_dtype(x.dtype)
        u = jax.random.uniform(key, x.shape, acc, minval=-1.0, maxval=1.0)
        return (u,)

    def forward(self, x: jax.Array, aux: Aux) -> jax.Array:
        (u,) = aux
        return _sign(x.astype(u.dtype) - u).astype(x.dtype)

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.clip(x, -1, 1)

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return (jnp.abs(x) <= 1).astype(x.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentitySurrogate(Surrogate):
    """Not a binarizer: the identity, for a full-precision baseline.

    Forward: ``x``. Proxy: ``x``. Backward: ``d/dx = 1``.

    A binary layer or model built with it computes with its real-valued
    latent kernels, so the full-precision ceiling of an architecture uses
    the same classes and parameter tree as its binary versions.
    """

    name: ClassVar[str] = "identity"

    def forward(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return x

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return x

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.ones_like(x)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HardTanhSurrogate(Surrogate):
    """Not a binarizer: ``hardtanh``, the real-valued relaxation of ``sign``.

    Forward: ``clip(x, -1, 1)``. Proxy: ``clip(x, -1, 1)``. Backward:
    ``d/dx = 1`` if ``|x| <= 1`` else ``0`` (the window of
    :class:`ClippedSteSurrogate`, closed).

    Used where a binary model binarizes its activations, so a
    full-precision baseline keeps the nonlinearity's shape, as Bi-Real
    Net's real-valued pre-training replaces ReLU by ``clip(x, -1, 1)``.

    References:
      Liu et al, `Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
      Improved Representational Capability and Advanced Training Algorithm
      <https://arxiv.org/abs/1808.00278>`_, 2018
    """

    name: ClassVar[str] = "hardtanh"

    def forward(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.clip(x, -1, 1)

    def proxy(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return jnp.clip(x, -1, 1)

    def derivative(self, x: jax.Array, aux: Aux) -> jax.Array:
        del aux
        return (jnp.abs(x) <= 1).astype(x.dtype)


def _forward_is_sign(surrogate: Surrogate | type[Surrogate]) -> bool:
    """Whether the surrogate's forward values are always ``+-1`` (or NaN).

    True for ``sign`` (the base class's forward) and the stochastic
    ``sign(x - u)``; a subclass that overrides :meth:`Surrogate.forward`
    (:class:`IdentitySurrogate`, :class:`HardTanhSurrogate`) is not assumed
    to be binary. Accepts a surrogate or its class.
    """
    cls = surrogate if isinstance(surrogate, type) else type(surrogate)
    return (
        cls.forward is Surrogate.forward
        or cls.forward is StochasticSurrogate.forward
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _binarize_core(surrogate: Surrogate, x: jax.Array, aux: Aux) -> jax.Array:
    return surrogate.forward(x, aux)


def _binarize_core_fwd(
    surrogate: Surrogate, x: jax.Array, aux: Aux
) -> tuple[jax.Array, tuple[jax.Array, Aux]]:
    return surrogate.forward(x, aux), (x, aux)


def _binarize_core_bwd(
    surrogate: Surrogate, residuals: tuple[jax.Array, Aux], g: jax.Array
) -> tuple[jax.Array, None]:
    x, aux = residuals
    acc = _accumulation_dtype(x.dtype)
    fraction = surrogate._slope_fraction(x.astype(acc), aux)
    if fraction is None:
        grad = g.astype(acc) * surrogate.derivative(x.astype(acc), aux)
    else:
        numerator, denominator = fraction
        grad = (g.astype(acc) * numerator) / denominator
    return (grad.astype(x.dtype), None)


_binarize_core.defvjp(_binarize_core_fwd, _binarize_core_bwd)


def _has_window(surrogate: Surrogate) -> bool:
    """Whether the surrogate's derivative is an indicator (it overrides
    :meth:`Surrogate.window`)."""
    return type(surrogate).window is not Surrogate.window


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _binarize_window_core(
    surrogate: Surrogate, x: jax.Array, aux: Aux
) -> jax.Array:
    return surrogate.forward(x, aux)


def _binarize_window_core_fwd(
    surrogate: Surrogate, x: jax.Array, aux: Aux
) -> tuple[jax.Array, tuple[jax.Array, Aux]]:
    window = surrogate.window(x.astype(_accumulation_dtype(x.dtype)), aux)
    assert window is not None  # _has_window(surrogate) was checked
    return surrogate.forward(x, aux), (_bits.pack_bits(window), aux)


def _binarize_window_core_bwd(
    surrogate: Surrogate, residuals: tuple[jax.Array, Aux], g: jax.Array
) -> tuple[jax.Array, None]:
    del surrogate
    # Unpack only once g exists, so XLA does not schedule every layer's
    # unpacking early and keep the masks alive at once.
    bits, g = jax.lax.optimization_barrier((residuals[0], g))
    acc = _accumulation_dtype(g.dtype)
    window = _bits.unpack_bits(bits, g.shape).astype(acc)
    return ((g.astype(acc) * window).astype(g.dtype), None)


_binarize_window_core.defvjp(
    _binarize_window_core_fwd, _binarize_window_core_bwd
)


_SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls
    for cls in (
        SteSurrogate,
        ClippedSteSurrogate,
        ApproxSignSurrogate,
        SwishSignSurrogate,
        EdeSurrogate,
        SigmoidSurrogate,
        ScaledSigmoidSurrogate,
        AnnealedScaledSigmoidSurrogate,
        StochasticSurrogate,
        IdentitySurrogate,
        HardTanhSurrogate,
    )
}

#: The registered binarizers (forward ``+-1``), in registration order:
#: every name :func:`get_surrogate` accepts but ``"identity"`` and
#: ``"hardtanh"``, whose forward is real-valued.
SURROGATE_NAMES: tuple[str, ...] = tuple(
    name for name, cls in _SURROGATES.items() if _forward_is_sign(cls)
)
#: The registered binarizers whose forward pass needs no PRNG key.
DETERMINISTIC_SURROGATE_NAMES: tuple[str, ...] = tuple(
    name for name in SURROGATE_NAMES if not _SURROGATES[name].stochastic
)


def get_surrogate(name: str, **kwargs: Any) -> Surrogate:
    """Builds a surrogate from its registered name.

    Args:
      name: one of ``"ste"``, ``"clipped_ste"``, ``"approx_sign"``,
        ``"swish_sign"``, ``"ede"``, ``"sigmoid"``, ``"scaled_sigmoid"``,
        ``"annealed_scaled_sigmoid"``, ``"stochastic"`` (the binarizers,
        :data:`SURROGATE_NAMES`) or the real-valued ``"identity"`` and
        ``"hardtanh"``.
      **kwargs: the surrogate's fields (``beta``, ``k``, ``clip_value``, ...).

    Returns:
      The surrogate.

    Raises:
      ValueError: for an unknown name (listing the valid ones) or an invalid
        hyperparameter.
      TypeError: for an unknown field.

    Example:
      >>> get_surrogate("swish_sign", beta=10.0)
      SwishSignSurrogate(beta=10.0)
    """
    try:
        cls = _SURROGATES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown surrogate {name!r}; expected one of "
            f"{sorted(_SURROGATES)}."
        ) from None
    return cls(**kwargs)


def _as_surrogate(surrogate: Surrogate | str) -> Surrogate:
    if isinstance(surrogate, Surrogate):
        return surrogate
    if isinstance(surrogate, str):
        return get_surrogate(surrogate)
    raise TypeError(
        "surrogate must be a Surrogate or one of the names "
        f"{sorted(_SURROGATES)}, got {surrogate!r}."
    )


def _as_scale(scale: scale_lib.Scale | str | None) -> scale_lib.Scale | None:
    if scale is None or isinstance(scale, scale_lib.Scale):
        return scale
    if isinstance(scale, str):
        return scale_lib.get_scale(scale)
    raise TypeError(
        "scale must be a Scale, None or one of the names "
        f"{sorted(scale_lib._SCALES)}, got {scale!r}."
    )


def binarize(
    x: jax.typing.ArrayLike,
    surrogate: Surrogate | str = "scaled_sigmoid",
    scale: scale_lib.Scale | str | None = "mean_abs_dev",
    axis: scale_lib.Axis = None,
    *,
    center: bool = False,
    standardize: bool = False,
    progress: jax.typing.ArrayLike | None = None,
    key: jax.Array | None = None,
    pack_residuals: bool = False,
) -> jax.Array:
    """Binarizes ``x`` to ``alpha * sign(x)`` with a surrogate gradient.

    Forward::

        x' = x - mean(x)   if center else x
        z  = x' / std(x')  if standardize else x'
        y  = alpha(x) * sign(z),   sign(0) = +1

    Backward (``alpha`` held constant, the default)::

        dL/dx = dL/dy * alpha(x) * surrogate.derivative(z) / std(x')

    (without ``standardize``, ``z = x'`` and the division is absent). With
    ``scale`` built with ``stop_gradient=False`` the gradient through
    ``alpha`` is added. The centring mean and the standard deviation are
    always held constant. Standardizing leaves the forward values as they
    are (``sign(z) = sign(x')``); it puts the surrogate's window in units
    of the weights' spread, as IR-Net's Libra-PB does before its EDE.

    Defaults are the founding method's: the :class:`ScaledSigmoidSurrogate`
    and the mean-absolute-deviation scale, for which
    ``binarize(c * w) == c * binarize(w)`` and the gradient does not depend
    on ``c > 0``.

    Args:
      x: floating-point array of any shape (float16, bfloat16, float32 or
        float64).
      surrogate: a :class:`Surrogate` or its registered name (see
        :func:`get_surrogate`).
      scale: a :class:`Scale`, its registered name (``"none"``,
        ``"mean_abs"``, ``"mean_abs_dev"``, ``"std"``) or ``None`` for
        ``alpha = 1``.
      axis: channel axis or axes kept by every statistic (the scale, the
        centring mean, the scaled sigmoid's width): ``None`` for one value
        per tensor, ``-1`` for one per output channel of a dense
        ``(in, out)`` or convolution ``(..., in, out)`` kernel.
      center: binarize ``x - mean(x)`` instead of ``x`` (IR-Net's balanced
        weights).
      standardize: evaluate the surrogate at ``(x - mean) / std`` (needs
        ``center=True``; IR-Net's Libra-PB). A channel whose values are all
        equal has ``std = 0`` and is divided by 1 instead.
      progress: training progress in ``[0, 1]`` for annealed surrogates
        (:class:`EdeSurrogate`, :class:`AnnealedScaledSigmoidSurrogate`);
        may be a traced scalar, so a schedule does not recompile. Ignored by
        other surrogates.
      key: PRNG key for :class:`StochasticSurrogate`; ignored by others.
      pack_residuals: keep for the backward pass, instead of ``x`` itself,
        the surrogate's window (where its derivative is 1) as bits, one per
        entry, for surrogates whose derivative is an indicator
        (:class:`SteSurrogate`, :class:`ClippedSteSurrogate`; see
        :meth:`Surrogate.window`). The gradient is the same bit for bit;
        the residual is 32 times smaller than a float32 ``x``. Ignored for
        other surrogates, whose derivative needs ``x`` itself.

    Returns:
      An array of ``x``'s shape and dtype whose entries are ``+alpha`` or
      ``-alpha`` per channel (``alpha`` times the forward of
      :class:`IdentitySurrogate` or :class:`HardTanhSurrogate`, which are not
      binarizers).

    Raises:
      TypeError: for a non-floating input or a wrongly typed argument.
      ValueError: for an unknown name or an invalid ``axis``; from
        surrogates that need ``progress`` or ``key`` when it is missing.

    Example:
      >>> import jax.numpy as jnp
      >>> binarize(jnp.array([-2.0, 0.0, 1.0]), "ste", scale=None)
      Array([-1.,  1.,  1.], dtype=float32)

    References:
      Courbariaux et al, `BinaryConnect <https://arxiv.org/abs/1511.00363>`_,
      2015; Rastegari et al, `XNOR-Net <https://arxiv.org/abs/1603.05279>`_,
      2016
    """
    signs, alpha = _signs_and_scale(
        x,
        surrogate,
        scale,
        axis,
        center=center,
        standardize=standardize,
        progress=progress,
        key=key,
        pack_residuals=pack_residuals,
    )
    return signs if alpha is None else alpha * signs


def _signs_and_scale(
    x: jax.typing.ArrayLike,
    surrogate: Surrogate | str,
    scale: scale_lib.Scale | str | None,
    axis: scale_lib.Axis,
    *,
    center: bool,
    standardize: bool = False,
    progress: jax.typing.ArrayLike | None,
    key: jax.Array | None,
    pack_residuals: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """``binarize``'s two factors: ``(sign(x'), alpha)``, ``alpha`` or None.

    ``binarize(...) == alpha * signs`` (or ``signs`` when ``alpha`` is
    None, for no scale); the signs carry the surrogate gradient and
    ``alpha`` the scale's gradient policy.
    """
    surrogate = _as_surrogate(surrogate)
    scale = _as_scale(scale)
    _check_centring(center, standardize)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"binarize expects a floating-point array (float16, bfloat16, "
            f"float32 or float64), got dtype {x.dtype}; cast explicitly, e.g. "
            "x.astype(jnp.float32)."
        )
    axes = scale_lib.reduce_axes(x.ndim, axis)
    z = _surrogate_input(x, axes, center=center, standardize=standardize)
    if not isinstance(pack_residuals, bool):
        raise TypeError(
            f"pack_residuals must be a bool, got {pack_residuals!r}."
        )
    aux = surrogate.prepare(z, axes, progress=progress, key=key)
    if pack_residuals and _has_window(surrogate):
        signs = _binarize_window_core(surrogate, z, aux)
    else:
        signs = _binarize_core(surrogate, z, aux)
    if scale is None or isinstance(scale, scale_lib.NoScale):
        return signs, None
    return signs, scale(x, axis)


def _surrogate_input(
    x: jax.Array, axes: tuple[int, ...], *, center: bool, standardize: bool
) -> jax.Array:
    """``x``, centred and standardized over ``axes`` if asked; the mean and
    the standard deviation are constants in the backward pass."""
    if not center:
        return x
    mean = jnp.mean(
        x.astype(_accumulation_dtype(x.dtype)), axis=axes, keepdims=True
    ).astype(x.dtype)
    centred = x - jax.lax.stop_gradient(mean)
    if standardize:
        centred = centred / jax.lax.stop_gradient(_spread(centred, axes))
    return centred


def _spread(centred: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """``std`` of centred values over ``axes`` (kept), with 0 replaced by 1.

    The divisor of ``standardize``: ``sqrt(mean(x'^2))``, accumulated in
    float32 for half-precision inputs, returned in ``x'``'s dtype.
    """
    acc = centred.astype(_accumulation_dtype(centred.dtype))
    std = jnp.sqrt(jnp.mean(jnp.square(acc), axis=axes, keepdims=True))
    return jnp.where(std > 0, std, 1).astype(centred.dtype)


def _check_centring(center: object, standardize: object) -> None:
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool, got {center!r}.")
    if not isinstance(standardize, bool):
        raise TypeError(f"standardize must be a bool, got {standardize!r}.")
    if standardize and not center:
        raise ValueError(
            "standardize=True divides the centred values by their standard "
            "deviation and needs center=True (IR-Net's Libra-PB centres, "
            "then standardizes)."
        )


def _as_axis(axis: scale_lib.Axis) -> int | tuple[int, ...] | None:
    """Normalizes ``axis`` to None, an int or a tuple of ints (hashable)."""
    if axis is None:
        return None
    if is_int(axis):
        return int(axis)
    if (
        isinstance(axis, (tuple, list))
        and axis
        and all(is_int(a) for a in axis)
    ):
        return tuple(int(a) for a in axis)
    raise TypeError(
        "axis must be None, an int or a non-empty sequence of ints, got "
        f"{axis!r}."
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Binarizer:
    """A complete, hashable binarization rule: ``binarize`` with fixed options.

    Flax layers, model conversion rules and configs carry one ``Binarizer``
    per binarized tensor (kernel, inputs). Names are resolved and validated
    at construction, so a typo fails where it is written.

    Calling it computes::

        binarize(x, surrogate, scale, axis, center=center,
                 standardize=standardize, progress=progress, key=key)

    Attributes:
      surrogate: a :class:`Surrogate` or its registered name (stored as the
        object).
      scale: a :class:`Scale`, its registered name or ``None`` (``alpha =
        1``); stored as the object or ``None``.
      axis: channel axis or axes kept by the statistics (``None``: per
        tensor; ``-1``: per output channel of a kernel).
      center: binarize ``x - mean(x)``.
      standardize: evaluate the surrogate at ``(x - mean(x)) / std``
        (needs ``center``; see :func:`binarize`).

    Example:
      >>> import jax.numpy as jnp
      >>> Binarizer(surrogate="ste", scale=None)(jnp.array([-0.5, 0.0]))
      Array([-1.,  1.], dtype=float32)
    """

    surrogate: Surrogate | str = "scaled_sigmoid"
    scale: scale_lib.Scale | str | None = "mean_abs_dev"
    axis: scale_lib.Axis = None
    center: bool = False
    standardize: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "surrogate", _as_surrogate(self.surrogate))
        object.__setattr__(self, "scale", _as_scale(self.scale))
        object.__setattr__(self, "axis", _as_axis(self.axis))
        try:
            _check_centring(self.center, self.standardize)
        except (TypeError, ValueError) as e:
            raise type(e)(f"Binarizer: {e}") from None

    @property
    def stochastic(self) -> bool:
        """Whether calls need a PRNG ``key``."""
        # __post_init__ stored the resolved object, never the name.
        return cast(Surrogate, self.surrogate).stochastic

    def surrogate_input(self, x: jax.typing.ArrayLike) -> jax.Array:
        """The values the surrogate sees: ``x``, centred and standardized
        as the rule says (``sign`` of them is the forward value).

        Example:
          >>> import jax.numpy as jnp
          >>> rule = Binarizer(center=True, standardize=True)
          >>> rule.surrogate_input(jnp.array([1.0, 3.0]))
          Array([-1.,  1.], dtype=float32)
        """
        x = jnp.asarray(x)
        return _surrogate_input(
            x,
            scale_lib.reduce_axes(x.ndim, self.axis),
            center=self.center,
            standardize=self.standardize,
        )

    def __call__(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
        pack_residuals: bool = False,
    ) -> jax.Array:
        """Binarizes ``x``; see :func:`binarize`."""
        return binarize(
            x,
            self.surrogate,
            self.scale,
            self.axis,
            center=self.center,
            standardize=self.standardize,
            progress=progress,
            key=key,
            pack_residuals=pack_residuals,
        )

    def signs_and_scale(
        self,
        x: jax.typing.ArrayLike,
        *,
        progress: jax.typing.ArrayLike | None = None,
        key: jax.Array | None = None,
        pack_residuals: bool = False,
    ) -> tuple[jax.Array, jax.Array | None]:
        """The two factors of ``self(x)``: ``(signs, alpha)``.

        ``self(x) == alpha * signs``, or ``signs`` when the rule has no
        scale (``alpha`` is then ``None``). ``signs`` is ``sign(x')`` (``x'``
        centred when ``center``) with the surrogate gradient, in ``x``'s
        dtype; ``alpha`` is the scale with the reduced axes kept as size-1
        dimensions, with its own gradient policy. Layers use the factors to
        apply a per-output-channel ``alpha`` after the product,
        ``(x @ signs) * alpha``, which is the same function as
        ``x @ (alpha * signs)`` and matches packed 1-bit inference.
        ``progress``, ``key`` and ``pack_residuals`` are as in
        :func:`binarize`.

        Example:
          >>> import jax.numpy as jnp
          >>> signs, alpha = Binarizer(scale="mean_abs").signs_and_scale(
          ...     jnp.array([-2.0, 0.0, 1.0])
          ... )
          >>> signs, alpha
          (Array([-1.,  1.,  1.], dtype=float32), Array([1.], dtype=float32))
        """
        return _signs_and_scale(
            x,
            self.surrogate,
            self.scale,
            self.axis,
            center=self.center,
            standardize=self.standardize,
            progress=progress,
            key=key,
            pack_residuals=pack_residuals,
        )

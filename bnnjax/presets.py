"""Training methods by name: binarizers and optimizer groups per paper.

A :class:`Preset` bundles what distinguishes one published way of training
a binary network from another, on the same architecture:

* ``kernel_binarizer``: the rule for every binary kernel;
* ``activation_binarizer``: the rule for binary activations (used when the
  model binarizes its activations);
* ``binary_transform``: how the binary parameter group is optimized, given
  the base optimizer (Adam by default) and the learning-rate schedule;
  the real group (batch norm, real layers) always gets the base optimizer
  with the real learning rate, through :func:`bnnjax.binary_partition`;
* default learning rates, whether kernels start at ``±1`` (Bop), and
  whether the kernels are binary at all (``float``, the full-precision
  ceiling).

Presets are looked up by name only by :func:`get_preset`, which
:class:`bnnjax.train.TrainConfig` and the CLI call; library code passes
:class:`Preset` objects.

===================  ================================  =========================
name                 kernel rule / activation rule      binary-group optimizer
===================  ================================  =========================
``scaled_sigmoid``   scaled sigmoid, MAD scale per      ``scale_adaptive(adam)``
                     channel / scaled sigmoid
``bnn``              clipped STE, no scale /            adam, latent clip to
                     clipped STE                        ``[-1, 1]``
``xnor``             clipped STE, mean-abs scale per    adam
                     channel / clipped STE
``bireal``           clipped STE, mean-abs scale per    adam
                     channel with gradient through
                     the scale / ApproxSign
``irnet``            EDE on standardized weights,       adam
                     std scale per channel / EDE
``bnn_plus``         SwishSign, mean-abs scale per      adam
                     channel / SwishSign
``bop``              STE on ``±1`` kernels / clipped    Bop (no latent weights)
                     STE
``float``            identity / hardtanh                adam on every kernel
===================  ================================  =========================

Comparison-only methods (:data:`METHOD_NAMES`, for
:func:`bnnjax.compare`; ``bnnjax train`` accepts :data:`PRESET_NAMES`):

============================  ================================  ================
name                          kernel rule / activation rule     binary group
============================  ================================  ================
``sigmoid``                   fixed-width sigmoid, MAD scale    ``scale_adaptive
                              per channel / fixed sigmoid       (adam)``
``scaled_sigmoid_annealed``   scaled sigmoid with ``k``         ``scale_adaptive
                              annealed 2 -> 8, MAD scale per    (adam)``
                              channel / the same surrogate
============================  ================================  ================

Factories take keyword options (the founding method's ``k``, ``scale``
and ``scale_adaptive``; ``beta`` of the sigmoid and SwishSign; Bop's
``threshold``), so ablations and tuning build variants with
``get_preset(name, **options)``. The comparison harness declares, per
method, the small grid of learning rates and options it searches on the
validation split (:func:`bnnjax.compare.tuning_grid`).

The surrogates the presets use, including the annealed scaled sigmoid and
the float ceiling's ``identity`` and ``hardtanh``, live in
:mod:`bnnjax.binarize` with the others.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import optax

from bnnjax import optim
from bnnjax._validate import is_real
from bnnjax.binarize import (
    AnnealedScaledSigmoidSurrogate,
    ApproxSignSurrogate,
    Binarizer,
    ClippedSteSurrogate,
    EdeSurrogate,
    HardTanhSurrogate,
    IdentitySurrogate,
    ScaledSigmoidSurrogate,
    SigmoidSurrogate,
    SteSurrogate,
    SwishSignSurrogate,
)
from bnnjax.scale import MeanAbsDevScale, MeanAbsScale, StdScale

__all__ = [
    "METHOD_NAMES",
    "PRESET_NAMES",
    "Preset",
    "bireal_preset",
    "bnn_plus_preset",
    "bnn_preset",
    "bop_preset",
    "float_preset",
    "get_preset",
    "irnet_preset",
    "method_options",
    "scaled_sigmoid_annealed_preset",
    "scaled_sigmoid_preset",
    "sigmoid_preset",
    "xnor_preset",
]

Schedule = optax.ScalarOrSchedule
MakeOptimizer = Callable[[Schedule], optax.GradientTransformation]
BinaryTransform = Callable[
    [MakeOptimizer, Schedule], optax.GradientTransformation
]


def _plain(make: MakeOptimizer, lr: Schedule) -> optax.GradientTransformation:
    return make(lr)


def _scale_adaptive(
    make: MakeOptimizer, lr: Schedule
) -> optax.GradientTransformation:
    return optim.scale_adaptive(make(lr))


def _clipped(make: MakeOptimizer, lr: Schedule) -> optax.GradientTransformation:
    return optax.chain(make(lr), optim.clip_latent_weights(bound=1.0))


_BOP_THRESHOLD = 1e-8


def _bop(
    make: MakeOptimizer, lr: Schedule, *, threshold: float = _BOP_THRESHOLD
) -> optax.GradientTransformation:
    del make
    if callable(lr):
        return optax.inject_hyperparams(optim.bop)(
            threshold=threshold, gamma=lr
        )
    return optim.bop(threshold=threshold, gamma=lr)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """A named training method: binarizers and optimizer groups.

    Attributes:
      name: the registry name (``"scaled_sigmoid"``, ``"bnn"``, ...).
      kernel_binarizer: rule for every binary kernel.
      activation_binarizer: rule for binary activations; used when the
        model binarizes activations.
      binary_transform: ``f(make_optimizer, schedule)`` returning the
        transform of the binary (latent-kernel) group; ``make_optimizer``
        builds the base optimizer (e.g. ``optax.adam``) for a learning rate
        or schedule.
      learning_rate: default learning rate of the binary group (for Bop:
        its adaptivity rate ``gamma``).
      real_learning_rate: default learning rate of the real group.
      sign_init: initialise kernels to ``sign(w)`` (``±1``; latent-free
        optimizers such as Bop).
      binary: whether the kernels are binary at deployment. ``False`` for
        the float ceiling: every parameter then counts as real in the
        memory summary.
      reference: the source paper.
    """

    name: str
    kernel_binarizer: Binarizer
    activation_binarizer: Binarizer
    binary_transform: BinaryTransform
    learning_rate: float
    real_learning_rate: float
    sign_init: bool = False
    binary: bool = True
    reference: str = ""

    def optimizer(
        self,
        params: Any,
        *,
        make_optimizer: MakeOptimizer,
        learning_rate: Schedule,
        real_learning_rate: Schedule,
        make_real_optimizer: MakeOptimizer | None = None,
    ) -> optax.GradientTransformation:
        """Builds the partitioned optimizer for a linen parameter tree.

        Args:
          params: the parameters (one model's tree, no seed axis), labelled
            with :func:`bnnjax.binary_param_labels`.
          make_optimizer: base optimizer factory, e.g. ``optax.adam``.
          learning_rate: binary-group learning rate or schedule.
          real_learning_rate: real-group learning rate or schedule.
          make_real_optimizer: the real group's optimizer factory (for
            example one with weight decay); ``None``: ``make_optimizer``.

        Returns:
          ``binary_partition(binary_transform(...), make_real(real))``
          with ``make_real`` the real group's factory.
        """
        make_real = (
            make_optimizer
            if make_real_optimizer is None
            else (make_real_optimizer)
        )
        return optim.binary_partition(
            self.binary_transform(make_optimizer, learning_rate),
            make_real(real_learning_rate),
            params,
        )


def _check_bool(factory: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(
            f"{factory}: {name} must be True or False, got {value!r}."
        )


def scaled_sigmoid_preset(
    *,
    k: float = 2.0,
    scale: str = "mean_abs_dev",
    scale_adaptive: bool = True,
) -> Preset:
    """The founding method (bnnjax's own; no external paper).

    Kernels: ``Binarizer(surrogate=ScaledSigmoidSurrogate(k=k),
    scale="mean_abs_dev", axis=-1)``: ``alpha_j sign(w)`` with ``alpha_j``
    the mean absolute deviation of output channel ``j`` and the gradient
    of a sigmoid whose width is that spread. Activations:
    ``Binarizer(surrogate=ScaledSigmoidSurrogate(k=k), scale=None)``.
    Binary group: ``bnnjax.scale_adaptive(adam(lr))`` (gradients and steps
    in units of the spread, so training is invariant to the latent
    weights' scale). Real group: ``adam(real_lr)``.

    The options change one part at a time (the ablations of
    ``benchmarks/compare``); the defaults are the founding method.

    Args:
      k: sharpness of the scaled sigmoid in units of the spread (kernels
        and activations).
      scale: the kernels' scale ``alpha``: ``"mean_abs_dev"`` (founding),
        ``"mean_abs"`` (XNOR-Net's), ``"std"`` or ``"none"``.
      scale_adaptive: wrap Adam in :func:`bnnjax.scale_adaptive` (default
        learning rate ``3e-2``, in units of the spread); ``False``: plain
        Adam on the latent weights (default learning rate ``1e-3``).

    Returns:
      The :class:`Preset` (named ``"scaled_sigmoid"`` whatever the
      options).

    Raises:
      ValueError: for a ``k`` that is not positive or an unknown scale.
    """
    _check_bool("scaled_sigmoid_preset", "scale_adaptive", scale_adaptive)
    surrogate = ScaledSigmoidSurrogate(k=k)
    return Preset(
        name="scaled_sigmoid",
        kernel_binarizer=Binarizer(surrogate=surrogate, scale=scale, axis=-1),
        activation_binarizer=Binarizer(surrogate=surrogate, scale=None),
        binary_transform=_scale_adaptive if scale_adaptive else _plain,
        learning_rate=3e-2 if scale_adaptive else 1e-3,
        real_learning_rate=1e-3,
        reference="bnnjax founding method (scale-adaptive sigmoid surrogate)",
    )


def scaled_sigmoid_annealed_preset(
    *,
    k_start: float = 2.0,
    k_end: float = 8.0,
    scale: str = "mean_abs_dev",
    scale_adaptive: bool = True,
) -> Preset:
    """The founding method with its sharpness annealed.

    As :func:`scaled_sigmoid_preset`, with
    :class:`bnnjax.binarize.AnnealedScaledSigmoidSurrogate` (``k`` from
    ``k_start`` to ``k_end`` over training, geometrically, as IR-Net anneals
    EDE) for kernels and activations. Not in :data:`PRESET_NAMES`; the
    comparison harness offers it.

    Args:
      k_start: sharpness at the start of training.
      k_end: sharpness at the end (``>= k_start``).
      scale: the kernels' scale, as in :func:`scaled_sigmoid_preset`.
      scale_adaptive: as in :func:`scaled_sigmoid_preset`.

    Returns:
      The :class:`Preset` named ``"scaled_sigmoid_annealed"``.
    """
    _check_bool(
        "scaled_sigmoid_annealed_preset", "scale_adaptive", scale_adaptive
    )
    surrogate = AnnealedScaledSigmoidSurrogate(k_start=k_start, k_end=k_end)
    return Preset(
        name="scaled_sigmoid_annealed",
        kernel_binarizer=Binarizer(surrogate=surrogate, scale=scale, axis=-1),
        activation_binarizer=Binarizer(surrogate=surrogate, scale=None),
        binary_transform=_scale_adaptive if scale_adaptive else _plain,
        learning_rate=3e-2 if scale_adaptive else 1e-3,
        real_learning_rate=1e-3,
        reference="bnnjax founding method, sharpness annealed as IR-Net's EDE",
    )


def sigmoid_preset(*, beta: float = 5.0) -> Preset:
    """The founding method with a fixed-width sigmoid (its ablation).

    As :func:`scaled_sigmoid_preset` (MAD scale per channel,
    ``scale_adaptive(adam)``), with ``SigmoidSurrogate(beta=beta)`` for
    kernels and activations: the gradient of ``2 sigmoid(beta x) - 1``,
    whose width ``1 / beta`` ignores the weights' spread. Not in
    :data:`PRESET_NAMES` (``bnnjax train`` does not offer it); the
    comparison harness does.

    Args:
      beta: sharpness (the window is about ``|x| < 5 / beta`` wide).

    Returns:
      The :class:`Preset` named ``"sigmoid"``.
    """
    surrogate = SigmoidSurrogate(beta=beta)
    return Preset(
        name="sigmoid",
        kernel_binarizer=Binarizer(
            surrogate=surrogate, scale=MeanAbsDevScale(), axis=-1
        ),
        activation_binarizer=Binarizer(surrogate=surrogate, scale=None),
        binary_transform=_scale_adaptive,
        learning_rate=3e-2,
        real_learning_rate=1e-3,
        reference="fixed-width sigmoid surrogate (founding-method ablation)",
    )


def bnn_preset() -> Preset:
    """BinaryNet: sign weights and activations with the clipped STE.

    Kernels and activations: ``sign`` with the hardtanh straight-through
    gradient (``clipped_ste``), no scale. Binary group: Adam followed by
    latent clipping to ``[-1, 1]``. Real group: Adam. (BinaryNet also
    scaled each layer's learning rate by Glorot's ``1/H``; with Adam's
    per-weight normalisation we keep one learning rate, as Larq does.)

    References:
      Hubara et al, `Binarized Neural Networks
      <https://arxiv.org/abs/1602.02830>`_, 2016
    """
    sign = Binarizer(surrogate=ClippedSteSurrogate(), scale=None)
    return Preset(
        name="bnn",
        kernel_binarizer=sign,
        activation_binarizer=sign,
        binary_transform=_clipped,
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        reference="Hubara et al. 2016, arXiv:1602.02830",
    )


def xnor_preset() -> Preset:
    """XNOR-Net: per-channel ``mean(|W|)`` scales, clipped STE.

    Kernels: ``Binarizer(surrogate="clipped_ste", scale="mean_abs",
    axis=-1)``. Activations: ``sign`` with the clipped STE (XNOR-Net's
    activation scale ``K`` is omitted: the following batch norm absorbs a
    per-channel scale). Both groups: Adam, as in the paper.

    References:
      Rastegari et al, `XNOR-Net: ImageNet Classification Using Binary
      Convolutional Neural Networks <https://arxiv.org/abs/1603.05279>`_,
      2016
    """
    return Preset(
        name="xnor",
        kernel_binarizer=Binarizer(
            surrogate=ClippedSteSurrogate(), scale=MeanAbsScale(), axis=-1
        ),
        activation_binarizer=Binarizer(
            surrogate=ClippedSteSurrogate(), scale=None
        ),
        binary_transform=_plain,
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        reference="Rastegari et al. 2016, arXiv:1603.05279",
    )


def bireal_preset() -> Preset:
    """Bi-Real Net: ApproxSign activations, magnitude-aware kernels.

    Kernels: ``alpha_j sign(w)`` with ``alpha_j = mean(|w_j|)`` per output
    channel; the gradient flows through ``alpha`` as well
    (``MeanAbsScale(stop_gradient=False)``, the paper's magnitude-aware
    gradient) and through ``sign`` with the clipped STE. Activations:
    ``sign`` with the ApproxSign gradient ``2 - 2|x|``. Both groups: Adam.

    References:
      Liu et al, `Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
      Improved Representational Capability and Advanced Training Algorithm
      <https://arxiv.org/abs/1808.00278>`_, 2018
    """
    return Preset(
        name="bireal",
        kernel_binarizer=Binarizer(
            surrogate=ClippedSteSurrogate(),
            scale=MeanAbsScale(stop_gradient=False),
            axis=-1,
        ),
        activation_binarizer=Binarizer(
            surrogate=ApproxSignSurrogate(), scale=None
        ),
        binary_transform=_plain,
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        reference="Liu et al. 2018, arXiv:1808.00278",
    )


def irnet_preset(*, standardize: bool = True) -> Preset:
    """IR-Net: balanced, standardized kernels and the annealed EDE gradient.

    Kernels: ``std_j(w) sign(w - mean_j(w))`` per output channel
    (``center=True``, ``scale="std"``). Libra-PB centres and standardises
    each channel, ``w' = (w - mean_j) / std_j``, before ``sign``; with
    ``standardize=True`` (default) the EDE gradient is evaluated at ``w'``
    (and divided by ``std_j``), so its window ``t`` anneals in units of
    the weights' spread as in the paper. ``standardize=False`` is the
    earlier simplification that evaluates EDE at ``w - mean_j``: for
    weights much smaller than 1, ``tanh(t x)`` then stays nearly linear
    and the window hardly narrows. We keep the standard deviation as the
    scale instead of the paper's power-of-two ``2^round(log2(mean|w'|))``
    bit-shift scale, which a following batch norm absorbs anyway; the
    mean and standard deviation are constants in the backward pass (the
    paper differentiates through them). The gradient is the Error Decay
    Estimator, ``k t (1 - tanh(t x)^2)`` with ``t`` annealed from 0.1 to 10
    by ``progress = step / total_steps``, passed to the model at every
    step. Activations: ``sign`` with EDE too. Both groups: Adam.

    Args:
      standardize: evaluate EDE on standardized kernels (Libra-PB).

    References:
      Qin et al, `Forward and Backward Information Retention for Accurate
      Binary Neural Networks <https://arxiv.org/abs/1909.10788>`_, 2020
    """
    _check_bool("irnet_preset", "standardize", standardize)
    ede = EdeSurrogate()
    return Preset(
        name="irnet",
        kernel_binarizer=Binarizer(
            surrogate=ede,
            scale=StdScale(),
            axis=-1,
            center=True,
            standardize=standardize,
        ),
        activation_binarizer=Binarizer(surrogate=ede, scale=None),
        binary_transform=_plain,
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        reference="Qin et al. 2020, arXiv:1909.10788",
    )


def bnn_plus_preset(*, beta: float = 5.0) -> Preset:
    """BNN+: the SwishSign surrogate for kernels and activations.

    Kernels: ``Binarizer(surrogate=SwishSignSurrogate(beta=beta),
    scale="mean_abs", axis=-1)`` (BNN+ learns per-channel scales
    initialised to ``mean(|W|)``; we compute them). Activations: ``sign``
    with SwishSign. Both groups: Adam. The paper's weight regulariser is
    not used.

    Args:
      beta: SwishSign's sharpness (paper: 5 to 10).

    References:
      Darabi et al, `BNN+: Improved Binary Network Training
      <https://arxiv.org/abs/1812.11800>`_, 2018
    """
    swish = SwishSignSurrogate(beta=beta)
    return Preset(
        name="bnn_plus",
        kernel_binarizer=Binarizer(
            surrogate=swish, scale=MeanAbsScale(), axis=-1
        ),
        activation_binarizer=Binarizer(surrogate=swish, scale=None),
        binary_transform=_plain,
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        reference="Darabi et al. 2018, arXiv:1812.11800",
    )


def bop_preset(*, threshold: float = _BOP_THRESHOLD) -> Preset:
    """Bop: latent-free flips of ``±1`` kernels; Adam for the rest.

    Kernels are initialised to ``sign(w)`` and binarized with
    ``Binarizer(surrogate="ste", scale=None)``, the identity on ``±1``, so
    the gradient reaches them unchanged. Binary group:
    ``bnnjax.bop(threshold=threshold, gamma=lr)`` (the learning rate is
    Bop's adaptivity rate ``gamma``, scheduled with
    ``optax.inject_hyperparams``). Activations: ``sign`` with the clipped
    STE. Real group: Adam.

    Args:
      threshold: Bop's flip threshold ``tau`` (paper: ``1e-8`` to
        ``1e-6``).

    References:
      Helwegen et al, `Latent Weights Do Not Exist: Rethinking Binarized
      Neural Network Optimization <https://arxiv.org/abs/1906.02107>`_, 2019
    """
    if not (is_real(threshold) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(
            f"bop_preset: threshold={threshold!r}; expected a finite number "
            ">= 0."
        )
    return Preset(
        name="bop",
        kernel_binarizer=Binarizer(surrogate=SteSurrogate(), scale=None),
        activation_binarizer=Binarizer(
            surrogate=ClippedSteSurrogate(), scale=None
        ),
        binary_transform=functools.partial(_bop, threshold=threshold),
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        sign_init=True,
        reference="Helwegen et al. 2019, arXiv:1906.02107",
    )


def float_preset() -> Preset:
    """The full-precision ceiling of the same architecture.

    The same binary model classes and parameter tree, with an identity
    kernel rule (:class:`bnnjax.binarize.IdentitySurrogate`, no scale: the
    kernels are used as they are) and, where the model would binarize
    activations, ``hardtanh`` (:class:`bnnjax.binarize.HardTanhSurrogate`).
    Every parameter is real: Adam on both groups, and the memory summary
    counts the kernels at 32 bits.
    """
    return Preset(
        name="float",
        kernel_binarizer=Binarizer(surrogate=IdentitySurrogate(), scale=None),
        activation_binarizer=Binarizer(
            surrogate=HardTanhSurrogate(), scale=None
        ),
        binary_transform=_plain,
        learning_rate=1e-3,
        real_learning_rate=1e-3,
        binary=False,
        reference="full precision (no binarization)",
    )


_PRESETS: dict[str, Callable[..., Preset]] = {
    "scaled_sigmoid": scaled_sigmoid_preset,
    "bnn": bnn_preset,
    "xnor": xnor_preset,
    "bireal": bireal_preset,
    "irnet": irnet_preset,
    "bnn_plus": bnn_plus_preset,
    "bop": bop_preset,
    "float": float_preset,
}

# Methods the comparison harness offers beyond the training presets.
_COMPARE_ONLY: dict[str, Callable[..., Preset]] = {
    "sigmoid": sigmoid_preset,
    "scaled_sigmoid_annealed": scaled_sigmoid_annealed_preset,
}

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)
"""Registered preset names (``bnnjax train --method``); the first is the
default."""

METHOD_NAMES: tuple[str, ...] = PRESET_NAMES + tuple(_COMPARE_ONLY)
"""Every method :func:`get_preset` builds: :data:`PRESET_NAMES` and the
comparison-only ``"sigmoid"`` (fixed-width founding-method ablation) and
``"scaled_sigmoid_annealed"`` (the founding method with its sharpness
annealed)."""


def _factory(name: str) -> Callable[..., Preset]:
    try:
        return {**_PRESETS, **_COMPARE_ONLY}[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown method {name!r}; expected one of {list(METHOD_NAMES)}."
        ) from None


def method_options(name: str) -> dict[str, Any]:
    """The keyword options of a method's factory and their defaults.

    Args:
      name: one of :data:`METHOD_NAMES`.

    Returns:
      ``{option: default}``, e.g. ``{"k": 2.0, "scale": "mean_abs_dev",
      "scale_adaptive": True}`` for ``"scaled_sigmoid"``; ``{}`` for a
      method without options.

    Raises:
      ValueError: for an unknown name.

    Example:
      >>> method_options("bnn_plus")
      {'beta': 5.0}
    """
    parameters = inspect.signature(_factory(name)).parameters.values()
    return {p.name: p.default for p in parameters}


def get_preset(name: str, **options: Any) -> Preset:
    """Returns the method registered as ``name``, built with ``options``.

    Args:
      name: one of :data:`METHOD_NAMES` (:data:`PRESET_NAMES` and the
        comparison-only methods).
      **options: keyword options of the method's factory (see
        :func:`method_options`); unset ones keep their defaults.

    Returns:
      A new :class:`Preset`.

    Raises:
      ValueError: for an unknown name or option (listing the valid ones),
        or an invalid option value.

    Example:
      >>> get_preset("bnn").kernel_binarizer.scale is None
      True
      >>> get_preset("scaled_sigmoid", k=4.0).kernel_binarizer.surrogate
      ScaledSigmoidSurrogate(k=4.0)
    """
    factory = _factory(name)
    allowed = method_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for method {name!r}; expected a "
            f"subset of {sorted(allowed) or '(none: it has no options)'}."
        )
    return factory(**options)


# Names that moved to the comparison harness: still importable from here,
# with a DeprecationWarning, until callers use bnnjax.compare.
_MOVED_TO_COMPARE = (
    "ADAM_LEARNING_RATES",
    "BOP_GAMMAS",
    "SCALE_ADAPTIVE_LEARNING_RATES",
    "TuningGrid",
    "tuning_grid",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_COMPARE:
        warnings.warn(
            f"bnnjax.presets.{name} moved to bnnjax.compare.{name}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("bnnjax._grids"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

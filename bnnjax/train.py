"""Training binary linen models: config, jitted steps, diagnostics, runs.

* :class:`TrainConfig`: a frozen, validated description of one run. It
  holds names (``method="bnn"``, ``optimizer="adam"``) and turns them into
  objects (:attr:`TrainConfig.preset`, :meth:`TrainConfig.make_optimizer`,
  :meth:`TrainConfig.schedule_fn`); the rest of the library passes
  objects.
* :func:`build_model`, :func:`init_state`, :func:`make_train_step`,
  :func:`make_eval_step`, :func:`evaluate`: pure, jit-able pieces. Every
  array in a :class:`TrainState` carries a leading *seed* axis: several
  seeds train at once, in one process, with ``jax.vmap`` (one model,
  optimizer state and batch order per seed; training seeds ``[0, 1]``
  together gives each seed's result alone).
* Diagnostics, pure functions of one seed's parameters:
  :func:`latent_kernels`, :func:`kernel_signs`, :func:`flip_ratio`,
  :func:`gradient_fraction`, :func:`latent_stats`.
* :func:`run`: the whole job (data, training, per-epoch metrics and
  checkpoints in a run directory, resume, plots, final test accuracy).
  It never prints; progress goes to the callbacks and the result is a
  dict.

The loss is softmax cross-entropy on the model's logits. Training
progress ``step / total_steps`` is passed to the model at every step as
a traced scalar (annealed surrogates such as IR-Net's EDE use it), so the
step compiles once.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import math
import os
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from bnnjax import checkpoint as ckpt
from bnnjax import data as data_lib
from bnnjax import distributed, plots
from bnnjax import presets as presets_lib
from bnnjax import scale as scale_lib
from bnnjax._validate import is_int, is_real
from bnnjax.binarize import Binarizer
from bnnjax.models import linen as models
from bnnjax.nn._common import LATENT_KERNEL
from bnnjax.optim import REAL
from bnnjax.summary import path_names
from bnnjax.summary import summary as memory_summary

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_HIDDEN",
    "NonFiniteLossError",
    "StepInfo",
    "TrainConfig",
    "TrainState",
    "abstract_params",
    "build_model",
    "check_batch_split",
    "default_out_dir",
    "evaluate",
    "flip_ratio",
    "gradient_fraction",
    "init_state",
    "kernel_signs",
    "latent_kernels",
    "latent_stats",
    "load_checkpoint",
    "make_eval_step",
    "make_train_step",
    "run",
]

ModelName = Literal["mlp", "cnn", "resnet20", "resnet18"]
MethodName = Literal[
    "scaled_sigmoid",
    "bnn",
    "xnor",
    "bireal",
    "irnet",
    "bnn_plus",
    "bop",
    "float",
    "sigmoid",
    "scaled_sigmoid_annealed",
]
OptimizerName = Literal["adam", "adamw", "sgd"]
ScheduleName = Literal["cosine", "constant"]

DEFAULT_HIDDEN: tuple[int, ...] = (512, 512)
"""MLP widths of the default run (see :class:`TrainConfig`)."""

DEFAULT_EPOCHS = 60
"""Epochs of the default run (see :class:`TrainConfig`)."""

VALIDATION_SPLIT_SEED = 0
"""Seed of the validation split: the same held-out examples for every
training seed, so seeds differ only in initialisation and batch order."""

GRADIENT_THRESHOLD = 0.01
"""Default relative threshold of :func:`gradient_fraction`."""


def check_batch_split(batch_size: int, devices: int) -> None:
    """Checks that a global batch splits evenly over ``devices`` devices.

    Args:
      batch_size: the global batch (examples per step, per seed).
      devices: the number of devices it is split over.

    Raises:
      ValueError: if ``batch_size`` is not a multiple of ``devices``; the
        message lists the batch sizes and device counts that would work.

    Example:
      >>> check_batch_split(96, 8)
      >>> check_batch_split(100, 8)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: batch_size=100 does not split evenly over 8 devices; ...
    """
    if batch_size % devices == 0:
        return
    below = batch_size // devices * devices
    above = below + devices
    sizes = f"e.g. {below} or {above}" if below else f"e.g. {above}"
    divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
    shown = ", ".join(map(str, divisors[:5]))
    raise ValueError(
        f"batch_size={batch_size} does not split evenly over {devices} "
        f"devices; accepted: a batch size that is a multiple of {devices} "
        f"({sizes}), or a device count that divides {batch_size} "
        f"({shown}{', ...' if len(divisors) > 5 else ''})."
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run, validated at construction.

    Strings are resolved here (and in the CLI) only: :attr:`preset`,
    :meth:`make_optimizer` and :meth:`schedule_fn` turn the names into
    objects. Invalid values raise ``ValueError`` (or ``TypeError`` for a
    wrong type) naming the field, the value and what is allowed.

    Defaults: the founding method on a ``784-512-512-10`` MLP with binary
    weights and real (ReLU) activations, on the embedded MNIST sample
    (5400 training, 600 validation examples), 60 epochs of 54 batches of
    100, Adam with a cosine schedule (binary group ``3e-2`` through
    ``scale_adaptive``, real group ``1e-3``). Measured on 2 CPU cores:
    about 30 s, 97-98% validation and about 96% test accuracy. Wider or
    longer runs did not do better on validation (the 5400 examples are
    the limit): ``(1024, 1024, 1024)`` for 30 epochs took twice as long for
    97.2% (mean of 3 seeds) against 97.4% here; ``(256, 256)`` 97.3%.

    Attributes:
      dataset: spec for :func:`bnnjax.data.load_dataset`
        (``"mnist-sample"``, ``"idx:DIR"``, ``"cifar:DIR"``, a TFDS name).
      data_dir: TFDS data directory for a TFDS ``dataset`` (``None``:
        TFDS's default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``);
        an error with the local specs. May change when resuming.
      model: ``"mlp"`` (:class:`~bnnjax.models.linen.BinaryMLP`),
        ``"cnn"`` (:class:`~bnnjax.models.linen.BinaryNetCNN`),
        ``"resnet20"`` or ``"resnet18"`` (Bi-Real ResNets).
      hidden: MLP hidden widths (ignored by the other models).
      method: method name, see :mod:`bnnjax.presets`
        (:data:`~bnnjax.presets.METHOD_NAMES`).
      method_options: keyword options of the method's factory (e.g.
        ``{"k": 4.0}`` or ``{"scale": "mean_abs"}`` for
        ``"scaled_sigmoid"``; see :func:`bnnjax.presets.method_options`);
        ``None``: the defaults. Stored as sorted ``(name, value)`` pairs.
      binary_activations: binarize activations with the preset's
        activation rule. ``None`` (default): ``False`` for the MLP (real
        ReLU activations), ``True`` for the CNN and ResNets, which always
        binarize the inputs of their binary layers (``False`` is an error
        there).
      epochs: number of passes over the training split.
      batch_size: examples per step (per seed).
      learning_rate: binary-group learning rate (Bop: its ``gamma``);
        ``None``: the preset's default.
      real_learning_rate: real-group learning rate; ``None``: the preset's
        default.
      optimizer: base optimizer, ``"adam"``, ``"adamw"`` (weight decay
        1e-4) or ``"sgd"`` (momentum 0.9).
      schedule: ``"cosine"`` (decay to 0 over the run) or ``"constant"``.
      seeds: one or more distinct non-negative seeds, trained together.
      val_fraction: fraction of the training data held out (stratified)
        for validation; the test split is never used for any choice.
      out_dir: run directory; ``None``: :func:`default_out_dir` at
        :func:`run` time.
      eval_batch_size: examples per evaluation batch.
      max_to_keep: checkpoints kept in the run directory.
      devices: number of devices to train on, data-parallel (see
        :mod:`bnnjax.distributed`); ``None`` (default): every device of
        the job, on every host, or, when ``batch_size`` does not split
        evenly over them all, the largest device count that it does split
        over (reported as ``devices`` in the results). ``batch_size`` is
        the *global* batch, split evenly over the devices, so an explicit
        ``devices`` must divide it; batch norm uses the statistics of the
        global batch.
        Changing it when resuming is allowed (checkpoints restore on any
        device count).
    """

    dataset: str = "mnist-sample"
    data_dir: str | None = None
    model: ModelName = "mlp"
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    method: MethodName = "scaled_sigmoid"
    method_options: Mapping[str, Any] | None = None
    binary_activations: bool | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 100
    learning_rate: float | None = None
    real_learning_rate: float | None = None
    optimizer: OptimizerName = "adam"
    schedule: ScheduleName = "cosine"
    seeds: tuple[int, ...] = (0,)
    val_fraction: float = 0.1
    out_dir: str | None = None
    eval_batch_size: int = 1000
    max_to_keep: int = 2
    devices: int | None = None

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for name in ("model", "method", "optimizer", "schedule"):
            allowed = typing.get_args(hints[name])
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(
                    f"TrainConfig.{name}={value!r}; expected one of "
                    f"{list(allowed)}."
                )
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(
                f"TrainConfig.dataset={self.dataset!r}; expected a dataset "
                "spec such as 'mnist-sample', 'idx:DIR', 'cifar:DIR' or a "
                "TFDS name."
            )
        if self.data_dir is not None and (
            not isinstance(self.data_dir, str) or not self.data_dir
        ):
            raise ValueError(
                f"TrainConfig.data_dir={self.data_dir!r}; expected a "
                "directory path or None."
            )
        kind = self.dataset.partition(":")[0]
        if self.data_dir is not None and (
            self.dataset == "mnist-sample" or kind in ("idx", "cifar")
        ):
            raise ValueError(
                f"TrainConfig.data_dir={self.data_dir!r} is only used for "
                f"TFDS names; dataset {self.dataset!r} reads local files."
            )
        if self.method_options is not None:
            options = self.method_options
            if isinstance(options, Mapping):
                options = options.items()
            try:
                options = dict(options)
            except (TypeError, ValueError):
                raise TypeError(
                    f"TrainConfig.method_options={self.method_options!r}; "
                    "expected a mapping of option name -> value."
                ) from None
            presets_lib.get_preset(self.method, **options)  # validates
            # Stored as sorted pairs: hashable, and one spelling per choice.
            object.__setattr__(
                self,
                "method_options",
                tuple(sorted(options.items())) or None,
            )
        hidden = self.hidden
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(
                f"TrainConfig.hidden={hidden!r}; expected a sequence of "
                "positive ints such as (1024, 1024, 1024)."
            )
        if not hidden or not all(is_int(h) and h >= 1 for h in hidden):
            raise ValueError(
                f"TrainConfig.hidden={tuple(hidden)!r}; expected a non-empty "
                "sequence of positive ints such as (1024, 1024, 1024)."
            )
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if self.binary_activations not in (None, True, False):
            raise TypeError(
                "TrainConfig.binary_activations="
                f"{self.binary_activations!r}; expected True, False or None."
            )
        if self.model != "mlp" and self.binary_activations is False:
            raise ValueError(
                f"TrainConfig.binary_activations=False with model="
                f"{self.model!r}; allowed: True or None. This model always "
                "binarizes the inputs of its binary layers; only 'mlp' has "
                "real activations."
            )
        for name in ("epochs", "batch_size", "eval_batch_size", "max_to_keep"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(
                    f"TrainConfig.{name}={value!r}; expected a positive int."
                )
        for name in ("learning_rate", "real_learning_rate"):
            value = getattr(self, name)
            if value is None:
                continue
            if not is_real(value) or not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"TrainConfig.{name}={value!r}; expected a finite number "
                    "> 0, or None for the method's default."
                )
        seeds = self.seeds
        if is_int(seeds):
            seeds = (seeds,)
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
            raise TypeError(
                f"TrainConfig.seeds={seeds!r}; expected a sequence of "
                "non-negative ints."
            )
        if not seeds or not all(is_int(s) and 0 <= s < 2**32 for s in seeds):
            raise ValueError(
                f"TrainConfig.seeds={tuple(seeds)!r}; expected one or more "
                "ints in [0, 2**32)."
            )
        if len(set(seeds)) != len(seeds):
            raise ValueError(
                f"TrainConfig.seeds={tuple(seeds)!r}; seeds must be distinct."
            )
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        if not is_real(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ValueError(
                f"TrainConfig.val_fraction={self.val_fraction!r}; expected a "
                "number in (0, 1)."
            )
        if self.devices is not None:
            if not is_int(self.devices) or self.devices < 1:
                raise ValueError(
                    f"TrainConfig.devices={self.devices!r}; expected a "
                    "positive int, or None for every device."
                )
            object.__setattr__(self, "devices", int(self.devices))
            try:
                check_batch_split(self.batch_size, self.devices)
            except ValueError as e:
                raise ValueError(f"TrainConfig.{e}") from None
        if self.out_dir is not None and (
            not isinstance(self.out_dir, str) or not self.out_dir
        ):
            raise ValueError(
                f"TrainConfig.out_dir={self.out_dir!r}; expected a directory "
                "path or None."
            )

    @property
    def preset(self) -> presets_lib.Preset:
        """The :class:`~bnnjax.presets.Preset` named by ``method``."""
        return presets_lib.get_preset(self.method, **self.options)

    @property
    def options(self) -> dict[str, Any]:
        """``method_options`` as a dict (empty when ``None``)."""
        return dict(self.method_options or ())

    @property
    def activations_binary(self) -> bool:
        """Whether the model binarizes activations (``None`` resolved)."""
        if self.binary_activations is None:
            return self.model != "mlp"
        return self.binary_activations

    def learning_rates(self) -> tuple[float, float]:
        """``(binary, real)`` learning rates, the preset's where ``None``."""
        preset = self.preset
        binary = self.learning_rate
        real = self.real_learning_rate
        return (
            preset.learning_rate if binary is None else float(binary),
            preset.real_learning_rate if real is None else float(real),
        )

    def make_optimizer(
        self, learning_rate: optax.ScalarOrSchedule
    ) -> optax.GradientTransformation:
        """The base optimizer named by ``optimizer`` at ``learning_rate``."""
        if self.optimizer == "adam":
            return optax.adam(learning_rate)
        if self.optimizer == "adamw":
            return optax.adamw(learning_rate, weight_decay=1e-4)
        return optax.sgd(learning_rate, momentum=0.9)

    def schedule_fn(
        self, value: float, total_steps: int
    ) -> optax.ScalarOrSchedule:
        """``value`` under the named schedule over ``total_steps`` steps."""
        if self.schedule == "cosine":
            return optax.cosine_decay_schedule(value, max(total_steps, 1))
        return value

    def make_model(
        self,
        num_classes: int,
        *,
        preset: presets_lib.Preset | None = None,
    ) -> nn.Module:
        """The linen model named by ``model`` with the preset's binarizers.

        Args:
          num_classes: number of outputs.
          preset: use this preset's binarizers instead of :attr:`preset`
            (the comparison harness passes preset objects).

        Returns:
          A :class:`~bnnjax.models.linen.BinaryMLP` (``hidden``,
          ``binary_activations``), :class:`~bnnjax.models.linen.BinaryNetCNN`
          or :class:`~bnnjax.models.linen.BiRealResNet`
          (``bireal_resnet20``/``bireal_resnet18``), called as
          ``apply(variables, x, train=..., progress=...)``.
        """
        preset = self.preset if preset is None else preset
        rules = {
            "kernel_binarizer": preset.kernel_binarizer,
            "activation_binarizer": preset.activation_binarizer,
            "num_classes": num_classes,
        }
        if self.model == "mlp":
            return models.BinaryMLP(
                hidden=self.hidden,
                binary_activations=self.activations_binary,
                **rules,
            )
        if self.model == "cnn":
            return models.BinaryNetCNN(**rules)
        if self.model == "resnet20":
            return models.bireal_resnet20(**rules)
        return models.bireal_resnet18(**rules)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists, options a dict)."""
        values = {
            f.name: (
                list(getattr(self, f.name))
                if isinstance(getattr(self, f.name), tuple)
                else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }
        values["method_options"] = (
            self.options if self.method_options is not None else None
        )
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Builds a config from :meth:`to_dict` output (validated).

        Raises:
          ValueError: for unknown fields or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown TrainConfig fields {unknown}; expected a subset of "
                f"{sorted(names)}."
            )
        values = dict(values)
        for name in ("hidden", "seeds"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


class TrainState(NamedTuple):
    """Training state; every leaf has a leading seed axis.

    Attributes:
      params: the ``"params"`` collection (latent kernels and real
        parameters).
      batch_stats: the ``"batch_stats"`` collection (batch-norm running
        averages).
      opt_state: the optax state.
    """

    params: Any
    batch_stats: Any
    opt_state: Any


class StepInfo(NamedTuple):
    """What :func:`run` reports after each step (means over seeds).

    Attributes:
      step: steps done so far (1-based, counting resumed ones).
      total_steps: steps of the whole run.
      epoch: the current epoch (1-based).
      loss: training loss of this step.
      accuracy: training accuracy of this step.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    accuracy: float


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run was stopped.

    Attributes:
      step: the 1-based step whose loss was not finite.
      epoch: its 1-based epoch.
      seeds: the seeds whose loss was not finite.
      last_checkpoint: the epoch of the last good checkpoint, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        epoch: int,
        seeds: Sequence[int],
        last_checkpoint: int | None,
    ):
        super().__init__(message)
        self.step = step
        self.epoch = epoch
        self.seeds = tuple(seeds)
        self.last_checkpoint = last_checkpoint


def default_out_dir(now: datetime.datetime | None = None) -> str:
    """``runs/<YYYYmmdd-HHMMSS>`` (relative to the working directory)."""
    now = now or datetime.datetime.now()
    return os.path.join("runs", now.strftime("%Y%m%d-%H%M%S"))


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The linen model of ``config``; see :meth:`TrainConfig.make_model`."""
    return config.make_model(num_classes)


def latent_kernels(params: Any) -> dict[str, jax.Array]:
    """The latent kernels of a linen parameter tree, by layer path.

    Args:
      params: a ``"params"`` tree (with or without a leading seed axis).

    Returns:
      ``{"dense_0": kernel, "blocks_3/conv": kernel, ...}`` in tree order:
      every leaf stored under ``"latent_kernel"``, keyed by its layer path.

    Example:
      >>> import jax.numpy as jnp
      >>> latent_kernels({"dense_0": {"latent_kernel": jnp.ones((2, 3))},
      ...                 "norm": {"scale": jnp.ones(3)}}).keys()
      dict_keys(['dense_0'])
    """
    kernels = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        last = path[-1] if path else None
        if getattr(last, "key", None) == LATENT_KERNEL:
            kernels["/".join(path_names(path[:-1]))] = leaf
    return kernels


def kernel_signs(
    kernels: Mapping[str, jax.Array], binarizer: Binarizer
) -> dict[str, jax.Array]:
    """Signs of the binary weights: ``x' >= 0`` per kernel.

    ``x' = w - mean(w)`` (over the binarizer's reduced axes) when the
    binarizer centres the weights (IR-Net), else ``w``; ``sign(0) = +1``,
    as in :func:`bnnjax.binarize`.

    Args:
      kernels: layer -> latent kernel (one seed).
      binarizer: the kernel rule.

    Returns:
      layer -> boolean array, ``True`` where the binary weight is ``+1``.
    """
    signs = {}
    for layer, w in kernels.items():
        signs[layer] = binarizer.surrogate_input(w) >= 0
    return signs


def flip_ratio(
    before: Mapping[str, jax.Array], after: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Fraction of binary weights whose sign changed.

    Args:
      before: layer -> signs (booleans, :func:`kernel_signs`) earlier, e.g.
        at the start of an epoch.
      after: the same layers' signs now.

    Returns:
      ``(total, per_layer)``: the fraction over all kernels (weighted by
      size) and per layer, as float32 scalars.

    Raises:
      ValueError: if the layers or shapes differ.

    Example:
      >>> import jax.numpy as jnp
      >>> total, layers = flip_ratio({"a": jnp.array([True, True])},
      ...                            {"a": jnp.array([True, False])})
      >>> float(total), float(layers["a"])
      (0.5, 0.5)
    """
    if list(before) != list(after):
        raise ValueError(
            f"flip_ratio: layers differ: {list(before)} vs {list(after)}."
        )
    per_layer = {}
    flips = jnp.float32(0)
    count = 0
    for layer in before:
        b, a = before[layer], after[layer]
        if b.shape != a.shape:
            raise ValueError(
                f"flip_ratio: {layer} has shape {b.shape} before and "
                f"{a.shape} after."
            )
        changed = jnp.sum(b != a, dtype=jnp.float32)
        per_layer[layer] = changed / max(b.size, 1)
        flips = flips + changed
        count += b.size
    return flips / max(count, 1), per_layer


def gradient_fraction(
    kernels: Mapping[str, jax.Array],
    binarizer: Binarizer,
    *,
    progress: jax.typing.ArrayLike = 0.0,
    threshold: float = GRADIENT_THRESHOLD,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Fraction of latent weights that get a non-negligible gradient.

    The backward pass of :func:`bnnjax.binarize` multiplies the incoming
    gradient by ``alpha * derivative(x')``. A weight counts as *active*
    when that factor is at least ``threshold`` times its value at
    ``x' = 0`` (the surrogate's straight-through peak) in the same
    channel::

        active = derivative(x') >= threshold * derivative(0)

    ``alpha`` is the same on both sides (one value per channel), so it
    cancels: the measure does not depend on the weights' scale factor,
    which a following batch norm would undo anyway, only on where each
    weight sits in its surrogate's window. With the default 1%: the
    clipped STE counts ``|x| <= 1``; a fixed sigmoid with ``beta = 5``,
    ``|x| <= 1.2``; the scaled sigmoid, ``|x'| <= 3`` mean absolute
    deviations whatever the weights' scale; EDE narrows as ``progress``
    grows. Plain STE, Bop and the float preset count every weight.

    Args:
      kernels: layer -> latent kernel (one seed).
      binarizer: the kernel rule (deterministic surrogates only).
      progress: training progress in ``[0, 1]`` (may be traced).
      threshold: relative slope below which a gradient is negligible.

    Returns:
      ``(total, per_layer)`` float32 fractions in ``[0, 1]``.

    Raises:
      ValueError: for a stochastic binarizer.

    Example:
      >>> import jax.numpy as jnp, bnnjax
      >>> rule = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
      >>> total, _ = gradient_fraction(
      ...     {"a": jnp.array([[0.5], [2.0]])}, rule)
      >>> float(total)
      0.5
    """
    if binarizer.stochastic:
        raise ValueError(
            "gradient_fraction needs a deterministic surrogate, got "
            f"{binarizer.surrogate!r}."
        )
    surrogate = binarizer.surrogate
    per_layer = {}
    active = jnp.float32(0)
    count = 0
    for layer, w in kernels.items():
        w = jnp.asarray(w, jnp.float32)
        axes = scale_lib.reduce_axes(w.ndim, binarizer.axis)
        w = binarizer.surrogate_input(w)
        aux = surrogate.prepare(w, axes, progress=progress, key=None)
        slope = surrogate.derivative(w, aux)
        peak = surrogate.derivative(jnp.zeros_like(w), aux)
        hits = jnp.sum(slope >= threshold * peak, dtype=jnp.float32)
        per_layer[layer] = hits / max(w.size, 1)
        active = active + hits
        count += w.size
    return active / max(count, 1), per_layer


def latent_stats(
    kernels: Mapping[str, jax.Array],
) -> dict[str, dict[str, jax.Array]]:
    """Per-layer statistics of latent kernels (over the whole tensor).

    Args:
      kernels: layer -> latent kernel (one seed).

    Returns:
      layer -> ``{"mean", "std", "mean_abs_dev", "max_abs",
      "beyond_3_mad"}``, where ``beyond_3_mad`` is the fraction of weights
      with ``|w - mean| > 3 * mean_abs_dev`` (about 1.6% for a Gaussian;
      more means heavy tails, e.g. weights drifting away and no longer
      flipping).

    Example:
      >>> import jax.numpy as jnp
      >>> s = latent_stats({"a": jnp.array([-1.0, 1.0])})["a"]
      >>> float(s["mean"]), float(s["mean_abs_dev"]), float(s["max_abs"])
      (0.0, 1.0, 1.0)
    """
    stats = {}
    for layer, w in kernels.items():
        w = jnp.asarray(w, jnp.float32)
        mean = jnp.mean(w)
        dev = jnp.abs(w - mean)
        mad = jnp.mean(dev)
        stats[layer] = {
            "mean": mean,
            "std": jnp.std(w),
            "mean_abs_dev": mad,
            "max_abs": jnp.max(jnp.abs(w)),
            "beyond_3_mad": jnp.mean(dev > 3 * mad, dtype=jnp.float32),
        }
    return stats


def _sign_kernels(params: Any) -> Any:
    def sign(path, leaf):
        last = path[-1] if path else None
        if getattr(last, "key", None) == LATENT_KERNEL:
            return jnp.where(leaf >= 0, 1, -1).astype(leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(sign, params)


def _seed_keys(seeds: Sequence[int]) -> jax.Array:
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def abstract_params(model: nn.Module, sample: jax.Array) -> Any:
    """Shapes and dtypes of one model's ``"params"`` (no computation)."""
    variables = jax.eval_shape(
        lambda k: model.init(k, sample, train=False, progress=jnp.float32(0)),
        jax.random.key(0),
    )
    return variables["params"]


def init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    seeds: Sequence[int],
    sample: jax.typing.ArrayLike,
    *,
    sign_init: bool = False,
    mesh: Mesh | None = None,
) -> TrainState:
    """Initialises one model and optimizer state per seed, stacked.

    Seed ``s`` initialises with ``jax.random.key(s)``, so a seed gets the
    same initial parameters alone or with others.

    Args:
      model: a linen model called as ``apply(v, x, train=..., progress=...)``.
      tx: the optimizer.
      seeds: the seeds (the leading axis of every leaf, in this order).
      sample: a float input batch of the right shape (values unused).
      sign_init: replace every latent kernel by its sign (``±1``; Bop).
      mesh: a device mesh (:func:`bnnjax.distributed.data_mesh`): the
        state is replicated on every device of it (in a multi-process job,
        every process must call this). ``None``: the default device.

    Returns:
      A :class:`TrainState` whose leaves have a leading ``len(seeds)`` axis.
    """
    sample = jnp.asarray(sample)

    def one(key):
        variables = model.init(
            key, sample, train=False, progress=jnp.float32(0)
        )
        params = variables["params"]
        if sign_init:
            params = _sign_kernels(params)
        return TrainState(
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
        )

    keys = _seed_keys(seeds)
    if mesh is None:
        return jax.jit(jax.vmap(one))(keys)
    rep = distributed.replicated(mesh)
    return jax.jit(jax.vmap(one), in_shardings=rep, out_shardings=rep)(keys)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels
    )


def _over_seeds(
    fn: Callable[..., Any], in_axes: tuple[int | None, ...]
) -> Callable[..., Any]:
    """``jax.vmap(fn, in_axes)``, without the vmap when there is one seed.

    The seed axis is read from the first argument's leaves (static under
    ``jit``). With a single seed the step runs unbatched on the squeezed
    arguments and the axis is put back on the results: XLA on CPU runs the
    unbatched matrix products markedly faster than batched ones of batch 1
    (measured 1.5x on the whole MLP step, ``benchmarks/train_throughput.py``).
    """
    batched = jax.vmap(fn, in_axes=in_axes)

    def mapped(*args: Any) -> Any:
        sizes = {x.shape[0] for x in jax.tree_util.tree_leaves(args[0])}
        if sizes != {1}:
            return batched(*args)
        squeezed = [
            a if axis is None else jax.tree.map(lambda x: x[0], a)
            for a, axis in zip(args, in_axes, strict=True)
        ]
        out = fn(*squeezed)
        return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)

    return mapped


def _donate_state() -> bool:
    """Whether the train step donates its input state to its output.

    On accelerators donation updates parameters and optimizer state in
    place instead of holding two copies in device memory. On CPU, XLA
    copies every donated buffer before updating it, which cost 8% of the
    784-1024x3-10 MLP's step (``benchmarks/README.md``), and memory is
    rarely the limit, so the CPU step does not donate.
    """
    return jax.default_backend() != "cpu"


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Builds the jitted training step, vmapped over the seed axis.

    ``step(state, images, labels, progress) -> (state, metrics)``:

    * ``state``: a :class:`TrainState` with a leading seed axis (donated
      on accelerators, not on CPU where donating was slower);
    * ``images``: ``(S, B, H, W, C)`` uint8 batches, one per seed (as
      :func:`bnnjax.data.iterate_batches` stacks them), scaled to ``[0, 1]``
      inside the step;
    * ``labels``: ``(S, B)`` int32;
    * ``progress``: float32 scalar ``step / total_steps``, shared by every
      seed and passed to the model (traced: a new value does not
      recompile);
    * ``metrics``: ``{"loss", "accuracy"}``, each of shape ``(S,)``.

    With one seed (``S == 1``) the step runs without the vmap on the
    squeezed arguments (faster on CPU) and has the same signature.

    The loss is the mean softmax cross-entropy of the batch; batch norm
    uses batch statistics and updates its running averages.

    With a ``mesh`` the step is data-parallel: the batch axis ``B`` of
    ``images`` and ``labels`` is split over the mesh's devices (the seed
    axis is not), the state and metrics are replicated, and XLA adds the
    all-reduces. Every mean over the batch (the loss, batch-norm
    statistics) is over the global batch, so the step computes what it
    computes on one device, up to the order of floating-point sums.
    ``B`` must be a multiple of the number of devices.

    Args:
      model: the linen model.
      tx: the optimizer (its updates get the current params).
      mesh: a device mesh (:func:`bnnjax.distributed.data_mesh`), or
        ``None`` for the default device.

    Returns:
      The jitted step.
    """

    def one(state, images, labels, progress):
        x = data_lib.to_float(images)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                x,
                train=True,
                progress=progress,
                mutable=["batch_stats"],
            )
            loss = jnp.mean(_cross_entropy(logits, labels))
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels, dtype=jnp.float32)
        new_state = TrainState(params, batch_stats, opt_state)
        return new_state, {"loss": loss, "accuracy": accuracy}

    step = _over_seeds(one, in_axes=(0, 0, 0, None))
    donate = (0,) if _donate_state() else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate)
    rep = distributed.replicated(mesh)
    batch = distributed.batch_sharding(mesh, 1)
    return jax.jit(
        step,
        in_shardings=(rep, batch, batch, rep),
        out_shardings=(rep, rep),
        donate_argnums=donate,
    )


def make_eval_step(
    model: nn.Module, *, mesh: Mesh | None = None
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Builds the jitted evaluation step, vmapped over the seed axis.

    ``step(state, images, labels, mask, progress) -> (loss_sum, correct)``
    with one shared ``(B, H, W, C)`` uint8 batch for every seed, ``mask``
    ``(B,)`` marking real (not padding) examples; both results have shape
    ``(S,)``. Batch norm uses its running averages.

    Args:
      model: the linen model.
      mesh: a device mesh: the batch is split over its devices (``B`` a
        multiple of their number) and the sums are replicated. ``None``:
        the default device.

    Returns:
      The jitted step.
    """

    def one(state, images, labels, mask, progress):
        logits = model.apply(
            {"params": state.params, "batch_stats": state.batch_stats},
            data_lib.to_float(images),
            train=False,
            progress=progress,
        )
        losses = _cross_entropy(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return jnp.sum(losses * mask), jnp.sum(correct * mask)

    step = _over_seeds(one, in_axes=(0, None, None, None, None))
    if mesh is None:
        return jax.jit(step)
    rep = distributed.replicated(mesh)
    batch = distributed.batch_sharding(mesh, 0)
    return jax.jit(
        step,
        in_shardings=(rep, batch, batch, batch, rep),
        out_shardings=(rep, rep),
    )


def evaluate(
    eval_step: Callable[..., tuple[jax.Array, jax.Array]],
    state: TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    progress: float = 1.0,
    mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy per seed over a whole split.

    The last batch is padded to ``batch_size`` (and masked), so every call
    uses one compiled shape. With a ``mesh``, the batch is first rounded
    up to a multiple of its device count (padding masked too), and each
    process transfers only the rows its devices hold.

    Args:
      eval_step: from :func:`make_eval_step`.
      state: the stacked state.
      images: ``(N, H, W, C)`` uint8.
      labels: ``(N,)`` int32.
      batch_size: examples per evaluation batch.
      progress: passed to the model (only annealed backward rules read it).
      mesh: the mesh ``eval_step`` was built with, or ``None``.

    Returns:
      ``(loss, accuracy)`` numpy arrays of shape ``(S,)``.

    Raises:
      ValueError: for an empty split.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("evaluate: the split holds no examples.")
    size = min(batch_size, n)
    sharding = None
    if mesh is not None:
        size = -(-size // mesh.size) * mesh.size
        sharding = distributed.batch_sharding(mesh, 0)
    loss_sum = correct = 0.0
    p = np.float32(progress)
    for start in range(0, n, size):
        x = images[start : start + size]
        y = labels[start : start + size]
        k = len(y)
        mask = np.zeros(size, np.float32)
        mask[:k] = 1
        if k < size:
            x = np.concatenate([x, np.zeros((size - k, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(size - k, y.dtype)])
        if sharding is not None:
            rows = distributed.host_rows(sharding, (size,), 0)
            x, y, mask = (
                distributed.global_batch(sharding, a[rows], a.shape)
                for a in (x, y, mask)
            )
        batch_loss, batch_correct = eval_step(state, x, y, mask, p)
        loss_sum = loss_sum + batch_loss
        correct = correct + batch_correct
    return np.asarray(loss_sum) / n, np.asarray(correct) / n


def _epoch_diagnostics(binarizer: Binarizer) -> Callable[..., Any]:
    """Jitted ``(params, prev_signs, progress) -> (metrics, signs)``."""

    def one(params, prev_signs, progress):
        kernels = latent_kernels(params)
        signs = kernel_signs(kernels, binarizer)
        flips, flip_layers = flip_ratio(prev_signs, signs)
        active, active_layers = gradient_fraction(
            kernels, binarizer, progress=progress
        )
        metrics = {
            "flip_ratio": flips,
            "flip_ratio_layers": flip_layers,
            "gradient_fraction": active,
            "gradient_fraction_layers": active_layers,
            "latent": latent_stats(kernels),
        }
        return metrics, signs

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def _signs_fn(binarizer: Binarizer) -> Callable[[Any], Any]:
    return jax.jit(
        jax.vmap(lambda p: kernel_signs(latent_kernels(p), binarizer))
    )


def _seed_row(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda x: float(np.asarray(x)[i]), tree)


def _summary_numbers(state: TrainState, binary: bool) -> dict[str, Any]:
    one = jax.tree.map(lambda x: x[0], state)
    variables = {"params": one.params, "batch_stats": one.batch_stats}
    labels = None if binary else jax.tree.map(lambda _: REAL, one.params)
    s = memory_summary(variables, labels=labels)
    binary_rows = [r for r in s.rows if r.kind != REAL]
    return {
        "binary_params": s.binary_params,
        "real_params": s.real_params,
        "latent_bytes": sum(r.train_bytes for r in binary_rows),
        "packed_bytes": sum(r.deploy_bytes for r in binary_rows),
        "train_bytes": s.train_bytes,
        "deploy_bytes": s.deploy_bytes,
        "compression_ratio": s.compression_ratio,
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, np.float64)
    return float(array.mean()), float(array.std())


def _train_epoch(
    train_step: Callable[..., Any],
    state: TrainState,
    batches: Any,
    *,
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    epoch: int,
    seeds: Sequence[int],
    last_good: int | None,
    checkpoint_dir: str,
    on_step: Callable[[StepInfo], None] | None,
    before_step: Callable[[int, TrainState], TrainState] | None,
) -> tuple[TrainState, int, list[np.ndarray], list[np.ndarray]]:
    """Runs one epoch; reads each step's metrics one step late."""
    losses: list[np.ndarray] = []
    accuracies: list[np.ndarray] = []

    def report(done: int, batch: int, metrics: dict[str, jax.Array]) -> None:
        loss = np.asarray(metrics["loss"])
        accuracy = np.asarray(metrics["accuracy"])
        bad = [
            s for s, v in zip(seeds, loss, strict=True) if not np.isfinite(v)
        ]
        if bad:
            where = (
                f"epoch {last_good} in {checkpoint_dir!r}"
                if last_good
                else "none (no epoch had finished)"
            )
            raise NonFiniteLossError(
                f"Training loss is not finite at step {done} (epoch "
                f"{epoch + 1}, batch {batch} of {steps_per_epoch}) for "
                f"seed(s) {bad}; training stopped. Last good checkpoint: "
                f"{where}. Lower the learning rate or check the data.",
                step=done,
                epoch=epoch + 1,
                seeds=bad,
                last_checkpoint=last_good,
            )
        losses.append(loss)
        accuracies.append(accuracy)
        if on_step is not None:
            on_step(
                StepInfo(
                    step=done,
                    total_steps=total_steps,
                    epoch=epoch + 1,
                    loss=float(loss.mean()),
                    accuracy=float(accuracy.mean()),
                )
            )

    pending = None
    for batch, (images, labels) in enumerate(batches, 1):
        if before_step is not None:
            state = before_step(step, state)
        progress = np.float32(step / total_steps)
        state, metrics = train_step(state, images, labels, progress)
        step += 1
        if pending is not None:
            report(*pending)
        pending = (step, batch, metrics)
    if pending is not None:
        report(*pending)
    return state, step, losses, accuracies


def _global_batches(
    mesh: Mesh,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    seeds: Sequence[int],
    epoch: int,
    prefetch: int = 2,
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """One epoch of global ``(S, B, ...)`` batches sharded over ``mesh``.

    The batch order is :func:`bnnjax.data.iterate_batches`' for
    ``(seeds, epoch)`` whatever the device count: this process gathers
    only the rows of each batch its devices hold, and the global arrays
    are assembled with ``jax.make_array_from_process_local_data``.
    ``prefetch`` batches are kept in flight, so the transfer of the next
    batch overlaps the current step.
    """
    order = data_lib.iterate_batches(
        np.arange(len(labels)),
        labels,
        batch_size=batch_size,
        seed=list(seeds),
        epoch=epoch,
    )
    sharding = distributed.batch_sharding(mesh, 1)
    image_shape = (len(seeds), batch_size, *images.shape[1:])
    label_shape = (len(seeds), batch_size)
    rows = distributed.host_rows(sharding, label_shape, 1)

    def put(index: np.ndarray) -> tuple[jax.Array, jax.Array]:
        local = index[:, rows]
        return (
            distributed.global_batch(sharding, images[local], image_shape),
            distributed.global_batch(sharding, labels[local], label_shape),
        )

    def batches() -> Iterator[tuple[jax.Array, jax.Array]]:
        queue: collections.deque = collections.deque()
        for index, _ in order:
            queue.append(put(index))
            if len(queue) > prefetch:
                yield queue.popleft()
        while queue:
            yield queue.popleft()

    return batches()


def _build(
    config: TrainConfig,
    sample: jax.Array,
    num_classes: int,
    steps_per_epoch: int,
) -> tuple[nn.Module, optax.GradientTransformation, Any, int]:
    """Model, optimizer, binary learning-rate schedule and total steps."""
    total_steps = config.epochs * steps_per_epoch
    model = build_model(config, num_classes)
    lr, real_lr = config.learning_rates()
    lr_fn = config.schedule_fn(lr, total_steps)
    tx = config.preset.optimizer(
        abstract_params(model, sample),
        make_optimizer=config.make_optimizer,
        learning_rate=lr_fn,
        real_learning_rate=config.schedule_fn(real_lr, total_steps),
    )
    return model, tx, lr_fn, total_steps


def load_checkpoint(
    out_dir: str | os.PathLike,
    *,
    epoch: int | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[nn.Module, TrainState, dict[str, Any]]:
    """Loads a run's model and training state from its directory.

    A checkpoint written on any number of devices or hosts loads on any
    other: the arrays are read straight into ``sharding``.

    Args:
      out_dir: a run directory written by :func:`run`.
      epoch: which checkpoint (default: the latest complete one).
      sharding: where every array goes, e.g.
        ``bnnjax.distributed.replicated(mesh)``. ``None``: the default
        device in a single process; replicated on every device in a
        multi-process job (where every process must call this).

    Returns:
      ``(model, state, info)``: the linen model, the :class:`TrainState`
      (leading seed axis, in ``config.seeds`` order) and the checkpoint's
      record (``epoch``, ``step``, ...).

    Raises:
      FileNotFoundError: if ``out_dir`` holds no run.
      bnnjax.checkpoint.CheckpointError: for a missing, corrupt or
        mismatched checkpoint.
    """
    out_dir = os.fspath(out_dir)
    config = TrainConfig.from_dict(ckpt.read_config(out_dir))
    with ckpt.Checkpointer(
        os.path.join(out_dir, ckpt.CHECKPOINT_DIR),
        max_to_keep=config.max_to_keep,
    ) as checkpointer:
        info = checkpointer.info(epoch)
        sample = jnp.zeros((1, *info["image_shape"]), jnp.float32)
        model, tx, _, _ = _build(
            config, sample, info["num_classes"], info["steps_per_epoch"]
        )
        like = jax.eval_shape(
            lambda: init_state(
                model,
                tx,
                config.seeds,
                sample,
                sign_init=config.preset.sign_init,
            )
        )
        state, info = checkpointer.restore(
            like, info["epoch"], sharding=sharding
        )
    return model, state, info


def _default_devices(config: TrainConfig) -> int | None:
    """``config.devices``, or (when ``None``) the most devices that fit.

    With ``devices=None`` every device is used when the global batch splits
    evenly over them; otherwise the largest device count that divides
    ``batch_size`` (and splits over the processes), so ``batch_size=100``
    trains on 5 of 8 GPUs rather than failing. The count used is reported
    as ``devices`` in the results.
    """
    if config.devices is not None:
        return config.devices
    available = jax.device_count()
    processes = jax.process_count()
    fitting = [
        n
        for n in range(available, 0, -1)
        if config.batch_size % n == 0 and n % processes == 0
    ]
    # None: let data_mesh/check_batch_split explain why nothing fits.
    return fitting[0] if fitting else None


_RESUMABLE_CHANGES = ("epochs", "out_dir", "devices", "data_dir")


def _check_resume_config(out_dir: str, config: TrainConfig) -> None:
    saved = ckpt.read_config(out_dir)
    current = config.to_dict()
    different = [
        f"{name}={saved.get(name)!r} (now {current[name]!r})"
        for name in current
        if name not in _RESUMABLE_CHANGES and saved.get(name) != current[name]
    ]
    if different:
        raise ValueError(
            f"Cannot resume the run in {out_dir!r}: it was started with "
            + "; ".join(different)
            + ". Resume with the same settings (only epochs may change), or "
            "start a new run in another directory."
        )


def run(
    config: TrainConfig,
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    before_step: Callable[[int, TrainState], TrainState] | None = None,
    make_plots: bool = True,
) -> dict[str, Any]:
    """Trains ``config`` and returns the final metrics; never prints.

    Steps: check the run directory (an existing non-empty one is refused
    unless ``resume``), load the dataset, hold out the validation split,
    build the model and optimizer from the preset, and train every seed
    at once. After each epoch, per seed: the mean training loss and
    accuracy, validation loss and accuracy, flip ratio, gradient fraction
    and latent statistics are appended to ``metrics.jsonl``, then a
    checkpoint is saved. At the end the test split is evaluated once, on
    the final parameters, and plots are written. Nothing uses the test
    split before that; the best validation epoch is reported for
    information only.

    With ``resume``, the run continues from its last complete checkpoint
    and ends with the same parameters as an uninterrupted run: batch order
    depends only on ``(seed, epoch)``, the schedules and ``progress`` only
    on the step, and the checkpoint holds the parameters, batch
    statistics, optimizer state and step.

    Training is data-parallel over ``config.devices`` devices (default:
    all; see :mod:`bnnjax.distributed`): each global batch of
    ``batch_size`` is split over the devices, and the parameters and
    optimizer state are replicated. The batches are the same whatever the
    device count, so one device and ``n`` devices train the same model up
    to floating-point summation order. A resumed run may use another
    device count. In a multi-process job (after
    :func:`bnnjax.distributed.initialize`) every process calls this with
    the same ``config``; each loads the dataset but transfers only the
    rows of each batch its devices hold; checkpoints are written by all
    processes together, and ``config.json``, ``metrics.jsonl`` and the
    plots by process 0 only. The run directory must be on a file system
    every host reaches. Callbacks run in every process.

    Args:
      config: the run.
      resume: continue the run in ``config.out_dir``.
      on_step: called after every step with a :class:`StepInfo` (one step
        late, so the host does not wait for the device).
      on_epoch: called after each epoch's checkpoint with the epoch
        (1-based) and that epoch's metrics records, one per seed.
      before_step: fault-injection hook for tests, ``f(step, state) ->
        state`` called before each step (0-based step).
      make_plots: write the PNG plots (needs matplotlib; skipped without).

    Returns:
      A JSON-ready dict: ``test_accuracy``/``val_accuracy`` (means over
      seeds) with ``_std`` and ``_per_seed``, the same for losses,
      ``epochs``, ``train_seconds`` (time spent in training steps,
      including the first step's compilation), ``examples_per_second``,
      the memory summary of one model (``binary_params``,
      ``real_params``, ``latent_bytes``/``packed_bytes`` of the binary
      kernels while training/deployed, ``train_bytes``, ``deploy_bytes``,
      ``compression_ratio``), ``best_val_epoch_per_seed``, ``devices``
      and ``processes`` (the data-parallel device and process counts),
      ``out_dir``, ``plots`` (empty outside process 0) and more.

    Raises:
      FileExistsError: if the run directory is not empty and not resumed.
      FileNotFoundError: for missing data, or nothing to resume.
      ValueError: for a dataset too small for ``batch_size``, a
        ``batch_size`` that does not split over the devices, too few
        devices, or a resumed run started with other settings.
      bnnjax.checkpoint.CheckpointError: for a corrupt or mismatched
        checkpoint.
      NonFiniteLossError: when a loss is NaN or infinite; the last good
        checkpoint is kept.
    """
    wall_start = time.perf_counter()
    mesh = distributed.data_mesh(_default_devices(config))
    check_batch_split(config.batch_size, mesh.size)
    primary = distributed.is_primary()
    out_dir = ckpt.prepare_run_dir(
        config.out_dir or default_out_dir(), resume=resume
    )
    if resume:
        _check_resume_config(out_dir, config)
    # Every process has checked the directory before process 0 writes.
    distributed.barrier("bnnjax.train.run: run directory checked")
    dataset = data_lib.load_dataset(config.dataset, data_dir=config.data_dir)
    train_split, val = data_lib.split_validation(
        dataset, fraction=config.val_fraction, seed=VALIDATION_SPLIT_SEED
    )
    n_train = len(train_split.train_labels)
    steps_per_epoch = data_lib.num_batches(
        n_train, batch_size=config.batch_size
    )
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {n_train} "
            f"training examples of {config.dataset!r} left after holding out "
            f"val_fraction={config.val_fraction}."
        )
    preset = config.preset
    seeds = list(config.seeds)
    sample = data_lib.to_float(train_split.train_images[:1])
    model, tx, lr_fn, total_steps = _build(
        config, sample, dataset.num_classes, steps_per_epoch
    )
    lr, real_lr = config.learning_rates()
    state = init_state(
        model, tx, seeds, sample, sign_init=preset.sign_init, mesh=mesh
    )
    shape_info = {
        "image_shape": list(dataset.image_shape),
        "num_classes": dataset.num_classes,
        "steps_per_epoch": steps_per_epoch,
    }

    with ckpt.Checkpointer(
        os.path.join(out_dir, ckpt.CHECKPOINT_DIR),
        max_to_keep=config.max_to_keep,
    ) as checkpointer:
        start_epoch, step = 0, 0
        if resume and checkpointer.latest_epoch() is not None:
            state, info = checkpointer.restore(state)
            start_epoch, step = int(info["epoch"]), int(info["step"])
        if start_epoch > config.epochs:
            raise ValueError(
                f"Cannot resume the run in {out_dir!r} with epochs="
                f"{config.epochs}: its last checkpoint is already at epoch "
                f"{start_epoch}."
            )
        if primary:
            ckpt.write_config(out_dir, {**config.to_dict(), "out_dir": out_dir})
            records = ckpt.truncate_metrics(out_dir, last_epoch=start_epoch)
        else:  # the same records, read (process 0 may be rewriting them)
            records = [
                r
                for r in ckpt.read_metrics(out_dir)
                if r.get("epoch", 0) <= start_epoch
            ]
        last_good = start_epoch if start_epoch else None

        train_step = make_train_step(model, tx, mesh=mesh)
        eval_step = make_eval_step(model, mesh=mesh)
        diagnostics = _epoch_diagnostics(preset.kernel_binarizer)
        signs = _signs_fn(preset.kernel_binarizer)(state.params)

        for epoch in range(start_epoch, config.epochs):
            epoch_start = time.perf_counter()
            batches = _global_batches(
                mesh,
                train_split.train_images,
                train_split.train_labels,
                batch_size=config.batch_size,
                seeds=seeds,
                epoch=epoch,
            )
            state, step, losses, accuracies = _train_epoch(
                train_step,
                state,
                batches,
                step=step,
                total_steps=total_steps,
                steps_per_epoch=steps_per_epoch,
                epoch=epoch,
                seeds=seeds,
                last_good=last_good,
                checkpoint_dir=checkpointer.directory,
                on_step=on_step,
                before_step=before_step,
            )
            train_seconds = time.perf_counter() - epoch_start

            progress = min(step / total_steps, 1.0)
            val_loss, val_accuracy = evaluate(
                eval_step,
                state,
                val.images,
                val.labels,
                batch_size=config.eval_batch_size,
                progress=progress,
                mesh=mesh,
            )
            diag, signs = diagnostics(state.params, signs, np.float32(progress))
            diag = jax.device_get(diag)
            train_loss = np.mean(losses, axis=0)
            train_accuracy = np.mean(accuracies, axis=0)
            epoch_records = []
            for i, seed in enumerate(seeds):
                epoch_records.append(
                    {
                        "epoch": epoch + 1,
                        "seed": seed,
                        "step": step,
                        "learning_rate": float(
                            lr_fn(step) if callable(lr_fn) else lr_fn
                        ),
                        "train_loss": float(train_loss[i]),
                        "train_accuracy": float(train_accuracy[i]),
                        "val_loss": float(val_loss[i]),
                        "val_accuracy": float(val_accuracy[i]),
                        **_seed_row(diag, i),
                        "train_seconds": train_seconds,
                        "examples_per_second": len(seeds)
                        * steps_per_epoch
                        * config.batch_size
                        / train_seconds,
                    }
                )
            if primary:
                ckpt.append_metrics(out_dir, epoch_records)
            checkpointer.save(epoch + 1, state, {"step": step, **shape_info})
            last_good = epoch + 1
            records.extend(epoch_records)
            if on_epoch is not None:
                on_epoch(epoch + 1, epoch_records)

    test_loss, test_accuracy = evaluate(
        eval_step,
        state,
        dataset.test_images,
        dataset.test_labels,
        batch_size=config.eval_batch_size,
        progress=1.0,
        mesh=mesh,
    )
    last = [r for r in records if r["epoch"] == config.epochs]
    last.sort(key=lambda r: seeds.index(r["seed"]))
    val_per_seed = [r["val_accuracy"] for r in last]
    val_loss_per_seed = [r["val_loss"] for r in last]
    best = []
    for seed in seeds:
        rows = [r for r in records if r["seed"] == seed]
        top = max(rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))
        best.append(
            {"epoch": top["epoch"], "val_accuracy": top["val_accuracy"]}
        )
    epoch_seconds = {r["epoch"]: r["train_seconds"] for r in records}
    train_seconds = float(sum(epoch_seconds.values()))
    examples = len(seeds) * config.epochs * steps_per_epoch * config.batch_size

    host_state = jax.tree.map(np.asarray, state)  # replicated: a local copy
    latents = {
        layer: w[0] for layer, w in latent_kernels(host_state.params).items()
    }
    plot_paths = (
        plots.plot_run(records, latents, out_dir)
        if make_plots and primary
        else []
    )

    results: dict[str, Any] = {
        "method": config.method,
        "method_options": config.options,
        "model": config.model,
        "dataset": config.dataset,
        "binary_activations": config.activations_binary,
        "seeds": seeds,
        "epochs": config.epochs,
        "steps": step,
        "batch_size": config.batch_size,
        "learning_rate": lr,
        "real_learning_rate": real_lr,
    }
    for name, values in (
        ("test_accuracy", [float(v) for v in test_accuracy]),
        ("val_accuracy", val_per_seed),
        ("test_loss", [float(v) for v in test_loss]),
        ("val_loss", val_loss_per_seed),
    ):
        mean, std = _mean_std(values)
        results[name] = mean
        results[f"{name}_std"] = std
        results[f"{name}_per_seed"] = values
    results.update(
        {
            "best_val_epoch_per_seed": [b["epoch"] for b in best],
            "best_val_accuracy_per_seed": [b["val_accuracy"] for b in best],
            "train_seconds": train_seconds,
            "examples_per_second": examples / train_seconds
            if train_seconds > 0
            else 0.0,
            **_summary_numbers(host_state, preset.binary),
            "resumed_from_epoch": start_epoch if resume else None,
            "wall_seconds": time.perf_counter() - wall_start,
            "device": str(mesh.devices.flat[0]),
            "devices": mesh.size,
            "processes": jax.process_count(),
            "out_dir": out_dir,
            "plots": plot_paths,
        }
    )
    return results

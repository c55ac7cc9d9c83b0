"""The training configuration: :class:`TrainConfig` and its validation.

:class:`TrainConfig` is a frozen, validated description of one run. It
holds names (``method="bnn"``, ``optimizer="adam"``) and turns them into
objects (:attr:`TrainConfig.preset`, :meth:`TrainConfig.make_optimizer`,
:meth:`TrainConfig.schedule_fn`, :meth:`TrainConfig.make_model`); the rest
of the library passes objects. Each check of ``__post_init__`` is a named
function below, run in a fixed order, so the first invalid field is the
one reported.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import optax

from bnnjax import presets as presets_lib
from bnnjax._validate import is_int, is_real
from bnnjax.models import linen as models
from bnnjax.training import augment as augment_lib
from bnnjax.training import losses as losses_lib
from bnnjax.training import optimization

__all__ = [
    "AugmentName",
    "DEFAULT_EPOCHS",
    "DEFAULT_HIDDEN",
    "LossName",
    "MODEL_NAMES",
    "MethodName",
    "ModelName",
    "OptimizerName",
    "SELECT_NAMES",
    "ScheduleName",
    "SelectName",
    "TrainConfig",
    "check_batch_split",
]

ModelName = Literal[
    "mlp", "cnn", "tutorial_cnn", "resnet20", "resnet18", "reactnet"
]
MODEL_NAMES: tuple[ModelName, ...] = typing.get_args(ModelName)
"""The names ``TrainConfig.model`` (and ``--model``) accepts."""
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
OptimizerName = optimization.OptimizerName
ScheduleName = optimization.ScheduleName
LossName = losses_lib.LossName
AugmentName = augment_lib.AugmentName
SelectName = Literal["last", "best_val"]
SELECT_NAMES: tuple[SelectName, ...] = typing.get_args(SelectName)
"""The names ``TrainConfig.select`` (and ``--select``) accepts."""

DEFAULT_HIDDEN: tuple[int, ...] = (512, 512)
"""MLP widths of the default run (see :class:`TrainConfig`)."""

DEFAULT_EPOCHS = 60
"""Epochs of the default run (see :class:`TrainConfig`)."""

_DEFAULTED = (
    "binary_activations",
    "learning_rate",
    "real_learning_rate",
    "augment",
    "weight_decay",
    "final_lr_fraction",
)
"""The fields whose ``None`` stands for a default of the method, model or
dataset."""

_ADAMW_WEIGHT_DECAY = 1e-4
"""``weight_decay`` of ``optimizer="adamw"`` when left ``None``."""

_FINAL_LR_FRACTION = {
    "cosine": 0.0,
    "linear": 0.0,
    "constant": 1.0,
    "exponential": 3e-3,
}
"""``final_lr_fraction`` of each schedule when left ``None``; the
exponential one is BinaryNet's CIFAR-10 decay (``1e-3`` to ``3e-6``)."""

# Dataset kinds of the default augmentation, by the spec's first name
# ("cifar:DIR" -> "cifar", "emnist/balanced" -> "emnist").
_NATURAL_IMAGES = ("cifar", "cifar10", "cifar100")
_MNIST_FAMILY = (
    "mnist-sample",
    "idx",
    "mnist",
    "emnist",
    "kmnist",
    "fashion_mnist",
)


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
    ``scale_adaptive``, real group ``1e-3``), chosen on the validation
    split. The default run's time and accuracy, and the wider and longer
    runs tried against it, are on the documentation's accuracy page.

    Attributes:
      dataset: spec for :func:`bnnjax.data.load_dataset`
        (``"mnist-sample"``, ``"idx:DIR"``, ``"cifar:DIR"``, a TFDS name).
      data_dir: TFDS data directory for a TFDS ``dataset`` (``None``:
        TFDS's default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``);
        an error with the local specs. May change when resuming.
      model: ``"mlp"`` (:class:`~bnnjax.models.linen.BinaryMLP`),
        ``"cnn"`` (:class:`~bnnjax.models.linen.BinaryNetCNN`),
        ``"tutorial_cnn"`` (:func:`~bnnjax.models.linen.tutorial_cnn`,
        the small CNN of Larq's MNIST tutorial), ``"resnet20"`` or
        ``"resnet18"`` (Bi-Real ResNets), or ``"reactnet"``
        (:func:`~bnnjax.models.linen.reactnet_small`).
      hidden: MLP hidden widths (ignored by the other models).
      width: width multiplier of the convolutional models (their
        ``width_multiplier``: every width but the head's scales by it); a
        positive number. The MLP takes ``1.0`` only: its widths are
        ``hidden``.
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
      optimizer: base optimizer, ``"adam"``, ``"adamw"`` (decoupled
        weight decay) or ``"sgd"`` (momentum 0.9); see
        :func:`bnnjax.training.optimization.make_base_optimizer`.
      schedule: learning-rate schedule of both groups after the warm-up:
        ``"cosine"`` (to ``final_lr_fraction`` of the peak, default 0),
        ``"linear"`` (likewise), ``"exponential"`` (BinaryNet's: a
        constant factor per epoch down to ``final_lr_fraction``, default
        ``3e-3``) or ``"constant"``; see
        :func:`bnnjax.training.optimization.make_schedule`.
      loss: ``"cross_entropy"`` or ``"squared_hinge"`` (BinaryNet's,
        :func:`bnnjax.train.squared_hinge`). Validation and test losses
        are the same loss without label smoothing.
      label_smoothing: label smoothing of the cross-entropy, in
        ``[0, 1)`` (``0``: none).
      weight_decay: weight decay of the real-valued parameters only
        (batch norm, biases, real layers); the latent binary weights have
        none. Decoupled with ``"adamw"``, an L2 gradient term with
        ``"adam"`` and ``"sgd"`` (PyTorch's ``weight_decay``). ``None``
        (default): ``1e-4`` with ``"adamw"``, ``0`` otherwise.
      warmup_epochs: epochs of linear learning-rate warm-up from 0,
        fewer than ``epochs`` (default 0).
      final_lr_fraction: the last learning rate as a fraction of the
        peak; ``None``: the schedule's default (see ``schedule``).
      dropout: dropout rate on the MLP's real-valued hidden signals (its
        ReLU activations, and the input of a real head), in ``[0, 1)``
        (:class:`~bnnjax.models.linen.BinaryMLP`'s ``dropout_rate``); the
        other models have none (``0`` only). Its masks are drawn from the
        seed and the step, as the augmentation's.
      input_dropout: dropout rate on the MLP's input pixels, in ``[0, 1)``
        (``input_dropout_rate``); ``0`` for the other models.
      init_from: a run directory whose last checkpoint's parameters and
        batch statistics this run starts from (the second stage of a
        multi-stage recipe: binary weights with real activations first,
        then fully binary from there); the optimizer starts fresh. The
        networks must have the same parameters (model, widths, classes);
        each seed takes the source's same seed, or its only one. ``None``:
        a fresh initialisation. See ``bnnjax.training.sources``.
      teacher: a run directory whose network (its last checkpoint, in
        evaluation mode) the student is distilled from, inside the jitted
        step; each seed takes the teacher's same seed, or its only one.
        ``None``: no distillation.
      distill_weight: with ``teacher``, the loss is ``(1 - w) * label
        loss + w * distillation loss`` (:func:`bnnjax.train.distillation`);
        ``1`` (default) is ReActNet's distributional loss alone. In
        ``[0, 1]``.
      distill_temperature: the softmax temperature ``T`` of the
        distillation loss (default 1, as ReActNet); ``> 0``.
      seeds: one or more distinct non-negative seeds, trained together.
      val_fraction: fraction of the training data held out (stratified)
        for validation; the test split is never used for any choice.
      select: which parameters the run ends with, for its test evaluation
        and for whatever loads the run (``bnnjax export``, ``predict``,
        ``init_from``, ``teacher``): ``"last"`` (default), the last
        epoch's, or ``"best_val"``, per seed those of the epoch with the
        highest validation accuracy (the earliest on a tie), model
        selection on the validation split. The selected parameters and
        batch statistics are kept in each checkpoint beside the training
        state, so a resumed run selects the same epoch.
      augment: augmentation of the training batches, inside the jitted
        step (``bnnjax.training.augment``): ``"none"``,
        ``"crop_flip"`` (random crop with 4 pixels of zero padding and
        random horizontal flip) or ``"shift"`` (random shift by up to 2
        pixels, no flip). ``None`` (default): ``"none"`` for the MLP (the
        permutation-invariant protocol), and for the convolutional models
        ``"crop_flip"`` on CIFAR (``"cifar:DIR"``, ``"cifar10"``,
        ``"cifar100"``), ``"shift"`` on the MNIST family
        (``"mnist-sample"``, ``"idx:DIR"``, ``"mnist"``, ``"emnist"``,
        ``"kmnist"``, ``"fashion_mnist"``) and ``"none"`` on other
        datasets (see :attr:`augmentation`). The draws depend only on the
        seed and the step. Evaluation never augments.
      out_dir: run directory; ``None``:
        :func:`~bnnjax.train.default_out_dir` at :func:`~bnnjax.train.run`
        time.
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
    width: float = 1.0
    method: MethodName = "scaled_sigmoid"
    method_options: Mapping[str, Any] | None = None
    binary_activations: bool | None = None
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 100
    learning_rate: float | None = None
    real_learning_rate: float | None = None
    optimizer: OptimizerName = "adam"
    schedule: ScheduleName = "cosine"
    loss: LossName = "cross_entropy"
    label_smoothing: float = 0.0
    weight_decay: float | None = None
    warmup_epochs: int = 0
    final_lr_fraction: float | None = None
    dropout: float = 0.0
    input_dropout: float = 0.0
    init_from: str | None = None
    teacher: str | None = None
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    seeds: tuple[int, ...] = (0,)
    val_fraction: float = 0.1
    select: SelectName = "last"
    augment: AugmentName | None = None
    out_dir: str | None = None
    eval_batch_size: int = 1000
    max_to_keep: int = 2
    devices: int | None = None

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_dataset(self.dataset, self.data_dir)
        if self.method_options is not None:
            _set(self, "method_options", _method_options(self))
        _set(self, "hidden", _hidden(self.hidden))
        _set(self, "width", _width(self.model, self.width))
        _check_binary_activations(self.model, self.binary_activations)
        _check_positive_ints(self)
        _check_learning_rates(self)
        _check_loss(self)
        _check_schedule(self)
        _check_sources(self)
        _check_dropout(self)
        _set(self, "seeds", _seeds(self.seeds))
        _check_val_fraction(self.val_fraction)
        _check_augment(self.augment)
        if self.devices is not None:
            _set(self, "devices", _devices(self.devices, self.batch_size))
        _check_out_dir(self.out_dir)

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

    @property
    def augmentation(self) -> str:
        """The augmentation's name (``augment``, ``None`` resolved).

        ``None`` stands for ``"none"`` with the MLP (the
        permutation-invariant MLP protocol trains on the images as they
        are), and for the convolutional models: ``"crop_flip"`` on CIFAR,
        ``"shift"`` on the MNIST family (small shifts keep a digit's
        label; a mirror does not), ``"none"`` on any other dataset.
        """
        if self.augment is not None:
            return self.augment
        if self.model == "mlp":
            return "none"
        name = re.split(r"[:/]", self.dataset, maxsplit=1)[0]
        if name in _NATURAL_IMAGES:
            return "crop_flip"
        if name in _MNIST_FAMILY:
            return "shift"
        return "none"

    @property
    def uses_dropout(self) -> bool:
        """Whether the model drops units in training (a dropout rate > 0)."""
        return self.dropout > 0 or self.input_dropout > 0

    @property
    def step_takes_index(self) -> bool:
        """Whether the training step takes its index in the run.

        True when it draws random numbers (augmentation or dropout), which
        are keyed by the seed and the step.
        """
        return self.augmentation != "none" or self.uses_dropout

    def make_augmentation(self) -> augment_lib.Augmentation | None:
        """The function :attr:`augmentation` names; ``None`` for none.

        Called as ``f(key, images)`` on a ``(B, H, W, C)`` batch (see
        ``bnnjax.training.augment.get_augmentation``).
        """
        return augment_lib.get_augmentation(self.augmentation)

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
        """The binary group's base optimizer: ``optimizer``, no decay."""
        return optimization.make_base_optimizer(self.optimizer, learning_rate)

    def make_real_optimizer(
        self, learning_rate: optax.ScalarOrSchedule
    ) -> optax.GradientTransformation:
        """The real group's optimizer: ``optimizer`` with ``weight_decay``."""
        return optimization.make_base_optimizer(
            self.optimizer,
            learning_rate,
            weight_decay=self.resolved_weight_decay,
        )

    @property
    def resolved_weight_decay(self) -> float:
        """``weight_decay``, ``None`` resolved (see the attribute)."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return _ADAMW_WEIGHT_DECAY if self.optimizer == "adamw" else 0.0

    @property
    def resolved_final_lr_fraction(self) -> float:
        """``final_lr_fraction``, ``None`` resolved by ``schedule``."""
        if self.final_lr_fraction is not None:
            return float(self.final_lr_fraction)
        return _FINAL_LR_FRACTION[self.schedule]

    def schedule_fn(
        self, value: float, total_steps: int
    ) -> optax.ScalarOrSchedule:
        """``value`` under ``warmup_epochs`` and ``schedule``.

        Args:
          value: the peak learning rate.
          total_steps: steps of the run, ``epochs`` epochs of equal
            length (an epoch's steps set the warm-up's length and the
            exponential decay's stair).
        """
        steps_per_epoch = max(total_steps // self.epochs, 1)
        warmup = min(self.warmup_epochs * steps_per_epoch, total_steps - 1)
        return optimization.make_schedule(
            self.schedule,
            value,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            warmup_steps=max(warmup, 0),
            final_fraction=self.resolved_final_lr_fraction,
        )

    def make_tx(
        self,
        preset: presets_lib.Preset,
        params: Any,
        *,
        learning_rate: float,
        real_learning_rate: float,
        total_steps: int,
    ) -> tuple[optax.GradientTransformation, optax.ScalarOrSchedule]:
        """The preset's optimizer under this run's schedule and decay.

        Args:
          preset: the method.
          params: the parameters (abstract or real), one model's tree.
          learning_rate: the binary group's peak learning rate.
          real_learning_rate: the real group's peak learning rate.
          total_steps: steps of the run.

        Returns:
          ``(tx, lr_fn)``: the optimizer and the binary group's schedule.
        """
        lr_fn = self.schedule_fn(learning_rate, total_steps)
        tx = preset.optimizer(
            params,
            make_optimizer=self.make_optimizer,
            make_real_optimizer=self.make_real_optimizer,
            learning_rate=lr_fn,
            real_learning_rate=self.schedule_fn(
                real_learning_rate, total_steps
            ),
        )
        return tx, lr_fn

    def loss_fn(self, *, train: bool = True) -> losses_lib.Loss:
        """The per-example loss: ``loss``, smoothed only when ``train``."""
        smoothing = self.label_smoothing if train else 0.0
        return losses_lib.get_loss(self.loss, label_smoothing=smoothing)

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
          (``tutorial_cnn`` for ``"tutorial_cnn"``),
          :class:`~bnnjax.models.linen.BiRealResNet`
          (``bireal_resnet20``/``bireal_resnet18``) or
          :class:`~bnnjax.models.linen.ReActNet` (``reactnet_small``) with
          ``width_multiplier=width``, called as
          ``apply(variables, x, train=..., progress=...)``.
        """
        preset = self.preset if preset is None else preset
        rules: dict[str, Any] = {
            "kernel_binarizer": preset.kernel_binarizer,
            "activation_binarizer": preset.activation_binarizer,
            "num_classes": num_classes,
        }
        if self.model == "mlp":
            return models.BinaryMLP(
                hidden=self.hidden,
                binary_activations=self.activations_binary,
                dropout_rate=self.dropout,
                input_dropout_rate=self.input_dropout,
                **rules,
            )
        rules["width_multiplier"] = self.width
        if self.model == "cnn":
            return models.BinaryNetCNN(**rules)
        if self.model == "tutorial_cnn":
            return models.tutorial_cnn(**rules)
        if self.model == "resnet20":
            return models.bireal_resnet20(**rules)
        if self.model == "reactnet":
            return models.reactnet_small(**rules)
        return models.bireal_resnet18(**rules)

    def defaults(self) -> dict[str, Any]:
        """The fields left ``None`` that stand for a default, resolved.

        Returns:
          ``{field: value}``, the value each ``None`` field stands for:
          the preset's learning rates, ``binary_activations`` as
          :attr:`activations_binary`, ``augment`` as :attr:`augmentation`,
          ``weight_decay`` and ``final_lr_fraction`` as
          :attr:`resolved_weight_decay` and
          :attr:`resolved_final_lr_fraction`. Fields set explicitly are
          absent.

        Example:
          >>> TrainConfig(
          ...     learning_rate=0.5, augment="none", weight_decay=0.0,
          ...     final_lr_fraction=0.0).defaults()
          {'binary_activations': False, 'real_learning_rate': 0.001}
        """
        lr, real_lr = self.learning_rates()
        resolved = {
            "binary_activations": self.activations_binary,
            "learning_rate": lr,
            "real_learning_rate": real_lr,
            "augment": self.augmentation,
            "weight_decay": self.resolved_weight_decay,
            "final_lr_fraction": self.resolved_final_lr_fraction,
        }
        return {
            name: resolved[name]
            for name in _DEFAULTED
            if getattr(self, name) is None
        }

    def resolved(self) -> TrainConfig:
        """This run with every ``None`` of :meth:`defaults` filled in.

        Two configs that train the same run have equal ``resolved()``,
        whether a value was given or left to its default.
        """
        return dataclasses.replace(self, **self.defaults())

    def to_dict(self, *, resolved: bool = False) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists, options a dict).

        Args:
          resolved: give the fields of :meth:`resolved` instead, plus a
            ``"defaults"`` entry, :meth:`defaults`: the values that came
            from the method's and model's defaults. This is the form of a
            run directory's ``config.json``.
        """
        config = self.resolved() if resolved else self
        values = {
            f.name: (
                list(getattr(config, f.name))
                if isinstance(getattr(config, f.name), tuple)
                else getattr(config, f.name)
            )
            for f in dataclasses.fields(config)
        }
        values["method_options"] = (
            self.options if self.method_options is not None else None
        )
        if resolved:
            values["defaults"] = self.defaults()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Builds a config from :meth:`to_dict` output (validated).

        Reads either form of :meth:`to_dict`. A resolved one keeps its
        learning rates and augmentation as the values used (so a run
        resumes with them even where a default has changed); one without
        ``augment`` (a ``config.json`` written before augmentation
        existed) reads as ``augment="none"``, what that run trained with;
        a ``binary_activations``
        listed in ``"defaults"`` with its value there is read back as
        ``None``, which gives the same value for the same model. A ``None``
        (as in ``config.json`` of older versions) is the default, as for a
        config built in Python.

        Raises:
          ValueError: for unknown fields or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"defaults"})
        if unknown:
            raise ValueError(
                f"Unknown TrainConfig fields {unknown}; expected a subset of "
                f"{sorted(names)}."
            )
        values = dict(values)
        if "defaults" in values:
            values.setdefault("augment", "none")
        defaults = _recorded_defaults(values.pop("defaults", None))
        binary = values.get("binary_activations")
        if "binary_activations" in defaults and (
            binary is defaults["binary_activations"]
        ):
            values["binary_activations"] = None
        for name in ("hidden", "seeds"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


def _recorded_defaults(defaults: Any) -> dict[str, Any]:
    """The ``"defaults"`` entry of a resolved :meth:`TrainConfig.to_dict`."""
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise ValueError(
            f"TrainConfig defaults={defaults!r}; expected a mapping of "
            f"field -> value for fields of {list(_DEFAULTED)}."
        )
    unknown = sorted(set(defaults) - set(_DEFAULTED))
    if unknown:
        raise ValueError(
            f"TrainConfig defaults name unknown fields {unknown}; expected "
            f"a subset of {list(_DEFAULTED)}."
        )
    return dict(defaults)


def _set(config: TrainConfig, name: str, value: Any) -> None:
    """Stores a normalised field value on the frozen ``config``."""
    object.__setattr__(config, name, value)


def _check_choices(config: TrainConfig) -> None:
    """Each field with a fixed set of values holds one of them."""
    hints = typing.get_type_hints(type(config))
    for name in ("model", "method", "optimizer", "schedule", "loss", "select"):
        allowed = typing.get_args(hints[name])
        value = getattr(config, name)
        if value not in allowed:
            raise ValueError(
                f"TrainConfig.{name}={value!r}; expected one of "
                f"{list(allowed)}."
            )


def _check_dataset(dataset: Any, data_dir: Any) -> None:
    """``dataset`` is a spec; ``data_dir`` only goes with a TFDS name."""
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(
            f"TrainConfig.dataset={dataset!r}; expected a dataset "
            "spec such as 'mnist-sample', 'idx:DIR', 'cifar:DIR' or a "
            "TFDS name."
        )
    if data_dir is not None and (not isinstance(data_dir, str) or not data_dir):
        raise ValueError(
            f"TrainConfig.data_dir={data_dir!r}; expected a "
            "directory path or None."
        )
    kind = dataset.partition(":")[0]
    if data_dir is not None and (
        dataset == "mnist-sample" or kind in ("idx", "cifar")
    ):
        raise ValueError(
            f"TrainConfig.data_dir={data_dir!r} is only used for "
            f"TFDS names; dataset {dataset!r} reads local files."
        )


def _method_options(config: TrainConfig) -> tuple[tuple[str, Any], ...] | None:
    """``method_options`` checked by the preset, as sorted pairs.

    Sorted pairs are hashable and give one spelling per choice.
    """
    options: Any = config.method_options
    if isinstance(options, Mapping):
        options = options.items()
    try:
        options = dict(options)
    except (TypeError, ValueError):
        raise TypeError(
            f"TrainConfig.method_options={config.method_options!r}; "
            "expected a mapping of option name -> value."
        ) from None
    presets_lib.get_preset(config.method, **options)  # validates
    return tuple(sorted(options.items())) or None


def _hidden(hidden: Any) -> tuple[int, ...]:
    """``hidden`` as a tuple of positive ints."""
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
    return tuple(int(h) for h in hidden)


def _width(model: str, width: Any) -> float:
    """``width`` as a positive finite float; only ``1.0`` for the MLP."""
    if not is_real(width) or not (math.isfinite(width) and width > 0):
        raise ValueError(
            f"TrainConfig.width={width!r}; expected a finite number > 0 "
            "(the width multiplier of 'cnn', the ResNets and 'reactnet')."
        )
    if model == "mlp" and width != 1:
        raise ValueError(
            f"TrainConfig.width={width!r} with model='mlp'; the MLP's "
            "widths are set by hidden (--hidden), width must be 1.0."
        )
    return float(width)


def _check_augment(augment: Any) -> None:
    """``augment`` names an augmentation, or is ``None``."""
    if augment is not None and augment not in augment_lib.AUGMENT_NAMES:
        raise ValueError(
            f"TrainConfig.augment={augment!r}; expected one of "
            f"{list(augment_lib.AUGMENT_NAMES)}, or None for the "
            "dataset's default."
        )


def _check_binary_activations(model: str, binary_activations: Any) -> None:
    """``binary_activations`` is a bool or ``None``, and fits ``model``."""
    if binary_activations not in (None, True, False):
        raise TypeError(
            "TrainConfig.binary_activations="
            f"{binary_activations!r}; expected True, False or None."
        )
    if model != "mlp" and binary_activations is False:
        raise ValueError(
            f"TrainConfig.binary_activations=False with model="
            f"{model!r}; allowed: True or None. This model always "
            "binarizes the inputs of its binary layers; only 'mlp' has "
            "real activations."
        )


def _check_positive_ints(config: TrainConfig) -> None:
    """Epochs, batch sizes and ``max_to_keep`` are positive ints."""
    for name in ("epochs", "batch_size", "eval_batch_size", "max_to_keep"):
        value = getattr(config, name)
        if not is_int(value) or value < 1:
            raise ValueError(
                f"TrainConfig.{name}={value!r}; expected a positive int."
            )


def _check_learning_rates(config: TrainConfig) -> None:
    """Learning rates are finite and positive, or ``None``."""
    for name in ("learning_rate", "real_learning_rate"):
        value = getattr(config, name)
        if value is None:
            continue
        if not is_real(value) or not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"TrainConfig.{name}={value!r}; expected a finite number "
                "> 0, or None for the method's default."
            )


def _check_loss(config: TrainConfig) -> None:
    """``label_smoothing`` is in ``[0, 1)`` and fits ``loss``."""
    value = config.label_smoothing
    if not is_real(value) or not 0 <= value < 1:
        raise ValueError(
            f"TrainConfig.label_smoothing={value!r}; expected a number in "
            "[0, 1)."
        )
    if config.loss == "squared_hinge" and value != 0:
        raise ValueError(
            f"TrainConfig.label_smoothing={value!r} with "
            "loss='squared_hinge'; label smoothing applies to "
            "loss='cross_entropy' only (use 0)."
        )


def _check_schedule(config: TrainConfig) -> None:
    """Weight decay, warm-up and the final fraction are in range."""
    decay = config.weight_decay
    if decay is not None and (
        not is_real(decay) or not (math.isfinite(decay) and decay >= 0)
    ):
        raise ValueError(
            f"TrainConfig.weight_decay={decay!r}; expected a finite "
            "number >= 0, or None for the optimizer's default."
        )
    warmup = config.warmup_epochs
    if not is_int(warmup) or not 0 <= warmup < config.epochs:
        raise ValueError(
            f"TrainConfig.warmup_epochs={warmup!r}; expected an int in "
            f"[0, epochs={config.epochs})."
        )
    fraction = config.final_lr_fraction
    if fraction is None:
        return
    if not is_real(fraction) or optimization.final_fraction_problem(
        config.schedule, float(fraction)
    ):
        allowed = optimization.FINAL_FRACTION_ACCEPTS[config.schedule]
        raise ValueError(
            f"TrainConfig.final_lr_fraction={fraction!r} with "
            f"schedule={config.schedule!r}; expected {allowed}, or None "
            "for the schedule's default."
        )


def _check_sources(config: TrainConfig) -> None:
    """``init_from`` and ``teacher`` are paths; distillation settings fit."""
    for name in ("init_from", "teacher"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(
                f"TrainConfig.{name}={value!r}; expected a run directory "
                "path or None."
            )
    weight = config.distill_weight
    if not is_real(weight) or not 0 <= weight <= 1:
        raise ValueError(
            f"TrainConfig.distill_weight={weight!r}; expected a number in "
            "[0, 1]."
        )
    temperature = config.distill_temperature
    if not is_real(temperature) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(
            f"TrainConfig.distill_temperature={temperature!r}; expected a "
            "finite number > 0."
        )
    if config.teacher is None and (weight != 1 or temperature != 1):
        raise ValueError(
            f"TrainConfig.distill_weight={weight!r} and "
            f"distill_temperature={temperature!r} apply to distillation; "
            "name a teacher run (teacher=, --teacher) or leave them at 1."
        )


def _check_dropout(config: TrainConfig) -> None:
    """Dropout rates are in ``[0, 1)``, and only the MLP has them."""
    for name in ("dropout", "input_dropout"):
        value = getattr(config, name)
        if not is_real(value) or not 0 <= value < 1:
            raise ValueError(
                f"TrainConfig.{name}={value!r}; expected a number in [0, 1)."
            )
        if value and config.model != "mlp":
            raise ValueError(
                f"TrainConfig.{name}={value!r} with model={config.model!r}; "
                "dropout acts on real-valued signals, which only the MLP "
                "has (its input pixels and real activations): use 0."
            )


def _seeds(seeds: Any) -> tuple[int, ...]:
    """``seeds`` (or one seed) as a tuple of distinct ints in [0, 2**32)."""
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
    return tuple(int(s) for s in seeds)


def _check_val_fraction(val_fraction: Any) -> None:
    """``val_fraction`` is a number in (0, 1)."""
    if not is_real(val_fraction) or not 0 < val_fraction < 1:
        raise ValueError(
            f"TrainConfig.val_fraction={val_fraction!r}; expected a "
            "number in (0, 1)."
        )


def _devices(devices: Any, batch_size: int) -> int:
    """``devices`` as a positive int that ``batch_size`` splits over."""
    if not is_int(devices) or devices < 1:
        raise ValueError(
            f"TrainConfig.devices={devices!r}; expected a "
            "positive int, or None for every device."
        )
    devices = int(devices)
    try:
        check_batch_split(batch_size, devices)
    except ValueError as e:
        raise ValueError(f"TrainConfig.{e}") from None
    return devices


def _check_out_dir(out_dir: Any) -> None:
    """``out_dir`` is a non-empty path or ``None``."""
    if out_dir is not None and (not isinstance(out_dir, str) or not out_dir):
        raise ValueError(
            f"TrainConfig.out_dir={out_dir!r}; expected a directory "
            "path or None."
        )

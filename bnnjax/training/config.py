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

__all__ = [
    "AugmentName",
    "DEFAULT_EPOCHS",
    "DEFAULT_HIDDEN",
    "MethodName",
    "ModelName",
    "OptimizerName",
    "ScheduleName",
    "TrainConfig",
    "check_batch_split",
]

ModelName = Literal["mlp", "cnn", "resnet20", "resnet18", "reactnet"]
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
AugmentName = augment_lib.AugmentName

DEFAULT_HIDDEN: tuple[int, ...] = (512, 512)
"""MLP widths of the default run (see :class:`TrainConfig`)."""

DEFAULT_EPOCHS = 60
"""Epochs of the default run (see :class:`TrainConfig`)."""

_DEFAULTED = (
    "binary_activations",
    "learning_rate",
    "real_learning_rate",
    "augment",
)
"""The fields whose ``None`` stands for a default of the method, model or
dataset."""

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
        ``"resnet20"`` or ``"resnet18"`` (Bi-Real ResNets), or
        ``"reactnet"`` (:func:`~bnnjax.models.linen.reactnet_small`).
      hidden: MLP hidden widths (ignored by the other models).
      width: width multiplier of ``"cnn"``, the ResNets and
        ``"reactnet"`` (their ``width_multiplier``: every width but the
        head's scales by it); a positive number. The MLP takes ``1.0``
        only: its widths are ``hidden``.
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
    seeds: tuple[int, ...] = (0,)
    val_fraction: float = 0.1
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
                **rules,
            )
        rules["width_multiplier"] = self.width
        if self.model == "cnn":
            return models.BinaryNetCNN(**rules)
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
          :attr:`activations_binary` and ``augment`` as
          :attr:`augmentation`. Fields set explicitly are absent.

        Example:
          >>> TrainConfig(learning_rate=0.5, augment="none").defaults()
          {'binary_activations': False, 'real_learning_rate': 0.001}
        """
        lr, real_lr = self.learning_rates()
        resolved = {
            "binary_activations": self.activations_binary,
            "learning_rate": lr,
            "real_learning_rate": real_lr,
            "augment": self.augmentation,
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
    """``model``, ``method``, ``optimizer`` and ``schedule`` name a choice."""
    hints = typing.get_type_hints(type(config))
    for name in ("model", "method", "optimizer", "schedule"):
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

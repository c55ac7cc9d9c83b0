"""Method comparison: a grid of training methods x seeds under one budget.

:func:`compare` trains several methods (the presets of
:mod:`bnnjax.presets`, their ablations, or your own :class:`Preset`) on
the same dataset and architecture with the same budget, and reports
test accuracy over seeds and how fast each method reaches a target
validation accuracy. The protocol, for every method:

1. **Tune on validation.** Each candidate of the method's declared grid
   (:func:`tuning_grid`, a :class:`TuningGrid`: a few learning rates times
   at most one option with two values) trains with ``tune_seeds`` (default one
   seed, ``1000``, not one of the final seeds) for ``tune_epochs``
   (default: ``epochs``). The candidate with the highest validation
   accuracy after its last epoch (mean over tuning seeds; the first in
   grid order on a tie) is chosen. The test split is not evaluated in
   tuning at all.
2. **Final runs.** The chosen candidate trains with every seed in
   ``seeds`` (together, ``jax.vmap`` over a seed axis) for ``epochs``,
   with the validation accuracy and the sign-flip ratio recorded after
   every epoch; the test split is evaluated once, at the end.

What is equal across methods: the architecture (same model class, widths
and initial latent weights per seed; Bop starts from their signs), the
training and validation examples (the split of
:func:`bnnjax.train.run`), the batch order per seed and epoch, the batch
size, the epochs, the base optimizer and schedule, and the real group's
learning rate. The training step, evaluation and diagnostics are
:mod:`bnnjax.train`'s own (:func:`~bnnjax.train.make_train_step`,
:func:`~bnnjax.train.evaluate`, :func:`~bnnjax.train.flip_ratio`), so a
final run gives the test accuracy :func:`bnnjax.train.run` gives for the
same preset, learning rate and seed (tested). No checkpoints are written.

Timing: the step is compiled ahead of time and compilation is reported
apart (``compile_seconds``). ``epoch_seconds`` are wall-clock seconds of
an epoch's training steps for all seeds together; *seconds to target*
divides their running sum by the number of seeds (the cost per model), so
it is comparable between runs with the same number of seeds on the same,
otherwise idle, machine.

Standard deviations over seeds are sample standard deviations
(``ddof=1``); with one seed they are ``None``. Test accuracies are exact:
``correct / total`` from the integer counts, which are kept too
(``test_correct``, ``test_total``).

Memory: before the first run, :func:`compare` estimates the memory its
largest run needs (every seed of a run is trained at once, so memory grows
with the number of seeds; see :class:`Plan`) and refuses, with a
:class:`MemoryEstimateError`, to start when the estimate exceeds the memory
available (:func:`available_memory`), unless ``allow_large=True``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import platform
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import jax
import numpy as np

from bnnjax import _argtypes, _compare_train
from bnnjax import data as data_lib
from bnnjax import plots as plots_lib
from bnnjax import presets as presets_lib
from bnnjax import train as train_lib
from bnnjax._grids import (
    ADAM_LEARNING_RATES,
    BOP_GAMMAS,
    SCALE_ADAPTIVE_LEARNING_RATES,
    TuningGrid,
    tuning_grid,
)
from bnnjax._validate import is_int, is_real
from bnnjax.presets import Preset

__all__ = [
    "ADAM_LEARNING_RATES",
    "BOP_GAMMAS",
    "CUSTOM_LR_FACTORS",
    "DEFAULT_METHODS",
    "SCALE_ADAPTIVE_LEARNING_RATES",
    "TUNE_SEED_OFFSET",
    "CompareResult",
    "MemoryEstimateError",
    "MethodResult",
    "MethodSpec",
    "Plan",
    "PlannedRun",
    "RunResult",
    "TuningGrid",
    "available_memory",
    "compare",
    "environment",
    "tuning_grid",
]

TuneMode = Literal["grid", "lr", "none"]
Phase = Literal["tune", "final"]

DEFAULT_METHODS: tuple[str, ...] = presets_lib.METHOD_NAMES
"""Every registered method (the founding method, the established ones,
the fixed-width sigmoid and the float ceiling)."""

TUNE_SEED_OFFSET = 1000
"""Offset of the tuning seeds. Tuning runs use seeds ``1000, 1001, ...``, so
the final seeds' validation accuracy is not the one the choice was made on."""

CUSTOM_LR_FACTORS: tuple[float, ...] = (1 / 3, 1.0, 3.0)
"""Learning-rate grid of a user :class:`~bnnjax.presets.Preset`: these
multiples of its ``learning_rate``."""


_format_value = _argtypes.format_value


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class MethodSpec:
    """A registered method with some options fixed (an ablation).

    Attributes:
      name: one of :data:`bnnjax.presets.METHOD_NAMES`.
      options: options of the method's factory held fixed (see
        :func:`bnnjax.presets.method_options`); the others are tuned (with
        ``tune="grid"``) or keep their defaults. Stored read-only.
      label: the name shown in results; default ``name`` followed by
        ``:option=value`` for each fixed option, e.g.
        ``"scaled_sigmoid:scale=mean_abs"`` (the CLI's syntax).

    Raises:
      ValueError: for an unknown name or option, or an invalid value.

    Example:
      >>> MethodSpec(name="scaled_sigmoid", options={"k": 4.0}).label
      'scaled_sigmoid:k=4'
    """

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.options, Mapping):
            raise TypeError(
                f"MethodSpec.options={self.options!r}; expected a mapping of "
                "option name -> value."
            )
        options = dict(self.options)
        presets_lib.get_preset(self.name, **options)  # validates
        object.__setattr__(self, "options", options)
        if self.label is None:
            label = self.name + "".join(
                f":{k}={_format_value(v)}" for k, v in options.items()
            )
            object.__setattr__(self, "label", label)
        elif not isinstance(self.label, str) or not self.label:
            raise ValueError(
                f"MethodSpec.label={self.label!r}; expected a non-empty "
                "string or None."
            )

    def preset(self, **options: Any) -> Preset:
        """The preset with the fixed options and then ``options``."""
        return presets_lib.get_preset(self.name, **self.options, **options)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunResult:
    """One training run: one candidate configuration and its seeds.

    Per-epoch lists have one entry per epoch; ``*_per_seed`` lists one per
    seed, in ``seeds`` order.

    Attributes:
      method: the method's label.
      name: the preset's name.
      phase: ``"tune"`` (test split not evaluated) or ``"final"``.
      options: the factory options of this candidate (JSON values).
      learning_rate: binary-group learning rate (Bop: ``gamma``).
      real_learning_rate: real-group learning rate.
      seeds: the seeds trained together.
      epochs: epochs trained.
      val_accuracy: ``[seed][epoch]`` validation accuracy.
      val_loss: ``[seed][epoch]`` validation loss.
      train_loss: ``[seed][epoch]`` mean training loss of the epoch.
      flip_ratio: ``[seed][epoch]`` fraction of binary weights whose sign
        changed during the epoch; ``None`` for the float ceiling.
      epoch_seconds: ``[epoch]`` training seconds of all seeds together.
      compile_seconds: ahead-of-time compilation of the training step.
      test_accuracy: per seed (final runs), else ``None``: exactly
        ``test_correct / test_total`` (the double nearest the fraction).
      test_loss: per seed (final runs), else ``None``.
      diverged_epoch: per seed, the first epoch with a non-finite training
        loss, or ``None``.
      test_correct: per seed, correctly classified test examples (final
        runs), else ``None``.
      test_total: test examples (final runs), else ``None``.
    """

    method: str
    name: str
    phase: Phase
    options: dict[str, Any]
    learning_rate: float
    real_learning_rate: float
    seeds: tuple[int, ...]
    epochs: int
    val_accuracy: list[list[float]]
    val_loss: list[list[float]]
    train_loss: list[list[float]]
    flip_ratio: list[list[float]] | None
    epoch_seconds: list[float]
    compile_seconds: float
    test_accuracy: list[float] | None
    test_loss: list[float] | None
    diverged_epoch: list[int | None]
    test_correct: list[int] | None = None
    test_total: int | None = None

    @property
    def final_val_accuracy(self) -> float:
        """Mean over seeds of the last epoch's validation accuracy."""
        return float(np.mean([v[-1] for v in self.val_accuracy]))

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per seed (the JSON lines of every run)."""
        rows = []
        for i, seed in enumerate(self.seeds):
            rows.append(
                {
                    "kind": "run",
                    "method": self.method,
                    "name": self.name,
                    "phase": self.phase,
                    "options": self.options,
                    "learning_rate": self.learning_rate,
                    "real_learning_rate": self.real_learning_rate,
                    "seed": seed,
                    "seeds_together": len(self.seeds),
                    "epochs": self.epochs,
                    "val_accuracy": self.val_accuracy[i],
                    "val_loss": self.val_loss[i],
                    "train_loss": self.train_loss[i],
                    "flip_ratio": None
                    if self.flip_ratio is None
                    else self.flip_ratio[i],
                    "epoch_seconds": self.epoch_seconds,
                    "compile_seconds": self.compile_seconds,
                    "test_accuracy": None
                    if self.test_accuracy is None
                    else self.test_accuracy[i],
                    "test_loss": None
                    if self.test_loss is None
                    else self.test_loss[i],
                    "test_correct": None
                    if self.test_correct is None
                    else self.test_correct[i],
                    "test_total": self.test_total,
                    "diverged_epoch": self.diverged_epoch[i],
                }
            )
        return rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodResult:
    """The outcome for one method: chosen candidate and final runs.

    Attributes:
      method: the label.
      name: the preset's name.
      options: the chosen factory options (fixed and tuned).
      learning_rate: the chosen binary-group learning rate.
      real_learning_rate: the real group's learning rate.
      seeds: the final seeds.
      test_accuracy_mean: mean test accuracy over seeds.
      test_accuracy_std: sample standard deviation (``None``: one seed).
      test_accuracy_per_seed: per seed, ``test_correct_per_seed[i] /
        test_total``.
      val_accuracy_mean: mean last-epoch validation accuracy.
      val_accuracy_std: its sample standard deviation.
      target_accuracy: the validation accuracy to reach.
      epochs_to_target_per_seed: first epoch whose validation accuracy is
        at least the target, per seed (``None``: not reached).
      seconds_to_target_per_seed: training seconds per model up to that
        epoch, per seed (``None``: not reached).
      reached: how many seeds reached the target.
      epochs_to_target_mean: mean over the seeds that reached it.
      seconds_to_target_mean: mean over the seeds that reached it.
      train_seconds: training seconds per model of the final runs.
      compile_seconds: compilation of the final runs' step.
      tuning: one entry per candidate, in grid order: ``learning_rate``,
        ``options``, ``val_accuracy`` (the tuning score); empty when not
        tuned.
      at_grid_edge: the chosen learning rate is the smallest or largest of
        a grid of three or more (the optimum may lie outside).
      diverged_seeds: final seeds whose training loss became non-finite.
      test_correct_per_seed: correctly classified test examples per seed.
      test_total: test examples (the same for every seed).
    """

    method: str
    name: str
    options: dict[str, Any]
    learning_rate: float
    real_learning_rate: float
    seeds: tuple[int, ...]
    test_accuracy_mean: float
    test_accuracy_std: float | None
    test_accuracy_per_seed: list[float]
    val_accuracy_mean: float
    val_accuracy_std: float | None
    target_accuracy: float
    epochs_to_target_per_seed: list[int | None]
    seconds_to_target_per_seed: list[float | None]
    reached: int
    epochs_to_target_mean: float | None
    seconds_to_target_mean: float | None
    train_seconds: float
    compile_seconds: float
    tuning: list[dict[str, Any]]
    at_grid_edge: bool
    diverged_seeds: list[int]
    test_correct_per_seed: list[int] = dataclasses.field(default_factory=list)
    test_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``kind="method"``)."""
        values = dataclasses.asdict(self)
        values["seeds"] = list(self.seeds)
        return {"kind": "method", **values}


def environment() -> dict[str, Any]:
    """Device and versions, recorded with every comparison."""
    versions: dict[str, str | None] = {}
    for package in ("bnnjax", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def available_memory() -> tuple[int, str] | None:
    """The memory a comparison may use, in bytes, and where that comes from.

    On a device that reports its memory (``jax.Device.memory_stats()``, as
    GPUs do): its limit less what is in use. Otherwise the host's available
    memory: ``MemAvailable`` in ``/proc/meminfo`` (Linux: free memory plus
    what the kernel can reclaim), or, where that file is missing, the
    physical memory, ``os.sysconf("SC_PHYS_PAGES") *
    os.sysconf("SC_PAGE_SIZE")``.

    Returns:
      ``(bytes, source)``, e.g. ``(8e9, "MemAvailable in /proc/meminfo")``,
      or ``None`` where no figure is known.
    """
    device = jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # backends without statistics raise or return None
        stats = None
    if stats and stats.get("bytes_limit"):
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return free, f"free memory of {device}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    kib = int(line.split()[1])
                    return kib * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return pages, "physical memory (SC_PHYS_PAGES x SC_PAGE_SIZE)"


class PlannedRun(typing.NamedTuple):
    """One run a comparison will make; see :class:`Plan`.

    Attributes:
      method: the method's label.
      phase: ``"tune"`` or ``"final"``.
      seeds: the seeds it trains together.
      epochs: its epochs.
    """

    method: str
    phase: Literal["tune", "final"]
    seeds: tuple[int, ...]
    epochs: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What :func:`compare` will run; given to ``on_start`` before any run.

    Attributes:
      runs: every run, in run order: for each method, one tuning run per
        candidate of its grid (none when it has a single candidate), then
        its final run. A run trains its seeds together.
      memory_bytes: estimated memory of the largest run: the most seeds
        trained together times the largest per-seed estimate over the
        methods (the training step's state, gradients and activations,
        or an evaluation batch's, plus the batch order and flip-ratio
        signs; within a factor of 2 of XLA's compiled memory analysis).
      memory_per_seed: that per-seed estimate, in bytes.
      available_bytes: the memory available (:func:`available_memory`),
        or ``None`` if unknown.
      memory_source: where ``available_bytes`` comes from.
    """

    runs: tuple[PlannedRun, ...]
    memory_bytes: int
    memory_per_seed: int
    available_bytes: int | None
    memory_source: str

    @property
    def fits(self) -> bool:
        """Whether the estimate is within the available memory (or unknown)."""
        return (
            self.available_bytes is None
            or self.memory_bytes <= self.available_bytes
        )


class MemoryEstimateError(ValueError):
    """A comparison's estimated memory exceeds the memory available.

    Attributes:
      plan: the :class:`Plan` with the estimate and the memory available.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        size = _argtypes.format_bytes
        seeds = max(len(r.seeds) for r in plan.runs)
        available = cast(int, plan.available_bytes)
        super().__init__(
            f"compare: the largest run needs about {size(plan.memory_bytes)}"
            f" ({seeds} seeds trained together x "
            f"{size(plan.memory_per_seed)} each), more than the "
            f"{size(available)} available ({plan.memory_source}); use fewer "
            "seeds, or pass allow_large=True to run anyway."
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareResult:
    """Everything a comparison measured.

    Attributes:
      methods: one :class:`MethodResult` per method, in the order given.
      runs: every :class:`RunResult` (tuning and final), in run order.
      settings: the shared budget and protocol (dataset, model, widths,
        epochs, seeds, ...) and :func:`environment`.
    """

    methods: tuple[MethodResult, ...]
    runs: tuple[RunResult, ...]
    settings: dict[str, Any]

    def method(self, label: str) -> MethodResult:
        """The result of the method labelled ``label``.

        Raises:
          KeyError: naming the labels present.
        """
        for result in self.methods:
            if result.method == label:
                return result
        raise KeyError(
            f"No method {label!r} in this comparison; it has "
            f"{[m.method for m in self.methods]}."
        )

    def records(self) -> list[dict[str, Any]]:
        """JSON lines: settings, every run per seed, then every method."""
        lines: list[dict[str, Any]] = [{"kind": "settings", **self.settings}]
        for run in self.runs:
            lines.extend(run.records())
        lines.extend(m.to_dict() for m in self.methods)
        return lines

    def table(self) -> str:
        """A Markdown table: test accuracy over seeds and time to target."""
        target = self.settings["target_accuracy"]
        head = (
            "| method | chosen lr, options | test accuracy (mean ± std) | "
            f"val accuracy | epochs to {100 * target:g}% val | seconds to "
            f"{100 * target:g}% val | train s / model |"
        )
        lines = [head, "| --- | --- | --- | --- | --- | --- | --- |"]
        for m in self.methods:
            chosen = f"{m.learning_rate:g}" + "".join(
                f", {k}={_format_value(v)}" for k, v in m.options.items()
            )
            if m.at_grid_edge:
                chosen += " (grid edge)"
            n = len(m.seeds)
            lines.append(
                f"| {m.method} | {chosen} | "
                f"{_pct(m.test_accuracy_mean, m.test_accuracy_std)} | "
                f"{_pct(m.val_accuracy_mean, m.val_accuracy_std)} | "
                f"{_reach(m.epochs_to_target_mean, m.reached, n, '.1f')} | "
                f"{_reach(m.seconds_to_target_mean, m.reached, n, '.3g')} | "
                f"{m.train_seconds:.3g} |"
            )
        return "\n".join(lines)

    def plot(
        self, out_dir: str | os.PathLike[str], *, prefix: str = ""
    ) -> list[str]:
        """Writes the plots; see :func:`bnnjax.plots.plot_comparison`.

        Returns:
          The paths written (``[]`` without matplotlib).
        """
        final = [
            r
            for run in self.runs
            if run.phase == "final"
            for r in run.records()
        ]
        return plots_lib.plot_comparison(
            final,
            out_dir,
            target_accuracy=self.settings["target_accuracy"],
            title=_plot_title(self.settings),
            prefix=prefix,
        )


def _plot_title(settings: Mapping[str, Any]) -> str:
    widths = "-".join(str(h) for h in settings["hidden"])
    acts = "binary" if settings["binary_activations"] else "real"
    model = settings["model"]
    width = settings.get("width", 1.0)
    arch = (
        f"{model} {widths}"
        if model == "mlp"
        else (model if width == 1 else f"{model} width {width:g}")
    )
    return (
        f"{settings['dataset']}, {arch}, {acts} activations, "
        f"{settings['epochs']} epochs, {len(settings['seeds'])} seeds"
    )


def _pct(mean: float, std: float | None) -> str:
    if std is None:
        return f"{100 * mean:.2f}%"
    return f"{100 * mean:.2f} ± {100 * std:.2f}%"


def _reach(value: float | None, reached: int, n: int, fmt: str) -> str:
    if value is None:
        return f"not reached (0/{n})"
    return f"{value:{fmt}} ({reached}/{n})"


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    array = np.asarray(values, np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return float(array.mean()), std


# ---------------------------------------------------------------------------
# The comparison.


class _Method(typing.NamedTuple):
    label: str
    name: str
    build: Callable[..., Preset]  # options -> Preset
    fixed: Mapping[str, Any]
    grid: TuningGrid


def _resolve(
    method: str | MethodSpec | Preset, grids: Mapping[str, TuningGrid]
) -> _Method:
    if isinstance(method, str):
        method = MethodSpec(name=method)
    if isinstance(method, MethodSpec):
        spec = method
        label = cast(str, spec.label)  # __post_init__ fills in the label
        grid = grids.get(label) or tuning_grid(spec.name, **spec.options)
        return _Method(label, spec.name, spec.preset, spec.options, grid)
    if isinstance(method, Preset):
        preset = method
        grid = grids.get(preset.name) or TuningGrid(
            learning_rates=tuple(
                preset.learning_rate * f for f in CUSTOM_LR_FACTORS
            )
        )
        if grid.options:
            raise ValueError(
                f"The grid for the Preset object {preset.name!r} has options "
                f"{list(grid.options)}; a Preset object has no factory "
                "options. Pass a MethodSpec of a registered method instead."
            )

        def build(**options: Any) -> Preset:
            del options
            return preset

        return _Method(preset.name, preset.name, build, {}, grid)
    raise TypeError(
        f"compare: a method must be a name (one of "
        f"{list(presets_lib.METHOD_NAMES)}), a MethodSpec or a Preset, got "
        f"{method!r}."
    )


def _candidates(
    method: _Method, tune: TuneMode, default_lr: float
) -> list[tuple[float, dict[str, Any]]]:
    if tune == "none":
        return [(default_lr, {})]
    if tune == "lr":
        return [(lr, {}) for lr in method.grid.learning_rates]
    return method.grid.candidates()


def _to_target(
    curve: Sequence[float],
    epoch_seconds: Sequence[float],
    target: float,
    n: int,
) -> tuple[int | None, float | None]:
    for epoch, accuracy in enumerate(curve, 1):
        if accuracy >= target:
            return epoch, float(sum(epoch_seconds[:epoch])) / n
    return None, None


def compare(
    methods: Sequence[str | MethodSpec | Preset] = DEFAULT_METHODS,
    *,
    dataset: str | data_lib.Dataset = "mnist-sample",
    data_dir: str | None = None,
    model: train_lib.ModelName = "mlp",
    hidden: Sequence[int] = train_lib.DEFAULT_HIDDEN,
    width: float = 1.0,
    augment: train_lib.AugmentName | None = None,
    binary_activations: bool | None = None,
    epochs: int = 10,
    batch_size: int = 100,
    optimizer: train_lib.OptimizerName = "adam",
    schedule: train_lib.ScheduleName = "cosine",
    real_learning_rate: float | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    tune: TuneMode = "grid",
    tune_seeds: Sequence[int] = (TUNE_SEED_OFFSET,),
    tune_epochs: int | None = None,
    grids: Mapping[str, TuningGrid] | None = None,
    target_accuracy: float = 0.95,
    val_fraction: float = 0.1,
    eval_batch_size: int = 1000,
    on_run: Callable[[RunResult], None] | None = None,
    on_start: Callable[[Plan], None] | None = None,
    allow_large: bool = False,
) -> CompareResult:
    """Compares training methods under one budget; never prints.

    See the module docstring for the protocol (tuning on the validation
    split, then final runs over ``seeds``; the test split is evaluated
    only at the end of final runs).

    Args:
      methods: method names (:data:`bnnjax.presets.METHOD_NAMES`),
        :class:`MethodSpec` (a method with options fixed, e.g. an
        ablation) or :class:`~bnnjax.presets.Preset` objects (your own
        method; tuned over :data:`CUSTOM_LR_FACTORS` times its learning
        rate). Labels must be distinct.
      dataset: a spec for :func:`bnnjax.data.load_dataset` or a loaded
        :class:`bnnjax.data.Dataset`.
      data_dir: TFDS data directory for a TFDS name (``None``:
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      model: ``"mlp"``, ``"cnn"``, ``"tutorial_cnn"``, ``"resnet20"``,
        ``"resnet18"`` or ``"reactnet"`` (as :class:`bnnjax.train.TrainConfig`).
      hidden: MLP hidden widths.
      width: width multiplier of the convolutional models (``1.0`` with
        the MLP), as :class:`bnnjax.train.TrainConfig`'s.
      augment: augmentation of the training batches, as
        :class:`bnnjax.train.TrainConfig`'s (``None``: the dataset's and
        model's default: ``"shift"`` for a CNN on MNIST, ``"crop_flip"`` on
        CIFAR, ``"none"`` for the MLP). Every run of every method draws
        the same augmentations for the same seed and step.
      binary_activations: as :class:`bnnjax.train.TrainConfig` (``None``:
        real for the MLP, binary for the others).
      epochs: epochs of the final runs.
      batch_size: examples per step and seed.
      optimizer: base optimizer (``"adam"``, ``"adamw"``, ``"sgd"``).
      schedule: ``"cosine"`` or ``"constant"``, over each run's steps.
      real_learning_rate: real-group learning rate for every method;
        ``None``: each preset's (``1e-3`` for all built-in ones).
      seeds: which seeds the final runs use, trained together, e.g.
        ``(0, 1, 2)`` or ``range(3, 6)``; distinct ints in ``[0, 2**32)``
        (a single int is one seed). Recorded in the settings, per run and
        per method.
      tune: ``"grid"`` (learning rates x options), ``"lr"`` (learning
        rates only, options at their defaults) or ``"none"`` (the preset's
        defaults, no tuning runs).
      tune_seeds: seeds of the tuning runs.
      tune_epochs: epochs of the tuning runs (default ``epochs``); their
        schedule spans their own length.
      grids: overrides of the declared grids (:func:`tuning_grid`), by
        method label (for a Preset object: its name).
      target_accuracy: validation accuracy whose first epoch and seconds
        are reported, in ``(0, 1]``.
      val_fraction: fraction of the training data held out for validation
        (split as :func:`bnnjax.train.run` does).
      eval_batch_size: examples per evaluation batch.
      on_run: called with each :class:`RunResult` as it finishes (e.g. to
        log progress or append JSON lines).
      on_start: called once with the :class:`Plan` (the runs to make and
        the memory estimate) after the checks, before the first run.
      allow_large: run even when the estimated memory exceeds the memory
        available.

    Returns:
      A :class:`CompareResult`.

    Raises:
      ValueError: for an invalid setting, an unknown method or option, or
        duplicate labels.
      MemoryEstimateError: (a ``ValueError``) when the largest run's
        estimated memory exceeds the memory available and not
        ``allow_large``; nothing has been trained.
      TypeError: for a value of the wrong type.
      bnnjax.data.DatasetPathError: for a local dataset path that does not
        hold the dataset (also a ``FileNotFoundError`` when missing).

    Example:
      >>> result = compare(["scaled_sigmoid", "bnn"], hidden=(64,),
      ...                  epochs=2, seeds=(0, 1))          # doctest: +SKIP
      >>> print(result.table())                             # doctest: +SKIP
    """
    seeds = _check_seeds(seeds, "seeds")
    tune_seeds = _check_seeds(tune_seeds, "tune_seeds")
    tune_epochs = _check_protocol(tune, tune_epochs, epochs, target_accuracy)
    resolved = _resolve_methods(methods, grids)
    config, data = _shared_budget(
        dataset,
        data_dir=data_dir,
        model=model,
        hidden=hidden,
        width=width,
        augment=augment,
        binary_activations=binary_activations,
        epochs=epochs,
        batch_size=batch_size,
        real_learning_rate=real_learning_rate,
        optimizer=optimizer,
        schedule=schedule,
        seeds=seeds,
        val_fraction=val_fraction,
        eval_batch_size=eval_batch_size,
    )
    protocol = _Protocol(
        config, data, seeds, tune_seeds, epochs, tune_epochs, real_learning_rate
    )
    plan = _plan(protocol, resolved, tune)
    if not allow_large and not plan.fits:
        raise MemoryEstimateError(plan)
    settings = _settings(
        config,
        data,
        resolved,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        schedule=schedule,
        real_learning_rate=real_learning_rate,
        seeds=seeds,
        tune=tune,
        tune_seeds=tune_seeds,
        tune_epochs=tune_epochs,
        target_accuracy=target_accuracy,
        val_fraction=val_fraction,
        estimated_memory_bytes=plan.memory_bytes,
    )
    if on_start is not None:
        on_start(plan)
    runs: list[RunResult] = []

    def record(run: RunResult) -> RunResult:
        runs.append(run)
        if on_run is not None:
            on_run(run)
        return run

    results = tuple(
        _compare_method(protocol, method, tune, target_accuracy, record)
        for method in resolved
    )
    return CompareResult(methods=results, runs=tuple(runs), settings=settings)


# ---------------------------------------------------------------------------
# Checking the arguments and preparing the shared budget.


def _check_seeds(value: Any, what: str) -> tuple[int, ...]:
    if is_int(value):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"compare: {what}={value!r}; expected a sequence of distinct "
            "non-negative ints."
        )
    if (
        not value
        or not all(is_int(s) and 0 <= s < 2**32 for s in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(
            f"compare: {what}={tuple(value)!r}; expected one or more "
            "distinct ints in [0, 2**32)."
        )
    return tuple(int(s) for s in value)


def _check_protocol(
    tune: Any, tune_epochs: Any, epochs: int, target_accuracy: Any
) -> int:
    """Checks the tuning mode, tuning epochs and target; the tuning epochs."""
    if tune not in typing.get_args(TuneMode):
        raise ValueError(
            f"compare: tune={tune!r}; expected one of "
            f"{list(typing.get_args(TuneMode))}."
        )
    if tune_epochs is None:
        tune_epochs = epochs
    if not is_int(tune_epochs) or tune_epochs < 1:
        raise ValueError(
            f"compare: tune_epochs={tune_epochs!r}; expected a positive int "
            "or None (the final runs' epochs)."
        )
    if not (is_real(target_accuracy) and 0 < target_accuracy <= 1):
        raise ValueError(
            f"compare: target_accuracy={target_accuracy!r}; expected a "
            "number in (0, 1]."
        )
    # is_int also passes NumPy integers, which compare() hands on as is.
    return tune_epochs  # type: ignore[return-value]


def _resolve_methods(
    methods: Any, grids: Mapping[str, TuningGrid] | None
) -> list[_Method]:
    """Checks ``methods`` and ``grids``; one :class:`_Method` per method."""
    if isinstance(methods, (str, bytes)) or not isinstance(methods, Sequence):
        raise TypeError(
            f"compare: methods={methods!r}; expected a sequence of names, "
            "MethodSpecs or Presets (e.g. ['scaled_sigmoid', 'bnn'])."
        )
    if not methods:
        raise ValueError("compare: methods is empty; give at least one.")
    grids = dict(grids or {})
    for label, grid in grids.items():
        if not isinstance(grid, TuningGrid):
            raise TypeError(
                f"compare: grids[{label!r}]={grid!r}; expected a "
                "bnnjax.compare.TuningGrid."
            )
    resolved = [_resolve(m, grids) for m in methods]
    labels = [m.label for m in resolved]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(
            f"compare: methods {duplicates} appear more than once; give "
            "each a distinct label (MethodSpec(label=...))."
        )
    unused = sorted(set(grids) - set(labels))
    if unused:
        raise ValueError(
            f"compare: grids for {unused} match no method; methods: {labels}."
        )
    return resolved


def _shared_budget(
    dataset: Any, *, data_dir: Any, **budget: Any
) -> tuple[train_lib.TrainConfig, _compare_train.Data]:
    """The shared budget as a checked ``TrainConfig``, and the data split.

    ``budget`` holds :class:`~bnnjax.train.TrainConfig`'s fields but
    ``dataset`` and ``data_dir``. The config validates them and builds the
    base optimizer and schedule; its method is unused (each run passes its
    Preset).
    """
    if isinstance(dataset, data_lib.Dataset):
        loaded = dataset
    elif isinstance(dataset, str):
        loaded = None
    else:
        raise TypeError(
            f"compare: dataset={dataset!r}; expected a spec string such as "
            "'mnist-sample' or 'idx:DIR', or a bnnjax.data.Dataset."
        )
    kind, sep, _ = str(dataset).partition(":")
    if data_dir is not None and (
        loaded is not None
        or dataset == "mnist-sample"
        or (sep and kind in ("idx", "cifar"))
    ):
        what = "a loaded Dataset" if loaded else f"dataset {dataset!r}"
        raise ValueError(
            f"compare: data_dir={data_dir!r} (--data-dir) is only used for "
            f"TFDS names; {what} reads no TFDS data: leave it out."
        )
    config = train_lib.TrainConfig(
        dataset=loaded.name if loaded else dataset,
        data_dir=data_dir,
        **budget,
    )
    if loaded is None:
        loaded = data_lib.load_dataset(dataset, data_dir=data_dir)
    val_fraction, batch_size = budget["val_fraction"], budget["batch_size"]
    train_split, val = data_lib.split_validation(
        loaded, fraction=val_fraction, seed=train_lib.VALIDATION_SPLIT_SEED
    )
    train_examples = len(train_split.train_labels)
    if data_lib.num_batches(train_examples, batch_size=batch_size) == 0:
        raise ValueError(
            f"compare: batch_size={batch_size} is larger than the "
            f"{train_examples} training examples left after "
            f"holding out val_fraction={val_fraction}."
        )
    data = _compare_train.Data(
        train_split.train_images,
        train_split.train_labels,
        val,
        loaded.test,
        loaded.num_classes,
    )
    return config, data


def _settings(
    config: train_lib.TrainConfig,
    data: _compare_train.Data,
    resolved: Sequence[_Method],
    *,
    tune: TuneMode,
    target_accuracy: float,
    **values: Any,
) -> dict[str, Any]:
    """The shared budget and protocol, as recorded with the results.

    ``values`` are :func:`compare`'s arguments as given: ``epochs``,
    ``batch_size``, ``optimizer``, ``schedule``, ``real_learning_rate``,
    ``seeds``, ``tune_seeds``, ``tune_epochs`` and ``val_fraction``, and
    the plan's ``estimated_memory_bytes``.
    """
    return {
        "dataset": config.dataset,
        "model": config.model,
        "hidden": list(config.hidden),
        "width": config.width,
        "augment": config.augmentation,
        "binary_activations": config.activations_binary,
        "epochs": values["epochs"],
        "batch_size": values["batch_size"],
        "optimizer": values["optimizer"],
        "schedule": values["schedule"],
        "real_learning_rate": values["real_learning_rate"],
        "seeds": list(values["seeds"]),
        "tune": tune,
        "tune_seeds": list(values["tune_seeds"]),
        "tune_epochs": values["tune_epochs"],
        "target_accuracy": float(target_accuracy),
        "val_fraction": values["val_fraction"],
        "estimated_memory_bytes": values["estimated_memory_bytes"],
        "train_examples": len(data.train_labels),
        "val_examples": len(data.val.labels),
        "test_examples": len(data.test.labels),
        "methods": [m.label for m in resolved],
        "candidates": {
            m.label: [
                {"learning_rate": lr, "options": {**m.fixed, **options}}
                for lr, options in _candidates(m, tune, m.build().learning_rate)
            ]
            for m in resolved
        },
        **environment(),
    }


# ---------------------------------------------------------------------------
# Tuning on the validation split, final runs, statistics.


class _Protocol(typing.NamedTuple):
    """What every run of one comparison shares."""

    config: train_lib.TrainConfig
    data: _compare_train.Data
    seeds: tuple[int, ...]
    tune_seeds: tuple[int, ...]
    epochs: int
    tune_epochs: int
    real_learning_rate: float | None


def _plan(
    protocol: _Protocol, resolved: Sequence[_Method], tune: TuneMode
) -> Plan:
    """The runs of the comparison, in order, and its memory estimate."""
    runs = []
    per_seed = 0
    for method in resolved:
        preset = method.build()
        candidates = _candidates(method, tune, preset.learning_rate)
        if len(candidates) > 1:
            runs += [
                PlannedRun(
                    method.label,
                    "tune",
                    protocol.tune_seeds,
                    protocol.tune_epochs,
                )
            ] * len(candidates)
        runs.append(
            PlannedRun(method.label, "final", protocol.seeds, protocol.epochs)
        )
        activations = _compare_train.run_activations(
            protocol.config, preset, protocol.data
        )
        estimate = _compare_train.estimate_memory(
            protocol.config, preset, protocol.data, activations=activations
        )
        per_seed = max(per_seed, estimate.per_seed)
    seeds = max(len(r.seeds) for r in runs)
    available = available_memory()
    return Plan(
        runs=tuple(runs),
        memory_bytes=seeds * per_seed,
        memory_per_seed=per_seed,
        available_bytes=None if available is None else available[0],
        memory_source="unknown" if available is None else available[1],
    )


def _compare_method(
    protocol: _Protocol,
    method: _Method,
    tune: TuneMode,
    target: float,
    record: Callable[[RunResult], RunResult],
) -> MethodResult:
    """Tunes ``method`` (if it has several candidates), then its final run.

    ``record`` is called with every run as it finishes and returns it.
    """
    candidates = _candidates(method, tune, method.build().learning_rate)
    tuning: list[dict[str, Any]] = []
    if len(candidates) > 1:
        lr, options, tuning = _grid_search(protocol, method, candidates, record)
    else:
        lr, options = candidates[0]
    run = record(_run(protocol, method, options, lr, "final"))
    return _method_result(method, run, tuning, candidates, target)


def _grid_search(
    protocol: _Protocol,
    method: _Method,
    candidates: list[tuple[float, dict[str, Any]]],
    record: Callable[[RunResult], RunResult],
) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
    """Trains every candidate on the tuning seeds; picks on validation.

    The score of a candidate is its last epoch's validation accuracy,
    averaged over the tuning seeds (a non-finite score ranks last); the
    highest wins, the first in grid order on a tie.

    Returns:
      The chosen ``(learning_rate, options)`` and one entry per candidate
      (``learning_rate``, ``options``, ``val_accuracy``), in grid order.
    """
    scores = []
    tuning = []
    for lr, options in candidates:
        run = record(_run(protocol, method, options, lr, "tune"))
        score = run.final_val_accuracy
        scores.append(score if math.isfinite(score) else -math.inf)
        tuning.append(
            {
                "learning_rate": lr,
                "options": {**method.fixed, **options},
                "val_accuracy": score,
            }
        )
    lr, options = candidates[int(np.argmax(scores))]
    return lr, options, tuning


def _run(
    protocol: _Protocol,
    method: _Method,
    options: dict[str, Any],
    lr: float,
    phase: Phase,
) -> RunResult:
    """Trains one candidate with the seeds and epochs of ``phase``."""
    preset = method.build(**options)
    real_lr = (
        preset.real_learning_rate
        if protocol.real_learning_rate is None
        else float(protocol.real_learning_rate)
    )
    final = phase == "final"
    seeds = protocol.seeds if final else protocol.tune_seeds
    epochs = protocol.epochs if final else protocol.tune_epochs
    out = _compare_train.train_candidate(
        protocol.config,
        preset,
        protocol.data,
        seeds=seeds,
        epochs=epochs,
        learning_rate=lr,
        real_learning_rate=real_lr,
        evaluate_test=final,
    )
    return RunResult(
        method=method.label,
        name=method.name,
        phase=phase,
        options={**method.fixed, **options},
        learning_rate=float(lr),
        real_learning_rate=real_lr,
        seeds=seeds,
        epochs=epochs,
        **out,
    )


def _method_result(
    method: _Method,
    run: RunResult,
    tuning: list[dict[str, Any]],
    candidates: list[tuple[float, dict[str, Any]]],
    target: float,
) -> MethodResult:
    n = len(run.seeds)
    # A final run evaluates the test split.
    test_accuracy = cast(list[float], run.test_accuracy)
    test_mean, test_std = _mean_std(test_accuracy)
    val_mean, val_std = _mean_std([v[-1] for v in run.val_accuracy])
    reach = [
        _to_target(curve, run.epoch_seconds, target, n)
        for curve in run.val_accuracy
    ]
    epochs_to = [e for e, _ in reach]
    seconds_to = [s for _, s in reach]
    hit = [i for i, e in enumerate(epochs_to) if e is not None]
    lrs = sorted({lr for lr, _ in candidates})
    return MethodResult(
        method=method.label,
        name=method.name,
        options=run.options,
        learning_rate=run.learning_rate,
        real_learning_rate=run.real_learning_rate,
        seeds=run.seeds,
        test_accuracy_mean=test_mean,
        test_accuracy_std=test_std,
        test_accuracy_per_seed=list(test_accuracy),
        test_correct_per_seed=list(run.test_correct or []),
        test_total=run.test_total,
        val_accuracy_mean=val_mean,
        val_accuracy_std=val_std,
        target_accuracy=float(target),
        epochs_to_target_per_seed=epochs_to,
        seconds_to_target_per_seed=seconds_to,
        reached=len(hit),
        epochs_to_target_mean=float(np.mean([epochs_to[i] for i in hit]))
        if hit
        else None,
        seconds_to_target_mean=float(np.mean([seconds_to[i] for i in hit]))
        if hit
        else None,
        train_seconds=float(sum(run.epoch_seconds)) / n,
        compile_seconds=run.compile_seconds,
        tuning=tuning,
        at_grid_edge=len(lrs) >= 3 and run.learning_rate in (lrs[0], lrs[-1]),
        diverged_seeds=[
            s
            for s, e in zip(run.seeds, run.diverged_epoch, strict=True)
            if e is not None
        ],
    )

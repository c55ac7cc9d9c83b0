"""The training loop: :func:`run`, the whole job of one configuration.

:func:`run` goes through named steps: set-up (``_data_mesh``,
``_open_run_dir``, which owns the run directory for the whole run,
``_load_splits``, ``_set_up``), resume (``_resume``, ``_start_records``),
the epoch loop (``_train_epochs``, with ``_epoch_records`` and
``_checkpoint_epoch``), and the final evaluation and results
(``_finish``). It never prints; progress goes to the callbacks and the
result is a dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from bnnjax import checkpoint as ckpt
from bnnjax import data as data_lib
from bnnjax import distributed, plots
from bnnjax import presets as presets_lib
from bnnjax.training import selection as selection_lib
from bnnjax.training import sources
from bnnjax.training.augment import Augmentation
from bnnjax.training.config import TrainConfig, check_batch_split
from bnnjax.training.diagnostics import (
    latent_kernels,
    make_epoch_diagnostics,
    make_epoch_start_fn,
    seed_row,
)
from bnnjax.training.epoch import StepInfo, global_batches, train_epoch
from bnnjax.training.results import (
    accuracy_fields,
    memory_numbers,
    run_summary,
)
from bnnjax.training.rundir import (
    check_resume_config,
    default_out_dir,
    lock_run_dir,
)
from bnnjax.training.step import (
    Evaluation,
    Teacher,
    TrainState,
    build_training,
    evaluate_counts,
    init_state,
    make_eval_step,
    make_train_step,
)

__all__ = [
    "VALIDATION_SPLIT_SEED",
    "run",
]

VALIDATION_SPLIT_SEED = 0
"""Seed of the validation split: the same held-out examples for every
training seed, so seeds differ only in initialisation and batch order."""


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


def run(
    config: TrainConfig,
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    before_step: Callable[[int, TrainState], TrainState] | None = None,
    make_plots: bool = True,
) -> dict[str, Any]:
    """Trains ``config`` and returns the final metrics; never prints.

    Steps: take the run directory's lock, held until the run ends (one
    process per run directory: ``bnnjax.training.rundir.lock_run_dir``),
    check the directory (an existing non-empty one is refused unless
    ``resume``), load the dataset, hold out the validation split, build
    the model and optimizer from the preset, and train every seed at
    once. After each epoch, per seed: the mean training loss and
    accuracy, validation loss and accuracy (accuracies with their
    ``_correct``/``_total`` counts), flip and update ratios, gradient
    fraction and latent statistics are appended to ``metrics.jsonl``, then a
    checkpoint is saved. At the end the test split is evaluated once, on
    the final parameters (with ``config.select="best_val"``, per seed those
    of the best validation epoch: ``bnnjax.training.selection``), and
    plots are written. Nothing uses the test split before that.

    With ``resume``, the run continues from its last complete checkpoint
    and ends with the same parameters as an uninterrupted run: batch order
    depends only on ``(seed, epoch)``, the schedules, ``progress`` and the
    augmentation's draws only on the seed and the step, and the checkpoint
    holds the parameters, batch statistics, optimizer state and step.

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
      on_start: called once before training with the epoch it starts
        from: 0 for a new run, the last complete checkpoint's epoch when
        resuming (``config.epochs`` when nothing is left to train).
      before_step: fault-injection hook for tests, ``f(step, state) ->
        state`` called before each step (0-based step).
      make_plots: write the PNG plots (needs matplotlib; skipped without).

    Returns:
      A JSON-ready dict: ``test_accuracy``/``val_accuracy`` (means over
      seeds, exact fractions of the counts ``_correct``/``_total`` kept
      beside them) with ``_std`` and ``_per_seed``, the same for losses,
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
      bnnjax.checkpoint.RunDirectoryInUseError: if another process holds
        the run directory (its ``pid`` is named).
      bnnjax.checkpoint.RunDirectoryError: if the run directory cannot be
        created or written (the reason is named).
      bnnjax.checkpoint.DiskFullError: when the file system fills up; it
        names the last complete checkpoint, which is intact (a partial
        one is removed), and ``resume=True`` continues from it once there
        is space.
    """
    wall_start = time.perf_counter()
    mesh = _data_mesh(config)
    with _open_run_dir(config, resume=resume) as out_dir:
        setup, state = _set_up(config, mesh, out_dir, resume=resume)
        with ckpt.Checkpointer(
            os.path.join(setup.out_dir, ckpt.CHECKPOINT_DIR),
            max_to_keep=config.max_to_keep,
        ) as checkpointer:
            state, selection, start_epoch, step = _resume(
                setup, checkpointer, state, resume
            )
            if on_start is not None:
                on_start(start_epoch)
            records = _start_records(setup, start_epoch)
            train_step = make_train_step(
                setup.model,
                setup.tx,
                mesh=setup.mesh,
                augment=setup.augment,
                seeds=setup.seeds,
                loss=config.loss_fn(),
                teacher=setup.teacher,
                dropout=config.uses_dropout,
            )
            eval_step = make_eval_step(
                setup.model, mesh=setup.mesh, loss=config.loss_fn(train=False)
            )
            state, selection, step = _train_epochs(
                setup,
                checkpointer,
                train_step,
                eval_step,
                state,
                selection,
                records,
                start_epoch=start_epoch,
                step=step,
                on_step=on_step,
                on_epoch=on_epoch,
                before_step=before_step,
            )
        return _finish(
            setup,
            eval_step,
            selection_lib.selected_state(state, selection),
            records,
            selection=selection,
            step=step,
            resumed_from_epoch=start_epoch if resume else None,
            make_plots=make_plots,
            wall_start=wall_start,
        )


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the set-up of :func:`run` fixes for the whole run."""

    config: TrainConfig
    mesh: Mesh
    primary: bool
    out_dir: str
    dataset: data_lib.Dataset
    train_split: data_lib.Dataset
    val: data_lib.Examples
    steps_per_epoch: int
    total_steps: int
    preset: presets_lib.Preset
    seeds: list[int]
    model: nn.Module
    tx: optax.GradientTransformation
    lr_fn: optax.ScalarOrSchedule
    augment: Augmentation | None
    teacher: Teacher | None

    @property
    def shape_info(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild the model."""
        return {
            "image_shape": list(self.dataset.image_shape),
            "num_classes": self.dataset.num_classes,
            "steps_per_epoch": self.steps_per_epoch,
        }


def _data_mesh(config: TrainConfig) -> Mesh:
    """The device mesh, checked against the batch size."""
    mesh = distributed.data_mesh(_default_devices(config))
    check_batch_split(config.batch_size, mesh.size)
    return mesh


@contextlib.contextmanager
def _open_run_dir(config: TrainConfig, *, resume: bool) -> Iterator[str]:
    """Owns the checked run directory for the block; yields its path.

    Process 0 holds the directory's lock (``lock_run_dir``) until the
    block ends, and checks the directory once it holds it: a second
    process is told that the directory is in use, not that it is not
    empty. A refused run leaves nothing behind (the lock file is removed,
    and so is a directory the lock created). A full file system met in
    the block becomes a :class:`~bnnjax.checkpoint.DiskFullError` naming
    the last complete checkpoint.
    """
    out_dir = os.path.abspath(config.out_dir or default_out_dir())
    if resume or os.path.isfile(out_dir):
        # Refused before locking: nothing to resume, or not a directory.
        ckpt.prepare_run_dir(out_dir, resume=resume)
    owner = (
        lock_run_dir(out_dir, purpose="training")
        if distributed.is_primary()
        else contextlib.nullcontext()
    )
    with owner:
        ckpt.prepare_run_dir(out_dir, resume=resume)
        if resume:
            check_resume_config(out_dir, config)
        # Every process has checked the directory before process 0 writes.
        distributed.barrier("bnnjax.train.run: run directory checked")
        try:
            yield out_dir
        except ckpt.DiskFullError:
            raise
        except Exception as e:
            if not ckpt.is_disk_full(e):
                raise
            raise ckpt.DiskFullError(
                getattr(e, "filename", None) or out_dir,
                last_epoch=ckpt.last_complete_epoch(out_dir),
                code=getattr(e, "errno", None) or errno.ENOSPC,
            ) from e


def _load_splits(
    config: TrainConfig,
) -> tuple[data_lib.Dataset, data_lib.Dataset, data_lib.Examples, int]:
    """The dataset, its training and validation splits, steps per epoch."""
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
    return dataset, train_split, val, steps_per_epoch


def _set_up(
    config: TrainConfig, mesh: Mesh, out_dir: str, *, resume: bool
) -> tuple[_Run, TrainState]:
    """Data, model, optimizer and the initial state.

    A new run with ``init_from`` starts from that run's parameters here,
    before anything is written, so a source that does not fit leaves no
    checkpoint behind; a resumed one restores its own (see
    :func:`_resume`).
    """
    dataset, train_split, val, steps_per_epoch = _load_splits(config)
    preset = config.preset
    seeds = list(config.seeds)
    sample = data_lib.to_float(train_split.train_images[:1])
    model, tx, lr_fn, total_steps = build_training(
        config, sample, dataset.num_classes, steps_per_epoch
    )
    state = init_state(
        model, tx, seeds, sample, sign_init=preset.sign_init, mesh=mesh
    )
    if config.init_from is not None and not resume:
        state = _initialized(config, mesh, seeds, state)
    setup = _Run(
        config=config,
        mesh=mesh,
        primary=distributed.is_primary(),
        out_dir=out_dir,
        dataset=dataset,
        train_split=train_split,
        val=val,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        preset=preset,
        seeds=seeds,
        model=model,
        tx=tx,
        lr_fn=lr_fn,
        augment=config.make_augmentation(),
        teacher=_teacher(config, mesh, seeds, dataset),
    )
    return setup, state


def _source_sharding(mesh: Mesh | None) -> Any:
    return None if mesh is None else distributed.replicated(mesh)


def _initialized(
    config: TrainConfig, mesh: Mesh | None, seeds: list[int], state: TrainState
) -> TrainState:
    """``state`` started from the ``config.init_from`` run."""
    source = sources.load_source(
        cast(str, config.init_from),
        seeds=seeds,
        what="--init-from",
        sharding=_source_sharding(mesh),
    )
    return sources.initialize_from(state, source)


def _teacher(
    config: TrainConfig,
    mesh: Mesh | None,
    seeds: list[int],
    dataset: data_lib.Dataset,
) -> Teacher | None:
    """The ``config.teacher`` run's network, checked against the data."""
    if config.teacher is None:
        return None
    source = sources.load_source(
        config.teacher,
        seeds=seeds,
        what="--teacher",
        sharding=_source_sharding(mesh),
    )
    ours = (tuple(dataset.image_shape), dataset.num_classes)
    theirs = (source.image_shape, source.num_classes)
    if ours != theirs:
        raise sources.SourceRunError(
            f"--teacher {source.path} was trained on {theirs[0]} inputs "
            f"with {theirs[1]} classes; this run's data has {ours[0]} and "
            f"{ours[1]}. Distil from a run on the same dataset."
        )
    return Teacher(
        model=source.model,
        variables=source.variables,
        weight=config.distill_weight,
        temperature=config.distill_temperature,
    )


def _resume(
    setup: _Run,
    checkpointer: ckpt.Checkpointer,
    state: TrainState,
    resume: bool,
) -> tuple[TrainState, selection_lib.Selection | None, int, int]:
    """``(state, selection, start_epoch, step)``: the last checkpoint's, if
    resuming; the selection is ``None`` before the first epoch and with
    ``select="last"``."""
    start_epoch, step = 0, 0
    selection = None
    if resume and checkpointer.latest_epoch() is not None:
        state, info = checkpointer.restore(state)
        start_epoch, step = int(info["epoch"]), int(info["step"])
        if setup.config.select == "best_val":
            selection = selection_lib.restore_selection(
                checkpointer, state, info
            )
    elif resume and setup.config.init_from is not None:
        # Resuming a run stopped before its first checkpoint: it starts
        # from its source as a new one does (in _set_up).
        state = _initialized(setup.config, setup.mesh, setup.seeds, state)
    if start_epoch > setup.config.epochs:
        raise ValueError(
            f"Cannot resume the run in {setup.out_dir!r} with epochs="
            f"{setup.config.epochs}: its last checkpoint is already at epoch "
            f"{start_epoch}."
        )
    return state, selection, start_epoch, step


def _start_records(setup: _Run, start_epoch: int) -> list[dict[str, Any]]:
    """Writes ``config.json``; the metrics records up to ``start_epoch``.

    Process 0 writes the config and truncates ``metrics.jsonl``; the other
    processes read the same records (process 0 may be rewriting them).
    """
    out_dir = setup.out_dir
    if setup.primary:
        ckpt.write_config(
            out_dir,
            {**setup.config.to_dict(resolved=True), "out_dir": out_dir},
        )
        return ckpt.truncate_metrics(out_dir, last_epoch=start_epoch)
    return [
        r
        for r in ckpt.read_metrics(out_dir)
        if r.get("epoch", 0) <= start_epoch
    ]


def _train_epochs(
    setup: _Run,
    checkpointer: ckpt.Checkpointer,
    train_step: Callable[..., Any],
    eval_step: Callable[..., Any],
    state: TrainState,
    selection: selection_lib.Selection | None,
    records: list[dict[str, Any]],
    *,
    start_epoch: int,
    step: int,
    on_step: Callable[[StepInfo], None] | None,
    on_epoch: Callable[[int, list[dict[str, Any]]], None] | None,
    before_step: Callable[[int, TrainState], TrainState] | None,
) -> tuple[TrainState, selection_lib.Selection | None, int]:
    """The epoch loop: train, validate, record and checkpoint each epoch.

    With ``select="best_val"`` the selection is updated after each
    validation and saved in the epoch's checkpoint. Appends each epoch's
    records to ``records``; returns the final state, the selection and
    the step count.
    """
    config = setup.config
    diagnostics = make_epoch_diagnostics(setup.preset.kernel_binarizer)
    start = make_epoch_start_fn(setup.preset.kernel_binarizer)(state.params)
    last_good = start_epoch if start_epoch else None
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        batches = global_batches(
            setup.mesh,
            setup.train_split.train_images,
            setup.train_split.train_labels,
            batch_size=config.batch_size,
            seeds=setup.seeds,
            epoch=epoch,
        )
        state, step, losses, correct = train_epoch(
            train_step,
            state,
            batches,
            step=step,
            total_steps=setup.total_steps,
            steps_per_epoch=setup.steps_per_epoch,
            epoch=epoch,
            seeds=setup.seeds,
            last_good=last_good,
            checkpoint_dir=checkpointer.directory,
            on_step=on_step,
            before_step=before_step,
            pass_index=setup.config.step_takes_index,
        )
        train_seconds = time.perf_counter() - epoch_start
        progress = min(step / setup.total_steps, 1.0)
        val = evaluate_counts(
            eval_step,
            state,
            setup.val.images,
            setup.val.labels,
            batch_size=config.eval_batch_size,
            progress=progress,
            mesh=setup.mesh,
        )
        if config.select == "best_val":
            selection = selection_lib.update_selection(
                selection, state, val.correct.tolist(), epoch + 1
            )
        diag, start = diagnostics(state.params, start, np.float32(progress))
        epoch_records = _epoch_records(
            setup,
            epoch=epoch,
            step=step,
            train=(np.mean(losses, axis=0), np.sum(correct, axis=0)),
            val=val,
            diag=jax.device_get(diag),
            train_seconds=train_seconds,
        )
        _checkpoint_epoch(
            setup, checkpointer, epoch, step, state, selection, epoch_records
        )
        last_good = epoch + 1
        records.extend(epoch_records)
        if on_epoch is not None:
            on_epoch(epoch + 1, epoch_records)
    return state, selection, step


def _epoch_records(
    setup: _Run,
    *,
    epoch: int,
    step: int,
    train: tuple[np.ndarray, np.ndarray],
    val: Evaluation,
    diag: Mapping[str, Any],
    train_seconds: float,
) -> list[dict[str, Any]]:
    """One epoch's ``metrics.jsonl`` records, one per seed.

    ``train`` holds per-seed arrays ``(mean loss, correct examples)`` of
    the epoch's steps, ``val`` the validation evaluation, ``diag`` the
    diagnostics with a leading seed axis (host arrays).
    """
    config, seeds, lr_fn = setup.config, setup.seeds, setup.lr_fn
    train_loss, train_correct = train
    train_total = setup.steps_per_epoch * config.batch_size
    epoch_records = []
    for i, seed in enumerate(seeds):
        epoch_records.append(
            {
                "epoch": epoch + 1,
                "seed": seed,
                "step": step,
                "learning_rate": float(
                    # optax types a schedule's value as any ArrayLike
                    lr_fn(step) if callable(lr_fn) else lr_fn  # type: ignore[arg-type]
                ),
                "train_loss": float(train_loss[i]),
                **accuracy_fields("train", train_correct[i], train_total),
                "val_loss": float(val.loss[i]),
                **accuracy_fields("val", val.correct[i], val.total),
                **seed_row(diag, i),
                "train_seconds": train_seconds,
                "examples_per_second": len(seeds)
                * setup.steps_per_epoch
                * config.batch_size
                / train_seconds,
            }
        )
    return epoch_records


def _checkpoint_epoch(
    setup: _Run,
    checkpointer: ckpt.Checkpointer,
    epoch: int,
    step: int,
    state: TrainState,
    selection: selection_lib.Selection | None,
    epoch_records: Sequence[Mapping[str, Any]],
) -> None:
    """Appends the epoch's records (process 0), then saves the checkpoint
    (with the selection, if any, in the same write)."""
    if setup.primary:
        ckpt.append_metrics(setup.out_dir, epoch_records)
    info = {"step": step, **setup.shape_info}
    extra = None
    if selection is not None:
        info.update(selection.info())
        extra = {selection_lib.BEST_ITEM: selection.variables}
    checkpointer.save(epoch + 1, state, info, extra=extra)


def _finish(
    setup: _Run,
    eval_step: Callable[..., Any],
    state: TrainState,
    records: list[dict[str, Any]],
    *,
    selection: selection_lib.Selection | None,
    step: int,
    resumed_from_epoch: int | None,
    make_plots: bool,
    wall_start: float,
) -> dict[str, Any]:
    """Evaluates the test split once on ``state`` (the selected
    parameters), writes the plots, returns results."""
    test = evaluate_counts(
        eval_step,
        state,
        setup.dataset.test_images,
        setup.dataset.test_labels,
        batch_size=setup.config.eval_batch_size,
        progress=1.0,
        mesh=setup.mesh,
    )
    host_state = jax.tree.map(np.asarray, state)  # replicated: a local copy
    latents = {
        layer: w[0] for layer, w in latent_kernels(host_state.params).items()
    }
    results = run_summary(
        setup.config,
        records,
        test=test,
        steps=step,
        steps_per_epoch=setup.steps_per_epoch,
        selected_epochs=None if selection is None else selection.epoch,
    )
    plot_paths = (
        plots.plot_run(
            records,
            latents,
            setup.out_dir,
            # The histograms show the first seed's kernels as tested.
            epoch=setup.config.epochs
            if selection is None
            else selection.epoch[0],
            seed=setup.seeds[0],
            test_accuracy=dict(
                zip(
                    setup.seeds,
                    results["test_accuracy_per_seed"],
                    strict=True,
                )
            ),
        )
        if make_plots and setup.primary
        else []
    )
    results.update(
        {
            **memory_numbers(host_state, setup.preset.binary),
            "resumed_from_epoch": resumed_from_epoch,
            "wall_seconds": time.perf_counter() - wall_start,
            "device": str(setup.mesh.devices.flat[0]),
            "devices": setup.mesh.size,
            "processes": jax.process_count(),
            "out_dir": setup.out_dir,
            "plots": plot_paths,
        }
    )
    return results

"""One training epoch: sharded batches, steps and per-step reports.

:func:`global_batches` feeds the devices one epoch of batches in the
order of :func:`bnnjax.data.iterate_batches`; :func:`train_epoch` runs
the steps, reads each step's metrics one step late (so the host does not
wait for the device), reports a :class:`StepInfo` per step, counts the
correctly classified training examples, and stops with
:class:`NonFiniteLossError` at the first non-finite loss.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from bnnjax import data as data_lib
from bnnjax import distributed
from bnnjax.training.step import TrainState

__all__ = [
    "NonFiniteLossError",
    "StepInfo",
    "global_batches",
    "train_epoch",
]


class StepInfo(NamedTuple):
    """What :func:`bnnjax.train.run` reports after each step (seed means).

    Attributes:
      step: steps done so far (1-based, counting resumed ones).
      total_steps: steps of the whole run.
      epoch: the current epoch (1-based).
      loss: training loss of this step.
      accuracy: training accuracy of this step's batch: correctly
        classified examples over batch examples, all seeds pooled.
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


def _non_finite_error(
    bad: list[int],
    *,
    done: int,
    batch: int,
    epoch: int,
    steps_per_epoch: int,
    last_good: int | None,
    checkpoint_dir: str,
) -> NonFiniteLossError:
    """The error for a non-finite loss of seeds ``bad`` at step ``done``."""
    where = (
        f"epoch {last_good} in {checkpoint_dir!r}"
        if last_good
        else "none (no epoch had finished)"
    )
    return NonFiniteLossError(
        f"Training loss is not finite at step {done} (epoch "
        f"{epoch + 1}, batch {batch} of {steps_per_epoch}) for "
        f"seed(s) {bad}; training stopped. Last good checkpoint: "
        f"{where}. Lower the learning rate or check the data.",
        step=done,
        epoch=epoch + 1,
        seeds=bad,
        last_checkpoint=last_good,
    )


def train_epoch(
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
    pass_index: bool = False,
) -> tuple[TrainState, int, list[np.ndarray], list[np.ndarray]]:
    """Runs one epoch; reads each step's metrics one step late.

    ``train_step`` is called as ``train_step(state, images, labels,
    progress)``, or with ``pass_index`` (a step built with an
    augmentation) with the step's 0-based index in the run as a fifth
    argument, an int32 scalar.

    Returns:
      ``(state, step, losses, correct)``: the state and step count after
      the epoch, and each step's per-seed loss (float) and number of
      correctly classified examples of its batch (int; exact, so an
      epoch's training accuracy is the exact fraction of its examples
      classified correctly at the step that trained on them).

    Raises:
      NonFiniteLossError: at the first step whose loss is not finite for
        some seed.
    """
    losses: list[np.ndarray] = []
    counts: list[np.ndarray] = []

    def report(
        done: int, batch: int, size: int, metrics: dict[str, jax.Array]
    ) -> None:
        loss = np.asarray(metrics["loss"])
        correct = np.asarray(metrics["correct"]).astype(np.int64)
        bad = [
            s for s, v in zip(seeds, loss, strict=True) if not np.isfinite(v)
        ]
        if bad:
            raise _non_finite_error(
                bad,
                done=done,
                batch=batch,
                epoch=epoch,
                steps_per_epoch=steps_per_epoch,
                last_good=last_good,
                checkpoint_dir=checkpoint_dir,
            )
        losses.append(loss)
        counts.append(correct)
        if on_step is not None:
            on_step(
                StepInfo(
                    step=done,
                    total_steps=total_steps,
                    epoch=epoch + 1,
                    loss=float(loss.mean()),
                    accuracy=int(correct.sum()) / (size * len(correct)),
                )
            )

    pending = None
    for batch, (images, labels) in enumerate(batches, 1):
        if before_step is not None:
            state = before_step(step, state)
        progress = np.float32(step / total_steps)
        if pass_index:
            state, metrics = train_step(
                state, images, labels, progress, np.int32(step)
            )
        else:
            state, metrics = train_step(state, images, labels, progress)
        step += 1
        if pending is not None:
            report(*pending)
        pending = (step, batch, labels.shape[-1], metrics)
    if pending is not None:
        report(*pending)
    return state, step, losses, counts


def global_batches(
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
        queue: collections.deque[tuple[jax.Array, jax.Array]] = (
            collections.deque()
        )
        for index, _ in order:
            queue.append(put(index))
            if len(queue) > prefetch:
                yield queue.popleft()
        while queue:
            yield queue.popleft()

    return batches()

"""Model selection on the validation split: the best epoch's parameters.

With ``TrainConfig(select="best_val")`` a run keeps, for every seed, the
parameters and batch statistics of the epoch with the highest validation
accuracy so far (the earliest epoch on a tie, as
``best_val_epoch_per_seed`` reports it), and ends with them: the test
split is evaluated on them, and ``bnnjax export``, ``predict``,
``--init-from`` and ``--teacher`` load them. Seeds are selected
independently, inside the stacked state (a select along the seed axis
on the device), so a seed selects the same epoch alone or with others.

The selection is saved in every checkpoint beside the training state
(the ``"best"`` item of :meth:`bnnjax.checkpoint.Checkpointer.save`, its
validation counts and epochs in the checkpoint's record), in the same
write: a resumed run continues with the selection of the epoch it
resumes from, and ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bnnjax import checkpoint as ckpt
from bnnjax.training.step import TrainState

__all__ = [
    "BEST_ITEM",
    "Selection",
    "restore_selection",
    "selected_state",
    "update_selection",
]

BEST_ITEM = "best"
"""The checkpoint item holding the selected parameters and batch stats."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Per seed, the best validation epoch so far and its variables.

    Attributes:
      variables: ``{"params": ..., "batch_stats": ...}`` with a leading
        seed axis, as in :class:`~bnnjax.train.TrainState`.
      correct: validation examples classified correctly at that epoch,
        one per seed.
      epoch: the epoch (1-based), one per seed.
    """

    variables: Any
    correct: tuple[int, ...]
    epoch: tuple[int, ...]

    def info(self) -> dict[str, list[int]]:
        """The checkpoint record's fields that restore the counts."""
        return {
            "best_val_correct": list(self.correct),
            "best_val_epoch": list(self.epoch),
        }


def _variables(state: TrainState) -> dict[str, Any]:
    return {"params": state.params, "batch_stats": state.batch_stats}


@functools.partial(jax.jit, static_argnums=0)
def _pick(take: tuple[bool, ...], new: Any, old: Any) -> Any:
    """``new`` for the seeds where ``take``, else ``old`` (fresh buffers)."""
    mask = jnp.asarray(take)

    def one(n: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(one, new, old)


def update_selection(
    selection: Selection | None,
    state: TrainState,
    val_correct: Sequence[int],
    epoch: int,
) -> Selection:
    """The selection after an epoch with ``val_correct`` right per seed.

    A seed takes this epoch's variables when its validation count beats
    its best so far (strictly, so the earliest best epoch is kept).

    Args:
      selection: the selection so far; ``None`` before the first epoch.
      state: the training state after the epoch.
      val_correct: validation examples right, one per seed.
      epoch: the epoch just trained, 1-based.

    Returns:
      The new selection. Its arrays never alias ``state``'s, which the
      next training step may donate.
    """
    correct = tuple(int(c) for c in val_correct)
    current = _variables(state)
    if selection is None:
        take = (True,) * len(correct)
        return Selection(
            variables=_pick(take, current, current),
            correct=correct,
            epoch=(int(epoch),) * len(correct),
        )
    if len(correct) != len(selection.correct):
        raise ValueError(
            f"update_selection: {len(correct)} validation counts for a "
            f"selection of {len(selection.correct)} seeds."
        )
    take = tuple(c > b for c, b in zip(correct, selection.correct, strict=True))
    if not any(take):
        return selection
    return Selection(
        variables=_pick(take, current, selection.variables),
        correct=tuple(
            c if t else b
            for t, c, b in zip(take, correct, selection.correct, strict=True)
        ),
        epoch=tuple(
            int(epoch) if t else e
            for t, e in zip(take, selection.epoch, strict=True)
        ),
    )


def selected_state(
    state: TrainState, selection: Selection | None
) -> TrainState:
    """``state`` with the selected parameters and batch statistics.

    The optimizer state stays the last epoch's. ``None``: ``state``.
    """
    if selection is None:
        return state
    return state._replace(
        params=selection.variables["params"],
        batch_stats=selection.variables["batch_stats"],
    )


def restore_selection(
    checkpointer: ckpt.Checkpointer,
    state: TrainState,
    info: Mapping[str, Any],
    *,
    sharding: jax.sharding.Sharding | None = None,
) -> Selection:
    """The selection saved in the checkpoint whose record is ``info``.

    Args:
      checkpointer: the run's checkpoints.
      state: a state of the run's structure (its leaves' shardings are
        the targets unless ``sharding`` is given).
      info: the record of the checkpoint, as :meth:`Checkpointer.restore`
        returns it.
      sharding: target sharding of every leaf.

    Raises:
      bnnjax.checkpoint.CheckpointError: if the checkpoint holds no
        selection (a run started with ``select="last"``) or another
        structure.
    """
    epoch = int(info["epoch"])
    if "best_val_correct" not in info or "best_val_epoch" not in info:
        where = os.path.join(checkpointer.directory, str(epoch))
        raise ckpt.CheckpointError(
            f"Checkpoint {where!r} holds no best-validation selection; it "
            "was written by a run with select='last'."
        )
    variables, _ = checkpointer.restore(
        _variables(state), epoch, sharding=sharding, item=BEST_ITEM
    )
    return Selection(
        variables=variables,
        correct=tuple(int(c) for c in info["best_val_correct"]),
        epoch=tuple(int(e) for e in info["best_val_epoch"]),
    )

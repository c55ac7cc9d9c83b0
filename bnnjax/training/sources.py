"""Other runs a run reads: the start of a stage, and a teacher.

``TrainConfig.init_from`` starts a run from another run's parameters (the
second stage of Real-to-Binary or ReActNet training: binary weights with
real activations first, then fully binary from there);
``TrainConfig.teacher`` names a run whose network the student is distilled
from. Both read the other run's last complete checkpoint with
:func:`load_source`, which holds the run directory's lock while it reads
(so a run still training there is refused) and gives each of this run's
seeds the source's parameters of the same seed, or the source's only
seed's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from bnnjax import checkpoint as ckpt
from bnnjax.training.config import TrainConfig
from bnnjax.training.rundir import (
    load_checkpoint,
    lock_run_dir,
    run_dir_problem,
)
from bnnjax.training.step import TrainState

__all__ = [
    "SourceRun",
    "SourceRunError",
    "check_run_dir",
    "initialize_from",
    "load_source",
    "seed_indices",
]


class SourceRunError(ValueError):
    """A run named by ``init_from`` or ``teacher`` does not fit this run."""


class SourceRun(NamedTuple):
    """Another run's network, one copy per seed of this run.

    Attributes:
      path: the run directory (absolute).
      config: its :class:`~bnnjax.train.TrainConfig`.
      model: its linen model.
      variables: ``{"params", "batch_stats"}`` with a leading axis over
        this run's seeds (see :func:`seed_indices`).
      epoch: the checkpoint's epoch.
      image_shape: the input shape it was trained on, ``(H, W, C)``.
      num_classes: its number of outputs.
    """

    path: str
    config: TrainConfig
    model: nn.Module
    variables: dict[str, Any]
    epoch: int
    image_shape: tuple[int, ...]
    num_classes: int


def check_run_dir(path: str, what: str) -> str:
    """``path`` as an absolute path to a run directory.

    Raises:
      SourceRunError: if it is not a run directory
        (:func:`~bnnjax.training.rundir.run_dir_problem` says why).
    """
    path = os.path.abspath(path)
    problem = run_dir_problem(path)
    if problem is not None:
        raise SourceRunError(
            f"{what} {path} {problem}; give the --out directory of a "
            "finished `bnnjax train` run."
        )
    return path


def seed_indices(
    source_seeds: Sequence[int], seeds: Sequence[int], what: str, path: str
) -> list[int]:
    """Which of the source's seeds each of ``seeds`` takes.

    The same seed where the source has it; the source's only seed for
    every seed when it has one.

    Raises:
      SourceRunError: when a seed is missing from a run of several seeds.

    Example:
      >>> seed_indices([0, 1, 2], [2, 0], "--init-from", "runs/a")
      [2, 0]
      >>> seed_indices([7], [0, 1], "--teacher", "runs/t")
      [0, 0]
    """
    source = list(source_seeds)
    if all(s in source for s in seeds):
        return [source.index(s) for s in seeds]
    if len(source) == 1:
        return [0] * len(seeds)
    missing = [s for s in seeds if s not in source]
    raise SourceRunError(
        f"{what} {path} was trained with seeds {source}; this run's seeds "
        f"{list(missing)} are not among them. Train the same seeds, or "
        "start from a run of one seed (which every seed then takes)."
    )


def load_source(
    path: str,
    *,
    seeds: Sequence[int],
    what: str,
    sharding: jax.sharding.Sharding | None = None,
) -> SourceRun:
    """Reads another run's network from its last complete checkpoint.

    Args:
      path: the run directory.
      seeds: this run's seeds; the result has one copy per seed.
      what: how the run is named in errors, e.g. ``"--teacher"``.
      sharding: where the arrays go (as
        :func:`bnnjax.train.load_checkpoint`'s).

    Returns:
      The :class:`SourceRun`.

    Raises:
      SourceRunError: for a path that is not a run, seeds it lacks, or a
        run another process is training.
      bnnjax.checkpoint.CheckpointError: for a missing or corrupt
        checkpoint.
    """
    path = check_run_dir(path, what)
    try:
        with lock_run_dir(path, purpose=f"read as {what}", create=False):
            config = TrainConfig.from_dict(ckpt.read_config(path))
            model, state, info = load_checkpoint(path, sharding=sharding)
    except ckpt.RunDirectoryInUseError as e:
        raise SourceRunError(
            f"{what} {path} cannot be read now: {e} Wait for that run to "
            "finish."
        ) from None
    index = np.asarray(seed_indices(config.seeds, seeds, what, path))
    variables = {
        "params": jax.tree.map(lambda a: a[index], state.params),
        "batch_stats": jax.tree.map(lambda a: a[index], state.batch_stats),
    }
    return SourceRun(
        path=path,
        config=config,
        model=model,
        variables=variables,
        epoch=int(info["epoch"]),
        image_shape=tuple(info["image_shape"]),
        num_classes=int(info["num_classes"]),
    )


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {
        jax.tree_util.keystr(path): (tuple(leaf.shape), leaf.dtype)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def initialize_from(state: TrainState, source: SourceRun) -> TrainState:
    """``state`` with the source's parameters and batch statistics.

    The optimizer state stays fresh (a new stage restarts its schedule).

    Raises:
      SourceRunError: when the parameter trees differ (another model,
        width or number of classes); the message names the first
        difference.
    """
    for name in ("params", "batch_stats"):
        ours = _shapes(getattr(state, name))
        theirs = _shapes(source.variables[name])
        if ours == theirs:
            continue
        only_ours = sorted(set(ours) - set(theirs))
        only_theirs = sorted(set(theirs) - set(ours))
        differ = [k for k in ours if k in theirs and ours[k] != theirs[k]]
        if only_ours or only_theirs:
            detail = (
                f"{name} {only_ours[:3] or only_theirs[:3]} "
                f"{'missing from' if only_ours else 'only in'} the source"
            )
        else:
            key = differ[0]
            detail = (
                f"{name}{key} has shape {ours[key][0][1:]} here and "
                f"{theirs[key][0][1:]} there"
            )
        raise SourceRunError(
            f"--init-from {source.path} ({source.config.model}) does not "
            f"fit this run's network: {detail}. Start from a run of the "
            "same model, widths and dataset."
        )
    return state._replace(
        params=source.variables["params"],
        batch_stats=source.variables["batch_stats"],
    )

"""The run directory: its default name, resume checks and loading from it.

A run directory holds ``config.json``, ``metrics.jsonl``, the plots and
the checkpoints that :func:`bnnjax.train.run` writes.
:func:`load_checkpoint` rebuilds a run's model and state from it, and
:func:`check_resume_config` refuses to resume it with other settings.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnjax import checkpoint as ckpt
from bnnjax.training.config import TrainConfig
from bnnjax.training.step import TrainState, build_training, init_state

__all__ = [
    "RESUMABLE_CHANGES",
    "check_resume_config",
    "default_out_dir",
    "load_checkpoint",
]

RESUMABLE_CHANGES = ("epochs", "out_dir", "devices", "data_dir")
"""The :class:`~bnnjax.train.TrainConfig` fields a resumed run may change."""


def default_out_dir(now: datetime.datetime | None = None) -> str:
    """``runs/<YYYYmmdd-HHMMSS>`` (relative to the working directory)."""
    now = now or datetime.datetime.now()
    return os.path.join("runs", now.strftime("%Y%m%d-%H%M%S"))


def check_resume_config(out_dir: str, config: TrainConfig) -> None:
    """Checks that ``config`` may resume the run in ``out_dir``.

    Resolved values are compared (:meth:`TrainConfig.resolved`): a field
    left ``None`` matches the value its default gave the run, so
    ``learning_rate=None`` and the preset's learning rate given explicitly
    resume the same run. A ``None`` in ``config.json`` (older versions)
    stands for the default.

    Raises:
      ValueError: if a field other than :data:`RESUMABLE_CHANGES` differs
        from the run's ``config.json``; the message lists them with the
        values the run used.
    """
    saved_config = TrainConfig.from_dict(ckpt.read_config(out_dir))
    saved_values = saved_config.resolved().to_dict()
    current = config.resolved().to_dict()
    different = [
        f"{name}={saved_values[name]!r} (now {current[name]!r})"
        for name in current
        if name not in RESUMABLE_CHANGES and saved_values[name] != current[name]
    ]
    if different:
        raise ValueError(
            f"Cannot resume the run in {out_dir!r}: it was started with "
            + "; ".join(different)
            + ". Resume with the same settings (only epochs may change), or "
            "start a new run in another directory."
        )


def load_checkpoint(
    out_dir: str | os.PathLike[str],
    *,
    epoch: int | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[nn.Module, TrainState, dict[str, Any]]:
    """Loads a run's model and training state from its directory.

    A checkpoint written on any number of devices or hosts loads on any
    other: the arrays are read straight into ``sharding``.

    Args:
      out_dir: a run directory written by :func:`bnnjax.train.run`.
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
        model, tx, _, _ = build_training(
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

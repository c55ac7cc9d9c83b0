"""Learning-rate schedules and base optimizers of the training harness.

:class:`~bnnjax.train.TrainConfig` names them (``schedule``,
``warmup_epochs``, ``final_lr_fraction``, ``optimizer``,
``weight_decay``); these functions build them from optax's parts. The
binary group's update rule comes from the method's preset
(:mod:`bnnjax.presets`), which wraps the base optimizer built here.
"""

from __future__ import annotations

from typing import Literal

import optax

__all__ = [
    "OPTIMIZER_NAMES",
    "OptimizerName",
    "SCHEDULE_NAMES",
    "ScheduleName",
    "FINAL_FRACTION_ACCEPTS",
    "final_fraction_problem",
    "make_base_optimizer",
    "make_schedule",
]

ScheduleName = Literal["cosine", "constant", "linear", "exponential"]
SCHEDULE_NAMES: tuple[ScheduleName, ...] = (
    "cosine",
    "constant",
    "linear",
    "exponential",
)
OptimizerName = Literal["adam", "adamw", "sgd"]
OPTIMIZER_NAMES: tuple[OptimizerName, ...] = ("adam", "adamw", "sgd")


FINAL_FRACTION_ACCEPTS: dict[ScheduleName, str] = {
    "cosine": "a number in [0, 1]",
    "linear": "a number in [0, 1]",
    "exponential": "a number in (0, 1]",
    "constant": "1 (a constant rate does not decay)",
}
"""What each schedule accepts as its final fraction, in words."""


def final_fraction_problem(name: ScheduleName, fraction: float) -> str | None:
    """What ``name`` accepts as its final fraction, if ``fraction`` is not.

    Returns:
      ``None`` when ``fraction`` fits the schedule (in ``[0, 1]`` for
      cosine and linear, ``(0, 1]`` for exponential, ``1`` for constant),
      else the accepted values, e.g. ``"a number in (0, 1]"``.
    """
    if (
        not 0 <= fraction <= 1
        or (name == "exponential" and fraction == 0)
        or (name == "constant" and fraction != 1)
    ):
        return FINAL_FRACTION_ACCEPTS[name]
    return None


def make_schedule(
    name: ScheduleName,
    value: float,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    final_fraction: float = 0.0,
) -> optax.ScalarOrSchedule:
    """The learning rate ``value`` under a named schedule.

    A linear warm-up from ``0`` to ``value`` over ``warmup_steps`` steps
    (``optax.linear_schedule``) comes first when ``warmup_steps > 0``; the
    named schedule runs over the remaining ``n = total_steps -
    warmup_steps`` steps, from ``value`` down to ``value *
    final_fraction``:

    * ``"cosine"``: ``optax.cosine_decay_schedule(value, n,
      alpha=final_fraction)``;
    * ``"linear"``: ``optax.linear_schedule(value, value *
      final_fraction, n)``;
    * ``"exponential"``: BinaryNet's decay, a constant factor per epoch,
      ``value * final_fraction ** (e / E)`` in epoch ``e`` of ``E``
      (``optax.exponential_decay`` with ``staircase=True``);
    * ``"constant"``: ``value`` (``final_fraction`` must be ``1``).

    Args:
      name: the schedule.
      value: the peak learning rate.
      total_steps: steps of the whole run, warm-up included.
      steps_per_epoch: steps of one epoch (the exponential decay's stair).
      warmup_steps: steps of linear warm-up, ``< total_steps``.
      final_fraction: the last learning rate as a fraction of ``value``:
        in ``[0, 1]`` for cosine and linear, ``(0, 1]`` for exponential.

    Returns:
      A number (constant without warm-up) or an optax schedule.

    Raises:
      ValueError: for an unknown name or out-of-range arguments.

    Example:
      >>> sched = make_schedule(
      ...     "exponential", 1e-3, total_steps=40, steps_per_epoch=10,
      ...     final_fraction=0.01)
      >>> [round(float(sched(s)), 7) for s in (0, 9, 10, 39)]
      [0.001, 0.001, 0.0003162, 3.16e-05]
    """
    if name not in SCHEDULE_NAMES:
        raise ValueError(
            f"Unknown schedule {name!r}; expected one of "
            f"{list(SCHEDULE_NAMES)}."
        )
    if not 0 <= warmup_steps < max(total_steps, 1):
        raise ValueError(
            f"warmup_steps={warmup_steps!r}; expected 0 <= warmup_steps < "
            f"total_steps={total_steps}."
        )
    allowed = final_fraction_problem(name, final_fraction)
    if allowed is not None:
        raise ValueError(
            f"final_fraction={final_fraction!r} with the {name!r} "
            f"schedule; expected {allowed}."
        )
    steps = max(total_steps - warmup_steps, 1)
    main: optax.ScalarOrSchedule
    if name == "cosine":
        main = optax.cosine_decay_schedule(value, steps, alpha=final_fraction)
    elif name == "linear":
        main = optax.linear_schedule(value, value * final_fraction, steps)
    elif name == "exponential":
        stair = max(steps_per_epoch, 1)
        epochs = max(-(-steps // stair), 1)
        main = optax.exponential_decay(
            value,
            transition_steps=stair,
            decay_rate=final_fraction ** (1.0 / epochs),
            staircase=True,
        )
    else:
        main = value
    if warmup_steps == 0:
        return main
    if not callable(main):
        main = optax.constant_schedule(main)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, value, warmup_steps), main],
        [warmup_steps],
    )


def make_base_optimizer(
    name: OptimizerName,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """The base optimizer named ``name``, with optional weight decay.

    * ``"adam"``: ``optax.adam``; with ``weight_decay`` the L2 term
      ``weight_decay * w`` is added to the gradient first
      (``optax.add_decayed_weights``), as PyTorch's ``weight_decay``;
    * ``"adamw"``: ``optax.adamw(learning_rate, weight_decay=...)``,
      decoupled decay (Loshchilov and Hutter 2019);
    * ``"sgd"``: ``optax.sgd`` with momentum 0.9, the L2 term added to the
      gradient first (PyTorch's SGD with ``weight_decay``).

    Args:
      name: the optimizer.
      learning_rate: a number or an optax schedule.
      weight_decay: a number ``>= 0``.

    Returns:
      The optax transformation.

    Raises:
      ValueError: for an unknown name or a negative decay.
    """
    if name not in OPTIMIZER_NAMES:
        raise ValueError(
            f"Unknown optimizer {name!r}; expected one of "
            f"{list(OPTIMIZER_NAMES)}."
        )
    if not weight_decay >= 0:
        raise ValueError(
            f"weight_decay={weight_decay!r}; expected a number >= 0."
        )
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    base = (
        optax.adam(learning_rate)
        if name == "adam"
        else optax.sgd(learning_rate, momentum=0.9)
    )
    if weight_decay == 0:
        return base
    return optax.chain(optax.add_decayed_weights(weight_decay), base)

"""Tuning grids: the search space the comparison harness declares per method.

:func:`bnnjax.compare.compare` tunes each method on the validation split
over a :class:`TuningGrid`: a few learning rates of the binary group (Bop:
its ``gamma``) times at most one option of the method's factory with two
values. :func:`tuning_grid` returns the declared grid of a registered
method (:data:`bnnjax.presets.METHOD_NAMES`); the learning rates come from
the method's family:

* :data:`SCALE_ADAPTIVE_LEARNING_RATES` for methods trained with
  :func:`bnnjax.scale_adaptive` (steps in units of the weights' spread);
* :data:`BOP_GAMMAS` for Bop;
* :data:`ADAM_LEARNING_RATES` for the others (Adam on latent weights).

The public names are re-exported by :mod:`bnnjax.compare`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
from collections.abc import Mapping
from typing import Any

from bnnjax._validate import is_real
from bnnjax.presets import _scale_adaptive, get_preset

__all__ = [
    "ADAM_LEARNING_RATES",
    "BOP_GAMMAS",
    "SCALE_ADAPTIVE_LEARNING_RATES",
    "TuningGrid",
    "tuning_grid",
]

ADAM_LEARNING_RATES: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)
"""Learning-rate grid of methods that train latent weights with Adam."""

SCALE_ADAPTIVE_LEARNING_RATES: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)
"""Learning-rate grid under :func:`bnnjax.scale_adaptive` (steps in units
of the spread: ``3e-2`` moves a ``lecun_normal`` first-layer kernel about
as far per step as Adam's ``1e-3``)."""

BOP_GAMMAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
"""Grid of Bop's adaptivity rate ``gamma`` (its "learning rate")."""


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TuningGrid:
    """A small declared search space for one method.

    Every combination of one learning rate (of the binary group; Bop: its
    ``gamma``) and one value per option is a candidate; the comparison
    harness trains each and keeps the best on the validation split.

    Attributes:
      learning_rates: candidate binary-group learning rates (> 0).
      options: option name -> candidate values (keyword options of the
        method's factory, see :func:`bnnjax.presets.method_options`). Stored
        read-only.

    Example:
      >>> grid = TuningGrid(learning_rates=(1e-3, 1e-2), options={"k": (2.0,)})
      >>> grid.candidates()
      [(0.001, {'k': 2.0}), (0.01, {'k': 2.0})]
    """

    learning_rates: tuple[float, ...]
    options: Mapping[str, tuple[Any, ...]] = dataclasses.field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        lrs = self.learning_rates
        if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__len__"):
            raise TypeError(
                f"TuningGrid.learning_rates={lrs!r}; expected a sequence of "
                "positive numbers."
            )
        if not lrs or not all(
            is_real(v) and math.isfinite(v) and v > 0 for v in lrs
        ):
            raise ValueError(
                f"TuningGrid.learning_rates={tuple(lrs)!r}; expected one or "
                "more finite numbers > 0."
            )
        if len(set(lrs)) != len(lrs):
            raise ValueError(
                f"TuningGrid.learning_rates={tuple(lrs)!r} has duplicates."
            )
        object.__setattr__(self, "learning_rates", tuple(lrs))
        if not isinstance(self.options, Mapping):
            raise TypeError(
                f"TuningGrid.options={self.options!r}; expected a mapping "
                "of option name -> candidate values."
            )
        options = {}
        for name, values in self.options.items():
            if isinstance(values, (str, bytes)) or not hasattr(
                values, "__len__"
            ):
                raise TypeError(
                    f"TuningGrid.options[{name!r}]={values!r}; expected a "
                    "sequence of candidate values."
                )
            if not values:
                raise ValueError(
                    f"TuningGrid.options[{name!r}] is empty; give at least "
                    "one value."
                )
            options[name] = tuple(values)
        object.__setattr__(self, "options", types.MappingProxyType(options))

    def candidates(self) -> list[tuple[float, dict[str, Any]]]:
        """Every ``(learning_rate, options)`` pair, options outermost."""
        names = list(self.options)
        combos = itertools.product(*(self.options[n] for n in names))
        return [
            (lr, dict(zip(names, combo, strict=True)))
            for combo in combos
            for lr in self.learning_rates
        ]

    def __repr__(self) -> str:
        return (
            f"TuningGrid(learning_rates={self.learning_rates!r}, "
            f"options={dict(self.options)!r})"
        )


# Each method's own option grid: at most one option with two values, the
# default first (the lr grid is the method's family grid).
_OPTION_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "scaled_sigmoid": {"k": (2.0, 4.0)},
    "scaled_sigmoid_annealed": {"k_end": (8.0, 32.0)},
    "sigmoid": {"beta": (5.0, 25.0)},
    "bnn_plus": {"beta": (5.0, 10.0)},
    "bop": {"threshold": (1e-8, 1e-6)},
}


def tuning_grid(name: str, **fixed: Any) -> TuningGrid:
    """The declared search space of a method, with some options fixed.

    Learning rates: :data:`SCALE_ADAPTIVE_LEARNING_RATES` for the methods
    trained with :func:`bnnjax.scale_adaptive` (``scaled_sigmoid``,
    ``scaled_sigmoid_annealed``, ``sigmoid``), :data:`BOP_GAMMAS` for
    ``bop``, else :data:`ADAM_LEARNING_RATES`. Options:
    ``scaled_sigmoid``: ``k`` in ``(2, 4)``; ``scaled_sigmoid_annealed``:
    ``k_end`` in ``(8, 32)``; ``sigmoid``: ``beta`` in ``(5, 25)``;
    ``bnn_plus``: ``beta`` in ``(5, 10)``; ``bop``: ``threshold`` in
    ``(1e-8, 1e-6)``; none for the others. Options given in ``fixed`` are
    not searched (``scaled_sigmoid`` with ``scale_adaptive=False``
    searches the Adam learning rates).

    Args:
      name: one of :data:`bnnjax.presets.METHOD_NAMES`.
      **fixed: options held at a value (an ablation), see
        :func:`bnnjax.presets.method_options`.

    Returns:
      The :class:`TuningGrid`.

    Raises:
      ValueError: for an unknown name or option.

    Example:
      >>> tuning_grid("scaled_sigmoid", k=4.0).options
      mappingproxy({})
      >>> tuning_grid("bnn").learning_rates == ADAM_LEARNING_RATES
      True
    """
    preset = get_preset(name, **fixed)
    if preset.binary_transform is _scale_adaptive:
        lrs = SCALE_ADAPTIVE_LEARNING_RATES
    elif name == "bop":
        lrs = BOP_GAMMAS
    else:
        lrs = ADAM_LEARNING_RATES
    options = {
        option: values
        for option, values in _OPTION_GRIDS.get(name, {}).items()
        if option not in fixed
    }
    return TuningGrid(learning_rates=lrs, options=options)

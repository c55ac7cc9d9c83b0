"""Type predicates shared by argument checks across bnnjax (no imports of
flax or optax; bools are never numbers here)."""

from typing import TypeGuard

import numpy as np


def is_int(value: object) -> TypeGuard[int | np.integer]:
    """True for Python/NumPy integers, False for bools."""
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def is_real(
    value: object,
) -> TypeGuard[int | float | np.integer | np.floating]:
    """True for Python/NumPy integers and floats, False for bools."""
    return isinstance(
        value, (int, float, np.integer, np.floating)
    ) and not isinstance(value, (bool, np.bool_))

"""argparse value types shared by the command-line modules, and their printer.

Each type parses one flag value and raises ``argparse.ArgumentTypeError``
naming what is accepted, so argparse exits with status 2 and the message.
:func:`format_value` prints an option value the way ``--method
NAME:OPTION=VALUE`` reads it back (``k=2``, ``scale_adaptive=true``); every
help text and label that shows a method option uses it. :func:`format_bytes`
prints memory sizes.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

__all__ = [
    "format_bytes",
    "format_options",
    "format_value",
    "fraction",
    "int_list",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "seed_list",
    "seeds",
    "widths",
]

DATA_DIR_HELP = (
    "TFDS data directory for a TFDS --dataset (default: $TFDS_DATA_DIR or "
    "~/tensorflow_datasets)"
)
"""The help of ``--data-dir``, the same for every command that reads data."""

MAX_SEED = 2**32
"""Seeds lie in ``[0, 2**32)``."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        )
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number, got {text!r}"
        ) from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(
            f"expected a finite positive number, got {text!r}"
        )
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(
            f"expected a finite number >= 0, got {text!r}"
        )
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 1), got {text!r}"
        ) from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 1), got {text!r}"
        )
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, got {text!r}"
        )
    return value


def int_list(text: str, *, minimum: int, what: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers ({what}), got {text!r}"
        ) from None
    if not values or any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= {minimum} ({what}), got "
            f"{text!r}"
        )
    return values


def seeds(text: str) -> list[int]:
    return int_list(text, minimum=0, what="seeds")


def seed_list(text: str) -> tuple[int, ...]:
    """Distinct seeds in ``[0, 2**32)``, comma-separated: ``"3,4,5"``."""
    parts = [p.strip() for p in text.split(",")]
    expected = (
        f"expected distinct comma-separated seeds in [0, 2**32), got {text!r}"
    )
    values: list[int] = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            what = (
                "an empty entry" if not part else f"{part!r} is not an integer"
            )
            raise argparse.ArgumentTypeError(f"{expected}: {what}") from None
        if not 0 <= value < MAX_SEED:
            raise argparse.ArgumentTypeError(
                f"{expected}: {value} is out of range"
            )
        if value in values:
            raise argparse.ArgumentTypeError(
                f"{expected}: {value} appears twice"
            )
        values.append(value)
    return tuple(values)


def widths(text: str) -> tuple[int, ...]:
    return tuple(int_list(text, minimum=1, what="layer widths"))


def format_value(value: Any) -> str:
    """An option value as ``NAME:OPTION=VALUE`` reads it: ``2``, ``true``.

    Example:
      >>> format_value(2.0), format_value(True), format_value("mean_abs")
      ('2', 'true', 'mean_abs')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_options(options: Mapping[str, Any], sep: str = ", ") -> str:
    """``option=value`` pairs joined by ``sep``, values by :func:`format_value`.

    Example:
      >>> format_options({"k": 2.0, "scale_adaptive": True})
      'k=2, scale_adaptive=true'
    """
    return sep.join(f"{k}={format_value(v)}" for k, v in options.items())


def format_bytes(n: float) -> str:
    """A size in powers of 1000, for messages: ``'1.23 GB'``.

    Example:
      >>> format_bytes(512), format_bytes(1.234e9)
      ('512 bytes', '1.23 GB')
    """
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"

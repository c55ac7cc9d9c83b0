"""argparse value types shared by the command-line modules.

Each parses one flag value and raises ``argparse.ArgumentTypeError`` naming
what is accepted, so argparse exits with status 2 and the message.
"""

from __future__ import annotations

import argparse

__all__ = [
    "fraction",
    "int_list",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "seeds",
    "widths",
]


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


def widths(text: str) -> tuple[int, ...]:
    return tuple(int_list(text, minimum=1, what="layer widths"))

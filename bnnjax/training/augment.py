"""Data augmentation inside the jitted training step: crops, flips, shifts.

Every function here is pure and jit-able and keeps the dtype of its
images (``uint8`` as read from disk, or float). Its randomness is a key
argument: the training step draws it from :func:`augment_key`, a function
of the seed and the step only, so a resumed run augments exactly as an
uninterrupted one, and seeds trained together under ``vmap`` see
different augmentations.

* :func:`crop_flip`: random crop with zero padding (``pad=4``) and random
  horizontal flip, the standard augmentation of CIFAR-10 networks
  (BinaryNet's VGG-small, Bi-Real Net and IR-Net ResNets).
* :func:`shift`: random translation by up to ``max_shift=2`` pixels with
  zero fill and no flip (digits are not mirror-invariant).
* :func:`translate`: the exact shift and mirror both are built on, with
  the offsets given.

Names (:data:`AUGMENT_NAMES`) are resolved to these functions by
:func:`get_augmentation`, called only by
:class:`~bnnjax.train.TrainConfig`.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

__all__ = [
    "AUGMENT_NAMES",
    "CROP_PAD",
    "MAX_SHIFT",
    "AugmentName",
    "Augmentation",
    "augment_key",
    "crop_flip",
    "dropout_key",
    "get_augmentation",
    "shift",
    "translate",
]

AugmentName = Literal["none", "crop_flip", "shift"]
AUGMENT_NAMES: tuple[str, ...] = typing.get_args(AugmentName)
"""The augmentation names a :class:`~bnnjax.train.TrainConfig` accepts."""

CROP_PAD = 4
"""Zero padding of :func:`crop_flip` (pixels per side)."""

MAX_SHIFT = 2
"""Largest translation of :func:`shift` (pixels, per axis)."""

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]
"""``f(key, images) -> images`` for a ``(B, H, W, C)`` batch."""

# Separates the augmentation's keys from any other use of the seed's key.
_AUGMENT_STREAM = 0x61756720
_DROPOUT_STREAM = 0x64726F70


def augment_key(
    seed: jax.typing.ArrayLike, step: jax.typing.ArrayLike
) -> jax.Array:
    """The augmentation key of ``seed`` at training step ``step``.

    ``fold_in(fold_in(key(seed), step), stream)``: a function of the two
    integers only (jit-able, traced values allowed), so a run resumed at
    any step draws what the uninterrupted run drew there.

    Args:
      seed: the training seed (non-negative, below ``2**32``).
      step: the 0-based index of the training step, counting every step
        of the run.

    Returns:
      A typed PRNG key.
    """
    key = jax.random.key(jnp.asarray(seed, jnp.uint32))
    key = jax.random.fold_in(key, jnp.asarray(step, jnp.uint32))
    return jax.random.fold_in(key, _AUGMENT_STREAM)


def dropout_key(
    seed: jax.typing.ArrayLike, step: jax.typing.ArrayLike
) -> jax.Array:
    """The dropout key of ``seed`` at training step ``step``.

    As :func:`augment_key`, on a stream of its own: a function of the two
    integers only, so a resumed run drops what the uninterrupted run
    dropped, and the masks are independent of the augmentation's draws.
    """
    key = jax.random.key(jnp.asarray(seed, jnp.uint32))
    key = jax.random.fold_in(key, jnp.asarray(step, jnp.uint32))
    return jax.random.fold_in(key, _DROPOUT_STREAM)


def _check_batch(images: jax.Array, what: str) -> None:
    if images.ndim != 4:
        raise ValueError(
            f"{what}: images must be a (B, H, W, C) batch; got shape "
            f"{images.shape}."
        )


def translate(
    images: jax.typing.ArrayLike,
    dy: jax.typing.ArrayLike,
    dx: jax.typing.ArrayLike,
    flip: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Shifts each image by its own offsets, zero filled, then mirrors it.

    ``out[b, i, j] = x[b, i + dy[b], j' + dx[b]]``, zero where that pixel
    is outside the image, with ``j' = W - 1 - j`` where ``flip[b]`` and
    ``j' = j`` elsewhere: the shift, then a left-right mirror. A crop at
    ``(oy, ox)`` of the image zero-padded by ``p`` is
    ``translate(x, oy - p, ox - p)``.

    Computed as one row gather and one column gather (the mirror folded
    into the column indices), then a mask: exact for every value and
    offset, and on CPU as fast as or faster than a padded
    ``lax.dynamic_slice`` per example, a ``where`` per possible offset or
    one-hot shift matrices (``benchmarks/augment_speed.py``).

    Args:
      images: ``(B, H, W, C)``, any dtype (kept).
      dy: ``(B,)`` integer row offsets.
      dx: ``(B,)`` integer column offsets.
      flip: ``(B,)`` booleans, or ``None`` for no mirroring.

    Returns:
      The translated images, shape and dtype of ``images``.
    """
    x = jnp.asarray(images)
    _check_batch(x, "translate")
    h, w = x.shape[1:3]
    rows = jnp.arange(h)[None, :] + jnp.asarray(dy)[:, None]
    cols = jnp.arange(w)[None, :]
    if flip is not None:
        mirror = jnp.asarray(flip, bool)[:, None]
        cols = jnp.where(mirror, w - 1 - cols, cols)
    cols = cols + jnp.asarray(dx)[:, None]
    out = jnp.take_along_axis(
        x, jnp.clip(rows, 0, h - 1)[:, :, None, None], axis=1
    )
    out = jnp.take_along_axis(
        out, jnp.clip(cols, 0, w - 1)[:, None, :, None], axis=2
    )
    inside = ((rows >= 0) & (rows < h))[:, :, None, None] & (
        (cols >= 0) & (cols < w)
    )[:, None, :, None]
    return jnp.where(inside, out, jnp.zeros((), x.dtype))


def crop_flip(
    key: jax.Array, images: jax.typing.ArrayLike, *, pad: int = CROP_PAD
) -> jax.Array:
    """Random crop of the zero-padded image, then a random mirror.

    Each image is padded with ``pad`` zeros on every side and cropped back
    to its size at a uniform random position (offsets in ``[-pad, pad]``
    on each axis), then flipped left-right with probability 1/2: the
    CIFAR-10 augmentation of He et al (2016), used by BinaryNet, Bi-Real
    Net and IR-Net.

    Args:
      key: a PRNG key (see :func:`augment_key`).
      images: ``(B, H, W, C)``, any dtype (kept).
      pad: zero padding per side, a non-negative int.

    Returns:
      The augmented batch, shape and dtype of ``images``.
    """
    x = jnp.asarray(images)
    _check_batch(x, "crop_flip")
    _check_pad(pad, "pad")
    k_y, k_x, k_flip = jax.random.split(key, 3)
    n = x.shape[0]
    dy = jax.random.randint(k_y, (n,), -pad, pad + 1)
    dx = jax.random.randint(k_x, (n,), -pad, pad + 1)
    flip = jax.random.bernoulli(k_flip, 0.5, (n,))
    return translate(x, dy, dx, flip)


def shift(
    key: jax.Array,
    images: jax.typing.ArrayLike,
    *,
    max_shift: int = MAX_SHIFT,
) -> jax.Array:
    """Random translation by up to ``max_shift`` pixels, zero filled.

    Offsets are uniform in ``[-max_shift, max_shift]`` on each axis,
    independently per image; nothing is mirrored (a mirrored digit is not
    the same digit).

    Args:
      key: a PRNG key (see :func:`augment_key`).
      images: ``(B, H, W, C)``, any dtype (kept).
      max_shift: the largest offset, a non-negative int.

    Returns:
      The augmented batch, shape and dtype of ``images``.
    """
    x = jnp.asarray(images)
    _check_batch(x, "shift")
    _check_pad(max_shift, "max_shift")
    k_y, k_x = jax.random.split(key)
    n = x.shape[0]
    dy = jax.random.randint(k_y, (n,), -max_shift, max_shift + 1)
    dx = jax.random.randint(k_x, (n,), -max_shift, max_shift + 1)
    return translate(x, dy, dx)


def _check_pad(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r}; expected a non-negative int.")


def get_augmentation(name: str) -> Augmentation | None:
    """The augmentation named ``name``; ``None`` for ``"none"``.

    Args:
      name: one of :data:`AUGMENT_NAMES`.

    Returns:
      :func:`crop_flip` or :func:`shift` with their default sizes, or
      ``None``.

    Raises:
      ValueError: for an unknown name (the message lists the choices).
    """
    if name == "none":
        return None
    if name == "crop_flip":
        return functools.partial(crop_flip, pad=CROP_PAD)
    if name == "shift":
        return functools.partial(shift, max_shift=MAX_SHIFT)
    raise ValueError(
        f"Unknown augmentation {name!r}; expected one of {list(AUGMENT_NAMES)}."
    )

"""Batches that keep a jitted step fed: the batching part of :mod:`bnnjax.data`.

:func:`iterate_batches` yields shuffled numpy batches (one independent
order per seed, stacked, for a trainer that vmaps over seeds),
:func:`num_batches` counts them and :func:`prefetch_to_device` keeps the
next batches already on the device. Import them from :mod:`bnnjax.data`.
"""

from __future__ import annotations

import collections
import itertools
import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import jax
import numpy as np

__all__ = ["check_seed", "iterate_batches", "num_batches", "prefetch_to_device"]

_T = TypeVar("_T")

# The stream of np.random.SeedSequence spawn keys the epoch orders use
# (bnnjax.data's validation split uses another).
BATCH_STREAM = 1


def check_seed(seed: Any, what: str) -> None:
    """Raises ``ValueError`` naming ``what`` unless ``seed`` is an int >= 0."""
    if (
        not isinstance(seed, numbers.Integral)
        or isinstance(seed, bool)
        or seed < 0
    ):
        raise ValueError(f"{what}={seed!r}; expected a non-negative int.")


def num_batches(
    num_examples: int, *, batch_size: int, drop_remainder: bool = True
) -> int:
    """Number of batches :func:`iterate_batches` yields in one epoch.

    Args:
      num_examples: number of examples.
      batch_size: examples per batch, at least 1.
      drop_remainder: whether the last, smaller batch is dropped.

    Returns:
      ``num_examples // batch_size`` if ``drop_remainder`` else the ceiling;
      possibly 0.

    Raises:
      ValueError: if ``batch_size`` is not a positive int or
        ``num_examples`` is negative.
    """
    if (
        not isinstance(batch_size, numbers.Integral)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size={batch_size!r}; expected a positive int.")
    if num_examples < 0:
        raise ValueError(f"num_examples={num_examples!r} is negative.")
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def _epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    sequence = np.random.SeedSequence(seed, spawn_key=(BATCH_STREAM, epoch))
    return np.random.default_rng(sequence).permutation(n)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    seed: int | Sequence[int],
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields one epoch of ``(images, labels)`` numpy batches.

    The order is a permutation drawn from ``np.random.default_rng`` seeded
    by ``(seed, epoch)`` (``SeedSequence(seed, spawn_key=(1, epoch))``), so
    an epoch can be replayed exactly and each epoch has its own order. No
    global random state is used.

    With a sequence of seeds, each seed gets its own order and the batches
    are stacked along a new leading seed axis: ``seed=[0, 1, 2]`` yields
    images of shape ``(3, batch_size, H, W, C)`` and labels
    ``(3, batch_size)``, ready for a step vmapped over seeds. Row ``i``
    equals the batch that ``seed=seeds[i]`` alone would give.

    Arguments are checked when this function is called, not at the first
    ``next``.

    Args:
      images: ``(N, ...)`` array, e.g. uint8 NHWC images.
      labels: ``(N,)`` array.
      batch_size: examples per batch.
      seed: non-negative int, or a sequence of them for stacked batches.
      epoch: non-negative epoch number.
      shuffle: if False, every seed uses the original order.
      drop_remainder: if True every batch has ``batch_size`` examples and
        the last ``N % batch_size`` of the epoch's order are skipped; if
        False the last batch is smaller and every example appears exactly
        once.

    Returns:
      An iterator over :func:`num_batches` ``(images, labels)`` pairs.

    Raises:
      ValueError: if the lengths of ``images`` and ``labels`` differ, a seed
        or ``epoch`` is not a non-negative int, the seed sequence is empty,
        ``batch_size`` is not positive, or the epoch would have no batch.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim < 1 or labels.shape[:1] != images.shape[:1]:
        raise ValueError(
            "iterate_batches needs images and labels with the same leading"
            f" length, got shapes {images.shape} and {labels.shape}."
        )
    n = len(images)
    count = num_batches(n, batch_size=batch_size, drop_remainder=drop_remainder)
    if count == 0:
        raise ValueError(
            f"iterate_batches: batch_size={batch_size} with"
            f" drop_remainder={drop_remainder} gives no batch from {n}"
            " examples."
        )
    stacked = np.ndim(seed) != 0  # a sequence of seeds
    seeds = list(cast(Sequence[int], seed)) if stacked else [cast(int, seed)]
    if not seeds:
        raise ValueError("iterate_batches seed=[] ; give at least one seed.")
    for s in seeds:
        check_seed(s, "iterate_batches seed")
    check_seed(epoch, "iterate_batches epoch")
    orders = np.stack([_epoch_order(n, s, epoch, shuffle) for s in seeds])
    if not stacked:
        orders = orders[0]

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(count):
            index = orders[..., b * batch_size : (b + 1) * batch_size]
            yield images[index], labels[index]

    return batches()


def prefetch_to_device(
    iterator: Iterable[_T], size: int = 2, *, device: Any = None
) -> Iterator[_T]:
    """Keeps ``size`` batches already transferred to the device.

    Each element (any pytree of arrays) is passed to ``jax.device_put``
    ``size`` elements ahead of its use. ``device_put`` is asynchronous, so
    the copy of the next batch overlaps the jitted step running on the
    current one (the double-buffering idiom of the flax examples).

    Args:
      iterator: the batches, e.g. from :func:`iterate_batches`.
      size: how many batches to keep in flight, at least 1.
      device: ``device`` argument of ``jax.device_put`` (a device or a
        sharding); ``None`` uses the default device.

    Returns:
      An iterator over the same elements as ``jax.Array`` pytrees.

    Raises:
      ValueError: if ``size`` is not a positive int.
    """
    if (
        not isinstance(size, numbers.Integral)
        or isinstance(size, bool)
        or (size < 1)
    ):
        raise ValueError(f"prefetch_to_device size={size!r}; expected >= 1.")
    source = iter(iterator)

    def prefetched():
        queue = collections.deque()

        def enqueue(k):
            for element in itertools.islice(source, k):
                queue.append(jax.device_put(element, device))

        enqueue(size)
        while queue:
            yield queue.popleft()
            enqueue(1)

    return prefetched()

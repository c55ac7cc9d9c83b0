"""Per-epoch diagnostics of latent kernels: flips, updates, statistics.

Pure functions of one seed's parameters: :func:`latent_kernels`,
:func:`kernel_signs`, :func:`flip_ratio`, :func:`update_ratio`,
:func:`gradient_fraction`, :func:`latent_stats`; and their jitted,
seed-vmapped forms that :func:`bnnjax.train.run` records after every
epoch (:func:`make_epoch_diagnostics`, :func:`make_epoch_start_fn`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from bnnjax import scale as scale_lib
from bnnjax.binarize import Binarizer, Surrogate
from bnnjax.nn.functional import LATENT_KERNEL
from bnnjax.summary import path_names

__all__ = [
    "GRADIENT_THRESHOLD",
    "EpochStart",
    "flip_ratio",
    "gradient_fraction",
    "kernel_signs",
    "latent_kernels",
    "latent_stats",
    "make_epoch_diagnostics",
    "make_epoch_start_fn",
    "seed_row",
    "update_ratio",
]

GRADIENT_THRESHOLD = 0.01
"""Default relative threshold of :func:`gradient_fraction`."""


def latent_kernels(params: Any) -> dict[str, jax.Array]:
    """The latent kernels of a linen parameter tree, by layer path.

    Args:
      params: a ``"params"`` tree (with or without a leading seed axis).

    Returns:
      ``{"dense_0": kernel, "blocks_3/conv": kernel, ...}`` in tree order:
      every leaf stored under ``"latent_kernel"``, keyed by its layer path.

    Example:
      >>> import jax.numpy as jnp
      >>> latent_kernels({"dense_0": {"latent_kernel": jnp.ones((2, 3))},
      ...                 "norm": {"scale": jnp.ones(3)}}).keys()
      dict_keys(['dense_0'])
    """
    kernels = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        last = path[-1] if path else None
        if getattr(last, "key", None) == LATENT_KERNEL:
            kernels["/".join(path_names(path[:-1]))] = leaf
    return kernels


def kernel_signs(
    kernels: Mapping[str, jax.Array], binarizer: Binarizer
) -> dict[str, jax.Array]:
    """Signs of the binary weights: ``x' >= 0`` per kernel.

    ``x' = w - mean(w)`` (over the binarizer's reduced axes) when the
    binarizer centres the weights (IR-Net), else ``w``; ``sign(0) = +1``,
    as in :func:`bnnjax.binarize`.

    Args:
      kernels: layer -> latent kernel (one seed).
      binarizer: the kernel rule.

    Returns:
      layer -> boolean array, ``True`` where the binary weight is ``+1``.
    """
    signs = {}
    for layer, w in kernels.items():
        signs[layer] = binarizer.surrogate_input(w) >= 0
    return signs


def flip_ratio(
    before: Mapping[str, jax.Array], after: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Fraction of binary weights whose sign changed.

    Args:
      before: layer -> signs (booleans, :func:`kernel_signs`) earlier, e.g.
        at the start of an epoch.
      after: the same layers' signs now.

    Returns:
      ``(total, per_layer)``: the fraction over all kernels (weighted by
      size) and per layer, as float32 scalars.

    Raises:
      ValueError: if the layers or shapes differ.

    Example:
      >>> import jax.numpy as jnp
      >>> total, layers = flip_ratio({"a": jnp.array([True, True])},
      ...                            {"a": jnp.array([True, False])})
      >>> float(total), float(layers["a"])
      (0.5, 0.5)
    """
    if list(before) != list(after):
        raise ValueError(
            f"flip_ratio: layers differ: {list(before)} vs {list(after)}."
        )
    per_layer = {}
    flips = jnp.float32(0)
    count = 0
    for layer in before:
        b, a = before[layer], after[layer]
        if b.shape != a.shape:
            raise ValueError(
                f"flip_ratio: {layer} has shape {b.shape} before and "
                f"{a.shape} after."
            )
        changed = jnp.sum(b != a, dtype=jnp.float32)
        per_layer[layer] = changed / max(b.size, 1)
        flips = flips + changed
        count += b.size
    return flips / max(count, 1), per_layer


def update_ratio(
    before: Mapping[str, jax.Array], after: Mapping[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """How far the latent kernels moved, relative to their size.

    The update-to-weight ratio of each kernel between two points of
    training (e.g. the start and the end of an epoch)::

        ratio = ||w_after - w_before|| / ||w_before||     (Frobenius norms)

    and over all kernels, ``sqrt(sum ||dw||^2) / sqrt(sum ||w||^2)``.

    Why this and not a count of weights inside the surrogate's window:
    when the forward pass does not depend on the scale of a kernel (a
    scale factor proportional to the weights, e.g. the founding method's
    mean absolute deviation, or a batch norm after the layer), a step only
    matters relative to the weights' size, and this ratio is the
    effective learning rate (van Laarhoven; Hoffer et al.). It falls as a
    schedule decays or as the latent weights grow, and reaches 0 when
    they no longer move. The fraction of weights with a surrogate
    gradient (:func:`gradient_fraction`) hardly varies in such a run: the
    surrogate's window scales with the weights, so the fraction only
    reports the shape of their distribution (for the default scaled
    sigmoid, the weights within 3 mean absolute deviations: 98% of a
    Gaussian, whatever its scale).

    Args:
      before: layer -> latent kernel (one seed) earlier.
      after: the same layers' kernels now.

    Returns:
      ``(total, per_layer)`` float32 ratios ``>= 0`` (0 for a kernel that
      was zero everywhere).

    Raises:
      ValueError: if the layers or shapes differ.

    Example:
      >>> import jax.numpy as jnp
      >>> total, layers = update_ratio({"a": jnp.array([3.0, 4.0])},
      ...                              {"a": jnp.array([3.0, 5.25])})
      >>> float(total), float(layers["a"])
      (0.25, 0.25)

    References:
      van Laarhoven, `L2 Regularization versus Batch and Weight
      Normalization <https://arxiv.org/abs/1706.05350>`_, 2017

      Hoffer et al, `Norm matters: efficient and accurate normalization
      schemes in deep networks <https://arxiv.org/abs/1803.01814>`_, 2018
    """
    if list(before) != list(after):
        raise ValueError(
            f"update_ratio: layers differ: {list(before)} vs {list(after)}."
        )

    def ratio(moved: jax.Array, size: jax.Array) -> jax.Array:
        return jnp.where(
            size > 0, jnp.sqrt(moved / jnp.where(size > 0, size, 1)), 0
        )

    per_layer = {}
    moved_total = jnp.float32(0)
    size_total = jnp.float32(0)
    for layer in before:
        b = jnp.asarray(before[layer], jnp.float32)
        a = jnp.asarray(after[layer], jnp.float32)
        if b.shape != a.shape:
            raise ValueError(
                f"update_ratio: {layer} has shape {b.shape} before and "
                f"{a.shape} after."
            )
        moved = jnp.sum(jnp.square(a - b))
        size = jnp.sum(jnp.square(b))
        per_layer[layer] = ratio(moved, size)
        moved_total = moved_total + moved
        size_total = size_total + size
    return ratio(moved_total, size_total), per_layer


def gradient_fraction(
    kernels: Mapping[str, jax.Array],
    binarizer: Binarizer,
    *,
    progress: jax.typing.ArrayLike = 0.0,
    threshold: float = GRADIENT_THRESHOLD,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Fraction of latent weights that get a non-negligible gradient.

    The backward pass of :func:`bnnjax.binarize` multiplies the incoming
    gradient by ``alpha * derivative(x')``. A weight counts as *active*
    when that factor is at least ``threshold`` times its value at
    ``x' = 0`` (the surrogate's straight-through peak) in the same
    channel::

        active = derivative(x') >= threshold * derivative(0)

    ``alpha`` is the same on both sides (one value per channel), so it
    cancels: the measure does not depend on the weights' scale factor,
    which a following batch norm would undo anyway, only on where each
    weight sits in its surrogate's window. With the default 1%: the
    clipped STE counts ``|x| <= 1``; a fixed sigmoid with ``beta = 5``,
    ``|x| <= 1.2``; the scaled sigmoid, ``|x'| <= 3`` mean absolute
    deviations whatever the weights' scale; EDE narrows as ``progress``
    grows. Plain STE, Bop and the float preset count every weight.

    Args:
      kernels: layer -> latent kernel (one seed).
      binarizer: the kernel rule (deterministic surrogates only).
      progress: training progress in ``[0, 1]`` (may be traced).
      threshold: relative slope below which a gradient is negligible.

    With a window that follows the weights' spread (the scaled sigmoid
    surrogates, IR-Net's standardized EDE), the fraction depends only on
    the shape of the weights' distribution (and on ``progress`` for the
    annealed ones), not on how training moves them, and stays close to
    1 through the default run. :func:`bnnjax.train.run` records it in
    ``metrics.jsonl``; the plots show ``update_ratio`` instead.

    Returns:
      ``(total, per_layer)`` float32 fractions in ``[0, 1]``.

    Raises:
      ValueError: for a stochastic binarizer.

    Example:
      >>> import jax.numpy as jnp, bnnjax
      >>> rule = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
      >>> total, _ = gradient_fraction(
      ...     {"a": jnp.array([[0.5], [2.0]])}, rule)
      >>> float(total)
      0.5
    """
    if binarizer.stochastic:
        raise ValueError(
            "gradient_fraction needs a deterministic surrogate, got "
            f"{binarizer.surrogate!r}."
        )
    # A Binarizer stores its surrogate resolved, never as a name.
    surrogate = cast(Surrogate, binarizer.surrogate)
    per_layer = {}
    active = jnp.float32(0)
    count = 0
    for layer, w in kernels.items():
        w = jnp.asarray(w, jnp.float32)
        axes = scale_lib.reduce_axes(w.ndim, binarizer.axis)
        w = binarizer.surrogate_input(w)
        aux = surrogate.prepare(w, axes, progress=progress, key=None)
        slope = surrogate.derivative(w, aux)
        peak = surrogate.derivative(jnp.zeros_like(w), aux)
        hits = jnp.sum(slope >= threshold * peak, dtype=jnp.float32)
        per_layer[layer] = hits / max(w.size, 1)
        active = active + hits
        count += w.size
    return active / max(count, 1), per_layer


def latent_stats(
    kernels: Mapping[str, jax.Array],
) -> dict[str, dict[str, jax.Array]]:
    """Per-layer statistics of latent kernels (over the whole tensor).

    Args:
      kernels: layer -> latent kernel (one seed).

    Returns:
      layer -> ``{"mean", "std", "mean_abs_dev", "max_abs",
      "beyond_3_mad"}``, where ``beyond_3_mad`` is the fraction of weights
      with ``|w - mean| > 3 * mean_abs_dev`` (about 1.6% for a Gaussian;
      more means heavy tails, e.g. weights drifting away and no longer
      flipping).

    Example:
      >>> import jax.numpy as jnp
      >>> s = latent_stats({"a": jnp.array([-1.0, 1.0])})["a"]
      >>> float(s["mean"]), float(s["mean_abs_dev"]), float(s["max_abs"])
      (0.0, 1.0, 1.0)
    """
    stats = {}
    for layer, w in kernels.items():
        w = jnp.asarray(w, jnp.float32)
        mean = jnp.mean(w)
        dev = jnp.abs(w - mean)
        mad = jnp.mean(dev)
        stats[layer] = {
            "mean": mean,
            "std": jnp.std(w),
            "mean_abs_dev": mad,
            "max_abs": jnp.max(jnp.abs(w)),
            "beyond_3_mad": jnp.mean(dev > 3 * mad, dtype=jnp.float32),
        }
    return stats


class EpochStart(NamedTuple):
    """What the diagnostics compare the end of an epoch against.

    Attributes:
      signs: layer -> :func:`kernel_signs` (leading seed axis).
      kernels: layer -> latent kernel (leading seed axis).
    """

    signs: dict[str, jax.Array]
    kernels: dict[str, jax.Array]


def _epoch_start(params: Any, binarizer: Binarizer) -> EpochStart:
    kernels = latent_kernels(params)
    return EpochStart(kernel_signs(kernels, binarizer), kernels)


def make_epoch_diagnostics(binarizer: Binarizer) -> Callable[..., Any]:
    """Jitted ``(params, start, progress) -> (metrics, next_start)``.

    Vmapped over the seed axis of ``params`` and ``start`` (an
    :class:`EpochStart`, from :func:`make_epoch_start_fn` or the previous
    call); ``metrics`` holds the flip ratio and the update ratio since
    ``start``, the gradient fraction at ``progress`` (totals and per
    layer) and the latent statistics; ``next_start`` is ``params``'
    :class:`EpochStart`.
    """

    def one(
        params: Any, start: EpochStart, progress: jax.typing.ArrayLike
    ) -> tuple[dict[str, Any], EpochStart]:
        now = _epoch_start(params, binarizer)
        flips, flip_layers = flip_ratio(start.signs, now.signs)
        moved, moved_layers = update_ratio(start.kernels, now.kernels)
        active, active_layers = gradient_fraction(
            now.kernels, binarizer, progress=progress
        )
        metrics = {
            "flip_ratio": flips,
            "flip_ratio_layers": flip_layers,
            "update_ratio": moved,
            "update_ratio_layers": moved_layers,
            "gradient_fraction": active,
            "gradient_fraction_layers": active_layers,
            "latent": latent_stats(now.kernels),
        }
        return metrics, now

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def make_epoch_start_fn(binarizer: Binarizer) -> Callable[[Any], EpochStart]:
    """Jitted ``params -> EpochStart`` of every seed (signs and kernels)."""
    return jax.jit(jax.vmap(lambda p: _epoch_start(p, binarizer)))


def seed_row(tree: Any, i: int) -> Any:
    """Seed ``i``'s entry of every leaf of ``tree``, as Python floats."""
    return jax.tree.map(lambda x: float(np.asarray(x)[i]), tree)

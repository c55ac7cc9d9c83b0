"""Classification losses of the training harness, per example.

Each loss maps ``(logits, labels)`` (``(B, K)`` logits, ``(B,)`` integer
labels) to ``(B,)`` float32 losses; the training step averages them.
:func:`get_loss` builds one from :class:`~bnnjax.train.TrainConfig`'s
``loss`` and ``label_smoothing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "LOSS_NAMES",
    "Loss",
    "LossName",
    "cross_entropy",
    "distillation",
    "get_loss",
    "squared_hinge",
]

LossName = Literal["cross_entropy", "squared_hinge"]
LOSS_NAMES: tuple[LossName, ...] = ("cross_entropy", "squared_hinge")
"""The names :func:`get_loss` accepts."""

Loss = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss(logits, labels) -> (B,)`` per-example losses."""


def cross_entropy(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Softmax cross-entropy with integer labels, optionally smoothed.

    ``loss = -sum_k t_k log softmax(z)_k`` with the smoothed target
    ``t = (1 - a) onehot(y) + a / K`` (``a = label_smoothing``; Szegedy et
    al. 2016), computed in float32.

    Args:
      logits: ``(B, K)`` logits.
      labels: ``(B,)`` integer labels in ``[0, K)``.
      label_smoothing: ``a`` in ``[0, 1)``; ``0`` is the plain loss.

    Returns:
      ``(B,)`` float32 losses.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[2.0, 0.0]])
      >>> float(cross_entropy(z, jnp.array([0]))[0])  # doctest: +ELLIPSIS
      0.126...
    """
    logits = logits.astype(jnp.float32)
    if label_smoothing == 0:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(
        jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing
    )
    return optax.softmax_cross_entropy(logits, targets)


def squared_hinge(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """BinaryNet's multi-class squared hinge loss.

    ``loss = mean_k max(0, 1 - t_k z_k)^2`` with ``t_k = +1`` for the
    label's class and ``-1`` for every other class, as the BinaryNet code
    (Courbariaux, Hubara et al. 2016) trains its networks.

    Args:
      logits: ``(B, K)`` outputs ``z``.
      labels: ``(B,)`` integer labels in ``[0, K)``.

    Returns:
      ``(B,)`` float32 losses.

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[0.5, -2.0, 1.0]])
      >>> round(float(squared_hinge(z, jnp.array([0]))[0]), 6)  # 4.25 / 3
      1.416667
    """
    logits = logits.astype(jnp.float32)
    signs = 2.0 * jax.nn.one_hot(labels, logits.shape[-1]) - 1.0
    return jnp.mean(jnp.square(jax.nn.relu(1.0 - signs * logits)), axis=-1)


def distillation(
    logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 1.0
) -> jax.Array:
    """The distillation loss: KL divergence from the teacher's softmax.

    ``loss = T^2 KL(p_t || p_s) = T^2 sum_k p_t,k (log p_t,k - log
    p_s,k)`` with ``p = softmax(z / T)`` of the teacher's (``t``) and the
    student's (``s``) logits (Hinton et al. 2015). At ``T = 1`` this is
    ReActNet's distributional loss (Liu et al. 2020), which trains the
    binary student on the real-valued teacher's output distribution alone.
    ``T^2`` keeps the gradient's size independent of ``T``. The teacher's
    logits get no gradient.

    Args:
      logits: ``(B, K)`` student logits.
      teacher_logits: ``(B, K)`` teacher logits.
      temperature: ``T > 0``.

    Returns:
      ``(B,)`` float32 losses (``0`` where the two distributions agree).

    Example:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 2.0, 0.5]])
      >>> float(distillation(z, z)[0])
      0.0
    """
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    log_p_t = jax.nn.log_softmax(t / temperature)
    log_p_s = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return temperature**2 * kl


def get_loss(name: LossName, *, label_smoothing: float = 0.0) -> Loss:
    """The per-example loss named ``name``.

    Args:
      name: ``"cross_entropy"`` (:func:`cross_entropy`) or
        ``"squared_hinge"`` (:func:`squared_hinge`).
      label_smoothing: for ``"cross_entropy"`` only; ``0`` with
        ``"squared_hinge"``.

    Returns:
      ``loss(logits, labels) -> (B,)``.

    Raises:
      ValueError: for another name, or smoothing with the hinge loss.
    """
    if name == "cross_entropy":
        if label_smoothing == 0:
            return cross_entropy

        def smoothed(logits: jax.Array, labels: jax.Array) -> jax.Array:
            return cross_entropy(
                logits, labels, label_smoothing=label_smoothing
            )

        return smoothed
    if name == "squared_hinge":
        if label_smoothing != 0:
            raise ValueError(
                f"label_smoothing={label_smoothing!r} with the "
                "squared_hinge loss; label smoothing applies to "
                "cross_entropy only (use 0)."
            )
        return squared_hinge
    raise ValueError(
        f"Unknown loss {name!r}; expected one of {list(LOSS_NAMES)}."
    )

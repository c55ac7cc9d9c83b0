"""Binary-aware optimization as optax ``GradientTransformation``s.

Latent-weight transforms (chain them after any optax optimizer, on the
binary parameter group):

* :func:`scale_by_mean_abs_dev`: the founding method's scale-adaptive
  update. A sign flips when a latent weight crosses zero, a distance of the
  order of the weights' spread, so each tensor's (or channel's) update is
  multiplied by its mean absolute deviation.
* :func:`scale_adaptive`: wraps any optimizer so that it sees gradients
  in units of the spread and takes steps in units of the spread, which makes
  training exactly invariant to the latent weights' scale.
* :func:`scale_by_glorot_lr`: BinaryConnect's per-layer learning-rate scale.
* :func:`clip_latent_weights`, :func:`clip_latent_weights_by_spread`:
  BinaryConnect's latent clipping, to a fixed bound or to a multiple of the
  spread. Constraints go last in a chain.

Latent-free optimizers (terminal; they emit the final ``-2w`` or ``0``
updates on ``±1`` weights): :func:`bop` and :func:`bop_second_order`.

Parameter groups: :func:`binary_param_labels` labels latent weights
``"binary"`` (the linen ``latent_kernel`` key, the nnx ``LatentParam`` type)
and everything else ``"real"``; :func:`binary_partition` routes one
transform to each group with ``optax.partition``, for linen parameter trees
and for ``nnx.Optimizer``.

Every factory takes keyword-only numeric hyperparameters, so
``optax.inject_hyperparams`` can schedule them; structural options are
booleans (treated as static by ``inject_hyperparams``). Transforms that need
the current parameters raise a ``ValueError`` when ``params`` is not given.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bnnjax import scale as scale_lib
from bnnjax.nn.functional import LATENT_KERNEL
from bnnjax.nn.nnx import LatentParam

BINARY = "binary"
"""Label of latent (binarized) weights in parameter groups."""
REAL = "real"
"""Label of every other parameter."""

__all__ = [
    "BINARY",
    "REAL",
    "BopSecondOrderState",
    "BopState",
    "binary_param_labels",
    "binary_partition",
    "bop",
    "bop_second_order",
    "clip_latent_weights",
    "clip_latent_weights_by_spread",
    "scale_adaptive",
    "scale_by_glorot_lr",
    "scale_by_mean_abs_dev",
]


def _check_hyperparameter(
    owner: str, name: str, value: object, *, allow_zero: bool = False
) -> None:
    """Validates a concrete hyperparameter; traced/scheduled values pass."""
    if isinstance(value, jax.core.Tracer):
        return
    if callable(value):
        raise TypeError(
            f"{owner}: {name} got a callable; to schedule it, build the "
            f"transform with optax.inject_hyperparams({owner})({name}=...)."
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating, np.ndarray, jax.Array)
    ):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(
            f"{owner}: {name} must be a scalar, got shape {np.shape(value)}."
        )
    v = float(np.asarray(value))
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"{owner}: {name} must be finite and {bound}, got {v}."
        )


def _need_params(owner: str, params: optax.Params | None) -> optax.Params:
    if params is None:
        raise ValueError(
            f"{owner} needs the current parameters: call "
            "tx.update(updates, state, params)."
        )
    return params


def _spread(p: jax.Array, per_channel: bool, owner: str) -> jax.Array:
    """Mean absolute deviation per tensor or per output (last-axis) channel.

    A tensor or channel with no spread (all equal) gets 1, so an all-equal
    initialisation still moves.
    """
    if per_channel and p.ndim < 2:
        raise ValueError(
            f"{owner}(per_channel=True) needs kernels of rank >= 2 (output "
            f"channels on the last axis), got a parameter of shape {p.shape}; "
            "use per_channel=False or keep rank-1 parameters out of the "
            "binary group."
        )
    axes = scale_lib.reduce_axes(p.ndim, -1 if per_channel else None)
    spread = scale_lib.mean_abs_dev(p, axes)
    return jnp.where(spread > 0, spread, jnp.ones_like(spread))


def scale_by_mean_abs_dev(
    *, per_channel: bool = True
) -> optax.GradientTransformation:
    """Scales each latent tensor's update by its mean absolute deviation.

    ``u' = u * s(w)`` with ``s(w) = mean(|w - mean(w)|)`` per tensor, or per
    output channel (last axis) with ``per_channel=True``; ``s = 1`` where the
    weights have no spread. Chained after a scale-invariant optimizer such as
    Adam, every step is a fixed fraction (the learning rate) of the weights'
    spread, so the distance to a sign flip is covered at the same pace
    whatever the weights' scale. Together with
    :class:`~bnnjax.ScaledSigmoidSurrogate` and the mean-absolute-deviation
    scale, training is then invariant to multiplying the initial latent
    weights by a constant.

    Args:
      per_channel: one spread per output channel (the last axis) instead of
        one per tensor.

    Returns:
      A stateless ``optax.GradientTransformation`` that needs ``params``.

    Example:
      >>> import optax
      >>> tx = optax.chain(optax.adam(1e-2), scale_by_mean_abs_dev())

    References:
      Rastegari et al, `XNOR-Net <https://arxiv.org/abs/1603.05279>`_, 2016
      (mean-absolute scales of binary weights)
    """
    owner = "scale_by_mean_abs_dev"

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.OptState]:
        params = _need_params(owner, params)
        updates = jax.tree.map(
            lambda u, p: u * _spread(p, per_channel, owner).astype(u.dtype),
            updates,
            params,
        )
        return updates, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def scale_adaptive(
    optimizer: optax.GradientTransformation, *, per_channel: bool = True
) -> optax.GradientTransformation:
    """Runs ``optimizer`` on spread-scaled gradients, then scales its steps.

    ``optax.chain(scale_by_mean_abs_dev(), optimizer,
    scale_by_mean_abs_dev())``: the gradient is multiplied by the weights'
    spread ``s`` before the optimizer and the step after it.

    Why both: in a batch-normalized network the loss does not change when a
    latent tensor is scaled by ``c`` (with the mean-absolute-deviation scale
    and the scaled sigmoid surrogate), so its gradient scales as ``1/c``.
    ``g * s`` is then scale-free, and so is everything the optimizer
    computes from it, including the effect of Adam's ``eps``; the final
    ``* s`` makes the step a fixed fraction of the spread. Multiplying the
    initial latent weights by a power of two then multiplies the whole
    latent trajectory by it exactly (up to batch norm's own ``epsilon``).
    :func:`scale_by_mean_abs_dev` after the optimizer alone leaves Adam's
    ``eps`` acting on ``1/c``-sized gradients.

    Args:
      optimizer: any optax transform, e.g. ``optax.adam(1e-2)``.
      per_channel: one spread per output channel (the last axis) instead of
        one per tensor.

    Returns:
      An ``optax.GradientTransformation`` that needs ``params``.

    Example:
      >>> import optax
      >>> tx = scale_adaptive(optax.adam(1e-2))
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "scale_adaptive: optimizer must be an optax.GradientTransformation,"
            f" got {optimizer!r}."
        )
    return optax.chain(
        scale_by_mean_abs_dev(per_channel=per_channel),
        optimizer,
        scale_by_mean_abs_dev(per_channel=per_channel),
    )


def scale_by_glorot_lr() -> optax.GradientTransformation:
    """BinaryConnect's per-layer learning-rate scale ``1 / H``.

    ``u' = u / H`` with ``H = sqrt(1.5 / (fan_in + fan_out))``, the bound of
    Glorot's uniform initialisation for the kernel's shape. For a dense
    kernel ``(in, out)``: ``fan_in = in``, ``fan_out = out``; for a
    convolution kernel ``(*window, in, out)`` both are multiplied by the
    window size. Wide layers, whose latent weights sit in a narrower range,
    get proportionally larger steps.

    Returns:
      A stateless ``optax.GradientTransformation``.

    Raises:
      ValueError: (at update) for parameters of rank < 2.

    References:
      Courbariaux et al, `BinaryConnect: Training Deep Neural Networks with
      binary weights during propagations <https://arxiv.org/abs/1511.00363>`_,
      2015
    """

    def factor(u: jax.Array) -> float:
        if u.ndim < 2:
            raise ValueError(
                "scale_by_glorot_lr needs kernels of rank >= 2, got shape "
                f"{u.shape}; keep biases and norms out of the binary group."
            )
        window = math.prod(u.shape[:-2])
        fan_in, fan_out = u.shape[-2] * window, u.shape[-1] * window
        return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.OptState]:
        del params
        return jax.tree.map(lambda u: u * factor(u), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def clip_latent_weights(
    *, bound: jax.typing.ArrayLike = 1.0
) -> optax.GradientTransformation:
    """Keeps latent weights in ``[-bound, bound]`` (BinaryConnect).

    Emits ``u' = clip(w + u, -bound, bound) - w``, so that
    ``optax.apply_updates`` lands inside the box. Put it last in a chain.
    Without clipping, latent weights of a binarized layer can grow without
    bound and stop flipping.

    Args:
      bound: the half-width of the box, ``> 0``.

    Returns:
      A stateless ``optax.GradientTransformation`` that needs ``params``.

    References:
      Courbariaux et al, `BinaryConnect <https://arxiv.org/abs/1511.00363>`_,
      2015
    """
    _check_hyperparameter("clip_latent_weights", "bound", bound)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.OptState]:
        params = _need_params("clip_latent_weights", params)

        def clip(u: jax.Array, p: jax.Array) -> jax.Array:
            b = jnp.asarray(bound, p.dtype)
            return (jnp.clip(p + u, -b, b) - p).astype(u.dtype)

        return jax.tree.map(clip, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def clip_latent_weights_by_spread(
    *, multiple: jax.typing.ArrayLike = 3.0, per_channel: bool = True
) -> optax.GradientTransformation:
    """Clips latent weights to ``multiple`` times their spread.

    ``u' = clip(w + u, -b, b) - w`` with ``b = multiple * s(w)`` and ``s``
    the mean absolute deviation of the current weights (per tensor or per
    output channel, ``1`` where there is no spread). Unlike a fixed bound,
    the box follows the weights' scale. Put it last in a chain.

    Args:
      multiple: bound in units of the spread, ``> 0``.
      per_channel: one bound per output channel (last axis).

    Returns:
      A stateless ``optax.GradientTransformation`` that needs ``params``.
    """
    owner = "clip_latent_weights_by_spread"
    _check_hyperparameter(owner, "multiple", multiple)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.OptState]:
        params = _need_params(owner, params)

        def clip(u: jax.Array, p: jax.Array) -> jax.Array:
            b = jnp.asarray(multiple, p.dtype) * _spread(p, per_channel, owner)
            return (jnp.clip(p + u, -b, b) - p).astype(u.dtype)

        return jax.tree.map(clip, updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


class BopState(NamedTuple):
    """State of :func:`bop`."""

    momentum: optax.Updates  # EMA of gradients; same tree/dtypes as params


def bop(
    *,
    threshold: jax.typing.ArrayLike = 1e-8,
    gamma: jax.typing.ArrayLike = 1e-4,
) -> optax.GradientTransformation:
    """Bop: flips a ``±1`` weight when its gradient EMA agrees and is large.

    ``m <- m + gamma (g - m)``; a weight flips (update ``-2w``) where
    ``w * m > threshold``, else the update is ``0``.

    Terminal: emits the final updates; do not chain a learning rate after
    it. Bop has no latent weights: parameters in its group must already be
    ``±1`` (binarize their initial values) and their layers should binarize
    with ``Binarizer(surrogate="ste", scale=None)``, the identity on ``±1``.

    Args:
      threshold: flip threshold ``tau`` (paper and Larq default ``1e-8``).
      gamma: adaptivity rate of the EMA (paper and Larq default ``1e-4``).

    Returns:
      An ``optax.GradientTransformation`` that needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = bop(threshold=0.0, gamma=1.0)
      >>> w = jnp.array([1.0, -1.0])
      >>> tx.update(jnp.array([0.5, 0.5]), tx.init(w), w)[0]
      Array([-2.,  0.], dtype=float32)

    References:
      Helwegen et al, `Latent Weights Do Not Exist: Rethinking Binarized
      Neural Network Optimization <https://arxiv.org/abs/1906.02107>`_, 2019
    """
    _check_hyperparameter("bop", "threshold", threshold, allow_zero=True)
    _check_hyperparameter("bop", "gamma", gamma)

    def init_fn(params: optax.Params) -> BopState:
        return BopState(momentum=jax.tree.map(jnp.zeros_like, params))

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.OptState]:
        params = _need_params("bop", params)
        state = cast(BopState, state)  # built by init_fn
        momentum = jax.tree.map(
            lambda m, g: m + jnp.asarray(gamma, m.dtype) * (g - m),
            state.momentum,
            updates,
        )
        flips = jax.tree.map(
            lambda w, m: jnp.where(
                w * m > jnp.asarray(threshold, w.dtype), -2 * w, 0
            ).astype(w.dtype),
            params,
            momentum,
        )
        return flips, BopState(momentum=momentum)

    return optax.GradientTransformation(init_fn, update_fn)


class BopSecondOrderState(NamedTuple):
    """State of :func:`bop_second_order`."""

    momentum: optax.Updates  # EMA of gradients
    second_moment: optax.Updates  # EMA of squared gradients


def bop_second_order(
    *,
    threshold: jax.typing.ArrayLike = 1e-6,
    gamma: jax.typing.ArrayLike = 1e-6,
    sigma: jax.typing.ArrayLike = 1e-2,
    eps: jax.typing.ArrayLike = 1e-10,
) -> optax.GradientTransformation:
    """Second-order Bop: flips on the normalized gradient EMA.

    ``m <- m + gamma (g - m)``, ``v <- v + sigma (g^2 - v)``; a weight flips
    (update ``-2w``) where ``w * m / (sqrt(v) + eps) > threshold``, else the
    update is ``0``. Normalising by the gradient's second moment makes the
    threshold independent of the gradients' scale.

    Terminal, latent-free and ``±1``-only, as :func:`bop`.

    Args:
      threshold: flip threshold (authors' default ``1e-6``).
      gamma: adaptivity rate of the first moment (default ``1e-6``).
      sigma: adaptivity rate of the second moment (default ``1e-2``).
      eps: added to ``sqrt(v)`` (default ``1e-10``).

    Returns:
      An ``optax.GradientTransformation`` that needs ``params``.

    References:
      Suarez-Ramirez et al, `A Bop and Beyond: A Second Order Optimizer for
      Binarized Neural Networks <https://arxiv.org/abs/2104.05124>`_, 2021
    """
    owner = "bop_second_order"
    _check_hyperparameter(owner, "threshold", threshold, allow_zero=True)
    _check_hyperparameter(owner, "gamma", gamma)
    _check_hyperparameter(owner, "sigma", sigma)
    _check_hyperparameter(owner, "eps", eps, allow_zero=True)

    def init_fn(params: optax.Params) -> BopSecondOrderState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return BopSecondOrderState(momentum=zeros, second_moment=zeros)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.OptState]:
        params = _need_params(owner, params)
        state = cast(BopSecondOrderState, state)  # built by init_fn
        momentum = jax.tree.map(
            lambda m, g: m + jnp.asarray(gamma, m.dtype) * (g - m),
            state.momentum,
            updates,
        )
        second_moment = jax.tree.map(
            lambda v, g: v + jnp.asarray(sigma, v.dtype) * (g * g - v),
            state.second_moment,
            updates,
        )

        def flip(w: jax.Array, m: jax.Array, v: jax.Array) -> jax.Array:
            normalized = m / (jnp.sqrt(v) + jnp.asarray(eps, v.dtype))
            return jnp.where(
                w * normalized > jnp.asarray(threshold, w.dtype), -2 * w, 0
            ).astype(w.dtype)

        flips = jax.tree.map(flip, params, momentum, second_moment)
        return flips, BopSecondOrderState(momentum, second_moment)

    return optax.GradientTransformation(init_fn, update_fn)


def _is_variable(value: object) -> bool:
    return isinstance(value, nnx.Variable)


def binary_param_labels(params: Any) -> Any:
    """Labels each parameter ``"binary"`` (latent weight) or ``"real"``.

    Latent weights are found by their documented kind, never by guessing
    from names: in linen trees, leaves stored under the key
    ``"latent_kernel"``; in nnx, variables of type
    :class:`bnnjax.nn.nnx.LatentParam`.

    Args:
      params: a linen parameter tree (``variables["params"]``), an nnx
        ``State`` (``nnx.state(model, nnx.Param)``), or an ``nnx.Module``
        (its ``nnx.Param`` state is used). For nnx, build the labels once,
        from the model, before creating ``nnx.Optimizer``: inside its update
        the leaves are plain arrays and carry no type.

    Returns:
      A tree of the same structure with ``"binary"``/``"real"`` leaves,
      suitable for ``optax.partition``.

    Example:
      >>> import jax.numpy as jnp
      >>> binary_param_labels({"dense": {"latent_kernel": jnp.ones((2, 2)),
      ...                                "bias": jnp.ones(2)}})
      {'dense': {'bias': 'real', 'latent_kernel': 'binary'}}
    """
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    if isinstance(params, nnx.State) or any(
        _is_variable(leaf)
        for leaf in jax.tree.leaves(params, is_leaf=_is_variable)
    ):
        return jax.tree.map(
            lambda v: BINARY if isinstance(v, LatentParam) else REAL,
            params,
            is_leaf=_is_variable,
        )

    def label(path: jax.tree_util.KeyPath[Any], _: object) -> str:
        last = path[-1] if path else None
        key = getattr(last, "key", getattr(last, "name", None))
        return BINARY if key == LATENT_KERNEL else REAL

    return jax.tree_util.tree_map_with_path(label, params)


def binary_partition(
    binary: optax.GradientTransformation,
    real: optax.GradientTransformation,
    params: Any = None,
    *,
    labels: Any = None,
) -> optax.GradientTransformation:
    """One transform for latent weights, another for every other parameter.

    ``optax.partition({"binary": binary, "real": real}, labels)`` with the
    labels of :func:`binary_param_labels` (or given explicitly, e.g. by a
    converted model), checked once: every label must be ``"binary"`` or
    ``"real"`` and at least one parameter must be binary, so no parameter
    silently falls into no group or the wrong one.

    Args:
      binary: transform for latent weights, e.g.
        ``optax.chain(optax.adam(1e-2), scale_by_mean_abs_dev())``.
      real: transform for every other parameter, e.g. ``optax.adam(1e-3)``.
      params: a linen parameter tree, nnx ``State`` or ``nnx.Module`` to
        label with :func:`binary_param_labels`.
      labels: an explicit label tree instead of ``params``.

    Returns:
      The partitioned ``optax.GradientTransformation``. For nnx, pass it to
      ``nnx.Optimizer(model, tx, wrt=nnx.Param)``.

    Raises:
      ValueError: if neither or both of ``params``/``labels`` are given, a
        label is not ``"binary"``/``"real"``, or nothing is binary.
      TypeError: if ``binary``/``real`` are not optax transforms.

    Example:
      >>> import optax, jax.numpy as jnp
      >>> params = {"dense": {"latent_kernel": jnp.ones((2, 2)),
      ...                     "bias": jnp.zeros(2)}}
      >>> tx = binary_partition(optax.sgd(1e-2), optax.adam(1e-3), params)
      >>> state = tx.init(params)
    """
    for name, tx in (("binary", binary), ("real", real)):
        if not isinstance(tx, optax.GradientTransformation):
            raise TypeError(
                f"binary_partition: {name} must be an "
                f"optax.GradientTransformation, got {tx!r}."
            )
    if (params is None) == (labels is None):
        raise ValueError(
            "binary_partition needs exactly one of params (to label by "
            "parameter kind) or labels (an explicit label tree)."
        )
    if labels is None:
        labels = binary_param_labels(params)
    if callable(labels):
        raise TypeError(
            "binary_partition: labels must be a tree, not a function, so it "
            "can be checked once; call the function on the params first."
        )
    leaves = jax.tree.leaves(labels)
    unknown = sorted({str(v) for v in leaves} - {BINARY, REAL})
    if unknown:
        raise ValueError(
            f"binary_partition: labels {unknown} belong to no group; every "
            f"label must be {BINARY!r} or {REAL!r}."
        )
    if BINARY not in leaves:
        raise ValueError(
            "binary_partition: no parameter is labelled 'binary' (no linen "
            "'latent_kernel' and no nnx LatentParam found); for a float "
            "model use a plain optax optimizer."
        )
    transforms: Mapping[Hashable, optax.GradientTransformation] = {
        BINARY: binary,
        REAL: real,
    }
    return optax.partition(transforms, labels)

"""Running a packed model: the program interpreter and :func:`predict`.

A reference architecture's program (format version 1) runs op by op on
device arrays prepared once from the file; a model of your own (version 2)
runs its own code with packed binary layers
(:mod:`bnnjax.export._packed_layers`). Either is jit-compiled once per
input shape and cached on the :class:`PackedModel`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bnnjax import packed as packed_lib
from bnnjax.export._packed_layers import _generic_runner, _row
from bnnjax.export._schema import _ARRAY_FIELDS, PackedModel


def _prepare(packed: PackedModel) -> list[dict[str, Any]]:
    """Device arrays per op, in the layouts the kernels want.

    One jit-compiled program computes every layout of the file (one
    compilation instead of one per layer shape and eager operation).
    """
    ops = packed.header["program"]["ops"]
    names = sorted(
        {
            op[field]
            for op in ops
            for field in _ARRAY_FIELDS[op["op"]]
            if op.get(field) is not None
        }
    )
    arrays = {name: packed.arrays[name] for name in names}
    return jax.jit(functools.partial(_layouts, ops))(arrays)


def _layouts(
    ops: Sequence[Mapping[str, Any]], arrays: Mapping[str, jax.Array]
) -> list[dict[str, Any]]:
    """:func:`_prepare`'s arrays per op, traced."""
    prepared = []
    for op in ops:
        kind = op["op"]
        mine: dict[str, Any] = {}  # arrays and packed kernels
        for field in _ARRAY_FIELDS[kind]:
            name = op.get(field)
            if name is not None:
                mine[field] = arrays[name]
        if kind in ("threshold", "count_threshold"):
            mine["flip"] = mine["flip"] != 0
        if kind in ("binary_dense", "binary_conv"):
            words = mine.pop("kernel")
            if op["input"] == "bits":
                if kind == "binary_conv" and op["pad_value"] == 0.0:
                    mine["tap_sums"] = packed_lib.kernel_tap_sums(
                        words, op["n_in"]
                    )
                mine["xnor"] = packed_lib.prepare_xnor_kernel(words)
            else:
                weights = packed_lib.prepare_binary_weights(words, op["n_in"])
                mine["words_t"] = weights.words_t
                mine["bytes_t"] = weights.bytes_t
        prepared.append(mine)
    return prepared


def _pool(
    x: jax.Array,
    init: jax.Array,
    fn: Callable[[jax.Array, jax.Array], jax.Array],
    window: Sequence[int],
    strides: Sequence[int],
    padding: str | Sequence[Sequence[int]],
) -> jax.Array:
    pads = (
        padding
        if isinstance(padding, str)
        else [(0, 0), *((low, high) for low, high in padding), (0, 0)]
    )
    return lax.reduce_window(
        x, init, fn, (1, *window, 1), (1, *strides, 1), pads
    )


def _run_pool(op: Mapping[str, Any], x: jax.Array) -> jax.Array:
    """``max_pool`` (of reals or counts) and ``avg_pool`` (without pads)."""
    if op["op"] == "max_pool":
        init = (
            -jnp.inf
            if jnp.issubdtype(x.dtype, jnp.floating)
            else jnp.iinfo(x.dtype).min
        )
        return _pool(
            x,
            jnp.asarray(init, x.dtype),
            lax.max,
            op["window"],
            op["strides"],
            op["padding"],
        )
    args = (op["window"], op["strides"], op["padding"])
    y = _pool(x, jnp.asarray(0, x.dtype), lax.add, *args)
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    return y / _pool(ones, jnp.asarray(0, x.dtype), lax.add, *args)


def _run_real_layer(
    op: Mapping[str, Any], a: Mapping[str, jax.Array], x: jax.Array
) -> jax.Array:
    """A real ``dense`` or ``conv`` layer, as the float model runs it."""
    if op["op"] == "dense":
        y = lax.dot_general(x, a["kernel"], (((x.ndim - 1,), (0,)), ((), ())))
    else:
        y = lax.conv_general_dilated(
            x,
            a["kernel"],
            tuple(op["strides"]),
            [tuple(p) for p in op["padding"]],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    return y + _row(a["bias"], y.ndim) if "bias" in a else y


def _run_binary_layer(
    op: Mapping[str, Any], a: Mapping[str, Any], x: jax.Array
) -> jax.Array:
    """``binary_dense``/``binary_conv``: counts from bits, or reals."""
    if op["op"] == "binary_dense":
        if op["input"] == "bits":
            return packed_lib.xnor_dense(
                packed_lib.pack_bits(x), a["xnor"], op["n_in"]
            )
        weights = packed_lib.BinaryWeights(
            a["words_t"], a["bytes_t"], op["n_in"]
        )
        return packed_lib.binary_weight_dense(x, weights, a["alpha"])
    window = {
        "kernel_size": op["kernel_size"],
        "strides": op["strides"],
        "dilation": op["dilation"],
        "padding": [tuple(p) for p in op["padding"]],
        "pad_value": op["pad_value"],
    }
    if op["input"] == "bits":
        return packed_lib.xnor_conv(
            x,
            a["xnor"],
            n_in=op["n_in"],
            tap_sums=a.get("tap_sums"),
            **window,
        )
    weights = packed_lib.BinaryWeights(
        a["words_t"],
        a["bytes_t"],
        op["n_in"] * math.prod(op["kernel_size"]),
    )
    return packed_lib.binary_weight_conv(x, weights, a["alpha"], **window)


def _run_op(
    op: Mapping[str, Any], a: Mapping[str, Any], env: dict[str, jax.Array]
) -> jax.Array:
    kind = op["op"]
    if kind == "add":
        x, y = (env[v] for v in op["in"])
        return x + y
    if kind == "concat":
        return jnp.concatenate([env[v] for v in op["in"]], axis=-1)
    x = env[op["in"]]
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "relu":
        return jnp.maximum(x, 0)
    if kind == "sign":
        return x >= 0
    if kind == "mean":
        return jnp.mean(x, axis=tuple(op["axes"]))
    if kind == "scale":
        return x.astype(jnp.float32) * _row(a["alpha"], x.ndim)
    if kind in ("threshold", "count_threshold"):
        return (x >= _row(a["threshold"], x.ndim)) != _row(a["flip"], x.ndim)
    if kind == "batch_norm":
        return packed_lib.batch_norm(
            x, a["mean"], a["var"], a["scale"], a["bias"], op["epsilon"]
        )
    if kind == "rprelu":
        # bnnjax.nn.functional.rprelu, operation for operation.
        z = x - _row(a["gamma"], x.ndim)
        y = jnp.where(z >= 0, z, _row(a["negative_slope"], x.ndim) * z)
        return y + _row(a["zeta"], x.ndim)
    if kind in ("dense", "conv"):
        return _run_real_layer(op, a, x)
    if kind in ("max_pool", "avg_pool"):
        return _run_pool(op, x)
    if kind in ("binary_dense", "binary_conv"):
        return _run_binary_layer(op, a, x)
    raise ValueError(f"unknown op {kind!r}")  # _check_program prevents it


def _execute(
    program: Mapping[str, Any],
    prepared: Sequence[Mapping[str, Any]],
    images: jax.Array,
) -> jax.Array:
    env = {program["input"]: images}
    for op, arrays in zip(program["ops"], prepared, strict=True):
        env[op["out"]] = _run_op(op, arrays, env)
    return env[program["output"]]


def _check_images(packed: PackedModel, images: jax.Array) -> None:
    ops = packed.header["program"]["ops"]
    first: Any = next(  # None only for a program without layers
        (o for o in ops if o["op"] in ("binary_dense", "binary_conv", "conv")),
        None,
    )
    if packed.architecture == "BinaryMLP":
        n = math.prod(images.shape[1:]) if images.ndim >= 2 else None
        if n != first["n_in"]:
            raise ValueError(
                f"BinaryMLP was exported for inputs of {first['n_in']} "
                f"features per example, got images of shape {images.shape}."
            )
    elif images.ndim != 4:
        raise ValueError(
            f"{packed.architecture} expects images (batch, height, width, "
            f"channels), got shape {images.shape}."
        )


def predict(
    packed: PackedModel,
    images: jax.typing.ArrayLike,
    *,
    batch_size: int | None = None,
    model: Any = None,
) -> jax.Array:
    """Logits of a packed model, from its packed arrays.

    Reference architectures (format version 1): matches
    ``model.apply(variables, images, train=False)`` of the exported model
    from the file alone (:doc:`/guides/file_format` states the numerics).
    Models of your own (version 2): ``model`` is required; its code runs
    with every binary layer computed from the packed arrays and every
    other parameter and batch statistic taken from the file, as
    ``model.apply(variables, images, **call_kwargs)`` (linen) or
    ``model(images, **call_kwargs)`` in ``eval()`` mode (nnx) with the
    exported variables. The computation is jit-compiled once per input
    shape and cached on ``packed`` (per model object).

    Args:
      packed: from :func:`pack_model` or :func:`load`.
      images: inputs as the float model takes them (reference
        architectures: cast to float32).
      batch_size: run in chunks of this many examples (default: all).
      model: for a model of your own, its definition: the linen module
        (float or converted by :func:`bnnjax.binarize_model`; its variables
        are not used) or an nnx model of the same structure (cloned; its
        values are replaced by the file's). Must be ``None`` for the
        reference architectures.

    Returns:
      ``(batch, ...)`` outputs (``(batch, num_classes)`` float32 logits
      for the reference architectures).

    Raises:
      ValueError: for inputs of the wrong shape, a missing or mismatched
        ``model``.
    """
    images = jnp.asarray(images)
    if images.ndim < 1:
        raise ValueError("predict expects a batch of inputs.")
    if "model" in packed.header:
        if model is None:
            spec = packed.header["model"]
            raise ValueError(
                f"this file holds a {spec['api']} model of your own "
                f"({spec['class']}); its code is not stored: pass the model "
                "definition, predict(packed, images, model=...)."
            )
        key = ("model", id(model))
        if key not in packed._cache:
            packed._cache[key] = (model, *_generic_runner(packed, model))
        _, run, prepared = packed._cache[key]
    else:
        if model is not None:
            raise ValueError(
                f"this file holds a {packed.architecture} program that runs "
                "from the file alone: call predict without model."
            )
        if images.dtype != jnp.float32:
            images = images.astype(jnp.float32)
        _check_images(packed, images)
        if "run" not in packed._cache:
            program = packed.header["program"]
            packed._cache["run"] = (
                jax.jit(functools.partial(_execute, program)),
                _prepare(packed),
            )
        run, prepared = packed._cache["run"]
    n = images.shape[0]
    if batch_size is None or batch_size >= n:
        return run(prepared, images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    parts = [
        run(prepared, images[i : i + batch_size])
        for i in range(0, n, batch_size)
    ]
    return jnp.concatenate(parts, axis=0)

"""Models of your own: their binary layers packed, other variables kept.

Any linen or nnx model whose binary layers are :mod:`bnnjax.nn` layers
(grouped and depthwise convolutions included) or layers converted by
:func:`bnnjax.binarize_model` packs each binary layer (signs, scales,
bias) and stores every other parameter and batch statistic as float32:
format version 2. Python code is never stored: :func:`predict` takes the
model (its definition) as an argument, as loading any Flax checkpoint does,
and runs it with every binary layer replaced by a packed computation
(:mod:`bnnjax.export._packed_layers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as flax_linen
import jax
import numpy as np
from flax import nnx, traverse_util

from bnnjax import convert as convert_lib
from bnnjax.binarize import Binarizer
from bnnjax.export._kernels import _is_plain_sign, _signs_and_scale
from bnnjax.export._schema import (
    _BIT_LAYOUT,
    _FORMAT,
    _PREFIX_BINARY,
    _PREFIX_VARIABLE,
    FORMAT_VERSION,
    PackedModel,
    _bnnjax_version,
    _LayerSpec,
)
from bnnjax.nn import _checks as nn_checks
from bnnjax.nn import linen as bnn_linen
from bnnjax.nn import nnx as bnn_nnx
from bnnjax.nn.functional import LATENT_KERNEL
from bnnjax.summary import summary as summary_fn

_LINEN_BINARY = (bnn_linen.BinaryDense, bnn_linen.BinaryConv)
_NNX_BINARY = (
    bnn_nnx.BinaryLinear,
    bnn_nnx.BinaryConv,
    convert_lib.BinarizedLinear,
    convert_lib.BinarizedConv,
)
_DENSE_LAYERS = (
    bnn_linen.BinaryDense,
    bnn_nnx.BinaryLinear,
    convert_lib.BinarizedLinear,
    flax_linen.Dense,
)


def _input_kind(binarizer: Binarizer | None, where: str) -> str:
    if binarizer is None:
        return "real"
    if not _is_plain_sign(binarizer):
        raise ValueError(
            f"{where}: input_binarizer={binarizer!r}; export supports real "
            "inputs (None) or sign activations (scale=None, center=False, "
            "deterministic): an input scale or centring depends on the batch."
        )
    return "bits"


def _layer_spec(
    path: tuple[Any, ...],
    module: Any,
    where: str,
    rule: Any = None,
) -> _LayerSpec:
    """The spec of a bnnjax.nn layer, or of a flax layer with its rule."""
    if rule is not None:  # a flax Dense/Conv converted by binarize_model
        kernel_binarizer = rule.kernel_binarizer
        input_binarizer = rule.input_binarizer
        pad_value = rule.pad_value
        kernel_param = "kernel"
    else:
        kernel_binarizer = module.kernel_binarizer
        input_binarizer = module.input_binarizer
        pad_value = getattr(module, "pad_value", 0.0)
        kernel_param = (
            "kernel"
            if isinstance(module, convert_lib._BinarizedLayer)
            else LATENT_KERNEL
        )
    layer = f"{where} layer {'/'.join(map(str, path))!r}"
    dtype = getattr(module, "dtype", None)
    if dtype is not None and np.dtype(dtype) != np.float32:
        raise ValueError(
            f"{layer} has dtype={dtype!r}; export supports float32 only."
        )
    common = {
        "path": tuple(path),
        "kernel_param": kernel_param,
        "kernel_binarizer": kernel_binarizer,
        "input": _input_kind(input_binarizer, layer),
        "use_bias": bool(module.use_bias),
    }
    if isinstance(module, _DENSE_LAYERS):
        return _LayerSpec(kind="dense", **common)
    kernel_size = nn_checks.canonicalize_kernel_size(module.kernel_size)
    rank = len(kernel_size)
    padding = nn_checks.canonicalize_padding(module.padding, rank)
    pad_value = nn_checks.check_pad_value(pad_value, padding)
    mode = isinstance(padding, str) and padding in nn_checks.MODE_PADDINGS
    if common["input"] == "bits" and not mode and pad_value not in (-1, 0, 1):
        raise ValueError(
            f"{layer} pads binary activations with pad_value={pad_value!r}; "
            "export supports -1, 0 and 1."
        )
    return _LayerSpec(
        kind="conv",
        kernel_size=tuple(kernel_size),
        strides=tuple(
            nn_checks.canonicalize_window("strides", module.strides, rank)
        ),
        padding=padding,
        kernel_dilation=tuple(
            nn_checks.canonicalize_window(
                "kernel_dilation", module.kernel_dilation, rank
            )
        ),
        feature_group_count=int(module.feature_group_count),
        pad_value=pad_value,
        **common,
    )


def _float_twin_linen(model: Any) -> Any:
    """The float model of a converted linen module (same fields)."""
    base = getattr(type(model), "_bnnjax_float_type", None)
    if base is None:
        return model
    twin = model.copy()
    object.__setattr__(twin, "__class__", base)
    return twin


def _is_linen_layer_call(context: Any, converted: Mapping[str, Any]) -> bool:
    if context.method_name != "__call__":
        return False
    if isinstance(context.module, _LINEN_BINARY):
        return True
    path = "/".join(context.module.path)
    return path in converted and convert_lib._linen_layer_call(context)


def _call_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    if args:
        return args[0]
    if "inputs" in kwargs:
        return kwargs["inputs"]
    raise TypeError("a binary layer was called without inputs.")


def _linen_specs(
    model: Any,
    variables: Mapping[str, Any],
    example_args: tuple[Any, ...],
    call_kwargs: Mapping[str, Any],
    where: str,
) -> tuple[Any, list[_LayerSpec]]:
    """The float model and its binary layers, in call order (one trace)."""
    converted = dict(getattr(model, "binarized_layers", {}))
    float_model = _float_twin_linen(model)
    specs: dict[str, _LayerSpec] = {}

    def record(
        next_fun: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: Any,
    ) -> Any:
        if _is_linen_layer_call(context, converted):
            path = tuple(context.module.path)
            name = "/".join(path)
            if name not in specs:
                specs[name] = _layer_spec(
                    path, context.module, where, converted.get(name)
                )
        return next_fun(*args, **kwargs)

    def forward(variables: Any, args: tuple[Any, ...]) -> Any:
        return float_model.apply(variables, *args, **call_kwargs)

    with flax_linen.intercept_methods(record):
        try:
            jax.eval_shape(forward, variables, example_args)
        except flax.errors.ScopeParamNotFoundError as error:
            raise ValueError(
                f"{where}: the variables do not match the model: {error}"
            ) from None
    missing = sorted(set(converted) - set(specs))
    if missing:
        raise ValueError(
            f"{where}: the example call does not reach the binarized layers "
            f"{missing}."
        )
    if not specs:
        raise ValueError(
            f"{where} has no binary layer (bnnjax.nn layers or layers "
            "converted by bnnjax.binarize_model) on the example call."
        )
    return float_model, list(specs.values())


def _nnx_specs(model: Any, where: str) -> list[tuple[_LayerSpec, Any]]:
    found = [
        (_layer_spec(tuple(path), module, where), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, _NNX_BINARY)
    ]
    if not found:
        raise ValueError(
            f"{where} has no binary layer (bnnjax.nn.nnx layers or layers "
            "converted by bnnjax.binarize_model)."
        )
    return found


def _float32_leaf(value: Any, where: str, name: str) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype != np.float32:
        raise ValueError(
            f"{where}: {name} has dtype {value.dtype}; export supports "
            "float32 models only."
        )
    if not np.isfinite(value).all():
        raise ValueError(f"{where}: {name} is not finite.")
    return value


def _pack_layer(
    spec: _LayerSpec,
    latent: Any,
    bias: Any,
    where: str,
    arrays: dict[str, np.ndarray],
) -> dict[str, Any]:
    name = spec.name
    latent = _float32_leaf(latent, where, f"{name}/{spec.kernel_param}")
    want_rank = 2 if spec.kind == "dense" else len(spec.kernel_size) + 2
    if latent.ndim != want_rank:
        raise ValueError(
            f"{where}: {name} has a kernel of shape {latent.shape}, not a "
            f"{spec.kind} kernel."
        )
    words, alpha = _signs_and_scale(latent, spec.kernel_binarizer, where, name)
    entry = spec.json()
    entry["n_in"] = int(latent.shape[-2])
    entry["features"] = int(latent.shape[-1])
    entry["kernel"] = f"{_PREFIX_BINARY}{name}/kernel"
    entry["alpha"] = f"{_PREFIX_BINARY}{name}/alpha"
    arrays[entry["kernel"]] = words
    arrays[entry["alpha"]] = alpha
    entry["bias"] = None
    if spec.use_bias:
        entry["bias"] = f"{_PREFIX_BINARY}{name}/bias"
        arrays[entry["bias"]] = _float32_leaf(bias, where, f"{name}/bias")
    return entry


def _packed_keys(spec: _LayerSpec, *prefix: str) -> set[tuple[Any, ...]]:
    """Variable keys a packed layer replaces: its kernel and bias."""
    return {
        (*prefix, *spec.path, spec.kernel_param),
        (*prefix, *spec.path, "bias"),
    }


def _store_variables(
    flat: Mapping[tuple[Any, ...], Any],
    skip: set[tuple[Any, ...]],
    where: str,
    arrays: dict[str, np.ndarray],
) -> None:
    """Every variable but ``skip`` as a float32 ``variables/...`` array."""
    for key, value in flat.items():
        if tuple(key) in skip:
            continue
        name = "/".join(map(str, key))
        arrays[_PREFIX_VARIABLE + name] = _float32_leaf(value, where, name)


def _pack_nnx(
    model: Any,
    variables: Mapping[str, Any] | None,
    where: str,
    arrays: dict[str, np.ndarray],
) -> tuple[list[dict[str, Any]], Any, Any, type]:
    """Packs an nnx model's layers and variables into ``arrays``.

    Returns:
      ``(layers, counted, labels, float_class)``: the layer entries, what
      :func:`bnnjax.summary` counts and its labels, the model's class.
    """
    if variables is not None:
        raise ValueError(
            f"{where} is an nnx model, which holds its own variables: "
            "call pack_model(model) without variables."
        )
    layers = []
    skip = set()
    for spec, module in _nnx_specs(model, where):
        latent = getattr(module, spec.kernel_param)[...]
        bias = None if module.bias is None else module.bias[...]
        layers.append(_pack_layer(spec, latent, bias, where, arrays))
        skip.update(_packed_keys(spec))
    state = nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    _store_variables(traverse_util.flatten_dict(state), skip, where, arrays)
    return layers, model, None, type(model)


def _pack_linen(
    model: Any,
    variables: Mapping[str, Any] | None,
    example_inputs: Any,
    call_kwargs: dict[str, Any],
    where: str,
    arrays: dict[str, np.ndarray],
) -> tuple[list[dict[str, Any]], Any, Any, type]:
    """Packs a linen model's layers and variables into ``arrays``.

    Returns:
      As :func:`_pack_nnx`; ``float_class`` is the class of the float
      model (a converted model's original class).
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            f"{where}: pack_model expects variables {{'params': ...}} for "
            "a linen model."
        )
    if example_inputs is None:
        raise TypeError(
            f"{where} is not a reference architecture: pack_model needs "
            "example_inputs (one call's positional inputs, e.g. "
            "jnp.ones((1, 28, 28, 1))) to find its binary layers."
        )
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    float_model, specs = _linen_specs(
        model, variables, example_inputs, call_kwargs, where
    )
    params = variables["params"]
    layers = []
    skip = set()
    for spec in specs:
        node = params
        for part in spec.path:
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        if spec.kernel_param not in node:
            raise ValueError(
                f"{where}: params have no {spec.name}/"
                f"{spec.kernel_param}; the variables do not match the "
                "model."
            )
        bias = node.get("bias") if spec.use_bias else None
        layers.append(
            _pack_layer(spec, node[spec.kernel_param], bias, where, arrays)
        )
        skip.update(_packed_keys(spec, "params"))
    flat = traverse_util.flatten_dict(dict(variables))
    _store_variables(flat, skip, where, arrays)
    binary_kernels = {("params", *s.path, s.kernel_param) for s in specs}
    labels = traverse_util.unflatten_dict(
        {
            k[1:]: "binary" if k in binary_kernels else "real"
            for k in flat
            if k[0] == "params"
        }
    )
    counted = {k: variables[k] for k in variables}
    return layers, counted, labels, type(float_model)


def _pack_generic(
    model: Any,
    variables: Mapping[str, Any] | None,
    example_inputs: Any,
    call_kwargs: dict[str, Any],
    metadata: dict[str, Any],
) -> PackedModel:
    """pack_model for models of your own (see :func:`pack_model`)."""
    where = type(model).__name__
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, nnx.Module):
        api = "nnx"
        layers, counted, labels, float_class = _pack_nnx(
            model, variables, where, arrays
        )
    else:
        api = "linen"
        layers, counted, labels, float_class = _pack_linen(
            model, variables, example_inputs, call_kwargs, where, arrays
        )
    sizes = summary_fn(counted, labels=labels)
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "bnnjax_version": _bnnjax_version(),
        "jax_version": jax.__version__,
        "architecture": float_class.__name__,
        "model": {
            "api": api,
            "class": f"{float_class.__module__}.{float_class.__qualname__}",
            "call_kwargs": call_kwargs,
            "layers": layers,
            "variables": sorted(
                n for n in arrays if n.startswith(_PREFIX_VARIABLE)
            ),
        },
        "bit_layout": _BIT_LAYOUT,
        "float32_bytes": int(sizes.float32_bytes),
        "deploy_bytes": int(sizes.deploy_bytes),
        "metadata": metadata,
    }
    return PackedModel(header=header, arrays=arrays)

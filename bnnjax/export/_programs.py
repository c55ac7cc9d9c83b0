"""Reference architectures compiled into programs over packed arrays.

:class:`~bnnjax.models.linen.BinaryMLP`,
:class:`~bnnjax.models.linen.BinaryNetCNN`,
:class:`~bnnjax.models.linen.BiRealResNet` and
:class:`~bnnjax.models.linen.ReActNet` (or the :mod:`bnnjax.models.nnx`
model of the same name, through its linen twin) become a program of ops
(:mod:`bnnjax.export._builder`) that runs from the file alone: format
version 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import numpy as np
from flax import nnx, traverse_util

from bnnjax.binarize import Binarizer
from bnnjax.export._builder import _Builder, _Value
from bnnjax.export._kernels import _is_plain_sign
from bnnjax.export._schema import (
    _BIT_LAYOUT,
    _FORMAT,
    _PROGRAM_VERSION,
    PackedModel,
    _binarizer_json,
    _bnnjax_version,
    _model_config,
)
from bnnjax.models import _common as models_common
from bnnjax.models import linen as models_linen
from bnnjax.models import nnx as models_nnx
from bnnjax.summary import summary as summary_fn


def _check_sign_activation(model: Any, field: str) -> Binarizer:
    act = getattr(model, field)
    if not _is_plain_sign(act):
        raise ValueError(
            f"{type(model).__name__}.{field}={act!r}: export supports sign "
            "activations (scale=None, center=False, deterministic); a scale "
            "or centring of activations depends on the whole batch."
        )
    return act


def _check_dtypes(model: Any) -> None:
    for field in ("dtype", "param_dtype"):
        value = getattr(model, field)
        if value is not None and np.dtype(value) != np.float32:
            raise ValueError(
                f"{type(model).__name__}.{field}={value!r}: export supports "
                "float32 models only."
            )


def _same_pads(kernel_size: Sequence[int]) -> list[tuple[int, int]]:
    # 'SAME' with stride 1: (k - 1) // 2 low, the rest high, any input size.
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size]


def _program_mlp(model: Any, b: _Builder) -> _Value:
    act_binary = model.binary_activations
    if act_binary:
        _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    x = b.flatten(b.input())
    depth = len(model.hidden)
    for i, width in enumerate(model.hidden):
        x = b.binary(f"dense_{i}", x, model.kernel_binarizer, width)
        norm = f"dense_norm_{i}"
        next_binarizes = act_binary and (i < depth - 1 or model.binary_last)
        if next_binarizes:
            x = b.batch_norm_sign(norm, x, eps)
        else:
            x = b.batch_norm(norm, x, eps)
            if not act_binary:
                x = b.relu(x)
    if not model.binary_last:
        return b.dense("head", x, model.num_classes)
    x = b.binary("head", x, model.kernel_binarizer, model.num_classes)
    return b.batch_norm("head_norm", x, eps)


def _program_cnn(model: Any, b: _Builder) -> _Value:
    _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    layout = models_common.cnn_layout(
        model.conv_features,
        model.pool_after,
        model.dense_features,
        model.padding,
        model.width_multiplier,
    )
    same = layout.padding == "SAME"
    pads = _same_pads((3, 3)) if same else [(0, 0), (0, 0)]
    x = b.input()
    for i, width in enumerate(layout.conv):
        conv = {
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "dilation": [1, 1],
            "padding": [list(p) for p in pads],
            # Unpadded ('VALID') convolutions never read pad_value.
            "pad_value": float(model.pad_value) if i > 0 and same else 0.0,
        }
        x = b.binary(f"conv_{i}", x, model.kernel_binarizer, width, conv)
        if i in layout.pool_after:
            x = b.max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)))
        x = b.batch_norm_sign(f"conv_norm_{i}", x, eps)
    x = b.flatten(x)
    for i, width in enumerate(layout.dense):
        x = b.binary(f"dense_{i}", x, model.kernel_binarizer, width)
        x = b.batch_norm_sign(f"dense_norm_{i}", x, eps)
    x = b.binary("head", x, model.kernel_binarizer, model.num_classes)
    return b.batch_norm("head_norm", x, eps)


def _resnet_stem(model: Any, b: _Builder) -> tuple[int, int, bool]:
    """``(kernel_size, strides, max_pool)`` of the stem the model ran.

    With ``small_input_stem=None`` the input size chose the stem; the stem
    kernel in the variables tells which one.
    """
    configured = (
        model.stem_kernel_size,
        model.stem_strides,
        model.stem_max_pool,
    )
    small = models_common.stem_layout(True, *configured)
    if model.small_input_stem is not None or small == configured:
        return models_common.stem_layout(
            bool(model.small_input_stem), *configured
        )
    k = b.params_shape("stem_conv", "kernel")[0]
    if configured[0] == small[0]:
        raise ValueError(
            f"{b.where}: small_input_stem=None with a {k}x{k} stem: the "
            "variables do not tell which stem ran; set small_input_stem to "
            "True or False."
        )
    return models_common.stem_layout(k == small[0], *configured)


def _program_resnet(model: Any, b: _Builder) -> _Value:
    _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    stem_features, layout = models_common.bireal_widths(
        model.stage_sizes,
        model.stage_features,
        model.stem_features,
        model.width_multiplier,
    )
    k, stem_strides, max_pool = _resnet_stem(model, b)
    x = b.conv(
        "stem_conv",
        b.input(),
        stem_features,
        (stem_strides,) * 2,
        models_common.stem_padding(k),
    )
    x = b.batch_norm("stem_norm", x, eps)
    if max_pool:
        x = b.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    for i, (features, strides) in enumerate(layout):
        block = f"blocks_{i}"
        conv = {
            "kernel_size": [3, 3],
            "strides": [strides, strides],
            "dilation": [1, 1],
            "padding": [[1, 1], [1, 1]],
            "pad_value": float(model.pad_value),
        }
        y = b.binary(
            f"{block}/conv", b.sign(x), model.kernel_binarizer, features, conv
        )
        y = b.batch_norm(f"{block}/norm", y, eps)
        shortcut = x
        if b.has(f"{block}/shortcut_conv", "kernel"):
            if strides != 1:
                shortcut = b.avg_pool(
                    shortcut, (strides, strides), (strides, strides), "SAME"
                )
            shortcut = b.conv(
                f"{block}/shortcut_conv",
                shortcut,
                features,
                (1, 1),
                ((0, 0), (0, 0)),
            )
            shortcut = b.batch_norm(f"{block}/shortcut_norm", shortcut, eps)
        x = b.add(y, shortcut)
    return b.dense("head", b.mean(x, (1, 2)), model.num_classes)


def _binary_conv_window(
    size: int, strides: int, pad_value: float
) -> dict[str, Any]:
    pad = (size - 1) // 2
    return {
        "kernel_size": [size, size],
        "strides": [strides, strides],
        "dilation": [1, 1],
        "padding": [[pad, pad], [pad, pad]],
        "pad_value": float(pad_value),
    }


def _program_reactnet(model: Any, b: _Builder) -> _Value:
    """ReActNet: every RSign becomes ``x >= beta`` (bits), so both binary
    convolutions of a block run XNOR-popcount on packed bits."""
    _check_sign_activation(model, "activation_binarizer")
    eps = model.bn_epsilon
    rule = model.kernel_binarizer
    stem, layout = models_common.reactnet_layout(
        model.stage_sizes, model.stem_features, model.width_multiplier
    )
    x = b.conv(
        "stem_conv",
        b.input(),
        stem,
        (model.stem_strides,) * 2,
        models_common.stem_padding(3),
    )
    x = b.batch_norm("stem_norm", x, eps)
    for i, (c, features, strides) in enumerate(layout):
        block = f"blocks_{i}"
        bits = b.rsign(f"{block}/rsign_3x3", x)
        window = _binary_conv_window(3, strides, model.pad_value)
        h = b.binary(f"{block}/conv_3x3", bits, rule, c, window)
        h = b.batch_norm(f"{block}/norm_3x3", h, eps)
        shortcut = x
        if strides != 1:
            pool = (strides, strides)
            shortcut = b.avg_pool(x, pool, pool, "SAME")
        h = b.rprelu(f"{block}/rprelu_3x3", b.add(h, shortcut))
        bits = b.rsign(f"{block}/rsign_1x1", h)
        outs = []
        for j in range(features // c):
            window = _binary_conv_window(1, 1, model.pad_value)
            y = b.binary(f"{block}/conv_1x1_{j}", bits, rule, c, window)
            y = b.batch_norm(f"{block}/norm_1x1_{j}", y, eps)
            outs.append(b.add(y, h))
        x = outs[0] if len(outs) == 1 else b.concat(outs)
        x = b.rprelu(f"{block}/rprelu_1x1", x)
    return b.dense("head", b.mean(x, (1, 2)), model.num_classes)


_PROGRAMS: dict[type, Callable[[Any, _Builder], _Value]] = {
    models_linen.BinaryMLP: _program_mlp,
    models_linen.BinaryNetCNN: _program_cnn,
    models_linen.BiRealResNet: _program_resnet,
    models_linen.ReActNet: _program_reactnet,
}
_NNX_REFERENCE = (
    models_nnx.BinaryMLP,
    models_nnx.BinaryNetCNN,
    models_nnx.BiRealResNet,
    models_nnx.ReActNet,
)


def _nnx_path_to_linen(path: Sequence[Any]) -> tuple[str, ...]:
    # nnx ``blocks[3].conv`` is linen ``blocks_3/conv``.
    names: list[str] = []
    for part in path:
        if isinstance(part, int):
            names[-1] = f"{names[-1]}_{part}"
        else:
            names.append(str(part))
    return tuple(names)


def _nnx_collection(model: Any, kind: type) -> dict[str, Any]:
    pure = nnx.to_pure_dict(nnx.state(model, kind))
    flat = traverse_util.flatten_dict(pure)
    return traverse_util.unflatten_dict(
        {_nnx_path_to_linen(k): np.asarray(v) for k, v in flat.items()}
    )


def _linen_twin(model: Any) -> tuple[Any, dict[str, Any]]:
    """The linen reference model and variables equal to an nnx one.

    The nnx and linen reference models compute the same function from the
    same parameters (tested in ``tests/test_models.py``); their parameter
    trees differ only in list indices (nnx ``dense[1]`` is linen
    ``dense_1``).
    """
    twin: (
        models_linen.BinaryMLP
        | models_linen.BinaryNetCNN
        | models_linen.BiRealResNet
        | models_linen.ReActNet
    )
    if isinstance(model, models_nnx.BinaryMLP):
        norm = model.dense_norm[0]
        twin = models_linen.BinaryMLP(
            hidden=tuple(model.hidden),
            num_classes=model.num_classes,
            binary_activations=model.binary_activations,
            binary_last=model.binary_last,
            kernel_binarizer=model.kernel_binarizer,
            activation_binarizer=model.activation_binarizer,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    elif isinstance(model, models_nnx.BinaryNetCNN):
        norm = model.conv_norm[0]
        twin = models_linen.BinaryNetCNN(
            num_classes=model.num_classes,
            width_multiplier=model.width_multiplier,
            conv_features=model.conv_features,
            pool_after=model.pool_after,
            dense_features=model.dense_features,
            padding=model.padding,
            kernel_binarizer=model.kernel_binarizer,
            activation_binarizer=model.activation_binarizer,
            pad_value=model.pad_value,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    elif isinstance(model, models_nnx.BiRealResNet):
        norm, stem, conv = (
            model.stem_norm,
            model.stem_conv,
            model.blocks[0].conv,
        )
        twin = models_linen.BiRealResNet(
            stage_sizes=model.stage_sizes,
            stage_features=model.stage_features,
            num_classes=model.num_classes,
            stem_features=model.stem_features,
            stem_kernel_size=stem.kernel_size[0],
            # BiRealResNet builds its stem with int strides.
            stem_strides=stem.strides[0]
            if isinstance(stem.strides, Sequence)
            else cast(int, stem.strides),
            stem_max_pool=model.stem_max_pool,
            small_input_stem=model.small_input_stem,
            width_multiplier=model.width_multiplier,
            kernel_binarizer=conv.kernel_binarizer,
            # A Bi-Real block always binarizes its inputs.
            activation_binarizer=cast(Binarizer, conv.input_binarizer),
            pad_value=conv.pad_value,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    elif isinstance(model, models_nnx.ReActNet):
        norm = model.stem_norm
        twin = models_linen.ReActNet(
            stage_sizes=model.stage_sizes,
            stem_features=model.stem_features,
            stem_strides=model.stem_strides,
            num_classes=model.num_classes,
            width_multiplier=model.width_multiplier,
            kernel_binarizer=model.kernel_binarizer,
            activation_binarizer=model.activation_binarizer,
            pad_value=model.pad_value,
            bn_momentum=norm.momentum,
            bn_epsilon=norm.epsilon,
            dtype=norm.dtype,
            param_dtype=norm.param_dtype,
        )
    else:
        raise TypeError(
            "pack_model supports BinaryMLP, BinaryNetCNN, BiRealResNet and "
            f"ReActNet from bnnjax.models.nnx, got {type(model).__name__}."
        )
    variables = {
        "params": _nnx_collection(model, nnx.Param),
        "batch_stats": _nnx_collection(model, nnx.BatchStat),
    }
    return twin, variables


def _is_reference(model: Any) -> bool:
    """Whether ``model`` is a reference architecture (linen or nnx)."""
    return isinstance(model, _NNX_REFERENCE) or type(model) in _PROGRAMS


def _pack_reference(
    model: Any,
    variables: Mapping[str, Any] | None,
    metadata: dict[str, Any],
) -> PackedModel:
    """pack_model for the reference architectures (format version 1)."""
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise ValueError(
                f"{type(model).__name__} is an nnx model, which holds its "
                "own variables: call pack_model(model) without variables."
            )
        model, variables = _linen_twin(model)
    program = _PROGRAMS.get(type(model))
    if program is None:
        raise TypeError(
            f"pack_model supports {sorted(c.__name__ for c in _PROGRAMS)} "
            f"from bnnjax.models.linen, got {type(model).__name__}."
        )
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            "pack_model expects variables {'params': ..., 'batch_stats': "
            f"...}}, got {type(variables).__name__} with keys "
            f"{sorted(variables) if isinstance(variables, Mapping) else '?'}."
        )
    _check_dtypes(model)
    where = type(model).__name__
    b = _Builder(variables["params"], variables.get("batch_stats", {}), where)
    output = b._real(program(model, b))
    b.check_all_used()
    counted = {
        k: variables[k] for k in ("params", "batch_stats") if k in variables
    }
    sizes = summary_fn(counted)
    header = {
        "format": _FORMAT,
        "format_version": _PROGRAM_VERSION,
        "bnnjax_version": _bnnjax_version(),
        "jax_version": jax.__version__,
        "architecture": type(model).__name__,
        "config": _model_config(model),
        "binarizers": {
            "kernel": _binarizer_json(model.kernel_binarizer),
            "activation": _binarizer_json(model.activation_binarizer),
        },
        "bit_layout": _BIT_LAYOUT,
        "program": {"input": "input", "output": output.name, "ops": b.ops},
        "float32_bytes": int(sizes.float32_bytes),
        "deploy_bytes": int(sizes.deploy_bytes),
        "metadata": metadata,
    }
    return PackedModel(header=header, arrays=dict(b.arrays))

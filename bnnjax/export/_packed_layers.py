"""A model of your own, run with its binary layers computed from bits.

The model's own code runs; each binary layer is replaced by a computation
from its packed arrays (:func:`_packed_layer_call`): through flax method
interception for linen, through module surgery for nnx. Every other
parameter and batch statistic comes from the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as flax_linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from bnnjax import convert as convert_lib
from bnnjax import packed as packed_lib
from bnnjax.export._own_models import (
    _NNX_BINARY,
    _call_input,
    _float_twin_linen,
)
from bnnjax.export._schema import (
    _PREFIX_VARIABLE,
    PackedModel,
    _LayerSpec,
    _spec_from_json,
)
from bnnjax.nn import _checks as nn_checks
from bnnjax.nn import functional as nn_functional


def _row(v: jax.Array, ndim: int) -> jax.Array:
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _prepare_layer(
    entry: Mapping[str, Any], arrays: Mapping[str, Any]
) -> dict[str, Any]:
    words = jnp.asarray(arrays[entry["kernel"]])
    prepared: dict[str, Any] = {"alpha": jnp.asarray(arrays[entry["alpha"]])}
    if entry["bias"] is not None:
        prepared["bias"] = jnp.asarray(arrays[entry["bias"]])
    if entry["input"] == "bits":
        prepared["xnor"] = packed_lib.prepare_xnor_kernel(words)
        if entry["kind"] == "conv" and entry["pad_value"] == 0.0:
            prepared["tap_sums"] = packed_lib.kernel_tap_sums(
                words, entry["n_in"]
            )
    else:
        prepared["weights"] = packed_lib.prepare_binary_weights(
            words, entry["n_in"]
        )
    return prepared


def _prepare_layers(
    names: Sequence[str],
    entries: Sequence[Mapping[str, Any]],
    arrays: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Every layer's :func:`_prepare_layer` arrays, by layer name, computed
    by one jit-compiled program (not one per layer shape or eager op)."""
    used = sorted(
        {
            e[field]
            for e in entries
            for field in ("kernel", "alpha", "bias")
            if e[field] is not None
        }
    )

    def layouts(mine: Mapping[str, jax.Array]) -> dict[str, dict[str, Any]]:
        return {
            name: _prepare_layer(e, mine)
            for name, e in zip(names, entries, strict=True)
        }

    return jax.jit(layouts)({name: arrays[name] for name in used})


def _packed_conv(
    spec: _LayerSpec, n_in: int, a: Mapping[str, Any], x: jax.Array
) -> jax.Array:
    """The convolution of :func:`_packed_layer_call` (no bias)."""
    alpha = a["alpha"]
    rank = len(spec.kernel_size)
    batch_shape = x.shape[: x.ndim - rank - 1]
    x = x.reshape(-1, *x.shape[x.ndim - rank - 1 :])
    pads = nn_functional.explicit_padding(
        spec.padding,
        x.shape[1:-1],
        spec.kernel_size,
        spec.strides,
        spec.kernel_dilation,
    )
    window: dict[str, Any] = {
        "kernel_size": spec.kernel_size,
        "strides": spec.strides,
        "dilation": spec.kernel_dilation,
        "feature_group_count": spec.feature_group_count,
    }
    mode = (
        isinstance(spec.padding, str)
        and spec.padding in nn_checks.MODE_PADDINGS
    )
    if spec.input == "bits":
        bits = x >= 0
        pad_value = spec.pad_value
        if mode:
            bits = nn_functional.pad_inputs(bits, spec.padding, pads)
            pads, pad_value = ((0, 0),) * rank, 1.0
        counts = packed_lib.xnor_conv(
            bits,
            a["xnor"],
            n_in=n_in,
            padding=pads,
            pad_value=pad_value,
            tap_sums=a.get("tap_sums"),
            **window,
        )
        y = counts.astype(jnp.float32) * _row(alpha, counts.ndim)
    else:
        x = nn_functional.pad_inputs(x, spec.padding, pads, spec.pad_value)
        y = packed_lib.binary_weight_conv(
            x,
            a["weights"],
            alpha,
            padding=((0, 0),) * rank,
            **window,
        )
    return y.reshape(*batch_shape, *y.shape[1:])


def _packed_layer_call(
    spec: _LayerSpec, n_in: int, a: Mapping[str, Any], inputs: Any
) -> jax.Array:
    """A binary layer from its packed arrays: what its float layer computes.

    ``(binarize_in(x) @ S) * alpha + bias`` (dense) or the convolution
    with ``S``, padded as the float layer pads; ``+-1`` inputs by
    XNOR-popcount (exact counts), real inputs by
    :func:`bnnjax.packed.binary_weight_dense`/``binary_weight_conv``.
    """
    x = jnp.asarray(inputs)
    x = x.astype(jnp.float32)
    alpha = a["alpha"]
    if spec.kind == "dense":
        if spec.input == "bits":
            counts = packed_lib.xnor_dense(
                packed_lib.pack_bits(x >= 0), a["xnor"], n_in
            )
            y = counts.astype(jnp.float32) * _row(alpha, counts.ndim)
        else:
            y = packed_lib.binary_weight_dense(x, a["weights"], alpha)
    else:
        y = _packed_conv(spec, n_in, a, x)
    if "bias" in a:
        y = y + _row(a["bias"], y.ndim)
    return y


class _PackedArray(nnx.Variable[jax.Array]):
    """A packed layer's array inside an nnx model (not a parameter)."""


class _PackedNnxLayer(nnx.Module):
    """Stands in for an nnx binary layer: computes from packed arrays."""

    def __init__(
        self, spec: _LayerSpec, n_in: int, prepared: Mapping[str, Any]
    ) -> None:
        self.spec = spec
        self.n_in = n_in
        leaves, self.treedef = jax.tree_util.tree_flatten(dict(prepared))
        self.leaves = nnx.List([_PackedArray(v) for v in leaves])

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> jax.Array:
        del args, kwargs  # progress, out_sharding: no effect at inference
        prepared = jax.tree_util.tree_unflatten(
            self.treedef, [v[...] for v in self.leaves]
        )
        return _packed_layer_call(self.spec, self.n_in, prepared, inputs)


def _model_name(model: Any) -> str:
    cls = type(model)
    if isinstance(model, flax_linen.Module):
        cls = getattr(cls, "_bnnjax_float_type", cls)
    return cls.__name__


def _linen_runner(
    model: Any,
    specs: list[_LayerSpec],
    n_in: Mapping[str, int],
    variables: Mapping[str, jax.Array],
    call_kwargs: Mapping[str, Any],
    where: str,
) -> tuple[Callable[..., Any], Any]:
    """A linen model whose binary layer calls are intercepted."""
    float_model = _float_twin_linen(model)
    by_name = {s.name: s for s in specs}
    tree = traverse_util.unflatten_dict(
        {tuple(k.split("/")): v for k, v in variables.items()}
    )

    def run(state: tuple[Any, Any], images: jax.Array) -> Any:
        layer_arrays, variables = state
        seen = set()

        def interceptor(
            next_fun: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            context: Any,
        ) -> Any:
            name = "/".join(context.module.path)
            s = by_name.get(name)
            if s is not None and context.method_name == "__call__":
                seen.add(name)
                return _packed_layer_call(
                    s,
                    n_in[name],
                    layer_arrays[name],
                    _call_input(args, kwargs),
                )
            return next_fun(*args, **kwargs)

        with flax_linen.intercept_methods(interceptor):
            out = float_model.apply(variables, images, **call_kwargs)
        if len(seen) != len(by_name):
            raise ValueError(
                f"the model does not call the packed layers "
                f"{sorted(set(by_name) - seen)}: it is not the exported "
                f"{where}."
            )
        return out

    return jax.jit(run), tree


def _nnx_runner(
    model: Any,
    specs: list[_LayerSpec],
    n_in: Mapping[str, int],
    prepared: Mapping[str, Any],
    variables: Mapping[str, jax.Array],
    call_kwargs: Mapping[str, Any],
    where: str,
) -> tuple[Callable[..., Any], Any]:
    """A clone of an nnx model with packed layers and the file's values."""
    clone = nnx.clone(model)
    modules = {tuple(p): m for p, m in nnx.iter_modules(clone)}
    replacements = {}
    for s in specs:
        module = modules.get(s.path)
        if not isinstance(module, (*_NNX_BINARY, nnx.Linear, nnx.Conv)):
            raise ValueError(
                f"the model has no dense or conv layer at {s.name}: it is not "
                f"the exported {where}."
            )
        replacements[id(module)] = _PackedNnxLayer(
            s, n_in[s.name], prepared[s.name]
        )
    clone = convert_lib._replace_modules(clone, replacements)
    state = nnx.state(clone, (nnx.Param, nnx.BatchStat))
    pure = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    names = {"/".join(map(str, k)): k for k in pure}
    if set(names) != set(variables):
        raise ValueError(
            f"the model's parameters and batch statistics do not match the "
            f"file: missing {sorted(set(variables) - set(names))[:5]}, "
            f"unexpected {sorted(set(names) - set(variables))[:5]}."
        )
    nnx.replace_by_pure_dict(
        state,
        traverse_util.unflatten_dict(
            {names[n]: v for n, v in variables.items()}
        ),
    )
    nnx.update(clone, state)
    clone.eval()
    graphdef, state = nnx.split(clone)

    def run_nnx(state: nnx.State[Any, Any], images: jax.Array) -> Any:
        return nnx.merge(graphdef, state)(images, **call_kwargs)

    return jax.jit(run_nnx), state


def _generic_runner(
    packed: PackedModel, model: Any
) -> tuple[Callable[..., Any], Any]:
    """(jitted function of (state, images), state) for ``model``."""
    spec = packed.header["model"]
    where = packed.architecture
    api = "nnx" if isinstance(model, nnx.Module) else "linen"
    if api != spec["api"]:
        raise ValueError(
            f"this file holds a {spec['api']} model; got a {api} model."
        )
    if _model_name(model) != where:
        raise ValueError(
            f"this file holds a {where} ({spec['class']}); got a model of "
            f"class {_model_name(model)}."
        )
    arrays = packed.arrays
    call_kwargs = dict(spec["call_kwargs"])
    entries = spec["layers"]
    specs = [_spec_from_json(e) for e in entries]
    prepared = _prepare_layers([s.name for s in specs], entries, arrays)
    n_in = {s.name: int(e["n_in"]) for s, e in zip(specs, entries, strict=True)}
    variables = {
        name[len(_PREFIX_VARIABLE) :]: jnp.asarray(arrays[name])
        for name in spec["variables"]
    }
    if api == "linen":
        run, tree = _linen_runner(
            model, specs, n_in, variables, call_kwargs, where
        )
        return run, (prepared, tree)
    return _nnx_runner(
        model, specs, n_in, prepared, variables, call_kwargs, where
    )

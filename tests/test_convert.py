"""bnnjax.convert: binarize existing linen and nnx models."""

import functools
from typing import Any

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized
from flax import nnx

import bnnjax
from bnnjax.convert import (
    BinarizedConv,
    BinarizedLinear,
    BinarizeRule,
    binarize_model,
)
from bnnjax.nn import linen as bnn_linen
from bnnjax.nn import nnx as bnn_nnx
from bnnjax.nn.nnx import LatentParam

SIGN = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
STE_KERNEL = bnnjax.Binarizer(surrogate="ste", axis=-1)
X_MLP = jax.random.normal(jax.random.key(1), (4, 6))
X_CNN = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
# (name, features, strides) of the CNN's convolutions, all 3x3 SAME.
CONVS = (("c0", 4, 1), ("c1", 6, 2), ("c2", 6, (1, 2)))
MLP_SIZES = (6, 8, 8, 8, 3)


# -- the same architectures, float or hand-written binary --------------------
# ``binary`` maps a layer name to the extras of its bnnjax.nn binary layer;
# layers not in it are flax's float layers.


class LinenMLP(nn.Module):
    binary: Any = None

    @nn.compact
    def __call__(self, x):
        binary = self.binary or {}
        for i, features in enumerate(MLP_SIZES[1:]):
            name = f"d{i}"
            if name in binary:
                layer = bnn_linen.BinaryDense(
                    features, name=name, **binary[name]
                )
            else:
                layer = nn.Dense(features, name=name)
            x = layer(x)
            if i < 3:
                x = jnp.tanh(x)
        return x


class LinenCNN(nn.Module):
    binary: Any = None

    @nn.compact
    def __call__(self, x):
        binary = self.binary or {}
        for name, features, strides in CONVS:
            kwargs = {"strides": strides, "padding": "SAME", "name": name}
            if name in binary:
                layer = bnn_linen.BinaryConv(
                    features, (3, 3), **kwargs, **binary[name]
                )
            else:
                layer = nn.Conv(features, (3, 3), **kwargs)
            x = jnp.tanh(layer(x))
        x = x.reshape((x.shape[0], -1))
        if "head" in binary:
            return bnn_linen.BinaryDense(3, name="head", **binary["head"])(x)
        return nn.Dense(3, name="head")(x)


class NnxMLP(nnx.Module):
    def __init__(self, binary=None, *, rngs):
        binary = binary or {}
        for i in range(4):
            name, n_in, n_out = f"d{i}", MLP_SIZES[i], MLP_SIZES[i + 1]
            if name in binary:
                layer = bnn_nnx.BinaryLinear(
                    n_in, n_out, rngs=rngs, **binary[name]
                )
            else:
                layer = nnx.Linear(n_in, n_out, rngs=rngs)
            setattr(self, name, layer)

    def __call__(self, x):
        for i in range(4):
            x = getattr(self, f"d{i}")(x)
            if i < 3:
                x = jnp.tanh(x)
        return x


class NnxCNN(nnx.Module):
    def __init__(self, binary=None, *, rngs):
        binary = binary or {}
        n_in = 3
        for name, features, strides in CONVS:
            kwargs = {"strides": strides, "padding": "SAME", "rngs": rngs}
            if name in binary:
                layer = bnn_nnx.BinaryConv(
                    n_in, features, (3, 3), **kwargs, **binary[name]
                )
            else:
                layer = nnx.Conv(n_in, features, (3, 3), **kwargs)
            setattr(self, name, layer)
            n_in = features
        if "head" in binary:
            self.head = bnn_nnx.BinaryLinear(48, 3, rngs=rngs, **binary["head"])
        else:
            self.head = nnx.Linear(48, 3, rngs=rngs)

    def __call__(self, x):
        for name, _, _ in CONVS:
            x = jnp.tanh(getattr(self, name)(x))
        return self.head(x.reshape((x.shape[0], -1)))


ARCHS = {
    "mlp": (LinenMLP, NnxMLP, X_MLP),
    "cnn": (LinenCNN, NnxCNN, X_CNN),
}

# rules (None: the default) -> {layer: extras of the hand-written layer}.
CASES = {
    ("mlp", "default"): (None, {"d1": {}, "d2": {}}),
    ("mlp", "explicit"): (
        [
            BinarizeRule(module_path="d0", kernel_binarizer=None),
            BinarizeRule(kernel_binarizer=STE_KERNEL, input_binarizer=SIGN),
        ],
        {
            name: {"kernel_binarizer": STE_KERNEL, "input_binarizer": SIGN}
            for name in ("d1", "d2", "d3")
        },
    ),
    ("cnn", "default"): (None, {"c1": {}, "c2": {}}),
    ("cnn", "explicit"): (
        [
            BinarizeRule(module_path="c0", kernel_binarizer=None),
            BinarizeRule(
                module_types=(nn.Conv, nnx.Conv),
                input_binarizer=SIGN,
                pad_value=-1.0,
            ),
            BinarizeRule(
                module_path="head",
                kernel_binarizer=STE_KERNEL,
                input_binarizer=SIGN,
            ),
        ],
        {
            "c1": {"input_binarizer": SIGN, "pad_value": -1.0},
            "c2": {"input_binarizer": SIGN, "pad_value": -1.0},
            "head": {"kernel_binarizer": STE_KERNEL, "input_binarizer": SIGN},
        },
    ),
}


def _rename_kernels(tree, names, old, new):
    """Renames ``old`` to ``new`` in the sub-dicts of the layers ``names``."""
    return {
        layer: (
            {(new if k == old else k): v for k, v in sub.items()}
            if layer in names
            else sub
        )
        for layer, sub in tree.items()
    }


def _vjp(fn, params, x):
    y, pullback = jax.vjp(fn, params, x)
    return (y, *pullback(jnp.cos(y)))


def _assert_trees_equal(got, want):
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_equal(got, want, strict=True)


class ConvertedEqualsHandWrittenTest(parameterized.TestCase):
    """The key property: conversion computes what bnnjax.nn layers compute.

    Both models run in one jitted program on the same weights, so the
    outputs and gradients are compared exactly (assert_array_equal): the
    converted layers call the same pure functions with the same arguments.
    """

    @parameterized.product(arch=("mlp", "cnn"), rules=("default", "explicit"))
    def test_linen(self, arch, rules):
        float_cls, _, x = ARCHS[arch]
        rule_list, binary = CASES[arch, rules]
        converted = binarize_model(float_cls(), x, rules=rule_list)
        self.assertEqual(dict(converted.binarized_layers).keys(), binary.keys())
        hand = float_cls(binary=binary)
        params = float_cls().init(jax.random.key(0), x)["params"]
        params = jax.tree.map(lambda p: p + 0.01, params)  # nonzero biases
        hand_params = _rename_kernels(params, binary, "kernel", "latent_kernel")

        @jax.jit
        def run(params, hand_params, x):
            return (
                _vjp(lambda p, x: converted.apply({"params": p}, x), params, x),
                _vjp(lambda p, x: hand.apply({"params": p}, x), hand_params, x),
                float_cls().apply({"params": params}, x),
            )

        (y, grads, dx), (y_h, grads_h, dx_h), y_float = run(
            params, hand_params, x
        )
        np.testing.assert_array_equal(y, y_h)
        np.testing.assert_array_equal(dx, dx_h)
        grads_h = _rename_kernels(grads_h, binary, "latent_kernel", "kernel")
        _assert_trees_equal(grads, grads_h)
        for name in binary:  # the latent kernels do get gradients
            self.assertGreater(float(jnp.abs(grads[name]["kernel"]).sum()), 0)
        # The conversion did change the function.
        self.assertGreater(float(jnp.abs(y - y_float).max()), 1e-3)

    @parameterized.product(arch=("mlp", "cnn"), rules=("default", "explicit"))
    def test_nnx(self, arch, rules):
        _, float_cls, x = ARCHS[arch]
        rule_list, binary = CASES[arch, rules]
        float_model = float_cls(rngs=nnx.Rngs(0))
        for _, module in nnx.iter_modules(float_model):
            if isinstance(module, (nnx.Linear, nnx.Conv)):
                module.bias[...] = module.bias[...] + 0.01
        converted = binarize_model(float_model, x, rules=rule_list)
        hand = float_cls(binary=binary, rngs=nnx.Rngs(1))
        for name, module in nnx.iter_children(float_model):
            target = getattr(hand, name)
            kernel = target.latent_kernel if name in binary else target.kernel
            kernel.set_value(module.kernel[...])
            target.bias.set_value(module.bias[...])
        for name in binary:
            layer = getattr(converted, name)
            self.assertIsInstance(layer, (BinarizedLinear, BinarizedConv))
            self.assertIsInstance(layer.kernel, LatentParam)
        graphdef, state = nnx.split(converted)
        hand_graphdef, hand_state = nnx.split(hand)

        def apply(graphdef, state, x):
            return nnx.merge(graphdef, state)(x)

        @jax.jit
        def run(state, hand_state, x):
            return (
                _vjp(functools.partial(apply, graphdef), state, x),
                _vjp(functools.partial(apply, hand_graphdef), hand_state, x),
            )

        (y, grads, dx), (y_h, grads_h, dx_h) = run(state, hand_state, x)
        np.testing.assert_array_equal(y, y_h)
        np.testing.assert_array_equal(dx, dx_h)
        grads = nnx.to_pure_dict(grads)
        grads_h = _rename_kernels(
            nnx.to_pure_dict(grads_h), binary, "latent_kernel", "kernel"
        )
        _assert_trees_equal(grads, grads_h)
        for name in binary:
            self.assertGreater(float(jnp.abs(grads[name]["kernel"]).sum()), 0)
        self.assertGreater(float(jnp.abs(y - float_model(x)).max()), 1e-3)


class LinenShuffled(nn.Module):
    """Setup (and name) order differs from call order."""

    def setup(self):
        self.a_out = nn.Dense(2)
        self.b_mid = nn.Dense(5)
        self.m = nn.Dense(5)
        self.z_in = nn.Dense(5)

    def __call__(self, x):
        x = jnp.tanh(self.z_in(x))
        x = jnp.tanh(self.m(x))
        x = jnp.tanh(self.b_mid(x))
        return self.a_out(x)


class NnxShuffled(nnx.Module):
    def __init__(self, rngs):
        self.a_out = nnx.Linear(5, 2, rngs=rngs)
        self.b_mid = nnx.Linear(5, 5, rngs=rngs)
        self.m = nnx.Linear(5, 5, rngs=rngs)
        self.z_in = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x):
        x = jnp.tanh(self.z_in(x))
        x = jnp.tanh(self.m(x))
        x = jnp.tanh(self.b_mid(x))
        return self.a_out(x)


class DefaultRulesTest(absltest.TestCase):
    def test_linen_keeps_first_and_last_in_call_order(self):
        model = LinenShuffled()
        converted = binarize_model(model, X_MLP)
        self.assertEqual(sorted(converted.binarized_layers), ["b_mid", "m"])
        self.assertEqual(
            converted.binarized_layers["m"].kernel_binarizer,
            bnnjax.Binarizer(axis=-1),
        )
        self.assertIsNone(converted.binarized_layers["m"].input_binarizer)
        variables = model.init(jax.random.key(0), X_MLP)
        params = variables["params"]
        _, float_inter = model.apply(
            variables, X_MLP, capture_intermediates=True
        )
        y, inter = converted.apply(variables, X_MLP, capture_intermediates=True)
        got, want = (
            {
                k: v["__call__"][0]
                for k, v in tree["intermediates"].items()
                if k != "__call__"
            }
            for tree in (inter, float_inter)
        )
        # The model's own __call__ runs (and is recorded) once, as before.
        self.assertLen(inter["intermediates"]["__call__"], 1)
        np.testing.assert_array_equal(inter["intermediates"]["__call__"][0], y)
        # First layer: untouched output.
        np.testing.assert_array_equal(got["z_in"], want["z_in"])
        # Last layer: a float Dense of its (binary-network) inputs.
        last = nn.Dense(2).apply(
            {"params": params["a_out"]}, jnp.tanh(got["b_mid"])
        )
        np.testing.assert_array_equal(got["a_out"], last)
        np.testing.assert_array_equal(y, last)
        # Middle layer: binary, i.e. not the float Dense of its inputs.
        middle = nn.Dense(5).apply(
            {"params": params["m"]}, jnp.tanh(got["z_in"])
        )
        binary = bnn_linen.BinaryDense(5).apply(
            {
                "params": _rename_kernels(
                    params, ["m"], "kernel", "latent_kernel"
                )["m"]
            },
            jnp.tanh(got["z_in"]),
        )
        np.testing.assert_array_equal(got["m"], binary)
        self.assertGreater(float(jnp.abs(got["m"] - middle).max()), 1e-3)

    def test_nnx_keeps_first_and_last_in_call_order(self):
        model = NnxShuffled(nnx.Rngs(0))
        converted = binarize_model(model, X_MLP)
        self.assertIs(type(converted.z_in), nnx.Linear)
        self.assertIs(type(converted.a_out), nnx.Linear)
        self.assertIsInstance(converted.m, BinarizedLinear)
        self.assertIsInstance(converted.b_mid, BinarizedLinear)
        self.assertEqual(
            converted.m.kernel_binarizer, bnnjax.Binarizer(axis=-1)
        )
        self.assertIsNone(converted.m.input_binarizer)
        np.testing.assert_array_equal(converted.z_in(X_MLP), model.z_in(X_MLP))
        h = jnp.ones((3, 5))
        np.testing.assert_array_equal(converted.a_out(h), model.a_out(h))
        self.assertGreater(
            float(jnp.abs(converted.m(h) - model.m(h)).max()), 1e-3
        )
        # The float model is not modified.
        self.assertIs(type(model.m), nnx.Linear)
        self.assertIs(type(model.m.kernel), nnx.Param)

    def test_too_few_layers_for_the_default(self):
        class Two(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(2)(nn.Dense(3)(x))

        with self.assertRaisesRegex(
            ValueError, r"calls only 2: 'Dense_1'.*'Dense_0'"
        ):
            binarize_model(Two(), X_MLP)
        # (The inner Dense_1 is called first.) Explicit rules can binarize both.
        converted = binarize_model(Two(), X_MLP, rules=[BinarizeRule()])
        self.assertEqual(
            sorted(converted.binarized_layers), ["Dense_0", "Dense_1"]
        )


class ParameterTreeTest(absltest.TestCase):
    def test_linen_tree_and_checkpoint(self):
        model = LinenCNN()
        converted = binarize_model(model, X_CNN)
        float_vars = model.init(jax.random.key(0), X_CNN)
        conv_vars = converted.init(jax.random.key(0), X_CNN)
        # Same paths, shapes, dtypes, and (same initializers) values.
        _assert_trees_equal(conv_vars, float_vars)
        # A float checkpoint of other weights loads unchanged.
        other = model.init(jax.random.key(7), X_CNN)
        restored = flax.serialization.from_bytes(
            conv_vars, flax.serialization.to_bytes(other)
        )
        _assert_trees_equal(restored, other)
        y = jax.jit(converted.apply)(restored, X_CNN)
        self.assertEqual(y.shape, (2, 3))
        self.assertTrue(bool(jnp.isfinite(y).all()))

    def test_nnx_state_and_update(self):
        model = NnxCNN(rngs=nnx.Rngs(0))
        converted = binarize_model(model, X_CNN)

        def flat(state):
            return {
                path: (v.get_value().shape, v.get_value().dtype, type(v))
                for path, v in nnx.to_flat_state(state)
            }

        got, want = flat(nnx.state(converted)), flat(nnx.state(model))
        self.assertEqual(got.keys(), want.keys())
        for path in want:
            self.assertEqual(got[path][:2], want[path][:2], path)
            kind = (
                LatentParam
                if path in {("c1", "kernel"), ("c2", "kernel")}
                else nnx.Param
            )
            self.assertIs(got[path][2], kind, path)
        _assert_trees_equal(
            nnx.to_pure_dict(nnx.state(converted)),
            nnx.to_pure_dict(nnx.state(model)),
        )
        # Another float model's state loads; variable types stay.
        other = NnxCNN(rngs=nnx.Rngs(5))
        nnx.update(converted, nnx.state(other))
        _assert_trees_equal(
            nnx.to_pure_dict(nnx.state(converted)),
            nnx.to_pure_dict(nnx.state(other)),
        )
        self.assertIsInstance(converted.c1.kernel, LatentParam)
        self.assertIs(type(model.c1.kernel), nnx.Param)
        self.assertEqual(converted(X_CNN).shape, (2, 3))

    def test_nnx_lists_shared_and_root_layers(self):
        class Stack(nnx.Module):
            def __init__(self, rngs):
                self.layers = nnx.List(
                    [nnx.Linear(6, 6, rngs=rngs) for _ in range(3)]
                )
                self.tied = self.layers[1]  # a shared reference

            def __call__(self, x):
                for layer in self.layers:
                    x = layer(x)
                return self.tied(x)

        converted = binarize_model(
            Stack(nnx.Rngs(0)),
            X_MLP,
            rules=[BinarizeRule(module_path="layers/1")],
        )
        self.assertIsInstance(converted.layers[1], BinarizedLinear)
        self.assertIs(converted.tied, converted.layers[1])
        self.assertIs(type(converted.layers[0]), nnx.Linear)
        self.assertEqual(
            sorted(
                p
                for p, _ in nnx.to_flat_state(nnx.state(converted, LatentParam))
            ),
            [("layers", 1, "kernel")],
        )
        root = binarize_model(
            nnx.Linear(6, 2, rngs=nnx.Rngs(0)), X_MLP, rules=[BinarizeRule()]
        )
        self.assertIsInstance(root, BinarizedLinear)
        self.assertEqual(root(X_MLP).shape, (4, 2))

    def test_linen_root_layer(self):
        rule = BinarizeRule(input_binarizer=SIGN)
        converted = binarize_model(nn.Dense(2), X_MLP, rules=[rule])
        self.assertEqual(dict(converted.binarized_layers), {"": rule})
        params = converted.init(jax.random.key(0), X_MLP)["params"]
        self.assertEqual(
            converted.param_labels(params), {"bias": "real", "kernel": "binary"}
        )
        want = bnn_linen.BinaryDense(2, input_binarizer=SIGN).apply(
            {
                "params": {
                    "latent_kernel": params["kernel"],
                    "bias": params["bias"],
                }
            },
            X_MLP,
        )
        np.testing.assert_array_equal(
            converted.apply({"params": params}, X_MLP), want
        )


class LabelsTest(absltest.TestCase):
    def test_linen_labels_mark_exactly_the_converted_kernels(self):
        converted = binarize_model(LinenMLP(), X_MLP)
        params = converted.init(jax.random.key(0), X_MLP)["params"]
        labels = converted.param_labels(params)
        flat = {
            tuple(k.key for k in path): label
            for path, label in jax.tree_util.tree_leaves_with_path(labels)
        }
        self.assertEqual(
            {p for p, label in flat.items() if label == "binary"},
            {("d1", "kernel"), ("d2", "kernel")},
        )
        self.assertLen(flat, 8)
        self.assertEqual(set(flat.values()), {"binary", "real"})
        # optax routes the groups by these labels.
        tx = optax.partition(
            {"binary": optax.sgd(1.0), "real": optax.set_to_zero()},
            converted.param_labels,
        )
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        for path, u in jax.tree_util.tree_leaves_with_path(updates):
            key = tuple(k.key for k in path)
            want = -1.0 if flat[key] == "binary" else 0.0
            np.testing.assert_array_equal(u, jnp.full_like(u, want))
        with self.assertRaisesRegex(ValueError, "variables\\['params'\\]"):
            converted.param_labels({"params": params})

    def test_nnx_latent_params_are_the_converted_kernels(self):
        converted = binarize_model(NnxMLP(rngs=nnx.Rngs(0)), X_MLP)
        latent = nnx.state(converted, LatentParam)
        self.assertEqual(
            sorted(p for p, _ in nnx.to_flat_state(latent)),
            [("d1", "kernel"), ("d2", "kernel")],
        )
        labels = jax.tree.map(
            lambda v: "binary" if isinstance(v, LatentParam) else "real",
            nnx.state(converted, nnx.Param),
            is_leaf=lambda v: isinstance(v, nnx.Variable),
        )
        self.assertEqual(
            sorted(jax.tree.leaves(labels)), ["binary"] * 2 + ["real"] * 6
        )


class JitTest(absltest.TestCase):
    def test_linen_apply_traces_once(self):
        converted = binarize_model(LinenMLP(), X_MLP)
        variables = converted.init(jax.random.key(0), X_MLP)
        traces = []

        @jax.jit
        def apply(variables, x):
            traces.append(None)  # runs only while tracing
            return converted.apply(variables, x)

        outputs = [apply(variables, X_MLP * s) for s in (1.0, 2.0, -1.0)]
        self.assertLen(traces, 1)
        self.assertEqual(outputs[0].shape, (4, 3))
        np.testing.assert_array_equal(
            outputs[0], converted.apply(variables, X_MLP)
        )

    def test_linen_converted_model_as_a_submodule(self):
        converted = binarize_model(LinenMLP(), X_MLP)

        class Outer(nn.Module):
            backbone: nn.Module

            @nn.compact
            def __call__(self, x):
                return self.backbone(x)

        outer = Outer(converted)
        variables = outer.init(jax.random.key(0), X_MLP)
        inner = {"params": variables["params"]["backbone"]}
        np.testing.assert_array_equal(
            outer.apply(variables, X_MLP), converted.apply(inner, X_MLP)
        )


def _linen_single(layer_fn):
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return layer_fn()(x)

    return Net()


class ErrorsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        (
            "path_type",
            {"module_path": 3},
            TypeError,
            "module_path must be a regular expression",
        ),
        (
            "path_regex",
            {"module_path": "("},
            ValueError,
            "not a valid regular expression",
        ),
        (
            "embed",
            {"module_types": (nn.Embed,)},
            ValueError,
            "Embed.*cannot take a kernel binarizer.*flax.linen.Dense",
        ),
        (
            "nnx_embed",
            {"module_types": nnx.Embed},
            ValueError,
            "Embed.*cannot take a kernel binarizer",
        ),
        (
            "not_a_class",
            {"module_types": ("Dense",)},
            TypeError,
            "must hold classes",
        ),
        (
            "empty_types",
            {"module_types": ()},
            ValueError,
            "module_types is empty",
        ),
        (
            "surrogate_name",
            {"kernel_binarizer": "ste"},
            TypeError,
            "Binarizer\\(surrogate='ste'",
        ),
        (
            "pad_on_dense",
            {"module_types": (nn.Dense, nnx.Linear), "pad_value": -1.0},
            ValueError,
            "pad_value=-1.0 only applies to convolutions",
        ),
        (
            "pad_nan",
            {"pad_value": float("nan")},
            ValueError,
            "pad_value must be finite",
        ),
        (
            "float_with_input",
            {"kernel_binarizer": None, "input_binarizer": SIGN},
            ValueError,
            "keeps the layers it selects float",
        ),
        (
            "stochastic",
            {"kernel_binarizer": bnnjax.Binarizer(surrogate="stochastic")},
            ValueError,
            "StochasticSurrogate.*PRNG key",
        ),
        (
            "annealed",
            {"input_binarizer": bnnjax.Binarizer(surrogate="ede")},
            ValueError,
            "EdeSurrogate.*progress",
        ),
    )
    def test_bad_rule_fields(self, fields, error, regex):
        with self.assertRaisesRegex(error, regex):
            BinarizeRule(**fields)

    def test_rule_matching_nothing_lists_the_layers(self):
        for model, x in (
            (LinenMLP(), X_MLP),
            (NnxMLP(rngs=nnx.Rngs(0)), X_MLP),
        ):
            with self.assertRaisesRegex(
                ValueError,
                r"rules\[1\].*'dense9'.*matches no layer.*'d0'.*'d1'.*'d2'.*'d3'",
            ):
                binarize_model(
                    model,
                    x,
                    rules=[BinarizeRule(), BinarizeRule(module_path="dense9")],
                )
        with self.assertRaisesRegex(
            ValueError, r"rules\[0\].*matches no layer.*nnx model"
        ):
            binarize_model(
                NnxMLP(rngs=nnx.Rngs(0)),
                X_MLP,
                rules=[BinarizeRule(module_types=nn.Dense)],
            )

    def test_shadowed_rule(self):
        with self.assertRaisesRegex(
            ValueError, r"rules\[1\].*taken by an earlier rule"
        ):
            binarize_model(
                LinenMLP(),
                X_MLP,
                rules=[BinarizeRule(), BinarizeRule(module_path="d1")],
            )

    def test_rules_that_binarize_nothing(self):
        with self.assertRaisesRegex(ValueError, "binarize no layer"):
            binarize_model(
                LinenMLP(), X_MLP, rules=[BinarizeRule(kernel_binarizer=None)]
            )

    def test_pad_value_rule_selecting_a_dense_layer(self):
        for model, x in (
            (LinenCNN(), X_CNN),
            (NnxCNN(rngs=nnx.Rngs(0)), X_CNN),
        ):
            with self.assertRaisesRegex(
                ValueError, r"pad_value=-1.0.*dense layer 'head'.*module_types"
            ):
                binarize_model(model, x, rules=[BinarizeRule(pad_value=-1.0)])

    def test_not_a_model(self):
        with self.assertRaisesRegex(
            TypeError, r"flax.linen.Module or a flax.nnx.Module.*function"
        ):
            binarize_model(lambda x: x, X_MLP)

    def test_bad_rules_and_inputs(self):
        with self.assertRaisesRegex(TypeError, r"wrap a single rule in a list"):
            binarize_model(LinenMLP(), X_MLP, rules=BinarizeRule())
        with self.assertRaisesRegex(
            TypeError, r"rules\[0\] must be a bnnjax.convert.BinarizeRule"
        ):
            binarize_model(LinenMLP(), X_MLP, rules=[{"module_path": "d1"}])
        with self.assertRaisesRegex(ValueError, "rules is empty"):
            binarize_model(LinenMLP(), X_MLP, rules=[])
        with self.assertRaisesRegex(TypeError, "needs example inputs"):
            binarize_model(LinenMLP())

    def test_already_binarized_or_bound(self):
        converted = binarize_model(LinenMLP(), X_MLP)
        with self.assertRaisesRegex(ValueError, "already binarized"):
            binarize_model(converted, X_MLP)
        bound = LinenMLP().bind(LinenMLP().init(jax.random.key(0), X_MLP))
        with self.assertRaisesRegex(ValueError, "unbound linen module"):
            binarize_model(bound, X_MLP)

    @parameterized.named_parameters(
        (
            "linen_input_dilation",
            lambda: _linen_single(
                lambda: nn.Conv(
                    2,
                    (3, 3),
                    padding=((0, 0), (0, 0)),
                    input_dilation=2,
                    name="c",
                )
            ),
            X_CNN,
            "layer 'c' \\(flax.linen.Conv\\): input_dilation=2.*no longer binary",
        ),
        (
            "linen_mask",
            lambda: _linen_single(
                lambda: nn.Conv(
                    2, (3, 3), mask=jnp.ones((3, 3, 3, 2)), name="c"
                )
            ),
            X_CNN,
            "layer 'c' \\(flax.linen.Conv\\): mask=.*not binary",
        ),
        (
            "linen_dot_general",
            lambda: _linen_single(
                lambda: nn.Dense(2, dot_general=jax.lax.dot_general, name="d")
            ),
            X_MLP,
            "layer 'd' \\(flax.linen.Dense\\): dot_general=.*custom contraction",
        ),
        (
            "nnx_dot_general",
            lambda: nnx.Linear(
                6,
                2,
                dot_general=functools.partial(jax.lax.dot_general),
                rngs=nnx.Rngs(0),
            ),
            X_MLP,
            "layer <root> \\(flax.nnx.Linear\\): dot_general=.*custom contraction",
        ),
        (
            "nnx_preferred",
            lambda: nnx.Linear(
                6, 2, preferred_element_type=jnp.float32, rngs=nnx.Rngs(0)
            ),
            X_MLP,
            "preferred_element_type=.*computation dtype",
        ),
        (
            "nnx_input_dilation",
            lambda: nnx.Conv(
                3,
                2,
                (3, 3),
                padding=((0, 0), (0, 0)),
                input_dilation=(1, 2),
                rngs=nnx.Rngs(0),
            ),
            X_CNN,
            "input_dilation=\\(1, 2\\)",
        ),
    )
    def test_float_only_features(self, make, x, regex):
        model = make()
        with self.assertRaisesRegex(ValueError, regex):
            binarize_model(model, x, rules=[BinarizeRule()])

    def test_float_only_feature_on_a_layer_kept_float(self):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.Conv(
                    2,
                    (3, 3),
                    padding=((0, 0), (0, 0)),
                    input_dilation=2,
                    name="dilated",
                )(x)
                return nn.Conv(2, (3, 3), name="plain")(x)

        converted = binarize_model(
            Net(),
            X_CNN,
            rules=[
                BinarizeRule(module_path="dilated", kernel_binarizer=None),
                BinarizeRule(),
            ],
        )
        self.assertEqual(list(converted.binarized_layers), ["plain"])

    def test_nnx_subclass_overriding_call(self):
        class Scaled(nnx.Linear):
            def __call__(self, x):
                return 2 * super().__call__(x)

        with self.assertRaisesRegex(TypeError, "overrides Linear.__call__"):
            binarize_model(
                Scaled(6, 2, rngs=nnx.Rngs(0)), X_MLP, rules=[BinarizeRule()]
            )


if __name__ == "__main__":
    absltest.main()

"""linen and nnx binary layers agree; tests of the shared pure functions."""

import ast
import inspect
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx as fnnx
from jax import lax

import bnnjax
import bnnjax.nn
from bnnjax.nn import _checks, functional, linen, nnx

SIGN_RULE = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
EDE_RULE = bnnjax.Binarizer(surrogate="ede", axis=-1)
X_DENSE = jax.random.normal(jax.random.key(1), (3, 5))
X_CONV = jax.random.normal(jax.random.key(2), (2, 7, 6, 4))


def _zero_init(key, shape, dtype=jnp.float32):
    # Key-free and cheap to run eagerly; the linen weights are copied in.
    del key
    return jnp.zeros(shape, dtype)


def _layer_pair(kind, input_binarizer, kernel_binarizer):
    """(linen layer, nnx layer, inputs) of the same configuration."""
    extras = {
        "input_binarizer": input_binarizer,
        "kernel_binarizer": kernel_binarizer,
    }
    nnx_inits = {"kernel_init": _zero_init, "bias_init": _zero_init}
    if kind == "dense":
        return (
            linen.BinaryDense(6, **extras),
            nnx.BinaryLinear(5, 6, **extras, **nnx_inits, rngs=fnnx.Rngs(0)),
            X_DENSE,
        )
    conv = {
        "conv": {"strides": (2, 1), "padding": "SAME", "pad_value": -1.0},
        "depthwise": {"feature_group_count": 4, "pad_value": 1.0},
    }[kind]
    return (
        linen.BinaryConv(8, (3, 3), **conv, **extras),
        nnx.BinaryConv(
            4, 8, (3, 3), **conv, **extras, **nnx_inits, rngs=fnnx.Rngs(0)
        ),
        X_CONV,
    )


class LinenNnxConsistencyTest(parameterized.TestCase):
    @parameterized.product(
        kind=("dense", "conv", "depthwise"),
        inputs=("real", "binary"),
    )
    def test_same_latent_weights_same_outputs_and_gradients(self, kind, inputs):
        input_rule = SIGN_RULE if inputs == "binary" else None
        pairs = {
            "default": _layer_pair(kind, input_rule, bnnjax.Binarizer(axis=-1)),
            "ede": _layer_pair(kind, input_rule, EDE_RULE),
        }
        linen_params, nnx_states, graphdefs = {}, {}, {}
        for name, (linen_layer, nnx_layer, x) in pairs.items():
            shapes = jax.eval_shape(
                lambda k, x, m=linen_layer: m.init(k, x, progress=0.3),
                jax.random.key(0),
                x,
            )["params"]
            rng = np.random.default_rng(0)
            params = {
                k: jnp.asarray(rng.normal(size=v.shape), v.dtype)
                for k, v in shapes.items()
            }
            linen_params[name] = params
            # Copy linen's latent weights into the nnx layer.
            nnx_layer.latent_kernel[...] = params["latent_kernel"]
            nnx_layer.bias.set_value(params["bias"])
            graphdefs[name], nnx_states[name] = fnnx.split(nnx_layer)

        def vjp(fn, p, x):
            y, pullback = jax.vjp(fn, p, x)
            return (y, *pullback(jnp.cos(y)))

        @jax.jit
        def run(linen_params, nnx_states, x, progress):
            out = {}
            for name, (linen_layer, *_) in pairs.items():
                out[name, "linen"] = vjp(
                    lambda p, x, m=linen_layer: m.apply(
                        {"params": p}, x, progress=progress
                    ),
                    linen_params[name],
                    x,
                )
                y, grads, dx = vjp(
                    lambda s, x, g=graphdefs[name]: fnnx.merge(g, s)(
                        x, progress=progress
                    ),
                    nnx_states[name],
                    x,
                )
                out[name, "nnx"] = (y, fnnx.to_pure_dict(grads), dx)
            return out

        x = pairs["default"][2]
        out = run(linen_params, nnx_states, x, 0.3)
        for name in pairs:
            got_linen, got_nnx = out[name, "linen"], out[name, "nnx"]
            self.assertEqual(got_linen[0].shape, got_nnx[0].shape)
            self.assertEqual(set(got_nnx[1]), {"latent_kernel", "bias"})
            self.assertEqual(set(got_linen[1]), {"latent_kernel", "bias"})
            chex.assert_trees_all_equal_shapes_and_dtypes(got_linen, got_nnx)
            chex.assert_trees_all_equal(got_linen, got_nnx, strict=True)
            self.assertGreater(
                float(jnp.abs(got_nnx[1]["latent_kernel"]).sum()), 0
            )

        # The nnx layer called directly under nnx.jit agrees too.
        nnx_layer = pairs["default"][1]
        y = fnnx.jit(lambda m, x: m(x))(nnx_layer, x)
        np.testing.assert_array_equal(y, out["default", "linen"][0])

    def test_same_defaults(self):
        pairs = (
            (linen.BinaryDense(3), nnx.BinaryLinear),
            (linen.BinaryConv(3, (3, 3)), nnx.BinaryConv),
        )
        for linen_layer, nnx_cls in pairs:
            signature = inspect.signature(nnx_cls.__init__).parameters
            for name in (
                "use_bias",
                "dtype",
                "param_dtype",
                "precision",
                "kernel_binarizer",
                "input_binarizer",
                "rng_collection",
            ):
                self.assertEqual(
                    getattr(linen_layer, name), signature[name].default, name
                )
        self.assertEqual(
            linen.BinaryConv(3, 3).pad_value,
            inspect.signature(nnx.BinaryConv.__init__)
            .parameters["pad_value"]
            .default,
        )


class PackageTest(absltest.TestCase):
    def test_namespaces_and_latent_kernel_name(self):
        self.assertIs(bnnjax.nn.linen, linen)
        self.assertIs(bnnjax.nn.nnx, nnx)
        for module in (bnnjax.nn, linen, nnx, functional):
            self.assertEqual(module.LATENT_KERNEL, "latent_kernel")
        activations = {"RSign", "RPReLU"}  # ReActNet's
        self.assertEqual(
            set(nnx.__all__),
            {"LATENT_KERNEL", "BinaryConv", "BinaryLinear", "LatentParam"}
            | activations,
        )
        self.assertEqual(
            set(linen.__all__),
            {"LATENT_KERNEL", "BinaryConv", "BinaryDense"} | activations,
        )
        # The activations' defaults agree between the APIs.
        for name, fields in (
            ("RSign", ("binarizer", "dtype", "param_dtype", "rng_collection")),
            ("RPReLU", ("negative_slope_init", "dtype", "param_dtype")),
        ):
            signature = inspect.signature(getattr(nnx, name).__init__)
            for field in fields:
                self.assertEqual(
                    getattr(getattr(linen, name)(), field),
                    signature.parameters[field].default,
                    (name, field),
                )

    def test_linen_and_nnx_do_not_import_each_other(self):
        root = pathlib.Path(bnnjax.nn.__file__).parent

        def imported(name):
            tree = ast.parse((root / name).read_text())
            names = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    names.add(node.module)
                    names.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
            return names

        self.assertNotIn("bnnjax.nn.nnx", imported("linen.py"))
        self.assertNotIn("bnnjax.nn.linen", imported("nnx.py"))
        for name in ("functional.py", "_checks.py", "_precision.py"):
            self.assertFalse(
                {n for n in imported(name) if n.startswith("flax")}
            )


class CommonTest(parameterized.TestCase):
    @parameterized.parameters(
        ("same", 2, "SAME"),
        ("VALID", 2, "VALID"),
        ("Causal", 1, "CAUSAL"),
        (1, 2, ((1, 1), (1, 1))),
        ([1, (0, 2)], 2, ((1, 1), (0, 2))),
        (((-1, 2),), 1, ((-1, 2),)),
    )
    def test_canonicalize_padding(self, padding, rank, want):
        self.assertEqual(_checks.canonicalize_padding(padding, rank), want)

    @parameterized.product(
        padding=("SAME", "SAME_LOWER", "VALID"),
        size=(6, 7),
        kernel=(2, 3),
        stride=(1, 2, 3),
        dilation=(1, 2),
    )
    def test_explicit_padding_matches_lax(
        self, padding, size, kernel, stride, dilation
    ):
        pads = functional.explicit_padding(
            padding, (size,), (kernel,), (stride,), (dilation,)
        )
        # lax's own rule, from the output shape of a string-padded conv.
        out = jax.eval_shape(
            lambda x, w: lax.conv_general_dilated(
                x, w, (stride,), padding, rhs_dilation=(dilation,)
            ),
            jax.ShapeDtypeStruct((1, 1, size), jnp.float32),
            jax.ShapeDtypeStruct((1, 1, kernel), jnp.float32),
        ).shape[-1]
        (lo, hi), dilated = pads[0], (kernel - 1) * dilation + 1
        self.assertEqual((size + lo + hi - dilated) // stride + 1, out)
        if padding == "VALID":
            self.assertEqual(pads, ((0, 0),))
        else:
            self.assertLessEqual(abs(lo - hi), 1)
            if lo != hi:  # SAME puts the extra pad high, SAME_LOWER low
                self.assertEqual(lo < hi, padding == "SAME")

    def test_pure_functions_match_the_layers(self):
        params = {
            "latent_kernel": jax.random.normal(jax.random.key(3), (3, 3, 4, 6)),
            "bias": jnp.arange(6.0),
        }
        kwargs = {"strides": 2, "padding": "SAME", "pad_value": -1.0}
        layer = linen.BinaryConv(6, (3, 3), input_binarizer=SIGN_RULE, **kwargs)

        @jax.jit
        def run(params, x):
            y_pure = functional.binary_conv(
                x,
                params["latent_kernel"],
                params["bias"],
                kernel_binarizer=bnnjax.Binarizer(axis=-1),
                input_binarizer=SIGN_RULE,
                **kwargs,
            )
            return y_pure, layer.apply({"params": params}, x)

        y_pure, y_layer = run(params, X_CONV)
        np.testing.assert_array_equal(y_pure, y_layer)
        self.assertEqual(y_pure.shape, (2, 4, 3, 6))

    def test_pure_function_errors(self):
        rule = bnnjax.Binarizer(axis=-1)
        with self.assertRaisesRegex(
            ValueError,
            r"shape \(in_features, features\), got shape \(5, 6, 1\)",
        ):
            functional.binary_dense(
                X_DENSE, jnp.ones((5, 6, 1)), kernel_binarizer=rule
            )
        with self.assertRaisesRegex(ValueError, r"at least\s+one spatial"):
            functional.binary_conv(
                X_CONV, jnp.ones((4, 8)), kernel_binarizer=rule
            )
        with self.assertRaisesRegex(ValueError, r"bias must have shape \(6,\)"):
            functional.binary_dense(
                X_DENSE, jnp.ones((5, 6)), jnp.ones(5), kernel_binarizer=rule
            )
        with self.assertRaisesRegex(TypeError, "kernel_binarizer must be"):
            functional.binary_dense(
                X_DENSE, jnp.ones((5, 6)), kernel_binarizer="ste"
            )
        with self.assertRaisesRegex(ValueError, r"pass kernel_key=jax\.random"):
            functional.binary_dense(
                X_DENSE,
                jnp.ones((5, 6)),
                kernel_binarizer=bnnjax.Binarizer(surrogate="stochastic"),
            )
        with self.assertRaisesRegex(ValueError, r"pass input_key=jax\.random"):
            functional.binary_conv(
                X_CONV,
                jnp.ones((3, 3, 4, 2)),
                kernel_binarizer=rule,
                input_binarizer=bnnjax.Binarizer(surrogate="stochastic"),
            )
        with self.assertRaisesRegex(ValueError, "floating-point dtype"):
            functional.binary_dense(
                X_DENSE,
                jnp.ones((5, 6)),
                kernel_binarizer=rule,
                dtype=jnp.int32,
            )


if __name__ == "__main__":
    absltest.main()

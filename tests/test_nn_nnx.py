"""Tests of bnnjax.nn.nnx: LatentParam, BinaryLinear and BinaryConv.

References are written from ``bnnjax.binarize``, ``jnp.dot``, ``jnp.pad`` and
``lax.conv_general_dilated``. Eager random initialization costs about a
second of XLA compilation per kernel shape on CPU, so most layers here get a
deterministic numpy ``kernel_init``; the default initializers are checked
once, inside one jitted function.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx as fnnx
from jax import lax

import bnnjax
from bnnjax import binarize
from bnnjax.nn import nnx

KERNEL_RULE = bnnjax.Binarizer(axis=-1)
SIGN_RULE = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
STOCHASTIC_RULE = bnnjax.Binarizer(surrogate="stochastic", axis=-1)
INPUT_RULES = {"real": None, "binary": SIGN_RULE}


def _bin(x, rule, progress=None):
    if rule is None:
        return x
    return binarize(
        x,
        rule.surrogate,
        rule.scale,
        rule.axis,
        center=rule.center,
        progress=progress,
    )


def _add_bias(y, b):
    return y if b is None else y + jnp.reshape(b, (1,) * (y.ndim - 1) + (-1,))


def ref_dense(x, p, input_rule=None, kernel_rule=KERNEL_RULE, progress=None):
    w = _bin(p["latent_kernel"], kernel_rule, progress)
    return _add_bias(jnp.dot(_bin(x, input_rule, progress), w), p.get("bias"))


def ref_conv(
    x,
    p,
    *,
    pads,
    strides=(1, 1),
    groups=1,
    pad_value=0.0,
    input_rule=None,
    kernel_rule=KERNEL_RULE,
):
    xp = jnp.pad(
        _bin(x, input_rule),
        [(0, 0), *pads, (0, 0)],
        constant_values=pad_value,
    )
    y = lax.conv_general_dilated(
        xp,
        _bin(p["latent_kernel"], kernel_rule),
        strides,
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
    return _add_bias(y, p.get("bias"))


def numpy_kernel_init(seed=0):
    """A key-free kernel_init: both signs in every output channel."""

    def init(key, shape, dtype=jnp.float32):
        del key
        w = np.random.default_rng(seed).normal(size=shape) * 0.3
        flat = w.reshape(-1, shape[-1])
        flat[0], flat[1] = np.abs(flat[0]), -np.abs(flat[1])
        return jnp.asarray(w, dtype)

    return init


def linspace_bias_init(key, shape, dtype=jnp.float32):
    del key
    return jnp.linspace(-1.0, 1.0, shape[0], dtype=dtype)


CHEAP_INITS = {
    "kernel_init": numpy_kernel_init(),
    "bias_init": linspace_bias_init,
}


def split_apply(layer, **call_kwargs):
    """(fn(params, x), params) running ``layer`` through split/merge."""
    graphdef, params, rest = fnnx.split(layer, fnnx.Param, ...)

    def fn(p, x):
        return fnnx.merge(graphdef, p, rest)(x, **call_kwargs)

    return fn, params


def _vjp(fn, params, x):
    y, vjp = jax.vjp(fn, params, x)
    g = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
    return (y, *vjp(g.astype(y.dtype)))


def assert_layers_match_references(cases, x, tol=1e-5):
    """Checks outputs and gradients of (name, layer, ref_fn) cases in one jit.

    ``ref_fn(x, params)`` gets the layer's parameters as a plain dict.
    """
    fns, all_params = zip(
        *(split_apply(layer) for _, layer, _ in cases), strict=True
    )

    @jax.jit
    def run(all_params, x):
        out = []
        for fn, p, (_, _, ref) in zip(fns, all_params, cases, strict=True):
            got = _vjp(fn, p, x)
            want = _vjp(
                lambda p, v, ref=ref: ref(v, fnnx.to_pure_dict(p)), p, x
            )
            out.append((got, want))
        return out

    results = run(all_params, x)
    for (name, *_), (got, want) in zip(cases, results, strict=True):
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)
        for g in (got[1]["latent_kernel"][...], got[2]):
            np.testing.assert_array_less(0.0, jnp.abs(g).sum(), err_msg=name)
    return results


X_DENSE = jax.random.normal(jax.random.key(1), (3, 5))
X_CONV = jax.random.normal(jax.random.key(2), (2, 7, 6, 4))


class LatentParamTest(absltest.TestCase):
    def test_is_a_documented_param_subclass(self):
        self.assertTrue(issubclass(nnx.LatentParam, fnnx.Param))
        self.assertTrue(
            nnx.LatentParam.__doc__.startswith(
                "Real-valued latent weight; only its sign reaches the "
                "forward pass"
            )
        )

    def test_state_selects_only_latent_kernels(self):
        class Model(fnnx.Module):
            def __init__(self, rngs):
                self.conv = nnx.BinaryConv(
                    4, 6, (3, 3), **CHEAP_INITS, rngs=rngs
                )
                self.dense = nnx.BinaryLinear(6, 5, **CHEAP_INITS, rngs=rngs)
                self.head = fnnx.Linear(5, 2, **CHEAP_INITS, rngs=rngs)

        model = Model(fnnx.Rngs(0))
        self.assertIs(type(model.conv.latent_kernel), nnx.LatentParam)
        self.assertIs(type(model.dense.latent_kernel), nnx.LatentParam)
        self.assertIs(type(model.conv.bias), fnnx.Param)
        latent = fnnx.state(model, nnx.LatentParam)
        self.assertEqual(
            fnnx.to_pure_dict(jax.tree.map(jnp.shape, latent)),
            {
                "conv": {"latent_kernel": (3, 3, 4, 6)},
                "dense": {"latent_kernel": (6, 5)},
            },
        )
        # Optimizer labels, built once from the model (STYLE.md habit 5).
        labels = jax.tree.map(
            lambda v: "binary" if isinstance(v, nnx.LatentParam) else "real",
            fnnx.state(model, fnnx.Param),
            is_leaf=lambda v: isinstance(v, fnnx.Variable),
        )
        self.assertEqual(
            fnnx.to_pure_dict(labels),
            {
                "conv": {"latent_kernel": "binary", "bias": "real"},
                "dense": {"latent_kernel": "binary", "bias": "real"},
                "head": {"kernel": "real", "bias": "real"},
            },
        )

    def test_kernel_metadata_reaches_the_latent_param(self):
        layer = nnx.BinaryLinear(
            3,
            2,
            **CHEAP_INITS,
            kernel_metadata={"tag": "latent"},
            bias_metadata={"tag": "bias"},
            rngs=fnnx.Rngs(0),
        )
        self.assertEqual(layer.latent_kernel.get_metadata()["tag"], "latent")
        self.assertEqual(layer.bias.get_metadata()["tag"], "bias")


class BinaryLinearTest(parameterized.TestCase):
    def test_matches_reference_and_gradients(self):
        cases = []
        for inputs, rule in INPUT_RULES.items():
            for use_bias in (True, False):
                layer = nnx.BinaryLinear(
                    5,
                    6,
                    use_bias=use_bias,
                    input_binarizer=rule,
                    **CHEAP_INITS,
                    rngs=fnnx.Rngs(0),
                )
                self.assertEqual(layer.bias is None, not use_bias)
                cases.append(
                    (
                        f"{inputs}, use_bias={use_bias}",
                        layer,
                        lambda x, p, r=rule: ref_dense(x, p, r),
                    )
                )
        for x in (X_DENSE, jnp.stack([X_DENSE, -X_DENSE])):
            results = assert_layers_match_references(cases, x)
            self.assertEqual(results[0][0][0].shape, (*x.shape[:-1], 6))
            self.assertEqual(results[0][0][0].dtype, jnp.float32)

    def test_state_and_shapes(self):
        layer = nnx.BinaryLinear(5, 3, **CHEAP_INITS, rngs=fnnx.Rngs(0))
        state = fnnx.state(layer)
        self.assertEqual(set(state), {"latent_kernel", "bias"})
        self.assertIsInstance(state["latent_kernel"], nnx.LatentParam)
        self.assertEqual(layer.latent_kernel.shape, (5, 3))
        self.assertEqual(layer.bias.shape, (3,))
        no_bias = nnx.BinaryLinear(
            5, 3, use_bias=False, **CHEAP_INITS, rngs=fnnx.Rngs(0)
        )
        self.assertEqual(set(fnnx.state(no_bias)), {"latent_kernel"})
        self.assertIsNone(no_bias.bias)

    @parameterized.parameters(
        (jnp.bfloat16, jnp.float32, jnp.bfloat16),
        (None, jnp.bfloat16, jnp.float32),
        (jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
    )
    def test_dtypes(self, dtype, param_dtype, y_dtype):
        layer = nnx.BinaryLinear(
            5,
            4,
            dtype=dtype,
            param_dtype=param_dtype,
            input_binarizer=SIGN_RULE,
            **CHEAP_INITS,
            rngs=fnnx.Rngs(0),
        )
        self.assertEqual(layer.latent_kernel.dtype, jnp.dtype(param_dtype))
        self.assertEqual(layer.bias.dtype, jnp.dtype(param_dtype))
        y = fnnx.jit(lambda m, x: m(x))(layer, X_DENSE)
        self.assertEqual(y.dtype, jnp.dtype(y_dtype))
        params = {
            "latent_kernel": layer.latent_kernel[...].astype(jnp.float32),
            "bias": layer.bias[...].astype(jnp.float32),
        }
        want = ref_dense(X_DENSE, params, SIGN_RULE)
        np.testing.assert_allclose(np.float32(y), want, rtol=2e-2, atol=3e-2)


class BinaryConvTest(parameterized.TestCase):
    def test_matches_reference_and_gradients(self):
        options = {
            "same_pad_minus_one": (
                {"pad_value": -1.0},
                {"pads": [(1, 1), (1, 1)], "pad_value": -1.0},
            ),
            "valid_strided": (
                {"padding": "VALID", "strides": 2},
                {"pads": [(0, 0), (0, 0)], "strides": (2, 2)},
            ),
            "explicit_grouped_no_bias": (
                {
                    "padding": ((0, 2), 1),
                    "feature_group_count": 2,
                    "use_bias": False,
                },
                {"pads": [(0, 2), (1, 1)], "groups": 2},
            ),
            "depthwise_pad_plus_one": (
                {"feature_group_count": 4, "pad_value": 1.0},
                {"pads": [(1, 1), (1, 1)], "groups": 4, "pad_value": 1.0},
            ),
        }
        cases = []
        for option, (kwargs, ref_kwargs) in options.items():
            for inputs, rule in INPUT_RULES.items():
                layer = nnx.BinaryConv(
                    4,
                    8,
                    (3, 3),
                    input_binarizer=rule,
                    **kwargs,
                    **CHEAP_INITS,
                    rngs=fnnx.Rngs(0),
                )
                groups = kwargs.get("feature_group_count", 1)
                self.assertEqual(
                    layer.latent_kernel.shape, (3, 3, 4 // groups, 8)
                )
                cases.append(
                    (
                        f"{option}, {inputs}",
                        layer,
                        lambda x, p, r=rule, kw=ref_kwargs: ref_conv(
                            x, p, input_rule=r, **kw
                        ),
                    )
                )
        results = assert_layers_match_references(cases, X_CONV)
        self.assertEqual(results[0][0][0].shape, (2, 7, 6, 8))
        self.assertEqual(
            results[2][0][0].shape, (2, 3, 2, 8)
        )  # VALID, stride 2

    def test_state_and_attributes(self):
        layer = nnx.BinaryConv(
            4,
            6,
            3,
            2,
            padding="CAUSAL",
            pad_value=-1,
            **CHEAP_INITS,
            rngs=fnnx.Rngs(0),
        )
        self.assertEqual(set(fnnx.state(layer)), {"latent_kernel", "bias"})
        self.assertEqual(layer.latent_kernel.shape, (3, 4, 6))
        self.assertEqual(layer.kernel_size, (3,))
        self.assertEqual(layer.strides, (2,))
        self.assertEqual(layer.padding, "CAUSAL")
        self.assertEqual(layer.pad_value, -1.0)
        y = fnnx.jit(lambda m, x: m(x))(layer, X_CONV[0, 0])  # unbatched 1D
        self.assertEqual(y.shape, (3, 6))


class DefaultsTest(absltest.TestCase):
    def test_signature_mirrors_flax(self):
        pairs = (
            (nnx.BinaryLinear, fnnx.Linear),
            (nnx.BinaryConv, fnnx.Conv),
        )
        for ours, theirs in pairs:
            ours_params = inspect.signature(ours.__init__).parameters
            flax_params = inspect.signature(theirs.__init__).parameters
            shared = [n for n in ours_params if n in flax_params]
            # flax's order and kinds, for every name we take from flax.
            self.assertEqual(
                shared, [n for n in flax_params if n in ours_params]
            )
            for name in shared:
                a, b = ours_params[name], flax_params[name]
                self.assertEqual(a.kind, b.kind, name)
                if name not in ("kernel_init", "bias_init"):
                    self.assertEqual(a.default, b.default, name)
            extras = [n for n in ours_params if n not in flax_params]
            self.assertContainsSubset(
                {"kernel_binarizer", "input_binarizer", "rng_collection"},
                set(extras),
            )
            for name in extras:
                self.assertEqual(
                    ours_params[name].kind, inspect.Parameter.KEYWORD_ONLY
                )
            self.assertEqual(
                ours_params["kernel_binarizer"].default,
                bnnjax.Binarizer(axis=-1),
            )
            self.assertIsNone(ours_params["input_binarizer"].default)
            self.assertNotIn("input_dilation", ours_params)

    def test_default_initializers_match_flax(self):
        # Parameters draw from rngs.params() first, in flax's order.
        @jax.jit
        def states():
            layers = (
                nnx.BinaryLinear(5, 3, rngs=fnnx.Rngs(0)),
                fnnx.Linear(5, 3, rngs=fnnx.Rngs(0)),
                nnx.BinaryConv(4, 6, (3, 3), rngs=fnnx.Rngs(0)),
                fnnx.Conv(4, 6, (3, 3), rngs=fnnx.Rngs(0)),
            )
            return [
                fnnx.to_pure_dict(fnnx.state(m, fnnx.Param)) for m in layers
            ]

        ours_d, flax_d, ours_c, flax_c = states()
        for ours, theirs in ((ours_d, flax_d), (ours_c, flax_c)):
            np.testing.assert_array_equal(
                ours["latent_kernel"], theirs["kernel"]
            )
            np.testing.assert_array_equal(ours["bias"], theirs["bias"])


class ProgressAndRngTest(parameterized.TestCase):
    def test_progress_reaches_the_kernel_binarizer(self):
        rule = bnnjax.Binarizer(surrogate="ede", axis=-1)
        layer = nnx.BinaryLinear(
            5, 6, kernel_binarizer=rule, **CHEAP_INITS, rngs=fnnx.Rngs(0)
        )
        graphdef, params = fnnx.split(layer)
        traces = []

        @jax.jit
        def grads(params, progress):
            traces.append(None)  # runs only while tracing

            def loss(p):
                return jnp.sum(
                    fnnx.merge(graphdef, p)(X_DENSE, progress=progress) ** 2
                )

            def ref_loss(p):
                y = ref_dense(
                    X_DENSE,
                    fnnx.to_pure_dict(p),
                    kernel_rule=rule,
                    progress=progress,
                )
                return jnp.sum(y**2)

            return jax.grad(loss)(params), jax.grad(ref_loss)(params)

        results = [grads(params, p) for p in (0.0, 1.0, 0.5)]
        self.assertLen(traces, 1)
        for got, want in results:
            np.testing.assert_allclose(
                got["latent_kernel"][...], want["latent_kernel"][...], rtol=1e-5
            )
        g0, g1 = (r[0]["latent_kernel"][...] for r in results[:2])
        self.assertGreater(float(jnp.max(jnp.abs(g0 - g1))), 1e-2)

    def test_stochastic_binarizers_draw_from_the_binarize_stream(self):
        x = jax.random.normal(jax.random.key(5), (8, 16)) * 0.5
        call = fnnx.jit(lambda m, x: m(x))
        for which in ("kernel", "input"):
            kwargs = {f"{which}_binarizer": STOCHASTIC_RULE, **CHEAP_INITS}
            a = nnx.BinaryLinear(16, 16, **kwargs, rngs=fnnx.Rngs(0))
            b = nnx.BinaryLinear(16, 16, **kwargs, rngs=fnnx.Rngs(0))
            ya1, yb1 = call(a, x), call(b, x)
            self.assertEqual(ya1.shape, (8, 16))
            np.testing.assert_array_equal(ya1, yb1)  # fixed seed: same draws
            ya2 = call(a, x)  # the stream advanced
            self.assertFalse(np.array_equal(ya1, ya2))
            self.assertEqual(int(a.rngs.count[...]), 2)
            c = nnx.BinaryLinear(
                16, 16, **kwargs, rngs=fnnx.Rngs(params=0, binarize=1)
            )
            self.assertFalse(np.array_equal(call(c, x), ya1))

    def test_missing_stream_raises(self):
        with self.assertRaisesRegex(
            ValueError,
            r"kernel_binarizer is stochastic.*'binarize' rng stream.*"
            r"nnx\.Rngs\(params=0, binarize=1\)",
        ):
            nnx.BinaryLinear(
                3,
                2,
                kernel_binarizer=STOCHASTIC_RULE,
                **CHEAP_INITS,
                rngs=fnnx.Rngs(params=0),
            )
        with self.assertRaisesRegex(ValueError, "'noise' rng stream"):
            nnx.BinaryConv(
                3,
                2,
                (3, 3),
                input_binarizer=STOCHASTIC_RULE,
                rng_collection="noise",
                **CHEAP_INITS,
                rngs=fnnx.Rngs(params=0),
            )

    def test_deterministic_layers_hold_no_rng_state(self):
        layer = nnx.BinaryLinear(3, 2, **CHEAP_INITS, rngs=fnnx.Rngs(0))
        self.assertIsNone(layer.rngs)
        self.assertEqual(len(fnnx.state(layer, fnnx.RngState)), 0)
        stochastic = nnx.BinaryLinear(
            3,
            2,
            kernel_binarizer=STOCHASTIC_RULE,
            **CHEAP_INITS,
            rngs=fnnx.Rngs(0),
        )
        self.assertIsInstance(stochastic.rngs, fnnx.RngStream)
        self.assertGreater(len(fnnx.state(stochastic, fnnx.RngState)), 0)


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(
        ("kernel_binarizer", "ste", r"bnnjax\.Binarizer\(surrogate='ste'"),
        (
            "kernel_binarizer",
            bnnjax.ApproxSignSurrogate(),
            r"Wrap it: kernel_binarizer=bnnjax\.Binarizer\(surrogate=Approx",
        ),
        ("input_binarizer", "clipped_ste", r"a bnnjax\.Binarizer or None"),
    )
    def test_non_binarizer_is_type_error(self, field, value, regex):
        rngs = fnnx.Rngs(0)
        with self.assertRaisesRegex(TypeError, regex):
            nnx.BinaryLinear(3, 2, **{field: value}, rngs=rngs)
        with self.assertRaisesRegex(TypeError, regex):
            nnx.BinaryConv(3, 2, (3, 3), **{field: value}, rngs=rngs)

    def test_unsupported_flax_arguments_are_not_accepted(self):
        rngs = fnnx.Rngs(0)
        for name, value in (
            ("input_dilation", 2),
            ("mask", jnp.ones((3, 3, 3, 2))),
            ("promote_dtype", None),
            ("preferred_element_type", jnp.float32),
            ("conv_general_dilated", lax.conv_general_dilated),
        ):
            with self.assertRaisesRegex(TypeError, name):
                nnx.BinaryConv(3, 2, (3, 3), **{name: value}, rngs=rngs)
        with self.assertRaisesRegex(TypeError, "dot_general"):
            nnx.BinaryLinear(3, 2, dot_general=lax.dot_general, rngs=rngs)

    def test_rngs_must_be_given(self):
        with self.assertRaisesRegex(TypeError, "rngs"):
            nnx.BinaryLinear(3, 2)
        with self.assertRaisesRegex(TypeError, r"rngs must be an nnx\.Rngs"):
            nnx.BinaryLinear(3, 2, rngs=jax.random.key(0))

    def test_feature_group_count_must_divide_the_features(self):
        rngs = fnnx.Rngs(0)
        with self.assertRaisesRegex(
            ValueError, r"feature_group_count=3 must divide in_features=4"
        ):
            nnx.BinaryConv(4, 6, (3, 3), feature_group_count=3, rngs=rngs)
        with self.assertRaisesRegex(
            ValueError, r"feature_group_count=4 must divide out_features=6"
        ):
            nnx.BinaryConv(4, 6, (3, 3), feature_group_count=4, rngs=rngs)

    def test_inputs_must_match_the_kernel(self):
        dense = nnx.BinaryLinear(5, 3, **CHEAP_INITS, rngs=fnnx.Rngs(0))
        with self.assertRaisesRegex(
            ValueError, r"inputs of shape \(3, 4\) do not match a latent_kernel"
        ):
            dense(X_DENSE[:, :4])
        conv = nnx.BinaryConv(4, 3, (3, 3), **CHEAP_INITS, rngs=fnnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"have 3 features.*expects 4"):
            conv(X_CONV[..., :3])
        with self.assertRaisesRegex(
            ValueError, r"kernel_size=\(3, 3\) has 2 spatial dimensions"
        ):
            conv(X_CONV[0, 0])

    def test_window_and_padding_errors(self):
        rngs = fnnx.Rngs(0)
        with self.assertRaisesRegex(ValueError, "cannot be honoured"):
            nnx.BinaryConv(
                3, 2, (3, 3), padding="CIRCULAR", pad_value=1.0, rngs=rngs
            )
        with self.assertRaisesRegex(ValueError, "strides"):
            nnx.BinaryConv(3, 2, (3, 3), (1, 2, 1), rngs=rngs)
        with self.assertRaisesRegex(TypeError, "padding"):
            nnx.BinaryConv(3, 2, (3, 3), padding=1.5, rngs=rngs)
        with self.assertRaisesRegex(ValueError, "in_features must be"):
            nnx.BinaryLinear(0, 2, rngs=rngs)


if __name__ == "__main__":
    absltest.main()

"""Tests of bnnjax.nn.linen: BinaryDense and BinaryConv against references.

References are written from ``bnnjax.binarize``, ``jnp.dot``, ``jnp.pad`` and
``lax.conv_general_dilated``. XLA compilation dominates the runtime on CPU,
so each test compiles its cases in one jitted function and parameters are
built with numpy rather than by ``init`` (whose random initializers are slow
to compile); ``init`` itself is checked with ``jax.eval_shape`` and once by
value.
"""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from jax import lax

import bnnjax
from bnnjax import binarize
from bnnjax.nn import linen

KERNEL_RULE = bnnjax.Binarizer(axis=-1)
SIGN_RULE = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
INPUT_RULES = {"real": None, "binary": SIGN_RULE}
NHWC = ("NHWC", "HWIO", "NHWC")


def _bin(x, rule, progress=None):
    """bnnjax.binarize with a Binarizer's fields spelled out; None: identity."""
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


def same_pads(size, k, stride=1, dilation=1):
    """TensorFlow's SAME padding for one spatial dimension, by hand."""
    k = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return (total // 2, total - total // 2)


def ref_padded(x, pads, pad_value=0.0, input_rule=None, progress=None):
    """The binarized, explicitly padded input the kernel sees."""
    return jnp.pad(
        _bin(x, input_rule, progress),
        [(0, 0), *pads, (0, 0)],
        constant_values=pad_value,
    )


def ref_conv(
    x,
    p,
    *,
    pads,
    strides=(1, 1),
    dilation=(1, 1),
    groups=1,
    pad_value=0.0,
    input_rule=None,
    kernel_rule=KERNEL_RULE,
    progress=None,
):
    y = lax.conv_general_dilated(
        ref_padded(x, pads, pad_value, input_rule, progress),
        _bin(p["latent_kernel"], kernel_rule, progress),
        strides,
        "VALID",
        rhs_dilation=dilation,
        dimension_numbers=NHWC,
        feature_group_count=groups,
    )
    return _add_bias(y, p.get("bias"))


def make_params(kernel_shape, use_bias=True, seed=0):
    """A latent kernel with both signs in every output channel, and a bias."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=kernel_shape).astype(np.float32) * 0.3
    flat = w.reshape(-1, kernel_shape[-1])
    flat[0], flat[1] = np.abs(flat[0]), -np.abs(flat[1])
    params = {"latent_kernel": jnp.asarray(w)}
    if use_bias:
        n = kernel_shape[-1]
        params["bias"] = jnp.asarray(np.linspace(-1, 1, n, dtype=np.float32))
    return params


def _vjp(fn, params, x):
    """(y, d<y, g>/d params, d<y, g>/d x) for a fixed cotangent g."""
    y, vjp = jax.vjp(fn, params, x)
    g = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
    return (y, *vjp(g.astype(y.dtype)))


def assert_layers_match_references(cases, x, tol=1e-5):
    """Checks outputs and gradients of (name, layer_fn, ref_fn, params) cases.

    All cases are compiled in one jitted function.
    """

    @jax.jit
    def run(all_params, x):
        return [
            (_vjp(fn, p, x), _vjp(ref, p, x))
            for (_, fn, ref, _), p in zip(cases, all_params, strict=True)
        ]

    results = run([c[3] for c in cases], x)
    for (name, *_), (got, want) in zip(cases, results, strict=True):
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)
        # The gradient reaches the latent kernel and the inputs.
        for g in (got[1]["latent_kernel"], got[2]):
            np.testing.assert_array_less(0.0, jnp.abs(g).sum(), err_msg=name)
    return results


def _apply(layer):
    return lambda p, v: layer.apply({"params": p}, v)


X_DENSE = jax.random.normal(jax.random.key(1), (3, 5))
X_CONV = jax.random.normal(jax.random.key(2), (2, 7, 6, 4))


class BinaryDenseTest(parameterized.TestCase):
    def test_matches_reference_and_gradients(self):
        cases = []
        for inputs, rule in INPUT_RULES.items():
            for use_bias in (True, False):
                layer = linen.BinaryDense(
                    6, use_bias=use_bias, input_binarizer=rule
                )
                cases.append(
                    (
                        f"{inputs}, use_bias={use_bias}",
                        _apply(layer),
                        lambda p, v, r=rule: ref_dense(v, p, r),
                        make_params((5, 6), use_bias),
                    )
                )
        x3 = jnp.stack([X_DENSE, -X_DENSE])
        for x in (X_DENSE, x3):
            results = assert_layers_match_references(cases, x)
            for (got, _), (*_, p) in zip(results, cases, strict=True):
                y, grads, _ = got
                self.assertEqual(y.shape, (*x.shape[:-1], 6))
                self.assertEqual(y.dtype, jnp.float32)
                self.assertEqual(set(grads), set(p))

    def test_forward_kernel_has_two_values_per_output_channel(self):
        layer = linen.BinaryDense(7, use_bias=False)
        params = make_params((5, 7), use_bias=False)
        # Identity inputs read the binarized kernel out of the forward pass.
        kernel = np.asarray(jax.jit(_apply(layer))(params, jnp.eye(5)))
        latent = np.asarray(params["latent_kernel"])
        for j in range(7):
            values = np.unique(kernel[:, j])
            self.assertLen(values, 2)
            self.assertEqual(values[0], -values[1])
            np.testing.assert_array_equal(
                np.sign(kernel[:, j]), np.where(latent[:, j] >= 0, 1, -1)
            )
            mad = np.mean(np.abs(latent[:, j] - latent[:, j].mean()))
            np.testing.assert_allclose(values[1], mad, rtol=1e-6)

    def test_parameter_tree(self):
        x = jnp.ones((2, 5), jnp.int32)
        key = jax.random.key(0)
        variables = jax.eval_shape(linen.BinaryDense(3).init, key, x)
        self.assertEqual(set(variables), {"params"})
        params = variables["params"]
        self.assertEqual(set(params), {linen.LATENT_KERNEL, "bias"})
        self.assertEqual(linen.LATENT_KERNEL, "latent_kernel")
        self.assertEqual(params["latent_kernel"].shape, (5, 3))
        self.assertEqual(params["latent_kernel"].dtype, jnp.float32)
        self.assertEqual(params["bias"].shape, (3,))
        no_bias = jax.eval_shape(
            linen.BinaryDense(3, use_bias=False).init, key, x
        )
        self.assertEqual(set(no_bias["params"]), {"latent_kernel"})

    def test_flax_defaults_and_initial_values(self):
        dense, conv = linen.BinaryDense(3), linen.BinaryConv(3, (3, 3))
        flax_dense, flax_conv = fnn.Dense(3), fnn.Conv(3, (3, 3))
        for name in ("use_bias", "dtype", "param_dtype", "precision"):
            self.assertEqual(getattr(dense, name), getattr(flax_dense, name))
        for name in (
            "strides",
            "padding",
            "kernel_dilation",
            "feature_group_count",
            "use_bias",
            "dtype",
            "param_dtype",
            "precision",
        ):
            self.assertEqual(getattr(conv, name), getattr(flax_conv, name))
        for layer in (dense, conv):
            self.assertEqual(layer.kernel_binarizer, bnnjax.Binarizer(axis=-1))
            self.assertIsNone(layer.input_binarizer)
            self.assertEqual(layer.rng_collection, "binarize")
        self.assertEqual(conv.pad_value, 0.0)

        # Same initializers as flax: the same values for the same key.
        @jax.jit
        def inits(key):
            return [
                m.init(key, x)["params"]
                for m, x in (
                    (dense, X_DENSE),
                    (flax_dense, X_DENSE),
                    (conv, X_CONV),
                    (flax_conv, X_CONV),
                )
            ]

        ours_d, flax_d, ours_c, flax_c = inits(jax.random.key(3))
        for ours, theirs in ((ours_d, flax_d), (ours_c, flax_c)):
            np.testing.assert_array_equal(
                ours["latent_kernel"], theirs["kernel"]
            )
            np.testing.assert_array_equal(ours["bias"], theirs["bias"])

    @parameterized.parameters(
        (jnp.bfloat16, jnp.float32, jnp.float32, jnp.bfloat16),
        (None, jnp.bfloat16, jnp.float32, jnp.float32),
        (None, jnp.float32, jnp.bfloat16, jnp.float32),
        (None, jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
    )
    def test_dtypes(self, dtype, param_dtype, x_dtype, y_dtype):
        layer = linen.BinaryDense(
            4, dtype=dtype, param_dtype=param_dtype, input_binarizer=SIGN_RULE
        )
        x = X_DENSE.astype(x_dtype)
        shapes = jax.eval_shape(layer.init, jax.random.key(0), x)
        for leaf in jax.tree.leaves(shapes):
            self.assertEqual(leaf.dtype, jnp.dtype(param_dtype))
        params = jax.tree.map(
            lambda v: v.astype(param_dtype), make_params((5, 4))
        )
        y = jax.jit(_apply(layer))(params, x)
        self.assertEqual(y.dtype, jnp.dtype(y_dtype))
        p32 = jax.tree.map(lambda v: v.astype(jnp.float32), params)
        want = ref_dense(x.astype(jnp.float32), p32, SIGN_RULE)
        np.testing.assert_allclose(np.float32(y), want, rtol=2e-2, atol=3e-2)

    def test_integer_inputs_are_promoted(self):
        layer = linen.BinaryDense(2, input_binarizer=SIGN_RULE)
        x = jnp.array([[3, -1, 0, 2, -5]], jnp.int32)
        y = jax.jit(_apply(layer))(make_params((5, 2)), x)
        self.assertEqual(y.dtype, jnp.float32)
        want = ref_dense(x.astype(jnp.float32), make_params((5, 2)), SIGN_RULE)
        np.testing.assert_allclose(y, want, rtol=1e-6)


class BinaryConvTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("same", "SAME"),
        ("valid", "VALID"),
        ("int", 1),
        ("pairs", ((0, 2), (1, 0))),
    )
    def test_padding_matches_reference_and_gradients(self, padding):
        pads = {
            "SAME": [same_pads(7, 3), same_pads(6, 3)],
            "VALID": [(0, 0), (0, 0)],
            1: [(1, 1), (1, 1)],
        }.get(padding, padding)
        cases = []
        for pad_value in (0.0, -1.0, 1.0):
            for inputs, rule in INPUT_RULES.items():
                use_bias = pad_value != 1.0
                layer = linen.BinaryConv(
                    5,
                    (3, 3),
                    padding=padding,
                    pad_value=pad_value,
                    use_bias=use_bias,
                    input_binarizer=rule,
                )

                def reference(p, v, pad_value=pad_value, rule=rule):
                    return ref_conv(
                        v, p, pads=pads, pad_value=pad_value, input_rule=rule
                    )

                cases.append(
                    (
                        f"{inputs}, pad_value={pad_value}",
                        _apply(layer),
                        reference,
                        make_params((3, 3, 4, 5), use_bias),
                    )
                )
        results = assert_layers_match_references(cases, X_CONV)
        out_hw = {"SAME": (7, 6), "VALID": (5, 4), 1: (7, 6)}
        for (got, _), (name, *_) in zip(results, cases, strict=True):
            self.assertEqual(
                got[0].shape, (2, *out_hw.get(padding, (7, 5)), 5), name
            )

        # With binary inputs and pad_value=+-1, the kernel sees only +-1.
        padded = jax.jit(
            lambda x: [ref_padded(x, pads, v, SIGN_RULE) for v in (-1.0, 1.0)]
        )(X_CONV)
        for p in padded:
            self.assertTrue(set(np.unique(np.asarray(p))) <= {-1.0, 1.0})

    def test_window_options_match_reference(self):
        options = {
            "strided": ({"strides": 2}, {"strides": (2, 2)}),
            "dilated": ({"kernel_dilation": 2}, {"dilation": (2, 2)}),
            "strided_dilated_explicit": (
                {"strides": (2, 1), "kernel_dilation": (1, 2), "padding": 2},
                {"strides": (2, 1), "dilation": (1, 2), "pads": [(2, 2)] * 2},
            ),
            "grouped": ({"feature_group_count": 2}, {"groups": 2}),
            "depthwise": ({"feature_group_count": 4}, {"groups": 4}),
            "depthwise_no_bias_pad_minus_one": (
                {"feature_group_count": 4, "use_bias": False, "pad_value": -1},
                {"groups": 4, "pad_value": -1.0},
            ),
        }
        cases = []
        for option, (kwargs, ref_kwargs) in options.items():
            ref_kwargs = dict(ref_kwargs)
            strides = ref_kwargs.setdefault("strides", (1, 1))
            dilation = ref_kwargs.setdefault("dilation", (1, 1))
            ref_kwargs.setdefault(
                "pads",
                [
                    same_pads(n, 3, s, d)
                    for n, s, d in zip((7, 6), strides, dilation, strict=True)
                ],
            )
            groups = ref_kwargs.get("groups", 1)
            for inputs, rule in INPUT_RULES.items():
                layer = linen.BinaryConv(
                    8, (3, 3), input_binarizer=rule, **kwargs
                )
                shape = jax.eval_shape(layer.init, jax.random.key(0), X_CONV)[
                    "params"
                ]["latent_kernel"].shape
                self.assertEqual(shape, (3, 3, 4 // groups, 8))
                cases.append(
                    (
                        f"{option}, {inputs}",
                        _apply(layer),
                        lambda p, v, r=rule, kw=ref_kwargs: ref_conv(
                            v, p, input_rule=r, **kw
                        ),
                        make_params(shape, kwargs.get("use_bias", True)),
                    )
                )
        results = assert_layers_match_references(cases, X_CONV)
        self.assertEqual(results[0][0][0].shape, (2, 4, 3, 8))  # strided

    def test_pad_value_zero_matches_flax_conv(self):
        # Binarized inputs and kernel in flax's own Conv: an independent
        # reference for every flax padding mode, with two batch axes.
        x = jnp.stack([X_CONV, -X_CONV])  # (2, 2, 7, 6, 4)
        paddings = ("SAME", "SAME_LOWER", "VALID", "CIRCULAR", "REFLECT", 2)
        params = make_params((3, 2, 4, 8))

        @jax.jit
        def run(params, x):
            flax_params = {
                "kernel": _bin(params["latent_kernel"], KERNEL_RULE),
                "bias": params["bias"],
            }
            return [
                (
                    linen.BinaryConv(
                        8, (3, 2), 2, padding, input_binarizer=SIGN_RULE
                    ).apply({"params": params}, x),
                    fnn.Conv(8, (3, 2), 2, padding).apply(
                        {"params": flax_params}, _bin(x, SIGN_RULE)
                    ),
                )
                for padding in paddings
            ]

        for padding, (got, want) in zip(paddings, run(params, x), strict=True):
            self.assertEqual(got.shape, want.shape)
            self.assertEqual(got.shape[:2], (2, 2))
            np.testing.assert_allclose(
                got, want, rtol=1e-5, atol=1e-5, err_msg=str(padding)
            )

    def test_causal_1d_and_unbatched_inputs(self):
        x = jax.random.normal(jax.random.key(4), (9, 3))  # no batch axis
        params = make_params((3, 3, 2))
        pad_values = (0.0, -1.0, 1.0)

        @jax.jit
        def run(params, x):
            out = []
            for pad_value in pad_values:
                layer = linen.BinaryConv(
                    2,
                    3,
                    padding="CAUSAL",
                    kernel_dilation=2,
                    pad_value=pad_value,
                )
                xp = jnp.pad(x, [(4, 0), (0, 0)], constant_values=pad_value)
                want = lax.conv_general_dilated(
                    xp[None],
                    _bin(params["latent_kernel"], KERNEL_RULE),
                    (1,),
                    "VALID",
                    rhs_dilation=(2,),
                    dimension_numbers=("NWC", "WIO", "NWC"),
                )[0]
                out.append(
                    (
                        layer.apply({"params": params}, x),
                        _add_bias(want, params["bias"]),
                    )
                )
            return out

        for got, want in run(params, x):
            self.assertEqual(got.shape, (9, 2))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    def test_pad_value_only_changes_the_border(self):
        params = make_params((3, 3, 4, 4))
        outputs = jax.jit(
            lambda p, x: {
                v: linen.BinaryConv(
                    4, (3, 3), pad_value=v, input_binarizer=SIGN_RULE
                ).apply({"params": p}, x)
                for v in (-1.0, 0.0, 1.0)
            }
        )(params, X_CONV)
        outputs = {k: np.asarray(v) for k, v in outputs.items()}
        for a, b in ((-1.0, 0.0), (0.0, 1.0), (-1.0, 1.0)):
            np.testing.assert_array_equal(
                outputs[a][:, 1:-1, 1:-1], outputs[b][:, 1:-1, 1:-1]
            )
            self.assertFalse(np.allclose(outputs[a][:, 0], outputs[b][:, 0]))

    def test_forward_kernel_has_two_values_per_output_channel(self):
        all_groups = (1, 2, 4)

        def patches(c, groups):
            # One-hot 3x3 patches read the binarized kernel out of the
            # forward pass: output [n, o] is kernel entry n of group(o).
            eye = jnp.eye(9 * c).reshape(9 * c, 3, 3, c)
            return jnp.tile(eye, (1, 1, 1, groups))

        all_params = [make_params((3, 3, 4 // g, 8), False) for g in all_groups]
        outs = jax.jit(
            lambda ps: [
                linen.BinaryConv(
                    8,
                    (3, 3),
                    padding="VALID",
                    feature_group_count=g,
                    use_bias=False,
                ).apply({"params": p}, patches(4 // g, g))
                for g, p in zip(all_groups, ps, strict=True)
            ]
        )(all_params)
        for groups, out, params in zip(
            all_groups, outs, all_params, strict=True
        ):
            c = 4 // groups
            self.assertEqual(out.shape, (9 * c, 1, 1, 8))
            kernel = np.asarray(out[:, 0, 0])
            latent = np.asarray(params["latent_kernel"]).reshape(9 * c, 8)
            for o in range(8):
                values = np.unique(kernel[:, o])
                self.assertLen(values, 2)
                self.assertEqual(values[0], -values[1])
                np.testing.assert_array_equal(
                    np.sign(kernel[:, o]), np.where(latent[:, o] >= 0, 1, -1)
                )

    def test_parameter_tree(self):
        key = jax.random.key(0)
        layer = linen.BinaryConv(6, (3, 3), feature_group_count=2)
        params = jax.eval_shape(layer.init, key, X_CONV)["params"]
        self.assertEqual(set(params), {"latent_kernel", "bias"})
        self.assertEqual(params["latent_kernel"].shape, (3, 3, 2, 6))
        self.assertEqual(params["latent_kernel"].dtype, jnp.float32)
        self.assertEqual(params["bias"].shape, (6,))
        no_bias = linen.BinaryConv(6, (3, 3), use_bias=False)
        self.assertEqual(
            set(jax.eval_shape(no_bias.init, key, X_CONV)["params"]),
            {"latent_kernel"},
        )

    def test_bfloat16_computation(self):
        layer = linen.BinaryConv(
            4, (3, 3), dtype=jnp.bfloat16, input_binarizer=SIGN_RULE
        )
        params = make_params((3, 3, 4, 4))

        @jax.jit
        def run(params):
            y = layer.apply({"params": params}, X_CONV)
            want = ref_conv(
                X_CONV, params, pads=[(1, 1), (1, 1)], input_rule=SIGN_RULE
            )
            grads = jax.grad(
                lambda p: jnp.sum(_apply(layer)(p, X_CONV).astype(jnp.float32))
            )(params)
            return y, want, grads

        y, want, grads = run(params)
        self.assertEqual(y.dtype, jnp.bfloat16)
        np.testing.assert_allclose(np.float32(y), want, rtol=2e-2, atol=5e-2)
        self.assertEqual(grads["latent_kernel"].dtype, jnp.float32)


class ProgressAndRngTest(parameterized.TestCase):
    def test_progress_reaches_the_kernel_binarizer(self):
        rule = bnnjax.Binarizer(surrogate="ede", axis=-1)
        layer = linen.BinaryConv(4, (3, 3), kernel_binarizer=rule)
        params = make_params((3, 3, 4, 4))
        traces = []

        def loss(p, progress):
            return jnp.sum(
                layer.apply({"params": p}, X_CONV, progress=progress)
            )

        def ref_loss(p, progress):
            y = ref_conv(
                X_CONV,
                p,
                pads=[(1, 1), (1, 1)],
                kernel_rule=rule,
                progress=progress,
            )
            return jnp.sum(y)

        @jax.jit
        def forward_and_grads(params, progress):
            traces.append(None)  # runs only while tracing
            return (
                jax.value_and_grad(loss)(params, progress),
                jax.grad(ref_loss)(params, progress),
            )

        results = [forward_and_grads(params, p) for p in (0.0, 1.0, 0.5)]
        self.assertLen(traces, 1)
        for (_, got), want in results:
            np.testing.assert_allclose(
                got["latent_kernel"], want["latent_kernel"], rtol=1e-5
            )
        (y0, g0), _ = results[0]
        (y1, g1), _ = results[1]
        self.assertEqual(float(y0), float(y1))  # forward is sign either way
        diff = jnp.abs(g0["latent_kernel"] - g1["latent_kernel"])
        self.assertGreater(float(jnp.max(diff)), 1e-2)

    def test_ede_without_progress_raises(self):
        layer = linen.BinaryDense(
            3, kernel_binarizer=bnnjax.Binarizer(surrogate="ede")
        )
        with self.assertRaisesRegex(ValueError, "progress"):
            jax.eval_shape(layer.init, jax.random.key(0), X_DENSE)

    def test_stochastic_binarizers_use_the_binarize_stream(self):
        rule = bnnjax.Binarizer(surrogate="stochastic", scale=None, axis=-1)
        x = jax.random.normal(jax.random.key(5), (8, 16)) * 0.5
        params = make_params((16, 16))
        layers = {
            which: linen.BinaryDense(16, **{f"{which}_binarizer": rule})
            for which in ("kernel", "input")
        }
        apply = jax.jit(
            lambda p, key: {
                which: layer.apply({"params": p}, x, rngs={"binarize": key})
                for which, layer in layers.items()
            }
        )
        a = apply(params, jax.random.key(7))
        b = apply(params, jax.random.key(7))
        c = apply(params, jax.random.key(8))
        for which, layer in layers.items():
            self.assertEqual(a[which].shape, (8, 16))
            np.testing.assert_array_equal(a[which], b[which])
            self.assertFalse(np.array_equal(a[which], c[which]))
            with self.assertRaisesRegex(ValueError, r"'binarize' rng stream"):
                layer.apply({"params": params}, x)
            with self.assertRaisesRegex(ValueError, f"{which}_binarizer"):
                jax.eval_shape(layer.init, jax.random.key(0), x)
            rngs = {"params": jax.random.key(0), "binarize": jax.random.key(1)}
            shapes = jax.eval_shape(lambda r, m=layer: m.init(r, x), rngs)
            self.assertEqual(shapes["params"]["latent_kernel"].shape, (16, 16))

    def test_custom_rng_collection(self):
        rule = bnnjax.Binarizer(surrogate="stochastic", axis=-1)
        layer = linen.BinaryDense(
            4, kernel_binarizer=rule, rng_collection="noise"
        )
        variables = {"params": make_params((5, 4))}
        y = layer.apply(variables, X_DENSE, rngs={"noise": jax.random.key(2)})
        self.assertEqual(y.shape, (3, 4))
        with self.assertRaisesRegex(ValueError, "'noise'"):
            layer.apply(
                variables, X_DENSE, rngs={"binarize": jax.random.key(2)}
            )


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(
        ("kernel_binarizer", "ste", r"bnnjax\.Binarizer\(surrogate='ste'"),
        (
            "kernel_binarizer",
            bnnjax.SteSurrogate(),
            r"Wrap it: kernel_binarizer=bnnjax\.Binarizer\(surrogate=Ste",
        ),
        ("input_binarizer", "clipped_ste", r"a bnnjax\.Binarizer or None"),
        ("kernel_binarizer", None, r"must be a bnnjax\.Binarizer, got None"),
        ("input_binarizer", bnnjax.MeanAbsScale(), r"Binarizer\(scale="),
    )
    def test_non_binarizer_is_type_error(self, field, value, regex):
        with self.assertRaisesRegex(TypeError, regex):
            linen.BinaryDense(3, **{field: value})
        with self.assertRaisesRegex(TypeError, field):
            linen.BinaryConv(3, (3, 3), **{field: value})

    def test_unsupported_flax_arguments_are_not_accepted(self):
        with self.assertRaisesRegex(TypeError, "input_dilation"):
            linen.BinaryConv(3, (3, 3), input_dilation=2)
        with self.assertRaisesRegex(TypeError, "mask"):
            linen.BinaryConv(3, (3, 3), mask=jnp.ones((3, 3, 1, 3)))
        with self.assertRaisesRegex(TypeError, "dot_general"):
            linen.BinaryDense(3, dot_general=lax.dot_general)
        # Binary extras are keyword-only: no positional shift past flax's.
        with self.assertRaisesRegex(TypeError, "positional"):
            linen.BinaryConv(3, (3, 3), 1, "SAME", 1)

    def test_feature_group_count_must_divide_the_features(self):
        with self.assertRaisesRegex(
            ValueError, r"feature_group_count=3 must divide features=8"
        ):
            linen.BinaryConv(8, (3, 3), feature_group_count=3)
        layer = linen.BinaryConv(8, (3, 3), feature_group_count=8)
        with self.assertRaisesRegex(
            ValueError, r"feature_group_count=8 must divide in_features=4"
        ):
            jax.eval_shape(layer.init, jax.random.key(0), X_CONV)
        with self.assertRaisesRegex(ValueError, "positive int"):
            linen.BinaryConv(8, (3, 3), feature_group_count=0)

    def test_kernel_size_must_match_the_input_rank(self):
        layer = linen.BinaryConv(3, (3, 3, 3))
        with self.assertRaisesRegex(
            ValueError, r"kernel_size=\(3, 3, 3\) has 3 spatial dimensions"
        ):
            jax.eval_shape(layer.init, jax.random.key(0), jnp.ones((5, 5, 4)))
        with self.assertRaisesRegex(ValueError, "strides"):
            linen.BinaryConv(3, (3, 3), strides=(1, 1, 1))
        with self.assertRaisesRegex(ValueError, "kernel_dilation"):
            linen.BinaryConv(3, (3, 3), kernel_dilation=(2,))
        with self.assertRaisesRegex(TypeError, "kernel_size"):
            linen.BinaryConv(3, "3x3")
        with self.assertRaisesRegex(ValueError, "kernel_size"):
            linen.BinaryConv(3, (3, 0))

    def test_wrong_input_feature_count(self):
        variables = {"params": make_params((5, 3))}
        with self.assertRaisesRegex(
            ValueError, r"inputs of shape \(3, 4\).*expected inputs of shape"
        ):
            linen.BinaryDense(3).apply(variables, X_DENSE[:, :4])
        variables = {"params": make_params((3, 3, 4, 3))}
        with self.assertRaisesRegex(ValueError, r"have 3 features.*expects 4"):
            linen.BinaryConv(3, (3, 3)).apply(variables, X_CONV[..., :3])

    def test_padding_errors(self):
        with self.assertRaisesRegex(ValueError, "cannot be honoured"):
            linen.BinaryConv(3, (3, 3), padding="CIRCULAR", pad_value=-1.0)
        with self.assertRaisesRegex(ValueError, "cannot be honoured"):
            linen.BinaryConv(3, (3, 3), padding="REFLECT", pad_value=1.0)
        with self.assertRaisesRegex(ValueError, "expected one of"):
            linen.BinaryConv(3, (3, 3), padding="FULL")
        with self.assertRaisesRegex(ValueError, "only defined for 1D"):
            linen.BinaryConv(3, (3, 3), padding="CAUSAL")
        with self.assertRaisesRegex(ValueError, "has 3 entries"):
            linen.BinaryConv(3, (3, 3), padding=(1, 1, 1))
        with self.assertRaisesRegex(TypeError, "pad_value"):
            linen.BinaryConv(3, (3, 3), pad_value="-1")
        with self.assertRaisesRegex(ValueError, "finite"):
            linen.BinaryConv(3, (3, 3), pad_value=float("nan"))

    def test_features_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, "features must be"):
            linen.BinaryDense(0)
        with self.assertRaisesRegex(TypeError, "features must be"):
            linen.BinaryConv(2.0, (3, 3))


if __name__ == "__main__":
    absltest.main()

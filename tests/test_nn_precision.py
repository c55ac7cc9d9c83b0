"""The forward product of the binary layers: ``(x @ sign(W)) * alpha``.

The scale is applied to the product's output (per output feature, or per
tensor), which is the same function as ``x @ (alpha * sign(W))`` with the
same gradients up to rounding, and the exact product packed 1-bit
inference computes.
"""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx
from jax import lax

import bnnjax
from bnnjax import packed
from bnnjax.nn import _precision, functional

SIGN = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
KERNEL_RULES = {
    "founding": bnnjax.Binarizer(axis=-1),
    "xnor": bnnjax.Binarizer(
        surrogate="clipped_ste", scale="mean_abs", axis=-1
    ),
    "bireal": bnnjax.Binarizer(
        surrogate="clipped_ste",
        scale=bnnjax.MeanAbsScale(stop_gradient=False),
        axis=-1,
    ),
    "irnet": bnnjax.Binarizer(
        surrogate="swish_sign", scale="std", axis=-1, center=True
    ),
    "per_tensor": bnnjax.Binarizer(scale="mean_abs_dev", axis=None),
    "no_scale": bnnjax.Binarizer(surrogate="ste", scale=None),
    # One scale per *input* feature: cannot move after the product, so it
    # is folded into the kernel (the old order).
    "per_input": bnnjax.Binarizer(scale="mean_abs", axis=0),
}


def _dense_reference(x, w, rule, input_rule):
    """The product in the other order: ``x_b @ (alpha * sign(W))``."""
    x_b = x if input_rule is None else input_rule(x)
    return jnp.dot(x_b, rule(w))


def _conv_reference(x, w, rule, input_rule, groups):
    x_b = x if input_rule is None else input_rule(x)
    return lax.conv_general_dilated(
        x_b,
        rule(w),
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _with_grads(fn, *args):
    """Output and gradients of ``sum(cos-weighted output)`` w.r.t. args."""

    def loss(*a):
        y = fn(*a)
        g = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return jnp.sum(g * y), y

    (_, y), grads = jax.value_and_grad(
        loss, argnums=tuple(range(len(args))), has_aux=True
    )(*args)
    return y, grads


class OrderOfScaleTest(parameterized.TestCase):
    @parameterized.product(
        rule=tuple(KERNEL_RULES), binary_inputs=(False, True)
    )
    def test_dense_same_function_and_gradients(self, rule, binary_inputs):
        kernel_rule = KERNEL_RULES[rule]
        input_rule = SIGN if binary_inputs else None
        x = jax.random.normal(jax.random.key(0), (16, 96))
        w = jax.random.normal(jax.random.key(1), (96, 24)) * 0.1 + 0.01
        w = w.at[3, 4].set(0.0)

        @jax.jit
        def both(x, w):
            ours = _with_grads(
                lambda a, b: functional.binary_dense(
                    a,
                    b,
                    kernel_binarizer=kernel_rule,
                    input_binarizer=input_rule,
                ),
                x,
                w,
            )
            ref = _with_grads(
                lambda a, b: _dense_reference(a, b, kernel_rule, input_rule),
                x,
                w,
            )
            return ours, ref

        (y, (gx, gw)), (y_ref, (gx_ref, gw_ref)) = both(x, w)
        scale = float(jnp.max(jnp.abs(y_ref)))
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6 * scale)
        for got, want in ((gx, gx_ref), (gw, gw_ref)):
            top = float(jnp.max(jnp.abs(want)))
            self.assertGreater(top, 0.0)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * top)

    @parameterized.parameters(1, 4)
    def test_conv_same_function_and_gradients(self, groups):
        rule = KERNEL_RULES["founding"]
        x = jax.random.normal(jax.random.key(2), (2, 6, 5, 8))
        w = jax.random.normal(jax.random.key(3), (3, 3, 8 // groups, 12))

        @jax.jit
        def both(x, w):
            ours = _with_grads(
                lambda a, b: functional.binary_conv(
                    a,
                    b,
                    feature_group_count=groups,
                    kernel_binarizer=rule,
                    input_binarizer=SIGN,
                ),
                x,
                w,
            )
            ref = _with_grads(
                lambda a, b: _conv_reference(a, b, rule, SIGN, groups), x, w
            )
            return ours, ref

        (y, (gx, gw)), (y_ref, (gx_ref, gw_ref)) = both(x, w)
        scale = float(jnp.max(jnp.abs(y_ref)))
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6 * scale)
        for got, want in ((gx, gx_ref), (gw, gw_ref)):
            top = float(jnp.max(jnp.abs(want)))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * top)

    def test_scale_multiplies_the_exact_product_of_signs(self):
        # Binary inputs and kernel: the product of the signs is an exact
        # integer; the layer's output is exactly that integer times alpha,
        # bit for bit, which is what XNOR-popcount inference computes.
        rule = KERNEL_RULES["founding"]
        x = jnp.where(
            jax.random.normal(jax.random.key(4), (8, 200)) >= 0, 1.0, -1.0
        )
        w = jax.random.normal(jax.random.key(5), (200, 40)) * 0.05
        y = jax.jit(
            lambda a, b: functional.binary_dense(
                a, b, kernel_binarizer=rule, input_binarizer=SIGN
            )
        )(x, w)
        signs, alpha = rule.signs_and_scale(w)
        counts = packed.xnor_dense(
            packed.pack_bits(x >= 0),
            packed.prepare_xnor_kernel(packed.pack_kernel(w).words),
            200,
        )
        np.testing.assert_array_equal(np.asarray(x @ signs), np.asarray(counts))
        want = np.float32(np.asarray(counts)) * np.asarray(alpha)
        np.testing.assert_array_equal(np.asarray(y), want)

    def test_float_preset_kernels_are_used_as_they_are(self):
        # No scale: the kernel (here the identity rule of the float preset)
        # goes into the product unchanged.
        rule = bnnjax.presets.get_preset("float").kernel_binarizer
        x = jax.random.normal(jax.random.key(6), (4, 10))
        w = jax.random.normal(jax.random.key(7), (10, 3))
        np.testing.assert_array_equal(
            functional.binary_dense(x, w, kernel_binarizer=rule), x @ w
        )

    def test_signs_and_scale_factor_the_binarizer(self):
        w = jax.random.normal(jax.random.key(8), (7, 5)).at[1, 1].set(0.0)
        for rule in KERNEL_RULES.values():
            signs, alpha = rule.signs_and_scale(w)
            np.testing.assert_array_equal(
                np.abs(np.asarray(signs)), np.ones(w.shape, np.float32)
            )
            if alpha is None:
                self.assertIsNone(rule.scale)
                np.testing.assert_array_equal(signs, rule(w))
            else:
                np.testing.assert_array_equal(alpha * signs, rule(w))
        ede = bnnjax.Binarizer(surrogate="ede", axis=-1)
        signs, alpha = ede.signs_and_scale(w, progress=0.5)
        np.testing.assert_array_equal(alpha * signs, ede(w, progress=0.5))


class SignProductDtypeTest(parameterized.TestCase):
    """bfloat16 operands for products of +-1 values: exact, bit for bit."""

    @parameterized.parameters("founding", "no_scale", "irnet")
    def test_dense_bfloat16_equals_float32_bit_for_bit(self, rule):
        kernel_rule = KERNEL_RULES[rule]
        x = jax.random.normal(jax.random.key(9), (16, 300)).at[0, 0].set(0.0)
        w = jax.random.normal(jax.random.key(10), (300, 20)) * 0.03

        def layer(dtype):
            return lambda a, b: functional.binary_dense(
                a,
                b,
                kernel_binarizer=kernel_rule,
                input_binarizer=SIGN,
                sign_product_dtype=dtype,
            )

        got = jax.jit(lambda a, b: _with_grads(layer(jnp.bfloat16), a, b))(x, w)
        want = jax.jit(lambda a, b: _with_grads(layer(None), a, b))(x, w)
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), strict=True
        ):
            self.assertEqual(a.dtype, jnp.float32)
            np.testing.assert_array_equal(a, b)

    @parameterized.parameters(-1.0, 0.0, 1.0)
    def test_conv_bfloat16_equals_float32_bit_for_bit(self, pad_value):
        x = jax.random.normal(jax.random.key(11), (2, 5, 6, 8))
        w = jax.random.normal(jax.random.key(12), (3, 3, 4, 6))

        def layer(dtype):
            return lambda a, b: functional.binary_conv(
                a,
                b,
                feature_group_count=2,
                pad_value=pad_value,
                kernel_binarizer=KERNEL_RULES["founding"],
                input_binarizer=SIGN,
                sign_product_dtype=dtype,
            )

        got = jax.jit(lambda a, b: _with_grads(layer(jnp.bfloat16), a, b))(x, w)
        want = jax.jit(lambda a, b: _with_grads(layer(None), a, b))(x, w)
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), strict=True
        ):
            np.testing.assert_array_equal(a, b)

    def test_explicit_bfloat16_refuses_a_scale_folded_into_the_kernel(self):
        # One scale per input feature multiplies the kernel before the
        # product, so its operand is not +-1 and bfloat16 would round it;
        # "auto" keeps float32 there (OrderOfScaleTest's "per_input").
        with self.assertRaisesRegex(ValueError, "not one value per output"):
            functional.binary_dense(
                jnp.ones((2, 4)),
                jnp.ones((4, 3)),
                kernel_binarizer=KERNEL_RULES["per_input"],
                input_binarizer=SIGN,
                sign_product_dtype=jnp.bfloat16,
            )
        with mock.patch.object(
            _precision, "bfloat16_dense_is_faster", return_value=True
        ):
            jaxpr = jax.make_jaxpr(
                lambda x, w: functional.binary_dense(
                    x,
                    w,
                    kernel_binarizer=KERNEL_RULES["per_input"],
                    input_binarizer=SIGN,
                )
            )(jnp.ones((2, 4)), jnp.ones((4, 3)))
        self.assertNotIn("bf16", str(jaxpr))

    def test_nan_propagates(self):
        w = jnp.ones((4, 3)).at[1, 2].set(jnp.nan)
        y = functional.binary_dense(
            jnp.ones((2, 4)),
            w,
            kernel_binarizer=KERNEL_RULES["no_scale"],
            input_binarizer=SIGN,
            sign_product_dtype=jnp.bfloat16,
        )
        self.assertTrue(np.all(np.isnan(np.asarray(y[:, 2]))))
        self.assertTrue(np.all(np.isfinite(np.asarray(y[:, :2]))))

    def test_rejected_where_not_exact(self):
        x = jnp.ones((2, 4))
        w = jnp.ones((4, 3))
        rule = KERNEL_RULES["founding"]
        identity = bnnjax.presets.get_preset("float").kernel_binarizer
        cases = {
            "inputs are real": {"input_binarizer": None},
            "input binarizer has a scale": {
                "input_binarizer": bnnjax.Binarizer(scale="mean_abs")
            },
            "IdentitySurrogate overrides forward": {
                "input_binarizer": SIGN,
                "kernel_binarizer": identity,
            },
            "computation dtype is bfloat16": {
                "input_binarizer": SIGN,
                "dtype": jnp.bfloat16,
            },
            "expected None, .auto. or jnp.bfloat16": {
                "input_binarizer": SIGN,
                "sign_product_dtype": jnp.int8,
            },
        }
        for message, kwargs in cases.items():
            kwargs = {
                "kernel_binarizer": rule,
                "sign_product_dtype": jnp.bfloat16,
                **kwargs,
            }
            with self.assertRaisesRegex(ValueError, message):
                functional.binary_dense(x, w, **kwargs)
        with self.assertRaisesRegex(ValueError, "pad_value=0.5"):
            functional.binary_conv(
                jnp.ones((1, 4, 4, 2)),
                jnp.ones((3, 3, 2, 2)),
                pad_value=0.5,
                kernel_binarizer=rule,
                input_binarizer=SIGN,
                sign_product_dtype=jnp.bfloat16,
            )

    def test_auto_is_its_dtype_only_where_exact(self):
        rule = KERNEL_RULES["founding"]
        pick = functools.partial(
            _precision.resolve_sign_product_dtype,
            "auto",
            kernel_binarizer=rule,
            compute=jnp.dtype(jnp.float32),
            contraction=300,
        )
        for dtype in (_precision.BFLOAT16, _precision.INT8):
            self.assertEqual(pick(SIGN, auto_dtype=dtype), dtype)
            # Not exact: auto falls back quietly instead of raising.
            self.assertIsNone(pick(None, auto_dtype=dtype))
            scaled = bnnjax.Binarizer(scale="mean_abs")
            self.assertIsNone(pick(scaled, auto_dtype=dtype))
            self.assertIsNone(
                pick(SIGN, auto_dtype=dtype, kernel_is_signs=False)
            )
        self.assertIsNone(pick(SIGN, auto_dtype=None))
        conv = _precision.conv_sign_product_dtype
        self.assertIsNone(conv(False, in_features=64))
        on_cpu = jax.default_backend() == "cpu"
        for in_features in (5, 64):
            self.assertEqual(
                conv(True, in_features=in_features),
                _precision.INT8 if on_cpu else None,
            )
        # Fewer than 5 input features: float32 patches.
        self.assertIsNone(conv(True, in_features=4))

    def test_auto_threshold_needs_rows_features_and_the_cpu(self):
        faster = _precision.bfloat16_dense_is_faster
        with mock.patch.object(
            _precision, "_cpu_multiplies_bfloat16", return_value=True
        ):
            on_cpu = jax.default_backend() == "cpu"
            self.assertEqual(faster(64, 128), on_cpu)
            self.assertFalse(faster(63, 1023))
            self.assertFalse(faster(1024, 127))
            # Wide layers from 32 rows.
            self.assertEqual(faster(32, 1024), on_cpu)
            self.assertFalse(faster(31, 4096))
            self.assertFalse(faster(32, 1023))
        with mock.patch.object(
            _precision, "_cpu_multiplies_bfloat16", return_value=False
        ):
            self.assertFalse(faster(1024, 1024))

    def test_cpuinfo_flags(self):
        has = _precision._cpuinfo_has_bfloat16
        self.assertTrue(has(["processor : 0\n", "flags : fpu avx512_bf16\n"]))
        self.assertTrue(has(["flags\t\t: sse amx_bf16 avx2\n"]))
        self.assertFalse(has(["flags : fpu avx512f avx512_vnni\n"]))
        self.assertFalse(has(["Features : fp asimd bf16\n"]))
        self.assertFalse(has([]))

    def _layer_grads(self, layer, x):
        variables = layer.init(jax.random.key(0), x)

        def loss(params, x):
            y = layer.apply({"params": params}, x)
            return jnp.sum(jnp.sin(y)), y

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            variables["params"], x
        )

    def test_layer_default_auto_equals_float32_and_uses_bfloat16(self):
        x = jax.random.normal(jax.random.key(13), (100, 200)).at[0].set(0.0)
        auto = bnnjax.nn.linen.BinaryDense(128, input_binarizer=SIGN)
        self.assertEqual(auto.sign_product_dtype, "auto")
        plain = bnnjax.nn.linen.BinaryDense(
            128, input_binarizer=SIGN, sign_product_dtype=None
        )
        with mock.patch.object(
            _precision, "bfloat16_dense_is_faster", return_value=True
        ):
            jaxpr = str(
                jax.make_jaxpr(
                    lambda x: auto.apply(auto.init(jax.random.key(0), x), x)
                )(x)
            )
            got = self._layer_grads(auto, x)
        self.assertIn("bf16", jaxpr)
        want = self._layer_grads(plain, x)
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), strict=True
        ):
            np.testing.assert_array_equal(a, b)

    @parameterized.parameters("int8", jnp.int8, "float", 3)
    def test_layers_reject_other_dtypes(self, value):
        with self.assertRaisesRegex(ValueError, "expected None, 'auto'"):
            bnnjax.nn.linen.BinaryDense(4, sign_product_dtype=value)
        with self.assertRaisesRegex(ValueError, "expected None, 'auto'"):
            bnnjax.nn.nnx.BinaryLinear(
                3, 4, rngs=nnx.Rngs(0), sign_product_dtype=value
            )
        with self.assertRaisesRegex(ValueError, "expected None, 'auto'"):
            bnnjax.nn.linen.BinaryConv(4, (3, 3), sign_product_dtype=value)


def _linen_logits_and_grads(model, x):
    """Logits and parameter gradients of a linen reference model (train)."""
    variables = model.init(jax.random.key(0), x, train=False)

    def loss(params):
        y, _ = model.apply(
            {**variables, "params": params},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(jnp.sin(y)), y

    (_, y), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return y, grads


def _nnx_logits_and_grads(make, x):
    model = make()

    def loss(model):
        y = model(x)
        return jnp.sum(jnp.sin(y)), y

    (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    return y, nnx.to_pure_dict(grads)


_MODEL_INPUTS = {
    "mlp": (2, 16, 16, 1),
    "cnn": (2, 8, 8, 3),
    "resnet": (2, 8, 8, 3),
}


# Two one-block stages on 8x8 inputs: every kind of binary layer, small.
_SMALL_RESNET = {
    "stage_sizes": (1, 1),
    "stage_features": (8, 16),
    "stem_features": 8,
    "stem_kernel_size": 3,
    "stem_strides": 1,
    "stem_max_pool": False,
}


def _linen_model(kind, **kwargs):
    m = bnnjax.models.linen
    if kind == "mlp":
        return m.BinaryMLP(hidden=(128, 128), **kwargs)
    if kind == "cnn":
        return m.BinaryNetCNN(width_multiplier=1 / 16, **kwargs)
    return m.BiRealResNet(**_SMALL_RESNET, **kwargs)


def _nnx_model(kind, **kwargs):
    m = bnnjax.models.nnx
    rngs = nnx.Rngs(0)
    if kind == "mlp":
        return m.BinaryMLP(
            in_features=256, hidden=(128, 128), rngs=rngs, **kwargs
        )
    if kind == "cnn":
        return m.BinaryNetCNN(
            input_size=(8, 8), width_multiplier=1 / 16, rngs=rngs, **kwargs
        )
    return m.BiRealResNet(**_SMALL_RESNET, rngs=rngs, **kwargs)


def _jaxpr(api, model, x) -> str:
    """The jaxpr of the model's inference call, as text.

    ``model``: a linen module, or for nnx a function that builds one.
    """
    if api == "linen":
        variables = model.init(jax.random.key(0), x, train=False)
        return str(
            jax.make_jaxpr(lambda x: model.apply(variables, x, train=False))(x)
        )
    return str(jax.make_jaxpr(lambda x: model()(x))(x))


class ModelSignProductDtypeTest(parameterized.TestCase):
    """The reference models pass ``sign_product_dtype`` to their layers
    with binarized inputs (never to a first layer on real pixels), and the
    result is the float32 model's bit for bit."""

    @staticmethod
    def _make(api, kind, **kwargs):
        if api == "linen":
            return _linen_model(kind, **kwargs)
        return functools.partial(_nnx_model, kind, **kwargs)

    @parameterized.product(kind=("mlp", "cnn", "resnet"), api=("linen", "nnx"))
    def test_bfloat16_products_equal_float32(self, kind, api):
        x = jax.random.normal(jax.random.key(1), _MODEL_INPUTS[kind])
        x = x.at[0, 0].set(0.0)
        run = (
            _linen_logits_and_grads if api == "linen" else _nnx_logits_and_grads
        )
        low = self._make(api, kind, sign_product_dtype=jnp.bfloat16)
        plain = self._make(api, kind, sign_product_dtype=None)
        self.assertIn("bf16", _jaxpr(api, low, x))
        got, want = run(low, x), run(plain, x)
        for a, b in zip(
            jax.tree.leaves(got), jax.tree.leaves(want), strict=True
        ):
            np.testing.assert_array_equal(a, b)

    @parameterized.parameters("linen", "nnx")
    def test_auto_default_reaches_the_hidden_layers(self, api):
        x = jax.random.normal(jax.random.key(2), (64, 16, 16, 1))
        if api == "linen":
            self.assertEqual(_linen_model("mlp").sign_product_dtype, "auto")
        with mock.patch.object(
            _precision, "bfloat16_dense_is_faster", return_value=True
        ):
            auto = _jaxpr(api, self._make(api, "mlp"), x)
            off = _jaxpr(
                api, self._make(api, "mlp", sign_product_dtype=None), x
            )
        self.assertIn("bf16", auto)
        self.assertNotIn("bf16", off)

    @parameterized.product(kind=("mlp", "cnn", "resnet"), api=("linen", "nnx"))
    def test_models_reject_other_dtypes(self, kind, api):
        make = _linen_model if api == "linen" else _nnx_model
        with self.assertRaisesRegex(ValueError, "expected None, 'auto'"):
            make(kind, sign_product_dtype=jnp.int8)

    def test_real_activations_refuse_explicit_bfloat16(self):
        # Binary weights with real (ReLU) activations: no product is exact
        # in bfloat16, and asking for it says so instead of rounding.
        model = bnnjax.models.linen.BinaryMLP(
            hidden=(8,),
            binary_activations=False,
            sign_product_dtype=jnp.bfloat16,
        )
        x = jnp.ones((2, 16))
        with self.assertRaisesRegex(ValueError, "the inputs are real"):
            model.init(jax.random.key(0), x, train=False)


if __name__ == "__main__":
    absltest.main()

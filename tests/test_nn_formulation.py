"""Exact formulations of pooling and convolution (``bnnjax.nn._formulation``).

The reshape max pool must give ``flax.linen.max_pool``'s values and
gradients bit for bit, ties included (the cotangent goes to the first
maximum of each window); the patches convolution must give
``lax.conv_general_dilated``'s values bit for bit on +-1 operands and up
to float rounding on real ones, with the gradients of the same function.
"""

from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx
from jax import lax

import bnnjax
from bnnjax.nn import _formulation
from bnnjax.nn import functional as F

SIGN = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)


def _ties(key, shape):
    """Small integers: most 2x2 windows hold a repeated maximum."""
    return jnp.round(2 * jax.random.normal(key, shape))


class MaxPoolTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("even", (3, 8, 8, 4), (2, 2)),
        ("odd_cropped", (2, 9, 7, 3), (2, 2)),
        ("window3", (2, 9, 9, 2), (3, 3)),
        ("rect", (2, 8, 9, 2), (2, 3)),
        ("one_d", (4, 10, 3), (2,)),
        ("three_d", (2, 4, 6, 4, 2), (2, 3, 2)),
        ("two_batch_axes", (2, 3, 6, 6, 2), (2, 2)),
    )
    def test_values_and_gradients_equal_flax_with_ties(self, shape, window):
        key_x, key_g = jax.random.split(jax.random.key(0))
        x = _ties(key_x, shape)
        self.assertTrue(
            _formulation.reshape_pool_applies(window, window, "VALID")
        )
        want = nn.max_pool(x, window, strides=window)
        got = F.max_pool(x, window, strides=window)
        np.testing.assert_array_equal(got, want)
        g = jax.random.normal(key_g, want.shape)

        def grad(pool):
            return jax.grad(lambda x: jnp.sum(pool(x, window, window) * g))(x)

        reference = grad(lambda x, w, s: nn.max_pool(x, w, strides=s))
        ours = grad(F.max_pool)
        # Ties are frequent, so a rule that split the cotangent between
        # tied maxima would differ here.
        self.assertGreater(int(jnp.sum(reference == 0)), 0)
        np.testing.assert_array_equal(ours, reference)

    def test_all_equal_window_sends_gradient_to_first(self):
        x = jnp.zeros((1, 2, 2, 1))
        g = jax.grad(lambda x: jnp.sum(F.max_pool(x, (2, 2), (2, 2))))(x)
        np.testing.assert_array_equal(g[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])

    def test_unbatched_input(self):
        x = _ties(jax.random.key(1), (6, 6, 3))
        np.testing.assert_array_equal(
            F.max_pool(x, (2, 2), (2, 2)),
            nn.max_pool(x, (2, 2), strides=(2, 2)),
        )

    @parameterized.named_parameters(
        ("overlapping", (3, 3), (2, 2), "VALID"),
        ("same_padding", (2, 2), (2, 2), "SAME"),
        ("default_strides", (2, 2), None, "VALID"),
        ("explicit_pads", (2, 2), (2, 2), ((1, 1), (1, 1))),
    )
    def test_other_windows_call_flax(self, window, strides, padding):
        self.assertFalse(
            _formulation.reshape_pool_applies(window, strides, padding)
        )
        x = _ties(jax.random.key(2), (2, 7, 7, 2))
        np.testing.assert_array_equal(
            F.max_pool(x, window, strides, padding),
            nn.max_pool(x, window, strides=strides, padding=padding),
        )

    def test_off_cpu_calls_flax(self):
        with mock.patch.object(jax, "default_backend", return_value="gpu"):
            self.assertFalse(
                _formulation.reshape_pool_applies((2, 2), (2, 2), "VALID")
            )

    def test_jit_vmap_and_bfloat16(self):
        x = _ties(jax.random.key(3), (3, 2, 6, 6, 2)).astype(jnp.bfloat16)

        def loss(x):
            return jnp.sum(F.max_pool(x, (2, 2), (2, 2)).astype(jnp.float32))

        def reference(x):
            y = nn.max_pool(x, (2, 2), strides=(2, 2))
            return jnp.sum(y.astype(jnp.float32))

        got = jax.jit(jax.vmap(jax.grad(loss)))(x)
        want = jax.vmap(jax.grad(reference))(x)
        self.assertEqual(got.dtype, jnp.bfloat16)
        np.testing.assert_array_equal(got, want)


# (name, input shape, kernel shape, strides, dilation) of the patches
# convolution's cases.
PATCH_CASES = (
    ("same", (2, 9, 9, 8), (3, 3, 8, 16), (1, 1), (1, 1)),
    ("strided", (2, 9, 10, 8), (3, 3, 8, 4), (2, 2), (1, 1)),
    ("dilated", (2, 11, 11, 4), (3, 3, 4, 4), (1, 1), (2, 2)),
    ("rect_kernel", (2, 8, 8, 4), (1, 3, 4, 4), (1, 2), (1, 1)),
    ("one_d", (3, 12, 5), (5, 5, 6), (1,), (1,)),
    ("image", (2, 10, 10, 1), (3, 3, 1, 8), (1, 1), (1, 1)),
)


class PatchesConvTest(parameterized.TestCase):
    @parameterized.named_parameters(*PATCH_CASES)
    def test_sign_operands_equal_xla_bit_for_bit(
        self, x_shape, k_shape, strides, dilation
    ):
        key_x, key_k = jax.random.split(jax.random.key(0))
        x = jnp.sign(jax.random.normal(key_x, x_shape))
        k = jnp.sign(jax.random.normal(key_k, k_shape))
        rank = len(strides)
        spatial = "HWD"[:rank]
        numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
        want = lax.conv_general_dilated(
            x, k, strides, "VALID", rhs_dilation=dilation,
            dimension_numbers=numbers,
        )  # fmt: skip
        got = _formulation.conv_patches(x, k, strides, dilation)
        self.assertEqual(got.shape, want.shape)
        np.testing.assert_array_equal(got, want)

    @parameterized.named_parameters(*PATCH_CASES)
    def test_written_backward_equals_autodiff_and_xla(
        self, x_shape, k_shape, strides, dilation
    ):
        # Small integers everywhere: every product and sum is exact, so
        # the written-out backward, autodiff through the plain patches
        # product and XLA's convolution gradients agree bit for bit.
        keys = jax.random.split(jax.random.key(5), 3)
        x = jnp.round(2 * jax.random.normal(keys[0], x_shape))
        k = jnp.sign(jax.random.normal(keys[1], k_shape))
        y = _formulation.conv_patches(x, k, strides, dilation)
        g = jnp.round(2 * jax.random.normal(keys[2], y.shape))
        rank = len(strides)
        spatial = "HWD"[:rank]
        numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")

        def plain(x, k):  # the patches product, differentiated by autodiff
            patches = _formulation._patches(x, k_shape[:-2], strides, dilation)
            return patches @ jnp.reshape(k, (-1, k.shape[-1]))

        def xla(x, k):
            return lax.conv_general_dilated(
                x, k, strides, "VALID", rhs_dilation=dilation,
                dimension_numbers=numbers,
            )  # fmt: skip

        def grads(f):
            return jax.jit(jax.grad(lambda x, k: jnp.vdot(f(x, k), g), (0, 1)))(
                x, k
            )

        ours = grads(
            lambda x, k: _formulation.conv_patches(x, k, strides, dilation)
        )
        for reference in (grads(plain), grads(xla)):
            for a, b in zip(ours, reference, strict=True):
                self.assertEqual(a.dtype, b.dtype)
                np.testing.assert_array_equal(a, b)
        # Under vmap (two examples' gradients at once), the same values.
        per_example = jax.vmap(
            lambda x, g: jax.grad(
                lambda x, k: jnp.vdot(
                    _formulation.conv_patches(x, k, strides, dilation), g
                ),
                (0, 1),
            )(x[None], k),
            in_axes=(0, 0),
        )(x, g)
        np.testing.assert_array_equal(per_example[0][:, 0], ours[0])
        np.testing.assert_array_equal(jnp.sum(per_example[1], 0), ours[1])

    def test_real_operands_and_bfloat16_gradients(self):
        keys = jax.random.split(jax.random.key(6), 3)
        x = jax.random.normal(keys[0], (2, 8, 8, 4))
        k = jax.random.normal(keys[1], (3, 3, 4, 8))
        g = jax.random.normal(keys[2], (2, 6, 6, 8))

        def plain(x, k):
            patches = _formulation._patches(x, (3, 3), (1, 1), (1, 1))
            return patches @ jnp.reshape(k, (-1, 8))

        ours = jax.grad(
            lambda x, k: jnp.vdot(
                _formulation.conv_patches(x, k, (1, 1), (1, 1)), g
            ),
            (0, 1),
        )(x, k)
        want = jax.grad(lambda x, k: jnp.vdot(plain(x, k), g), (0, 1))(x, k)
        for a, b in zip(ours, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        # bfloat16 operands accumulated in float32: each gradient comes
        # back in its operand's dtype, as autodiff's.
        xb, kb = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
        y, vjp = jax.vjp(
            lambda x, k: _formulation.conv_patches(
                x, k, (1, 1), (1, 1), preferred_element_type=jnp.float32
            ),
            xb,
            kb,
        )
        self.assertEqual(y.dtype, jnp.float32)
        dx, dk = vjp(g)
        self.assertEqual((dx.dtype, dk.dtype), (jnp.bfloat16, jnp.bfloat16))
        np.testing.assert_allclose(
            dk.astype(jnp.float32), want[1], rtol=2e-2, atol=0.3
        )

    @parameterized.parameters("xla", "patches")
    def test_binary_conv_impls_agree(self, impl):
        keys = jax.random.split(jax.random.key(1), 3)
        x = jax.random.normal(keys[0], (4, 9, 9, 8))
        w = jax.random.normal(keys[1], (3, 3, 8, 16)) * 0.1
        g = jax.random.normal(keys[2], (4, 5, 5, 16))

        def loss(x, w, impl, input_binarizer):
            y = F.binary_conv(
                x,
                w,
                strides=2,
                padding="SAME",
                pad_value=-1.0 if input_binarizer else 0.0,
                kernel_binarizer=bnnjax.Binarizer(axis=-1),
                input_binarizer=input_binarizer,
                conv_impl=impl,
            )
            return jnp.sum(y * g), y

        for input_binarizer in (SIGN, None):
            grad = jax.jit(
                jax.value_and_grad(loss, (0, 1), has_aux=True),
                static_argnums=(2, 3),
            )
            (_, y_ref), g_ref = grad(x, w, "xla", input_binarizer)
            (_, y), gs = grad(x, w, impl, input_binarizer)
            if input_binarizer is SIGN:  # +-1 operands: the same integers
                np.testing.assert_array_equal(y, y_ref)
            else:
                np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
            for a, b in zip(gs, g_ref, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    def test_under_vmap_over_seeds(self):
        keys = jax.random.split(jax.random.key(2), 3)
        x = jnp.sign(jax.random.normal(keys[0], (3, 2, 8, 8, 8)))
        w = jax.random.normal(keys[1], (3, 3, 3, 8, 8))

        def conv(impl):
            return jax.vmap(
                lambda x, w: F.binary_conv(
                    x, w, kernel_binarizer=SIGN, input_binarizer=SIGN,
                    conv_impl=impl,
                )
            )  # fmt: skip

        np.testing.assert_array_equal(
            jax.jit(conv("patches"))(x, w), conv("xla")(x, w)
        )

    def test_invalid_impl_and_grouped_patches_raise(self):
        x = jnp.ones((1, 4, 4, 4))
        w = jnp.ones((3, 3, 2, 4))
        with self.assertRaisesRegex(ValueError, "conv_impl='fast'.*'auto'"):
            F.binary_conv(
                x,
                jnp.ones((3, 3, 4, 4)),
                kernel_binarizer=SIGN,
                conv_impl="fast",
            )
        with self.assertRaisesRegex(ValueError, "ungrouped.*group_count=2"):
            F.binary_conv(
                x, w, feature_group_count=2, kernel_binarizer=SIGN,
                conv_impl="patches",
            )  # fmt: skip
        # "auto" keeps XLA's grouped convolution.
        self.assertEqual(
            F.binary_conv(
                x, w, feature_group_count=2, kernel_binarizer=SIGN
            ).shape,
            (1, 4, 4, 4),
        )

    def test_layers_take_conv_impl(self):
        x = jnp.sign(jax.random.normal(jax.random.key(3), (2, 8, 8, 8)))
        outs = []
        for impl in ("xla", "patches"):
            layer = bnnjax.nn.linen.BinaryConv(
                8, (3, 3), input_binarizer=SIGN, conv_impl=impl
            )
            variables = layer.init(jax.random.key(4), x)
            outs.append(layer.apply(variables, x))
            nnx_layer = bnnjax.nn.nnx.BinaryConv(
                8, 8, (3, 3), input_binarizer=SIGN, conv_impl=impl,
                rngs=nnx.Rngs(4),
            )  # fmt: skip
            self.assertEqual(nnx_layer.conv_impl, impl)
        np.testing.assert_array_equal(outs[0], outs[1])
        with self.assertRaisesRegex(ValueError, "conv_impl"):
            bnnjax.nn.linen.BinaryConv(8, (3, 3), conv_impl="cudnn")
        with self.assertRaisesRegex(ValueError, "conv_impl"):
            bnnjax.nn.nnx.BinaryConv(
                8, 8, (3, 3), conv_impl="cudnn", rngs=nnx.Rngs(0)
            )


class Int8PatchesTest(parameterized.TestCase):
    @parameterized.named_parameters(*PATCH_CASES)
    def test_values_and_gradients_equal_float32(
        self, x_shape, k_shape, strides, dilation
    ):
        keys = jax.random.split(jax.random.key(7), 3)
        # Signs with zeros (a 0 padding), +-1 kernel signs.
        x = jnp.round(jnp.clip(jax.random.normal(keys[0], x_shape), -1, 1))
        k = jnp.sign(jax.random.normal(keys[1], k_shape))
        self.assertGreater(int(jnp.sum(x == 0)), 0)

        def conv(int8):
            return lambda x, k: _formulation.conv_patches(
                x, k, strides, dilation, int8_operands=int8
            )

        want = conv(False)(x, k)
        got = jax.jit(conv(True))(x, k)
        self.assertEqual(got.dtype, jnp.float32)
        np.testing.assert_array_equal(got, want)
        g = jnp.round(2 * jax.random.normal(keys[2], want.shape))

        def grads(int8):
            return jax.jit(
                jax.grad(lambda x, k: jnp.vdot(conv(int8)(x, k), g), (0, 1))
            )(x, k)

        for a, b in zip(grads(True), grads(False), strict=True):
            self.assertEqual(a.dtype, b.dtype)
            np.testing.assert_array_equal(a, b)

    def test_nan_reaches_the_outputs_float32_would(self):
        x = jnp.sign(jax.random.normal(jax.random.key(8), (2, 7, 7, 3)))
        k = jnp.sign(jax.random.normal(jax.random.key(9), (3, 3, 3, 4)))
        x = x.at[0, 2, 3, 1].set(jnp.nan)
        k_nan = k.at[1, 1, 0, 2].set(jnp.nan)
        for kernel in (k, k_nan):
            want = _formulation.conv_patches(x, kernel, (1, 1), (1, 1))
            got = _formulation.conv_patches(
                x, kernel, (1, 1), (1, 1), int8_operands=True
            )
            # The windows around the NaN pixel (3x3 of example 0), and the
            # whole column of the NaN kernel entry; nothing else.
            self.assertGreater(int(jnp.sum(jnp.isnan(want))), 0)
            np.testing.assert_array_equal(jnp.isnan(got), jnp.isnan(want))
            finite = ~jnp.isnan(want)
            np.testing.assert_array_equal(got[finite], want[finite])
        self.assertTrue(bool(jnp.all(jnp.isnan(got[..., 2]))))
        self.assertFalse(bool(jnp.any(jnp.isnan(got[1, ..., 0]))))

    def test_auto_takes_int8_only_for_exact_operands(self):
        x = jax.random.normal(jax.random.key(10), (2, 8, 8, 8))
        w = jax.random.normal(jax.random.key(11), (3, 3, 8, 16))

        def int8_in_jaxpr(**kwargs):
            f = lambda x, w: F.binary_conv(  # noqa: E731
                x, w, kernel_binarizer=SIGN, conv_impl="patches", **kwargs
            )
            return "i8[" in str(jax.make_jaxpr(f)(x, w))

        self.assertTrue(int8_in_jaxpr(input_binarizer=SIGN))
        self.assertTrue(int8_in_jaxpr(input_binarizer=SIGN, pad_value=-1.0))
        # Real inputs, a scale, float32 asked for, or XLA's convolution.
        self.assertFalse(int8_in_jaxpr())
        self.assertFalse(
            int8_in_jaxpr(input_binarizer=bnnjax.Binarizer(axis=-1))
        )
        self.assertFalse(
            int8_in_jaxpr(input_binarizer=SIGN, sign_product_dtype=None)
        )
        self.assertFalse(int8_in_jaxpr(input_binarizer=SIGN, pad_value=0.5))
        with mock.patch.object(jax, "default_backend", return_value="gpu"):
            self.assertFalse(int8_in_jaxpr(input_binarizer=SIGN))
        # Fewer than 5 input features: float32 patches.
        x4, w4 = x[..., :4], w[:, :, :4]
        thin = jax.make_jaxpr(
            lambda x, w: F.binary_conv(
                x, w, kernel_binarizer=SIGN, input_binarizer=SIGN,
                conv_impl="patches",
            )
        )(x4, w4)  # fmt: skip
        self.assertNotIn("i8[", str(thin))
        # The int8 product and the float32 one: the same layer, bit for bit.
        ys = [
            F.binary_conv(
                x, w, kernel_binarizer=SIGN, input_binarizer=SIGN,
                conv_impl="patches", sign_product_dtype=dtype,
            )
            for dtype in ("auto", None)
        ]  # fmt: skip
        np.testing.assert_array_equal(ys[0], ys[1])


class AutoChoiceTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("image_input", 1, 32, True),
        ("rgb_to_narrow", 3, 16, True),
        ("strided_or_wide", 64, 128, True),
        ("mid", 32, 32, True),
        ("narrow", 16, 16, False),
        ("narrow_in_out", 8, 16, False),
        ("narrow_in_wide_out", 16, 32, True),
    )
    def test_cpu_region(self, cin, cout, expected):
        self.assertEqual(
            _formulation.patches_conv_is_faster(
                in_features=cin, features=cout, kernel_size=(3, 3)
            ),
            expected,
        )

    def test_never_for_1x1_grouped_or_off_cpu(self):
        args = dict(in_features=1, features=32)
        self.assertFalse(
            _formulation.patches_conv_is_faster(**args, kernel_size=(1, 1))
        )
        self.assertFalse(
            _formulation.patches_conv_is_faster(
                **args, kernel_size=(3, 3), feature_group_count=2
            )
        )
        with mock.patch.object(jax, "default_backend", return_value="gpu"):
            self.assertFalse(
                _formulation.patches_conv_is_faster(**args, kernel_size=(3, 3))
            )


if __name__ == "__main__":
    absltest.main()

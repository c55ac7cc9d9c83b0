"""1-bit export: exact packing, XNOR-popcount, folded batch norm, the file.

Every reference architecture is packed, written, reloaded and run from the
packed arrays alone; its logits must match the float model's eval-mode
forward (identical argmax, ``max |diff| <= 1e-5 * max |logit|``).
"""

import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import tempfile
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx, traverse_util

import bnnjax
from bnnjax import export as export_lib
from bnnjax import packed
from bnnjax.data import load_mnist_sample
from bnnjax.export import _format as export_format
from bnnjax.models import linen as mlinen
from bnnjax.models import nnx as mnnx
from bnnjax.nn import LATENT_KERNEL

SIGN = bnnjax.Binarizer(surrogate="ste", scale=None)
LOGIT_RTOL = 1e-5  # max |packed - float| / max |float| allowed


def _compile_counter(test: absltest.TestCase) -> list[str]:
    """A list that grows by one entry per program XLA compiles until
    ``test`` ends (JAX records the event around the compilation or the
    persistent cache's read that replaces it, so a cache hit counts too).
    """
    compiles: list[str] = []

    def listen(event: str, duration: float, **kwargs) -> None:
        del duration, kwargs
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    test.addCleanup(jax.monitoring.unregister_event_duration_listener, listen)
    return compiles


class _TempDirTest(parameterized.TestCase):
    """Temporary files without absl's flags (pytest does not parse them)."""

    def tmp_path(self, name):
        if not hasattr(self, "_tmp"):
            self._tmp = tempfile.mkdtemp()
            self.addCleanup(shutil.rmtree, self._tmp, ignore_errors=True)
        return os.path.join(self._tmp, name)


def _rng(seed):
    return np.random.default_rng(seed)


def _pm1(bits):
    return np.where(bits, 1, -1)


def _sign(x):
    """The float model's sign: bnnjax.binarize without a scale."""
    return np.asarray(bnnjax.binarize(jnp.asarray(x), "ste", scale=None))


def _random_like(tree, seed=0):
    """Random weights and batch-norm statistics of ``tree``'s shapes."""
    rng = _rng(seed)

    def fill(path, leaf):
        if path[-1] == "var":
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif path[-1] == "mean":
            value = 0.1 * rng.normal(size=leaf.shape)
        elif path[-1] == "scale":
            value = rng.normal(size=leaf.shape)  # negative gammas too
        else:
            value = 0.5 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    flat = traverse_util.flatten_dict(tree)
    return traverse_util.unflatten_dict(
        {k: fill(k, v) for k, v in flat.items()}
    )


def _variables(model, x, seed=0):
    shapes = jax.eval_shape(
        lambda k: model.init(k, x, train=False, progress=0.0),
        jax.random.key(0),
    )
    return _random_like(shapes, seed)


def _float_logits(model, variables, x):
    return jax.jit(lambda v, x: model.apply(v, x, train=False, progress=1.0))(
        variables, x
    )


def _assert_same_predictions(test, got, want):
    got, want = np.asarray(got), np.asarray(want)
    test.assertEqual(got.shape, want.shape)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    rel = np.abs(got - want).max() / np.abs(want).max()
    test.assertLessEqual(rel, LOGIT_RTOL)


class PackTest(parameterized.TestCase):
    @parameterized.parameters((1, 1), (31, 3), (33, 5), (100, 2), (1000, 4))
    def test_kernel_round_trip_with_zeros(self, n_in, out):
        w = _rng(n_in).normal(size=(n_in, out)).astype(np.float32)
        w[0, 0] = 0.0
        w[-1, -1] = -0.0
        p = jax.jit(packed.pack_kernel)(jnp.asarray(w))
        self.assertEqual(p.words.dtype, jnp.uint32)
        self.assertEqual(p.words.shape, (out, -(-n_in // 32)))
        self.assertEqual(p.n_in, n_in)
        got = np.asarray(packed.unpack_kernel(p))
        np.testing.assert_array_equal(got, _sign(w))
        self.assertEqual(got[0, 0], 1.0)
        self.assertEqual(got[-1, -1], 1.0)  # sign(-0.0) = +1
        # Padding bits are zero: the popcount counts only real weights.
        ones = np.asarray(jax.lax.population_count(p.words)).sum(-1)
        np.testing.assert_array_equal(ones, (w >= 0).sum(0))

    def test_conv_kernel_layout(self):
        w = _rng(0).normal(size=(3, 2, 37, 5)).astype(np.float32)
        w[1, 1, 36, 4] = 0.0
        p = packed.pack_kernel(w)
        self.assertEqual(p.words.shape, (5, 3, 2, 2))
        np.testing.assert_array_equal(packed.unpack_kernel(p), _sign(w))
        # Bit i % 32 of word i // 32 is input feature i.
        bit = (np.asarray(p.words)[4, 1, 1, 1] >> np.uint32(4)) & 1
        self.assertEqual(bit, 1)

    @parameterized.parameters(1, 31, 32, 33, 100)
    def test_bits_round_trip(self, n):
        bits = _rng(n).random((3, n, 2)) < 0.5
        words = packed.pack_bits(bits, axis=1)
        self.assertEqual(words.shape, (3, -(-n // 32), 2))
        np.testing.assert_array_equal(
            packed.unpack_bits(words, n, axis=1), bits
        )

    def test_rejects_bad_inputs(self):
        with self.assertRaisesRegex(ValueError, r"\(\.\.\., in, out\)"):
            packed.pack_kernel(jnp.ones(3))
        with self.assertRaisesRegex(TypeError, "uint32"):
            packed.unpack_bits(jnp.ones(2, jnp.int32), 3)
        with self.assertRaisesRegex(ValueError, "do not fit"):
            packed.unpack_bits(jnp.ones(1, jnp.uint32), 33)


class XnorTest(parameterized.TestCase):
    @parameterized.parameters(1, 31, 33, 100, 1000, 2100)
    def test_equals_float_dot(self, n):
        rng = _rng(n)
        a = rng.random((3, n)) < 0.5
        w = rng.normal(size=(n, 7))
        want = _pm1(a) @ _pm1(w >= 0)
        k = packed.pack_kernel(w).words
        run = jax.jit(packed.xnor_dense, static_argnums=2)
        got = run(packed.pack_bits(a), packed.prepare_xnor_kernel(k), n)
        self.assertEqual(got.dtype, jnp.int32)
        np.testing.assert_array_equal(got, want)
        # Unprepared kernels (padded on the fly) give the same counts.
        np.testing.assert_array_equal(run(packed.pack_bits(a), k, n), want)

    @parameterized.parameters((1, 1), (3, 2), (5, 3), (16, 5), (40, 2))
    def test_word_loop_remainders_and_batch_shapes(self, words, rows):
        # W not a multiple of the unroll; rows in leading batch axes.
        n = 32 * words - 3
        rng = _rng(words + rows)
        a = rng.random((rows, 2, n)) < 0.5
        w = rng.normal(size=(n, 9))
        kernel = packed.prepare_xnor_kernel(packed.pack_kernel(w).words)
        self.assertIsInstance(kernel, packed.XnorKernel)
        self.assertEqual(kernel.shape, (9, words))
        got = jax.jit(packed.xnor_dense, static_argnums=2)(
            packed.pack_bits(a), kernel, n
        )
        self.assertEqual(got.shape, (rows, 2, 9))
        np.testing.assert_array_equal(got, _pm1(a) @ _pm1(w >= 0))

    def test_blocked_wide_layer_with_tail(self):
        # out >= 2048 and rows >= 16: 512-column blocks plus a 52 tail.
        n, out, rows = 70, 2100, 16
        rng = _rng(11)
        a = rng.random((rows, n)) < 0.5
        w = rng.normal(size=(n, out))
        kernel = packed.prepare_xnor_kernel(packed.pack_kernel(w).words)
        got = jax.jit(packed.xnor_dense, static_argnums=2)(
            packed.pack_bits(a), kernel, n
        )
        np.testing.assert_array_equal(got, _pm1(a) @ _pm1(w >= 0))

    def test_rejects_bad_kernels(self):
        with self.assertRaisesRegex(TypeError, "uint32 words"):
            packed.prepare_xnor_kernel(jnp.ones((2, 3), jnp.int32))
        with self.assertRaisesRegex(ValueError, r"\(out, W\)"):
            packed.xnor_dense(
                jnp.ones((1, 2), jnp.uint32), jnp.ones(2, jnp.uint32), 64
            )
        with self.assertRaisesRegex(ValueError, "W_a <= W_k"):
            packed.xnor_dense(
                jnp.ones((1, 3), jnp.uint32), jnp.ones((4, 2), jnp.uint32), 64
            )

    @parameterized.parameters(
        (-1.0, (1, 1), ((1, 1), (1, 1)), (1, 1)),
        (1.0, (2, 2), ((1, 1), (1, 1)), (1, 1)),
        (0.0, (1, 1), ((1, 1), (1, 1)), (1, 1)),
        (0.0, (2, 1), ((0, 2), (2, 0)), (2, 1)),
        (0.0, (1, 1), ((0, 0), (0, 0)), (1, 1)),
    )
    def test_conv_equals_float_conv(self, pad_value, strides, pads, dilation):
        rng = _rng(7)
        bits = rng.random((2, 7, 6, 33)) < 0.5
        w = rng.normal(size=(3, 3, 33, 5))
        x = _pm1(bits).astype(np.float32)
        x = np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=pad_value)
        want = jax.lax.conv_general_dilated(
            x,
            _pm1(w >= 0).astype(np.float32),
            strides,
            "VALID",
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        words = packed.pack_kernel(w).words
        got = packed.xnor_conv(
            bits,
            packed.prepare_xnor_kernel(words),
            n_in=33,
            kernel_size=(3, 3),
            strides=strides,
            dilation=dilation,
            padding=pads,
            pad_value=pad_value,
            tap_sums=packed.kernel_tap_sums(words, 33),
        )
        np.testing.assert_array_equal(got, np.asarray(want).astype(np.int32))

    @parameterized.parameters(
        (2, 33, 1.0, (1, 1)),  # grouped, 33 channels per group
        (4, 1, 0.0, (1, 1)),  # depthwise, zero padding
        (3, 5, -1.0, (2, 2)),  # grouped, strided
    )
    def test_grouped_conv_equals_float_conv(
        self, groups, per_group, pad_value, strides
    ):
        rng = _rng(groups)
        channels, out = groups * per_group, 2 * groups
        bits = rng.random((2, 7, 6, channels)) < 0.5
        w = rng.normal(size=(3, 3, per_group, out))
        pads = ((1, 1), (1, 1))
        x = np.pad(
            _pm1(bits).astype(np.float32),
            ((0, 0), *pads, (0, 0)),
            constant_values=pad_value,
        )
        want = jax.lax.conv_general_dilated(
            x,
            _pm1(w >= 0).astype(np.float32),
            strides,
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
        words = packed.pack_kernel(w).words
        got = jax.jit(
            lambda b: packed.xnor_conv(
                b,
                packed.prepare_xnor_kernel(words),
                n_in=per_group,
                kernel_size=(3, 3),
                strides=strides,
                dilation=(1, 1),
                padding=pads,
                pad_value=pad_value,
                tap_sums=packed.kernel_tap_sums(words, per_group),
                feature_group_count=groups,
            )
        )(bits)
        np.testing.assert_array_equal(got, np.asarray(want).astype(np.int32))

    def test_grouped_conv_rejects_mismatched_channels(self):
        words = packed.pack_kernel(np.ones((1, 1, 3, 4))).words
        with self.assertRaisesRegex(ValueError, "2 \\* 3"):
            packed.xnor_conv(
                jnp.ones((1, 2, 2, 5), bool),
                words,
                n_in=3,
                kernel_size=(1, 1),
                strides=(1, 1),
                dilation=(1, 1),
                padding=((0, 0), (0, 0)),
                pad_value=1.0,
                feature_group_count=2,
            )


class BinaryWeightTest(parameterized.TestCase):
    @parameterized.product(
        n=(31, 100, 1000), rows=(1, 3, 64), method=("lookup", "unpack")
    )
    def test_dense_equals_float_dot(self, n, rows, method):
        rng = _rng(n + rows)
        x = rng.normal(size=(rows, n)).astype(np.float32)
        w = rng.normal(size=(n, 24)).astype(np.float32)
        w[0, :3] = 0.0
        alpha = rng.uniform(0.1, 2.0, 24).astype(np.float32)
        kernel = alpha * _sign(w)
        want = x.astype(np.float64) @ kernel.astype(np.float64)
        weights = packed.prepare_binary_weights(packed.pack_kernel(w).words, n)
        got = jax.jit(
            lambda x, w, a: packed.binary_weight_dense(x, w, a, method=method)
        )(x, weights, alpha)
        # Float rounding of a sum of n terms: bound relative to sum |terms|.
        bound = 1e-6 * (np.abs(x) @ np.abs(kernel)).max()
        self.assertLessEqual(np.abs(np.asarray(got) - want).max(), bound)

    @parameterized.parameters(1, 3, 64)
    def test_unpack_is_the_float_layers_product(self, rows):
        # The bnnjax layers compute (x @ S) * alpha; unpacking S to +-1.0
        # and running the same dot gives the same float32 bits.
        rng = _rng(rows)
        x = rng.normal(size=(rows, 300)).astype(np.float32)
        w = rng.normal(size=(300, 40)).astype(np.float32)
        alpha = rng.uniform(0.1, 2.0, 40).astype(np.float32)
        want = jax.jit(lambda x, s, a: (x @ s) * a[None])(x, _sign(w), alpha)
        weights = packed.prepare_binary_weights(
            packed.pack_kernel(w).words, 300
        )
        got = jax.jit(
            lambda x, w, a: packed.binary_weight_dense(x, w, a, method="unpack")
        )(x, weights, alpha)
        np.testing.assert_array_equal(got, want)

    @parameterized.parameters(0.0, 0.5)
    def test_conv_equals_float_conv(self, pad_value):
        rng = _rng(3)
        x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
        w = rng.normal(size=(3, 3, 3, 8)).astype(np.float32)
        alpha = rng.uniform(0.1, 2.0, 8).astype(np.float32)
        _assert_packed_conv_is_float_conv(x, w, alpha, pad_value=pad_value)

    @parameterized.product(groups=(2, 4), rows_method=("lookup", "unpack"))
    def test_grouped_conv_equals_float_conv(self, groups, rows_method):
        rng = _rng(groups)
        per_group, out = 3, 2 * groups
        batch = 1 if rows_method == "lookup" else 2
        x = rng.normal(size=(batch, 5, 4, groups * per_group))
        x = x.astype(np.float32)
        w = rng.normal(size=(3, 3, per_group, out)).astype(np.float32)
        alpha = rng.uniform(0.1, 2.0, out).astype(np.float32)
        _assert_packed_conv_is_float_conv(
            x, w, alpha, groups=groups, method=rows_method
        )

    @parameterized.parameters("lookup", "unpack")
    def test_grouped_conv_without_alpha_is_alpha_one(self, rows_method):
        rng = _rng(5)
        x = rng.normal(size=(1, 5, 4, 6)).astype(np.float32)
        w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
        weights = packed.prepare_binary_weights(packed.pack_kernel(w).words, 3)

        def conv(alpha):
            return packed.binary_weight_conv(
                x,
                weights,
                alpha,
                kernel_size=(3, 3),
                strides=(1, 1),
                dilation=(1, 1),
                padding=((1, 1), (1, 1)),
                method=rows_method,
                feature_group_count=2,
            )

        np.testing.assert_array_equal(conv(None), conv(np.ones(4, np.float32)))


def _assert_packed_conv_is_float_conv(
    x, w, alpha, *, pad_value=0.0, groups=1, method="auto"
):
    """``binary_weight_conv`` (3x3, stride 1, padding 1) against the float
    convolution with ``alpha * sign(w)`` of the explicitly padded input."""
    padded = np.pad(
        x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value
    )
    want = jax.lax.conv_general_dilated(
        padded,
        alpha * _sign(w),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )
    weights = packed.prepare_binary_weights(
        packed.pack_kernel(w).words, w.shape[2]
    )
    got = packed.binary_weight_conv(
        x,
        weights,
        alpha,
        kernel_size=(3, 3),
        strides=(1, 1),
        dilation=(1, 1),
        padding=((1, 1), (1, 1)),
        pad_value=pad_value,
        method=method,
        feature_group_count=groups,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _flax_bn_sign(y, mean, var, scale, bias, epsilon):
    """sign(BatchNorm(y)) by flax's own module, as the float model does."""
    bn = nn.BatchNorm(use_running_average=True, epsilon=epsilon)
    variables = {
        "params": {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)},
        "batch_stats": {"mean": jnp.asarray(mean), "var": jnp.asarray(var)},
    }
    out = jax.jit(bn.apply)(variables, jnp.asarray(y))
    return _sign(out) > 0


def _bn_params():
    """Channels covering gamma > 0, < 0, == +-0, ties and -0.0 outputs."""
    f = np.float32
    mean = np.array([0.3, -0.2, 0.0, 0.5, 0.0, 0.25, 1.0, 0.0], f)
    var = np.array([1.0, 0.7, 1.0, 2.0, 1.0, 0.0, 1e-3, 1.0], f)
    scale = np.array([1.5, -0.8, 0.0, -0.0, 2.0, -1.0, 3.0, 1.0], f)
    # Channel 4: beta = -0.0 with mean 0 gives BN(+-0) = -0.0 -> sign +1.
    # Channel 5 (gamma < 0, beta = 0): BN(0.25) is exactly 0 -> +1.
    # Channel 7: BN(y) = y * rsqrt(1 + eps): tie at y = 0.
    bias = np.array([0.1, 0.2, -0.3, 0.0, -0.0, 0.0, -0.5, 0.0], f)
    return mean, var, scale, bias


class FoldTest(parameterized.TestCase):
    def test_batch_norm_sign_threshold_exact(self):
        mean, var, scale, bias = _bn_params()
        eps = 1e-4
        t, flip = packed.fold_batch_norm_sign(mean, var, scale, bias, eps)
        self.assertEqual(t.dtype, np.float32)
        # gamma > 0: no flip; gamma < 0: flip; gamma == 0: constant sign(beta)
        # encoded as threshold -inf with flip = (beta < 0).
        np.testing.assert_array_equal(flip[:4], [False, True, True, False])
        np.testing.assert_array_equal(t[2:4], [-np.inf, -np.inf])
        # Probe every channel at its threshold's float neighbours, at +-0,
        # at the exact ties and at random values.
        rng = _rng(0)
        probes = [
            np.nextafter(t, np.float32(-np.inf)),
            t,
            np.nextafter(t, np.float32(np.inf)),
            np.zeros_like(t),
            -np.zeros_like(t),
            np.full_like(t, 0.25),
            *rng.normal(size=(200, t.size)).astype(np.float32),
        ]
        y = np.stack(probes).astype(np.float32)
        y = np.where(np.isfinite(y), y, 0.0).astype(np.float32)
        want = _flax_bn_sign(y, mean, var, scale, bias, eps)
        got = (y >= t) != flip
        np.testing.assert_array_equal(got, want)
        # The planted ties really are ties, resolved as sign(0) = +1.
        self.assertTrue(want[3, 4] and want[4, 4])  # BN(+-0) = -0.0
        self.assertTrue(want[5, 5])  # BN(0.25) == 0 with gamma < 0

    @parameterized.parameters(9, 64)
    def test_count_threshold_exact(self, n):
        mean, var, scale, bias = _bn_params()
        alpha = np.array(
            [0.37, 1.0, 0.5, 0.1, 0.0, 0.25, 0.013, 1.0], np.float32
        )
        eps = 1e-4
        t, flip = packed.fold_batch_norm_sign(mean, var, scale, bias, eps)
        tc, flip_c = packed.fold_count_threshold(t, flip, alpha, n)
        self.assertEqual(tc.dtype, np.int32)
        c = np.arange(-n, n + 1)[:, None]
        y = (alpha * c.astype(np.float32)).astype(np.float32)
        want = _flax_bn_sign(y, mean, var, scale, bias, eps)
        np.testing.assert_array_equal((c >= tc) != flip_c, want)
        # Channel 5: alpha * 1 = 0.25 = mean hits the tie exactly.
        self.assertTrue(want[n + 1, 5])

    def test_rejects_bad_statistics(self):
        ones = np.ones(2, np.float32)
        with self.assertRaisesRegex(ValueError, "variances must be >= 0"):
            packed.fold_batch_norm_sign(ones, -ones, ones, ones, 1e-5)
        with self.assertRaisesRegex(ValueError, "finite"):
            packed.fold_batch_norm_sign(ones * np.nan, ones, ones, ones, 1e-5)
        with self.assertRaisesRegex(ValueError, "alpha must be finite"):
            packed.fold_count_threshold(ones, ones > 0, -ones, 3)


def _arch(name):
    """(model, inputs) of small configurations of every architecture."""
    img = lambda seed, shape: jax.random.normal(jax.random.key(seed), shape)  # noqa: E731
    mlp_x = img(1, (16, 8, 8, 1))
    if name == "mlp":
        return mlinen.BinaryMLP(hidden=(48, 40)), mlp_x
    if name == "mlp_real_head":
        return mlinen.BinaryMLP(hidden=(48, 40), binary_last=False), mlp_x
    if name == "binaryconnect":
        return mlinen.BinaryMLP(
            hidden=(48, 40),
            binary_activations=False,
            kernel_binarizer=bnnjax.Binarizer(scale="mean_abs", center=True),
        ), mlp_x
    if name == "mlp_sign_kernels":
        return mlinen.BinaryMLP(hidden=(48, 40), kernel_binarizer=SIGN), mlp_x
    if name == "cnn":
        return mlinen.BinaryNetCNN(width_multiplier=1 / 16), img(
            2, (4, 16, 16, 3)
        )
    if name == "cnn_pad_minus_one":
        return mlinen.BinaryNetCNN(
            width_multiplier=1 / 16,
            pad_value=-1.0,
            kernel_binarizer=bnnjax.Binarizer(surrogate="ede", axis=-1),
        ), img(2, (4, 16, 16, 3))
    if name == "tutorial_cnn":  # Larq's MNIST CNN: 'VALID', 2 pools
        return mlinen.tutorial_cnn(width_multiplier=1 / 4), img(
            7, (4, 28, 28, 1)
        )
    if name == "resnet20":
        return mlinen.bireal_resnet20(
            stage_sizes=(1, 1, 1), stage_features=(4, 8, 16), pad_value=1.0
        ), img(3, (4, 12, 12, 3))
    if name == "resnet18_mnist":  # the small stem, chosen by input size
        return mlinen.bireal_resnet18(
            stage_sizes=(1, 1, 1, 1), num_classes=10, width_multiplier=1 / 16
        ), img(5, (4, 28, 28, 1))
    if name == "resnet18_imagenet_stem":
        return mlinen.bireal_resnet18(
            stage_sizes=(1, 1, 1, 1),
            num_classes=10,
            width_multiplier=1 / 16,
            small_input_stem=False,
        ), img(6, (2, 28, 28, 1))
    return mlinen.bireal_resnet18(
        stage_sizes=(1, 1, 1, 1),
        stage_features=(4, 8, 8, 16),
        stem_features=4,
        num_classes=10,
    ), img(4, (2, 33, 33, 3))


class ExportTest(_TempDirTest):
    @parameterized.parameters(
        "mlp",
        "mlp_real_head",
        "binaryconnect",
        "mlp_sign_kernels",
        "cnn",
        "cnn_pad_minus_one",
        "tutorial_cnn",
        "resnet20",
        "resnet18",
        "resnet18_mnist",
        "resnet18_imagenet_stem",
    )
    def test_reloads_and_predicts_as_float_model(self, name):
        model, x = _arch(name)
        variables = _variables(model, x)
        path = self.tmp_path("model.bnn")
        sizes = export_lib.export_model(model, variables, path)
        self.assertEqual(sizes.file_bytes, os.path.getsize(path))
        self.assertEqual(
            sizes.float32_bytes, bnnjax.summary(variables).float32_bytes
        )
        self.assertEqual(export_lib.file_sizes(path), sizes)
        loaded = export_lib.load(path)
        self.assertEqual(loaded.architecture, type(model).__name__)
        want = _float_logits(model, variables, x)
        _assert_same_predictions(self, export_lib.predict(loaded, x), want)
        # Fully binary layers give exact counts; dense layers with real
        # inputs on more than 2 rows run the float layer's own product,
        # (x @ S) * alpha, with S unpacked to +-1.0: bit for bit as well.
        np.testing.assert_array_equal(export_lib.predict(loaded, x), want)

    def test_first_predict_compiles_the_layouts_and_the_model_once(self):
        # The kernels' load-time layouts are one compiled program, not one
        # per layer shape or eager op: a fully binary CNN's first predict
        # compiles that program and the model's, the second nothing.
        model, x = _arch("cnn")
        variables = _variables(model, x)
        path = self.tmp_path("model.bnn")
        export_lib.export_model(model, variables, path)
        loaded = export_lib.load(path)
        compiles = _compile_counter(self)
        want = export_lib.predict(loaded, x)
        first = len(compiles)
        np.testing.assert_array_equal(export_lib.predict(loaded, x), want)
        self.assertEqual(first, 2)
        self.assertLen(compiles, 2)

    @parameterized.parameters(
        "mlp",
        "mlp_real_head",
        "cnn",
        "tutorial_cnn",
        "resnet20",
        "resnet18_mnist",
    )
    def test_nnx_models_export_like_linen(self, name):
        rngs = nnx.Rngs(0)
        if name.startswith("mlp"):
            x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))
            model = mnnx.BinaryMLP(
                in_features=64,
                hidden=(48, 40),
                binary_last=name == "mlp",
                bn_epsilon=1e-3,
                rngs=rngs,
            )
        elif name == "cnn":
            x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
            model = mnnx.BinaryNetCNN(
                input_size=(16, 16),
                width_multiplier=1 / 16,
                pad_value=-1.0,
                rngs=rngs,
            )
        elif name == "tutorial_cnn":
            x = jax.random.normal(jax.random.key(2), (4, 28, 28, 1))
            model = mnnx.tutorial_cnn(width_multiplier=1 / 4, rngs=rngs)
        elif name == "resnet18_mnist":
            x = jax.random.normal(jax.random.key(3), (4, 28, 28, 1))
            model = mnnx.bireal_resnet18(
                in_features=1,
                input_size=(28, 28),
                stage_sizes=(1, 1, 1, 1),
                num_classes=10,
                width_multiplier=1 / 16,
                rngs=rngs,
            )
        else:
            x = jax.random.normal(jax.random.key(3), (4, 12, 12, 3))
            model = mnnx.bireal_resnet20(
                stage_sizes=(1, 1, 1),
                stage_features=(4, 8, 16),
                pad_value=1.0,
                rngs=rngs,
            )
        for seed, kind in enumerate((nnx.Param, nnx.BatchStat)):
            state = nnx.state(model, kind)
            nnx.replace_by_pure_dict(
                state, _random_like(nnx.to_pure_dict(state), seed=seed)
            )
            nnx.update(model, state)
        model.eval()
        want = model(x)
        path = self.tmp_path("nnx.bnn")
        sizes = export_lib.export_model(model, None, path)
        loaded = export_lib.load(path)
        self.assertEqual(loaded.architecture, type(model).__name__)
        self.assertEqual(
            sizes.float32_bytes, bnnjax.summary(model).float32_bytes
        )
        _assert_same_predictions(self, export_lib.predict(loaded, x), want)
        with self.assertRaisesRegex(ValueError, "without variables"):
            export_lib.pack_model(model, {"params": {}})

    def test_unsupported_models(self):
        with self.assertRaisesRegex(ValueError, "has no binary layer"):
            export_lib.pack_model(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        with self.assertRaisesRegex(TypeError, "flax linen or nnx model"):
            export_lib.pack_model(lambda x: x, {"params": {}})

    @parameterized.parameters("mlp", "cnn", "tutorial_cnn", "resnet20")
    def test_untrained_statistics_bit_identical(self, name):
        # Untrained batch norm (mean 0, beta 0) puts folded thresholds on
        # count 0, which an even fan-in reaches: the float layer computes
        # (x @ S) * alpha, so its pre-activation there is exactly 0 too.
        model, x = _arch(name)
        variables = _variables(model, x)

        def zero_means_and_biases(tree):
            flat = traverse_util.flatten_dict(tree)
            return traverse_util.unflatten_dict(
                {
                    k: jnp.zeros_like(v) if k[-1] in ("mean", "bias") else v
                    for k, v in flat.items()
                }
            )

        untrained = {k: zero_means_and_biases(v) for k, v in variables.items()}
        p = export_lib.pack_model(model, untrained)
        np.testing.assert_array_equal(
            export_lib.predict(p, x), _float_logits(model, untrained, x)
        )

    def test_kernels_are_stored_packed(self):
        model, x = _arch("cnn")
        variables = _variables(model, x)
        p = export_lib.pack_model(model, variables)
        header = p.header
        # Reference architectures stay in format version 1 (older readers).
        self.assertEqual(header["format_version"], 1)
        self.assertEqual(header["bnnjax_version"], bnnjax.__version__)
        self.assertEqual(header["config"]["width_multiplier"], 1 / 16)
        self.assertEqual(
            header["binarizers"]["kernel"]["scale"]["name"], "mean_abs_dev"
        )
        for layer in ("conv_1", "dense_0"):
            latent = variables["params"][layer][LATENT_KERNEL]
            binarized = model.kernel_binarizer(latent)
            words = p.arrays[f"{layer}/kernel"]
            self.assertEqual(words.dtype, np.dtype("<u4"))
            np.testing.assert_array_equal(
                words, packed.pack_kernel(binarized).words
            )
            alpha = np.abs(np.asarray(binarized)).reshape(-1, words.shape[0])
            np.testing.assert_array_equal(p.arrays[f"{layer}/alpha"], alpha[0])
        self.assertNotIn(LATENT_KERNEL, json.dumps(header["program"]))
        # 1 bit per binary weight: far below float32.
        self.assertGreater(
            p.float32_bytes / sum(a.nbytes for a in p.arrays.values()), 8
        )

    def test_mnist_sample_predictions_identical(self):
        data = load_mnist_sample()
        images = jnp.asarray(data.test.images, jnp.float32) / 255.0
        model = mlinen.BinaryMLP(hidden=(128, 128))
        variables = _variables(model, images[:1], seed=3)
        p = export_lib.pack_model(model, variables)
        want = _float_logits(model, variables, images)
        got = export_lib.predict(p, images, batch_size=300)
        self.assertEqual(got.shape, (1000, 10))
        _assert_same_predictions(self, got, want)
        np.testing.assert_allclose(
            export_lib.predict(p, images[:300]), got[:300], rtol=0, atol=0
        )

    def test_rejects_unsupported_models(self):
        x = jnp.zeros((1, 8, 8, 1))
        ok = mlinen.BinaryMLP(hidden=(8,))
        variables = _variables(ok, x)
        cases = [
            (
                mlinen.BinaryMLP(
                    hidden=(8,),
                    kernel_binarizer=bnnjax.Binarizer(surrogate="stochastic"),
                ),
                "random",
            ),
            (
                mlinen.BinaryMLP(
                    hidden=(8,), kernel_binarizer=bnnjax.Binarizer(axis=0)
                ),
                "axis=0",
            ),
            (
                mlinen.BinaryMLP(
                    hidden=(8,), activation_binarizer=bnnjax.Binarizer()
                ),
                "sign activations",
            ),
            (mlinen.BinaryMLP(hidden=(8,), dtype=jnp.bfloat16), "float32"),
            (mlinen.BinaryMLP(hidden=(16,)), "not match|shape"),
        ]
        for model, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                export_lib.pack_model(model, variables)
        with self.assertRaisesRegex(TypeError, "needs example_inputs"):
            export_lib.pack_model(nn.Dense(3), variables)
        with self.assertRaisesRegex(ValueError, "has no binary layer"):
            dense = nn.Dense(3)
            export_lib.pack_model(
                dense,
                dense.init(jax.random.key(0), jnp.ones((1, 2))),
                example_inputs=jnp.ones((1, 2)),
            )
        with self.assertRaisesRegex(ValueError, "models of your own"):
            export_lib.pack_model(ok, variables, call_kwargs={"train": False})
        cnn, cx = _arch("cnn")
        bad_pad = mlinen.BinaryNetCNN(width_multiplier=1 / 16, pad_value=0.5)
        with self.assertRaisesRegex(ValueError, "pad_value=0.5"):
            export_lib.pack_model(bad_pad, _variables(cnn, cx))
        # A 3x3 stem with stride 2 on small images: which one ran?
        ambiguous = mlinen.bireal_resnet20(
            stem_strides=2, stage_sizes=(1, 1, 1)
        )
        rx = jnp.zeros((1, 8, 8, 3))
        with self.assertRaisesRegex(ValueError, "set small_input_stem"):
            export_lib.pack_model(ambiguous, _variables(ambiguous, rx))
        p = export_lib.pack_model(ok, variables)
        with self.assertRaisesRegex(ValueError, "64 features"):
            export_lib.predict(p, jnp.zeros((2, 9, 9, 1)))


def _split(data):
    """(version, header dict, payload bytes) of a valid file's bytes."""
    _, version, hlen = struct.unpack_from("<8sIQ", data)
    header = json.loads(data[20 : 20 + hlen])
    start = 20 + hlen + (-(20 + hlen) % 64)
    return version, header, data[start:-32]


def _join(version, header, payload):
    """File bytes with consistent checksums (to forge semantic errors)."""
    header = dict(header, payload_sha256=hashlib.sha256(payload).hexdigest())
    text = json.dumps(header).encode()
    body = struct.pack("<8sIQ", export_lib.MAGIC, version, len(text)) + text
    body += b"\0" * (-len(body) % 64) + payload
    return body + hashlib.sha256(body).digest()


class FileTest(_TempDirTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        model = mlinen.BinaryMLP(hidden=(16,))
        cls.x = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
        cls.packed = export_lib.pack_model(model, _variables(model, cls.x))

    def _saved(self):
        path = self.tmp_path("m.bnn")
        export_lib.save(self.packed, path)
        with open(path, "rb") as f:
            return path, f.read()

    def _write(self, data):
        path = self.tmp_path(
            f"bad{len(os.listdir(os.path.dirname(self.tmp_path('x'))))}.bnn"
        )
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_metadata_round_trip_and_validation(self):
        self.assertEqual(self.packed.metadata, {})
        model = mlinen.BinaryMLP(hidden=(16,))
        variables = _variables(model, self.x)
        meta = {"dataset": "idx:/data", "seed": 3, "val": [0.5, None]}
        path = self.tmp_path("meta.bnn")
        export_lib.export_model(model, variables, path, metadata=meta)
        self.assertEqual(export_lib.load(path).metadata, meta)
        for bad in ({"x": float("nan")}, {"x": object()}, {1: "a"}, [1]):
            with self.assertRaisesRegex(TypeError, "metadata must"):
                export_lib.pack_model(model, variables, metadata=bad)

    def test_loading_never_unpickles(self):
        path, _ = self._saved()
        boom = mock.Mock(side_effect=AssertionError("pickle used"))
        with (
            mock.patch.object(pickle, "load", boom),
            mock.patch.object(pickle, "loads", boom),
            mock.patch.object(pickle, "Unpickler", boom),
            mock.patch.object(np, "load", boom),
        ):
            loaded = export_lib.load(path)
            got = export_lib.predict(loaded, self.x)
        boom.assert_not_called()
        np.testing.assert_array_equal(
            got, export_lib.predict(self.packed, self.x)
        )
        self.assertTrue(
            all(not a.dtype.hasobject for a in loaded.arrays.values())
        )

    def test_every_flipped_byte_is_detected(self):
        path, data = self._saved()
        self.assertGreater(len(data), 1000)
        for i in range(len(data)):
            corrupt = bytearray(data)
            corrupt[i] ^= 0x10
            with open(path, "wb") as f:
                f.write(corrupt)
            with self.assertRaisesRegex(ValueError, re.escape(path)):
                export_lib.load(path)

    def test_truncated_file(self):
        _, data = self._saved()
        for size in (0, 5, 20, 60, len(data) // 2, len(data) - 1):
            path = self._write(data[:size])
            with self.assertRaisesRegex(ValueError, "magic|truncated|checksum"):
                export_lib.load(path)

    def test_foreign_files(self):
        npz = self.tmp_path("foreign.npz")
        np.savez(npz, a=np.arange(3))
        with self.assertRaisesRegex(ValueError, "not a bnnjax packed model"):
            export_lib.load(npz)
        text = self._write(b"hello world, not a model at all")
        with self.assertRaisesRegex(ValueError, "not a bnnjax packed model"):
            export_lib.load(text)

    def test_semantic_errors_with_valid_checksums(self):
        _, data = self._saved()
        version, header, payload = _split(data)
        # A consistent rebuild loads: the forging helper is faithful.
        export_lib.load(self._write(_join(version, header, payload)))
        newest = export_lib.FORMAT_VERSION + 1
        newer = self._write(
            _join(newest, dict(header, format_version=newest), payload)
        )
        with self.assertRaisesRegex(
            ValueError, f"format version {newest}.*upgrade"
        ):
            export_lib.load(newer)
        mixed = self._write(_join(version + 1, header, payload))
        with self.assertRaisesRegex(ValueError, "header says format version"):
            export_lib.load(mixed)
        arrays = dict(header["arrays"])
        name = sorted(arrays)[0]
        arrays[name] = dict(arrays[name], dtype="|O")
        with self.assertRaisesRegex(ValueError, "invalid table entry"):
            export_lib.load(
                self._write(
                    _join(version, dict(header, arrays=arrays), payload)
                )
            )
        program = dict(
            header["program"], ops=[{"op": "exec", "in": "input", "out": "v1"}]
        )
        with self.assertRaisesRegex(ValueError, "unknown op 'exec'"):
            export_lib.load(
                self._write(
                    _join(version, dict(header, program=program), payload)
                )
            )

    def test_failed_write_leaves_no_partial_file(self):
        directory = self.tmp_path("out")
        os.mkdir(directory)
        path = os.path.join(directory, "model.bnn")
        with (
            mock.patch.object(
                export_format.os, "fsync", side_effect=OSError("disk full")
            ),
            self.assertRaisesRegex(OSError, "disk full"),
        ):
            export_lib.save(self.packed, path)
        self.assertEqual(os.listdir(directory), [])
        # An existing file survives a failure in the middle of writing.
        export_lib.save(self.packed, path)
        with open(path, "rb") as f:
            before = f.read()

        original = export_format._file_chunks

        def half_then_fail(packed_model):
            chunks = original(packed_model)
            yield next(chunks)
            raise RuntimeError("interrupted")

        with (
            mock.patch.object(export_format, "_file_chunks", half_then_fail),
            self.assertRaisesRegex(RuntimeError, "interrupted"),
        ):
            export_lib.save(self.packed, path)
        self.assertEqual(os.listdir(directory), ["model.bnn"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        export_lib.load(path)


if __name__ == "__main__":
    absltest.main()


class _FloatCnn(nn.Module):
    """A float model of one's own: convs (one grouped), batch norm, dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.Conv(8, (3, 3), feature_group_count=2)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Conv(8, (3, 3), strides=2, padding="VALID")(x)
        x = nn.relu(nn.Dense(24)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


class _BinaryLayersCnn(nn.Module):
    """bnnjax.nn layers: grouped and depthwise, sign inputs, every padding.

    No biases: with a bias XLA may contract the scale and the bias into
    one fused multiply-add in one program and not the other (one rounding).
    """

    @nn.compact
    def __call__(self, x):
        from bnnjax.nn import linen as bnn

        conv = functools.partial(bnn.BinaryConv, 8, (3, 3), use_bias=False)
        x = conv()(x)  # real inputs
        x = conv(feature_group_count=4, input_binarizer=SIGN)(x)  # pad 0
        x = conv(feature_group_count=8, input_binarizer=SIGN, pad_value=-1.0)(
            x
        )  # depthwise
        x = conv(
            feature_group_count=2, input_binarizer=SIGN, padding="CIRCULAR"
        )(x)
        x = x.reshape(x.shape[0], -1)
        return bnn.BinaryDense(10, input_binarizer=SIGN, use_bias=False)(x)


class _NnxNet(nnx.Module):
    def __init__(self, rngs, binary=False):
        from bnnjax.nn import nnx as bnx

        if binary:
            self.c1 = bnx.BinaryConv(3, 8, (3, 3), rngs=rngs)
            self.c2 = bnx.BinaryConv(
                8,
                8,
                (3, 3),
                feature_group_count=4,
                input_binarizer=SIGN,
                pad_value=1.0,
                rngs=rngs,
            )
        else:
            self.c1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.c2 = nnx.Conv(8, 8, (3, 3), feature_group_count=4, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.d1 = nnx.Linear(8 * 6 * 6, 16, rngs=rngs)
        self.d2 = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.c1(x))
        x = nnx.relu(self.bn(self.c2(x)))
        x = nnx.relu(self.d1(x.reshape(x.shape[0], -1)))
        return self.d2(x)


def _randomize_nnx(model):
    for seed, kind in enumerate((nnx.Param, nnx.BatchStat)):
        state = nnx.state(model, kind)
        nnx.replace_by_pure_dict(
            state, _random_like(nnx.to_pure_dict(state), seed=seed)
        )
        nnx.update(model, state)


class OwnModelExportTest(_TempDirTest):
    """Models of one's own: binarize_model conversions, bnnjax.nn layers."""

    x = jax.random.normal(jax.random.key(0), (5, 6, 6, 3))

    def _round_trip(self, model, variables, **kwargs):
        path = self.tmp_path("own.bnn")
        sizes = export_lib.export_model(model, variables, path, **kwargs)
        loaded = export_lib.load(path)
        self.assertEqual(loaded.header["format_version"], 2)
        self.assertEqual(sizes.file_bytes, os.path.getsize(path))
        self.assertNotIn(LATENT_KERNEL, json.dumps(loaded.header))
        return loaded

    def test_linen_converted_model(self):
        float_model = _FloatCnn()
        converted = bnnjax.binarize_model(float_model, self.x, train=False)
        self.assertEqual(
            sorted(converted.binarized_layers), ["Conv_1", "Conv_2", "Dense_0"]
        )
        shapes = jax.eval_shape(
            lambda k: converted.init(k, self.x, train=False),
            jax.random.key(0),
        )
        variables = _random_like(shapes)
        want = converted.apply(variables, self.x, train=False)
        loaded = self._round_trip(
            converted,
            variables,
            example_inputs=self.x,
            call_kwargs={"train": False},
        )
        self.assertEqual(loaded.architecture, "_FloatCnn")
        self.assertEqual(loaded.header["model"]["api"], "linen")
        layers = {
            "/".join(e["path"]): e for e in loaded.header["model"]["layers"]
        }
        self.assertEqual(layers["Conv_1"]["feature_group_count"], 2)
        self.assertEqual(
            loaded.arrays["binary/Conv_1/kernel"].shape, (8, 3, 3, 1)
        )
        # The converted kernels are stored packed, nothing else is.
        self.assertNotIn("variables/params/Conv_1/kernel", loaded.arrays)
        self.assertIn("variables/params/Conv_0/kernel", loaded.arrays)
        self.assertIn("variables/batch_stats/BatchNorm_0/var", loaded.arrays)
        # Either the converted module or the float definition runs it.
        for model in (converted, float_model):
            got = export_lib.predict(loaded, self.x, model=model)
            _assert_same_predictions(self, got, want)
        # Chunks of 2 rows: Dense_0 takes the multiply-free lookup.
        chunked = export_lib.predict(
            loaded, self.x, model=float_model, batch_size=2
        )
        _assert_same_predictions(self, chunked, want)

    def test_first_predict_compiles_the_layouts_and_the_model_once(self):
        model = _BinaryLayersCnn()
        variables = _random_like(
            jax.eval_shape(lambda k: model.init(k, self.x), jax.random.key(0))
        )
        loaded = self._round_trip(model, variables, example_inputs=self.x)
        compiles = _compile_counter(self)
        want = export_lib.predict(loaded, self.x, model=model)
        first = len(compiles)
        got = export_lib.predict(loaded, self.x, model=model)
        np.testing.assert_array_equal(got, want)
        self.assertEqual(first, 2)  # the layouts, the model
        self.assertLen(compiles, 2)

    def test_linen_binary_layers_grouped_bit_identical(self):
        model = _BinaryLayersCnn()
        variables = _random_like(
            jax.eval_shape(lambda k: model.init(k, self.x), jax.random.key(0))
        )
        want = model.apply(variables, self.x)
        loaded = self._round_trip(model, variables, example_inputs=self.x)
        got = export_lib.predict(loaded, self.x, model=model)
        np.testing.assert_array_equal(got, want)
        kinds = [
            (e["input"], e.get("feature_group_count"))
            for e in loaded.header["model"]["layers"]
        ]
        self.assertEqual(
            kinds,
            [
                ("real", 1),
                ("bits", 4),
                ("bits", 8),
                ("bits", 2),
                ("bits", None),
            ],
        )
        summary = bnnjax.summary(variables)
        self.assertEqual(loaded.float32_bytes, summary.float32_bytes)
        self.assertLess(loaded.header["deploy_bytes"], summary.float32_bytes)

    @parameterized.parameters(False, True)
    def test_nnx_models(self, binary):
        net = _NnxNet(nnx.Rngs(0), binary=binary)
        model = net if binary else bnnjax.binarize_model(net, self.x)
        _randomize_nnx(model)
        model.eval()
        want = model(self.x)
        loaded = self._round_trip(model, None)
        self.assertEqual(loaded.header["model"]["api"], "nnx")
        got = export_lib.predict(loaded, self.x, model=model)
        _assert_same_predictions(self, got, want)
        if not binary:
            # A fresh float model of the same structure: the file's values.
            fresh = _NnxNet(nnx.Rngs(7))
            np.testing.assert_array_equal(
                export_lib.predict(loaded, self.x, model=fresh), got
            )

    def test_needs_and_checks_the_model(self):
        model = _BinaryLayersCnn()
        variables = model.init(jax.random.key(0), self.x)
        loaded = self._round_trip(model, variables, example_inputs=self.x)
        with self.assertRaisesRegex(ValueError, "pass the model definition"):
            export_lib.predict(loaded, self.x)
        with self.assertRaisesRegex(ValueError, "got a model of class"):
            export_lib.predict(loaded, self.x, model=_FloatCnn())
        with self.assertRaisesRegex(ValueError, "holds a linen model"):
            export_lib.predict(loaded, self.x, model=_NnxNet(nnx.Rngs(0)))
        mlp, x = _arch("mlp")
        reference = export_lib.pack_model(mlp, _variables(mlp, x))
        with self.assertRaisesRegex(ValueError, "without model"):
            export_lib.predict(reference, x, model=mlp)

    def test_rejects_what_it_cannot_pack(self):
        from bnnjax.nn import linen as bnn

        scaled = bnnjax.Binarizer(surrogate="ste", scale="mean_abs")
        model = bnn.BinaryDense(4, input_binarizer=scaled)
        x = jnp.ones((2, 3))
        variables = model.init(jax.random.key(0), x)
        with self.assertRaisesRegex(ValueError, "BinaryDense layer '.*sign"):
            export_lib.pack_model(model, variables, example_inputs=x)
        half = bnn.BinaryConv(4, (3, 3), input_binarizer=SIGN, pad_value=0.5)
        y = jnp.ones((1, 4, 4, 2))
        with self.assertRaisesRegex(ValueError, "pad_value=0.5"):
            export_lib.pack_model(
                half, half.init(jax.random.key(0), y), example_inputs=y
            )
        with self.assertRaisesRegex(TypeError, "JSON round trip"):
            export_lib.pack_model(
                _FloatCnn(),
                {"params": {}},
                example_inputs=self.x,
                call_kwargs={"train": (False,)},
            )
        float_model = _FloatCnn()
        converted = bnnjax.binarize_model(float_model, self.x)
        variables = float_model.init(jax.random.key(0), self.x)
        with self.assertRaisesRegex(ValueError, "do not match the model"):
            export_lib.pack_model(
                converted,
                {"params": {"Conv_0": variables["params"]["Conv_0"]}},
                example_inputs=self.x,
            )

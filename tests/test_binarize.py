"""Tests of bnnjax.binarize: forward values, surrogate gradients, errors."""

import dataclasses
import importlib
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

import bnnjax
from bnnjax import binarize
from bnnjax.binarize import (
    _SURROGATES,
    AnnealedScaledSigmoidSurrogate,
    HardTanhSurrogate,
    IdentitySurrogate,
    _forward_is_sign,
)

# The binarizers (forward +-1), in registration order.
SURROGATE_NAMES = (
    "ste",
    "clipped_ste",
    "approx_sign",
    "swish_sign",
    "ede",
    "sigmoid",
    "scaled_sigmoid",
    "annealed_scaled_sigmoid",
    "stochastic",
)
# Registered too, but real-valued forward: not binarizers.
RELAXATION_NAMES = ("identity", "hardtanh")
# Surrogates built with non-default hyperparameters, to catch a rule that
# ignores its own field.
SURROGATES = (
    bnnjax.SteSurrogate(),
    bnnjax.ClippedSteSurrogate(clip_value=1.0),
    bnnjax.ClippedSteSurrogate(clip_value=0.5),
    bnnjax.ApproxSignSurrogate(),
    bnnjax.SwishSignSurrogate(beta=5.0),
    bnnjax.SwishSignSurrogate(beta=1.5),
    bnnjax.EdeSurrogate(),
    bnnjax.EdeSurrogate(t_min=0.5, t_max=4.0),
    bnnjax.SigmoidSurrogate(beta=5.0),
    bnnjax.SigmoidSurrogate(beta=0.5),
    bnnjax.ScaledSigmoidSurrogate(k=2.0),
    bnnjax.ScaledSigmoidSurrogate(k=5.0),
    AnnealedScaledSigmoidSurrogate(),
    AnnealedScaledSigmoidSurrogate(k_start=1.0, k_end=16.0),
    bnnjax.StochasticSurrogate(),
    IdentitySurrogate(),
    HardTanhSurrogate(),
)
# Points where a piecewise rule's derivative is discontinuous.
KINKS = {
    bnnjax.ClippedSteSurrogate: lambda s: (-s.clip_value, s.clip_value),
    bnnjax.ApproxSignSurrogate: lambda s: (-1.0, 1.0),
    bnnjax.StochasticSurrogate: lambda s: (-1.0, 1.0),
    HardTanhSurrogate: lambda s: (-1.0, 1.0),
}
FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
SCALES = ("none", "mean_abs", "mean_abs_dev", "std")


def _extra_args(surrogate, progress=0.3):
    """progress/key for the surrogates that need them."""
    if isinstance(
        surrogate, (bnnjax.EdeSurrogate, AnnealedScaledSigmoidSurrogate)
    ):
        return {"progress": progress}
    if isinstance(surrogate, bnnjax.StochasticSurrogate):
        return {"key": jax.random.key(3)}
    return {}


def _grid(dtype):
    # 121 points on [-3, 3] with step 0.05, holding an exact 0 and exact +-1.
    x = np.arange(-60, 61, dtype=np.float32) / 20.0
    assert (x[60], x[40], x[80]) == (0.0, -1.0, 1.0)
    return jnp.asarray(x, dtype)


def _away_from_kinks(surrogate, x):
    kinks = KINKS.get(type(surrogate), lambda s: ())(surrogate)
    mask = np.ones(x.shape, bool)
    for k in kinks:
        mask &= np.abs(np.float32(x) - k) > 1e-3
    return mask


def _proxy_slope64(surrogate, x32, extra):
    """d proxy / dx by float64 autodiff (aux from float64), as float32."""
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.float64(x32))
        aux = surrogate.prepare(x64, (0,), **extra)
        want = jax.grad(lambda v: surrogate.proxy(v, aux).sum())(x64)
        return jnp.float32(np.float32(want))


def _tol(dtype):
    return 1e-6 if dtype == jnp.float32 else 2e-2


class ForwardTest(parameterized.TestCase):
    @parameterized.product(
        name=SURROGATE_NAMES, dtype=FLOAT_DTYPES, scale=SCALES, axis=(None, -1)
    )
    def test_values_are_plus_minus_alpha_per_channel(
        self, name, dtype, scale, axis
    ):
        surrogate = bnnjax.get_surrogate(name)
        w = jax.random.normal(jax.random.key(0), (7, 5), jnp.float32)
        w = w.at[0, 0].set(0.0).at[3, 2].set(-0.0).astype(dtype)
        with jax.numpy_dtype_promotion("strict"):
            y, alpha = jax.jit(
                lambda v: (
                    binarize(
                        v, surrogate, scale, axis, **_extra_args(surrogate)
                    ),
                    bnnjax.get_scale(scale)(v, axis),
                )
            )(w)
        self.assertEqual(y.dtype, jnp.dtype(dtype))
        self.assertEqual(y.shape, w.shape)
        alpha = np.broadcast_to(np.float32(alpha), w.shape)
        y = np.float32(y)
        # Up to the last bit: XLA may fuse the statistic differently when it
        # feeds the product; one value per channel either way.
        np.testing.assert_allclose(np.abs(y), alpha, rtol=_tol(dtype) / 2)
        channels = np.abs(y).reshape(-1) if axis is None else np.abs(y).T
        for channel in np.atleast_2d(channels):
            self.assertLen(np.unique(channel), 1)
        self.assertTrue(np.all(alpha > 0))
        if name != "stochastic":
            want = np.where(np.float32(w) >= 0, 1.0, -1.0)
            np.testing.assert_array_equal(np.sign(y), want)
            self.assertGreater(y[0, 0], 0)  # sign(+0) = +1
            self.assertGreater(y[3, 2], 0)  # sign(-0) = +1

    @parameterized.parameters(*FLOAT_DTYPES)
    def test_sign_of_zero_is_plus_one_and_nan_propagates(self, dtype):
        x = jnp.array([0.0, -0.0, -1e-30, 1e-30, -2.0, 2.0, np.nan], dtype)
        y = np.float32(binarize(x, "ste", scale=None))
        expected_head = [1, 1, -1, 1, -1, 1] if dtype != jnp.float16 else None
        if dtype == jnp.float16:  # +-1e-30 underflow to +-0 in float16
            expected_head = [1, 1, 1, 1, -1, 1]
        np.testing.assert_array_equal(y[:6], expected_head)
        self.assertTrue(np.isnan(y[6]))
        self.assertNotIn(0.0, y[:6])

    def test_default_is_founding_method(self):
        w = jax.random.normal(jax.random.key(1), (16, 8))
        explicit = binarize(
            w, bnnjax.ScaledSigmoidSurrogate(), bnnjax.MeanAbsDevScale()
        )
        np.testing.assert_array_equal(binarize(w), explicit)
        g_default = jax.grad(lambda v: jnp.sum(binarize(v) ** 3))(w)
        g_explicit = jax.grad(
            lambda v: jnp.sum(
                binarize(v, "scaled_sigmoid", "mean_abs_dev", None) ** 3
            )
        )(w)
        np.testing.assert_array_equal(g_default, g_explicit)

    def test_names_and_objects_agree(self):
        w = jax.random.normal(jax.random.key(2), (6, 4))
        for name in SURROGATE_NAMES:
            surrogate = bnnjax.get_surrogate(name)
            extra = _extra_args(surrogate)
            np.testing.assert_array_equal(
                binarize(w, name, "std", -1, **extra),
                binarize(w, surrogate, bnnjax.StdScale(), -1, **extra),
            )

    def test_no_scale_returns_signs(self):
        w = jnp.array([[-0.3, 0.0], [2.0, -5.0]])
        want = np.array([[-1.0, 1.0], [1.0, -1.0]], np.float32)
        for scale in (None, "none", bnnjax.NoScale()):
            np.testing.assert_array_equal(binarize(w, "ste", scale), want)

    @parameterized.parameters(*FLOAT_DTYPES)
    def test_center_binarizes_around_the_mean(self, dtype):
        w = jnp.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]], dtype)
        # column means: 3, 3 -> signs of w - 3; row 1 col 0 is exactly 0 -> +1.
        y = binarize(w, "ste", None, axis=-1, center=True)
        want = np.array([[-1, -1], [1, 1], [1, -1]], np.float32)
        np.testing.assert_array_equal(np.float32(y), want)
        self.assertEqual(y.dtype, jnp.dtype(dtype))

    def test_center_gradient_uses_centred_input(self):
        s = bnnjax.SigmoidSurrogate(beta=2.0)
        w = jnp.array([0.5, 1.0, 2.5, 4.0])
        got = jax.jit(
            jax.grad(lambda v: binarize(v, s, None, center=True).sum())
        )(w)
        centred = w - jnp.mean(w)
        want = s.derivative(centred, ())
        np.testing.assert_allclose(got, want, rtol=1e-6)

    def test_works_on_any_rank(self):
        for shape in [(), (3,), (2, 3), (2, 3, 4), (1, 2, 3, 4, 2)]:
            x = jax.random.normal(jax.random.key(4), shape)
            y = binarize(x, "scaled_sigmoid", "mean_abs")
            self.assertEqual(y.shape, shape)
            np.testing.assert_allclose(
                np.abs(y), np.mean(np.abs(np.asarray(x))), rtol=1e-6
            )

    def test_accepts_python_and_numpy_input(self):
        np.testing.assert_array_equal(
            binarize([-1.0, 0.0, 2.0], "ste", None), [-1.0, 1.0, 1.0]
        )
        y = binarize(np.array([0.5, -0.5], np.float32), "ste", "mean_abs")
        np.testing.assert_array_equal(y, [0.5, -0.5])


class GradientTest(chex.TestCase):
    # Run with and without jit: the custom_vjp rule must hold either way.
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        surrogate=SURROGATES, dtype=(jnp.float32, jnp.bfloat16)
    )
    def test_gradient_matches_proxy_derivative(self, surrogate, dtype):
        x = _grid(dtype)
        extra = _extra_args(surrogate)
        with jax.numpy_dtype_promotion("strict"):
            got = self.variant(
                jax.grad(lambda v: binarize(v, surrogate, None, **extra).sum())
            )(x)
        self.assertEqual(got.dtype, jnp.dtype(dtype))
        # Reference: autodiff of the proxy in float64 on the same inputs (the
        # derivative itself, not float32 rounding of it: near a zero of the
        # SwishSign slope float32 autodiff is off by 7e-6).
        x32 = jnp.float32(x)
        aux = surrogate.prepare(x32, (0,), **extra)
        want = _proxy_slope64(surrogate, x32, extra)
        mask = _away_from_kinks(surrogate, x)
        tol = _tol(dtype)
        np.testing.assert_allclose(
            np.float32(got)[mask], np.float32(want)[mask], rtol=tol, atol=tol
        )
        # Under vmap: each row is its own tensor (its own statistics).
        rows = jnp.stack([x, (x * 0.5).astype(dtype)])
        with jax.numpy_dtype_promotion("strict"):
            got_rows = self.variant(
                jax.vmap(
                    jax.grad(
                        lambda v: binarize(v, surrogate, None, **extra).sum()
                    )
                )
            )(rows)
        for row, got_row in zip(rows, got_rows, strict=True):
            want_row = _proxy_slope64(surrogate, jnp.float32(row), extra)
            row_mask = _away_from_kinks(surrogate, row)
            np.testing.assert_allclose(
                np.float32(got_row)[row_mask],
                np.float32(want_row)[row_mask],
                rtol=tol,
                atol=tol,
            )
        # derivative() is the proxy's derivative everywhere away from kinks.
        np.testing.assert_allclose(
            np.float32(surrogate.derivative(x32, aux))[mask],
            np.float32(want)[mask],
            rtol=1e-6,
            atol=1e-6,
        )

    @parameterized.product(surrogate=SURROGATES, scale=SCALES)
    def test_gradient_with_constant_scale_is_alpha_times_derivative(
        self, surrogate, scale
    ):
        w = jax.random.normal(jax.random.key(5), (9, 4)).at[2, 1].set(0.0)
        extra = _extra_args(surrogate)
        got = jax.jit(
            jax.grad(lambda v: binarize(v, surrogate, scale, -1, **extra).sum())
        )(w)
        alpha = bnnjax.get_scale(scale)(w, -1)
        aux = surrogate.prepare(w, (0,), **extra)
        want = alpha * surrogate.derivative(w, aux)
        # 1e-6 on CPU; XLA on GPU fuses the jitted path differently (ulps).
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)

    @parameterized.parameters("mean_abs", "mean_abs_dev", "std")
    def test_gradient_flows_through_scale_when_asked(self, scale_name):
        surrogate = bnnjax.SigmoidSurrogate(beta=3.0)
        scale = bnnjax.get_scale(scale_name, stop_gradient=False)
        w = jax.random.normal(jax.random.key(6), (5, 3))
        g = jax.random.normal(jax.random.key(7), (5, 3))
        got = jax.grad(
            lambda v: jnp.sum(g * binarize(v, surrogate, scale, -1))
        )(w)
        signs = jnp.where(w >= 0, 1.0, -1.0)
        statistic = {
            "mean_abs": bnnjax.mean_abs,
            "mean_abs_dev": bnnjax.mean_abs_dev,
            "std": bnnjax.std,
        }[scale_name]

        def reference(v):
            alpha = statistic(v, (0,))
            through_alpha = jnp.sum(g * alpha * signs)
            through_sign = jnp.sum(
                g * jax.lax.stop_gradient(alpha) * surrogate.proxy(v, ())
            )
            return through_alpha + through_sign

        np.testing.assert_allclose(
            got, jax.grad(reference)(w), rtol=1e-5, atol=1e-6
        )
        stopped = jax.grad(
            lambda v: jnp.sum(g * binarize(v, surrogate, scale_name, -1))
        )(w)
        self.assertGreater(float(jnp.max(jnp.abs(got - stopped))), 1e-3)

    def test_kink_table(self):
        x = jnp.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
        table = {
            bnnjax.SteSurrogate(): [1, 1, 1, 1, 1, 1, 1],
            bnnjax.ClippedSteSurrogate(): [0, 1, 1, 1, 1, 1, 0],
            bnnjax.ClippedSteSurrogate(clip_value=0.5): [0, 0, 1, 1, 1, 0, 0],
            bnnjax.ApproxSignSurrogate(): [0, 0, 1, 2, 1, 0, 0],
            bnnjax.StochasticSurrogate(): [0, 1, 1, 1, 1, 1, 0],
            IdentitySurrogate(): [1, 1, 1, 1, 1, 1, 1],
            HardTanhSurrogate(): [0, 1, 1, 1, 1, 1, 0],
        }
        for surrogate, want in table.items():
            extra = _extra_args(surrogate)
            got = jax.jit(
                jax.grad(
                    lambda v, s=surrogate, e=extra: binarize(
                        v, s, None, **e
                    ).sum()
                )
            )(x)
            np.testing.assert_array_equal(
                got, np.float32(want), err_msg=str(surrogate)
            )

    def test_smooth_rules_at_zero(self):
        # Peak slopes at x = 0, by hand.
        x = jnp.zeros(3)
        cases = {
            bnnjax.SigmoidSurrogate(beta=5.0): 2.5,  # 2 beta / 4
            bnnjax.SwishSignSurrogate(beta=5.0): 5.0,  # 2 beta / 4 * 2
            bnnjax.EdeSurrogate(): 1.0,  # progress 0: t = 0.1, k = 10
        }
        for surrogate, want in cases.items():
            got = jax.grad(
                lambda v, s=surrogate: binarize(v, s, None, progress=0.0).sum()
            )(x)
            np.testing.assert_allclose(got, want, rtol=1e-6)
        w = jnp.array([-3.0, 0.0, 1.0, 2.0])  # mean 0, MAD 1.5
        got = jax.grad(lambda v: binarize(v, "scaled_sigmoid", None).sum())(w)
        self.assertAlmostEqual(float(got[1]), 2.0 / 1.5 / 2.0, places=6)

    def test_vmap_equals_per_channel(self):
        # vmap over rows with per-tensor statistics == per-row statistics.
        w = (
            jax.random.normal(jax.random.key(8), (6, 10))
            * jnp.arange(1, 7)[:, None]
        )
        for surrogate in SURROGATES:
            if isinstance(surrogate, bnnjax.StochasticSurrogate):
                continue
            extra = _extra_args(surrogate)

            def per_tensor(v, s=surrogate, e=extra):
                return binarize(v, s, "mean_abs_dev", **e)

            def loss_vmapped(v):
                return jnp.sum(jax.vmap(per_tensor)(v) ** 2 * jnp.cos(v))

            def loss_channel(v, s=surrogate, e=extra):
                return jnp.sum(
                    binarize(v, s, "mean_abs_dev", 0, **e) ** 2 * jnp.cos(v)
                )

            np.testing.assert_allclose(
                jax.jit(jax.vmap(per_tensor))(w),
                binarize(w, surrogate, "mean_abs_dev", 0, **extra),
                rtol=1e-6,
            )
            np.testing.assert_allclose(
                jax.jit(jax.grad(loss_vmapped))(w),
                jax.grad(loss_channel)(w),
                rtol=1e-5,
                atol=1e-6,
                err_msg=str(surrogate),
            )

    def test_progress_is_traced_and_changes_the_rule(self):
        traces = []

        @jax.jit
        def grad_at(x, progress):
            traces.append(None)  # runs only while tracing
            return jax.grad(
                lambda v: binarize(v, "ede", None, progress=progress).sum()
            )(x)

        x = jnp.array([0.0, 0.5])
        g0 = grad_at(x, 0.0)
        g1 = grad_at(x, 1.0)
        grad_at(x, 0.5)
        self.assertLen(traces, 1)
        # progress 0: k t = 1, progress 1: k t = 10 at x = 0.
        np.testing.assert_allclose([g0[0], g1[0]], [1.0, 10.0], rtol=1e-6)
        self.assertLess(float(g1[1]), float(g0[1]))  # narrower window

    def test_ede_schedule_matches_paper(self):
        s = bnnjax.EdeSurrogate()
        for progress, (k, t) in {
            0.0: (10.0, 0.1),
            0.5: (1.0, 1.0),
            1.0: (1.0, 10.0),
        }.items():
            got_k, got_t = s.schedule(progress, jnp.float32)
            np.testing.assert_allclose([got_k, got_t], [k, t], rtol=1e-6)

    def test_second_order_grad_runs(self):
        # grad of grad through the custom backward rule (e.g. for meta-learning).
        def slope_sum(v):
            return jax.grad(lambda u: binarize(u, "sigmoid", None).sum())(
                v
            ).sum()

        x = jnp.array([-0.5, 0.0, 0.5])
        got = jax.grad(slope_sum)(x)
        s = jax.nn.sigmoid(5.0 * x)
        want = 2 * 25.0 * s * (1 - s) * (1 - 2 * s)  # d/dx of 2 beta s (1 - s)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class FoundingPropertyTest(parameterized.TestCase):
    """Scaled sigmoid + mean-absolute-deviation scale are scale invariant."""

    @parameterized.parameters(None, -1)
    def test_forward_and_vjp_invariant_to_weight_scale(self, axis):
        w = jax.random.normal(jax.random.key(9), (64, 16)) * 0.05 + 0.01

        @jax.jit
        def forward_and_vjp(v):
            y, vjp = jax.vjp(lambda u: binarize(u, axis=axis), v)
            return y, vjp(jnp.ones_like(y))[0]

        y1, g1 = forward_and_vjp(w)
        self.assertGreater(float(jnp.mean(jnp.abs(g1))), 0.1)
        for c in np.logspace(-3, 3, 13):
            y, g = forward_and_vjp(jnp.float32(c) * w)
            np.testing.assert_allclose(y, jnp.float32(c) * y1, rtol=2e-5)
            np.testing.assert_allclose(g, g1, rtol=2e-5, atol=1e-6)
        for c in (2.0**-10, 2.0**-4, 2.0**6, 2.0**10):  # exact in binary
            y, g = forward_and_vjp(jnp.float32(c) * w)
            np.testing.assert_array_equal(y, jnp.float32(c) * y1)
            np.testing.assert_array_equal(g, g1)

    @parameterized.parameters(
        bnnjax.ClippedSteSurrogate(), bnnjax.SigmoidSurrogate()
    )
    def test_fixed_width_rules_are_not_invariant(self, surrogate):
        w = jax.random.normal(jax.random.key(9), (64, 16)) * 0.05

        def relative_slopes(rule, c):
            v = jnp.float32(c) * w
            _, vjp = jax.vjp(lambda u: binarize(u, rule, "mean_abs_dev"), v)
            g = np.asarray(vjp(jnp.ones_like(v))[0])
            return g / np.max(g)

        small = relative_slopes(surrogate, 1e-3)
        large = relative_slopes(surrogate, 1e3)
        # Small weights: all inside the window, equal slopes: a plain STE.
        self.assertGreater(np.min(small), 0.999)
        # Large weights: the window misses almost all of them: no gradient.
        self.assertLess(np.mean(large > 1e-3), 0.05)
        # The founding rule keeps one slope profile: graded, and reaching
        # most weights, at both scales.
        for c in (1e-3, 1e3):
            founding = relative_slopes(bnnjax.ScaledSigmoidSurrogate(), c)
            self.assertLess(np.min(founding), 0.5)
            self.assertGreater(np.mean(founding > 1e-3), 0.9)


class TracingTest(absltest.TestCase):
    def test_traces_once_for_repeated_shapes(self):
        traces = []

        @jax.jit
        def f(x):
            traces.append(None)
            return jax.value_and_grad(lambda v: binarize(v).sum())(x)

        for seed in range(4):
            f(jax.random.normal(jax.random.key(seed), (8, 4)))
        self.assertLen(traces, 1)

    def test_surrogate_is_a_valid_static_argument(self):
        f = jax.jit(binarize, static_argnames=("surrogate", "scale", "axis"))
        x = jnp.array([-1.0, 2.0])
        y1 = f(x, surrogate=bnnjax.SigmoidSurrogate(beta=2.0), scale="mean_abs")
        y2 = f(x, surrogate=bnnjax.SigmoidSurrogate(beta=2.0), scale="mean_abs")
        np.testing.assert_array_equal(y1, y2)
        self.assertEqual(f._cache_size(), 1)


class StochasticTest(absltest.TestCase):
    def test_probability_follows_hard_sigmoid(self):
        values = jnp.array([-1.5, -0.6, 0.0, 0.4, 1.2])
        x = jnp.tile(values, (20000, 1))
        y = binarize(x, "stochastic", None, key=jax.random.key(0))
        mean = np.asarray(jnp.mean(y, axis=0))
        # E[b] = clip(x, -1, 1); binomial std <= 1/sqrt(20000) = 0.007.
        np.testing.assert_allclose(mean, np.clip(values, -1, 1), atol=0.03)
        self.assertTrue(set(np.unique(np.asarray(y))) <= {-1.0, 1.0})

    def test_same_key_same_draw(self):
        x = jax.random.normal(jax.random.key(1), (50,)) * 0.3
        a = binarize(x, "stochastic", None, key=jax.random.key(5))
        b = binarize(x, "stochastic", None, key=jax.random.key(5))
        c = binarize(x, "stochastic", None, key=jax.random.key(6))
        np.testing.assert_array_equal(a, b)
        self.assertFalse(np.array_equal(a, c))


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(jnp.int32, jnp.int8, jnp.uint8, jnp.bool_)
    def test_non_float_input_is_type_error(self, dtype):
        with self.assertRaisesRegex(TypeError, "floating-point"):
            binarize(jnp.zeros(3, dtype))

    def test_unknown_names_list_the_valid_ones(self):
        with self.assertRaisesRegex(ValueError, "scaled_sigmoid"):
            binarize(jnp.zeros(3), "tanh")
        with self.assertRaisesRegex(ValueError, "mean_abs_dev"):
            binarize(jnp.zeros(3), "ste", "median")
        with self.assertRaisesRegex(ValueError, "approx_sign"):
            bnnjax.get_surrogate("Approx-Sign")
        with self.assertRaisesRegex(TypeError, "surrogate must be"):
            binarize(jnp.zeros(3), 3)
        with self.assertRaisesRegex(TypeError, "scale must be"):
            binarize(jnp.zeros(3), "ste", 1.0)

    @parameterized.parameters(
        (bnnjax.SigmoidSurrogate, "beta", 0.0, ValueError),
        (bnnjax.SigmoidSurrogate, "beta", -1.0, ValueError),
        (bnnjax.SwishSignSurrogate, "beta", float("nan"), ValueError),
        (bnnjax.ScaledSigmoidSurrogate, "k", float("inf"), ValueError),
        (bnnjax.ScaledSigmoidSurrogate, "k", True, TypeError),
        (bnnjax.ClippedSteSurrogate, "clip_value", "1", TypeError),
        (bnnjax.EdeSurrogate, "t_min", 0.0, ValueError),
        (bnnjax.SigmoidSurrogate, "beta", jnp.float32(2.0), TypeError),
    )
    def test_invalid_hyperparameters_raise_at_construction(
        self, cls, field, value, error
    ):
        with self.assertRaisesRegex(error, field):
            cls(**{field: value})

    def test_ede_argument_checks(self):
        with self.assertRaisesRegex(ValueError, "t_min <= t_max"):
            bnnjax.EdeSurrogate(t_min=2.0, t_max=1.0)
        with self.assertRaisesRegex(ValueError, "progress="):
            binarize(jnp.zeros(3), "ede")
        with self.assertRaisesRegex(ValueError, r"\[0, 1\]"):
            binarize(jnp.zeros(3), "ede", progress=1.5)
        with self.assertRaisesRegex(ValueError, "scalar"):
            binarize(jnp.zeros(3), "ede", progress=jnp.zeros(2))

    def test_stochastic_needs_key(self):
        with self.assertRaisesRegex(ValueError, "key="):
            binarize(jnp.zeros(3), "stochastic")

    def test_surrogates_are_frozen_and_keyword_only(self):
        s = bnnjax.SigmoidSurrogate(beta=2.0)
        with self.assertRaises(AttributeError):
            s.beta = 3.0  # frozen dataclass
        with self.assertRaises(TypeError):
            bnnjax.SigmoidSurrogate(2.0)  # keyword-only
        self.assertEqual(hash(s), hash(bnnjax.SigmoidSurrogate(beta=2.0)))

    def test_center_must_be_bool(self):
        with self.assertRaisesRegex(TypeError, "center"):
            binarize(jnp.zeros(3), center=1)


class BinarizerTest(parameterized.TestCase):
    def test_call_equals_binarize(self):
        w = jax.random.normal(jax.random.key(10), (5, 3))
        rule = bnnjax.Binarizer(
            surrogate="swish_sign", scale="mean_abs", axis=-1, center=True
        )
        self.assertIsInstance(rule.surrogate, bnnjax.SwishSignSurrogate)
        self.assertIsInstance(rule.scale, bnnjax.MeanAbsScale)
        np.testing.assert_array_equal(
            rule(w), binarize(w, "swish_sign", "mean_abs", -1, center=True)
        )
        np.testing.assert_array_equal(
            jax.grad(lambda v: rule(v).sum())(w),
            jax.grad(
                lambda v: binarize(
                    v, "swish_sign", "mean_abs", -1, center=True
                ).sum()
            )(w),
        )

    def test_defaults_are_founding_method_and_hashable(self):
        rule = bnnjax.Binarizer()
        self.assertEqual(rule.surrogate, bnnjax.ScaledSigmoidSurrogate())
        self.assertEqual(rule.scale, bnnjax.MeanAbsDevScale())
        self.assertIsNone(rule.axis)
        self.assertFalse(rule.stochastic)
        self.assertTrue(bnnjax.Binarizer(surrogate="stochastic").stochastic)
        self.assertEqual(
            hash(bnnjax.Binarizer(axis=[0, np.int64(1)])),
            hash(bnnjax.Binarizer(axis=(0, 1))),
        )

    def test_errors_at_construction(self):
        with self.assertRaisesRegex(ValueError, "expected one of"):
            bnnjax.Binarizer(surrogate="sgn")
        with self.assertRaisesRegex(ValueError, "expected one of"):
            bnnjax.Binarizer(scale="l1")
        with self.assertRaisesRegex(TypeError, "center"):
            bnnjax.Binarizer(center="yes")
        with self.assertRaisesRegex(TypeError, "axis must be"):
            bnnjax.Binarizer(axis="out")
        with self.assertRaisesRegex(TypeError, "axis must be"):
            bnnjax.Binarizer(axis=[0, 1.0])
        with self.assertRaisesRegex(ValueError, "out of range"):
            bnnjax.Binarizer(axis=3)(jnp.zeros((2, 2)))


class StandardizeTest(parameterized.TestCase):
    """``standardize=True``: the surrogate sees ``(x - mean) / std``."""

    def _weights(self, dtype=jnp.float32):
        w = jax.random.normal(jax.random.key(21), (40, 5)) * 0.03 + 0.01
        # A constant channel (std 0: divided by 1) and an exact zero.
        return w.at[:, 3].set(0.25).at[0, 0].set(0.0).astype(dtype)

    @parameterized.parameters(*FLOAT_DTYPES)
    def test_forward_is_the_centred_rule(self, dtype):
        w = self._weights(dtype)
        for scale in (None, "std", "mean_abs_dev"):
            got = binarize(
                w, "ede", scale, -1, center=True, standardize=True, progress=0.5
            )
            want = binarize(w, "ede", scale, -1, center=True, progress=0.5)
            np.testing.assert_array_equal(got, want)
            self.assertEqual(got.dtype, jnp.dtype(dtype))

    @parameterized.parameters(0.0, 0.4, 1.0)
    def test_gradient_is_the_derivative_at_the_standardized_value(
        self, progress
    ):
        w = self._weights()
        g = jax.random.normal(jax.random.key(22), w.shape)
        ede = bnnjax.EdeSurrogate()

        @jax.jit
        def grad(v):
            return jax.vmap(
                jax.grad(
                    lambda c, gc: jnp.sum(
                        gc
                        * binarize(
                            c,
                            ede,
                            "std",
                            center=True,
                            standardize=True,
                            progress=progress,
                        )
                    )
                ),
                in_axes=(1, 1),
                out_axes=1,
            )(v, g)

        got = grad(w)
        # float64 reference: alpha * k t (1 - tanh(t z)^2) / std per column.
        w64 = np.asarray(w, np.float64)
        centred = w64 - w64.mean(0)
        std = np.sqrt((centred**2).mean(0))
        alpha = std.copy()
        std[std == 0] = 1.0
        z = centred / std
        t = 0.1 * 10 ** (progress * 2)
        k = max(1 / t, 1)
        want = np.asarray(g) * alpha * k * t * (1 - np.tanh(t * z) ** 2) / std
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)
        np.testing.assert_array_equal(got[:, 3], 0.0)  # alpha = 0 there

    def test_gradient_does_not_depend_on_the_weights_scale(self):
        # w -> c w leaves z and alpha / std unchanged: so the vector-Jacobian
        # product for a fixed cotangent is unchanged (exactly, c = 2^n).
        w = self._weights()
        g = jax.random.normal(jax.random.key(23), w.shape)
        rule = bnnjax.Binarizer(
            surrogate="ede", scale="std", axis=-1, center=True, standardize=True
        )

        def vjp(r, u):
            return jax.grad(lambda v: jnp.sum(g * r(v, progress=0.7)))(u)

        want = vjp(rule, w)
        for c in (2.0**-6, 2.0**5):
            np.testing.assert_allclose(
                vjp(rule, c * w), want, rtol=1e-5, atol=1e-8
            )
        # Without standardize the window does not follow the scale.
        plain = dataclasses.replace(rule, standardize=False)
        self.assertFalse(
            np.allclose(vjp(plain, w), vjp(plain, 1e3 * w) / 1e3, rtol=1e-2)
        )

    def test_surrogate_input(self):
        w = self._weights()
        rule = bnnjax.Binarizer(axis=-1, center=True, standardize=True)
        z = np.asarray(rule.surrogate_input(w), np.float64)
        np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-6)
        np.testing.assert_allclose(
            np.sqrt((z**2).mean(0)), [1, 1, 1, 0, 1], rtol=1e-5
        )
        np.testing.assert_array_equal(bnnjax.Binarizer().surrogate_input(w), w)

    def test_needs_center_and_bools(self):
        with self.assertRaisesRegex(ValueError, "needs center=True"):
            binarize(jnp.ones(3), standardize=True)
        with self.assertRaisesRegex(ValueError, "Binarizer: .*center=True"):
            bnnjax.Binarizer(standardize=True)
        with self.assertRaisesRegex(TypeError, "standardize must be a bool"):
            bnnjax.Binarizer(center=True, standardize=1)


class AnnealedScaledSigmoidTest(parameterized.TestCase):
    """The scaled sigmoid with its sharpness annealed by ``progress``."""

    def setUp(self):
        super().setUp()
        self.rule = AnnealedScaledSigmoidSurrogate(k_start=2.0, k_end=8.0)
        self.w = 0.05 * jax.random.normal(jax.random.key(0), (64, 8))
        self.w = self.w.at[0, 0].set(0.0)

    def _grad(self, w, progress, scale=None, rule=None):
        rule = rule or self.rule
        return jax.jit(
            jax.grad(
                lambda v, p: jnp.sum(
                    bnnjax.binarize(v, rule, scale, axis=-1, progress=p)
                    * jnp.arange(8.0)[None, :]
                )
            )
        )(w, jnp.float32(progress))

    def test_sharpness_schedule(self):
        np.testing.assert_allclose(
            [float(self.rule.sharpness(p)) for p in (0.0, 0.5, 1.0)],
            [2.0, 4.0, 8.0],
            rtol=1e-6,
        )

    @parameterized.parameters(0.0, 0.3, 1.0)
    def test_gradient_matches_proxy(self, progress):
        aux = self.rule.prepare(self.w, (0,), progress=progress)
        want = jax.grad(
            lambda v: jnp.sum(
                self.rule.proxy(v, aux) * jnp.arange(8.0)[None, :]
            )
        )(self.w)
        np.testing.assert_allclose(
            self._grad(self.w, progress), want, rtol=1e-5, atol=1e-6
        )
        x = self.w.ravel()
        self.assertTrue(
            set(
                np.unique(
                    np.asarray(
                        bnnjax.binarize(x, self.rule, None, progress=progress)
                    )
                )
            )
            <= {-1.0, 1.0}
        )

    def test_starts_as_the_founding_surrogate(self):
        np.testing.assert_allclose(
            self._grad(self.w, 0.0),
            self._grad(self.w, 0.0, rule=bnnjax.ScaledSigmoidSurrogate()),
            rtol=1e-4,  # x / (s / k) against k x / s in float32
        )

    def test_narrows_with_progress(self):
        fractions = []
        for progress in (0.0, 1.0):
            g = np.asarray(self._grad(self.w, progress))
            fractions.append(np.mean(np.abs(g) > 1e-2 * np.abs(g).max()))
        self.assertGreater(fractions[0], fractions[1] + 0.2)

    @parameterized.parameters(0.0, 0.7)
    def test_scale_invariance(self, progress):
        g = self._grad(self.w, progress, scale="mean_abs_dev")
        g4 = self._grad(4.0 * self.w, progress, scale="mean_abs_dev")
        np.testing.assert_allclose(g4, g, rtol=1e-6, atol=1e-9)

    def test_progress_is_traced(self):
        traces = []

        @jax.jit
        def grad(w, p):
            traces.append(None)
            return jax.grad(
                lambda v: jnp.sum(
                    bnnjax.binarize(v, self.rule, None, progress=p)
                )
            )(w)

        a = grad(self.w, jnp.float32(0.1))
        b = grad(self.w, jnp.float32(0.9))
        self.assertLen(traces, 1)
        self.assertFalse(np.allclose(a, b))

    @parameterized.named_parameters(
        ("order", dict(k_start=4.0, k_end=2.0), "k_start <= k_end"),
        ("zero", dict(k_end=0.0), "k_end"),
        ("nan", dict(k_start=math.nan), "k_start"),
    )
    def test_bad_fields(self, kwargs, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            AnnealedScaledSigmoidSurrogate(**kwargs)

    def test_needs_progress(self):
        with self.assertRaisesRegex(ValueError, "progress"):
            bnnjax.binarize(self.w, self.rule, None)
        with self.assertRaisesRegex(ValueError, r"\[0, 1\]"):
            bnnjax.binarize(self.w, self.rule, None, progress=1.5)


class RelaxationTest(parameterized.TestCase):
    """``identity`` and ``hardtanh``: registered, but not binarizers."""

    @parameterized.product(dtype=FLOAT_DTYPES, scale=SCALES, axis=(None, -1))
    def test_forward_is_alpha_times_the_relaxation(self, dtype, scale, axis):
        w = 1.5 * jax.random.normal(jax.random.key(30), (7, 5), jnp.float32)
        w = w.at[0, 0].set(0.0).at[1, 1].set(1.0).at[2, 2].set(-1.0)
        w = w.astype(dtype)
        cases = {
            IdentitySurrogate(): np.float32(w),
            HardTanhSurrogate(): np.clip(np.float32(w), -1, 1),
        }
        for surrogate, want in cases.items():
            with jax.numpy_dtype_promotion("strict"):
                y, alpha = jax.jit(
                    lambda v, s=surrogate: (
                        binarize(v, s, scale, axis),
                        bnnjax.get_scale(scale)(v, axis),
                    )
                )(w)
            self.assertEqual(y.dtype, jnp.dtype(dtype))
            np.testing.assert_allclose(
                np.float32(y),
                np.float32(alpha) * want,
                rtol=_tol(dtype),
                atol=_tol(dtype),
                err_msg=str(surrogate),
            )

    def test_forward_is_not_sign(self):
        for name, cls in _SURROGATES.items():
            self.assertEqual(
                _forward_is_sign(cls), name not in RELAXATION_NAMES, name
            )
            self.assertEqual(
                _forward_is_sign(bnnjax.get_surrogate(name)),
                _forward_is_sign(cls),
            )


class RegistryTest(absltest.TestCase):
    def test_surrogate_names(self):
        # The module's SURROGATE_NAMES is the specification, in order.
        self.assertEqual(bnnjax.SURROGATE_NAMES, SURROGATE_NAMES)
        self.assertEqual(
            bnnjax.DETERMINISTIC_SURROGATE_NAMES, bnnjax.SURROGATE_NAMES[:-1]
        )
        for name in bnnjax.SURROGATE_NAMES:
            surrogate = bnnjax.get_surrogate(name)
            self.assertEqual(surrogate.name, name)
            self.assertEqual(
                name in bnnjax.DETERMINISTIC_SURROGATE_NAMES,
                not surrogate.stochastic,
            )

    def test_every_surrogate_is_registered_and_in_the_battery(self):
        self.assertEqual(tuple(_SURROGATES), SURROGATE_NAMES + RELAXATION_NAMES)
        for name, cls in _SURROGATES.items():
            surrogate = bnnjax.get_surrogate(name)
            self.assertIs(type(surrogate), cls)
            self.assertEqual(surrogate.name, name)
            self.assertEqual(
                name in SURROGATE_NAMES, name not in RELAXATION_NAMES
            )
        # The gradient-vs-proxy battery (GradientTest) runs every class.
        self.assertEqual(
            {type(s) for s in SURROGATES}, set(_SURROGATES.values())
        )
        # The subclasses defined in bnnjax.binarize are all registered.
        defined = {
            cls
            for cls in vars(importlib.import_module("bnnjax.binarize")).values()
            if isinstance(cls, type)
            and issubclass(cls, bnnjax.Surrogate)
            and cls is not bnnjax.Surrogate
        }
        self.assertEqual(defined, set(_SURROGATES.values()))

    def test_relaxations_build_by_name(self):
        self.assertEqual(bnnjax.get_surrogate("identity"), IdentitySurrogate())
        self.assertEqual(bnnjax.get_surrogate("hardtanh"), HardTanhSurrogate())
        self.assertEqual(
            bnnjax.get_surrogate(
                "annealed_scaled_sigmoid", k_start=1.0, k_end=4.0
            ),
            AnnealedScaledSigmoidSurrogate(k_start=1.0, k_end=4.0),
        )
        rule = bnnjax.Binarizer(surrogate="hardtanh", scale=None)
        self.assertIsInstance(rule.surrogate, HardTanhSurrogate)


if __name__ == "__main__":
    absltest.main()

"""Tests of bnnjax.scale: statistics, axes, gradient policy, registry."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

import bnnjax

W = np.array(
    [[1.0, -2.0, 0.0], [3.0, 2.0, -1.0], [-1.0, 6.0, 4.0], [1.0, 2.0, 1.0]],
    np.float32,
)


def _reference(name, x, axes):
    if name == "mean_abs":
        return np.mean(np.abs(x), axis=axes, keepdims=True)
    if name == "mean_abs_dev":
        return np.mean(
            np.abs(x - np.mean(x, axis=axes, keepdims=True)),
            axis=axes,
            keepdims=True,
        )
    if name == "std":
        return np.std(x, axis=axes, keepdims=True)
    return np.ones([1 if a in axes else d for a, d in enumerate(x.shape)])


class StatisticTest(parameterized.TestCase):
    def test_hand_computed_values(self):
        # Columns: [1, 3, -1, 1] (mean 1, |dev| 0 2 2 0), [-2, 2, 6, 2]
        # (mean 2, |dev| 4 0 4 0), [0, -1, 4, 1] (mean 1, |dev| 1 2 3 0).
        np.testing.assert_allclose(
            bnnjax.mean_abs_dev(W, (0,)), [[1.0, 2.0, 1.5]]
        )
        np.testing.assert_allclose(bnnjax.mean_abs(W, (0,)), [[1.5, 3.0, 1.5]])
        np.testing.assert_allclose(
            bnnjax.std(W, (0,))[0, 0], np.sqrt(2.0), rtol=1e-6
        )
        np.testing.assert_allclose(
            bnnjax.mean_abs(W, (0, 1)), [[np.mean(np.abs(W))]]
        )

    @parameterized.product(
        name=("none", "mean_abs", "mean_abs_dev", "std"),
        axis=(None, -1, 0, 1, (0,), (0, 1)),
        dtype=(jnp.float32, jnp.bfloat16, jnp.float16),
    )
    def test_estimators_match_numpy(self, name, axis, dtype):
        x = np.asarray(
            jax.random.normal(jax.random.key(0), (3, 4, 5)), np.float32
        )
        x = np.float32(jnp.asarray(x, dtype))  # the values the estimator sees
        estimator = bnnjax.get_scale(name)
        with jax.numpy_dtype_promotion("strict"):
            alpha = jax.jit(lambda v: estimator(v, axis))(jnp.asarray(x, dtype))
        self.assertEqual(alpha.dtype, jnp.dtype(dtype))
        axes = bnnjax.reduce_axes(3, axis)
        want = _reference(name, x, axes)
        self.assertEqual(alpha.shape, want.shape)
        tol = 1e-6 if dtype == jnp.float32 else 1e-2
        np.testing.assert_allclose(np.float32(alpha), want, rtol=tol, atol=tol)

    def test_mean_abs_dev_ignores_a_common_shift_and_scales(self):
        x = jax.random.normal(jax.random.key(1), (50, 7))
        base = bnnjax.mean_abs_dev(x, (0,))
        np.testing.assert_allclose(
            bnnjax.mean_abs_dev(x + 3.0, (0,)), base, rtol=1e-5
        )
        np.testing.assert_array_equal(
            bnnjax.mean_abs_dev(4.0 * x, (0,)), 4.0 * base
        )
        # mean(|x|) grows with the shift.
        self.assertTrue(
            np.all(
                bnnjax.mean_abs(x + 3.0, (0,)) > bnnjax.mean_abs(x, (0,)) + 1.5
            )
        )

    def test_low_precision_accumulates_in_float32(self):
        # 4096 bfloat16 values: a bfloat16 running sum would lose the mean.
        x = jnp.full((4096,), 0.1, jnp.bfloat16).at[::2].set(-0.1)
        got = float(bnnjax.mean_abs(x, (0,))[0])
        self.assertAlmostEqual(got, float(jnp.bfloat16(0.1)), places=3)


class GradientPolicyTest(parameterized.TestCase):
    @parameterized.parameters("mean_abs", "mean_abs_dev", "std")
    def test_stop_gradient_by_default(self, name):
        x = jax.random.normal(jax.random.key(2), (6, 3))
        grad = jax.grad(lambda v: bnnjax.get_scale(name)(v, -1).sum())(x)
        np.testing.assert_array_equal(grad, np.zeros_like(grad))
        flowing = bnnjax.get_scale(name, stop_gradient=False)
        statistic = {
            "mean_abs": bnnjax.mean_abs,
            "mean_abs_dev": bnnjax.mean_abs_dev,
            "std": bnnjax.std,
        }[name]
        got = jax.grad(lambda v: flowing(v, -1).sum())(x)
        want = jax.grad(lambda v: statistic(v, (0,)).sum())(x)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        self.assertGreater(float(jnp.max(jnp.abs(got))), 0.0)


class AxisTest(parameterized.TestCase):
    @parameterized.parameters(
        (4, None, (0, 1, 2, 3)),
        (4, -1, (0, 1, 2)),
        (4, 3, (0, 1, 2)),
        (4, (0, -1), (1, 2)),
        (2, 0, (1,)),
        (0, None, ()),
    )
    def test_reduce_axes(self, ndim, axis, want):
        self.assertEqual(bnnjax.reduce_axes(ndim, axis), want)

    def test_reduce_axes_errors(self):
        with self.assertRaisesRegex(ValueError, "out of range"):
            bnnjax.reduce_axes(2, 2)
        with self.assertRaisesRegex(ValueError, "twice"):
            bnnjax.reduce_axes(3, (0, -3))
        with self.assertRaisesRegex(ValueError, "nothing is reduced"):
            bnnjax.reduce_axes(2, (0, 1))
        with self.assertRaisesRegex(TypeError, "axis must be"):
            bnnjax.reduce_axes(2, 1.0)
        with self.assertRaisesRegex(TypeError, "axis must be"):
            bnnjax.reduce_axes(2, True)
        with self.assertRaisesRegex(TypeError, "axis must be"):
            bnnjax.reduce_axes(2, "channels")


class RegistryTest(absltest.TestCase):
    def test_names(self):
        for name, cls in {
            "none": bnnjax.NoScale,
            "mean_abs": bnnjax.MeanAbsScale,
            "mean_abs_dev": bnnjax.MeanAbsDevScale,
            "std": bnnjax.StdScale,
        }.items():
            self.assertIsInstance(bnnjax.get_scale(name), cls)
            self.assertEqual(cls.name, name)

    def test_unknown_name_and_bad_field(self):
        with self.assertRaisesRegex(ValueError, "mean_abs_dev"):
            bnnjax.get_scale("mad")
        with self.assertRaisesRegex(TypeError, "stop_gradient"):
            bnnjax.MeanAbsScale(stop_gradient=1)
        with self.assertRaises(TypeError):
            bnnjax.get_scale("std", ddof=1)


if __name__ == "__main__":
    absltest.main()

"""Property-based tests (hypothesis) of binarize over shapes, axes, values."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bnnjax
from bnnjax import binarize

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
DETERMINISTIC = (
    "ste",
    "clipped_ste",
    "approx_sign",
    "swish_sign",
    "ede",
    "sigmoid",
    "scaled_sigmoid",
    "annealed_scaled_sigmoid",
)


@st.composite
def tensors_and_axes(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, max_side=5))
    ndim = len(shape)
    # Keep a proper subset of the axes (None: per tensor).
    kept = draw(
        st.one_of(
            st.none(),
            st.lists(
                st.integers(-ndim, ndim - 1),
                min_size=1,
                max_size=max(ndim - 1, 1),
                unique_by=lambda a: a % ndim,
            ).filter(lambda a: len(a) < ndim),
        )
    )
    values = draw(
        hnp.arrays(
            np.float32,
            shape,
            elements=st.one_of(
                st.just(0.0),
                # |v| >= 1e-6: statistics of the scaled tensor stay normal
                # numbers (XLA on CPU flushes subnormal results to zero).
                st.floats(-100, 100, width=32).filter(lambda v: abs(v) >= 1e-6),
            ),
        )
    )
    return values, kept


class PropertyTest(absltest.TestCase):
    @SETTINGS
    @given(
        data=tensors_and_axes(),
        name=st.sampled_from(DETERMINISTIC),
        scale=st.sampled_from(["none", "mean_abs", "mean_abs_dev", "std"]),
    )
    def test_forward_is_plus_minus_alpha(self, data, name, scale):
        x, axis = data
        y = np.asarray(binarize(x, name, scale, axis, progress=0.5))
        alpha = np.broadcast_to(
            np.asarray(bnnjax.get_scale(scale)(x, axis)), x.shape
        )
        np.testing.assert_allclose(np.abs(y), alpha, rtol=1e-6)
        signs = np.where(x >= 0, 1.0, -1.0)
        nonzero = alpha > 0
        np.testing.assert_array_equal(np.sign(y)[nonzero], signs[nonzero])

    @SETTINGS
    @given(data=tensors_and_axes(), name=st.sampled_from(DETERMINISTIC))
    def test_gradient_is_alpha_times_surrogate_derivative(self, data, name):
        x, axis = data
        surrogate = bnnjax.get_surrogate(name)
        cotangent = np.cos(np.arange(x.size, dtype=np.float32)).reshape(x.shape)
        got = jax.grad(
            lambda v: jnp.sum(
                cotangent
                * binarize(v, surrogate, "mean_abs", axis, progress=0.5)
            )
        )(x)
        axes = bnnjax.reduce_axes(x.ndim, axis)
        aux = surrogate.prepare(jnp.asarray(x), axes, progress=0.5)
        alpha = bnnjax.mean_abs(x, axes)
        want = cotangent * alpha * surrogate.derivative(jnp.asarray(x), aux)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        self.assertTrue(np.all(np.isfinite(got)))

    @SETTINGS
    @given(
        data=tensors_and_axes(),
        exponent=st.integers(-12, 12),
        center=st.booleans(),
    )
    def test_founding_method_is_exactly_scale_invariant(
        self, data, exponent, center
    ):
        # Scaling by a power of two is exact in floating point, so forward
        # and backward must match bit for bit.
        x, axis = data
        c = np.float32(2.0**exponent)

        def forward_and_vjp(v):
            y, vjp = jax.vjp(lambda u: binarize(u, axis=axis, center=center), v)
            return y, vjp(jnp.ones_like(y))[0]

        y1, g1 = forward_and_vjp(jnp.asarray(x))
        yc, gc = forward_and_vjp(jnp.asarray(c * x))
        np.testing.assert_array_equal(yc, c * y1)
        np.testing.assert_array_equal(gc, g1)

    @SETTINGS
    @given(
        shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_stochastic_values_and_gradient(self, shape, seed):
        x = jax.random.uniform(
            jax.random.key(seed), shape, minval=-2.0, maxval=2.0
        )
        key = jax.random.key(seed + 1)
        y = binarize(x, "stochastic", None, key=key)
        self.assertTrue(set(np.unique(np.asarray(y))) <= {-1.0, 1.0})
        # Certain outcomes outside the hard-sigmoid window.
        np.testing.assert_array_equal(np.asarray(y)[np.asarray(x) > 1], 1.0)
        np.testing.assert_array_equal(np.asarray(y)[np.asarray(x) < -1], -1.0)
        g = jax.grad(lambda v: binarize(v, "stochastic", None, key=key).sum())(
            x
        )
        np.testing.assert_array_equal(g, np.abs(np.asarray(x)) <= 1)


if __name__ == "__main__":
    absltest.main()

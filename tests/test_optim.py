"""Tests of bnnjax.optim transforms against hand-computed references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from bnnjax import optim

W = jnp.array([[0.5, -2.0], [1.5, 0.0], [-0.5, 4.0], [0.5, 2.0]])
# Column 0: [0.5, 1.5, -0.5, 0.5], mean 0.5, |dev| = [0, 1, 1, 0] -> 0.5.
# Column 1: [-2, 0, 4, 2], mean 1, |dev| = [3, 1, 3, 1] -> 2.0.
# Whole tensor: mean 0.75, |dev| sum = 0.25+2.75+0.75+0.75+1.25+3.25+0.25+1.25
MAD_CHANNEL = jnp.array([[0.5, 2.0]])
MAD_TENSOR = 10.5 / 8
U = jnp.array([[1.0, 1.0], [-2.0, 0.5], [0.0, -1.0], [3.0, 2.0]])


def _run(tx, updates, params, steps=1):
    """Applies ``tx`` ``steps`` times under one jitted step; counts traces."""
    traces = []

    @jax.jit
    def step(p, s, g):
        traces.append(None)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, u

    state = tx.init(params)
    outs = []
    for _ in range(steps):
        params, state, u = step(params, state, updates)
        outs.append(u)
    return params, state, outs, len(traces)


class ScaleTest(parameterized.TestCase):
    def test_scale_by_mean_abs_dev_per_channel_and_tensor(self):
        tx = optim.scale_by_mean_abs_dev()
        _, _, (u,), _ = _run(tx, {"k": U}, {"k": W})
        np.testing.assert_allclose(u["k"], U * MAD_CHANNEL, rtol=1e-6)
        tx = optim.scale_by_mean_abs_dev(per_channel=False)
        _, _, (u,), _ = _run(tx, {"k": U}, {"k": W})
        np.testing.assert_allclose(u["k"], U * MAD_TENSOR, rtol=1e-6)

    def test_no_spread_falls_back_to_one(self):
        tx = optim.scale_by_mean_abs_dev()
        zeros = jnp.zeros((3, 2))
        u, _ = tx.update(jnp.ones((3, 2)), tx.init(zeros), zeros)
        np.testing.assert_array_equal(u, np.ones((3, 2)))

    def test_scale_by_mean_abs_dev_makes_adam_steps_follow_the_scale(self):
        # Adam's step does not depend on the gradient's scale; after the
        # spread scaling, weights scaled by c take steps scaled by c.
        tx = optax.chain(optax.adam(1e-2), optim.scale_by_mean_abs_dev())
        g = jnp.cos(jnp.arange(8.0)).reshape(4, 2)
        _, _, (u1,), _ = _run(tx, g, W)
        _, _, (u16,), _ = _run(tx, g, 16.0 * W)
        np.testing.assert_allclose(u16, 16.0 * u1, rtol=1e-6)

    def test_scale_adaptive_is_invariant_to_weight_scale(self):
        # A batch-normalized network's gradient scales as 1/c when the
        # latent weights scale by c: the wrapped Adam sees the same input
        # (eps included) and the step scales by c, exactly for powers of 2.
        tx = optim.scale_adaptive(optax.adam(1e-2, eps=1e-3))
        g = jnp.cos(jnp.arange(8.0)).reshape(4, 2)
        _, _, steps1, _ = _run(tx, g, W, steps=3)
        _, _, steps16, _ = _run(tx, g / 16.0, 16.0 * W, steps=3)
        for u1, u16 in zip(steps1, steps16, strict=True):
            np.testing.assert_array_equal(u16, 16.0 * u1)
        # By hand, first step: Adam's first step is g' / (|g'| + eps) * lr
        # with g' = g * s, then times s again.
        gs = g * MAD_CHANNEL
        want = -1e-2 * gs / (jnp.abs(gs) + 1e-3) * MAD_CHANNEL
        np.testing.assert_allclose(steps1[0], want, rtol=1e-5)
        # Adam's eps is what the single post-scaling leaves exposed.
        post = optax.chain(
            optax.adam(1e-2, eps=1e-3), optim.scale_by_mean_abs_dev()
        )
        _, _, (p1,), _ = _run(post, g, W)
        _, _, (p16,), _ = _run(post, g / 16.0, 16.0 * W)
        self.assertGreater(float(jnp.max(jnp.abs(p16 - 16.0 * p1))), 1e-4)
        with self.assertRaisesRegex(TypeError, "GradientTransformation"):
            optim.scale_adaptive("adam")

    def test_glorot_lr_scale(self):
        tx = optim.scale_by_glorot_lr()
        dense = jnp.ones((784, 256))
        conv = jnp.ones((3, 3, 16, 32))
        (u, _) = tx.update({"d": dense, "c": conv}, tx.init(None))
        np.testing.assert_allclose(
            u["d"][0, 0], 1 / np.sqrt(1.5 / (784 + 256)), rtol=1e-6
        )
        np.testing.assert_allclose(
            u["c"][0, 0, 0, 0], 1 / np.sqrt(1.5 / (9 * 16 + 9 * 32)), rtol=1e-6
        )
        with self.assertRaisesRegex(ValueError, "rank >= 2"):
            tx.update({"b": jnp.ones(3)}, tx.init(None))

    def test_per_channel_needs_rank_two(self):
        tx = optim.scale_by_mean_abs_dev()
        with self.assertRaisesRegex(ValueError, "per_channel=False"):
            tx.update(jnp.ones(3), tx.init(jnp.ones(3)), jnp.ones(3))


class ClipTest(parameterized.TestCase):
    def test_clip_latent_weights(self):
        tx = optim.clip_latent_weights(bound=1.0)
        new, _, (u, _), traces = _run(tx, {"k": U}, {"k": W}, steps=2)
        # Second step starts from the clipped weights.
        want = np.clip(np.clip(W + U, -1, 1) + U, -1, 1)
        np.testing.assert_allclose(new["k"], want, rtol=1e-6)
        np.testing.assert_allclose(u["k"], np.clip(W + U, -1, 1) - W)
        self.assertEqual(traces, 1)

    def test_clip_latent_weights_by_spread(self):
        tx = optim.clip_latent_weights_by_spread(multiple=2.0)
        u, _ = tx.update(U, tx.init(W), W)
        bound = 2.0 * MAD_CHANNEL  # [[1, 4]]
        np.testing.assert_allclose(W + u, np.clip(W + U, -bound, bound))
        tx = optim.clip_latent_weights_by_spread(
            multiple=1.0, per_channel=False
        )
        u, _ = tx.update(U, tx.init(W), W)
        np.testing.assert_allclose(
            W + u, np.clip(W + U, -MAD_TENSOR, MAD_TENSOR), rtol=1e-6
        )

    def test_chain_with_clipping_last(self):
        tx = optax.chain(optax.sgd(1.0), optim.clip_latent_weights(bound=2.0))
        g = -U  # sgd(1.0) turns -U into +U
        new, *_ = _run(tx, g, W)
        np.testing.assert_allclose(new, np.clip(W + U, -2, 2), rtol=1e-6)


class BopTest(parameterized.TestCase):
    def test_bop_by_hand(self):
        w = jnp.array([1.0, -1.0, 1.0, -1.0])
        g = jnp.array([0.5, 0.5, -0.5, -0.5])
        tx = optim.bop(threshold=0.2, gamma=0.5)
        new, state, (u1, u2), traces = _run(tx, g, w, steps=2)
        # Step 1: m = 0.25; w * m = [.25, -.25, -.25, .25] > .2 -> flip 0, 3.
        np.testing.assert_array_equal(u1, [-2.0, 0.0, 0.0, 2.0])
        # Step 2: w = [-1, -1, 1, 1], m = 0.375 * sign(g):
        # w * m = [-.375, -.375, -.375, -.375] -> no flips.
        np.testing.assert_array_equal(u2, [0.0, 0.0, 0.0, 0.0])
        np.testing.assert_allclose(state.momentum, 0.75 * g)
        np.testing.assert_array_equal(new, [-1.0, -1.0, 1.0, 1.0])
        self.assertEqual(traces, 1)
        self.assertEqual(state.momentum.dtype, jnp.float32)

    def test_bop_second_order_by_hand(self):
        w = jnp.array([1.0, 1.0, -1.0])
        g = jnp.array([2.0, 0.001, 2.0])
        tx = optim.bop_second_order(threshold=0.05, gamma=0.1, sigma=0.5)
        _, state, (u,), _ = _run(tx, g, w)
        m = 0.1 * g
        v = 0.5 * g * g
        score = np.asarray(w * m / (np.sqrt(v) + 1e-10))
        # score = [0.1414, 0.1414, -0.1414]: the second moment removes the
        # gradient scale, so the tiny gradient flips too.
        np.testing.assert_array_equal(u, np.where(score > 0.05, -2 * w, 0))
        np.testing.assert_array_equal(u, [-2.0, -2.0, 0.0])
        np.testing.assert_allclose(state.second_moment, v, rtol=1e-6)

    @parameterized.parameters(
        optim.bop,
        optim.bop_second_order,
        optim.scale_by_mean_abs_dev,
        optim.clip_latent_weights,
        optim.clip_latent_weights_by_spread,
    )
    def test_needs_params(self, factory):
        tx = factory()
        w = jnp.ones((2, 2))
        with self.assertRaisesRegex(ValueError, "needs the current parameters"):
            tx.update(w, tx.init(w))


class HyperparameterTest(parameterized.TestCase):
    def test_inject_hyperparams_schedules_gamma(self):
        schedule = optax.linear_schedule(1.0, 0.0, transition_steps=1)
        tx = optax.inject_hyperparams(optim.bop)(threshold=0.0, gamma=schedule)
        w = jnp.array([1.0, -1.0])
        g = jnp.array([1.0, 1.0])
        _, state, (u1, u2), traces = _run(tx, g, w, steps=2)
        # Step 1 with gamma = 1: m = g, flips w[0]; step 2 with gamma = 0:
        # m stays g; w = [-1, -1] -> w * m < 0: no flips.
        np.testing.assert_array_equal(u1, [-2.0, 0.0])
        np.testing.assert_array_equal(u2, [0.0, 0.0])
        self.assertEqual(traces, 1)
        self.assertAlmostEqual(float(state.hyperparams["gamma"]), 0.0)

    def test_inject_hyperparams_keeps_bools_static(self):
        tx = optax.inject_hyperparams(optim.clip_latent_weights_by_spread)(
            multiple=2.0, per_channel=True
        )
        u, state = tx.update(U, tx.init(W), W)
        np.testing.assert_allclose(
            W + u, np.clip(W + U, -2 * MAD_CHANNEL, 2 * MAD_CHANNEL)
        )
        self.assertEqual(set(state.hyperparams), {"multiple"})

    @parameterized.parameters(
        (optim.bop, "gamma", 0.0, ValueError),
        (optim.bop, "threshold", -1.0, ValueError),
        (optim.bop_second_order, "sigma", float("nan"), ValueError),
        (optim.clip_latent_weights, "bound", 0.0, ValueError),
        (optim.clip_latent_weights_by_spread, "multiple", "3", TypeError),
        (optim.clip_latent_weights, "bound", jnp.ones(2), ValueError),
        (optim.bop, "gamma", optax.constant_schedule(1e-4), TypeError),
    )
    def test_invalid_hyperparameters(self, factory, name, value, error):
        with self.assertRaisesRegex(error, name):
            factory(**{name: value})


if __name__ == "__main__":
    absltest.main()


class ParameterGroupTest(parameterized.TestCase):
    def _linen_model_and_params(self):
        import flax.linen as fnn

        from bnnjax.nn import linen as bnn

        class Model(fnn.Module):
            @fnn.compact
            def __call__(self, x):
                x = fnn.Dense(4, name="first")(x)
                x = bnn.BinaryDense(4, use_bias=False, name="hidden")(x)
                x = fnn.BatchNorm(use_running_average=True, name="bn")(x)
                return bnn.BinaryDense(2, name="last")(x)

        model = Model()
        variables = model.init(jax.random.key(0), jnp.ones((3, 5)))
        return model, variables

    def test_linen_labels_by_latent_kernel_key(self):
        _, variables = self._linen_model_and_params()
        labels = optim.binary_param_labels(variables["params"])
        self.assertEqual(
            labels,
            {
                "first": {"kernel": "real", "bias": "real"},
                "hidden": {"latent_kernel": "binary"},
                "bn": {"scale": "real", "bias": "real"},
                "last": {"latent_kernel": "binary", "bias": "real"},
            },
        )

    def test_linen_partition_routes_each_group(self):
        model, variables = self._linen_model_and_params()
        params = variables["params"]
        tx = optim.binary_partition(optax.sgd(1.0), optax.set_to_zero(), params)
        grads = jax.grad(
            lambda p: jnp.sum(
                model.apply({**variables, "params": p}, jnp.ones((3, 5))) ** 2
            )
        )(params)
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        labels = optim.binary_param_labels(params)
        for label, u, g in zip(
            jax.tree.leaves(labels),
            jax.tree.leaves(updates),
            jax.tree.leaves(grads),
            strict=True,
        ):
            if label == "binary":
                np.testing.assert_allclose(u, -g)
                self.assertGreater(float(jnp.max(jnp.abs(g))), 0.0)
            else:
                np.testing.assert_array_equal(u, np.zeros_like(u))

    def test_nnx_optimizer_updates_only_latent_weights_with_binary_tx(self):
        from flax import nnx as fnnx

        from bnnjax.nn import nnx as bnx

        class Model(fnnx.Module):
            def __init__(self, rngs):
                self.first = fnnx.Linear(5, 4, rngs=rngs)
                self.hidden = bnx.BinaryLinear(4, 3, rngs=rngs)

            def __call__(self, x):
                return self.hidden(self.first(x))

        model = Model(fnnx.Rngs(0))
        tx = optim.binary_partition(optax.sgd(1.0), optax.set_to_zero(), model)
        optimizer = fnnx.Optimizer(model, tx, wrt=fnnx.Param)
        before = jax.tree.map(
            np.asarray, fnnx.to_pure_dict(fnnx.state(model, fnnx.Param))
        )
        grads = fnnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 5))) ** 2))(model)
        optimizer.update(model, grads)
        after = fnnx.to_pure_dict(fnnx.state(model, fnnx.Param))
        np.testing.assert_array_equal(
            after["first"]["kernel"], before["first"]["kernel"]
        )
        np.testing.assert_array_equal(
            after["hidden"]["bias"], before["hidden"]["bias"]
        )
        g = fnnx.to_pure_dict(grads)["hidden"]["latent_kernel"]
        np.testing.assert_allclose(
            after["hidden"]["latent_kernel"],
            before["hidden"]["latent_kernel"] - g,
            rtol=1e-6,
        )

    def test_partition_errors(self):
        params = {"dense": {"kernel": jnp.ones((2, 2))}}
        with self.assertRaisesRegex(ValueError, "no parameter is labelled"):
            optim.binary_partition(optax.sgd(1.0), optax.sgd(1.0), params)
        with self.assertRaisesRegex(ValueError, "belong to no group"):
            optim.binary_partition(
                optax.sgd(1.0),
                optax.sgd(1.0),
                labels={"dense": {"kernel": "binray"}},
            )
        with self.assertRaisesRegex(ValueError, "exactly one"):
            optim.binary_partition(optax.sgd(1.0), optax.sgd(1.0))
        with self.assertRaisesRegex(TypeError, "GradientTransformation"):
            optim.binary_partition("adam", optax.sgd(1.0), params)
        with self.assertRaisesRegex(TypeError, "not a function"):
            optim.binary_partition(
                optax.sgd(1.0), optax.sgd(1.0), labels=optim.binary_param_labels
            )

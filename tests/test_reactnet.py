"""ReActNet: RSign and RPReLU (values, gradients, linen = nnx), the model,
and its export with the learned thresholds folded."""

import os
import shutil
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx, traverse_util

import bnnjax
from bnnjax import export as export_lib
from bnnjax.models import linen as mlinen
from bnnjax.models import nnx as mnnx
from bnnjax.nn import LATENT_KERNEL
from bnnjax.nn import functional as F
from bnnjax.nn import linen as blinen
from bnnjax.nn import nnx as bnnx

LOGIT_RTOL = 1e-5  # max |packed - float| / max |float|, as test_export

# RSign: x - beta = [[0.25, -0.5], [0, 0.5], [-0.75, 2.5]]; ApproxSign's
# slope 2 - 2|z| (0 beyond |z| = 1) is [[1.5, 1], [2, 1], [0.5, 0]].
RSIGN_X = np.array([[0.5, -1.0], [0.25, 0.0], [-0.5, 2.0]], np.float32)
RSIGN_BETA = np.array([0.25, -0.5], np.float32)
RSIGN_Y = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], np.float32)
WEIGHTS = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
RSIGN_DX = np.array([[1.5, 2.0], [6.0, 4.0], [2.5, 0.0]], np.float32)
RSIGN_DBETA = np.array([-10.0, -6.0], np.float32)  # -(column sums of dx)

# RPReLU: z = x - gamma = [[0.5, -0.5], [-2.5, 1], [0, -1]].
RPRELU_X = np.array([[1.0, -1.0], [-2.0, 0.5], [0.5, -1.5]], np.float32)
RPRELU_GAMMA = np.array([0.5, -0.5], np.float32)
RPRELU_ZETA = np.array([0.25, -1.0], np.float32)
RPRELU_SLOPE = np.array([0.25, 0.5], np.float32)
RPRELU_Y = np.array([[0.75, -1.25], [-0.375, 0.0], [0.25, -1.5]], np.float32)
RPRELU_DX = np.array([[1.0, 1.0], [0.75, 4.0], [5.0, 3.0]], np.float32)
RPRELU_DGAMMA = np.array([-6.75, -8.0], np.float32)
RPRELU_DZETA = np.array([9.0, 12.0], np.float32)
RPRELU_DSLOPE = np.array([-7.5, -7.0], np.float32)  # sum(w * z) where z < 0


def _rsign_loss(x, beta, binarizer=F.RSIGN_BINARIZER):
    return jnp.sum(F.rsign(x, beta, binarizer=binarizer) * WEIGHTS)


def _rprelu_loss(x, gamma, zeta, slope):
    return jnp.sum(F.rprelu(x, gamma, zeta, slope) * WEIGHTS)


class FunctionalTest(parameterized.TestCase):
    def test_rsign_values_and_gradients(self):
        y = F.rsign(RSIGN_X, RSIGN_BETA)
        np.testing.assert_array_equal(y, RSIGN_Y)  # x == beta gives +1
        dx, dbeta = jax.jit(jax.grad(_rsign_loss, argnums=(0, 1)))(
            RSIGN_X, RSIGN_BETA
        )
        np.testing.assert_array_equal(dx, RSIGN_DX)
        np.testing.assert_array_equal(dbeta, RSIGN_DBETA)

    def test_rsign_uses_the_binarizers_surrogate(self):
        # Clipped STE: slope 1 for |x - beta| <= 1, else 0.
        rule = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
        dx, dbeta = jax.grad(_rsign_loss, argnums=(0, 1))(
            RSIGN_X, RSIGN_BETA, rule
        )
        want = WEIGHTS * np.array([[1, 1], [1, 1], [1, 0]], np.float32)
        np.testing.assert_array_equal(dx, want)
        np.testing.assert_array_equal(dbeta, -want.sum(0))

    def test_rsign_is_the_threshold_test(self):
        # sign(x - beta) == (x >= beta), also on ties and tiny differences.
        x = jnp.array([1.0, 1.0 + 2**-23, 1.0 - 2**-24, -0.0, 0.0, 3.0])
        beta = jnp.full((6,), 1.0).at[3:5].set(0.0).at[5].set(-1e30)
        got = F.rsign(x[None], beta)[0]
        np.testing.assert_array_equal(got, np.where(x >= beta, 1.0, -1.0))

    def test_rprelu_values_and_gradients(self):
        args = (RPRELU_X, RPRELU_GAMMA, RPRELU_ZETA, RPRELU_SLOPE)
        np.testing.assert_array_equal(F.rprelu(*args), RPRELU_Y)
        grads = jax.jit(jax.grad(_rprelu_loss, argnums=(0, 1, 2, 3)))(*args)
        for got, want in zip(
            grads,
            (RPRELU_DX, RPRELU_DGAMMA, RPRELU_DZETA, RPRELU_DSLOPE),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)

    def test_vmap_and_dtypes(self):
        x = jax.random.normal(jax.random.key(0), (5, 4, 4, 3))
        beta = jnp.array([0.1, -0.2, 0.3])
        per_example = jax.vmap(lambda v: F.rsign(v, beta))(x)
        np.testing.assert_array_equal(per_example, F.rsign(x, beta))
        p = (beta, -beta, jnp.full((3,), 0.25))
        np.testing.assert_array_equal(
            jax.vmap(lambda v: F.rprelu(v, *p))(x), F.rprelu(x, *p)
        )
        half = x.astype(jnp.bfloat16)
        self.assertEqual(F.rsign(half, beta).dtype, jnp.float32)  # promoted
        self.assertEqual(
            F.rsign(half, beta.astype(jnp.bfloat16)).dtype, jnp.bfloat16
        )
        self.assertEqual(
            F.rprelu(half, *(v.astype(jnp.bfloat16) for v in p)).dtype,
            jnp.bfloat16,
        )
        with jax.numpy_dtype_promotion("strict"):
            self.assertEqual(F.rsign(x, beta).dtype, jnp.float32)
            self.assertEqual(F.rprelu(x, *p).dtype, jnp.float32)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"beta has shape \(3,\)"):
            F.rsign(jnp.ones((2, 4)), jnp.zeros(3))
        with self.assertRaisesRegex(ValueError, "zeta has shape"):
            F.rprelu(jnp.ones((2, 4)), jnp.zeros(4), jnp.zeros(2), jnp.ones(4))
        with self.assertRaisesRegex(TypeError, "binarizer must be a bnnjax"):
            F.rsign(jnp.ones((2, 4)), jnp.zeros(4), binarizer="ste")
        stochastic = bnnjax.Binarizer(surrogate="stochastic", scale=None)
        with self.assertRaisesRegex(ValueError, "pass key="):
            F.rsign(jnp.ones((2, 4)), jnp.zeros(4), binarizer=stochastic)
        got = F.rsign(
            jnp.ones((2, 4)),
            jnp.zeros(4),
            binarizer=stochastic,
            key=jax.random.key(0),
        )
        self.assertTrue(set(np.unique(got)) <= {-1.0, 1.0})


class LayerTest(parameterized.TestCase):
    def test_linen_and_nnx_agree(self):
        x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
        beta = jnp.array([0.2, -0.1, 0.0])
        gamma, zeta = jnp.array([0.1, 0.2, -0.3]), jnp.array([-1.0, 0, 1])
        slope = jnp.array([0.1, 0.25, 0.5])
        rsign = blinen.RSign()
        rprelu = blinen.RPReLU()
        shapes = jax.eval_shape(rsign.init, jax.random.key(0), x)
        self.assertEqual(shapes["params"]["beta"].shape, (3,))
        linen_params = {
            "rsign": {"beta": beta},
            "rprelu": {
                "gamma": gamma,
                "zeta": zeta,
                "negative_slope": slope,
            },
        }
        n_rsign = bnnx.RSign(3, rngs=nnx.Rngs(0))
        n_rprelu = bnnx.RPReLU(3, rngs=nnx.Rngs(0))
        n_rsign.beta[...] = beta
        n_rprelu.gamma[...], n_rprelu.zeta[...] = gamma, zeta
        n_rprelu.negative_slope[...] = slope

        def linen_loss(params, x):
            h = rprelu.apply({"params": params["rprelu"]}, x)
            y = rsign.apply({"params": params["rsign"]}, h, progress=0.5)
            return jnp.sum(y * x)

        def nnx_loss(layers, x):
            a, b = layers
            return jnp.sum(a(b(x), progress=0.5) * x)

        want, want_grads = jax.jit(jax.value_and_grad(linen_loss))(
            linen_params, x
        )
        got, got_grads = nnx.jit(nnx.value_and_grad(nnx_loss))(
            (n_rsign, n_rprelu), x
        )
        self.assertEqual(float(want), float(got))
        got_rsign, got_rprelu = got_grads
        np.testing.assert_array_equal(
            want_grads["rsign"]["beta"], got_rsign.beta[...]
        )
        for name in ("gamma", "zeta", "negative_slope"):
            np.testing.assert_array_equal(
                want_grads["rprelu"][name], getattr(got_rprelu, name)[...]
            )
        self.assertGreater(float(jnp.abs(want_grads["rsign"]["beta"]).sum()), 0)

    def test_defaults(self):
        variables = blinen.RPReLU().init(jax.random.key(0), jnp.ones((1, 4)))
        np.testing.assert_array_equal(
            variables["params"]["negative_slope"], np.full(4, 0.25)
        )
        np.testing.assert_array_equal(variables["params"]["gamma"], 0)
        layer = bnnx.RPReLU(4, negative_slope_init=0.1, rngs=nnx.Rngs(0))
        np.testing.assert_allclose(layer.negative_slope[...], 0.1)
        self.assertIs(bnnx.RSign(4, rngs=nnx.Rngs(0)).binarizer.scale, None)
        # Zero thresholds: plain sign, +1 at 0.
        np.testing.assert_array_equal(
            bnnx.RSign(2, rngs=nnx.Rngs(0))(jnp.array([[0.0, -1e-9]])),
            [[1.0, -1.0]],
        )

    def test_stochastic_streams(self):
        rule = bnnjax.Binarizer(surrogate="stochastic", scale=None)
        x = jnp.zeros((64, 4))
        layer = blinen.RSign(binarizer=rule)
        variables = layer.init(
            {"params": jax.random.key(0), "binarize": jax.random.key(0)},
            x[:1],
        )
        with self.assertRaisesRegex(ValueError, "'binarize' rng stream"):
            layer.apply(variables, x)
        a, b = (
            layer.apply(variables, x, rngs={"binarize": jax.random.key(s)})
            for s in (1, 2)
        )
        self.assertFalse(np.array_equal(a, b))
        n_layer = bnnx.RSign(4, binarizer=rule, rngs=nnx.Rngs(0))
        self.assertFalse(np.array_equal(n_layer(x), n_layer(x)))

    def test_errors(self):
        with self.assertRaisesRegex(TypeError, "binarizer must be a bnnjax"):
            blinen.RSign(binarizer=bnnjax.SteSurrogate())
        with self.assertRaisesRegex(TypeError, "binarizer must be a bnnjax"):
            bnnx.RSign(3, binarizer="ste", rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "num_features must be"):
            bnnx.RPReLU(0, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "negative_slope_init must"):
            blinen.RPReLU(negative_slope_init=float("nan"))
        with self.assertRaisesRegex(TypeError, "rngs must be an nnx.Rngs"):
            bnnx.RSign(3, rngs=None)
        with self.assertRaisesRegex(ValueError, r"beta has shape \(3,\)"):
            bnnx.RSign(3, rngs=nnx.Rngs(0))(jnp.ones((2, 4)))


class ModelTest(parameterized.TestCase):
    def test_reactnet_a_layout(self):
        model = nnx.eval_shape(lambda: mnnx.reactnet_a(rngs=nnx.Rngs(0)))
        self.assertLen(model.blocks, 13)
        self.assertEqual(
            [(b.in_features, b.out_features, b.strides) for b in model.blocks],
            [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2)]
            + [(256, 256, 1), (256, 512, 2)]
            + [(512, 512, 1)] * 5
            + [(512, 1024, 2), (1024, 1024, 1)],
        )
        self.assertEqual(model.stem_conv.kernel.shape, (3, 3, 3, 32))
        self.assertEqual(model.stem_conv.strides, 2)
        self.assertEqual(model.head.kernel.shape, (1024, 1000))
        self.assertLen(model.blocks[1].conv_1x1, 2)
        self.assertLen(model.blocks[2].conv_1x1, 1)
        self.assertIsNone(model.blocks[0].conv_3x3.input_binarizer)
        # Binary weights of ReActNet-A: per block 9 C^2 (3x3) + C C' (1x1).
        latent = sum(
            v.size for v in jax.tree.leaves(nnx.state(model, bnnx.LatentParam))
        )
        blocks = [(b.in_features, b.out_features) for b in model.blocks]
        self.assertEqual(latent, sum(9 * c * c + c * o for c, o in blocks))

    @parameterized.parameters(
        ((2, 28, 28, 1), 0.25, ((28, 28), (14, 14), (7, 7), (4, 4))),
        ((2, 32, 32, 3), 0.125, ((32, 32), (16, 16), (8, 8), (4, 4))),
    )
    def test_small_variant_shapes(self, shape, multiplier, maps):
        model = mlinen.reactnet_small(width_multiplier=multiplier)
        x = jnp.zeros(shape)
        out, variables = jax.eval_shape(
            lambda k: model.init_with_output(
                k,
                x,
                train=False,
                capture_intermediates=lambda m, method: (
                    isinstance(m, mlinen.ReActBlock) and method == "__call__"
                ),
            ),
            jax.random.key(0),
        )
        self.assertEqual(out.shape, (2, 10))
        stem = round(32 * multiplier)
        got = variables["intermediates"]
        # The last block of each stage: its map and channels.
        for i, stage_map, channels in zip(
            (0, 2, 4, 6), maps, (2, 4, 8, 16), strict=True
        ):
            y = got[f"blocks_{i}"]["__call__"][0]
            self.assertEqual(y.shape[1:], (*stage_map, stem * channels))
        params = variables["params"]
        self.assertEqual(
            params["stem_conv"]["kernel"].shape, (3, 3, shape[-1], stem)
        )
        self.assertEqual(
            params["blocks_1"]["conv_1x1_1"][LATENT_KERNEL].shape,
            (1, 1, 2 * stem, 2 * stem),
        )
        self.assertEqual(
            sorted(params["blocks_0"]["rprelu_1x1"]),
            ["gamma", "negative_slope", "zeta"],
        )

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "width_multiplier must be"):
            mlinen.reactnet_small(width_multiplier=0.0)
        with self.assertRaisesRegex(ValueError, "width_multiplier must be"):
            mnnx.reactnet_small(width_multiplier=-1.0, rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "stage_sizes must be"):
            mlinen.ReActNet(stage_sizes=())
        with self.assertRaisesRegex(TypeError, "activation_binarizer must"):
            mnnx.ReActNet(activation_binarizer="ste", rngs=nnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "keeps or doubles"):
            mnnx.ReActBlock(4, 12, rngs=nnx.Rngs(0))
        block = mlinen.ReActBlock(12)
        with self.assertRaisesRegex(ValueError, "keeps or doubles"):
            jax.eval_shape(
                lambda k: block.init(k, jnp.zeros((1, 4, 4, 4)), train=False),
                jax.random.key(0),
            )
        model = nnx.eval_shape(
            lambda: mnnx.reactnet_small(in_features=1, rngs=nnx.Rngs(0))
        )
        with self.assertRaisesRegex(ValueError, "in_features=1"):
            model(jnp.zeros((1, 28, 28, 3)))

    def test_one_training_step_lowers_the_loss(self):
        # The RSign thresholds, RPReLU parameters and latent kernels learn.
        model = mlinen.reactnet_small(
            width_multiplier=1 / 8, stage_sizes=(1, 1)
        )
        x = jax.random.normal(jax.random.key(1), (16, 12, 12, 1))
        labels = jnp.arange(16) % 10
        variables = model.init(jax.random.key(0), x, train=False)
        # Move every RSign threshold off zero so each one matters.
        flat = traverse_util.flatten_dict(variables["params"])
        flat = {k: v + 0.05 if k[-1] == "beta" else v for k, v in flat.items()}
        params = traverse_util.unflatten_dict(flat)

        def loss(params):
            logits, _ = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.mean(
                jax.nn.logsumexp(logits, -1)
                - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
            )

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        for key, g in traverse_util.flatten_dict(grads).items():
            if key[-1] in ("beta", "gamma", "zeta", "negative_slope"):
                self.assertGreater(float(jnp.abs(g).sum()), 0, key)
        stepped = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
        self.assertLess(float(jax.jit(loss)(stepped)), float(value))


def _random_like(tree, seed=0):
    """Random weights, statistics, thresholds and shifts of ``tree``."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1]
        if name == "var":
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif name == "negative_slope":
            value = rng.uniform(-0.5, 0.5, leaf.shape)
        elif name == "scale":
            value = rng.normal(size=leaf.shape)  # negative gammas too
        else:  # kernels, means, biases, beta, gamma, zeta: all non-zero
            value = 0.5 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    flat = traverse_util.flatten_dict(tree)
    return traverse_util.unflatten_dict(
        {k: fill(k, v) for k, v in flat.items()}
    )


def _assert_same_predictions(test, got, want):
    got, want = np.asarray(got), np.asarray(want)
    test.assertEqual(got.shape, want.shape)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    rel = np.abs(got - want).max() / np.abs(want).max()
    test.assertLessEqual(rel, LOGIT_RTOL)


class _MyReActCnn(nn.Module):
    """A model of your own built from the ReActNet layers."""

    @nn.compact
    def __call__(self, x, *, train):
        x = nn.Conv(8, (3, 3), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        for _ in range(2):
            h = blinen.RSign()(x)
            h = blinen.BinaryConv(8, (3, 3), use_bias=False)(h)
            h = nn.BatchNorm(use_running_average=not train)(h)
            x = blinen.RPReLU()(h + x)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


class ExportTest(parameterized.TestCase):
    def _tmp(self, name):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        return os.path.join(tmp, name)

    @parameterized.parameters(
        ((8, 28, 28, 1), 0.0), ((8, 32, 32, 3), -1.0), ((4, 13, 13, 3), 1.0)
    )
    def test_reference_program_predicts_as_float_model(self, shape, pad):
        model = mlinen.reactnet_small(
            width_multiplier=1 / 8, stage_sizes=(1, 2, 1), pad_value=pad
        )
        x = jax.random.normal(jax.random.key(1), shape)
        variables = _random_like(
            jax.eval_shape(
                lambda k: model.init(k, x, train=False), jax.random.key(0)
            )
        )
        path = self._tmp("reactnet.bnn")
        export_lib.export_model(model, variables, path)
        packed = export_lib.load(path)
        self.assertEqual(packed.architecture, "ReActNet")
        ops = packed.header["program"]["ops"]
        # Every RSign is a threshold at its beta; every binary conv runs
        # on bits, none on reals.
        rsigns = [k for k in packed.arrays if "rsign" in k]
        self.assertLen(rsigns, 2 * 4 * 2)  # 4 blocks, 2 RSigns, 2 arrays
        np.testing.assert_array_equal(
            packed.arrays["blocks_1/rsign_1x1/threshold"],
            variables["params"]["blocks_1"]["rsign_1x1"]["beta"],
        )
        self.assertEqual(
            {o["input"] for o in ops if o["op"] == "binary_conv"}, {"bits"}
        )
        self.assertEqual(sum(o["op"] == "rprelu" for o in ops), 8)
        self.assertEqual(sum(o["op"] == "concat" for o in ops), 3)
        want = jax.jit(lambda v, x: model.apply(v, x, train=False))(
            variables, x
        )
        got = export_lib.predict(packed, x)
        _assert_same_predictions(self, got, want)
        # RSign folded into x >= beta is exact; the real ops repeat the
        # float model's, so at these sizes the logits agree bit for bit.
        np.testing.assert_array_equal(got, want)

    def test_nnx_model_exports_like_linen(self):
        model = mnnx.reactnet_small(
            in_features=1,
            width_multiplier=1 / 8,
            stage_sizes=(1, 1),
            rngs=nnx.Rngs(0),
        )
        for seed, kind in enumerate((nnx.Param, nnx.BatchStat)):
            state = nnx.state(model, kind)
            nnx.replace_by_pure_dict(
                state, _random_like(nnx.to_pure_dict(state), seed=seed)
            )
            nnx.update(model, state)
        model.eval()
        x = jax.random.normal(jax.random.key(2), (8, 28, 28, 1))
        packed = export_lib.pack_model(model)
        self.assertEqual(packed.header["format_version"], 1)
        self.assertEqual(packed.config["width_multiplier"], 1 / 8)
        want = nnx.jit(lambda m, x: m(x))(model, x)
        got = export_lib.predict(packed, x)
        _assert_same_predictions(self, got, want)
        np.testing.assert_array_equal(got, want)

    def test_rejects_scaled_activations(self):
        model = mlinen.reactnet_small(
            width_multiplier=1 / 8,
            stage_sizes=(1,),
            activation_binarizer=bnnjax.Binarizer(),
        )
        x = jnp.zeros((1, 8, 8, 1))
        variables = model.init(jax.random.key(0), x, train=False)
        with self.assertRaisesRegex(ValueError, "sign activations"):
            export_lib.pack_model(model, variables)

    def test_model_of_your_own(self):
        model = _MyReActCnn()
        x = jax.random.normal(jax.random.key(3), (8, 10, 10, 3))
        variables = _random_like(
            jax.eval_shape(
                lambda k: model.init(k, x, train=False), jax.random.key(0)
            )
        )
        packed = export_lib.pack_model(
            model,
            variables,
            example_inputs=x[:1],
            call_kwargs={"train": False},
        )
        self.assertEqual(packed.header["format_version"], 2)
        stored = packed.header["model"]["variables"]
        self.assertIn("variables/params/RSign_0/beta", stored)
        self.assertIn("variables/params/RPReLU_1/negative_slope", stored)
        want = model.apply(variables, x, train=False)
        got = export_lib.predict(packed, x, model=model)
        _assert_same_predictions(self, got, want)


if __name__ == "__main__":
    absltest.main()

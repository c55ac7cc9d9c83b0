"""Tests of bnnjax.summary: exact byte counts on small models, by hand."""

import json

import flax.linen as fnn
import jax
import jax.numpy as jnp
from absl.testing import absltest
from flax import nnx as fnnx

import bnnjax
from bnnjax.nn import linen as bnn
from bnnjax.nn import nnx as bnx


class _Linen(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        x = fnn.Dense(16, name="first")(x)  # 10*16 + 16 real
        x = bnn.BinaryDense(12, use_bias=False, name="hidden")(x)  # 16*12 bin
        x = fnn.BatchNorm(use_running_average=True, name="bn")(x)  # 4*12 real
        x = x.reshape(-1, 2, 2, 3)
        return bnn.BinaryConv(4, (3, 3), name="conv")(x)  # 3*3*3*4 bin + 4


class SummaryTest(absltest.TestCase):
    def test_linen_exact_numbers(self):
        variables = _Linen().init(jax.random.key(0), jnp.ones((1, 10)))
        s = bnnjax.summary(variables)
        rows = {(r.layer, r.name): r for r in s.rows}
        hidden = rows[("hidden", "latent_kernel")]
        self.assertEqual(
            (hidden.kind, hidden.count, hidden.deploy_bits), ("binary", 192, 1)
        )
        self.assertEqual(hidden.train_bytes, 192 * 4)
        self.assertEqual(hidden.deploy_bytes, 12 * 2)  # 16 inputs -> 2 bytes
        conv = rows[("conv", "latent_kernel")]
        # 3 input channels pad to one byte per (h, w, out): 3*3*4 bytes.
        self.assertEqual((conv.count, conv.deploy_bytes), (108, 36))
        self.assertEqual(rows[("bn", "mean")].collection, "batch_stats")
        self.assertEqual(rows[("first", "kernel")].deploy_bytes, 160 * 4)
        self.assertEqual(s.binary_params, 192 + 108)
        real = 160 + 16 + 12 * 4 + 4
        self.assertEqual(s.real_params, real)
        self.assertEqual(s.train_bytes, (300 + real) * 4)
        self.assertEqual(s.float32_bytes, (300 + real) * 4)
        self.assertEqual(s.deploy_bytes, 24 + 36 + real * 4)
        self.assertAlmostEqual(s.compression_ratio, 2112 / 972)
        text = str(s)
        self.assertIn("hidden", text)
        self.assertIn("compression: 2.17x", text)
        self.assertEqual(s.to_dict()["deploy_bytes"], 972)

    def test_nnx_matches_linen_for_the_same_layers(self):
        class Model(fnnx.Module):
            def __init__(self, rngs):
                self.first = fnnx.Linear(10, 16, rngs=rngs)
                self.hidden = bnx.BinaryLinear(
                    16, 12, use_bias=False, rngs=rngs
                )
                self.bn = fnnx.BatchNorm(12, rngs=rngs)

        s = bnnjax.summary(Model(fnnx.Rngs(0)))
        self.assertEqual(s.binary_params, 192)
        self.assertEqual(s.real_params, 160 + 16 + 48)
        self.assertEqual(s.deploy_bytes, 24 + (160 + 16 + 48) * 4)
        kinds = {(r.layer, r.name): (r.kind, r.collection) for r in s.rows}
        self.assertEqual(
            kinds[("hidden", "latent_kernel")], ("binary", "params")
        )
        self.assertEqual(kinds[("bn", "var")], ("real", "batch_stats"))

    def test_large_binary_dense_approaches_32x(self):
        params = {"d": {"latent_kernel": jnp.zeros((1024, 1024))}}
        s = bnnjax.summary(params)
        self.assertEqual(s.deploy_bytes, 1024 * 1024 // 8)
        self.assertEqual(s.compression_ratio, 32.0)

    def test_bfloat16_training_bytes(self):
        params = {"d": {"latent_kernel": jnp.zeros((8, 4), jnp.bfloat16)}}
        row = bnnjax.summary(params).rows[0]
        self.assertEqual((row.train_bytes, row.deploy_bytes), (64, 4))
        self.assertEqual(row.float32_bytes, 128)

    def test_explicit_labels_for_kernels_named_kernel(self):
        params = {"d": {"kernel": jnp.zeros((16, 4)), "bias": jnp.zeros(4)}}
        default = bnnjax.summary(params)
        self.assertEqual(default.binary_params, 0)
        labelled = bnnjax.summary(
            params, labels={"d": {"kernel": "binary", "bias": "real"}}
        )
        self.assertEqual(labelled.binary_params, 64)
        self.assertEqual(labelled.deploy_bytes, 4 * 2 + 16)

    def test_errors(self):
        params = {"d": {"kernel": jnp.zeros((16, 4))}}
        with self.assertRaisesRegex(ValueError, "not 'binary' or 'real'"):
            bnnjax.summary(params, labels={"d": {"kernel": "bits"}})
        with self.assertRaisesRegex(ValueError, "do not match"):
            bnnjax.summary(params, labels={"e": "real"})
        with self.assertRaisesRegex(ValueError, "rank >= 2"):
            bnnjax.summary({"b": jnp.zeros(3)}, labels={"b": "binary"})
        with self.assertRaisesRegex(TypeError, "linen variables"):
            bnnjax.summary([1, 2, 3])


if __name__ == "__main__":
    absltest.main()


class SummaryCliTest(absltest.TestCase):
    def _run(self, argv):
        import contextlib
        import io

        from bnnjax import cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(argv)
        return status, out.getvalue(), err.getvalue()

    def test_mlp_numbers_from_the_layer_list(self):
        status, out, _ = self._run(
            ["summary", "--hidden", "64,32", "--num-classes", "5", "--json"]
        )
        self.assertEqual(status, 0)
        result = json.loads(out)
        # 784-64-32-5, all kernels binary (binary head); BN after each.
        self.assertEqual(result["binary_params"], 784 * 64 + 64 * 32 + 32 * 5)
        self.assertEqual(result["real_params"], 4 * (64 + 32 + 5))
        packed = 64 * 98 + 32 * 8 + 5 * 4  # ceil(in / 8) bytes per output
        self.assertEqual(result["deploy_bytes"], packed + 4 * 4 * (64 + 32 + 5))

    def test_reactnet_binary_weights_by_hand(self):
        status, out, _ = self._run(["summary", "--model", "reactnet", "--json"])
        self.assertEqual(status, 0)
        # Blocks (in, out) of ReActNet-A's small layout: a binary 3x3 conv
        # in -> in, and 1x1 convs in -> out (two in -> in when doubling).
        blocks = [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
        blocks += [(256, 512), (512, 512)]
        expected = sum(9 * i * i + i * o for i, o in blocks)
        self.assertEqual(json.loads(out)["binary_params"], expected)

    def test_text_table_and_bad_config(self):
        status, out, _ = self._run(["summary", "--model", "resnet20"])
        self.assertEqual(status, 0)
        self.assertIn("compression:", out)
        self.assertIn("stem_conv", out)
        status, _, err = self._run(
            ["summary", "--model", "cnn", "--no-binary-activations"]
        )
        self.assertEqual(status, 2)
        self.assertIn("binary_activations", err)

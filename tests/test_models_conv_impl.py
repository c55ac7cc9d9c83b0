"""``conv_impl`` reaches every binary convolution of the CNN, ResNet and ReActNet.

``BinaryNetCNN``, ``BiRealResNet`` and ``ReActNet`` (linen and nnx, the
latter two through their blocks) take ``conv_impl`` (``"auto"``, ``"xla"``, ``"patches"``), check it when
built and pass it to every :class:`~bnnjax.nn.linen.BinaryConv` they build;
their real stem and shortcut convolutions stay ``nn.Conv``/``nnx.Conv``.
Checked on tiny models with binary activations (``+-1`` operands, so every
sum is exact):

* an unknown value raises ``ValueError`` naming the accepted ones;
* ``"xla"`` and ``"patches"`` give the same logits bit for bit;
* the forward jaxprs differ by exactly one ``conv_general_dilated`` per
  binary convolution: ``"xla"`` computes each with it, ``"patches"`` as a
  matrix product; the real convolutions use it either way.

``BinaryNetCNN``'s first convolution is binary too but sees the real
pixels, so there the two formulations agree up to float rounding: its
logits are compared with a tolerance, and the jaxprs must differ by every
convolution (it has no real one).

An exported model's header stores the field in its config, and a header
without it (files written before the field existed) still loads and runs.
"""

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from bnnjax import export as export_lib
from bnnjax.models import linen as mlinen
from bnnjax.models import nnx as mnnx

XLA_CONV = "conv_general_dilated"
ACCEPTED = "expected one of 'auto', 'xla', 'patches'"
SHAPE = (2, 8, 8, 1)  # 8x8: ReActNet's three stride-2 stages end at 1x1

_CNN = {
    "conv_features": (4, 8),
    "pool_after": (1,),
    "dense_features": (8,),
}

# name: (linen factory, nnx factory) of a tiny model.
MODELS = {
    "BinaryNetCNN": (
        lambda **kw: mlinen.BinaryNetCNN(**_CNN, **kw),
        lambda **kw: mnnx.BinaryNetCNN(
            in_features=1, input_size=SHAPE[1:3], rngs=nnx.Rngs(0), **_CNN, **kw
        ),
    ),
    "BiRealResNet": (
        lambda **kw: mlinen.bireal_resnet20(width_multiplier=0.25, **kw),
        lambda **kw: mnnx.bireal_resnet20(
            in_features=1, width_multiplier=0.25, rngs=nnx.Rngs(0), **kw
        ),
    ),
    "ReActNet": (
        lambda **kw: mlinen.reactnet_small(width_multiplier=1 / 8, **kw),
        lambda **kw: mnnx.reactnet_small(
            in_features=1, width_multiplier=1 / 8, rngs=nnx.Rngs(0), **kw
        ),
    ),
}


def _inputs():
    return jax.random.normal(jax.random.key(1), SHAPE)


def _random(shapes):
    """Random values for a tree of shapes, drawn with numpy: eager jax
    initializers compile once per shape, which made up most of the time."""
    rng = np.random.default_rng(0)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    values = []
    for path, leaf in leaves:
        value = rng.normal(size=leaf.shape).astype(leaf.dtype)
        if "'var'" in jax.tree_util.keystr(path):
            value = np.abs(value) + 0.5  # batch-norm variances
        values.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, values)


def _binary_convs(shapes):
    """Number of binary convolutions: their 4-D latent kernels."""
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    return sum(
        1
        for path, leaf in leaves
        if "latent_kernel" in jax.tree_util.keystr(path)
        and len(leaf.shape) == 4
    )


def _linen(name, conv_impl):
    """(forward function, its variables, binary convolutions)."""
    model = MODELS[name][0](conv_impl=conv_impl)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), _inputs(), train=False)
    )

    def forward(variables, x):
        return model.apply(variables, x, train=False)

    return forward, _random(shapes), _binary_convs(shapes["params"])


def _nnx(name, conv_impl):
    model = nnx.eval_shape(lambda: MODELS[name][1](conv_impl=conv_impl))
    model.eval()
    graphdef, shapes = nnx.split(model)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    params = nnx.state(model, nnx.Param)
    return forward, _random(shapes), _binary_convs(params)


BUILD = {"linen": _linen, "nnx": _nnx}


class ConvImplTest(parameterized.TestCase):
    @parameterized.product(name=sorted(MODELS), api=("linen", "nnx"))
    def test_rejects_unknown_conv_impl(self, name, api):
        factory = MODELS[name][0 if api == "linen" else 1]
        with self.assertRaisesRegex(ValueError, ACCEPTED):
            factory(conv_impl="fast")

    @parameterized.product(
        name=("BiRealResNet", "ReActNet"), api=("linen", "nnx")
    )
    def test_formulations_agree_bit_for_bit(self, name, api):
        x = _inputs()
        outputs, counts = {}, {}
        for impl in ("xla", "patches"):
            forward, variables, binary = BUILD[api](name, impl)
            counts[impl] = str(jax.make_jaxpr(forward)(variables, x)).count(
                XLA_CONV
            )
            outputs[impl] = np.asarray(jax.jit(forward)(variables, x))
        self.assertGreater(binary, 0)
        # Every binary convolution leaves XLA's convolution; the real stem
        # (and shortcut) convolutions keep it.
        self.assertGreater(counts["patches"], 0)
        self.assertEqual(counts["xla"] - counts["patches"], binary)
        self.assertEqual(outputs["xla"].shape, (SHAPE[0], 10))
        np.testing.assert_array_equal(outputs["xla"], outputs["patches"])

    @parameterized.parameters("linen", "nnx")
    def test_cnn_formulations_agree(self, api):
        x = _inputs()
        outputs, counts = {}, {}
        for impl in ("xla", "patches"):
            forward, variables, binary = BUILD[api]("BinaryNetCNN", impl)
            counts[impl] = str(jax.make_jaxpr(forward)(variables, x)).count(
                XLA_CONV
            )
            outputs[impl] = np.asarray(jax.jit(forward)(variables, x))
        self.assertEqual(binary, 2)
        self.assertEqual(counts, {"xla": 2, "patches": 0})
        self.assertEqual(outputs["xla"].shape, (SHAPE[0], 10))
        np.testing.assert_allclose(
            outputs["xla"], outputs["patches"], rtol=1e-5, atol=1e-5
        )


class ExportHeaderTest(absltest.TestCase):
    def test_header_config_with_and_without_conv_impl(self):
        model = mlinen.reactnet_small(
            width_multiplier=1 / 8, stage_sizes=(1, 1), conv_impl="xla"
        )
        x = _inputs()
        variables = _random(
            jax.eval_shape(
                lambda: model.init(jax.random.key(0), x, train=False)
            )
        )
        packed = export_lib.pack_model(model, variables)
        self.assertEqual(packed.config["conv_impl"], "xla")
        # A header written before the field existed.
        header = dict(packed.header)
        header["config"] = {
            k: v for k, v in packed.config.items() if k != "conv_impl"
        }
        old = export_lib.PackedModel(header=header, arrays=packed.arrays)
        outputs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for what, source in (("new", packed), ("old", old)):
                path = os.path.join(tmp, f"{what}.bnnjax")
                export_lib.save(source, path)
                loaded = export_lib.load(path)
                self.assertEqual(
                    "conv_impl" in loaded.config, what == "new", what
                )
                outputs[what] = np.asarray(export_lib.predict(loaded, x))
        self.assertEqual(outputs["new"].shape, (SHAPE[0], 10))
        np.testing.assert_array_equal(outputs["old"], outputs["new"])


if __name__ == "__main__":
    absltest.main()

"""``residuals`` reaches every binary layer of the layers and models.

Each Flax layer and reference model takes ``residuals`` (``"auto"``,
``"packed"``, ``"unpacked"``), checks it when built, and passes it to
:func:`bnnjax.nn.functional.binary_dense`/``binary_conv`` in every binary
layer it builds (the first layer on real inputs included). Checked three
ways on tiny shapes with ``+-1`` activations:

* every call of :func:`bnnjax.nn._residuals.packed_residuals_apply` (the
  functional layers' only use of the policy) receives the value given;
* the parameter gradients of a sum-of-outputs loss are the same bit for
  bit either way;
* the gradient's jaxpr differs, and the packed one has more
  ``optimization_barrier`` primitives: the backward pass of a packed
  product (``product_with_residuals``) puts one before unpacking. The
  clipped-STE activations' own barriers appear in both, so the test
  compares counts rather than asking for none.
"""

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

import bnnjax
from bnnjax.models import linen as models_linen
from bnnjax.models import nnx as models_nnx
from bnnjax.nn import _residuals
from bnnjax.nn import linen as nn_linen
from bnnjax.nn import nnx as nn_nnx

ACT = bnnjax.Binarizer(surrogate="clipped_ste", scale=None)
MARKER = "optimization_barrier"
ACCEPTED = "expected one of auto, packed, unpacked"

# Tiny layouts: every kind of binary layer each model builds, once.
_RESNET = {
    "stage_sizes": (1,),
    "stage_features": (4,),
    "stem_features": 4,
    "stem_kernel_size": 3,
    "stem_strides": 1,
    "stem_max_pool": False,
    "num_classes": 3,
}
_CNN = {
    "conv_features": (4, 4),
    "pool_after": (1,),
    "dense_features": (8,),
    "num_classes": 3,
}
_REACTNET = {
    "stage_sizes": (1,),
    "stem_features": 4,
    "stem_strides": 1,
    "num_classes": 3,
}

# name: (builder of a linen module, input shape, model call kwargs)
LINEN = {
    "BinaryDense": (
        lambda **kw: nn_linen.BinaryDense(4, input_binarizer=ACT, **kw),
        (2, 8),
        {},
    ),
    "BinaryConv": (
        lambda **kw: nn_linen.BinaryConv(
            4, (3, 3), input_binarizer=ACT, pad_value=-1.0, **kw
        ),
        (1, 5, 5, 3),
        {},
    ),
    "BinaryMLP": (
        lambda **kw: models_linen.BinaryMLP(
            hidden=(8, 8), num_classes=3, activation_binarizer=ACT, **kw
        ),
        (2, 4, 4, 1),
        {"train": False},
    ),
    "BinaryNetCNN": (
        lambda **kw: models_linen.BinaryNetCNN(
            **_CNN, activation_binarizer=ACT, **kw
        ),
        (2, 4, 4, 1),
        {"train": False},
    ),
    "BiRealBlock": (
        lambda **kw: models_linen.BiRealBlock(
            4, activation_binarizer=ACT, **kw
        ),
        (2, 4, 4, 4),
        {"train": False},
    ),
    "BiRealResNet": (
        lambda **kw: models_linen.BiRealResNet(
            **_RESNET, activation_binarizer=ACT, **kw
        ),
        (2, 4, 4, 1),
        {"train": False},
    ),
    "ReActBlock": (
        lambda **kw: models_linen.ReActBlock(
            8, 2, activation_binarizer=ACT, **kw
        ),
        (2, 4, 4, 4),
        {"train": False},
    ),
    "ReActNet": (
        lambda **kw: models_linen.ReActNet(
            **_REACTNET, activation_binarizer=ACT, **kw
        ),
        (2, 4, 4, 1),
        {"train": False},
    ),
}

# name: (builder of an nnx module, input shape)
NNX = {
    "BinaryLinear": (
        lambda **kw: nn_nnx.BinaryLinear(
            8, 4, input_binarizer=ACT, rngs=nnx.Rngs(0), **kw
        ),
        (2, 8),
    ),
    "BinaryConv": (
        lambda **kw: nn_nnx.BinaryConv(
            3,
            4,
            (3, 3),
            input_binarizer=ACT,
            pad_value=-1.0,
            rngs=nnx.Rngs(0),
            **kw,
        ),
        (1, 5, 5, 3),
    ),
    "BinaryMLP": (
        lambda **kw: models_nnx.BinaryMLP(
            in_features=16,
            hidden=(8, 8),
            num_classes=3,
            activation_binarizer=ACT,
            rngs=nnx.Rngs(0),
            **kw,
        ),
        (2, 4, 4, 1),
    ),
    "BinaryNetCNN": (
        lambda **kw: models_nnx.BinaryNetCNN(
            in_features=1,
            input_size=(4, 4),
            **_CNN,
            activation_binarizer=ACT,
            rngs=nnx.Rngs(0),
            **kw,
        ),
        (2, 4, 4, 1),
    ),
    "BiRealBlock": (
        lambda **kw: models_nnx.BiRealBlock(
            4, 4, activation_binarizer=ACT, rngs=nnx.Rngs(0), **kw
        ),
        (2, 4, 4, 4),
    ),
    "BiRealResNet": (
        lambda **kw: models_nnx.BiRealResNet(
            in_features=1,
            **_RESNET,
            activation_binarizer=ACT,
            rngs=nnx.Rngs(0),
            **kw,
        ),
        (2, 4, 4, 1),
    ),
    "ReActBlock": (
        lambda **kw: models_nnx.ReActBlock(
            4, 8, 2, activation_binarizer=ACT, rngs=nnx.Rngs(0), **kw
        ),
        (2, 4, 4, 4),
    ),
    "ReActNet": (
        lambda **kw: models_nnx.ReActNet(
            in_features=1,
            **_REACTNET,
            activation_binarizer=ACT,
            rngs=nnx.Rngs(0),
            **kw,
        ),
        (2, 4, 4, 1),
    ),
}


def _inputs(shape):
    x = jax.random.normal(jax.random.key(1), shape)
    return x.at[(0,) * len(shape)].set(0.0)


def _linen_loss(name, residuals):
    """``(loss, params)``: the sum of the outputs as a function of params."""
    build, shape, call = LINEN[name]
    model = build(residuals=residuals)
    x = _inputs(shape)
    variables = model.init(jax.random.key(0), x, **call)

    def loss(params):
        return jnp.sum(model.apply({**variables, "params": params}, x, **call))

    return loss, variables["params"]


def _nnx_loss(name, residuals):
    build, shape = NNX[name]
    model = build(residuals=residuals)
    model.eval()  # batch norm on its running averages, as linen's train=False
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = _inputs(shape)

    def loss(params):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x))

    return loss, params


def _traced(loss, params):
    """Gradients, gradient jaxpr and the policies the layers received."""
    with mock.patch.object(
        _residuals,
        "packed_residuals_apply",
        wraps=_residuals.packed_residuals_apply,
    ) as spy:
        grads = jax.grad(loss)(params)
    seen = [c.args[0] for c in spy.call_args_list]
    return grads, str(jax.make_jaxpr(jax.grad(loss))(params)), seen


class ResidualsPlumbingTest(parameterized.TestCase):
    def _check(self, make_loss):
        runs = {}
        for residuals in ("packed", "unpacked"):
            loss, params = make_loss(residuals)
            runs[residuals] = _traced(loss, params)
        (g_p, jaxpr_p, seen_p), (g_u, jaxpr_u, seen_u) = (
            runs["packed"],
            runs["unpacked"],
        )
        # Every binary layer got the value (none fell back to "auto").
        self.assertNotEmpty(seen_p)
        self.assertEqual(set(seen_p), {"packed"})
        self.assertEqual(set(seen_u), {"unpacked"})
        self.assertLen(seen_u, len(seen_p))
        # Same gradients bit for bit, and not trivially zero.
        leaves_p, leaves_u = jax.tree.leaves(g_p), jax.tree.leaves(g_u)
        self.assertLen(leaves_p, len(leaves_u))
        for a, b in zip(leaves_p, leaves_u, strict=True):
            np.testing.assert_array_equal(a, b)
        self.assertTrue(any(np.any(np.asarray(a) != 0) for a in leaves_p))
        # A different program: the packed products unpack after a barrier.
        self.assertNotEqual(jaxpr_p, jaxpr_u)
        self.assertGreater(jaxpr_p.count(MARKER), jaxpr_u.count(MARKER))

    @parameterized.parameters(*LINEN)
    def test_linen_rejects_unknown(self, name):
        with self.assertRaisesRegex(ValueError, ACCEPTED):
            LINEN[name][0](residuals="bits")

    @parameterized.parameters(*NNX)
    def test_nnx_rejects_unknown(self, name):
        with self.assertRaisesRegex(ValueError, ACCEPTED):
            NNX[name][0](residuals="bits")

    @parameterized.parameters(*LINEN)
    def test_linen_reaches_every_layer(self, name):
        self.assertEqual(LINEN[name][0]().residuals, "auto")
        self._check(lambda r: _linen_loss(name, r))

    @parameterized.parameters(*NNX)
    def test_nnx_reaches_every_layer(self, name):
        self._check(lambda r: _nnx_loss(name, r))


if __name__ == "__main__":
    absltest.main()

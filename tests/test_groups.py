"""Every binary parameter of every reference architecture gets the binary
transform, and nothing else does (linen and nnx)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from flax import nnx as fnnx

import bnnjax
from bnnjax.models import linen as lmodels
from bnnjax.models import nnx as nmodels
from bnnjax.nn import linen as bnn
from bnnjax.nn import nnx as bnx

# (linen model, nnx factory, example input, number of binary kernels from the
# published layer lists)
ARCHITECTURES = {
    # 3 hidden binary dense + binary head.
    "mlp": (
        lambda: lmodels.BinaryMLP(hidden=(64, 64, 64)),
        lambda rngs: nmodels.BinaryMLP(hidden=(64, 64, 64), rngs=rngs),
        (2, 784),
        4,
    ),
    # 6 binary convs + 2 binary FC + binary head.
    "cnn": (
        lambda: lmodels.BinaryNetCNN(width_multiplier=0.125),
        lambda rngs: nmodels.BinaryNetCNN(width_multiplier=0.125, rngs=rngs),
        (2, 32, 32, 3),
        9,
    ),
    # 3 stages x 3 blocks x 2 binary 3x3 convs.
    "resnet20": (
        lmodels.bireal_resnet20,
        lambda rngs: nmodels.bireal_resnet20(rngs=rngs),
        (2, 32, 32, 3),
        18,
    ),
    # 4 stages x 2 blocks x 2 binary 3x3 convs.
    "resnet18": (
        lmodels.bireal_resnet18,
        lambda rngs: nmodels.bireal_resnet18(rngs=rngs),
        (1, 64, 64, 3),
        16,
    ),
}

BINARY_TX = optax.sgd(1.0)  # update = -grad
REAL_TX = optax.set_to_zero()


def _check_routing(test, labels, updates, expected_binary):
    label_leaves = jax.tree.leaves(labels)
    update_leaves = jax.tree.leaves(updates)
    test.assertEqual(label_leaves.count("binary"), expected_binary)
    for label, u in zip(label_leaves, update_leaves, strict=True):
        want = -1.0 if label == "binary" else 0.0
        np.testing.assert_array_equal(np.unique(np.asarray(u)), [want])


class GroupsTest(parameterized.TestCase):
    @parameterized.parameters(*ARCHITECTURES)
    def test_linen_binary_params_get_binary_transform(self, name):
        make, _, shape, expected = ARCHITECTURES[name]
        model = make()
        shapes = jax.eval_shape(
            lambda k: model.init(k, jnp.ones(shape), train=False),
            jax.random.key(0),
        )
        params = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), shapes["params"]
        )
        tx = bnnjax.binary_partition(BINARY_TX, REAL_TX, params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        labels = bnnjax.binary_param_labels(params)
        _check_routing(self, labels, updates, expected)
        # Only latent kernels are binary; they are exactly the kernels of the
        # BinaryDense/BinaryConv modules.
        flat = jax.tree_util.tree_flatten_with_path(labels)[0]
        for path, label in flat:
            is_latent = path[-1].key == bnn.LATENT_KERNEL
            self.assertEqual(label == "binary", is_latent, path)

    @parameterized.parameters(*ARCHITECTURES)
    def test_nnx_binary_params_get_binary_transform(self, name):
        _, make, _, expected = ARCHITECTURES[name]
        model = fnnx.eval_shape(lambda: make(fnnx.Rngs(0)))
        modules = [
            m
            for _, m in fnnx.iter_graph(model)
            if isinstance(m, (bnx.BinaryLinear, bnx.BinaryConv))
        ]
        self.assertLen(modules, expected)
        # What nnx.Optimizer passes to the transform: the Param state's
        # structure with plain arrays as leaves.
        params = jax.tree.map(
            lambda v: jnp.zeros(v.shape, v.dtype),
            fnnx.state(model, fnnx.Param),
            is_leaf=lambda v: isinstance(v, fnnx.Variable),
        )
        labels = bnnjax.binary_param_labels(model)
        tx = bnnjax.binary_partition(BINARY_TX, REAL_TX, model)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        _check_routing(self, labels, updates, expected)

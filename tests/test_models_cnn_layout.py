"""BinaryNetCNN's layout fields and tutorial_cnn: shapes, sizes, errors,
linen = nnx, export."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx as fnnx
from flax import traverse_util

import bnnjax
from bnnjax import export as export_lib
from bnnjax.models import _common
from bnnjax.models import linen as mlinen
from bnnjax.models import nnx as mnnx
from bnnjax.nn import LATENT_KERNEL

# +-1 kernels: with +-1 inputs every output is an integer of known parity.
SIGN_KERNEL = bnnjax.Binarizer(surrogate="ste", scale=None)

# BinaryNetCNN() at width_multiplier=0.125 on 32x32x3, written out:
# convolutions 16, 16, 32, 32, 64, 64; pools after 1, 3, 5 (32 -> 4);
# dense 4 * 4 * 64 = 1024 -> 128 -> 128 -> 10.
DEFAULT_KERNELS = {
    "conv_0": (3, 3, 3, 16),
    "conv_1": (3, 3, 16, 16),
    "conv_2": (3, 3, 16, 32),
    "conv_3": (3, 3, 32, 32),
    "conv_4": (3, 3, 32, 64),
    "conv_5": (3, 3, 64, 64),
    "dense_0": (1024, 128),
    "dense_1": (128, 128),
    "head": (128, 10),
}
DEFAULT_NORMS = {
    "conv_norm_0": 16,
    "conv_norm_1": 16,
    "conv_norm_2": 32,
    "conv_norm_3": 32,
    "conv_norm_4": 64,
    "conv_norm_5": 64,
    "dense_norm_0": 128,
    "dense_norm_1": 128,
    "head_norm": 10,
}
# tutorial_cnn() on 28x28x1: 28 -> 26 -> 13 -> 11 -> 5 -> 3, 3 * 3 * 64.
TUTORIAL_KERNELS = {
    "conv_0": (3, 3, 1, 32),
    "conv_1": (3, 3, 32, 64),
    "conv_2": (3, 3, 64, 64),
    "dense_0": (576, 64),
    "head": (64, 10),
}
TUTORIAL_NORMS = {
    "conv_norm_0": 32,
    "conv_norm_1": 64,
    "conv_norm_2": 64,
    "dense_norm_0": 64,
    "head_norm": 10,
}


def _expected_variables(kernels, norms):
    params = {k: {LATENT_KERNEL: s} for k, s in kernels.items()}
    params.update({k: {"scale": (c,), "bias": (c,)} for k, c in norms.items()})
    stats = {k: {"mean": (c,), "var": (c,)} for k, c in norms.items()}
    return {"params": params, "batch_stats": stats}


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def _linen_shapes(model, x):
    return _shapes(
        jax.eval_shape(
            lambda k: model.init(k, x, train=False), jax.random.key(0)
        )
    )


def _nnx_path_to_linen(path):
    # nnx ``conv[3]`` is linen ``conv_3``.
    names = []
    for p in path:
        if isinstance(p, int):
            names[-1] = f"{names[-1]}_{p}"
        else:
            names.append(p)
    return tuple(names)


def _to_linen(pure):
    flat = traverse_util.flatten_dict(pure)
    return traverse_util.unflatten_dict(
        {_nnx_path_to_linen(k): v for k, v in flat.items()}
    )


def _nnx_shapes(make):
    model = fnnx.eval_shape(make)
    return {
        "params": _shapes(
            _to_linen(fnnx.to_pure_dict(fnnx.state(model, fnnx.Param)))
        ),
        "batch_stats": _shapes(
            _to_linen(fnnx.to_pure_dict(fnnx.state(model, fnnx.BatchStat)))
        ),
    }


def _random_like(tree, seed=0):
    """Random weights and batch-norm statistics of ``tree``'s shapes."""
    rng = np.random.default_rng(seed)

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


def _linen_variables(model, x, seed=0):
    shapes = jax.eval_shape(
        lambda k: model.init(k, x, train=False), jax.random.key(0)
    )
    return _random_like(shapes, seed)


def _nnx_model(make, seed=0):
    """A concrete nnx model with random weights, built via eval_shape."""
    graphdef, params, stats = fnnx.split(
        fnnx.eval_shape(make), fnnx.Param, fnnx.BatchStat
    )
    fnnx.replace_by_pure_dict(
        params, _random_like(fnnx.to_pure_dict(params), seed)
    )
    fnnx.replace_by_pure_dict(
        stats, _random_like(fnnx.to_pure_dict(stats), seed + 1)
    )
    return fnnx.merge(graphdef, params, stats)


def _norm_outputs(model, variables, x):
    """``{conv_norm_i: shape}`` of the batch norms' outputs (linen)."""
    _, state = model.apply(
        variables,
        x,
        train=False,
        capture_intermediates=lambda m, method: (
            m.name is not None
            and m.name.startswith("conv_norm_")
            and method == "__call__"
        ),
        mutable=["intermediates"],
    )
    flat = traverse_util.flatten_dict(state["intermediates"])
    return {k[0]: v[0].shape for k, v in flat.items()}


class DefaultLayoutTest(parameterized.TestCase):
    def test_linen_default_shapes(self):
        x = jnp.zeros((2, 32, 32, 3))
        want = _expected_variables(DEFAULT_KERNELS, DEFAULT_NORMS)
        model = mlinen.BinaryNetCNN(width_multiplier=0.125)
        self.assertEqual(_linen_shapes(model, x), want)
        self.assertEqual(tuple(model.conv_features), _common.BINARYNET_CNN_CONV)
        self.assertEqual(tuple(model.pool_after), (1, 3, 5))
        self.assertEqual(
            tuple(model.dense_features), _common.BINARYNET_CNN_DENSE
        )
        self.assertEqual(model.padding, "SAME")

    def test_nnx_default_shapes(self):
        want = _expected_variables(DEFAULT_KERNELS, DEFAULT_NORMS)
        got = _nnx_shapes(
            lambda: mnnx.BinaryNetCNN(width_multiplier=0.125, rngs=fnnx.Rngs(0))
        )
        self.assertEqual(got, want)

    def test_default_pools_every_second_convolution(self):
        # conv -> [pool] -> BN: the norms see 32, 16, 16, 8, 8, 4 pixels.
        model = mlinen.BinaryNetCNN(width_multiplier=0.125)
        x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
        variables = _linen_variables(model, x)
        got = _norm_outputs(model, variables, x)
        sides = (32, 16, 16, 8, 8, 4)
        want = {
            f"conv_norm_{i}": (2, s, s, DEFAULT_NORMS[f"conv_norm_{i}"])
            for i, s in enumerate(sides)
        }
        self.assertEqual(got, want)

    def test_explicit_defaults_compute_the_same(self):
        # Lists and tuples, written out, give the default network.
        x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
        default = mlinen.BinaryNetCNN(width_multiplier=1 / 16)
        explicit = mlinen.BinaryNetCNN(
            width_multiplier=1 / 16,
            conv_features=[128, 128, 256, 256, 512, 512],
            pool_after=[1, 3, 5],
            dense_features=(1024, 1024),
            padding="SAME",
        )
        variables = _linen_variables(default, x)
        self.assertEqual(_linen_shapes(explicit, x), _linen_shapes(default, x))
        for train in (False, True):
            want = default.apply(
                variables, x, train=train, mutable=["batch_stats"]
            )
            got = explicit.apply(
                variables, x, train=train, mutable=["batch_stats"]
            )
            self.assertEqual(want[0].shape, (3, 10))
            jax.tree.map(np.testing.assert_array_equal, got, want)


class TutorialCnnTest(parameterized.TestCase):
    def test_linen_shapes(self):
        model = mlinen.tutorial_cnn()
        x = jnp.zeros((2, 28, 28, 1))
        want = _expected_variables(TUTORIAL_KERNELS, TUTORIAL_NORMS)
        self.assertEqual(_linen_shapes(model, x), want)
        self.assertEqual(tuple(model.conv_features), (32, 64, 64))
        self.assertEqual(tuple(model.pool_after), (0, 1))
        self.assertEqual(tuple(model.dense_features), (64,))
        self.assertEqual(model.padding, "VALID")

    def test_nnx_shapes(self):
        want = _expected_variables(TUTORIAL_KERNELS, TUTORIAL_NORMS)
        got = _nnx_shapes(lambda: mnnx.tutorial_cnn(rngs=fnnx.Rngs(0)))
        self.assertEqual(got, want)
        model = fnnx.eval_shape(lambda: mnnx.tutorial_cnn(rngs=fnnx.Rngs(0)))
        self.assertEqual(model.in_features, 1)
        self.assertEqual(model.input_size, (28, 28))
        self.assertEqual(model.conv_features, (32, 64, 64))
        self.assertEqual(model.pool_after, (0, 1))
        self.assertEqual(model.dense_features, (64,))
        self.assertEqual(model.padding, "VALID")

    def test_latent_weight_count(self):
        # 9 * (1 * 32 + 32 * 64 + 64 * 64) + 576 * 64 + 64 * 10.
        shapes = _linen_shapes(mlinen.tutorial_cnn(), jnp.zeros((1, 28, 28, 1)))
        flat = traverse_util.flatten_dict(shapes["params"])
        latent = sum(
            int(np.prod(s)) for k, s in flat.items() if k[-1] == LATENT_KERNEL
        )
        self.assertEqual(latent, 93_088)

    def test_pools_after_the_first_two_convolutions(self):
        model = mlinen.tutorial_cnn(width_multiplier=0.25)
        x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
        got = _norm_outputs(model, _linen_variables(model, x), x)
        self.assertEqual(
            got,
            {
                "conv_norm_0": (2, 13, 13, 8),
                "conv_norm_1": (2, 5, 5, 16),
                "conv_norm_2": (2, 3, 3, 16),
            },
        )

    def test_overrides(self):
        # Keyword arguments override the tutorial's fields.
        model = mlinen.tutorial_cnn(
            width_multiplier=0.5, num_classes=3, dense_features=()
        )
        shapes = _linen_shapes(model, jnp.zeros((1, 28, 28, 1)))["params"]
        self.assertEqual(shapes["conv_2"][LATENT_KERNEL], (3, 3, 32, 32))
        self.assertEqual(shapes["head"][LATENT_KERNEL], (3 * 3 * 32, 3))
        self.assertNotIn("dense_0", shapes)
        nnx_model = fnnx.eval_shape(
            lambda: mnnx.tutorial_cnn(
                in_features=3, input_size=(32, 30), rngs=fnnx.Rngs(0)
            )
        )
        # 32 -> 30 -> 15 -> 13 -> 6 -> 4; 30 -> 28 -> 14 -> 12 -> 6 -> 4.
        self.assertEqual(nnx_model.conv[0].latent_kernel.shape, (3, 3, 3, 32))
        self.assertEqual(
            nnx_model.dense[0].latent_kernel.shape, (4 * 4 * 64, 64)
        )

    def test_valid_layers_see_binary_inputs(self):
        # No padding: every layer after the first sees +-1 inputs only, so
        # with +-1 kernels its outputs are integers of its fan-in's parity.
        model = mlinen.tutorial_cnn(
            width_multiplier=0.25, kernel_binarizer=SIGN_KERNEL, pad_value=0.5
        )
        x = jax.random.normal(jax.random.key(2), (2, 28, 28, 1))
        variables = _linen_variables(model, x)
        _, state = model.apply(
            variables,
            x,
            train=False,
            capture_intermediates=lambda m, method: (
                m.name is not None
                and m.name.startswith(("conv_", "dense_", "head"))
                and "norm" not in m.name
                and method == "__call__"
            ),
            mutable=["intermediates"],
        )
        outputs = state["intermediates"]
        self.assertLen(outputs, 5)
        for name, shape in TUTORIAL_KERNELS.items():
            (y,) = outputs[name]["__call__"]
            y = np.asarray(y)
            # width_multiplier=0.25 scales every width but the head's.
            width = 10 if name == "head" else shape[-1] // 4
            self.assertEqual(y.shape[-1], width)
            fan_in = int(
                np.prod(variables["params"][name][LATENT_KERNEL].shape[:-1])
            )
            integer = np.array_equal(y, np.round(y))
            if name == "conv_0":  # real pixels
                self.assertFalse(integer)
            else:
                self.assertTrue(integer, name)
                np.testing.assert_array_equal(np.mod(y - fan_in, 2), 0)
                self.assertLessEqual(np.abs(y).max(), fan_in)

    def test_valid_padding_ignores_pad_value(self):
        x = jax.random.normal(jax.random.key(3), (2, 28, 28, 1))
        zero = mlinen.tutorial_cnn(width_multiplier=0.25)
        minus = mlinen.tutorial_cnn(width_multiplier=0.25, pad_value=-1.0)
        variables = _linen_variables(zero, x)
        np.testing.assert_array_equal(
            minus.apply(variables, x, train=False),
            zero.apply(variables, x, train=False),
        )


class LayoutSizeTest(parameterized.TestCase):
    @parameterized.parameters(
        ({}, 8),
        (dict(_common.LARQ_MNIST_CNN), 18),
        (
            {
                "conv_features": (4, 4, 4),
                "pool_after": (),
                "dense_features": (),
                "padding": "VALID",
            },
            7,
        ),
        ({"conv_features": (4,), "pool_after": (), "padding": "SAME"}, 1),
        ({"conv_features": (4, 4), "pool_after": (0, 1)}, 4),
    )
    def test_min_input_size(self, fields, minimum):
        layout = _common.cnn_layout(
            fields.get("conv_features", _common.BINARYNET_CNN_CONV),
            fields.get("pool_after", _common.BINARYNET_CNN_POOLS),
            fields.get("dense_features", _common.BINARYNET_CNN_DENSE),
            fields.get("padding", "SAME"),
            1.0,
        )
        self.assertEqual(_common.cnn_min_input_size(layout), minimum)
        side = (minimum, minimum)
        self.assertEqual(_common.cnn_spatial_size(layout, side), (1, 1))
        with self.assertRaisesRegex(
            ValueError, rf"input_size must be .* at least {minimum} "
        ):
            _common.cnn_spatial_size(layout, (minimum, minimum - 1))

    @parameterized.parameters(
        ((32, 32), (4, 4), "SAME"),
        ((33, 47), (4, 5), "SAME"),
        ((28, 28), (3, 3), "VALID"),
        ((28, 30), (3, 4), "VALID"),
    )
    def test_spatial_size(self, size, want, padding):
        fields = (
            _common.LARQ_MNIST_CNN
            if padding == "VALID"
            else {
                "conv_features": _common.BINARYNET_CNN_CONV,
                "pool_after": _common.BINARYNET_CNN_POOLS,
                "dense_features": _common.BINARYNET_CNN_DENSE,
                "padding": "SAME",
            }
        )
        layout = _common.cnn_layout(**fields, width_multiplier=1.0)
        self.assertEqual(_common.cnn_spatial_size(layout, size), want)

    def test_linen_minimum_input(self):
        model = mlinen.tutorial_cnn(width_multiplier=0.25)
        key = jax.random.key(0)
        with self.assertRaisesRegex(
            ValueError,
            r"BinaryNetCNN needs images of at least 18x18 pixels \(3 3x3 "
            r"convolutions with padding='VALID' and 2 2x2 max pools\), got "
            r"inputs of shape \(1, 17, 28, 1\)",
        ):
            jax.eval_shape(
                lambda k: model.init(k, jnp.zeros((1, 17, 28, 1)), train=False),
                key,
            )
        # 18x18 is the smallest: a 1x1 map before the dense layers.
        shapes = _linen_shapes(model, jnp.zeros((1, 18, 18, 1)))["params"]
        self.assertEqual(shapes["dense_0"][LATENT_KERNEL], (16, 16))
        with self.assertRaisesRegex(ValueError, "at least 8x8 pixels"):
            _linen_shapes(mlinen.BinaryNetCNN(), jnp.zeros((1, 7, 32, 3)))

    def test_nnx_minimum_input(self):
        with self.assertRaisesRegex(
            ValueError,
            r"input_size must be \(height, width\), each at least 18 \(3 "
            r"3x3 convolutions with padding='VALID' and 2 2x2 max pools\), "
            r"got \(28, 17\)",
        ):
            mnnx.tutorial_cnn(input_size=(28, 17), rngs=fnnx.Rngs(0))
        model = fnnx.eval_shape(
            lambda: mnnx.tutorial_cnn(input_size=(18, 18), rngs=fnnx.Rngs(0))
        )
        self.assertEqual(model.dense[0].latent_kernel.shape, (64, 64))
        with self.assertRaisesRegex(ValueError, "each at least 8 "):
            mnnx.BinaryNetCNN(input_size=(7, 32), rngs=fnnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, r"input_size must be \(height"):
            mnnx.BinaryNetCNN(input_size=(32, 32, 3), rngs=fnnx.Rngs(0))


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(
        (
            {"conv_features": ()},
            ValueError,
            "conv_features must be a non-empty",
        ),
        (
            {"conv_features": (8, 0)},
            ValueError,
            "conv_features must hold positive",
        ),
        ({"conv_features": 8}, TypeError, "conv_features must be a non-empty"),
        ({"conv_features": (8.0,)}, TypeError, "conv_features must hold ints"),
        (
            {"pool_after": (1, 1)},
            ValueError,
            r"pool_after must hold distinct, increasing indices in \[0, 6\) "
            r".*got \(1, 1\)",
        ),
        ({"pool_after": (3, 1)}, ValueError, r"increasing indices.*\(3, 1\)"),
        ({"pool_after": (6,)}, ValueError, r"in \[0, 6\).*got \(6,\)"),
        ({"pool_after": (-1,)}, ValueError, r"in \[0, 6\).*got \(-1,\)"),
        (
            {"conv_features": (8, 8), "pool_after": (0, 2)},
            ValueError,
            r"in \[0, 2\).*got \(0, 2\)",
        ),
        (
            {"pool_after": (1.0,)},
            TypeError,
            "pool_after must be a sequence of ints",
        ),
        (
            {"pool_after": (True,)},
            TypeError,
            "pool_after must be a sequence of ints",
        ),
        ({"pool_after": 1}, TypeError, "pool_after must be a sequence of ints"),
        (
            {"dense_features": (0,)},
            ValueError,
            "dense_features must hold positive",
        ),
        (
            {"dense_features": (8.5,)},
            TypeError,
            "dense_features must hold ints",
        ),
        (
            {"dense_features": None},
            TypeError,
            r"dense_features must be a sequence of positive ints \(may be "
            r"empty\), got None",
        ),
        (
            {"padding": "same"},
            ValueError,
            r"padding must be one of \('SAME', 'VALID'\), got 'same'",
        ),
        (
            {"padding": ((1, 1), (1, 1))},
            TypeError,
            r"padding must be one of \('SAME', 'VALID'\), got \(\(1, 1\)",
        ),
        (
            {"padding": "VALID", "pad_value": float("nan")},
            ValueError,
            "pad_value must be finite",
        ),
        (
            {"padding": "SAME", "pad_value": "0"},
            TypeError,
            "pad_value must be a real",
        ),
    )
    def test_invalid_layout(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            mlinen.BinaryNetCNN(**kwargs)
        with self.assertRaisesRegex(error, message):
            mnnx.BinaryNetCNN(**kwargs, rngs=fnnx.Rngs(0))

    def test_tutorial_rejects_bad_overrides(self):
        with self.assertRaisesRegex(ValueError, r"in \[0, 3\).*got \(0, 3\)"):
            mlinen.tutorial_cnn(pool_after=(0, 3))
        with self.assertRaisesRegex(ValueError, r"in \[0, 3\).*got \(0, 3\)"):
            mnnx.tutorial_cnn(pool_after=(0, 3), rngs=fnnx.Rngs(0))

    def test_empty_pools_and_dense_accepted(self):
        model = mlinen.BinaryNetCNN(
            conv_features=(4,), pool_after=(), dense_features=()
        )
        shapes = _linen_shapes(model, jnp.zeros((1, 5, 6, 2)))["params"]
        self.assertEqual(
            shapes,
            {
                "conv_0": {LATENT_KERNEL: (3, 3, 2, 4)},
                "conv_norm_0": {"scale": (4,), "bias": (4,)},
                "head": {LATENT_KERNEL: (5 * 6 * 4, 10)},
                "head_norm": {"scale": (10,), "bias": (10,)},
            },
        )


def _assert_linen_nnx_agree(test, linen_model, make_nnx, x):
    """Same variables, same eval/train logits and statistics in both APIs."""
    nnx_model = _nnx_model(make_nnx)
    graphdef, params, stats = fnnx.split(nnx_model, fnnx.Param, fnnx.BatchStat)
    variables = {
        "params": _to_linen(fnnx.to_pure_dict(params)),
        "batch_stats": _to_linen(fnnx.to_pure_dict(stats)),
    }
    test.assertEqual(_shapes(variables), _linen_shapes(linen_model, x))
    nnx_model.eval()
    eval_def, _, _ = fnnx.split(nnx_model, fnnx.Param, fnnx.BatchStat)

    @jax.jit
    def run(variables, params, stats, x):
        linen_eval = linen_model.apply(variables, x, train=False)
        linen_train, updates = linen_model.apply(
            variables, x, train=True, mutable=["batch_stats"]
        )
        nnx_eval = fnnx.merge(eval_def, params, stats)(x)
        m = fnnx.merge(graphdef, params, stats, copy=True)
        nnx_train = m(x)
        new_stats = fnnx.to_pure_dict(fnnx.state(m, fnnx.BatchStat))
        return (
            (linen_eval, linen_train, updates["batch_stats"]),
            (nnx_eval, nnx_train, _to_linen(new_stats)),
        )

    got_linen, got_nnx = run(variables, params, stats, x)
    test.assertEqual(got_linen[0].shape, (x.shape[0], 10))
    # Train and eval differ: the comparison is not of constants.
    test.assertFalse(np.allclose(got_linen[0], got_linen[1]))
    test.assertEqual(jax.tree.structure(got_linen), jax.tree.structure(got_nnx))
    for a, b in zip(
        jax.tree.leaves(got_linen), jax.tree.leaves(got_nnx), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


class LinenNnxConsistencyTest(parameterized.TestCase):
    def test_tutorial(self):
        x = jax.random.normal(jax.random.key(4), (4, 28, 28, 1))
        _assert_linen_nnx_agree(
            self,
            mlinen.tutorial_cnn(width_multiplier=0.25),
            lambda: mnnx.tutorial_cnn(width_multiplier=0.25, rngs=fnnx.Rngs(0)),
            x,
        )

    def test_custom_layout(self):
        # 'SAME' on an odd size, one pool, no hidden dense layer.
        fields = {
            "conv_features": (8, 8),
            "pool_after": (0,),
            "dense_features": (),
            "pad_value": -1.0,
        }
        x = jax.random.normal(jax.random.key(5), (4, 13, 11, 2))
        _assert_linen_nnx_agree(
            self,
            mlinen.BinaryNetCNN(**fields),
            lambda: mnnx.BinaryNetCNN(
                in_features=2, input_size=(13, 11), **fields, rngs=fnnx.Rngs(0)
            ),
            x,
        )


class ExportTest(parameterized.TestCase):
    def _check_program(self, packed):
        ops = packed.header["program"]["ops"]
        convs = [o for o in ops if o["op"] == "binary_conv"]
        self.assertLen(convs, 3)
        for op in convs:
            self.assertEqual(op["padding"], [[0, 0], [0, 0]])
        self.assertEqual(
            [o["op"] for o in ops if o["op"] in ("binary_conv", "max_pool")],
            [
                "binary_conv",
                "max_pool",
                "binary_conv",
                "max_pool",
                "binary_conv",
            ],
        )
        dense = [o["features"] for o in ops if o["op"] == "binary_dense"]
        self.assertEqual(dense, [64, 10])
        config = packed.header["config"]
        self.assertEqual(config["conv_features"], [32, 64, 64])
        self.assertEqual(config["pool_after"], [0, 1])
        self.assertEqual(config["dense_features"], [64])
        self.assertEqual(config["padding"], "VALID")

    def test_linen_tutorial_packs_exactly(self):
        model = mlinen.tutorial_cnn(pad_value=0.5)  # unused: no padding
        x = jax.random.normal(jax.random.key(6), (8, 28, 28, 1))
        variables = _linen_variables(model, x, seed=2)
        packed = export_lib.pack_model(model, variables)
        self._check_program(packed)
        want = jax.jit(lambda v, x: model.apply(v, x, train=False))(
            variables, x
        )
        got = export_lib.predict(packed, x)
        np.testing.assert_array_equal(
            np.asarray(got).argmax(-1), np.asarray(want).argmax(-1)
        )
        np.testing.assert_array_equal(got, want)

    def test_nnx_tutorial_packs_like_the_float_model(self):
        model = _nnx_model(lambda: mnnx.tutorial_cnn(rngs=fnnx.Rngs(0)), seed=3)
        model.eval()
        x = jax.random.normal(jax.random.key(7), (8, 28, 28, 1))
        want = np.asarray(model(x))
        packed = export_lib.pack_model(model)
        self._check_program(packed)
        self.assertEqual(packed.architecture, "BinaryNetCNN")
        got = np.asarray(export_lib.predict(packed, x))
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
        self.assertLessEqual(
            np.abs(got - want).max(), 1e-5 * np.abs(want).max()
        )

    def test_nnx_twin_copies_the_layout(self):
        fields = {
            "conv_features": (8, 8, 8),
            "pool_after": (2,),
            "dense_features": (16, 12),
            "padding": "SAME",
            "pad_value": -1.0,
        }
        model = _nnx_model(
            lambda: mnnx.BinaryNetCNN(
                in_features=1, input_size=(9, 9), **fields, rngs=fnnx.Rngs(0)
            )
        )
        model.eval()
        x = jax.random.normal(jax.random.key(8), (4, 9, 9, 1))
        packed = export_lib.pack_model(model)
        config = packed.header["config"]
        for name, value in fields.items():
            want = list(value) if isinstance(value, tuple) else value
            self.assertEqual(config[name], want, name)
        ops = packed.header["program"]["ops"]
        pools = [o for o in ops if o["op"] == "max_pool"]
        self.assertLen(pools, 1)
        convs = [o for o in ops if o["op"] == "binary_conv"]
        self.assertEqual([c["pad_value"] for c in convs], [0.0, -1.0, -1.0])
        got = np.asarray(export_lib.predict(packed, x))
        want = np.asarray(model(x))
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
        self.assertLessEqual(
            np.abs(got - want).max(), 1e-5 * np.abs(want).max()
        )


if __name__ == "__main__":
    absltest.main()

"""Reference architectures: shapes, gradients, published sizes, linen = nnx."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized
from flax import nnx as fnnx
from flax import traverse_util

import bnnjax
from bnnjax.models import linen as mlinen
from bnnjax.models import nnx as mnnx
from bnnjax.nn import LATENT_KERNEL
from bnnjax.nn import linen as blinen
from bnnjax.nn import nnx as bnnx
from bnnjax.nn.nnx import LatentParam

# EDE needs ``progress``: a binary layer it does not reach raises.
EDE_KERNEL = bnnjax.Binarizer(surrogate="ede", axis=-1)
# +-1 kernels: with +-1 inputs every output is an integer of known parity.
SIGN_KERNEL = bnnjax.Binarizer(surrogate="ste", scale=None)


def mod(api):
    return mlinen if api == "linen" else mnnx


def _small(arch, api, **kwargs):
    """(factory, inputs) of a small model of each architecture.

    The factory builds the model; for nnx it makes its ``Rngs`` inside, so
    ``nnx.eval_shape`` can trace it.
    """
    m = mod(api)

    def rngs():
        return {"rngs": fnnx.Rngs(0)} if api == "nnx" else {}

    if arch == "mlp":
        x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
        if api == "nnx":
            kwargs["in_features"] = 64
        return lambda: m.BinaryMLP(hidden=(32, 16), **kwargs, **rngs()), x
    if arch == "cnn":
        x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
        if api == "nnx":
            kwargs["input_size"] = (16, 16)
        return lambda: m.BinaryNetCNN(
            width_multiplier=1 / 16, **kwargs, **rngs()
        ), x
    if arch == "tutorial":  # Larq's MNIST CNN: 'VALID', 3 convolutions
        x = jax.random.normal(jax.random.key(6), (4, 28, 28, 1))
        return lambda: m.tutorial_cnn(
            width_multiplier=1 / 4, **kwargs, **rngs()
        ), x
    factory = {
        "resnet18": m.bireal_resnet18,
        "resnet20": m.bireal_resnet20,
        "reactnet": m.reactnet_small,
    }[arch.split("_")[0]]
    if arch.startswith("reactnet"):
        # Three doubling blocks (one per stage) at 1/8 width: 4 to 32.
        kwargs.update(stage_sizes=(1, 1, 1), width_multiplier=1 / 8)
    if arch.endswith(("_mnist", "_cifar")):
        # Tiny widths on MNIST- and CIFAR-shaped images: the small stem.
        image = (28, 28, 1) if arch.endswith("_mnist") else (32, 32, 3)
        x = jax.random.normal(jax.random.key(5), (2, *image))
        kwargs.setdefault("width_multiplier", 1 / 16)
        kwargs.update(num_classes=10)
        if api == "nnx":
            kwargs.update(in_features=image[-1])
            if not arch.startswith("reactnet"):
                kwargs.update(input_size=image[:2])
        return lambda: factory(**kwargs, **rngs()), x
    x = jax.random.normal(jax.random.key(3), (4, 32, 32, 3))
    return lambda: factory(**kwargs, **rngs()), x


def _flat(tree):
    return traverse_util.flatten_dict(tree)


def _nnx_path_to_linen(path):
    # nnx ``blocks[3].conv`` is linen ``blocks_3/conv``.
    names = []
    for p in path:
        if isinstance(p, int):
            names[-1] = f"{names[-1]}_{p}"
        else:
            names.append(p)
    return tuple(names)


def _to_linen(pure):
    return traverse_util.unflatten_dict(
        {_nnx_path_to_linen(k): v for k, v in _flat(pure).items()}
    )


def _random_like(tree, seed=0):
    """Random values of ``tree``'s shapes: weights, BN scales and stats.

    Cheaper than flax's initializers, whose compilation dominates a jitted
    ``init`` of these models on a CPU.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1] == "var":
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif path[-1] == "mean":
            value = 0.1 * rng.normal(size=leaf.shape)
        elif path[-1] == "scale":
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        else:
            value = 0.5 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return traverse_util.unflatten_dict(
        {k: fill(k, v) for k, v in _flat(tree).items()}
    )


def _linen_variables(model, x):
    shapes = jax.eval_shape(
        lambda k: model.init(k, x, train=False, progress=0.0),
        jax.random.key(0),
    )
    return _random_like(shapes)


def _nnx_model(make):
    """A concrete nnx model with random weights, built via eval_shape."""
    graphdef, params, stats = fnnx.split(
        fnnx.eval_shape(make), fnnx.Param, fnnx.BatchStat
    )
    fnnx.replace_by_pure_dict(params, _random_like(fnnx.to_pure_dict(params)))
    fnnx.replace_by_pure_dict(stats, _random_like(fnnx.to_pure_dict(stats)))
    return fnnx.merge(graphdef, params, stats)


def _ce(logits):
    labels = jnp.arange(logits.shape[0]) % logits.shape[1]
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels
    ).mean()


def _linen_counts(model, x):
    variables = jax.eval_shape(
        lambda k: model.init(k, x, train=False), jax.random.key(0)
    )
    latent = real = 0
    for path, leaf in _flat(variables["params"]).items():
        if path[-1] == LATENT_KERNEL:
            latent += leaf.size
        else:
            real += leaf.size
    stats = sum(v.size for v in jax.tree.leaves(variables["batch_stats"]))
    return latent, real, stats


def _nnx_counts(make):
    model = fnnx.eval_shape(make)
    size = lambda f: sum(v.size for v in jax.tree.leaves(fnnx.state(model, f)))  # noqa: E731
    return (
        size(LatentParam),
        size(fnnx.All(fnnx.Param, fnnx.Not(LatentParam))),
        size(fnnx.BatchStat),
    )


# Published layer lists, written out: (fan_in, fan_out) of every layer.
def _bn(*widths):
    return 2 * sum(widths)  # scale and bias per channel


MLP_4096 = [(784, 4096), (4096, 4096), (4096, 4096), (4096, 10)]
CNN_CONV = [
    (3 * 9, 128),
    (128 * 9, 128),
    (128 * 9, 256),
    (256 * 9, 256),
    (256 * 9, 512),
    (512 * 9, 512),
]
CNN_DENSE = [(512 * 4 * 4, 1024), (1024, 1024), (1024, 10)]
RESNET18_BINARY = (
    [(64 * 9, 64)] * 4
    + [(64 * 9, 128)]
    + [(128 * 9, 128)] * 3
    + [(128 * 9, 256)]
    + [(256 * 9, 256)] * 3
    + [(256 * 9, 512)]
    + [(512 * 9, 512)] * 3
)
RESNET18_SHORTCUTS = [(64, 128), (128, 256), (256, 512)]
RESNET20_BINARY = (
    [(16 * 9, 16)] * 6
    + [(16 * 9, 32)]
    + [(32 * 9, 32)] * 5
    + [(32 * 9, 64)]
    + [(64 * 9, 64)] * 5
)
RESNET20_SHORTCUTS = [(16, 32), (32, 64)]


def _weights(layers):
    return sum(a * b for a, b in layers)


def _resnet_counts(stem, binary, shortcuts, head):
    """(latent, real, batch-stat) counts of a Bi-Real ResNet, by hand."""
    (stem_in, stem_out) = stem
    norms = [stem_out, *(b for _, b in binary), *(b for _, b in shortcuts)]
    latent = _weights(binary)
    real = stem_in * stem_out + _weights(shortcuts) + _bn(*norms)
    real += head[0] * head[1] + head[1]
    return latent, real, _bn(*norms)


PUBLISHED = {
    # BinaryNet MNIST MLP 784-4096-4096-4096-10, BN after every layer.
    "mlp": (
        _weights(MLP_4096),
        _bn(4096, 4096, 4096, 10),
        _bn(4096, 4096, 4096, 10),
    ),
    # The same with a real last layer (bias, no batch norm).
    "mlp_real_head": (
        _weights(MLP_4096[:-1]),
        _bn(4096, 4096, 4096) + 4096 * 10 + 10,
        _bn(4096, 4096, 4096),
    ),
    # BinaryNet CIFAR-10: 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10.
    "cnn": (
        _weights(CNN_CONV) + _weights(CNN_DENSE),
        _bn(128, 128, 256, 256, 512, 512, 1024, 1024, 10),
        _bn(128, 128, 256, 256, 512, 512, 1024, 1024, 10),
    ),
    "resnet18": _resnet_counts(
        (7 * 7 * 3, 64), RESNET18_BINARY, RESNET18_SHORTCUTS, (512, 1000)
    ),
    "resnet20": _resnet_counts(
        (3 * 3 * 3, 16), RESNET20_BINARY, RESNET20_SHORTCUTS, (64, 10)
    ),
}


def _published_model(name, api):
    """(model factory, inputs) of a published size."""
    m = mod(api)

    def rngs():  # nnx.eval_shape needs the Rngs made inside its trace
        return {"rngs": fnnx.Rngs(0)} if api == "nnx" else {}

    if name.startswith("mlp"):
        binary_last = name == "mlp"
        return lambda: m.BinaryMLP(
            hidden=(4096, 4096, 4096), binary_last=binary_last, **rngs()
        ), jnp.zeros((1, 28, 28, 1))
    if name == "cnn":
        return lambda: m.BinaryNetCNN(**rngs()), jnp.zeros((1, 32, 32, 3))
    factory = m.bireal_resnet18 if name == "resnet18" else m.bireal_resnet20
    size = 224 if name == "resnet18" else 32
    return lambda: factory(**rngs()), jnp.zeros((1, size, size, 3))


class ForwardBackwardTest(parameterized.TestCase):
    @parameterized.product(
        arch=(
            "mlp",
            "cnn",
            "tutorial",
            "resnet18",
            "resnet20",
            "resnet18_mnist",
            "resnet20_mnist",
            "resnet18_cifar",
            "resnet20_cifar",
            "reactnet_mnist",
            "reactnet_cifar",
        ),
        api=("linen", "nnx"),
    )
    def test_train_eval_and_gradients(self, arch, api):
        # EDE kernels need ``progress``: every binary layer must receive it.
        make, x = _small(arch, api, kernel_binarizer=EDE_KERNEL)
        num_classes = 1000 if arch == "resnet18" else 10
        if api == "linen":
            model = make()
            variables = _linen_variables(model, x)
            params, stats = variables["params"], variables["batch_stats"]

            @jax.jit
            def run(params, stats, x):
                def loss(params):
                    logits, updates = model.apply(
                        {"params": params, "batch_stats": stats},
                        x,
                        train=True,
                        progress=0.5,
                        mutable=["batch_stats"],
                    )
                    return _ce(logits), (logits, updates["batch_stats"])

                grads, (logits, new_stats) = jax.grad(loss, has_aux=True)(
                    params
                )
                eval_logits = model.apply(
                    {"params": params, "batch_stats": new_stats},
                    x,
                    train=False,
                    progress=0.5,
                )
                return logits, eval_logits, grads, new_stats

            logits, eval_logits, grads, new_stats = run(params, stats, x)
            grads, stats, new_stats = map(_flat, (grads, stats, new_stats))
            latent = [k for k in _flat(params) if k[-1] == LATENT_KERNEL]
        else:
            model = _nnx_model(make)
            model.train()
            train_def, params, stats = fnnx.split(
                model, fnnx.Param, fnnx.BatchStat
            )
            model.eval()
            eval_def, _, _ = fnnx.split(model, fnnx.Param, fnnx.BatchStat)

            @jax.jit
            def run(params, stats, x):
                def loss(params, stats):
                    # copy=True: batch norm writes its statistics in place.
                    m = fnnx.merge(train_def, params, stats, copy=True)
                    logits = m(x, progress=0.5)
                    return _ce(logits), (logits, fnnx.state(m, fnnx.BatchStat))

                grads, (logits, new_stats) = jax.grad(loss, has_aux=True)(
                    params, stats
                )
                eval_model = fnnx.merge(eval_def, params, new_stats)
                eval_logits = eval_model(x, progress=0.5)
                return logits, eval_logits, grads, new_stats

            logits, eval_logits, grads, new_stats = run(params, stats, x)
            grads, stats, new_stats = (
                _flat(fnnx.to_pure_dict(t)) for t in (grads, stats, new_stats)
            )
            latent = list(
                _flat(fnnx.to_pure_dict(fnnx.state(model, LatentParam)))
            )

        self.assertEqual(logits.shape, (x.shape[0], num_classes))
        self.assertEqual(eval_logits.shape, (x.shape[0], num_classes))
        chex.assert_tree_all_finite((logits, eval_logits, grads))
        # Train and eval modes differ (batch vs running statistics).
        self.assertFalse(np.allclose(logits, eval_logits))
        want_latent = {
            "mlp": 3,
            "cnn": 9,
            "tutorial": 5,
            "resnet18": 16,
            "resnet20": 18,
            "reactnet": 9,  # per doubling block: a 3x3 and two 1x1 convs
        }
        self.assertLen(latent, want_latent[arch.split("_")[0]])
        for path in latent:
            self.assertGreater(float(jnp.abs(grads[path]).sum()), 0, path)
        # Every running mean moved in the training step.
        means = [k for k in stats if k[-1] == "mean"]
        self.assertNotEmpty(means)
        for path in means:
            self.assertFalse(np.array_equal(stats[path], new_stats[path]), path)


class ParameterCountTest(parameterized.TestCase):
    @parameterized.product(
        name=("mlp", "mlp_real_head", "cnn", "resnet18", "resnet20"),
        api=("linen", "nnx"),
    )
    def test_published_sizes(self, name, api):
        make, x = _published_model(name, api)
        if api == "linen":
            counts = _linen_counts(make(), x)
        else:
            counts = _nnx_counts(make)
        self.assertEqual(counts, PUBLISHED[name])

    def test_published_totals(self):
        # Totals quoted by the papers / reference implementations.
        self.assertEqual(_weights(CNN_CONV), 4_574_592)
        self.assertEqual(sum(PUBLISHED["resnet18"][:2]), 11_689_512)
        self.assertEqual(PUBLISHED["resnet18"][0], 10_985_472)
        self.assertEqual(sum(PUBLISHED["resnet20"][:2]), 272_474)
        self.assertEqual(
            PUBLISHED["mlp"][0], 784 * 4096 + 2 * 4096 * 4096 + 4096 * 10
        )

    def test_width_multiplier(self):
        model = mlinen.BinaryNetCNN(width_multiplier=0.5)
        latent, _, _ = _linen_counts(model, jnp.zeros((1, 32, 32, 3)))
        conv = [
            (3 * 9, 64),
            (64 * 9, 64),
            (64 * 9, 128),
            (128 * 9, 128),
            (128 * 9, 256),
            (256 * 9, 256),
        ]
        dense = [(256 * 4 * 4, 512), (512, 512), (512, 10)]
        self.assertEqual(latent, _weights(conv) + _weights(dense))


def _shapes(tree):
    return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


class WidthMultiplierTest(parameterized.TestCase):
    @parameterized.product(
        arch=("cnn", "resnet18", "resnet20"), api=("linen", "nnx")
    )
    def test_default_is_the_published_model(self, arch, api):
        # width_multiplier=1.0 builds exactly the model built without it.
        make, x = _published_model(arch, api)
        m = mod(api)

        def rngs():
            return {"rngs": fnnx.Rngs(0)} if api == "nnx" else {}

        factory = {
            "cnn": m.BinaryNetCNN,
            "resnet18": m.bireal_resnet18,
            "resnet20": m.bireal_resnet20,
        }[arch]

        def make_one():
            return factory(width_multiplier=1.0, **rngs())

        if api == "linen":
            init = lambda model: jax.eval_shape(  # noqa: E731
                lambda k: model.init(k, x, train=False), jax.random.key(0)
            )
            self.assertEqual(_shapes(init(make())), _shapes(init(make_one())))
        else:
            state = lambda f: fnnx.state(fnnx.eval_shape(f))  # noqa: E731
            self.assertEqual(
                _shapes(fnnx.to_pure_dict(state(make))),
                _shapes(fnnx.to_pure_dict(state(make_one))),
            )

    @parameterized.parameters("linen", "nnx")
    def test_resnet_widths(self, api):
        # Every channel count c becomes max(1, round(c * multiplier)):
        # 16 -> 2, 32 -> 4, 64 -> 8 at 1/8; round(64 * 0.03) = 2, and
        # round(16 * 0.03) = 0 becomes 1.
        x = jnp.zeros((1, 32, 32, 3))
        for multiplier, stem, stages in (
            (0.125, 2, (2, 4, 8)),
            (0.03, 1, (1, 1, 2)),
        ):
            if api == "linen":
                model = mlinen.bireal_resnet20(width_multiplier=multiplier)
                params = jax.eval_shape(
                    lambda k, model=model: model.init(k, x, train=False),
                    jax.random.key(0),
                )["params"]
                stem_kernel = params["stem_conv"]["kernel"].shape
                blocks = [
                    params[f"blocks_{i}"]["conv"][LATENT_KERNEL].shape
                    for i in range(18)
                ]
                head = params["head"]["kernel"].shape
            else:
                model = fnnx.eval_shape(
                    lambda multiplier=multiplier: mnnx.bireal_resnet20(
                        width_multiplier=multiplier, rngs=fnnx.Rngs(0)
                    )
                )
                self.assertEqual(model.width_multiplier, multiplier)
                self.assertEqual(model.stage_features, (16, 32, 64))
                stem_kernel = model.stem_conv.kernel.shape
                blocks = [b.conv.latent_kernel.shape for b in model.blocks]
                head = model.head.kernel.shape
            self.assertEqual(stem_kernel, (3, 3, 3, stem))
            self.assertEqual(
                [k[-1] for k in blocks],
                [stages[0]] * 6 + [stages[1]] * 6 + [stages[2]] * 6,
            )
            self.assertEqual(blocks[6][-2], stages[0])
            self.assertEqual(head, (stages[2], 10))

    def test_resnet18_counts_at_half_width(self):
        _, x = _published_model("resnet18", "linen")
        half = mlinen.bireal_resnet18(width_multiplier=0.5)
        binary = [(a // 2, b // 2) for a, b in RESNET18_BINARY]
        shortcuts = [(a // 2, b // 2) for a, b in RESNET18_SHORTCUTS]
        want = _resnet_counts((7 * 7 * 3, 32), binary, shortcuts, (256, 1000))
        self.assertEqual(_linen_counts(half, x), want)
        counts = _nnx_counts(
            lambda: mnnx.bireal_resnet18(
                width_multiplier=0.5, rngs=fnnx.Rngs(0)
            )
        )
        self.assertEqual(counts, want)

    @parameterized.parameters(
        (0.0, ValueError, "width_multiplier must be finite and > 0"),
        (-1.0, ValueError, "width_multiplier must be finite and > 0"),
        (float("inf"), ValueError, "width_multiplier must be finite"),
        (float("nan"), ValueError, "width_multiplier must be finite"),
        ("1", TypeError, "width_multiplier must be a real number"),
        (True, TypeError, "width_multiplier must be a real number"),
    )
    def test_invalid(self, value, error, message):
        for factory in (mlinen.bireal_resnet20, mlinen.BinaryNetCNN):
            with self.assertRaisesRegex(error, message):
                factory(width_multiplier=value)
        for factory in (mnnx.bireal_resnet18, mnnx.BinaryNetCNN):
            with self.assertRaisesRegex(error, message):
                factory(width_multiplier=value, rngs=fnnx.Rngs(0))


def _assert_linen_nnx_agree(test, linen_model, make_nnx, x, num_classes=10):
    """Same weights, same outputs and statistic updates in both APIs."""
    nnx_model = _nnx_model(make_nnx)  # random weights and statistics
    graphdef, params, stats = fnnx.split(nnx_model, fnnx.Param, fnnx.BatchStat)
    # Copy them into linen's tree: nnx ``dense[1]`` is linen ``dense_1``.
    variables = {
        "params": _to_linen(fnnx.to_pure_dict(params)),
        "batch_stats": _to_linen(fnnx.to_pure_dict(stats)),
    }
    want = jax.eval_shape(
        lambda k: linen_model.init(k, x, train=False), jax.random.key(0)
    )
    test.assertEqual(
        jax.tree.map(lambda a: a.shape, want),
        jax.tree.map(lambda a: a.shape, variables),
    )
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
    test.assertEqual(got_linen[0].shape, (x.shape[0], num_classes))
    test.assertEqual(jax.tree.structure(got_linen), jax.tree.structure(got_nnx))
    for a, b in zip(
        jax.tree.leaves(got_linen), jax.tree.leaves(got_nnx), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


class LinenNnxConsistencyTest(parameterized.TestCase):
    @parameterized.parameters(
        "mlp",
        "cnn",
        "tutorial",
        "resnet20",
        "resnet18_mnist",
        "resnet20_mnist",
        "resnet18_cifar",
        "resnet20_cifar",
        "reactnet_mnist",
        "reactnet_cifar",
    )
    def test_same_weights_same_outputs(self, arch):
        make_nnx, x = _small(arch, "nnx")
        make_linen, _ = _small(arch, "linen")
        _assert_linen_nnx_agree(self, make_linen(), make_nnx, x)


def _is_integer(a):
    return bool(np.all(np.asarray(a) == np.round(np.asarray(a))))


class BinaryActivationTest(parameterized.TestCase):
    """Layers after the first see +-1 inputs: with +-1 kernels and +-1
    padding each output is a sum of fan_in terms +-1, an integer of fan_in's
    parity. Real-valued inputs give non-integers."""

    def _check(self, outputs, real_inputs):
        # outputs: {name: (fan_in, output)}; real_inputs: names of layers
        # whose inputs are real-valued.
        self.assertNotEmpty(outputs)
        for name, (fan_in, y) in outputs.items():
            y = np.asarray(y)
            if name in real_inputs:
                self.assertFalse(_is_integer(y), name)
            else:
                self.assertTrue(_is_integer(y), name)
                np.testing.assert_array_equal(
                    np.mod(y - fan_in, 2), 0, err_msg=str(name)
                )
                self.assertLessEqual(float(np.abs(y).max()), fan_in)

    @parameterized.parameters(
        ("mlp", {"binary_activations": True}, {"dense_0"}),
        ("mlp", {"binary_activations": False}, None),
        ("cnn", {"pad_value": -1.0}, {"conv_0"}),
        ("tutorial", {}, {"conv_0"}),  # 'VALID': no padding at all
        ("resnet20", {"pad_value": 1.0}, set()),
    )
    def test_linen(self, arch, kwargs, real_inputs):
        make, x = _small(arch, "linen", kernel_binarizer=SIGN_KERNEL, **kwargs)
        model = make()
        variables = _linen_variables(model, x)

        @jax.jit
        def run(variables, x):
            return model.apply(
                variables,
                x,
                train=False,
                capture_intermediates=lambda m, method: (
                    isinstance(m, (blinen.BinaryConv, blinen.BinaryDense))
                    and method == "__call__"
                ),
                mutable=["intermediates"],
            )[1]["intermediates"]

        captured = _flat(run(variables, x))
        kernels = _flat(variables["params"])
        outputs = {}
        for path, (y,) in captured.items():
            layer = path[:-1]
            fan_in = math.prod(kernels[(*layer, LATENT_KERNEL)].shape[:-1])
            outputs["/".join(layer)] = (fan_in, y)
        if real_inputs is None:  # real activations: every input is real
            real_inputs = set(outputs)
        self.assertLen(
            outputs, {"mlp": 3, "cnn": 9, "tutorial": 5, "resnet20": 18}[arch]
        )
        self._check(outputs, real_inputs)

    @parameterized.parameters(
        ("mlp", {"binary_activations": True}, {"dense/0"}),
        ("resnet20", {"pad_value": -1.0}, set()),
    )
    def test_nnx(self, arch, kwargs, real_inputs):
        make, x = _small(arch, "nnx", kernel_binarizer=SIGN_KERNEL, **kwargs)
        model = _nnx_model(make)
        model.eval()
        _, captured = fnnx.jit(
            lambda m, x: fnnx.capture(
                m, fnnx.Intermediate, method_outputs=fnnx.Intermediate
            )(x)
        )(model, x)
        captured = _flat(fnnx.to_pure_dict(captured))
        outputs = {}
        for path, layer in fnnx.iter_modules(model):
            if isinstance(layer, (bnnx.BinaryConv, bnnx.BinaryLinear)):
                fan_in = math.prod(layer.latent_kernel.shape[:-1])
                (y,) = captured[(*path, "__call__")]
                name = "/".join(map(str, path))
                outputs[name] = (fan_in, y)
                # The layer itself declares which inputs it binarizes.
                self.assertEqual(
                    layer.input_binarizer is None, name in real_inputs
                )
        self.assertLen(outputs, {"mlp": 3, "resnet20": 18}[arch])
        self._check(outputs, real_inputs)


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(
        ({"hidden": ()}, ValueError, "hidden must be a non-empty"),
        ({"hidden": (32, 0)}, ValueError, r"hidden must hold positive"),
        ({"hidden": (32.0,)}, TypeError, "hidden must hold ints"),
        ({"hidden": 32}, TypeError, "hidden must be a non-empty sequence"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"binary_last": 1}, TypeError, "binary_last must be a bool"),
        ({"kernel_binarizer": "ste"}, TypeError, "kernel_binarizer must be"),
        (
            {"activation_binarizer": bnnjax.SteSurrogate()},
            TypeError,
            r"activation_binarizer must be.*Wrap it",
        ),
        ({"dropout_rate": 1.0}, ValueError, r"dropout_rate must be in \[0"),
        ({"bn_epsilon": 0.0}, ValueError, "bn_epsilon must be finite"),
    )
    def test_mlp_arguments(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            mlinen.BinaryMLP(**kwargs)
        with self.assertRaisesRegex(error, message):
            mnnx.BinaryMLP(**kwargs, rngs=fnnx.Rngs(0))

    @parameterized.parameters(
        ({"width_multiplier": 0.0}, ValueError, "width_multiplier"),
        ({"pad_value": float("nan")}, ValueError, "pad_value must be finite"),
        ({"bn_momentum": 1.5}, ValueError, "bn_momentum"),
        ({"conv_features": ()}, ValueError, "conv_features must be a non"),
        ({"pool_after": (5, 1)}, ValueError, "pool_after must hold distinct"),
        ({"dense_features": (-2,)}, ValueError, "dense_features must hold"),
        ({"padding": "CIRCULAR"}, ValueError, "padding must be one of"),
    )
    def test_cnn_arguments(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            mlinen.BinaryNetCNN(**kwargs)
        with self.assertRaisesRegex(error, message):
            mnnx.BinaryNetCNN(**kwargs, rngs=fnnx.Rngs(0))

    @parameterized.parameters(
        ({"stage_sizes": ()}, ValueError, "stage_sizes must be a non-empty"),
        (
            {"stage_sizes": (2, 2)},
            ValueError,
            "stage_sizes=.* and stage_features=.* must have one entry",
        ),
        ({"stage_features": (64, -1, 1, 1)}, ValueError, "stage_features"),
        ({"stem_kernel_size": 0}, ValueError, "stem_kernel_size"),
        ({"stem_max_pool": "yes"}, TypeError, "stem_max_pool must be a bool"),
    )
    def test_resnet_arguments(self, kwargs, error, message):
        with self.assertRaisesRegex(error, message):
            mlinen.BiRealResNet(**kwargs)
        with self.assertRaisesRegex(error, message):
            mnnx.BiRealResNet(**kwargs, rngs=fnnx.Rngs(0))

    def test_nnx_needs_rngs(self):
        with self.assertRaisesRegex(TypeError, "rngs must be an nnx.Rngs"):
            mnnx.BinaryMLP(hidden=(4,), rngs=0)

    def test_bad_inputs(self):
        key = jax.random.key(0)
        init = lambda m, x, **kw: jax.eval_shape(  # noqa: E731
            lambda k: m.init(k, x, train=kw.get("train", False)), key
        )
        with self.assertRaisesRegex(ValueError, r"BinaryMLP expects.*\(8,\)"):
            init(mlinen.BinaryMLP(hidden=(4,)), jnp.zeros(8))
        with self.assertRaisesRegex(ValueError, "BinaryNetCNN expects images"):
            init(mlinen.BinaryNetCNN(), jnp.zeros((2, 32, 32)))
        with self.assertRaisesRegex(ValueError, "at least 8x8"):
            init(mlinen.BinaryNetCNN(), jnp.zeros((2, 4, 4, 3)))
        with self.assertRaisesRegex(ValueError, "BiRealResNet expects images"):
            init(mlinen.bireal_resnet20(), jnp.zeros((32, 32, 3)))
        with self.assertRaisesRegex(TypeError, "train must be a Python bool"):
            init(mlinen.BinaryMLP(hidden=(4,)), jnp.zeros((2, 8)), train=None)

        mlp = mnnx.BinaryMLP(hidden=(4,), rngs=fnnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "in_features=784, got inputs"):
            mlp(jnp.zeros((2, 28, 28, 3)))
        # Abstract models: the shape checks run before any computation.
        cnn = fnnx.eval_shape(lambda: mnnx.BinaryNetCNN(rngs=fnnx.Rngs(0)))
        with self.assertRaisesRegex(ValueError, r"\(batch, 32, 32, 3\)"):
            cnn(jnp.zeros((2, 16, 16, 3)))
        with self.assertRaisesRegex(ValueError, "input_size must be"):
            mnnx.BinaryNetCNN(input_size=(4, 4), rngs=fnnx.Rngs(0))
        resnet = fnnx.eval_shape(
            lambda: mnnx.bireal_resnet20(rngs=fnnx.Rngs(0))
        )
        with self.assertRaisesRegex(ValueError, "in_features=3"):
            resnet(jnp.zeros((2, 32, 32, 1)))

    def test_progress_reaches_every_binary_layer(self):
        # Without progress the EDE kernels raise; with it, every layer runs.
        make, x = _small("resnet20", "linen", kernel_binarizer=EDE_KERNEL)
        model = make()
        key = jax.random.key(0)
        with self.assertRaisesRegex(ValueError, "EdeSurrogate anneals"):
            jax.eval_shape(lambda k: model.init(k, x, train=False), key)
        shapes = jax.eval_shape(
            lambda k: model.init(k, x, train=False, progress=0.5), key
        )
        self.assertLen(
            [k for k in _flat(shapes["params"]) if k[-1] == LATENT_KERNEL], 18
        )


class SmallImageStemTest(parameterized.TestCase):
    """ResNets on MNIST- and CIFAR-sized images get the 3x3/1 stem."""

    def _linen_stem(self, model, shape):
        x = jnp.zeros(shape)
        out, variables = jax.eval_shape(
            lambda k: model.init_with_output(
                k,
                x,
                train=False,
                capture_intermediates=lambda m, method: (
                    isinstance(m, mlinen.BiRealBlock) and method == "__call__"
                ),
            ),
            jax.random.key(0),
        )
        self.assertEqual(out.shape, (shape[0], 10))
        blocks = variables["intermediates"]
        last = max(blocks, key=lambda n: int(n.split("_")[1]))
        return (
            variables["params"]["stem_conv"]["kernel"].shape[:2],
            blocks["blocks_0"]["__call__"][0].shape[1:3],
            blocks[last]["__call__"][0].shape[1:3],
        )

    @parameterized.parameters(
        # shape, small_input_stem, stem kernel, first and last block maps
        ((2, 28, 28, 1), None, (3, 3), (28, 28), (4, 4)),
        ((2, 32, 32, 3), None, (3, 3), (32, 32), (4, 4)),
        ((2, 64, 64, 3), None, (3, 3), (64, 64), (8, 8)),
        ((1, 65, 65, 3), None, (7, 7), (17, 17), (3, 3)),
        ((1, 224, 224, 3), None, (7, 7), (56, 56), (7, 7)),
        # ImageNet's stem on MNIST shrinks 28x28 to 7x7, then 1x1.
        ((2, 28, 28, 1), False, (7, 7), (7, 7), (1, 1)),
        ((1, 96, 96, 3), True, (3, 3), (96, 96), (12, 12)),
    )
    def test_resnet18_linen(self, shape, small, kernel, first, last):
        model = mlinen.bireal_resnet18(
            num_classes=10, width_multiplier=1 / 16, small_input_stem=small
        )
        self.assertEqual(self._linen_stem(model, shape), (kernel, first, last))

    def test_resnet20_stem_is_already_small(self):
        for small in (None, True, False):
            model = mlinen.bireal_resnet20(
                width_multiplier=1 / 8, small_input_stem=small
            )
            self.assertEqual(
                self._linen_stem(model, (2, 28, 28, 1)),
                ((3, 3), (28, 28), (7, 7)),
            )

    @parameterized.parameters(
        ({"input_size": (28, 28)}, (3, 3), 1, True),
        ({"input_size": (32, 32)}, (3, 3), 1, True),
        ({"input_size": (224, 224)}, (7, 7), 2, False),
        ({}, (7, 7), 2, False),  # size unknown: the stem fields
        ({"small_input_stem": True}, (3, 3), 1, True),
        ({"input_size": (28, 28), "small_input_stem": False}, (7, 7), 2, False),
    )
    def test_resnet18_nnx(self, kwargs, kernel, strides, small):
        model = fnnx.eval_shape(
            lambda: mnnx.bireal_resnet18(
                in_features=1,
                num_classes=10,
                width_multiplier=1 / 16,
                **kwargs,
                rngs=fnnx.Rngs(0),
            )
        )
        self.assertEqual(model.stem_conv.kernel.shape[:2], kernel)
        self.assertEqual(model.stem_conv.strides, strides)
        self.assertEqual(model.small_input_stem, small)
        self.assertEqual(model.stem_max_pool, not small)

    def test_invalid(self):
        with self.assertRaisesRegex(
            TypeError, "small_input_stem must be True, False or None"
        ):
            mlinen.bireal_resnet18(small_input_stem="auto")
        with self.assertRaisesRegex(
            TypeError, "small_input_stem must be True, False or None"
        ):
            mnnx.bireal_resnet18(small_input_stem=1, rngs=fnnx.Rngs(0))
        with self.assertRaisesRegex(ValueError, "input_size must be"):
            mnnx.bireal_resnet18(input_size=(28,), rngs=fnnx.Rngs(0))
        # Variables made on small images do not fit large ones.
        model = mlinen.bireal_resnet18(num_classes=10, width_multiplier=1 / 16)
        small = jnp.zeros((1, 28, 28, 3))
        variables = jax.eval_shape(
            lambda k: model.init(k, small, train=False), jax.random.key(0)
        )
        with self.assertRaisesRegex(Exception, "stem_conv"):
            jax.eval_shape(
                lambda v: model.apply(
                    v, jnp.zeros((1, 96, 96, 3)), train=False
                ),
                variables,
            )


class StructureTest(absltest.TestCase):
    def test_resnet_layouts(self):
        r18 = fnnx.eval_shape(lambda: mnnx.bireal_resnet18(rngs=fnnx.Rngs(0)))
        self.assertLen(r18.blocks, 16)
        self.assertEqual(
            [b.strides for b in r18.blocks],
            [1] * 4 + [2, 1, 1, 1] * 3,
        )
        r20 = mnnx.bireal_resnet20(rngs=fnnx.Rngs(0))
        self.assertLen(r20.blocks, 18)
        self.assertEqual(
            [b.shortcut_conv is not None for b in r20.blocks],
            [False] * 6 + ([True] + [False] * 5) * 2,
        )
        self.assertEqual(r20.stem_conv.kernel.shape, (3, 3, 3, 16))
        self.assertEqual(r20.head.kernel.shape, (64, 10))

    def test_real_layers_use_flax_modules(self):
        model = mnnx.BinaryMLP(
            hidden=(4,), binary_last=False, rngs=fnnx.Rngs(0)
        )
        self.assertIsInstance(model.head, fnnx.Linear)
        self.assertIsNone(model.head_norm)
        self.assertIsInstance(model.dense_norm[0], fnnx.BatchNorm)
        self.assertIs(model.dense[0].input_binarizer, None)
        variables = jax.eval_shape(
            lambda k: mlinen.BinaryMLP(hidden=(4,), binary_last=False).init(
                k, jnp.zeros((1, 8)), train=False
            ),
            jax.random.key(0),
        )
        self.assertEqual(set(variables["params"]["head"]), {"kernel", "bias"})
        self.assertNotIn("head_norm", variables["params"])
        self.assertNotIn("bias", variables["params"]["dense_0"])

    def test_odd_sizes_downsample(self):
        # Stride-2 blocks on odd sizes: the shortcut pool matches the conv.
        model = mlinen.bireal_resnet20(stage_features=(4, 8, 8))
        x = jnp.zeros((1, 13, 13, 3))
        shapes = jax.eval_shape(
            lambda k: model.init_with_output(k, x, train=False)[0],
            jax.random.key(0),
        )
        self.assertEqual(shapes.shape, (1, 10))

    def test_dropout(self):
        x = jax.random.normal(jax.random.key(4), (8, 16))
        config = {"hidden": (32,), "binary_activations": False}
        rates = {"input_dropout_rate": 0.5, "dropout_rate": 0.5}
        plain = mlinen.BinaryMLP(**config)
        dropped = mlinen.BinaryMLP(**config, **rates)
        variables = _linen_variables(plain, x)

        @jax.jit
        def run(variables, x):
            train = [
                dropped.apply(
                    variables,
                    x,
                    train=True,
                    rngs={"dropout": jax.random.key(seed)},
                    mutable=["batch_stats"],
                )[0]
                for seed in (0, 1)
            ]
            evals = [
                m.apply(variables, x, train=False) for m in (plain, dropped)
            ]
            return train, evals

        train, evals = run(variables, x)
        self.assertFalse(np.allclose(train[0], train[1]))
        np.testing.assert_array_equal(evals[0], evals[1])

        model = mnnx.BinaryMLP(
            in_features=16, **config, **rates, rngs=fnnx.Rngs(0)
        )
        self.assertIsInstance(model.dropout, fnnx.Dropout)
        first, second = model(x), model(x)  # training mode: new masks
        self.assertFalse(np.allclose(first, second))
        model.eval()
        np.testing.assert_array_equal(model(x), model(x))


if __name__ == "__main__":
    absltest.main()

"""The founding invariance, end to end, on real MNIST.

Train the reference MLP for 300 steps with the scaled sigmoid surrogate, the
mean-absolute-deviation scale and the scale-adaptive update, from initial
latent weights multiplied by c in {1/16, 1, 16} (powers of two, so the scaling
itself is exact). The binary weights' signs after training agree across c;
with the clipped STE and plain Adam they do not.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

import bnnjax
from bnnjax import data
from bnnjax.models import linen as lmodels

MNIST = (
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)
STEPS = 300
BATCH = 100
SCALES = (1 / 16, 1.0, 16.0)


def _train(kernel_binarizer, binary_tx, *, bn_epsilon, images, labels):
    """Final latent signs (and kernels) for each initial scale c."""
    model = lmodels.BinaryMLP(
        hidden=(256, 256),
        binary_activations=False,
        kernel_binarizer=kernel_binarizer,
        bn_epsilon=bn_epsilon,
    )
    init = model.init(jax.random.key(0), jnp.ones((2, 784)), train=False)
    tx = bnnjax.binary_partition(binary_tx, optax.adam(1e-3), init["params"])
    groups = bnnjax.binary_param_labels(init["params"])

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            logits, updates = model.apply(
                {"params": p, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return loss.mean(), updates["batch_stats"]

        (_, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state

    order = np.random.default_rng(0).integers(0, len(images), (STEPS, BATCH))
    kernels = {}
    for c in SCALES:
        params = jax.tree.map(
            lambda p, g, c=c: p * c if g == "binary" else p,
            init["params"],
            groups,
        )
        batch_stats, opt_state = init["batch_stats"], tx.init(params)
        for idx in order:
            params, batch_stats, opt_state = step(
                params, batch_stats, opt_state, images[idx], labels[idx]
            )
        kernels[c] = np.concatenate(
            [
                np.ravel(p)
                for p, g in zip(
                    jax.tree.leaves(params),
                    jax.tree.leaves(groups),
                    strict=True,
                )
                if g == "binary"
            ]
        )
    return kernels


def _agreement(kernels):
    signs = {c: k >= 0 for c, k in kernels.items()}
    return {c: float(np.mean(signs[c] == signs[1.0])) for c in (1 / 16, 16.0)}


@absltest.skipUnless(MNIST.is_dir(), f"real MNIST not found at {MNIST}")
class InvarianceTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        dataset = data.load_dataset(f"idx:{MNIST}")
        cls.images = np.asarray(
            data.flatten(data.to_float(dataset.train_images))
        )
        cls.labels = dataset.train_labels

    def _run(self, kernel_binarizer, binary_tx, bn_epsilon):
        return _train(
            kernel_binarizer,
            binary_tx,
            bn_epsilon=bn_epsilon,
            images=self.images,
            labels=self.labels,
        )

    def test_founding_method_trajectory_scales_exactly(self):
        # With batch norm's epsilon negligible against the activations'
        # variance, the latent trajectory at c * w0 is c times the one at w0,
        # bit for bit: Adam sees the same spread-scaled gradients.
        kernels = self._run(
            bnnjax.Binarizer(axis=-1),
            bnnjax.scale_adaptive(optax.adam(1e-2)),
            bn_epsilon=1e-12,
        )
        for c in (1 / 16, 16.0):
            np.testing.assert_array_equal(
                kernels[c], np.float32(c) * kernels[1.0]
            )
        self.assertEqual(_agreement(kernels), {1 / 16: 1.0, 16.0: 1.0})
        flipped = np.mean((kernels[1.0] >= 0) != (kernels[1 / 16] >= 0))
        self.assertEqual(flipped, 0.0)

    def test_default_batch_norm_epsilon_limits_agreement(self):
        # Any epsilon breaks exactness, and 300 steps of near-zero flips
        # amplify the difference: with BinaryMLP's default bn_epsilon=1e-4
        # we measured 98.1% (c = 1/16) and 98.3% (c = 16) on this CPU.
        agreement = _agreement(
            self._run(
                bnnjax.Binarizer(axis=-1),
                bnnjax.scale_adaptive(optax.adam(1e-2)),
                bn_epsilon=1e-4,
            )
        )
        self.assertGreater(min(agreement.values()), 0.95)

    def test_clipped_ste_with_plain_adam_is_not_invariant(self):
        agreement = _agreement(
            self._run(
                bnnjax.Binarizer(surrogate="clipped_ste", scale=None, axis=-1),
                optax.adam(1e-2),
                bn_epsilon=1e-12,
            )
        )
        self.assertLess(max(agreement.values()), 0.9)


if __name__ == "__main__":
    absltest.main()

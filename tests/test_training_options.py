"""Losses, schedules, weight decay and warm-up of the training harness."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from bnnjax import train
from bnnjax.training import losses, optimization


class LossTest(chex.TestCase):
    LOGITS = np.array([[0.5, -2.0, 1.0], [3.0, 0.0, -0.5]], np.float32)
    LABELS = np.array([0, 2])

    def test_squared_hinge_is_binarynets_formula(self):
        t = np.where(np.eye(3)[self.LABELS] == 1, 1.0, -1.0)
        want = np.mean(np.maximum(0, 1 - t * self.LOGITS) ** 2, axis=-1)
        got = losses.squared_hinge(self.LOGITS, self.LABELS)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        # The first example by hand: (0.5^2 + 0 + 2^2) / 3.
        self.assertAlmostEqual(float(got[0]), (0.25 + 4.0) / 3, places=6)

    def test_label_smoothing_mixes_the_one_hot_target(self):
        a = 0.1
        target = (1 - a) * np.eye(3)[self.LABELS] + a / 3
        log_p = jax.nn.log_softmax(self.LOGITS)
        want = -np.sum(target * np.asarray(log_p), axis=-1)
        got = losses.cross_entropy(self.LOGITS, self.LABELS, label_smoothing=a)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        plain = losses.cross_entropy(self.LOGITS, self.LABELS)
        np.testing.assert_allclose(
            plain, -np.asarray(log_p)[[0, 1], self.LABELS], rtol=1e-6
        )
        self.assertFalse(np.allclose(got, plain))

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_are_the_formulas(self):
        # d/dz mean_k relu(1 - t z)^2 = -2 t relu(1 - t z) / K.
        z = self.LOGITS[:1]
        t = np.array([[1.0, -1.0, -1.0]])
        grad = self.variant(
            jax.grad(lambda z: losses.squared_hinge(z, self.LABELS[:1])[0])
        )(z)
        want = -2 * t * np.maximum(0, 1 - t * z) / 3
        np.testing.assert_allclose(grad, want, rtol=1e-6)

    def test_bfloat16_logits_give_float32_losses(self):
        z = jnp.asarray(self.LOGITS, jnp.bfloat16)
        for name in losses.LOSS_NAMES:
            got = losses.get_loss(name)(z, self.LABELS)
            self.assertEqual(got.dtype, jnp.float32, name)

    def test_get_loss_errors(self):
        with self.assertRaisesRegex(ValueError, "Unknown loss 'hinge'.*"):
            losses.get_loss("hinge")
        with self.assertRaisesRegex(ValueError, "cross_entropy only"):
            losses.get_loss("squared_hinge", label_smoothing=0.1)


class ScheduleTest(parameterized.TestCase):
    def values(self, schedule, steps):
        return [float(schedule(s)) for s in steps]

    def test_exponential_is_binarynets_per_epoch_decay(self):
        # 5 epochs of 10 steps from 1e-3 to 1e-3 * 3e-3: factor r a epoch.
        sched = optimization.make_schedule(
            "exponential",
            1e-3,
            total_steps=50,
            steps_per_epoch=10,
            final_fraction=3e-3,
        )
        r = 3e-3 ** (1 / 5)
        got = self.values(sched, [0, 9, 10, 25, 49])
        want = [1e-3, 1e-3, 1e-3 * r, 1e-3 * r**2, 1e-3 * r**4]
        np.testing.assert_allclose(got, want, rtol=1e-5)

    def test_linear_and_cosine_end_at_the_fraction(self):
        for name in ("linear", "cosine"):
            sched = optimization.make_schedule(
                name,
                0.1,
                total_steps=100,
                steps_per_epoch=10,
                final_fraction=0.01,
            )
            np.testing.assert_allclose(
                self.values(sched, [0, 100]),
                [0.1, 0.001],
                rtol=1e-5,
                err_msg=name,
            )
        lin = optimization.make_schedule(
            "linear", 0.1, total_steps=100, steps_per_epoch=10
        )
        self.assertAlmostEqual(float(lin(25)), 0.075, places=6)
        cos = optimization.make_schedule(
            "cosine", 0.1, total_steps=100, steps_per_epoch=10
        )
        self.assertAlmostEqual(
            float(cos(25)), 0.05 * (1 + math.cos(math.pi / 4)), places=6
        )

    def test_warmup_rises_linearly_then_the_schedule_starts_at_the_peak(self):
        sched = optimization.make_schedule(
            "cosine",
            0.1,
            total_steps=100,
            steps_per_epoch=10,
            warmup_steps=20,
        )
        got = self.values(sched, [0, 10, 20, 60, 100])
        # After warm-up, a cosine over the remaining 80 steps.
        want = [0.0, 0.05, 0.1, 0.05, 0.0]
        np.testing.assert_allclose(got, want, atol=1e-7)
        const = optimization.make_schedule(
            "constant",
            0.1,
            total_steps=100,
            steps_per_epoch=10,
            warmup_steps=10,
            final_fraction=1.0,
        )
        np.testing.assert_allclose(
            self.values(const, [5, 10, 99]), [0.05, 0.1, 0.1], atol=1e-7
        )
        self.assertEqual(
            optimization.make_schedule(
                "constant",
                0.1,
                total_steps=10,
                steps_per_epoch=1,
                final_fraction=1.0,
            ),
            0.1,
        )

    @parameterized.parameters(
        ("exponential", 0.0, r"final_fraction=0.0 with the 'exponential'"),
        ("cosine", 1.5, r"expected a number in \[0, 1\]"),
        ("constant", 0.5, "a constant rate does not decay"),
    )
    def test_bad_fractions(self, name, fraction, message):
        with self.assertRaisesRegex(ValueError, message):
            optimization.make_schedule(
                name,
                0.1,
                total_steps=10,
                steps_per_epoch=1,
                final_fraction=fraction,
            )

    def test_bad_names_and_warmup(self):
        with self.assertRaisesRegex(ValueError, "Unknown schedule 'step'"):
            optimization.make_schedule(
                "step", 0.1, total_steps=10, steps_per_epoch=1
            )
        with self.assertRaisesRegex(ValueError, "warmup_steps=10"):
            optimization.make_schedule(
                "cosine",
                0.1,
                total_steps=10,
                steps_per_epoch=1,
                warmup_steps=10,
            )


class BaseOptimizerTest(absltest.TestCase):
    def update(self, tx):
        w = {"w": jnp.array([1.0, -2.0])}
        g = {"w": jnp.array([0.5, 0.5])}
        updates, _ = tx.update(g, tx.init(w), w)
        return np.asarray(updates["w"])

    def test_sgd_decay_is_an_l2_gradient_term(self):
        tx = optimization.make_base_optimizer("sgd", 0.1, weight_decay=0.01)
        want = -0.1 * (np.array([0.5, 0.5]) + 0.01 * np.array([1.0, -2.0]))
        np.testing.assert_allclose(self.update(tx), want, rtol=1e-6)
        plain = optimization.make_base_optimizer("sgd", 0.1)
        np.testing.assert_allclose(self.update(plain), [-0.05, -0.05])

    def test_adamw_decay_is_decoupled(self):
        tx = optimization.make_base_optimizer("adamw", 0.1, weight_decay=0.01)
        adam = self.update(optax.adam(0.1))
        want = adam - 0.1 * 0.01 * np.array([1.0, -2.0])
        np.testing.assert_allclose(self.update(tx), want, rtol=1e-6)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "Unknown optimizer 'lamb'"):
            optimization.make_base_optimizer("lamb", 0.1)
        with self.assertRaisesRegex(ValueError, "weight_decay=-1"):
            optimization.make_base_optimizer("sgd", 0.1, weight_decay=-1)


class ConfigTest(parameterized.TestCase):
    def test_weight_decay_reaches_the_real_parameters_only(self):
        config = train.TrainConfig(
            model="mlp",
            hidden=(8,),
            method="bnn",
            optimizer="sgd",
            weight_decay=0.5,
        )
        model = config.make_model(10)
        x = jnp.ones((2, 28, 28, 1))
        variables = model.init(jax.random.key(0), x, train=False)
        params = variables["params"]
        tx, _ = config.make_tx(
            config.preset,
            params,
            learning_rate=0.1,
            real_learning_rate=0.1,
            total_steps=10,
        )
        zeros = jax.tree.map(jnp.zeros_like, params)
        updates, _ = tx.update(zeros, tx.init(params), params)
        flat = {
            "/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(updates)
        }
        decayed = [name for name, u in flat.items() if np.any(u != 0)]
        self.assertNotEmpty(decayed)
        for name, u in flat.items():
            if "latent_kernel" in name:
                np.testing.assert_array_equal(u, 0, err_msg=name)
        for name in decayed:  # -lr * wd * w on the real parameters
            leaf = params
            for key in name.split("/"):
                leaf = leaf[key]
            np.testing.assert_allclose(flat[name], -0.05 * leaf, rtol=1e-6)

    def test_defaults_resolve_by_optimizer_and_schedule(self):
        d = train.TrainConfig().to_dict(resolved=True)
        self.assertEqual(d["weight_decay"], 0.0)
        self.assertEqual(d["final_lr_fraction"], 0.0)
        self.assertEqual(d["loss"], "cross_entropy")
        self.assertEqual(d["label_smoothing"], 0.0)
        self.assertEqual(d["warmup_epochs"], 0)
        adamw = train.TrainConfig(optimizer="adamw", schedule="exponential")
        self.assertEqual(adamw.resolved_weight_decay, 1e-4)
        self.assertEqual(adamw.resolved_final_lr_fraction, 3e-3)
        # An old config.json (without the new fields) reads as before.
        old = train.TrainConfig().to_dict(resolved=True)
        for name in (
            "loss",
            "label_smoothing",
            "weight_decay",
            "warmup_epochs",
            "final_lr_fraction",
        ):
            del old[name]
            old["defaults"].pop(name, None)
        self.assertEqual(
            train.TrainConfig.from_dict(old).resolved(),
            train.TrainConfig().resolved(),
        )

    def test_schedule_fn_warms_up_over_whole_epochs(self):
        config = train.TrainConfig(epochs=4, warmup_epochs=1)
        sched = config.schedule_fn(0.1, total_steps=40)
        np.testing.assert_allclose(
            [float(sched(s)) for s in (0, 5, 10, 40)],
            [0.0, 0.05, 0.1, 0.0],
            atol=1e-7,
        )

    @parameterized.parameters(
        (
            {"label_smoothing": 1.0},
            r"label_smoothing=1.0; expected a number "
            r"in \[0, 1\)",
        ),
        (
            {"label_smoothing": 0.1, "loss": "squared_hinge"},
            "applies to loss='cross_entropy' only",
        ),
        ({"loss": "hinge"}, r"loss='hinge'; expected one of"),
        ({"weight_decay": -1e-4}, r"weight_decay=-0.0001"),
        ({"weight_decay": float("nan")}, r"weight_decay=nan"),
        (
            {"warmup_epochs": 3, "epochs": 3},
            r"warmup_epochs=3; expected an "
            r"int in \[0, epochs=3\)",
        ),
        ({"warmup_epochs": 1.5}, r"warmup_epochs=1.5"),
        (
            {"final_lr_fraction": 0.0, "schedule": "exponential"},
            r"expected a number in \(0, 1\]",
        ),
        (
            {"final_lr_fraction": 0.5, "schedule": "constant"},
            "a constant rate does not decay",
        ),
        ({"schedule": "step"}, r"schedule='step'; expected one of"),
    )
    def test_invalid_values_are_named(self, fields, message):
        with self.assertRaisesRegex(ValueError, message):
            train.TrainConfig(**fields)


if __name__ == "__main__":
    absltest.main()

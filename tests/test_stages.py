"""Multi-stage training (``--init-from``) and distillation (``--teacher``)."""

import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from cli_helpers import run_cli
from test_augment import _write_cifar

from bnnjax import data, train
from bnnjax.training import losses, sources
from bnnjax.training import step as step_lib

# One epoch of a 32-wide MLP on the embedded sample: seconds.
SMALL = ["--hidden", "32", "--epochs", "1", "--batch-size", "200"]
SMALL += ["--no-progress"]


def _train(out_dir, *flags):
    status, out, err = run_cli(["train", *SMALL, *flags, "--out", out_dir])
    return status, (json.loads(out) if status == 0 else None), err


class DistillationLossTest(absltest.TestCase):
    def test_value_and_gradient_are_the_formulas(self):
        s = jnp.array([[1.0, -0.5, 2.0], [0.0, 0.0, 0.0]])
        t = jnp.array([[0.5, 1.5, -1.0], [3.0, 0.0, 1.0]])
        for temperature in (1.0, 4.0):
            p_t = jax.nn.softmax(t / temperature)
            p_s = jax.nn.softmax(s / temperature)
            want = temperature**2 * jnp.sum(
                p_t * (jnp.log(p_t) - jnp.log(p_s)), axis=-1
            )
            got = losses.distillation(s, t, temperature=temperature)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

            # d/ds T^2 KL = T (p_s - p_t); none reaches the teacher.
            def total(s, t, temperature=temperature):
                return jnp.sum(
                    losses.distillation(s, t, temperature=temperature)
                )

            grad_s, grad_t = jax.grad(total, argnums=(0, 1))(s, t)
            np.testing.assert_allclose(
                grad_s, temperature * (p_s - p_t), rtol=1e-5, atol=1e-7
            )
            np.testing.assert_array_equal(grad_t, 0)
        np.testing.assert_array_equal(losses.distillation(t, t), 0)


class TeacherStepTest(absltest.TestCase):
    """The distilling step against the loss computed outside it."""

    def setUp(self):
        super().setUp()
        self.config = train.TrainConfig(hidden=(16,), method="bnn")
        images = data.load_dataset("mnist-sample").train_images[:64]
        self.images = jnp.asarray(images)[None]  # seed axis
        self.labels = jnp.asarray(
            data.load_dataset("mnist-sample").train_labels[:64]
        )[None]
        sample = data.to_float(images[:1])
        self.model, self.tx, _, _ = step_lib.build_training(
            self.config, sample, 10, 10
        )
        self.state = step_lib.init_state(self.model, self.tx, [0], sample)
        teacher_config = train.TrainConfig(hidden=(24,), method="float")
        self.teacher_model = teacher_config.make_model(10)
        variables = self.teacher_model.init(
            jax.random.key(5), sample, train=False
        )
        self.teacher_vars = jax.tree.map(lambda a: a[None], dict(variables))

    def step(self, weight, temperature=1.0):
        teacher = step_lib.Teacher(
            self.teacher_model, self.teacher_vars, weight, temperature
        )
        fn = step_lib.make_train_step(self.model, self.tx, teacher=teacher)
        return fn(self.state, self.images, self.labels, jnp.float32(0))

    def test_loss_mixes_labels_and_teacher(self):
        x = data.to_float(self.images[0])
        variables = {
            "params": jax.tree.map(lambda a: a[0], self.state.params),
            "batch_stats": jax.tree.map(lambda a: a[0], self.state.batch_stats),
        }
        logits, _ = self.model.apply(
            variables, x, train=True, progress=0.0, mutable=["batch_stats"]
        )
        teacher_vars = jax.tree.map(lambda a: a[0], self.teacher_vars)
        t_logits = self.teacher_model.apply(
            teacher_vars, x, train=False, progress=1.0
        )
        ce = losses.cross_entropy(logits, self.labels[0])
        kd = losses.distillation(logits, t_logits, temperature=2.0)
        for w in (1.0, 0.25):
            _, metrics = self.step(w, temperature=2.0)
            want = jnp.mean((1 - w) * ce + w * kd)
            np.testing.assert_allclose(metrics["loss"][0], want, rtol=1e-5)

    def test_weight_zero_is_the_plain_step(self):
        plain = step_lib.make_train_step(self.model, self.tx)
        want, _ = plain(self.state, self.images, self.labels, jnp.float32(0))
        got, _ = self.step(0.0)
        jax.tree.map(np.testing.assert_array_equal, got.params, want.params)


class StagesCliTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        _write_cifar(os.path.join(cls.tmp, "cifar"), per_file=100)
        cls.cifar = "cifar:" + os.path.join(cls.tmp, "cifar")
        # Stage 1: binary weights, real activations, seeds 0 and 1.
        cls.stage1 = os.path.join(cls.tmp, "stage1")
        cls.status1, cls.result1, cls.err1 = _train(
            cls.stage1, "--method", "bnn", "--seed", "0,1"
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def path(self, name):
        return os.path.join(self.tmp, name)

    def test_stage1_trained(self):
        self.assertEqual(self.status1, 0, self.err1)

    def test_source_parameters_reach_each_seed(self):
        _, state, _ = train.load_checkpoint(self.stage1)
        source = sources.load_source(self.stage1, seeds=[1], what="--init-from")
        self.assertEqual(source.epoch, 1)
        config = train.TrainConfig(
            hidden=(32,), method="bnn", binary_activations=True, seeds=(1,)
        )
        sample = jnp.zeros((1, 28, 28, 1))
        fresh_model, tx, _, _ = step_lib.build_training(config, sample, 10, 5)
        fresh = step_lib.init_state(fresh_model, tx, [1], sample)
        started = sources.initialize_from(fresh, source)
        want = jax.tree.map(lambda a: a[1:2], state.params)
        jax.tree.map(np.testing.assert_array_equal, started.params, want)
        want_bs = jax.tree.map(lambda a: a[1:2], state.batch_stats)
        jax.tree.map(
            np.testing.assert_array_equal, started.batch_stats, want_bs
        )
        # The optimizer state stays fresh.
        jax.tree.map(
            np.testing.assert_array_equal, started.opt_state, fresh.opt_state
        )

    def test_stage2_fully_binary_from_stage1(self):
        out = self.path("stage2")
        status, result, err = _train(
            out,
            "--method",
            "bnn",
            "--binary-activations",
            "--seed",
            "1",
            "--init-from",
            self.stage1,
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(result["init_from"], self.stage1)
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["init_from"], self.stage1)
        # Resuming a finished stage 2 with more epochs reads its own
        # checkpoint (not the source's parameters again).
        status, result, err = _train(out, "--resume", "--epochs", "2")
        self.assertEqual(status, 0, err)
        self.assertIn("resuming", err)
        self.assertEqual(result["epochs"], 2)

    def test_distillation_from_a_float_teacher(self):
        teacher = self.path("teacher")
        status, _, err = _train(teacher, "--method", "float", "--seed", "7")
        self.assertEqual(status, 0, err)
        out = self.path("student")
        status, result, err = _train(
            out,
            "--teacher",
            teacher,
            "--distill-weight",
            "0.5",
            "--distill-temperature",
            "2",
            "--seed",
            "0,1",
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(result["teacher"], teacher)
        with open(os.path.join(out, "config.json")) as f:
            saved = json.load(f)
        self.assertEqual(
            (saved["teacher"], saved["distill_weight"]), (teacher, 0.5)
        )

    def test_refusals_exit_2_with_one_line(self):
        missing = self.path("nowhere")
        cases = [
            (["--init-from", missing], f"--init-from {missing} does not exist"),
            (
                ["--teacher", self.tmp],
                f"--teacher {self.tmp} is not a bnnjax run directory",
            ),
            (
                ["--init-from", self.stage1, "--seed", "5"],
                "this run's seeds [5] are not among them",
            ),
            (
                ["--init-from", self.stage1, "--hidden", "64"],
                "does not fit this run's network",
            ),
            (["--distill-weight", "0.5"], "name a teacher run"),
            (
                [
                    *("--teacher", self.stage1, "--dataset", self.cifar),
                    *("--val-fraction", "0.2"),
                ],
                "was trained on (28, 28, 1) inputs with 10 classes; this "
                "run's data has (32, 32, 3)",
            ),
        ]
        for flags, message in cases:
            status, _, err = _train(self.path("refused"), *flags)
            self.assertEqual(status, 2, (flags, err))
            self.assertIn(message, err)
            self.assertNotIn("Traceback", err)
        status, _, err = _train(self.stage1, "--init-from", self.stage1)
        self.assertEqual(status, 2, err)
        self.assertIn("is this run's --out", err)


if __name__ == "__main__":
    absltest.main()


class DropoutTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_masks_are_a_function_of_seed_and_step(self):
        config = train.TrainConfig(hidden=(16,), dropout=0.5, input_dropout=0.2)
        sample = jnp.zeros((1, 28, 28, 1))
        model, tx, _, _ = step_lib.build_training(config, sample, 10, 10)
        self.assertEqual(
            (model.dropout_rate, model.input_dropout_rate), (0.5, 0.2)
        )
        state = step_lib.init_state(model, tx, [0, 1], sample)
        fn = step_lib.make_train_step(model, tx, dropout=True, seeds=[0, 1])
        images = jnp.asarray(
            data.load_dataset("mnist-sample").train_images[:32]
        )
        images = jnp.stack([images, images])  # the same batch for both seeds
        labels = jnp.zeros((2, 32), jnp.int32)

        def loss(index):
            _, metrics = fn(state, images, labels, jnp.float32(0), index)
            return np.asarray(metrics["loss"])

        first = loss(jnp.int32(3))
        np.testing.assert_array_equal(first, loss(jnp.int32(3)))
        self.assertFalse(np.array_equal(first, loss(jnp.int32(4))))
        # Seeds 0 and 1 start from other weights, but with the same
        # batch and the same weights they would still differ: their masks
        # are keyed by the seed.
        self.assertNotEqual(first[0], first[1])
        with self.assertRaisesRegex(ValueError, "needs seeds="):
            step_lib.make_train_step(model, tx, dropout=True)

    def test_resumed_run_drops_as_the_uninterrupted_one(self):
        # A constant rate: a run of 1 epoch resumed to 2 then trains as
        # one of 2 epochs (a cosine would span each run's own length).
        flags = ["--dropout", "0.3", "--input-dropout", "0.1"]
        flags += ["--schedule", "constant"]
        whole = os.path.join(self.tmp, "whole")
        status, want, err = _train(whole, *flags, "--epochs", "2")
        self.assertEqual(status, 0, err)
        parts = os.path.join(self.tmp, "parts")
        status, _, err = _train(parts, *flags)  # SMALL: one epoch
        self.assertEqual(status, 0, err)
        status, got, err = _train(parts, "--resume", "--epochs", "2")
        self.assertEqual(status, 0, err)
        for key in ("test_accuracy", "test_loss", "val_loss"):
            self.assertEqual(got[key], want[key], key)
        with open(os.path.join(parts, "config.json")) as f:
            saved = json.load(f)
        self.assertEqual((saved["dropout"], saved["input_dropout"]), (0.3, 0.1))
        # The exported file predicts as the network (dropout is off there).
        status, out, err = run_cli(
            ["export", parts, "-o", os.path.join(self.tmp, "m.bnnjax")]
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out)["prediction_agreement"], 1.0)

    def test_only_the_mlp_has_dropout(self):
        with self.assertRaisesRegex(
            ValueError, "dropout=0.5 with model='cnn'.*only the MLP"
        ):
            train.TrainConfig(model="cnn", dropout=0.5)
        with self.assertRaisesRegex(
            ValueError, r"input_dropout=1.0; .*\[0, 1\)"
        ):
            train.TrainConfig(input_dropout=1.0)

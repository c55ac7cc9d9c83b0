"""Exact accuracies and the per-epoch update ratio of bnnjax.train."""

import json
import os
import shutil
import tempfile
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from bnnjax import checkpoint as ckpt
from bnnjax import data, train
from bnnjax.training import diagnostics, results
from bnnjax.training import step as step_lib


def _setup(seeds=(0,)):
    config = train.TrainConfig(hidden=(16,), seeds=seeds)
    model = train.build_model(config, 10)
    sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
    lr, real_lr = config.learning_rates()
    tx = config.preset.optimizer(
        train.abstract_params(model, sample),
        make_optimizer=config.make_optimizer,
        learning_rate=lr,
        real_learning_rate=real_lr,
    )
    return model, tx, train.init_state(model, tx, seeds, sample)


def _predictions(model, state, seed_index, images):
    one = jax.tree.map(lambda x: x[seed_index], state)
    logits = model.apply(
        {"params": one.params, "batch_stats": one.batch_stats},
        data.to_float(images),
        train=False,
        progress=jnp.float32(1),
    )
    return np.asarray(jnp.argmax(logits, -1))


def _exact(correct, total):
    """The double nearest ``correct / total``, computed from a Fraction."""
    return float(Fraction(int(correct), int(total)))


class EvaluateCountsTest(absltest.TestCase):
    def test_counts_are_exact_and_accuracy_is_their_fraction(self):
        model, _, state = _setup(seeds=(0, 1))
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (7, 8, 8, 1), np.uint8)
        # Labels right for 3 of the 7 examples for seed 0: 3/7 is not a
        # float32 number, so a float32 mean cannot equal it.
        labels = _predictions(model, state, 0, images).astype(np.int32)
        labels[3:] = (labels[3:] + 1) % 10
        want = [
            int(np.sum(_predictions(model, state, i, images) == labels))
            for i in (0, 1)
        ]
        self.assertEqual(want[0], 3)
        eval_step = train.make_eval_step(model)
        for batch_size in (3, 7):
            got = step_lib.evaluate_counts(
                eval_step, state, images, labels, batch_size=batch_size
            )
            self.assertEqual(got.total, 7)
            self.assertTrue(np.issubdtype(got.correct.dtype, np.integer))
            self.assertEqual(got.correct.tolist(), want)
            _, accuracy = train.evaluate(
                eval_step, state, images, labels, batch_size=batch_size
            )
            self.assertEqual(accuracy.dtype, np.float64)
            self.assertEqual(accuracy.tolist(), [w / 7 for w in want])
            self.assertEqual(float(accuracy[0]), _exact(3, 7))

    def test_eval_step_counts_in_int32(self):
        model, _, state = _setup()
        images = np.zeros((4, 8, 8, 1), np.uint8)
        labels = np.zeros(4, np.int32)
        mask = np.array([1, 1, 0, 0], np.float32)
        _, correct = train.make_eval_step(model)(
            state, images, labels, mask, np.float32(1)
        )
        self.assertEqual(correct.dtype, jnp.int32)
        self.assertIn(int(correct[0]), (0, 2))  # padding never counts

    def test_train_step_reports_correct_count(self):
        model, tx, state = _setup()
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (1, 32, 8, 8, 1), np.uint8)
        labels = rng.integers(0, 10, (1, 32)).astype(np.int32)
        step = train.make_train_step(model, tx)
        _, metrics = step(state, images, labels, np.float32(0))
        self.assertEqual(metrics["correct"].dtype, jnp.int32)
        self.assertEqual(metrics["correct"].shape, (1,))
        self.assertEqual(
            int(metrics["correct"][0]),
            round(float(metrics["accuracy"][0]) * 32),
        )


class AccuracyFieldsTest(absltest.TestCase):
    def test_short_exact_decimal_and_counts(self):
        fields = results.accuracy_fields("test", np.int64(963), 1000)
        self.assertEqual(
            json.dumps(fields),
            '{"test_accuracy": 0.963, "test_correct": 963, "test_total": 1000}',
        )
        # What a float32 mean of the same counts prints.
        self.assertNotEqual(float(np.float32(963) / np.float32(1000)), 0.963)

    def test_run_summary_pools_seeds_and_reads_old_records(self):
        config = train.TrainConfig(seeds=(0, 1), epochs=1)
        test = step_lib.Evaluation(
            loss=np.array([0.5, 0.25]), correct=np.array([963, 964]), total=1000
        )
        records = [
            {
                "epoch": 1,
                "seed": seed,
                "val_loss": 0.5,
                "val_accuracy": correct / 600,
                "val_correct": correct,
                "val_total": 600,
                "train_seconds": 1.0,
            }
            for seed, correct in ((0, 581), (1, 582))
        ]
        got = results.run_summary(
            config, records, test=test, steps=10, steps_per_epoch=10
        )
        self.assertEqual(got["test_correct"], 1927)
        self.assertEqual(got["test_total"], 2000)
        self.assertEqual(got["test_accuracy"], _exact(1927, 2000))
        self.assertEqual(got["test_accuracy_per_seed"], [0.963, 0.964])
        self.assertEqual(got["test_correct_per_seed"], [963, 964])
        self.assertEqual(got["test_total_per_seed"], [1000, 1000])
        self.assertEqual(got["val_accuracy"], _exact(1163, 1200))
        self.assertEqual(got["val_correct_per_seed"], [581, 582])
        self.assertEqual(got["test_loss_per_seed"], [0.5, 0.25])
        # A run directory written before the counts were recorded.
        old = [
            {
                k: v
                for k, v in r.items()
                if k not in ("val_correct", "val_total")
            }
            for r in records
        ]
        got = results.run_summary(
            config, old, test=test, steps=10, steps_per_epoch=10
        )
        self.assertEqual(got["val_accuracy_per_seed"], [581 / 600, 582 / 600])
        self.assertNotIn("val_correct", got)


class UpdateRatioTest(absltest.TestCase):
    def test_values_and_errors(self):
        before = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros((2, 2))}
        after = {"a": jnp.array([3.0, 5.25]), "b": jnp.ones((2, 2))}
        total, layers = diagnostics.update_ratio(before, after)
        self.assertEqual(float(layers["a"]), 0.25)
        self.assertEqual(float(layers["b"]), 0.0)  # was zero everywhere
        # sqrt((1.25^2 + 4) / 25)
        self.assertAlmostEqual(float(total), np.sqrt(5.5625 / 25), places=6)
        self.assertEqual(float(diagnostics.update_ratio(before, before)[0]), 0)
        with self.assertRaisesRegex(ValueError, "layers differ"):
            diagnostics.update_ratio(before, {"a": after["a"]})
        with self.assertRaisesRegex(ValueError, "shape"):
            diagnostics.update_ratio(before, {**after, "a": jnp.ones(3)})

    def test_follows_the_step_where_the_window_fraction_does_not(self):
        # The scaled sigmoid's window follows the weights' spread: the
        # fraction inside it is the same for small and large moves, the
        # update ratio is not.
        rule = train.TrainConfig().preset.kernel_binarizer
        v = jax.random.normal(jax.random.key(0), (256, 8))
        noise = jax.random.normal(jax.random.key(1), (256, 8))
        epoch = diagnostics.make_epoch_diagnostics(rule)
        start_fn = diagnostics.make_epoch_start_fn(rule)
        params = {"dense_0": {"latent_kernel": v[None]}}
        start = start_fn(params)
        ratios, fractions = [], []
        for size in (0.3, 0.03, 0.003):
            moved = {"dense_0": {"latent_kernel": (v + size * noise)[None]}}
            metrics, _ = epoch(moved, start, np.float32(0))
            ratios.append(float(metrics["update_ratio"][0]))
            fractions.append(float(metrics["gradient_fraction"][0]))
        np.testing.assert_allclose(ratios, [0.3, 0.03, 0.003], rtol=0.1)
        self.assertLess(max(fractions) - min(fractions), 0.02)


class RunMetricsTest(absltest.TestCase):
    """A tiny two-seed run: every accuracy is its counts' exact fraction."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.out = os.path.join(cls.tmp, "run")
        config = train.TrainConfig(
            hidden=(32,),
            epochs=2,
            batch_size=200,
            seeds=(0, 1),
            out_dir=cls.out,
        )
        cls.result = json.loads(json.dumps(train.run(config, make_plots=False)))
        cls.records = ckpt.read_metrics(cls.out)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_results_json_accuracies_are_exact_fractions(self):
        r = self.result
        for split, per_seed_total in (("test", 1000), ("val", 600)):
            correct = r[f"{split}_correct_per_seed"]
            self.assertEqual(r[f"{split}_total_per_seed"], [per_seed_total] * 2)
            self.assertEqual(r[f"{split}_correct"], sum(correct))
            self.assertEqual(r[f"{split}_total"], 2 * per_seed_total)
            self.assertEqual(
                r[f"{split}_accuracy_per_seed"],
                [_exact(c, per_seed_total) for c in correct],
            )
            self.assertEqual(
                r[f"{split}_accuracy"],
                _exact(sum(correct), 2 * per_seed_total),
            )
        last = [x for x in self.records if x["epoch"] == 2]
        self.assertEqual(
            r["val_correct_per_seed"], [x["val_correct"] for x in last]
        )

    def test_metrics_records_keep_the_counts(self):
        self.assertLen(self.records, 4)
        for record in self.records:
            self.assertEqual(record["train_total"], 27 * 200)
            self.assertEqual(record["val_total"], 600)
            for split in ("train", "val"):
                self.assertIsInstance(record[f"{split}_correct"], int)
                self.assertEqual(
                    record[f"{split}_accuracy"],
                    _exact(
                        record[f"{split}_correct"], record[f"{split}_total"]
                    ),
                )

    def test_update_ratio_is_recorded_and_varies(self):
        for seed in (0, 1):
            ratios = [
                r["update_ratio"] for r in self.records if r["seed"] == seed
            ]
            self.assertLen(ratios, 2)
            self.assertGreater(min(ratios), 0.0)
            self.assertNotEqual(ratios[0], ratios[1])
            layers = self.records[0]["update_ratio_layers"]
            self.assertEqual(sorted(layers), ["dense_0", "head"])


if __name__ == "__main__":
    absltest.main()

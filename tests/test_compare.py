"""Tests for bnnjax.compare, its CLI, the comparison plots and presets."""

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import unittest
from unittest import mock

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import absltest, parameterized
from cli_helpers import captured

import bnnjax
from bnnjax import _cli_compare, data, plots, presets, train
from bnnjax import compare as compare_lib
from bnnjax.binarize import AnnealedScaledSigmoidSurrogate
from bnnjax.compare import TuningGrid
from bnnjax.training import step as step_lib


def _small_dataset(n_train=1000, n_test=300):
    """The first examples of the embedded MNIST sample (fast, real)."""
    full = data.load_dataset("mnist-sample")
    return data.Dataset(
        train_images=full.train_images[:n_train],
        train_labels=full.train_labels[:n_train],
        test_images=full.test_images[:n_test],
        test_labels=full.test_labels[:n_test],
        num_classes=10,
        name="mnist-sample[:1000]",
    )


TINY = dict(hidden=(16,), batch_size=100, eval_batch_size=500)


class CompareTest(parameterized.TestCase):
    """One small comparison, shared by the tests that read its results."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dataset = _small_dataset()
        cls.evaluated = []  # (labels identity, phase marker) per evaluate
        test_labels = cls.dataset.test_labels
        # Every evaluation (train.evaluate too) counts with evaluate_counts.
        original = step_lib.evaluate_counts

        def spy(eval_step, state, images, labels, **kwargs):
            cls.evaluated.append("test" if labels is test_labels else "val")
            return original(eval_step, state, images, labels, **kwargs)

        cls.finished = []
        with mock.patch.object(step_lib, "evaluate_counts", spy):
            cls.result = compare_lib.compare(
                ["bnn", compare_lib.MethodSpec(name="float", label="ceiling")],
                dataset=cls.dataset,
                epochs=2,
                seeds=(0, 1),
                tune_epochs=1,
                grids={
                    "bnn": TuningGrid(learning_rates=(1e-4, 1e-2)),
                    "ceiling": TuningGrid(learning_rates=(1e-3, 3e-3, 1e-2)),
                },
                tune="lr",
                target_accuracy=0.3,
                on_run=cls.finished.append,
                **TINY,
            )

    def test_protocol_runs_in_order(self):
        phases = [(r.method, r.phase, r.learning_rate) for r in self.finished]
        self.assertEqual(
            phases,
            [
                ("bnn", "tune", 1e-4),
                ("bnn", "tune", 1e-2),
                ("bnn", "final", phases[2][2]),
                ("ceiling", "tune", 1e-3),
                ("ceiling", "tune", 3e-3),
                ("ceiling", "tune", 1e-2),
                ("ceiling", "final", phases[6][2]),
            ],
        )
        self.assertEqual(list(self.result.runs), self.finished)
        for run in self.finished:
            tuning = run.phase == "tune"
            self.assertEqual(run.seeds, (1000,) if tuning else (0, 1))
            self.assertEqual(run.epochs, 1 if tuning else 2)
            self.assertLen(run.val_accuracy, len(run.seeds))
            for curve in run.val_accuracy:
                self.assertLen(curve, run.epochs)
            self.assertLen(run.epoch_seconds, run.epochs)
            self.assertGreater(run.compile_seconds, 0)

    def test_test_split_is_evaluated_only_at_the_end_of_final_runs(self):
        for run in self.finished:
            if run.phase == "tune":
                self.assertIsNone(run.test_accuracy)
                self.assertIsNone(run.test_loss)
            else:
                self.assertLen(run.test_accuracy, 2)
        # Per run: one validation pass per epoch, then (final) one test pass.
        expected = []
        for run in self.finished:
            expected += ["val"] * run.epochs
            if run.phase == "final":
                expected.append("test")
        self.assertEqual(self.evaluated, expected)

    def test_chooses_the_best_validation_candidate(self):
        for method in self.result.methods:
            scores = [t["val_accuracy"] for t in method.tuning]
            best = method.tuning[int(np.argmax(scores))]
            self.assertEqual(method.learning_rate, best["learning_rate"])
            tune_runs = [
                r
                for r in self.finished
                if r.method == method.method and r.phase == "tune"
            ]
            self.assertEqual(scores, [r.val_accuracy[0][-1] for r in tune_runs])
        bnn = self.result.method("bnn")
        self.assertFalse(bnn.at_grid_edge)  # two learning rates: no edge
        ceiling = self.result.method("ceiling")
        self.assertEqual(ceiling.name, "float")
        self.assertEqual(
            ceiling.at_grid_edge,
            ceiling.learning_rate in (1e-3, 1e-2),
        )

    def test_summary_statistics(self):
        for method in self.result.methods:
            final = next(
                r
                for r in self.finished
                if r.method == method.method and r.phase == "final"
            )
            per_seed = final.test_accuracy
            self.assertEqual(method.test_accuracy_per_seed, per_seed)
            self.assertAlmostEqual(
                method.test_accuracy_mean, np.mean(per_seed), places=12
            )
            self.assertAlmostEqual(
                method.test_accuracy_std,
                np.std(per_seed, ddof=1),
                places=12,
            )
            last = [c[-1] for c in final.val_accuracy]
            self.assertAlmostEqual(method.val_accuracy_mean, np.mean(last))
            self.assertAlmostEqual(
                method.train_seconds, sum(final.epoch_seconds) / 2
            )
            for seed_index, epoch in enumerate(
                method.epochs_to_target_per_seed
            ):
                curve = final.val_accuracy[seed_index]
                if epoch is None:
                    self.assertLess(max(curve), 0.3)
                else:
                    self.assertGreaterEqual(curve[epoch - 1], 0.3)
                    self.assertTrue(all(v < 0.3 for v in curve[: epoch - 1]))
                    self.assertAlmostEqual(
                        method.seconds_to_target_per_seed[seed_index],
                        sum(final.epoch_seconds[:epoch]) / 2,
                    )
            self.assertGreater(method.test_accuracy_mean, 0.3)

    def test_flip_ratio_only_for_binary_methods(self):
        bnn_final = next(
            r for r in self.finished if r.method == "bnn" and r.phase == "final"
        )
        for curve in bnn_final.flip_ratio:
            self.assertTrue(all(0 < v < 1 for v in curve))
        ceiling_final = next(
            r
            for r in self.finished
            if r.method == "ceiling" and r.phase == "final"
        )
        self.assertIsNone(ceiling_final.flip_ratio)

    def test_records_are_json_lines(self):
        records = self.result.records()
        self.assertEqual(records[0]["kind"], "settings")
        self.assertEqual(records[0]["seeds"], [0, 1])
        self.assertEqual(records[0]["tune_seeds"], [1000])
        self.assertIn("jax", records[0]["versions"])
        self.assertEqual(
            records[0]["candidates"]["bnn"],
            [
                {"learning_rate": 1e-4, "options": {}},
                {"learning_rate": 1e-2, "options": {}},
            ],
        )
        runs = [r for r in records if r["kind"] == "run"]
        self.assertLen(runs, 2 * 1 + 2 + 3 * 1 + 2)  # one per run and seed
        methods = [r for r in records if r["kind"] == "method"]
        self.assertEqual([m["method"] for m in methods], ["bnn", "ceiling"])
        for m in methods:
            for key in ("test_accuracy_mean", "test_accuracy_std", "tuning"):
                self.assertIn(key, m)
        for line in records:
            self.assertEqual(json.loads(json.dumps(line)), line)

    def test_table(self):
        table = self.result.table()
        lines = table.splitlines()
        self.assertLen(lines, 4)
        self.assertIn("epochs to 30% val", lines[0])
        bnn = self.result.method("bnn")
        self.assertIn(
            f"{100 * bnn.test_accuracy_mean:.2f} ± "
            f"{100 * bnn.test_accuracy_std:.2f}%",
            lines[2],
        )
        self.assertTrue(lines[3].startswith("| ceiling |"))

    def test_plots(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        paths = self.result.plot(tmp, prefix="x_")
        names = sorted(os.path.basename(p) for p in paths)
        self.assertEqual(
            names,
            ["x_flip_ratio.png", "x_test_accuracy.png", "x_val_accuracy.png"],
        )
        for path in paths:
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_unknown_label(self):
        with self.assertRaisesRegex(KeyError, r"'nope'.*'bnn', 'ceiling'"):
            self.result.method("nope")


class CompareMatchesTrainTest(absltest.TestCase):
    def test_final_run_equals_train_run(self):
        # Same preset, learning rate, seeds and budget: compare's final run
        # is the run bnnjax.train.run makes (step, data order, evaluation).
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        settings = dict(hidden=(16,), epochs=2, batch_size=200)
        expected = train.run(
            train.TrainConfig(
                method="irnet",
                seeds=(3, 1),
                learning_rate=3e-3,
                out_dir=tmp,
                **settings,
            ),
            make_plots=False,
        )
        with open(os.path.join(tmp, "metrics.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
        result = compare_lib.compare(
            ["irnet"],
            seeds=(3, 1),
            tune="lr",
            grids={"irnet": TuningGrid(learning_rates=(3e-3,))},
            **settings,
        )
        self.assertLen(result.runs, 1)  # one candidate: no tuning run
        method = result.methods[0]
        self.assertEqual(method.learning_rate, 3e-3)
        self.assertEqual(
            method.test_accuracy_per_seed, expected["test_accuracy_per_seed"]
        )
        run = result.runs[0]
        for i, seed in enumerate((3, 1)):
            rows = [m for m in metrics if m["seed"] == seed]
            self.assertEqual(
                run.val_accuracy[i], [m["val_accuracy"] for m in rows]
            )
            np.testing.assert_allclose(
                run.flip_ratio[i], [m["flip_ratio"] for m in rows], rtol=1e-6
            )
            np.testing.assert_allclose(
                run.train_loss[i], [m["train_loss"] for m in rows], rtol=1e-6
            )

    def _assert_final_run_equals_train_run(self, method, lr, seed, **settings):
        """compare's final run of one method at one learning rate gives the
        test and last validation accuracy ``bnnjax.train.run`` gives;
        returns compare's result."""
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        expected = train.run(
            train.TrainConfig(
                method=method,
                seeds=(seed,),
                learning_rate=lr,
                out_dir=tmp,
                **settings,
            ),
            make_plots=False,
        )
        result = compare_lib.compare(
            [method],
            seeds=(seed,),
            tune="lr",
            grids={method: TuningGrid(learning_rates=(lr,))},
            **settings,
        )
        self.assertEqual(
            result.methods[0].test_accuracy_per_seed,
            expected["test_accuracy_per_seed"],
        )
        self.assertEqual(
            result.runs[0].val_accuracy[0][-1],
            expected["val_accuracy_per_seed"][0],
        )
        return result

    def test_augmented_cnn_final_run_equals_train_run(self):
        # The width and the on-device augmentation (a function of seed and
        # step) reach compare's runs as they reach bnnjax.train.run's.
        result = self._assert_final_run_equals_train_run(
            "bnn",
            1e-3,
            2,
            model="cnn",
            width=0.0625,
            augment="shift",
            epochs=1,
            batch_size=540,
        )
        self.assertEqual(result.settings["width"], 0.0625)
        self.assertEqual(result.settings["augment"], "shift")

    @pytest.mark.slow
    def test_reactnet_final_run_equals_train_run(self):
        # compare builds --model reactnet (RSign, RPReLU, real stem) as
        # bnnjax.train.run does, with the method's rule in its blocks.
        # Slow: two ReActNet compilations, about 2 CPU-minutes.
        result = self._assert_final_run_equals_train_run(
            "scaled_sigmoid",
            3e-2,
            1,
            model="reactnet",
            width=0.0625,
            epochs=1,
            batch_size=1080,
        )
        self.assertEqual(result.settings["model"], "reactnet")


class CompareArgumentsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("unknown_method", dict(methods=["nope"]), ValueError, r"'nope'.*bnn"),
        ("empty", dict(methods=[]), ValueError, "empty"),
        ("string", dict(methods="bnn"), TypeError, "sequence"),
        ("object", dict(methods=[3]), TypeError, "MethodSpec or a Preset"),
        ("duplicate", dict(methods=["bnn", "bnn"]), ValueError, "more than"),
        ("tune", dict(tune="all"), ValueError, r"tune='all'.*'grid'"),
        ("seeds", dict(seeds=(0, 0)), ValueError, "distinct"),
        ("seeds_type", dict(seeds="0"), TypeError, "sequence"),
        ("tune_epochs", dict(tune_epochs=0), ValueError, "tune_epochs"),
        ("target", dict(target_accuracy=1.5), ValueError, r"\(0, 1\]"),
        ("epochs", dict(epochs=0), ValueError, "epochs"),
        ("model", dict(model="vgg"), ValueError, "model"),
        (
            "grid_label",
            dict(grids={"xnor": TuningGrid(learning_rates=(1.0,))}),
            ValueError,
            r"\['xnor'\] match no method",
        ),
        ("grid_type", dict(grids={"bnn": (1e-3,)}), TypeError, "TuningGrid"),
        ("dataset", dict(dataset=3), TypeError, "dataset"),
    )
    def test_rejects(self, overrides, error, pattern):
        kwargs = {"methods": ["bnn"], **overrides}
        with self.assertRaisesRegex(error, pattern):
            compare_lib.compare(**kwargs)

    def test_batch_larger_than_the_data(self):
        with self.assertRaisesRegex(ValueError, r"batch_size=6000 is larger"):
            compare_lib.compare(["bnn"], batch_size=6000, hidden=(8,))

    def test_preset_objects_tune_around_their_learning_rate(self):
        preset = presets.get_preset("xnor")
        preset = presets.Preset(
            **{
                **{f: getattr(preset, f) for f in preset.__dataclass_fields__},
                "name": "mine",
                "learning_rate": 3e-3,
            }
        )
        result = compare_lib.compare(
            [preset],
            dataset=_small_dataset(n_train=600, n_test=100),
            epochs=1,
            seeds=(0,),
            tune="lr",
            **TINY,
        )
        tuned = [r.learning_rate for r in result.runs if r.phase == "tune"]
        np.testing.assert_allclose(tuned, [1e-3, 3e-3, 9e-3])
        self.assertEqual(result.methods[0].method, "mine")
        self.assertIsNone(result.methods[0].test_accuracy_std)  # one seed
        with self.assertRaisesRegex(ValueError, "no factory options"):
            compare_lib.compare(
                [preset],
                grids={
                    "mine": TuningGrid(
                        learning_rates=(1e-3,), options={"k": (1.0,)}
                    )
                },
            )

    def test_grid_searches_options(self):
        spec = compare_lib.MethodSpec(
            name="scaled_sigmoid", options={"scale": "mean_abs"}
        )
        self.assertEqual(spec.label, "scaled_sigmoid:scale=mean_abs")
        result = compare_lib.compare(
            [spec],
            dataset=_small_dataset(n_train=600, n_test=100),
            epochs=1,
            seeds=(0,),
            grids={
                spec.label: TuningGrid(
                    learning_rates=(3e-2,), options={"k": (2.0, 4.0)}
                )
            },
            **TINY,
        )
        options = [r.options for r in result.runs]
        self.assertEqual(
            options[:2],
            [{"scale": "mean_abs", "k": 2.0}, {"scale": "mean_abs", "k": 4.0}],
        )
        chosen = result.methods[0]
        self.assertEqual(options[2], chosen.options)
        self.assertIn(chosen.options["k"], (2.0, 4.0))


class HelpersTest(absltest.TestCase):
    def test_to_target(self):
        self.assertEqual(
            compare_lib._to_target([0.5, 0.8, 0.9], [4.0, 2.0, 2.0], 0.8, 2),
            (2, 3.0),
        )
        self.assertEqual(
            compare_lib._to_target([0.5, 0.7], [1.0, 1.0], 0.8, 1),
            (None, None),
        )

    def test_mean_std_is_the_sample_std(self):
        mean, std = compare_lib._mean_std([0.9, 0.92, 0.94])
        self.assertAlmostEqual(mean, 0.92)
        self.assertAlmostEqual(std, 0.02)
        self.assertEqual(compare_lib._mean_std([0.5]), (0.5, None))

    def test_method_spec(self):
        spec = compare_lib.MethodSpec(
            name="scaled_sigmoid", options={"k": 4.0, "scale_adaptive": False}
        )
        self.assertEqual(spec.label, "scaled_sigmoid:k=4:scale_adaptive=false")
        preset = spec.preset()
        self.assertEqual(preset.kernel_binarizer.surrogate.k, 4.0)
        self.assertEqual(preset.learning_rate, 1e-3)
        self.assertEqual(
            compare_lib.MethodSpec(name="bnn", label="BNN").label, "BNN"
        )
        with self.assertRaisesRegex(ValueError, "label"):
            compare_lib.MethodSpec(name="bnn", label="")
        with self.assertRaisesRegex(TypeError, "mapping"):
            compare_lib.MethodSpec(name="bnn", options=[("k", 1)])
        with self.assertRaisesRegex(ValueError, "must be finite and > 0"):
            compare_lib.MethodSpec(name="scaled_sigmoid", options={"k": -1.0})


class PresetOptionsTest(parameterized.TestCase):
    def test_method_names(self):
        self.assertEqual(
            presets.METHOD_NAMES,
            (*presets.PRESET_NAMES, "sigmoid", "scaled_sigmoid_annealed"),
        )
        self.assertEqual(compare_lib.DEFAULT_METHODS, presets.METHOD_NAMES)

    def test_defaults_are_the_registered_presets(self):
        founding = presets.get_preset("scaled_sigmoid")
        self.assertEqual(
            founding.kernel_binarizer,
            bnnjax.Binarizer(
                surrogate="scaled_sigmoid", scale="mean_abs_dev", axis=-1
            ),
        )
        self.assertEqual(founding.learning_rate, 3e-2)
        self.assertEqual(
            presets.method_options("scaled_sigmoid"),
            {"k": 2.0, "scale": "mean_abs_dev", "scale_adaptive": True},
        )
        self.assertEqual(presets.method_options("bnn"), {})
        self.assertEqual(presets.method_options("irnet"), {"standardize": True})
        with self.assertRaisesRegex(TypeError, "standardize must be True"):
            presets.get_preset("irnet", standardize="no")

    def test_founding_ablations_change_one_part(self):
        base = presets.get_preset("scaled_sigmoid")
        mean_abs = presets.get_preset("scaled_sigmoid", scale="mean_abs")
        self.assertEqual(mean_abs.kernel_binarizer.scale, bnnjax.MeanAbsScale())
        self.assertEqual(
            mean_abs.kernel_binarizer.surrogate,
            base.kernel_binarizer.surrogate,
        )
        self.assertIs(mean_abs.binary_transform, base.binary_transform)
        none = presets.get_preset("scaled_sigmoid", scale="none")
        self.assertEqual(none.kernel_binarizer.scale, bnnjax.NoScale())
        plain = presets.get_preset("scaled_sigmoid", scale_adaptive=False)
        self.assertEqual(plain.kernel_binarizer, base.kernel_binarizer)
        self.assertIsNot(plain.binary_transform, base.binary_transform)
        sharp = presets.get_preset("scaled_sigmoid", k=4.0)
        self.assertEqual(
            sharp.activation_binarizer.surrogate,
            bnnjax.ScaledSigmoidSurrogate(k=4.0),
        )
        fixed = presets.get_preset("sigmoid", beta=25.0)
        self.assertEqual(
            fixed.kernel_binarizer,
            bnnjax.Binarizer(
                surrogate=bnnjax.SigmoidSurrogate(beta=25.0),
                scale="mean_abs_dev",
                axis=-1,
            ),
        )
        self.assertIs(fixed.binary_transform, base.binary_transform)
        self.assertEqual(
            presets.get_preset(
                "bnn_plus", beta=10.0
            ).kernel_binarizer.surrogate,
            bnnjax.SwishSignSurrogate(beta=10.0),
        )

    def test_bop_threshold_reaches_the_optimizer(self):
        w = {"k": jnp.ones(3)}
        g = {"k": jnp.array([1e-7, 1e-5, -1.0])}  # gamma = 1: m = g
        for threshold, flips in ((1e-8, [-2.0, -2.0, 0.0]), (1e-6, [0, -2, 0])):
            preset = presets.get_preset("bop", threshold=threshold)
            tx = preset.binary_transform(optax.adam, 1.0)
            updates, _ = tx.update(g, tx.init(w), w)
            np.testing.assert_array_equal(updates["k"], flips)

    @parameterized.named_parameters(
        ("unknown", "nope", {}, ValueError, r"'nope'.*'sigmoid'"),
        ("option", "bnn", {"k": 1.0}, ValueError, r"\['k'\].*none"),
        ("scale", "scaled_sigmoid", {"scale": "l2"}, ValueError, "l2"),
        ("switch", "scaled_sigmoid", {"scale_adaptive": 1}, TypeError, "True"),
        ("beta", "sigmoid", {"beta": 0.0}, ValueError, "beta"),
        ("threshold", "bop", {"threshold": -1.0}, ValueError, "threshold"),
        ("nan", "bop", {"threshold": math.nan}, ValueError, "threshold"),
    )
    def test_bad_options(self, name, options, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            presets.get_preset(name, **options)

    def test_tuning_grids(self):
        grid = compare_lib.tuning_grid("scaled_sigmoid")
        self.assertEqual(
            grid.learning_rates, compare_lib.SCALE_ADAPTIVE_LEARNING_RATES
        )
        self.assertEqual(dict(grid.options), {"k": (2.0, 4.0)})
        self.assertLen(grid.candidates(), 8)
        plain = compare_lib.tuning_grid("scaled_sigmoid", scale_adaptive=False)
        self.assertEqual(plain.learning_rates, compare_lib.ADAM_LEARNING_RATES)
        self.assertEqual(dict(compare_lib.tuning_grid("bnn").options), {})
        self.assertEqual(
            compare_lib.tuning_grid("bop").learning_rates,
            compare_lib.BOP_GAMMAS,
        )
        self.assertEqual(
            dict(compare_lib.tuning_grid("sigmoid", beta=5.0).options), {}
        )
        for name in presets.METHOD_NAMES:
            grid = compare_lib.tuning_grid(name)
            default = presets.get_preset(name).learning_rate
            self.assertIn(default, grid.learning_rates, name)
            for option, values in grid.options.items():
                self.assertEqual(
                    values[0], presets.method_options(name)[option]
                )

    def test_annealed_preset(self):
        preset = presets.get_preset("scaled_sigmoid_annealed", k_end=32.0)
        self.assertEqual(
            preset.kernel_binarizer,
            bnnjax.Binarizer(
                surrogate=AnnealedScaledSigmoidSurrogate(k_end=32.0),
                scale="mean_abs_dev",
                axis=-1,
            ),
        )
        self.assertIs(
            preset.binary_transform,
            presets.get_preset("scaled_sigmoid").binary_transform,
        )
        self.assertEqual(
            dict(compare_lib.tuning_grid("scaled_sigmoid_annealed").options),
            {"k_end": (8.0, 32.0)},
        )

    def test_grid_names_moved_to_compare(self):
        for name in (
            "ADAM_LEARNING_RATES",
            "BOP_GAMMAS",
            "SCALE_ADAPTIVE_LEARNING_RATES",
            "TuningGrid",
            "tuning_grid",
        ):
            with self.assertWarnsRegex(DeprecationWarning, "bnnjax.compare"):
                old = getattr(presets, name)
            self.assertIs(old, getattr(compare_lib, name))
            self.assertNotIn(name, presets.__all__)
            self.assertIn(name, compare_lib.__all__)
        with self.assertRaises(AttributeError):
            presets.no_such_name  # noqa: B018

    def test_tuning_grid_candidates(self):
        grid = TuningGrid(learning_rates=(1.0, 2.0), options={"a": (3, 4)})
        self.assertEqual(
            grid.candidates(),
            [
                (1.0, {"a": 3}),
                (2.0, {"a": 3}),
                (1.0, {"a": 4}),
                (2.0, {"a": 4}),
            ],
        )
        with self.assertRaises(TypeError):
            grid.options["b"] = (1,)  # read-only

    @parameterized.named_parameters(
        ("empty", dict(learning_rates=()), ValueError, "one or more"),
        ("negative", dict(learning_rates=(-1.0,)), ValueError, "> 0"),
        ("dup", dict(learning_rates=(1.0, 1.0)), ValueError, "duplicates"),
        ("string", dict(learning_rates="1e-3"), TypeError, "sequence"),
        (
            "options",
            dict(learning_rates=(1.0,), options={"k": ()}),
            ValueError,
            "empty",
        ),
        (
            "option_type",
            dict(learning_rates=(1.0,), options={"k": 2.0}),
            TypeError,
            "sequence",
        ),
    )
    def test_bad_grid(self, kwargs, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            TuningGrid(**kwargs)


class PlotComparisonTest(absltest.TestCase):
    def test_float_only_has_no_flip_plot(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        records = [
            {
                "method": "float",
                "seed": s,
                "val_accuracy": [0.9, 0.95],
                "flip_ratio": None,
                "test_accuracy": 0.94 + 0.01 * s,
            }
            for s in (0, 1)
        ]
        paths = plots.plot_comparison(records, os.path.join(tmp, "new"))
        self.assertEqual(
            sorted(os.path.basename(p) for p in paths),
            ["test_accuracy.png", "val_accuracy.png"],
        )
        with self.assertRaisesRegex(ValueError, "no records"):
            plots.plot_comparison([], tmp)


def _parser():
    parser = argparse.ArgumentParser(prog="bnnjax compare")
    _cli_compare.add_compare_arguments(parser)
    return parser


def _run(argv):
    return captured(
        lambda: _cli_compare.run_compare(_parser().parse_args(argv))
    )


def _cli_has_compare():
    from bnnjax import cli

    parser = cli._build_parser()
    commands = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    return "compare" in commands.choices


FAST = ["--hidden", "16", "--epochs", "1", "--batch-size", "500"]


class CliCompareTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_one_json_line_per_method_and_files(self):
        out = os.path.join(self.tmp, "cmp")
        status, stdout, stderr = _run(
            [
                "--methods",
                "bnn,scaled_sigmoid:k=4",
                "--seeds",
                "2",
                "--tune",
                "none",
                "--out",
                out,
                *FAST,
            ]
        )
        self.assertEqual(status, 0, stderr)
        lines = [json.loads(line) for line in stdout.splitlines()]
        self.assertEqual(
            [line["method"] for line in lines], ["bnn", "scaled_sigmoid:k=4"]
        )
        for line in lines:
            self.assertEqual(line["seeds"], [0, 1])
            self.assertLen(line["test_accuracy_per_seed"], 2)
            self.assertAlmostEqual(
                line["test_accuracy_mean"],
                np.mean(line["test_accuracy_per_seed"]),
            )
            self.assertAlmostEqual(
                line["test_accuracy_std"],
                np.std(line["test_accuracy_per_seed"], ddof=1),
            )
            self.assertEqual(line["dataset"], "mnist-sample")
            self.assertIn("device", line)
        self.assertEqual(lines[1]["options"], {"k": 4.0})
        self.assertIn("[final] bnn: lr 0.001", stderr)
        self.assertIn("| scaled_sigmoid:k=4 | 0.03, k=4 |", stderr)
        self.assertEqual(
            sorted(os.listdir(out)),
            [
                "flip_ratio.png",
                "results.jsonl",
                "runs.jsonl",
                "table.md",
                "test_accuracy.png",
                "val_accuracy.png",
            ],
        )
        with open(os.path.join(out, "runs.jsonl")) as f:
            runs = [json.loads(line) for line in f]
        self.assertEqual(runs[0]["kind"], "settings")
        self.assertEqual(runs[0]["methods"], ["bnn", "scaled_sigmoid:k=4"])
        self.assertEqual(
            [(r["method"], r["seed"]) for r in runs[1:]],
            [
                ("bnn", 0),
                ("bnn", 1),
                ("scaled_sigmoid:k=4", 0),
                ("scaled_sigmoid:k=4", 1),
            ],
        )
        with open(os.path.join(out, "results.jsonl")) as f:
            self.assertEqual([json.loads(line) for line in f], lines)

    def test_lr_grid_replaces_the_declared_learning_rates(self):
        status, stdout, stderr = _run(
            [
                "--methods",
                "sigmoid:beta=25,bnn",
                "--seeds",
                "1",
                "--lr-grid",
                "0.02,0.05",
                "--tune-epochs",
                "1",
                *FAST,
            ]
        )
        self.assertEqual(status, 0, stderr)
        lines = [json.loads(line) for line in stdout.splitlines()]
        for line in lines:
            self.assertEqual(
                [t["learning_rate"] for t in line["tuning"]], [0.02, 0.05]
            )
            self.assertIn(line["learning_rate"], (0.02, 0.05))
        self.assertEqual(lines[0]["options"], {"beta": 25.0})

    def test_refuses_a_non_empty_out(self):
        with open(os.path.join(self.tmp, "x"), "w") as f:
            f.write("x")
        status, stdout, stderr = _run(["--methods", "bnn", "--out", self.tmp])
        self.assertEqual(status, 1)
        self.assertEqual(stdout, "")
        self.assertIn("not an empty directory", stderr)

    @parameterized.named_parameters(
        ("method", ["--methods", "bnn,nope"], r"unknown method 'nope'"),
        ("option", ["--methods", "bnn:k=2"], r"unknown option 'k'.*none"),
        ("number", ["--methods", "sigmoid:beta=big"], "expected a number"),
        (
            "switch",
            ["--methods", "scaled_sigmoid:scale_adaptive=maybe"],
            "true",
        ),
        ("syntax", ["--methods", "scaled_sigmoid:k"], "option=value"),
        ("twice", ["--methods", "sigmoid:beta=1:beta=2"], "twice"),
        ("seeds", ["--seeds", "0"], "positive integer"),
        ("target", ["--target-accuracy", "95"], r"\(0, 1\]"),
        ("lr_grid", ["--lr-grid", "0.1,0.1"], "distinct"),
    )
    def test_bad_flags_exit_2(self, argv, pattern):
        status, stdout, stderr = _run(argv)
        self.assertEqual(status, 2)
        self.assertEqual(stdout, "")
        self.assertRegex(stderr, pattern)

    def test_bad_scale_value_exits_2(self):
        status, _, stderr = _run(
            ["--methods", "scaled_sigmoid:scale=l2", *FAST]
        )
        self.assertEqual(status, 2)
        self.assertIn("'l2'", stderr)

    def test_hidden_with_another_model_exits_2(self):
        status, _, stderr = _run(["--model", "cnn", "--hidden", "8"])
        self.assertEqual(status, 2)
        self.assertIn("--hidden", stderr)

    def test_parse_method(self):
        spec = _cli_compare.parse_method("scaled_sigmoid:k=4:scale=none")
        self.assertEqual(spec.options, {"k": 4.0, "scale": "none"})
        self.assertEqual(spec.label, "scaled_sigmoid:k=4:scale=none")
        spec = _cli_compare.parse_method("scaled_sigmoid:scale_adaptive=off")
        self.assertEqual(spec.options, {"scale_adaptive": False})
        self.assertEqual(_cli_compare.parse_method("bop").options, {})

    def test_help(self):
        status, stdout, _ = _run(["--help"])
        self.assertEqual(status, 0)
        self.assertIn("scaled_sigmoid k=2, scale=mean_abs_dev", stdout)
        self.assertIn("(default: 10)", stdout)

    @unittest.skipUnless(_cli_has_compare(), "bnnjax compare not wired yet")
    def test_bnnjax_compare_command(self):
        from bnnjax import cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(
                [
                    "compare",
                    "--methods",
                    "bnn",
                    "--seeds",
                    "2",
                    "--tune",
                    "none",
                    "--no-progress",
                    *FAST,
                ]
            )
        self.assertEqual(status, 0, err.getvalue())
        (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
        self.assertEqual(line["method"], "bnn")
        self.assertIsInstance(line["test_accuracy_std"], float)


if __name__ == "__main__":
    absltest.main()

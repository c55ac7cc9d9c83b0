"""Tests for ``bnnjax compare``: which seeds, the memory estimate and its
refusal, the plan and time-left messages, ``--data-dir``, the shared
option printer and exact test accuracies."""

import json
import os
import shutil
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from cli_helpers import run_cli

from bnnjax import _argtypes, _cli_compare, _compare_train, data, presets, train
from bnnjax import compare as compare_lib

FAST = ["--hidden", "16", "--epochs", "1", "--batch-size", "500"]


def _compare(*argv):
    return run_cli(["compare", *argv])


def _one_line_error(test, err, *patterns):
    """stderr is the error line plus the --help pointer, and no traceback."""
    lines = err.strip().splitlines()
    test.assertLessEqual(len(lines), 3, err)
    test.assertNotIn("Traceback", err)
    test.assertNotIn("Errno", err)
    for pattern in patterns:
        test.assertRegex(err, pattern)


class SeedsTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_seed_list_chooses_the_seeds_and_accuracies_are_exact(self):
        out = os.path.join(self.tmp, "cmp")
        status, stdout, stderr = _compare(
            "--methods", "bnn", "--seed-list", "5,3", "--tune", "none",
            "--out", out, *FAST,
        )  # fmt: skip
        self.assertEqual(status, 0, stderr)
        (line,) = [json.loads(x) for x in stdout.splitlines()]
        self.assertEqual(line["seeds"], [5, 3])
        self.assertEqual(line["test_total"], 1000)  # the sample's test split
        self.assertLen(line["test_correct_per_seed"], 2)
        for correct, accuracy in zip(
            line["test_correct_per_seed"],
            line["test_accuracy_per_seed"],
            strict=True,
        ):
            self.assertIsInstance(correct, int)
            # The double nearest the fraction: 963 of 1000 is 0.963.
            self.assertEqual(accuracy, correct / 1000)
            self.assertEqual(json.dumps(accuracy), str(correct / 1000))
        self.assertIn("seeds 5,3", stderr)
        with open(os.path.join(out, "runs.jsonl")) as f:
            records = [json.loads(x) for x in f]
        self.assertEqual(records[0]["seeds"], [5, 3])
        self.assertGreater(records[0]["estimated_memory_bytes"], 0)
        runs = [r for r in records if r["kind"] == "run"]
        self.assertEqual([r["seed"] for r in runs], [5, 3])
        for run, correct in zip(
            runs, line["test_correct_per_seed"], strict=True
        ):
            self.assertEqual(
                (run["test_correct"], run["test_total"]), (correct, 1000)
            )
            self.assertEqual(run["test_accuracy"], correct / 1000)

    @parameterized.named_parameters(
        ("duplicate", "3,4,3", "3 appears twice"),
        ("negative", "3,-1", "-1 is out of range"),
        ("too_large", str(2**32), "out of range"),
        ("token", "3,x", "'x' is not an integer"),
        ("empty_entry", "3,,4", "an empty entry"),
    )
    def test_bad_seed_list_is_one_line(self, value, pattern):
        status, stdout, stderr = _compare("--seed-list", value)
        self.assertEqual((status, stdout), (2, ""))
        _one_line_error(self, stderr, "--seed-list", pattern)

    def test_seeds_and_seed_list_exclude_each_other(self):
        status, _, stderr = _compare("--seeds", "2", "--seed-list", "3")
        self.assertEqual(status, 2)
        _one_line_error(self, stderr, "not allowed with")

    @parameterized.parameters(["--seed", "1234"], ["--seed=1234"])
    def test_train_spelling_names_the_compare_flags(self, *argv):
        status, stdout, stderr = _compare(*argv)
        self.assertEqual((status, stdout), (2, ""))
        _one_line_error(
            self,
            stderr,
            "unrecognized arguments: --seed",
            r"--seeds N \(seeds 0..N-1\)",
            "--seed-list",
        )

    def test_compare_spelling_in_train_names_the_train_flag(self):
        status, _, stderr = run_cli(["train", "--seeds", "3"])
        self.assertEqual(status, 2)
        _one_line_error(self, stderr, "train takes --seed S")


def _tree_bytes(tree):
    return sum(
        int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
    )


def _peak(compiled):
    m = compiled.memory_analysis()
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


class MemoryEstimateTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("mlp_bnn", "mlp", (256, 256), "bnn", 100),
        ("mlp_founding", "mlp", (64,), "scaled_sigmoid", 200),
        ("mlp_bop", "mlp", (256,), "bop", 100),
        ("cnn", "cnn", (16,), "bnn", 25),
    )
    def test_within_a_factor_of_2_of_xla(self, model, hidden, method, batch):
        # The estimate against XLA's compiled memory analysis of the same
        # training and evaluation steps, for 4 seeds.
        n = 4
        full = data.load_dataset("mnist-sample")
        val = data.Examples(full.train_images[:300], full.train_labels[:300])
        split = _compare_train.Data(
            full.train_images, full.train_labels, val, full.test, 10
        )
        config = train.TrainConfig(
            model=model, hidden=hidden, batch_size=batch, eval_batch_size=200
        )
        preset = presets.get_preset(method)
        estimate = _compare_train.estimate_memory(config, preset, split)

        sample = data.to_float(full.train_images[:1])
        net = config.make_model(10, preset=preset)
        tx = preset.optimizer(
            train.abstract_params(net, sample),
            make_optimizer=config.make_optimizer,
            learning_rate=config.schedule_fn(1e-3, 10),
            real_learning_rate=config.schedule_fn(1e-3, 10),
        )
        state = jax.eval_shape(
            lambda: train.init_state(
                net, tx, list(range(n)), sample, sign_init=preset.sign_init
            )
        )
        images = jax.ShapeDtypeStruct((n, batch, 28, 28, 1), jnp.uint8)
        labels = jax.ShapeDtypeStruct((n, batch), jnp.int32)
        step = train.make_train_step(net, tx).lower(
            state, images, labels, np.float32(0)
        )
        measured = _peak(step.compile())
        ratio = n * estimate.train_step / measured
        self.assertBetween(ratio, 0.5, 2.0)

        evaluate = train.make_eval_step(net).lower(
            state,
            jax.ShapeDtypeStruct((200, 28, 28, 1), jnp.uint8),
            jax.ShapeDtypeStruct((200,), jnp.int32),
            jax.ShapeDtypeStruct((200,), jnp.float32),
            np.float32(1),
        )
        # The run holds its optimizer state while it evaluates.
        held = _tree_bytes(state.opt_state)
        measured = _peak(evaluate.compile()) + held
        ratio = n * estimate.evaluation / measured
        self.assertBetween(ratio, 0.5, 2.0)

    def test_grows_with_the_seeds(self):
        plans = {}
        for seeds in ((0,), tuple(range(10))):
            started = []
            with (
                mock.patch.object(
                    _compare_train, "train_candidate", side_effect=_Stop
                ),
                self.assertRaises(_Stop),
            ):
                compare_lib.compare(
                    ["bnn"],
                    hidden=(16,),
                    seeds=seeds,
                    tune="none",
                    on_start=started.append,
                )
            plans[len(seeds)] = started[0]
        self.assertEqual(plans[1].memory_per_seed, plans[10].memory_per_seed)
        self.assertEqual(plans[10].memory_bytes, 10 * plans[1].memory_bytes)


class _Stop(Exception):
    """Raised instead of training."""


class _SmallMachine:
    """``available_memory`` patched to a machine with ``size`` bytes."""

    def __init__(self, size):
        self.patch = mock.patch.object(
            compare_lib,
            "available_memory",
            return_value=(size, "test machine"),
        )

    def __enter__(self):
        self.patch.start()

    def __exit__(self, *exc):
        self.patch.stop()


class MemoryRefusalTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_refuses_before_training_and_creates_nothing(self):
        out = os.path.join(self.tmp, "cmp")
        with (
            _SmallMachine(1_000_000),
            mock.patch.object(_compare_train, "train_candidate") as trained,
        ):
            status, stdout, stderr = _compare(
                "--methods", "bnn", "--seeds", "40", "--tune", "none",
                "--out", out, *FAST,
            )  # fmt: skip
        self.assertEqual((status, stdout), (2, ""))
        trained.assert_not_called()
        self.assertFalse(os.path.exists(out))
        self.assertLen(stderr.strip().splitlines(), 1)
        _one_line_error(
            self,
            stderr,
            r"bnnjax compare: error: the largest run needs about [0-9.]+ MB "
            r"\(estimated: 40 seeds trained together x [0-9.]+ [kM]B each\), "
            r"more than the 1 MB available \(test machine\)",
            "--seeds, --seed-list",
            "pass --allow-large to run anyway",
        )

    def test_allow_large_runs_anyway(self):
        with _SmallMachine(1_000_000):
            status, stdout, stderr = _compare(
                "--methods", "bnn", "--seeds", "2", "--tune", "none",
                "--allow-large", *FAST,
            )  # fmt: skip
        self.assertEqual(status, 0, stderr)
        self.assertEqual(json.loads(stdout)["seeds"], [0, 1])
        self.assertRegex(
            stderr, r"estimated memory [0-9.]+ MB of 1 MB available"
        )

    def test_python_api_refuses_too(self):
        with (
            _SmallMachine(1000),
            self.assertRaisesRegex(
                compare_lib.MemoryEstimateError,
                r"more than the 1 kB available \(test machine\).*"
                "allow_large=True",
            ) as ctx,
        ):
            compare_lib.compare(["bnn"], hidden=(16,), seeds=(0, 1))
        self.assertIsInstance(ctx.exception, ValueError)
        self.assertEqual(ctx.exception.plan.available_bytes, 1000)

    def test_available_memory_sources(self):
        size, source = compare_lib.available_memory()
        self.assertGreater(size, 0)
        self.assertIn(
            source,
            (
                "MemAvailable in /proc/meminfo",
                "physical memory (SC_PHYS_PAGES x SC_PAGE_SIZE)",
            ),
        )
        with mock.patch("builtins.open", side_effect=OSError("no /proc")):
            size, source = compare_lib.available_memory()
        self.assertEqual(
            size, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        )
        self.assertIn("SC_PHYS_PAGES", source)
        device = mock.Mock()
        device.memory_stats.return_value = {
            "bytes_limit": 80_000,
            "bytes_in_use": 30_000,
        }
        device.__str__ = lambda self: "cuda:0"
        with mock.patch.object(jax, "devices", return_value=[device]):
            self.assertEqual(
                compare_lib.available_memory(),
                (50_000, "free memory of cuda:0"),
            )


class PlanMessagesTest(absltest.TestCase):
    def test_plan_then_runs_with_the_time_left(self):
        status, _, stderr = _compare(
            "--methods", "bnn", "--seeds", "2", "--tune", "lr",
            "--lr-grid", "0.001,0.01", *FAST,
        )  # fmt: skip
        self.assertEqual(status, 0, stderr)
        lines = stderr.splitlines()
        self.assertRegex(
            lines[0],
            r"^bnnjax compare: 3 runs, one after another: 2 tuning runs on "
            r"the validation split \(1 method x 2 candidates x 1 seed "
            r"\(1000\), 1 epoch each\), then 1 final run \(2 seeds trained "
            r"together: 0,1; 1 epoch each\); estimated memory [0-9.]+ [kM]B "
            r"of [0-9.]+ [MGT]B available \((MemAvailable|physical).*\)\.$",
        )
        self.assertRegex(
            lines[1], r"^\[tune\] bnn: .*; run 1 of 3, about \d+ (s|min) left$"
        )
        self.assertRegex(
            lines[2], r"^\[tune\] bnn: .*; run 2 of 3, about \d+ (s|min) left$"
        )
        self.assertRegex(lines[3], r"^\[final\] bnn: .*; run 3 of 3$")

    def test_no_progress_prints_no_plan(self):
        status, _, stderr = _compare(
            "--methods", "bnn", "--seeds", "1", "--tune", "none",
            "--no-progress", *FAST,
        )  # fmt: skip
        self.assertEqual(status, 0, stderr)
        self.assertNotIn("runs, one after another", stderr)
        self.assertNotIn("[final]", stderr)

    def test_describe_plan(self):
        runs = [
            *[compare_lib.PlannedRun("a", "tune", (1000,), 3)] * 8,
            compare_lib.PlannedRun("a", "final", tuple(range(10)), 5),
            *[compare_lib.PlannedRun("b", "tune", (1000,), 3)] * 4,
            compare_lib.PlannedRun("b", "final", tuple(range(10)), 5),
        ]
        plan = compare_lib.Plan(
            runs=tuple(runs),
            memory_bytes=2_500_000_000,
            memory_per_seed=250_000_000,
            available_bytes=None,
            memory_source="unknown",
        )
        self.assertEqual(
            _cli_compare.describe_plan(plan),
            "bnnjax compare: 14 runs, one after another: 12 tuning runs on "
            "the validation split (2 methods x 4 to 8 candidates x 1 seed "
            "(1000), 3 epochs each), then 2 final runs (10 seeds trained "
            "together: 0..9; 5 epochs each); estimated memory 2.5 GB.",
        )

    def test_time_left(self):
        progress = _cli_compare._Progress(enabled=False)
        # One run: 4 s of compiling and evaluating, 6 s training 2 seeds x
        # 3 epochs (1 s per seed and epoch).
        progress.done.append((4.0, 6.0, 6))
        runs = [
            compare_lib.PlannedRun("a", "tune", (1000,), 3),  # 4 + 3
            compare_lib.PlannedRun("a", "final", (0, 1, 2), 10),  # 4 + 30
        ]
        self.assertEqual(progress.seconds_left(runs), 41.0)
        self.assertEqual(_cli_compare._duration(41.0), "41 s")
        self.assertEqual(_cli_compare._duration(600), "10 min")
        self.assertEqual(_cli_compare._duration(7500), "2 h 5 min")


class WidthAugmentFlagsTest(absltest.TestCase):
    def test_width_and_augment_reach_compare(self):
        with mock.patch.object(
            compare_lib, "compare", side_effect=ValueError("stop (test)")
        ) as run:
            status, _, stderr = _compare(
                "--model",
                "cnn",
                "--width",
                "0.25",
                "--augment",
                "none",
                "--methods",
                "bnn",
            )
        self.assertEqual(status, 2)
        self.assertIn("stop (test)", stderr)
        kwargs = run.call_args.kwargs
        self.assertEqual((kwargs["width"], kwargs["augment"]), (0.25, "none"))

    def test_width_with_the_mlp_exits_2(self):
        status, stdout, stderr = _compare("--width", "0.5", *FAST)
        self.assertEqual((status, stdout), (2, ""))
        _one_line_error(self, stderr, r"width=0.5 with model='mlp'")


class DataDirTest(absltest.TestCase):
    def test_local_dataset_refuses_data_dir(self):
        status, stdout, stderr = _compare(
            "--data-dir", "/tmp", "--methods", "bnn"
        )
        self.assertEqual((status, stdout), (2, ""))
        _one_line_error(
            self, stderr, "only used for TFDS names", "'mnist-sample'"
        )

    def test_data_dir_reaches_tfds(self):
        unavailable = data.DatasetUnavailableError("offline (test)")
        with mock.patch.object(
            data, "load_tfds", side_effect=unavailable
        ) as load:
            status, stdout, stderr = _compare(
                "--dataset", "mnist", "--data-dir", "/some/tfds", *FAST
            )
        self.assertEqual((status, stdout), (1, ""))
        load.assert_called_once_with("mnist", data_dir="/some/tfds")
        _one_line_error(self, stderr, "offline")

    def test_help_mirrors_train(self):
        _, compare_help, _ = _compare("--help")
        _, train_help, _ = run_cli(["train", "--help"])
        text = " ".join(_argtypes.DATA_DIR_HELP.split())
        self.assertIn(text, " ".join(compare_help.split()))
        self.assertIn(text, " ".join(train_help.split()))
        self.assertIn("--seed-list", compare_help)
        self.assertIn("--allow-large", compare_help)


class OptionPrintingTest(absltest.TestCase):
    def test_train_and_compare_help_print_options_alike(self):
        _, compare_help, _ = _compare("--help")
        _, train_help, _ = run_cli(["train", "--help"])
        compare_help = " ".join(compare_help.split())
        train_help = " ".join(train_help.split())
        founding = "k=2, scale=mean_abs_dev, scale_adaptive=true"
        self.assertIn(f"scaled_sigmoid {founding}", compare_help)
        self.assertIn(f"scaled_sigmoid {founding}", train_help)
        for name in presets.METHOD_NAMES:
            options = presets.method_options(name)
            if options:
                listed = f"{name} {_argtypes.format_options(options)}"
                self.assertIn(listed, compare_help, name)
                self.assertIn(listed, train_help, name)

    def test_printed_values_parse_back(self):
        for name in presets.METHOD_NAMES:
            options = presets.method_options(name)
            if options:
                text = name + ":" + _argtypes.format_options(options, sep=":")
                spec = _cli_compare.parse_method(text)
                self.assertEqual(spec.options, options, text)
                self.assertEqual(spec.label, text)


if __name__ == "__main__":
    absltest.main()

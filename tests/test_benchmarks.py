"""Smoke tests of the benchmark scripts: tiny sizes, the JSON they promise.

The timings themselves are never asserted (they depend on the machine);
what is checked is that every script runs, prints one JSON line per
measurement with the documented fields and the shared environment block,
and that derived numbers (ratios, sums) follow from the measured ones.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from bench_helpers import BENCHMARKS as _BENCHMARKS
from bench_helpers import EnvironmentBlockMixin
from bench_helpers import load as _load
from bench_helpers import run as _run


class TrainThroughputTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_one_line_per_variant_with_the_named_fields(self):
        lines = _run(
            "train_throughput",
            [
                "--hidden=16,16",
                "--batch-size=8",
                "--steps=2",
                "--rounds=1",
                "--surrogates=ste,scaled_sigmoid",
                "--presets=bnn",
                "--f32-products",
            ],
        )
        steps = [ln for ln in lines if ln["benchmark"] == "train_step"]
        self.assertEqual(
            [
                (ln["variant"], ln["surrogate"], ln.get("sign_product_dtype"))
                for ln in steps
            ],
            [
                ("float", "none", None),
                ("float_flax", "none", None),
                ("binary_weights", "ste", None),
                ("binary_weights", "scaled_sigmoid", None),
                ("binary_all", "ste", None),
                ("binary_all", "ste", "float32"),
                ("binary_all", "scaled_sigmoid", None),
                ("binary_all", "scaled_sigmoid", "float32"),
                ("binary_weights", "clipped_ste", None),  # the bnn preset
            ],
        )
        self.assertEqual(steps[-1]["method"], "bnn")
        float_ms = steps[0]["step_ms_median"]
        for ln in steps:
            self.assert_environment(ln)
            self.assertEqual(ln["framework"], "bnnjax")
            self.assertEqual(ln["timed_steps"], 2)
            ms = ln["step_ms_median"]
            self.assertGreater(ms, 0)
            # The printed numbers are rounded: compare to 1e-3 relative.
            eps = 8 * 1e3 / ms
            self.assertLess(abs(ln["examples_per_second"] - eps), 1e-3 * eps)
            ratio = ms / float_ms
            self.assertLess(abs(ln["ratio_to_float"] - ratio), 1e-3 * ratio)

    def test_batch_larger_than_the_sample_is_refused(self):
        with self.assertRaisesRegex(SystemExit, "exceeds the 6000"):
            _run("train_throughput", ["--hidden=8", "--batch-size=7000"])

    def test_unknown_surrogate_is_refused(self):
        with (
            contextlib.redirect_stderr(io.StringIO()) as err,
            self.assertRaises(SystemExit),
        ):
            _run("train_throughput", ["--surrogates=sine"])
        self.assertIn("'sine' not in", err.getvalue())


class WeightPassCostsTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_per_kernel_lines_add_up_to_the_mlp_line(self):
        lines = _run(
            "weight_pass_costs",
            [
                "--hidden=32",
                "--surrogates=ste,ede,scaled_sigmoid",
                "--scales=none,mean_abs_dev",
                "--calls=2",
                "--rounds=1",
                "--float-step",
                "--batch-size=8",
            ],
        )
        kernels = [ln for ln in lines if ln["benchmark"] == "weight_pass"]
        mlp = [ln for ln in lines if ln["benchmark"] == "weight_pass_mlp"]
        rules = [
            ("ste", "none"),
            ("ste", "mean_abs_dev"),
            ("ede", "none"),
            ("ede", "mean_abs_dev"),
            ("scaled_sigmoid", "none"),
            ("scaled_sigmoid", "mean_abs_dev"),
        ]
        self.assertEqual(
            [
                (ln["surrogate"], ln["scale"], tuple(ln["shape"]))
                for ln in kernels
            ],
            [(*r, s) for s in ((784, 32), (32, 10)) for r in rules],
        )
        self.assertEqual([(ln["surrogate"], ln["scale"]) for ln in mlp], rules)
        for ln in kernels:
            self.assert_environment(ln)
            self.assertGreaterEqual(ln["total_us"], 0)
            self.assertAlmostEqual(
                ln["backward_us"],
                ln["total_us"] - ln["forward_us"],
                delta=0.02,
            )
        for ln in mlp:
            self.assert_environment(ln)
            self.assertEqual(ln["weights"], 784 * 32 + 32 * 10)
            total = sum(
                k["total_us"]
                for k in kernels
                if (k["surrogate"], k["scale"])
                == (ln["surrogate"], ln["scale"])
            )
            self.assertAlmostEqual(
                ln["added_ms_per_step"], total / 1e3, delta=1e-3
            )
            # The script rounds each of the three to 4 decimals; the ratio
            # from the rounded parts can differ by what that rounding
            # propagates, large when the tiny float step is near 0.01 ms.
            added, step = ln["added_ms_per_step"], ln["float_step_ms"]
            half = 5e-5
            self.assertAlmostEqual(
                ln["floor_ratio"],
                1 + added / step,
                delta=half
                * (1 + 1 / (step - half) + added / (step - half) ** 2)
                + 1e-9,
            )

    def test_unknown_scale_is_refused(self):
        with (
            contextlib.redirect_stderr(io.StringIO()) as err,
            self.assertRaises(SystemExit),
        ):
            _run("weight_pass_costs", ["--scales=median"])
        self.assertIn("'median' not in", err.getvalue())


class LayerTimingsTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_one_line_per_layer_variant(self):
        lines = _run(
            "layer_timings",
            [
                "--shapes=16x8",
                "--batch-size=4",
                "--calls=2",
                "--rounds=1",
                "--surrogates=ste",
            ],
        )
        self.assertEqual(
            [(ln["variant"], ln["surrogate"]) for ln in lines],
            [
                ("float", "none"),
                ("binary_weights", "ste"),
                ("binary_all", "ste"),
            ],
        )
        self.assertEqual(lines[0]["ratio_to_float"], 1.0)
        for ln in lines:
            self.assert_environment(ln)
            self.assertEqual(ln["calls"], 2)


class DenseSignProductsTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_one_line_per_pass_and_dtype_with_the_ratio(self):
        lines = _run(
            "dense_sign_products",
            [
                "--rows=8",
                "--shapes=32x16",
                "--calls=2",
                "--rounds=1",
                "--xnor",
                "--mlp-hidden=16",
                "--mlp-batch=8",
                "--mlp-steps=1",
                "--mlp-rounds=2",
            ],
        )
        steps = [ln for ln in lines if ln["benchmark"].endswith("_step")]
        lines = [ln for ln in lines if not ln["benchmark"].endswith("_step")]
        self.assertEqual(
            [ln["dtype"] for ln in steps],
            ["float_step", "float32", "bfloat16", "int8"],
        )
        for ln in steps:
            self.assert_environment(ln)
            self.assertEqual(ln["steps"], 2)
            self.assertAlmostEqual(
                ln["speedup_vs_float_step"],
                steps[0]["step_ms_median"] / ln["step_ms_median"],
                delta=0.01 * steps[0]["step_ms_median"] / ln["step_ms_median"],
            )
        self.assertEqual(
            [(ln["pass"], ln["dtype"]) for ln in lines],
            [
                ("train", "float32"),
                ("forward", "float32"),
                ("train", "bfloat16"),
                ("forward", "bfloat16"),
                ("train", "int8"),
                ("forward", "int8"),
                ("forward", "xnor"),
            ],
        )
        base = {ln["pass"]: ln["ms_median"] for ln in lines[:2]}
        for ln in lines:
            self.assert_environment(ln)
            self.assertEqual((ln["shape"], ln["rows"]), ([32, 16], 8))
            self.assertAlmostEqual(
                ln["speedup_vs_float32"],
                base[ln["pass"]] / ln["ms_median"],
                delta=0.01 * base[ln["pass"]] / ln["ms_median"],
            )

    def test_unknown_pass_is_refused(self):
        with self.assertRaises(SystemExit):
            _run("dense_sign_products", ["--passes=backward"])

    def test_mlp_batch_larger_than_the_sample_allows_is_refused(self):
        with self.assertRaisesRegex(SystemExit, "use at most 1500"):
            _run(
                "dense_sign_products",
                [
                    "--rows=1",
                    "--shapes=8x8",
                    "--calls=1",
                    "--rounds=1",
                    "--passes=forward",
                    "--mlp-hidden=8",
                    "--mlp-batch=1501",
                ],
            )


class BinarizeOverheadTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_lines_carry_the_environment(self):
        lines = _run(
            "binarize_overhead", ["--sizes=16", "--batch=4", "--repeats=2"]
        )
        self.assertNotEqual(lines, [])
        for ln in lines:
            self.assertEqual(ln["benchmark"], "binarize_overhead")
            self.assert_environment(ln)


class PackedInferenceTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_packed_inference_benchmark_small(self):
        lines = _run(
            "packed_inference",
            [
                "--sizes=64",
                "--batches=1",
                "--bw-batches=3",
                "--mlp-batches=3",
                "--mlp-hidden=16",
                "--rounds=1",
                "--repeats=1",
            ],
        )
        kinds = {(r["benchmark"], r.get("variant")) for r in lines}
        for variant in ("xnor", "xnor_fused_reduction", "binary_weight_auto"):
            self.assertIn(("packed_layer", variant), kinds)
        mlps = [r for r in lines if r["benchmark"] == "packed_mlp"]
        self.assertEqual([r["binary_activations"] for r in mlps], [False, True])
        for r in lines:
            self.assertIn("loadavg_1m", r)
            self.assert_environment(r)
        for r in mlps:
            self.assertEqual(r["argmax_agreement"], 1.0)
            self.assertGreater(r["speedup"], 0)


class StartupTimeTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_probes_and_the_ratio_to_a_baseline_tree(self):
        root = os.path.join(_BENCHMARKS, "..")
        lines = _run(
            "startup_time",
            [
                "--repeats",
                "2",
                "--probes",
                "import bnnjax,bnnjax --help",
                "--baseline-src",
                root,
            ],
        )
        self.assertEqual(
            [line["probe"] for line in lines],
            ["import bnnjax", "bnnjax --help"],
        )
        for line in lines:
            self.assert_environment(line)
            self.assertEqual(line["repeats"], 2)
            self.assertLessEqual(line["min_s"], line["median_s"])
            self.assertLessEqual(line["median_s"], line["max_s"])
            self.assertFalse(line["loads_jax"])
            self.assertFalse(line["baseline"]["loads_jax"])
            self.assertAlmostEqual(
                line["speedup"],
                line["baseline"]["median_s"] / line["median_s"],
            )

    def test_a_probe_that_loads_jax_says_so(self):
        (line,) = _run(
            "startup_time",
            ["--repeats", "1", "--probes", "import bnnjax; bnnjax.binarize"],
        )
        self.assertTrue(line["loads_jax"])
        self.assertNotIn("baseline", line)

    def test_bad_arguments_are_refused(self):
        for argv in (
            ["--probes", "nope"],
            ["--repeats", "0"],
            ["--baseline-src", os.path.join(_BENCHMARKS, "results")],
        ):
            with (
                self.assertRaises(SystemExit),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                _run("startup_time", argv)


class ConvFormulationsTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_exactness_and_ratios(self):
        lines = _run("conv_formulations", ["--calls", "2", "--limit", "1"])
        conv, pool = lines
        self.assertEqual(conv["benchmark"], "conv")
        # A real-valued image layer: values equal up to rounding only.
        self.assertFalse(conv["input_binarized"])
        self.assertLess(conv["grad_max_rel_diff"], 1e-5)
        self.assertEqual(conv["auto"], "patches")
        self.assertAlmostEqual(
            conv["speedup"], conv["xla_ms"] / conv["patches_ms"], delta=0.01
        )
        self.assertGreater(conv["default_ms"], 0.0)
        self.assertIsNone(conv["patches_int8_ms"])  # real-valued inputs
        self.assertNotIn("vs_torch", conv)  # no --peer-python
        self.assertEqual(pool["benchmark"], "max_pool")
        self.assertTrue(pool["exact_with_ties"])
        self.assertAlmostEqual(
            pool["speedup"], pool["xla_ms"] / pool["reshape_ms"], delta=0.01
        )
        for line in lines:
            self.assert_environment(line)

    def test_torch_peer_times_join_each_conv(self):
        # A stand-in interpreter that answers as the PyTorch script does
        # for the case it is asked (argv: script, --cases, CASES, ...).
        tmp = self.enter_context(tempfile.TemporaryDirectory())
        fake = os.path.join(tmp, "python")
        with open(fake, "w") as f:
            f.write(
                "#!/bin/sh\n"
                'echo "{\\"framework\\": \\"torch\\", \\"case\\": '
                '\\"$3\\", \\"nchw_ms\\": 4.0, '
                '\\"channels_last_ms\\": 2.0, \\"torch\\": \\"x\\"}"\n'
            )
        os.chmod(fake, 0o755)
        (conv,) = _run(
            "conv_formulations",
            ["--calls", "2", "--limit", "1", "--only", "conv",
             "--peer-python", fake],
        )  # fmt: skip
        self.assertEqual(conv["torch_nchw_ms"], 4.0)
        self.assertEqual(conv["torch_channels_last_ms"], 2.0)
        self.assertAlmostEqual(
            conv["vs_torch"], 2.0 / conv["default_ms"], delta=0.01
        )

    def test_conv_cases_replace_the_built_in_ones(self):
        lines = _run(
            "conv_formulations",
            ["--calls", "1", "--only", "conv",
             "--conv-cases", "2x6x4x8x3x1,2x6x8x8x3x2"],
        )  # fmt: skip
        self.assertEqual(
            [(ln["in_features"], ln["stride"]) for ln in lines],
            [(4, 1), (8, 2)],
        )
        for line in lines:
            self.assertTrue(line["input_binarized"])
            self.assertTrue(line["values_exact"])
            self.assertGreater(line["patches_int8_ms"], 0.0)
        with (
            self.assertRaises(SystemExit),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            _run("conv_formulations", ["--conv-cases", "2x6x4"])

    def test_a_failing_peer_is_an_error(self):
        err = io.StringIO()
        out = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            status = _load("conv_formulations").main(
                ["--calls", "1", "--limit", "1", "--only", "conv",
                 "--peer-python", os.path.join(_BENCHMARKS, "no-such-python")]
            )  # fmt: skip
        self.assertEqual(status, 1)
        self.assertIn("the PyTorch peer failed", err.getvalue())
        self.assertEqual(out.getvalue(), "")  # nothing timed before the peer


class ConvTrainThroughputTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_variants_and_a_missing_peer(self):
        lines = _run(
            "conv_train_throughput",
            [
                "--steps", "2", "--warmup", "1", "--rounds", "1",
                "--variants", "bnnjax,bnnjax_xla,bnnjax_autodiff_bwd,bnnjax_f32,flax_float",
                "--peers", "larq", "--peer-modes", "graph",
                "--peer-python", os.path.join(_BENCHMARKS, "no-such-python"),
                "--profile-steps", "1", "--profile-top", "3",
            ],
        )  # fmt: skip
        errors = [ln for ln in lines if "error" in ln]
        self.assertEqual(len(errors), 2)  # binary and float, both refused
        timed = [ln for ln in lines if ln["benchmark"] == "conv_train"]
        self.assertEqual(
            [ln["variant"] for ln in timed],
            [
                "bnnjax",
                "bnnjax_xla",
                "bnnjax_autodiff_bwd",
                "bnnjax_f32",
                "flax_float",
            ],
        )
        for line in timed:
            self.assertEqual(line["steps"], 2)
            self.assertEqual(line["batch_size"], 64)
            self.assertAlmostEqual(
                line["examples_per_second"],
                64e3 / line["step_ms_median"],
                delta=1.0,
            )
            self.assertIsNone(line["vs_fastest_peer"])  # no peer ran
            self.assert_environment(line)
        profiles = [
            ln for ln in lines if ln["benchmark"] == "conv_train_profile"
        ]
        self.assertEqual(
            [ln["variant"] for ln in profiles], [ln["variant"] for ln in timed]
        )
        for line in profiles:
            self.assertEqual(line["profiled_steps"], 1)
            self.assertLen(line["top_ops"], 3)
            times = [op["ms_per_step"] for op in line["top_ops"]]
            self.assertEqual(times, sorted(times, reverse=True))
            self.assertGreater(times[-1], 0.0)
            for op in line["top_ops"]:
                self.assertIn("[", op["shape"])  # an HLO shape
            # Every timed operation is in a kind, and the kinds add up.
            self.assertAlmostEqual(
                sum(line["by_kind_ms_per_step"].values()),
                line["ops_ms_per_step"],
                delta=0.05 * line["ops_ms_per_step"],
            )
            self.assertLess(
                line["ops_ms_per_step"], 2 * line["wall_ms_per_step"]
            )
            self.assert_environment(line)

    def test_unknown_variant_is_refused(self):
        with self.assertRaises(SystemExit):
            _run("conv_train_throughput", ["--variants", "bnnjax,tf"])


class ShardingThroughputTest(absltest.TestCase):
    def test_two_simulated_devices(self):
        # A subprocess: the script sets the CPU device count before JAX
        # starts, which this test process has already done.
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(_BENCHMARKS, "sharding_throughput.py"),
                "--devices=1,2",
                "--cpu-devices=2",
                "--batch=8",
                "--steps=1",
                "--repeats=1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        lines = [json.loads(t) for t in result.stdout.splitlines()]
        self.assertNotEqual(lines, [])
        for ln in lines:
            self.assertEqual(ln["device_count"], 2)
            self.assertTrue(ln["simulated_devices"])
            self.assertIn("orbax-checkpoint", ln["versions"])


class DistillCostTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_student_and_teacher_lines_with_the_ratio(self):
        lines = _run(
            "distill_cost",
            [
                "--hidden",
                "16",
                "--teacher-hidden",
                "32,32",
                "--batch-size",
                "8",
                "--steps",
                "3",
                "--warmup",
                "1",
                "--rounds",
                "2",
            ],
        )
        self.assertEqual(
            [line["variant"] for line in lines], ["student", "teacher_32x32"]
        )
        self.assertEqual(lines[0]["step_ratio"], 1.0)
        for line in lines:
            self.assertEqual(line["steps"], 6)
            self.assertGreater(line["median_step_ms"], 0)
            # median_step_ms is rounded to 1 us.
            want = 8 / (line["median_step_ms"] / 1e3)
            self.assertAlmostEqual(
                line["examples_per_second"], want, delta=0.01 * want
            )
            self.assert_environment(line)
        ratio = lines[1]["median_step_ms"] / lines[0]["median_step_ms"]
        self.assertAlmostEqual(
            lines[1]["step_ratio"], ratio, delta=0.01 * ratio
        )


class TrainMemoryTest(EnvironmentBlockMixin, absltest.TestCase):
    def test_one_line_per_variant_with_the_named_fields(self):
        lines = _run(
            "train_memory",
            [
                "--model",
                "mlp",
                "--hidden",
                "64,64",
                "--batch-size",
                "16",
                "--steps",
                "2",
                "--rounds",
                "1",
                "--max-batch-budget",
                str(2**40),
                "--max-doublings",
                "1",
            ],
        )
        self.assertEqual(
            [line["variant"] for line in lines],
            ["float", "binary", "binary_packed"],
        )
        by_name = {line["variant"]: line for line in lines}
        for line in lines:
            self.assert_environment(line)
            self.assertEqual((line["model"], line["batch_size"]), ("mlp", 16))
            self.assertGreater(line["temp_bytes"], 0)
            self.assertGreater(line["step_ms_median"], 0)
            self.assertEqual(line["steps"], 2)
            # Peaks come from one subprocess per variant (VmHWM on Linux).
            self.assertGreater(line["peak_rss_bytes"], 0)
            # Every doubling searched fits a budget of 1 TiB.
            self.assertEqual(line["max_batch"], 16 * 2)
            for ref in ("float", "binary"):
                want = line["temp_bytes"] / by_name[ref]["temp_bytes"]
                self.assertAlmostEqual(
                    line[f"temp_ratio_to_{ref}"], want, places=3
                )
        self.assertEqual(by_name["float"]["method"], "float")
        self.assertEqual(by_name["binary_packed"]["method"], "bnn")

    def test_with_auto_adds_the_default_residual_policy(self):
        lines = _run(
            "train_memory",
            [
                *("--hidden", "256,256,256", "--batch-size", "256"),
                *("--memory-only", "--with-auto"),
            ],
        )
        by_name = {line["variant"]: line for line in lines}
        self.assertEqual(
            list(by_name), ["float", "binary", "binary_packed", "binary_auto"]
        )
        # Layers this small keep autodiff's residuals under "auto": the
        # same program as the unpacked variant, not the packed one.
        auto = by_name["binary_auto"]
        self.assertEqual(auto["temp_bytes"], by_name["binary"]["temp_bytes"])
        self.assertEqual(auto["temp_ratio_to_binary"], 1.0)
        self.assertNotEqual(
            auto["temp_bytes"], by_name["binary_packed"]["temp_bytes"]
        )

    def test_memory_only_bisects_to_the_largest_batch_that_fits(self):
        args = ["--hidden", "64", "--batch-size", "256", "--memory-only"]
        (at_256,) = [
            line
            for line in _run("train_memory", args)
            if line["variant"] == "float"
        ]
        # A budget of exactly batch 256's temporary memory (at this batch
        # the batch-sized buffers dominate it): doubling stops at 512,
        # bisection (to multiples of 256 // 16 = 16) ends below it.
        lines = _run(
            "train_memory",
            [*args, "--max-batch-budget", str(at_256["temp_bytes"])],
        )
        by_name = {line["variant"]: line for line in lines}
        for line in lines:
            self.assertNotIn("step_ms_median", line)
            self.assertNotIn("peak_rss_bytes", line)
            self.assertGreater(line["temp_bytes"], 0)
        best = by_name["float"]["max_batch"]
        self.assertGreaterEqual(best, 256)
        self.assertLess(best, 512)
        self.assertEqual(best % 16, 0)
        self.assertEqual(by_name["float"]["max_batch_ratio_to_float"], 1.0)
        for line in lines:
            if line["max_batch"] is not None:
                self.assertEqual(
                    line["max_batch_ratio_to_float"],
                    round(line["max_batch"] / best, 3),
                )

    def test_a_budget_below_the_first_batch_fits_none(self):
        lines = _run(
            "train_memory",
            [
                "--hidden",
                "16",
                "--batch-size",
                "8",
                "--steps",
                "1",
                "--rounds",
                "1",
                "--no-peak",
                "--max-batch-budget",
                "1",
            ],
        )
        for line in lines:
            self.assertIsNone(line["max_batch"])
            self.assertNotIn("peak_rss_bytes", line)


if __name__ == "__main__":
    absltest.main()

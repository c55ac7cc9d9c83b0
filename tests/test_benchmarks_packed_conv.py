"""Smoke test of benchmarks/packed_conv_inference.py at tiny sizes.

The timings are never asserted (they depend on the machine); what is
checked is that the script runs, prints the documented fields with the
shared environment block, that its exactness checks passed and that the
speedups follow from the printed times.
"""

import json
import os
import tempfile

from absl.testing import absltest
from bench_helpers import EnvironmentBlockMixin
from bench_helpers import run as _run

_COMMON = (
    "benchmark",
    "batch",
    "variant",
    "float32_ms",
    "variant_ms",
    "speedup",
    "speedup_min",
    "speedup_max",
    "rounds",
    "loadavg_1m",
)
_LAYER = (
    "in_channels",
    "out_channels",
    "map_size",
    "kernel_size",
    "pad_value",
    "exact",
    "float32_weight_bytes",
    "weight_bytes",
)
_NETWORK = (
    "model",
    "width_multiplier",
    "input_shape",
    "argmax_agreement",
    "max_abs_logit_difference",
    "xnor_layers",
    "real_input_layers",
    "file_bytes",
    "float32_bytes",
    "compression_ratio",
)


class PackedConvInferenceTest(EnvironmentBlockMixin, absltest.TestCase):
    def assert_speedup(self, line: dict):
        # One round: the speedup is that round's float32_ms / variant_ms;
        # the printed numbers have 6 significant digits.
        self.assertGreater(line["variant_ms"], 0)
        ratio = line["float32_ms"] / line["variant_ms"]
        self.assertLess(abs(line["speedup"] - ratio), 1e-4 * ratio)
        self.assertEqual(line["speedup_min"], line["speedup"])
        self.assertEqual(line["speedup_max"], line["speedup"])

    def test_layers_and_networks_at_smoke_sizes(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        out = os.path.join(tmp.name, "run.jsonl")
        lines = _run(
            "packed_conv_inference",
            [
                "--cases=32:32:8",
                "--inputs=28x28x1",
                "--width=0.0625",
                "--batches=1",
                "--calls=2",
                "--rounds=1",
                f"--out={out}",
            ],
        )
        layers = [ln for ln in lines if ln["benchmark"] == "packed_conv_layer"]
        cnns = [ln for ln in lines if ln["benchmark"] == "packed_cnn"]
        self.assertEqual(
            [ln["variant"] for ln in layers],
            ["xnor_conv", "xnor_packed_input"],
        )
        self.assertLen(cnns, 1)
        self.assertLen(lines, 3)
        for ln in lines:
            self.assert_environment(ln)
            self.assert_speedup(ln)
            for field in _COMMON:
                self.assertIn(field, ln)
            self.assertEqual(ln["batch"], 1)
            self.assertEqual(ln["rounds"], 1)
        for ln in layers:
            for field in _LAYER:
                self.assertIn(field, ln)
            self.assertTrue(ln["exact"])
            self.assertEqual(ln["float32_weight_bytes"], 9 * 32 * 32 * 4)
            self.assertEqual(ln["weight_bytes"], 9 * 1 * 32 * 4)
        cnn = cnns[0]
        for field in _NETWORK:
            self.assertIn(field, cnn)
        self.assertEqual(cnn["argmax_agreement"], 1.0)
        self.assertEqual(cnn["max_abs_logit_difference"], 0.0)
        self.assertEqual(cnn["input_shape"], [28, 28, 1])
        self.assertEqual((cnn["xnor_layers"], cnn["real_input_layers"]), (8, 1))
        self.assertGreater(cnn["compression_ratio"], 1)
        with open(out, encoding="utf-8") as f:
            self.assertEqual([json.loads(t) for t in f], lines)

    def test_limit_and_only(self):
        lines = _run(
            "packed_conv_inference",
            [
                "--cases=16:8:8,32:32:8",
                "--limit=1",
                "--only=layers",
                "--batches=2",
                "--calls=1",
                "--rounds=1",
            ],
        )
        self.assertEqual(
            {(ln["in_channels"], ln["out_channels"]) for ln in lines},
            {(16, 8)},
        )
        self.assertEqual(
            {ln["benchmark"] for ln in lines}, {"packed_conv_layer"}
        )


if __name__ == "__main__":
    absltest.main()

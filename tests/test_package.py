"""Package-level checks: flat API, no import side effects, the CLI."""

import ast
import contextlib
import io
import json
import pathlib
import subprocess
import sys

import jax
from absl.testing import absltest

import bnnjax
from bnnjax import cli


class PackageTest(absltest.TestCase):
    def test_flat_namespace_exports_every_name(self):
        for name in bnnjax.__all__:
            self.assertTrue(hasattr(bnnjax, name), name)
        for name in ("binarize", "get_surrogate", "get_scale", "reduce_axes"):
            self.assertIn(name, bnnjax.__all__)
        self.assertRegex(bnnjax.__version__, r"^\d+\.\d+\.\d+")

    def test_import_has_no_side_effects(self):
        code = (
            "import jax, os, sys\n"
            "before = dict(jax.config.values)\n"
            "cwd = set(os.listdir('.'))\n"
            "import bnnjax, bnnjax.cli\n"
            "assert dict(jax.config.values) == before, 'jax config changed'\n"
            "assert set(os.listdir('.')) == cwd, 'files created'\n"
            "assert 'tensorflow' not in sys.modules\n"
            "assert 'tensorflow_datasets' not in sys.modules\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr, "")

    def test_core_math_imports_neither_flax_nor_optax(self):
        package = pathlib.Path(bnnjax.__file__).parent
        for module in ("binarize.py", "scale.py"):
            tree = ast.parse((package / module).read_text())
            imported = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
            self.assertTrue(imported, module)
            self.assertFalse(imported & {"flax", "optax"}, module)


class CliTest(absltest.TestCase):
    def test_demo_json(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = cli.main(["demo", "--json"])
        self.assertEqual(status, 0)
        results = json.loads(out.getvalue())
        self.assertEqual(results["distinct_values_per_channel"], 2)
        self.assertFalse(results["contains_zero"])
        self.assertTrue(results["alpha_equals_mean_abs_dev"])
        slopes = results["surrogate_slopes"]
        self.assertEqual(slopes["clipped_ste"], [0, 1, 1, 1, 1, 1, 0])
        self.assertEqual(slopes["approx_sign"], [0, 0, 1, 2, 1, 0, 0])
        founding = results["invariance"]["scaled_sigmoid"]
        means = [row["mean_abs_grad"] for row in founding]
        self.assertAlmostEqual(min(means) / max(means), 1.0, places=4)
        clipped = results["invariance"]["clipped_ste"]
        self.assertLess(clipped[-1]["fraction_with_gradient"], 0.05)
        self.assertEqual(results["jax"], jax.__version__)

    def test_demo_text_through_console_script_module(self):
        result = subprocess.run(
            [sys.executable, "-m", "bnnjax.cli", "demo"],
            capture_output=True,
            text=True,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Founding property", result.stdout)
        self.assertIn("scaled_sigmoid", result.stdout)

    def test_bad_command_exits_with_usage(self):
        with self.assertRaises(SystemExit) as caught:
            cli.main(["fly"])
        self.assertEqual(caught.exception.code, 2)


if __name__ == "__main__":
    absltest.main()

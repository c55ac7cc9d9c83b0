"""Running the benchmark scripts from tests: import, main(argv), JSON lines."""

import contextlib
import importlib.util
import io
import json
import os
import sys

import jax

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def load(name: str):
    """Imports ``benchmarks/<name>.py`` as a module (with its ``_env``)."""
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", os.path.join(BENCHMARKS, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while building.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(name: str, argv: list[str]) -> list[dict]:
    """Runs the script's ``main(argv)`` and parses its stdout lines."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = load(name).main(argv)
    if status not in (None, 0):
        raise AssertionError(f"{name} returned {status}")
    return [json.loads(t) for t in out.getvalue().splitlines()]


class EnvironmentBlockMixin:
    """``assert_environment``: the block every benchmark line carries."""

    def assert_environment(self, line: dict):
        self.assertEqual(line["device"], "cpu:cpu")
        self.assertEqual(line["versions"]["jax"], jax.__version__)
        self.assertIn("bnnjax", line["versions"])
        self.assertIn("cpu_affinity", line)
        self.assertIsInstance(line["thread_env"], dict)

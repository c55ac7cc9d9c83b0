"""The package's layering: the core never imports the harness; imports stay cheap.

The core is what a Flax user imports to build and deploy a BNN; the harness
runs experiments. Each core module is imported in a fresh interpreter, which
must then hold no harness module; the source of every core module is also
read, so that an import deferred into a function body is caught too.
"""

import ast
import pathlib
import subprocess
import sys

from absl.testing import absltest, parameterized

import bnnjax

PACKAGE = pathlib.Path(bnnjax.__file__).parent

CORE = (
    "bnnjax._bits",
    "bnnjax.binarize",
    "bnnjax.scale",
    "bnnjax.nn",
    "bnnjax.nn.linen",
    "bnnjax.nn.nnx",
    "bnnjax.models",
    "bnnjax.models.linen",
    "bnnjax.models.nnx",
    "bnnjax.optim",
    "bnnjax.convert",
    "bnnjax.summary",
    "bnnjax.packed",
    "bnnjax.export",
)
HARNESS = (
    "bnnjax.train",
    "bnnjax.training",
    "bnnjax.presets",
    "bnnjax.compare",
    "bnnjax.checkpoint",
    "bnnjax.distributed",
    "bnnjax.plots",
    "bnnjax.data",
    "bnnjax._batches",
    "bnnjax.cli",
    "bnnjax._cli_compare",
    "bnnjax._cli_tools",
    "bnnjax._cli_train",
    "bnnjax._argtypes",
    "bnnjax._compare_train",
    "bnnjax._grids",
)
# Modules of neither side: the version and the value checks both use.
SHARED = ("bnnjax._version", "bnnjax._validate")
# Third-party modules the harness loads and `import bnnjax` must not.
HEAVY = ("orbax.checkpoint", "matplotlib", "tqdm", "jax")


def _is_harness(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HARNESS)


def _modules_after(code: str) -> list[str]:
    """The bnnjax and heavy modules loaded after running ``code`` alone."""
    probe = (
        f"{code}\nimport sys\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith("
        f"('bnnjax', {', '.join(map(repr, HEAVY))}))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise AssertionError(f"{code!r} failed:\n{result.stderr}")
    return result.stdout.split()


def _source_files(module: str) -> list[pathlib.Path]:
    relative = pathlib.Path(*module.split(".")[1:])
    package = PACKAGE / relative
    if package.is_dir():
        return sorted(package.rglob("*.py"))
    return [package.with_suffix(".py")]


def _imported_names(path: pathlib.Path) -> set[str]:
    """Every bnnjax module an import statement in ``path`` names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("bnnjax")}


class LayeringTest(parameterized.TestCase):
    @parameterized.parameters(*CORE)
    def test_core_module_loads_no_harness(self, module):
        loaded = _modules_after(f"import {module}")
        self.assertIn(module, loaded)
        self.assertEqual([m for m in loaded if _is_harness(m)], [])

    @parameterized.parameters(*CORE)
    def test_core_source_names_no_harness(self, module):
        files = _source_files(module)
        self.assertNotEmpty(files)
        for path in files:
            harness = sorted(n for n in _imported_names(path) if _is_harness(n))
            self.assertEqual(harness, [], str(path))

    @parameterized.parameters(*CORE)
    def test_core_source_uses_no_flat_namespace(self, module):
        # The core imports the modules that define what it needs, never the
        # package's flat namespace (bnnjax/__init__), which re-exports them.
        for path in _source_files(module):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                    self.assertNotIn("bnnjax", names, str(path))
                elif (
                    isinstance(node, ast.ImportFrom) and node.module == "bnnjax"
                ):
                    for alias in node.names:
                        self.assertNotIn(
                            alias.name,
                            bnnjax._ATTRIBUTES,
                            f"{path}: {alias.name}",
                        )

    def test_every_module_is_core_harness_or_shared(self):
        sides = (*CORE, *HARNESS, *SHARED)
        for path in PACKAGE.rglob("*.py"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            module = ".".join(p for p in parts if p != "__init__")
            if module == "bnnjax":
                continue
            self.assertTrue(
                any(module == s or module.startswith(s + ".") for s in sides),
                f"{module} is on neither side of the layering",
            )

    def test_no_module_exceeds_1300_lines(self):
        # One concept per module: a module past this size holds several.
        sizes = {
            str(path.relative_to(PACKAGE.parent)): len(
                path.read_text().splitlines()
            )
            for path in PACKAGE.rglob("*.py")
        }
        self.assertGreater(len(sizes), 30)
        self.assertEqual({p: n for p, n in sizes.items() if n > 1300}, {})

    def test_core_flat_names_load_no_harness(self):
        core_names = [
            n for n, m in bnnjax._ATTRIBUTES.items() if not _is_harness(m)
        ]
        self.assertIn("binarize", core_names)
        loaded = _modules_after(
            "import bnnjax\n"
            + "".join(f"bnnjax.{n}\n" for n in core_names)
            + "".join(f"bnnjax.{n}\n" for n in ("nn", "models", "export"))
        )
        self.assertEqual([m for m in loaded if _is_harness(m)], [])

    def test_import_bnnjax_loads_nothing_heavy(self):
        loaded = _modules_after("import bnnjax")
        self.assertEqual([m for m in loaded if m in HEAVY], [])
        self.assertEqual(sorted(loaded), ["bnnjax", "bnnjax._version"])

    def test_harness_modules_load_no_orbax_matplotlib_or_tqdm(self):
        loaded = _modules_after(
            "import bnnjax\nbnnjax.train.TrainConfig\nbnnjax.compare\n"
        )
        self.assertIn("jax", loaded)
        self.assertEqual([m for m in loaded if m in HEAVY and m != "jax"], [])

    def test_cli_help_imports_no_jax(self):
        code = (
            "import contextlib, io\nfrom bnnjax import cli\n"
            "for argv in (['--help'], ['demo', '--help'], "
            "['export', '--help'], ['predict', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        try:\n"
            "            cli.main(argv)\n"
            "        except SystemExit as e:\n"
            "            assert e.code == 0, (argv, e.code)\n"
            "    assert 'usage: bnnjax' in out.getvalue(), argv\n"
        )
        loaded = _modules_after(code)
        self.assertIn("bnnjax.cli", loaded)
        self.assertNotIn("jax", loaded)
        parser_only = {"bnnjax.cli", "bnnjax._argtypes"}
        self.assertEqual(
            [m for m in loaded if _is_harness(m) and m not in parser_only], []
        )

    def test_type_checking_imports_match_the_lazy_table(self):
        tree = ast.parse((PACKAGE / "__init__.py").read_text())
        guarded = next(
            n
            for n in tree.body
            if isinstance(n, ast.If)
            and isinstance(n.test, ast.Name)
            and n.test.id == "TYPE_CHECKING"
        )
        attributes, submodules = {}, set()
        for node in guarded.body:
            self.assertIsInstance(node, ast.ImportFrom)
            for alias in node.names:
                self.assertEqual(alias.name, alias.asname)
                if node.module == "bnnjax":
                    submodules.add(alias.name)
                else:
                    attributes[alias.name] = node.module
        self.assertEqual(attributes, bnnjax._ATTRIBUTES)
        self.assertEqual(submodules, set(bnnjax._SUBMODULES))

    def test_names_that_are_also_modules_stay_the_functions(self):
        code = (
            "import bnnjax, bnnjax.binarize, bnnjax.summary, bnnjax.nn\n"
            "import types\n"
            "assert not isinstance(bnnjax.binarize, types.ModuleType)\n"
            "assert not isinstance(bnnjax.summary, types.ModuleType)\n"
            "assert callable(bnnjax.binarize) and callable(bnnjax.summary)\n"
            "from bnnjax.binarize import Binarizer\n"
            "assert bnnjax.Binarizer is Binarizer\n"
        )
        self.assertIn("bnnjax.binarize", _modules_after(code))


if __name__ == "__main__":
    absltest.main()

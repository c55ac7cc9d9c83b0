"""The release files: what the wheel and the sdist hold, and one version.

Both files are built once, from a copy of the source tree, with
``python -m build --no-isolation`` (the build tools are dev dependencies, so
this runs offline). ``python -m build`` makes the sdist first and the wheel
from the unpacked sdist, so a file the sdist lacks is missing from the wheel
too. ``make check-dist`` installs them into a new environment and trains.
"""

import email
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from absl.testing import absltest

import bnnjax

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERSION = bnnjax.__version__
# What is not source: environments, caches and build outputs.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "runs",
    "_build",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".hypothesis",
    ".ipynb_checkpoints",
)


def _package_files() -> set[str]:
    """Every file of the source package, as paths inside the wheel."""
    package = ROOT / "bnnjax"
    return {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
    }


class ReleaseFilesTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        tmp = pathlib.Path(cls._tmp.name)
        source, out = tmp / "source", tmp / "dist"
        shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "build",
                "--no-isolation",
                "--outdir",
                str(out),
                str(source),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            cls._tmp.cleanup()
            raise AssertionError(
                f"python -m build failed:\n{result.stdout}\n{result.stderr}"
            )
        cls.wheel = zipfile.ZipFile(out / f"bnnjax-{VERSION}-py3-none-any.whl")
        with tarfile.open(out / f"bnnjax-{VERSION}.tar.gz") as sdist:
            top = f"bnnjax-{VERSION}/"
            cls.sdist_names = {
                m.name.removeprefix(top)
                for m in sdist.getmembers()
                if m.isfile()
            }
            cls.pkg_info = email.message_from_bytes(
                sdist.extractfile(top + "PKG-INFO").read()
            )

    @classmethod
    def tearDownClass(cls):
        cls.wheel.close()
        cls._tmp.cleanup()
        super().tearDownClass()

    def _dist_info(self, name):
        return self.wheel.read(f"bnnjax-{VERSION}.dist-info/{name}").decode()

    def test_wheel_holds_the_package_and_the_embedded_sample(self):
        names = set(self.wheel.namelist())
        package = {n for n in names if n.startswith("bnnjax/")}
        self.assertEqual(package, _package_files())
        for data in (
            "bnnjax/_data/mnist_sample.npz",
            "bnnjax/_data/LICENSE-MNIST.txt",
            "bnnjax/py.typed",
            "bnnjax/training/tensorboard.py",
        ):
            self.assertIn(data, package)
        self.assertEqual(
            self.wheel.read("bnnjax/_data/mnist_sample.npz"),
            (ROOT / "bnnjax/_data/mnist_sample.npz").read_bytes(),
        )
        # Nothing beside the package and its metadata: no tests, no docs.
        self.assertEqual(
            {n.split("/")[0] for n in names},
            {"bnnjax", f"bnnjax-{VERSION}.dist-info"},
        )
        self.assertIn(f"bnnjax-{VERSION}.dist-info/licenses/LICENSE", names)

    def test_wheel_metadata(self):
        metadata = email.message_from_string(self._dist_info("METADATA"))
        self.assertEqual(metadata["Name"], "bnnjax")
        self.assertEqual(metadata["Version"], VERSION)
        self.assertEqual(metadata["License-Expression"], "Apache-2.0")
        self.assertEqual(metadata["Requires-Python"], ">=3.10")
        self.assertContainsSubset(
            {"data", "tensorboard", "notebooks", "docs", "dev"},
            set(metadata.get_all("Provides-Extra")),
        )
        self.assertIn(
            'tensorboardX>=2.6; extra == "tensorboard"',
            metadata.get_all("Requires-Dist"),
        )
        self.assertIn(
            "bnnjax = bnnjax.cli:main", self._dist_info("entry_points.txt")
        )

    def test_sdist_holds_what_runs_the_tests_and_builds_the_docs(self):
        names = self.sdist_names
        for name in (
            "PKG-INFO",
            "pyproject.toml",
            "MANIFEST.in",
            "README.md",
            "CHANGELOG.md",
            "LICENSE",
            "Makefile",
            "bnnjax/_data/mnist_sample.npz",
            "docs/conf.py",
            "docs/index.md",
            "docs/changelog.md",
        ):
            self.assertIn(name, names)
        tests = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "tests").glob("*.py")
        }
        self.assertContainsSubset(
            tests | {"tests/conftest.py", "tests/cli_helpers.py"}, names
        )
        notebooks = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / "notebooks").iterdir()
            if p.suffix in (".py", ".ipynb")
        }
        self.assertContainsSubset(notebooks, names)
        self.assertFalse(
            [
                n
                for n in names
                if n.startswith("docs/_build/")
                or n.endswith(".pyc")
                or (n.startswith("docs/notebooks/") and n.endswith(".ipynb"))
            ]
        )
        self.assertEqual(self.pkg_info["Version"], VERSION)

    def test_version_is_defined_once(self):
        pyproject = (ROOT / "pyproject.toml").read_text()
        project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
        self.assertNotRegex(project, r"(?m)^version\s*=")
        self.assertRegex(project, r'dynamic = \["version"\]')
        self.assertIn(
            'version = { attr = "bnnjax._version.__version__" }', pyproject
        )
        # No other file that describes the package spells the version out.
        spelled = [
            path.relative_to(ROOT).as_posix()
            for path in [
                ROOT / "pyproject.toml",
                ROOT / "README.md",
                ROOT / "docs" / "conf.py",
                ROOT / "docs" / "install.md",
                *(ROOT / "bnnjax").rglob("*.py"),
            ]
            if path.name != "_version.py"
            and re.search(rf"\b{re.escape(VERSION)}\b", path.read_text())
        ]
        self.assertEqual(spelled, [])

    def test_changelog_has_unreleased_then_this_version(self):
        headings = re.findall(
            r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M
        )
        self.assertGreaterEqual(len(headings), 2)
        self.assertEqual(headings[0], "Unreleased")
        self.assertIn(VERSION, headings)


if __name__ == "__main__":
    absltest.main()

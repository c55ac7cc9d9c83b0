"""The notebooks: each .ipynb is its jupytext .py pair, without outputs.

The ``.py`` files (jupytext ``py:percent``) are the ones to edit and review;
``jupytext --sync notebooks/NAME.py`` rewrites the ``.ipynb`` that Colab
opens. ``make notebooks`` executes them (``BNNJAX_SMOKE=1``).
"""

import pathlib
import re

import jupytext
import nbformat
from absl.testing import absltest, parameterized

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
COLAB = (
    "https://colab.research.google.com/github/bnnjax/bnnjax/blob/main/"
    "notebooks/{}.ipynb"
)
INSTALL = '"bnnjax[data] @ git+https://github.com/bnnjax/bnnjax"'


def _cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in notebook.cells]


def _fix(name: str) -> str:
    return f"run `jupytext --sync notebooks/{name}.py` and commit both files"


class NotebookSyncTest(parameterized.TestCase):
    def test_the_notebooks_exist_in_pairs(self):
        ipynb = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
        self.assertEqual(NAMES, ipynb, "every .py needs its .ipynb and back")
        for name in ("quickstart", "export_deploy", "compare_methods"):
            self.assertIn(name, NAMES)

    @parameterized.parameters(NAMES)
    def test_ipynb_has_the_cells_of_its_py(self, name):
        text = jupytext.read(NOTEBOOKS / f"{name}.py")
        stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        self.assertEqual(_cells(stored), _cells(text), _fix(name))
        self.assertEqual(
            stored.metadata["jupytext"]["formats"], "ipynb,py:percent"
        )
        self.assertEqual(
            text.metadata["jupytext"]["formats"], "ipynb,py:percent"
        )

    @parameterized.parameters(NAMES)
    def test_ipynb_is_stored_without_outputs(self, name):
        stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        for cell in stored.cells:
            if cell.cell_type == "code":
                self.assertEqual(cell.outputs, [], _fix(name))
                self.assertIsNone(cell.execution_count, _fix(name))

    @parameterized.parameters(NAMES)
    def test_colab_badge_and_colab_only_install(self, name):
        cells = jupytext.read(NOTEBOOKS / f"{name}.py").cells
        self.assertEqual(cells[0].cell_type, "markdown")
        self.assertIn(f"]({COLAB.format(name)})", cells[0].source)
        install = cells[1]
        self.assertEqual(install.cell_type, "code")
        self.assertIn('if "google.colab" in sys.modules:', install.source)
        self.assertIn(INSTALL, install.source)
        # The install runs only under the guard: nothing after it unindented.
        body = install.source.split('if "google.colab" in sys.modules:')[1]
        self.assertFalse(re.search(r"\n\S", body), install.source)

    @parameterized.parameters(NAMES)
    def test_smoke_mode_is_read_from_the_environment(self, name):
        source = (NOTEBOOKS / f"{name}.py").read_text()
        self.assertIn('os.environ.get("BNNJAX_SMOKE") == "1"', source)

    def test_a_stale_ipynb_is_detected(self):
        text = jupytext.read(NOTEBOOKS / f"{NAMES[0]}.py")
        stale = nbformat.read(NOTEBOOKS / f"{NAMES[0]}.ipynb", as_version=4)
        stale.cells[-1].source += "\nprint('edited in Jupyter only')"
        self.assertNotEqual(_cells(stale), _cells(text))


if __name__ == "__main__":
    absltest.main()

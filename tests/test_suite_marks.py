"""The suite's own marks reach the tests they are written on."""

import ast
import pathlib

from absl.testing import absltest

TESTS = pathlib.Path(__file__).parent


def _name(node: ast.expr) -> str:
    """``pytest.mark.slow`` for ``@pytest.mark.slow`` (calls unwrapped)."""
    if isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def marks_above_parameterized(source: str) -> list[str]:
    """Functions with a ``pytest.mark`` decorator outside (above) an absl
    ``parameterized`` one: the mark then lands on the parameterized
    iterator, not on the test methods generated from it, so pytest never
    sees it (a ``slow`` test would run in the fast suite)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        names = [_name(d) for d in node.decorator_list]  # outermost first
        for i, name in enumerate(names):
            if name.startswith("pytest.mark.") and any(
                n.startswith("parameterized.") for n in names[i + 1 :]
            ):
                found.append(f"{node.name} (line {node.lineno})")
    return found


class MarksTest(absltest.TestCase):
    def test_the_check_finds_a_mark_above_parameters(self):
        source = (
            "@pytest.mark.slow\n"
            "@parameterized.parameters(1, 2)\n"
            "def test_a(self, x): pass\n"
            "@parameterized.parameters(1, 2)\n"
            "@pytest.mark.slow\n"
            "def test_b(self, x): pass\n"
        )
        self.assertEqual(marks_above_parameterized(source), ["test_a (line 3)"])

    def test_no_test_file_marks_the_parameterized_iterator(self):
        found = {
            path.name: hits
            for path in sorted(TESTS.glob("test_*.py"))
            if (hits := marks_above_parameterized(path.read_text()))
        }
        self.assertEqual(found, {})


if __name__ == "__main__":
    absltest.main()

"""Runs every Python block of the README and the docs pages, each alone.

A block is a fenced ```python block (or a MyST ``{code-block} python`` /
``{code-cell}`` block) in README.md or a Markdown page under docs/. Each
runs in a fresh namespace, so it must carry its own imports; what a block
shows it also asserts (the test fails on the first failing assert). One
test per block, named by file and line.
"""

import ast
import pathlib
import re

from absl.testing import absltest, parameterized

ROOT = pathlib.Path(__file__).resolve().parents[1]
_FENCE = re.compile(
    r"^(?P<fence>`{3,})[ \t]*"
    r"(?:python|\{code-block\}[ \t]+python|\{code-cell\}(?:[ \t]+\w+)?)"
    r"[ \t]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)
_OPTION = re.compile(r"^:[\w-]+:.*$")


def _pages() -> list[pathlib.Path]:
    docs = sorted(
        path
        for path in (ROOT / "docs").rglob("*.md")
        if "_build" not in path.relative_to(ROOT / "docs").parts
    )
    return [ROOT / "README.md", *docs]


def _blocks() -> list[tuple[str, str, int, str]]:
    """(test name, file, first line of the code, code) of every block."""
    blocks = []
    for path in _pages():
        text = path.read_text(encoding="utf-8")
        relative = path.relative_to(ROOT).as_posix()
        for match in _FENCE.finditer(text):
            body = match.group("body").splitlines(keepends=True)
            line = text.count("\n", 0, match.start("body")) + 1
            while body and _OPTION.match(body[0]):  # MyST directive options
                body, line = body[1:], line + 1
            name = re.sub(r"\W", "_", f"{relative}_L{line}")
            blocks.append((name, relative, line, "".join(body)))
    return blocks


BLOCKS = _blocks()


class DocsTest(parameterized.TestCase):
    def test_pages_have_python_blocks(self):
        files = {relative for _, relative, _, _ in BLOCKS}
        self.assertIn("README.md", files)
        self.assertIn("docs/guides/binarizer.md", files)
        self.assertGreater(len(BLOCKS), 10)

    @parameterized.named_parameters(
        (name, relative, line, code) for name, relative, line, code in BLOCKS
    )
    def test_block_runs_alone(self, relative, line, code):
        # What a block shows, it asserts: a block with no assert statement
        # would pass as long as it ran.
        self.assertTrue(
            any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(code))),
            f"{relative}:{line} asserts nothing",
        )
        # Leading newlines make tracebacks point at the page's own lines.
        source = "\n" * (line - 1) + code
        namespace = {"__name__": "docs_snippet"}
        exec(compile(source, relative, "exec"), namespace)


if __name__ == "__main__":
    absltest.main()

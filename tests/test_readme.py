"""Runs every ```python block of the README, in order, in one namespace."""

import pathlib
import re

from absl.testing import absltest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


class ReadmeTest(absltest.TestCase):
    def test_python_snippets_run(self):
        blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        self.assertNotEmpty(blocks)
        namespace = {}
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
        # The custom-surrogate example produced a binarized array.
        self.assertEqual(namespace["y"].tolist(), [-1.0, 1.0, 1.0])
        self.assertEqual(namespace["wb"].shape, (784, 256))
        # The export example packed the MLP 1 bit per binary weight.
        self.assertGreater(namespace["sizes"].compression_ratio, 10)
        # The conversion example binarizes the middle layers only.
        self.assertEqual(
            sorted(namespace["binary_mlp"].binarized_layers),
            ["Dense_1", "Dense_2"],
        )


if __name__ == "__main__":
    absltest.main()

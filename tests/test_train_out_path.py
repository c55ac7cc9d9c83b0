"""``bnnjax train --out PATH`` where PATH cannot be created: one line."""

import os
import shutil
import tempfile

from absl.testing import absltest
from cli_helpers import run_cli
from fs_helpers import mount_tmpfs

from bnnjax import checkpoint, train

FAST = ["--hidden", "16", "--epochs", "1", "--batch-size", "500"]


class OutPathTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _refused(self, out):
        status, stdout, stderr = run_cli(["train", *FAST, "--out", out])
        self.assertEqual((status, stdout), (2, ""), stderr)
        self.assertLen(stderr.splitlines(), 1, stderr)
        self.assertNotIn("Errno", stderr)
        return stderr

    def test_a_path_under_a_regular_file(self):
        a_file = os.path.join(self.tmp, "notes.txt")
        with open(a_file, "w") as f:
            f.write("x")
        out = os.path.join(a_file, "runs", "a")
        stderr = self._refused(out)
        self.assertEqual(
            stderr,
            f"bnnjax train: error: Cannot create the run directory {out}: "
            f"{a_file} is a file, not a directory. Choose another --out.\n",
        )
        # From Python: a RunDirectoryError, an OSError naming the reason.
        config = train.TrainConfig(hidden=(16,), epochs=1, out_dir=out)
        with self.assertRaisesRegex(
            checkpoint.RunDirectoryError, "is a file, not a directory"
        ) as cm:
            train.run(config, make_plots=False)
        self.assertEqual(cm.exception.path, out)

    def test_out_is_a_regular_file(self):
        a_file = os.path.join(self.tmp, "notes.txt")
        with open(a_file, "w") as f:
            f.write("x")
        stderr = self._refused(a_file)
        self.assertEqual(
            stderr,
            f"bnnjax train: error: Cannot use {a_file} as the run directory: "
            "it is a file, not a directory. Choose another --out.\n",
        )
        with open(a_file) as f:
            self.assertEqual(f.read(), "x")  # untouched

    def test_a_read_only_file_system(self):
        mount = os.path.join(self.tmp, "ro")
        mount_tmpfs(self, mount, "size=64k,ro")
        out = os.path.join(mount, "run")
        self.assertEqual(
            self._refused(out),
            f"bnnjax train: error: Cannot create the run directory {out}: "
            "the file system is read-only. Choose another --out.\n",
        )
        # An existing directory there: its lock file cannot be written.
        self.assertIn(
            f"Cannot write in the run directory {mount}: the file system "
            "is read-only.",
            self._refused(mount),
        )


if __name__ == "__main__":
    absltest.main()

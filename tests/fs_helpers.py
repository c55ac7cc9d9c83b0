"""Small real file systems for tests: a tmpfs mounted for one test."""

import os
import shutil
import subprocess
import unittest


def mount_tmpfs(test: unittest.TestCase, path: str, options: str) -> None:
    """Mounts a tmpfs with ``options`` (``"size=400k"``, ``"size=64k,ro"``).

    Creates ``path`` if missing, unmounts it when ``test`` ends, and skips
    ``test`` where mounting is not allowed (not root, no CAP_SYS_ADMIN).
    """
    if shutil.which("mount") is None:
        test.skipTest("no mount command here")
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        test.skipTest(
            "mounting a tmpfs needs root (or CAP_SYS_ADMIN): "
            + result.stderr.strip()
        )
    test.addCleanup(subprocess.run, ["umount", "-l", path], check=False)

"""Test-wide settings.

* JAX fails on implicit rank promotion, as flax does.
* Temporary files go to one directory per test process, removed when the
  process's session ends: tensorflow-datasets leaves an empty
  ``tmp*tfds`` directory in the system's temporary directory each time it
  reads a builder's information (``DatasetInfo.initialize_from_bucket``),
  and the suite reads hundreds. ``TMPDIR`` is set too, so the CLI
  subprocesses the tests start put theirs there as well.
"""

import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session", autouse=True)
def _session_temp_dir():
    old_tempdir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    root = tempfile.mkdtemp(prefix="bnnjax-tests-")
    tempfile.tempdir = root
    os.environ["TMPDIR"] = root
    try:
        yield root
    finally:
        tempfile.tempdir = old_tempdir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
        shutil.rmtree(root, ignore_errors=True)

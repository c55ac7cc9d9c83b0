"""Test-wide settings.

* JAX fails on implicit rank promotion, as flax does.
* Temporary files go to one directory per test process, removed when the
  process's session ends: tensorflow-datasets leaves an empty
  ``tmp*tfds`` directory in the system's temporary directory each time it
  reads a builder's information (``DatasetInfo.initialize_from_bucket``),
  and the suite reads hundreds. ``TMPDIR`` is set too, so the CLI
  subprocesses the tests start put theirs there as well.
"""

import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session", autouse=True)
def _session_temp_dir():
    root = tempfile.mkdtemp(prefix="bnnjax-tests-")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", root)
        patch.setenv("TMPDIR", root)
        yield root
    shutil.rmtree(root, ignore_errors=True)

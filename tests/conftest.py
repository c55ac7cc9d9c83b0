"""Test-wide settings.

* JAX fails on implicit rank promotion, as flax does.
* Temporary files go to one directory per test process, removed when the
  process's session ends: tensorflow-datasets leaves an empty
  ``tmp*tfds`` directory in the system's temporary directory each time it
  reads a builder's information (``DatasetInfo.initialize_from_bucket``),
  and the suite reads hundreds. ``TMPDIR`` is set too, so the CLI
  subprocesses the tests start put theirs there as well.
* Compiled programs are shared through JAX's persistent compilation cache,
  in one directory per test run: the test processes (``pytest -n``'s
  workers) and the ``bnnjax`` subprocesses the tests start compile the same
  training steps many times, and a program read from the cache is the
  program XLA compiled (its key holds the program, the compile options,
  the devices, the XLA flags and the versions). The cache has a size
  limit, so JAX locks each entry (``filelock``) and processes that compile
  the same program at once do not read a half-written entry. A
  ``JAX_COMPILATION_CACHE_DIR`` set before the run is used as it is (and
  kept); ``BNNJAX_TEST_COMPILATION_CACHE=0`` turns the cache off.
"""

import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE_ENV = {
    # Programs that took 0.3 s or more to compile. With a limit JAX scans
    # the whole cache at every write, so caching the thousands of quicker
    # ones too made the run slower (docs/contributing.md).
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3",
    # A limit turns on JAX's file locks (see above); nothing is evicted.
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 * 2**30),
}
_OWN_CACHE = "_bnnjax_own_compilation_cache"


def pytest_configure(config: pytest.Config) -> None:
    """Sets up the run's compilation cache (in the controlling process).

    ``pytest -n``'s workers start after this hook, and they, like every
    subprocess a test starts, inherit the environment set here (JAX reads
    it when it is imported).
    """
    if hasattr(config, "workerinput"):
        return
    if os.environ.get("BNNJAX_TEST_COMPILATION_CACHE", "1") == "0":
        return
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="bnnjax-test-xla-cache-")
        setattr(config, _OWN_CACHE, directory)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    for name, value in _CACHE_ENV.items():
        os.environ.setdefault(name, value)
    # This process imported JAX before the environment was set (tests run
    # here without ``pytest -n``).
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )
    jax.config.update(
        "jax_compilation_cache_max_size",
        int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]),
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Removes the run's own compilation cache."""
    directory = getattr(config, _OWN_CACHE, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _session_temp_dir():
    root = tempfile.mkdtemp(prefix="bnnjax-tests-")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", root)
        patch.setenv("TMPDIR", root)
        yield root
    shutil.rmtree(root, ignore_errors=True)

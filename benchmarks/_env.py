"""The environment block every benchmark's JSON lines carry.

One place for the device, package versions, CPU affinity, thread settings
and load average, so results from different scripts can be compared and
filtered the same way. Importing this module does not import jax: scripts
that must set ``XLA_FLAGS`` first (``sharding_throughput.py``) call
:func:`environment` after their own setup.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from typing import Any

#: Packages whose versions go into every line.
PACKAGES = ("bnnjax", "jax", "jaxlib", "flax", "optax", "numpy")
#: Environment variables that change threading, compilation or memory
#: allocation (glibc's tunables: ``glibc.malloc.hugetlb=1`` backs large
#: allocations with transparent huge pages, see the benchmarks page).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
)


def version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_affinity() -> int | None:
    """How many CPUs this process may run on (None where unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return None


def load() -> list[float]:
    """``os.getloadavg()`` rounded to 0.01."""
    return [round(v, 2) for v in os.getloadavg()]


def environment(packages: tuple[str, ...] = PACKAGES) -> dict[str, Any]:
    """Device, versions, CPU and thread settings of this process.

    Args:
      packages: distributions whose versions are recorded.

    Returns:
      ``{"device": "cpu:cpu", "device_count": 1, "versions": {...},
      "python": ..., "cpu_count": ..., "cpu_affinity": ..., "thread_env":
      {...}}`` where ``thread_env`` holds the set variables of
      :data:`THREAD_VARIABLES`.
    """
    import jax

    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "device_count": jax.device_count(),
        "versions": {name: version(name) for name in packages},
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": cpu_affinity(),
        "thread_env": {
            k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ
        },
    }


def emit(record: dict[str, Any], out: str | None = None) -> None:
    """Prints ``record`` as one JSON line and appends it to ``out``."""
    text = json.dumps(record)
    print(text, flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(text + "\n")

"""Start-up time of the ``bnnjax`` command and of ``import bnnjax``.

Each probe runs in a fresh interpreter, ``--repeats`` times; one JSON line
per probe gives the median and range of the wall times (seconds) and
whether the probe loaded JAX. With ``--baseline-src DIR`` (a source tree
holding another version's ``bnnjax/`` package, e.g. from ``git worktree
add DIR COMMIT``) every probe also runs against that tree, interleaved, and
the line carries the ratio of the two medians.

Both trees run the same way: ``python -S`` with ``PYTHONPATH`` set to the
tree and this interpreter's site-packages, so an installed (or editable)
bnnjax cannot shadow the tree under test; each run checks which
``bnnjax/__init__.py`` it loaded.

Usage::

    python benchmarks/startup_time.py [--repeats 10] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import site
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import _env

# name -> code run by `python -c`; the CLI probes run `bnnjax.cli.main`, as
# the `bnnjax` console script does.
PROBES = {
    "import bnnjax": "import bnnjax",
    "bnnjax --help": "from bnnjax.cli import main; main(['--help'])",
    "bnnjax demo --help": (
        "from bnnjax.cli import main; main(['demo', '--help'])"
    ),
    "bnnjax train --help": (
        "from bnnjax.cli import main; main(['train', '--help'])"
    ),
    "import bnnjax; bnnjax.binarize": "import bnnjax; bnnjax.binarize",
}
# Runs a probe, then reports on stderr whether it loaded JAX (``--help``
# exits through SystemExit(0)).
_WRAPPER = """\
import sys
try:
    exec({code!r})
except SystemExit as e:
    if e.code not in (None, 0):
        raise
sys.stderr.write("JAX_LOADED=%d\\n" % ("jax" in sys.modules))
sys.stderr.write("BNNJAX_FILE=%s\\n" % sys.modules["bnnjax"].__file__)
"""
# This checkout: the tree the benchmark measures unless told otherwise.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _time_once(code: str, source: str) -> tuple[float, bool]:
    """Wall time of one fresh interpreter running ``code`` against the
    bnnjax in ``source``, and whether it loaded JAX."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([source, *site.getsitepackages()])
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-S", "-c", _WRAPPER.format(code=code)],
        cwd=source,  # `-c` puts the working directory first on sys.path
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{result.stderr}")
    want = os.path.join(source, "bnnjax", "__init__.py")
    if f"BNNJAX_FILE={want}\n" not in result.stderr:
        raise RuntimeError(f"{code!r} did not load {want}:\n{result.stderr}")
    return seconds, "JAX_LOADED=1" in result.stderr


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--baseline-src",
        default=None,
        metavar="DIR",
        help="a source tree with another version's bnnjax/ to compare with",
    )
    parser.add_argument(
        "--probes",
        default=",".join(PROBES),
        help="comma-separated probe names (default: all)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    names = [n for n in args.probes.split(",") if n]
    unknown = sorted(set(names) - set(PROBES))
    if unknown:
        parser.error(
            f"unknown probes {unknown}; expected some of {list(PROBES)}"
        )
    if args.baseline_src is not None and not os.path.isdir(
        os.path.join(args.baseline_src, "bnnjax")
    ):
        parser.error(f"--baseline-src {args.baseline_src!r} holds no bnnjax/")
    environment = _env.environment()
    for name in names:
        times: list[float] = []
        baseline: list[float] = []
        loads_jax = baseline_loads_jax = False
        for _ in range(args.repeats):
            seconds, loads_jax = _time_once(PROBES[name], ROOT)
            times.append(seconds)
            if args.baseline_src is not None:
                seconds, baseline_loads_jax = _time_once(
                    PROBES[name], os.path.abspath(args.baseline_src)
                )
                baseline.append(seconds)
        line = {
            "benchmark": "startup_time",
            "probe": name,
            "source": ROOT,
            "repeats": args.repeats,
            **_summary(times),
            "loads_jax": loads_jax,
        }
        if baseline:
            line["baseline"] = {
                "source": os.path.abspath(args.baseline_src),
                **_summary(baseline),
                "loads_jax": baseline_loads_jax,
            }
            line["speedup"] = line["baseline"]["median_s"] / line["median_s"]
        line.update(environment, load=_env.load())
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())

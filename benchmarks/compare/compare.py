"""``bnnjax compare`` as a script (same flags), for the recorded runs.

Usage: ``python benchmarks/compare/compare.py --methods ... --out DIR``;
see ``bnnjax compare --help`` and ``benchmarks/compare/README.md``.
"""

import argparse
import sys

from bnnjax import _cli_compare


def main() -> int:
    parser = argparse.ArgumentParser(prog="bnnjax compare")
    _cli_compare.add_compare_arguments(parser)
    return _cli_compare.run_compare(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())

"""Running the CLI (or one of its commands) in-process, output captured."""

import contextlib
import io
from collections.abc import Callable
from typing import Any

from bnnjax import cli


def captured(fn: Callable[..., Any], *args: Any) -> tuple[Any, str, str]:
    """``fn(*args)`` with stdout and stderr captured: (status, out, err).

    argparse's ``SystemExit`` counts as a returned status.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = fn(*args)
        except SystemExit as e:
            status = e.code
    return status, out.getvalue(), err.getvalue()


def run_cli(argv: list[str]) -> tuple[Any, str, str]:
    """``bnnjax ARGV`` in-process: (exit status, stdout, stderr)."""
    return captured(cli.main, argv)

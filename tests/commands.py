"""Runs a command's `main(argv)` inside the test process, as the shell would run the command.

A Python process that imports TensorFlow costs ~7 CPU-seconds before it does anything, so the
command-line tests call the commands' `main` here; the few tests that need a real process (a
SIGKILL, the import-time environment, TensorFlow's own logging) still start one.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Ran:
    """What a command did: its exit status and what it printed (as subprocess.CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


def run_main(main: Callable[[list[str]], int], *argv: str | Path, cwd: str | Path | None = None) -> Ran:
    """`main(argv)` with stdout and stderr captured, in `cwd` if given; argparse's exits become the status."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exit:
                code = 0 if exit.code is None else exit.code
    finally:
        os.chdir(previous)
    return Ran(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())

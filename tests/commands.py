"""Runs a command's `main(argv)` inside the test process, as the shell would run the command.

A Python process that imports TensorFlow costs ~7 CPU-seconds before it does anything, so the
command-line tests call the commands' `main` here; the few tests that need a real process (a
SIGKILL, the import-time environment, TensorFlow's own logging) still start one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
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


def refused_while_locked(main: Callable[[list[str]], int], argv: list, run: Path) -> tuple[Ran, int]:
    """Runs `main(argv + --output-dir run)` while a live process of this host holds `run`'s run.lock.

    Asserts exit status 2 and every file of `run` unchanged (mtime and size); returns what the
    command printed and the holder's pid, which has ended by then (its lock is stale).
    """
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (run / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": "then"}))
        before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}
        refused = run_main(main, *argv, "--output-dir", run)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")} == before
        return refused, holder.pid
    finally:
        holder.kill()
        holder.wait()

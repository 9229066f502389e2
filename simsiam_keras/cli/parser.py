"""How the scripts answer a mistake: one line, `error: ...`, on stderr, and exit status 2.

argparse prints the whole usage block before its message, and a library error can span
several lines (Keras' safe-mode refusal does); both become one line here. Flags must be
spelled out: abbreviations are refused, so `--epoch 3` is an unknown flag rather than a
silent `--epochs 3`, and adding a flag later cannot change what an old command means.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

EXIT_USAGE = 2
# What the library raises for a mistake in the arguments or the input files.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def one_line(message: object) -> str:
    """`message` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


def report_error(error: BaseException | str) -> int:
    """Prints `error: <message>` as one line on stderr and returns the exit status for a mistake."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE


def check_output_dir(path: str | None, flag: str = "--output-dir") -> None:
    """Raises NotADirectoryError when `path` exists and is not a directory (None: a default is used)."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{flag} {path} exists and is not a directory")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: ...; see PROG --help`) and no flag abbreviations."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {one_line(message)}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_USAGE)

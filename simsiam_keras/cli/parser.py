"""How the commands answer a mistake: one line, `error: ...`, on stderr, and exit status 2.

argparse prints the whole usage block before its message, and a library error can span
several lines (Keras' safe-mode refusal does); both become one line here. The library names
the argument a mistake is in (`batch_size 7 does not divide ...`, or quoted later in the
message); the command says the flag instead (`--batch-size 7 does not divide ...`). Flags must be spelled out: abbreviations are
refused, so `--epoch 3` is an unknown flag rather than a silent `--epochs 3`, and adding a
flag later cannot change what an old command means.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

EXIT_USAGE = 2
# What the library raises for a mistake in the arguments or the input files.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def one_line(message: object) -> str:
    """`message` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


def add_force_unlock(parser: argparse.ArgumentParser | argparse._ArgumentGroup, lock: str) -> None:
    """`--force-unlock`, for a command that holds the lock (`lock`: its file) of the folder it writes (run_lock)."""
    parser.add_argument("--force-unlock", action="store_true", default=None,
                        help=f"take over {lock} even if its holder on another host may be alive")


def add_preemption_signal(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--preemption-signal NAME`, for a command that stops on a preemption notice (train.preemption)."""
    parser.add_argument("--preemption-signal", metavar="NAME",
                        help="also treat this signal as a preemption notice (e.g. SIGUSR1 for SLURM's --signal); "
                             "SIGTERM and SIGINT always are: the run stops after the current step with a backup "
                             "and exits with 128 + the signal's number (143 for SIGTERM)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: ...; see PROG --help`) and no flag abbreviations."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {one_line(message)}; see {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def flag_of(self, argument: str) -> str | None:
        """The option string whose value is the library argument `argument`, if this parser has one."""
        for action in self._actions:
            if action.dest == argument and action.option_strings:
                return action.option_strings[0]
            for command in (action.choices or {}).values() if isinstance(action, argparse._SubParsersAction) else ():
                if (flag := command.flag_of(argument)) is not None:
                    return flag
        return None

    def report(self, error: BaseException | str) -> int:
        """Prints a library error as `error: ...` with its argument named as this command's flag; returns 2."""
        message = one_line(error)
        leading = re.match(r"[a-z][a-z0-9_]*\b", message)
        flag = self.flag_of(leading.group()) if leading else None
        if flag is not None:
            message = flag + message[leading.end():]
        # Arguments named inside the message are quoted: `overwrite` -> --overwrite.
        message = re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: self.flag_of(m.group(1)) or m.group(0), message)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE

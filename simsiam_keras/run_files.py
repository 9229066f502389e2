"""A run's files, each written whole so that a kill never leaves half of one (temp file + `os.replace`)."""

from __future__ import annotations

import os
import tempfile

# A run's evaluation records (evaluate.results), which exports copy into their metadata.
RESULTS_FILE = "results.json"


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` whole: a reader sees the old file or the new one, never a part."""
    folder = os.path.dirname(os.fspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_output_dir(path: str | os.PathLike | None, argument: str = "output_dir") -> None:
    """Raises NotADirectoryError when `path` exists and is not a directory (None: a default is used)."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{argument} {path} exists and is not a directory")

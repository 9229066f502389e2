"""Folders written whole: refused if present, built in a staging folder beside the target, renamed into place.

While an export writes, it holds `NAME.lock` beside its folder (the folder itself is renamed into
place whole, so it cannot hold its own lock): a second export into `NAME` while the first lives
is refused with one line naming its process (`run_lock.RunLock.beside`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from simsiam_keras.run_lock import RunLock


def check_target(output_dir: str | Path, overwrite: bool = False) -> Path:
    """The export folder, refused if it exists and `overwrite` is not set (checked before any work)."""
    target = Path(output_dir)
    if target.exists() and not overwrite:
        raise FileExistsError(f"output {target} already exists; pass `overwrite` to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"output {target} exists and is not a folder")
    return target


def check_writable(output_dir: str | Path, overwrite: bool, force_unlock: bool) -> None:
    """`check_target`, and refuses a target whose lock a live process holds (before any work)."""
    check_target(output_dir, overwrite)
    RunLock.beside(output_dir, force_unlock).check()


def replace_with(staging: Path, target: Path) -> None:
    """Moves the finished folder into place; an old one is removed only once the new one is there."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged(target: Path, *, like_makedirs: bool = False) -> Iterator[Path]:
    """A staging folder beside `target`, moved onto it when the block ends and removed if the block raises.

    The staging folder is private (mkdtemp's 0o700); `like_makedirs` gives it the permissions
    os.makedirs would (a run directory's).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    if like_makedirs:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
    try:
        yield staging
        replace_with(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_under_lock(output_dir: str | Path, overwrite: bool, force_unlock: bool) -> Iterator[Path]:
    """`staged` for the export folder `output_dir`, checked and written under its lock."""
    with RunLock.beside(output_dir, force_unlock):
        # Checked under the lock: an export that held it may have just written the target.
        with staged(check_target(output_dir, overwrite)) as staging:
            yield staging

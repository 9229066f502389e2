"""One writer per run folder: a lock file naming the host, process and start time of the writer.

A second pretraining, fine-tuning or export into a folder whose lock is held by a live process
is refused with one line naming that process. A lock whose writer is gone is taken over with a
warning: on this host, when its process no longer exists; from another host (a shared file
system), when the lock has not been refreshed for `STALE_AFTER_SECONDS` (the holder refreshes it
every `HEARTBEAT_SECONDS`), or at once with `force_unlock`.

    with RunLock("runs/x"):
        ...  # write the run's files

A folder that is replaced whole (an export, renamed into place from a staging folder) cannot
hold its own lock: `RunLock.beside(target)` holds `TARGET.lock` next to it instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone

LOCK_FILE = "run.lock"
HEARTBEAT_SECONDS = 60.0
# A lock from another host that nobody refreshed for this long is taken to be left by a dead process.
STALE_AFTER_SECONDS = 600.0


class RunLocked(ValueError):
    """The folder's lock is held by a live process (a usage error: one line, exit status 2)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(holder: dict) -> str:
    return f"process {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')})"


class RunLock(contextlib.AbstractContextManager):
    """Holds `folder/run.lock` while entered (creating `folder` if needed); refuses a live holder's folder.

    `lock_path` puts the lock file elsewhere (see `beside`); its folder is the one created if needed.
    """

    def __init__(self, folder: str | os.PathLike, force_unlock: bool = False, argument: str = "output_dir",
                 lock_path: str | os.PathLike | None = None):
        self.folder = os.fspath(folder)
        self.path = os.fspath(lock_path) if lock_path is not None else os.path.join(self.folder, LOCK_FILE)
        self.force_unlock = force_unlock
        self.argument = argument
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._held = False
        self._created = False
        self._parent = os.path.dirname(self.path) or "."

    @classmethod
    def beside(cls, target: str | os.PathLike, force_unlock: bool = False, argument: str = "output") -> "RunLock":
        """The lock of a folder that is replaced whole: `TARGET.lock` in the folder that holds `target`."""
        target = os.path.normpath(os.fspath(target))
        return cls(target, force_unlock, argument, lock_path=f"{target}.lock")

    def _holder(self) -> dict | None:
        """The lock's contents, {} if it exists but cannot be read, None if there is none."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> str | None:
        """Why `holder` is gone, or None if it may be alive."""
        if self.force_unlock:
            return "force_unlock"
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int):
            return None if _alive(holder["pid"]) else "its process is gone"
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return "it was just released"
        if age > STALE_AFTER_SECONDS:
            return f"not refreshed for {age:.0f} s (over {STALE_AFTER_SECONDS:.0f} s)"
        return None

    def live_holder(self, others_only: bool = False) -> str | None:
        """`process P on HOST (started T)` if a live process (`others_only`: not this one) holds the lock,
        else None; changes nothing."""
        holder = self._holder()
        if holder is None or self._stale(holder) is not None:
            return None
        if others_only and holder.get("host") == self.host and holder.get("pid") == os.getpid():
            return None
        return _describe(holder)

    def check(self) -> None:
        """Raises RunLocked if a live process holds the folder's lock; changes nothing."""
        holder = self.live_holder()
        if holder is not None:
            raise RunLocked(
                f"{self.argument} {self.folder} is being written by {holder}; wait for it to end, "
                f"or if it is dead on another host, pass `force_unlock`"
            )

    def acquire(self) -> None:
        self._created = not os.path.isdir(self._parent)
        os.makedirs(self._parent, exist_ok=True)
        mine = {"host": self.host, "pid": os.getpid(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue
                why = self._stale(holder)
                if why is None:
                    self.check()  # raises, naming the holder
                    continue
                # Renaming succeeds for one of several processes taking over at once; the others retry.
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, f"{self.path}.stale-{os.getpid()}")
                    os.remove(f"{self.path}.stale-{os.getpid()}")
                    print(f"warning: taking over the lock of {self.folder} from {_describe(holder)}: {why}",
                          file=sys.stderr)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self._held = True
            self._heartbeat = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
            self._heartbeat.start()
            return
        self.check()
        raise RunLocked(f"{self.argument} {self.folder}: could not take its lock {self.path}")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == self.host:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        if self._created:  # a run that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                os.rmdir(self._parent)
        self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

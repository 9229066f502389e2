"""Host memory (peak RSS) of a measured block, read from /proc or getrusage."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Iterator


@dataclasses.dataclass
class HostMemory:
    """Resident host memory (RSS) of this process around a measured block, in MB (10^6 bytes).

    `peak_mb` is the high-water mark while the block ran; `before_mb` the RSS when it started
    (TensorFlow and the other imports are already in it), so `peak_mb - before_mb` is what the
    block added at its peak. Read from Linux's /proc/self/status (VmHWM, VmRSS); the peak is
    reset at the start through /proc/self/clear_refs. Where that reset is refused,
    `peak_includes_startup` is True and the peak covers the whole process since it started.
    Elsewhere (no /proc), `getrusage`'s whole-process peak is all there is.
    """

    before_mb: float | None = None
    peak_mb: float | None = None
    peak_includes_startup: bool = True

    @property
    def increase_mb(self) -> float | None:
        if self.peak_mb is None or self.before_mb is None:
            return None
        return self.peak_mb - self.before_mb


def _proc_status_mb(field: str) -> float | None:
    """A `kB` field of /proc/self/status (Linux) in MB, or None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def _getrusage_peak_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux


@contextlib.contextmanager
def measure_host_memory() -> Iterator[HostMemory]:
    """Measures the peak RSS of the `with` block; the HostMemory is filled in when the block ends."""
    memory = HostMemory(before_mb=_proc_status_mb("VmRSS"))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0, proc(5))
        memory.peak_includes_startup = False
        # The baseline is the reset mark itself: other threads may free memory between a read of
        # VmRSS and the reset, and the mark only grows from here, so the peak is never below it.
        memory.before_mb = _proc_status_mb("VmHWM")
    except OSError:
        pass
    try:
        yield memory
    finally:
        peak = _proc_status_mb("VmHWM") or _getrusage_peak_mb()
        # Linux sums RSS from per-CPU counters, read without syncing them: two readings can be a
        # few pages apart the wrong way, so a block that allocated nothing may read under its start.
        memory.peak_mb = None if peak is None else max(peak, memory.before_mb or 0.0)

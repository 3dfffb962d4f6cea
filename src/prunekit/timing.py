"""Side-by-side timing: candidates run alternately in one process; medians, not means."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def llc_bytes(default: int = 32 << 20) -> int:
    """Size of the last-level CPU cache (from sysfs), so benchmarks can rotate weights past it."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes, default=default)


def copies_past_cache(nbytes: int, factor: float = 2.0, most: int = 256) -> int:
    """How many copies of an ``nbytes`` object together exceed ``factor`` × the last-level cache
    (at most ``most``: tiny layers are dominated by call overhead, not by where their bytes are)."""
    return min(most, max(2, int(factor * llc_bytes() // max(nbytes, 1)) + 1))


def alternate(fns: dict[str, Callable[[int], object]], reps: int = 20, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each ``fn(i)`` (``i`` picks a rotated copy), interleaving the
    candidates call by call so drifts in clock speed or load hit all of them alike."""
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn(i)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last ``reset_peak_rss`` (or since start)."""
    kb = _status_kb("VmHWM")
    return kb * 1024 if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """Resident memory now (0 where /proc is missing)."""
    return (_status_kb("VmRSS") or 0) * 1024

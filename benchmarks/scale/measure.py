"""CPU time and added peak memory of one stage, in this process.

CPU time is `time.process_time()` (all threads of the process), which is far less sensitive than wall time to other
jobs on a shared machine. Peak memory is the high-water mark of the resident set (`VmHWM`, reset before the stage
through `/proc/self/clear_refs` where Linux allows it) minus the resident set when the stage began: what the stage
added at its peak, inputs that already existed excluded.
"""

import time
from contextlib import contextmanager


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextmanager
def measured(record: dict):
    """Fill `record` with `cpu_s`, `wall_s` and `peak_mb` (added peak resident memory, `None` where unknown)."""
    resettable = _reset_peak()
    rss = _status_kb("VmRSS")
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield record
    finally:
        record["cpu_s"] = time.process_time() - cpu
        record["wall_s"] = time.perf_counter() - wall
        peak = _status_kb("VmHWM")
        record["peak_mb"] = (peak - rss) / 1024 if resettable and peak is not None and rss is not None else None


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0..100) by linear interpolation between the sorted values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

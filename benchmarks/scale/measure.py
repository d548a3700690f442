"""CPU time and added peak memory of one stage, in this process.

CPU time is `time.process_time()` (all threads of the process), which is far less sensitive than wall time to other
jobs on a shared machine. Peak memory is the high-water mark of the resident set (`VmHWM`, reset before the stage
through `/proc/self/clear_refs` where Linux allows it) minus the resident set when the stage began: what the stage
added at its peak, inputs that already existed excluded.
"""

import math
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


def rss_mb() -> float | None:
    """The resident set of this process now, in MB (`None` where unknown)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def measured_parts(record: dict, parts: list[tuple[str, object]]) -> None:
    """Run `(name, function)` parts in order, each measured into `record[name]`; `record` gets the total CPU and
    wall time and the stage's added peak (the highest of the parts' peaks above the resident set at the start)."""
    start = rss_mb()
    peaks = []
    for name, fn in parts:
        part: dict = {}
        before = rss_mb()
        with measured(part):
            fn()
        record[name] = part
        if part["peak_mb"] is not None and before is not None and start is not None:
            peaks.append(part["peak_mb"] + before - start)
    record["cpu_s"] = sum(record[name]["cpu_s"] for name, _ in parts)
    record["wall_s"] = sum(record[name]["wall_s"] for name, _ in parts)
    record["peak_mb"] = max(peaks) if len(peaks) == len(parts) else None


def extrapolated(results: dict, stage: str, size: int, key: str) -> float | None:
    """`key` of `stage` at `size` items, from the measured sizes below it in `results` (`{size: {stage: record}}`):
    at the log-log slope between the two largest (never below linear), or linearly from a single one."""
    points = sorted((int(n), records[stage][key]) for n, records in results.items()
                    if int(n) < size and isinstance(records.get(stage), dict) and records[stage].get(key))
    if not points:
        return None
    slope = 1.0
    if len(points) >= 2:
        (n1, v1), (n2, v2) = points[-2:]
        slope = max(1.0, math.log(v2 / v1) / math.log(n2 / n1))
    n, value = points[-1]
    return value * (size / n) ** slope


def over_budget(state: dict, stage: str, max_cpu_s: float | None, max_peak_mb: float | None,
                keys: tuple[str, str] = ("cpu_s", "peak_mb"), cpu_label: str = "CPU") -> dict | None:
    """`{"not_run": why, ...}` when the sizes measured below this one (`state["results"]`) extrapolate `keys` (CPU
    seconds, added peak MB) beyond the budget (`None`: no limit); else `None` (always with `--force`, which runs
    every size). Printed, never silently skipped."""
    size, results = state["log"].num_items, state.get("results", {})
    if state.get("force"):
        return None
    cpu, peak = (extrapolated(results, stage, size, key) for key in keys)
    if not ((max_cpu_s is not None and cpu is not None and cpu > max_cpu_s)
            or (max_peak_mb is not None and peak is not None and peak > max_peak_mb)):
        return None
    figures = ((f"{(cpu or 0) / 60:.0f} min {cpu_label}", cpu), (f"{(peak or 0) / 1024:.1f} GB", peak))
    why = "not run: extrapolated " + ", ".join(text for text, value in figures if value is not None)
    print(f"  [{size:,} items] {stage}: {why}", flush=True)
    return {"not_run": why, "extrapolated_cpu_s": cpu, "extrapolated_peak_mb": peak}

"""What the README's first command costs: `ilrec-train` with no argument (the embedded default, a smoke test on
synthetic data), run as a user runs it, in a child process; its CPU time (all threads, from the child's resource
usage), wall time, peak memory and the machine's load average before and after, with the number of torch threads
it used. Each run is appended to the JSON file, so runs on a quiet machine and beside other jobs sit side by side.

    python -m benchmarks.speed.first_run --output benchmarks/results/first_run.json              # as shipped
    python -m benchmarks.speed.first_run --torch_threads 2 --output ...                           # another setting
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ilrec_trl.atomic import write_text_atomic


def measure(torch_threads: int | None, timeout: float | None = None) -> dict:
    """One run of the embedded default in a fresh output folder; stopped after `timeout` seconds of wall time (then
    recorded as not finished, with the CPU time it had used)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ilrec_trl.scripts.train", "--output_dir", str(Path(tmp) / "run")]
        if torch_threads is not None:
            cmd += ["--torch_threads", str(torch_threads)]
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.time()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped the child: its CPU time is counted
            done = None
        wall = time.time() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done is not None and done.returncode != 0:
            raise SystemExit(f"ilrec-train failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads((Path(tmp) / "run" / "results.json").read_text()) if done is not None else None
    return {"command": "ilrec-train" + (f" --torch_threads {torch_threads}" if torch_threads else ""),
            "torch_threads": torch_threads if torch_threads is not None else "config (1)",
            "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "wall_seconds": round(wall, 1), "peak_rss_mib": round(after.ru_maxrss / 1024, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
            "finished": done is not None, "timeout_seconds": timeout,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch_threads", type=int, default=None, help="Override the config's torch threads (1).")
    p.add_argument("--note", default="", help="What else ran on the machine (recorded with the run).")
    p.add_argument("--timeout", type=float, default=None,
                   help="Stop the run after this many seconds of wall time and record it as not finished.")
    p.add_argument("--output", default="benchmarks/results/first_run.json")
    a = p.parse_args(argv)
    run = dict(measure(a.torch_threads, a.timeout), note=a.note)
    out = Path(a.output)
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    write_text_atomic(out, json.dumps({"runs": runs + [run]}, indent=1))
    print(f"{run['command']}{'' if run['finished'] else ' (NOT FINISHED: stopped by --timeout)'}: {run['cpu_seconds']} s CPU, {run['wall_seconds']} s wall, peak {run['peak_rss_mib']} "
          f"MiB, load average {run['load_average_before'][0]} -> {run['load_average_after'][0]} on {run['cores']} "
          f"cores ({a.note or 'no note'})")
    return run


if __name__ == "__main__":
    main()

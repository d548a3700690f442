"""Memory of this process: the RSS now, its peak, and a sampler of the RSS during the measured steps."""

import os
import resource
import threading
import time


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class RSSSampler:
    """Samples the RSS every `interval` seconds in a thread, keeping the maximum (between `reset()` and `stop()`)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(self.interval)

    def start(self):
        self._thread.start()
        return self

    def reset(self):
        self.peak = current_rss()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak

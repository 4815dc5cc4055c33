"""Shared by the benchmarks: peak memory of a phase, and a description of the machine."""

from __future__ import annotations

import os
import platform
import threading
import time


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Highest resident memory of the process while the ``with`` block runs.

    A thread samples ``/proc/self/statm`` every few milliseconds; ``ru_maxrss``
    cannot serve, since it only ever grows over the life of the process.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            memory = int(handle.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        memory = float("nan")
    import jax

    return (f"{model}, {os.cpu_count()} cores visible, {memory:.0f} GiB RAM; "
            f"Python {platform.python_version()}, JAX {jax.__version__} "
            f"({jax.default_backend()})")

"""This process's memory, for tests that show something streams instead of being held."""

from __future__ import annotations

import threading
from pathlib import Path


def rss_kib(field_name: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} in /proc/self/status")


class PeakRss:
    """The largest resident set of this process while it runs: the kernel's high-water mark
    reset at the start where it may be, else a sampling thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_kib())

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            self.peak = rss_kib("VmHWM")
        else:
            self._stop.set()
            self._thread.join()

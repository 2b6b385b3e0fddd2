"""Resident memory of processes, sampled from /proc while a benchmark runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def status_kb(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`); 0 for a process that is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(slots=True)
class RssSampler:
    """VmRSS of the processes `pids()` lists, every `interval` s, in a thread."""

    pids: Callable[[], list[int]]
    interval: float = 0.02
    peak_kb: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids():
                rss = status_kb(pid, "VmRSS")
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(max(self.peak_kb.values(), default=0) / 1024, 1)

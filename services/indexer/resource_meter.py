"""What an operation costs the indexer process: wall time, CPU time and peak memory.

CPU seconds are the process's (user + system) since the operation began, so
operations that run at the same time each count the others' work too: the
process is what the figures describe, and it is what a capacity plan needs.
Peak memory is the highest anonymous resident memory seen by ``sample`` (which
the runner calls at every progress report, heartbeat and step end): the resident
set minus its file-backed pages. The embedded vector store memory-maps its
segment files, and those pages are page cache the kernel drops under pressure,
growing with what is stored rather than with what the operation holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ResourceUse:
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int


class ResourceMeter:
    def __init__(self, process: psutil.Process | None = None) -> None:
        self._process = process or psutil.Process()
        self._started = time.monotonic()
        self._cpu_start = self._cpu()
        self._peak = self._own_memory()

    def _cpu(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def _own_memory(self) -> int:
        memory = self._process.memory_info()
        return memory.rss - getattr(memory, "shared", 0)

    def sample(self) -> None:
        """Take a memory reading (cheap: one /proc read)."""
        self._peak = max(self._peak, self._own_memory())

    def use(self) -> ResourceUse:
        """The figures so far; takes a memory reading first."""
        self.sample()
        return ResourceUse(
            wall_seconds=time.monotonic() - self._started,
            cpu_seconds=max(self._cpu() - self._cpu_start, 0.0),
            peak_memory_bytes=self._peak,
        )

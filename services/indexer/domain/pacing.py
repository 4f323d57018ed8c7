"""How fast a background job may send its batches: at most ``per_second`` items a
second on average, so the CPUs it shares with a live collection's searches are
not all its own. ``None`` (or 0) sends without pause.

The first batch goes at once; each next one waits until the previous batches'
share of time has passed. Time not used (a slow batch, a pause) is not saved up
for a burst later: the pace is a ceiling, never a catch-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    def __init__(
        self, per_second: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_second = per_second or None
        self._clock = clock
        self._next: float | None = None  # the earliest moment the next batch may go

    def delay_for(self, items: int) -> float:
        """Seconds to wait before sending a batch of ``items``, its slot taken."""
        if self._per_second is None:
            return 0.0
        now = self._clock()
        start = now if self._next is None else max(self._next, now)
        self._next = start + items / self._per_second
        return start - now

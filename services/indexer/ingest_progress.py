"""What an ingest has done so far, and how often it says so.

``IngestProgress`` is the running tally the pipeline updates; ``IngestResult``
is the tally at the end. ``ProgressReporter`` hands copies of the tally to the
caller's callback at most once per interval (plus once at the end), so a run of
thousands of small documents does not publish thousands of progress events.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import NamedTuple


@dataclass
class IngestProgress:
    documents_total: int = 0
    documents_done: int = 0  # indexed, failed and skipped alike: done / total is the percent
    documents_failed: int = 0
    documents_skipped: int = 0  # unchanged since the last run
    documents_duplicate: int = 0
    vectors_written: int = 0
    bytes_written: int = 0  # bytes of the documents indexed by this run


class DocumentFailure(NamedTuple):
    path: str
    reason: str
    message: str


@dataclass
class IngestResult(IngestProgress):
    documents_indexed: int = 0
    documents_removed: int = 0
    failures: tuple[DocumentFailure, ...] = ()


class IngestCancelled(Exception):
    """The run was cancelled: it stopped between batches. ``result`` is what it had
    done by then (every document counted there is fully written and recorded)."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__(f"ingest cancelled after {result.documents_done} documents")
        self.result = result


ProgressCallback = Callable[[IngestProgress], Awaitable[None]]


class ProgressReporter:
    """Reports ``figures`` to ``callback``: on a change at most every ``interval_seconds``,
    and always at ``final``. The callback gets a copy: the run goes on changing its own."""

    def __init__(
        self,
        figures: IngestProgress,
        callback: ProgressCallback | None,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._figures = figures
        self._callback = callback
        self._interval = interval_seconds
        self._clock = clock
        self._last: float | None = None  # the first change is reported at once

    async def changed(self) -> None:
        if self._callback is None:
            return
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        await self._callback(replace(self._figures))

    async def final(self) -> None:
        if self._callback is not None:
            self._last = self._clock()
            await self._callback(replace(self._figures))

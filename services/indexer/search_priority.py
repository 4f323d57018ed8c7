"""Searches before bulk work, inside the indexer process.

Search and operations share this process (the embedded store lives here), its
event loop and its GIL. While a search is in flight, the pipeline's stages wait
a moment before their next CPU-heavy step (extracting a group of documents,
sending an embed batch, writing points), so a reindex or a large append does
not sit in front of the query. The wait is bounded: bulk work never starves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class SearchPriority:
    def __init__(self, max_wait_seconds: float = 0.05) -> None:
        self._max_wait_seconds = max_wait_seconds
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def searching(self) -> Iterator[None]:
        """Mark a search in flight for the duration of the block."""
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def yield_to_searches(self) -> None:
        """Return at once when no search runs; else when they are done, or after
        the bounded wait."""
        if self._idle.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._max_wait_seconds)


# One per process: the searches and the pipelines of this indexer share it.
SEARCH_PRIORITY = SearchPriority()

"""Wake-ups for WatchOperation and WaitOperation: one process-wide LISTEN on
the repository's change channel, fanned out to every waiting stream.

One dedicated connection serves all streams, so a thousand watchers cost one
connection, not a thousand. Notifications are hints, never the data: a
waiter re-reads the operation when woken, and also on its own every poll
interval, which covers a notification lost while the connection was down.
When the connection drops it is reopened with backoff, and every waiter is
woken (anything may have changed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

import asyncpg

from kit.db.outage import POSTGRES_OUTAGE
from kit.db.pool import close_quietly
from kit.logs import get_logger

log = get_logger(__name__)

APPLICATION_NAME = "orchestrator-watcher"  # how the connection shows in pg_stat_activity
_CHECK_SECONDS = 5.0  # how often a quiet connection is checked for life
_MAX_BACKOFF_SECONDS = 10.0


class OperationWatcher:
    def __init__(self, dsn: str, channel: str, *, reconnect_seconds: float = 0.5) -> None:
        self._dsn = dsn
        self._channel = channel
        self._reconnect_seconds = reconnect_seconds
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # LISTEN connections opened so far (for tests and logs)

    async def start(self) -> None:
        """Listen before returning (so a stream opened next hears every change),
        then keep listening in the background until ``stop``."""
        await self._listen()
        self._task = asyncio.create_task(self._supervise(), name="operation-watcher")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()
        self._wake_all()

    @contextlib.contextmanager
    def subscribe(self, operation_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``operation_id`` may have changed. Subscribe
        before the first read, and clear the event before each re-read, so no
        change falls between a read and the wait."""
        event = asyncio.Event()
        self._waiters[operation_id].add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(operation_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[operation_id]

    @property
    def waiting(self) -> int:
        """How many streams wait now (a cancelled stream must not linger)."""
        return sum(len(events) for events in self._waiters.values())

    # --- the connection ---------------------------------------------------------------

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            await conn.add_listener(self._channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._lost.clear()
        self._conn = conn
        self.connections += 1

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=_CHECK_SECONDS)
            if self._conn is not None and not self._conn.is_closed() and not self._lost.is_set():
                continue
            log.warning("watcher.connection_lost", channel=self._channel)
            await self._close()
            self._wake_all()
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = self._reconnect_seconds
        while not self._stopping.is_set():
            try:
                await self._listen()
            except POSTGRES_OUTAGE as error:
                log.warning("watcher.reconnect_failed", error=str(error), retry_seconds=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_SECONDS)
            else:
                log.info("watcher.reconnected", channel=self._channel)
                self._wake_all()  # what changed while we were deaf is read now
                return

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    # --- callbacks (run on the event loop) ----------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, operation_id: str) -> None:
        for event in self._waiters.get(operation_id, ()):
            event.set()

    def _on_terminated(self, _conn: object) -> None:
        self._lost.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

"""The transactional outbox.

``enqueue`` writes an event row in the caller's transaction, so the event exists
if and only if the state change it announces committed. ``OutboxDispatcher``
publishes rows afterwards and marks them sent. Several dispatchers may run:
each claims rows with ``FOR UPDATE SKIP LOCKED``. A dispatcher that dies after
publishing but before its commit leaves rows that another publishes again; the
``Nats-Msg-Id`` (the event id) makes JetStream drop that repeat, so the stream
holds each event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
from prometheus_client import Counter, Gauge

from kit.bus.jetstream import JetStream
from kit.db.outage import POSTGRES_OUTAGE
from kit.logs import get_logger
from vectorops.events.v1 import envelope_pb2

log = get_logger(__name__)

OUTBOX_PUBLISHED = Counter(
    "vectorops_outbox_published_total", "Outbox rows published to JetStream.", ["schema"]
)
OUTBOX_FAILURES = Counter(
    "vectorops_outbox_publish_failures_total", "Outbox publish attempts that failed.", ["schema"]
)
OUTBOX_BACKLOG = Gauge(
    "vectorops_outbox_backlog", "Outbox rows not yet published, as last seen.", ["schema"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "vectorops_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row, as last seen.",
    ["schema"],
)


def _channel(schema: str) -> str:
    return f"{schema}_outbox"


async def enqueue(
    conn: asyncpg.Connection, schema: str, subject: str, payload: bytes, event_id: uuid.UUID
) -> None:
    """Add an event to the outbox inside the caller's open transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox rows must be written inside the state change's transaction")
    await conn.execute(
        f"INSERT INTO {schema}.outbox (event_id, subject, payload) VALUES ($1, $2, $3)",
        event_id,
        subject,
        payload,
    )
    # Delivered at commit only: wakes the dispatchers without waiting for their next poll.
    await conn.execute("SELECT pg_notify($1, '')", _channel(schema))


async def enqueue_event(
    conn: asyncpg.Connection, schema: str, subject: str, envelope: envelope_pb2.Envelope
) -> None:
    """Put an envelope in the outbox, in the caller's transaction; its event id dedups it."""
    await enqueue(conn, schema, subject, envelope.SerializeToString(), uuid.UUID(envelope.event_id))


class OutboxDispatcher:
    """Publishes unsent outbox rows of one schema, in batches, until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: JetStream,
        schema: str,
        *,
        batch_size: int = 100,
        poll_seconds: float = 0.5,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._schema = schema
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        OUTBOX_FAILURES.labels(schema)  # 0 until the first failure, not absent

    async def dispatch_once(self) -> int:
        """Publish one batch; returns how many rows were marked published."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""SELECT id, event_id, subject, payload FROM {self._schema}.outbox
                    WHERE published_at IS NULL ORDER BY id
                    LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch_size,
            )
            published: list[int] = []
            for row in rows:
                try:
                    await self._bus.publish(
                        row["subject"], row["payload"], msg_id=str(row["event_id"])
                    )
                except Exception as error:  # noqa: BLE001 - the row stays and is tried again
                    OUTBOX_FAILURES.labels(self._schema).inc()
                    log.warning(
                        "outbox.publish_failed", event_id=str(row["event_id"]), error=str(error)
                    )
                    await conn.execute(
                        f"UPDATE {self._schema}.outbox "
                        "SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                        row["id"],
                        str(error)[:500],
                    )
                    break  # keep order: later rows wait for this one
                published.append(row["id"])
            if published:
                await conn.execute(
                    f"UPDATE {self._schema}.outbox SET published_at = now(), "
                    "attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                    published,
                )
        OUTBOX_PUBLISHED.labels(self._schema).inc(len(published))
        return len(published)

    async def observe_backlog(self) -> None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""SELECT count(*) AS backlog,
                           coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                    FROM {self._schema}.outbox WHERE published_at IS NULL"""
            )
        OUTBOX_BACKLOG.labels(self._schema).set(row["backlog"])
        OUTBOX_OLDEST_AGE.labels(self._schema).set(float(row["age"]))

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, woken by NOTIFY or by the poll interval."""
        listener = await self._pool.acquire()
        await listener.add_listener(_channel(self._schema), self._on_notify)
        try:
            while not stop.is_set():
                # Cleared before the scan, so a commit notified during it is not missed.
                self._wake.clear()
                try:
                    sent = await self.dispatch_once()
                    await self.observe_backlog()
                except POSTGRES_OUTAGE as error:
                    log.warning("outbox.dispatch_failed", error=str(error))
                    sent = 0
                if sent < self._batch_size:  # a full batch means more may be waiting
                    await _first_of(self._wake, stop, seconds=self._poll_seconds)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(_channel(self._schema), self._on_notify)
            await self._pool.release(listener)

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Return when any of ``events`` is set or after ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

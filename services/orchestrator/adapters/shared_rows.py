"""What every part of the orchestrator's repository works with: the pool and
schema, the collection's row lock, reading a collection or an operation inside
a transaction, the outbox rows a change writes and the change notice a watcher
waits for.

Lock order is always collection row, then operation row, so two callers never
deadlock. Another owner's rows answer NOT_FOUND: existence must not leak.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from kit.db import keyset
from kit.errors import NotFound
from kit.outbox import enqueue_event
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    collection_from,
    operation_from,
    source_from,
)
from orchestrator.domain.operations import (
    CollectionStatus,
    DomainEvent,
    Operation,
)
from vectorops.events.v1 import envelope_pb2

OutboxRows = Sequence[tuple[str, envelope_pb2.Envelope]]
Transition = Callable[[Operation], tuple[Operation, list[DomainEvent]]]

# Collections and operations page on (created_at, id).
BY_CREATION = keyset.SortKey(("created_at", "id"), (datetime.fromisoformat, uuid.UUID))


class SharedRows:
    """The pool, the schema and the row helpers the other parts share."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "orchestrator") -> None:
        self._pool = pool
        self._s = schema

    @property
    def change_channel(self) -> str:
        """The LISTEN channel on which every change of an operation is announced
        (payload: the operation id), for WatchOperation."""
        return f"{self._s}_operation_changed"

    async def _notify(self, conn: asyncpg.Connection, operation_id: str) -> None:
        # Delivered at commit, so a watcher re-reading on the notice sees the change.
        await conn.execute("SELECT pg_notify($1, $2)", self.change_channel, operation_id)

    async def _write_outbox(
        self, conn: asyncpg.Connection, rows: OutboxRows, *, trace_id: str
    ) -> None:
        """Enqueue ``rows``, each in the trace ``trace_id`` of the operation they
        concern: whoever moves it on (an API call, a step event, the reaper), its
        rows stay in the trace of the request that started it."""
        for subject, envelope in rows:
            if trace_id:
                envelope.trace_id = trace_id
            await enqueue_event(conn, self._s, subject, envelope)

    async def _set_active(
        self,
        conn: asyncpg.Connection,
        collection_id: str,
        operation_id: str,
        status: CollectionStatus,
        now: datetime,
    ) -> None:
        await conn.execute(
            f"""UPDATE {self._s}.collections
                SET active_operation_id = $2, status = $3, status_message = '', updated_at = $4
                WHERE id = $1""",
            uuid.UUID(collection_id),
            uuid.UUID(operation_id),
            status.value,
            now,
        )

    async def _lock_collection(
        self, conn: asyncpg.Connection, collection_id: str, owner_id: str | None
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            f"""SELECT * FROM {self._s}.collections
                WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2) FOR UPDATE""",
            keyset.uuid_or_not_found(collection_id, "COLLECTION_NOT_FOUND", "collection_id"),
            owner_id,
        )
        if row is None:
            raise collection_not_found(collection_id)
        return row

    async def _collection(
        self, conn: asyncpg.Connection, collection_id: Any, owner_id: str | None
    ) -> CollectionRecord:
        row = await conn.fetchrow(
            f"""SELECT * FROM {self._s}.collections
                WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)""",
            keyset.uuid_or_not_found(str(collection_id), "COLLECTION_NOT_FOUND", "collection_id"),
            owner_id,
        )
        if row is None:
            raise collection_not_found(str(collection_id))
        return await self._with_sources(conn, row)

    async def _with_sources(
        self, conn: asyncpg.Connection, row: asyncpg.Record
    ) -> CollectionRecord:
        sources = await conn.fetch(
            f"""SELECT * FROM {self._s}.sources WHERE collection_id = $1
                AND status <> 'REMOVED' ORDER BY created_at, id""",
            row["id"],
        )
        return collection_from(row, tuple(source_from(s) for s in sources))

    async def _operation(
        self, conn: asyncpg.Connection, operation_id: Any, owner_id: str | None
    ) -> OperationRecord:
        row = await conn.fetchrow(
            f"""SELECT * FROM {self._s}.operations
                WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)""",
            keyset.uuid_or_not_found(str(operation_id), "OPERATION_NOT_FOUND", "operation_id"),
            owner_id,
        )
        if row is None:
            raise operation_not_found(str(operation_id))
        return operation_from(row)


def collection_not_found(collection_id: str) -> NotFound:
    return NotFound(
        f"collection {collection_id} not found",
        reason="COLLECTION_NOT_FOUND",
        metadata={"collection_id": collection_id},
    )


def operation_not_found(operation_id: str) -> NotFound:
    return NotFound(
        f"operation {operation_id} not found",
        reason="OPERATION_NOT_FOUND",
        metadata={"operation_id": operation_id},
    )

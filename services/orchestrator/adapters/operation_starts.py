"""Starting operations: a new collection with its INDEX, and one operation at a
time on an existing collection, admitted by the domain's ``can_start`` under
the collection's row lock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kit.errors import AlreadyExists, NotFound
from orchestrator.adapters.operation_transitions import OperationTransitions
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    SourceSpec,
    alias_name_for,
    collection_from,
    physical_name_for,
)
from orchestrator.adapters.shared_rows import (
    OutboxRows,
    Transition,
)
from orchestrator.audit_records import start_row
from orchestrator.domain.collections import GONE, can_start, status_after
from orchestrator.domain.operations import (
    CollectionStatus,
    DomainEvent,
    Operation,
    OperationType,
)


class OperationStarts(OperationTransitions):
    async def create_collection_with_operation(
        self,
        owner_id: str,
        name: str,
        config: Mapping[str, Any],
        request_id: str,
        request_hash: str,
        first_sources: Sequence[SourceSpec],
        now: datetime,
        outbox: OutboxRows | Callable[[CollectionRecord, OperationRecord], OutboxRows],
        *,
        description: str = "",
        created_by: str = "",
        operation_id: str | None = None,
    ) -> tuple[CollectionRecord, OperationRecord, bool]:
        """Create a PENDING collection, its sources and its INDEX operation.

        ``outbox`` may be a callable given the new collection and operation, since
        the commands it announces must carry their ids. Returns ``created=False``
        (and writes nothing) for a retry of an earlier request. ``operation_id``:
        the id chosen beforehand (quota admission reserves under it); None: a new one.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            first = await self._claim_key(conn, owner_id, request_id, request_hash, now)
            if first is not None:
                collection = await self._collection(conn, first["collection_id"], owner_id)
                op = await self._operation(conn, first["operation_id"], owner_id)
                return collection, op, False
            collection_id = str(uuid.uuid4())
            # ON CONFLICT waits for a concurrent insert of the same name and then
            # reports it, instead of aborting the transaction with an error.
            inserted = await conn.fetchval(
                f"""INSERT INTO {self._s}.collections (id, owner_id, name, description,
                        alias_name, physical_collection, generation, config, status,
                        created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, 1, $7::jsonb, 'PENDING', $8, $8)
                    ON CONFLICT (owner_id, name) DO NOTHING RETURNING id""",
                collection_id,
                owner_id,
                name,
                description,
                alias_name_for(collection_id),
                physical_name_for(collection_id, 1),
                json.dumps(dict(config)),
                now,
            )
            if inserted is None:
                taken = await conn.fetchval(
                    f"SELECT id FROM {self._s}.collections WHERE owner_id = $1 AND name = $2",
                    owner_id,
                    name,
                )
                raise AlreadyExists(
                    f"a collection named {name!r} already exists",
                    reason="COLLECTION_NAME_TAKEN",
                    metadata={"name": name, "collection_id": str(taken or "")},
                )
            for source in first_sources:
                await self._insert_source(conn, collection_id, source, now)
            operation = Operation(
                id=operation_id or str(uuid.uuid4()),
                collection_id=collection_id,
                type=OperationType.INDEX,
                created_at=now,
                updated_at=now,
            )
            await self._insert_operation(
                conn, operation, owner_id, config, request_id, created_by, None, None
            )
            await self._set_active(conn, collection_id, operation.id, CollectionStatus.PENDING, now)
            collection = await self._collection(conn, collection_id, owner_id)
            record = await self._operation(conn, operation.id, owner_id)
            rows = outbox(collection, record) if callable(outbox) else outbox
            await self._write_outbox(
                conn, [*rows, start_row(collection, record)], trace_id=record.trace_id
            )
            await self._settle_key(conn, owner_id, request_id, operation.id, collection_id)
            return collection, record, True

    async def start_operation(
        self,
        collection_id: str,
        owner_id: str | None,
        type: OperationType,
        config: Mapping[str, Any] | None,
        request_id: str,
        request_hash: str,
        now: datetime,
        outbox: OutboxRows | Callable[[CollectionRecord, OperationRecord], OutboxRows],
        *,
        new_source: SourceSpec | None = None,
        source_id: str | None = None,
        created_by: str = "",
        preempt: Transition | None = None,
        preempt_outbox: Callable[[OperationRecord, list[DomainEvent]], OutboxRows] = (
            lambda record, events: ()
        ),
        admit: Callable[[CollectionRecord], None] | None = None,
        operation_id: str | None = None,
    ) -> tuple[CollectionRecord | None, OperationRecord, bool]:
        """Start an operation on an existing collection, one at a time.

        ``config`` None means the collection's own (every type but REINDEX).
        ``new_source`` (APPEND) is added in the same transaction; ``source_id``
        names the source an APPEND/REMOVE_SOURCE concerns. ``owner_id`` None is
        an admin acting on any owner's collection. ``preempt`` (a forced
        DeleteCollection: the domain's cancel) first ends the active operation,
        in the same transaction, with the outbox rows ``preempt_outbox`` makes
        of that operation (as it was) and the transition's events. ``admit``
        (a REINDEX's own checks) may refuse the collection as it is under the
        lock, after ``can_start``. The collection is None only for a retry
        whose collection is gone since. ``operation_id`` as for a new collection.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            key_owner = owner_id if owner_id is not None else ""
            first = await self._claim_key(conn, key_owner, request_id, request_hash, now)
            if first is not None:
                # The first request may have been a DELETE that has completed since.
                op = await self._operation(conn, first["operation_id"], owner_id)
                try:
                    collection = await self._collection(conn, first["collection_id"], owner_id)
                except NotFound:
                    collection = None
                return collection, op, False
            # The row lock makes "one active operation" hold under concurrency:
            # a second caller waits here and then sees the first one's operation.
            row = await self._lock_collection(conn, collection_id, owner_id)
            if preempt is not None and row["active_operation_id"] and row["status"] != "DELETING":
                row = await self._preempt(conn, row, preempt, preempt_outbox)
            active = row["active_operation_id"]
            can_start(
                CollectionStatus(row["status"]), str(active) if active else None, collection_id
            )
            if admit is not None:
                admit(collection_from(row, ()))
            if new_source is not None:
                source_id = await self._add_or_rescan_source(conn, collection_id, new_source, now)
            elif source_id is not None:
                await self._require_source(conn, collection_id, source_id)
            before = CollectionStatus(row["status"])
            operation = Operation(
                id=operation_id or str(uuid.uuid4()),
                collection_id=collection_id,
                type=OperationType(type),
                created_at=now,
                updated_at=now,
                collection_status_before=before,
            )
            live_config = json.loads(row["config"])
            await self._insert_operation(
                conn,
                operation,
                row["owner_id"],
                config if config is not None else live_config,
                request_id,
                created_by,
                live_config if config is not None else None,
                source_id,
            )
            after = status_after(operation)
            await self._set_active(
                conn, collection_id, operation.id, after if after is not GONE else before, now
            )
            collection = await self._collection(conn, collection_id, owner_id)
            record = await self._operation(conn, operation.id, owner_id)
            rows = outbox(collection, record) if callable(outbox) else outbox
            await self._write_outbox(
                conn, [*rows, start_row(collection, record)], trace_id=record.trace_id
            )
            await self._settle_key(conn, key_owner, request_id, operation.id, collection_id)
            return collection, record, True

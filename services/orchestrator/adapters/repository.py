"""The orchestrator's Postgres repository: collections, sources, operations and
idempotency keys, each change with its outbox rows in one transaction.

Rows map to the domain's ``Operation`` (wrapped in ``OperationRecord`` with the
fields only the API needs) and to ``CollectionRecord``, the persistence view of
a collection. State changes go through the domain: ``start_operation`` asks
``can_start`` under the collection's row lock, and ``apply`` runs a pure
transition and derives the collection's status with ``status_after``, so the
failure mapping holds on every path (step events, cancel, reaper).

Lock order is always collection row, then operation row, so two callers never
deadlock. Another owner's rows answer NOT_FOUND: existence must not leak.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg

from kit.db import keyset
from kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kit.outbox import enqueue_event
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    ResourceFigures,
    SourceSpec,
    alias_name_for,
    collection_from,
    operation_from,
    physical_name_for,
    source_from,
)
from orchestrator.domain.collections import GONE, can_start, status_after, switch_checkpoint
from orchestrator.domain.operations import (
    CollectionStatus,
    DomainEvent,
    Operation,
    OperationStatus,
    OperationType,
)
from orchestrator.domain.reindex import CleanupDelay, Switch, SwitchRequest, fence_switch, retire
from orchestrator.domain.step_events import (
    CollectionFigures,
    StagingChange,
    figures_to_record,
    staging_change,
)
from vectorops.events.v1 import envelope_pb2

OutboxRows = Sequence[tuple[str, envelope_pb2.Envelope]]
Transition = Callable[[Operation], tuple[Operation, list[DomainEvent]]]

_ACTIVE = ("PENDING", "PROCESSING")
# Collections and operations page on (created_at, id).
_BY_CREATION = keyset.SortKey(("created_at", "id"), (datetime.fromisoformat, uuid.UUID))


class OrchestratorRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str = "orchestrator") -> None:
        self._pool = pool
        self._s = schema

    # --- creating ---------------------------------------------------------------

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
    ) -> tuple[CollectionRecord, OperationRecord, bool]:
        """Create a PENDING collection, its sources and its INDEX operation.

        ``outbox`` may be a callable given the new collection and operation, since
        the commands it announces must carry their ids. Returns ``created=False``
        (and writes nothing) for a retry of an earlier request.
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
                id=str(uuid.uuid4()),
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
            await self._write_outbox(conn, rows)
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
        whose collection is gone since.
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
                id=str(uuid.uuid4()),
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
            await self._write_outbox(conn, rows)
            await self._settle_key(conn, key_owner, request_id, operation.id, collection_id)
            return collection, record, True

    async def update_collection(
        self,
        collection_id: str,
        owner_id: str | None,
        changes: Mapping[str, str],
        request_id: str,
        request_hash: str,
        now: datetime,
    ) -> tuple[CollectionRecord, bool]:
        """Change a collection's ``name`` and/or ``description`` (the keys of
        ``changes``) at once; no operation. Returns ``updated=False`` for a retry
        of an earlier request, with the collection as it is now."""
        unknown = set(changes) - {"name", "description"}
        if unknown:
            raise ValueError(f"not updatable here: {sorted(unknown)}")
        key_owner = owner_id if owner_id is not None else ""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                first = await self._claim_key(conn, key_owner, request_id, request_hash, now)
                if first is not None:
                    return await self._collection(conn, first["collection_id"], owner_id), False
                row = await self._lock_collection(conn, collection_id, owner_id)
                if row["status"] == CollectionStatus.DELETING.value:
                    raise FailedPrecondition(
                        f"collection {collection_id} is being deleted",
                        reason="COLLECTION_DELETING",
                        metadata={"collection_id": collection_id},
                    )
                name = changes.get("name", row["name"])
                if name != row["name"]:
                    await self._require_free_name(conn, row["owner_id"], name)
                await conn.execute(
                    f"""UPDATE {self._s}.collections SET name = $2, description = $3,
                            updated_at = $4 WHERE id = $1""",
                    row["id"],
                    name,
                    changes.get("description", row["description"]),
                    now,
                )
                if request_id:
                    await conn.execute(
                        f"""UPDATE {self._s}.idempotency_keys SET collection_id = $3
                            WHERE owner_id = $1 AND request_id = $2""",
                        key_owner,
                        request_id,
                        row["id"],
                    )
                return await self._collection(conn, row["id"], owner_id), True
        except asyncpg.UniqueViolationError:
            # A concurrent create or rename took the name between the check and
            # the update; the transaction is rolled back.
            raise AlreadyExists(
                f"a collection named {changes.get('name')!r} already exists",
                reason="COLLECTION_NAME_TAKEN",
                metadata={"name": str(changes.get("name", "")), "collection_id": ""},
            ) from None

    # --- changing state ----------------------------------------------------------

    async def apply(
        self,
        operation_id: str,
        transition: Transition,
        outbox_for: Callable[[list[DomainEvent]], OutboxRows],
        *,
        resources: ResourceFigures | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> tuple[OperationRecord, list[DomainEvent]]:
        """Run ``transition`` on the stored operation and persist what it returns,
        the collection's resulting status and the events' outbox rows, atomically.

        A transition that changes nothing writes nothing (redelivered events),
        not even ``resources`` (the worker's figures that came with it) or
        ``result`` (entries merged into the operation's result, e.g. a REINDEX's
        validation figures).
        Only the collection's active operation moves its status: a late event
        for an older operation cannot overwrite a newer one's state.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            collection_id = await conn.fetchval(
                f"SELECT collection_id FROM {self._s}.operations WHERE id = $1",
                keyset.uuid_or_not_found(operation_id, "OPERATION_NOT_FOUND", "operation_id"),
            )
            if collection_id is None:
                raise _operation_not_found(operation_id)
            collection = await conn.fetchrow(
                f"SELECT * FROM {self._s}.collections WHERE id = $1 FOR UPDATE", collection_id
            )
            row = await conn.fetchrow(
                f"SELECT * FROM {self._s}.operations WHERE id = $1 FOR UPDATE", operation_id
            )
            current = operation_from(row)
            new, events = transition(current.operation)
            if new == current.operation and not events:
                return current, []
            await self._update_operation(conn, new)
            if resources is not None:
                await self._write_resources(conn, new.id, resources)
            if result:
                await self._merge_result(conn, new.id, result)
            if collection is not None and collection["active_operation_id"] == uuid.UUID(new.id):
                await self._settle_collection(conn, new, events, current.source_id)
            await self._write_outbox(conn, outbox_for(events))
            await self._notify(conn, new.id)
            return await self._operation(conn, new.id, None), events

    async def complete_reindex(
        self,
        request: SwitchRequest,
        now: datetime,
        delay: CleanupDelay,
        outbox: Callable[[CollectionRecord, OperationRecord, Switch], OutboxRows],
    ) -> tuple[CollectionRecord, Switch, bool]:
        """The atomic switch of a REINDEX: the collection now serves from its
        staging collection. Returns the collection, what the switch did and
        ``replayed`` (True: a repeat, answered from the first call's record,
        nothing written).

        Under the collection's then the operation's row lock (so a concurrent
        repeat waits and then sees the switch done, and a cancel cannot slip
        in between): fence the call, complete the ``switch`` step through the
        domain, point the collection at the staging collection with the new
        generation, config and counts, retire the old physical collection, and
        write ``outbox``'s rows, all in one transaction.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_collection(conn, request.collection_id, None)
            op_row = await conn.fetchrow(
                f"""SELECT * FROM {self._s}.operations
                    WHERE id = $1 AND collection_id = $2 FOR UPDATE""",
                keyset.uuid_or_not_found(
                    request.operation_id, "OPERATION_NOT_FOUND", "operation_id"
                ),
                row["id"],
            )
            if op_row is None:
                raise _operation_not_found(request.operation_id)
            record = operation_from(op_row)
            generation = row["generation"]
            if fence_switch(record.operation, generation, request, row["staging_collection"]):
                done = Switch.from_json((record.result or {})["switch"])
                return await self._collection(conn, row["id"], None), done, True
            switch = Switch(
                from_generation=generation,
                to_generation=generation + 1,
                physical_collection=request.staging_collection,
                retired_collections=(row["physical_collection"],),
                cleanup_not_before=now + delay.for_vectors(row["vector_count"]),
            )
            checkpoint = switch_checkpoint(generation, request.staging_collection)
            new, events = record.operation.complete_step("switch", checkpoint, now)
            await self._update_operation(conn, new)
            result = {"validation": dict(request.validation), "switch": switch.to_json()}
            await self._merge_result(conn, new.id, result)
            old_physical = json.loads(row["old_physical_collections"])
            await conn.execute(
                f"""UPDATE {self._s}.collections SET physical_collection = $2,
                        staging_collection = NULL, generation = $3, config = $4::jsonb,
                        document_count = $5, vector_count = $6, stored_bytes = $7,
                        old_physical_collections = $8::jsonb, updated_at = $9
                    WHERE id = $1""",
                row["id"],
                switch.physical_collection,
                switch.to_generation,
                json.dumps(dict(record.config)),
                request.document_count,
                request.vector_count,
                request.stored_bytes,
                json.dumps(list(retire(old_physical, row["physical_collection"]))),
                now,
            )
            await self._settle_collection(conn, new, events)
            collection = await self._collection(conn, row["id"], None)
            switched = await self._operation(conn, new.id, None)
            await self._write_outbox(conn, outbox(collection, switched, switch))
            await self._notify(conn, new.id)
            return collection, switch, False

    async def record_resources(self, operation_id: str, figures: ResourceFigures) -> None:
        """Store the work's measured resources (the latest report wins), also
        for a finished operation: its final figures come after its end."""
        async with self._pool.acquire() as conn:
            await self._write_resources(conn, operation_id, figures)

    async def _merge_result(
        self, conn: asyncpg.Connection, operation_id: str, entries: Mapping[str, Any]
    ) -> None:
        await conn.execute(
            f"""UPDATE {self._s}.operations
                SET result = coalesce(result, '{{}}'::jsonb) || $2::jsonb WHERE id = $1""",
            uuid.UUID(operation_id),
            json.dumps(dict(entries)),
        )

    async def _write_resources(
        self, conn: asyncpg.Connection, operation_id: str, figures: ResourceFigures
    ) -> None:
        done = await conn.execute(
            f"""UPDATE {self._s}.operations SET wall_seconds = $2, cpu_seconds = $3,
                    peak_memory_bytes = $4, documents = $5, vectors = $6, bytes = $7
                WHERE id = $1""",
            keyset.uuid_or_not_found(operation_id, "OPERATION_NOT_FOUND", "operation_id"),
            *asdict(figures).values(),
        )
        if done.endswith(" 0"):
            raise _operation_not_found(operation_id)

    # --- reading -------------------------------------------------------------------

    async def get_collection(self, collection_id: str, owner_id: str | None) -> CollectionRecord:
        """``owner_id`` None: an admin, who sees every owner's collections."""
        async with self._pool.acquire() as conn:
            return await self._collection(conn, collection_id, owner_id)

    async def list_collections(
        self,
        owner_id: str | None,
        page_size: int,
        page_token: str = "",
        *,
        statuses: Collection[CollectionStatus] = (),
        name_prefix: str = "",
    ) -> tuple[list[CollectionRecord], str]:
        """One page, newest first, and the next page's token ("" at the end).
        Empty ``statuses`` means all. A token only works with the filters it
        was issued for.

        Keyset pagination on (created_at, id): a row created or deleted between
        pages neither shifts nor repeats the others, as an offset would.
        """
        size = keyset.page_size(page_size)
        wanted = sorted(str(status) for status in statuses)
        filters = {"owner": owner_id, "statuses": wanted, "prefix": name_prefix}
        after = _BY_CREATION.after(page_token, filters)
        args: list[Any] = [owner_id, size + 1, wanted or None, name_prefix]
        where = """($1::text IS NULL OR owner_id = $1) AND ($3::text[] IS NULL OR status = ANY($3))
                   AND left(name, char_length($4)) = $4"""
        if after is not None:
            where += " AND (created_at, id) < ($5, $6)"
            args += list(after)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {self._s}.collections WHERE {where}
                    ORDER BY created_at DESC, id DESC LIMIT $2""",
                *args,
            )
            page = [await self._with_sources(conn, row) for row in rows[:size]]
        token = _BY_CREATION.next_token(rows, size, filters)
        return page, token

    async def get_operation(self, operation_id: str, owner_id: str | None) -> OperationRecord:
        async with self._pool.acquire() as conn:
            return await self._operation(conn, operation_id, owner_id)

    async def list_operations(
        self,
        owner_id: str | None,
        page_size: int,
        page_token: str = "",
        *,
        collection_id: str | None = None,
        types: Collection[OperationType] = (),
        statuses: Collection[OperationStatus] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> tuple[list[OperationRecord], str]:
        """One page, newest first, keyset on (created_at, id) like collections.
        Empty ``types``/``statuses`` mean all; ``created_after`` is inclusive,
        ``created_before`` exclusive. A token only works with the filters it
        was issued for."""
        size = keyset.page_size(page_size)
        filters = {
            "owner": owner_id,
            "collection": collection_id,
            "types": sorted(str(kind) for kind in types),
            "statuses": sorted(str(status) for status in statuses),
            "after": created_after and created_after.isoformat(),
            "before": created_before and created_before.isoformat(),
        }
        after = _BY_CREATION.after(page_token, filters)
        args: list[Any] = [
            owner_id,
            keyset.uuid_or_not_found(collection_id, "COLLECTION_NOT_FOUND", "collection_id")
            if collection_id
            else None,
            filters["types"] or None,
            filters["statuses"] or None,
            size + 1,
            created_after,
            created_before,
        ]
        where = """($1::text IS NULL OR owner_id = $1) AND ($2::uuid IS NULL OR collection_id = $2)
                   AND ($3::text[] IS NULL OR type = ANY($3))
                   AND ($4::text[] IS NULL OR status = ANY($4))
                   AND ($6::timestamptz IS NULL OR created_at >= $6)
                   AND ($7::timestamptz IS NULL OR created_at < $7)"""
        if after is not None:
            where += " AND (created_at, id) < ($8, $9)"
            args += list(after)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {self._s}.operations WHERE {where}
                    ORDER BY created_at DESC, id DESC LIMIT $5""",
                *args,
            )
        token = _BY_CREATION.next_token(rows, size, filters)
        return [operation_from(row) for row in rows[:size]], token

    async def stuck_operations(self, older_than: datetime) -> list[Operation]:
        """Running operations not updated since ``older_than``: for the reaper,
        which fails each through ``apply`` (so the failure mapping holds)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {self._s}.operations
                    WHERE status IN ('PENDING', 'PROCESSING') AND updated_at < $1
                    ORDER BY updated_at, id""",
                older_than,
            )
        return [operation_from(row).operation for row in rows]

    async def active_operations(self) -> list[Operation]:
        """Every running operation: what a restarted orchestrator resumes."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT * FROM {self._s}.operations WHERE status IN ('PENDING', 'PROCESSING')
                    ORDER BY created_at, id"""
            )
        return [operation_from(row).operation for row in rows]

    # --- helpers ---------------------------------------------------------------------

    async def _claim_key(
        self,
        conn: asyncpg.Connection,
        owner_id: str,
        request_id: str,
        request_hash: str,
        now: datetime,
    ) -> asyncpg.Record | None:
        """Claim (owner, request_id) for this transaction, or return the first
        request's key. A concurrent retry blocks on the primary key until the
        first commits (then sees its result) or rolls back (then claims it)."""
        if not request_id:
            return None
        claimed = await conn.fetchval(
            f"""INSERT INTO {self._s}.idempotency_keys
                    (owner_id, request_id, request_hash, created_at)
                VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            owner_id,
            request_id,
            request_hash,
            now,
        )
        if claimed:
            return None
        first = await conn.fetchrow(
            f"""SELECT * FROM {self._s}.idempotency_keys
                WHERE owner_id = $1 AND request_id = $2""",
            owner_id,
            request_id,
        )
        if first["request_hash"] != request_hash:
            raise InvalidArgument(
                "request_id was already used for a different request",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": request_id},
            )
        return first

    async def _settle_key(
        self,
        conn: asyncpg.Connection,
        owner_id: str,
        request_id: str,
        operation_id: str,
        collection_id: str,
    ) -> None:
        if request_id:
            await conn.execute(
                f"""UPDATE {self._s}.idempotency_keys SET operation_id = $3, collection_id = $4
                    WHERE owner_id = $1 AND request_id = $2""",
                owner_id,
                request_id,
                uuid.UUID(operation_id),
                uuid.UUID(collection_id),
            )

    @property
    def change_channel(self) -> str:
        """The LISTEN channel on which every change of an operation is announced
        (payload: the operation id), for WatchOperation."""
        return f"{self._s}_operation_changed"

    async def _notify(self, conn: asyncpg.Connection, operation_id: str) -> None:
        # Delivered at commit, so a watcher re-reading on the notice sees the change.
        await conn.execute("SELECT pg_notify($1, $2)", self.change_channel, operation_id)

    async def _preempt(
        self,
        conn: asyncpg.Connection,
        collection: asyncpg.Record,
        transition: Transition,
        outbox_for: Callable[[OperationRecord, list[DomainEvent]], OutboxRows],
    ) -> asyncpg.Record:
        """Run ``transition`` on the locked collection's active operation inside
        the caller's transaction; returns the collection row as that left it."""
        row = await conn.fetchrow(
            f"SELECT * FROM {self._s}.operations WHERE id = $1 FOR UPDATE",
            collection["active_operation_id"],
        )
        record = operation_from(row)
        current = record.operation
        new, events = transition(current)
        if new != current or events:
            await self._update_operation(conn, new)
            await self._settle_collection(conn, new, events, record.source_id)
            await self._write_outbox(conn, outbox_for(record, events))
            await self._notify(conn, new.id)
        return await conn.fetchrow(
            f"SELECT * FROM {self._s}.collections WHERE id = $1", collection["id"]
        )

    async def _require_free_name(self, conn: asyncpg.Connection, owner_id: str, name: str) -> None:
        taken = await conn.fetchval(
            f"SELECT id FROM {self._s}.collections WHERE owner_id = $1 AND name = $2",
            owner_id,
            name,
        )
        if taken is not None:
            raise AlreadyExists(
                f"a collection named {name!r} already exists",
                reason="COLLECTION_NAME_TAKEN",
                metadata={"name": name, "collection_id": str(taken)},
            )

    async def _write_outbox(self, conn: asyncpg.Connection, rows: OutboxRows) -> None:
        for subject, envelope in rows:
            await enqueue_event(conn, self._s, subject, envelope)

    async def _insert_source(
        self, conn: asyncpg.Connection, collection_id: str, source: SourceSpec, now: datetime
    ) -> str:
        source_id = source.id or str(uuid.uuid4())
        inserted = await conn.fetchval(
            f"""INSERT INTO {self._s}.sources
                    (id, collection_id, kind, path, include, exclude, created_at)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)
                ON CONFLICT (collection_id, kind, path) WHERE status <> 'REMOVED'
                DO NOTHING RETURNING id""",
            uuid.UUID(source_id),
            uuid.UUID(collection_id),
            source.kind,
            source.path,
            json.dumps(list(source.include)),
            json.dumps(list(source.exclude)),
            now,
        )
        if inserted is None:
            existing = await self._live_source(conn, collection_id, source)
            raise _source_exists(str(existing["id"]) if existing else "")
        return source_id

    async def _add_or_rescan_source(
        self, conn: asyncpg.Connection, collection_id: str, source: SourceSpec, now: datetime
    ) -> str:
        """The source an APPEND works on: a new one, or the live source with the same
        directory and globs, which the APPEND then re-scans (new and changed files
        indexed, removed ones dropped, unchanged ones skipped). The same directory
        with other globs is another source's territory: SOURCE_ALREADY_EXISTS."""
        existing = await self._live_source(conn, collection_id, source)
        if existing is None:
            return await self._insert_source(conn, collection_id, source, now)
        same_globs = json.loads(existing["include"]) == list(source.include) and json.loads(
            existing["exclude"]
        ) == list(source.exclude)
        if not same_globs:
            raise _source_exists(str(existing["id"]))
        if source.id and str(existing["id"]) != source.id:
            # A preset id (an upload's) names a new source; another one with its
            # path (a concurrent upload with the same label) is not it.
            raise AlreadyExists(
                f"the collection already has an upload source labelled {source.path!r}",
                reason="SOURCE_ALREADY_EXISTS",
                metadata={"source_id": str(existing["id"])},
            )
        return str(existing["id"])

    async def _live_source(
        self, conn: asyncpg.Connection, collection_id: str, source: SourceSpec
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"""SELECT * FROM {self._s}.sources WHERE collection_id = $1 AND kind = $2
                AND path = $3 AND status <> 'REMOVED'""",
            uuid.UUID(collection_id),
            source.kind,
            source.path,
        )

    async def _require_source(
        self, conn: asyncpg.Connection, collection_id: str, source_id: str
    ) -> None:
        found = await conn.fetchval(
            f"""SELECT true FROM {self._s}.sources
                WHERE id = $1 AND collection_id = $2 AND status <> 'REMOVED'""",
            keyset.uuid_or_not_found(source_id, "SOURCE_NOT_FOUND", "source_id"),
            uuid.UUID(collection_id),
        )
        if not found:
            raise NotFound(
                f"source {source_id} not found",
                reason="SOURCE_NOT_FOUND",
                metadata={"source_id": source_id},
            )

    async def _insert_operation(
        self,
        conn: asyncpg.Connection,
        op: Operation,
        owner_id: str,
        config: Mapping[str, Any],
        request_id: str,
        created_by: str,
        previous_config: Mapping[str, Any] | None,
        source_id: str | None,
    ) -> None:
        await conn.execute(
            f"""INSERT INTO {self._s}.operations (id, collection_id, owner_id, type, status,
                    config, previous_config, source_id, collection_status_before,
                    request_id, created_by, created_at, updated_at, progress)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13,
                        $14::jsonb)""",
            uuid.UUID(op.id),
            uuid.UUID(op.collection_id),
            owner_id,
            op.type.value,
            op.status.value,
            json.dumps(dict(config)),
            json.dumps(dict(previous_config)) if previous_config is not None else None,
            uuid.UUID(source_id) if source_id else None,
            op.collection_status_before and op.collection_status_before.value,
            request_id,
            created_by,
            op.created_at,
            op.updated_at or op.created_at,
            json.dumps(asdict(op.progress)),
        )

    async def _update_operation(self, conn: asyncpg.Connection, op: Operation) -> None:
        error = op.error
        await conn.execute(
            f"""UPDATE {self._s}.operations SET status = $2, current_step = $3,
                    checkpoints = $4::jsonb, progress = $5::jsonb, error_type = $6,
                    error_message = $7, error_step = $8, changed_anything = $9,
                    started_at = $10, updated_at = $11, ended_at = $12
                WHERE id = $1""",
            uuid.UUID(op.id),
            op.status.value,
            op.current_step,
            json.dumps({step: dict(data) for step, data in op.checkpoints.items()}),
            json.dumps(asdict(op.progress)),
            error and error.type.value,
            error and error.message,
            error and error.step,
            op.changed_anything,
            op.started_at,
            op.updated_at or op.created_at,
            op.ended_at,
        )

    async def _settle_collection(
        self,
        conn: asyncpg.Connection,
        op: Operation,
        events: list[DomainEvent],
        source_id: str | None = None,
    ) -> None:
        """Give the collection the status its (active) operation implies and, when
        the operation completed its finalize step, the figures that step reported,
        so a client that sees COMPLETED reads fresh counts. ``source_id``: the
        source the operation concerns (a completed REMOVE_SOURCE removes it)."""
        after = status_after(op)
        now = op.updated_at or op.created_at
        if after is GONE:
            # Sources go with it (ON DELETE CASCADE); the operation row stays.
            await conn.execute(
                f"DELETE FROM {self._s}.collections WHERE id = $1", uuid.UUID(op.collection_id)
            )
            return
        figures = figures_to_record(op, events)
        if figures is not None:
            await self._write_figures(conn, op.collection_id, figures)
        staging = staging_change(op, events)
        if staging is not None:
            await self._write_staging(conn, op.collection_id, staging)
        if op.type is OperationType.REMOVE_SOURCE and op.status is OperationStatus.COMPLETED:
            await self._mark_source_removed(conn, op.collection_id, source_id)
        message = op.error.message if op.error and op.finished else ""
        await conn.execute(
            f"""UPDATE {self._s}.collections SET status = $2, status_message = $3,
                    active_operation_id = CASE WHEN $4 THEN NULL ELSE active_operation_id END,
                    updated_at = $5
                WHERE id = $1""",
            uuid.UUID(op.collection_id),
            after.value,
            message,
            op.finished,
            now,
        )

    async def _write_staging(
        self, conn: asyncpg.Connection, collection_id: str, change: StagingChange
    ) -> None:
        await conn.execute(
            f"UPDATE {self._s}.collections SET staging_collection = $2 WHERE id = $1",
            uuid.UUID(collection_id),
            change.name,
        )

    async def _write_figures(
        self, conn: asyncpg.Connection, collection_id: str, figures: CollectionFigures
    ) -> None:
        await conn.execute(
            f"""UPDATE {self._s}.collections
                SET document_count = $2, vector_count = $3, stored_bytes = $4 WHERE id = $1""",
            uuid.UUID(collection_id),
            figures.document_count,
            figures.vector_count,
            figures.stored_bytes,
        )
        counts = {
            source_uuid: count
            for source, count in figures.source_document_counts.items()
            if (source_uuid := _uuid_or_none(source)) is not None
        }
        if counts:
            # Only this collection's live sources: an id the worker got wrong
            # cannot touch another collection's rows.
            await conn.execute(
                f"""UPDATE {self._s}.sources AS s SET document_count = c.count
                    FROM unnest($2::uuid[], $3::bigint[]) AS c(id, count)
                    WHERE s.id = c.id AND s.collection_id = $1 AND s.status <> 'REMOVED'""",
                uuid.UUID(collection_id),
                list(counts),
                list(counts.values()),
            )

    async def _mark_source_removed(
        self, conn: asyncpg.Connection, collection_id: str, source_id: str | None
    ) -> None:
        """REMOVED frees the path: the unique index covers live sources only."""
        if source_id is None:
            return
        await conn.execute(
            f"""UPDATE {self._s}.sources SET status = 'REMOVED', document_count = 0
                WHERE id = $1 AND collection_id = $2""",
            uuid.UUID(source_id),
            uuid.UUID(collection_id),
        )

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
            raise _collection_not_found(collection_id)
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
            raise _collection_not_found(str(collection_id))
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
            raise _operation_not_found(str(operation_id))
        return operation_from(row)


# --- errors and page tokens -----------------------------------------------------


def _collection_not_found(collection_id: str) -> NotFound:
    return NotFound(
        f"collection {collection_id} not found",
        reason="COLLECTION_NOT_FOUND",
        metadata={"collection_id": collection_id},
    )


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _source_exists(source_id: str) -> AlreadyExists:
    return AlreadyExists(
        "that directory is already a source of the collection, with other globs",
        reason="SOURCE_ALREADY_EXISTS",
        metadata={"source_id": source_id},
    )


def _operation_not_found(operation_id: str) -> NotFound:
    return NotFound(
        f"operation {operation_id} not found",
        reason="OPERATION_NOT_FOUND",
        metadata={"operation_id": operation_id},
    )

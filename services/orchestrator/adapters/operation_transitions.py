"""Moving an operation through the domain: ``apply`` runs a pure transition and
persists it with the collection's resulting status (``status_after``), so the
failure mapping holds on every path (step events, cancel, reaper).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from kit.db import keyset
from orchestrator.adapters.collection_rows import CollectionRows
from orchestrator.adapters.operation_rows import OperationRows
from orchestrator.adapters.records import (
    OperationRecord,
    ResourceFigures,
    operation_from,
)
from orchestrator.adapters.shared_rows import (
    OutboxRows,
    Transition,
    operation_not_found,
)
from orchestrator.audit_records import transition_rows
from orchestrator.domain.collections import GONE, status_after
from orchestrator.domain.operations import (
    DomainEvent,
    Operation,
    OperationStatus,
    OperationType,
)
from orchestrator.domain.step_events import (
    figures_to_record,
    staging_change,
)


class OperationTransitions(CollectionRows, OperationRows):
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
        the collection's resulting status, the events' outbox rows and their
        audit rows (``audit_records``), atomically.

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
                raise operation_not_found(operation_id)
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
            audit = transition_rows(current, new, events)
            await self._write_outbox(conn, [*outbox_for(events), *audit], trace_id=current.trace_id)
            await self._notify(conn, new.id)
            return await self._operation(conn, new.id, None), events

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
            audit = transition_rows(record, new, events)
            await self._write_outbox(
                conn, [*outbox_for(record, events), *audit], trace_id=record.trace_id
            )
            await self._notify(conn, new.id)
        return await conn.fetchrow(
            f"SELECT * FROM {self._s}.collections WHERE id = $1", collection["id"]
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

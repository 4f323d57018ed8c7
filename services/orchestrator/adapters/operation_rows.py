"""Operation rows: writing an operation as the domain left it, its result and
measured resources, and reading and listing operations.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg

from kit.db import keyset
from kit.tracing import current_trace_id
from orchestrator.adapters.records import (
    OperationRecord,
    ResourceFigures,
    operation_from,
)
from orchestrator.adapters.shared_rows import (
    BY_CREATION,
    SharedRows,
    operation_not_found,
)
from orchestrator.domain.operations import (
    Operation,
    OperationStatus,
    OperationType,
)


class OperationRows(SharedRows):
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
                    request_id, created_by, created_at, updated_at, progress, trace_id)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13,
                        $14::jsonb, $15)""",
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
            # The trace of the request starting it, which the API interceptor bound.
            current_trace_id(),
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
            raise operation_not_found(operation_id)

    async def record_resources(self, operation_id: str, figures: ResourceFigures) -> None:
        """Store the work's measured resources (the latest report wins), also
        for a finished operation: its final figures come after its end."""
        async with self._pool.acquire() as conn:
            await self._write_resources(conn, operation_id, figures)

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
        after = BY_CREATION.after(page_token, filters)
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
        token = BY_CREATION.next_token(rows, size, filters)
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

"""The indexer's Postgres record of a REINDEX's first four checkpoints
(migration 0003): the staging collection, and what each live document became
in it.

The staging name is recorded before the collection is created: the first name
recorded for an operation wins, so a resumed run reuses it. Per-document
results live here, not in ``documents``: those rows describe the live
collection until the switch, which copies these over them
(``indexer.adapters.reindex_switches``). Each method is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from indexer.adapters.document_repository import DocumentRecord, DocumentStatus

# What the staging copy holds per document: its points (INDEXED, DUPLICATE) or
# none (FAILED). A SKIPPED_UNCHANGED outcome never comes from reprocessing.
_STAGED = ("INDEXED", "DUPLICATE")


@dataclass(frozen=True)
class StagingRecord:
    operation_id: str
    collection_id: str
    staging_collection: str
    recorded_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class ReprocessingTotals:
    """What the recorded documents add up to."""

    documents_done: int = 0  # reprocessed into staging
    documents_failed: int = 0
    documents_duplicate: int = 0
    vectors: int = 0  # points the staging copy must hold
    bytes: int = 0  # of the documents reprocessed

    @property
    def documents(self) -> int:
        return self.documents_done + self.documents_failed


class ReindexRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str = "indexer") -> None:
        self._pool = pool
        self._s = schema

    # --- the staging collection ----------------------------------------------------

    async def record_staging(self, operation_id: str, collection_id: str, name: str) -> str:
        """Record ``name`` as the operation's staging collection, unless one is
        recorded already; returns the recorded one. The collection copy names it
        too, so what references it is known before it exists."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"""INSERT INTO {self._s}.reindex_runs
                        (operation_id, collection_id, staging_collection)
                    VALUES ($1, $2, $3) ON CONFLICT (operation_id) DO NOTHING""",
                uuid.UUID(operation_id),
                uuid.UUID(collection_id),
                name,
            )
            recorded: str = await conn.fetchval(
                f"SELECT staging_collection FROM {self._s}.reindex_runs WHERE operation_id = $1",
                uuid.UUID(operation_id),
            )
            await conn.execute(
                f"""UPDATE {self._s}.collections SET staging_collection = $2
                    WHERE collection_id = $1""",
                uuid.UUID(collection_id),
                recorded,
            )
        return recorded

    async def staging_of(self, operation_id: str) -> StagingRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT * FROM {self._s}.reindex_runs WHERE operation_id = $1",
            uuid.UUID(operation_id),
        )
        if row is None:
            return None
        return StagingRecord(
            operation_id=str(row["operation_id"]),
            collection_id=str(row["collection_id"]),
            staging_collection=row["staging_collection"],
            recorded_at=row["recorded_at"],
            deleted_at=row["staging_deleted_at"],
        )

    async def mark_staging_deleted(self, operation_id: str) -> None:
        """The staging collection is gone: the collection copy no longer names it."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE {self._s}.reindex_runs
                    SET staging_deleted_at = coalesce(staging_deleted_at, now())
                    WHERE operation_id = $1
                    RETURNING collection_id, staging_collection""",
                uuid.UUID(operation_id),
            )
            if row is None:
                return
            await conn.execute(
                f"""UPDATE {self._s}.collections SET staging_collection = NULL
                    WHERE collection_id = $1 AND staging_collection = $2""",
                row["collection_id"],
                row["staging_collection"],
            )

    # --- per-document results ------------------------------------------------------

    def results_of(self, operation_id: str) -> ReprocessedDocuments:
        """Where a ``DocumentWriter`` writing into staging records its documents."""
        return ReprocessedDocuments(self, operation_id)

    async def record_results(self, operation_id: str, batch: Sequence[DocumentRecord]) -> None:
        """Upsert each document's outcome in staging (the last one wins)."""
        if not batch:
            return
        latest = {doc.document_id: doc for doc in batch}
        docs = [latest[key] for key in sorted(latest)]
        await self._pool.execute(
            f"""INSERT INTO {self._s}.reindex_documents (operation_id, document_id, source_id,
                    path, content_hash, status, chunk_count, bytes, failure_reason,
                    failure_message)
                SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[],
                    $6::text[], $7::int[], $8::bigint[], $9::text[], $10::text[])
                ON CONFLICT (operation_id, document_id) DO UPDATE SET
                    content_hash = EXCLUDED.content_hash, status = EXCLUDED.status,
                    chunk_count = EXCLUDED.chunk_count, bytes = EXCLUDED.bytes,
                    failure_reason = EXCLUDED.failure_reason,
                    failure_message = EXCLUDED.failure_message, recorded_at = now()""",
            uuid.UUID(operation_id),
            [uuid.UUID(d.document_id) for d in docs],
            [uuid.UUID(d.source_id) for d in docs],
            [d.path for d in docs],
            [d.content_hash for d in docs],
            [_staged_status(d.status) for d in docs],
            [d.chunk_count if d.status is not DocumentStatus.FAILED else 0 for d in docs],
            [d.bytes for d in docs],
            [d.failure_reason for d in docs],
            [d.failure_message for d in docs],
        )

    async def recorded_document_ids(self, operation_id: str) -> set[str]:
        rows = await self._pool.fetch(
            f"SELECT document_id FROM {self._s}.reindex_documents WHERE operation_id = $1",
            uuid.UUID(operation_id),
        )
        return {str(row["document_id"]) for row in rows}

    async def failures(self, operation_id: str) -> dict[str, tuple[str, str]]:
        """document id -> (reason, message) of the documents that failed."""
        rows = await self._pool.fetch(
            f"""SELECT document_id, failure_reason, failure_message
                FROM {self._s}.reindex_documents
                WHERE operation_id = $1 AND status = 'FAILED'""",
            uuid.UUID(operation_id),
        )
        return {
            str(row["document_id"]): (row["failure_reason"] or "", row["failure_message"] or "")
            for row in rows
        }

    async def totals(self, operation_id: str) -> ReprocessingTotals:
        row = await self._pool.fetchrow(
            f"""SELECT count(*) FILTER (WHERE status = ANY($2::text[])) AS done,
                    count(*) FILTER (WHERE status = 'FAILED') AS failed,
                    count(*) FILTER (WHERE status = 'DUPLICATE') AS duplicate,
                    coalesce(sum(chunk_count) FILTER (WHERE status = ANY($2::text[])), 0)
                        AS vectors,
                    coalesce(sum(bytes) FILTER (WHERE status = ANY($2::text[])), 0) AS bytes
                FROM {self._s}.reindex_documents WHERE operation_id = $1""",
            uuid.UUID(operation_id),
            list(_STAGED),
        )
        return ReprocessingTotals(
            documents_done=int(row["done"]),
            documents_failed=int(row["failed"]),
            documents_duplicate=int(row["duplicate"]),
            vectors=int(row["vectors"]),
            bytes=int(row["bytes"]),
        )


class ReprocessedDocuments:
    """The document records of a ``DocumentWriter`` that writes into staging, kept
    for one operation instead of in the live rows."""

    def __init__(self, repository: ReindexRepository, operation_id: str) -> None:
        self._repository = repository
        self._operation_id = operation_id

    async def record_documents(
        self, batch: Sequence[DocumentRecord], *, processed: tuple[str, str] | None = None
    ) -> bool:
        await self._repository.record_results(self._operation_id, batch)
        return True


def _staged_status(status: DocumentStatus) -> str:
    if status is DocumentStatus.SKIPPED_UNCHANGED:  # never written by a staging writer
        raise ValueError("a reprocessed document is indexed, duplicate or failed")
    return str(status)

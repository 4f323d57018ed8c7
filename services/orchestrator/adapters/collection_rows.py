"""Collection and source rows: renaming, reading and listing collections, adding
or re-scanning sources, and the figures and staging name a step reports.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from kit.db import keyset
from kit.errors import AlreadyExists, FailedPrecondition, NotFound
from orchestrator.adapters.idempotency_keys import IdempotencyKeys
from orchestrator.adapters.records import (
    CollectionRecord,
    SourceSpec,
)
from orchestrator.adapters.shared_rows import (
    BY_CREATION,
)
from orchestrator.domain.operations import (
    CollectionStatus,
)
from orchestrator.domain.step_events import (
    CollectionFigures,
    StagingChange,
)


class CollectionRows(IdempotencyKeys):
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
        after = BY_CREATION.after(page_token, filters)
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
        token = BY_CREATION.next_token(rows, size, filters)
        return page, token

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

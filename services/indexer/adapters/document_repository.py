"""The indexer's Postgres repository: its copy of collections and sources, one
row per document of a source, and the batches already applied.

The indexer never reads the orchestrator's tables; commands carry what it
needs and it keeps a copy here, fenced by generation so a late or redelivered
command cannot roll a collection back. Each method is one transaction.
Documents feed ``plan_documents`` (``previous_hashes``, ``collection_hashes``)
and record each document's outcome; ``processed_batches`` makes a redelivered
embed result or command step apply once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from indexer.domain.documents import document_id as derive_document_id
from kit.db import keyset
from kit.errors import InvalidArgument, NotFound

# Documents page on (source_id, path); an owner's collections on their id.
_BY_PATH = keyset.SortKey(("source_id", "path"), (uuid.UUID, str))
_BY_COLLECTION = keyset.SortKey(("collection_id",), (uuid.UUID,))


class SourceStatus(StrEnum):
    ACTIVE = "ACTIVE"
    REMOVING = "REMOVING"
    REMOVED = "REMOVED"


class DocumentStatus(StrEnum):
    INDEXED = "INDEXED"
    FAILED = "FAILED"
    SKIPPED_UNCHANGED = "SKIPPED_UNCHANGED"  # same hash as last time: its points stay
    DUPLICATE = "DUPLICATE"  # indexed, but another document has the same content


# Documents whose points are in the vector store: all but FAILED. An unchanged
# or duplicate document was indexed too, so the next scan must see its hash.
_LIVE = ("INDEXED", "SKIPPED_UNCHANGED", "DUPLICATE")


@dataclass(frozen=True)
class CollectionRecord:
    """The indexer's copy of a collection, as the latest command described it."""

    collection_id: str
    owner_id: str
    alias_name: str
    physical_collection: str
    generation: int
    config: Mapping[str, Any]
    staging_collection: str | None = None
    updated_at: datetime | None = None  # set by the database


@dataclass(frozen=True)
class CollectionUsage:
    """What one collection stores, by its indexed documents (``counts``)."""

    collection_id: str
    documents: int
    vectors: int
    bytes: int


@dataclass(frozen=True)
class SourceRecord:
    source_id: str
    collection_id: str
    kind: str  # "directory" | "upload"
    path: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    status: SourceStatus = SourceStatus.ACTIVE
    created_at: datetime | None = None  # set by the database


@dataclass(frozen=True)
class DocumentRecord:
    """One document's latest outcome. ``document_id`` must be the one
    ``indexer.domain.documents.document_id`` derives from (collection, source, path)."""

    document_id: str
    collection_id: str
    source_id: str
    path: str
    content_hash: str
    status: DocumentStatus
    media_type: str = ""
    failure_reason: str | None = None
    failure_message: str | None = None
    chunk_count: int = 0
    vector_count: int = 0
    bytes: int = 0
    duplicate_of: str | None = None
    last_operation_id: str | None = None
    created_at: datetime | None = field(default=None, compare=False)  # set by the database
    updated_at: datetime | None = field(default=None, compare=False)


class DocumentRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str = "indexer") -> None:
        self._pool = pool
        self._s = schema

    # --- collections ---------------------------------------------------------------

    async def upsert_collection(self, record: CollectionRecord) -> bool:
        """Store ``record`` unless a copy of the same or a higher generation is
        already there. True when written."""
        written = await self._pool.fetchval(
            f"""INSERT INTO {self._s}.collections (collection_id, owner_id, alias_name,
                    physical_collection, staging_collection, generation, config, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, now())
                ON CONFLICT (collection_id) DO UPDATE SET
                    owner_id = EXCLUDED.owner_id, alias_name = EXCLUDED.alias_name,
                    physical_collection = EXCLUDED.physical_collection,
                    staging_collection = EXCLUDED.staging_collection,
                    generation = EXCLUDED.generation, config = EXCLUDED.config,
                    updated_at = EXCLUDED.updated_at
                WHERE collections.generation < EXCLUDED.generation
                RETURNING true""",
            _arg_uuid(record.collection_id, "collection_id"),
            record.owner_id,
            record.alias_name,
            record.physical_collection,
            record.staging_collection,
            record.generation,
            json.dumps(dict(record.config)),
        )
        return bool(written)

    async def get_collection(self, collection_id: str) -> CollectionRecord:
        row = await self._pool.fetchrow(
            f"SELECT * FROM {self._s}.collections WHERE collection_id = $1",
            _cid(collection_id),
        )
        if row is None:
            raise _not_found("collection", collection_id)
        return _collection_from(row)

    async def delete_collection(self, collection_id: str) -> bool:
        """Forget a collection, its sources and documents (a completed DELETE)."""
        done = await self._pool.execute(
            f"DELETE FROM {self._s}.collections WHERE collection_id = $1",
            _cid(collection_id),
        )
        return not done.endswith(" 0")

    # --- sources -------------------------------------------------------------------

    async def add_source(self, record: SourceRecord) -> bool:
        """Store a source of a known collection. A redelivered command finds the
        row and changes nothing (a REMOVED source is not revived). True when new."""
        async with self._pool.acquire() as conn:
            try:
                inserted = await conn.fetchval(
                    f"""INSERT INTO {self._s}.sources (source_id, collection_id, kind, path,
                            include, exclude, status)
                        VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)
                        ON CONFLICT (source_id) DO NOTHING RETURNING true""",
                    _arg_uuid(record.source_id, "source_id"),
                    _arg_uuid(record.collection_id, "collection_id"),
                    record.kind,
                    record.path,
                    json.dumps(list(record.include)),
                    json.dumps(list(record.exclude)),
                    str(record.status),
                )
            except asyncpg.ForeignKeyViolationError:
                raise _not_found("collection", record.collection_id) from None
        return bool(inserted)

    async def set_source_status(self, source_id: str, status: SourceStatus) -> bool:
        """Move a source to ``status``. REMOVED is final: a late command cannot
        bring a removed source back. True when the row changed."""
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                f"SELECT status FROM {self._s}.sources WHERE source_id = $1 FOR UPDATE",
                _sid(source_id),
            )
            if current is None:
                raise _not_found("source", source_id)
            if current == status or current == SourceStatus.REMOVED:
                return False
            await conn.execute(
                f"UPDATE {self._s}.sources SET status = $2 WHERE source_id = $1",
                uuid.UUID(source_id),
                str(SourceStatus(status)),
            )
        return True

    async def list_sources(self, collection_id: str) -> list[SourceRecord]:
        """Every source of the collection, whatever its status, oldest first."""
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.sources WHERE collection_id = $1
                ORDER BY created_at, source_id""",
            _cid(collection_id),
        )
        return [_source_from(row) for row in rows]

    # --- documents: planning -------------------------------------------------------

    async def previous_hashes(self, collection_id: str, source_id: str) -> dict[str, str]:
        """path -> content hash of the source's indexed documents (``previous`` of
        ``plan_documents``). FAILED documents are left out, so they are retried."""
        rows = await self._pool.fetch(
            f"""SELECT path, content_hash FROM {self._s}.documents
                WHERE collection_id = $1 AND source_id = $2 AND status = ANY($3::text[])""",
            _cid(collection_id),
            _sid(source_id),
            list(_LIVE),
        )
        return {row["path"]: row["content_hash"] for row in rows}

    async def collection_hashes(
        self, collection_id: str, *, exclude_source_id: str | None = None
    ) -> dict[str, str]:
        """content hash -> document id of the collection's indexed documents, for
        duplicate counting (``collection_hashes`` of ``plan_documents`` wants the
        *other* sources: pass ``exclude_source_id``). Where several documents share
        a hash, the original wins over a duplicate, then the lowest (source, path)."""
        rows = await self._pool.fetch(
            f"""SELECT DISTINCT ON (content_hash) content_hash, document_id
                FROM {self._s}.documents
                WHERE collection_id = $1 AND status = ANY($2::text[])
                  AND ($3::uuid IS NULL OR source_id <> $3)
                ORDER BY content_hash, (status = 'DUPLICATE'), source_id, path""",
            _cid(collection_id),
            list(_LIVE),
            _sid(exclude_source_id) if exclude_source_id else None,
        )
        return {row["content_hash"]: str(row["document_id"]) for row in rows}

    # --- documents: writing --------------------------------------------------------

    async def record_document(self, document: DocumentRecord) -> None:
        await self.record_documents([document])

    async def record_documents(
        self, batch: Sequence[DocumentRecord], *, processed: tuple[str, str] | None = None
    ) -> bool:
        """Upsert each document's outcome, all or none.

        ``processed`` = (operation_id, batch_id) marks the batch applied in the
        same transaction, so a crash cannot leave it marked but unwritten; a batch
        already marked writes nothing and returns False.

        A SKIPPED_UNCHANGED outcome keeps the row's chunk, vector and byte figures
        and its ``duplicate_of``: the document's points are still those counted.
        """
        latest = {_checked_id(doc): doc for doc in batch}  # one row each: the last wins
        # Sorted, so two concurrent batches lock shared rows in the same order.
        docs = [latest[key] for key in sorted(latest)]
        columns = _columns(docs)
        async with self._pool.acquire() as conn, conn.transaction():
            if processed is not None and not await self._mark(conn, *processed):
                return False
            if not docs:
                return True
            try:
                await conn.execute(_upsert_documents(self._s), *columns)
            except asyncpg.ForeignKeyViolationError as error:
                if error.constraint_name == "documents_source_fkey":
                    raise NotFound(
                        "a document names a source this collection does not have",
                        reason="SOURCE_NOT_FOUND",
                        metadata={"detail": error.detail or ""},
                    ) from None
                raise InvalidArgument(
                    "a document is a duplicate of an unknown document",
                    reason="INVALID_ARGUMENT",
                    metadata={"field": "duplicate_of"},
                ) from None
        return True

    async def delete_documents(
        self, collection_id: str, source_id: str, paths: Sequence[str]
    ) -> int:
        """Forget the given documents of a source (a plan's ``removed``)."""
        done = await self._pool.execute(
            f"""DELETE FROM {self._s}.documents
                WHERE collection_id = $1 AND source_id = $2 AND path = ANY($3::text[])""",
            _cid(collection_id),
            _sid(source_id),
            list(paths),
        )
        return _count(done)

    async def delete_documents_of_source(self, collection_id: str, source_id: str) -> int:
        """Forget every document of a source (REMOVE_SOURCE); the number removed."""
        done = await self._pool.execute(
            f"DELETE FROM {self._s}.documents WHERE collection_id = $1 AND source_id = $2",
            _cid(collection_id),
            _sid(source_id),
        )
        return _count(done)

    # --- documents: reading --------------------------------------------------------

    async def documents_of_source(self, collection_id: str, source_id: str) -> list[DocumentRecord]:
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.documents
                WHERE collection_id = $1 AND source_id = $2 ORDER BY path""",
            _cid(collection_id),
            _sid(source_id),
        )
        return [_document_from(row) for row in rows]

    async def get_document(self, collection_id: str, document_id: str) -> DocumentRecord:
        """One document of the collection; DOCUMENT_NOT_FOUND when the collection has
        no such document (whatever other collection may have it)."""
        row = await self._pool.fetchrow(
            f"""SELECT * FROM {self._s}.documents
                WHERE collection_id = $1 AND document_id = $2""",
            _cid(collection_id),
            keyset.uuid_or_not_found(document_id, "DOCUMENT_NOT_FOUND", "document_id"),
        )
        if row is None:
            raise _not_found("document", document_id)
        return _document_from(row)

    async def list_documents(
        self,
        collection_id: str,
        page_size: int,
        page_token: str = "",
        status: DocumentStatus | None = None,
        *,
        statuses: Collection[DocumentStatus] = (),
        source_id: str | None = None,
    ) -> tuple[list[DocumentRecord], str]:
        """One page ordered by (source_id, path) and the next token ("" at the end).

        Only documents with ``status`` or one of ``statuses`` (none given: all), and
        of ``source_id`` when given. Keyset pagination: documents written or
        deleted between pages neither shift nor repeat the others. A token works
        only for the collection and filters it was issued for. An unknown
        collection has no documents.
        """
        size = keyset.page_size(page_size)
        wanted = sorted(
            {str(DocumentStatus(s)) for s in (*statuses, *([status] if status else []))}
        )
        filters = {"collection": collection_id, "statuses": wanted or None, "source": source_id}
        after = _BY_PATH.after(page_token, filters)
        args: list[Any] = [
            _cid(collection_id),
            filters["statuses"],
            size + 1,
            _sid(source_id) if source_id else None,
        ]
        where = (
            "collection_id = $1 AND ($2::text[] IS NULL OR status = ANY($2::text[]))"
            " AND ($4::uuid IS NULL OR source_id = $4)"
        )
        if after is not None:
            where += " AND (source_id, path) > ($5, $6)"
            args += list(after)
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.documents WHERE {where}
                ORDER BY source_id, path LIMIT $3""",
            *args,
        )
        token = _BY_PATH.next_token(rows, size, filters)
        return [_document_from(row) for row in rows[:size]], token

    async def counts(self, collection_id: str) -> tuple[int, int, int]:
        """(documents, vectors, bytes) of the collection's indexed documents."""
        row = await self._pool.fetchrow(
            f"""SELECT count(*) AS documents, coalesce(sum(vector_count), 0) AS vectors,
                    coalesce(sum(bytes), 0) AS bytes
                FROM {self._s}.documents
                WHERE collection_id = $1 AND status = ANY($2::text[])""",
            _cid(collection_id),
            list(_LIVE),
        )
        return int(row["documents"]), int(row["vectors"]), int(row["bytes"])

    async def owner_usage(
        self, owner_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[CollectionUsage], str]:
        """``counts`` of each collection of the owner this indexer keeps a copy
        of (from its INDEX on until a DELETE completes), one page ordered by
        collection id, and the next token ("" at the end)."""
        size = keyset.page_size(page_size)
        filters = {"owner": owner_id}
        after = _BY_COLLECTION.after(page_token, filters)
        rows = await self._pool.fetch(
            f"""SELECT c.collection_id, count(d.document_id) AS documents,
                    coalesce(sum(d.vector_count), 0) AS vectors,
                    coalesce(sum(d.bytes), 0) AS bytes
                FROM {self._s}.collections AS c
                LEFT JOIN {self._s}.documents AS d
                    ON d.collection_id = c.collection_id AND d.status = ANY($2::text[])
                WHERE c.owner_id = $1 AND ($4::uuid IS NULL OR c.collection_id > $4)
                GROUP BY c.collection_id ORDER BY c.collection_id LIMIT $3""",
            owner_id,
            list(_LIVE),
            size + 1,
            after[0] if after is not None else None,
        )
        token = _BY_COLLECTION.next_token(rows, size, filters)
        usage = [
            CollectionUsage(
                str(row["collection_id"]),
                int(row["documents"]),
                int(row["vectors"]),
                int(row["bytes"]),
            )
            for row in rows[:size]
        ]
        return usage, token

    async def source_document_counts(self, collection_id: str) -> dict[str, int]:
        """source id -> indexed documents, for the sources that have any."""
        rows = await self._pool.fetch(
            f"""SELECT source_id, count(*) AS documents FROM {self._s}.documents
                WHERE collection_id = $1 AND status = ANY($2::text[]) GROUP BY source_id""",
            _cid(collection_id),
            list(_LIVE),
        )
        return {str(row["source_id"]): int(row["documents"]) for row in rows}

    # --- processed batches ---------------------------------------------------------

    async def mark_batch_processed(self, operation_id: str, batch_id: str) -> bool:
        """True the first time only, however many callers race: the caller that
        gets True applies the batch; every other one drops it."""
        return await self._mark(self._pool, operation_id, batch_id)

    async def forget_operation_batches(self, operation_id: str) -> int:
        """Drop an ended operation's markers; its messages can no longer arrive."""
        done = await self._pool.execute(
            f"DELETE FROM {self._s}.processed_batches WHERE operation_id = $1",
            _arg_uuid(operation_id, "operation_id"),
        )
        return _count(done)

    async def _mark(
        self, conn: asyncpg.Connection | asyncpg.Pool, operation_id: str, batch_id: str
    ) -> bool:
        # ON CONFLICT waits for a concurrent insert of the same key to commit and
        # then does nothing: exactly one caller sees a row inserted.
        done = await conn.execute(
            f"""INSERT INTO {self._s}.processed_batches (operation_id, batch_id)
                VALUES ($1, $2) ON CONFLICT DO NOTHING""",
            _arg_uuid(operation_id, "operation_id"),
            batch_id,
        )
        return done == "INSERT 0 1"


# The documents' written columns and their Postgres types, in INSERT order.
_DOC_COLUMNS = (
    ("document_id", "uuid"),
    ("collection_id", "uuid"),
    ("source_id", "uuid"),
    ("path", "text"),
    ("content_hash", "text"),
    ("media_type", "text"),
    ("status", "text"),
    ("failure_reason", "text"),
    ("failure_message", "text"),
    ("chunk_count", "int"),
    ("vector_count", "bigint"),
    ("bytes", "bigint"),
    ("duplicate_of", "uuid"),
    ("last_operation_id", "uuid"),
)
_UUID_COLUMNS = frozenset(name for name, kind in _DOC_COLUMNS if kind == "uuid")
# A skipped document's figures describe points written by an earlier operation.
_KEPT_WHEN_SKIPPED = ("chunk_count", "vector_count", "bytes", "duplicate_of")


def _upsert_documents(schema: str) -> str:
    """One INSERT of the whole batch from column arrays: one round trip."""
    names = ", ".join(name for name, _ in _DOC_COLUMNS)
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_DOC_COLUMNS, 1))
    updates = [
        f"{name} = CASE WHEN EXCLUDED.status = 'SKIPPED_UNCHANGED' THEN documents.{name} "
        f"ELSE EXCLUDED.{name} END"
        if name in _KEPT_WHEN_SKIPPED
        else f"{name} = EXCLUDED.{name}"
        for name, _ in _DOC_COLUMNS[4:]
    ]
    return (
        f"INSERT INTO {schema}.documents ({names}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (document_id) DO UPDATE SET {', '.join(updates)}, updated_at = now()"
    )


def _columns(docs: Sequence[DocumentRecord]) -> list[list[Any]]:
    """The batch as one array per column, for unnest."""
    out: list[list[Any]] = []
    for name, _ in _DOC_COLUMNS:
        values = [getattr(doc, name) for doc in docs]
        if name in _UUID_COLUMNS:
            values = [_arg_uuid(v, name) if v else None for v in values]
        elif name == "status":
            values = [str(DocumentStatus(v)) for v in values]
        out.append(values)
    return out


def _checked_id(doc: DocumentRecord) -> uuid.UUID:
    """The document's id, after checking it is the one its (collection, source,
    path) derive: any other id would make REMOVE_SOURCE and REINDEX miss points."""
    _arg_uuid(doc.collection_id, "collection_id")
    _arg_uuid(doc.source_id, "source_id")
    expected = derive_document_id(doc.collection_id, doc.source_id, doc.path)
    if _arg_uuid(doc.document_id, "document_id") != uuid.UUID(expected):
        raise InvalidArgument(
            f"document_id {doc.document_id} is not the id of {doc.path!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "document_id"},
        )
    return uuid.UUID(expected)


def _collection_from(row: asyncpg.Record) -> CollectionRecord:
    return CollectionRecord(
        collection_id=str(row["collection_id"]),
        owner_id=row["owner_id"],
        alias_name=row["alias_name"],
        physical_collection=row["physical_collection"],
        staging_collection=row["staging_collection"],
        generation=row["generation"],
        config=json.loads(row["config"]),
        updated_at=row["updated_at"],
    )


def _source_from(row: asyncpg.Record) -> SourceRecord:
    return SourceRecord(
        source_id=str(row["source_id"]),
        collection_id=str(row["collection_id"]),
        kind=row["kind"],
        path=row["path"],
        include=tuple(json.loads(row["include"])),
        exclude=tuple(json.loads(row["exclude"])),
        status=SourceStatus(row["status"]),
        created_at=row["created_at"],
    )


def _document_from(row: asyncpg.Record) -> DocumentRecord:
    values = {name: row[name] for name, _ in _DOC_COLUMNS}
    for name in _UUID_COLUMNS:
        values[name] = str(values[name]) if values[name] else None
    values["status"] = DocumentStatus(values["status"])
    return DocumentRecord(**values, created_at=row["created_at"], updated_at=row["updated_at"])


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _cid(collection_id: str) -> uuid.UUID:
    return keyset.uuid_or_not_found(collection_id, "COLLECTION_NOT_FOUND", "collection_id")


def _sid(source_id: str) -> uuid.UUID:
    return keyset.uuid_or_not_found(source_id, "SOURCE_NOT_FOUND", "source_id")


def _arg_uuid(value: str, name: str) -> uuid.UUID:
    """An id to be written must be a UUID."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(
            f"{name} {value!r} is not a UUID", reason="INVALID_ARGUMENT", metadata={"field": name}
        ) from None


def _not_found(kind: str, value: str) -> NotFound:
    return NotFound(
        f"{kind} {value} not found",
        reason=f"{kind.upper()}_NOT_FOUND",
        metadata={f"{kind}_id": str(value)},
    )

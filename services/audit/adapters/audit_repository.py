"""The audit log in Postgres: serialised appends onto the hash chain, filtered
keyset reads, and the walk VerifyChain needs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from audit.domain.chain import GENESIS_HASH, EntryContent, StoredEntry, link_hash

_COLUMNS = (
    "sequence, event_id, action, outcome, principal, role, owner_id, collection_id, "
    "operation_id, service, request_id, trace_id, details, occurred_at, stored_at, "
    "content_hash, previous_hash"
)


@dataclass(frozen=True)
class NewEntry:
    """An audit event before it has a place in the chain."""

    event_id: str
    action: str
    outcome: str
    principal: str
    role: str
    owner_id: str
    collection_id: str
    operation_id: str
    service: str
    request_id: str
    trace_id: str
    occurred_at: datetime
    details: dict[str, Any]

    def at(self, sequence: int) -> EntryContent:
        return EntryContent(sequence=sequence, **self.__dict__)


@dataclass(frozen=True)
class AuditFilter:
    owner_id: str = ""
    principal: str = ""
    collection_id: str = ""
    operation_id: str = ""
    action: str = ""  # a trailing ".*" matches a prefix
    outcome: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class StoredRow:
    entry: StoredEntry
    stored_at: datetime


def _row_to_stored(row: asyncpg.Record) -> StoredRow:
    content = EntryContent(
        sequence=row["sequence"],
        event_id=str(row["event_id"]),
        action=row["action"],
        outcome=row["outcome"],
        principal=row["principal"],
        role=row["role"],
        owner_id=row["owner_id"],
        collection_id=row["collection_id"],
        operation_id=row["operation_id"],
        service=row["service"],
        request_id=row["request_id"],
        trace_id=row["trace_id"],
        occurred_at=row["occurred_at"],
        details=json.loads(row["details"]),
    )
    return StoredRow(
        StoredEntry(content, row["previous_hash"], row["content_hash"]), row["stored_at"]
    )


def _where(filters: AuditFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.format(f"${len(args)}"))

    for column in ("owner_id", "principal", "collection_id", "operation_id", "outcome"):
        if value := getattr(filters, column):
            add(f"{column} = {{}}", value)
    if filters.action.endswith(".*"):
        # Escape LIKE's wildcards: an action is matched literally up to the ".*".
        prefix = filters.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        add("action LIKE {}", prefix + "%")
    elif filters.action:
        add("action = {}", filters.action)
    if filters.start_time is not None:
        add("occurred_at >= {}", filters.start_time)
    if filters.end_time is not None:
        add("occurred_at < {}", filters.end_time)
    return clauses, args


class AuditRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._schema = schema

    async def append(self, entry: NewEntry) -> StoredEntry | None:
        """Append ``entry`` at the head of the chain; None when its event id is
        already stored (a redelivery), which changes nothing."""
        s = self._schema
        async with self._pool.acquire() as conn, conn.transaction():
            # The head lock serialises appends across sinks: each row links to the last.
            head = await conn.fetchrow(
                f"SELECT last_sequence, last_hash FROM {s}.audit_chain_head WHERE id = 1 FOR UPDATE"
            )
            exists = await conn.fetchval(
                f"SELECT 1 FROM {s}.audit_events WHERE event_id = $1", uuid.UUID(entry.event_id)
            )
            if exists:
                return None
            content = entry.at(head["last_sequence"] + 1)
            content_hash = link_hash(head["last_hash"], content)
            await conn.execute(
                f"""INSERT INTO {s}.audit_events (sequence, event_id, action, outcome, principal,
                        role, owner_id, collection_id, operation_id, service, request_id,
                        trace_id, details, occurred_at, content_hash, previous_hash)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb,
                        $14, $15, $16)""",
                content.sequence,
                uuid.UUID(content.event_id),
                content.action,
                content.outcome,
                content.principal,
                content.role,
                content.owner_id,
                content.collection_id,
                content.operation_id,
                content.service,
                content.request_id,
                content.trace_id,
                json.dumps(content.details),
                content.occurred_at,
                content_hash,
                head["last_hash"],
            )
            await conn.execute(
                f"UPDATE {s}.audit_chain_head SET last_sequence = $1, last_hash = $2 WHERE id = 1",
                content.sequence,
                content_hash,
            )
            return StoredEntry(content, head["last_hash"], content_hash)

    async def get(self, event_id: uuid.UUID) -> StoredRow | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM {self._schema}.audit_events WHERE event_id = $1", event_id
        )
        return None if row is None else _row_to_stored(row)

    async def list(
        self, filters: AuditFilter, *, after: int | None, limit: int, descending: bool
    ) -> list[StoredRow]:
        clauses, args = _where(filters)
        if after is not None:
            args.append(after)
            clauses.append(f"sequence {'<' if descending else '>'} ${len(args)}")
        args.append(limit)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM {self._schema}.audit_events {where} "
            f"ORDER BY sequence {'DESC' if descending else 'ASC'} LIMIT ${len(args)}",
            *args,
        )
        return [_row_to_stored(row) for row in rows]

    async def hash_before(self, sequence: int) -> str:
        """The hash the row at ``sequence`` must link to (the genesis hash for the first)."""
        if sequence <= 1:
            return GENESIS_HASH
        stored = await self._pool.fetchval(
            f"SELECT content_hash FROM {self._schema}.audit_events WHERE sequence = $1",
            sequence - 1,
        )
        return stored if stored is not None else GENESIS_HASH

    async def walk(
        self, start: int, end: int | None, batch: int = 500
    ) -> AsyncIterator[StoredEntry]:
        """The rows from ``start`` to ``end`` (None: the newest), in sequence order."""
        after = start - 1
        while True:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM {self._schema}.audit_events WHERE sequence > $1 "
                "AND ($2::bigint IS NULL OR sequence <= $2) ORDER BY sequence LIMIT $3",
                after,
                end,
                batch,
            )
            for row in rows:
                yield _row_to_stored(row).entry
            if len(rows) < batch:
                return
            after = rows[-1]["sequence"]

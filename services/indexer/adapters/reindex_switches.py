"""The indexer's record of reindex switches (migration 0004) and the switch of
its own state: the collection copy and the live document rows.

A switch is recorded before CompleteReindex is called (with the target
config) and its answer once received, so whoever applies it — the switch step,
a resumed run of it, the CollectionSwitched consumer, the start-up reconciler —
finds what the orchestrator decided without asking again.

``apply`` switches the copy under its row lock, generation-fenced: only a
higher generation moves it (the documents' figures move with it, once); the
same generation and physical collection only refresh the config; anything
older is stale and changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg


@dataclass(frozen=True)
class SwitchRecord:
    operation_id: str
    collection_id: str
    staging_collection: str
    from_generation: int
    config: dict[str, Any]
    # The orchestrator's answer, once received.
    generation: int | None = None
    retired_collections: tuple[str, ...] = ()
    cleanup_not_before: datetime | None = None

    @property
    def answered(self) -> bool:
        return self.generation is not None


@dataclass(frozen=True)
class SwitchTarget:
    """Where a collection goes at a switch, as the orchestrator recorded it."""

    collection_id: str
    operation_id: str
    generation: int
    alias_name: str
    physical_collection: str
    config: Mapping[str, Any] | None  # None: keep the copy's


class CopyChange(StrEnum):
    SWITCHED = "SWITCHED"  # moved to the new generation, documents included
    REFRESHED = "REFRESHED"  # already there: config rewritten, nothing else
    STALE = "STALE"  # the copy is past it (or knows another collection at it)
    UNKNOWN = "UNKNOWN"  # no copy of that collection here


@dataclass(frozen=True)
class LiveCopy:
    """A collection copy that should be served through its alias."""

    collection_id: str
    alias_name: str
    physical_collection: str
    generation: int


@dataclass(frozen=True)
class StagedFigures:
    """What the staging collection holds, from reprocessing's per-document record."""

    documents: int
    bytes: int


class ReindexSwitches:
    def __init__(self, pool: asyncpg.Pool, schema: str = "indexer") -> None:
        self._pool = pool
        self._s = schema

    # --- the record ------------------------------------------------------------------

    async def record_request(
        self,
        operation_id: str,
        collection_id: str,
        staging_collection: str,
        from_generation: int,
        config: Mapping[str, Any],
    ) -> SwitchRecord:
        """Record the switch about to be asked for; the first record stays."""
        await self._pool.execute(
            f"""INSERT INTO {self._s}.reindex_switches (operation_id, collection_id,
                    staging_collection, from_generation, config)
                VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (operation_id) DO NOTHING""",
            uuid.UUID(operation_id),
            uuid.UUID(collection_id),
            staging_collection,
            from_generation,
            json.dumps(dict(config)),
        )
        record = await self.get(operation_id)
        assert record is not None
        return record

    async def record_answer(
        self,
        operation_id: str,
        generation: int,
        retired_collections: Sequence[str],
        cleanup_not_before: datetime,
    ) -> SwitchRecord | None:
        """Keep the orchestrator's answer; the first one stays. None when no
        switch of that operation was asked for here."""
        await self._pool.execute(
            f"""UPDATE {self._s}.reindex_switches SET generation = $2,
                    retired_collections = $3::text[], cleanup_not_before = $4,
                    answered_at = now()
                WHERE operation_id = $1 AND generation IS NULL""",
            uuid.UUID(operation_id),
            generation,
            list(retired_collections),
            cleanup_not_before,
        )
        return await self.get(operation_id)

    async def get(self, operation_id: str) -> SwitchRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT * FROM {self._s}.reindex_switches WHERE operation_id = $1",
            uuid.UUID(operation_id),
        )
        return _record_from(row) if row is not None else None

    async def answered_after(self, collection_id: str, generation: int) -> SwitchRecord | None:
        """The latest answered switch of the collection past ``generation``, if any."""
        row = await self._pool.fetchrow(
            f"""SELECT * FROM {self._s}.reindex_switches
                WHERE collection_id = $1 AND generation > $2
                ORDER BY generation DESC LIMIT 1""",
            uuid.UUID(collection_id),
            generation,
        )
        return _record_from(row) if row is not None else None

    async def staged_figures(self, operation_id: str) -> StagedFigures:
        row = await self._pool.fetchrow(
            f"""SELECT count(*) AS documents, coalesce(sum(bytes), 0) AS bytes
                FROM {self._s}.reindex_documents
                WHERE operation_id = $1 AND status <> 'FAILED'""",
            uuid.UUID(operation_id),
        )
        return StagedFigures(int(row["documents"]), int(row["bytes"]))

    async def live_copies(self) -> list[LiveCopy]:
        """The collection copies whose alias must exist: those an INDEX made live
        (its finalize recorded, the step that first sets the alias) and no
        DELETE has begun to take down. A failed or running INDEX has nothing
        whole to serve, and a DELETE removes the alias first."""
        rows = await self._pool.fetch(
            f"""SELECT c.collection_id, c.alias_name, c.physical_collection, c.generation
                FROM {self._s}.collections AS c
                WHERE EXISTS (
                        SELECT 1 FROM {self._s}.operation_runs AS r
                        JOIN {self._s}.operation_steps AS st USING (operation_id)
                        WHERE r.collection_id = c.collection_id
                          AND r.operation_type = 'INDEX' AND st.step = 'finalize')
                  AND NOT EXISTS (
                        SELECT 1 FROM {self._s}.operation_runs AS r
                        WHERE r.collection_id = c.collection_id AND r.operation_type = 'DELETE')
                ORDER BY c.collection_id"""
        )
        return [
            LiveCopy(
                str(row["collection_id"]),
                row["alias_name"],
                row["physical_collection"],
                row["generation"],
            )
            for row in rows
        ]

    async def while_current(self, copy: LiveCopy, action: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``action`` under the copy's row lock if the copy is still what
        ``copy`` read (same generation and physical collection) and no DELETE
        has begun on it; False without running it otherwise.

        Replica-safe: the reconciler of a starting indexer reads its copies
        before it repairs, while another indexer may switch one (``apply``
        holds the same lock) or start deleting it; a repair from that old
        reading would point the alias back at the retired collection."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT generation, physical_collection FROM {self._s}.collections
                    WHERE collection_id = $1 FOR UPDATE""",
                uuid.UUID(copy.collection_id),
            )
            if row is None or (row["generation"], row["physical_collection"]) != (
                copy.generation,
                copy.physical_collection,
            ):
                return False
            deleting = await conn.fetchval(
                f"""SELECT EXISTS (SELECT 1 FROM {self._s}.operation_runs
                    WHERE collection_id = $1 AND operation_type = 'DELETE')""",
                uuid.UUID(copy.collection_id),
            )
            if deleting:
                return False
            return await action()

    # --- the switch of the indexer's own state ---------------------------------------

    async def apply(
        self, target: SwitchTarget, move_alias: Callable[[], Awaitable[None]]
    ) -> CopyChange:
        """Switch the collection copy to ``target``, calling ``move_alias`` first,
        all under the copy's row lock: two appliers (the step and the consumer)
        cannot interleave, and a stale one moves nothing, not even the alias."""
        collection_id = uuid.UUID(target.collection_id)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT generation, physical_collection FROM {self._s}.collections
                    WHERE collection_id = $1 FOR UPDATE""",
                collection_id,
            )
            if row is None:
                return CopyChange.UNKNOWN
            generation, physical = row["generation"], row["physical_collection"]
            if generation > target.generation or (
                generation == target.generation and physical != target.physical_collection
            ):
                return CopyChange.STALE
            await move_alias()
            config = json.dumps(dict(target.config)) if target.config is not None else None
            if generation == target.generation:
                if config is not None:
                    await conn.execute(
                        f"""UPDATE {self._s}.collections SET config = $2::jsonb,
                                staging_collection = NULL, updated_at = now()
                            WHERE collection_id = $1 AND (config IS DISTINCT FROM $2::jsonb
                                OR staging_collection IS NOT NULL)""",
                        collection_id,
                        config,
                    )
                return CopyChange.REFRESHED
            await conn.execute(
                f"""UPDATE {self._s}.collections SET physical_collection = $2,
                        generation = $3, config = coalesce($4::jsonb, config),
                        staging_collection = NULL, updated_at = now()
                    WHERE collection_id = $1""",
                collection_id,
                target.physical_collection,
                target.generation,
                config,
            )
            await conn.execute(_SWITCH_DOCUMENTS.format(s=self._s), uuid.UUID(target.operation_id))
            return CopyChange.SWITCHED


# The live rows take what reprocessing made of each document in the new
# collection: its chunks (one vector each), hash and size as re-read, and a
# document that failed there is FAILED here too (its points are not in the new
# collection; the next APPEND of its source tries it again).
_SWITCH_DOCUMENTS = """
UPDATE {s}.documents AS d SET
    status = r.status,
    chunk_count = CASE WHEN r.status = 'FAILED' THEN 0 ELSE r.chunk_count END,
    vector_count = CASE WHEN r.status = 'FAILED' THEN 0 ELSE r.chunk_count END,
    content_hash = r.content_hash,
    bytes = r.bytes,
    failure_reason = CASE WHEN r.status = 'FAILED' THEN r.failure_reason END,
    failure_message = CASE WHEN r.status = 'FAILED' THEN r.failure_message END,
    duplicate_of = CASE WHEN r.status = 'DUPLICATE' THEN d.duplicate_of END,
    last_operation_id = r.operation_id,
    updated_at = now()
FROM {s}.reindex_documents AS r
WHERE r.operation_id = $1 AND d.document_id = r.document_id
    AND d.status IN ('INDEXED', 'SKIPPED_UNCHANGED', 'DUPLICATE')
"""


def _record_from(row: asyncpg.Record) -> SwitchRecord:
    return SwitchRecord(
        operation_id=str(row["operation_id"]),
        collection_id=str(row["collection_id"]),
        staging_collection=row["staging_collection"],
        from_generation=row["from_generation"],
        config=json.loads(row["config"]),
        generation=row["generation"],
        retired_collections=tuple(row["retired_collections"] or ()),
        cleanup_not_before=row["cleanup_not_before"],
    )

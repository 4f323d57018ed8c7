"""The resources schema in Postgres: quotas, usage, reservations, applied usage events.

Every admission of an owner runs under a row lock on that owner's usage row, so a
burst of concurrent reservations is decided one after another and never over-commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from kit.audit_records import AuditRow
from kit.errors import FieldViolation, InvalidArgument, ResourceExhausted
from kit.errors import QuotaViolation as QuotaDetail
from kit.outbox import enqueue_event
from resources.domain.headroom import Shortfall, insufficient_headroom
from resources.domain.quotas import (
    LIMITS,
    CollectionUsage,
    Demand,
    Held,
    Quota,
    Usage,
    Violation,
    admission_violations,
)
from resources.domain.usage_drift import Reconciliation, drifted_collections, measured_usage
from vectorops.common.v1 import operation_pb2


@dataclass(frozen=True)
class Reservation:
    operation_id: str
    owner_id: str
    collection_id: str
    operation_type: int
    vectors: int
    bytes: int
    documents: int
    created_at: datetime
    expires_at: datetime
    released_at: datetime | None

    def status(self, now: datetime) -> str:
        if self.released_at is not None:
            return "released"
        return "active" if self.expires_at > now else "expired"


@dataclass(frozen=True)
class ReservationRequest:
    operation_id: str
    owner_id: str
    collection_id: str
    operation_type: int
    demand: Demand
    expires_at: datetime | None  # None: now plus the ttl
    ttl: timedelta


@dataclass(frozen=True)
class UsageChange:
    event_id: str
    owner_id: str
    collection_id: str
    collections: int
    vectors: int
    bytes: int
    documents: int


def quota_exceeded(owner_id: str, violations: list[Violation]) -> ResourceExhausted:
    first = violations[0]
    return ResourceExhausted(
        f"the request would exceed the quota of owner {owner_id}: "
        + "; ".join(v.describe() for v in violations),
        reason="QUOTA_EXCEEDED",
        metadata={
            "owner_id": owner_id,
            "limit": first.limit,
            "limit_value": str(first.limit_value),
            "usage": str(first.current),
            "requested": str(first.requested),
        },
        quota_violations=[QuotaDetail(f"owner:{owner_id}", v.describe()) for v in violations],
    )


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(**{name: row[name] for name in Reservation.__dataclass_fields__})


class ResourcesRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str, default_quota: Callable[[str], Quota]):
        self._pool = pool
        self._schema = schema
        self._default = default_quota

    # --- quotas -----------------------------------------------------------------------

    async def quota(self, owner_id: str, conn: asyncpg.Connection | None = None) -> Quota:
        query = f"SELECT * FROM {self._schema}.quotas WHERE owner_id = $1"
        row = await (conn or self._pool).fetchrow(query, owner_id)
        default = self._default(owner_id)
        if row is None:
            return default
        overrides = {name: row[name] for name in LIMITS if name in row["overridden"]}
        return Quota(
            owner_id=owner_id,
            is_default=False,
            updated_at=row["updated_at"],
            **{name: overrides.get(name, default.limit(name)) for name in LIMITS},
        )

    async def set_quota(
        self, owner_id: str, values: Mapping[str, int | None], audit: AuditRow | None = None
    ) -> Quota:
        """Write the limits ``values`` names; ``audit`` goes to the outbox in the
        same transaction, so the change is audited if and only if it happened."""
        names = list(values)
        columns = ", ".join(names)
        placeholders = ", ".join(f"${i + 3}" for i in range(len(names)))
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"""INSERT INTO {self._schema}.quotas (owner_id, overridden, {columns})
                    VALUES ($1, $2, {placeholders})
                    ON CONFLICT (owner_id) DO UPDATE SET {updates},
                        overridden = ARRAY(SELECT DISTINCT unnest(quotas.overridden || $2)),
                        updated_at = now()""",
                owner_id,
                names,
                *values.values(),
            )
            if audit is not None:
                await enqueue_event(conn, self._schema, *audit)
            return await self.quota(owner_id, conn)

    async def record_refusal(self, audit: AuditRow) -> None:
        """A refusal changes nothing, so its audit row is a transaction of its own."""
        async with self._pool.acquire() as conn, conn.transaction():
            await enqueue_event(conn, self._schema, *audit)

    # --- usage ------------------------------------------------------------------------

    async def usage(self, owner_id: str) -> tuple[Usage, Held]:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT * FROM {self._schema}.usage WHERE owner_id = $1", owner_id
            )
            held = await self._held(conn, owner_id)
        if row is None:
            return Usage(owner_id), held
        return _usage(row), held

    async def collection_usage(self, owner_id: str) -> list[CollectionUsage]:
        rows = await self._pool.fetch(
            f"""SELECT collection_id, vectors, stored_bytes, documents
                FROM {self._schema}.collection_usage WHERE owner_id = $1 ORDER BY collection_id""",
            owner_id,
        )
        return [CollectionUsage(**dict(row)) for row in rows]

    async def apply_usage(self, change: UsageChange) -> bool:
        """Apply one usage event; False if its id was applied before (a redelivery)."""
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                f"""INSERT INTO {self._schema}.processed_usage_events (event_id) VALUES ($1)
                    ON CONFLICT DO NOTHING RETURNING true""",
                change.event_id,
            )
            if not fresh:
                return False
            await conn.execute(
                f"""INSERT INTO {self._schema}.usage AS u
                        (owner_id, collections, vectors, stored_bytes, documents)
                    VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (owner_id) DO UPDATE SET
                        collections = u.collections + EXCLUDED.collections,
                        vectors = u.vectors + EXCLUDED.vectors,
                        stored_bytes = u.stored_bytes + EXCLUDED.stored_bytes,
                        documents = u.documents + EXCLUDED.documents,
                        updated_at = now()""",
                change.owner_id,
                change.collections,
                change.vectors,
                change.bytes,
                change.documents,
            )
            if change.collection_id:
                await conn.execute(
                    f"""INSERT INTO {self._schema}.collection_usage AS c
                            (owner_id, collection_id, vectors, stored_bytes, documents)
                        VALUES ($1, $2, $3, $4, $5)
                        ON CONFLICT (owner_id, collection_id) DO UPDATE SET
                            vectors = c.vectors + EXCLUDED.vectors,
                            stored_bytes = c.stored_bytes + EXCLUDED.stored_bytes,
                            documents = c.documents + EXCLUDED.documents""",
                    change.owner_id,
                    change.collection_id,
                    change.vectors,
                    change.bytes,
                    change.documents,
                )
            return True

    async def replace_usage(
        self,
        owner_id: str,
        measured: Sequence[CollectionUsage],
        audit: Callable[[Reconciliation], AuditRow],
    ) -> Reconciliation:
        """Replace the owner's usage (its collection rows and totals) with
        ``measured``, in one transaction under the owner's row lock, so no usage
        event is applied half-way through; ``audit`` of the outcome goes to the
        outbox in the same transaction."""
        schema = self._schema
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {schema}.usage (owner_id) VALUES ($1) ON CONFLICT DO NOTHING",
                owner_id,
            )
            before = await conn.fetchrow(
                f"SELECT * FROM {schema}.usage WHERE owner_id = $1 FOR UPDATE", owner_id
            )
            recorded = await self._collection_usage(conn, owner_id)
            truth = measured_usage(owner_id, measured)
            await conn.execute(
                f"DELETE FROM {schema}.collection_usage WHERE owner_id = $1", owner_id
            )
            await conn.executemany(
                f"""INSERT INTO {schema}.collection_usage
                        (owner_id, collection_id, vectors, stored_bytes, documents)
                    VALUES ($1, $2, $3, $4, $5)""",
                [
                    (owner_id, c.collection_id, c.vectors, c.stored_bytes, c.documents)
                    for c in measured
                ],
            )
            after = await conn.fetchrow(
                f"""UPDATE {schema}.usage SET collections = $2, vectors = $3,
                        stored_bytes = $4, documents = $5, updated_at = now()
                    WHERE owner_id = $1 RETURNING *""",
                owner_id,
                truth.collections,
                truth.vectors,
                truth.stored_bytes,
                truth.documents,
            )
            reconciliation = Reconciliation(
                before=_usage(before),
                recorded=recorded,
                after=_usage(after),
                measured=sorted(measured, key=lambda c: c.collection_id),
                drifted=drifted_collections(recorded, measured),
            )
            await enqueue_event(conn, schema, *audit(reconciliation))
            return reconciliation

    async def _collection_usage(
        self, conn: asyncpg.Connection, owner_id: str
    ) -> list[CollectionUsage]:
        rows = await conn.fetch(
            f"""SELECT collection_id, vectors, stored_bytes, documents
                FROM {self._schema}.collection_usage WHERE owner_id = $1 ORDER BY collection_id""",
            owner_id,
        )
        return [CollectionUsage(**dict(row)) for row in rows]

    # --- reservations -----------------------------------------------------------------

    async def check(self, owner_id: str, demand: Demand) -> list[Violation]:
        """The violations the demand would cause now; changes nothing."""
        async with self._pool.acquire() as conn:
            quota = await self.quota(owner_id, conn)
            row = await conn.fetchrow(
                f"SELECT * FROM {self._schema}.usage WHERE owner_id = $1", owner_id
            )
            usage = _usage(row) if row is not None else Usage(owner_id)
            held = await self._held(conn, owner_id)
        return admission_violations(quota, usage, held, demand)

    async def reserve(
        self, request: ReservationRequest, shortfalls: list[Shortfall] | None = None
    ) -> tuple[Reservation, bool]:
        """The reservation and whether it already existed; QUOTA_EXCEEDED if it
        does not fit, INSUFFICIENT_HEADROOM if the system is below a floor
        (``shortfalls``: read before, but only a new reservation is refused for them)."""
        schema = self._schema
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {schema}.usage (owner_id) VALUES ($1) ON CONFLICT DO NOTHING",
                request.owner_id,
            )
            usage_row = await conn.fetchrow(
                f"SELECT * FROM {schema}.usage WHERE owner_id = $1 FOR UPDATE", request.owner_id
            )
            existing = await conn.fetchrow(
                f"SELECT * FROM {schema}.reservations WHERE operation_id = $1",
                request.operation_id,
            )
            if existing is not None:
                if existing["owner_id"] != request.owner_id:
                    raise InvalidArgument(
                        f"operation {request.operation_id} already holds a reservation "
                        "of another owner",
                        reason="INVALID_ARGUMENT",
                        field_violations=[
                            FieldViolation("owner_id", "differs from the reservation")
                        ],
                    )
                return _reservation(existing), True
            if shortfalls:
                raise insufficient_headroom(request.owner_id, shortfalls)
            quota = await self.quota(request.owner_id, conn)
            held = await self._held(conn, request.owner_id)
            violations = admission_violations(quota, _usage(usage_row), held, request.demand)
            if violations:
                raise quota_exceeded(request.owner_id, violations)
            row = await conn.fetchrow(
                f"""INSERT INTO {schema}.reservations (operation_id, owner_id, collection_id,
                        operation_type, vectors, bytes, documents, expires_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now() + $9))
                    RETURNING *""",
                request.operation_id,
                request.owner_id,
                request.collection_id,
                request.operation_type,
                request.demand.vectors,
                request.demand.bytes,
                request.demand.documents,
                request.expires_at,
                request.ttl,
            )
            return _reservation(row), False

    async def release(self, operation_id: str, *, keep_room: bool = False) -> Reservation | None:
        """Release a live reservation; an expired, released or unknown one is left as
        is. ``keep_room``: its operation has ended, its room stays held."""
        ended = "operation_ended_at = coalesce(operation_ended_at, now())"
        row = await self._pool.fetchrow(
            f"""UPDATE {self._schema}.reservations
                SET {ended if keep_room else "released_at = now()"}
                WHERE operation_id = $1 AND released_at IS NULL AND expires_at > now()
                RETURNING *""",
            operation_id,
        )
        if row is None:
            row = await self._pool.fetchrow(
                f"SELECT * FROM {self._schema}.reservations WHERE operation_id = $1", operation_id
            )
        return _reservation(row) if row is not None else None

    async def now(self) -> datetime:
        return await self._pool.fetchval("SELECT now()")

    async def _held(self, conn: asyncpg.Connection, owner_id: str) -> Held:
        row = await conn.fetchrow(
            f"""SELECT count(*) FILTER (WHERE operation_ended_at IS NULL) AS operations,
                       coalesce(sum(vectors), 0) AS vectors,
                       coalesce(sum(bytes), 0) AS bytes,
                       count(*) FILTER (WHERE operation_type = $2) AS collections
                FROM {self._schema}.reservations
                WHERE owner_id = $1 AND released_at IS NULL AND expires_at > now()""",
            owner_id,
            operation_pb2.OPERATION_TYPE_INDEX,
        )
        return Held(
            int(row["operations"]),
            int(row["vectors"]),
            int(row["bytes"]),
            int(row["collections"]),
        )


def _usage(row: asyncpg.Record) -> Usage:
    return Usage(
        owner_id=row["owner_id"],
        collections=row["collections"],
        vectors=row["vectors"],
        stored_bytes=row["stored_bytes"],
        documents=row["documents"],
        updated_at=row["updated_at"],
    )

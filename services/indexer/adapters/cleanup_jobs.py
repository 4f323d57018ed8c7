"""Cleanup jobs in the indexer's Postgres (migration 0004): one per physical
collection a reindex switch retired, due at ``not_before``.

``take_due`` hands one due job at a time to a decider under the job's row
lock (``FOR UPDATE SKIP LOCKED``: several indexer instances share the table,
each job is judged by one), together with every name the indexer's copies
still point at. The decision, its checks and its audit record (outbox) are
written in that same transaction, so a decision is never half-recorded.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from indexer.domain.cleanup import JobStatus, Verdict
from kit.outbox import enqueue_event
from vectorops.events.v1 import envelope_pb2


@dataclass(frozen=True)
class CleanupJob:
    operation_id: str
    collection_name: str
    collection_id: str
    owner_id: str
    not_before: datetime
    status: JobStatus
    reason: str | None
    checks: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: datetime | None = None
    checked_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """What the decider did with a job: the verdict carried out (None when the
    attempt failed and is retried at ``retry_at``) and the audit record to write."""

    verdict: Verdict | None
    audit: envelope_pb2.Envelope | None = None  # an AuditRecord, written to the outbox
    audit_subject: str = ""
    error: str | None = None
    retry_at: datetime | None = None


Decider = Callable[[CleanupJob, Mapping[str, Sequence[str]]], Awaitable[Decision]]


class CleanupJobs:
    def __init__(self, pool: asyncpg.Pool, schema: str = "indexer") -> None:
        self._pool = pool
        self._s = schema

    async def schedule(
        self,
        operation_id: str,
        collection_id: str,
        owner_id: str,
        names: Sequence[str],
        not_before: datetime,
    ) -> None:
        """One job per name; a job already there (a step run again) is kept as is."""
        if not names:
            return
        await self._pool.execute(
            f"""INSERT INTO {self._s}.cleanup_jobs
                    (operation_id, collection_name, collection_id, owner_id, not_before)
                SELECT $1, name, $2, $3, $4 FROM unnest($5::text[]) AS name
                ON CONFLICT (operation_id, collection_name) DO NOTHING""",
            uuid.UUID(operation_id),
            uuid.UUID(collection_id),
            owner_id,
            not_before,
            list(dict.fromkeys(names)),
        )

    async def jobs_of(self, operation_id: str) -> list[CleanupJob]:
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.cleanup_jobs WHERE operation_id = $1
                ORDER BY collection_name""",
            uuid.UUID(operation_id),
        )
        return [_job_from(row) for row in rows]

    async def take_due(self, now: datetime, decide: Decider) -> Decision | None:
        """Judge the next due job with ``decide`` and record what it did; None
        when no job is due (or every due one is being judged elsewhere)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT * FROM {self._s}.cleanup_jobs
                    WHERE status = 'PENDING' AND not_before <= $1
                    ORDER BY not_before, collection_name
                    LIMIT 1 FOR UPDATE SKIP LOCKED""",
                now,
            )
            if row is None:
                return None
            job = _job_from(row)
            decision = await decide(job, await self._references(conn))
            await self._record(conn, job, decision, now)
            if decision.audit is not None:
                await enqueue_event(conn, self._s, decision.audit_subject, decision.audit)
            return decision

    async def _references(self, conn: asyncpg.Connection) -> dict[str, list[str]]:
        """Every physical collection a collection copy points at (live or
        staging), and the staging collection of every reindex still running →
        what points at it. Read under the job's transaction."""
        rows = await conn.fetch(
            f"""SELECT collection_id, physical_collection AS name, 'live' AS role
                FROM {self._s}.collections
                UNION ALL
                SELECT collection_id, staging_collection, 'staging'
                FROM {self._s}.collections WHERE staging_collection IS NOT NULL
                UNION ALL
                SELECT s.collection_id, s.staging_collection, 'staging'
                FROM {self._s}.reindex_runs AS s
                JOIN {self._s}.operation_runs AS r USING (operation_id)
                WHERE s.staging_deleted_at IS NULL AND r.outcome IS NULL"""
        )
        found: defaultdict[str, list[str]] = defaultdict(list)
        for row in rows:
            reference = f"{row['role']}:{row['collection_id']}"
            if reference not in found[row["name"]]:
                found[row["name"]].append(reference)
        return dict(found)

    async def _record(
        self, conn: asyncpg.Connection, job: CleanupJob, decision: Decision, now: datetime
    ) -> None:
        verdict = decision.verdict
        if verdict is None:  # the attempt failed: same status, tried again later
            await conn.execute(
                f"""UPDATE {self._s}.cleanup_jobs SET attempts = attempts + 1,
                        last_error = $3, not_before = $4, checked_at = $5
                    WHERE operation_id = $1 AND collection_name = $2""",
                uuid.UUID(job.operation_id),
                job.collection_name,
                (decision.error or "")[:1000],
                decision.retry_at or now,
                now,
            )
            return
        final = verdict.status is not JobStatus.PENDING
        await conn.execute(
            f"""UPDATE {self._s}.cleanup_jobs SET status = $3, reason = $4,
                    checks = $5::jsonb, attempts = attempts + 1, last_error = NULL,
                    not_before = $6, checked_at = $7, finished_at = $8
                WHERE operation_id = $1 AND collection_name = $2""",
            uuid.UUID(job.operation_id),
            job.collection_name,
            str(verdict.status),
            verdict.reason.value,
            json.dumps(verdict.checks),
            verdict.retry_at or job.not_before,
            now,
            now if final else None,
        )


def _job_from(row: asyncpg.Record) -> CleanupJob:
    return CleanupJob(
        operation_id=str(row["operation_id"]),
        collection_name=row["collection_name"],
        collection_id=str(row["collection_id"]),
        owner_id=row["owner_id"],
        not_before=row["not_before"],
        status=JobStatus(row["status"]),
        reason=row["reason"],
        checks=json.loads(row["checks"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        checked_at=row["checked_at"],
        finished_at=row["finished_at"],
    )

"""The indexer's record of the operations it runs (migration 0002).

A command is delivered at least once; this is what makes the second delivery
resume instead of starting over: the run row (the collection's figures before
the first step; the outcome, recorded with the exact event that announces it
and the figures after it before it is announced; when that announcing was
done), each completed step with its checkpoint and the exact ``StepCompleted``
it announced, and the cancels heard. Each method is one statement, so one
transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from indexer.domain.operation_plan import CollectionFigures


class Outcome(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class RunRecord:
    operation_id: str
    collection_id: str
    operation_type: str
    before: CollectionFigures
    outcome: Outcome | None
    ending: bytes | None = None  # the serialised outcome event; None: none is announced
    after: CollectionFigures | None = None  # the collection's figures at the outcome
    finished: bool = False  # the outcome was announced and its usage published

    @property
    def ended(self) -> bool:
        return self.outcome is not None


@dataclass(frozen=True)
class RecordedStep:
    step: str
    step_index: int
    checkpoint: dict[str, Any]
    step_completed: bytes  # the serialised StepCompleted payload, announced verbatim


class OperationJournal:
    def __init__(self, pool: asyncpg.Pool, schema: str = "indexer") -> None:
        self._pool = pool
        self._s = schema

    # --- runs ------------------------------------------------------------------------

    async def begin_run(
        self, operation_id: str, collection_id: str, operation_type: str, before: CollectionFigures
    ) -> RunRecord:
        """The run of this operation: created with ``before`` on the first delivery,
        as first recorded on every later one."""
        row = await self._pool.fetchrow(
            f"""WITH inserted AS (
                    INSERT INTO {self._s}.operation_runs (operation_id, collection_id,
                        operation_type, documents_before, vectors_before, bytes_before)
                    VALUES ($1, $2, $3, $4, $5, $6)
                    ON CONFLICT (operation_id) DO NOTHING RETURNING *)
                SELECT * FROM inserted
                UNION ALL
                SELECT * FROM {self._s}.operation_runs WHERE operation_id = $1""",
            uuid.UUID(operation_id),
            uuid.UUID(collection_id),
            operation_type,
            before.documents,
            before.vectors,
            before.bytes,
        )
        if row is None:  # a concurrent first insert, invisible to this statement's snapshot
            row = await self._pool.fetchrow(
                f"SELECT * FROM {self._s}.operation_runs WHERE operation_id = $1",
                uuid.UUID(operation_id),
            )
        return _run_from(row)

    async def run(self, operation_id: str) -> RunRecord | None:
        """The run of this operation, if a delivery began one."""
        row = await self._pool.fetchrow(
            f"SELECT * FROM {self._s}.operation_runs WHERE operation_id = $1",
            uuid.UUID(operation_id),
        )
        return _run_from(row) if row is not None else None

    async def record_ending(
        self,
        operation_id: str,
        outcome: Outcome,
        ending: bytes | None,
        after: CollectionFigures,
    ) -> RunRecord:
        """Record how the run ended, before it is announced; the first ending
        recorded stays (two deliveries racing) and is returned."""
        row = await self._pool.fetchrow(
            f"""WITH ended AS (
                    UPDATE {self._s}.operation_runs SET outcome = $2, ending = $3,
                        documents_after = $4, vectors_after = $5, bytes_after = $6
                    WHERE operation_id = $1 AND outcome IS NULL RETURNING *)
                SELECT * FROM ended
                UNION ALL
                SELECT * FROM {self._s}.operation_runs
                WHERE operation_id = $1 AND NOT EXISTS (SELECT 1 FROM ended)""",
            uuid.UUID(operation_id),
            str(outcome),
            ending,
            after.documents,
            after.vectors,
            after.bytes,
        )
        return _run_from(row)

    async def finish_run(self, operation_id: str) -> None:
        """The recorded ending was announced: a later delivery has nothing to do."""
        await self._pool.execute(
            f"""UPDATE {self._s}.operation_runs SET ended_at = coalesce(ended_at, now())
                WHERE operation_id = $1 AND outcome IS NOT NULL""",
            uuid.UUID(operation_id),
        )

    # --- steps -----------------------------------------------------------------------

    async def completed_steps(self, operation_id: str) -> dict[str, RecordedStep]:
        rows = await self._pool.fetch(
            f"""SELECT * FROM {self._s}.operation_steps WHERE operation_id = $1
                ORDER BY step_index""",
            uuid.UUID(operation_id),
        )
        return {row["step"]: _step_from(row) for row in rows}

    async def record_step(
        self,
        operation_id: str,
        step: str,
        step_index: int,
        checkpoint: Mapping[str, Any],
        step_completed: bytes,
    ) -> RecordedStep:
        """Record a completed step. Should it be recorded already (two deliveries
        racing), the first record wins and is returned: one checkpoint per step."""
        row = await self._pool.fetchrow(
            f"""WITH inserted AS (
                    INSERT INTO {self._s}.operation_steps (operation_id, step, step_index,
                        checkpoint, step_completed)
                    VALUES ($1, $2, $3, $4::jsonb, $5)
                    ON CONFLICT (operation_id, step) DO NOTHING RETURNING *)
                SELECT * FROM inserted
                UNION ALL
                SELECT * FROM {self._s}.operation_steps WHERE operation_id = $1 AND step = $2""",
            uuid.UUID(operation_id),
            step,
            step_index,
            json.dumps(dict(checkpoint)),
            step_completed,
        )
        if row is None:  # a concurrent first insert, invisible to this statement's snapshot
            row = await self._pool.fetchrow(
                f"""SELECT * FROM {self._s}.operation_steps
                    WHERE operation_id = $1 AND step = $2""",
                uuid.UUID(operation_id),
                step,
            )
        return _step_from(row)

    # --- cancels ---------------------------------------------------------------------

    async def record_cancel(self, operation_id: str, collection_id: str, reason: str) -> bool:
        """Remember a cancel; True the first time it is heard."""
        done = await self._pool.execute(
            f"""INSERT INTO {self._s}.cancelled_operations (operation_id, collection_id, reason)
                VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
            uuid.UUID(operation_id),
            _uuid_or_none(collection_id),
            reason[:1000],
        )
        return done == "INSERT 0 1"

    async def is_cancelled(self, operation_id: str) -> bool:
        found = await self._pool.fetchval(
            f"SELECT true FROM {self._s}.cancelled_operations WHERE operation_id = $1",
            uuid.UUID(operation_id),
        )
        return bool(found)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


def _run_from(row: asyncpg.Record) -> RunRecord:
    after = None
    if row["documents_after"] is not None:
        after = CollectionFigures(row["documents_after"], row["vectors_after"], row["bytes_after"])
    return RunRecord(
        operation_id=str(row["operation_id"]),
        collection_id=str(row["collection_id"]),
        operation_type=row["operation_type"],
        before=CollectionFigures(
            row["documents_before"], row["vectors_before"], row["bytes_before"]
        ),
        outcome=Outcome(row["outcome"]) if row["outcome"] else None,
        ending=bytes(row["ending"]) if row["ending"] is not None else None,
        after=after,
        finished=row["ended_at"] is not None,
    )


def _step_from(row: asyncpg.Record) -> RecordedStep:
    return RecordedStep(
        step=row["step"],
        step_index=row["step_index"],
        checkpoint=json.loads(row["checkpoint"]),
        step_completed=bytes(row["step_completed"]),
    )

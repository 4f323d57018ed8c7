"""Polls Postgres for what no single code path knows: how many operations are
active, how long the quietest one has been silent, and how many collections
are in each status. Read by one query each interval, whatever the number of
orchestrator replicas (each reports the same figures; dashboards take ``max``)."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from kit.db.outage import POSTGRES_OUTAGE
from kit.logs import get_logger
from kit.operation_protocol import OperationType
from orchestrator import metrics
from orchestrator.domain.operations import CollectionStatus

log = get_logger(__name__)

ACTIVE_STATUSES = ("PENDING", "PROCESSING")


class StateGauges:
    def __init__(self, pool: asyncpg.Pool, schema: str, interval_seconds: float = 5.0) -> None:
        self._pool = pool
        self._schema = schema
        self._interval = interval_seconds

    async def observe_once(self) -> None:
        async with self._pool.acquire() as conn:
            collections = await conn.fetch(
                f"SELECT status, count(*) AS n FROM {self._schema}.collections GROUP BY status"
            )
            active = await conn.fetch(
                f"""SELECT type, status, count(*) AS n,
                           coalesce(extract(epoch FROM now() - min(updated_at)), 0) AS silence
                    FROM {self._schema}.operations
                    WHERE status = ANY($1::text[]) GROUP BY type, status""",
                list(ACTIVE_STATUSES),
            )
        by_status = {row["status"]: row["n"] for row in collections}
        for status in CollectionStatus:
            metrics.COLLECTIONS.labels(status.value).set(by_status.get(status.value, 0))
        counts = {(row["type"], row["status"]): row["n"] for row in active}
        for type_ in OperationType:
            for status in ACTIVE_STATUSES:
                metrics.OPERATIONS_ACTIVE.labels(type_.value, status).set(
                    counts.get((type_.value, status), 0)
                )
        metrics.LONGEST_SILENCE.set(max((float(row["silence"]) for row in active), default=0.0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.observe_once()
            except POSTGRES_OUTAGE as error:
                log.warning("orchestrator.state_gauges_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)

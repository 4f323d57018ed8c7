"""Polls each owner's usage and effective quota into the quota gauges, so
the tenants dashboard and the quota-near-limit alert see every owner, not only
those who asked for something lately."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from kit.db.outage import POSTGRES_OUTAGE
from kit.logs import get_logger
from resources import metrics
from resources.adapters.resources_repository import ResourcesRepository

log = get_logger(__name__)


class QuotaGauges:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        repository: ResourcesRepository,
        interval_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._repository = repository
        self._interval = interval_seconds

    async def observe_once(self) -> None:
        owners = await self._pool.fetch(
            f"""SELECT owner_id FROM {self._schema}.usage
                UNION SELECT owner_id FROM {self._schema}.quotas"""
        )
        for row in owners:
            owner = row["owner_id"]
            quota = await self._repository.quota(owner)
            usage, _held = await self._repository.usage(owner)
            for resource, limit_name in metrics.LIMITED_USAGE.items():
                metrics.QUOTA_USAGE.labels(owner, resource).set(getattr(usage, resource))
                limit = quota.limit(limit_name)
                if limit is None:
                    with contextlib.suppress(KeyError):
                        metrics.QUOTA_LIMIT.remove(owner, resource)
                else:
                    metrics.QUOTA_LIMIT.labels(owner, resource).set(limit)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.observe_once()
            except POSTGRES_OUTAGE as error:
                log.warning("resources.quota_gauges_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)

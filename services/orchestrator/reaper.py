"""The stuck-operation reaper: fail, as STUCK, every running operation its worker
has said nothing about for too long.

Any event from the worker (a step, a progress report) refreshes the operation's
``updated_at``; one silent for ``stuck_after`` is failed through the repository's
``apply``, so the failure mapping holds (no collection is left PROCESSING), and
the same transaction sends a cancel command in case the worker is only slow.
A PENDING operation nobody picked up counts too: the outbox guarantees its
command was published, so no indexer is running it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kit.db.outage import POSTGRES_UNAVAILABLE
from kit.errors import NotFound
from kit.logs import get_logger
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.cancel_outbox import cancel_on_failure
from orchestrator.domain import step_events

log = get_logger(__name__)


class Reaper:
    def __init__(
        self,
        repository: OrchestratorRepository,
        stuck_after: timedelta,
        interval_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repository = repository
        self._stuck_after = stuck_after
        self._interval = interval_seconds
        self._clock = clock

    async def reap_once(self) -> list[str]:
        """One round; returns the ids of the operations it failed."""
        now = self._clock()
        cutoff = now - self._stuck_after
        reaped: list[str] = []
        for stuck in await self._repository.stuck_operations(cutoff):
            try:
                record = await self._repository.get_operation(stuck.id, None)
                # Staleness is checked again under the row lock (``reap``): an
                # event may have arrived since the scan.
                after, events = await self._repository.apply(
                    stuck.id, step_events.reap(cutoff, now), cancel_on_failure(record.owner_id)
                )
            except NotFound:
                continue  # gone since the scan
            except POSTGRES_UNAVAILABLE:
                raise  # the round ends; the next one tries again
            except Exception:  # noqa: BLE001 - one bad row must not shield the others
                log.exception("orchestrator.reap_failed", operation_id=stuck.id)
                continue
            if events:
                reaped.append(stuck.id)
                log.warning(
                    "orchestrator.operation_reaped",
                    operation_id=stuck.id,
                    collection_id=stuck.collection_id,
                    was=stuck.status.value,
                    step=stuck.current_step,
                    message=after.operation.error and after.operation.error.message,
                )
        return reaped

    async def run(self, stop: asyncio.Event) -> None:
        """Reap every interval until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.reap_once()
            except POSTGRES_UNAVAILABLE as error:
                log.warning("orchestrator.reaper_retry", error=str(error))
            except Exception:  # noqa: BLE001 - a bug in one round must not end reaping for good
                log.exception("orchestrator.reaper_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)

"""Operations, the application side: read them in the caller's scope, cancel
them through the domain, and follow them as they change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from datetime import datetime

from kit.auth import Principal
from kit.sanitise import sanitise
from orchestrator import commands
from orchestrator.adapters.records import OperationRecord
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.application import Clock, owner_scope, utc_now
from orchestrator.domain.fields import require
from orchestrator.domain.operations import OperationStatus, OperationType
from orchestrator.watch import OperationWatcher

DEFAULT_CANCEL_REASON = "cancelled on request"


class OperationApp:
    def __init__(
        self,
        repository: OrchestratorRepository,
        watcher: OperationWatcher,
        *,
        poll_seconds: float,
        min_interval_seconds: float = 0.0,
        clock: Clock = utc_now,
    ) -> None:
        self._repo = repository
        self._watcher = watcher
        self._poll_seconds = poll_seconds
        self._min_interval = min_interval_seconds
        self._now = clock

    async def get(self, principal: Principal, operation_id: str) -> OperationRecord:
        require(operation_id, "operation_id")
        return await self._repo.get_operation(operation_id, owner_scope(principal))

    async def list(
        self,
        principal: Principal,
        page_size: int,
        page_token: str,
        *,
        collection_id: str = "",
        types: Collection[OperationType] = (),
        statuses: Collection[OperationStatus] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> tuple[list[OperationRecord], str]:
        return await self._repo.list_operations(
            owner_scope(principal),
            page_size,
            page_token,
            collection_id=collection_id.strip() or None,
            types=types,
            statuses=statuses,
            created_after=created_after,
            created_before=created_before,
        )

    async def cancel(self, principal: Principal, operation_id: str, reason: str) -> OperationRecord:
        """End the operation CANCELLED now (the repository gives the collection
        the status the failure mapping says) and tell the indexers to stop it.
        Cancelling a CANCELLED operation changes nothing and sends nothing, so
        a retried request is harmless; a finished one is OPERATION_NOT_CANCELLABLE
        (from the domain)."""
        require(operation_id, "operation_id")
        record = await self._repo.get_operation(operation_id, owner_scope(principal))
        now = self._now()
        why = sanitise(reason.strip()) or DEFAULT_CANCEL_REASON
        cancelled, _ = await self._repo.apply(
            record.id,
            lambda op: op.cancel(now),
            commands.cancel_rows(record.owner_id, why, principal),
        )
        return cancelled

    async def watch(
        self, principal: Principal, operation_id: str
    ) -> AsyncIterator[OperationRecord]:
        """The operation now, then once per change, ending after a terminal
        state. Changes closer together than the minimum interval are merged
        into one message (the latest state)."""
        require(operation_id, "operation_id")
        scope = owner_scope(principal)
        loop = asyncio.get_running_loop()
        # Subscribed before the first read, so no change can slip in between.
        with self._watcher.subscribe(operation_id) as changed:
            sent: OperationRecord | None = None
            next_send = 0.0
            while True:
                changed.clear()
                record = await self._repo.get_operation(operation_id, scope)
                if record != sent:
                    yield record
                    sent = record
                    if record.operation.finished:
                        return
                    next_send = loop.time() + self._min_interval
                await _first_of(changed, self._poll_seconds)
                pause = next_send - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)  # rate limit, not synchronisation

    async def wait(
        self, principal: Principal, operation_id: str, timeout_seconds: float
    ) -> OperationRecord:
        """The operation once it is done, or as it is when the timeout runs out."""
        require(operation_id, "operation_id")
        scope = owner_scope(principal)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_seconds, 0.0)
        with self._watcher.subscribe(operation_id) as changed:
            while True:
                changed.clear()
                record = await self._repo.get_operation(operation_id, scope)
                left = deadline - loop.time()
                if record.operation.finished or left <= 0:
                    return record
                await _first_of(changed, min(self._poll_seconds, left))


async def _first_of(event: asyncio.Event, seconds: float) -> None:
    """Return when ``event`` is set or after ``seconds``, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)

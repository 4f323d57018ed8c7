"""The orchestrator's Postgres repository: collections, sources, operations and
idempotency keys, each change with its outbox rows in one transaction.

Rows map to the domain's ``Operation`` (wrapped in ``OperationRecord`` with the
fields only the API needs) and to ``CollectionRecord``, the persistence view of
a collection. State changes go through the domain: ``start_operation`` asks
``can_start`` under the collection's row lock, and ``apply`` runs a pure
transition and derives the collection's status with ``status_after``, so the
failure mapping holds on every path (step events, cancel, reaper).

Lock order is always collection row, then operation row, so two callers never
deadlock. Another owner's rows answer NOT_FOUND: existence must not leak.

The work is split by noun, one mixin each, over ``SharedRows`` (pool, schema,
row lock, reads inside a transaction, outbox and change notice):
``IdempotencyKeys``, ``CollectionRows`` (collections and sources),
``OperationRows``, ``OperationTransitions`` (``apply``), ``OperationStarts``
and ``ReindexSwitch`` (``complete_reindex``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from kit.logs import get_logger
from orchestrator import metrics
from orchestrator.adapters.operation_starts import OperationStarts
from orchestrator.adapters.records import OperationRecord, ResourceFigures
from orchestrator.adapters.reindex_switch import ReindexSwitch
from orchestrator.adapters.shared_rows import OutboxRows, Transition
from orchestrator.domain.operations import DomainEvent

__all__ = ["OrchestratorRepository", "OutboxRows", "Transition"]

log = get_logger(__name__)

FinishedHook = Callable[[OperationRecord], Awaitable[None]]


class OrchestratorRepository(OperationStarts, ReindexSwitch):
    """What the application layer uses: ``OrchestratorRepository(pool, schema)``.

    ``on_finished`` is called after a transition that ended an operation has
    committed, whichever path ended it (step event, cancel, reaper, dead
    letter): quota admission gives the operation's reservation back there.
    It runs after the commit, so a crash in between loses the call; the
    reservation then expires on its own.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str = "orchestrator",
        on_finished: FinishedHook | None = None,
    ) -> None:
        super().__init__(pool, schema)
        self._on_finished = on_finished

    async def apply(
        self,
        operation_id: str,
        transition: Transition,
        outbox_for: Callable[[list[DomainEvent]], OutboxRows],
        *,
        resources: ResourceFigures | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> tuple[OperationRecord, list[DomainEvent]]:
        record, events = await super().apply(
            operation_id, transition, outbox_for, resources=resources, result=result
        )
        # A finished operation never changes again: events now mean this call ended it.
        if events and record.operation.finished:
            metrics.count_operation_end(record.operation)
        if events and record.operation.finished and self._on_finished is not None:
            try:
                await self._on_finished(record)
            except Exception:  # noqa: BLE001 - the transition has committed; never undo it
                log.exception("orchestrator.on_finished_failed", operation_id=record.id)
        return record, events

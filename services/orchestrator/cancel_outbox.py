"""Tell the worker to stop an operation the orchestrator failed on its own.

When the reaper or a dead letter fails an operation, an indexer may still be
working on it (slow rather than dead, or retrying a command). The failure's
transaction therefore also writes a ``CancelOperationCommand`` to the outbox:
every indexer instance hears it, and the one running the operation stops.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.commands import OutboxRow, cancel_command
from orchestrator.domain.operations import DomainEvent, OperationFailed


def cancel_on_failure(owner_id: str) -> Callable[[list[DomainEvent]], list[OutboxRow]]:
    """An ``outbox_for`` for ``OrchestratorRepository.apply``: one cancel command
    per operation the transition failed, none when it changed nothing."""

    def rows(events: list[DomainEvent]) -> list[OutboxRow]:
        return [
            cancel_command(
                event.operation_id,
                event.collection_id,
                owner_id,
                f"{event.error.type.value}: {event.error.message}",
                None,  # background work: no user asked for it
            )
            for event in events
            if isinstance(event, OperationFailed)
        ]

    return rows

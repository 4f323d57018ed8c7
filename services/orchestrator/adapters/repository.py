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

from orchestrator.adapters.operation_starts import OperationStarts
from orchestrator.adapters.reindex_switch import ReindexSwitch
from orchestrator.adapters.shared_rows import OutboxRows, Transition

__all__ = ["OrchestratorRepository", "OutboxRows", "Transition"]


class OrchestratorRepository(OperationStarts, ReindexSwitch):
    """What the application layer uses: ``OrchestratorRepository(pool, schema)``."""

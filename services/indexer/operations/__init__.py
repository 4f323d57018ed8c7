"""The steps of each operation type, in the order protos/README.md lists them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from indexer.adapters.operation_journal import Outcome
from indexer.operations import reindex
from indexer.operations.base import OperationOrder, OperationServices, Step
from indexer.operations.delete import DELETE_STEPS
from indexer.operations.ingestion import APPEND_STEPS, INDEX_STEPS
from indexer.operations.remove_source import REMOVE_SOURCE_STEPS
from kit.operation_protocol import OperationType

_STEPS: dict[OperationType, Sequence[tuple[str, Step]]] = {
    OperationType.INDEX: INDEX_STEPS,
    OperationType.APPEND: APPEND_STEPS,
    OperationType.REMOVE_SOURCE: REMOVE_SOURCE_STEPS,
    OperationType.REINDEX: reindex.REINDEX_STEPS,
    OperationType.DELETE: DELETE_STEPS,
}


def steps_for(operation_type: OperationType) -> Sequence[tuple[str, Step]]:
    """The (name, step) pairs of ``operation_type``; KeyError for one the indexer
    cannot run."""
    return _STEPS[operation_type]


def runs(operation_type: OperationType) -> bool:
    return operation_type in _STEPS


def verdict(
    operation_type: OperationType, step: str, checkpoint: Mapping[str, Any]
) -> Exception | None:
    """The error that ends the operation once ``step`` is announced with this
    checkpoint (a REINDEX whose validation did not pass); None to go on."""
    if operation_type is OperationType.REINDEX:
        return reindex.verdict(step, checkpoint)
    return None


async def wind_up(
    services: OperationServices, order: OperationOrder, step: str | None, outcome: Outcome
) -> bool:
    """Undo what an ending operation leaves of no use: a REINDEX that failed or
    was cancelled before its switch deletes its staging collection (True when
    it did). Never raises."""
    if order.type is OperationType.REINDEX:
        return await reindex.wind_up(services, order, step, outcome)
    return False

"""The steps of each operation type, in the order protos/README.md lists them."""

from __future__ import annotations

from collections.abc import Sequence

from indexer.domain.operation_plan import OperationType
from indexer.operations.base import Step
from indexer.operations.delete import DELETE_STEPS
from indexer.operations.ingestion import APPEND_STEPS, INDEX_STEPS
from indexer.operations.remove_source import REMOVE_SOURCE_STEPS

_STEPS: dict[OperationType, Sequence[tuple[str, Step]]] = {
    OperationType.INDEX: INDEX_STEPS,
    OperationType.APPEND: APPEND_STEPS,
    OperationType.REMOVE_SOURCE: REMOVE_SOURCE_STEPS,
    OperationType.DELETE: DELETE_STEPS,
}


def steps_for(operation_type: OperationType) -> Sequence[tuple[str, Step]]:
    """The (name, step) pairs of ``operation_type``; KeyError for one the indexer
    cannot run (REINDEX, for now)."""
    return _STEPS[operation_type]


def runs(operation_type: OperationType) -> bool:
    return operation_type in _STEPS

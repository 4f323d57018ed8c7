"""Collection rules: the status each operation outcome leaves, who may start an
operation, and the reindex switch's fencing (cleanup safety lives in
``kit.cleanup_rules``, shared with the indexer). Pure functions."""

from __future__ import annotations

from enum import Enum
from typing import Any

from kit.errors import FailedPrecondition, PreconditionViolation

from .operations import (
    REINDEX_SWITCH,
    REINDEX_VALIDATION,
    CollectionStatus,
    Operation,
    OperationStatus,
    OperationType,
)


class Gone(Enum):
    """What a completed DELETE leaves: no collection at all. A marker rather
    than a status, so a caller cannot persist it by mistake: it must branch
    (``if after is GONE: delete the row``)."""

    GONE = "GONE"


GONE = Gone.GONE

# The design's failure mapping: what a collection can still serve after each
# kind of operation failed (or was cancelled after it changed something).
FAILURE_STATUS: dict[OperationType, CollectionStatus] = {
    OperationType.INDEX: CollectionStatus.ERROR,  # nothing complete is live
    OperationType.APPEND: CollectionStatus.PARTIALLY_READY,  # what is indexed serves
    OperationType.REMOVE_SOURCE: CollectionStatus.PARTIALLY_READY,
    OperationType.REINDEX: CollectionStatus.DEGRADED,  # the old collection still serves
    OperationType.DELETE: CollectionStatus.ERROR,  # half-dropped: serve nothing
}

_NOT_SEARCHABLE = frozenset(
    {CollectionStatus.PENDING, CollectionStatus.ERROR, CollectionStatus.DELETING}
)
# A cancel that changed nothing restores the earlier status, but never one that
# would leave the collection looking busy with no operation running.
_NOT_RESTORABLE = frozenset({CollectionStatus.PROCESSING, CollectionStatus.DELETING})


def status_after(operation: Operation) -> CollectionStatus | Gone:
    """The collection's status given its (latest) operation's state.

    Running: DELETE → DELETING; INDEX → PENDING (nothing is live yet, so it must
    stay out of search); any other → PROCESSING (it keeps serving). Terminal:
    never PROCESSING. COMPLETED → READY, or GONE after a DELETE. FAILED → the
    failure mapping. CANCELLED → the earlier status if nothing was changed,
    else the failure mapping.
    """
    kind = operation.type
    status = operation.status
    if not status.terminal:
        if kind is OperationType.DELETE:
            return CollectionStatus.DELETING
        if kind is OperationType.INDEX:
            return CollectionStatus.PENDING
        return CollectionStatus.PROCESSING
    if status is OperationStatus.COMPLETED:
        return GONE if kind is OperationType.DELETE else CollectionStatus.READY
    if status is OperationStatus.CANCELLED and not operation.changed_anything:
        before = operation.collection_status_before
        if before is None and kind is OperationType.INDEX:
            return CollectionStatus.PENDING  # created, first INDEX never ran
        if before is not None and before not in _NOT_RESTORABLE:
            return before
    return FAILURE_STATUS[kind]


def is_searchable(status: CollectionStatus) -> bool:
    """Search serves every collection with something live, whatever runs on it."""
    return status not in _NOT_SEARCHABLE


def can_start(
    collection_status: CollectionStatus,
    active_operation_id: str | None,
    collection_id: str = "",
) -> None:
    """Raise FailedPrecondition unless a new operation may start: one active
    operation per collection, and nothing new on a collection being deleted.
    The caller holds the collection's row lock while it asks."""
    if collection_status is CollectionStatus.DELETING:
        raise FailedPrecondition(
            f"collection {collection_id} is being deleted",
            reason="COLLECTION_DELETING",
            metadata={"collection_id": collection_id},
        )
    if active_operation_id:
        raise FailedPrecondition(
            f"operation {active_operation_id} is already running on collection {collection_id}",
            reason="OPERATION_IN_PROGRESS",
            metadata={"collection_id": collection_id, "active_operation_id": active_operation_id},
            precondition_violations=[
                PreconditionViolation(
                    type="OPERATION_IN_PROGRESS",
                    subject=f"operations/{active_operation_id}",
                    description="one operation at a time per collection; wait or cancel it",
                )
            ],
        )


# --- reindex switch fencing ------------------------------------------------

# Keys of the checkpoints the switch relies on (validation's result, and what
# the switch transaction did, so a repeated call can be recognised).
VALIDATION_PASSED_KEY = "passed"
SWITCH_FROM_GENERATION_KEY = "from_generation"
SWITCH_TO_GENERATION_KEY = "to_generation"
SWITCH_PHYSICAL_KEY = "physical_collection"


def switch_checkpoint(from_generation: int, physical_collection: str) -> dict[str, Any]:
    """The checkpoint the switch transaction records, in the shape check_switch reads."""
    return {
        SWITCH_FROM_GENERATION_KEY: from_generation,
        SWITCH_TO_GENERATION_KEY: from_generation + 1,
        SWITCH_PHYSICAL_KEY: physical_collection,
    }


def _refuse(message: str, reason: str, **metadata: object) -> FailedPrecondition:
    return FailedPrecondition(
        message, reason=reason, metadata={k: str(v) for k, v in metadata.items()}
    )


def check_switch(
    operation: Operation,
    collection_generation: int,
    expected_generation: int,
    staging_name: str,
    recorded_staging: str | None,
    validation_passed: bool = True,
) -> bool:
    """Fence a CompleteReindex call. Returns True when it repeats the switch
    already done (the caller returns the first result and switches nothing),
    False when the switch may proceed; raises FailedPrecondition otherwise.

    A repeat is recognised before the generation check: the first call bumped
    the generation, so a retry necessarily carries the old one.
    """
    op_id = operation.id
    if operation.type is not OperationType.REINDEX:
        raise _refuse(
            f"operation {op_id} is not a REINDEX", "VALIDATION_NOT_PASSED", operation_id=op_id
        )
    done = operation.checkpoint(REINDEX_SWITCH)
    if done is not None:
        switched_to = done.get(SWITCH_PHYSICAL_KEY, recorded_staging)
        if staging_name != switched_to:
            raise _refuse(
                f"operation {op_id} switched to another staging collection",
                "STAGING_MISMATCH",
                operation_id=op_id,
            )
        if done.get(SWITCH_FROM_GENERATION_KEY) == expected_generation:
            return True
        raise _refuse(
            f"generation {expected_generation} is stale",
            "STALE_GENERATION",
            collection_id=operation.collection_id,
            expected_generation=expected_generation,
            actual_generation=collection_generation,
        )
    if operation.status in (OperationStatus.CANCELLED, OperationStatus.FAILED):
        raise _refuse(
            f"operation {op_id} is {operation.status.value.lower()}",
            "OPERATION_NOT_ACTIVE",
            operation_id=op_id,
            status=operation.status.value,
        )
    if expected_generation != collection_generation:
        raise _refuse(
            f"generation {expected_generation} is stale (collection is at {collection_generation})",
            "STALE_GENERATION",
            collection_id=operation.collection_id,
            expected_generation=expected_generation,
            actual_generation=collection_generation,
        )
    if not recorded_staging or staging_name != recorded_staging:
        raise _refuse(
            f"staging collection differs from the one recorded for operation {op_id}",
            "STAGING_MISMATCH",
            operation_id=op_id,
        )
    validation = operation.checkpoint(REINDEX_VALIDATION) or {}
    if not validation_passed or validation.get(VALIDATION_PASSED_KEY) is not True:
        raise _refuse(
            f"operation {op_id} has not passed validation",
            "VALIDATION_NOT_PASSED",
            operation_id=op_id,
        )
    return False

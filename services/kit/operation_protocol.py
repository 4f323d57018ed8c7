"""The vocabulary the orchestrator and the indexer share about operations: the
types, the steps of each type in order (protos/README.md, table "Operations"),
which step first changes what a collection stores, and the error types of a
failed operation. Both services' domains build on it; it does no I/O."""

from __future__ import annotations

from enum import StrEnum


class OperationType(StrEnum):
    INDEX = "INDEX"
    APPEND = "APPEND"
    REMOVE_SOURCE = "REMOVE_SOURCE"
    REINDEX = "REINDEX"
    DELETE = "DELETE"


# protos/README.md, table "Operations".
STEPS: dict[OperationType, tuple[str, ...]] = {
    OperationType.INDEX: ("create_collection", "ingest", "finalize"),
    OperationType.APPEND: ("scan", "ingest", "finalize"),
    OperationType.REMOVE_SOURCE: ("remove_points", "remove_documents", "finalize"),
    OperationType.REINDEX: (
        "preflight",
        "staging",
        "reprocessing",
        "validation",
        "switch",
        "cleanup",
    ),
    OperationType.DELETE: ("remove_alias", "drop_collections", "finalize"),
}

# The first step whose work may change what is stored: a cancel before it
# changed nothing. APPEND's scan only reads the directory. A REINDEX builds into
# staging and changes the live collection only at its switch's completion, which
# the orchestrator's state machine handles itself.
_FIRST_CHANGING_STEP: dict[OperationType, str] = {
    OperationType.INDEX: "create_collection",
    OperationType.APPEND: "ingest",
    OperationType.REMOVE_SOURCE: "remove_points",
    OperationType.DELETE: "remove_alias",
}


def changes_collection(operation_type: OperationType, step: str) -> bool:
    """True when running ``step`` (or any later one) may change what is stored."""
    first = _FIRST_CHANGING_STEP.get(operation_type)
    steps = STEPS[operation_type]
    return first is not None and steps.index(step) >= steps.index(first)


class ErrorType(StrEnum):
    """``OperationError.type`` values (protos/README.md, "Error types of failed operations")."""

    HANDLER_ERROR = "HANDLER_ERROR"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    STUCK = "STUCK"
    CANCELLED = "CANCELLED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    INVALID_SOURCE_PATH = "INVALID_SOURCE_PATH"
    SOURCE_UNREADABLE = "SOURCE_UNREADABLE"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    EMBEDDER_UNAVAILABLE = "EMBEDDER_UNAVAILABLE"
    VECTOR_STORE_ERROR = "VECTOR_STORE_ERROR"
    STALE_GENERATION = "STALE_GENERATION"
    INTERNAL = "INTERNAL"

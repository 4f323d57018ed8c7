"""What the indexer's operations are made of, as plain values: the steps of each
type, when a step starts changing what the collection serves, how an error
becomes an ``OperationError.type``, the completion percentage and the usage
an ended operation changed. No I/O: the runner and the step modules ask here."""

from __future__ import annotations

from dataclasses import dataclass

from kit.operation_protocol import ErrorType, OperationType

# ErrorInfo reasons of the domain errors a step may raise → the operation's error type.
_TYPE_OF_REASON: dict[str, ErrorType] = {
    "INVALID_SOURCE_PATH": ErrorType.INVALID_SOURCE_PATH,
    "SOURCE_UNREADABLE": ErrorType.SOURCE_UNREADABLE,
    "UNKNOWN_MODEL": ErrorType.UNKNOWN_MODEL,
    "EMBEDDER_UNAVAILABLE": ErrorType.EMBEDDER_UNAVAILABLE,
    "EMBEDDER_TIMEOUT": ErrorType.EMBEDDER_UNAVAILABLE,
    "EMBEDDER_OVERLOADED": ErrorType.EMBEDDER_UNAVAILABLE,
    "QUOTA_EXCEEDED": ErrorType.QUOTA_EXCEEDED,
    "VALIDATION_FAILED": ErrorType.VALIDATION_FAILED,
    "STALE_GENERATION": ErrorType.STALE_GENERATION,
    "VECTOR_COLLECTION_NOT_FOUND": ErrorType.VECTOR_STORE_ERROR,
    "VECTOR_COLLECTION_CONFLICT": ErrorType.VECTOR_STORE_ERROR,
    "SYSTEM_COLLECTION_PROTECTED": ErrorType.VECTOR_STORE_ERROR,
}


def error_type_for(reason: str | None) -> ErrorType:
    """The error type of a domain error's reason; any other reason means the step raised."""
    return _TYPE_OF_REASON.get(reason or "", ErrorType.HANDLER_ERROR)


def percent(step_index: int, step_count: int, step_fraction: float) -> float:
    """Overall completion, 0 to 100: each step weighs the same, and the current
    one (1-based ``step_index``) counts with ``step_fraction`` of it done."""
    if step_count <= 0:
        return 0.0
    fraction = min(max(step_fraction, 0.0), 1.0)
    done = (min(max(step_index, 1), step_count) - 1 + fraction) / step_count
    return round(100.0 * done, 2)


@dataclass(frozen=True)
class CollectionFigures:
    """What a collection stores: documents, vectors and bytes."""

    documents: int = 0
    vectors: int = 0
    bytes: int = 0

    def minus(self, other: CollectionFigures) -> CollectionFigures:
        return CollectionFigures(
            self.documents - other.documents, self.vectors - other.vectors, self.bytes - other.bytes
        )

    @property
    def is_zero(self) -> bool:
        return self.documents == 0 and self.vectors == 0 and self.bytes == 0


USAGE_REASONS: dict[OperationType, str] = {
    OperationType.INDEX: "index",
    OperationType.APPEND: "append",
    OperationType.REMOVE_SOURCE: "remove_source",
    OperationType.REINDEX: "reindex_switch",
    OperationType.DELETE: "delete",
}


def collections_delta(operation_type: OperationType, completed: bool) -> int:
    """How an ended operation changes the owner's count of collections.

    A collection exists from its INDEX on, whatever that INDEX's outcome (a
    failed one leaves an ERROR collection that still holds its name and maybe
    points), until a DELETE completes: +1 when an INDEX ends, -1 when a DELETE
    completes. A failed or cancelled DELETE leaves the collection there."""
    if operation_type is OperationType.INDEX:
        return 1
    if operation_type is OperationType.DELETE and completed:
        return -1
    return 0


@dataclass(frozen=True)
class UsageChange:
    """What an ended operation tells the resources service: the stored figures
    after it minus those before it, and the change in collections."""

    collections: int
    stored: CollectionFigures

    @property
    def is_zero(self) -> bool:
        return self.collections == 0 and self.stored.is_zero


def usage_change(
    operation_type: OperationType,
    completed: bool,
    before: CollectionFigures,
    after: CollectionFigures,
) -> UsageChange:
    """The usage an operation's outcome (``completed`` or not: failed, cancelled)
    changed. Figures count on every outcome: an APPEND that failed half-way or a
    cancelled REMOVE_SOURCE changed what is stored all the same."""
    return UsageChange(collections_delta(operation_type, completed), after.minus(before))


@dataclass
class OperationFigures:
    """The running counts of an operation, as its progress and resource events
    report them. ``vectors`` and ``bytes`` are written for INDEX/APPEND and
    removed or freed for REMOVE_SOURCE/DELETE (``ResourceFigures``' meaning)."""

    documents_total: int = 0
    documents_done: int = 0
    documents_failed: int = 0
    documents_skipped: int = 0
    documents_duplicate: int = 0
    vectors_written: int = 0
    vectors: int = 0
    bytes: int = 0
    step_fraction: float = 0.0  # of the current step, 0 to 1

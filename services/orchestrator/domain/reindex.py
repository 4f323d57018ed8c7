"""Blue-green REINDEX, the orchestrator's rules: which collection may be
reindexed to what, the validation thresholds in force, how a CompleteReindex
call is fenced, and what a switch records (so a repeated call can return the
first result). Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from kit.cleanup_rules import cleanup_delay
from kit.errors import FailedPrecondition, InvalidArgument

from .collections import check_switch, is_searchable
from .fields import invalid_field
from .operations import REINDEX_VALIDATION, CollectionStatus, Operation, OperationType

# --- starting a reindex ----------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """What validation must measure for the switch to happen (ValidationThresholds)."""

    point_count_tolerance: float
    min_topk_overlap: float
    max_score_drift: float
    probe_query_count: int
    top_k: int

    def overridden_by(self, requested: Thresholds) -> Thresholds:
        """These defaults with every non-zero field of ``requested`` instead;
        a request cannot ask for 0 itself (0 means "keep the default")."""
        check_thresholds(requested)
        changes = {f.name: getattr(requested, f.name) for f in fields(self)}
        return replace(self, **{name: value for name, value in changes.items() if value})


# Largest probe set and k a request may ask for: validation runs that many
# searches against both collections while the live one serves.
MAX_PROBE_QUERIES = 1000
MAX_TOP_K = 100


def check_thresholds(requested: Thresholds, field: str = "thresholds") -> None:
    """INVALID_ARGUMENT naming the first field out of range (0 is always fine)."""
    bounds: dict[str, tuple[float, float]] = {
        "point_count_tolerance": (0.0, 1.0),
        "min_topk_overlap": (0.0, 1.0),
        "max_score_drift": (0.0, float("inf")),
        "probe_query_count": (0, MAX_PROBE_QUERIES),
        "top_k": (0, MAX_TOP_K),
    }
    for name, (low, high) in bounds.items():
        value = getattr(requested, name)
        if value != value or not low <= value <= high:  # value != value: NaN
            upper = "" if high == float("inf") else f" and <= {high:g}"
            raise invalid_field(f"{field}.{name}", f"must be >= {low:g}{upper}, not {value}")


def check_reindex(
    collection_id: str,
    status: CollectionStatus,
    generation: int,
    live_config: Mapping[str, Any],
    target_config: Mapping[str, Any],
    expected_generation: int,
) -> None:
    """Whether this collection may be reindexed to ``target_config`` (both
    configs as stored: validated, complete). The caller holds the collection's
    row lock and has already asked ``can_start`` (one operation at a time)."""
    if expected_generation and expected_generation != generation:
        raise FailedPrecondition(
            f"generation {expected_generation} is stale (collection is at {generation})",
            reason="STALE_GENERATION",
            metadata={
                "collection_id": collection_id,
                "expected_generation": str(expected_generation),
                "actual_generation": str(generation),
            },
        )
    if not is_searchable(status):
        # Nothing live (never READY, or half-dropped): there is nothing to
        # re-process, and nothing to keep serving while it runs.
        raise FailedPrecondition(
            f"collection {collection_id} has nothing live to reindex ({status.value})",
            reason="COLLECTION_NOT_SEARCHABLE",
            metadata={"collection_id": collection_id, "status": status.value},
        )
    if dict(live_config) == dict(target_config):
        raise InvalidArgument(
            "the config is the live one; change the model, quantization, instruction"
            " or chunking to reindex",
            reason="CONFIG_UNCHANGED",
            metadata={"collection_id": collection_id},
        )


# --- the switch ------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchRequest:
    """A CompleteReindex call, as plain values. ``validation`` is the indexer's
    ValidationResult as JSON, kept with the operation's result."""

    operation_id: str
    collection_id: str
    expected_generation: int
    staging_collection: str
    validation_passed: bool
    vector_count: int
    document_count: int
    stored_bytes: int
    request_id: str
    validation: Mapping[str, Any]


@dataclass(frozen=True)
class Switch:
    """What a switch did: the generations, the physical collection now live,
    the ones retired and when cleanup may delete them."""

    from_generation: int
    to_generation: int
    physical_collection: str
    retired_collections: tuple[str, ...]
    cleanup_not_before: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "from_generation": self.from_generation,
            "to_generation": self.to_generation,
            "physical_collection": self.physical_collection,
            "retired_collections": list(self.retired_collections),
            "cleanup_not_before": self.cleanup_not_before.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Switch:
        return cls(
            from_generation=int(data["from_generation"]),
            to_generation=int(data["to_generation"]),
            physical_collection=str(data["physical_collection"]),
            retired_collections=tuple(data["retired_collections"]),
            cleanup_not_before=datetime.fromisoformat(data["cleanup_not_before"]),
        )


@dataclass(frozen=True)
class CleanupDelay:
    """The size-scaled wait before old collections may go (settings)."""

    base: timedelta
    per_10k_vectors: timedelta
    cap: timedelta

    def for_vectors(self, vector_count: int) -> timedelta:
        return cleanup_delay(max(vector_count, 0), self.base, self.per_10k_vectors, self.cap)


def fence_switch(
    operation: Operation,
    collection_generation: int,
    request: SwitchRequest,
    recorded_staging: str | None,
) -> bool:
    """``check_switch`` for a CompleteReindex call: True for a repeat of the
    switch already done, False when it may proceed; FailedPrecondition else.

    The indexer calls right after it published its validation checkpoint,
    which this orchestrator may not have applied yet (the staging one may be
    in flight with it). Until then the answer is VALIDATION_NOT_PASSED, which
    the indexer retries, and not a STAGING_MISMATCH it would give up on.
    """
    awaiting_validation = (
        operation.type is OperationType.REINDEX
        and not operation.finished
        and not operation.switched
        and operation.checkpoint(REINDEX_VALIDATION) is None
        and request.expected_generation == collection_generation
    )
    if awaiting_validation:
        raise FailedPrecondition(
            f"operation {operation.id} has not recorded a passed validation yet",
            reason="VALIDATION_NOT_PASSED",
            metadata={"operation_id": operation.id},
        )
    return check_switch(
        operation,
        collection_generation,
        request.expected_generation,
        request.staging_collection,
        recorded_staging,
        request.validation_passed,
    )


def retire(old_physical: Sequence[str], live: str) -> tuple[str, ...]:
    """The collection's retired physical collections once ``live`` is one of them."""
    return tuple(dict.fromkeys([*old_physical, live]))

"""The orchestrator's Prometheus metrics: operations as they end, the state of
operations and collections as last polled, and the REINDEX switch. Labels are
fixed sets: operation types and statuses, collection statuses, and what the
switch did or the documented reason it was refused."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from kit.operation_protocol import OperationType
from orchestrator.domain.operations import Operation

OUTCOMES = ("completed", "failed", "cancelled")

OPERATIONS = Counter(
    "vectorops_operations_total",
    "Operations that ended, by type and outcome (completed, failed, cancelled).",
    ["type", "outcome"],
)
OPERATION_SECONDS = Histogram(
    "vectorops_operation_duration_seconds",
    "Time from an operation's acceptance to its end, by type and outcome.",
    ["type", "outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
OPERATIONS_FAILED = Counter(
    "vectorops_operation_failures_total",
    "Operations that ended FAILED, by type and error type (the documented ErrorType set;"
    " STUCK: failed by the reaper).",
    ["type", "error_type"],
)
OPERATIONS_ACTIVE = Gauge(
    "vectorops_operations_active",
    "Operations PENDING or PROCESSING, by type and status, as last polled from Postgres.",
    ["type", "status"],
)
LONGEST_SILENCE = Gauge(
    "vectorops_operation_longest_silence_seconds",
    "Seconds since the worker last reported on the active operation that has been silent "
    "longest (0 when none is active), as last polled; the reaper fails it past its limit.",
)
COLLECTIONS = Gauge(
    "vectorops_collections",
    "Collections by status, as last polled from Postgres.",
    ["status"],
)

# Every series exists from the start, so a rate over it is 0 rather than absent.
for _type in OperationType:
    for _outcome in OUTCOMES:
        OPERATIONS.labels(_type.value, _outcome)
        OPERATION_SECONDS.labels(_type.value, _outcome)

SWITCH_SECONDS = Histogram(
    "vectorops_reindex_switch_duration_seconds",
    "Time CompleteReindex took to switch a collection (its transaction included),"
    " for calls that switched.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SWITCHES = Counter(
    "vectorops_reindex_switches_total",
    "CompleteReindex calls, by outcome: switched, replayed (a repeat answered with"
    " the first result), or the lower-case reason it was refused.",
    ["outcome"],
)

SWITCHED = "switched"
REPLAYED = "replayed"
# Refusals counted under their own name; anything else is "refused".
_REFUSALS = frozenset(
    {
        "STALE_GENERATION",
        "VALIDATION_NOT_PASSED",
        "OPERATION_NOT_ACTIVE",
        "STAGING_MISMATCH",
        "PERMISSION_DENIED",
        "OPERATION_NOT_FOUND",
        "COLLECTION_NOT_FOUND",
    }
)


def refusal_outcome(reason: str) -> str:
    """The outcome label of a refused call (bounded: unknown reasons share one)."""
    return reason.lower() if reason in _REFUSALS else "refused"


def count_switch(outcome: str, seconds: float | None = None) -> None:
    SWITCHES.labels(outcome=outcome).inc()
    if seconds is not None:
        SWITCH_SECONDS.observe(seconds)


def count_operation_end(operation: Operation) -> None:
    """Called once, by the transition that ended ``operation``."""
    type_, outcome = operation.type.value, operation.status.value.lower()
    OPERATIONS.labels(type_, outcome).inc()
    ended = operation.ended_at or operation.updated_at
    if ended is not None:
        OPERATION_SECONDS.labels(type_, outcome).observe(
            max((ended - operation.created_at).total_seconds(), 0.0)
        )
    if outcome == "failed":
        error_type = operation.error.type if operation.error is not None else "UNKNOWN"
        OPERATIONS_FAILED.labels(type_, str(error_type)).inc()


for _outcome in (SWITCHED, REPLAYED):
    SWITCHES.labels(outcome=_outcome)  # present from the start, as above

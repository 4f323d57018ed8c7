"""The orchestrator's Prometheus metrics for the REINDEX switch. The outcome
label is a fixed set: what the switch did, or the documented reason it was
refused."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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

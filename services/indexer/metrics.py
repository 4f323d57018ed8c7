"""The indexer's Prometheus metrics for operations and the REINDEX checkpoints.

Labels are bounded: operation types and step names are the fixed sets of
``kit.operation_protocol``; check names are the four validation checks;
outcomes are listed beside each metric.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DOCUMENTS = Counter(
    "vectorops_indexer_documents_total",
    "Documents the indexer finished, by outcome: indexed, failed, or skipped (unchanged "
    "since the last run).",
    ["outcome"],
)
VECTORS_WRITTEN = Counter(
    "vectorops_indexer_vectors_written_total",
    "Points (one per chunk) written to the vector store for indexed documents.",
)
VECTOR_STORE_SECONDS = Histogram(
    "vectorops_indexer_vector_store_call_duration_seconds",
    "One call to the vector store (Qdrant server or embedded engine), by backend, call "
    "(upsert, search, count, ...) and outcome (ok, error).",
    ["backend", "call", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
for _outcome in ("indexed", "failed", "skipped"):
    DOCUMENTS.labels(_outcome)  # present from the start: a rate over it is 0, not absent

CHECKPOINTS = Counter(
    "vectorops_operation_checkpoints_total",
    "Step checkpoints the indexer recorded, by operation type and step.",
    ["type", "step"],
)

VALIDATION_SECONDS = Histogram(
    "vectorops_reindex_validation_duration_seconds",
    "Time the validation step of a REINDEX took (count, probes, optimisation).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
VALIDATIONS = Counter(
    "vectorops_reindex_validations_total",
    "REINDEX validations, by outcome: passed or failed.",
    ["outcome"],
)
VALIDATION_CHECK_FAILURES = Counter(
    "vectorops_reindex_validation_check_failures_total",
    "Validation checks that failed, by check: point_count, topk_overlap, score_drift, "
    "collection_status.",
    ["check"],
)
_RATIO_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
VALIDATION_TOPK_OVERLAP = Histogram(
    "vectorops_reindex_validation_topk_overlap_ratio",
    "Mean top-k document overlap between the live and the staging collection, per validation.",
    buckets=_RATIO_BUCKETS,
)
VALIDATION_SCORE_DRIFT = Histogram(
    "vectorops_reindex_validation_score_drift_ratio",
    "Mean absolute drift of the top hit's score between live and staging, per validation.",
    buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0),
)
VALIDATION_POINT_DEVIATION = Histogram(
    "vectorops_reindex_validation_point_count_deviation_ratio",
    "Relative difference between the staging collection's point count and the expected one.",
    buckets=(0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)

RESERVATIONS = Counter(
    "vectorops_reindex_reservations_total",
    "Quota reservations a REINDEX preflight asked for, by outcome: reserved, refused "
    "(quota exceeded) or unavailable (the resources service does not implement Reserve; "
    "the reindex went on without one).",
    ["outcome"],
)
STAGING_DISCARDED = Counter(
    "vectorops_reindex_staging_discarded_total",
    "Staging collections deleted at once because their REINDEX ended before the switch, "
    "by why: failed or cancelled.",
    ["why"],
)

SWITCH_SECONDS = Histogram(
    "vectorops_indexer_reindex_switch_duration_seconds",
    "A REINDEX's switch as the indexer sees it: CompleteReindex (the orchestrator's "
    "transaction) plus the alias move and the local bookkeeping.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# The fixed label sets exist from the start: a rate or increase over them is 0,
# not absent, before the first REINDEX reaches them.
for _outcome in ("passed", "failed"):
    VALIDATIONS.labels(_outcome)
for _check in ("point_count", "topk_overlap", "score_drift", "collection_status"):
    VALIDATION_CHECK_FAILURES.labels(_check)
for _outcome in ("reserved", "refused", "unavailable"):
    RESERVATIONS.labels(_outcome)
for _why in ("failed", "cancelled"):
    STAGING_DISCARDED.labels(_why)

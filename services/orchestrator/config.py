"""The orchestrator's settings (``VECTOROPS_ORCHESTRATOR_*``), on top of the shared ones."""

from __future__ import annotations

from pydantic import Field

from kit.config import Settings


class OrchestratorSettings(Settings):
    # An operation whose worker reported nothing (no step, no progress) for this
    # long is failed as STUCK by the reaper; checked every reaper interval.
    orchestrator_stuck_after_seconds: float = Field(default=600.0, gt=0)
    orchestrator_reaper_interval_seconds: float = Field(default=30.0, gt=0)
    # Durable consumer names of the worker's events and of the dead letters. Every
    # replica of one orchestrator shares them; another name is another, independent
    # reader of the same streams (a second deployment on one NATS, a test).
    orchestrator_events_consumer: str = Field(
        default="orchestrator-events", pattern=r"^[A-Za-z0-9_-]+$"
    )
    orchestrator_dead_consumer: str = Field(
        default="orchestrator-dead", pattern=r"^[A-Za-z0-9_-]+$"
    )
    # WatchOperation re-reads the operation at least this often, even without a
    # change notification (a notification lost with a dropped connection).
    orchestrator_watch_poll_seconds: float = Field(default=2.0, gt=0)
    # ... and sends at most one message per this interval (a burst of progress
    # events becomes one message with the latest state).
    orchestrator_watch_min_interval_seconds: float = Field(default=0.2, ge=0)
    # google.longrunning WaitOperation waits at most this long (also when the
    # request names no timeout or a longer one).
    orchestrator_wait_max_seconds: float = Field(default=60.0, gt=0)
    # UploadDocuments: the largest document (a larger one is rejected, the upload
    # goes on), the most bytes and documents one call may carry (more fails the
    # call with UPLOAD_TOO_LARGE and starts nothing).
    orchestrator_upload_max_document_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    orchestrator_upload_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    orchestrator_upload_max_documents: int = Field(default=10_000, ge=1)
    # REINDEX validation thresholds in force unless a request overrides them
    # (see ValidationThresholds): relative point-count difference accepted, mean
    # top-k document overlap required, mean top-1 score drift accepted, probe
    # queries sampled from live documents, and the k of each probe search.
    orchestrator_reindex_point_count_tolerance: float = Field(default=0.0, ge=0, le=1)
    orchestrator_reindex_min_topk_overlap: float = Field(default=0.6, ge=0, le=1)
    orchestrator_reindex_max_score_drift: float = Field(default=0.25, ge=0)
    orchestrator_reindex_probe_query_count: int = Field(default=20, ge=1, le=1000)
    orchestrator_reindex_top_k: int = Field(default=10, ge=1, le=100)
    # After a switch the old physical collections wait this long before the
    # indexer's cleanup may delete them, so searches already routed to them
    # finish: base + per 10k vectors of the old collection, at most max.
    orchestrator_cleanup_base_delay_seconds: float = Field(default=300.0, ge=0)
    orchestrator_cleanup_per_10k_vectors_seconds: float = Field(default=60.0, ge=0)
    orchestrator_cleanup_max_delay_seconds: float = Field(default=1800.0, ge=0)
    # Quota admission: how long a call to the resources service may take before
    # the request is refused UNAVAILABLE, and how many directory entries the
    # survey of a new source looks at (past that its count is a lower bound).
    orchestrator_resources_timeout_seconds: float = Field(default=5.0, gt=0)
    orchestrator_admission_max_walk_entries: int = Field(default=100_000, ge=1)

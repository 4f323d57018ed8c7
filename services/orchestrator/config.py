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

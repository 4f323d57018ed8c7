"""The orchestrator's settings (``VECTOROPS_ORCHESTRATOR_*``), on top of the shared ones."""

from __future__ import annotations

from pydantic import Field

from kit.config import Settings


class OrchestratorSettings(Settings):
    # An operation whose worker reported nothing (no step, no progress) for this
    # long is failed as STUCK by the reaper; checked every reaper interval.
    orchestrator_stuck_after_seconds: float = Field(default=600.0, gt=0)
    orchestrator_reaper_interval_seconds: float = Field(default=30.0, gt=0)
    # WatchOperation re-reads the operation at least this often, even without a
    # change notification (a notification lost with a dropped connection).
    orchestrator_watch_poll_seconds: float = Field(default=2.0, gt=0)

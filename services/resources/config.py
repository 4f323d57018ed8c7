"""The resources service's settings (``VECTOROPS_RESOURCES_*``): the default quota
every owner without a stored one gets, the reservation lifetime, and the system
headroom below which no operation that grows the store is admitted."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kit.config import Settings

GIB = 1024**3
MIB = 1024**2


class ResourcesSettings(Settings):
    resources_default_max_collections: int = Field(default=100, ge=0)
    resources_default_max_vectors: int = Field(default=10_000_000, ge=0)
    resources_default_max_stored_bytes: int = Field(default=50 * GIB, ge=0)
    resources_default_max_documents_per_operation: int = Field(default=100_000, ge=0)
    resources_default_max_concurrent_operations: int = Field(default=10, ge=0)
    # A reservation whose operation never releases it (a crash) stops counting after this.
    resources_reservation_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    resources_usage_concurrency: int = Field(default=4, ge=1)
    # Deadline of each page ReconcileUsage asks the indexer for.
    resources_indexer_timeout_seconds: float = Field(default=30.0, gt=0)
    # The store's data directory (the indexer's, or the stack's data dir): its
    # filesystem's free space is checked against the disk floor. Unset: no disk check.
    resources_headroom_path: Path | None = None
    # Floors of free disk and free memory (MemAvailable); 0 turns a check off.
    resources_min_free_disk_bytes: int = Field(default=1 * GIB, ge=0)
    resources_min_free_memory_bytes: int = Field(default=256 * MIB, ge=0)

"""The resources service's settings (``VECTOROPS_RESOURCES_*``): the default quota
every owner without a stored one gets, and the reservation lifetime."""

from __future__ import annotations

from pydantic import Field

from kit.config import Settings

GIB = 1024**3


class ResourcesSettings(Settings):
    resources_default_max_collections: int = Field(default=100, ge=0)
    resources_default_max_vectors: int = Field(default=10_000_000, ge=0)
    resources_default_max_stored_bytes: int = Field(default=50 * GIB, ge=0)
    resources_default_max_documents_per_operation: int = Field(default=100_000, ge=0)
    resources_default_max_concurrent_operations: int = Field(default=10, ge=0)
    # A reservation whose operation never releases it (a crash) stops counting after this.
    resources_reservation_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    resources_usage_concurrency: int = Field(default=4, ge=1)

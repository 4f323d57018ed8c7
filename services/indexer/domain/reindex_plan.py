"""What a REINDEX is asked to do and what it expects to build, as plain values:
the target config and thresholds of the command, the staging collection's base
name, and the estimate of the staging copy the preflight reserves quota for.
No I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from indexer.domain.staging import parse_staging
from indexer.domain.validation import Thresholds


@dataclass(frozen=True)
class ReindexTarget:
    """The ``ReindexCommand``'s target config (the keys of the indexer's config
    copy) and its thresholds (zeros: the indexer's defaults)."""

    config: Mapping[str, Any]
    thresholds: Thresholds = Thresholds()


def physical_base(physical_collection: str) -> str:
    """The name a staging collection is derived from: the live physical
    collection without the ``_staging_<ts>`` of an earlier reindex, so names do
    not grow with every reindex."""
    parsed = parse_staging(physical_collection)
    return parsed[0] if parsed is not None else physical_collection


def _stride(config: Mapping[str, Any]) -> int:
    """Tokens a chunking config advances by per chunk."""
    size = int(config.get("chunk_size") or 0)
    overlap = int(config.get("chunk_overlap") or 0)
    return max(size - overlap, 1)


@dataclass(frozen=True)
class StagingEstimate:
    vectors: int
    bytes: int


def estimate_staging(
    live_documents: int,
    live_vectors: int,
    live_bytes: int,
    live_config: Mapping[str, Any],
    target_config: Mapping[str, Any],
) -> StagingEstimate:
    """The staging copy's vectors: the live chunk count scaled by how far each
    config's chunks advance (a halved chunk size about doubles the chunks), and
    at least one per document. Its bytes: the documents' bytes, the figure
    usage and quotas count stored data in."""
    if live_vectors <= 0:
        return StagingEstimate(vectors=live_documents, bytes=live_bytes)
    scaled = math.ceil(live_vectors * _stride(live_config) / _stride(target_config))
    return StagingEstimate(vectors=max(scaled, live_documents), bytes=live_bytes)

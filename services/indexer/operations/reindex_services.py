"""What the REINDEX steps need beyond every operation's adapters: the record of
staging collections and per-document results, query embeddings for the
validation probes, quota reservations, the validation defaults, and how gently
reprocessing re-embeds a collection that keeps serving searches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from indexer.adapters.reindex_repository import ReindexRepository
from indexer.adapters.resources_client import Reservation
from indexer.domain.validation import DEFAULT_THRESHOLDS, Thresholds
from indexer.pipeline import PipelineLimits
from indexer.search import QueryEmbedder


class Reservations(Protocol):
    """Quota reservations (``indexer.adapters.resources_client.ResourcesClient``)."""

    async def reserve(
        self,
        *,
        operation_id: str,
        owner_id: str,
        collection_id: str,
        vectors: int,
        bytes: int,
        documents: int,
    ) -> Reservation: ...

    async def release(self, operation_id: str) -> bool: ...


@dataclass(frozen=True)
class ReindexServices:
    runs: ReindexRepository
    queries: QueryEmbedder  # the embedder's query embeddings (EmbedderClient)
    resources: Reservations
    default_thresholds: Thresholds = DEFAULT_THRESHOLDS  # for a command's zeros
    probe_words: int = 16  # a probe query is this many words of a live chunk
    probe_scan_points: int = 10_000  # live points the probe sample is drawn from, at most
    # Reprocessing runs in the background of a live collection: smaller batches and
    # fewer at once than an INDEX or APPEND, so that its searches keep their latency.
    limits: PipelineLimits = PipelineLimits(batch_chunks=16, in_flight=1, chunks_per_second=400)

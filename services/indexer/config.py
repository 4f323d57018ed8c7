"""The indexer's settings (``VECTOROPS_INDEXER_*``), on top of the shared ones."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from indexer.domain.validation import Thresholds
from kit.config import Settings


class IndexerSettings(Settings):
    # The vector store: a Qdrant server or cluster (gRPC URL, e.g.
    # http://qdrant:6334) through qdrant-client, or, when unset, Qdrant's own
    # engine embedded in this process with its files under ``indexer_data_dir``.
    indexer_qdrant_url: str | None = None
    indexer_qdrant_api_key: str | None = None
    # How a Qdrant cluster places the collections the indexer creates (unset: the
    # server's defaults, 1 shard and 1 copy). Replication 2 keeps every shard on two
    # nodes, so a collection survives one node's loss; write consistency is how many
    # copies must apply a write before it is acknowledged. Ignored by the embedded engine.
    indexer_qdrant_shard_number: int | None = Field(default=None, ge=1)
    indexer_qdrant_replication_factor: int | None = Field(default=None, ge=1)
    indexer_qdrant_write_consistency_factor: int | None = Field(default=None, ge=1)
    indexer_data_dir: Path = Path(".vectorops/indexer")
    # Commands: the ack wait after which a dead indexer's command is redelivered
    # (a live one sends in_progress well within it), and how often it is tried.
    indexer_command_ack_wait_seconds: float = Field(default=30.0, gt=0)
    indexer_command_max_deliver: int = Field(default=5, ge=1)
    # Embedding through the work queue: chunks per batch, batches in flight per
    # operation, and how long one batch may take before it is sent again.
    indexer_embed_batch_chunks: int = Field(default=64, ge=1)
    indexer_embed_in_flight: int = Field(default=8, ge=1)
    indexer_embed_timeout_seconds: float = Field(default=120.0, gt=0)
    # A REINDEX re-embeds a live collection in the background: smaller batches and
    # fewer at once, so that the searches it serves meanwhile keep their latency
    # (``make bench``). Raise them to reindex faster where CPUs are to spare.
    indexer_reindex_embed_batch_chunks: int = Field(default=16, ge=1)
    indexer_reindex_embed_in_flight: int = Field(default=1, ge=1)
    # And it sends no more than this many chunks a second (0: no limit). On two
    # cores an unpaced reindex keeps both busy and doubles the search p99 (make
    # bench); raise it (or set 0) where the machine has CPUs or a GPU to spare.
    indexer_reindex_chunks_per_second: float = Field(default=400.0, ge=0)
    # How long an operation keeps waiting for an unreachable embedder before it fails.
    indexer_embedder_wait_seconds: float = Field(default=300.0, gt=0)
    # Progress events at most this often per operation.
    indexer_progress_interval_seconds: float = Field(default=0.5, gt=0)
    # Search: query embedding deadline and the largest top_k a caller may ask for.
    indexer_search_timeout_seconds: float = Field(default=10.0, gt=0)
    indexer_max_top_k: int = Field(default=100, ge=1)
    # SearchMulti: the most distinct collections one call may name.
    indexer_search_max_collections: int = Field(default=20, ge=1)
    # Reindex validation: the thresholds a command leaves at zero (the same
    # figures as the orchestrator's defaults); a probe query is this many words
    # of a live chunk, sampled from at most this many live points.
    indexer_validation_point_count_tolerance: float = Field(default=0.0, ge=0)
    indexer_validation_min_topk_overlap: float = Field(default=0.6, ge=0)
    indexer_validation_max_score_drift: float = Field(default=0.25, ge=0)
    indexer_validation_probe_query_count: int = Field(default=20, ge=1)
    indexer_validation_top_k: int = Field(default=10, ge=1)
    indexer_validation_probe_words: int = Field(default=16, ge=1)
    indexer_validation_probe_scan_points: int = Field(default=10_000, ge=1)
    # Reindex preflight: how long a quota reservation call may take.
    indexer_resources_timeout_seconds: float = Field(default=5.0, gt=0)
    # Reindex switch: how long the switch step keeps calling CompleteReindex while
    # the orchestrator is unreachable or has not yet seen validation pass.
    indexer_switch_deadline_seconds: float = Field(default=60.0, gt=0)
    # Cleanup of retired physical collections: how often due jobs are looked at,
    # and the age below which a staging collection is never deleted (it may
    # belong to a reindex still running).
    indexer_cleanup_interval_seconds: float = Field(default=5.0, gt=0)
    indexer_cleanup_min_staging_age_seconds: float = Field(default=3600.0, ge=0)

    def validation_thresholds(self) -> Thresholds:
        """The reindex validation defaults."""
        return Thresholds(
            point_count_tolerance=self.indexer_validation_point_count_tolerance,
            min_topk_overlap=self.indexer_validation_min_topk_overlap,
            max_score_drift=self.indexer_validation_max_score_drift,
            probe_query_count=self.indexer_validation_probe_query_count,
            top_k=self.indexer_validation_top_k,
        )

"""The vector store the settings ask for: a Qdrant server or cluster (gRPC, through
qdrant-client) when ``VECTOROPS_INDEXER_QDRANT_URL`` is set, else Qdrant's engine
embedded in this process with its files under the indexer's data dir."""

from __future__ import annotations

from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.metered_store import MeteredVectorStore
from indexer.adapters.qdrant_mapping import Placement
from indexer.adapters.qdrant_store import QdrantServerStore
from indexer.adapters.vector_store import VectorStore
from indexer.config import IndexerSettings


def placement_of(settings: IndexerSettings) -> Placement:
    """Shards and replicas of the collections the indexer creates on a cluster."""
    return Placement(
        shard_number=settings.indexer_qdrant_shard_number,
        replication_factor=settings.indexer_qdrant_replication_factor,
        write_consistency_factor=settings.indexer_qdrant_write_consistency_factor,
    )


def open_vector_store(settings: IndexerSettings) -> VectorStore:
    if settings.indexer_qdrant_url:
        server = QdrantServerStore.connect(
            settings.indexer_qdrant_url,
            api_key=settings.indexer_qdrant_api_key,
            placement=placement_of(settings),
        )
        return MeteredVectorStore(server, backend="server")
    return MeteredVectorStore(EdgeVectorStore(settings.indexer_data_dir / "qdrant"), "edge")

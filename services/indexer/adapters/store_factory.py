"""The vector store the settings ask for: Qdrant's engine embedded in this process
(the default) or a Qdrant server or cluster."""

from __future__ import annotations

from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.vector_store import VectorStore
from indexer.config import IndexerSettings


def open_vector_store(settings: IndexerSettings) -> VectorStore:
    if settings.indexer_qdrant_url:
        raise NotImplementedError("the Qdrant server adapter lands with the indexing issue")
    return EdgeVectorStore(settings.indexer_data_dir / "qdrant")

"""The indexer service: its adapters (vector store, documents, embedder client),
the command consumer that runs operations, and the gRPC search and document API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from indexer.adapters.document_repository import DocumentRepository
from indexer.adapters.store_factory import open_vector_store
from indexer.adapters.vector_store import VectorStore
from indexer.config import IndexerSettings
from kit.config import ServiceName
from kit.embedding_models import ModelRegistry
from kit.grpc.unimplemented import unimplemented
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.indexer.v1 import document_service_pb2_grpc, search_service_pb2_grpc


@dataclass
class IndexerApp:
    settings: IndexerSettings
    repository: DocumentRepository
    store: VectorStore
    registry: ModelRegistry


@asynccontextmanager
async def lifespan(ctx: ServiceContext) -> AsyncIterator[IndexerApp]:
    settings: IndexerSettings = ctx.settings  # type: ignore[assignment]
    store = open_vector_store(settings)
    try:
        yield IndexerApp(
            settings=settings,
            repository=DocumentRepository(ctx.pool, ctx.schema),
            store=store,
            registry=ModelRegistry(),
        )
    finally:
        await store.close()


def bindings(ctx: ServiceContext):
    return [
        unimplemented(search_service_pb2_grpc, "SearchService"),
        unimplemented(document_service_pb2_grpc, "DocumentService"),
    ]


def background(ctx: ServiceContext):
    return []


SPEC = ServiceSpec(
    name=ServiceName.INDEXER,
    package="indexer",
    bindings=bindings,
    background=background,
    lifespan=lifespan,
    settings_type=IndexerSettings,
)

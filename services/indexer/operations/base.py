"""What every step of an operation gets and gives back.

A step is an async function of a ``StepContext``: it does its work, reports its
figures through ``ctx.figures`` and ``ctx.report()``, and returns a
``StepOutput`` (the checkpoint the orchestrator records and the step's result
message). The runner around it publishes the events, records the checkpoint and
decides what a raised error means; a step only has to be safe to run again
from its start, since a command is delivered at least once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRepository,
    SourceRecord,
    SourceStatus,
)
from indexer.adapters.vector_store import VectorStore
from indexer.domain.operation_plan import CollectionFigures, OperationFigures
from indexer.domain.reindex_plan import ReindexTarget
from indexer.ingest import EmbedFunction
from indexer.operations.reindex_services import ReindexServices
from indexer.operations.switch_services import SwitchServices
from indexer.upload_source import ObjectReader, UploadManifest
from kit.embedding_models import ModelRegistry
from kit.operation_protocol import OperationType

# (operation_id, collection_id) → an embedding session for that operation, e.g.
# ``QueueEmbedder.for_operation``: ``async with embed_for(op, coll) as embed: ...``.
EmbedSessions = Callable[[str, str], AbstractAsyncContextManager[EmbedFunction]]


class StepCancelled(Exception):
    """The operation was cancelled while a step ran; it stopped at a safe point."""


@dataclass(frozen=True)
class OperationOrder:
    """A command as the indexer runs it: the operation and what it needs."""

    operation_id: str
    type: OperationType
    collection: CollectionRecord
    sources: tuple[SourceRecord, ...] = ()  # INDEX: every source; APPEND: the one added
    source_id: str = ""  # REMOVE_SOURCE
    physical_collections: tuple[str, ...] = ()  # DELETE
    max_documents: int = 0  # 0: no limit
    upload: UploadManifest | None = None  # APPEND of an upload source: its documents
    reindex: ReindexTarget | None = None  # REINDEX: the target config and thresholds
    trace_id: str = ""
    causation_id: str = ""  # the command's event id

    @property
    def collection_id(self) -> str:
        return self.collection.collection_id

    @property
    def owner_id(self) -> str:
        return self.collection.owner_id


@dataclass(frozen=True)
class OperationServices:
    """The adapters and settings steps work with."""

    repository: DocumentRepository
    store: VectorStore
    registry: ModelRegistry
    source_roots: Sequence[Path]
    embed_for: EmbedSessions
    uploads: ObjectReader | None = None  # the bucket of uploaded documents
    reindex: ReindexServices | None = None  # what REINDEX needs; None: not run here
    reindex_switch: SwitchServices | None = None  # REINDEX's switch and cleanup
    embed_batch_chunks: int = 64
    embed_in_flight: int = 8
    progress_interval_seconds: float = 0.5


@dataclass(frozen=True)
class StepOutput:
    checkpoint: dict[str, Any]
    result: Message | None = None  # the StepCompleted result, e.g. IngestResult, Reindex*Result


@dataclass
class StepContext:
    order: OperationOrder
    services: OperationServices
    figures: OperationFigures
    report: Callable[[], Awaitable[None]]  # publish progress (throttled by the runner)
    cancel: asyncio.Event
    before: CollectionFigures  # the collection's figures before the operation
    checkpoints: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # earlier steps

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise StepCancelled(f"operation {self.order.operation_id} was cancelled")


Step = Callable[[StepContext], Awaitable[StepOutput]]


async def collection_figures(ctx: StepContext) -> dict[str, Any]:
    """The collection's figures after the operation, as the finalize checkpoint
    carries them. ``vector_count`` is the store's own exact point count of the
    live collection, not what the document rows claim, so a missing or doubled
    chunk shows. ``stored_bytes`` is the sum of the indexed documents' sizes
    (what the documents table counts), not an estimate of Qdrant's disk use."""
    repository = ctx.services.repository
    collection_id = ctx.order.collection_id
    documents, _, stored_bytes = await repository.counts(collection_id)
    physical = ctx.order.collection.physical_collection
    store = ctx.services.store
    vectors = await store.count(physical) if await store.collection_exists(physical) else 0
    per_source = await repository.source_document_counts(collection_id)
    sources = await repository.list_sources(collection_id)
    return {
        "document_count": documents,
        "vector_count": vectors,
        "stored_bytes": stored_bytes,
        "source_document_counts": {
            source.source_id: per_source.get(source.source_id, 0)
            for source in sources
            if source.status is SourceStatus.ACTIVE
        },
    }

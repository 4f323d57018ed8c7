"""The indexer service: its adapters (vector store, documents, embedder client),
the command consumer that runs operations, and the gRPC search and document API
(and the internal usage one the resources service reconciles against)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from indexer.adapters.cleanup_jobs import CleanupJobs
from indexer.adapters.document_repository import DocumentRepository
from indexer.adapters.embedder_client import EmbedderClient
from indexer.adapters.operation_journal import OperationJournal
from indexer.adapters.orchestrator_client import ReindexControlClient
from indexer.adapters.reindex_repository import ReindexRepository
from indexer.adapters.reindex_switches import ReindexSwitches
from indexer.adapters.resources_client import ResourcesClient
from indexer.adapters.store_factory import open_vector_store
from indexer.adapters.vector_store import VectorStore
from indexer.cancellations import Cancellations, CancelListener
from indexer.cleanup import CleanupLoop
from indexer.collection_events import CollectionEventConsumer
from indexer.collection_switch import CollectionSwitcher
from indexer.commands import CommandConsumer, consumer_spec
from indexer.config import IndexerSettings
from indexer.document_servicer import DocumentServicer
from indexer.embed_queue import QueueEmbedder
from indexer.operation_events import OperationEvents
from indexer.operation_runner import OperationRunner
from indexer.operations.base import OperationServices
from indexer.operations.reindex_services import ReindexServices
from indexer.operations.switch_services import SwitchServices
from indexer.pipeline import PipelineLimits
from indexer.reconciler import AliasReconciler
from indexer.search import Searcher
from indexer.search_servicer import SearchServicer
from indexer.usage_servicer import UsageServicer
from kit.bus.object_store import ObjectBucket
from kit.config import ServiceName
from kit.embedding_models import ModelRegistry
from kit.grpc.server import bind
from kit.grpc.tls import channel_credentials
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.indexer.v1 import (
    document_service_pb2_grpc,
    search_service_pb2_grpc,
    usage_service_pb2_grpc,
)


@dataclass
class IndexerApp:
    settings: IndexerSettings
    repository: DocumentRepository
    store: VectorStore
    registry: ModelRegistry
    embedder: EmbedderClient  # query embeddings (search, validation probes)
    commands: CommandConsumer  # runs the operations the orchestrator sends
    cancel_listener: CancelListener
    collection_events: CollectionEventConsumer  # the alias follows the orchestrator's switches
    cleanup: CleanupLoop  # deletes the collections reindex switches retired


@asynccontextmanager
async def lifespan(ctx: ServiceContext) -> AsyncIterator[IndexerApp]:
    settings: IndexerSettings = ctx.settings  # type: ignore[assignment]
    uploads = await ObjectBucket.ensure(
        ctx.bus.js, storage=settings.jetstream_storage, replicas=settings.jetstream_replicas
    )
    store = open_vector_store(settings)
    embedder = EmbedderClient(
        settings.embedder_address,
        settings.outbound_token(),
        settings.indexer_search_timeout_seconds,
        credentials=channel_credentials(settings.tls()),
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    repository = DocumentRepository(ctx.pool, ctx.schema)
    registry = ModelRegistry()
    queue_embedder = QueueEmbedder(
        ctx.bus,
        timeout_seconds=settings.indexer_embed_timeout_seconds,
        wait_seconds=settings.indexer_embedder_wait_seconds,
    )
    # The end of a REINDEX: the orchestrator's switch, applied here, and the cleanup.
    control = ReindexControlClient(
        settings.orchestrator_address,
        settings.outbound_token(),
        credentials=channel_credentials(settings.tls()),
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    switches = ReindexSwitches(ctx.pool, ctx.schema)
    switcher = CollectionSwitcher(switches, store)
    cleanup_jobs = CleanupJobs(ctx.pool, ctx.schema)
    switch = SwitchServices(
        control=control,
        switcher=switcher,
        cleanup_jobs=cleanup_jobs,
        journal=OperationJournal(ctx.pool, ctx.schema),
        deadline_seconds=settings.indexer_switch_deadline_seconds,
    )
    # The first four checkpoints of a REINDEX: reservation, staging, validation.
    resources = ResourcesClient(
        settings.resources_address,
        settings.outbound_token(),
        settings.indexer_resources_timeout_seconds,
        credentials=channel_credentials(settings.tls()),
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    reindex = ReindexServices(
        runs=ReindexRepository(ctx.pool, ctx.schema),
        queries=embedder,
        resources=resources,
        default_thresholds=settings.validation_thresholds(),
        probe_words=settings.indexer_validation_probe_words,
        probe_scan_points=settings.indexer_validation_probe_scan_points,
        limits=PipelineLimits(
            batch_chunks=settings.indexer_reindex_embed_batch_chunks,
            in_flight=settings.indexer_reindex_embed_in_flight,
            chunks_per_second=settings.indexer_reindex_chunks_per_second,
        ),
    )
    services = OperationServices(
        repository=repository,
        store=store,
        registry=registry,
        source_roots=settings.source_roots,
        embed_for=queue_embedder.for_operation,
        uploads=uploads,
        reindex=reindex,
        reindex_switch=switch,
        embed_batch_chunks=settings.indexer_embed_batch_chunks,
        embed_in_flight=settings.indexer_embed_in_flight,
        progress_interval_seconds=settings.indexer_progress_interval_seconds,
    )
    journal = OperationJournal(ctx.pool, ctx.schema)
    cancellations = Cancellations(journal)
    runner = OperationRunner(
        services,
        journal,
        OperationEvents(ctx.bus),
        cancellations,
        progress_interval_seconds=settings.indexer_progress_interval_seconds,
    )
    spec = consumer_spec(
        settings.indexer_command_ack_wait_seconds, settings.indexer_command_max_deliver
    )
    # Before serving: every live alias points where the recorded truth says.
    await AliasReconciler(switches, switcher, store).reconcile()
    try:
        yield IndexerApp(
            settings=settings,
            repository=repository,
            store=store,
            registry=registry,
            embedder=embedder,
            commands=CommandConsumer(runner, spec),
            cancel_listener=CancelListener(ctx.bus, cancellations),
            collection_events=CollectionEventConsumer(switcher),
            cleanup=CleanupLoop(
                cleanup_jobs,
                store,
                interval_seconds=settings.indexer_cleanup_interval_seconds,
                min_staging_age=timedelta(seconds=settings.indexer_cleanup_min_staging_age_seconds),
                release=resources.release,
            ),
        )
    finally:
        await control.close()
        await resources.close()
        await embedder.close()
        await store.close()


def bindings(ctx: ServiceContext):
    app: IndexerApp = ctx.app
    settings = app.settings
    searcher = Searcher(
        app.repository,
        app.store,
        app.embedder,
        timeout_seconds=settings.indexer_search_timeout_seconds,
    )
    search = SearchServicer(
        searcher,
        max_top_k=settings.indexer_max_top_k,
        max_collections=settings.indexer_search_max_collections,
    )
    return [
        bind(search_service_pb2_grpc, "SearchService", search),
        bind(document_service_pb2_grpc, "DocumentService", DocumentServicer(app.repository)),
        bind(usage_service_pb2_grpc, "UsageService", UsageServicer(app.repository)),
    ]


def background(ctx: ServiceContext):
    app: IndexerApp = ctx.app
    return [
        app.cancel_listener.run(ctx.stop),
        app.commands.run(ctx.bus, ctx.stop),
        app.collection_events.run(ctx.bus, ctx.stop),
        app.cleanup.run(ctx.stop),
    ]


SPEC = ServiceSpec(
    name=ServiceName.INDEXER,
    package="indexer",
    bindings=bindings,
    background=background,
    lifespan=lifespan,
    settings_type=IndexerSettings,
)

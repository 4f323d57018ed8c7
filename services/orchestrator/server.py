"""The orchestrator's gRPC surface: ``CollectionService``, ``OperationService``
and ``google.longrunning.Operations`` over the same operations, the
internal ``ReindexControlService`` (the REINDEX switch, service role only), and
the admin-only ``TokenService`` (run-time bearer tokens of every service).

``lifespan`` builds what the servicers share (the repository, the process-wide
change listener and the application services); ``bindings`` maps them
onto the servers' services; ``background`` runs the event consumers and the
reaper.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.longrunning import operations_pb2_grpc

from kit.bus.object_store import ObjectBucket
from kit.config import ServiceName
from kit.grpc.server import ServiceBinding, bind
from kit.grpc.tls import channel_credentials
from kit.runtime import ServiceContext, ServiceSpec
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.adapters.resources_client import ResourcesClient
from orchestrator.admission import Admission
from orchestrator.background import background
from orchestrator.collection_app import CollectionApp
from orchestrator.collection_servicer import CollectionServicer
from orchestrator.config import OrchestratorSettings
from orchestrator.domain.uploads import UploadLimits
from orchestrator.longrunning_servicer import LongRunningServicer
from orchestrator.operation_app import OperationApp
from orchestrator.operation_servicer import OperationServicer
from orchestrator.reindex_app import ReindexApp, ReindexPolicy
from orchestrator.reindex_control_servicer import ReindexControlServicer
from orchestrator.token_app import TokenApp
from orchestrator.token_servicer import TokenServicer
from orchestrator.uploads import UploadApp
from orchestrator.watch import OperationWatcher
from vectorops.orchestrator.v1 import (
    collection_service_pb2_grpc,
    operation_service_pb2_grpc,
    reindex_control_service_pb2_grpc,
    token_service_pb2_grpc,
)


@dataclass(frozen=True)
class Application:
    """What the orchestrator's servicers share, built once per process."""

    settings: OrchestratorSettings
    repository: OrchestratorRepository
    watcher: OperationWatcher
    collections: CollectionApp
    operations: OperationApp
    uploads: UploadApp
    reindex: ReindexApp
    tokens: TokenApp


def upload_limits(settings: OrchestratorSettings) -> UploadLimits:
    return UploadLimits(
        document_bytes=settings.orchestrator_upload_max_document_bytes,
        total_bytes=settings.orchestrator_upload_max_bytes,
        documents=settings.orchestrator_upload_max_documents,
    )


def _settings(ctx: ServiceContext) -> OrchestratorSettings:
    if not isinstance(ctx.settings, OrchestratorSettings):
        raise TypeError("the orchestrator needs OrchestratorSettings")
    return ctx.settings


@contextlib.asynccontextmanager
async def lifespan(ctx: ServiceContext) -> AsyncIterator[Application]:
    settings = _settings(ctx)
    resources = ResourcesClient(
        settings.resources_address,
        settings.outbound_token(),
        settings.orchestrator_resources_timeout_seconds,
        credentials=channel_credentials(settings.tls()),
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    admission = Admission(
        resources, settings.source_roots, settings.orchestrator_admission_max_walk_entries
    )
    # Every path that ends an operation goes through ``apply``: its reservation is released there.
    repository = OrchestratorRepository(ctx.pool, ctx.schema, admission.release_finished)
    bucket = await ObjectBucket.ensure(
        ctx.bus.js, storage=settings.jetstream_storage, replicas=settings.jetstream_replicas
    )
    watcher = OperationWatcher(settings.postgres_dsn, repository.change_channel)
    await watcher.start()
    try:
        yield Application(
            settings=settings,
            repository=repository,
            watcher=watcher,
            collections=CollectionApp(repository, settings.source_roots, admission),
            operations=OperationApp(
                repository,
                watcher,
                poll_seconds=settings.orchestrator_watch_poll_seconds,
                min_interval_seconds=settings.orchestrator_watch_min_interval_seconds,
            ),
            uploads=UploadApp(repository, bucket, upload_limits(settings), admission),
            reindex=ReindexApp(repository, ReindexPolicy.from_settings(settings), admission),
            tokens=TokenApp(ctx.pool, ctx.schema),
        )
    finally:
        await watcher.stop()
        await resources.close()


def bindings(ctx: ServiceContext) -> list[ServiceBinding]:
    app: Application = ctx.app
    return [
        bind(
            collection_service_pb2_grpc,
            "CollectionService",
            CollectionServicer(app.collections, app.uploads, app.reindex),
        ),
        bind(operation_service_pb2_grpc, "OperationService", OperationServicer(app.operations)),
        bind(
            operations_pb2_grpc,
            "Operations",
            LongRunningServicer(
                app.operations, app.collections, app.settings.orchestrator_wait_max_seconds
            ),
        ),
        bind(
            reindex_control_service_pb2_grpc,
            "ReindexControlService",
            ReindexControlServicer(app.reindex),
        ),
        bind(token_service_pb2_grpc, "TokenService", TokenServicer(app.tokens)),
    ]


SPEC = ServiceSpec(
    name=ServiceName.ORCHESTRATOR,
    package="orchestrator",
    bindings=bindings,
    background=background,
    settings_type=OrchestratorSettings,
    lifespan=lifespan,
)

"""The resources service: quotas, estimates, reservations and usage.

``lifespan`` builds the repository over the service's schema and the client that
asks the indexer for the usage it measures; ``bindings`` serves ``ResourceService``;
``background`` runs the usage consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from kit.config import ServiceName
from kit.grpc.server import ServiceBinding, bind
from kit.grpc.tls import channel_credentials
from kit.runtime import ServiceContext, ServiceSpec
from resources.adapters.indexer_usage import IndexerUsageClient
from resources.adapters.resources_repository import ResourcesRepository
from resources.adapters.system_headroom import SystemHeadroom
from resources.config import ResourcesSettings
from resources.domain.headroom import Floors
from resources.domain.quotas import Quota
from resources.quota_gauges import QuotaGauges
from resources.servicer import ResourceServicer
from resources.usage_consumer import USAGE_CONSUMER, UsageConsumer
from vectorops.resources.v1 import resource_service_pb2_grpc


@dataclass(frozen=True)
class ResourcesApp:
    repository: ResourcesRepository
    usage: UsageConsumer
    indexer_usage: IndexerUsageClient  # what ReconcileUsage measures against


def default_quota(settings: ResourcesSettings):
    def for_owner(owner_id: str) -> Quota:
        return Quota(
            owner_id=owner_id,
            max_collections=settings.resources_default_max_collections,
            max_vectors=settings.resources_default_max_vectors,
            max_stored_bytes=settings.resources_default_max_stored_bytes,
            max_documents_per_operation=settings.resources_default_max_documents_per_operation,
            max_concurrent_operations=settings.resources_default_max_concurrent_operations,
            is_default=True,
        )

    return for_owner


def _settings(ctx: ServiceContext) -> ResourcesSettings:
    if not isinstance(ctx.settings, ResourcesSettings):
        raise TypeError("the resources service needs ResourcesSettings")
    return ctx.settings


@asynccontextmanager
async def lifespan(ctx: ServiceContext) -> AsyncIterator[ResourcesApp]:
    settings = _settings(ctx)
    repository = ResourcesRepository(ctx.pool, ctx.schema, default_quota(settings))
    # Its channel opens at the first call: the indexer starts after this service.
    indexer_usage = IndexerUsageClient(
        settings.indexer_address,
        settings.outbound_token(),
        settings.resources_indexer_timeout_seconds,
        credentials=channel_credentials(settings.tls()),
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    try:
        yield ResourcesApp(repository, UsageConsumer(repository), indexer_usage)
    finally:
        await indexer_usage.close()


def bindings(ctx: ServiceContext) -> list[ServiceBinding]:
    app: ResourcesApp = ctx.app
    settings = _settings(ctx)
    ttl = timedelta(seconds=settings.resources_reservation_ttl_seconds)
    floors = Floors(
        disk_bytes=settings.resources_min_free_disk_bytes,
        memory_bytes=settings.resources_min_free_memory_bytes,
    )
    headroom = SystemHeadroom(settings.resources_headroom_path)
    servicer = ResourceServicer(app.repository, ttl, headroom.read, floors, app.indexer_usage)
    return [bind(resource_service_pb2_grpc, "ResourceService", servicer)]


def background(ctx: ServiceContext):
    app: ResourcesApp = ctx.app
    return [
        ctx.bus.consume(
            USAGE_CONSUMER,
            app.usage.handle,
            concurrency=_settings(ctx).resources_usage_concurrency,
            stop=ctx.stop,
        ),
        QuotaGauges(ctx.pool, ctx.schema, app.repository).run(ctx.stop),
    ]


SPEC = ServiceSpec(
    name=ServiceName.RESOURCES,
    package="resources",
    bindings=bindings,
    background=background,
    lifespan=lifespan,
    settings_type=ResourcesSettings,
)

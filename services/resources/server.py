"""The resources service: quotas, estimates, reservations and usage.

``lifespan`` builds the repository over the service's schema; ``bindings`` serves
``ResourceService``; ``background`` runs the usage consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from kit.config import ServiceName
from kit.grpc.server import ServiceBinding, bind
from kit.runtime import ServiceContext, ServiceSpec
from resources.adapters.resources_repository import ResourcesRepository
from resources.config import ResourcesSettings
from resources.domain.quotas import Quota
from resources.servicer import ResourceServicer
from resources.usage_consumer import USAGE_CONSUMER, UsageConsumer
from vectorops.resources.v1 import resource_service_pb2_grpc


@dataclass(frozen=True)
class ResourcesApp:
    repository: ResourcesRepository
    usage: UsageConsumer


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
    repository = ResourcesRepository(ctx.pool, ctx.schema, default_quota(_settings(ctx)))
    yield ResourcesApp(repository, UsageConsumer(repository))


def bindings(ctx: ServiceContext) -> list[ServiceBinding]:
    app: ResourcesApp = ctx.app
    ttl = timedelta(seconds=_settings(ctx).resources_reservation_ttl_seconds)
    servicer = ResourceServicer(app.repository, ttl)
    return [bind(resource_service_pb2_grpc, "ResourceService", servicer)]


def background(ctx: ServiceContext):
    app: ResourcesApp = ctx.app
    return [
        ctx.bus.consume(
            USAGE_CONSUMER,
            app.usage.handle,
            concurrency=_settings(ctx).resources_usage_concurrency,
            stop=ctx.stop,
        )
    ]


SPEC = ServiceSpec(
    name=ServiceName.RESOURCES,
    package="resources",
    bindings=bindings,
    background=background,
    lifespan=lifespan,
    settings_type=ResourcesSettings,
)

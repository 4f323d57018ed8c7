"""The embedder service: its adapters (Triton, our own or an external one), the gRPC
API, the work-queue worker and the backend monitor."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from embedder import metrics
from embedder.adapters.triton_client import TritonClient
from embedder.adapters.triton_host import TritonHost
from embedder.backend_monitor import BackendMonitor
from embedder.config import EmbedderSettings
from embedder.embedding import Embedder, Limits
from embedder.servicer import EmbedderServicer
from embedder.worker import EmbedWorker, consumer_spec
from kit.config import ServiceName
from kit.embedding_models import ModelRegistry
from kit.grpc.server import bind
from kit.logs import get_logger
from kit.runtime import ServiceContext, ServiceSpec
from vectorops.embedder.v1 import embedder_service_pb2_grpc

log = get_logger(__name__)


@dataclass
class EmbedderApp:
    embedder: Embedder
    worker: EmbedWorker
    monitor: BackendMonitor


def _limits(settings: EmbedderSettings) -> Limits:
    return Limits(
        max_texts=settings.embedder_max_texts,
        max_request_chars=settings.embedder_max_request_chars,
        max_in_flight_bulk=settings.embedder_max_in_flight_bulk,
        max_in_flight_queries=settings.embedder_max_in_flight_queries,
        query_queue_seconds=settings.embedder_query_queue_seconds,
        triton_timeout_seconds=settings.embedder_triton_timeout_seconds,
        query_hedge_seconds=settings.embedder_query_hedge_seconds or None,
    )


@asynccontextmanager
async def lifespan(ctx: ServiceContext) -> AsyncIterator[EmbedderApp]:
    settings: EmbedderSettings = ctx.settings  # type: ignore[assignment]
    registry = ModelRegistry().only(settings.model_names())
    with tempfile.TemporaryDirectory(prefix="vo-triton-") as work_dir:
        host = None
        url = settings.embedder_triton_url
        if url is None:
            # Our own Triton, serving the same model repository a production Triton loads.
            host = TritonHost(Path(work_dir), models=[m.triton_model for m in registry])
            log.info("embedder.starting_triton", models=host.models)
            host.start(timeout=settings.embedder_triton_start_timeout_seconds)
            url = host.url
        client = TritonClient(url)
        try:
            embedder = Embedder(registry, client, _limits(settings))
            instance = f"{socket.gethostname()}:{os.getpid()}"
            worker = EmbedWorker(
                embedder,
                ctx.bus,
                instance=instance,
                ack_wait_seconds=settings.embedder_queue_ack_wait_seconds,
            )
            monitor = BackendMonitor(
                client,
                registry,
                metrics.register_triton_stats(registry),
                poll_seconds=settings.embedder_health_poll_seconds,
            )
            yield EmbedderApp(embedder, worker, monitor)
        finally:
            await client.close()
            if host is not None:
                host.stop()


def bindings(ctx: ServiceContext):
    servicer = EmbedderServicer(ctx.app.embedder)
    return [bind(embedder_service_pb2_grpc, "EmbedderService", servicer)]


def background(ctx: ServiceContext):
    settings: EmbedderSettings = ctx.settings  # type: ignore[assignment]
    app: EmbedderApp = ctx.app
    assert ctx.server is not None
    return [
        app.monitor.run(ctx.server, ctx.stop),
        ctx.bus.consume(
            consumer_spec(settings.embedder_queue_ack_wait_seconds),
            app.worker.handle,
            concurrency=settings.embedder_queue_concurrency,
            stop=ctx.stop,
        ),
    ]


SPEC = ServiceSpec(
    name=ServiceName.EMBEDDER,
    package="embedder",
    bindings=bindings,
    background=background,
    lifespan=lifespan,
    settings_type=EmbedderSettings,
)

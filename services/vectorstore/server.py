"""The server: Qdrant's gRPC services over one ``Catalog``, ``grpc.health.v1``
beside them, and the life of the process (ready file, SIGTERM, closing shards).

``create_server(catalog, host, port) -> RunningServer`` binds port 0 for tests;
``serve`` runs until SIGTERM or SIGINT, then stops taking calls, lets those in
flight finish for the grace period, waits for running optimisations and closes
every shard (the engine flushes its WAL), so a restart opens the same data.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from qdrant_client import grpc as q

from kit.logs import get_logger
from vectorstore.catalog import Catalog
from vectorstore.collections_servicer import CollectionsServicer
from vectorstore.errors import refusing_the_rest
from vectorstore.points_servicer import PointsServicer

log = get_logger(__name__)

_OPTIONS = (
    # A 256-point upsert of 384-d vectors with payload text is a few MB.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)

TITLE = "qdrant - vectorops vectorstore (qdrant-edge engine)"


@refusing_the_rest
class QdrantServicer(q.QdrantServicer):
    """``qdrant.Qdrant/HealthCheck``: what qdrant-client asks for a version."""

    async def HealthCheck(
        self, request: q.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> q.HealthCheckReply:
        # The API we speak is qdrant-client's; the engine's version is in the title.
        return q.HealthCheckReply(
            title=f"{TITLE} {importlib.metadata.version('qdrant-edge-py')}",
            version=importlib.metadata.version("qdrant-client"),
        )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    catalog: Catalog

    async def shutdown(self, grace_seconds: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
        await self.catalog.close()


async def create_server(catalog: Catalog, host: str, port: int) -> RunningServer:
    """Start serving ``catalog`` on host:port (0: a free port), health SERVING."""
    await catalog.open()
    server = grpc.aio.server(options=_OPTIONS)
    q.add_CollectionsServicer_to_server(CollectionsServicer(catalog), server)
    q.add_PointsServicer_to_server(PointsServicer(catalog), server)
    q.add_QdrantServicer_to_server(QdrantServicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the vector store to {host}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, bound, health_servicer, catalog)


def write_ready_file(path: Path, port: int) -> None:
    """``{"port", "pid"}``, written then renamed: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"service": "vectorstore", "port": port, "pid": os.getpid()}))
    temporary.replace(path)


async def serve(
    data_dir: Path,
    host: str,
    port: int,
    ready_file: Path | None = None,
    grace_seconds: float = 10.0,
) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    running = await create_server(Catalog(data_dir), host, port)
    if ready_file is not None:
        write_ready_file(ready_file, running.port)
    log.info("vectorstore.serving", host=host, port=running.port, data_dir=str(data_dir))
    # Also on stdout, for whoever started us without a ready file.
    print(json.dumps({"vectorstore_port": running.port}), flush=True)
    await stopping.wait()
    log.info("vectorstore.stopping", grace_seconds=grace_seconds)
    await running.shutdown(grace_seconds)
    log.info("vectorstore.stopped")

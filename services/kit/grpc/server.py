"""``create_server(...) -> (server, port)``: one place where every service gets health,
reflection and the interceptors, and one graceful shutdown."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kit.auth import TokenAuthenticator
from kit.grpc.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    TraceInterceptor,
)
from kit.grpc.message_limits import DEFAULT_MAX_MESSAGE_BYTES, message_size_options
from kit.grpc.request_text import RequestTextInterceptor

# Keep the server's promises honest under load: keepalive for streams (and, per
# server, bounded message sizes).
_SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and the generated function that adds it to a server."""

    full_name: str  # e.g. "vectorops.orchestrator.v1.CollectionService"
    add_to_server: Callable[[grpc.aio.Server], None]


def bind(grpc_module: ModuleType, service: str, servicer: object) -> ServiceBinding:
    """The binding of ``servicer`` for ``service`` of a generated ``*_pb2_grpc`` module."""
    messages = importlib.import_module(grpc_module.__name__.removesuffix("_grpc"))
    full_name = messages.DESCRIPTOR.services_by_name[service].full_name
    add = getattr(grpc_module, f"add_{service}Servicer_to_server")
    return ServiceBinding(full_name, lambda server: add(servicer, server))


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def set_serving(self, serving: bool = True) -> None:
        """Report every service (and the server as a whole) as serving, or not."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def shutdown(self, grace_seconds: float) -> None:
        """Flip health to NOT_SERVING so balancers stop sending, then drain in-flight calls."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)


async def create_server(
    host: str,
    port: int,
    bindings: Sequence[ServiceBinding],
    authenticator: TokenAuthenticator,
    credentials: grpc.ServerCredentials | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> RunningServer:
    """Build and start a server on host:port (0 → a free port); health starts NOT_SERVING.
    With ``credentials`` it serves TLS only: no plaintext port is opened. A message
    over ``max_message_bytes`` is refused ``RESOURCE_EXHAUSTED``."""
    server = grpc.aio.server(
        interceptors=[
            TraceInterceptor(),
            MetricsInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(authenticator),
            RequestTextInterceptor(),
        ],
        options=_SERVER_OPTIONS + message_size_options(max_message_bytes),
    )
    for binding in bindings:
        binding.add_to_server(server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(binding.full_name for binding in bindings)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    address = f"{host}:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}")
    await server.start()
    return RunningServer(server=server, port=bound, health=health_servicer, service_names=names)

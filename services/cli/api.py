"""The public API as the CLI calls it: one channel per service, opened on first
use, the bearer token and a deadline on every call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from cli.settings import Settings
from kit.config import ServiceName
from kit.grpc.client import bearer
from vectorops.audit.v1 import audit_service_pb2_grpc
from vectorops.indexer.v1 import search_service_pb2_grpc
from vectorops.orchestrator.v1 import (
    collection_service_pb2_grpc,
    operation_service_pb2_grpc,
    token_service_pb2_grpc,
)
from vectorops.resources.v1 import resource_service_pb2_grpc

_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),)


class Api:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metadata = bearer(settings.token)
        self._channels: dict[ServiceName, grpc.Channel] = {}

    def _channel(self, service: ServiceName) -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = grpc.insecure_channel(
                self.settings.addresses[service], options=_OPTIONS
            )
        return self._channels[service]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    # -- stubs ----------------------------------------------------------------------------------

    @property
    def collections(self) -> collection_service_pb2_grpc.CollectionServiceStub:
        return collection_service_pb2_grpc.CollectionServiceStub(
            self._channel(ServiceName.ORCHESTRATOR)
        )

    @property
    def operations(self) -> operation_service_pb2_grpc.OperationServiceStub:
        return operation_service_pb2_grpc.OperationServiceStub(
            self._channel(ServiceName.ORCHESTRATOR)
        )

    @property
    def search(self) -> search_service_pb2_grpc.SearchServiceStub:
        return search_service_pb2_grpc.SearchServiceStub(self._channel(ServiceName.INDEXER))

    @property
    def resources(self) -> resource_service_pb2_grpc.ResourceServiceStub:
        return resource_service_pb2_grpc.ResourceServiceStub(self._channel(ServiceName.RESOURCES))

    @property
    def tokens(self) -> token_service_pb2_grpc.TokenServiceStub:
        return token_service_pb2_grpc.TokenServiceStub(self._channel(ServiceName.ORCHESTRATOR))

    @property
    def audit(self) -> audit_service_pb2_grpc.AuditServiceStub:
        return audit_service_pb2_grpc.AuditServiceStub(self._channel(ServiceName.AUDIT))

    # -- calls ----------------------------------------------------------------------------------

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        """A unary call with the token and the configured deadline."""
        return method(request, metadata=self.metadata, timeout=self.settings.timeout_seconds)

    def stream(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Iterator:
        """A server stream; ``timeout`` None waits as long as the stream lasts."""
        return method(request, metadata=self.metadata, timeout=timeout)

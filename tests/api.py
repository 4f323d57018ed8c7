"""A small client of the public gRPC API for end-to-end tests, as a backend team
would write one: stubs with a bearer token, and a watch that follows an operation
to its end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kit.config import ServiceName
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from vectorops.common.v1 import config_pb2, operation_pb2, source_pb2
from vectorops.indexer.v1 import (
    document_service_pb2,
    document_service_pb2_grpc,
    indexer_pb2,
    search_service_pb2,
    search_service_pb2_grpc,
)
from vectorops.orchestrator.v1 import (
    collection_service_pb2,
    collection_service_pb2_grpc,
    operation_service_pb2,
    operation_service_pb2_grpc,
    orchestrator_pb2,
)
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc, resources_pb2

TERMINAL = {
    operation_pb2.OPERATION_STATUS_COMPLETED,
    operation_pb2.OPERATION_STATUS_FAILED,
    operation_pb2.OPERATION_STATUS_CANCELLED,
}
HASH_MODEL = "vectorops/hash-bow-384"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def request_id() -> str:
    return str(uuid.uuid4())


def config(model: str = HASH_MODEL, chunk_size: int = 64, overlap: int = 8):
    return config_pb2.CollectionConfig(
        embedding_model=model, chunk_size=chunk_size, chunk_overlap=overlap
    )


def directory(path: str, include: list[str] | None = None) -> source_pb2.Source:
    return source_pb2.Source(
        directory=source_pb2.DirectorySource(path=path, include_globs=include or [])
    )


def error_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError(f"no ErrorInfo in {error.code()}: {error.details()}")


@dataclass
class Client:
    """Stubs of the orchestrator and the indexer with one caller's token."""

    stack: object
    token: str
    credentials: grpc.ChannelCredentials | None = None  # TLS; None: plaintext
    # Spread calls over every replica of a service (round robin), as the services
    # themselves do, so that losing one replica loses no call that can be retried.
    balanced: bool = False
    _channels: list[grpc.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metadata = (("authorization", f"Bearer {self.token}"),)
        orchestrator = self._channel(ServiceName.ORCHESTRATOR)
        indexer = self._channel(ServiceName.INDEXER)
        self.collections = collection_service_pb2_grpc.CollectionServiceStub(orchestrator)
        self.operations = operation_service_pb2_grpc.OperationServiceStub(orchestrator)
        self.search_stub = search_service_pb2_grpc.SearchServiceStub(indexer)
        self.documents = document_service_pb2_grpc.DocumentServiceStub(indexer)

    def _channel(self, service: ServiceName) -> grpc.Channel:
        target = self.stack.endpoints[service].target
        options: list[tuple[str, str]] = []
        if self.balanced:
            ports = [e.grpc_port for e in self.stack.replica_endpoints(service)]
            target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
            options.append(("grpc.lb_policy_name", "round_robin"))
        if self.credentials is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, self.credentials, options=options)
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    # -- collections --

    def create(self, name: str, cfg, sources=(), rid: str | None = None):
        return self.collections.CreateCollection(
            collection_service_pb2.CreateCollectionRequest(
                collection=orchestrator_pb2.Collection(name=name, config=cfg),
                sources=list(sources),
                request_id=rid or request_id(),
            ),
            metadata=self.metadata,
            timeout=30,
        )

    def get(self, collection_id: str):
        return self.collections.GetCollection(
            collection_service_pb2.GetCollectionRequest(collection_id=collection_id),
            metadata=self.metadata,
            timeout=30,
        ).collection

    def add_source(self, collection_id: str, source, rid: str | None = None):
        return self.collections.AddSource(
            collection_service_pb2.AddSourceRequest(
                collection_id=collection_id, source=source, request_id=rid or request_id()
            ),
            metadata=self.metadata,
            timeout=30,
        )

    def remove_source(self, collection_id: str, source_id: str):
        return self.collections.RemoveSource(
            collection_service_pb2.RemoveSourceRequest(
                collection_id=collection_id, source_id=source_id, request_id=request_id()
            ),
            metadata=self.metadata,
            timeout=30,
        ).operation

    def reindex(self, collection_id: str, cfg, expected_generation: int = 0, thresholds=None):
        return self.collections.ReindexCollection(
            collection_service_pb2.ReindexCollectionRequest(
                collection_id=collection_id,
                config=cfg,
                expected_generation=expected_generation,
                request_id=request_id(),
                thresholds=thresholds,
            ),
            metadata=self.metadata,
            timeout=30,
        ).operation

    def delete(self, collection_id: str):
        return self.collections.DeleteCollection(
            collection_service_pb2.DeleteCollectionRequest(
                collection_id=collection_id, request_id=request_id()
            ),
            metadata=self.metadata,
            timeout=30,
        ).operation

    # -- operations --

    def operation(self, operation_id: str):
        return self.operations.GetOperation(
            operation_service_pb2.GetOperationRequest(operation_id=operation_id),
            metadata=self.metadata,
            timeout=30,
        ).operation

    def watch(self, operation_id: str, timeout: float = 180) -> list:
        """Every update WatchOperation streams, to the terminal one (the last)."""
        updates = [
            response.operation
            for response in self.operations.WatchOperation(
                operation_service_pb2.WatchOperationRequest(operation_id=operation_id),
                metadata=self.metadata,
                timeout=timeout,
            )
        ]
        assert updates and updates[-1].status in TERMINAL, updates[-1:]
        return updates

    def finish(self, operation_id: str, timeout: float = 180):
        """Watch ``operation_id`` to its end and require it COMPLETED."""
        final = self.watch(operation_id, timeout)[-1]
        assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final
        return final

    # -- search and documents --

    def search(self, collection_id: str, query: str, top_k: int = 5, source_ids=()):
        return self.search_stub.Search(
            search_service_pb2.SearchRequest(
                collection_id=collection_id,
                query=query,
                top_k=top_k,
                with_text=True,
                filter=indexer_pb2.SearchFilter(source_ids=list(source_ids))
                if source_ids
                else None,
            ),
            metadata=self.metadata,
            timeout=30,
        )

    def list_documents(self, collection_id: str, source_id: str = "") -> list:
        found, token = [], ""
        while True:
            page = self.documents.ListDocuments(
                document_service_pb2.ListDocumentsRequest(
                    collection_id=collection_id, source_id=source_id, page_token=token
                ),
                metadata=self.metadata,
                timeout=30,
            )
            found += page.documents
            token = page.next_page_token
            if not token:
                return found


def eventually(check: Callable[[], Any], seconds: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


class Resources:
    """ResourceService and AuditService, with a caller's token."""

    def __init__(self, stack, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)
        self._channels = [
            grpc.insecure_channel(stack.endpoints[service].target)
            for service in (ServiceName.RESOURCES, ServiceName.AUDIT)
        ]
        self.stub = resource_service_pb2_grpc.ResourceServiceStub(self._channels[0])
        self.audit = audit_service_pb2_grpc.AuditServiceStub(self._channels[1])

    def usage(self, owner: str) -> resources_pb2.Usage:
        return self.stub.GetUsage(
            resource_service_pb2.GetUsageRequest(owner_id=owner, include_collections=True),
            metadata=self.metadata,
            timeout=30,
        ).usage

    def set_quota(self, owner: str, **limits: int) -> None:
        """Set the named limits (``max_vectors=20``…) and only those."""
        self.stub.SetQuota(
            resource_service_pb2.SetQuotaRequest(
                quota=resources_pb2.Quota(owner_id=owner, **limits),
                update_mask=field_mask_pb2.FieldMask(paths=list(limits)),
                request_id=request_id(),
            ),
            metadata=self.metadata,
            timeout=30,
        )

    def reconcile(self, owner: str) -> resource_service_pb2.ReconcileUsageResponse:
        return self.stub.ReconcileUsage(
            resource_service_pb2.ReconcileUsageRequest(owner_id=owner, request_id=request_id()),
            metadata=self.metadata,
            timeout=60,
        )

    def audit_events(self, owner: str, action: str) -> list:
        return list(
            self.audit.ListAuditEvents(
                audit_service_pb2.ListAuditEventsRequest(
                    owner_id=owner, action=action, page_size=100
                ),
                metadata=self.metadata,
                timeout=30,
            ).events
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

"""Tenancy through the real stack, RPC by RPC.

The RPCs come from the running services themselves (server reflection on every
endpoint) and from the generated descriptors of ``protos/vectorops``, so an RPC
added later without a tenancy case below fails ``test_every_rpc_has_a_tenancy_case``.

Owner A (the dev user) has a collection, an operation, documents, audit events
and a run-time token. Owner B (a user whose token an admin creates through
TokenService) calls every RPC that names A's objects: each answers what it
answers for a random id (NOT_FOUND with the same reason, so existence does not
leak), or PERMISSION_DENIED where the RPC is not a user's, and A's state is
unchanged afterwards. Lists show B nothing of A's. An admin sees and acts on
A's objects; only the service role passes CompleteReindex's role check; a
missing or bogus token is UNAUTHENTICATED on every RPC of every service.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from api import Client, Resources, config, directory, error_reason, eventually, request_id
from corpus import write_text_corpus
from google.longrunning import operations_pb2 as lro
from google.longrunning import operations_pb2_grpc
from google.protobuf import descriptor_pool, field_mask_pb2, message_factory, text_format
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import vectorops
from kit.config import ServiceName
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from vectorops.common.v1 import operation_pb2, principal_pb2
from vectorops.indexer.v1 import (
    document_service_pb2,
    search_service_pb2,
    usage_service_pb2,
    usage_service_pb2_grpc,
)
from vectorops.orchestrator.v1 import (
    collection_service_pb2,
    operation_service_pb2,
    orchestrator_pb2,
    reindex_control_service_pb2,
    reindex_control_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc, resources_pb2

pytestmark = pytest.mark.integration

Code = grpc.StatusCode

# Infrastructure any client may call without a token; no owner data behind it.
PUBLIC = {
    "grpc.health.v1.Health": "serving status only",
    "grpc.reflection.v1alpha.ServerReflection": "the schema, the same for everyone",
    "grpc.reflection.v1.ServerReflection": "the schema, the same for everyone",
}

# RPCs that name no per-owner object, so there is nothing of A's to reach: one line why.
NO_OWNER_OBJECT = {
    "/vectorops.embedder.v1.EmbedderService/Embed": "stateless: embeds the caller's own texts",
    "/vectorops.embedder.v1.EmbedderService/GetModelInfo": "the shared model catalogue",
    "/vectorops.embedder.v1.EmbedderService/ListModels": "the shared model catalogue",
}


@dataclass(frozen=True)
class Ids:
    """The objects a probe names: A's real ones, or random ones of nobody."""

    owner_id: str
    collection_id: str
    operation_id: str
    source_id: str
    document_id: str
    audit_event_id: str
    token_id: str
    staging_collection: str

    @classmethod
    def random(cls) -> Ids:
        return cls(
            owner_id=f"nobody-{uuid.uuid4().hex[:8]}",
            collection_id=str(uuid.uuid4()),
            operation_id=str(uuid.uuid4()),
            source_id=str(uuid.uuid4()),
            document_id=str(uuid.uuid4()),
            audit_event_id=str(uuid.uuid4()),
            token_id=str(uuid.uuid4()),
            staging_collection=f"vo_{uuid.uuid4().hex}",
        )

    def values(self) -> list[str]:
        return list(self.__dict__.values())


class Caller:
    """Stubs of every service with one principal's token."""

    def __init__(self, stack, token: str) -> None:
        self.client = Client(stack, token)
        self.md = self.client.metadata
        self.source_root = ""  # a directory under the stack's source roots
        self.resources = Resources(stack, token)
        self._channels = [
            grpc.insecure_channel(stack.endpoints[ServiceName.ORCHESTRATOR].target),
            grpc.insecure_channel(stack.endpoints[ServiceName.INDEXER].target),
        ]
        self.lro = operations_pb2_grpc.OperationsStub(self._channels[0])
        self.control = reindex_control_service_pb2_grpc.ReindexControlServiceStub(self._channels[0])
        self.tokens = token_service_pb2_grpc.TokenServiceStub(self._channels[0])
        self.usage = usage_service_pb2_grpc.UsageServiceStub(self._channels[1])

    @property
    def collections(self):
        return self.client.collections

    @property
    def operations(self):
        return self.client.operations

    @property
    def quota(self) -> resource_service_pb2_grpc.ResourceServiceStub:
        return self.resources.stub

    @property
    def audit(self) -> audit_service_pb2_grpc.AuditServiceStub:
        return self.resources.audit

    def close(self) -> None:
        self.client.close()
        self.resources.close()
        for channel in self._channels:
            channel.close()


# -- the probes: one per RPC, naming the objects of ``ids`` --

T = 30  # seconds, every probe's deadline


def _upload(c: Caller, ids: Ids):
    header = collection_service_pb2.UploadHeader(
        collection_id=ids.collection_id, request_id=request_id(), display_name="b's upload"
    )
    chunk = collection_service_pb2.DocumentChunk(path="b.txt", data=b"from b", last=True)
    return c.collections.UploadDocuments(
        iter(
            [
                collection_service_pb2.UploadDocumentsRequest(header=header),
                collection_service_pb2.UploadDocumentsRequest(chunk=chunk),
            ]
        ),
        metadata=c.md,
        timeout=T,
    )


def _complete_reindex(c: Caller, ids: Ids):
    return c.control.CompleteReindex(
        reindex_control_service_pb2.CompleteReindexRequest(
            operation_id=ids.operation_id,
            collection_id=ids.collection_id,
            expected_generation=1,
            staging_collection=ids.staging_collection,
            validation=operation_pb2.ValidationResult(passed=True),
            request_id=request_id(),
        ),
        metadata=c.md,
        timeout=T,
    )


Probe = Callable[[Caller, Ids], Any]

cs, os_, ds, ss, rs, au = (
    collection_service_pb2,
    operation_service_pb2,
    document_service_pb2,
    search_service_pb2,
    resource_service_pb2,
    audit_service_pb2,
)

# Full method → (probe, the code a user who is not the owner gets; OK: an answer, the same
# as for random ids, showing nothing of A's).
CASES: dict[str, tuple[Probe, Code]] = {
    # CollectionService
    "/vectorops.orchestrator.v1.CollectionService/CreateCollection": (
        lambda c, i: c.collections.CreateCollection(
            cs.CreateCollectionRequest(
                collection=orchestrator_pb2.Collection(name="b-in-a", config=config()),
                owner_id=i.owner_id,
                request_id=request_id(),
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.orchestrator.v1.CollectionService/GetCollection": (
        lambda c, i: c.collections.GetCollection(
            cs.GetCollectionRequest(collection_id=i.collection_id), metadata=c.md, timeout=T
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.CollectionService/ListCollections": (
        lambda c, i: c.collections.ListCollections(
            cs.ListCollectionsRequest(page_size=1000), metadata=c.md, timeout=T
        ),
        Code.OK,
    ),
    "/vectorops.orchestrator.v1.CollectionService/UpdateCollection": (
        lambda c, i: c.collections.UpdateCollection(
            cs.UpdateCollectionRequest(
                collection=orchestrator_pb2.Collection(id=i.collection_id, description="by b"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                request_id=request_id(),
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.CollectionService/DeleteCollection": (
        lambda c, i: c.collections.DeleteCollection(
            cs.DeleteCollectionRequest(
                collection_id=i.collection_id, request_id=request_id(), force=True
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.CollectionService/AddSource": (
        lambda c, i: c.client.add_source(i.collection_id, directory(c.source_root)),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.CollectionService/RemoveSource": (
        lambda c, i: c.collections.RemoveSource(
            cs.RemoveSourceRequest(
                collection_id=i.collection_id, source_id=i.source_id, request_id=request_id()
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.CollectionService/ReindexCollection": (
        lambda c, i: c.client.reindex(i.collection_id, config(chunk_size=32, overlap=4)),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.CollectionService/UploadDocuments": (_upload, Code.NOT_FOUND),
    # OperationService
    "/vectorops.orchestrator.v1.OperationService/GetOperation": (
        lambda c, i: c.operations.GetOperation(
            os_.GetOperationRequest(operation_id=i.operation_id), metadata=c.md, timeout=T
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.OperationService/ListOperations": (
        lambda c, i: c.operations.ListOperations(
            os_.ListOperationsRequest(page_size=1000), metadata=c.md, timeout=T
        ),
        Code.OK,
    ),
    "/vectorops.orchestrator.v1.OperationService/WatchOperation": (
        lambda c, i: list(
            c.operations.WatchOperation(
                os_.WatchOperationRequest(operation_id=i.operation_id), metadata=c.md, timeout=T
            )
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.orchestrator.v1.OperationService/CancelOperation": (
        lambda c, i: c.operations.CancelOperation(
            os_.CancelOperationRequest(
                operation_id=i.operation_id, reason="b", request_id=request_id()
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.NOT_FOUND,
    ),
    # google.longrunning.Operations over the same operations
    "/google.longrunning.Operations/GetOperation": (
        lambda c, i: c.lro.GetOperation(
            lro.GetOperationRequest(name=f"operations/{i.operation_id}"), metadata=c.md, timeout=T
        ),
        Code.NOT_FOUND,
    ),
    "/google.longrunning.Operations/ListOperations": (
        lambda c, i: c.lro.ListOperations(
            lro.ListOperationsRequest(name="operations", page_size=1000), metadata=c.md, timeout=T
        ),
        Code.OK,
    ),
    "/google.longrunning.Operations/CancelOperation": (
        lambda c, i: c.lro.CancelOperation(
            lro.CancelOperationRequest(name=f"operations/{i.operation_id}"),
            metadata=c.md,
            timeout=T,
        ),
        Code.NOT_FOUND,
    ),
    # Never deleted, whoever asks: the same answer for every id.
    "/google.longrunning.Operations/DeleteOperation": (
        lambda c, i: c.lro.DeleteOperation(
            lro.DeleteOperationRequest(name=f"operations/{i.operation_id}"),
            metadata=c.md,
            timeout=T,
        ),
        Code.UNIMPLEMENTED,
    ),
    "/google.longrunning.Operations/WaitOperation": (
        lambda c, i: c.lro.WaitOperation(
            lro.WaitOperationRequest(name=f"operations/{i.operation_id}"), metadata=c.md, timeout=T
        ),
        Code.NOT_FOUND,
    ),
    # ReindexControlService: the service role's only
    "/vectorops.orchestrator.v1.ReindexControlService/CompleteReindex": (
        _complete_reindex,
        Code.PERMISSION_DENIED,
    ),
    # TokenService: admins only
    "/vectorops.orchestrator.v1.TokenService/CreateToken": (
        lambda c, i: c.tokens.CreateToken(
            token_service_pb2.CreateTokenRequest(
                principal_id=i.owner_id, role=principal_pb2.ROLE_USER, request_id=request_id()
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.orchestrator.v1.TokenService/ListTokens": (
        lambda c, i: c.tokens.ListTokens(
            token_service_pb2.ListTokensRequest(principal_id=i.owner_id), metadata=c.md, timeout=T
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.orchestrator.v1.TokenService/RevokeToken": (
        lambda c, i: c.tokens.RevokeToken(
            token_service_pb2.RevokeTokenRequest(token_id=i.token_id, request_id=request_id()),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    # SearchService: someone else's collection is skipped as if it did not exist
    "/vectorops.indexer.v1.SearchService/Search": (
        lambda c, i: c.client.search(i.collection_id, "alpha"),
        Code.NOT_FOUND,
    ),
    "/vectorops.indexer.v1.SearchService/SearchMulti": (
        lambda c, i: c.client.search_stub.SearchMulti(
            ss.SearchMultiRequest(collection_ids=[i.collection_id], query="alpha", top_k=5),
            metadata=c.md,
            timeout=T,
        ),
        Code.OK,
    ),
    # DocumentService
    "/vectorops.indexer.v1.DocumentService/GetDocument": (
        lambda c, i: c.client.documents.GetDocument(
            ds.GetDocumentRequest(collection_id=i.collection_id, document_id=i.document_id),
            metadata=c.md,
            timeout=T,
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.indexer.v1.DocumentService/ListDocuments": (
        lambda c, i: c.client.documents.ListDocuments(
            ds.ListDocumentsRequest(collection_id=i.collection_id), metadata=c.md, timeout=T
        ),
        Code.NOT_FOUND,
    ),
    # UsageService: internal (service or admin)
    "/vectorops.indexer.v1.UsageService/ListCollectionUsage": (
        lambda c, i: c.usage.ListCollectionUsage(
            usage_service_pb2.ListCollectionUsageRequest(owner_id=i.owner_id),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    # ResourceService: a user reads only their own figures; the rest is admin or service
    "/vectorops.resources.v1.ResourceService/GetQuota": (
        lambda c, i: c.quota.GetQuota(
            rs.GetQuotaRequest(owner_id=i.owner_id), metadata=c.md, timeout=T
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.resources.v1.ResourceService/SetQuota": (
        lambda c, i: c.quota.SetQuota(
            rs.SetQuotaRequest(
                quota=resources_pb2.Quota(owner_id=i.owner_id, max_vectors=1),
                update_mask=field_mask_pb2.FieldMask(paths=["max_vectors"]),
                request_id=request_id(),
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.resources.v1.ResourceService/Estimate": (
        lambda c, i: c.quota.Estimate(
            rs.EstimateRequest(owner_id=i.owner_id, document_count=1), metadata=c.md, timeout=T
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.resources.v1.ResourceService/Reserve": (
        lambda c, i: c.quota.Reserve(
            rs.ReserveRequest(
                operation_id=i.operation_id,
                owner_id=i.owner_id,
                collection_id=i.collection_id,
                vectors=1_000_000,
                request_id=request_id(),
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.resources.v1.ResourceService/Release": (
        lambda c, i: c.quota.Release(
            rs.ReleaseRequest(operation_id=i.operation_id, request_id=request_id()),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.resources.v1.ResourceService/GetUsage": (
        lambda c, i: c.quota.GetUsage(
            rs.GetUsageRequest(owner_id=i.owner_id, include_collections=True),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    "/vectorops.resources.v1.ResourceService/ReconcileUsage": (
        lambda c, i: c.quota.ReconcileUsage(
            rs.ReconcileUsageRequest(owner_id=i.owner_id, request_id=request_id()),
            metadata=c.md,
            timeout=T,
        ),
        Code.PERMISSION_DENIED,
    ),
    # AuditService
    "/vectorops.audit.v1.AuditService/ListAuditEvents": (
        lambda c, i: c.audit.ListAuditEvents(
            au.ListAuditEventsRequest(operation_id=i.operation_id, page_size=1000),
            metadata=c.md,
            timeout=T,
        ),
        Code.OK,
    ),
    "/vectorops.audit.v1.AuditService/GetAuditEvent": (
        lambda c, i: c.audit.GetAuditEvent(
            au.GetAuditEventRequest(event_id=i.audit_event_id), metadata=c.md, timeout=T
        ),
        Code.NOT_FOUND,
    ),
    "/vectorops.audit.v1.AuditService/VerifyChain": (
        lambda c, i: c.audit.VerifyChain(au.VerifyChainRequest(), metadata=c.md, timeout=T),
        Code.PERMISSION_DENIED,
    ),
}

# More ways to name A's objects through the same RPCs: filters of the lists.
FILTERED_LISTS: list[tuple[str, Probe, Code]] = [
    (
        "/vectorops.orchestrator.v1.CollectionService/ListCollections",
        lambda c, i: c.collections.ListCollections(
            cs.ListCollectionsRequest(owner_id=i.owner_id), metadata=c.md, timeout=T
        ),
        Code.OK,  # a user's owner_id filter is ignored: they list their own
    ),
    (
        "/vectorops.orchestrator.v1.OperationService/ListOperations",
        lambda c, i: c.operations.ListOperations(
            os_.ListOperationsRequest(collection_id=i.collection_id), metadata=c.md, timeout=T
        ),
        Code.OK,
    ),
    (
        "/google.longrunning.Operations/ListOperations",
        lambda c, i: c.lro.ListOperations(
            lro.ListOperationsRequest(
                name="operations", filter=f'collection_id="{i.collection_id}"'
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.OK,
    ),
    (
        "/vectorops.audit.v1.AuditService/ListAuditEvents",
        lambda c, i: c.audit.ListAuditEvents(
            au.ListAuditEventsRequest(owner_id=i.owner_id), metadata=c.md, timeout=T
        ),
        Code.PERMISSION_DENIED,
    ),
    (
        "/vectorops.audit.v1.AuditService/ListAuditEvents",
        lambda c, i: c.audit.ListAuditEvents(
            au.ListAuditEventsRequest(collection_id=i.collection_id), metadata=c.md, timeout=T
        ),
        Code.OK,
    ),
    (
        "/vectorops.audit.v1.AuditService/ListAuditEvents",
        lambda c, i: c.audit.ListAuditEvents(au.ListAuditEventsRequest(), metadata=c.md, timeout=T),
        Code.OK,
    ),
    (
        "/vectorops.indexer.v1.SearchService/SearchMulti",
        lambda c, i: c.client.search_stub.SearchMulti(
            ss.SearchMultiRequest(
                collection_ids=[i.collection_id, i.document_id], query="alpha", top_k=5
            ),
            metadata=c.md,
            timeout=T,
        ),
        Code.OK,
    ),
]
# An OK answer may repeat the ids its request named (SearchMulti's skipped entries).
ECHOES_REQUEST = {"/vectorops.indexer.v1.SearchService/SearchMulti"}


# -- what the stack serves --


def proto_services() -> set[str]:
    """Every service the generated ``vectorops`` descriptors define."""
    found = set()
    # A namespace package: pkgutil does not walk it, so the files are listed instead.
    for folder in map(Path, vectorops.__path__):
        for path in sorted(folder.rglob("*_pb2.py")):
            relative = path.relative_to(folder).with_suffix("")
            module = importlib.import_module(".".join(("vectorops", *relative.parts)))
            found |= {service.full_name for service in module.DESCRIPTOR.services_by_name.values()}
    return found


def served_services(stack) -> dict[str, ServiceName]:
    """Every service each endpoint names through server reflection → that endpoint."""
    served: dict[str, ServiceName] = {}
    for name in ServiceName:
        with grpc.insecure_channel(stack.endpoints[name].target) as channel:
            for service in ProtoReflectionDescriptorDatabase(channel).get_services():
                served[service] = name
    return served


def methods(service: str) -> list:
    proto_services()  # imports every generated module, so the default pool knows them
    return list(descriptor_pool.Default().FindServiceByName(service).methods)


def full_method(method) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


# -- fixtures: an admin, A, B, the service; A's objects --


def _a_state(a: Caller, ids: Ids) -> dict:
    collection = a.client.get(ids.collection_id)
    ops = a.operations.ListOperations(
        os_.ListOperationsRequest(collection_id=ids.collection_id, page_size=1000),
        metadata=a.md,
        timeout=T,
    ).operations
    documents = a.client.list_documents(ids.collection_id)
    usage = a.resources.usage(ids.owner_id)
    quota = a.quota.GetQuota(rs.GetQuotaRequest(), metadata=a.md, timeout=T).quota
    return {
        "collection": collection.SerializeToString(deterministic=True),
        "operations": sorted((op.id, op.status, op.update_time.ToJsonString()) for op in ops),
        "documents": sorted((d.id, d.content_sha256, d.chunk_count) for d in documents),
        "vectors": collection.vector_count,
        # A's other collections (other tests') may still be settling: this one's figures only.
        "usage": _collection_usage(usage, ids.collection_id),
        "quota": quota.SerializeToString(deterministic=True),
        "hits": [
            (h.document_id, h.chunk_index) for h in a.client.search(ids.collection_id, "alpha").hits
        ],
    }


def _collection_usage(usage, collection_id: str) -> list[tuple[int, int]]:
    return [
        (entry.vectors, entry.stored_bytes)
        for entry in usage.collection_usage
        if entry.collection_id == collection_id
    ]


def _works(caller: Caller) -> bool:
    try:
        caller.collections.ListCollections(cs.ListCollectionsRequest(), metadata=caller.md)
    except grpc.RpcError:
        return False
    return True


@pytest.fixture(scope="module")
def people(stack):
    admin = Caller(stack, stack.tokens.clear["admin"])
    b_owner = f"tenant-b-{uuid.uuid4().hex[:8]}"
    made = admin.tokens.CreateToken(
        token_service_pb2.CreateTokenRequest(
            principal_id=b_owner, role=principal_pb2.ROLE_USER, request_id=request_id()
        ),
        metadata=admin.md,
        timeout=T,
    )
    a = Caller(stack, stack.tokens.clear["user"])
    b = Caller(stack, made.bearer_token)
    service = Caller(stack, stack.tokens.clear["service"])
    root = stack.options.roots()[0] / f"tenancy-{uuid.uuid4().hex[:8]}"
    write_text_corpus(root, 3, 60)
    for caller in (admin, a, b, service):
        caller.source_root = str(root)
    # B's token reaches every service within about a second, its creation the audit log soon after.
    eventually(lambda: _works(b), 10)
    eventually(lambda: admin.resources.audit_events(b_owner, "token.create"), 30)
    yield admin, a, b, service
    for caller in (admin, a, b, service):
        caller.close()


@pytest.fixture(scope="module")
def a_ids(stack, people) -> Ids:
    admin, a, _b, _service = people
    made = a.client.create(f"tenancy-{uuid.uuid4().hex[:6]}", config(), [directory(a.source_root)])
    a.client.finish(made.operation.id)
    collection = a.client.get(made.collection.id)
    documents = a.client.list_documents(collection.id)
    # The indexer's usage event reaches the resources service after the operation ends.
    eventually(
        lambda: (
            _collection_usage(a.resources.usage(collection.owner_id), collection.id)
            == [(collection.vector_count, collection.stored_bytes)]
        ),
        30,
    )
    # The audit record travels through the outbox and JetStream.
    events = eventually(
        lambda: (
            admin.audit.ListAuditEvents(
                au.ListAuditEventsRequest(operation_id=made.operation.id, page_size=10),
                metadata=admin.md,
                timeout=T,
            ).events
        ),
        30,
    )
    token = admin.tokens.CreateToken(
        token_service_pb2.CreateTokenRequest(
            principal_id=collection.owner_id, role=principal_pb2.ROLE_USER, request_id=request_id()
        ),
        metadata=admin.md,
        timeout=T,
    )
    return Ids(
        owner_id=collection.owner_id,
        collection_id=collection.id,
        operation_id=made.operation.id,
        source_id=collection.sources[0].id,
        document_id=documents[0].id,
        audit_event_id=events[0].id,
        token_id=token.token.id,
        staging_collection=collection.physical_collection,
    )


# -- the tests --


def test_every_rpc_has_a_tenancy_case(stack) -> None:
    served = served_services(stack)
    missing = proto_services() - set(served)
    assert not missing, f"defined in protos but served nowhere: {missing}"
    covered = set(CASES) | set(NO_OWNER_OBJECT)
    rpcs = {
        full_method(method)
        for service in served
        if service not in PUBLIC
        for method in methods(service)
    }
    assert rpcs - covered == set(), "RPCs without a tenancy case"
    assert covered - rpcs == set(), "tenancy cases of RPCs nobody serves"
    assert set(CASES).isdisjoint(NO_OWNER_OBJECT)


def outcome(probe: Probe, caller: Caller, ids: Ids) -> tuple[Code, str, Any]:
    """(code, ErrorInfo reason, response or error message with the ids replaced):
    what ``caller`` gets naming ``ids``."""
    try:
        response = probe(caller, ids)
    except grpc.RpcError as error:
        message = error.details() or ""
        for value in ids.values():
            message = message.replace(value, "<id>")
        return error.code(), error_reason(error), message
    return Code.OK, "", response


def normalised(response: Any, ids: Ids) -> str:
    """The response as text, the ids its request named replaced, timings dropped."""
    text = "\n".join(
        line
        for item in (response if isinstance(response, list) else [response])
        for line in text_format.MessageToString(item).splitlines()
        if not line.strip().startswith(("took", "seconds:", "nanos:"))
    )
    for value in ids.values():
        text = text.replace(value, "<id>")
    return text


def _all_cases() -> list[tuple[str, Probe, Code]]:
    return [(method, probe, code) for method, (probe, code) in CASES.items()] + FILTERED_LISTS


def test_another_owner_reaches_nothing_of_a(people, a_ids) -> None:
    admin, a, b, _service = people
    before = _a_state(a, a_ids)
    wrong = []
    for method, probe, expected in _all_cases():
        nobody = Ids.random()
        code, reason, response = outcome(probe, b, a_ids)
        random_code, random_reason, random_response = outcome(probe, b, nobody)
        if code != expected or (code, reason) != (random_code, random_reason):
            wrong.append(f"{method}: A's ids {code.name} {reason}, random {random_code.name}")
            continue
        if code is not Code.OK:
            if response != random_response:
                wrong.append(f"{method}: {response!r} for A's ids, {random_response!r} for random")
            continue
        if normalised(response, a_ids) != normalised(random_response, nobody):
            wrong.append(f"{method}: answers A's ids unlike random ones")
        raw = response if isinstance(response, list) else [response]
        shown = "".join(text_format.MessageToString(item) for item in raw)
        if method not in ECHOES_REQUEST and any(value in shown for value in a_ids.values()):
            wrong.append(f"{method}: shows A's objects")
    assert not wrong, "\n".join(wrong)
    assert _a_state(a, a_ids) == before
    a_tokens = admin.tokens.ListTokens(
        token_service_pb2.ListTokensRequest(principal_id=a_ids.owner_id),
        metadata=admin.md,
        timeout=T,
    ).tokens
    assert [t.state for t in a_tokens if t.id == a_ids.token_id] == [
        token_service_pb2.TOKEN_STATE_ACTIVE
    ]


def test_an_admin_sees_and_acts_on_a_s_objects(people, a_ids) -> None:
    admin, a, _b, _service = people
    ids = a_ids
    assert admin.client.get(ids.collection_id).owner_id == ids.owner_id
    assert admin.client.operation(ids.operation_id).collection_id == ids.collection_id
    assert admin.client.watch(ids.operation_id, 30)[-1].id == ids.operation_id
    assert admin.lro.GetOperation(
        lro.GetOperationRequest(name=f"operations/{ids.operation_id}"), metadata=admin.md
    ).done
    listed = admin.collections.ListCollections(
        cs.ListCollectionsRequest(owner_id=ids.owner_id, page_size=1000), metadata=admin.md
    ).collections
    assert ids.collection_id in [c.id for c in listed]
    assert admin.client.search(ids.collection_id, "alpha").hits
    assert ids.document_id in [d.id for d in admin.client.list_documents(ids.collection_id)]
    event = admin.audit.GetAuditEvent(
        au.GetAuditEventRequest(event_id=ids.audit_event_id), metadata=admin.md
    ).event
    assert event.owner_id == ids.owner_id
    usage = admin.usage.ListCollectionUsage(
        usage_service_pb2.ListCollectionUsageRequest(owner_id=ids.owner_id), metadata=admin.md
    )
    assert ids.collection_id in [c.collection_id for c in usage.collections]
    assert admin.resources.usage(ids.owner_id).collections >= 1
    # Acting: the admin's change is the owner's to see.
    description = f"set by an admin {uuid.uuid4().hex[:6]}"
    admin.collections.UpdateCollection(
        cs.UpdateCollectionRequest(
            collection=orchestrator_pb2.Collection(id=ids.collection_id, description=description),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            request_id=request_id(),
        ),
        metadata=admin.md,
        timeout=T,
    )
    assert a.client.get(ids.collection_id).description == description


def test_only_the_service_role_may_complete_a_reindex(people, a_ids) -> None:
    admin, a, b, service = people
    for caller in (admin, a, b):
        code, reason, _ = outcome(_complete_reindex, caller, a_ids)
        assert (code, reason) == (Code.PERMISSION_DENIED, "PERMISSION_DENIED")
    # The service passes the role check: an unknown operation is then NOT_FOUND.
    code, _reason, _ = outcome(_complete_reindex, service, Ids.random())
    assert code == Code.NOT_FOUND


def _call_with(channel: grpc.Channel, method, metadata) -> Code:
    """Call ``method`` with an empty request and ``metadata``: the status code."""
    request = message_factory.GetMessageClass(method.input_type)()
    path = full_method(method)
    kind = (method.client_streaming, method.server_streaming)
    serialize = type(request).SerializeToString
    try:
        if kind == (False, False):
            channel.unary_unary(path, request_serializer=serialize)(
                request, metadata=metadata, timeout=T
            )
        elif kind == (False, True):
            list(
                channel.unary_stream(path, request_serializer=serialize)(
                    request, metadata=metadata, timeout=T
                )
            )
        elif kind == (True, False):
            channel.stream_unary(path, request_serializer=serialize)(
                iter([request]), metadata=metadata, timeout=T
            )
        else:
            list(
                channel.stream_stream(path, request_serializer=serialize)(
                    iter([request]), metadata=metadata, timeout=T
                )
            )
    except grpc.RpcError as error:
        return error.code()
    return Code.OK


def test_no_token_or_a_bogus_one_is_unauthenticated_everywhere(stack) -> None:
    credentials = {
        "no token": (),
        "bogus token": (("authorization", "Bearer vo_" + uuid.uuid4().hex),),
        "not a bearer": (("authorization", f"Basic {stack.tokens.clear['admin']}"),),
    }
    let_in = []
    checked = 0
    for service, endpoint in served_services(stack).items():
        if service in PUBLIC:
            continue
        with grpc.insecure_channel(stack.endpoints[endpoint].target) as channel:
            for method in methods(service):
                for what, metadata in credentials.items():
                    checked += 1
                    code = _call_with(channel, method, metadata)
                    if code != Code.UNAUTHENTICATED:
                        let_in.append(f"{full_method(method)} with {what}: {code.name}")
    assert checked >= 3 * len(CASES)
    assert not let_in, "\n".join(let_in)

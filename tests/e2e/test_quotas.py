"""Quotas through the real services: the orchestrator asks the resources service
before it accepts an operation. An owner with a small vector quota indexes a
small collection under it; an AddSource or a CreateCollection whose estimate
would pass the quota is refused RESOURCE_EXHAUSTED with the QuotaFailure
figures and creates nothing; a retry of the first request is still answered;
each refusal and the quota change are in the audit log; and the finished
operation's reservation is given back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from api import (
    HASH_MODEL,
    Client,
    Resources,
    config,
    directory,
    error_reason,
    eventually,
    request_id,
)
from corpus import write_text_corpus
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vectorops.common.v1 import audit_pb2, operation_pb2
from vectorops.orchestrator.v1 import (
    collection_service_pb2,
    operation_service_pb2,
    orchestrator_pb2,
)

pytestmark = pytest.mark.integration

MAX_VECTORS = 20  # the small collection takes a few; a source of 30 files cannot fit


@pytest.fixture
def admin(stack):
    api = Client(stack, stack.tokens.clear["admin"])
    yield api
    api.close()


@pytest.fixture
def owner() -> str:
    """An owner of this test alone, so its quota touches no other test."""
    return f"quota-owner-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def quotas(stack):
    reader = Resources(stack, stack.tokens.clear["admin"])
    yield reader
    reader.close()


def quota_refusal(call: Callable[[], Any]) -> tuple[dict[str, str], list]:
    """The ErrorInfo metadata and QuotaFailure violations of a refused call."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert error_reason(error) == "QUOTA_EXCEEDED"
    status = rpc_status.from_call(error)
    metadata, violations = {}, []
    for detail in status.details:
        info, failure = error_details_pb2.ErrorInfo(), error_details_pb2.QuotaFailure()
        if detail.Unpack(info):
            metadata = dict(info.metadata)
        elif detail.Unpack(failure):
            violations += failure.violations
    return metadata, violations


def operations_of(admin: Client, collection_id: str) -> list:
    return list(
        admin.operations.ListOperations(
            operation_service_pb2.ListOperationsRequest(collection_id=collection_id),
            metadata=admin.metadata,
            timeout=30,
        ).operations
    )


def collections_of(admin: Client, owner: str) -> list:
    return list(
        admin.collections.ListCollections(
            collection_service_pb2.ListCollectionsRequest(owner_id=owner),
            metadata=admin.metadata,
            timeout=30,
        ).collections
    )


def create_for(admin: Client, owner: str, name: str, sources, rid: str):
    return admin.collections.CreateCollection(
        collection_service_pb2.CreateCollectionRequest(
            collection=orchestrator_pb2.Collection(name=name, config=config(HASH_MODEL)),
            sources=list(sources),
            owner_id=owner,
            request_id=rid,
        ),
        metadata=admin.metadata,
        timeout=30,
    )


def test_over_quota_requests_are_refused_and_create_nothing(stack, admin, quotas, owner) -> None:
    root = stack.options.roots()[0] / f"quota-{uuid.uuid4().hex[:8]}"
    small, large = root / "small", root / "large"
    write_text_corpus(small, documents=3, words=20)
    write_text_corpus(large, documents=30, words=20, seed=11)
    quotas.set_quota(owner, max_vectors=MAX_VECTORS)

    # -- a small collection fits, indexes, and gives its reservation back --
    first_rid = request_id()
    created = create_for(admin, owner, "fits", [directory(str(small))], first_rid)
    admin.finish(created.operation.id)
    collection_id = created.collection.id
    usage = eventually(lambda: (u := quotas.usage(owner)).vectors > 0 and u)
    assert 0 < usage.vectors <= MAX_VECTORS
    idle = eventually(lambda: (u := quotas.usage(owner)).active_operations == 0 and u)
    assert idle.reserved_vectors == 0

    # -- an AddSource whose estimate passes the quota: refused, nothing started --
    before = admin.get(collection_id)
    metadata, violations = quota_refusal(
        lambda: admin.add_source(collection_id, directory(str(large)))
    )
    assert metadata["owner_id"] == owner and metadata["limit"] == "max_vectors"
    assert metadata["limit_value"] == str(MAX_VECTORS)
    assert int(metadata["usage"]) == usage.vectors
    assert int(metadata["usage"]) + int(metadata["requested"]) > MAX_VECTORS
    (violation,) = violations
    assert violation.subject == f"owner:{owner}"
    for figure in ("max_vectors", f"limit {MAX_VECTORS}", f"current {usage.vectors}", "requested"):
        assert figure in violation.description
    assert [op.id for op in operations_of(admin, collection_id)] == [created.operation.id]
    after = admin.get(collection_id)
    assert after.status == before.status == operation_pb2.COLLECTION_STATUS_READY
    assert [s.id for s in after.sources] == [s.id for s in before.sources]
    assert after.vector_count == before.vector_count

    # -- an over-quota CreateCollection creates no collection --
    quota_refusal(
        lambda: create_for(admin, owner, "too-big", [directory(str(large))], request_id())
    )
    assert [c.id for c in collections_of(admin, owner)] == [collection_id]

    # -- a retry of the first request is answered, not refused: it holds nothing new --
    retried = create_for(admin, owner, "fits", [directory(str(small))], first_rid)
    assert (retried.collection.id, retried.operation.id) == (collection_id, created.operation.id)
    assert quotas.usage(owner).active_operations == 0

    # -- the refusals and the quota change are audited --
    refusals = eventually(lambda: len(e := quotas.audit_events(owner, "quota.refused")) >= 2 and e)
    assert len(refusals) == 2
    assert all(e.outcome == audit_pb2.AUDIT_OUTCOME_DENIED for e in refusals)
    assert all(e.details["metadata"]["limit"] == "max_vectors" for e in refusals)
    assert refusals[0].collection_id == collection_id  # the AddSource's
    changes = eventually(lambda: quotas.audit_events(owner, "quota.set"))
    assert changes[0].outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS


def test_a_finished_append_gives_its_reservation_back(stack, admin, quotas, owner) -> None:
    root = stack.options.roots()[0] / f"quota-{uuid.uuid4().hex[:8]}"
    write_text_corpus(root / "a", documents=2, words=10)
    write_text_corpus(root / "b", documents=2, words=10, seed=3)
    created = create_for(admin, owner, "released", [directory(str(root / "a"))], request_id())
    admin.finish(created.operation.id)
    appended = admin.add_source(created.collection.id, directory(str(root / "b")))
    final = admin.finish(appended.operation.id)
    assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED
    usage = eventually(lambda: (u := quotas.usage(owner)).active_operations == 0 and u)
    assert (usage.reserved_vectors, usage.reserved_bytes) == (0, 0)

"""Usage through the real services: the indexer's usage events count an owner's
collections and what they store (an INDEX adds one, a DELETE takes it away);
max_collections refuses a second collection once the first one counts, with no
reservation live; and usage that a bogus event made drift is put right by
ReconcileUsage from the indexer's own figures, audited, admin only."""

from __future__ import annotations

import asyncio
import uuid
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

from kit.bus.jetstream import JetStream
from kit.bus.subjects import USAGE_DELTA
from kit.events import new_envelope
from vectorops.common.v1 import audit_pb2
from vectorops.events.v1 import usage_pb2
from vectorops.orchestrator.v1 import collection_service_pb2, orchestrator_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(stack):
    api = Client(stack, stack.tokens.clear["admin"])
    yield api
    api.close()


@pytest.fixture
def resources(stack):
    reader = Resources(stack, stack.tokens.clear["admin"])
    yield reader
    reader.close()


@pytest.fixture
def owner() -> str:
    """An owner of this test alone, so its usage and quota touch no other test."""
    return f"usage-owner-{uuid.uuid4().hex[:8]}"


def create_for(admin: Client, owner: str, name: str, folder) -> Any:
    return admin.collections.CreateCollection(
        collection_service_pb2.CreateCollectionRequest(
            collection=orchestrator_pb2.Collection(name=name, config=config(HASH_MODEL)),
            sources=[directory(str(folder))],
            owner_id=owner,
            request_id=request_id(),
        ),
        metadata=admin.metadata,
        timeout=30,
    )


def indexed(stack, admin: Client, owner: str, name: str, documents: int = 3):
    """A collection of ``owner`` whose INDEX completed: the collection as the
    orchestrator shows it."""
    folder = stack.options.roots()[0] / f"usage-{uuid.uuid4().hex[:8]}"
    write_text_corpus(folder, documents=documents, words=30)
    created = create_for(admin, owner, name, folder)
    admin.finish(created.operation.id)
    return admin.get(created.collection.id)


def figures(usage) -> tuple[int, int, int, int]:
    return usage.collections, usage.vectors, usage.stored_bytes, usage.documents


def publish_usage(stack, *deltas: usage_pb2.UsageDelta) -> None:
    """Put usage deltas on VO_USAGE as a (wrong) producer would."""

    async def publish() -> None:
        bus = await JetStream.connect(stack.nats_url, name="usage-drift-test")
        try:
            for delta in deltas:
                envelope = new_envelope(delta, producer="test", owner_id=delta.owner_id)
                await bus.publish(
                    USAGE_DELTA, envelope.SerializeToString(), msg_id=envelope.event_id
                )
        finally:
            await bus.close()

    asyncio.run(publish())


def test_an_index_counts_its_collection_and_a_delete_takes_it_away(
    stack, admin, resources, owner
) -> None:
    collection = indexed(stack, admin, owner, "counted")
    assert collection.vector_count > 0 and collection.document_count == 3

    usage = eventually(lambda: (u := resources.usage(owner)).collections == 1 and u)
    assert (usage.vectors, usage.documents) == (collection.vector_count, 3)
    assert usage.stored_bytes > 0
    [per] = usage.collection_usage
    assert per.collection_id == collection.id
    assert (per.vectors, per.stored_bytes, per.documents) == (
        usage.vectors,
        usage.stored_bytes,
        usage.documents,
    )

    admin.finish(admin.delete(collection.id).id)
    gone = eventually(lambda: (u := resources.usage(owner)).collections == 0 and u)
    assert figures(gone) == (0, 0, 0, 0)


def test_max_collections_refuses_a_second_collection_once_the_first_counts(
    stack, admin, resources, owner
) -> None:
    resources.set_quota(owner, max_collections=1)
    first = indexed(stack, admin, owner, "only-one")
    # Counted by its usage event, with its reservation given back: nothing else holds it.
    eventually(lambda: (u := resources.usage(owner)).collections == 1 and u.active_operations == 0)

    folder = stack.options.roots()[0] / f"usage-{uuid.uuid4().hex[:8]}"
    write_text_corpus(folder, documents=1, words=10)
    with pytest.raises(grpc.RpcError) as caught:
        create_for(admin, owner, "one-too-many", folder)
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert error_reason(error) == "QUOTA_EXCEEDED"
    failures = []
    for detail in rpc_status.from_call(error).details:
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            failures += failure.violations
    [violation] = failures
    assert violation.subject == f"owner:{owner}"
    assert "max_collections: limit 1, current 1" in violation.description

    listed = admin.collections.ListCollections(
        collection_service_pb2.ListCollectionsRequest(owner_id=owner),
        metadata=admin.metadata,
        timeout=30,
    ).collections
    assert [c.id for c in listed] == [first.id]
    assert resources.usage(owner).collections == 1


def test_reconcile_puts_drifted_usage_right_from_the_indexers_figures(
    stack, admin, resources, owner
) -> None:
    collection = indexed(stack, admin, owner, "drifting")
    truth = eventually(lambda: (u := resources.usage(owner)).collections == 1 and u)
    ghost = str(uuid.uuid4())  # a collection the indexer never knew

    publish_usage(
        stack,
        usage_pb2.UsageDelta(
            owner_id=owner,
            collection_id=collection.id,
            vectors_delta=1000,
            bytes_delta=4000,
            documents_delta=7,
            reason="bogus",
        ),
        usage_pb2.UsageDelta(
            owner_id=owner,
            collection_id=ghost,
            collections_delta=1,
            vectors_delta=5,
            reason="bogus",
        ),
    )
    drifted = eventually(lambda: (u := resources.usage(owner)).collections == 2 and u)
    assert drifted.vectors == truth.vectors + 1005

    # Only an admin may reconcile.
    user = Resources(stack, stack.tokens.clear["user"])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            user.reconcile(owner)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(caught.value) == "PERMISSION_DENIED"
    finally:
        user.close()
    assert figures(resources.usage(owner)) == figures(drifted)

    answer = resources.reconcile(owner)
    assert figures(answer.usage_before) == figures(drifted)
    assert figures(answer.usage_after) == figures(truth)
    by_id = {d.collection_id: d for d in answer.drifted_collections}
    assert sorted(by_id) == sorted([collection.id, ghost])
    wrong = by_id[collection.id]
    assert wrong.recorded.vectors == truth.vectors + 1000
    assert (wrong.measured.vectors, wrong.measured.documents) == (collection.vector_count, 3)
    assert by_id[ghost].HasField("recorded") and not by_id[ghost].HasField("measured")

    after = resources.usage(owner)
    assert figures(after) == figures(truth)
    assert (after.vectors, after.documents) == (collection.vector_count, 3)
    [per] = after.collection_usage
    assert per.collection_id == collection.id
    assert (per.vectors, per.stored_bytes, per.documents) == (
        wrong.measured.vectors,
        wrong.measured.stored_bytes,
        wrong.measured.documents,
    )

    # Nothing drifted any more: a second reconciliation changes nothing.
    again = resources.reconcile(owner)
    assert not again.drifted_collections
    assert figures(again.usage_before) == figures(again.usage_after) == figures(truth)

    records = eventually(
        lambda: len(e := resources.audit_events(owner, "usage.reconcile")) >= 2 and e
    )
    assert len(records) == 2
    assert all(r.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS for r in records)
    counts = sorted(r.details["drifted_collections"] for r in records)
    assert counts == [0, 2]

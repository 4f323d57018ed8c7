"""Quota admission in the orchestrator against the real resources service
(in-process beside it, real Postgres, real nats-server): an over-quota request
is refused RESOURCE_EXHAUSTED with the QuotaFailure and writes nothing, the
reservation is given back when the operation ends (and a request the
transaction refuses holds nothing), a retry is answered and never refused,
a deletion is never admitted, and an unreachable resources service refuses
UNAVAILABLE with nothing written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from orchestrator_harness import (
    ADMIN,
    ALICE,
    Orchestrator,
    collection,
    directory_source,
    refused,
    running_orchestrator,
)

from kit.stack.nats import NatsServer
from vectorops.orchestrator.v1 import collection_service_pb2 as api
from vectorops.orchestrator.v1 import operation_service_pb2
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc, resources_pb2

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """Commands published here must not reach the session stack's indexer."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def orch(
    database: str, private_nats: NatsServer, tmp_path: Path
) -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(database, private_nats.url, tmp_path) as running:
        yield running


class Resources:
    """The resources service the orchestrator asks, with the admin's token."""

    def __init__(self, orch: Orchestrator) -> None:
        self._channel = grpc.aio.insecure_channel(orch.app.settings.resources_address)
        self.stub = resource_service_pb2_grpc.ResourceServiceStub(self._channel)

    async def set_quota(self, owner: str, **limits: int) -> None:
        await self.stub.SetQuota(
            resource_service_pb2.SetQuotaRequest(
                quota=resources_pb2.Quota(owner_id=owner, **limits),
                update_mask=field_mask_pb2.FieldMask(paths=list(limits)),
                request_id=str(uuid.uuid4()),
            ),
            metadata=ADMIN,
        )

    async def usage(self, owner: str) -> resources_pb2.Usage:
        request = resource_service_pb2.GetUsageRequest(owner_id=owner)
        return (await self.stub.GetUsage(request, metadata=ADMIN)).usage

    async def close(self) -> None:
        await self._channel.close()


@pytest.fixture
async def resources(orch: Orchestrator) -> AsyncIterator[Resources]:
    client = Resources(orch)
    yield client
    await client.close()


async def create(orch: Orchestrator, name: str, request_id: str = "", sources=()):
    return await orch.collections.CreateCollection(
        api.CreateCollectionRequest(
            collection=collection(name),
            sources=list(sources),
            request_id=request_id or f"create-{name}",
        ),
        metadata=ALICE,
    )


async def written(orch: Orchestrator) -> tuple[int, int, int]:
    return (
        await orch.count("collections"),
        await orch.count("operations"),
        await orch.count("outbox"),
    )


async def test_an_over_quota_create_is_refused_and_writes_nothing(orch, resources) -> None:
    data = orch.directory("data")
    for number in range(12):
        (data / f"doc-{number}.txt").write_text("a few words of text\n" * 4)
    await resources.set_quota("alice", max_vectors=5)

    refusal = await refused(create(orch, "docs", sources=[directory_source(data)]))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert refusal.metadata["limit"] == "max_vectors" and refusal.metadata["limit_value"] == "5"
    assert refusal.metadata["usage"] == "0" and refusal.metadata["requested"] == "12"
    (violation,) = refusal.detail(error_details_pb2.QuotaFailure).violations
    assert violation.subject == "owner:alice" and "requested 12" in violation.description
    assert await written(orch) == (0, 0, 0)
    assert (await resources.usage("alice")).active_operations == 0

    # Fewer files (the globs choose them) fit.
    few = directory_source(data, ("doc-1.txt", "doc-2.txt"))
    created = await create(orch, "docs", "again", sources=[few])
    usage = await resources.usage("alice")
    assert (usage.active_operations, usage.reserved_vectors) == (1, 2)
    assert usage.reserved_bytes == 2 * len("a few words of text\n" * 4)
    await orch.finish(created.operation.id, T0)
    usage = await resources.usage("alice")
    assert (usage.active_operations, usage.reserved_vectors) == (0, 0)


async def test_the_concurrent_operations_limit_holds_until_an_operation_ends(
    orch, resources
) -> None:
    await resources.set_quota("alice", max_concurrent_operations=1)
    first = await create(orch, "first")
    refusal = await refused(create(orch, "second"))
    assert refusal.reason == "QUOTA_EXCEEDED"
    assert refusal.metadata["limit"] == "max_concurrent_operations"
    assert await orch.count("collections") == 1

    # A retry of the first request is answered from its first result, not refused.
    again = await create(orch, "first")
    assert (again.collection.id, again.operation.id) == (
        first.collection.id,
        first.operation.id,
    )
    # The operation's end gives the reservation back: the next request fits.
    await orch.finish(first.operation.id, T0)
    second = await create(orch, "second")
    assert (await resources.usage("alice")).active_operations == 1

    # An operation the collection could not start anyway answers the precondition,
    # although the quota is full too.
    busy = await refused(
        orch.collections.RemoveSource(
            api.RemoveSourceRequest(
                collection_id=second.collection.id, source_id=str(uuid.uuid4()), request_id="rm"
            ),
            metadata=ALICE,
        )
    )
    assert busy.reason == "OPERATION_IN_PROGRESS"

    # A request the transaction refuses holds nothing afterwards.
    await orch.finish(second.operation.id, T0)
    taken = await refused(create(orch, "second", request_id="another-request"))
    assert taken.reason == "COLLECTION_NAME_TAKEN"
    assert (await resources.usage("alice")).active_operations == 0


async def test_a_deletion_is_never_refused_for_quota(orch, resources) -> None:
    created = await create(orch, "docs")
    await orch.finish(created.operation.id, T0)
    await resources.set_quota("alice", max_concurrent_operations=0)
    assert (await refused(create(orch, "more"))).reason == "QUOTA_EXCEEDED"
    deleted = await orch.collections.DeleteCollection(
        api.DeleteCollectionRequest(collection_id=created.collection.id, request_id="del"),
        metadata=ALICE,
    )
    assert deleted.operation.collection_id == created.collection.id


async def test_a_cancelled_operation_gives_its_reservation_back(orch, resources) -> None:
    created = await create(orch, "docs")
    assert (await resources.usage("alice")).active_operations == 1
    await orch.operations.CancelOperation(
        operation_service_pb2.CancelOperationRequest(
            operation_id=created.operation.id, request_id="cancel"
        ),
        metadata=ALICE,
    )
    assert (await resources.usage("alice")).active_operations == 0


async def test_an_unreachable_resources_service_refuses_and_writes_nothing(
    database: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_orchestrator(
        database,
        private_nats.url,
        tmp_path,
        resources_address="127.0.0.1:1",
        orchestrator_resources_timeout_seconds=2,
    ) as orch:
        refusal = await refused(create(orch, "docs"))
        assert (refusal.code, refusal.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "BACKEND_UNAVAILABLE",
        )
        assert refusal.metadata == {"backend": "resources"}
        assert await written(orch) == (0, 0, 0)

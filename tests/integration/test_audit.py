"""The audit service against real Postgres and a real JetStream: the sink stores
sanitised records once, in order, on a hash chain that exposes tampering, and
AuditService lists them with filters, pages and per-owner visibility."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from prometheus_client import REGISTRY

from audit.adapters.audit_repository import AuditRepository
from audit.chain_monitor import ChainMonitor
from audit.servicer import AuditServicer
from audit.sink import AuditSink, consumer_spec
from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.bus.jetstream import JetStream
from kit.bus.topology import DEAD, Retention, StreamSpec
from kit.db.migrations import load_migrations, migrate
from kit.events import new_envelope
from kit.grpc.server import bind, create_server
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from vectorops.common.v1 import audit_pb2
from vectorops.events.v1 import audit_record_pb2

SCHEMA = "audit"
ADMIN, ALICE, BOB = (
    Principal("ops", Role.ADMIN),
    Principal("alice", Role.USER),
    Principal("bob", Role.USER),
)
NASTY = [
    "/home/alice/x",
    "/Users/bob",
    "C:\\Users\\carol",
    "dave@example.com",
    "/tmp/vo-123/secret.txt",
    "s3cr3t-value",
]


@pytest.fixture
async def pool(database: str):
    pool = await asyncpg.create_pool(
        database, min_size=1, max_size=8, server_settings={"search_path": SCHEMA}
    )
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("audit"))
    yield pool
    await pool.close()


@pytest.fixture
async def bus(nats_server):
    bus = await JetStream.connect(nats_server.url, name="audit-test")
    yield bus
    await bus.close()


@pytest.fixture
async def stream(bus: JetStream) -> StreamSpec:
    """A stream per test: the stack's own audit sink never sees these records."""
    name = f"T_AUDIT_{uuid.uuid4().hex[:8].upper()}"
    spec = StreamSpec(name, (f"t.{name.lower()}.>",), Retention.LIMITS)
    # VO_DEAD too: the sink dead-letters what it can never store.
    await bus.ensure_streams([spec, DEAD])
    return spec


class Sink:
    """The sink running in-process as a task that a test may kill and restart."""

    def __init__(self, bus: JetStream, pool: asyncpg.Pool, stream: StreamSpec) -> None:
        # A short ack wait: the message in flight when the sink is killed comes back soon.
        spec = consumer_spec(stream.name, f"sink-{stream.name}", stream.subjects[0])
        self.spec = replace(spec, ack_wait_seconds=2)
        self._bus, self._sink = bus, AuditSink(AuditRepository(pool, SCHEMA))
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            self._bus.consume(self.spec, self._sink.handle, fetch_timeout=0.2, stop=self.stop)
        )

    async def kill(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def sink(bus, pool, stream):
    sink = Sink(bus, pool, stream)
    sink.start()
    yield sink
    sink.stop.set()
    if sink.task is not None and not sink.task.done():
        await asyncio.wait_for(sink.task, 10)


def _record(
    action: str, details: dict | None = None, reason: str = ""
) -> audit_record_pb2.AuditRecord:
    record = audit_record_pb2.AuditRecord(
        action=action,
        outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS,
        service="orchestrator",
        request_id="req-1",
        reason=reason,
    )
    if details is not None:
        struct = struct_pb2.Struct()
        struct.update(details)
        record.details.CopyFrom(struct)
    return record


async def _publish(bus, stream, record, *, actor=ALICE, owner="alice", collection="c1", op="o1"):
    envelope = new_envelope(
        record,
        producer="test",
        actor=actor,
        owner_id=owner,
        collection_id=collection,
        operation_id=op,
    )
    subject = stream.subjects[0][:-1] + record.action
    await bus.publish(subject, envelope.SerializeToString(), msg_id=envelope.event_id)
    return envelope


async def _count(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM audit_events")


async def _wait_rows(pool, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (stored := await _count(pool)) < count:
        assert time.monotonic() < deadline, f"only {stored} of {count} rows stored"
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(pool):
    tokens = {"admin": ADMIN, "alice": ALICE, "bob": BOB}
    authenticator = TokenAuthenticator((digest(t), p) for t, p in tokens.items())
    binding = bind(
        audit_service_pb2_grpc, "AuditService", AuditServicer(AuditRepository(pool, SCHEMA))
    )
    running = await create_server("127.0.0.1", 0, [binding], authenticator)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = audit_service_pb2_grpc.AuditServiceStub(channel)

    def call(method: str, request, token: str = "admin"):
        return getattr(stub, method)(request, metadata=[("authorization", f"Bearer {token}")])

    yield call
    await channel.close()
    await running.shutdown(0)


async def test_stored_rows_carry_no_personal_data(bus, pool, stream, sink) -> None:
    details = {
        "source": "/home/alice/x/docs",
        "mac": "/Users/bob",
        "win": "C:\\Users\\carol\\stuff",
        "name": "report by dave@example.com",
        "scratch": "/tmp/vo-123/secret.txt",
        "api_token": "s3cr3t-value",
        "config": {
            "password": "s3cr3t-value",
            "nested": [{"secretKey": "s3cr3t-value", "ok": "/home/alice/x"}],
        },
    }
    await _publish(bus, stream, _record("source.add", details, reason="failed at /home/alice/x"))
    await _wait_rows(pool, 1)
    row = await pool.fetchrow("SELECT * FROM audit_events")
    text = json.dumps({k: str(v) for k, v in dict(row).items()})
    for nasty in NASTY:
        assert nasty not in text
    stored = json.loads(row["details"])
    assert "api_token" not in stored and "password" not in stored["config"]
    assert stored["config"]["nested"] == [{"ok": "<home>/x"}]
    assert stored["reason"].startswith("failed at <home>")


async def test_redelivered_event_is_stored_once_in_order_on_a_valid_chain(
    bus, pool, stream, sink, client
) -> None:
    first = await _publish(bus, stream, _record("collection.create"))
    # The same event id again past the server's dedup: a redelivery the sink must absorb.
    await bus.publish(stream.subjects[0][:-1] + "again", first.SerializeToString(), msg_id="other")
    second = await _publish(bus, stream, _record("operation.complete"))
    await _wait_rows(pool, 2)
    info = await bus.js.consumer_info(stream.name, sink.spec.durable)
    deadline = time.monotonic() + 10
    while info.num_ack_pending or info.num_pending:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        info = await bus.js.consumer_info(stream.name, sink.spec.durable)
    rows = await pool.fetch(
        "SELECT sequence, event_id, previous_hash, content_hash FROM audit_events ORDER BY sequence"
    )
    assert [str(r["event_id"]) for r in rows] == [first.event_id, second.event_id]
    assert [r["sequence"] for r in rows] == [1, 2]
    assert rows[1]["previous_hash"] == rows[0]["content_hash"]
    report = await client("VerifyChain", audit_service_pb2.VerifyChainRequest())
    assert report.ok and report.events_checked == 2 and report.last_hash == rows[1]["content_hash"]


async def test_rows_refuse_update_and_tampering_is_named_by_verify_chain(
    bus, pool, stream, sink, client
) -> None:
    for action in ("collection.create", "source.add", "operation.complete"):
        await _publish(bus, stream, _record(action))
    await _wait_rows(pool, 3)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("UPDATE audit_events SET action = 'x' WHERE sequence = 2")
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("DELETE FROM audit_events WHERE sequence = 2")
    # A malicious DBA disables the trigger, edits, and turns it back on.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        await conn.execute("UPDATE audit_events SET principal = 'nobody' WHERE sequence = 2")
        await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    report = await client("VerifyChain", audit_service_pb2.VerifyChainRequest())
    assert not report.ok
    assert report.first_broken_sequence == 2 and report.failure == "hash_mismatch"
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await client("VerifyChain", audit_service_pb2.VerifyChainRequest(), token="alice")
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_killed_sink_loses_nothing(bus, pool, stream, sink, client) -> None:
    for index in range(10):
        await _publish(bus, stream, _record("source.add", {"n": index, "big": 1e20, "f": 0.1}))
    await _wait_rows(pool, 1)
    await sink.kill()
    for index in range(10, 20):
        await _publish(bus, stream, _record("source.add", {"n": index}))
    sink.start()
    await _wait_rows(pool, 20)
    numbers = [
        json.loads(row["details"])["n"]
        for row in await pool.fetch("SELECT details FROM audit_events ORDER BY sequence")
    ]
    assert sorted(numbers) == list(range(20))
    # Numbers in details (1e20, 0.1) hash the same after the jsonb round trip.
    report = await client("VerifyChain", audit_service_pb2.VerifyChainRequest())
    assert report.ok and report.events_checked == 20


async def test_list_filters_pages_and_visibility(bus, pool, stream, sink, client) -> None:
    await _publish(bus, stream, _record("collection.create"), collection="a1")
    await _publish(bus, stream, _record("reindex.switch"), collection="a1", op="o2")
    await _publish(bus, stream, _record("reindex.start"), collection="a2")
    await _publish(
        bus, stream, _record("collection.create"), actor=BOB, owner="bob", collection="b1"
    )
    await _wait_rows(pool, 4)
    everything = await client("ListAuditEvents", audit_service_pb2.ListAuditEventsRequest())
    assert [e.sequence for e in everything.events] == [1, 2, 3, 4]
    mine = await client(
        "ListAuditEvents", audit_service_pb2.ListAuditEventsRequest(), token="alice"
    )
    assert {e.owner_id for e in mine.events} == {"alice"} and len(mine.events) == 3
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await client(
            "ListAuditEvents",
            audit_service_pb2.ListAuditEventsRequest(owner_id="bob"),
            token="alice",
        )
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    prefix = await client(
        "ListAuditEvents", audit_service_pb2.ListAuditEventsRequest(action="reindex.*")
    )
    assert [e.action for e in prefix.events] == ["reindex.switch", "reindex.start"]
    by_collection = await client(
        "ListAuditEvents",
        audit_service_pb2.ListAuditEventsRequest(collection_id="a1", operation_id="o2"),
    )
    assert [e.sequence for e in by_collection.events] == [2]
    by_principal = await client(
        "ListAuditEvents", audit_service_pb2.ListAuditEventsRequest(principal_id="bob")
    )
    assert [e.owner_id for e in by_principal.events] == ["bob"]
    denied_only = await client(
        "ListAuditEvents",
        audit_service_pb2.ListAuditEventsRequest(outcome=audit_pb2.AUDIT_OUTCOME_DENIED),
    )
    assert list(denied_only.events) == []
    late = everything.events[3].event_time
    after = await client(
        "ListAuditEvents", audit_service_pb2.ListAuditEventsRequest(start_time=late)
    )
    assert [e.sequence for e in after.events] == [4]
    seen, token = [], ""
    while True:
        page = await client(
            "ListAuditEvents",
            audit_service_pb2.ListAuditEventsRequest(
                page_size=3, page_token=token, descending=True
            ),
        )
        seen += [e.sequence for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seen == [4, 3, 2, 1]
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await client(
            "ListAuditEvents",
            audit_service_pb2.ListAuditEventsRequest(page_size=3, page_token=token or "eA=="),
        )
    assert bad_token.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    got = await client(
        "GetAuditEvent", audit_service_pb2.GetAuditEventRequest(event_id=everything.events[3].id)
    )
    assert got.event.hash == everything.events[3].hash
    for event_id, token_name in ((everything.events[3].id, "alice"), (str(uuid.uuid4()), "admin")):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client(
                "GetAuditEvent",
                audit_service_pb2.GetAuditEventRequest(event_id=event_id),
                token=token_name,
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND


async def test_unreadable_message_is_rejected_and_the_sink_goes_on(bus, pool, stream, sink) -> None:
    await bus.publish(stream.subjects[0][:-1] + "garbage", b"\xffnot an envelope", msg_id="junk")
    good = await _publish(bus, stream, _record("collection.create"))
    await _wait_rows(pool, 1)
    deadline = time.monotonic() + 10
    info = await bus.js.consumer_info(stream.name, sink.spec.durable)
    while info.num_ack_pending or info.num_pending:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        info = await bus.js.consumer_info(stream.name, sink.spec.durable)
    rows = await pool.fetch("SELECT event_id FROM audit_events")
    assert [str(r["event_id"]) for r in rows] == [good.event_id]
    assert info.num_redelivered == 0  # rejected at once, not retried


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_chain_monitor_reports_a_tampered_row_on_its_gauge(bus, pool, stream, sink) -> None:
    monitor = ChainMonitor(AuditRepository(pool, SCHEMA))
    for action in ("collection.create", "source.add"):
        await _publish(bus, stream, _record(action))
    await _wait_rows(pool, 2)
    assert await monitor.check_once()
    assert _gauge("vectorops_audit_chain_broken") == 0
    assert _gauge("vectorops_audit_chain_verified_sequence") == 2
    # The next check walks only what was appended since: row 3.
    await _publish(bus, stream, _record("operation.complete"))
    await _wait_rows(pool, 3)
    assert await monitor.check_once()
    assert _gauge("vectorops_audit_chain_verified_sequence") == 3
    # An edit of a row already verified is found by the full walk.
    original = await pool.fetchval("SELECT principal FROM audit_events WHERE sequence = 1")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        await conn.execute("UPDATE audit_events SET principal = 'nobody' WHERE sequence = 1")
        await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    assert await monitor.check_once()  # incremental: nothing new to walk
    assert not await monitor.check_once(full=True)
    assert _gauge("vectorops_audit_chain_broken") == 1
    assert not await monitor.check_once()  # broken: every check walks it all
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        await conn.execute("UPDATE audit_events SET principal = $1 WHERE sequence = 1", original)
        await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    assert await monitor.check_once()  # the row restored from a backup
    assert _gauge("vectorops_audit_chain_broken") == 0


async def test_two_sinks_appending_at_once_keep_one_chain_with_every_event_once(
    bus, pool, stream, client, database, nats_server
) -> None:
    """Two audit replicas (each its own pool and NATS connection) share the durable
    consumer: the chain head's row lock serialises their appends, so neither
    conflicts with the other (nothing is retried), and a repeated event id is
    stored once whichever replica meets it second."""
    other_pool = await asyncpg.create_pool(
        database, min_size=1, max_size=8, server_settings={"search_path": SCHEMA}
    )
    other_bus = await JetStream.connect(nats_server.url, name="audit-test-replica")
    spec = consumer_spec(stream.name, f"sink-{stream.name}", stream.subjects[0])
    published = [await _publish(bus, stream, _record("source.add", {"n": n})) for n in range(60)]
    for envelope in published[::6]:  # past the server's dedup: redeliveries to absorb
        again = stream.subjects[0][:-1] + "again"
        await bus.publish(again, envelope.SerializeToString(), msg_id=f"2-{envelope.event_id}")
    stored = [0, 0]
    stop = asyncio.Event()

    def replica(index: int, replica_bus: JetStream, replica_pool: asyncpg.Pool):
        sink = AuditSink(AuditRepository(replica_pool, SCHEMA))

        async def handle(delivery) -> None:
            await sink.handle(delivery)
            stored[index] += 1

        # As audit.server runs it: one message at a time per replica.
        return replica_bus.consume(spec, handle, fetch_timeout=0.2, stop=stop)

    tasks = [
        asyncio.create_task(replica(0, bus, pool)),
        asyncio.create_task(replica(1, other_bus, other_pool)),
    ]
    try:
        await _wait_rows(pool, len(published))
        deadline = time.monotonic() + 10
        info = await bus.js.consumer_info(stream.name, spec.durable)
        while info.num_ack_pending or info.num_pending:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
            info = await bus.js.consumer_info(stream.name, spec.durable)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        await other_bus.close()
        await other_pool.close()

    assert stored[0] > 0 and stored[1] > 0, f"one replica did all: {stored}"
    assert info.num_redelivered == 0  # no append conflicted with the other replica's
    rows = await pool.fetch("SELECT sequence, event_id FROM audit_events ORDER BY sequence")
    assert [r["sequence"] for r in rows] == list(range(1, len(published) + 1))
    assert sorted(str(r["event_id"]) for r in rows) == sorted(e.event_id for e in published)
    report = await client("VerifyChain", audit_service_pb2.VerifyChainRequest())
    assert report.ok and report.events_checked == len(published)

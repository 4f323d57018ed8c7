"""The transactional outbox against a real Postgres and a real JetStream.

An event written in a rolled-back transaction is never published; one written
in a committed transaction is published exactly once, even with two
dispatchers racing and a third one SIGKILLed in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from kit.bus.jetstream import JetStream
from kit.bus.topology import Retention, StreamSpec
from kit.db.migrations import load_migrations, migrate
from kit.outbox import OutboxDispatcher, enqueue
from kit.stack.nats import NatsServer

SCHEMA = "outboxtest"
CRASHING_DISPATCHER = Path(__file__).with_name("outbox_crashing_dispatcher.py")


async def _stream(bus: JetStream) -> StreamSpec:
    """A stream of its own per test, so counts see only this test's messages."""
    name = f"T_{uuid.uuid4().hex[:8].upper()}"
    spec = StreamSpec(name, (f"t.{name.lower()}.>",), Retention.LIMITS)
    await bus.ensure_streams([spec])
    return spec


async def _event_ids_in(bus: JetStream, spec: StreamSpec) -> list[str]:
    """The Nats-Msg-Id of every message in the stream, in order (duplicates kept)."""
    info = await bus.js.stream_info(spec.name)
    if info.state.messages == 0:
        return []
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await bus.js.get_msg(spec.name, seq)
        ids.append(message.headers["Nats-Msg-Id"])
    return ids


@pytest.fixture
async def pool(database: str):
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit"))
    yield pool
    await pool.close()


@pytest.fixture
async def bus(nats_server):
    bus = await JetStream.connect(nats_server.url, name="outbox-test")
    yield bus
    await bus.close()


async def _write(pool: asyncpg.Pool, subject: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    async with pool.acquire() as conn, conn.transaction():
        for event_id in ids:
            await enqueue(conn, SCHEMA, subject, event_id.bytes, event_id)
    return ids


async def test_enqueue_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the state change's transaction"):
            await enqueue(conn, SCHEMA, "t.x", b"", uuid.uuid4())


async def test_rolled_back_event_is_never_published(pool, bus) -> None:
    spec = await _stream(bus)
    subject = spec.subjects[0].replace(">", "evt")

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, SCHEMA, subject, b"never", uuid.uuid4())
            raise Abandon
    committed = await _write(pool, subject, 1)

    dispatcher = OutboxDispatcher(pool, bus, SCHEMA)
    while await dispatcher.dispatch_once():
        pass
    assert await _event_ids_in(bus, spec) == [str(committed[0])]


async def test_committed_events_published_exactly_once_despite_races_and_a_crash(
    pool,
    bus,
    database: str,
    nats_server,
) -> None:
    spec = await _stream(bus)
    subject = spec.subjects[0].replace(">", "evt")
    written = await _write(pool, subject, 300)

    # A dispatcher process claims a batch, publishes part of it, and is SIGKILLed
    # before it can mark anything: its transaction dies with its connection.
    crashed = subprocess.run(
        [sys.executable, str(CRASHING_DISPATCHER), database, nats_server.url, SCHEMA, "40"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert len(await _event_ids_in(bus, spec)) == 40  # published, never marked

    # Two dispatchers race over the rest, small batches so they interleave.
    first = OutboxDispatcher(pool, bus, SCHEMA, batch_size=7)
    second = OutboxDispatcher(pool, bus, SCHEMA, batch_size=7)

    async def drain(dispatcher: OutboxDispatcher) -> int:
        total = 0
        while sent := await dispatcher.dispatch_once():
            total += sent
        return total

    sent = await asyncio.gather(drain(first), drain(second))
    assert sum(sent) == 300  # every row marked once: the crashed batch was not marked
    assert all(count > 0 for count in sent), f"the dispatchers did not race: {sent}"

    published = await _event_ids_in(bus, spec)
    assert sorted(published) == sorted(str(event_id) for event_id in written)
    async with pool.acquire() as conn:
        unpublished = await conn.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL"
        )
    assert unpublished == 0


async def test_dispatcher_wakes_on_commit_without_waiting_for_its_poll(pool, bus) -> None:
    spec = await _stream(bus)
    subject = spec.subjects[0].replace(">", "evt")
    stop = asyncio.Event()
    dispatcher = OutboxDispatcher(pool, bus, SCHEMA, poll_seconds=30)
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.3)  # let it reach its (30 s) wait
        written = await _write(pool, subject, 1)
        for _ in range(50):
            if await _event_ids_in(bus, spec):
                break
            await asyncio.sleep(0.1)
        assert await _event_ids_in(bus, spec) == [str(written[0])]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _until_published(bus: JetStream, spec: StreamSpec, count: int) -> list[str]:
    for _ in range(300):
        published = await _event_ids_in(bus, spec)
        if len(published) >= count:
            return published
        await asyncio.sleep(0.1)
    return await _event_ids_in(bus, spec)


async def test_events_committed_while_nats_is_down_are_published_once_it_is_back(
    pool, infra_dir: Path
) -> None:
    """A SIGKILLed nats-server, restarted on its port with its store: the rows the
    dispatcher could not publish meanwhile stay, and go out once it is back, each
    once (a publish buffered during the outage and retried is deduplicated)."""
    server = NatsServer(infra_dir / f"nats-outage-{uuid.uuid4().hex[:6]}", port=0)
    server.start()
    bus = await JetStream.connect(server.url, name="outbox-outage-test")
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        spec = await _stream(bus)
        subject = spec.subjects[0].replace(">", "evt")
        task = asyncio.create_task(OutboxDispatcher(pool, bus, SCHEMA, poll_seconds=0.1).run(stop))
        before = await _write(pool, subject, 5)
        assert len(await _until_published(bus, spec, 5)) == 5
        url = server.url

        server.kill()
        during = await _write(pool, subject, 20)
        failed = 0
        for _ in range(200):  # a publish waits out its own timeout before it fails
            async with pool.acquire() as conn:
                failed = await conn.fetchval(
                    f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL "
                    "AND last_error IS NOT NULL AND event_id = ANY($1)",
                    during,
                )
            if failed:
                break
            await asyncio.sleep(0.1)
        assert failed >= 1, "the dispatcher did not try while NATS was down"

        server.start()
        assert server.url == url  # same port: the clients reconnect by themselves
        published = await _until_published(bus, spec, 25)
        assert sorted(published) == sorted(str(event_id) for event_id in before + during)
        async with pool.acquire() as conn:
            unpublished = await conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.outbox "
                "WHERE published_at IS NULL AND event_id = ANY($1)",
                during,
            )
        assert unpublished == 0
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 20)
        await bus.close()
        server.stop()

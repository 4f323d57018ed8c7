"""Two orchestrator replicas side by side against one Postgres and one nats-server.

Each replica has its own connection pool and its own NATS connection, as two
processes would; what they share is only what the deployment shares. What must
hold: the worker's events, pulled by both from one durable consumer, apply in
the order they were published (no step refused as out of order); two reapers on
the same stuck operations fail each once and send one cancel; a watcher on one
replica hears a change another replica applied. (Two outbox dispatchers
publishing each row once: tests/integration/test_outbox.py; concurrent
CompleteReindex calls switching once: test_orchestrator_reindex.py.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from indexer_events import OWNER, dead_letters, eventually, figures, handled, send_all, whole_run

from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream
from kit.bus.topology import ALL_STREAMS, EVENTS
from kit.db.migrations import load_migrations, migrate
from kit.db.pool import connect_pool
from kit.events import parse_envelope
from kit.stack.nats import NatsServer
from orchestrator.adapters.records import OperationRecord, SourceSpec
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.domain import step_events
from orchestrator.domain.operations import ErrorType, OperationStatus
from orchestrator.event_consumer import OperationEventConsumer, events_consumer, no_outbox
from orchestrator.reaper import Reaper
from orchestrator.watch import OperationWatcher

SCHEMA = "orchestrator"
CONFIG = {"embedding_model": "vectorops/hash-bow-384", "dimension": 384, "chunk_size": 256}
LONG_AGO = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
async def pools(database: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """One pool per replica over the same database."""
    pools = [await connect_pool(database, SCHEMA, max_size=4) for _ in range(2)]
    async with pools[0].acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("orchestrator"))
    yield pools
    for pool in pools:
        await pool.close()


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of this module's own: a new durable replays VO_EVENTS from the
    start, and on the session's server that is every earlier test's events, some
    of which wait out retry delays that, one event at a time, outlast the test."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def buses(own_nats: NatsServer) -> AsyncIterator[list[JetStream]]:
    """One NATS connection per replica (the first also publishes as the indexer)."""
    buses = [await JetStream.connect(own_nats.url, name=f"orch-{i}") for i in range(2)]
    await buses[0].ensure_streams(ALL_STREAMS)
    yield buses
    for bus in buses:
        await bus.close()


async def create(repo: OrchestratorRepository, name: str) -> OperationRecord:
    """A collection and its INDEX operation; no command is sent (no indexer here)."""
    _, op, _ = await repo.create_collection_with_operation(
        OWNER,
        name,
        CONFIG,
        f"create-{name}",
        f"hash-{name}",
        [SourceSpec("directory", "/data/a")],
        LONG_AGO,
        [],
    )
    return op


async def finalize_figures(repo: OrchestratorRepository, op: OperationRecord) -> dict:
    collection = await repo.get_collection(op.operation.collection_id, OWNER)
    return figures({source.id: 1 for source in collection.sources})


async def test_events_pulled_by_two_replicas_apply_in_order(pools, buses) -> None:
    durable = f"orchestrator-events-{uuid.uuid4().hex[:10]}"
    spec = events_consumer(durable)
    handled_by: Counter[int] = Counter()
    stop = asyncio.Event()

    def replica(index: int):
        consumer = OperationEventConsumer(OrchestratorRepository(pools[index], SCHEMA))

        async def handle(delivery: Delivery) -> None:
            if index == 0:
                # The slower replica (a pause, a far network): without a global
                # order, the other one would apply the next event first.
                await asyncio.sleep(0.05)
            await consumer.handle(delivery)
            handled_by[index] += 1

        # As ``orchestrator.background`` runs it: one message at a time per replica.
        return buses[index].consume(spec, handle, concurrency=1, fetch_timeout=0.2, stop=stop)

    repo = OrchestratorRepository(pools[0], SCHEMA)
    ops = [await create(repo, f"docs-{i}") for i in range(10)]
    # Published before the replicas start, so each finds a backlog to share.
    # One operation's events after another's, as one indexer runs each: neighbours
    # in the stream are consecutive steps that the two replicas would take at once.
    events = [event for op in ops for event in whole_run(op, await finalize_figures(repo, op))]
    last = await send_all(buses[0], events)
    tasks = [asyncio.create_task(replica(i)) for i in range(2)]
    try:
        await handled(buses[0], EVENTS.name, durable, last)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)

    assert handled_by[0] > 0 and handled_by[1] > 0, f"one replica did all: {handled_by}"
    for op in ops:
        assert await dead_letters(buses[0], durable, op.id) == 0  # nothing refused
        record = await repo.get_operation(op.id, OWNER)
        assert record.operation.status is OperationStatus.COMPLETED, record.operation


async def test_two_reapers_fail_each_stuck_operation_once(pools) -> None:
    repos = [OrchestratorRepository(pool, SCHEMA) for pool in pools]
    ops = [await create(repos[0], f"stuck-{i}") for i in range(12)]
    for op in ops[::2]:  # half were picked up, then went silent
        await repos[0].apply(op.id, step_events.begin("create_collection", LONG_AGO), no_outbox)
    reapers = [Reaper(repo, timedelta(seconds=60), interval_seconds=3600) for repo in repos]

    reaped = await asyncio.gather(*(reaper.reap_once() for reaper in reapers))

    expected = {op.id for op in ops}
    assert set(reaped[0]) | set(reaped[1]) == expected
    assert not set(reaped[0]) & set(reaped[1]), "an operation was reaped by both"
    for op in ops:
        record = await repos[0].get_operation(op.id, OWNER)
        assert record.operation.status is OperationStatus.FAILED
        assert record.operation.error.type is ErrorType.STUCK
    rows = await pools[0].fetch(
        f"SELECT payload FROM {SCHEMA}.outbox WHERE subject = $1", subjects.CANCEL
    )
    cancelled = Counter(parse_envelope(row["payload"]).operation_id for row in rows)
    assert cancelled == Counter(expected), "one cancel command per reaped operation"


async def test_a_watcher_on_one_replica_hears_a_change_applied_by_another(
    pools, database: str
) -> None:
    applier = OrchestratorRepository(pools[0], SCHEMA)  # replica A
    op = await create(applier, "watched")
    watcher = OperationWatcher(database, applier.change_channel)  # replica B's
    await watcher.start()
    try:
        with watcher.subscribe(op.id) as changed:
            await applier.apply(
                op.id, step_events.begin("create_collection", datetime.now(UTC)), no_outbox
            )
            # Woken by the notification, well before any poll would re-read.
            await asyncio.wait_for(changed.wait(), timeout=5)
        reader = OrchestratorRepository(pools[1], SCHEMA)
        record = await reader.get_operation(op.id, OWNER)
        assert record.operation.current_step == "create_collection"

        async def unsubscribed() -> bool:
            return watcher.waiting == 0

        await eventually(unsubscribed, "the stream's subscription to end")
    finally:
        await watcher.stop()

"""The orchestrator's event side against a real Postgres and a real nats-server:
the background loops (``orchestrator.background``) run in-process, and the tests
publish the indexer's events exactly as the indexer does (kit subjects, the
deterministic message ids, envelopes). Each test has its own database and its
own durable consumer names, so it reads the shared streams independently."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from indexer_events import (
    OWNER,
    dead_letters,
    dead_letters_settled,
    eventually,
    figures,
    handled,
    operation_cancelled,
    operation_completed,
    operation_failed,
    progress_event,
    send,
    send_all,
    step_completed,
    step_started,
    whole_run,
)

from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream, Reject, Retry
from kit.bus.topology import ALL_STREAMS, ConsumerSpec, Retention, StreamSpec
from kit.db.migrations import load_migrations, migrate
from kit.db.pool import connect_pool
from kit.events import new_envelope, parse_envelope, unpack
from kit.outbox import OutboxDispatcher
from kit.runtime import ServiceContext
from orchestrator.adapters.records import (
    CollectionRecord,
    OperationRecord,
    ResourceFigures,
    SourceSpec,
)
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.background import background
from orchestrator.config import OrchestratorSettings
from orchestrator.domain import step_events
from orchestrator.domain.operations import (
    STEPS,
    CollectionStatus,
    ErrorType,
    OperationStatus,
    OperationType,
    Progress,
)
from orchestrator.event_consumer import OperationEventConsumer, no_outbox
from orchestrator.reaper import Reaper
from vectorops.events.v1 import commands_pb2

SCHEMA = "orchestrator"
CONFIG = {"embedding_model": "vectorops/hash-bow-384", "dimension": 384, "chunk_size": 256}
# Far enough back that the reaper, asked to, sees these operations as silent.
LONG_AGO = datetime.now(UTC) - timedelta(hours=1)
NEVER = 10**9  # seconds: a reaper that never fires within a test


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(database, SCHEMA, max_size=6)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("orchestrator"))
    yield pool
    await pool.close()


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[JetStream]:
    bus = await JetStream.connect(nats_server.url, name="indexer-under-test")
    await bus.ensure_streams(ALL_STREAMS)
    yield bus
    await bus.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> OrchestratorRepository:
    return OrchestratorRepository(pool, SCHEMA)


@dataclass
class Loops:
    """The orchestrator's background loops (and its outbox dispatcher), running."""

    ctx: ServiceContext
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def events_durable(self) -> str:
        return self.ctx.settings.orchestrator_events_consumer

    @property
    def dead_durable(self) -> str:
        return self.ctx.settings.orchestrator_dead_consumer

    async def stop(self) -> None:
        self.ctx.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 15)  # raises if a loop died


@pytest.fixture
async def start(pool, bus) -> AsyncIterator[Callable[..., Awaitable[Loops]]]:
    """Start the loops as the runtime does; the same names on every call of one test,
    so a second start resumes the first one's durable consumers."""
    suffix = uuid.uuid4().hex[:10]
    running: list[Loops] = []

    async def start_loops(**overrides: Any) -> Loops:
        values = {
            "orchestrator_events_consumer": f"orchestrator-events-{suffix}",
            "orchestrator_dead_consumer": f"orchestrator-dead-{suffix}",
            "orchestrator_stuck_after_seconds": NEVER,
            "orchestrator_reaper_interval_seconds": NEVER,
        }
        settings = OrchestratorSettings(**{**values, **overrides})
        ctx = ServiceContext(settings=settings, pool=pool, bus=bus, schema=SCHEMA)
        loops = Loops(ctx)
        dispatcher = OutboxDispatcher(pool, bus, SCHEMA, poll_seconds=0.1)
        for work in [*background(ctx), dispatcher.run(ctx.stop)]:
            loops.tasks.append(asyncio.create_task(work))
        running.append(loops)
        return loops

    yield start_loops
    for loops in running:
        if not loops.ctx.stop.is_set():
            await loops.stop()


# --- collections and operations, through the repository -----------------------------------


async def create(
    repo: OrchestratorRepository, name: str = "docs", paths: tuple[str, ...] = ("/data/a",)
) -> tuple[CollectionRecord, OperationRecord]:
    # No command in the outbox: no indexer should pick these operations up.
    collection, op, _ = await repo.create_collection_with_operation(
        OWNER,
        name,
        CONFIG,
        f"create-{name}",
        f"hash-{name}",
        [SourceSpec("directory", path) for path in paths],
        LONG_AGO,
        [],
    )
    return collection, op


async def ready(
    repo: OrchestratorRepository, name: str = "docs", paths: tuple[str, ...] = ("/data/a",)
) -> CollectionRecord:
    """A READY collection, its INDEX completed through the same transitions."""
    collection, op = await create(repo, name, paths)
    counts = {source.id: 1 for source in collection.sources}
    for step in STEPS[OperationType.INDEX]:
        state = figures(counts) if step == "finalize" else {}
        await repo.apply(op.id, step_events.complete(step, state, None, LONG_AGO), no_outbox)
    return await repo.get_collection(collection.id, OWNER)


async def start_op(
    repo: OrchestratorRepository,
    collection: CollectionRecord,
    kind: OperationType,
    **extra: Any,
) -> OperationRecord:
    _, op, _ = await repo.start_operation(
        collection.id, OWNER, kind, None, f"{kind.value}-{uuid.uuid4()}", "h", LONG_AGO, [], **extra
    )
    return op


def source_ids(collection: CollectionRecord, *paths: str) -> list[str]:
    """Sources by path (created in one transaction, they share a creation time)."""
    by_path = {source.path: source.id for source in collection.sources}
    return [by_path[path] for path in paths]


async def source_rows(pool: asyncpg.Pool, collection_id: str) -> dict[str, tuple[str, int]]:
    rows = await pool.fetch(
        f"SELECT id, status, document_count FROM {SCHEMA}.sources WHERE collection_id = $1",
        uuid.UUID(collection_id),
    )
    return {str(row["id"]): (row["status"], row["document_count"]) for row in rows}


# --- the tests ------------------------------------------------------------------------------


async def test_index_steps_complete_the_operation_with_the_finalize_figures(
    repo, pool, bus, start
) -> None:
    collection, op = await create(repo, paths=("/data/a", "/data/b"))
    a, b = source_ids(collection, "/data/a", "/data/b")
    loops = await start()
    seq = await send_all(bus, whole_run(op, figures({a: 2, b: 1}, vectors=12, stored=4096)))
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)

    done = await repo.get_operation(op.id, OWNER)
    assert done.operation.status is OperationStatus.COMPLETED
    assert list(done.operation.checkpoints) == ["create_collection", "ingest", "finalize"]
    assert done.operation.progress.percent == 100.0
    assert done.operation.progress.documents_done == 3  # the last step's figures
    assert done.resources == ResourceFigures(2.5, 1.25, 1 << 20, 3, 12, 4096)
    after = await repo.get_collection(collection.id, OWNER)
    assert after.status is CollectionStatus.READY and after.active_operation_id is None
    assert (after.document_count, after.vector_count, after.stored_bytes) == (3, 12, 4096)
    assert {s.id: s.document_count for s in after.sources} == {a: 2, b: 1}
    assert await dead_letters(bus, loops.events_durable, op.id) == 0


async def test_redelivered_and_duplicated_events_change_nothing(repo, bus, start) -> None:
    collection, op = await create(repo)
    run = whole_run(op, figures({collection.sources[0].id: 3}))
    loops = await start()
    await handled(bus, "VO_EVENTS", loops.events_durable, await send_all(bus, run))
    first_op = await repo.get_operation(op.id, OWNER)
    first_collection = await repo.get_collection(collection.id, OWNER)
    assert first_op.operation.status is OperationStatus.COMPLETED

    # The same message ids: the server drops every one within its window.
    subject, payload, msg_id = run[0]
    envelope = new_envelope(payload, producer="indexer", operation_id=op.id)
    assert (await bus.publish(subject, envelope.SerializeToString(), msg_id=msg_id)).duplicate
    # New ids (a re-run worker re-announcing its recorded steps): handled, idempotently.
    seq = await send_all(bus, run, again=".again")
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)
    assert await repo.get_operation(op.id, OWNER) == first_op
    assert await repo.get_collection(collection.id, OWNER) == first_collection
    assert await dead_letters(bus, loops.events_durable, op.id) == 0


async def test_out_of_order_and_junk_events_are_dead_lettered_without_effect(
    repo, bus, start
) -> None:
    collection, op = await create(repo)
    loops = await start()
    finalize = figures({collection.sources[0].id: 1})
    junk = [
        step_completed(op, "finalize", finalize),  # out of order: nothing done yet
        step_started(op, "no_such_step"),
        step_completed(op, "create_collection", {"tables": 1}),  # accepted
        step_completed(op, "create_collection", {"tables": 2}),  # a second, other checkpoint
    ]
    conflicting = junk[3]
    junk[3] = (conflicting[0], conflicting[1], conflicting[2] + ".other")
    await send_all(bus, junk)
    await bus.publish(subjects.STEP_STARTED, b"not an envelope", msg_id=str(uuid.uuid4()))
    wrong_type = new_envelope(commands_pb2.IndexCommand(operation_id=op.id), producer="x")
    await bus.publish(
        subjects.OPERATION_COMPLETED, wrong_type.SerializeToString(), msg_id=str(uuid.uuid4())
    )
    # An operation this orchestrator does not know: acked, not a dead letter.
    stranger = step_started(op, "create_collection")[1]
    stranger.operation_id = str(uuid.uuid4())
    seq = await send(bus, subjects.STEP_STARTED, stranger, str(uuid.uuid4()))
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)

    assert await dead_letters(bus, loops.events_durable) == 5
    await dead_letters_settled(bus, loops.dead_durable)
    # Its own consumer's dead letters do not fail the operation either.
    after = (await repo.get_operation(op.id, OWNER)).operation
    assert after.status is OperationStatus.PROCESSING and after.error is None
    assert after.checkpoints == {"create_collection": {"tables": 1.0}}
    assert after.current_step == "create_collection"
    assert (await repo.get_collection(collection.id, OWNER)).status is CollectionStatus.PENDING


@pytest.mark.parametrize(
    ("kind", "mapped"),
    [
        (OperationType.INDEX, CollectionStatus.ERROR),
        (OperationType.APPEND, CollectionStatus.PARTIALLY_READY),
        (OperationType.REMOVE_SOURCE, CollectionStatus.PARTIALLY_READY),
        (OperationType.DELETE, CollectionStatus.ERROR),
    ],
)
async def test_operation_failed_ends_failed_with_the_failure_mapping(
    repo, bus, start, kind: OperationType, mapped: CollectionStatus
) -> None:
    if kind is OperationType.INDEX:
        collection, op = await create(repo)
    else:
        collection = await ready(repo)
        extra: dict[str, Any] = {}
        if kind is OperationType.APPEND:
            extra["new_source"] = SourceSpec("directory", "/data/new")
        if kind is OperationType.REMOVE_SOURCE:
            extra["source_id"] = collection.sources[0].id
        op = await start_op(repo, collection, kind, **extra)
    first, second = op.operation.steps[:2]
    loops = await start()
    seq = await send_all(
        bus,
        [
            step_started(op, first),
            step_completed(op, first, {}),
            step_started(op, second),
            operation_failed(
                op, "SOMETHING_NEWER", "cannot open /home/alice/notes/a.md: denied", second
            ),
        ],
    )
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)

    failed = await repo.get_operation(op.id, OWNER)
    error = failed.operation.error
    assert failed.operation.status is OperationStatus.FAILED
    assert error.type is ErrorType.HANDLER_ERROR  # an unknown type from a newer worker
    assert error.step == second
    assert "/home/alice" not in error.message and "notes/a.md: denied" in error.message
    assert failed.resources.vectors == 12
    after = await repo.get_collection(collection.id, OWNER)
    assert after.status is mapped and after.status is not CollectionStatus.PROCESSING
    assert after.active_operation_id is None and "/home/alice" not in after.status_message


async def test_progress_is_recorded_and_counts_as_a_heartbeat(repo, bus, start) -> None:
    _, heard = await create(repo, "heard")
    _, silent = await create(repo, "silent")
    for op in (heard, silent):
        await repo.apply(op.id, step_events.begin("create_collection", LONG_AGO), no_outbox)
    loops = await start()
    seq = await send(bus, *progress_event(heard, step="ingest"))
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)

    record = await repo.get_operation(heard.id, OWNER)
    assert record.operation.progress == Progress(10, 4, 1, 2, 1, 16, 40.0)
    assert record.resources == ResourceFigures(2.5, 1.25, 1 << 20, 3, 12, 4096)
    # Progress.step does not move the current step: only step events do.
    assert record.operation.current_step == "create_collection"
    assert record.operation.updated_at > LONG_AGO + timedelta(minutes=30)
    # The same silence, without the progress report, is reaped.
    reaper = Reaper(repo, timedelta(minutes=5), interval_seconds=NEVER)
    assert await reaper.reap_once() == [silent.id]
    assert (await repo.get_operation(heard.id, OWNER)).operation.status is (
        OperationStatus.PROCESSING
    )


async def test_reaper_fails_silent_operations_and_sends_cancel_commands(
    repo, pool, bus, start
) -> None:
    cancels: list[commands_pb2.CancelOperationCommand] = []

    async def on_cancel(msg) -> None:
        cancels.append(unpack(parse_envelope(msg.data), commands_pb2.CancelOperationCommand))

    subscription = await bus.nc.subscribe(subjects.CANCEL, cb=on_cancel)
    running_index, running = await create(repo, "running")
    await repo.apply(running.id, step_events.begin("create_collection", LONG_AGO), no_outbox)
    pending_index, pending = await create(repo, "pending")  # never picked up
    appended = await ready(repo, "appended")
    append = await start_op(
        repo, appended, OperationType.APPEND, new_source=SourceSpec("directory", "/data/n")
    )
    await repo.apply(append.id, step_events.complete("scan", {}, None, LONG_AGO), no_outbox)
    await repo.apply(append.id, step_events.begin("ingest", LONG_AGO), no_outbox)
    expected = {running.id, pending.id, append.id}

    await start(orchestrator_stuck_after_seconds=60, orchestrator_reaper_interval_seconds=0.1)

    async def all_cancelled() -> bool:
        return expected <= {cancel.operation_id for cancel in cancels}

    await eventually(all_cancelled, "a cancel command for every reaped operation")
    await subscription.unsubscribe()
    ops = {op_id: (await repo.get_operation(op_id, OWNER)).operation for op_id in expected}
    assert {op.status for op in ops.values()} == {OperationStatus.FAILED}
    assert {op.error.type for op in ops.values()} == {ErrorType.STUCK}
    assert ops[running.id].error.message.startswith("no progress from the worker for ")
    assert ops[pending.id].error.message.startswith("no worker picked the operation up for ")
    assert ops[append.id].error.step == "ingest"
    reasons = {c.operation_id: c.reason for c in cancels if c.operation_id in expected}
    assert reasons[running.id].startswith("STUCK: no progress")
    statuses = {
        c.id: (await repo.get_collection(c.id, OWNER)).status
        for c in (running_index, pending_index, appended)
    }
    assert statuses == {
        running_index.id: CollectionStatus.ERROR,
        pending_index.id: CollectionStatus.ERROR,
        appended.id: CollectionStatus.PARTIALLY_READY,
    }
    # One cancel per reaped operation, however many rounds ran.
    assert len([c for c in cancels if c.operation_id in expected]) == 3


async def test_dead_letter_of_a_worker_fails_the_operation_retries_exhausted(
    repo, pool, bus, start
) -> None:
    collection = await ready(repo)
    op = await start_op(
        repo, collection, OperationType.APPEND, new_source=SourceSpec("directory", "/d/x")
    )
    loops = await start()
    # A worker's consumer gives up on the operation's command, the way kit does it.
    name = f"T_{uuid.uuid4().hex[:8].upper()}"
    stream = StreamSpec(name, (f"t.{name.lower()}.>",), Retention.WORK_QUEUE)
    await bus.ensure_streams([stream])
    worker = ConsumerSpec(name, "worker", (f"t.{name.lower()}.job",), max_deliver=1)
    command = new_envelope(
        commands_pb2.AppendCommand(operation_id=op.id),
        producer="orchestrator",
        operation_id=op.id,
        collection_id=collection.id,
        owner_id=OWNER,
    )
    loose = new_envelope(commands_pb2.AppendCommand(), producer="orchestrator")  # no ids
    gave_up = asyncio.Event()
    seen = 0

    async def refuse(_delivery: Delivery) -> None:
        nonlocal seen
        seen += 1
        if seen == 2:
            gave_up.set()
        raise Reject("store at /home/bob/vectors unreachable")

    for envelope in (loose, command):
        await bus.publish(
            f"t.{name.lower()}.job", envelope.SerializeToString(), msg_id=str(uuid.uuid4())
        )
    stop = asyncio.Event()
    consuming = asyncio.create_task(bus.consume(worker, refuse, fetch_timeout=0.2, stop=stop))
    try:
        await asyncio.wait_for(gave_up.wait(), 20)

        async def failed() -> bool:
            return (await repo.get_operation(op.id, OWNER)).operation.finished

        await eventually(failed, "the dead letter to fail the operation")
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        with contextlib.suppress(Exception):
            await bus.js.delete_stream(name)
    await dead_letters_settled(bus, loops.dead_durable)

    error = (await repo.get_operation(op.id, OWNER)).operation.error
    assert error.type is ErrorType.RETRIES_EXHAUSTED
    assert error.message.startswith(
        f"worker on {name} gave up on vectorops.events.v1.AppendCommand after 1 deliveries"
    )
    assert "/home/bob" not in error.message and "<home>/vectors" in error.message
    after = await repo.get_collection(collection.id, OWNER)
    assert after.status is CollectionStatus.PARTIALLY_READY and after.active_operation_id is None
    rows = await pool.fetch(f"SELECT subject, payload FROM {SCHEMA}.outbox")
    cancels = [
        unpack(parse_envelope(row["payload"]), commands_pb2.CancelOperationCommand)
        for row in rows
        if row["subject"] == subjects.CANCEL
    ]
    assert [c.operation_id for c in cancels] == [op.id]
    assert cancels[0].reason.startswith("RETRIES_EXHAUSTED: worker on")


async def test_remove_source_completion_removes_the_source_and_updates_counts(
    repo, pool, bus, start
) -> None:
    collection = await ready(repo, paths=("/data/a", "/data/b"))
    a, b = source_ids(collection, "/data/a", "/data/b")
    op = await start_op(repo, collection, OperationType.REMOVE_SOURCE, source_id=a)
    loops = await start()
    seq = await send_all(bus, whole_run(op, figures({b: 1}, vectors=4, stored=1024)))
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)

    assert (await repo.get_operation(op.id, OWNER)).operation.status is OperationStatus.COMPLETED
    after = await repo.get_collection(collection.id, OWNER)
    assert after.status is CollectionStatus.READY
    assert (after.document_count, after.vector_count, after.stored_bytes) == (1, 4, 1024)
    assert [s.id for s in after.sources] == [b]
    assert await source_rows(pool, collection.id) == {a: ("REMOVED", 0), b: ("ACTIVE", 1)}
    # The path is free again: the same directory can be added back.
    again = await start_op(
        repo, after, OperationType.APPEND, new_source=SourceSpec("directory", "/data/a")
    )
    assert again.source_id not in (a, b)


async def test_events_after_a_cancel_change_nothing(repo, pool, bus, start) -> None:
    collection = await ready(repo)
    op = await start_op(
        repo, collection, OperationType.APPEND, new_source=SourceSpec("directory", "/data/c")
    )
    loops = await start()
    seq = await send(bus, *step_started(op, "scan"))
    await handled(bus, "VO_EVENTS", loops.events_durable, seq)
    cancelled, _ = await repo.apply(op.id, lambda o: o.cancel(datetime.now(UTC)), no_outbox)
    assert cancelled.operation.status is OperationStatus.CANCELLED
    collection_then = await repo.get_collection(collection.id, OWNER)
    assert collection_then.status is CollectionStatus.READY  # the scan changed nothing

    late = [
        step_completed(op, "scan", {"files": 1}),
        step_started(op, "ingest"),
        progress_event(op),
        step_completed(op, "ingest", {}),
        operation_failed(op, "HANDLER_ERROR", "stopped", "ingest"),
        operation_completed(op),
        operation_cancelled(op),
    ]
    await handled(bus, "VO_EVENTS", loops.events_durable, await send_all(bus, late))
    assert await repo.get_operation(op.id, OWNER) == cancelled
    assert await repo.get_collection(collection.id, OWNER) == collection_then
    assert await dead_letters(bus, loops.events_durable, op.id) == 0


async def test_events_published_while_stopped_apply_after_a_restart(repo, bus, start) -> None:
    collection, op = await create(repo)
    run = whole_run(op, figures({collection.sources[0].id: 3}))
    loops = await start()
    await handled(bus, "VO_EVENTS", loops.events_durable, await send_all(bus, run[:2]))
    await loops.stop()
    seq = await send_all(bus, run[2:])
    assert (await repo.get_operation(op.id, OWNER)).operation.checkpoints == {
        "create_collection": {"step_no": 1.0}
    }
    restarted = await start()
    await handled(bus, "VO_EVENTS", restarted.events_durable, seq)
    assert (await repo.get_operation(op.id, OWNER)).operation.status is OperationStatus.COMPLETED
    assert (await repo.get_collection(collection.id, OWNER)).document_count == 3


async def test_postgres_unavailable_hands_the_event_back(repo, pool) -> None:
    _, op = await create(repo)
    subject, payload, _ = step_started(op, "create_collection")
    envelope = new_envelope(payload, producer="indexer", operation_id=op.id)
    delivery = Delivery(subject, envelope.SerializeToString(), {}, 1, False, None)
    await pool.close()
    with pytest.raises(Retry):
        await OperationEventConsumer(repo).handle(delivery)

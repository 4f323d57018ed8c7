"""The indexer's pieces in this process, shared by its integration tests
(``test_indexer_operations``, ``test_indexer_reindex``).

Real parts: a nats-server per test module (so the session stack's indexer does
not compete for ``indexer-commands``), an ``EmbedWorker`` on the session's
Triton serving the work queue, and a core NATS subscription on ``vo.>`` that
sees everything the indexer publishes, repeats included (JetStream drops a
repeated message id from the stream, not from the subject). A test module
takes the module-scoped fixtures by importing them (``own_nats``, ``bus``,
``embed_worker``); its own fixture builds an ``Indexer`` from the pieces.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from nats.aio.msg import Msg

from embedder.embedding import Embedder, Limits
from embedder.worker import EmbedWorker
from embedder.worker import consumer_spec as embed_consumer_spec
from indexer.adapters.document_repository import DocumentRepository
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.operation_journal import OperationJournal
from indexer.commands import DURABLE, CommandConsumer
from indexer.embed_queue import QueueEmbedder
from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS, COMMANDS
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import ModelRegistry
from kit.events import new_envelope, parse_envelope
from kit.stack.nats import NatsServer
from vectorops.common.v1 import config_pb2, source_pb2
from vectorops.events.v1 import commands_pb2, operation_events_pb2, usage_pb2

SCHEMA = "indexer"
MODEL = "vectorops/hash-bow-384"
PAYLOADS: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        operation_events_pb2.StepStarted,
        operation_events_pb2.StepCompleted,
        operation_events_pb2.OperationProgress,
        operation_events_pb2.OperationCompleted,
        operation_events_pb2.OperationFailed,
        operation_events_pb2.OperationCancelled,
        usage_pb2.UsageDelta,
    )
}


# --- the bus, the embedder and what the indexer says ------------------------------------


@pytest.fixture(scope="module")
def own_nats(infra_dir: Path):
    server = NatsServer(infra_dir / f"operations-nats-{uuid.uuid4().hex[:8]}")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def bus(own_nats) -> AsyncIterator[JetStream]:
    bus = await JetStream.connect(own_nats.url, name="indexer-operations-test")
    await bus.ensure_streams(ALL_STREAMS)
    yield bus
    await bus.close()


@pytest.fixture(scope="module")
async def embed_worker(bus: JetStream, triton_client) -> AsyncIterator[None]:
    """An embedder on the work queue, in this process."""
    limits = Limits(
        max_texts=256,
        max_request_chars=2_000_000,
        max_in_flight_bulk=4,
        max_in_flight_queries=4,
        query_queue_seconds=5.0,
        triton_timeout_seconds=30.0,
    )
    worker = EmbedWorker(
        Embedder(ModelRegistry(), triton_client, limits), bus, instance="test", ack_wait_seconds=30
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        bus.consume(embed_consumer_spec(30), worker.handle, concurrency=4, stop=stop)
    )
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


@dataclass(frozen=True)
class Event:
    subject: str
    event_id: str
    operation_id: str
    payload: Message

    @property
    def kind(self) -> str:
        return type(self.payload).__name__


class Collector:
    """Every message on ``vo.>`` (one subscription, so in the order NATS routed them)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._markers: set[str] = set()

    async def on_message(self, msg: Msg) -> None:
        if msg.subject.startswith("vo.test.marker."):
            self._markers.add(msg.subject)
            return
        if not msg.subject.startswith(("vo.evt.op.", "vo.evt.progress", "vo.usage.")):
            return
        envelope = parse_envelope(msg.data)
        payload = PAYLOADS[envelope.type]()
        envelope.payload.Unpack(payload)
        self.events.append(Event(msg.subject, envelope.event_id, envelope.operation_id, payload))

    def of(self, operation_id: str, kind: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e.operation_id == operation_id and (kind is None or e.kind == kind)
        ]

    async def drain(self, bus: JetStream) -> None:
        """Wait until everything published so far has been seen: a marker sent
        now arrives after it."""
        marker = f"vo.test.marker.{uuid.uuid4().hex}"
        await bus.nc.publish(marker, b"")
        await eventually(lambda: marker in self._markers, "the marker came back")


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


class Gate:
    """The queue embedder, with a latch: after ``hold_after(n)``, calls past the
    n-th wait for ``open()`` — a point mid-ingest (or mid-reprocessing) where the
    test can act. Every option of a call is passed on. It keeps the size and the
    sending time of each batch, and the most batches it saw out at once."""

    def __init__(self, queue: QueueEmbedder) -> None:
        self._queue = queue
        self._limit: int | None = None
        self._calls = 0
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        self.batch_sizes: list[int] = []
        self.sent_at: list[float] = []  # time.monotonic() of each batch
        self.most_at_once = 0
        self._out = 0

    def hold_after(self, calls: int) -> None:
        self._limit, self._calls = calls, 0
        self.held.clear()
        self._release.clear()

    def open(self) -> None:
        self._limit = None
        self._release.set()

    @asynccontextmanager
    async def for_operation(self, operation_id: str, collection_id: str):
        async with self._queue.for_operation(operation_id, collection_id) as embed:

            async def gated(model: str, texts: list[str], **options: Any):
                self._calls += 1
                self.batch_sizes.append(len(texts))
                self.sent_at.append(time.monotonic())
                self._out += 1
                self.most_at_once = max(self.most_at_once, self._out)
                try:
                    if self._limit is not None and self._calls > self._limit:
                        self.held.set()
                        await self._release.wait()
                    return await embed(model, texts, **options)
                finally:
                    self._out -= 1

            yield gated


# --- an indexer, without its gRPC server ------------------------------------------------


@dataclass
class Indexer:
    bus: JetStream
    repository: DocumentRepository
    journal: OperationJournal
    store: EdgeVectorStore
    gate: Gate
    consumer: CommandConsumer
    collector: Collector
    roots: Path
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # operation -> command's stream seq
    consuming: bool = False

    def start_consuming(self) -> None:
        if not self.consuming:
            self.consuming = True
            self.tasks.append(asyncio.create_task(self.consumer.run(self.bus, self.stop)))

    async def send(self, kind: str, command: Message) -> str:
        collection = command.collection
        envelope = new_envelope(
            command,
            producer="orchestrator",
            operation_id=command.operation_id,
            collection_id=collection.collection_id,
            owner_id=collection.owner_id,
        )
        ack = await self.bus.publish(
            subjects.command_subject(kind), envelope.SerializeToString(), msg_id=envelope.event_id
        )
        self.sequences[command.operation_id] = ack.seq
        return command.operation_id

    async def cancel(self, operation_id: str, collection_id: str) -> None:
        command = commands_pb2.CancelOperationCommand(
            operation_id=operation_id, collection_id=collection_id, reason="cancelled on request"
        )
        envelope = new_envelope(command, producer="orchestrator", operation_id=operation_id)
        await self.bus.publish(
            subjects.CANCEL, envelope.SerializeToString(), msg_id=envelope.event_id
        )

    async def settled(self, operation_id: str) -> list[Event]:
        """The command was acked, and everything published before is seen;
        returns the operation's events."""
        sequence = self.sequences[operation_id]

        async def acked() -> bool:
            info = await self.bus.js.consumer_info(COMMANDS.name, DURABLE)
            return info.ack_floor.stream_seq >= sequence

        await eventually(acked, f"the command of {operation_id} was acked")
        await self.collector.drain(self.bus)
        return self.collector.of(operation_id)

    async def run(self, kind: str, command: Message) -> list[Event]:
        return await self.settled(await self.send(kind, command))


async def migrated_pool(database: str) -> asyncpg.Pool:
    """A pool on ``database`` with the indexer's schema migrated."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("indexer"))
    return pool


# --- commands and what came of them -----------------------------------------------------


def snapshot(collection_id: str | None = None) -> commands_pb2.CollectionSnapshot:
    collection_id = collection_id or str(uuid.uuid4())
    hex_id = uuid.UUID(collection_id).hex
    return commands_pb2.CollectionSnapshot(
        collection_id=collection_id,
        owner_id="alice",
        alias_name=f"vo_{hex_id}",
        physical_collection=f"vo_{hex_id}_g1",
        generation=1,
        config=config_pb2.CollectionConfig(
            embedding_model=MODEL, dimension=384, chunk_size=24, chunk_overlap=4
        ),
    )


def directory(path: Path, source_id: str | None = None) -> source_pb2.Source:
    return source_pb2.Source(
        id=source_id or str(uuid.uuid4()),
        directory=source_pb2.DirectorySource(path=str(path)),
    )


def index_command(collection: commands_pb2.CollectionSnapshot, *sources: source_pb2.Source):
    return commands_pb2.IndexCommand(
        operation_id=str(uuid.uuid4()), collection=collection, sources=list(sources)
    )


def state(event: Event) -> dict[str, Any]:
    return MessageToDict(event.payload.checkpoint.state)


def completed_steps(events: list[Event]) -> dict[str, Event]:
    return {e.payload.step: e for e in events if e.kind == "StepCompleted"}


async def chunks_by_document(store: EdgeVectorStore, name: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    offset = None
    while True:
        page = await store.scroll(name, limit=256, offset=offset)
        for point in page.points:
            payload = point.payload or {}
            found[payload["document_id"]].append(payload["chunk_index"])
        if page.next_offset is None:
            return found
        offset = page.next_offset

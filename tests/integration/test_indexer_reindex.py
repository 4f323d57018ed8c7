"""A blue-green REINDEX on the indexer, from real commands, through its first
four checkpoints: preflight, staging, reprocessing, validation.

Real parts, as in ``test_indexer_operations`` (the bus, embedder and helpers
of ``indexer_harness``): a nats-server of this module's own, a fresh Postgres
database per test, Qdrant's embedded engine in a temp dir, documents embedded
through the work queue by an in-process ``EmbedWorker`` on the session's
Triton; here also the embedder's gRPC service (in-process, same Triton) for the
validation probes, and the resources service (in-process, its own database)
that the preflight reserves the staging copy with.

No orchestrator runs here, so these tests stop before the switch: the
operation is paused right after it announced its validation (the real event
publisher, holding on), checked, then cancelled — the cancel the orchestrator
accepts until the switch — which must delete the staging collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from indexer_harness import (
    MODEL,
    SCHEMA,
    Collector,
    Event,
    Gate,
    Indexer,
    chunks_by_document,
    completed_steps,
    directory,
    eventually,
    index_command,
    migrated_pool,
    snapshot,
    state,
)

# This module's own nats-server, its bus and an embedder on its work queue
# (module-scoped: one set per module).
from indexer_harness import bus as bus
from indexer_harness import embed_worker as embed_worker
from indexer_harness import own_nats as own_nats
from prometheus_client import REGISTRY

from embedder.embedding import Embedder, Limits
from embedder.servicer import EmbedderServicer
from indexer.adapters.document_repository import DocumentRepository
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.embedder_client import EmbedderClient, QueryEmbeddings
from indexer.adapters.operation_journal import OperationJournal
from indexer.adapters.reindex_repository import ReindexRepository
from indexer.adapters.resources_client import ResourcesClient
from indexer.adapters.tokenizers import tokenizer_for
from indexer.cancellations import Cancellations, CancelListener
from indexer.commands import CommandConsumer, consumer_spec
from indexer.domain.chunking import chunk
from indexer.domain.documents import document_id
from indexer.domain.staging import parse_staging
from indexer.embed_queue import QueueEmbedder
from indexer.extraction import extract
from indexer.operation_events import OperationEvents
from indexer.operation_runner import OperationRunner
from indexer.operations.base import OperationOrder, OperationServices
from indexer.operations.reindex_services import ReindexServices
from indexer.pipeline import PipelineLimits
from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.bus.jetstream import Delivery, JetStream
from kit.bus.object_store import UPLOADS_BUCKET, ObjectBucket, upload_object_name
from kit.bus.topology import COMMANDS
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import ModelRegistry
from kit.grpc.server import RunningServer, bind, create_server
from resources.adapters.resources_repository import ResourcesRepository
from resources.config import ResourcesSettings
from resources.server import default_quota
from resources.servicer import ResourceServicer
from vectorops.common.v1 import config_pb2, operation_pb2, source_pb2
from vectorops.embedder.v1 import embedder_service_pb2_grpc
from vectorops.events.v1 import commands_pb2, operation_events_pb2
from vectorops.resources.v1 import resource_service_pb2_grpc

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOKEN = "indexer-service-token"
REINDEX_STEPS = ["preflight", "staging", "reprocessing", "validation"]
CHECKPOINT_KEYS = {
    "preflight": {
        "dimension",
        "expected_vectors",
        "reserved_bytes",
        "documents_total",
        "reservation",
    },
    "staging": {"staging_collection", "created_at"},
    "reprocessing": {"documents_done", "documents_failed", "vectors_written", "bytes_written"},
}
# An INDEX here sends batches of 8 chunks, 2 at once; a REINDEX's reprocessing these,
# at a pace well below what the embedder answers here (a batch every 20 ms).
REPROCESSING_PACE = 150  # chunks a second
REPROCESSING_LIMITS = PipelineLimits(
    batch_chunks=3, in_flight=1, chunks_per_second=REPROCESSING_PACE
)
CHECK_NAMES = ["point_count", "topk_overlap", "score_drift", "collection_status"]
TOPICS = ["tides", "glaciers", "kettles", "basalt", "orchards", "lighthouses"]

# --- the embedder's and the resources' gRPC services -------------------------------------


@pytest.fixture(scope="module")
async def peers(triton_client, postgres) -> AsyncIterator[str]:
    """The embedder service (query embeddings) and the resources service (on a
    database of its own), in-process on one port, for the indexer's service token."""
    resources_pool = await asyncpg.create_pool(
        postgres.create_database(f"res_{uuid.uuid4().hex[:10]}"), min_size=1, max_size=4
    )
    async with resources_pool.acquire() as conn:
        await migrate(conn, "resources", load_migrations("kit") + load_migrations("resources"))
    resources = ResourceServicer(
        ResourcesRepository(resources_pool, "resources", default_quota(ResourcesSettings())),
        timedelta(hours=1),
    )
    limits = Limits(
        max_texts=256,
        max_request_chars=2_000_000,
        max_in_flight_bulk=4,
        max_in_flight_queries=4,
        query_queue_seconds=5.0,
        triton_timeout_seconds=30.0,
    )
    embedder = Embedder(ModelRegistry(), triton_client, limits)
    authenticator = TokenAuthenticator([(digest(TOKEN), Principal("indexer", Role.SERVICE))])
    running: RunningServer = await create_server(
        "127.0.0.1",
        0,
        [
            bind(embedder_service_pb2_grpc, "EmbedderService", EmbedderServicer(embedder)),
            bind(resource_service_pb2_grpc, "ResourceService", resources),
        ],
        authenticator,
    )
    await running.set_serving()
    yield f"127.0.0.1:{running.port}"
    await running.server.stop(0)
    await resources_pool.close()


class CountingQueries:
    """The real query embedder client, noting the model of every probe batch."""

    def __init__(self, client: EmbedderClient) -> None:
        self.client = client
        self.models: list[str] = []

    async def embed_queries(self, model: str, texts: Sequence[str], **options) -> QueryEmbeddings:
        self.models.append(model)
        return await self.client.embed_queries(model, texts, **options)


class PausingEvents(OperationEvents):
    """The real event publisher, with a latch: once it has announced the
    StepCompleted of ``pause_after``, it holds the operation until ``resume()``,
    so a test can look at a finished step and then act (e.g. cancel)."""

    def __init__(self, bus: JetStream) -> None:
        super().__init__(bus)
        self.pause_after: str | None = None
        self.paused = asyncio.Event()
        self._resume = asyncio.Event()

    def resume(self) -> None:
        self.pause_after = None
        self._resume.set()

    async def step_completed(
        self, order: OperationOrder, payload: operation_events_pb2.StepCompleted
    ) -> None:
        await super().step_completed(order, payload)
        if payload.step == self.pause_after:
            self.paused.set()
            await self._resume.wait()


class WitnessStore(EdgeVectorStore):
    """The real embedded store, noting for each collection it creates whether
    a reindex had recorded its name in Postgres by then."""

    def __init__(self, data_dir: Path, pool: asyncpg.Pool) -> None:
        super().__init__(data_dir)
        self._pool = pool
        self.recorded_before_creation: dict[str, bool] = {}

    async def create_collection(self, name: str, *args: Any, **kwargs: Any) -> bool:
        recorded = await self._pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.reindex_runs WHERE staging_collection = $1", name
        )
        self.recorded_before_creation.setdefault(name, recorded > 0)
        return await super().create_collection(name, *args, **kwargs)


# --- an indexer that runs REINDEX -------------------------------------------------------


@dataclass(kw_only=True)
class Reindexer(Indexer):
    """The indexer with what a REINDEX uses; its cancel waits until heard."""

    runs: ReindexRepository
    events: PausingEvents
    queries: CountingQueries

    async def cancel(self, operation_id: str, collection_id: str) -> None:
        await super().cancel(operation_id, collection_id)
        await eventually(lambda: self.journal.is_cancelled(operation_id), "the cancel was heard")

    async def paused(self) -> None:
        await eventually(self.events.paused.is_set, "the operation paused after its step")
        await self.collector.drain(self.bus)

    async def cancel_paused(self, operation_id: str, collection_id: str) -> list[Event]:
        """Cancel the paused operation, let it go on, and wait for its end."""
        await self.cancel(operation_id, collection_id)
        self.events.resume()
        return await self.settled(operation_id)


@pytest.fixture
async def reindexer(
    database: str, bus: JetStream, embed_worker: None, peers: str, tmp_path: Path
) -> AsyncIterator[Reindexer]:
    # A command left unacked by an earlier test of this module is not ours.
    await bus.js.purge_stream(COMMANDS.name)
    pool = await migrated_pool(database)
    repository = DocumentRepository(pool, SCHEMA)
    journal = OperationJournal(pool, SCHEMA)
    runs = ReindexRepository(pool, SCHEMA)
    store = WitnessStore(tmp_path / "vectors", pool)
    gate = Gate(QueueEmbedder(bus, timeout_seconds=30, wait_seconds=60))
    queries = CountingQueries(EmbedderClient(peers, TOKEN, timeout_seconds=30))
    resources = ResourcesClient(peers, TOKEN, timeout_seconds=5)
    roots = tmp_path / "roots"
    roots.mkdir()
    uploads = await ObjectBucket.ensure(bus.js)
    services = OperationServices(
        repository=repository,
        store=store,
        registry=ModelRegistry(),
        source_roots=[roots],
        embed_for=gate.for_operation,
        uploads=uploads,
        reindex=ReindexServices(
            runs=runs, queries=queries, resources=resources, limits=REPROCESSING_LIMITS
        ),
        embed_batch_chunks=8,
        embed_in_flight=2,
        progress_interval_seconds=0.05,
    )
    events = PausingEvents(bus)
    cancellations = Cancellations(journal)
    runner = OperationRunner(
        services, journal, events, cancellations, progress_interval_seconds=0.05
    )
    collector = Collector()
    subscription = await bus.nc.subscribe("vo.>", cb=collector.on_message)
    stop = asyncio.Event()
    harness = Reindexer(
        bus=bus,
        repository=repository,
        journal=journal,
        runs=runs,
        store=store,
        gate=gate,
        events=events,
        queries=queries,
        consumer=CommandConsumer(runner, consumer_spec(30, 5)),
        collector=collector,
        roots=roots,
        stop=stop,
    )
    harness.tasks.append(asyncio.create_task(CancelListener(bus, cancellations).run(stop)))
    try:
        yield harness
    finally:
        gate.open()
        events.resume()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*harness.tasks), 60)
        await subscription.unsubscribe()
        await queries.client.close()
        await resources.close()
        await store.close()
        await pool.close()


# --- commands and what they should build ------------------------------------------------


def write_corpus(folder: Path, count: int, sentences: int = 12) -> None:
    """Documents on distinct topics, so each probe has a clear best document."""
    folder.mkdir(parents=True)
    for number in range(count):
        topic = TOPICS[number % len(TOPICS)]
        text = " ".join(
            f"Document {number} about {topic}: note {i} on {topic} near station {number}."
            for i in range(sentences)
        )
        (folder / f"doc{number:02d}.txt").write_text(text)


def reindex_command(
    collection: commands_pb2.CollectionSnapshot,
    *,
    model: str = MODEL,
    chunk_size: int = 16,
    chunk_overlap: int = 2,
    thresholds: operation_pb2.ValidationThresholds | None = None,
) -> commands_pb2.ReindexCommand:
    return commands_pb2.ReindexCommand(
        operation_id=str(uuid.uuid4()),
        collection=collection,
        target_config=config_pb2.CollectionConfig(
            embedding_model=model,
            dimension=384,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
        ),
        thresholds=thresholds,
    )


def expected_chunks(folder: Path, model: str, size: int, overlap: int) -> dict[str, int]:
    """path → chunk count, as extraction and chunking with the new config make them."""
    return {
        path.name: chunk_count(path.read_bytes(), path.name, model, size, overlap)
        for path in sorted(folder.iterdir())
    }


def chunk_count(data: bytes, name: str, model: str, size: int, overlap: int) -> int:
    return len(chunk(extract(data, name).sections, tokenizer_for(model), size, overlap))


@dataclass(frozen=True)
class Live:
    """What the live collection serves, to show a reindex left it alone."""

    points: int
    alias_target: str | None
    chunks: dict[str, list[int]]
    rows: dict[str, tuple[str, int]]  # document id → (status, chunk count)


async def live_state(harness: Reindexer, collection: commands_pb2.CollectionSnapshot) -> Live:
    cid = collection.collection_id
    rows, _ = await harness.repository.list_documents(cid, 1000)
    return Live(
        points=await harness.store.count(collection.physical_collection),
        alias_target=await harness.store.get_alias(collection.alias_name),
        chunks=dict(await chunks_by_document(harness.store, collection.physical_collection)),
        rows={d.document_id: (str(d.status), d.chunk_count) for d in rows},
    )


async def indexed(
    harness: Reindexer, count: int = 6
) -> tuple[commands_pb2.CollectionSnapshot, Live]:
    """A live collection of ``count`` documents (hashing model, chunks of 24)."""
    write_corpus(harness.roots / "docs", count)
    collection = snapshot()
    harness.start_consuming()
    events = await harness.run(
        "INDEX", index_command(collection, directory(harness.roots / "docs"))
    )
    assert [e.kind for e in events if e.kind == "OperationCompleted"] == ["OperationCompleted"]
    live = await live_state(harness, collection)
    assert live.alias_target == collection.physical_collection and live.points > count
    return collection, live


def lifecycle(events: list[Event]) -> list[tuple[str, str]]:
    return [
        (e.kind, getattr(e.payload, "step", ""))
        for e in events
        if e.kind not in ("OperationProgress", "UsageDelta")
    ]


def announced(steps: Sequence[str]) -> list[tuple[str, str]]:
    return [(kind, step) for step in steps for kind in ("StepStarted", "StepCompleted")]


async def staging_collections(store: EdgeVectorStore) -> list[str]:
    return [name for name in await store.list_collections() if parse_staging(name)]


class Counted:
    """Prometheus samples of this process, and how much each grew since."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._samples = samples
        self._before = [self._value(s) for s in samples]

    @staticmethod
    def _value(sample: tuple[str, dict[str, str]]) -> float:
        return REGISTRY.get_sample_value(*sample) or 0.0

    def increments(self) -> list[float]:
        return [self._value(s) - b for s, b in zip(self._samples, self._before, strict=True)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- the tests --------------------------------------------------------------------------


async def test_reindex_to_smaller_chunks_builds_staging_and_validates_it(
    reindexer: Reindexer,
) -> None:
    collection, live = await indexed(reindexer)
    cid = collection.collection_id
    command = reindex_command(collection, chunk_size=16, chunk_overlap=2)
    op = command.operation_id
    counted = Counted(
        ("vectorops_reindex_reservations_total", {"outcome": "reserved"}),
        ("vectorops_operation_checkpoints_total", {"type": "REINDEX", "step": "validation"}),
        ("vectorops_reindex_validations_total", {"outcome": "passed"}),
        ("vectorops_reindex_validation_duration_seconds_count", {}),
    )
    reindexer.start_consuming()
    reindexer.events.pause_after = "validation"
    await reindexer.send("REINDEX", command)
    await reindexer.paused()
    assert counted.increments() == [1, 1, 1, 1]

    events = reindexer.collector.of(op)
    assert lifecycle(events) == announced(REINDEX_STEPS)
    started = [e.payload for e in events if e.kind == "StepStarted"]
    assert [(s.step_index, s.step_count) for s in started] == [(1, 6), (2, 6), (3, 6), (4, 6)]
    steps = completed_steps(events)
    for name, keys in CHECKPOINT_KEYS.items():
        assert set(state(steps[name])) == keys, name
        assert steps[name].event_id == f"{op}.{name}.completed"

    preflight = state(steps["preflight"])
    assert preflight["reservation"] == "reserved"  # a real reservation for the staging copy
    assert preflight["dimension"] == 384 and preflight["documents_total"] == 6
    assert preflight["reserved_bytes"] > 0
    assert preflight["expected_vectors"] > live.points  # smaller chunks: more of them
    assert (
        steps["preflight"].payload.reindex_preflight.expected_vectors
        == (preflight["expected_vectors"])
    )

    # The staging collection: named from the live one, recorded before it was made.
    name = state(steps["staging"])["staging_collection"]
    base, created = parse_staging(name) or ("", None)
    assert base == collection.physical_collection
    assert created is not None and state(steps["staging"])["created_at"] == created.isoformat()
    assert steps["staging"].payload.reindex_staging.staging_collection == name
    witnessed = reindexer.store.recorded_before_creation
    assert {n: seen for n, seen in witnessed.items() if parse_staging(n)} == {name: True}
    assert (await reindexer.repository.get_collection(cid)).staging_collection == name

    # Exactly the re-chunked points, under the same document ids.
    expected = expected_chunks(reindexer.roots / "docs", MODEL, 16, 2)
    staged = await chunks_by_document(reindexer.store, name)
    assert set(staged) == set(live.chunks)
    docs, _ = await reindexer.repository.list_documents(cid, 100)
    for doc in docs:
        assert sorted(staged[doc.document_id]) == list(range(expected[doc.path])), doc.path
    total = sum(expected.values())
    assert await reindexer.store.count(name) == total
    reprocessing = state(steps["reprocessing"])
    assert reprocessing["documents_done"] == 6 and reprocessing["documents_failed"] == 0
    assert reprocessing["vectors_written"] == total and reprocessing["bytes_written"] > 0

    # The live collection is untouched: points, alias and rows.
    assert await live_state(reindexer, collection) == live

    # Every figure validation measured, with the indexer's default thresholds.
    checkpoint = state(steps["validation"])
    assert checkpoint["passed"] is True
    result = steps["validation"].payload.reindex_validation.validation
    assert result.passed
    assert [c.name for c in result.checks] == CHECK_NAMES
    assert all(c.passed for c in result.checks)
    assert (result.expected_point_count, result.actual_point_count) == (total, total)
    assert result.probe_query_count == 20
    assert (result.thresholds.min_topk_overlap, result.thresholds.max_score_drift) == (0.6, 0.25)
    assert (result.thresholds.probe_query_count, result.thresholds.top_k) == (20, 10)
    overlap = next(c for c in result.checks if c.name == "topk_overlap")
    assert overlap.measured == pytest.approx(checkpoint["topk_overlap"]) and overlap.measured > 0.6
    assert result.validate_time.seconds > 0
    assert set(reindexer.queries.models) == {MODEL}

    ended = await reindexer.cancel_paused(op, cid)
    assert lifecycle(ended)[-1] == ("OperationCancelled", "")
    assert ("StepStarted", "switch") not in lifecycle(ended)
    assert not await reindexer.store.collection_exists(name)  # deleted at once
    record = await reindexer.runs.staging_of(op)
    assert record is not None and record.deleted_at is not None
    assert (await reindexer.repository.get_collection(cid)).staging_collection is None
    assert await live_state(reindexer, collection) == live


async def test_reprocessing_embeds_in_the_gentler_batches_of_a_reindex(
    reindexer: Reindexer,
) -> None:
    """A REINDEX re-embeds a collection that keeps serving: its batches are the
    reindex's (smaller, one at a time, paced), not an INDEX's (8 chunks, 2 at once,
    as fast as they are answered)."""
    collection, _ = await indexed(reindexer)
    assert max(reindexer.gate.batch_sizes) == 8 and reindexer.gate.most_at_once == 2
    reindexer.gate.batch_sizes.clear()
    reindexer.gate.sent_at.clear()
    reindexer.gate.most_at_once = 0
    command = reindex_command(collection, chunk_size=16, chunk_overlap=2)
    reindexer.events.pause_after = "reprocessing"
    await reindexer.send("REINDEX", command)
    await reindexer.paused()
    sizes = reindexer.gate.batch_sizes
    assert sizes and max(sizes) == REPROCESSING_LIMITS.batch_chunks, sizes
    assert reindexer.gate.most_at_once == REPROCESSING_LIMITS.in_flight
    # Each batch waited out the share of time of the chunks sent before it.
    sent = reindexer.gate.sent_at
    assert len(sizes) >= 5, sizes
    paced_seconds = sum(sizes[:-1]) / REPROCESSING_PACE
    assert sent[-1] - sent[0] >= 0.9 * paced_seconds, (sent[-1] - sent[0], paced_seconds)
    ended = await reindexer.cancel_paused(command.operation_id, collection.collection_id)
    assert lifecycle(ended)[-1] == ("OperationCancelled", "")


async def test_reindex_to_another_model_probes_each_side_with_its_own_model(
    reindexer: Reindexer,
) -> None:
    collection, live = await indexed(reindexer, count=4)
    command = reindex_command(collection, model=MINILM, chunk_size=32, chunk_overlap=4)
    op = command.operation_id
    reindexer.start_consuming()
    reindexer.events.pause_after = "validation"
    await reindexer.send("REINDEX", command)
    await reindexer.paused()

    steps = completed_steps(reindexer.collector.of(op))
    result = steps["validation"].payload.reindex_validation.validation
    assert result.passed, [(c.name, c.measured, c.threshold) for c in result.checks]
    assert result.probe_query_count == 20
    # Probes embedded with the live model for the live side, MiniLM for staging.
    assert set(reindexer.queries.models) == {MODEL, MINILM}
    name = state(steps["staging"])["staging_collection"]
    page = await reindexer.store.scroll(name, limit=1, with_vectors=True)
    [point] = page.points
    assert point.vector is not None and point.payload is not None
    # MiniLM has no instructions: a chunk's document vector is its query vector.
    [minilm] = (
        await reindexer.queries.client.embed_queries(MINILM, [point.payload["text"]])
    ).vectors
    assert cosine(point.vector, minilm) > 0.99
    assert await live_state(reindexer, collection) == live

    await reindexer.cancel_paused(op, collection.collection_id)
    assert not await reindexer.store.collection_exists(name)


async def test_failed_validation_is_announced_then_fails_and_deletes_staging(
    reindexer: Reindexer,
) -> None:
    collection, live = await indexed(reindexer, count=3)
    impossible = operation_pb2.ValidationThresholds(min_topk_overlap=1.01)
    command = reindex_command(collection, thresholds=impossible)
    counted = Counted(
        ("vectorops_reindex_validations_total", {"outcome": "failed"}),
        ("vectorops_reindex_validation_check_failures_total", {"check": "topk_overlap"}),
        ("vectorops_reindex_staging_discarded_total", {"why": "failed"}),
    )
    reindexer.start_consuming()
    events = await reindexer.run("REINDEX", command)
    assert counted.increments() == [1, 1, 1]

    assert lifecycle(events) == [*announced(REINDEX_STEPS), ("OperationFailed", "")]
    steps = completed_steps(events)
    checkpoint = state(steps["validation"])
    assert checkpoint["passed"] is False
    result = steps["validation"].payload.reindex_validation.validation
    assert not result.passed
    assert result.thresholds.min_topk_overlap == pytest.approx(1.01)
    assert result.thresholds.max_score_drift == pytest.approx(0.25)  # the default
    failed = {c.name: c for c in result.checks if not c.passed}
    assert list(failed) == ["topk_overlap"]
    assert failed["topk_overlap"].threshold == pytest.approx(1.01)
    [outcome] = [e.payload for e in events if e.kind == "OperationFailed"]
    assert (outcome.error.type, outcome.error.step) == ("VALIDATION_FAILED", "validation")
    assert "topk_overlap" in outcome.error.message
    assert outcome.staging_deleted
    name = state(steps["staging"])["staging_collection"]
    assert not await reindexer.store.collection_exists(name)
    assert await staging_collections(reindexer.store) == []
    assert await live_state(reindexer, collection) == live


async def test_killed_mid_reprocessing_resumes_with_each_chunk_in_staging_once(
    reindexer: Reindexer,
) -> None:
    spec = reindexer.consumer.spec
    await reindexer.bus.ensure_consumer(spec)
    pull = await reindexer.bus.js.pull_subscribe_bind(spec.durable, stream=spec.stream)

    async def handle_next() -> tuple[Any, asyncio.Task[None]]:
        [msg] = await pull.fetch(1, timeout=10)
        delivery = Delivery(msg.subject, msg.data, {}, 1, False, msg)
        return msg, asyncio.create_task(reindexer.consumer.handle(delivery))

    write_corpus(reindexer.roots / "docs", 10)
    collection = snapshot()
    cid = collection.collection_id
    await reindexer.send("INDEX", index_command(collection, directory(reindexer.roots / "docs")))
    msg, task = await handle_next()
    await task
    await msg.ack()
    live = await live_state(reindexer, collection)

    command = reindex_command(collection, chunk_size=12, chunk_overlap=2)
    op = command.operation_id
    # Enough batches of the reindex's small ones for a few documents to be staged.
    reindexer.gate.hold_after(12)
    await reindexer.send("REINDEX", command)
    msg, first = await handle_next()

    async def mid_reprocessing() -> bool:
        return reindexer.gate.held.is_set() and bool(await reindexer.runs.recorded_document_ids(op))

    await eventually(mid_reprocessing, "some documents are staged and embedding waits")
    first.cancel()  # the indexer dies mid-reprocessing
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await msg.nak()  # what the ack wait does for a dead consumer, without the wait
    await pull.unsubscribe()
    reindexer.gate.open()
    reindexer.events.pause_after = "validation"
    reindexer.start_consuming()
    await reindexer.paused()

    events = reindexer.collector.of(op)
    starts = [e.payload.step for e in events if e.kind == "StepStarted"]
    assert starts == ["preflight", "staging", "reprocessing", "reprocessing", "validation"]
    for name in ("preflight", "staging"):
        again = [e.payload for e in events if e.kind == "StepCompleted" and e.payload.step == name]
        assert len(again) == 2 and again[0] == again[1]  # the same checkpoint again
    steps = completed_steps(events)
    name = state(steps["staging"])["staging_collection"]
    assert await staging_collections(reindexer.store) == [name]  # one, reused

    expected = expected_chunks(reindexer.roots / "docs", MODEL, 12, 2)
    staged = await chunks_by_document(reindexer.store, name)
    docs, _ = await reindexer.repository.list_documents(cid, 100)
    assert len(docs) == 10 and set(staged) == {d.document_id for d in docs}
    for doc in docs:
        assert sorted(staged[doc.document_id]) == list(range(expected[doc.path])), doc.path
    total = sum(expected.values())
    assert await reindexer.store.count(name) == total
    assert state(steps["reprocessing"])["documents_done"] == 10
    assert state(steps["reprocessing"])["vectors_written"] == total
    result = steps["validation"].payload.reindex_validation.validation
    assert result.passed and result.actual_point_count == result.expected_point_count == total
    assert await live_state(reindexer, collection) == live

    await reindexer.cancel_paused(op, cid)
    assert not await reindexer.store.collection_exists(name)


async def test_cancel_mid_reprocessing_deletes_staging_and_leaves_live_alone(
    reindexer: Reindexer,
) -> None:
    collection, live = await indexed(reindexer, count=8)
    command = reindex_command(collection, chunk_size=12, chunk_overlap=2)
    op, cid = command.operation_id, collection.collection_id
    reindexer.gate.hold_after(2)
    reindexer.start_consuming()
    await reindexer.send("REINDEX", command)
    await eventually(reindexer.gate.held.is_set, "embedding waits mid-reprocessing")
    staging = await reindexer.runs.staging_of(op)
    assert staging is not None and await reindexer.store.collection_exists(
        staging.staging_collection
    )
    await reindexer.cancel(op, cid)
    reindexer.gate.open()
    events = await reindexer.settled(op)

    assert lifecycle(events) == [
        *announced(["preflight", "staging"]),
        ("StepStarted", "reprocessing"),
        ("OperationCancelled", ""),
    ]
    assert not await reindexer.store.collection_exists(staging.staging_collection)
    assert await staging_collections(reindexer.store) == []
    record = await reindexer.runs.staging_of(op)
    assert record is not None and record.deleted_at is not None
    assert (await reindexer.repository.get_collection(cid)).staging_collection is None
    assert await live_state(reindexer, collection) == live


async def test_an_unknown_target_model_fails_preflight_before_anything_is_made(
    reindexer: Reindexer,
) -> None:
    collection, live = await indexed(reindexer, count=2)
    command = reindex_command(collection, model="no/such-model")
    reindexer.start_consuming()
    events = await reindexer.run("REINDEX", command)

    assert lifecycle(events) == [("StepStarted", "preflight"), ("OperationFailed", "")]
    [failed] = [e.payload for e in events if e.kind == "OperationFailed"]
    assert (failed.error.type, failed.error.step) == ("UNKNOWN_MODEL", "preflight")
    assert not failed.staging_deleted and not failed.collection_changed
    assert await staging_collections(reindexer.store) == []
    assert await reindexer.runs.staging_of(command.operation_id) is None
    assert await live_state(reindexer, collection) == live


async def test_uploaded_documents_are_read_back_from_the_bucket_into_staging(
    reindexer: Reindexer,
) -> None:
    collection = snapshot()
    cid, sid = collection.collection_id, str(uuid.uuid4())
    bodies = {
        f"upload{i}.txt": " ".join(
            f"Upload {i} on {TOPICS[i]}: remark {n} about {TOPICS[i]}." for n in range(10)
        ).encode()
        for i in range(3)
    }
    bucket = await ObjectBucket.ensure(reindexer.bus.js)
    manifest = commands_pb2.UploadManifest(bucket=UPLOADS_BUCKET)
    for path, data in bodies.items():
        digest = hashlib.sha256(data).hexdigest()
        name = upload_object_name(cid, sid, digest)
        await bucket.put(name, io.BytesIO(data), size=len(data), sha256=digest)
        manifest.documents.add(
            path=path,
            media_type="text/plain",
            size_bytes=len(data),
            sha256=digest,
            object_name=name,
        )
    reindexer.start_consuming()
    await reindexer.run("INDEX", index_command(collection))
    append = commands_pb2.AppendCommand(
        operation_id=str(uuid.uuid4()),
        collection=collection,
        source=source_pb2.Source(id=sid, display_name="handbook", upload=source_pb2.UploadSource()),
        upload=manifest,
    )
    appended = await reindexer.run("APPEND", append)
    assert [e.kind for e in appended if e.kind == "OperationCompleted"] == ["OperationCompleted"]
    live = await live_state(reindexer, collection)
    assert len(live.chunks) == 3
    # One object is gone by the time of the reindex (e.g. the bucket's max age).
    gone = manifest.documents[2]
    raw = await reindexer.bus.js.object_store(UPLOADS_BUCKET)
    await raw.delete(gone.object_name)

    command = reindex_command(collection, chunk_size=16, chunk_overlap=2)
    op = command.operation_id
    reindexer.events.pause_after = "reprocessing"
    await reindexer.send("REINDEX", command)
    await reindexer.paused()

    steps = completed_steps(reindexer.collector.of(op))
    reprocessing = state(steps["reprocessing"])
    assert (reprocessing["documents_done"], reprocessing["documents_failed"]) == (2, 1)
    name = state(steps["staging"])["staging_collection"]
    staged = await chunks_by_document(reindexer.store, name)
    for path, data in bodies.items():
        doc = document_id(cid, sid, path)
        if path == gone.path:
            assert doc not in staged
            [(reason, _)] = (await reindexer.runs.failures(op)).values()
            assert reason == "UNREADABLE"
        else:
            assert sorted(staged[doc]) == list(range(chunk_count(data, path, MODEL, 16, 2)))
    assert await live_state(reindexer, collection) == live

    ended = await reindexer.cancel_paused(op, cid)
    assert lifecycle(ended)[-1] == ("OperationCancelled", "")
    assert not await reindexer.store.collection_exists(name)

"""The indexer runs operations from real commands, as the orchestrator sends them.

Real parts: a nats-server of this module's own (so the session stack's indexer
does not compete for ``indexer-commands``), a fresh Postgres database per
test, Qdrant's embedded engine in a temp dir, and embedding through the work
queue: the indexer's ``QueueEmbedder`` and an in-process ``EmbedWorker`` on the
session's Triton with the hashing model. A core NATS subscription on ``vo.>``
sees everything the indexer publishes, repeats included (JetStream drops a
repeated message id from the stream, not from the subject).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from indexer_harness import (
    SCHEMA,
    Collector,
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

# The module-scoped fixtures: this module's own nats-server, its bus and an
# embedder on its work queue.
from indexer_harness import bus as bus
from indexer_harness import embed_worker as embed_worker
from indexer_harness import own_nats as own_nats

from indexer.adapters.document_repository import (
    DocumentRepository,
    DocumentStatus,
    SourceStatus,
)
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.operation_journal import OperationJournal, Outcome
from indexer.cancellations import Cancellations, CancelListener
from indexer.commands import CommandConsumer, consumer_spec
from indexer.domain.documents import document_id
from indexer.embed_queue import QueueEmbedder
from indexer.operation_events import OperationEvents
from indexer.operation_runner import OperationRunner
from indexer.operations.base import OperationServices
from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream
from kit.embedding_models import ModelRegistry
from kit.errors import NotFound
from vectorops.common.v1 import source_pb2
from vectorops.events.v1 import commands_pb2

INGEST_KEYS = {
    "documents_done",
    "documents_failed",
    "documents_skipped",
    "documents_duplicate",
    "vectors_written",
    "bytes_written",
}
FINALIZE_KEYS = {"document_count", "vector_count", "stored_bytes", "source_document_counts"}
CORRUPT_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage"


# --- an indexer, without its gRPC server ------------------------------------------------


@pytest.fixture
async def indexer(
    database: str, bus: JetStream, embed_worker: None, tmp_path: Path
) -> AsyncIterator[Indexer]:
    pool = await migrated_pool(database)
    repository = DocumentRepository(pool, SCHEMA)
    journal = OperationJournal(pool, SCHEMA)
    store = EdgeVectorStore(tmp_path / "vectors")
    gate = Gate(QueueEmbedder(bus, timeout_seconds=30, wait_seconds=60))
    roots = tmp_path / "roots"
    roots.mkdir()
    services = OperationServices(
        repository=repository,
        store=store,
        registry=ModelRegistry(),
        source_roots=[roots],
        embed_for=gate.for_operation,
        embed_batch_chunks=8,
        embed_in_flight=2,
        progress_interval_seconds=0.05,
    )
    cancellations = Cancellations(journal)
    runner = OperationRunner(
        services, journal, OperationEvents(bus), cancellations, progress_interval_seconds=0.05
    )
    collector = Collector()
    subscription = await bus.nc.subscribe("vo.>", cb=collector.on_message)
    stop = asyncio.Event()
    harness = Indexer(
        bus=bus,
        repository=repository,
        journal=journal,
        store=store,
        gate=gate,
        consumer=CommandConsumer(runner, consumer_spec(30, 5)),
        collector=collector,
        roots=roots,
        stop=stop,
    )
    listener = CancelListener(bus, cancellations)
    harness.tasks.append(asyncio.create_task(listener.run(stop)))
    try:
        yield harness
    finally:
        gate.open()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*harness.tasks), 60)
        await subscription.unsubscribe()
        await store.close()
        await pool.close()


# --- commands ---------------------------------------------------------------------------


def append_command(collection: commands_pb2.CollectionSnapshot, source: source_pb2.Source):
    return commands_pb2.AppendCommand(
        operation_id=str(uuid.uuid4()), collection=collection, source=source
    )


def write_mixed(folder: Path) -> None:
    """txt, md, html and a corrupt pdf."""
    (folder / "notes").mkdir(parents=True)
    (folder / "alpha.txt").write_text(
        " ".join(f"Alpha sentence {i} talks about glaciers near Tromso." for i in range(20))
    )
    (folder / "notes" / "beta.md").write_text(
        "# Beta\n\nCopper kettles brewing cardamom tea at dawn.\n\n- kettles\n- tea\n"
    )
    (folder / "gamma.html").write_text(
        "<html><body><p>Gamma page lists basalt columns in Iceland.</p></body></html>"
    )
    (folder / "broken.pdf").write_bytes(CORRUPT_PDF)


def write_texts(folder: Path, count: int, sentences: int = 12, topic: str = "tides") -> None:
    folder.mkdir(parents=True)
    for number in range(count):
        text = " ".join(
            f"Document {number} sentence {i} is about {topic} and turbines."
            for i in range(sentences)
        )
        (folder / f"doc{number:02d}.txt").write_text(text)


# --- the tests --------------------------------------------------------------------------


async def test_index_announces_every_step_and_completes_with_usage(indexer: Indexer) -> None:
    folder = indexer.roots / "docs"
    write_mixed(folder)
    collection = snapshot()
    source = directory(folder)
    indexer.start_consuming()
    command = index_command(collection, source)
    events = await indexer.run("INDEX", command)
    op, cid, sid = command.operation_id, collection.collection_id, source.id

    lifecycle = [
        (e.kind, getattr(e.payload, "step", "")) for e in events if e.kind != "OperationProgress"
    ]
    assert lifecycle == [
        ("StepStarted", "create_collection"),
        ("StepCompleted", "create_collection"),
        ("StepStarted", "ingest"),
        ("StepCompleted", "ingest"),
        ("StepStarted", "finalize"),
        ("StepCompleted", "finalize"),
        ("OperationCompleted", ""),
        ("UsageDelta", ""),
    ]
    started = [e.payload for e in events if e.kind == "StepStarted"]
    assert [(s.step_index, s.step_count) for s in started] == [(1, 3), (2, 3), (3, 3)]
    steps = completed_steps(events)
    assert steps["ingest"].event_id == f"{op}.ingest.completed"
    assert steps["ingest"].subject == "vo.evt.op.step_completed.ingest"
    assert state(steps["create_collection"]) == {
        "physical_collection": collection.physical_collection,
        "dimension": 384,
    }
    ingest = state(steps["ingest"])
    assert set(ingest) == INGEST_KEYS
    assert ingest["documents_done"] == 4 and ingest["documents_failed"] == 1
    assert ingest["vectors_written"] > 3 and ingest["bytes_written"] > 0
    assert steps["ingest"].payload.WhichOneof("result") == "ingest"
    assert steps["ingest"].payload.ingest.vectors_written == ingest["vectors_written"]
    finalize = state(steps["finalize"])
    assert set(finalize) == FINALIZE_KEYS | {"alias"}
    assert finalize["alias"] == collection.alias_name
    assert finalize["document_count"] == 3
    assert finalize["source_document_counts"] == {sid: 3}
    points = await indexer.store.count(collection.physical_collection)
    assert finalize["vector_count"] == points == ingest["vectors_written"]
    checkpoint = steps["finalize"].payload.checkpoint
    assert (checkpoint.step, checkpoint.step_index, checkpoint.step_completed) == (
        "finalize",
        3,
        True,
    )

    # The final figures go out before the last StepCompleted ends the operation.
    last_progress = events[events.index(steps["finalize"]) - 1]
    assert last_progress.kind == "OperationProgress"
    assert last_progress.payload.progress.percent == 100.0
    resources = last_progress.payload.resources
    assert resources.wall_seconds > 0 and resources.peak_memory_bytes > 0
    assert resources.cpu_seconds >= 0 and resources.vectors == points
    assert resources.documents == 4 and resources.bytes == ingest["bytes_written"]
    [done] = [e for e in events if e.kind == "OperationCompleted"]
    assert done.event_id == f"{op}.completed"
    assert (done.payload.document_count, done.payload.vector_count) == (3, points)
    [usage] = [e for e in events if e.kind == "UsageDelta"]
    assert usage.event_id == f"{op}.usage" and usage.subject == subjects.USAGE_DELTA
    assert (usage.payload.documents_delta, usage.payload.vectors_delta) == (3, points)
    assert usage.payload.bytes_delta == finalize["stored_bytes"] > 0
    assert usage.payload.owner_id == "alice" and usage.payload.reason == "index"
    assert usage.payload.collections_delta == 1

    docs = {d.path: d for d in await indexer.repository.documents_of_source(cid, sid)}
    assert docs["broken.pdf"].status is DocumentStatus.FAILED
    assert {p for p, d in docs.items() if d.status is DocumentStatus.INDEXED} == {
        "alpha.txt",
        "notes/beta.md",
        "gamma.html",
    }
    page = await indexer.store.scroll(collection.physical_collection, limit=256)
    for point in page.points:
        payload = point.payload or {}
        assert payload["source_id"] == sid
        assert payload["document_id"] == document_id(cid, sid, payload["path"])
    assert await indexer.store.get_alias(collection.alias_name) == collection.physical_collection


async def test_append_of_unchanged_files_writes_no_vectors(indexer: Indexer) -> None:
    write_texts(indexer.roots / "first", 2)
    write_texts(indexer.roots / "second", 3, topic="glaciers")
    collection = snapshot()
    indexer.start_consuming()
    await indexer.run("INDEX", index_command(collection, directory(indexer.roots / "first")))
    added = directory(indexer.roots / "second")

    first = await indexer.run("APPEND", append_command(collection, added))
    steps = completed_steps(first)
    assert list(steps) == ["scan", "ingest", "finalize"]
    assert state(steps["scan"]) == {"source_id": added.id, "documents_found": 3}
    assert state(steps["ingest"])["vectors_written"] > 0
    assert state(steps["finalize"])["source_document_counts"][added.id] == 3
    points = await indexer.store.count(collection.physical_collection)

    again = await indexer.run("APPEND", append_command(collection, added))
    steps = completed_steps(again)
    ingest = state(steps["ingest"])
    assert ingest["vectors_written"] == 0 and ingest["bytes_written"] == 0
    assert ingest["documents_skipped"] == 3 and ingest["documents_done"] == 3
    assert [e.kind for e in again if e.kind == "OperationCompleted"] == ["OperationCompleted"]
    assert not [e for e in again if e.kind == "UsageDelta"]  # nothing stored changed
    assert await indexer.store.count(collection.physical_collection) == points


async def test_remove_source_leaves_none_of_its_points_and_the_others_intact(
    indexer: Indexer,
) -> None:
    write_texts(indexer.roots / "gone", 3)
    write_texts(indexer.roots / "kept", 2, topic="volcanoes")
    collection = snapshot()
    gone, kept = directory(indexer.roots / "gone"), directory(indexer.roots / "kept")
    indexer.start_consuming()
    await indexer.run("INDEX", index_command(collection, gone, kept))
    name, cid = collection.physical_collection, collection.collection_id
    gone_points = await indexer.store.count(name, {"source_id": gone.id})
    kept_points = await indexer.store.count(name, {"source_id": kept.id})
    assert gone_points > 0 and kept_points > 0

    command = commands_pb2.RemoveSourceCommand(
        operation_id=str(uuid.uuid4()), collection=collection, source_id=gone.id
    )
    events = await indexer.run("REMOVE_SOURCE", command)
    steps = completed_steps(events)
    assert list(steps) == ["remove_points", "remove_documents", "finalize"]
    assert state(steps["remove_points"]) == {"vectors_removed": gone_points}
    result = steps["remove_points"].payload.remove_source
    assert (result.source_id, result.vectors_removed, result.documents_removed) == (
        gone.id,
        gone_points,
        3,
    )
    assert state(steps["remove_documents"]) == {"documents_removed": 3}
    finalize = state(steps["finalize"])
    assert finalize["source_document_counts"] == {kept.id: 2}
    assert finalize["vector_count"] == kept_points
    assert await indexer.store.count(name, {"source_id": gone.id}) == 0
    assert await indexer.store.count(name, {"source_id": kept.id}) == kept_points
    assert await indexer.repository.documents_of_source(cid, gone.id) == []
    statuses = {s.source_id: s.status for s in await indexer.repository.list_sources(cid)}
    assert statuses == {gone.id: SourceStatus.REMOVED, kept.id: SourceStatus.ACTIVE}
    [usage] = [e.payload for e in events if e.kind == "UsageDelta"]
    assert (usage.documents_delta, usage.vectors_delta) == (-3, -gone_points)
    assert usage.collections_delta == 0


async def test_delete_drops_the_collections_and_the_alias_but_no_system_collection(
    indexer: Indexer,
) -> None:
    write_texts(indexer.roots / "docs", 2)
    collection = snapshot()
    indexer.start_consuming()
    await indexer.run("INDEX", index_command(collection, directory(indexer.roots / "docs")))
    points = await indexer.store.count(collection.physical_collection)
    await indexer.store.create_collection("_vo_system", 4, system=True)

    command = commands_pb2.DeleteCommand(
        operation_id=str(uuid.uuid4()),
        collection=collection,
        physical_collections=[collection.physical_collection, "_vo_system"],
    )
    events = await indexer.run("DELETE", command)
    steps = completed_steps(events)
    assert list(steps) == ["remove_alias", "drop_collections", "finalize"]
    assert state(steps["remove_alias"]) == {"alias_deleted": True}
    assert state(steps["drop_collections"]) == {
        "deleted_collections": [collection.physical_collection]
    }
    assert steps["drop_collections"].payload.delete.alias_deleted
    assert state(steps["finalize"]) == {}
    assert await indexer.store.get_alias(collection.alias_name) is None
    assert not await indexer.store.collection_exists(collection.physical_collection)
    assert await indexer.store.collection_exists("_vo_system")
    with pytest.raises(NotFound):
        await indexer.repository.get_collection(collection.collection_id)
    [usage] = [e.payload for e in events if e.kind == "UsageDelta"]
    assert (usage.documents_delta, usage.vectors_delta) == (-2, -points)
    assert usage.collections_delta == -1
    [done] = [e.payload for e in events if e.kind == "OperationCompleted"]
    assert (done.document_count, done.vector_count) == (0, 0)


async def test_redelivery_after_a_crash_resumes_and_writes_each_chunk_once(
    indexer: Indexer,
) -> None:
    write_texts(indexer.roots / "docs", 10, sentences=20)
    collection = snapshot()
    command = index_command(collection, directory(indexer.roots / "docs"))
    op, cid = command.operation_id, collection.collection_id
    spec = indexer.consumer.spec
    await indexer.bus.ensure_consumer(spec)
    pull = await indexer.bus.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
    indexer.gate.hold_after(3)
    await indexer.send("INDEX", command)
    [msg] = await pull.fetch(1, timeout=10)
    delivery = Delivery(msg.subject, msg.data, {}, 1, False, msg)
    first = asyncio.create_task(indexer.consumer.handle(delivery))

    async def mid_ingest() -> bool:
        return indexer.gate.held.is_set() and (await indexer.repository.counts(cid))[0] > 0

    await eventually(mid_ingest, "some documents were written and embedding waits")
    first.cancel()  # the indexer dies mid-ingest
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await msg.nak()  # what the ack wait does for a dead consumer, without the wait
    await pull.unsubscribe()
    indexer.gate.open()
    indexer.start_consuming()
    await indexer.settled(op)

    events = indexer.collector.of(op)
    ingested = [e for e in events if e.kind == "StepCompleted" and e.payload.step == "ingest"]
    assert len(ingested) == 1
    announced = [
        e.payload
        for e in events
        if e.kind == "StepCompleted" and e.payload.step == "create_collection"
    ]
    assert len(announced) == 2 and announced[0] == announced[1]  # the same checkpoint again
    starts = [e.payload.step for e in events if e.kind == "StepStarted"]
    assert starts == ["create_collection", "ingest", "ingest", "finalize"]
    assert len([e for e in events if e.kind == "OperationCompleted"]) == 1

    chunks = await chunks_by_document(indexer.store, collection.physical_collection)
    docs = await indexer.repository.documents_of_source(cid, command.sources[0].id)
    assert len(docs) == 10 and all(d.status is not DocumentStatus.FAILED for d in docs)
    for doc in docs:
        assert sorted(chunks[doc.document_id]) == list(range(doc.chunk_count)), doc.path
    total = sum(d.chunk_count for d in docs)
    assert await indexer.store.count(collection.physical_collection) == total
    assert state(completed_steps(events)["finalize"])["vector_count"] == total


async def test_cancel_mid_ingest_stops_without_announcing_more_steps(indexer: Indexer) -> None:
    write_texts(indexer.roots / "docs", 8, sentences=20)
    collection = snapshot()
    command = index_command(collection, directory(indexer.roots / "docs"))
    op = command.operation_id
    indexer.gate.hold_after(2)
    indexer.start_consuming()
    await indexer.send("INDEX", command)
    await eventually(indexer.gate.held.is_set, "embedding waits mid-ingest")
    await indexer.cancel(op, collection.collection_id)
    await eventually(lambda: indexer.journal.is_cancelled(op), "the cancel was recorded")
    indexer.gate.open()
    await indexer.settled(op)

    events = indexer.collector.of(op)
    [cancelled] = [e for e in events if e.kind == "OperationCancelled"]
    assert cancelled.event_id == f"{op}.cancelled"
    assert cancelled.payload.collection_changed
    assert list(completed_steps(events)) == ["create_collection"]
    assert not [e for e in events if e.kind == "OperationCompleted"]
    # What it wrote before it stopped is stored all the same, and the collection
    # it made stays until a DELETE: both go to the resources service.
    usage = events[-1]  # nothing else after the outcome
    assert events[-2] == cancelled and usage.kind == "UsageDelta"
    assert usage.event_id == f"{op}.usage"
    documents, vectors, _ = await indexer.repository.counts(collection.collection_id)
    assert documents > 0 and vectors > 0
    assert (usage.payload.documents_delta, usage.payload.vectors_delta) == (documents, vectors)
    assert usage.payload.collections_delta == 1
    assert await indexer.store.get_alias(collection.alias_name) is None  # never finalized


async def test_a_run_cut_short_then_cancelled_still_reports_what_it_stored(
    indexer: Indexer,
) -> None:
    write_texts(indexer.roots / "docs", 8, sentences=20)
    collection = snapshot()
    command = index_command(collection, directory(indexer.roots / "docs"))
    op, cid = command.operation_id, collection.collection_id
    spec = indexer.consumer.spec
    await indexer.bus.ensure_consumer(spec)
    pull = await indexer.bus.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
    indexer.gate.hold_after(2)
    await indexer.send("INDEX", command)
    [msg] = await pull.fetch(1, timeout=10)
    first = asyncio.create_task(
        indexer.consumer.handle(Delivery(msg.subject, msg.data, {}, 1, False, msg))
    )

    async def mid_ingest() -> bool:
        return indexer.gate.held.is_set() and (await indexer.repository.counts(cid))[0] > 0

    await eventually(mid_ingest, "some documents were written and embedding waits")
    first.cancel()  # the indexer dies mid-ingest, and the operation is cancelled meanwhile
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await indexer.cancel(op, cid)
    await eventually(lambda: indexer.journal.is_cancelled(op), "the cancel was recorded")
    await msg.nak()
    await pull.unsubscribe()
    indexer.gate.open()
    indexer.start_consuming()
    events = await indexer.settled(op)

    # The redelivered command is dropped: no step runs again, but the usage counts.
    assert [e.payload.step for e in events if e.kind == "StepStarted"] == [
        "create_collection",
        "ingest",
    ]
    [usage] = [e for e in events if e.kind == "UsageDelta"]
    documents, vectors, _ = await indexer.repository.counts(cid)
    assert documents > 0
    assert usage.event_id == f"{op}.usage" and usage.payload.collections_delta == 1
    assert (usage.payload.documents_delta, usage.payload.vectors_delta) == (documents, vectors)
    assert (await indexer.journal.run(op)).outcome is Outcome.CANCELLED


async def test_a_command_arriving_after_its_cancel_is_dropped(indexer: Indexer) -> None:
    write_texts(indexer.roots / "docs", 1)
    collection = snapshot()
    command = index_command(collection, directory(indexer.roots / "docs"))
    await indexer.cancel(command.operation_id, collection.collection_id)
    await eventually(
        lambda: indexer.journal.is_cancelled(command.operation_id), "the cancel was recorded"
    )
    indexer.start_consuming()
    assert await indexer.run("INDEX", command) == []
    assert not await indexer.store.collection_exists(collection.physical_collection)


async def test_path_escape_at_append_fails_invalid_source_path_and_writes_nothing(
    indexer: Indexer, tmp_path: Path
) -> None:
    write_texts(indexer.roots / "docs", 2)
    write_texts(tmp_path / "outside", 2)
    collection = snapshot()
    indexer.start_consuming()
    await indexer.run("INDEX", index_command(collection, directory(indexer.roots / "docs")))
    name, cid = collection.physical_collection, collection.collection_id
    points = await indexer.store.count(name)
    escape = directory(tmp_path / "outside")

    events = await indexer.run("APPEND", append_command(collection, escape))
    assert [(e.kind, getattr(e.payload, "step", "")) for e in events] == [
        ("StepStarted", "scan"),
        ("OperationFailed", ""),
    ]
    failed = events[-1]
    assert failed.event_id == f"{failed.operation_id}.failed"
    error = failed.payload.error
    assert (error.type, error.step) == ("INVALID_SOURCE_PATH", "scan")
    assert "outside the allowed source roots" in error.message
    assert str(tmp_path) not in error.message  # temp paths are masked
    assert not failed.payload.collection_changed
    assert await indexer.store.count(name) == points
    assert escape.id not in {s.source_id for s in await indexer.repository.list_sources(cid)}
    assert (await indexer.repository.counts(cid))[0] == 2


async def test_a_failed_index_still_counts_its_collection(indexer: Indexer, tmp_path: Path) -> None:
    write_texts(tmp_path / "outside", 2)
    collection = snapshot()
    indexer.start_consuming()
    events = await indexer.run("INDEX", index_command(collection, directory(tmp_path / "outside")))
    [failed] = [e for e in events if e.kind == "OperationFailed"]
    assert failed.payload.error.type == "INVALID_SOURCE_PATH"
    # An ERROR collection holds its name until a DELETE: it counts, with nothing stored.
    usage = events[-1]
    assert usage.kind == "UsageDelta" and usage.event_id == f"{failed.operation_id}.usage"
    assert usage.payload.collections_delta == 1 and usage.payload.reason == "index"
    assert (usage.payload.documents_delta, usage.payload.vectors_delta) == (0, 0)


async def test_an_announced_failure_is_announced_again_after_a_crash_not_run_again(
    indexer: Indexer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure went out but the usage after it did not (NATS lost a moment):
    the command comes back and announces the same failure again, running no
    step again. Run again, a REINDEX whose failure was announced would build a
    staging collection nobody deletes any more."""
    write_texts(tmp_path / "outside", 2)
    collection = snapshot()
    publish_usage = OperationEvents.usage
    lost: list[str] = []

    async def usage_lost_once(self: OperationEvents, order, change) -> None:
        if not lost:
            lost.append(order.operation_id)
            raise ConnectionError("nats-server went away")
        await publish_usage(self, order, change)

    monkeypatch.setattr(OperationEvents, "usage", usage_lost_once)
    indexer.start_consuming()
    command = index_command(collection, directory(tmp_path / "outside"))
    events = await indexer.run("INDEX", command)

    assert lost == [command.operation_id]
    starts = [e.payload.step for e in events if e.kind == "StepStarted"]
    assert starts and len(starts) == len(set(starts)), starts  # no step ran twice
    first, again = [e for e in events if e.kind == "OperationFailed"]
    assert first.event_id == again.event_id and first.payload == again.payload
    assert first.payload.error.type == "INVALID_SOURCE_PATH"
    [usage] = [e for e in events if e.kind == "UsageDelta"]
    assert usage.payload.collections_delta == 1
    run = await indexer.journal.run(command.operation_id)
    assert run.outcome is Outcome.FAILED and run.finished


async def test_reindex_fails_at_preflight_on_an_indexer_not_set_up_for_it(
    indexer: Indexer,
) -> None:
    # This harness has no reindex services (tests/integration/test_indexer_reindex.py has).
    collection = snapshot()
    command = commands_pb2.ReindexCommand(
        operation_id=str(uuid.uuid4()), collection=collection, target_config=collection.config
    )
    indexer.start_consuming()
    events = await indexer.run("REINDEX", command)
    assert [(e.kind, getattr(e.payload, "step", "")) for e in events] == [
        ("StepStarted", "preflight"),
        ("OperationFailed", ""),
    ]
    failed = events[-1]
    assert failed.event_id == f"{command.operation_id}.failed"
    assert (failed.payload.error.type, failed.payload.error.step) == ("HANDLER_ERROR", "preflight")
    assert failed.payload.error.message == "this indexer is not set up to run REINDEX"
    assert not failed.payload.staging_deleted


async def test_append_over_the_document_limit_fails_quota_exceeded_before_writing(
    indexer: Indexer,
) -> None:
    write_texts(indexer.roots / "docs", 1)
    write_texts(indexer.roots / "many", 4)
    collection = snapshot()
    indexer.start_consuming()
    await indexer.run("INDEX", index_command(collection, directory(indexer.roots / "docs")))
    points = await indexer.store.count(collection.physical_collection)
    command = append_command(collection, directory(indexer.roots / "many"))
    command.max_documents = 3

    events = await indexer.run("APPEND", command)
    [failed] = [e.payload for e in events if e.kind == "OperationFailed"]
    assert (failed.error.type, failed.error.step) == ("QUOTA_EXCEEDED", "scan")
    assert not completed_steps(events)
    assert await indexer.store.count(collection.physical_collection) == points

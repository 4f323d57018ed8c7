"""The end of a blue-green REINDEX on the indexer's side, with real parts: the
switch step against the real orchestrator in-process (its CompleteReindex over
gRPC), Postgres for both services' schemas, a nats-server of this module's own,
and Qdrant's embedded engine in a temp dir.

What must hold: the switch moves the alias and the indexer's copy exactly
once however often it is run; a stale generation fails it STALE_GENERATION;
the CollectionSwitched event and the start-up reconciler make the alias
follow the recorded truth idempotently; the cleanup loop deletes a retired
collection only after every safety check, keeps the checks with the job and
publishes an audit record per decision.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from indexer_events import step_completed
from orchestrator_harness import ALICE, Orchestrator, collection, config, running_orchestrator
from prometheus_client import REGISTRY

from indexer.adapters.cleanup_jobs import CleanupJobs
from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRecord,
    DocumentRepository,
    DocumentStatus,
    SourceRecord,
)
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.operation_journal import OperationJournal
from indexer.adapters.orchestrator_client import ReindexControlClient
from indexer.adapters.reindex_repository import ReindexRepository
from indexer.adapters.reindex_switches import CopyChange, ReindexSwitches, SwitchTarget
from indexer.adapters.vector_store import VectorPoint
from indexer.cancellations import Cancellations
from indexer.cleanup import CleanupLoop
from indexer.collection_events import CollectionEventConsumer
from indexer.collection_switch import CollectionSwitcher
from indexer.domain.documents import document_id
from indexer.domain.operation_plan import CollectionFigures, OperationFigures
from indexer.domain.reindex_plan import ReindexTarget
from indexer.operation_events import OperationEvents
from indexer.operation_failures import failure_of, is_transient
from indexer.operation_runner import OperationRunner
from indexer.operations.base import OperationOrder, OperationServices, StepContext
from indexer.operations.reindex_switch import cleanup_step, switch_step
from indexer.operations.switch_services import SwitchServices
from indexer.reconciler import AliasReconciler
from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream
from kit.bus.topology import ALL_STREAMS, AUDIT
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import ModelRegistry
from kit.errors import FailedPrecondition, Unavailable
from kit.events import new_envelope, parse_envelope, unpack
from kit.operation_protocol import ErrorType, OperationType
from kit.outbox import OutboxDispatcher
from kit.stack.nats import NatsServer
from orchestrator.event_consumer import OperationEventConsumer
from vectorops.common.v1 import audit_pb2, operation_pb2
from vectorops.events.v1 import audit_record_pb2, collection_events_pb2
from vectorops.events.v1 import operation_events_pb2 as events_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api

SCHEMA = "indexer"
OLD_CONFIG = {
    "embedding_model": "vectorops/hash-bow-384",
    "dimension": 384,
    "quantization": "float32",
    "chunk_size": 256,
    "chunk_overlap": 32,
}
NEW_CONFIG = {**OLD_CONFIG, "chunk_size": 100, "chunk_overlap": 10}
STAMP = "20250501T000000Z"
DIMENSION = 8  # the store's vectors: only counts and names matter here


# --- the parts -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """This module's own nats-server: nothing here reaches the session stack."""
    server = NatsServer(tmp_path_factory.mktemp("switch-nats"), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def bus(own_nats: NatsServer) -> AsyncIterator[JetStream]:
    bus = await JetStream.connect(own_nats.url, name="reindex-switch-test", storage="memory")
    await bus.ensure_streams(ALL_STREAMS)
    yield bus
    await bus.close()


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """The indexer's schema in the test's database (the orchestrator's sits beside it)."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("indexer"))
    yield pool
    await pool.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EdgeVectorStore]:
    store = EdgeVectorStore(tmp_path / "store")
    yield store
    await store.close()


@dataclass
class Indexer:
    """The indexer's adapters a switch and a cleanup work with."""

    pool: asyncpg.Pool
    store: EdgeVectorStore
    repository: DocumentRepository
    switches: ReindexSwitches
    switcher: CollectionSwitcher
    jobs: CleanupJobs
    journal: OperationJournal
    runs: ReindexRepository

    def services(self, control: Any, deadline_seconds: float = 10.0) -> OperationServices:
        return OperationServices(
            repository=self.repository,
            store=self.store,
            registry=ModelRegistry(),
            source_roots=(),
            embed_for=_no_embedding,
            reindex_switch=SwitchServices(
                control=control,
                switcher=self.switcher,
                cleanup_jobs=self.jobs,
                journal=self.journal,
                deadline_seconds=deadline_seconds,
            ),
        )

    def cleanup(
        self, min_age: timedelta = timedelta(hours=1), released: list[str] | None = None
    ) -> CleanupLoop:
        """A cleanup loop; the operations whose reservations it releases go to ``released``."""

        async def release(operation_id: str) -> None:
            if released is not None:
                released.append(operation_id)

        return CleanupLoop(
            self.jobs, self.store, interval_seconds=0.05, min_staging_age=min_age, release=release
        )

    async def copy(self, collection_id: str) -> CollectionRecord:
        return await self.repository.get_collection(collection_id)

    async def outbox(self, subject: str) -> list[Any]:
        rows = await self.pool.fetch(
            f"SELECT payload FROM {SCHEMA}.outbox WHERE subject = $1 ORDER BY id", subject
        )
        return [parse_envelope(row["payload"]) for row in rows]


def _no_embedding(operation_id: str, collection_id: str) -> Any:
    raise AssertionError("the switch and cleanup steps embed nothing")


@pytest.fixture
def indexer(pool: asyncpg.Pool, store: EdgeVectorStore) -> Indexer:
    switches = ReindexSwitches(pool, SCHEMA)
    return Indexer(
        pool=pool,
        store=store,
        repository=DocumentRepository(pool, SCHEMA),
        switches=switches,
        switcher=CollectionSwitcher(switches, store),
        jobs=CleanupJobs(pool, SCHEMA),
        journal=OperationJournal(pool, SCHEMA),
        runs=ReindexRepository(pool, SCHEMA),
    )


@pytest.fixture
async def orch(database: str, own_nats: NatsServer, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    """The real orchestrator in-process; its old collections wait one second."""
    async with running_orchestrator(
        database,
        own_nats.url,
        tmp_path,
        orchestrator_cleanup_base_delay_seconds=1,
        orchestrator_cleanup_per_10k_vectors_seconds=1,
    ) as running:
        yield running


@pytest.fixture
async def control(orch: Orchestrator) -> AsyncIterator[ReindexControlClient]:
    """The indexer's client of CompleteReindex, with the service-role token."""
    client = ReindexControlClient(orch.address, "indexer-token", timeout_seconds=5)
    yield client
    await client.close()


# --- arranging -----------------------------------------------------------------------------


def points(count: int, document: str = "") -> list[VectorPoint]:
    rng = np.random.default_rng(count)
    return [
        VectorPoint(
            id=str(uuid.uuid4()),
            vector=rng.random(DIMENSION, dtype=np.float32),
            payload={"document_id": document or str(uuid.uuid4()), "chunk_index": i},
        )
        for i in range(count)
    ]


async def physical(store: EdgeVectorStore, name: str, count: int = 3) -> str:
    await store.create_collection(name, DIMENSION)
    await store.upsert(name, points(count))
    return name


async def report(orch: Orchestrator, op_id: str, step: str, state: dict[str, Any]) -> None:
    """The indexer's StepCompleted, handed to the orchestrator's event consumer."""
    record = await orch.app.repository.get_operation(op_id, None)
    subject, payload, _ = step_completed(record, step, state)
    if step == "validation":
        payload.reindex_validation.validation.CopyFrom(validation_result())
    envelope = new_envelope(
        payload,
        producer="indexer",
        operation_id=op_id,
        collection_id=payload.collection_id,
        owner_id="alice",
    )
    delivery = Delivery(subject, envelope.SerializeToString(), {}, 1, False, None)
    await OperationEventConsumer(orch.app.repository).handle(delivery)


def validation_result() -> operation_pb2.ValidationResult:
    return operation_pb2.ValidationResult(
        passed=True, expected_point_count=6, actual_point_count=6, probe_query_count=3
    )


@dataclass(frozen=True)
class Reindex:
    """A REINDEX the orchestrator runs, with the indexer's side of it prepared."""

    operation_id: str
    collection_id: str
    alias: str
    old_physical: str
    staging: str
    documents: tuple[str, ...]  # their ids: two reprocessed, the last one failed
    order: OperationOrder

    def context(self, services: OperationServices, generation: int | None = None) -> StepContext:
        order = self.order
        if generation is not None:
            snapshot = CollectionRecord(**{**order.collection.__dict__, "generation": generation})
            order = OperationOrder(**{**order.__dict__, "collection": snapshot})
        return StepContext(
            order=order,
            services=services,
            figures=OperationFigures(),
            report=_nothing,
            cancel=asyncio.Event(),
            before=CollectionFigures(),
            checkpoints={
                "staging": {"staging_collection": self.staging, "created_at": "x"},
                "validation": {"passed": True},
            },
        )


async def _nothing() -> None:
    return None


async def reindex(
    orch: Orchestrator, indexer: Indexer, through: str | None = "validation"
) -> Reindex:
    """A READY collection (live in the store behind its alias, three indexed
    documents) whose REINDEX has been reported to the orchestrator up to and
    including ``through``, its staging collection built."""
    name = f"docs-{uuid.uuid4().hex[:6]}"
    created = await orch.collections.CreateCollection(
        api.CreateCollectionRequest(collection=collection(name), request_id=f"create-{name}"),
        metadata=ALICE,
    )
    collection_id = created.collection.id
    for step, state in (
        ("create_collection", {}),
        ("ingest", {}),
        (
            "finalize",
            {
                "document_count": 3,
                "vector_count": 6,
                "stored_bytes": 300,
                "source_document_counts": {},
            },
        ),
    ):
        await report(orch, created.operation.id, step, state)
    live = await orch.app.repository.get_collection(collection_id, None)
    response = await orch.collections.ReindexCollection(
        api.ReindexCollectionRequest(
            collection_id=collection_id,
            request_id=f"reindex-{name}",
            config=config(chunk_size=100, chunk_overlap=10),
        ),
        metadata=ALICE,
    )
    op_id = response.operation.id
    staging = f"{live.physical_collection}_staging_{STAMP}"

    # The indexer's side: its copy, the live collection behind the alias, the
    # documents, what reprocessing made of them, and the staging collection.
    store = indexer.store
    await physical(store, live.physical_collection, 6)
    await store.set_alias(live.alias_name, live.physical_collection)
    snapshot = CollectionRecord(
        collection_id=collection_id,
        owner_id="alice",
        alias_name=live.alias_name,
        physical_collection=live.physical_collection,
        generation=live.generation,
        config=OLD_CONFIG,
    )
    await indexer.repository.upsert_collection(snapshot)
    source_id = str(uuid.uuid4())
    await indexer.repository.add_source(
        SourceRecord(source_id, collection_id, "directory", "/data/docs")
    )
    docs = [live_document(collection_id, source_id, f"doc-{i}.txt") for i in range(3)]
    await indexer.repository.record_documents(docs)
    await indexer.runs.record_staging(op_id, collection_id, staging)
    staged = [
        DocumentRecord(**{**docs[0].__dict__, "chunk_count": 3, "vector_count": 3}),
        DocumentRecord(**{**docs[1].__dict__, "chunk_count": 4, "vector_count": 4}),
        DocumentRecord(
            **{
                **docs[2].__dict__,
                "status": DocumentStatus.FAILED,
                "failure_reason": "SOURCE_UNREADABLE",
                "failure_message": "gone",
            }
        ),
    ]
    await indexer.runs.record_results(op_id, staged)
    await physical(store, staging, 7)

    steps = {
        "preflight": {"dimension": 384, "expected_vectors": 7, "reservation": "unavailable"},
        "staging": {"staging_collection": staging, "created_at": "2025-05-01T00:00:00Z"},
        "reprocessing": {"documents_done": 2, "documents_failed": 1, "vectors_written": 7},
        "validation": {"passed": True},
    }
    for step, state in steps.items():
        if through is None:
            break
        await report(orch, op_id, step, state)
        if step == through:
            break
    order = OperationOrder(
        operation_id=op_id,
        type=OperationType.REINDEX,
        collection=snapshot,
        reindex=ReindexTarget(config=NEW_CONFIG),
    )
    return Reindex(
        op_id,
        collection_id,
        live.alias_name,
        live.physical_collection,
        staging,
        tuple(d.document_id for d in docs),
        order,
    )


def live_document(collection_id: str, source_id: str, path: str) -> DocumentRecord:
    return DocumentRecord(
        document_id=document_id(collection_id, source_id, path),
        collection_id=collection_id,
        source_id=source_id,
        path=path,
        content_hash=f"hash-{path}",
        status=DocumentStatus.INDEXED,
        chunk_count=2,
        vector_count=2,
        bytes=100,
    )


def switch_calls(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("vectorops_reindex_switch_calls_total", labels) or 0


# --- the switch step against the real orchestrator ----------------------------------------


async def test_the_switch_moves_the_alias_and_the_copy_as_the_orchestrator_recorded(
    orch: Orchestrator, indexer: Indexer, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer)
    output = await switch_step(run.context(indexer.services(control)))

    # The orchestrator's Postgres: switched once, to the staging collection.
    after = await orch.app.repository.get_collection(run.collection_id, None)
    assert (after.generation, after.physical_collection) == (2, run.staging)
    operation = await orch.app.repository.get_operation(run.operation_id, None)
    switch_checkpoint = operation.operation.checkpoints["switch"]
    assert output.checkpoint == dict(switch_checkpoint)
    assert output.checkpoint == {
        "from_generation": 1,
        "to_generation": 2,
        "physical_collection": run.staging,
    }
    result = output.result
    assert result.generation == 2 and result.physical_collection == run.staging
    assert list(result.retired_collections) == [run.old_physical]
    assert result.alias_moved and result.HasField("cleanup_not_before")

    # The indexer: the alias follows, then the copy and the documents' figures.
    assert await indexer.store.get_alias(run.alias) == run.staging
    copy = await indexer.copy(run.collection_id)
    assert (copy.generation, copy.physical_collection) == (2, run.staging)
    assert copy.config == NEW_CONFIG and copy.staging_collection is None
    figures = {
        d.document_id: (d.status, d.chunk_count, d.vector_count, d.failure_reason)
        for d in (await indexer.repository.list_documents(run.collection_id, 10))[0]
    }
    assert figures == {
        run.documents[0]: (DocumentStatus.INDEXED, 3, 3, None),
        run.documents[1]: (DocumentStatus.INDEXED, 4, 4, None),
        run.documents[2]: (DocumentStatus.FAILED, 0, 0, "SOURCE_UNREADABLE"),
    }
    assert await indexer.repository.counts(run.collection_id) == (2, 7, 200)
    # The old collection still serves nobody but still exists: cleanup's job.
    assert await indexer.store.collection_exists(run.old_physical)

    # cleanup schedules its deletion at the switch's cleanup time and completes.
    cleaned = await cleanup_step(run.context(indexer.services(control)))
    [job] = await indexer.jobs.jobs_of(run.operation_id)
    assert job.collection_name == run.old_physical and job.status == "PENDING"
    assert job.not_before == result.cleanup_not_before.ToDatetime(tzinfo=UTC)
    assert cleaned.checkpoint == {
        "scheduled_collections": [run.old_physical],
        "delete_after": job.not_before.isoformat(),
    }
    assert list(cleaned.result.scheduled_collections) == [run.old_physical]
    assert cleaned.result.delete_after == result.cleanup_not_before


async def test_a_resumed_switch_switches_nothing_twice(
    orch: Orchestrator, indexer: Indexer, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer)
    services = indexer.services(control)
    first = await switch_step(run.context(services))
    calls = switch_calls("switched") + switch_calls("replayed")

    # Run again with the answer recorded (a crash after the step's work): no call at all.
    again = await switch_step(run.context(services))
    assert (again.checkpoint, again.result) == (first.checkpoint, first.result)
    assert switch_calls("switched") + switch_calls("replayed") == calls

    # Run again with the answer lost (a crash between the call and its record):
    # the orchestrator replays its first result.
    await indexer.pool.execute(
        f"UPDATE {SCHEMA}.reindex_switches SET generation = NULL, answered_at = NULL"
    )
    replayed_before = switch_calls("replayed")
    third = await switch_step(run.context(services))
    assert switch_calls("replayed") == replayed_before + 1
    assert (third.checkpoint, third.result) == (first.checkpoint, first.result)

    after = await orch.app.repository.get_collection(run.collection_id, None)
    assert after.generation == 2  # one switch in Postgres
    assert len(await orch.outbox(subjects.COLLECTION_SWITCHED)) == 1
    copy = await indexer.copy(run.collection_id)
    assert (copy.generation, copy.physical_collection) == (2, run.staging)
    assert await indexer.repository.counts(run.collection_id) == (2, 7, 200)


async def test_a_stale_generation_fails_the_switch_and_changes_nothing(
    orch: Orchestrator, indexer: Indexer, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer)
    with pytest.raises(FailedPrecondition) as refused:
        await switch_step(run.context(indexer.services(control), generation=7))
    error = refused.value
    assert error.reason == "STALE_GENERATION"
    assert error.metadata["actual_generation"] == "1"
    # The runner fails the operation with that type, for good (no redelivery).
    assert failure_of(error).type is ErrorType.STALE_GENERATION and not is_transient(error)

    assert await indexer.store.get_alias(run.alias) == run.old_physical
    copy = await indexer.copy(run.collection_id)
    assert (copy.generation, copy.physical_collection) == (1, run.old_physical)
    assert (await orch.app.repository.get_collection(run.collection_id, None)).generation == 1
    record = await indexer.switches.get(run.operation_id)
    assert record is not None and not record.answered


async def test_the_switch_waits_for_the_orchestrator_to_see_validation_pass(
    orch: Orchestrator, indexer: Indexer, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer, through="reprocessing")
    switching = asyncio.create_task(switch_step(run.context(indexer.services(control))))
    retried = switch_calls("retried")
    deadline = asyncio.get_running_loop().time() + 10
    while switch_calls("retried") == retried:  # refused VALIDATION_NOT_PASSED at least once
        assert asyncio.get_running_loop().time() < deadline and not switching.done()
        await asyncio.sleep(0.02)
    await report(orch, run.operation_id, "validation", {"passed": True})
    output = await asyncio.wait_for(switching, 10)
    assert output.checkpoint["to_generation"] == 2
    assert await indexer.store.get_alias(run.alias) == run.staging


async def test_the_switch_gives_up_at_its_deadline_for_good(
    orch: Orchestrator, indexer: Indexer, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer, through="reprocessing")
    with pytest.raises(FailedPrecondition) as never_passed:
        await switch_step(run.context(indexer.services(control, deadline_seconds=0.3)))
    assert never_passed.value.reason == "VALIDATION_NOT_PASSED"
    assert failure_of(never_passed.value).type is ErrorType.HANDLER_ERROR

    unreachable = ReindexControlClient("127.0.0.1:1", "indexer-token", timeout_seconds=1)
    try:
        with pytest.raises(Unavailable) as down:
            await switch_step(run.context(indexer.services(unreachable, deadline_seconds=0.3)))
    finally:
        await unreachable.close()
    assert down.value.reason == "ORCHESTRATOR_UNAVAILABLE"
    assert not is_transient(down.value)  # the operation fails; no endless redelivery
    assert await indexer.store.get_alias(run.alias) == run.old_physical


# --- through the runner: a REINDEX resumed after its validation ---------------------------


async def record_first_four(indexer: Indexer, run: Reindex) -> None:
    """The journal of an indexer that ran the REINDEX up to its validation."""
    states = {
        "preflight": {"dimension": 384, "expected_vectors": 7},
        "staging": {"staging_collection": run.staging, "created_at": "x"},
        "reprocessing": {"documents_done": 2, "documents_failed": 1},
        "validation": {"passed": True},
    }
    for index, (step, state) in enumerate(states.items(), 1):
        payload = events_pb2.StepCompleted(
            operation_id=run.operation_id, collection_id=run.collection_id, step=step
        )
        payload.checkpoint.state.update(state)
        if step == "validation":
            payload.reindex_validation.validation.CopyFrom(validation_result())
        await indexer.journal.record_step(
            run.operation_id, step, index, state, payload.SerializeToString()
        )


async def run_to_the_end(
    indexer: Indexer, bus: JetStream, control: ReindexControlClient, order: OperationOrder
) -> list[Any]:
    """Run ``order`` through the indexer's runner; what it announced, in order."""
    heard: list[Any] = []
    marker = f"vo.evt.op.marker.{uuid.uuid4().hex}"
    drained = asyncio.Event()

    async def hear(msg: Any) -> None:
        if msg.subject == marker:
            drained.set()  # everything published before it has been heard
            return
        envelope = parse_envelope(msg.data)
        if envelope.operation_id == order.operation_id:
            heard.append(envelope)

    subscription = await bus.nc.subscribe("vo.evt.op.>", cb=hear)
    try:
        runner = OperationRunner(
            indexer.services(control),
            indexer.journal,
            OperationEvents(bus),
            Cancellations(indexer.journal),
            progress_interval_seconds=0.5,
        )
        await runner.run(order)
        await bus.nc.publish(marker, b"")
        await asyncio.wait_for(drained.wait(), 10)
    finally:
        await subscription.unsubscribe()
    return heard


async def test_the_runner_switches_cleans_up_and_completes_the_reindex(
    orch: Orchestrator, indexer: Indexer, bus: JetStream, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer)
    await record_first_four(indexer, run)
    heard = await run_to_the_end(indexer, bus, control, run.order)

    kinds = [e.type.rsplit(".", 1)[-1] for e in heard]
    assert kinds[-1] == "OperationCompleted", kinds
    completed = {
        unpack(e, events_pb2.StepCompleted).step: unpack(e, events_pb2.StepCompleted)
        for e in heard
        if e.type.endswith("StepCompleted")
    }
    assert list(completed) == [
        "preflight",
        "staging",
        "reprocessing",
        "validation",
        "switch",
        "cleanup",
    ]
    switch = completed["switch"]
    assert switch.reindex_switch.generation == 2 and switch.reindex_switch.alias_moved
    assert dict(switch.checkpoint.state) == {
        "from_generation": 1,
        "to_generation": 2,
        "physical_collection": run.staging,
    }
    assert list(completed["cleanup"].reindex_cleanup.scheduled_collections) == [run.old_physical]
    assert await indexer.store.get_alias(run.alias) == run.staging


async def test_the_runner_fails_a_stale_switch_stale_generation(
    orch: Orchestrator, indexer: Indexer, bus: JetStream, control: ReindexControlClient
) -> None:
    run = await reindex(orch, indexer)
    await record_first_four(indexer, run)
    # Another switch moved the collection on meanwhile (as far as the orchestrator knows).
    await orch.pool.execute(
        "UPDATE orchestrator.collections SET generation = 5 WHERE id = $1",
        uuid.UUID(run.collection_id),
    )
    heard = await run_to_the_end(indexer, bus, control, run.order)

    [failed] = [e for e in heard if e.type.endswith("OperationFailed")]
    error = unpack(failed, events_pb2.OperationFailed).error
    assert (error.type, error.step) == ("STALE_GENERATION", "switch")
    assert not [e for e in heard if e.type.endswith("OperationCompleted")]
    assert await indexer.store.get_alias(run.alias) == run.old_physical
    assert (await indexer.copy(run.collection_id)).generation == 1


# --- the CollectionSwitched consumer --------------------------------------------------------


def switched_event(run: Reindex, generation: int, physical: str) -> bytes:
    not_before = datetime.now(UTC) + timedelta(minutes=5)
    event = collection_events_pb2.CollectionSwitched(
        collection_id=run.collection_id,
        operation_id=run.operation_id,
        generation=generation,
        alias_name=run.alias,
        physical_collection=physical,
        retired_collections=[run.old_physical],
    )
    event.cleanup_not_before.FromDatetime(not_before)
    envelope = new_envelope(
        event,
        producer="orchestrator",
        operation_id=run.operation_id,
        collection_id=run.collection_id,
    )
    return envelope.SerializeToString()


async def test_collection_switched_moves_the_alias_once_and_ignores_an_older_generation(
    orch: Orchestrator, indexer: Indexer, bus: JetStream
) -> None:
    # The indexer asked for the switch (its request recorded), then died before
    # the answer: the event is all it hears.
    run = await reindex(orch, indexer)
    await indexer.switches.record_request(
        run.operation_id, run.collection_id, run.staging, 1, NEW_CONFIG
    )
    consumer = CollectionEventConsumer(indexer.switcher)
    stop = asyncio.Event()
    consuming = asyncio.create_task(consumer.run(bus, stop))
    try:
        await bus.publish(
            subjects.COLLECTION_SWITCHED, switched_event(run, 2, run.staging), msg_id="sw-1"
        )

        async def switched() -> bool:
            return (await indexer.copy(run.collection_id)).generation == 2

        await _eventually(switched)
        copy = await indexer.copy(run.collection_id)
        assert copy.physical_collection == run.staging and copy.config == NEW_CONFIG
        assert await indexer.store.get_alias(run.alias) == run.staging
        assert await indexer.repository.counts(run.collection_id) == (2, 7, 200)
        record = await indexer.switches.get(run.operation_id)
        assert record is not None and record.answered and record.generation == 2
        assert record.retired_collections == (run.old_physical,)
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)

    # Twice is the same as once; an older generation changes nothing, the alias included.
    before = (
        await indexer.copy(run.collection_id),
        await indexer.repository.counts(run.collection_id),
    )
    for payload in (switched_event(run, 2, run.staging), switched_event(run, 1, run.old_physical)):
        await consumer.handle(Delivery(subjects.COLLECTION_SWITCHED, payload, {}, 1, False, None))
        after = (
            await indexer.copy(run.collection_id),
            await indexer.repository.counts(run.collection_id),
        )
        assert after == before
    assert await indexer.store.get_alias(run.alias) == run.staging


async def _eventually(check: Any, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- the start-up reconciler ---------------------------------------------------------------


async def live_copy(indexer: Indexer, generation: int = 1, live: bool = True) -> CollectionRecord:
    """A collection copy with its physical collection, made live by an INDEX
    (its finalize recorded) unless ``live`` is False (an INDEX that never finished)."""
    collection_id = str(uuid.uuid4())
    hex_id = uuid.UUID(collection_id).hex
    record = CollectionRecord(
        collection_id=collection_id,
        owner_id="alice",
        alias_name=f"vo_{hex_id}",
        physical_collection=await physical(indexer.store, f"vo_{hex_id}_g{generation}"),
        generation=generation,
        config=OLD_CONFIG,
    )
    await indexer.repository.upsert_collection(record)
    op_id = str(uuid.uuid4())
    await indexer.journal.begin_run(op_id, collection_id, "INDEX", CollectionFigures())
    if live:
        await indexer.journal.record_step(op_id, "finalize", 3, {}, b"")
    return record


async def test_the_reconciler_repairs_wrong_and_missing_aliases_and_leaves_the_rest(
    indexer: Indexer,
) -> None:
    store = indexer.store
    correct, wrong, missing = [await live_copy(indexer) for _ in range(3)]
    unfinished = await live_copy(indexer, live=False)
    await store.set_alias(correct.alias_name, correct.physical_collection)
    await store.set_alias(wrong.alias_name, correct.physical_collection)
    # Switched in Postgres (the answer recorded), not yet here.
    pending = await live_copy(indexer)
    await store.set_alias(pending.alias_name, pending.physical_collection)
    new_physical = await physical(store, f"{pending.physical_collection}_staging_{STAMP}")
    op_id = str(uuid.uuid4())
    await indexer.switches.record_request(op_id, pending.collection_id, new_physical, 1, NEW_CONFIG)
    await indexer.switches.record_answer(op_id, 2, [pending.physical_collection], datetime.now(UTC))

    repairs = await AliasReconciler(indexer.switches, indexer.switcher, store).reconcile()

    assert {(r.alias_name, r.was, r.now) for r in repairs} == {
        (wrong.alias_name, correct.physical_collection, wrong.physical_collection),
        (missing.alias_name, None, missing.physical_collection),
        (pending.alias_name, pending.physical_collection, new_physical),
    }
    for record in (correct, wrong, missing):
        assert await store.get_alias(record.alias_name) == record.physical_collection
    assert await store.get_alias(unfinished.alias_name) is None  # never made live
    copy = await indexer.copy(pending.collection_id)
    assert (copy.generation, copy.physical_collection, copy.config) == (2, new_physical, NEW_CONFIG)
    # Run again: nothing left to repair.
    assert await AliasReconciler(indexer.switches, indexer.switcher, store).reconcile() == []


class ReadThenWait(ReindexSwitches):
    """A starting replica's reconciler: it reads the copies, then waits until
    another replica has acted, then repairs from what it read."""

    def __init__(self, pool: asyncpg.Pool, read: asyncio.Event, go: asyncio.Event) -> None:
        super().__init__(pool, SCHEMA)
        self._read, self._go = read, go

    async def live_copies(self):
        copies = await super().live_copies()
        self._read.set()
        await self._go.wait()
        return copies


async def test_a_starting_replica_does_not_move_back_an_alias_another_just_switched(
    indexer: Indexer, database: str
) -> None:
    """Two indexers on one Qdrant: one applies a CollectionSwitched (no answer of
    its own recorded) while the other's start-up reconciler holds an older
    reading of the copy; the alias stays on the new collection."""
    record = await live_copy(indexer)
    await indexer.store.set_alias(record.alias_name, record.physical_collection)
    new_physical = await physical(indexer.store, f"{record.physical_collection}_staging_{STAMP}")
    other_pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    read, go = asyncio.Event(), asyncio.Event()
    starting = ReadThenWait(other_pool, read, go)
    reconciler = AliasReconciler(
        starting, CollectionSwitcher(starting, indexer.store), indexer.store
    )
    try:
        reconciling = asyncio.create_task(reconciler.reconcile())
        await asyncio.wait_for(read.wait(), 10)
        applied = await indexer.switcher.apply(
            SwitchTarget(
                collection_id=record.collection_id,
                operation_id=str(uuid.uuid4()),
                generation=2,
                alias_name=record.alias_name,
                physical_collection=new_physical,
                config=NEW_CONFIG,
            ),
            why="event",
        )
        assert applied.change is CopyChange.SWITCHED
        go.set()
        repairs = await asyncio.wait_for(reconciling, 10)
    finally:
        await other_pool.close()
    assert repairs == []
    assert await indexer.store.get_alias(record.alias_name) == new_physical


# --- the cleanup loop ----------------------------------------------------------------------


async def retire(indexer: Indexer, name: str, due: datetime, op_id: str = "") -> str:
    op_id = op_id or str(uuid.uuid4())
    await indexer.jobs.schedule(op_id, str(uuid.uuid4()), "alice", [name], due)
    return op_id


async def test_a_due_job_deletes_the_collection_and_publishes_its_audit_record(
    indexer: Indexer, bus: JetStream
) -> None:
    now = datetime.now(UTC)
    old = await physical(indexer.store, f"vo_{uuid.uuid4().hex}_g1")
    later = await physical(indexer.store, f"vo_{uuid.uuid4().hex}_g1")
    op_id = await retire(indexer, old, now - timedelta(seconds=1))
    await retire(indexer, later, now + timedelta(minutes=5))  # not due yet

    released: list[str] = []
    decisions = await indexer.cleanup(released=released).run_once(now)

    assert [d.verdict.reason.value for d in decisions] == ["OK"]
    assert not await indexer.store.collection_exists(old)
    assert released == [op_id]  # the reindex's room goes back with its old collection
    assert await indexer.store.collection_exists(later)
    [job] = await indexer.jobs.jobs_of(op_id)
    assert job.status == "DELETED" and job.reason == "OK" and job.finished_at is not None
    assert {k: v["passed"] for k, v in job.checks.items() if isinstance(v, dict)} == {
        "system_collection": True,
        "still_referenced": True,
        "staging_age": True,
        "exists": True,
    }
    # The audit record goes out through the outbox, onto VO_AUDIT.
    subject = subjects.audit_subject("cleanup.delete_collection")
    [envelope] = await indexer.outbox(subject)
    record = unpack(envelope, audit_record_pb2.AuditRecord)
    assert record.action == "cleanup.delete_collection" and record.service == "indexer"
    assert record.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS
    assert record.details["collection"] == old and envelope.operation_id == op_id
    assert await OutboxDispatcher(indexer.pool, bus, SCHEMA).dispatch_once() == 1
    published = await bus.js.get_last_msg(AUDIT.name, subject)
    assert parse_envelope(published.data).event_id == envelope.event_id

    # Nothing due any more: a second pass decides nothing and audits nothing more.
    assert await indexer.cleanup().run_once(now) == []
    assert len(await indexer.outbox(subject)) == 1


async def test_the_safety_checks_keep_what_they_must(indexer: Indexer) -> None:
    store = indexer.store
    now = datetime.now(UTC)
    due = now - timedelta(seconds=1)
    live = await live_copy(indexer)  # referenced by its copy only (no alias here)
    staging_of_copy = await physical(store, f"vo_{uuid.uuid4().hex}_staging_20200101T000000Z")
    await indexer.repository.upsert_collection(
        CollectionRecord(
            **{
                **live.__dict__,
                "collection_id": str(uuid.uuid4()),
                "alias_name": f"vo_{uuid.uuid4().hex}",
                "physical_collection": f"vo_{uuid.uuid4().hex}_g1",
                "staging_collection": staging_of_copy,
            }
        )
    )
    alias_target = await physical(store, f"vo_{uuid.uuid4().hex}_g1")
    await store.set_alias(f"vo_{uuid.uuid4().hex}", alias_target)
    system = await store.create_collection("_system_probe", DIMENSION, system=True)
    assert system
    young_stamp = (now - timedelta(minutes=10)).strftime("%Y%m%dT%H%M%SZ")
    young = await physical(store, f"vo_{uuid.uuid4().hex}_staging_{young_stamp}")
    missing = f"vo_{uuid.uuid4().hex}_g1"

    expected = {
        "_system_probe": ("SKIPPED", "SYSTEM_COLLECTION"),
        live.physical_collection: ("SKIPPED", "STILL_REFERENCED"),
        staging_of_copy: ("SKIPPED", "STILL_REFERENCED"),
        alias_target: ("SKIPPED", "STILL_REFERENCED"),
        young: ("PENDING", "STAGING_TOO_YOUNG"),
        missing: ("GONE", "NOT_FOUND"),
    }
    ops = {name: await retire(indexer, name, due) for name in expected}

    released: list[str] = []
    loop = indexer.cleanup(min_age=timedelta(hours=1), released=released)
    decisions = await loop.run_once(now)
    assert len(decisions) == len(expected)
    # Settled for good (deleted, gone or kept): released; deferred: still held.
    assert sorted(released) == sorted(ops[name] for name in expected if name != young)
    for name, (status, reason) in expected.items():
        [job] = await indexer.jobs.jobs_of(ops[name])
        assert (job.status, job.reason, job.checks["decision"]) == (status, reason, reason), name
        if name != missing:
            assert await store.collection_exists(name), f"{name} was deleted"
    [kept_live] = await indexer.jobs.jobs_of(ops[live.physical_collection])
    assert kept_live.checks["still_referenced"]["referenced_by"] == [f"live:{live.collection_id}"]
    [kept_alias] = await indexer.jobs.jobs_of(ops[alias_target])
    assert kept_alias.checks["still_referenced"]["referenced_by"][0].startswith("alias:")

    # Each decision audited as a skip, the young staging once, however often it is looked at.
    skips = await indexer.outbox(subjects.audit_subject("cleanup.skip_collection"))
    assert len(skips) == len(expected)
    [young_job] = await indexer.jobs.jobs_of(ops[young])
    assert young_job.not_before == datetime.strptime(young_stamp, "%Y%m%dT%H%M%SZ").replace(
        tzinfo=UTC
    ) + timedelta(hours=1)
    assert await loop.run_once(now + timedelta(minutes=30)) == []  # not due again yet

    # Old enough: the young staging collection is deleted on the next look.
    decisions = await loop.run_once(now + timedelta(hours=1))
    assert [d.verdict.reason.value for d in decisions] == ["OK"]
    assert not await store.collection_exists(young)
    [young_job] = await indexer.jobs.jobs_of(ops[young])
    assert young_job.status == "DELETED"
    assert released[-1] == ops[young]
    assert len(await indexer.outbox(subjects.audit_subject("cleanup.skip_collection"))) == len(
        expected
    )
    assert len(await indexer.outbox(subjects.audit_subject("cleanup.delete_collection"))) == 1

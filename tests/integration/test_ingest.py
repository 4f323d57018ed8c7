"""The ingest pipeline end to end, below the operation runner: a real Postgres,
the embedded Qdrant engine in a temp dir and the real embedder over the session's
Triton (the hashing model, for speed), called directly or through the embed work
queue on a real nats-server."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import docx
import numpy as np
import pytest
from embed_worker_process import InProcessEmbedWorker

from embedder.adapters.triton_client import TritonClient
from embedder.embedding import Embedder, Limits, Priority
from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRepository,
    DocumentStatus,
    SourceRecord,
)
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.vector_store import StoredPoint
from indexer.domain.documents import document_id
from indexer.embed_queue import EmbedderUnavailable, QueueEmbedder
from indexer.ingest import EmbedFunction, IngestCancelled, Ingestor, IngestProgress
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import ModelRegistry
from kit.errors import InvalidArgument
from kit.stack.nats import NatsServer

SCHEMA = "indexer"
MODEL = "vectorops/hash-bow-384"
INCLUDE = ("*.txt", "*.md", "*.html", "*.docx", "*.pdf")

ALPHA = " ".join(
    f"Alpha sentence {i} talks about glaciers and fjords near Tromso." for i in range(30)
)
BETA_LINE = "Beta notes describe copper kettles brewing cardamom tea at dawn"
GAMMA = (
    "<html><head><title>Gamma</title></head>"
    "<body><p>Gamma page lists volcanic basalt columns in Iceland.</p></body></html>"
)
DELTA = "Delta report measures tidal turbines off the Orkney coast."


def embedder_function(embedder: Embedder) -> EmbedFunction:
    """The Embedder as the ingest pipeline's embed step (the work queue's stand-in)."""

    async def embed(
        model: str, texts: list[str], *, instruction: str | None = None
    ) -> list[np.ndarray | str]:
        outcome = await embedder.embed(
            model,
            texts,
            is_query=False,
            instruction=instruction,
            priority=Priority.BULK,
            path="test_ingest",
        )
        failed = {f.index: f"{f.reason}: {f.message}" for f in outcome.failures}
        return [
            outcome.vectors[i].vector if i in outcome.vectors else failed.get(i, "no result")
            for i in range(len(texts))
        ]

    return embed


@pytest.fixture
async def repo(database: str) -> AsyncIterator[DocumentRepository]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("indexer"))
    yield DocumentRepository(pool, SCHEMA)
    await pool.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EdgeVectorStore]:
    vector_store = EdgeVectorStore(tmp_path / "vectors")
    yield vector_store
    await vector_store.close()


@pytest.fixture
def embedder(triton_client: TritonClient) -> Embedder:
    limits = Limits(
        max_texts=256,
        max_request_chars=2_000_000,
        max_in_flight_bulk=4,
        max_in_flight_queries=4,
        query_queue_seconds=5.0,
        triton_timeout_seconds=30.0,
    )
    return Embedder(ModelRegistry(), triton_client, limits)


def write_tree(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "alpha.txt").write_text(ALPHA)
    (root / "notes").mkdir()
    (root / "notes" / "beta.md").write_text(f"# Beta\n\n{BETA_LINE}.\n\n- kettles\n- tea\n")
    (root / "gamma.html").write_text(GAMMA)
    document = docx.Document()
    document.add_paragraph(DELTA)
    document.save(root / "delta.docx")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage")
    (root / "copy.txt").write_text(DELTA)  # not a duplicate: the docx bytes differ
    (root / "twin.txt").write_text(ALPHA)  # a duplicate of alpha.txt
    (root / "page.htm").write_text(GAMMA)  # supported, but outside the include globs


async def records(
    collection: CollectionRecord, repo: DocumentRepository
) -> tuple[CollectionRecord, SourceRecord]:
    await repo.upsert_collection(collection)
    source = SourceRecord(
        source_id=str(uuid.uuid4()),
        collection_id=collection.collection_id,
        kind="directory",
        path="",
        include=INCLUDE,
    )
    return collection, source


def new_collection(**config: object) -> CollectionRecord:
    collection_id = str(uuid.uuid4())
    return CollectionRecord(
        collection_id=collection_id,
        owner_id="alice",
        alias_name=f"vo_{uuid.UUID(collection_id).hex}",
        physical_collection=f"vo_{uuid.UUID(collection_id).hex}_g1",
        generation=1,
        config={"embedding_model": MODEL, "chunk_size": 24, "chunk_overlap": 4} | config,
    )


async def all_points(store: EdgeVectorStore, name: str) -> list[StoredPoint]:
    points: list[StoredPoint] = []
    offset = None
    while True:
        page = await store.scroll(name, limit=256, offset=offset)
        points += page.points
        if page.next_offset is None:
            return points
        offset = page.next_offset


async def check_points(
    store: EdgeVectorStore, repo: DocumentRepository, collection: CollectionRecord, source_id: str
) -> dict[str, list[int]]:
    """Every point belongs to a live document under its own id, with chunk indexes
    0..n-1 where n is the document's recorded chunk count."""
    points = await all_points(store, collection.physical_collection)
    by_document: dict[str, list[int]] = defaultdict(list)
    for point in points:
        payload = point.payload or {}
        assert payload["document_id"] == document_id(
            collection.collection_id, source_id, payload["path"]
        )
        assert payload["collection_id"] == collection.collection_id
        assert payload["source_id"] == source_id
        by_document[payload["path"]].append(payload["chunk_index"])
    docs = await repo.documents_of_source(collection.collection_id, source_id)
    live = {d.path: d for d in docs if d.status is not DocumentStatus.FAILED}
    assert set(by_document) == set(live)
    for path, indexes in by_document.items():
        assert sorted(indexes) == list(range(live[path].chunk_count)), path
    assert len(points) == sum(d.chunk_count for d in live.values())
    return by_document


async def test_ingest_index_rerun_change_remove_and_search(
    tmp_path: Path, repo: DocumentRepository, store: EdgeVectorStore, embedder: Embedder
) -> None:
    root = tmp_path / "roots" / "docs"
    write_tree(root)
    collection, source = await records(new_collection(), repo)
    source = SourceRecord(**{**source.__dict__, "path": str(root)})
    await repo.add_source(source)
    ingestor = Ingestor(repo, store, embedder_function(embedder), batch_chunks=8)
    reports: list[IngestProgress] = []

    async def progress(report: IngestProgress) -> None:
        reports.append(report)

    roots = [tmp_path / "roots"]
    first = await ingestor.ingest_directory(collection, source, roots, str(uuid.uuid4()), progress)
    assert first.documents_total == 7  # page.htm is outside the globs
    assert first.documents_failed == 1 and first.documents_indexed == 6
    assert first.documents_duplicate == 1
    assert [(f.path, f.reason) for f in first.failures] == [("broken.pdf", "CORRUPT_DOCUMENT")]
    assert reports[-1].documents_done == 7 and reports[-1].vectors_written == first.vectors_written
    chunks = await check_points(store, repo, collection, source.source_id)
    assert len(chunks["alpha.txt"]) > 3  # long enough to be cut into several chunks
    assert await store.count(collection.physical_collection) == first.vectors_written
    docs = {
        d.path: d
        for d in await repo.documents_of_source(collection.collection_id, source.source_id)
    }
    assert docs["broken.pdf"].status is DocumentStatus.FAILED
    assert docs["broken.pdf"].failure_reason == "CORRUPT_DOCUMENT"
    assert docs["twin.txt"].status is DocumentStatus.DUPLICATE
    assert docs["twin.txt"].duplicate_of == docs["alpha.txt"].document_id
    assert "page.htm" not in docs

    # The same run again: nothing new, the same points.
    before = {p.id for p in await all_points(store, collection.physical_collection)}
    second = await ingestor.ingest_directory(collection, source, roots, str(uuid.uuid4()))
    assert second.vectors_written == 0 and second.documents_indexed == 0
    assert second.documents_skipped == 6 and second.documents_failed == 1
    assert {p.id for p in await all_points(store, collection.physical_collection)} == before

    # alpha.txt shrinks, gamma.html goes.
    (root / "alpha.txt").write_text("Alpha now only mentions glaciers briefly.")
    (root / "gamma.html").unlink()
    third = await ingestor.ingest_directory(collection, source, roots, str(uuid.uuid4()))
    assert third.documents_indexed == 1 and third.documents_removed == 1
    chunks = await check_points(store, repo, collection, source.source_id)
    assert chunks["alpha.txt"] == [0] and "gamma.html" not in chunks

    # A sentence of beta.md finds beta.md first.
    query = await embedder.embed(
        MODEL, [BETA_LINE], is_query=True, priority=Priority.QUERY, path="test_ingest"
    )
    hits = await store.search(collection.physical_collection, query.vectors[0].vector, top_k=3)
    assert hits[0].payload["path"] == "notes/beta.md"
    assert hits[0].payload["document_id"] == document_id(
        collection.collection_id, source.source_id, "notes/beta.md"
    )


async def test_invalid_chunk_config_fails_fast_writing_nothing(
    tmp_path: Path, repo: DocumentRepository, store: EdgeVectorStore, embedder: Embedder
) -> None:
    root = tmp_path / "docs"
    write_tree(root)
    collection, source = await records(new_collection(chunk_size=16, chunk_overlap=16), repo)
    source = SourceRecord(**{**source.__dict__, "path": str(root)})
    await repo.add_source(source)
    ingestor = Ingestor(repo, store, embedder_function(embedder))
    with pytest.raises(InvalidArgument) as caught:
        await ingestor.ingest_directory(collection, source, [tmp_path], str(uuid.uuid4()))
    assert caught.value.reason == "INVALID_CONFIG"
    assert await store.list_collections() == []
    assert await repo.documents_of_source(collection.collection_id, source.source_id) == []


def write_corpus(root: Path, documents: int) -> int:
    """Text documents of 1 to 7 chunks each (chunk_size 24, overlap 4: 20 words a
    chunk), every word unique to its document; returns the number of chunks."""
    root.mkdir(parents=True)
    chunks = 0
    for n in range(documents):
        words = " ".join(f"doc{n}word{i}" for i in range((n % 7 + 1) * 20))
        (root / f"doc{n:04d}.txt").write_text(words)
        chunks += n % 7 + 1
    return chunks


async def directory_source(
    repo: DocumentRepository, root: Path
) -> tuple[CollectionRecord, SourceRecord]:
    collection, source = await records(new_collection(), repo)
    source = SourceRecord(**{**source.__dict__, "path": str(root)})
    await repo.add_source(source)
    return collection, source


async def assert_vectors_are_their_texts(
    store: EdgeVectorStore, name: str, embedder: Embedder
) -> None:
    """Every stored vector is the embedding of its own point's text (nothing was
    attached to the wrong chunk)."""
    points: list[StoredPoint] = []
    offset = None
    while True:
        page = await store.scroll(name, limit=256, offset=offset, with_vectors=True)
        points += page.points
        if page.next_offset is None:
            break
        offset = page.next_offset
    for start in range(0, len(points), 256):
        window = points[start : start + 256]
        outcome = await embedder.embed(
            MODEL,
            [(p.payload or {})["text"] for p in window],
            is_query=False,
            priority=Priority.BULK,
            path="test_ingest",
        )
        for i, point in enumerate(window):
            assert point.vector is not None
            want = outcome.vectors[i].vector
            cosine = float(np.dot(point.vector, want)) / float(
                np.linalg.norm(point.vector) * np.linalg.norm(want)
            )
            assert cosine > 0.9999, (point.payload or {})["path"]


@pytest.fixture(scope="module")
def queue_nats(infra_dir: Path) -> Iterator[NatsServer]:
    """A nats-server of this module's own, with the in-process embedder on it."""
    server = NatsServer(infra_dir / f"ingest-queue-{uuid.uuid4().hex[:8]}")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def queue_bus(queue_nats: NatsServer, embedder: Embedder) -> AsyncIterator[JetStream]:
    """The bus an embedder worker (the real EmbedWorker, in this process) serves."""
    bus = await JetStream.connect(queue_nats.url, name="ingest-test")
    await bus.ensure_streams(ALL_STREAMS)
    worker = InProcessEmbedWorker(bus, embedder).start()
    yield bus
    await worker.stop()
    await bus.close()


async def test_ingest_through_the_embed_queue(
    tmp_path: Path,
    repo: DocumentRepository,
    store: EdgeVectorStore,
    embedder: Embedder,
    queue_bus: JetStream,
) -> None:
    root = tmp_path / "roots" / "docs"
    write_tree(root)
    collection, source = await directory_source(repo, root)
    queue = QueueEmbedder(queue_bus, timeout_seconds=30, wait_seconds=60)
    ingestor = Ingestor(repo, store, batch_chunks=8, in_flight=4)
    operation = str(uuid.uuid4())
    async with queue.for_operation(operation, collection.collection_id) as embed:
        result = await ingestor.ingest_directory(
            collection, source, [tmp_path / "roots"], operation, embed=embed
        )
        assert embed.batches_published == -(-result.vectors_written // 8)
    assert result.documents_total == 7 and result.documents_indexed == 6
    assert result.documents_duplicate == 1
    assert [(f.path, f.reason) for f in result.failures] == [("broken.pdf", "CORRUPT_DOCUMENT")]
    await check_points(store, repo, collection, source.source_id)
    await assert_vectors_are_their_texts(store, collection.physical_collection, embedder)
    docs = await repo.documents_of_source(collection.collection_id, source.source_id)
    indexed = [d for d in docs if d.status is not DocumentStatus.FAILED]
    assert result.bytes_written == sum(d.bytes for d in indexed) > 0


async def test_batches_finishing_out_of_order_lose_and_repeat_nothing(
    tmp_path: Path, repo: DocumentRepository, store: EdgeVectorStore, embedder: Embedder
) -> None:
    """Many documents, batches spanning documents, six batches out at once and
    finishing in a shuffled order: every chunk is stored once, under its own
    document and index, with its own text's vector."""
    root = tmp_path / "roots" / "many"
    chunks = write_corpus(root, 120)
    collection, source = await directory_source(repo, root)
    direct = embedder_function(embedder)
    jitter = random.Random(7)
    out = peak = 0

    async def shuffled(
        model: str, texts: list[str], *, instruction: str | None = None
    ) -> list[np.ndarray | str]:
        nonlocal out, peak
        out += 1
        peak = max(peak, out)
        try:
            await asyncio.sleep(jitter.uniform(0, 0.02))  # not a sync: it reorders the finish
            return await direct(model, texts, instruction=instruction)
        finally:
            out -= 1

    ingestor = Ingestor(repo, store, shuffled, batch_chunks=5, in_flight=6)
    result = await ingestor.ingest_directory(
        collection, source, [tmp_path / "roots"], str(uuid.uuid4())
    )
    assert result.documents_indexed == 120 and result.documents_failed == 0
    assert result.vectors_written == chunks
    assert peak == 6  # the batches overlapped, never more than in_flight at once
    points = await all_points(store, collection.physical_collection)
    assert len({p.id for p in points}) == len(points) == chunks
    by_document = await check_points(store, repo, collection, source.source_id)
    assert {path: len(indexes) for path, indexes in by_document.items()} == {
        f"doc{n:04d}.txt": n % 7 + 1 for n in range(120)
    }
    await assert_vectors_are_their_texts(store, collection.physical_collection, embedder)
    assert result.bytes_written == sum(p.stat().st_size for p in root.iterdir())


@pytest.mark.parametrize("signal", ["event", "callable"])
async def test_cancel_stops_between_batches_leaving_points_and_records_agreeing(
    tmp_path: Path,
    repo: DocumentRepository,
    store: EdgeVectorStore,
    embedder: Embedder,
    signal: str,
) -> None:
    root = tmp_path / "roots" / "many"
    write_corpus(root, 60)
    collection, source = await directory_source(repo, root)
    direct = embedder_function(embedder)
    cancel = asyncio.Event()
    calls = 0

    async def cancelling(
        model: str, texts: list[str], *, instruction: str | None = None
    ) -> list[np.ndarray | str]:
        nonlocal calls
        calls += 1
        if calls == 3:
            cancel.set()  # the operation is cancelled while its third batch is out
        return await direct(model, texts, instruction=instruction)

    ingestor = Ingestor(repo, store, cancelling, batch_chunks=8, in_flight=1)
    roots = [tmp_path / "roots"]
    with pytest.raises(IngestCancelled) as caught:
        await ingestor.ingest_directory(
            collection,
            source,
            roots,
            str(uuid.uuid4()),
            cancelled=cancel if signal == "event" else cancel.is_set,
        )
    assert calls == 3  # no batch went out after the cancel
    partial = caught.value.result
    # 24 chunks embedded: documents 0-5 (1+2+...+6 = 21 chunks) complete, 6 cut short.
    assert partial.documents_indexed == partial.documents_done == 6
    assert partial.vectors_written == 21
    await check_points(store, repo, collection, source.source_id)

    # The next run finishes the job, skipping what the cancelled one wrote.
    rerun = await ingestor.ingest_directory(collection, source, roots, str(uuid.uuid4()))
    assert rerun.documents_skipped == 6 and rerun.documents_indexed == 54
    by_document = await check_points(store, repo, collection, source.source_id)
    assert len(by_document) == 60


async def test_progress_is_reported_at_most_every_interval_and_at_the_end(
    tmp_path: Path, repo: DocumentRepository, store: EdgeVectorStore, embedder: Embedder
) -> None:
    root = tmp_path / "roots" / "many"
    write_corpus(root, 40)
    roots = [tmp_path / "roots"]
    counts: dict[float, list[IngestProgress]] = {}
    for interval in (3600.0, 0.0):
        collection, source = await directory_source(repo, root)
        reports: list[IngestProgress] = []

        async def progress(report: IngestProgress, reports: list = reports) -> None:
            reports.append(report)

        ingestor = Ingestor(
            repo,
            store,
            embedder_function(embedder),
            batch_chunks=4,
            progress_interval_seconds=interval,
        )
        result = await ingestor.ingest_directory(
            collection, source, roots, str(uuid.uuid4()), progress
        )
        assert reports[-1].documents_done == result.documents_done == 40
        assert reports[-1].vectors_written == result.vectors_written
        counts[interval] = reports
    # A long interval: the first change at once, then only the end.
    assert [r.documents_done for r in counts[3600.0]] == [0, 40]
    # No interval: every written group is reported, in order.
    done = [r.documents_done for r in counts[0.0]]
    assert len(done) > 3 and done == sorted(done)


async def test_embedder_unavailable_mid_ingest_stops_the_run_with_that_error(
    tmp_path: Path, repo: DocumentRepository, store: EdgeVectorStore, embedder: Embedder
) -> None:
    """The error the runner maps (not a task-group wrapper) comes out; the documents
    written before it are whole, and no record counts a missing point."""
    root = tmp_path / "roots" / "many"
    write_corpus(root, 40)
    collection, source = await directory_source(repo, root)
    direct = embedder_function(embedder)
    calls = 0

    async def failing(
        model: str, texts: list[str], *, instruction: str | None = None
    ) -> list[np.ndarray | str]:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise EmbedderUnavailable("no embedder answered for 300s")
        return await direct(model, texts, instruction=instruction)

    ingestor = Ingestor(repo, store, failing, batch_chunks=8, in_flight=2)
    with pytest.raises(EmbedderUnavailable):
        await ingestor.ingest_directory(collection, source, [tmp_path / "roots"], str(uuid.uuid4()))
    by_document = await check_points(store, repo, collection, source.source_id)
    assert 0 < len(by_document) < 40

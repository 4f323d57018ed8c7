"""The ingest pipeline end to end, below the message bus: a real Postgres, the
embedded Qdrant engine in a temp dir and the real embedder over the session's
Triton (the hashing model, for speed)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import docx
import numpy as np
import pytest

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
from indexer.ingest import EmbedFunction, Ingestor, IngestProgress
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import ModelRegistry
from kit.errors import InvalidArgument

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

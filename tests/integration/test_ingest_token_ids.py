"""The ingest pipeline hands the chunker's MiniLM token ids to the embed step, and
the vectors it stores are still those of the stored texts: a real Postgres, the
embedded Qdrant engine, the real Embedder over the session's Triton."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from embed_worker_process import embedder_on

from embedder.adapters.triton_client import TritonClient
from embedder.embedding import Embedder, Priority
from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRepository,
    SourceRecord,
)
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.tokenizers import tokenizer_for
from indexer.ingest import Ingestor
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import MINILM

# Long words, so that some 12-token windows start inside a word (those go as text).
DOCUMENT = (
    "Unbelievably intercontinental hydroelectricity overshadows photosynthesis; "
    "counterintuitive thermodynamics, electroencephalography and immunohistochemistry "
    "fill the rest of this deliberately polysyllabic paragraph about glaciers. "
) * 6


@pytest.fixture
async def repo(database: str) -> AsyncIterator[DocumentRepository]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await migrate(conn, "indexer", load_migrations("kit") + load_migrations("indexer"))
    yield DocumentRepository(pool, "indexer")
    await pool.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EdgeVectorStore]:
    vector_store = EdgeVectorStore(tmp_path / "vectors")
    yield vector_store
    await vector_store.close()


async def test_chunk_ids_reach_the_embedder_and_vectors_stay_the_texts(
    tmp_path: Path,
    repo: DocumentRepository,
    store: EdgeVectorStore,
    triton_client: TritonClient,
) -> None:
    embedder: Embedder = embedder_on(triton_client)
    calls: list[tuple[list[str], list[list[int]] | None]] = []

    async def embed(
        model: str,
        texts: list[str],
        *,
        instruction: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[np.ndarray | str]:
        calls.append((texts, None if token_ids is None else [list(r) for r in token_ids]))
        outcome = await embedder.embed(
            model,
            texts,
            is_query=False,
            instruction=instruction,
            priority=Priority.BULK,
            path="test",
            token_ids=token_ids,
        )
        return [outcome.vectors[i].vector for i in range(len(texts))]

    root = tmp_path / "roots" / "docs"
    root.mkdir(parents=True)
    (root / "long-words.txt").write_text(DOCUMENT)
    collection_id = str(uuid.uuid4())
    collection = CollectionRecord(
        collection_id=collection_id,
        owner_id="alice",
        alias_name=f"vo_{uuid.UUID(collection_id).hex}",
        physical_collection=f"vo_{uuid.UUID(collection_id).hex}_g1",
        generation=1,
        config={"embedding_model": MINILM.name, "chunk_size": 12, "chunk_overlap": 3},
    )
    await repo.upsert_collection(collection)
    source = SourceRecord(
        source_id=str(uuid.uuid4()),
        collection_id=collection_id,
        kind="directory",
        path=str(root),
        include=("*.txt",),
    )
    await repo.add_source(source)
    ingestor = Ingestor(repo, store, embed, batch_chunks=16)
    result = await ingestor.ingest_directory(
        collection, source, [tmp_path / "roots"], str(uuid.uuid4())
    )
    assert result.documents_failed == 0

    tokenizer = tokenizer_for(MINILM.name)
    with_ids = without_ids = 0
    for texts, ids in calls:
        assert ids is not None and len(ids) == len(texts)
        for text, row in zip(texts, ids, strict=True):
            if row:
                assert row == list(tokenizer.encode(text).ids), text
                with_ids += 1
            else:
                without_ids += 1  # starts inside a word: the embedder tokenizes it
    assert with_ids > 0 and without_ids > 0

    # Every stored vector is its stored text's, whichever way it was embedded.
    page = await store.scroll(collection.physical_collection, limit=256, with_vectors=True)
    assert len(page.points) == with_ids + without_ids
    texts = [point.payload["text"] for point in page.points]
    fresh = await embedder.embed(
        MINILM.name, texts, is_query=False, priority=Priority.BULK, path="test"
    )
    for position, point in enumerate(page.points):
        np.testing.assert_allclose(point.vector, fresh.vectors[position].vector, atol=1e-5)

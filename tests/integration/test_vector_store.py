"""The embedded vector store against Qdrant's real engine (qdrant-edge), in temp dirs.

Written against the ``VectorStore`` Protocol through the ``store`` fixture, so a
Qdrant server adapter can later be added as a second fixture param."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.vector_store import (
    CollectionStatus,
    InvalidVectorStoreArgument,
    Quantization,
    SystemCollectionProtected,
    VectorCollectionConflict,
    VectorCollectionNotFound,
    VectorPoint,
    VectorStore,
)

DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _points(
    vectors: np.ndarray, source: str, docs: int, collection_id: str = "c1"
) -> list[VectorPoint]:
    return [
        VectorPoint(
            id=str(uuid.uuid4()),
            vector=vector,
            payload={
                "collection_id": collection_id,
                "source_id": source,
                "document_id": f"{source}-doc{i % docs}",
                "chunk_index": i,
                "text": f"chunk {i} of {source}",
                "page": 1,
            },
        )
        for i, vector in enumerate(vectors)
    ]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EdgeVectorStore]:
    """A fresh embedded store in its own temp data dir, closed after the test."""
    vector_store = EdgeVectorStore(tmp_path / "vectors")
    yield vector_store
    await vector_store.close()


async def test_is_a_vector_store(store: EdgeVectorStore) -> None:
    assert isinstance(store, VectorStore)


async def test_create_is_idempotent_and_a_different_config_conflicts(store: VectorStore) -> None:
    assert await store.create_collection("docs", DIM) is True
    assert await store.create_collection("docs", DIM) is False
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("docs", DIM + 1)
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("docs", DIM, quantization=Quantization.INT8)
    assert await store.collection_exists("docs")
    assert await store.list_collections() == ["docs"]
    info = await store.collection_info("docs")
    assert info.config.dimension == DIM and info.config.quantization is Quantization.FLOAT32
    assert info.status is CollectionStatus.GREEN and info.points_count == 0
    assert {"collection_id", "source_id", "document_id"} <= set(info.payload_indexes)


async def test_delete_collection_is_idempotent(store: VectorStore) -> None:
    await store.create_collection("gone", DIM)
    assert await store.delete_collection("gone") is True
    assert await store.delete_collection("gone") is False
    assert not await store.collection_exists("gone")
    assert await store.list_collections() == []
    with pytest.raises(VectorCollectionNotFound):
        await store.count("gone")


@pytest.mark.parametrize(
    "name", ["", "a/b", "../up", "with space", "dot.name", "x" * 300, "_system", "a\\b"]
)
async def test_invalid_names_are_refused(store: VectorStore, name: str) -> None:
    with pytest.raises(InvalidVectorStoreArgument):
        await store.create_collection(name, DIM)
    assert not await store.collection_exists(name)


async def test_system_collections_need_the_system_flag(store: VectorStore) -> None:
    assert await store.create_collection("_probes", DIM, system=True)
    with pytest.raises(SystemCollectionProtected):
        await store.delete_collection("_probes")
    assert await store.delete_collection("_probes", system=True)


async def test_upsert_count_search_and_filters(store: VectorStore) -> None:
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 60)
    await store.create_collection("docs", DIM)
    points = _points(vectors[:40], "s1", docs=4) + _points(vectors[40:], "s2", docs=2)
    assert await store.upsert("docs", points[:40]) == 40
    await store.upsert("docs", points[40:])

    assert await store.count("docs") == 60
    assert await store.count("docs", {"source_id": "s1"}) == 40
    assert await store.count("docs", {"document_id": "s1-doc0"}) == 10
    assert await store.count("docs", {"document_id": ["s1-doc0", "s2-doc1"]}) == 20
    assert await store.count("docs", exact=False) > 0

    query = vectors[5] + 0.05 * _unit(rng, 1)[0]
    hits = await store.search("docs", query, top_k=10)
    cosines = vectors @ (query / np.linalg.norm(query))
    expected = np.argsort(-cosines)[:10]
    assert [hit.id for hit in hits] == [points[int(i)].id for i in expected]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(float(cosines[5]), abs=1e-4)

    only_s2 = await store.search("docs", query, top_k=5, filter={"source_id": "s2"})
    assert len(only_s2) == 5 and all(h.payload["source_id"] == "s2" for h in only_s2)
    thresholded = await store.search("docs", query, top_k=60, score_threshold=0.5)
    assert thresholded and all(h.score >= 0.5 for h in thresholded)
    bare = await store.search("docs", query, top_k=1, with_payload=False)
    assert not bare[0].payload

    with pytest.raises(InvalidVectorStoreArgument):
        await store.search("docs", np.zeros(DIM + 1, dtype=np.float32), top_k=1)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.upsert("docs", [VectorPoint("not-a-uuid", vectors[0], {})])


async def test_upsert_by_same_id_replaces(store: VectorStore) -> None:
    rng = np.random.default_rng(2)
    await store.create_collection("docs", DIM)
    points = _points(_unit(rng, 5), "s1", docs=1)
    await store.upsert("docs", points)
    await store.upsert("docs", points)
    assert await store.count("docs") == 5


async def test_delete_by_document_and_by_source_counts_exactly(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    await store.create_collection("docs", DIM)
    await store.upsert("docs", _points(_unit(rng, 30), "s1", docs=3))
    await store.upsert("docs", _points(_unit(rng, 20), "s2", docs=4))

    assert await store.delete_points("docs", {"document_id": "s1-doc1"}) == 10
    assert await store.delete_points("docs", {"document_id": "s1-doc1"}) == 0
    assert await store.count("docs") == 40
    assert await store.delete_points("docs", {"source_id": "s2"}) == 20
    assert await store.count("docs", {"source_id": "s2"}) == 0
    assert await store.count("docs") == 20
    with pytest.raises(InvalidVectorStoreArgument):
        await store.delete_points("docs", {})


async def test_scroll_pages_cover_every_point_once(store: VectorStore) -> None:
    rng = np.random.default_rng(4)
    await store.create_collection("docs", DIM)
    points = _points(_unit(rng, 95), "s1", docs=5) + _points(_unit(rng, 10), "s2", docs=1)
    await store.upsert("docs", points)

    async def all_ids(filter: dict | None) -> list[str]:
        seen: list[str] = []
        offset = None
        while True:
            page = await store.scroll("docs", filter=filter, limit=20, offset=offset)
            assert len(page.points) <= 20
            seen += [point.id for point in page.points]
            if page.next_offset is None:
                return seen
            offset = page.next_offset

    ids = await all_ids(None)
    assert len(ids) == len(set(ids)) == 105
    assert set(ids) == {p.id for p in points}
    s1 = await all_ids({"source_id": "s1"})
    assert len(s1) == len(set(s1)) == 95

    page = await store.scroll("docs", limit=3, with_vectors=True)
    by_id = {p.id: p for p in points}
    for point in page.points:
        assert point.vector is not None
        assert np.allclose(point.vector, by_id[point.id].vector, atol=1e-5)
        assert point.payload == by_id[point.id].payload


@pytest.mark.parametrize("quantization", list(Quantization))
async def test_quantized_collections_find_their_own_vectors(
    tmp_path: Path, quantization: Quantization
) -> None:
    # A tiny indexing threshold, so optimize really builds HNSW and int8 segments.
    store = EdgeVectorStore(tmp_path / "vectors", indexing_threshold_kb=1)
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 300)
    await store.create_collection("q", DIM, quantization=quantization)
    points = _points(vectors, "s1", docs=10)
    await store.upsert("q", points)
    info = await store.optimize("q")
    assert info.status is CollectionStatus.GREEN and info.points_count == 300
    assert info.config.quantization is quantization
    assert info.indexed_vectors_count == 300
    for i in (0, 17, 150, 299):
        hits = await store.search("q", vectors[i], top_k=3)
        assert hits[0].id == points[i].id
        assert hits[0].score == pytest.approx(1.0, abs=0.02)
    await store.close()


async def test_aliases_set_move_delete_and_search_through_them(store: VectorStore) -> None:
    rng = np.random.default_rng(6)
    blue, green = _unit(rng, 10), _unit(rng, 10)
    await store.create_collection("blue", DIM)
    await store.create_collection("green", DIM)
    await store.upsert("blue", _points(blue, "s1", docs=1, collection_id="blue"))
    await store.upsert("green", _points(green, "s1", docs=1, collection_id="green"))

    await store.set_alias("public", "blue")
    assert await store.get_alias("public") == "blue"
    assert await store.resolve("public") == "blue"
    assert await store.resolve("blue") == "blue"
    hits = await store.search("public", blue[0], top_k=1)
    assert hits[0].payload["collection_id"] == "blue"

    await store.set_alias("public", "green")
    await store.set_alias("public", "green")  # idempotent: Postgres is the truth, we follow it
    hits = await store.search("public", blue[0], top_k=3)
    assert {h.payload["collection_id"] for h in hits} == {"green"}
    assert await store.count("public") == 10
    await store.upsert("public", _points(green[:1], "s9", docs=1, collection_id="green"))
    assert await store.count("green") == 11
    assert await store.list_aliases() == {"public": "green"}

    with pytest.raises(VectorCollectionNotFound):
        await store.set_alias("public", "missing")
    with pytest.raises(VectorCollectionConflict):
        await store.set_alias("blue", "green")  # a collection's name is not free for an alias
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("public", DIM)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.set_alias("_sys", "green")

    assert await store.delete_alias("public") is True
    assert await store.delete_alias("public") is False
    assert await store.get_alias("public") is None
    with pytest.raises(VectorCollectionNotFound):
        await store.search("public", blue[0], top_k=1)


async def test_deleting_a_collection_drops_its_aliases(store: VectorStore) -> None:
    await store.create_collection("old", DIM)
    await store.set_alias("public", "old")
    await store.delete_collection("old")
    assert await store.get_alias("public") is None


async def test_data_and_aliases_survive_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = _unit(rng, 25)
    data_dir = tmp_path / "vectors"
    first = EdgeVectorStore(data_dir)
    await first.create_collection("docs", DIM, quantization=Quantization.FLOAT16)
    points = _points(vectors, "s1", docs=5)
    await first.upsert("docs", points)
    await first.delete_points("docs", {"document_id": "s1-doc0"})
    await first.set_alias("public", "docs")
    await first.close()

    second = EdgeVectorStore(data_dir)
    try:
        assert await second.list_collections() == ["docs"]
        assert await second.get_alias("public") == "docs"
        assert await second.count("public") == 20
        info = await second.collection_info("docs")
        assert info.config.quantization is Quantization.FLOAT16 and info.config.dimension == DIM
        hits = await second.search("public", vectors[3], top_k=1)
        assert hits[0].id == points[3].id
        assert (
            await second.create_collection("docs", DIM, quantization=Quantization.FLOAT16) is False
        )
    finally:
        await second.close()


async def test_leftovers_of_a_crash_are_not_collections(tmp_path: Path) -> None:
    data_dir = tmp_path / "vectors"
    (data_dir / "collections" / ".tmp-half-abc" / "shard").mkdir(parents=True)
    (data_dir / "collections" / ".trash-old-abc").mkdir(parents=True)
    store = EdgeVectorStore(data_dir)
    try:
        assert await store.list_collections() == []
        assert sorted(p.name for p in (data_dir / "collections").iterdir()) == []
    finally:
        await store.close()


async def test_searches_never_fail_while_the_alias_moves(store: VectorStore) -> None:
    rng = np.random.default_rng(8)
    await store.create_collection("blue", DIM)
    await store.create_collection("green", DIM)
    await store.upsert("blue", _points(_unit(rng, 200), "s1", docs=10, collection_id="blue"))
    await store.upsert("green", _points(_unit(rng, 200), "s1", docs=10, collection_id="green"))
    await store.set_alias("public", "blue")
    queries = _unit(rng, 16)
    errors: list[BaseException] = []
    seen: set[str] = set()
    searches = 0
    stop = asyncio.Event()

    async def searcher(k: int) -> None:
        nonlocal searches
        while not stop.is_set():
            try:
                hits = await store.search("public", queries[k], top_k=5)
                sources = {hit.payload["collection_id"] for hit in hits}
                assert len(hits) == 5 and len(sources) == 1, sources
                seen.update(sources)
                searches += 1
            except BaseException as error:  # noqa: BLE001 - any failure is the finding
                errors.append(error)

    tasks = [asyncio.create_task(searcher(k)) for k in range(8)]
    for move in range(10):
        await asyncio.sleep(0.02)
        target = "green" if move % 2 == 0 else "blue"
        await store.set_alias("public", target)
        # Atomic: a search that starts after set_alias returns sees the target.
        hits = await store.search("public", queries[0], top_k=5)
        assert {h.payload["collection_id"] for h in hits} == {target}
    stop.set()
    await asyncio.gather(*tasks)
    assert errors == []
    assert seen == {"blue", "green"}
    assert searches > 50


async def test_deleting_a_collection_under_searches_fails_them_cleanly(store: VectorStore) -> None:
    rng = np.random.default_rng(9)
    await store.create_collection("old", DIM)
    await store.upsert("old", _points(_unit(rng, 100), "s1", docs=5))
    query = _unit(rng, 1)[0]
    outcomes: list[str] = []

    async def searcher() -> None:
        for _ in range(200):
            try:
                await store.search("old", query, top_k=3)
                outcomes.append("ok")
            except VectorCollectionNotFound:
                outcomes.append("not found")  # the only acceptable failure
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(searcher()) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert await store.delete_collection("old") is True
    await asyncio.gather(*tasks)
    assert "not found" in outcomes and set(outcomes) <= {"ok", "not found"}

"""The vector-store contract, run against every adapter: the embedded store on
Qdrant's real engine (qdrant-edge, in temp dirs); the Qdrant server store through
qdrant-client's local mode (the client's own in-process implementation of the
server API; no Qdrant server binary is available here); and the Qdrant server store
over gRPC to the embedded stack's shared store (``python -m vectorstore``, Qdrant's
gRPC API over the same engine, a child process per test on port 0).

Every test of the contract takes the ``store`` (or ``backend``) fixture and runs
once per adapter. Local mode is a brute-force scan over numpy arrays: it keeps no
payload indexes and builds no HNSW, so where a test would look at those, it asserts
what each backend can show (see ``Backend``). Tests of one adapter only (the edge
store's files, the factory, config read back from a foreign collection) come last.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, models

from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.metered_store import MeteredVectorStore
from indexer.adapters.qdrant_store import QdrantServerStore
from indexer.adapters.store_factory import open_vector_store
from indexer.adapters.vector_store import (
    INDEXED_PAYLOAD_FIELDS,
    CollectionStatus,
    Distance,
    InvalidVectorStoreArgument,
    Quantization,
    SystemCollectionProtected,
    VectorCollectionConflict,
    VectorCollectionNotFound,
    VectorPoint,
    VectorStore,
    VectorStoreUnavailable,
)
from indexer.config import IndexerSettings
from kit.stack.vectorstore import VectorStoreServer

# Local mode warns once that payload indexes do nothing there; that is known.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 32


@dataclass
class Backend:
    """One adapter, how to open another store on it, and what it can show."""

    kind: str
    open: Callable[..., VectorStore]
    shows_payload_indexes: bool
    """Local mode keeps no payload indexes (filters scan every point)."""
    builds_indexes: bool
    """Local mode never builds HNSW: its indexed_vectors_count stays 0."""


@pytest.fixture(params=["edge", "qdrant-local", "qdrant-server"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An adapter; every store opened through it is closed after the test (and the
    vectorstore server behind the qdrant-server ones stopped)."""
    opened: list[VectorStore] = []
    server: VectorStoreServer | None = None

    def open_store(*, indexing_threshold_kb: int | None = None) -> VectorStore:
        store: VectorStore
        nonlocal server
        if request.param == "edge":
            store = EdgeVectorStore(
                tmp_path / f"vectors-{len(opened)}", indexing_threshold_kb=indexing_threshold_kb
            )
        elif request.param == "qdrant-server":
            if server is None:
                server = VectorStoreServer(tmp_path / "vectorstore")
                server.start()
            store = QdrantServerStore.connect(
                server.url, indexing_threshold_kb=indexing_threshold_kb
            )
        else:
            store = QdrantServerStore(
                AsyncQdrantClient(location=":memory:"), indexing_threshold_kb=indexing_threshold_kb
            )
        opened.append(store)
        return store

    # Local mode keeps no indexes; the engine (embedded or behind the server) does.
    engine = request.param != "qdrant-local"
    yield Backend(request.param, open_store, shows_payload_indexes=engine, builds_indexes=engine)
    for store in opened:
        await store.close()
    if server is not None:
        server.stop()


@pytest.fixture
def store(backend: Backend) -> VectorStore:
    """A fresh, empty store of the backend under test."""
    return backend.open()


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


# -- collections ------------------------------------------------------------------


async def test_is_a_vector_store(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)


async def test_create_is_idempotent_and_a_different_config_conflicts(backend: Backend) -> None:
    store = backend.open()
    assert await store.create_collection("docs", DIM) is True
    assert await store.create_collection("docs", DIM) is False
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("docs", DIM + 1)
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("docs", DIM, quantization=Quantization.INT8)
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("docs", DIM, distance=Distance.DOT)
    assert await store.collection_exists("docs")
    assert await store.list_collections() == ["docs"]
    info = await store.collection_info("docs")
    assert info.name == "docs"
    assert info.config.dimension == DIM and info.config.quantization is Quantization.FLOAT32
    assert info.config.distance is Distance.COSINE
    assert info.status is CollectionStatus.GREEN and info.points_count == 0
    if backend.shows_payload_indexes:
        assert set(INDEXED_PAYLOAD_FIELDS) <= set(info.payload_indexes)
    else:
        # Local mode reports no payload indexes; filtering on those fields is shown
        # to work by the filter tests below.
        assert info.payload_indexes == ()


async def test_each_quantization_is_recorded_and_read_back(store: VectorStore) -> None:
    for quantization in Quantization:
        name = f"q_{quantization.value}"
        await store.create_collection(name, DIM, Distance.EUCLID, quantization)
        config = (await store.collection_info(name)).config
        assert (config.dimension, config.distance, config.quantization) == (
            DIM,
            Distance.EUCLID,
            quantization,
        )
        assert await store.create_collection(name, DIM, Distance.EUCLID, quantization) is False


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
    assert await store.list_collections() == []


async def test_system_collections_need_the_system_flag(store: VectorStore) -> None:
    with pytest.raises(InvalidVectorStoreArgument):
        await store.create_collection("_probes", DIM)
    assert await store.create_collection("_probes", DIM, system=True)
    with pytest.raises(SystemCollectionProtected):
        await store.delete_collection("_probes")
    assert await store.collection_exists("_probes")
    assert await store.delete_collection("_probes", system=True)
    assert not await store.collection_exists("_probes")


async def test_unknown_collections_are_not_found(store: VectorStore) -> None:
    query = np.ones(DIM, dtype=np.float32)
    point = VectorPoint(str(uuid.uuid4()), query, {})
    calls = {
        "count": lambda: store.count("missing"),
        "search": lambda: store.search("missing", query, top_k=1),
        "scroll": lambda: store.scroll("missing"),
        "upsert": lambda: store.upsert("missing", [point]),
        "upsert nothing": lambda: store.upsert("missing", []),
        "delete_points": lambda: store.delete_points("missing", {"source_id": "s1"}),
        "collection_info": lambda: store.collection_info("missing"),
        "optimize": lambda: store.optimize("missing"),
        "set_alias": lambda: store.set_alias("public", "missing"),
    }
    for what, call in calls.items():
        with pytest.raises(VectorCollectionNotFound):
            await call()
            pytest.fail(f"{what} on a missing collection did not fail")
    assert await store.delete_collection("missing") is False
    assert not await store.collection_exists("missing")
    assert await store.get_alias("missing") is None
    assert await store.resolve("missing") == "missing"
    assert await store.delete_alias("missing") is False


# -- points -----------------------------------------------------------------------


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
    assert await store.count("docs", {"document_id": ("s1-doc0",)}) == 10
    assert await store.count("docs", {"document_id": []}) == 0
    assert await store.count("docs", {"chunk_index": 3}) == 2
    assert await store.count("docs", {"source_id": "s1", "chunk_index": [0, 1, 2, 39, 55]}) == 4
    assert await store.count("docs", exact=False) > 0

    query = vectors[5] + 0.05 * _unit(rng, 1)[0]
    hits = await store.search("docs", query, top_k=10)
    cosines = vectors @ (query / np.linalg.norm(query))
    expected = np.argsort(-cosines)[:10]
    assert [hit.id for hit in hits] == [points[int(i)].id for i in expected]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(float(cosines[5]), abs=1e-4)
    assert hits[0].payload == points[5].payload

    only_s2 = await store.search("docs", query, top_k=5, filter={"source_id": "s2"})
    assert len(only_s2) == 5 and all(h.payload["source_id"] == "s2" for h in only_s2)
    listed = await store.search("docs", query, top_k=60, filter={"document_id": ["s2-doc1"]})
    assert len(listed) == 10 and {h.payload["document_id"] for h in listed} == {"s2-doc1"}
    thresholded = await store.search("docs", query, top_k=60, score_threshold=0.5)
    assert thresholded and all(h.score >= 0.5 for h in thresholded)
    bare = await store.search("docs", query, top_k=1, with_payload=False)
    assert bare[0].id == hits[0].id and not bare[0].payload

    with pytest.raises(InvalidVectorStoreArgument):
        await store.search("docs", query, top_k=0)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.count("docs", {"page": 1.5})  # type: ignore[dict-item]
    with pytest.raises(InvalidVectorStoreArgument):
        await store.upsert("docs", [VectorPoint("not-a-uuid", vectors[0], {})])


async def test_dimension_mismatches_are_refused_and_write_nothing(store: VectorStore) -> None:
    rng = np.random.default_rng(10)
    await store.create_collection("docs", DIM)
    wrong = rng.standard_normal((300, DIM + 1)).astype(np.float32)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.search("docs", wrong[0], top_k=1)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.upsert("docs", _points(wrong, "s1", docs=3))
    # Good points first, one bad one last: refused whole, none of them written.
    mixed = _points(_unit(rng, 299), "s1", docs=3) + _points(wrong[:1], "s1", docs=1)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.upsert("docs", mixed)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.upsert("docs", [VectorPoint(str(uuid.uuid4()), np.ones((2, DIM)), {})])
    assert await store.count("docs") == 0

    await store.upsert("docs", _points(_unit(rng, 3), "s1", docs=1))
    with pytest.raises(InvalidVectorStoreArgument):
        await store.search("docs", wrong[0][:-2], top_k=1)
    assert await store.count("docs") == 3


async def test_upsert_by_same_id_replaces(store: VectorStore) -> None:
    rng = np.random.default_rng(2)
    await store.create_collection("docs", DIM)
    points = _points(_unit(rng, 5), "s1", docs=1)
    await store.upsert("docs", points)
    points[0].payload["text"] = "changed"
    await store.upsert("docs", points)
    assert await store.count("docs") == 5
    hits = await store.search("docs", points[0].vector, top_k=1)
    assert hits[0].id == points[0].id and hits[0].payload["text"] == "changed"


async def test_upsert_of_many_points_goes_in_batches(store: VectorStore) -> None:
    rng = np.random.default_rng(11)
    await store.create_collection("docs", DIM)
    points = _points(_unit(rng, 2500), "s1", docs=50)  # several batches of either adapter
    assert await store.upsert("docs", points) == 2500
    assert await store.count("docs") == 2500
    assert await store.count("docs", {"document_id": "s1-doc7"}) == 50


async def test_delete_by_document_source_and_chunks_counts_exactly(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    await store.create_collection("docs", DIM)
    await store.upsert("docs", _points(_unit(rng, 30), "s1", docs=3))
    await store.upsert("docs", _points(_unit(rng, 20), "s2", docs=4))

    assert await store.delete_points("docs", {"document_id": "s1-doc1"}) == 10
    assert await store.delete_points("docs", {"document_id": "s1-doc1"}) == 0
    assert await store.count("docs") == 40
    # A document's stale chunks: one document, a list of chunk indexes.
    assert (
        await store.delete_points("docs", {"document_id": "s1-doc0", "chunk_index": [0, 3, 4]}) == 2
    )
    assert await store.count("docs", {"document_id": "s1-doc0"}) == 8
    # Several documents at once.
    assert await store.delete_points("docs", {"document_id": ["s2-doc0", "s2-doc1"]}) == 10
    assert await store.delete_points("docs", {"source_id": "s2"}) == 10
    assert await store.count("docs", {"source_id": "s2"}) == 0
    assert await store.count("docs") == 18
    with pytest.raises(InvalidVectorStoreArgument):
        await store.delete_points("docs", {})
    assert await store.count("docs") == 18


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
    chunks = await all_ids({"document_id": "s1-doc2", "chunk_index": [2, 7, 12, 13]})
    assert sorted(chunks) == sorted(
        p.id for p in points[:95] if p.payload["chunk_index"] in (2, 7, 12)
    )

    page = await store.scroll("docs", limit=3, with_vectors=True)
    by_id = {p.id: p for p in points}
    assert len(page.points) == 3
    for point in page.points:
        assert point.vector is not None
        assert np.allclose(point.vector, by_id[point.id].vector, atol=1e-5)
        assert point.payload == by_id[point.id].payload
    assert all(point.vector is None for point in (await store.scroll("docs", limit=3)).points)


@pytest.mark.parametrize("quantization", list(Quantization))
async def test_quantized_collections_find_their_own_vectors(
    backend: Backend, quantization: Quantization
) -> None:
    # A tiny indexing threshold, so optimize really builds HNSW and int8 segments
    # where the backend builds any.
    store = backend.open(indexing_threshold_kb=1)
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 300)
    await store.create_collection("q", DIM, quantization=quantization)
    points = _points(vectors, "s1", docs=10)
    await store.upsert("q", points)
    info = await store.optimize("q")
    assert info.status is CollectionStatus.GREEN and info.points_count == 300
    assert info.config.quantization is quantization
    assert info.indexed_vectors_count == (300 if backend.builds_indexes else 0)
    for i in (0, 17, 150, 299):
        hits = await store.search("q", vectors[i], top_k=3)
        assert hits[0].id == points[i].id
        assert hits[0].score == pytest.approx(1.0, abs=0.02)
    filtered = await store.search("q", vectors[17], top_k=3, filter={"document_id": "s1-doc7"})
    assert filtered[0].id == points[17].id
    assert all(hit.payload["document_id"] == "s1-doc7" for hit in filtered)


# -- aliases ----------------------------------------------------------------------


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
    assert not await store.collection_exists("public")  # an alias is no collection
    assert await store.list_collections() == ["blue", "green"]
    hits = await store.search("public", blue[0], top_k=1)
    assert hits[0].payload["collection_id"] == "blue"
    assert (await store.collection_info("public")).name == "blue"

    await store.set_alias("public", "green")
    await store.set_alias("public", "green")  # idempotent: Postgres is the truth, we follow it
    hits = await store.search("public", blue[0], top_k=3)
    assert {h.payload["collection_id"] for h in hits} == {"green"}
    assert await store.count("public") == 10
    await store.upsert("public", _points(green[:1], "s9", docs=1, collection_id="green"))
    assert await store.count("green") == 11
    assert await store.delete_points("public", {"source_id": "s9"}) == 1
    page = await store.scroll("public", limit=50)
    assert {p.payload["collection_id"] for p in page.points} == {"green"}
    assert (await store.optimize("public")).name == "green"
    await store.set_alias("staging", "blue")
    assert await store.list_aliases() == {"public": "green", "staging": "blue"}

    with pytest.raises(VectorCollectionNotFound):
        await store.set_alias("public", "missing")
    with pytest.raises(VectorCollectionConflict):
        await store.set_alias("blue", "green")  # a collection's name is not free for an alias
    with pytest.raises(VectorCollectionConflict):
        await store.create_collection("public", DIM)
    with pytest.raises(InvalidVectorStoreArgument):
        await store.set_alias("_sys", "green")
    with pytest.raises(InvalidVectorStoreArgument):
        await store.set_alias("other", "public")  # an alias of an alias
    assert await store.get_alias("public") == "green"

    assert await store.delete_alias("public") is True
    assert await store.delete_alias("public") is False
    assert await store.get_alias("public") is None
    assert await store.list_aliases() == {"staging": "blue"}
    with pytest.raises(VectorCollectionNotFound):
        await store.search("public", blue[0], top_k=1)
    assert await store.count("green") == 10  # deleting an alias leaves its collection


async def test_deleting_a_collection_drops_its_aliases(store: VectorStore) -> None:
    await store.create_collection("old", DIM)
    await store.create_collection("other", DIM)
    await store.set_alias("public", "old")
    await store.set_alias("keep", "other")
    await store.delete_collection("old")
    assert await store.get_alias("public") is None
    assert await store.list_aliases() == {"keep": "other"}


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
            # Local mode answers without suspending: let the mover and the others run.
            await asyncio.sleep(0)

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
        # Until this searcher sees the collection gone.
        while True:
            try:
                await store.search("old", query, top_k=3)
                outcomes.append("ok")
            except VectorCollectionNotFound:
                outcomes.append("not found")  # the only acceptable failure
                return
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(searcher()) for _ in range(4)]
    deadline = asyncio.get_running_loop().time() + 30
    while outcomes.count("ok") < 20:
        assert asyncio.get_running_loop().time() < deadline, "searches did not get going"
        await asyncio.sleep(0.001)
    assert await store.delete_collection("old") is True
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    assert "not found" in outcomes and set(outcomes) <= {"ok", "not found"}


# -- the edge store only: its files ---------------------------------------------------


async def test_edge_data_and_aliases_survive_reopen(tmp_path: Path) -> None:
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


async def test_edge_optimize_runs_out_of_process_while_other_searches_go_on(
    tmp_path: Path,
) -> None:
    """The engine holds the GIL while it optimises: in the indexer's process an HNSW
    build would stall every search. Built in a child process, another collection
    answers all the while; calls on the optimised collection wait for the end and
    then see its index."""
    store = EdgeVectorStore(tmp_path / "vectors", indexing_threshold_kb=1)
    try:
        rng = np.random.default_rng(11)
        await store.create_collection("big", DIM)
        await store.upsert("big", _points(_unit(rng, 20_000), "s1", docs=200))
        small = _unit(rng, 10)
        small_points = _points(small, "s2", docs=2)
        await store.create_collection("small", DIM)
        await store.upsert("small", small_points)

        optimizing = asyncio.create_task(store.optimize("big"))
        counting = asyncio.create_task(store.count("big"))  # waits for the optimisation
        answered_during = 0
        while not optimizing.done():
            hits = await store.search("small", small[answered_during % 10], top_k=1)
            assert hits[0].id == small_points[answered_during % 10].id
            answered_during += 1
        info = await optimizing
        assert answered_during >= 10, answered_during
        assert info.status is CollectionStatus.GREEN
        assert info.indexed_vectors_count == info.points_count == 20_000
        assert await counting == 20_000
    finally:
        await store.close()


async def test_edge_writes_during_an_optimisation_wait_for_it_and_land(tmp_path: Path) -> None:
    """A write that arrives while the collection is optimised waits for the end
    (the shard is closed meanwhile) and then lands; neither waits on the other
    for ever."""
    store = EdgeVectorStore(tmp_path / "vectors", indexing_threshold_kb=1)
    try:
        rng = np.random.default_rng(12)
        await store.create_collection("c", DIM)
        await store.upsert("c", _points(_unit(rng, 5000), "s1", docs=50))
        optimizing = asyncio.create_task(store.optimize("c"))
        writes = [
            asyncio.create_task(store.upsert("c", _points(_unit(rng, 10), f"w{i}", docs=1)))
            for i in range(5)
        ]
        await asyncio.wait_for(asyncio.gather(optimizing, *writes), timeout=120)
        assert await store.count("c") == 5050
    finally:
        await store.close()


async def test_edge_leftovers_of_a_crash_are_not_collections(tmp_path: Path) -> None:
    data_dir = tmp_path / "vectors"
    (data_dir / "collections" / ".tmp-half-abc" / "shard").mkdir(parents=True)
    (data_dir / "collections" / ".trash-old-abc").mkdir(parents=True)
    store = EdgeVectorStore(data_dir)
    try:
        assert await store.list_collections() == []
        assert sorted(p.name for p in (data_dir / "collections").iterdir()) == []
    finally:
        await store.close()


# -- the Qdrant server store only ---------------------------------------------------


async def test_qdrant_config_of_a_collection_made_elsewhere_comes_from_its_params() -> None:
    client = AsyncQdrantClient(location=":memory:")
    store = QdrantServerStore(client)
    try:
        # Made without our metadata record, as another tool would: the adapter reads
        # the size, distance and float16 datatype off the collection itself.
        await client.create_collection(
            "foreign",
            vectors_config=models.VectorParams(
                size=DIM, distance=models.Distance.DOT, datatype=models.Datatype.FLOAT16
            ),
        )
        config = (await store.collection_info("foreign")).config
        assert (config.dimension, config.distance, config.quantization) == (
            DIM,
            Distance.DOT,
            Quantization.FLOAT16,
        )
        assert (
            await store.create_collection("foreign", DIM, Distance.DOT, Quantization.FLOAT16)
            is False
        )
        with pytest.raises(VectorCollectionConflict):
            await store.create_collection("foreign", DIM)

        await client.create_collection(
            "named",
            vectors_config={"text": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
        )
        with pytest.raises(VectorCollectionConflict):
            await store.create_collection("named", DIM)
    finally:
        await store.close()


async def test_the_factory_picks_the_store_the_settings_name(tmp_path: Path) -> None:
    embedded = open_vector_store(IndexerSettings(indexer_data_dir=tmp_path / "indexer"))
    try:
        assert isinstance(embedded, MeteredVectorStore)  # every call timed
        assert isinstance(embedded.inner, EdgeVectorStore)
        assert (tmp_path / "indexer" / "qdrant" / "collections").is_dir()
    finally:
        await embedded.close()

    # Nothing is dialled until the first call, so no server is needed to build it.
    server = open_vector_store(
        IndexerSettings(
            indexer_data_dir=tmp_path / "unused",
            indexer_qdrant_url="https://qdrant.example:6334",
            indexer_qdrant_api_key="secret-key",
        )
    )
    try:
        assert isinstance(server, MeteredVectorStore)
        assert isinstance(server.inner, QdrantServerStore)
        assert isinstance(server, VectorStore)
        assert not (tmp_path / "unused").exists()
    finally:
        await server.close()

    with pytest.raises(ValueError, match="not http"):
        open_vector_store(IndexerSettings(indexer_qdrant_url="ftp://qdrant:6334"))


async def test_an_unreachable_qdrant_server_is_backend_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = QdrantServerStore.connect(f"http://127.0.0.1:{port}", timeout_seconds=5)
    try:
        for call in (store.list_collections, lambda: store.count("docs")):
            with pytest.raises(VectorStoreUnavailable) as raised:
                await call()
            assert raised.value.reason == "BACKEND_UNAVAILABLE"
    finally:
        await store.close()

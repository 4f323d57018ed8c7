"""The embedded stack's shared vector store (``python -m vectorstore``) as indexer
replicas use it: several ``QdrantServerStore`` clients on one server, a crash of
the server, and what it refuses. The contract itself runs in test_vector_store.py
(the ``qdrant-server`` backend)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from qdrant_client import AsyncQdrantClient, models

from indexer.adapters.qdrant_store import QdrantServerStore
from indexer.adapters.vector_store import (
    CollectionStatus,
    Distance,
    Quantization,
    VectorCollectionNotFound,
    VectorPoint,
)
from kit.config import ServiceName
from kit.stack.launcher import Stack, StackOptions
from kit.stack.vectorstore import VectorStoreServer

DIM = 16


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VectorStoreServer]:
    """A vectorstore child on a free port, data in a temp dir; stopped after."""
    vectorstore = VectorStoreServer(tmp_path / "vectorstore")
    vectorstore.start()
    yield vectorstore
    vectorstore.stop()


@pytest.fixture
async def replicas(server: VectorStoreServer) -> AsyncIterator[list[QdrantServerStore]]:
    """Two clients, as two indexer replicas would hold them."""
    stores = [QdrantServerStore.connect(server.url) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


def _client(url: str) -> AsyncQdrantClient:
    """qdrant-client itself, over gRPC, as QdrantServerStore dials it."""
    return AsyncQdrantClient(
        host="127.0.0.1",
        grpc_port=int(url.rsplit(":", 1)[1]),
        prefer_grpc=True,
        check_compatibility=False,
    )


def _points(rng: np.random.Generator, n: int, source: str, collection_id: str) -> list[VectorPoint]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        VectorPoint(
            str(uuid.uuid4()),
            vector,
            {"collection_id": collection_id, "source_id": source, "chunk_index": i},
        )
        for i, vector in enumerate(vectors)
    ]


async def test_two_replicas_see_each_others_writes_and_alias_moves_at_once(
    replicas: list[QdrantServerStore],
) -> None:
    first, second = replicas
    rng = np.random.default_rng(1)
    assert await first.create_collection("blue", DIM) is True
    # The other replica's idempotent create finds it, with the config the first made.
    assert await second.create_collection("blue", DIM) is False
    assert await second.list_collections() == ["blue"]

    blue = _points(rng, 30, "s1", "blue")
    await first.upsert("blue", blue[:20])
    await second.upsert("blue", blue[20:])
    assert await first.count("blue") == await second.count("blue") == 30
    hits = await second.search("blue", blue[3].vector, top_k=1)
    assert hits[0].id == blue[3].id

    await second.set_alias("public", "blue")
    assert await first.get_alias("public") == "blue"
    assert await first.count("public") == 30

    await first.create_collection("green", DIM)
    green = _points(rng, 12, "s1", "green")
    await first.upsert("green", green)
    # Blue-green switch by one replica: the other's next search goes to green.
    await first.set_alias("public", "green")
    hits = await second.search("public", green[5].vector, top_k=3)
    assert {hit.payload["collection_id"] for hit in hits} == {"green"}
    assert hits[0].id == green[5].id
    assert await second.resolve("public") == "green"

    assert await second.delete_points("public", {"source_id": "s1"}) == 12
    assert await first.count("green") == 0
    assert await second.delete_collection("blue") is True
    assert not await first.collection_exists("blue")
    with pytest.raises(VectorCollectionNotFound):
        await first.count("blue")


async def test_the_server_survives_sigkill_and_restart_with_its_data(
    server: VectorStoreServer,
) -> None:
    rng = np.random.default_rng(2)
    store = QdrantServerStore.connect(server.url, indexing_threshold_kb=1)
    try:
        await store.create_collection("docs", DIM, Distance.DOT, Quantization.INT8)
        points = _points(rng, 300, "s1", "docs")
        await store.upsert("docs", points[:200])
        assert (await store.optimize("docs")).indexed_vectors_count == 200
        await store.upsert("docs", points[200:])  # after the build: only in the WAL
        assert await store.delete_points("docs", {"chunk_index": [0, 1, 2]}) == 3
        await store.set_alias("public", "docs")
        url = server.url

        server.kill()  # no flush, no close: the engine's WAL is all there is
        server.start()
        assert server.url == url  # the same port: clients keep their URL

        # The client reconnects on its own; a fresh one sees the same.
        for reader in (store, QdrantServerStore.connect(url)):
            assert await reader.list_collections() == ["docs"]
            assert await reader.get_alias("public") == "docs"
            assert await reader.count("public") == 297
            info = await reader.collection_info("public")
            assert (info.config.distance, info.config.quantization) == (
                Distance.DOT,
                Quantization.INT8,
            )
            hits = await reader.search("public", points[250].vector, top_k=1)
            assert hits[0].id == points[250].id
            if reader is not store:
                await reader.close()
        # The collection's Qdrant metadata (the adapter's config record) is kept too.
        raw = _client(url)
        try:
            metadata = (await raw.get_collection("docs")).config.metadata
            assert metadata == {
                "vectorops": {"dimension": DIM, "distance": "dot", "quantization": "int8"}
            }
        finally:
            await raw.close()
        # And it goes on: writes and an optimisation after the restart.
        await store.upsert("docs", _points(rng, 5, "s2", "docs"))
        info = await store.optimize("docs")
        assert info.status is CollectionStatus.GREEN
        assert info.points_count == info.indexed_vectors_count == 302
    finally:
        await store.close()


async def test_collection_metadata_round_trips_through_the_server(
    server: VectorStoreServer,
) -> None:
    client = _client(server.url)
    try:
        metadata = {"owner": "team-a", "nested": {"n": 3, "tags": ["x", "y"]}, "ratio": 0.5}
        await client.create_collection(
            "meta",
            vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            metadata=metadata,
        )
        info = await client.get_collection("meta")
        assert info.config.metadata == metadata
        assert info.config.params.vectors.size == DIM
        version = await client.info()
        assert version.version and "qdrant-edge" in version.title
    finally:
        await client.close()


async def test_calls_outside_the_subset_are_unimplemented_and_say_so(
    server: VectorStoreServer,
) -> None:
    client = _client(server.url)
    try:
        await client.create_collection(
            "docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        refusals = {
            "an RPC it does not serve": client.collection_exists("docs"),
            "a filter it does not map": client.count(
                "docs",
                count_filter=models.Filter(
                    should=[models.FieldCondition(key="a", match=models.MatchValue(value="b"))]
                ),
            ),
            "named vectors": client.create_collection(
                "named",
                vectors_config={"text": models.VectorParams(size=DIM, distance="Cosine")},
            ),
            "integer point ids": client.upsert(
                "docs", points=[models.PointStruct(id=7, vector=[0.1] * DIM, payload={})]
            ),
        }
        for what, call in refusals.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED, what
            assert "Not supported by vectorstore" in (raised.value.details() or ""), what
        assert await client.count("docs") == models.CountResult(count=0)
    finally:
        await client.close()


def test_a_stack_points_every_indexer_at_its_shared_store(tmp_path: Path, postgres) -> None:
    """Two indexer replicas on one stack: both get the shared store's URL, none
    opens an engine of its own, and the store stops with the stack."""
    options = StackOptions.ephemeral(tmp_path / "stack")
    options.postgres_dsn = postgres.create_database("shared_vector_store")
    options.services = (ServiceName.INDEXER,)
    options.replicas = {ServiceName.INDEXER: 2}
    options.shared_vector_store = True
    stack = Stack(options)
    stack.start()
    try:
        assert stack.vector_store is not None
        url = stack.vector_store.url
        pids = stack.pids()
        indexers = [pid for name, pid in pids.items() if name.startswith("indexer")]
        assert len(indexers) == 2 and "vectorstore" in pids
        for pid in indexers:
            assert psutil.Process(pid).environ()["VECTOROPS_INDEXER_QDRANT_URL"] == url
        assert not (options.data_dir / "indexer" / "qdrant").exists()
    finally:
        stack.stop()
    assert not [pid for pid in pids.values() if psutil.pid_exists(pid) and _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

"""Blue-green REINDEX through the public API with real services: a collection is
re-chunked while a client searches it without pause (no search fails or comes back
empty or half-built), the old physical collection is gone after the (shortened)
cleanup delay, and REMOVE_SOURCE afterwards removes every point of the source. A
reindex to a model of another dimension validates with each side's own model."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from api import HASH_MODEL, MINILM, Client, config, directory
from corpus import FIRST_SOURCE, SECOND_SOURCE, write_source, write_text_corpus

from kit.config import ServiceName
from vectorops.common.v1 import operation_pb2

pytestmark = pytest.mark.integration

HASH_256 = "vectorops/hash-bow-256"


@pytest.fixture
def client(stack):
    api = Client(stack, stack.tokens.clear["user"])
    yield api
    api.close()


class Searcher(threading.Thread):
    """Searches ``collection_id`` without pause until stopped; keeps every failure."""

    def __init__(self, stack, collection_id: str, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.api = Client(stack, stack.tokens.clear["user"])
        self.collection_id = collection_id
        self.queries = queries
        self.stopped = threading.Event()
        self.failures: list[str] = []
        self.generations: set[int] = set()
        self.searches = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            query = self.queries[self.searches % len(self.queries)]
            try:
                response = self.api.search(self.collection_id, query, top_k=5)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code()}: {error.details()}")
            else:
                if len(response.hits) < 5:
                    self.failures.append(f"{len(response.hits)} hits for {query!r}")
                self.generations.add(response.generation)
            self.searches += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(30)
        self.api.close()


def _physical_collections(stack) -> set[str]:
    folder = stack.options.data_dir / "indexer" / "qdrant" / "collections"
    return {p.name for p in folder.iterdir() if p.is_dir()}


def _wait_until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_rechunk_under_continuous_search(stack, client) -> None:
    root = stack.options.roots()[0] / f"reindex-{uuid.uuid4().hex[:8]}"
    probes = write_source(root / "topics", FIRST_SOURCE)
    write_text_corpus(root / "topics" / "bulk", 60, 300)
    write_source(root / "more", SECOND_SOURCE)
    created = client.create(
        f"reindex-{uuid.uuid4().hex[:6]}",
        config(HASH_MODEL, 128, 16),
        [directory(str(root / "topics")), directory(str(root / "more"))],
    )
    collection_id = created.collection.id
    client.finish(created.operation.id)
    before = client.get(collection_id)
    old_physical = before.physical_collection
    topics_id = next(s.id for s in before.sources if s.directory.path.endswith("topics"))

    searcher = Searcher(stack, collection_id, [p.query for p in probes])
    searcher.start()
    try:
        time.sleep(0.5)
        # Random-word documents rank unstably below the top hit whatever the
        # chunking, so the overlap bar is lowered for this corpus (an override
        # the request allows); the other checks keep their defaults.
        thresholds = operation_pb2.ValidationThresholds(min_topk_overlap=0.3)
        operation = client.reindex(
            collection_id, config(HASH_MODEL, 32, 4), before.generation, thresholds
        )
        final = client.watch(operation.id)[-1]
        time.sleep(0.5)
    finally:
        searcher.stop()
    assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final.error
    assert final.validation.passed and final.validation.checks
    assert searcher.searches > 20
    assert searcher.failures == []  # no search failed or came back short during the reindex
    after = client.get(collection_id)
    assert after.generation == before.generation + 1
    assert after.physical_collection != old_physical
    assert after.config.chunk_size == 32
    assert searcher.generations <= {before.generation, after.generation}

    # Searches now come from the new collection: its chunks are 32 tokens (words).
    hits = client.search(collection_id, probes[0].query, top_k=10).hits
    assert hits and max(len(h.text.split()) for h in hits) <= 32 + 4

    # The old physical collection goes after the (shortened) cleanup delay.
    _wait_until(
        lambda: old_physical not in _physical_collections(stack), 60, "the old collection's cleanup"
    )
    assert after.physical_collection in _physical_collections(stack)

    # REMOVE_SOURCE after the reindex removes every point of that source.
    client.finish(client.remove_source(collection_id, topics_id).id)
    assert client.search(collection_id, probes[0].query, source_ids=[topics_id]).hits == []
    remaining = client.get(collection_id)
    assert remaining.vector_count == sum(
        d.chunk_count for d in client.list_documents(collection_id)
    )
    assert {h.source_id for h in client.search(collection_id, "coffee", top_k=20).hits} == {
        s.id for s in remaining.sources
    }


def test_reindex_to_a_model_of_another_dimension(stack, client) -> None:
    root = stack.options.roots()[0] / f"dimension-{uuid.uuid4().hex[:8]}"
    probes = write_source(root, FIRST_SOURCE)
    created = client.create(
        f"dimension-{uuid.uuid4().hex[:6]}", config(MINILM, 128, 16), [directory(str(root))]
    )
    collection_id = created.collection.id
    client.finish(created.operation.id)
    operation = client.reindex(collection_id, config(HASH_256, 64, 8))
    final = client.finish(operation.id)
    assert final.validation.passed, final.validation
    after = client.get(collection_id)
    assert after.config.embedding_model == HASH_256 and after.config.dimension == 256
    # The query is embedded with the new model now: a 384-wide query vector would
    # be refused by a 256-wide collection, so hits prove the switch of models.
    for probe in probes:
        response = client.search(collection_id, probe.query)
        assert response.embedding_model == HASH_256 and response.hits
    assert ServiceName.INDEXER in stack.endpoints


def test_failed_validation_leaves_the_old_collection_serving(stack, client) -> None:
    root = stack.options.roots()[0] / f"failing-{uuid.uuid4().hex[:8]}"
    probes = write_source(root, FIRST_SOURCE)
    created = client.create(
        f"failing-{uuid.uuid4().hex[:6]}", config(HASH_MODEL, 64, 8), [directory(str(root))]
    )
    collection_id = created.collection.id
    client.finish(created.operation.id)
    before = client.get(collection_id)
    impossible = operation_pb2.ValidationThresholds(min_topk_overlap=1.0, max_score_drift=1e-9)
    operation = client.reindex(collection_id, config(HASH_MODEL, 16, 2), thresholds=impossible)
    final = client.watch(operation.id)[-1]
    assert final.status == operation_pb2.OPERATION_STATUS_FAILED
    assert final.error.type == "VALIDATION_FAILED" and final.error.step == "validation"
    assert not final.validation.passed and final.validation.checks  # the figures are kept
    after = client.get(collection_id)
    assert after.status == operation_pb2.COLLECTION_STATUS_DEGRADED and after.searchable
    assert (after.physical_collection, after.generation) == (
        before.physical_collection,
        before.generation,
    )
    assert after.staging_collection == ""
    assert final.staging_collection not in _physical_collections(stack)  # deleted at once
    still = client.search(collection_id, probes[0].query)  # the old collection serves
    assert still.hits and still.generation == before.generation


def test_indexer_killed_during_reprocessing_resumes_and_completes(stack, client) -> None:
    root = stack.options.roots()[0] / f"resume-{uuid.uuid4().hex[:8]}"
    write_text_corpus(root, 150, 200)
    created = client.create(
        f"resume-{uuid.uuid4().hex[:6]}", config(HASH_MODEL, 64, 8), [directory(str(root))]
    )
    collection_id = created.collection.id
    client.finish(created.operation.id)
    lenient = operation_pb2.ValidationThresholds(min_topk_overlap=0.05)
    operation = client.reindex(collection_id, config(MINILM, 64, 8), thresholds=lenient)
    _wait_until(
        lambda: (
            client.operation(operation.id).current_step == "reprocessing"
            and client.operation(operation.id).progress.documents_done >= 5
        ),
        120,
        "reprocessing to be under way",
    )
    stack.kill(ServiceName.INDEXER)
    stack.start_service(ServiceName.INDEXER)
    final = client.finish(operation.id, timeout=300)
    assert final.last_checkpoint == "cleanup"
    after = client.get(collection_id)
    assert after.config.embedding_model == MINILM
    assert after.vector_count == sum(d.chunk_count for d in client.list_documents(collection_id))

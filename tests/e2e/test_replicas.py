"""Two replicas of every service, one Postgres, one NATS and one shared vector
store: an INDEX, an APPEND and a REINDEX each lose a replica of some services
mid-run (SIGKILL), and each still completes with every chunk exactly once.

The client balances over the replicas as the services do (round robin), so a
call refused by a dead replica is retried on the other; the operations
themselves move: an indexer's un-acknowledged command is redelivered to the
other indexer, an embed batch to the other embedder, and either orchestrator
applies the step events."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from api import Client, config, directory
from corpus import write_text_corpus

from kit.config import ServiceName
from kit.stack.launcher import SERVICES, Stack, StackOptions
from vectorops.common.v1 import operation_pb2
from vectorops.indexer.v1 import search_service_pb2, search_service_pb2_grpc

pytestmark = pytest.mark.integration

T = TypeVar("T")
REPLICAS = 2
TERMINAL = {
    operation_pb2.OPERATION_STATUS_COMPLETED,
    operation_pb2.OPERATION_STATUS_FAILED,
    operation_pb2.OPERATION_STATUS_CANCELLED,
}


@pytest.fixture(scope="module")
def replicated(postgres, triton_host) -> Iterator[Stack]:
    folder = Path(tempfile.mkdtemp(prefix="vo-replicas-"))
    folder.chmod(0o755)
    options = StackOptions.ephemeral(folder / "stack")
    options.postgres_dsn = postgres.create_database(f"replicas_{uuid.uuid4().hex[:8]}")
    # NATS of its own: the session's carries the shared stack's commands. Two
    # indexers: the stack serves them one vector store (``vectorstore``).
    options.replicas = dict.fromkeys(SERVICES, REPLICAS)
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton_host.url,
        # A dead indexer's command, or a dead embedder's batch, goes to the
        # other replica within seconds.
        "VECTOROPS_INDEXER_COMMAND_ACK_WAIT_SECONDS": "5",
        "VECTOROPS_ORCHESTRATOR_CLEANUP_BASE_DELAY_SECONDS": "1",
        "VECTOROPS_INDEXER_CLEANUP_MIN_STAGING_AGE_SECONDS": "0",
    }
    stack = Stack(options)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def client(replicated: Stack) -> Iterator[Client]:
    api = Client(replicated, replicated.tokens.clear["user"], balanced=True)
    yield api
    api.close()


def _retrying(call: Callable[[], T], seconds: float = 60) -> T:
    """``call()``, again while the replica it reached is dying or gone."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _running_past(client: Client, operation_id: str, documents: int) -> None:
    """Until the operation has done ``documents`` documents, still running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        operation = _retrying(lambda: client.operation(operation_id))
        assert operation.status not in TERMINAL, "ended before the kill: make the corpus larger"
        if operation.progress.documents_done >= documents:
            return
        time.sleep(0.05)
    raise AssertionError(f"{operation_id} made no progress")


def _ended(client: Client, operation_id: str, seconds: float = 300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        operation = _retrying(lambda: client.operation(operation_id))
        if operation.status in TERMINAL:
            return operation
        time.sleep(0.2)
    raise AssertionError(f"{operation_id} still running after {seconds} s")


def _kill_and_restart(stack: Stack, replica: int, services: tuple[ServiceName, ...]):
    for service in services:
        stack.kill(service, replica)
    return lambda: [stack.start_service(service, replica) for service in services]


def _every_chunk_once(client: Client, collection_id: str, documents: int) -> None:
    indexed = _retrying(lambda: client.list_documents(collection_id))
    assert len(indexed) == documents and all(d.chunk_count > 0 for d in indexed)
    # The store's exact point count equal to the chunks the documents have: none
    # missing, none written twice (point ids are per (document, chunk)).
    collection = _retrying(lambda: client.get(collection_id))
    assert collection.vector_count == sum(d.chunk_count for d in indexed)


def test_operations_complete_exactly_once_while_replicas_die(
    replicated: Stack, client: Client
) -> None:
    for service in SERVICES:
        assert len(replicated.replica_endpoints(service)) == REPLICAS, service
    root = replicated.options.roots()[0] / f"replicas-{uuid.uuid4().hex[:6]}"
    # Large enough that each operation is still running when its kill lands: with
    # both indexers and embedders up, hundreds of documents take under a second.
    write_text_corpus(root / "first", 1200, 160, seed=3)
    write_text_corpus(root / "second", 1200, 160, seed=5)

    created = _retrying(
        lambda: client.create("replicas", config(chunk_size=48), [directory(str(root / "first"))])
    )
    collection_id = created.collection.id
    _running_past(client, created.operation.id, 10)
    restart = _kill_and_restart(replicated, 0, (ServiceName.INDEXER, ServiceName.EMBEDDER))
    final = _ended(client, created.operation.id)
    assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final.error
    _every_chunk_once(client, collection_id, 1200)
    restart()

    appended = _retrying(lambda: client.add_source(collection_id, directory(str(root / "second"))))
    _running_past(client, appended.operation.id, 10)
    restart = _kill_and_restart(
        replicated, 1, (ServiceName.ORCHESTRATOR, ServiceName.RESOURCES, ServiceName.AUDIT)
    )
    final = _ended(client, appended.operation.id)
    assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final.error
    _every_chunk_once(client, collection_id, 2400)
    restart()

    generation = _retrying(lambda: client.get(collection_id)).generation
    lenient = operation_pb2.ValidationThresholds(min_topk_overlap=0.05)
    reindex = _retrying(
        lambda: client.reindex(collection_id, config(chunk_size=64), generation, lenient)
    )
    _running_past(client, reindex.id, 10)
    restart = _kill_and_restart(
        replicated, 1, (ServiceName.INDEXER, ServiceName.EMBEDDER, ServiceName.ORCHESTRATOR)
    )
    final = _ended(client, reindex.id)
    assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final.error
    assert _retrying(lambda: client.get(collection_id)).generation == generation + 1
    _every_chunk_once(client, collection_id, 2400)
    restart()
    # Either indexer serves search, over the one shared store.
    for endpoint in replicated.replica_endpoints(ServiceName.INDEXER):
        with grpc.insecure_channel(endpoint.target) as channel:
            reply = search_service_pb2_grpc.SearchServiceStub(channel).Search(
                search_service_pb2.SearchRequest(collection_id=collection_id, query="the", top_k=5),
                metadata=client.metadata,
                timeout=30,
            )
        assert reply.hits, endpoint

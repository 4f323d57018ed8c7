"""Crashes mid-operation: a SIGKILLed indexer's command is redelivered to its
restarted self, which finishes the APPEND with every chunk stored exactly once; a
SIGKILLed orchestrator applies, once back, the step events it missed and the
operation resumes from its last checkpoint."""

from __future__ import annotations

import time
import uuid

import pytest
from api import MINILM, Client, config, directory
from corpus import write_text_corpus

from kit.config import ServiceName
from vectorops.common.v1 import operation_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack):
    api = Client(stack, stack.tokens.clear["user"])
    yield api
    api.close()


def _wait_until_working(client: Client, operation_id: str, documents: int) -> None:
    """Until the operation has indexed ``documents`` documents but is not done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        operation = client.operation(operation_id)
        assert operation.status != operation_pb2.OPERATION_STATUS_COMPLETED, (
            "finished before the crash; make the corpus larger"
        )
        assert operation.status != operation_pb2.OPERATION_STATUS_FAILED, operation.error
        if operation.progress.documents_done >= documents:
            return
        time.sleep(0.05)
    raise AssertionError(f"operation {operation_id} made no progress")


def _collection_with_append(stack, client: Client, documents: int):
    """A small indexed collection, and a large second source being appended."""
    root = stack.options.roots()[0] / f"restart-{uuid.uuid4().hex[:8]}"
    write_text_corpus(root / "small", 3, 40)
    write_text_corpus(root / "large", documents, 180, seed=11)
    created = client.create(
        f"restart-{uuid.uuid4().hex[:6]}", config(MINILM, 64, 8), [directory(str(root / "small"))]
    )
    client.finish(created.operation.id)
    appended = client.add_source(created.collection.id, directory(str(root / "large")))
    return created.collection.id, appended.operation.id


def _assert_every_chunk_once(client: Client, collection_id: str, documents: int) -> None:
    indexed = client.list_documents(collection_id)
    assert len(indexed) == documents + 3 and all(d.chunk_count > 0 for d in indexed)
    # vector_count is the store's own exact point count: equal to the chunks the
    # documents say they have means none missing and none twice.
    assert client.get(collection_id).vector_count == sum(d.chunk_count for d in indexed)


def test_indexer_killed_mid_append_finishes_exactly_once(stack, client) -> None:
    collection_id, operation_id = _collection_with_append(stack, client, 120)
    _wait_until_working(client, operation_id, 10)
    stack.kill(ServiceName.INDEXER)
    stack.start_service(ServiceName.INDEXER)
    final = client.finish(operation_id)
    assert final.last_checkpoint == "finalize"
    _assert_every_chunk_once(client, collection_id, 120)


def test_orchestrator_killed_mid_operation_resumes_from_checkpoint(stack, client) -> None:
    collection_id, operation_id = _collection_with_append(stack, client, 120)
    _wait_until_working(client, operation_id, 5)
    stack.kill(ServiceName.ORCHESTRATOR)
    time.sleep(1.0)  # the indexer keeps working and publishing while it is down
    stack.start_service(ServiceName.ORCHESTRATOR)
    final = client.finish(operation_id)
    assert final.last_checkpoint == "finalize"
    assert client.get(collection_id).active_operation_id == ""
    _assert_every_chunk_once(client, collection_id, 120)

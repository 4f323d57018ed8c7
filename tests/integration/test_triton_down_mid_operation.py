"""Triton going away while operations run, through the whole stack with a Triton
of the test's own.

While Triton is down an operation waits: the embedder naks each embed batch
with a growing delay (``embedder.worker.consumer_spec``: 1, 2, 5, 10, 30 s) up
to the batch's deadline (``VECTOROPS_INDEXER_EMBED_TIMEOUT_SECONDS``), then
answers EMBEDDER_UNAVAILABLE; the indexer publishes the batch again after a
backoff (``indexer.embed_queue.QueueTiming.retry_delays_seconds``) until the
embedder has been unreachable for ``VECTOROPS_INDEXER_EMBEDDER_WAIT_SECONDS``
(default 300 s, shortened here). So:
- Triton back before that deadline: the operation completes, each chunk stored once;
- not back: the operation FAILS with error type EMBEDDER_UNAVAILABLE after the
  deadline, the collection is ERROR (not PROCESSING) and the owner's
  reservation is released;
- meanwhile the embedder's health is NOT_SERVING, and SERVING within seconds
  once Triton is back.
"""

from __future__ import annotations

import time
import uuid

import pytest
from api import Client, Resources, config, directory, eventually
from corpus import write_text_corpus
from grpc_health.v1 import health_pb2

from embedder.adapters.triton_host import TritonHost
from kit.config import ServiceName
from kit.stack.launcher import Stack, StackOptions, health_status
from vectorops.common.v1 import operation_pb2
from vectorops.indexer.v1 import indexer_pb2

pytestmark = pytest.mark.integration

EMBEDDER = "vectorops.embedder.v1.EmbedderService"
HASH = "vectorops/hash-bow-384"
BATCH_DEADLINE_SECONDS = 3  # each published batch; then the embedder gives it up
WAIT_SECONDS = 20  # the operation's deadline for an unreachable embedder


def _wait_for_health(stack: Stack, expected: int, timeout: float = 60) -> None:
    target = stack.endpoints[ServiceName.EMBEDDER].target
    eventually(lambda: health_status(target, EMBEDDER) == expected, timeout)


def _check_chunks_once(api: Client, collection_id: str, files: int) -> None:
    collection = api.get(collection_id)
    assert collection.status == operation_pb2.COLLECTION_STATUS_READY
    documents = api.list_documents(collection_id)
    assert len(documents) == files
    assert {d.status for d in documents} == {indexer_pb2.DOCUMENT_STATUS_COMPLETED}
    assert all(d.chunk_count > 0 for d in documents)
    assert collection.vector_count == sum(d.chunk_count for d in documents)


def test_operations_wait_for_triton_then_complete_or_fail_cleanly(infra_dir, postgres) -> None:
    folder = infra_dir / f"triton-down-op-{uuid.uuid4().hex[:8]}"
    triton = TritonHost(folder / "triton-1", models=["hash_bow"])
    triton.start()
    options = StackOptions.ephemeral(folder / "stack")
    options.postgres_dsn = postgres.create_database(f"triton_down_{uuid.uuid4().hex[:8]}")
    # A NATS of its own (the stack starts it): the session's carries the shared
    # stack's commands, which these services must not consume, nor it theirs.
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton.url,
        "VECTOROPS_EMBEDDER_MODELS": HASH,
        "VECTOROPS_EMBEDDER_HEALTH_POLL_SECONDS": "0.3",
        "VECTOROPS_INDEXER_EMBED_TIMEOUT_SECONDS": str(BATCH_DEADLINE_SECONDS),
        "VECTOROPS_INDEXER_EMBEDDER_WAIT_SECONDS": str(WAIT_SECONDS),
    }
    stack = Stack(options)
    revived = None
    api = usage = None
    try:
        stack.start()
        api = Client(stack, stack.tokens.clear["user"])
        usage = Resources(stack, stack.tokens.clear["admin"])
        root = options.roots()[0] / "triton-down"
        write_text_corpus(root / "first", documents=3, words=80, seed=1)
        write_text_corpus(root / "second", documents=3, words=80, seed=2)
        write_text_corpus(root / "appended", documents=4, words=80, seed=3)
        ready = api.create("ready-before", config(HASH), [directory(str(root / "first"))])
        api.finish(ready.operation.id)
        owner = api.get(ready.collection.id).owner_id

        triton.stop()
        _wait_for_health(stack, health_pb2.HealthCheckResponse.NOT_SERVING)

        # -- not back before the deadline: FAILED, cleanly --
        started = time.monotonic()
        doomed = api.create("while-down", config(HASH), [directory(str(root / "second"))])
        final = api.watch(doomed.operation.id, timeout=WAIT_SECONDS * 4)[-1]
        waited = time.monotonic() - started
        assert final.status == operation_pb2.OPERATION_STATUS_FAILED, final
        assert final.error.type == "EMBEDDER_UNAVAILABLE", final.error
        assert final.error.retryable, final.error
        assert waited >= WAIT_SECONDS, f"failed after {waited:.1f} s, before its deadline"
        assert api.get(doomed.collection.id).status == operation_pb2.COLLECTION_STATUS_ERROR
        idle = eventually(lambda: (u := usage.usage(owner)).active_operations == 0 and u, 30)
        assert idle.reserved_vectors == 0

        # -- back before the deadline: the APPEND running meanwhile completes --
        added = api.add_source(ready.collection.id, directory(str(root / "appended")))
        eventually(
            lambda: (
                api.operation(added.operation.id).status
                == operation_pb2.OPERATION_STATUS_PROCESSING
            ),
            30,
        )
        time.sleep(BATCH_DEADLINE_SECONDS + 1)  # its batches fail and are sent again
        assert api.operation(added.operation.id).status == (
            operation_pb2.OPERATION_STATUS_PROCESSING
        )
        revived = TritonHost(folder / "triton-2", models=["hash_bow"], port=triton.grpc_port)
        revived.start()
        # Seen within seconds: the embedder's channel tries Triton again every second,
        # not after gRPC's backoff, which 30 s of outage has grown past 6 s.
        _wait_for_health(stack, health_pb2.HealthCheckResponse.SERVING, timeout=3)
        api.finish(added.operation.id, timeout=WAIT_SECONDS * 4)
        _check_chunks_once(api, ready.collection.id, files=3 + 4)
        assert stack.exited() == {}  # no service restarted to get there
    finally:
        for client in (api, usage):
            if client is not None:
                client.close()
        stack.stop()
        triton.stop()
        if revived is not None:
            revived.stop()

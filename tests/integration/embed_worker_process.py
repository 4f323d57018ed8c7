"""The embedder's work-queue worker run inside the test process, and a NATS of a
test module's own, so a test decides when an embedder exists.

Shared by the tests of the indexer's queue client and of the ingest pipeline:
the real ``EmbedWorker`` over the real ``Embedder`` and a real Triton, consuming
the real ``VO_EMBED`` work queue, as the embedder service runs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from embedder.embedding import Embedder, EmbeddingBackend, Limits
from embedder.worker import EmbedWorker, consumer_spec
from kit.bus.jetstream import JetStream
from kit.embedding_models import ModelRegistry

LIMITS = Limits(
    max_texts=512,
    max_request_chars=4_000_000,
    max_in_flight_bulk=4,
    max_in_flight_queries=4,
    query_queue_seconds=5.0,
    triton_timeout_seconds=30.0,
)


def embedder_on(backend: EmbeddingBackend) -> Embedder:
    """An Embedder over ``backend`` (a TritonClient) with the service's default limits."""
    return Embedder(ModelRegistry(), backend, LIMITS)


class InProcessEmbedWorker:
    """``EmbedWorker`` consuming the shared ``embedders`` durable, as a task."""

    def __init__(
        self, bus: JetStream, embedder: Embedder, *, ack_wait_seconds: float = 5.0
    ) -> None:
        self._bus = bus
        self._ack_wait = ack_wait_seconds
        self._worker = EmbedWorker(
            embedder, bus, instance="test-worker", ack_wait_seconds=ack_wait_seconds
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> InProcessEmbedWorker:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            self._bus.consume(
                consumer_spec(self._ack_wait),
                self._worker.handle,
                concurrency=4,
                fetch_timeout=0.5,
                stop=self._stop,
            )
        )
        return self

    async def stop(self) -> None:
        """Stop fetching; batches being handled finish and are acked."""
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        await task


async def poll(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Wait until ``condition`` holds, checking every 50 ms; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)

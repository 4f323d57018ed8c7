"""The indexer's embed work-queue client (``QueueEmbedder``) against a real
nats-server of its own and the real ``EmbedWorker`` in this process over the
session's Triton: results in order and equal to the Embedder's, operations
kept apart, lost batches sent again, late duplicates ignored, unavailable
results retried, an embedder that stays away reported as such, and the chunks'
token ids sent in the batch and embedded from."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from embed_worker_process import InProcessEmbedWorker, embedder_on, poll
from nats.js import api
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from embedder.adapters.triton_client import TritonClient
from embedder.embedding import Embedder, Priority
from indexer.adapters.tokenizers import tokenizer_for
from indexer.embed_queue import EmbedderUnavailable, QueueEmbedder
from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS, EMBED
from kit.errors import Code
from kit.events import new_envelope, parse_envelope, unpack
from kit.stack.nats import NatsServer
from vectorops.events.v1 import embed_pb2

HASH = "vectorops/hash-bow-384"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def own_nats(infra_dir) -> Iterator[NatsServer]:
    """A nats-server of this module's own: no other embedder shares its work queue."""
    server = NatsServer(infra_dir / f"queue-client-{uuid.uuid4().hex[:8]}")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def bus(own_nats: NatsServer) -> AsyncIterator[JetStream]:
    bus = await JetStream.connect(own_nats.url, name="queue-client-test")
    await bus.ensure_streams(ALL_STREAMS)
    await bus.js.purge_stream(EMBED.name)  # no job of an earlier test is left waiting
    yield bus
    await bus.close()


@pytest.fixture
def embedder(triton_client: TritonClient) -> Embedder:
    return embedder_on(triton_client)


@pytest.fixture
async def worker(bus: JetStream, embedder: Embedder) -> AsyncIterator[InProcessEmbedWorker]:
    """The worker, not started: each test decides when there is an embedder."""
    worker = InProcessEmbedWorker(bus, embedder)
    yield worker
    await worker.stop()


async def expected(embedder: Embedder, texts: list[str]) -> list[np.ndarray]:
    outcome = await embedder.embed(HASH, texts, is_query=False, priority=Priority.BULK, path="test")
    return [outcome.vectors[i].vector for i in range(len(texts))]


def assert_vectors(got: list[np.ndarray | str], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for position, (vector, reference) in enumerate(zip(got, want, strict=True)):
        assert isinstance(vector, np.ndarray), (position, vector)
        assert vector.dtype == np.float32 and vector.shape == (384,)
        assert np.allclose(vector, reference, atol=1e-6), position


async def jobs_waiting(bus: JetStream) -> int:
    return (await bus.js.stream_info(EMBED.name)).state.messages


def pretokenized_sent() -> float:
    """Rows the (in-process) embedder sent to Triton as ids rather than text."""
    return (
        REGISTRY.get_sample_value(
            "vectorops_embedder_pretokenized_inputs_total", {"triton_model": "all_minilm_l6_v2"}
        )
        or 0.0
    )


def ignored_results() -> float:
    return REGISTRY.get_sample_value("vectorops_indexer_embed_results_ignored_total") or 0.0


async def test_vectors_come_back_in_order_and_match_the_embedder(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    worker.start()
    texts = [f"document {i} speaks of {word}" for i, word in enumerate("abcdefghijklmnop")]
    queue = QueueEmbedder(bus, timeout_seconds=30, wait_seconds=60)
    async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
        got = await embed(HASH, texts)
        assert await embed(HASH, []) == []
    assert_vectors(got, await expected(embedder, texts))


async def test_item_failures_come_back_as_their_reasons(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    worker.start()
    texts = ["glaciers and fjords", "", "z" * 60_000, "copper kettles"]
    queue = QueueEmbedder(bus, timeout_seconds=30, wait_seconds=60)
    async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
        got = await embed(HASH, texts)
        unknown = await embed("no-such-model", ["a", "b"])
    assert got[1] == "EMPTY_INPUT" and got[2] == "INPUT_TOO_LONG"
    assert_vectors([got[0], got[3]], await expected(embedder, [texts[0], texts[3]]))
    assert unknown == ["UNKNOWN_MODEL", "UNKNOWN_MODEL"]


async def test_token_ids_travel_in_the_batch_and_give_the_texts_vectors(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    """The published EmbedBatch carries each chunk's ids beside its text (a chunk
    without ids has none); the embedder's vectors from them are the texts'."""
    tokenizer = tokenizer_for(MINILM)
    texts = [
        "Volcanoes form where molten rock rises through cracks in the crust.",
        "A starter of flour and water ferments with wild yeast.",
        "Spring tides come at new and full moon, neap tides at the quarters.",
    ]
    ids = [list(tokenizer.encode(text).ids) for text in texts]
    ids[1] = []
    queue = QueueEmbedder(bus, timeout_seconds=30, wait_seconds=60)
    async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
        call = asyncio.create_task(embed(MINILM, texts, token_ids=ids))
        await poll(lambda: _at_least(bus, 1), 10, "the batch in the queue")
        job = await bus.js.get_last_msg(EMBED.name, subjects.EMBED_JOBS)
        batch = unpack(parse_envelope(job.data), embed_pb2.EmbedBatch)
        assert [item.text for item in batch.items] == texts
        assert [list(item.token_ids) for item in batch.items] == ids
        sent_before = pretokenized_sent()
        worker.start()
        got = await asyncio.wait_for(call, 60)
    assert pretokenized_sent() == sent_before + 2  # the two chunks with ids went as ids
    outcome = await embedder.embed(
        MINILM, texts, is_query=False, priority=Priority.BULK, path="test"
    )
    for position, vector in enumerate(got):
        assert isinstance(vector, np.ndarray), (position, vector)
        np.testing.assert_allclose(vector, outcome.vectors[position].vector, atol=1e-5)


async def test_two_operations_in_flight_at_once_never_mix(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    """Many batches of two operations out at once over one connection: each call
    gets its own texts' vectors, and no result reaches the other operation."""
    worker.start()
    queue = QueueEmbedder(bus, timeout_seconds=30, wait_seconds=60)
    ignored_before = ignored_results()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        queue.for_operation(first, str(uuid.uuid4())) as embed_first,
        queue.for_operation(second, str(uuid.uuid4())) as embed_second,
    ):
        calls = {
            (operation, n): [f"{operation} batch {n} text {i} word{n * 7 + i}" for i in range(12)]
            for operation in (first, second)
            for n in range(10)
        }
        results = await asyncio.gather(
            *(
                (embed_first if operation == first else embed_second)(HASH, texts)
                for (operation, _), texts in calls.items()
            )
        )
        assert embed_first.batches_published == 10 and embed_second.batches_published == 10
    for texts, got in zip(calls.values(), results, strict=True):
        assert_vectors(got, await expected(embedder, texts))
    assert ignored_results() == ignored_before


async def test_a_lost_batch_is_published_again_after_the_timeout(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    """The job vanishes from the queue while no embedder runs (a lost message);
    once the timeout passes the batch goes out again and the call completes."""
    texts = ["fjords and glaciers", "tidal turbines"]
    queue = QueueEmbedder(bus, timeout_seconds=1.5, wait_seconds=60)
    async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
        started = time.monotonic()
        call = asyncio.create_task(embed(HASH, texts))
        await poll(lambda: _at_least(bus, 1), 10, "the batch in the queue")
        await bus.js.purge_stream(EMBED.name)
        worker.start()
        got = await asyncio.wait_for(call, 30)
        assert time.monotonic() - started >= 1.5
        assert embed.batches_published == 2
    assert_vectors(got, await expected(embedder, texts))


async def test_a_late_duplicate_result_is_ignored(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    """No embedder for longer than the timeout: the batch is published twice. Once
    an embedder comes, both copies are answered; the first answers the call, the
    second is dropped, and the operation's next call is unaffected."""
    texts = ["basalt columns in Iceland"]
    queue = QueueEmbedder(bus, timeout_seconds=1.0, wait_seconds=60)
    async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
        ignored_before = ignored_results()
        call = asyncio.create_task(embed(HASH, texts))
        await poll(lambda: _at_least(bus, 2), 10, "the batch published twice")
        worker.start()
        got = await asyncio.wait_for(call, 30)
        published = embed.batches_published
        assert published >= 2

        async def every_copy_answered() -> bool:
            return ignored_results() >= ignored_before + published - 1

        await poll(every_copy_answered, 10, "the duplicate results")
        later = await embed(HASH, ["cardamom tea at dawn"])
    assert_vectors(got, await expected(embedder, texts))
    assert_vectors(later, await expected(embedder, ["cardamom tea at dawn"]))


async def test_an_unavailable_result_is_retried_after_a_backoff(
    bus: JetStream, embedder: Embedder, worker: InProcessEmbedWorker
) -> None:
    """An embedder reports EMBEDDER_UNAVAILABLE for every chunk (what the worker
    says when its Triton stayed away past the batch's deadline): the batch is
    published again after the backoff, long before the timeout, and a working
    embedder then answers it."""
    texts = ["volcanic basalt", "copper kettles"]
    with contextlib.suppress(NotFoundError):
        await bus.js.delete_consumer(EMBED.name, "embedders")  # one consumer per job
    await bus.js.add_consumer(
        EMBED.name,
        api.ConsumerConfig(
            durable_name="unavailable-embedder",
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject="vo.embed.jobs",
        ),
    )
    peer = await bus.js.pull_subscribe_bind("unavailable-embedder", stream=EMBED.name)
    queue = QueueEmbedder(bus, timeout_seconds=60, wait_seconds=120, retry_delays_seconds=(0.3,))
    async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
        started = time.monotonic()
        call = asyncio.create_task(embed(HASH, texts))
        [job] = await peer.fetch(1, timeout=10)
        batch = unpack(parse_envelope(job.data), embed_pb2.EmbedBatch)
        await _answer_unavailable(bus, batch)
        await job.ack()
        await peer.unsubscribe()
        await bus.js.delete_consumer(EMBED.name, "unavailable-embedder")
        worker.start()
        got = await asyncio.wait_for(call, 30)
        assert time.monotonic() - started < 30  # the backoff, not the 60 s timeout
        assert embed.batches_published == 2
    assert_vectors(got, await expected(embedder, texts))


@pytest.fixture
async def dead_triton() -> AsyncIterator[TritonClient]:
    """A Triton client whose server is gone (nothing listens on its port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TritonClient(f"127.0.0.1:{port}")
    yield client
    await client.close()


@pytest.mark.parametrize("embedder_state", ["no embedder", "embedder without Triton"])
async def test_embedder_down_past_the_wait_raises_embedder_unavailable(
    bus: JetStream, dead_triton: TritonClient, embedder_state: str
) -> None:
    broken = None
    if embedder_state == "embedder without Triton":
        broken = InProcessEmbedWorker(bus, embedder_on(dead_triton)).start()
    queue = QueueEmbedder(bus, timeout_seconds=0.5, wait_seconds=1.5)
    try:
        async with queue.for_operation(str(uuid.uuid4()), str(uuid.uuid4())) as embed:
            started = time.monotonic()
            with pytest.raises(EmbedderUnavailable) as caught:
                await embed(HASH, ["nobody embeds this"])
            elapsed = time.monotonic() - started
            assert embed.batches_published >= 3  # published again after each timeout
    finally:
        if broken is not None:
            await broken.stop()
    assert 1.5 <= elapsed < 6
    assert caught.value.reason == "EMBEDDER_UNAVAILABLE"
    assert caught.value.code is Code.UNAVAILABLE


async def _at_least(bus: JetStream, jobs: int) -> bool:
    return await jobs_waiting(bus) >= jobs


async def _answer_unavailable(bus: JetStream, batch: embed_pb2.EmbedBatch) -> None:
    result = embed_pb2.EmbedBatchResult(batch_id=batch.batch_id, operation_id=batch.operation_id)
    for item in batch.items:
        result.failures.add(chunk_id=item.chunk_id, reason="EMBEDDER_UNAVAILABLE", message="down")
    envelope = new_envelope(result, producer="test", operation_id=batch.operation_id)
    await bus.publish(
        batch.reply_subject, envelope.SerializeToString(), msg_id=f"embed-result:{batch.batch_id}"
    )

"""The embed work queue against real NATS, a real Triton and real embedder processes:
results come back packed and per-chunk failures stay with their chunks; chunks sent
with their token ids give the vectors of their texts; an embedder killed mid-batch
loses nothing and duplicates nothing."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest

from indexer.adapters.tokenizers import tokenizer_for
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS, EMBED, EMBED_RESULTS
from kit.config import ServiceName
from kit.events import new_envelope, parse_envelope, unpack
from kit.hash_embedding import hash_embed
from kit.stack.launcher import Stack, StackOptions
from kit.stack.nats import NatsServer
from vectorops.common.v1 import config_pb2
from vectorops.events.v1 import embed_pb2

HASH = "vectorops/hash-bow-384"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _batch(operation: str, number: int, texts: list[str], model: str) -> embed_pb2.EmbedBatch:
    return embed_pb2.EmbedBatch(
        batch_id=f"{operation}-{number}",
        operation_id=operation,
        model=model,
        input_kind=config_pb2.INPUT_KIND_DOCUMENT,
        reply_subject=f"vo.embed.results.{operation}",
        items=[embed_pb2.EmbedItem(chunk_id=f"{number}:{i}", text=t) for i, t in enumerate(texts)],
    )


async def _publish(bus: JetStream, batch: embed_pb2.EmbedBatch) -> None:
    envelope = new_envelope(batch, producer="test", operation_id=batch.operation_id)
    await bus.publish("vo.embed.jobs", envelope.SerializeToString(), msg_id=envelope.event_id)


async def _results(bus: JetStream, operation: str, expected_batches: int, timeout: float = 120):
    """Every result message of an operation in the stream (duplicates would show)."""
    subscription = await bus.js.pull_subscribe(
        f"vo.embed.results.{operation}", durable=None, stream=EMBED_RESULTS.name
    )
    found = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected_batches and time.monotonic() < deadline:
            try:
                messages = await subscription.fetch(32, timeout=2)
            except TimeoutError:
                continue
            for message in messages:
                found.append(unpack(parse_envelope(message.data), embed_pb2.EmbedBatchResult))
                await message.ack()
        # Anything beyond the expected count would be a duplicate: give it a moment.
        try:
            extra = await subscription.fetch(32, timeout=2)
        except TimeoutError:
            extra = []
        found += [unpack(parse_envelope(m.data), embed_pb2.EmbedBatchResult) for m in extra]
    finally:
        await subscription.unsubscribe()
    return found


@pytest.fixture
async def bus(nats_server):
    bus = await JetStream.connect(nats_server.url, name="embed-queue-test")
    await bus.ensure_streams(ALL_STREAMS)
    yield bus
    await bus.close()


async def test_batch_results_are_packed_and_failures_stay_with_their_chunks(stack, bus) -> None:
    operation = uuid.uuid4().hex
    texts = ["alpha beta", "", "gamma delta", "z" * 60_000]
    await _publish(bus, _batch(operation, 0, texts, HASH))
    [result] = await _results(bus, operation, 1)
    assert result.operation_id == operation and result.model == HASH
    vectors = {v.chunk_id: np.frombuffer(v.vector, dtype="<f4") for v in result.vectors}
    assert sorted(vectors) == ["0:0", "0:2"]
    expected = hash_embed(["alpha beta", "gamma delta"], 384)
    assert np.allclose(vectors["0:0"], expected[0], atol=1e-6)
    assert np.allclose(vectors["0:2"], expected[1], atol=1e-6)
    assert {(f.chunk_id, f.reason) for f in result.failures} == {
        ("0:1", "EMPTY_INPUT"),
        ("0:3", "INPUT_TOO_LONG"),
    }


async def test_chunks_with_token_ids_give_their_texts_vectors(stack, bus) -> None:
    """One MiniLM batch sent with the chunks' ids and once as texts: equal vectors.
    With ids, an item whose text is empty is still EMPTY_INPUT, and ids outside the
    vocabulary fail their own item only."""
    operation = uuid.uuid4().hex
    tokenizer = tokenizer_for(MINILM)
    texts = [
        "Glaciers carve U-shaped valleys and leave moraines behind them.",
        "",
        "The Sicilian Defence answers the king's pawn with the c-pawn.",
        "an item whose ids are out of range",
        "Honey bees tell their sisters where flowers are with the waggle dance.",
    ]
    with_ids = _batch(operation, 0, texts, MINILM)
    for item, text in zip(with_ids.items, texts, strict=True):
        item.token_ids.extend(tokenizer.encode(text or "ids of no text").ids)
    with_ids.items[3].token_ids[:] = [7592, 99_999_999]
    await _publish(bus, with_ids)
    await _publish(bus, _batch(operation, 1, texts, MINILM))
    results = {r.batch_id: r for r in await _results(bus, operation, 2)}
    by_ids, by_text = results[f"{operation}-0"], results[f"{operation}-1"]

    def vectors(result: embed_pb2.EmbedBatchResult) -> dict[str, np.ndarray]:
        return {v.chunk_id.split(":")[1]: np.frombuffer(v.vector, "<f4") for v in result.vectors}

    assert sorted(vectors(by_ids)) == ["0", "2", "4"]
    for index in ("0", "2", "4"):
        np.testing.assert_allclose(vectors(by_ids)[index], vectors(by_text)[index], atol=1e-5)
    assert {(f.chunk_id, f.reason) for f in by_ids.failures} == {
        ("0:1", "EMPTY_INPUT"),
        ("0:3", "INFERENCE_FAILED"),
    }


async def test_unknown_model_fails_every_chunk_of_the_batch(stack, bus) -> None:
    operation = uuid.uuid4().hex
    await _publish(bus, _batch(operation, 0, ["a", "b"], "no-such-model"))
    [result] = await _results(bus, operation, 1)
    assert not result.vectors
    assert [(f.chunk_id, f.reason) for f in result.failures] == [
        ("0:0", "UNKNOWN_MODEL"),
        ("0:1", "UNKNOWN_MODEL"),
    ]


@pytest.fixture
async def own_queue(infra_dir, postgres, triton_host, request):
    """A NATS of its own and an embedder on it (ack wait 2 s), so the test knows
    which embedder holds which batch: (embedders stack, bus)."""
    folder = infra_dir / f"own-queue-{uuid.uuid4().hex[:8]}"
    nats = NatsServer(folder / "nats")
    nats.start()
    options = StackOptions.ephemeral(folder / "stack")
    options.postgres_dsn = postgres.create_database("own_queue")
    options.nats_url = nats.url
    options.services = (ServiceName.EMBEDDER,)
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton_host.url,
        "VECTOROPS_EMBEDDER_QUEUE_ACK_WAIT_SECONDS": "2",
    }
    embedders = Stack(options)
    bus = None
    try:
        embedders.start()
        bus = await JetStream.connect(nats.url, name="embed-queue-test")
        yield embedders, bus
    finally:
        if bus is not None:
            await bus.close()
        embedders.stop()
        nats.stop()


async def test_embedder_killed_mid_batch_loses_and_duplicates_nothing(own_queue) -> None:
    """One embedder takes batches and is SIGKILLed while it holds some unacked; a fresh
    embedder then finishes the queue; every chunk comes back once."""
    embedders, bus = own_queue
    operation = uuid.uuid4().hex
    texts = [f"chunk number {i} about vectors and queues" for i in range(64)]
    batches = [_batch(operation, n, texts, MINILM) for n in range(16)]
    for batch in batches:
        await _publish(bus, batch)
    for _ in range(200):
        info = await bus.js.consumer_info(EMBED.name, "embedders")
        if info.num_ack_pending > 0:
            break
        await asyncio.sleep(0.05)
    # The only embedder holds these batches unacked: it dies in the middle of them.
    assert info.num_ack_pending > 0
    embedders.kill(ServiceName.EMBEDDER)
    embedders.start_service(ServiceName.EMBEDDER)
    results = await _results(bus, operation, len(batches), timeout=180)
    deliveries = (await bus.js.consumer_info(EMBED.name, "embedders")).delivered.consumer_seq
    chunk_ids = [v.chunk_id for result in results for v in result.vectors]
    assert not [f for result in results for f in result.failures]
    assert sorted(chunk_ids) == sorted(f"{n}:{i}" for n in range(16) for i in range(64))
    assert len(results) == len(batches)  # one result per batch, none repeated
    assert deliveries > len(batches)  # the killed embedder's batches were delivered again


async def test_slow_batch_keeps_its_lease_with_in_progress(own_queue) -> None:
    """A batch that takes several ack waits is not handed to anyone else meanwhile."""
    _, bus = own_queue
    operation = uuid.uuid4().hex
    texts = [f"a long chunk {i} " + "about vectors and queues " * 40 for i in range(512)]
    batch = _batch(operation, 0, texts, MINILM)
    started = time.monotonic()
    await _publish(bus, batch)
    [result] = await _results(bus, operation, 1, timeout=120)
    assert time.monotonic() - started > 4  # two ack waits at least
    assert len(result.vectors) == 512
    info = await bus.js.consumer_info(EMBED.name, "embedders")
    assert info.delivered.consumer_seq == 1  # delivered once: never redelivered

"""The JetStream client against a real nats-server: idempotent topology, dedup on
Nats-Msg-Id, and a pull consumer that acks, retries and dead-letters."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from kit.bus.jetstream import Delivery, JetStream, Reject
from kit.bus.topology import ALL_STREAMS, DEAD, ConsumerSpec, Retention, StreamSpec
from kit.events import new_envelope, parse_envelope, unpack
from vectorops.events.v1 import dead_letter_pb2, usage_pb2


@pytest.fixture
async def bus(nats_server):
    bus = await JetStream.connect(nats_server.url, name="jetstream-test")
    await bus.ensure_streams(ALL_STREAMS)
    yield bus
    await bus.close()


async def _work_queue(bus: JetStream) -> tuple[StreamSpec, str]:
    name = f"T_{uuid.uuid4().hex[:8].upper()}"
    spec = StreamSpec(name, (f"t.{name.lower()}.>",), Retention.WORK_QUEUE)
    await bus.ensure_streams([spec])
    return spec, f"t.{name.lower()}.job"


async def _consume_until(
    bus: JetStream, consumer: ConsumerSpec, handler, done: asyncio.Event
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(consumer, handler, fetch_timeout=0.2, stop=stop))
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_declaring_the_topology_twice_changes_nothing(bus: JetStream) -> None:
    await bus.ensure_streams(ALL_STREAMS)
    names = {info.config.name for info in await bus.js.streams_info()}
    assert {spec.name for spec in ALL_STREAMS} <= names
    commands = await bus.js.stream_info("VO_COMMANDS")
    assert commands.config.retention == "workqueue"
    assert commands.config.storage == "file"


async def test_same_msg_id_is_stored_once(bus: JetStream) -> None:
    spec, subject = await _work_queue(bus)
    first = await bus.publish(subject, b"x", msg_id="same-id")
    second = await bus.publish(subject, b"x", msg_id="same-id")
    assert not first.duplicate and second.duplicate
    assert (await bus.js.stream_info(spec.name)).state.messages == 1


async def test_transient_failure_is_retried_then_acked(bus: JetStream) -> None:
    spec, subject = await _work_queue(bus)
    consumer = ConsumerSpec(spec.name, "worker", (subject,), retry_delays_seconds=(0.1,))
    attempts: list[int] = []
    done = asyncio.Event()

    async def flaky(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 3:
            raise ConnectionError("store not reachable yet")
        done.set()

    await bus.publish(subject, b"job", msg_id=str(uuid.uuid4()))
    await _consume_until(bus, consumer, flaky, done)
    assert attempts == [1, 2, 3]
    await asyncio.sleep(0.2)
    # Acked on a work queue: removed from the stream.
    assert (await bus.js.stream_info(spec.name)).state.messages == 0


async def _dead_letters_of(bus: JetStream, stream: str, durable: str):
    """(envelope, DeadLetter) of each dead letter of a consumer."""
    subject = f"vo.dead.{stream}.{durable}"
    sub = await bus.js.pull_subscribe(subject, durable=None, stream=DEAD.name)
    try:
        messages = await sub.fetch(10, timeout=1)
    except TimeoutError:
        messages = []
    finally:
        await sub.unsubscribe()
    envelopes = [parse_envelope(m.data) for m in messages]
    return [(e, unpack(e, dead_letter_pb2.DeadLetter)) for e in envelopes]


async def test_message_exhausting_its_deliveries_becomes_a_dead_letter(bus: JetStream) -> None:
    spec, subject = await _work_queue(bus)
    consumer = ConsumerSpec(
        spec.name, "worker", (subject,), max_deliver=3, retry_delays_seconds=(0.05,)
    )
    attempts: list[int] = []
    done = asyncio.Event()

    async def broken(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.last_attempt:
            done.set()
        raise ValueError("cannot parse")

    original = new_envelope(
        usage_pb2.UsageDelta(), producer="test", operation_id="op-1", collection_id="col-1"
    )
    await bus.publish(subject, original.SerializeToString(), msg_id=original.event_id)
    await _consume_until(bus, consumer, broken, done)
    assert attempts == [1, 2, 3]
    [(envelope, dead)] = await _dead_letters_of(bus, spec.name, "worker")
    # The ids travel on the dead letter's envelope: the operation can be failed from it.
    assert (envelope.operation_id, envelope.collection_id) == ("op-1", "col-1")
    assert envelope.causation_id == original.event_id
    assert dead.original_envelope == original.SerializeToString()
    assert (dead.original_event_id, dead.original_type) == (
        original.event_id,
        "vectorops.events.v1.UsageDelta",
    )
    assert (dead.stream, dead.consumer, dead.subject, dead.deliveries) == (
        spec.name,
        "worker",
        subject,
        3,
    )
    assert "max deliveries reached: cannot parse" in dead.reason
    # Visible to on-call: the consumer's dead-letter counter counts it.
    labels = {"stream": spec.name, "consumer": "worker"}
    assert REGISTRY.get_sample_value("vectorops_jetstream_dead_letters_total", labels) == 1


async def test_message_never_acked_becomes_a_dead_letter_from_the_advisory(
    bus: JetStream,
) -> None:
    """A consumer that takes a message and never acks it (as one that crashes each
    time would): the server gives up after max_deliver, and its advisory makes the
    dead letter."""
    spec, subject = await _work_queue(bus)
    consumer = ConsumerSpec(spec.name, "worker", (subject,), max_deliver=2, ack_wait_seconds=0.5)
    await bus.ensure_consumer(consumer)
    watcher = await bus.watch_max_deliveries(consumer)
    original = new_envelope(usage_pb2.UsageDelta(), producer="test", operation_id="op-2")
    await bus.publish(subject, original.SerializeToString(), msg_id=original.event_id)
    crashing = await bus.js.pull_subscribe_bind(consumer.durable, stream=spec.name)
    try:
        for delivery in (1, 2):
            [message] = await crashing.fetch(1, timeout=5)  # taken, never acked
            assert message.metadata.num_delivered == delivery
        # The server notices the exhausted message when a consumer pulls again (as a
        # restarted one would); it delivers nothing and sends the advisory.
        with pytest.raises(TimeoutError):
            await crashing.fetch(1, timeout=2)
        letters = []
        for _ in range(20):
            letters = await _dead_letters_of(bus, spec.name, "worker")
            if letters:
                break
            await asyncio.sleep(0.25)
    finally:
        await crashing.unsubscribe()
        await watcher.unsubscribe()
    [(envelope, dead)] = letters
    assert envelope.operation_id == "op-2"
    assert dead.deliveries == 2
    assert dead.reason == "max deliveries reached without an ack"


async def test_rejected_message_goes_to_dead_letters_at_once(bus: JetStream) -> None:
    spec, subject = await _work_queue(bus)
    consumer = ConsumerSpec(spec.name, "worker", (subject,))
    attempts: list[int] = []
    done = asyncio.Event()

    async def rejecting(delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        done.set()
        raise Reject("unknown payload type")

    await bus.publish(subject, b"alien", msg_id=str(uuid.uuid4()))
    await _consume_until(bus, consumer, rejecting, done)
    await asyncio.sleep(0.3)
    assert attempts == [1]
    [(envelope, dead)] = await _dead_letters_of(bus, spec.name, "worker")
    assert dead.original_envelope == b"alien"  # not an envelope: kept verbatim, without ids
    assert envelope.operation_id == "" and dead.original_event_id == ""
    assert "rejected: unknown payload type" in dead.reason


async def test_two_consumers_rejecting_one_message_each_keep_a_dead_letter(
    bus: JetStream,
) -> None:
    """Two consumers of one (limits) stream each give up on the same message: both
    dead letters are kept, one per consumer, not deduplicated into one."""
    name = f"T_{uuid.uuid4().hex[:8].upper()}"
    spec = StreamSpec(name, (f"t.{name.lower()}.>",), Retention.LIMITS)
    await bus.ensure_streams([spec])
    subject = f"t.{name.lower()}.event"
    await bus.publish(subject, b"poison", msg_id=str(uuid.uuid4()))

    async def rejecting(delivery: Delivery) -> None:
        raise Reject("cannot handle it")

    for durable in ("first", "second"):
        await bus.ensure_consumer(ConsumerSpec(name, durable, (subject,)))
        stop = asyncio.Event()
        task = asyncio.create_task(
            bus.consume(
                ConsumerSpec(name, durable, (subject,)), rejecting, fetch_timeout=0.2, stop=stop
            )
        )
        deadline = asyncio.get_running_loop().time() + 10
        while not await _dead_letters_of(bus, name, durable):
            if asyncio.get_running_loop().time() > deadline:
                break
        stop.set()
        await asyncio.wait_for(task, 10)
    for durable in ("first", "second"):
        [(_, dead)] = await _dead_letters_of(bus, name, durable)
        assert dead.original_envelope == b"poison" and dead.consumer == durable


async def test_concurrent_consumer_handles_up_to_its_limit_at_once(bus: JetStream) -> None:
    spec, subject = await _work_queue(bus)
    consumer = ConsumerSpec(spec.name, "worker", (subject,))
    for index in range(9):
        await bus.publish(subject, str(index).encode(), msg_id=str(uuid.uuid4()))
    active = 0
    most_at_once = 0
    handled: list[bytes] = []
    done = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        nonlocal active, most_at_once
        active += 1
        most_at_once = max(most_at_once, active)
        await asyncio.sleep(0.2)
        active -= 1
        handled.append(delivery.data)
        if len(handled) == 9:
            done.set()

    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(consumer, slow, concurrency=3, stop=stop))
    await asyncio.wait_for(done.wait(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert sorted(handled) == sorted(str(i).encode() for i in range(9))
    assert most_at_once == 3

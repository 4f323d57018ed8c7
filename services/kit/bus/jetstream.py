"""The JetStream client: declare streams and consumers, publish with dedup ids, and
run pull-consumer loops with explicit ack, nak with backoff, term and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from prometheus_client import Counter, Gauge
from structlog.contextvars import bound_contextvars

from kit.bus.topology import ConsumerSpec, StreamSpec, dead_letter_subject
from kit.events import EnvelopeError, new_envelope, parse_envelope
from kit.logs import get_logger
from vectorops.events.v1 import dead_letter_pb2

log = get_logger(__name__)

PUBLISHED = Counter(
    "vectorops_jetstream_published_total",
    "Messages published to JetStream, by stream and whether the server dropped a duplicate.",
    ["stream", "duplicate"],
)
CONSUMED = Counter(
    "vectorops_jetstream_consumed_total",
    "Messages handled by a consumer, by outcome (ack, nak, dead_letter).",
    ["stream", "consumer", "outcome"],
)
REDELIVERED = Counter(
    "vectorops_jetstream_redelivered_total",
    "Messages received again after an earlier delivery was not acked.",
    ["stream", "consumer"],
)
DEAD_LETTERS = Counter(
    "vectorops_jetstream_dead_letters_total",
    "Messages that exhausted their deliveries and went to VO_DEAD.",
    ["stream", "consumer"],
)

CONSUMER_PENDING = Gauge(
    "vectorops_jetstream_consumer_pending_messages",
    "Messages in the stream not yet delivered to the consumer (its lag), as last polled.",
    ["stream", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "vectorops_jetstream_consumer_ack_pending_messages",
    "Messages delivered to the consumer and not acked yet, as last polled.",
    ["stream", "consumer"],
)
LAG_POLL_SECONDS = 5.0

MSG_ID_HEADER = "Nats-Msg-Id"


class Retry(Exception):
    """Raised by a handler for a transient failure: the message is delivered again later."""


class Reject(Exception):
    """Raised by a handler for a message that can never succeed: it goes to the dead letters."""


@dataclass(frozen=True)
class Delivery:
    """What a handler gets: the payload and where it is in its delivery history."""

    subject: str
    data: bytes
    headers: dict[str, str]
    attempt: int  # 1 for the first delivery
    last_attempt: bool
    _msg: Msg

    async def in_progress(self) -> None:
        """Tell the server a slow handler is alive, so the ack wait starts again."""
        await self._msg.in_progress()


Handler = Callable[[Delivery], Awaitable[None]]


def _stream_config(spec: StreamSpec, storage: str, replicas: int) -> api.StreamConfig:
    return api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=api.RetentionPolicy(spec.retention.value),
        storage=api.StorageType(storage),
        num_replicas=replicas,
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        discard=api.DiscardPolicy.OLD,
    )


def _consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    filters = list(spec.filter_subjects)
    return api.ConsumerConfig(
        durable_name=spec.durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        max_deliver=spec.max_deliver,
        ack_wait=spec.ack_wait_seconds,
        max_ack_pending=spec.max_ack_pending,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )


class JetStream:
    """One NATS connection and its JetStream context, shared by a service."""

    def __init__(
        self, nc: NatsClient, js: JetStreamContext, storage: str, replicas: int, name: str
    ) -> None:
        self.name = name  # the producer named in the envelopes this client writes
        self.nc = nc
        self.js = js
        self._storage = storage
        self._replicas = replicas

    @classmethod
    async def connect(
        cls, url: str, *, name: str, storage: str = "file", replicas: int = 1
    ) -> JetStream:
        nc = await nats.connect(
            url,
            name=name,
            # Keep trying: the outbox and the consumers resume after an outage.
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
        )
        return cls(nc, nc.jetstream(), storage, replicas, name)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def ensure_streams(self, specs: Iterable[StreamSpec]) -> None:
        """Create each stream, or update it to the declared config; safe to repeat and to race."""
        for spec in specs:
            config = _stream_config(spec, self._storage, self._replicas)
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                # Exists with another config (e.g. a changed max age): bring it in line.
                await self.js.update_stream(config)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable consumer, or update it in place (ack wait, max deliveries,
        filters: the server applies what may change). Never deleted and recreated: that
        would cut off the replicas that share it."""
        await self.js.add_consumer(spec.stream, _consumer_config(spec))

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: dict[str, str] | None = None,
        ack_timeout: float = 5.0,
    ) -> api.PubAck:
        """Publish and wait for the stream's ack. ``msg_id`` lets the server drop repeats."""
        all_headers = {MSG_ID_HEADER: msg_id, **(headers or {})}
        ack = await self.js.publish(subject, data, headers=all_headers, timeout=ack_timeout)
        PUBLISHED.labels(ack.stream, str(bool(ack.duplicate)).lower()).inc()
        return ack

    async def consume(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        concurrency: int = 1,
        fetch_timeout: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Fetch and handle messages until ``stop`` is set, up to ``concurrency`` at once.

        Ack on success; ``Retry`` (or any unexpected error) → nak with the spec's delay;
        ``Reject`` or the last allowed delivery failing → dead letter, then term.
        Messages are fetched only when a handler slot is free, so a busy consumer
        leaves the rest of the queue to other replicas.
        """
        await self.ensure_consumer(spec)
        subscription = await self.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
        advisories = await self.watch_max_deliveries(spec)
        stop = stop or asyncio.Event()
        _zero_consumer_counters(spec)
        lag = asyncio.create_task(self._poll_lag(spec, stop), name=f"lag:{spec.durable}")
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()

        async def handle_then_free(msg: Msg) -> None:
            try:
                await self._handle(spec, handler, msg)
            except Exception as error:  # noqa: BLE001 - e.g. the ack lost in an outage
                # Unacked, the message is redelivered after the ack wait: nothing is lost.
                log.warning("jetstream.settle_failed", consumer=spec.durable, error=str(error))
            finally:
                slots.release()

        try:
            while not stop.is_set():
                await slots.acquire()
                free = 1
                while free < concurrency and not slots.locked():
                    await slots.acquire()  # free: returns at once
                    free += 1
                try:
                    messages = await subscription.fetch(free, timeout=fetch_timeout)
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                    messages = []
                except nats.errors.Error as error:
                    # NATS is away (reconnecting): wait and pull again, do not die.
                    log.warning("jetstream.fetch_failed", consumer=spec.durable, error=str(error))
                    messages = []
                    await asyncio.sleep(fetch_timeout)
                for _ in range(free - len(messages)):
                    slots.release()
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A cancel that landed inside nats-py's fetch can be swallowed
                    # there; honour it here, or a cancelled consumer runs on.
                    raise asyncio.CancelledError
                for msg in messages:
                    task = asyncio.create_task(handle_then_free(msg))
                    running.add(task)
                    task.add_done_callback(running.discard)
            # Let handlers in flight finish and ack: stopping must not waste their work.
            await asyncio.gather(*running, return_exceptions=True)
        finally:
            lag.cancel()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            with contextlib.suppress(Exception):
                await advisories.unsubscribe()

    async def _poll_lag(self, spec: ConsumerSpec, stop: asyncio.Event) -> None:
        """Keep the consumer's lag gauges current: the server knows it, the handlers do not."""
        while not stop.is_set():
            try:
                info = await self.js.consumer_info(spec.stream, spec.durable)
            except Exception as error:  # noqa: BLE001 - a missed poll only leaves the gauge stale
                log.debug("jetstream.lag_poll_failed", consumer=spec.durable, error=str(error))
            else:
                CONSUMER_PENDING.labels(spec.stream, spec.durable).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(spec.stream, spec.durable).set(
                    info.num_ack_pending or 0
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LAG_POLL_SECONDS)

    async def _handle(self, spec: ConsumerSpec, handler: Handler, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered
        if attempt > 1:
            REDELIVERED.labels(spec.stream, spec.durable).inc()
        delivery = Delivery(
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            attempt=attempt,
            last_attempt=attempt >= spec.max_deliver,
            _msg=msg,
        )
        # Every line logged while the message is handled (the handler's, the retry's,
        # the dead letter's), and every envelope the handler writes, carries the
        # ids of the work the message belongs to.
        with bound_contextvars(**_work_ids(msg.data)):
            await self._settle(spec, handler, delivery, msg)

    async def _settle(
        self, spec: ConsumerSpec, handler: Handler, delivery: Delivery, msg: Msg
    ) -> None:
        """Run the handler, then ack, nak with the spec's delay, or dead-letter."""
        attempt = delivery.attempt
        try:
            await handler(delivery)
        except Reject as error:
            await self._dead_letter(spec, msg, f"rejected: {error}")
        except Exception as error:  # noqa: BLE001 - every failure is retried or dead-lettered
            if delivery.last_attempt:
                await self._dead_letter(spec, msg, f"max deliveries reached: {error}")
            else:
                log.warning(
                    "jetstream.retry",
                    consumer=spec.durable,
                    subject=msg.subject,
                    attempt=attempt,
                    error=str(error),
                )
                delay = spec.retry_delays_seconds[
                    min(attempt - 1, len(spec.retry_delays_seconds) - 1)
                ]
                await msg.nak(delay=delay)
                CONSUMED.labels(spec.stream, spec.durable, "nak").inc()
        else:
            await msg.ack()
            CONSUMED.labels(spec.stream, spec.durable, "ack").inc()

    async def _dead_letter(self, spec: ConsumerSpec, msg: Msg, reason: str) -> None:
        """Keep the message, with why it failed, in VO_DEAD; then stop its redelivery."""
        metadata = msg.metadata
        await self._publish_dead_letter(
            spec, msg.subject, metadata.sequence.stream, metadata.num_delivered, msg.data, reason
        )
        await msg.term()
        CONSUMED.labels(spec.stream, spec.durable, "dead_letter").inc()

    async def watch_max_deliveries(self, spec: ConsumerSpec) -> Subscription:
        """Dead-letter what the server gives up on for ``spec`` (unsubscribe to stop)."""

        async def on_advisory(advisory: Msg) -> None:
            await self._dead_letter_from_advisory(spec, advisory)

        return await self.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{spec.stream}.{spec.durable}",
            cb=on_advisory,
        )

    async def _dead_letter_from_advisory(self, spec: ConsumerSpec, advisory: Msg) -> None:
        """The server gave up on a message no handler acked in time (e.g. its consumer
        crashed each time): copy it to the dead letters too. Every replica hears the
        advisory; the dedup id makes one copy."""
        try:
            report = json.loads(advisory.data)
            original = await self.js.get_msg(spec.stream, report["stream_seq"])
        except Exception as error:  # noqa: BLE001 - an advisory is best effort, never fatal
            log.warning("jetstream.advisory_unreadable", consumer=spec.durable, error=str(error))
            return
        await self._publish_dead_letter(
            spec,
            original.subject or "",
            report["stream_seq"],
            report.get("deliveries", spec.max_deliver),
            original.data or b"",
            "max deliveries reached without an ack",
        )

    async def _publish_dead_letter(
        self,
        spec: ConsumerSpec,
        subject: str,
        sequence: int,
        deliveries: int,
        data: bytes,
        reason: str,
    ) -> None:
        """Publish a ``DeadLetter`` envelope that carries the original ids, so whoever
        owns the operation can fail it without parsing the original message."""
        dead = dead_letter_pb2.DeadLetter(
            stream=spec.stream,
            consumer=spec.durable,
            subject=subject,
            stream_sequence=sequence,
            deliveries=deliveries,
            original_envelope=data,
            reason=reason[:2000],
        )
        dead.dead_time.GetCurrentTime()
        ids: dict[str, str] = {}
        try:
            original = parse_envelope(data)
        except EnvelopeError:
            pass  # not ours to parse: keep the bytes verbatim, without ids
        else:
            dead.original_event_id, dead.original_type = original.event_id, original.type
            ids = {
                "operation_id": original.operation_id,
                "collection_id": original.collection_id,
                "owner_id": original.owner_id,
                "trace_id": original.trace_id,
                "causation_id": original.event_id,
            }
        envelope = new_envelope(dead, producer=self.name, **ids)
        ack = await self.publish(
            dead_letter_subject(spec.stream, spec.durable),
            envelope.SerializeToString(),
            # Per consumer: two consumers of one stream may each give up on the
            # same message, and each dead letter must be kept.
            msg_id=f"dead:{spec.stream}:{spec.durable}:{sequence}",
        )
        if not ack.duplicate:
            DEAD_LETTERS.labels(spec.stream, spec.durable).inc()
        log.error(
            "jetstream.dead_letter",
            consumer=spec.durable,
            subject=subject,
            reason=reason,
            operation_id=ids.get("operation_id"),
        )


def _work_ids(data: bytes) -> dict[str, str]:
    """The trace and operation ids of an envelope, for the log context (none
    for a message that is not an envelope: its handler rejects it)."""
    try:
        envelope = parse_envelope(data)
    except EnvelopeError:
        return {}
    ids = {"trace_id": envelope.trace_id, "operation_id": envelope.operation_id}
    return {key: value for key, value in ids.items() if value}


def _zero_consumer_counters(spec: ConsumerSpec) -> None:
    """Create the consumer's series at 0, so a rate over them is 0 rather than absent
    before the first redelivery or dead letter."""
    for outcome in ("ack", "nak", "dead_letter"):
        CONSUMED.labels(spec.stream, spec.durable, outcome)
    REDELIVERED.labels(spec.stream, spec.durable)
    DEAD_LETTERS.labels(spec.stream, spec.durable)


__all__ = ["Delivery", "JetStream", "Reject", "Retry"]

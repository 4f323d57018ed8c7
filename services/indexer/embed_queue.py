"""The indexer's client of the embed work queue: the production ``EmbedFunction``.

Each call becomes one ``EmbedBatch`` on ``vo.embed.jobs`` (any embedder takes
it) whose result comes back on the operation's own subject,
``vo.embed.results.<operation_id>``. One JetStream consumer per operation
receives every result and hands it to the call waiting for that batch id, so
many batches are in flight over one subscription. The consumer exists before
the first batch is published and results are stored in ``VO_EMBED_RESULTS``:
a result published while the indexer is briefly disconnected is delivered
when it is back.

Failure handling, per call:
- no result within ``timeout_seconds``: the batch is published again under a
  new batch id (the job or its result may be lost); a late result of any of the
  call's batch ids still answers it, and duplicates are ignored;
- a result whose items failed with EMBEDDER_UNAVAILABLE (the embedder could not
  reach its model before the batch's deadline): published again after a backoff;
- once the embedder has been unreachable for ``wait_seconds`` (or NATS, for the
  publish), the call raises ``EmbedderUnavailable`` (``BACKEND_UNAVAILABLE`` for
  NATS), which the operation runner reports as error type EMBEDDER_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import nats.errors
import numpy as np
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.bus.topology import EMBED_RESULTS
from kit.errors import Unavailable
from kit.events import EnvelopeError, new_envelope, parse_envelope, unpack
from kit.logs import get_logger
from vectorops.common.v1 import config_pb2
from vectorops.events.v1 import embed_pb2

log = get_logger(__name__)

EMBED_BATCHES = Counter(
    "vectorops_indexer_embed_batches_total",
    "Embed batches the indexer published, by why: first, timeout (no result in time) "
    "or retry (the embedder or NATS was unavailable).",
    ["why"],
)
EMBED_RESULTS_IGNORED = Counter(
    "vectorops_indexer_embed_results_ignored_total",
    "Embed results that answered no waiting batch (duplicates, or of an ended call).",
)

# Reasons of a whole batch that the embedder could not embed for now: retry.
RETRYABLE_REASONS = frozenset({"EMBEDDER_UNAVAILABLE", "EMBEDDER_TIMEOUT"})
NO_RESULT = "NO_RESULT"  # an item the result left out (the protocol says it never does)


@dataclass
class EmbedderUnavailable(Unavailable):
    """The embedder did not answer for the operation's whole wait."""

    reason: str = "EMBEDDER_UNAVAILABLE"


@dataclass(frozen=True)
class QueueTiming:
    timeout_seconds: float  # a batch without a result after this is published again
    wait_seconds: float  # unreachable this long: the call fails
    retry_delays_seconds: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)  # after EMBEDDER_UNAVAILABLE


class QueueEmbedder:
    """Embedding through the work queue; ``for_operation`` gives an operation's
    ``EmbedFunction``."""

    def __init__(
        self,
        bus: JetStream,
        *,
        timeout_seconds: float,
        wait_seconds: float,
        retry_delays_seconds: Sequence[float] = (0.5, 1.0, 2.0, 5.0),
    ) -> None:
        self._bus = bus
        self._timing = QueueTiming(timeout_seconds, wait_seconds, tuple(retry_delays_seconds))

    @asynccontextmanager
    async def for_operation(
        self, operation_id: str, collection_id: str, *, owner_id: str = "", trace_id: str = ""
    ) -> AsyncIterator[OperationEmbedder]:
        embedder = OperationEmbedder(
            self._bus, self._timing, operation_id, collection_id, owner_id, trace_id
        )
        await embedder.open()
        try:
            yield embedder
        finally:
            await embedder.close()


class _Call:
    """One embed call: every batch id it has published answers it."""

    def __init__(self) -> None:
        self.current = ""  # the batch id of the latest attempt
        self.answer: asyncio.Future[embed_pb2.EmbedBatchResult] = _future()

    def deliver(self, batch_id: str, result: embed_pb2.EmbedBatchResult) -> bool:
        if self.answer.done():
            return False
        # A late "unavailable" of an earlier attempt says nothing about the current one.
        if _unavailable(result) and batch_id != self.current:
            return False
        self.answer.set_result(result)
        return True


class OperationEmbedder:
    """The ``EmbedFunction`` of one operation (use ``QueueEmbedder.for_operation``)."""

    def __init__(
        self,
        bus: JetStream,
        timing: QueueTiming,
        operation_id: str,
        collection_id: str,
        owner_id: str,
        trace_id: str,
    ) -> None:
        self._bus = bus
        self._timing = timing
        self._operation_id = operation_id
        self._collection_id = collection_id
        self._owner_id = owner_id
        self._trace_id = trace_id
        self._calls: dict[str, _Call] = {}  # batch id -> the call it answers
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._consumer = ""
        self._chunks = 0  # chunk ids are unique within the operation
        self.batches_published = 0

    async def open(self) -> None:
        try:
            await self._subscribe()
        except (nats.errors.Error, TimeoutError) as error:
            raise Unavailable(
                f"cannot subscribe to the embed results: {error}",
                reason="BACKEND_UNAVAILABLE",
                metadata={"backend": "nats"},
            ) from error

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        with contextlib.suppress(Exception):
            await self._bus.js.delete_consumer(EMBED_RESULTS.name, self._consumer)
        for call in self._calls.values():
            if not call.answer.done():
                call.answer.set_exception(RuntimeError("the operation's embedder was closed"))
        self._calls.clear()

    async def __call__(
        self,
        model: str,
        texts: list[str],
        *,
        instruction: str | None = None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[np.ndarray | str]:
        if not texts:
            return []
        batch = self._batch(model, texts, instruction, token_ids)
        call = _Call()
        ids: list[str] = []
        unreachable_since: float | None = None  # when this call's failures began
        bus_error: Exception | None = None
        retries = 0
        why = "first"  # why this attempt is published: first, timeout, retry
        try:
            while True:
                wait = self._timing.timeout_seconds
                if unreachable_since is not None:
                    left = unreachable_since + self._timing.wait_seconds - time.monotonic()
                    if left <= 0:
                        raise _gave_up(self._timing.wait_seconds, bus_error)
                    wait = min(wait, left)
                started = time.monotonic()
                batch_id = str(uuid.uuid4())
                call.current = batch_id
                self._calls[batch_id] = call
                ids.append(batch_id)
                try:
                    await self._publish(batch, batch_id, why)
                except (nats.errors.Error, TimeoutError) as error:
                    bus_error = error
                    unreachable_since = unreachable_since or started
                    await asyncio.sleep(self._delay(retries))
                    retries, why = retries + 1, "retry"
                    continue
                bus_error = None
                await asyncio.wait({call.answer}, timeout=wait)
                if not call.answer.done():
                    log.warning(
                        "embed_queue.batch_timed_out",
                        operation_id=self._operation_id,
                        batch_id=batch_id,
                        seconds=wait,
                    )
                    unreachable_since = unreachable_since or started
                    await self._ensure_consumer()
                    why = "timeout"
                    continue
                result = call.answer.result()
                if not _unavailable(result):
                    return decode_result(result, batch)
                unreachable_since = unreachable_since or started
                call.answer = _future()
                await asyncio.sleep(self._delay(retries))
                retries, why = retries + 1, "retry"
        finally:
            for batch_id in ids:
                self._calls.pop(batch_id, None)

    def _batch(
        self,
        model: str,
        texts: list[str],
        instruction: str | None,
        token_ids: Sequence[Sequence[int]] | None,
    ) -> embed_pb2.EmbedBatch:
        first = self._chunks
        self._chunks += len(texts)
        ids = token_ids if token_ids is not None else [()] * len(texts)
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} token id rows for {len(texts)} texts")
        batch = embed_pb2.EmbedBatch(
            operation_id=self._operation_id,
            collection_id=self._collection_id,
            model=model,
            input_kind=config_pb2.INPUT_KIND_DOCUMENT,
            reply_subject=subjects.embed_results_subject(self._operation_id),
            # The ids travel with the text: the embedder need not tokenize it again.
            items=[
                embed_pb2.EmbedItem(chunk_id=str(first + i), text=text, token_ids=ids[i])
                for i, text in enumerate(texts)
            ],
        )
        if instruction is not None:
            batch.instruction = instruction
        return batch

    async def _publish(self, batch: embed_pb2.EmbedBatch, batch_id: str, why: str) -> None:
        batch.batch_id = batch_id
        # After the timeout the indexer has sent the batch again: an embedder may drop it.
        batch.deadline.FromNanoseconds(int((time.time() + self._timing.timeout_seconds) * 1e9))
        envelope = new_envelope(
            batch,
            producer=self._bus.name,
            operation_id=self._operation_id,
            collection_id=self._collection_id,
            owner_id=self._owner_id,
            trace_id=self._trace_id,
        )
        await self._bus.publish(subjects.EMBED_JOBS, envelope.SerializeToString(), msg_id=batch_id)
        self.batches_published += 1
        EMBED_BATCHES.labels(why).inc()

    def _delay(self, retries: int) -> float:
        delays = self._timing.retry_delays_seconds
        return delays[min(retries, len(delays) - 1)]

    # --- the results consumer -----------------------------------------------------

    async def _subscribe(self) -> None:
        js = self._bus.js
        self._consumer = f"indexer-embed-results-{uuid.uuid4().hex}"
        config = api.ConsumerConfig(
            name=self._consumer,
            deliver_subject=self._bus.nc.new_inbox(),
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30,
            filter_subject=subjects.embed_results_subject(self._operation_id),
            # Outlives a brief disconnect; an indexer that died leaves it to expire.
            inactive_threshold=max(60.0, self._timing.wait_seconds),
        )
        await js.add_consumer(EMBED_RESULTS.name, config)
        self._subscription = await js.subscribe_bind(
            EMBED_RESULTS.name, config, self._consumer, cb=self._on_result, manual_ack=True
        )

    async def _ensure_consumer(self) -> None:
        """After a timeout: the consumer may have expired in a long disconnect."""
        try:
            await self._bus.js.consumer_info(EMBED_RESULTS.name, self._consumer)
        except NotFoundError:
            log.warning("embed_queue.consumer_recreated", operation_id=self._operation_id)
            old, self._subscription = self._subscription, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.unsubscribe()
            await self._subscribe()
        except (nats.errors.Error, TimeoutError) as error:
            log.warning("embed_queue.consumer_unknown", error=str(error))

    async def _on_result(self, msg: Msg) -> None:
        try:
            result = unpack(parse_envelope(msg.data), embed_pb2.EmbedBatchResult)
        except EnvelopeError as error:
            log.warning("embed_queue.bad_result", operation_id=self._operation_id, error=str(error))
            result = None
        call = self._calls.get(result.batch_id) if result is not None else None
        if result is None or call is None or not call.deliver(result.batch_id, result):
            EMBED_RESULTS_IGNORED.inc()
        with contextlib.suppress(nats.errors.Error):
            await msg.ack()


def _future() -> asyncio.Future[embed_pb2.EmbedBatchResult]:
    return asyncio.get_running_loop().create_future()


def _unavailable(result: embed_pb2.EmbedBatchResult) -> bool:
    return any(failure.reason in RETRYABLE_REASONS for failure in result.failures)


def decode_result(
    result: embed_pb2.EmbedBatchResult, batch: embed_pb2.EmbedBatch
) -> list[np.ndarray | str]:
    """Each item's vector (packed little-endian float32, as the worker writes it),
    or its failure reason, in the batch's order."""
    outcome: dict[str, np.ndarray | str] = {}
    for embedded in result.vectors:
        if len(embedded.vector) != 4 * embedded.dimension:
            outcome[embedded.chunk_id] = "MALFORMED_VECTOR"
            continue
        outcome[embedded.chunk_id] = np.frombuffer(embedded.vector, dtype="<f4").astype(
            np.float32, copy=False
        )
    for failure in result.failures:
        outcome[failure.chunk_id] = failure.reason or "EMBEDDING_FAILED"
    return [outcome.get(item.chunk_id, NO_RESULT) for item in batch.items]


def _gave_up(wait_seconds: float, bus_error: Exception | None) -> Unavailable:
    if bus_error is not None:
        return Unavailable(
            f"NATS unreachable for {wait_seconds:g}s: {bus_error}",
            reason="BACKEND_UNAVAILABLE",
            metadata={"backend": "nats"},
        )
    return EmbedderUnavailable(f"no embedder answered for {wait_seconds:g}s")

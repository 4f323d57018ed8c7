"""The embed work queue: batches of chunks (texts, and the token ids the indexer's
chunker already has) in, packed vectors out.

Any number of embedders share the durable consumer of ``VO_EMBED`` (a work
queue), so each batch is handled by one of them. A batch is acked only after
its result is published; an embedder that dies mid-batch leaves it to be
redelivered to another. The result's Nats-Msg-Id is derived from the batch
id, so a batch handled twice still yields one result in ``VO_EMBED_RESULTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from embedder.domain.inputs import InputFailure
from embedder.embedding import Embedder, EmbedOutcome, Priority
from kit.bus import subjects
from kit.bus.jetstream import Delivery, JetStream, Reject, Retry
from kit.bus.topology import EMBED, ConsumerSpec
from kit.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from kit.events import EnvelopeError, new_envelope, parse_envelope, unpack
from kit.logs import get_logger
from vectorops.common.v1 import config_pb2
from vectorops.events.v1 import embed_pb2

log = get_logger(__name__)

RESULTS_PREFIX = subjects.EMBED_RESULTS_PREFIX
JOBS_SUBJECT = subjects.EMBED_JOBS


def consumer_spec(ack_wait_seconds: float) -> ConsumerSpec:
    return ConsumerSpec(
        stream=EMBED.name,
        durable="embedders",
        filter_subjects=(JOBS_SUBJECT,),
        max_deliver=10,
        ack_wait_seconds=ack_wait_seconds,
        retry_delays_seconds=(1, 2, 5, 10, 30),
    )


def result_msg_id(batch_id: str) -> str:
    return f"embed-result:{batch_id}"


class EmbedWorker:
    def __init__(
        self, embedder: Embedder, bus: JetStream, *, instance: str, ack_wait_seconds: float
    ) -> None:
        self._embedder = embedder
        self._bus = bus
        self._instance = instance
        self._heartbeat_seconds = ack_wait_seconds / 3

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.data)
            batch = unpack(envelope, embed_pb2.EmbedBatch)
        except EnvelopeError as error:
            raise Reject(str(error)) from error
        if not batch.reply_subject.startswith(RESULTS_PREFIX) or not batch.batch_id:
            raise Reject(f"batch {batch.batch_id!r} has no valid reply subject")

        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._keep_alive(delivery))
        try:
            outcome = await self._embed(batch)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

        result = self._result(batch, outcome, time.perf_counter() - started)
        reply = new_envelope(
            result,
            producer=self._bus.name,
            operation_id=batch.operation_id,
            collection_id=batch.collection_id,
            owner_id=envelope.owner_id,
            trace_id=envelope.trace_id,
            causation_id=envelope.event_id,
        )
        await self._bus.publish(
            batch.reply_subject, reply.SerializeToString(), msg_id=result_msg_id(batch.batch_id)
        )
        # One line per batch (the consumer bound its trace and operation ids).
        log.info(
            "embed.batch_done",
            batch_id=batch.batch_id,
            model=result.model,
            chunks=len(batch.items),
            failed=len(result.failures),
            seconds=round(result.compute_seconds, 4),
        )

    async def _embed(self, batch: embed_pb2.EmbedBatch) -> EmbedOutcome | list[InputFailure]:
        """The outcome, or one failure per chunk when the whole batch cannot be embedded."""
        texts = [item.text for item in batch.items]
        token_ids = [list(item.token_ids) for item in batch.items]
        try:
            return await self._embedder.embed(
                batch.model,
                texts,
                is_query=batch.input_kind == config_pb2.INPUT_KIND_QUERY,
                instruction=batch.instruction if batch.HasField("instruction") else None,
                normalize=batch.normalize if batch.HasField("normalize") else None,
                priority=Priority.BULK,
                path="queue",
                deadline_s=_seconds_left(batch),
                token_ids=token_ids if any(token_ids) else None,
            )
        except (NotFound, InvalidArgument) as error:
            # Retrying cannot help: every chunk fails, with the reason, and the batch is done.
            return [InputFailure(i, error.reason, error.message) for i in range(len(texts))]
        except (Unavailable, DeadlineExceeded) as error:
            left = _seconds_left(batch)
            if left is not None and left <= 0:
                return [InputFailure(i, error.reason, error.message) for i in range(len(texts))]
            raise Retry(error.message) from error

    def _result(
        self,
        batch: embed_pb2.EmbedBatch,
        outcome: EmbedOutcome | list[InputFailure],
        seconds: float,
    ) -> embed_pb2.EmbedBatchResult:
        result = embed_pb2.EmbedBatchResult(
            batch_id=batch.batch_id,
            operation_id=batch.operation_id,
            model=batch.model,
            compute_seconds=seconds,
            embedder_instance=self._instance,
        )
        failures = outcome if isinstance(outcome, list) else outcome.failures
        if isinstance(outcome, EmbedOutcome):
            result.model = outcome.model.name
            result.dimension = outcome.model.dimension
            for position, embedded in sorted(outcome.vectors.items()):
                result.vectors.add(
                    chunk_id=batch.items[position].chunk_id,
                    vector=embedded.vector.astype("<f4").tobytes(),
                    dimension=embedded.vector.shape[0],
                )
        for failure in failures:
            result.failures.add(
                chunk_id=batch.items[failure.index].chunk_id,
                reason=failure.reason,
                message=failure.message,
            )
        return result

    async def _keep_alive(self, delivery: Delivery) -> None:
        """A slow batch tells the server it is alive, so it is not redelivered meanwhile."""
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            await delivery.in_progress()


def _seconds_left(batch: embed_pb2.EmbedBatch) -> float | None:
    """Time until the batch's deadline (None: it has none)."""
    if not batch.HasField("deadline"):
        return None
    return batch.deadline.ToNanoseconds() / 1e9 - time.time()

"""What the indexer tells the orchestrator about an operation, on the subjects
and with the message ids of ``kit.bus.subjects``.

Step events and outcomes carry deterministic ids (``<op>.<step>.completed``,
``<op>.failed``, ...), as both ``Envelope.event_id`` and ``Nats-Msg-Id``: a
worker that publishes one again after a crash makes no second copy in the
stream, and the orchestrator applies each id once. Progress reports are fresh
facts each time and take fresh ids.
"""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from indexer.domain.operation_plan import (
    USAGE_REASONS,
    OperationFigures,
    UsageChange,
    percent,
)
from indexer.operations.base import OperationOrder
from indexer.resource_meter import ResourceUse
from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.events import new_envelope
from kit.operation_protocol import OperationType
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import operation_events_pb2, usage_pb2

PRODUCER = "indexer"

OPERATION_TYPES = {
    kind: operation_pb2.OperationType.Value(f"OPERATION_TYPE_{kind}") for kind in OperationType
}


def progress_message(
    figures: OperationFigures, step: str, step_index: int, step_count: int
) -> operation_pb2.Progress:
    now = Timestamp()
    now.GetCurrentTime()
    return operation_pb2.Progress(
        documents_total=figures.documents_total,
        documents_done=figures.documents_done,
        documents_failed=figures.documents_failed,
        documents_skipped=figures.documents_skipped,
        documents_duplicate=figures.documents_duplicate,
        vectors_written=figures.vectors_written,
        percent=percent(step_index, step_count, figures.step_fraction),
        step=step,
        update_time=now,
    )


def resources_message(use: ResourceUse, figures: OperationFigures) -> operation_pb2.ResourceFigures:
    return operation_pb2.ResourceFigures(
        wall_seconds=use.wall_seconds,
        cpu_seconds=use.cpu_seconds,
        peak_memory_bytes=use.peak_memory_bytes,
        documents=figures.documents_done,
        vectors=figures.vectors,
        bytes=figures.bytes,
    )


class OperationEvents:
    def __init__(self, bus: JetStream, producer: str = PRODUCER) -> None:
        self._bus = bus
        self._producer = producer

    async def _publish(
        self, subject: str, payload: Message, order: OperationOrder, event_id: str | None = None
    ) -> None:
        envelope = new_envelope(
            payload,
            producer=self._producer,
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            owner_id=order.owner_id,
            trace_id=order.trace_id,
            causation_id=order.causation_id,
        )
        if event_id is not None:
            envelope.event_id = event_id
        await self._bus.publish(subject, envelope.SerializeToString(), msg_id=envelope.event_id)

    async def step_started(
        self, order: OperationOrder, step: str, step_index: int, step_count: int
    ) -> None:
        payload = operation_events_pb2.StepStarted(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            type=OPERATION_TYPES[order.type],
            step=step,
            step_index=step_index,
            step_count=step_count,
        )
        event_id = subjects.step_event_id(order.operation_id, step, "started")
        await self._publish(subjects.STEP_STARTED, payload, order, event_id)

    async def step_completed(
        self, order: OperationOrder, payload: operation_events_pb2.StepCompleted
    ) -> None:
        event_id = subjects.step_event_id(order.operation_id, payload.step, "completed")
        await self._publish(subjects.step_completed_subject(payload.step), payload, order, event_id)

    async def progress(
        self,
        order: OperationOrder,
        progress: operation_pb2.Progress,
        resources: operation_pb2.ResourceFigures,
    ) -> None:
        payload = operation_events_pb2.OperationProgress(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            progress=progress,
            resources=resources,
        )
        await self._publish(subjects.PROGRESS, payload, order)

    async def completed(
        self, order: OperationOrder, payload: operation_events_pb2.OperationCompleted
    ) -> None:
        event_id = subjects.outcome_event_id(order.operation_id, "completed")
        await self._publish(subjects.OPERATION_COMPLETED, payload, order, event_id)

    async def failed(
        self, order: OperationOrder, payload: operation_events_pb2.OperationFailed
    ) -> None:
        event_id = subjects.outcome_event_id(order.operation_id, "failed")
        await self._publish(subjects.OPERATION_FAILED, payload, order, event_id)

    async def cancelled(
        self, order: OperationOrder, payload: operation_events_pb2.OperationCancelled
    ) -> None:
        event_id = subjects.outcome_event_id(order.operation_id, "cancelled")
        await self._publish(subjects.OPERATION_CANCELLED, payload, order, event_id)

    async def ending(self, order: OperationOrder, outcome: str, payload: bytes) -> None:
        """Announce a recorded outcome event (serialised), whichever it is."""
        if outcome == "COMPLETED":
            await self.completed(order, operation_events_pb2.OperationCompleted.FromString(payload))
        elif outcome == "FAILED":
            await self.failed(order, operation_events_pb2.OperationFailed.FromString(payload))
        else:
            await self.cancelled(order, operation_events_pb2.OperationCancelled.FromString(payload))

    async def usage(self, order: OperationOrder, change: UsageChange) -> None:
        payload = usage_pb2.UsageDelta(
            owner_id=order.owner_id,
            collection_id=order.collection_id,
            operation_id=order.operation_id,
            collections_delta=change.collections,
            vectors_delta=change.stored.vectors,
            bytes_delta=change.stored.bytes,
            documents_delta=change.stored.documents,
            reason=USAGE_REASONS[order.type],
        )
        # One id per operation, whatever its outcome: an operation has exactly
        # one, so a redelivered outcome cannot count its usage twice.
        event_id = subjects.outcome_event_id(order.operation_id, "usage")
        await self._publish(subjects.USAGE_DELTA, payload, order, event_id)

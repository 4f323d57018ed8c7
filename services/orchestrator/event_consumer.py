"""The worker's operation events, applied to the operations they name.

The durable consumer ``orchestrator-events`` reads ``vo.evt.op.>`` and
``vo.evt.progress`` from VO_EVENTS one message at a time across all replicas
(``max_ack_pending=1``), so the events of an operation apply in the order the
indexer published them. Each message becomes one
``OrchestratorRepository.apply`` (a transaction); the consumer acks only
after it committed, so a crash or a shutdown in between redelivers the message
and the idempotent transition makes the repeat harmless.

What happens to a message (see ``bus_outcome``):
- applied, or a no-op (redelivery, a late event for a finished operation): ack;
- for an operation this orchestrator does not know: ack and log (a deleted test
  database's, or garbage: retrying cannot help);
- refused by the state machine (out of order, a second different checkpoint)
  or unreadable: ``Reject``, i.e. a dead letter, with an error log;
- Postgres unreachable: ``Retry`` (redelivered after a delay).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from kit.bus.jetstream import Delivery, Reject, Retry
from kit.bus.subjects import OPERATION_EVENTS_FILTER, PROGRESS
from kit.bus.topology import EVENTS, ConsumerSpec
from kit.db.outage import POSTGRES_UNAVAILABLE
from kit.errors import NotFound
from kit.events import EnvelopeError, parse_envelope, unpack
from kit.logs import get_logger
from orchestrator.adapters.records import ResourceFigures
from orchestrator.adapters.repository import OrchestratorRepository
from orchestrator.domain import step_events
from orchestrator.domain.operations import (
    DomainEvent,
    InvalidTransition,
    OperationStatus,
    Progress,
)
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import envelope_pb2, operation_events_pb2

log = get_logger(__name__)

EVENTS_DURABLE = "orchestrator-events"
Clock = Callable[[], datetime]


def events_consumer(durable: str = EVENTS_DURABLE) -> ConsumerSpec:
    """The consumer's spec. Generous redelivery: a message that runs out of
    deliveries while Postgres is down is a lost step (the reaper then fails the
    operation), so retries span several minutes of outage.

    Replica-safe: every orchestrator replica pulls from this one durable, and
    ``max_ack_pending=1`` makes the server hand out the next event only once the
    last one is settled, whichever replica holds it. A replica's own
    ``concurrency=1`` alone would let two replicas apply an operation's
    consecutive steps at once, and the later one would be refused as out of
    order. The price: a message held by a dead replica (until its ack wait) or
    waiting out a retry delay holds back the events behind it, as it must."""
    return ConsumerSpec(
        EVENTS.name,
        durable,
        (OPERATION_EVENTS_FILTER, PROGRESS),
        max_deliver=10,
        retry_delays_seconds=(1, 5, 15, 30, 60),
        max_ack_pending=1,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def no_outbox(_events: list[DomainEvent]) -> list:
    """The worker's own events announce nothing further."""
    return []


@contextmanager
def bus_outcome(kind: str, operation_id: str) -> Iterator[None]:
    """Turn what applying a message raised into what the bus does with it."""
    try:
        yield
    except NotFound:
        log.info("orchestrator.event_for_unknown_operation", type=kind, operation_id=operation_id)
    except (InvalidTransition, EnvelopeError) as error:
        log.error(
            "orchestrator.event_rejected", type=kind, operation_id=operation_id, error=str(error)
        )
        raise Reject(str(error)) from error
    except POSTGRES_UNAVAILABLE as error:
        log.warning(
            "orchestrator.event_retry", type=kind, operation_id=operation_id, error=str(error)
        )
        raise Retry(f"postgres unavailable: {error}") from error


def progress_from(message: operation_pb2.Progress) -> Progress:
    """The figures of a ``Progress`` message. Its ``step`` is not taken: the
    current step moves only with the step events, in the state machine's order."""
    return Progress(
        documents_total=message.documents_total,
        documents_done=message.documents_done,
        documents_failed=message.documents_failed,
        documents_skipped=message.documents_skipped,
        documents_duplicate=message.documents_duplicate,
        vectors_written=message.vectors_written,
        percent=message.percent,
    )


def step_result(event: operation_events_pb2.StepCompleted) -> dict[str, Any] | None:
    """What a step's result adds to the operation's result: a REINDEX's
    validation figures (every check, measured value and threshold, also when
    it did not pass), which clients read as ``Operation.validation``."""
    if event.WhichOneof("result") == "reindex_validation":
        return {"validation": json_format.MessageToDict(event.reindex_validation.validation)}
    return None


def resources_from(message: operation_pb2.ResourceFigures) -> ResourceFigures:
    return ResourceFigures(
        wall_seconds=message.wall_seconds,
        cpu_seconds=message.cpu_seconds,
        peak_memory_bytes=message.peak_memory_bytes,
        documents=message.documents,
        vectors=message.vectors,
        bytes=message.bytes,
    )


class OperationEventConsumer:
    """The handler of ``orchestrator-events``: one message, one transaction."""

    def __init__(self, repository: OrchestratorRepository, clock: Clock = utc_now) -> None:
        self._repository = repository
        self._clock = clock
        events = operation_events_pb2
        self._handlers: dict[str, Callable[[envelope_pb2.Envelope], Awaitable[None]]] = {
            events.StepStarted.DESCRIPTOR.full_name: self._step_started,
            events.StepCompleted.DESCRIPTOR.full_name: self._step_completed,
            events.OperationProgress.DESCRIPTOR.full_name: self._progress,
            events.OperationCompleted.DESCRIPTOR.full_name: self._completed,
            events.OperationFailed.DESCRIPTOR.full_name: self._failed,
            events.OperationCancelled.DESCRIPTOR.full_name: self._cancelled,
        }

    async def handle(self, delivery: Delivery) -> None:
        try:
            envelope = parse_envelope(delivery.data)
        except EnvelopeError as error:
            log.error("orchestrator.event_unreadable", subject=delivery.subject, error=str(error))
            raise Reject(str(error)) from error
        handler = self._handlers.get(envelope.type)
        if handler is None:
            log.error("orchestrator.event_unexpected", subject=delivery.subject, type=envelope.type)
            raise Reject(f"unexpected event type {envelope.type!r} on {delivery.subject}")
        with bus_outcome(envelope.type, envelope.operation_id):
            await handler(envelope)

    # --- one method per event type --------------------------------------------------

    async def _step_started(self, envelope: envelope_pb2.Envelope) -> None:
        event = unpack(envelope, operation_events_pb2.StepStarted)
        transition = step_events.begin(event.step, self._clock())
        await self._apply(_operation_id(event, envelope), transition, event.step)

    async def _step_completed(self, envelope: envelope_pb2.Envelope) -> None:
        event = unpack(envelope, operation_events_pb2.StepCompleted)
        if event.checkpoint.step and event.checkpoint.step != event.step:
            raise InvalidTransition(
                f"checkpoint of step {event.checkpoint.step!r} sent as step {event.step!r}"
            )
        # Struct → dict: numbers come back as floats, the same bytes always as
        # the same dict, so a redelivered checkpoint compares equal.
        checkpoint = json_format.MessageToDict(event.checkpoint.state)
        figures = progress_from(event.progress) if event.HasField("progress") else None
        transition = step_events.complete(event.step, checkpoint, figures, self._clock())
        await self._apply(
            _operation_id(event, envelope), transition, event.step, result=step_result(event)
        )

    async def _progress(self, envelope: envelope_pb2.Envelope) -> None:
        event = unpack(envelope, operation_events_pb2.OperationProgress)
        figures = progress_from(event.progress) if event.HasField("progress") else None
        await self._repository.apply(
            _operation_id(event, envelope),
            step_events.progress(figures, self._clock()),
            no_outbox,
            resources=resources_from(event.resources) if event.HasField("resources") else None,
        )

    async def _completed(self, envelope: envelope_pb2.Envelope) -> None:
        """The operation completed with its last checkpoint already; this brings
        the final resource figures (kept although the operation has ended)."""
        event = unpack(envelope, operation_events_pb2.OperationCompleted)
        operation_id = _operation_id(event, envelope)
        record = await self._repository.get_operation(operation_id, None)
        status = record.operation.status
        if status is not OperationStatus.COMPLETED:
            # Running: its last StepCompleted is late (being retried) or was lost,
            # and completion only ever comes from that checkpoint. Cancelled or
            # failed: a finished operation is never touched again.
            log.warning(
                "orchestrator.completion_report_ignored",
                operation_id=operation_id,
                status=status.value,
            )
            return
        if event.HasField("resources"):
            await self._repository.record_resources(operation_id, resources_from(event.resources))

    async def _failed(self, envelope: envelope_pb2.Envelope) -> None:
        event = unpack(envelope, operation_events_pb2.OperationFailed)
        operation_id = _operation_id(event, envelope)
        transition = step_events.failed(
            event.error.type, event.error.message, event.error.step, self._clock()
        )
        resources = resources_from(event.resources) if event.HasField("resources") else None
        record, events = await self._repository.apply(
            operation_id, transition, no_outbox, resources=resources
        )
        if events:
            error = record.operation.error
            log.info(
                "orchestrator.operation_failed",
                operation_id=operation_id,
                error_type=error and error.type.value,
                step=error and error.step,
            )

    async def _cancelled(self, envelope: envelope_pb2.Envelope) -> None:
        # The orchestrator ended the operation CANCELLED before it asked the
        # worker to stop; this only confirms the worker has stopped.
        event = unpack(envelope, operation_events_pb2.OperationCancelled)
        log.info(
            "orchestrator.worker_stopped",
            operation_id=_operation_id(event, envelope),
            collection_changed=event.collection_changed,
        )

    async def _apply(
        self,
        operation_id: str,
        transition: step_events.Transition,
        step: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        record, events = await self._repository.apply(
            operation_id, transition, no_outbox, result=result
        )
        if events:
            log.info(
                "orchestrator.step_event_applied",
                operation_id=operation_id,
                step=step,
                status=record.operation.status.value,
                events=[type(event).__name__ for event in events],
            )
        else:
            log.debug("orchestrator.step_event_unchanged", operation_id=operation_id, step=step)


def _operation_id(event: object, envelope: envelope_pb2.Envelope) -> str:
    operation_id = getattr(event, "operation_id", "") or envelope.operation_id
    if not operation_id:
        raise EnvelopeError(f"{envelope.type} without an operation id")
    return operation_id

"""The indexer's side of the operation protocol, for the orchestrator's event
tests: its events built and published exactly as the indexer does (kit subjects,
deterministic message ids, envelopes), and waits on the orchestrator's durable
consumers (conditions polled with a deadline, no sleeps as synchronisation)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.events import new_envelope, parse_envelope
from orchestrator.adapters.records import OperationRecord
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import operation_events_pb2 as events_pb

OWNER = "alice"
Event = tuple[str, Message, str]  # subject, payload, Nats-Msg-Id


# --- the indexer's side: publishing as it does -------------------------------------------


def _type(op: OperationRecord) -> int:
    return operation_pb2.OperationType.Value(f"OPERATION_TYPE_{op.operation.type.value}")


async def send(bus: JetStream, subject: str, payload: Message, msg_id: str) -> int:
    """Publish like the indexer; returns the stream sequence."""
    envelope = new_envelope(
        payload,
        producer="indexer",
        operation_id=payload.operation_id,
        collection_id=payload.collection_id,
        owner_id=OWNER,
    )
    ack = await bus.publish(subject, envelope.SerializeToString(), msg_id=msg_id)
    return ack.seq


def step_started(op: OperationRecord, step: str) -> Event:
    steps = op.operation.steps
    payload = events_pb.StepStarted(
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        type=_type(op),
        step=step,
        step_index=steps.index(step) + 1 if step in steps else 0,
        step_count=len(steps),
    )
    return subjects.STEP_STARTED, payload, subjects.step_event_id(op.id, step, "started")


def step_completed(
    op: OperationRecord, step: str, state: dict[str, Any], percent: float = 0.0, done: int = 0
) -> Event:
    steps = op.operation.steps
    index = steps.index(step) + 1 if step in steps else 0
    checkpoint = operation_pb2.Checkpoint(step=step, step_index=index, step_completed=True)
    checkpoint.state.update(state)
    payload = events_pb.StepCompleted(
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        type=_type(op),
        step=step,
        step_index=index,
        checkpoint=checkpoint,
        progress=operation_pb2.Progress(
            documents_total=3, documents_done=done, percent=percent, step=step
        ),
    )
    return (
        subjects.step_completed_subject(step),
        payload,
        subjects.step_event_id(op.id, step, "completed"),
    )


RESOURCES = operation_pb2.ResourceFigures(
    wall_seconds=2.5,
    cpu_seconds=1.25,
    peak_memory_bytes=1 << 20,
    documents=3,
    vectors=12,
    bytes=4096,
)


def operation_completed(op: OperationRecord) -> Event:
    payload = events_pb.OperationCompleted(
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        type=_type(op),
        resources=RESOURCES,
        document_count=3,
        vector_count=12,
        stored_bytes=4096,
    )
    return subjects.OPERATION_COMPLETED, payload, subjects.outcome_event_id(op.id, "completed")


def operation_failed(op: OperationRecord, error_type: str, message: str, step: str) -> Event:
    payload = events_pb.OperationFailed(
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        type=_type(op),
        error=operation_pb2.OperationError(type=error_type, message=message, step=step),
        resources=RESOURCES,
    )
    return subjects.OPERATION_FAILED, payload, subjects.outcome_event_id(op.id, "failed")


def operation_cancelled(op: OperationRecord) -> Event:
    payload = events_pb.OperationCancelled(
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        type=_type(op),
        collection_changed=False,
        resources=RESOURCES,
    )
    return subjects.OPERATION_CANCELLED, payload, subjects.outcome_event_id(op.id, "cancelled")


def progress_event(op: OperationRecord, step: str = "ingest") -> Event:
    payload = events_pb.OperationProgress(
        operation_id=op.id,
        collection_id=op.operation.collection_id,
        progress=operation_pb2.Progress(
            documents_total=10,
            documents_done=4,
            documents_failed=1,
            documents_skipped=2,
            documents_duplicate=1,
            vectors_written=16,
            percent=40.0,
            step=step,
        ),
        resources=RESOURCES,
    )
    return subjects.PROGRESS, payload, f"{op.id}.progress.{uuid.uuid4().hex}"


def figures(sources: dict[str, int], vectors: int = 12, stored: int = 4096) -> dict[str, Any]:
    return {
        "document_count": sum(sources.values()),
        "vector_count": vectors,
        "stored_bytes": stored,
        "source_document_counts": sources,
    }


def whole_run(op: OperationRecord, finalize: dict[str, Any]) -> list[Event]:
    """Every event of a successful operation, in the indexer's order."""
    events: list[Event] = []
    steps = op.operation.steps
    for i, step in enumerate(steps, 1):
        state = finalize if step == "finalize" else {"step_no": i}
        events.append(step_started(op, step))
        if step == "ingest":
            events.append(progress_event(op))
        events.append(step_completed(op, step, state, percent=100.0 * i / len(steps), done=i))
    events.append(operation_completed(op))
    return events


async def send_all(bus: JetStream, events: list[Event], again: str = "") -> int:
    """Publish in order; ``again`` re-sends under new message ids (a redelivery the
    server cannot dedup, as after a worker restart past the duplicate window)."""
    seq = 0
    for subject, payload, msg_id in events:
        seq = await send(bus, subject, payload, msg_id + again)
    return seq


# --- waiting for the consumers (conditions polled with a deadline) -----------------------


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def handled(bus: JetStream, stream: str, durable: str, seq: int) -> None:
    """Wait until ``durable`` has settled (acked or dead-lettered) every message up
    to stream sequence ``seq``."""

    async def check() -> bool:
        try:
            info = await bus.js.consumer_info(stream, durable)
        except Exception:  # noqa: BLE001 - not created yet by the starting loop
            return False
        return info.delivered.stream_seq >= seq and info.num_ack_pending == 0

    await eventually(check, f"{durable} to settle {stream} up to {seq}")


async def dead_letters(bus: JetStream, durable: str, operation_id: str | None = None) -> int:
    """Dead letters of ``durable``; of one operation's events when ``operation_id``
    is given (a fresh consumer replays VO_EVENTS from the start, so it also meets,
    and dead-letters, what earlier tests published on purpose)."""
    subject = f"vo.dead.VO_EVENTS.{durable}"
    info = await bus.js.stream_info("VO_DEAD", subjects_filter=subject)
    total = (info.state.subjects or {}).get(subject, 0)
    if operation_id is None or total == 0:
        return total
    sub = await bus.js.pull_subscribe(subject, durable=None, stream="VO_DEAD")
    try:
        messages = await sub.fetch(total, timeout=2)
    finally:
        await sub.unsubscribe()
    return sum(parse_envelope(m.data).operation_id == operation_id for m in messages)


async def dead_letters_settled(bus: JetStream, durable: str) -> None:
    """Wait until the dead-letter consumer ``durable`` has settled all of VO_DEAD."""
    last = (await bus.js.stream_info("VO_DEAD")).state.last_seq
    await handled(bus, "VO_DEAD", durable, last)

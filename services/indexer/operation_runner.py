"""Runs an operation's steps in order and reports each, as the operation protocol
in protos/README.md says.

For each step: if its checkpoint is recorded (a command delivered again after a
crash), its ``StepCompleted`` is announced again verbatim and the run goes on;
else ``StepStarted``, the work, the checkpoint recorded, ``StepCompleted``.
Progress goes out at most every ``progress_interval_seconds`` and at every step
end, the last one before the last ``StepCompleted`` (which ends the operation
in the orchestrator, after which progress is ignored). Then
``OperationCompleted``. Every outcome (completed, failed or cancelled) is
recorded in the journal with its event before it is announced, so a command
delivered again afterwards announces that outcome again instead of running
steps; and it is followed by a ``UsageDelta`` when it changed what is stored or
the owner's collections (``usage_change``): a half-done APPEND wrote points all
the same. A command of a cancelled operation is dropped, but a run an earlier
delivery left without an outcome (the indexer died) still reports what it stored.

A step that fails for good ends the operation with ``OperationFailed``; a
transient error raises ``Retry`` so the command comes back later. A cancel is
obeyed between steps and, inside ``ingest``, between batches: the run answers
``OperationCancelled`` and announces no step after it noticed. A step may also
end the operation after it is announced (``verdict``: a REINDEX validation that
did not pass), and an ending operation winds up what it leaves of no use
(``wind_up``: a REINDEX's staging collection before its switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from indexer.adapters.operation_journal import (
    OperationJournal,
    Outcome,
    RecordedStep,
    RunRecord,
)
from indexer.cancellations import Cancellations
from indexer.domain.operation_plan import CollectionFigures, OperationFigures, usage_change
from indexer.ingest import IngestCancelled
from indexer.metrics import CHECKPOINTS
from indexer.operation_events import (
    OPERATION_TYPES,
    OperationEvents,
    progress_message,
    resources_message,
)
from indexer.operation_failures import failure_of, is_transient
from indexer.operations import runs, steps_for, verdict, wind_up
from indexer.operations.base import (
    OperationOrder,
    OperationServices,
    StepCancelled,
    StepContext,
    StepOutput,
)
from indexer.resource_meter import ResourceMeter
from kit.bus.jetstream import Retry
from kit.logs import get_logger
from kit.operation_protocol import ErrorType, OperationType, changes_collection
from kit.sanitise import sanitise
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import operation_events_pb2 as events_pb2

log = get_logger(__name__)

Keepalive = Callable[[], Awaitable[None]]

# The StepCompleted ``result`` field that carries each result message.
_RESULT_FIELDS = {
    events_pb2.IngestResult.DESCRIPTOR.full_name: "ingest",
    events_pb2.RemoveSourceResult.DESCRIPTOR.full_name: "remove_source",
    events_pb2.DeleteResult.DESCRIPTOR.full_name: "delete",
    events_pb2.ReindexPreflightResult.DESCRIPTOR.full_name: "reindex_preflight",
    events_pb2.ReindexStagingResult.DESCRIPTOR.full_name: "reindex_staging",
    events_pb2.ReindexReprocessingResult.DESCRIPTOR.full_name: "reindex_reprocessing",
    events_pb2.ReindexValidationResult.DESCRIPTOR.full_name: "reindex_validation",
    events_pb2.ReindexSwitchResult.DESCRIPTOR.full_name: "reindex_switch",
    events_pb2.ReindexCleanupResult.DESCRIPTOR.full_name: "reindex_cleanup",
}


class OperationRunner:
    def __init__(
        self,
        services: OperationServices,
        journal: OperationJournal,
        events: OperationEvents,
        cancellations: Cancellations,
        *,
        progress_interval_seconds: float,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        self.services = services
        self.journal = journal
        self.events = events
        self._cancellations = cancellations
        self.progress_interval = progress_interval_seconds
        self._heartbeat_seconds = heartbeat_seconds

    async def run(
        self,
        order: OperationOrder,
        keepalive: Keepalive | None = None,
        keepalive_seconds: float | None = None,
    ) -> None:
        """Run (or resume) the operation until its outcome is announced. Raises
        ``Retry`` on a transient failure. ``keepalive`` (the command's
        ``in_progress``) is called every ``keepalive_seconds`` meanwhile."""
        operation_id = order.operation_id
        cancel = self._cancellations.watch(operation_id)
        try:
            earlier = await self.journal.run(operation_id)
            if earlier is not None and earlier.ended:
                if earlier.finished:
                    log.info("operation.already_ended", operation_id=operation_id)
                else:
                    await self._finish_ending(order, earlier)
                return
            if await self._cancellations.is_cancelled(operation_id):
                log.info("operation.dropped_cancelled", operation_id=operation_id)
                await wind_up(self.services, order, None, Outcome.CANCELLED)
                if earlier is not None:
                    await self._end_interrupted_run(order)
                return
            if not runs(order.type):
                await self.refuse(order, f"{order.type} is not supported by this indexer yet")
                return
            order = await self._keep_collection_copy(order)
            counts = await self.services.repository.counts(order.collection_id)
            run = await self.journal.begin_run(
                operation_id, order.collection_id, order.type, CollectionFigures(*counts)
            )
            recorded = await self.journal.completed_steps(operation_id)
            execution = _Execution(self, order, run.before, recorded, cancel)
            beats = asyncio.create_task(
                self._beat(execution, keepalive, keepalive_seconds or self._heartbeat_seconds)
            )
            try:
                await execution.execute()
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
        finally:
            self._cancellations.forget(operation_id)

    async def refuse(self, order: OperationOrder, message: str) -> None:
        """Fail an operation this indexer cannot run, without touching anything."""
        payload = events_pb2.OperationFailed(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            type=OPERATION_TYPES[order.type],
            error=operation_pb2.OperationError(
                type=ErrorType.HANDLER_ERROR, message=sanitise(message)
            ),
        )
        log.warning("operation.refused", operation_id=order.operation_id, why=message)
        await self.events.failed(order, payload)

    async def figures(self, order: OperationOrder) -> CollectionFigures:
        """The collection's figures now, from the repository."""
        return CollectionFigures(*await self.services.repository.counts(order.collection_id))

    async def end(
        self,
        order: OperationOrder,
        outcome: Outcome,
        event: Message | None,
        after: CollectionFigures | None = None,
    ) -> None:
        """Record how the run ended (with ``event``, the outcome to announce, and
        ``after``, the collection's figures now: measured here unless the caller
        measured them already), then announce it. Recorded first, so a
        delivery after a crash announces this same ending and runs no step again:
        the operation's failure announced, then its steps run again, would build
        what nobody winds up any more (a REINDEX's staging collection)."""
        if after is None:
            after = await self.figures(order)
        ending = event.SerializeToString() if event is not None else None
        run = await self.journal.record_ending(order.operation_id, outcome, ending, after)
        await self._finish_ending(order, run)

    async def _finish_ending(self, order: OperationOrder, run: RunRecord) -> None:
        """Announce a recorded ending (the event verbatim, then the usage it
        changed) and mark it done. Each publish has a fixed message id, so one
        made again after a crash counts once."""
        assert run.outcome is not None and run.after is not None
        if run.ending is not None:
            await self.events.ending(order, run.outcome, run.ending)
        change = usage_change(order.type, run.outcome is Outcome.COMPLETED, run.before, run.after)
        if not change.is_zero:
            await self.events.usage(order, change)
        await self.journal.finish_run(order.operation_id)

    async def _end_interrupted_run(self, order: OperationOrder) -> None:
        """A run an earlier delivery began and left without an outcome (the
        indexer died), cancelled since: what it stored, and the collection an
        INDEX made, still count. No outcome event: the cancel ended it."""
        await self.end(order, Outcome.CANCELLED, None)

    async def _keep_collection_copy(self, order: OperationOrder) -> OperationOrder:
        """Store the command's snapshot of the collection (generation-fenced) and
        take the staging collection the indexer has recorded for it."""
        if order.type is OperationType.DELETE:
            return order  # its copy is being dropped: a redelivery must not bring it back
        repository = self.services.repository
        await repository.upsert_collection(order.collection)
        stored = await repository.get_collection(order.collection_id)
        if stored.staging_collection and stored.generation == order.collection.generation:
            collection = replace(order.collection, staging_collection=stored.staging_collection)
            order = replace(order, collection=collection)
        return order

    async def _beat(self, execution: _Execution, keepalive: Keepalive | None, every: float) -> None:
        """Keep the command's ack wait from running out, and the orchestrator's
        reaper from thinking the operation stuck, while a long step runs."""
        while True:
            await asyncio.sleep(every)
            try:
                if keepalive is not None:
                    await keepalive()
                await execution.heartbeat(every)
            except Exception as error:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("operation.heartbeat_failed", error=str(error))


class _Execution:
    """One delivery's run of an operation: its figures, meter and events."""

    def __init__(
        self,
        runner: OperationRunner,
        order: OperationOrder,
        before: CollectionFigures,
        recorded: Mapping[str, RecordedStep],
        cancel: asyncio.Event,
    ) -> None:
        self._runner = runner
        self._events = runner.events
        self._order = order
        self._before = before
        self._recorded = recorded
        self._cancel = cancel
        self._steps = steps_for(order.type)
        self._meter = ResourceMeter()
        self._figures = OperationFigures()
        self._checkpoints: dict[str, Mapping[str, Any]] = {}
        self._changed = False
        self._step, self._index = self._steps[0][0], 1
        self._last_progress = float("-inf")
        self._ended = False

    async def execute(self) -> None:
        order = self._order
        for index, (name, step) in enumerate(self._steps, 1):
            self._step, self._index = name, index
            self._figures.step_fraction = 0.0
            done = self._recorded.get(name)
            if done is None:
                if self._cancel.is_set():
                    return await self._cancelled()
                await self._events.step_started(order, name, index, len(self._steps))
                self._changed = self._changed or changes_collection(order.type, name)
                try:
                    output = await step(self._context())
                except (StepCancelled, IngestCancelled):
                    return await self._cancelled()
                except Exception as error:
                    if is_transient(error):
                        raise Retry(f"step {name}: {type(error).__name__}: {error}") from error
                    return await self._failed(error)
                if self._cancel.is_set():
                    return await self._cancelled()  # noticed: announce no more steps
                self._figures.step_fraction = 1.0
                done = await self._record(name, index, output)
            else:
                self._restore(done)
                self._changed = self._changed or changes_collection(order.type, name)
            self._checkpoints[name] = done.checkpoint
            self._figures.step_fraction = 1.0
            await self._publish_progress()
            await self._events.step_completed(
                order, events_pb2.StepCompleted.FromString(done.step_completed)
            )
            # Announced first, so what the step measured is kept even when it
            # ends the operation (a REINDEX validation that did not pass).
            failure = verdict(order.type, name, done.checkpoint)
            if failure is not None:
                return await self._failed(failure)
        await self._completed()

    def _context(self) -> StepContext:
        return StepContext(
            order=self._order,
            services=self._runner.services,
            figures=self._figures,
            report=self.report,
            cancel=self._cancel,
            before=self._before,
            checkpoints=dict(self._checkpoints),
        )

    # --- progress ---------------------------------------------------------------------

    async def report(self) -> None:
        """A step's figures moved: publish them, at most every progress interval."""
        self._meter.sample()
        if time.monotonic() - self._last_progress >= self._runner.progress_interval:
            await self._publish_progress()

    async def heartbeat(self, every: float) -> None:
        if not self._ended and time.monotonic() - self._last_progress >= every:
            await self._publish_progress()

    async def _publish_progress(self) -> None:
        self._last_progress = time.monotonic()
        await self._events.progress(self._order, self._progress(), self._resources())

    def _progress(self) -> operation_pb2.Progress:
        return progress_message(self._figures, self._step, self._index, len(self._steps))

    def _resources(self) -> operation_pb2.ResourceFigures:
        return resources_message(self._meter.use(), self._figures)

    # --- steps ------------------------------------------------------------------------

    async def _record(self, name: str, index: int, output: StepOutput) -> RecordedStep:
        state = struct_pb2.Struct()
        state.update(output.checkpoint)
        now = Timestamp()
        now.GetCurrentTime()
        order = self._order
        payload = events_pb2.StepCompleted(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            type=OPERATION_TYPES[order.type],
            step=name,
            step_index=index,
            checkpoint=operation_pb2.Checkpoint(
                step=name, step_index=index, step_completed=True, state=state, record_time=now
            ),
            progress=self._progress(),
        )
        if output.result is not None:
            _set_result(payload, output.result)
        CHECKPOINTS.labels(type=str(order.type), step=name).inc()
        return await self._runner.journal.record_step(
            order.operation_id, name, index, output.checkpoint, payload.SerializeToString()
        )

    def _restore(self, done: RecordedStep) -> None:
        """Take the figures a recorded step announced, so later steps go on from them."""
        payload = events_pb2.StepCompleted.FromString(done.step_completed)
        shown, progress = self._figures, payload.progress
        shown.documents_total = progress.documents_total
        shown.documents_done = progress.documents_done
        shown.documents_failed = progress.documents_failed
        shown.documents_skipped = progress.documents_skipped
        shown.documents_duplicate = progress.documents_duplicate
        shown.vectors_written = progress.vectors_written
        kind = payload.WhichOneof("result")
        if kind == "ingest":
            shown.vectors, shown.bytes = (
                payload.ingest.vectors_written,
                payload.ingest.bytes_written,
            )
        elif kind == "remove_source":
            removed = payload.remove_source
            shown.vectors, shown.bytes = removed.vectors_removed, removed.bytes_freed
        elif kind == "delete":
            shown.vectors, shown.bytes = self._before.vectors, self._before.bytes
        elif kind == "reindex_reprocessing":
            staged = payload.reindex_reprocessing
            shown.vectors, shown.bytes = staged.vectors_written, staged.bytes_written

    # --- outcomes ---------------------------------------------------------------------

    async def _completed(self) -> None:
        self._ended = True
        order = self._order
        after = await self._runner.figures(order)
        payload = events_pb2.OperationCompleted(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            type=OPERATION_TYPES[order.type],
            progress=self._progress(),
            resources=self._resources(),
            document_count=after.documents,
            vector_count=after.vectors,
            stored_bytes=after.bytes,
        )
        await self._runner.end(order, Outcome.COMPLETED, payload, after)
        log.info("operation.completed", operation_id=order.operation_id, type=order.type)

    async def _failed(self, error: Exception) -> None:
        self._ended = True
        order = self._order
        failure = failure_of(error)
        log.warning(
            "operation.failed",
            operation_id=order.operation_id,
            step=self._step,
            error_type=failure.type,
            error=failure.message,
            exc_info=failure.type is ErrorType.HANDLER_ERROR,
        )
        # Before the event, which says whether the staging collection is gone.
        staging_deleted = await wind_up(self._runner.services, order, self._step, Outcome.FAILED)
        payload = events_pb2.OperationFailed(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            type=OPERATION_TYPES[order.type],
            error=operation_pb2.OperationError(
                type=failure.type,
                message=failure.message,
                step=self._step,
                retryable=failure.retryable,
            ),
            progress=self._progress(),
            resources=self._resources(),
            collection_changed=self._changed,
            staging_deleted=staging_deleted,
        )
        await self._runner.end(order, Outcome.FAILED, payload)

    async def _cancelled(self) -> None:
        self._ended = True
        order = self._order
        await wind_up(self._runner.services, order, self._step, Outcome.CANCELLED)
        payload = events_pb2.OperationCancelled(
            operation_id=order.operation_id,
            collection_id=order.collection_id,
            type=OPERATION_TYPES[order.type],
            collection_changed=self._changed,
            progress=self._progress(),
            resources=self._resources(),
        )
        await self._runner.end(order, Outcome.CANCELLED, payload)
        log.info("operation.cancelled", operation_id=order.operation_id, step=self._step)


def _set_result(payload: events_pb2.StepCompleted, result: Message) -> None:
    field = _RESULT_FIELDS[result.DESCRIPTOR.full_name]
    getattr(payload, field).CopyFrom(result)

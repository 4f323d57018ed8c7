"""Operations as a pure state machine.

An ``Operation`` is an immutable value: every method returns a new one plus the
domain events it produced, and never reads the clock (callers pass ``now``). The
application layer loads a row, calls one method, and persists the result and the
events (outbox) in one transaction.

Step events arrive over JetStream at least once and not always in order, so the
methods are idempotent: a repeated event returns the same operation and no
events. A finished operation is never resurrected: anything that arrives after
it ended is ignored, except ``cancel``, which a client asked for and must hear
about (``OPERATION_NOT_CANCELLABLE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from kit.errors import FailedPrecondition
from kit.operation_protocol import STEPS, ErrorType, OperationType, changes_collection
from kit.sanitise import sanitise


class OperationStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OperationStatus.COMPLETED, OperationStatus.FAILED, OperationStatus.CANCELLED}
)


class CollectionStatus(StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    PROCESSING = "PROCESSING"
    DEGRADED = "DEGRADED"
    PARTIALLY_READY = "PARTIALLY_READY"
    ERROR = "ERROR"
    DELETING = "DELETING"


REINDEX_SWITCH = "switch"
REINDEX_VALIDATION = "validation"


class InvalidTransition(ValueError):
    """An event the state machine cannot accept (out-of-order step, unknown step,
    conflicting checkpoint). Not a client error: the caller logs it and
    dead-letters the event; if it escapes to gRPC it is INTERNAL, as it should be."""


class CheckpointConflict(InvalidTransition):
    """The same step completed twice with different checkpoint data."""


@dataclass(frozen=True)
class Progress:
    documents_total: int = 0
    documents_done: int = 0
    documents_failed: int = 0
    documents_skipped: int = 0
    documents_duplicate: int = 0
    vectors_written: int = 0
    percent: float = 0.0


@dataclass(frozen=True)
class OperationError:
    type: ErrorType
    message: str  # always sanitised
    step: str | None = None


# --- domain events -----------------------------------------------------------


@dataclass(frozen=True)
class OperationStarted:
    operation_id: str
    collection_id: str
    type: OperationType
    at: datetime


@dataclass(frozen=True)
class StepStarted:
    operation_id: str
    collection_id: str
    step: str
    at: datetime


@dataclass(frozen=True)
class StepCompleted:
    operation_id: str
    collection_id: str
    step: str
    checkpoint: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class OperationCompleted:
    operation_id: str
    collection_id: str
    type: OperationType
    at: datetime


@dataclass(frozen=True)
class OperationFailed:
    operation_id: str
    collection_id: str
    type: OperationType
    error: OperationError
    at: datetime


@dataclass(frozen=True)
class OperationCancelled:
    operation_id: str
    collection_id: str
    type: OperationType
    step: str | None
    changed_anything: bool
    at: datetime


DomainEvent = (
    OperationStarted
    | StepStarted
    | StepCompleted
    | OperationCompleted
    | OperationFailed
    | OperationCancelled
)
Result = tuple["Operation", list[DomainEvent]]


# --- the aggregate -------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation's state. ``checkpoints`` maps each completed step to its
    checkpoint data, in completion order (which is step order)."""

    id: str
    collection_id: str
    type: OperationType
    created_at: datetime
    status: OperationStatus = OperationStatus.PENDING
    current_step: str | None = None
    checkpoints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    error: OperationError | None = None
    # The collection's status when the operation was accepted: where a cancel
    # that changed nothing puts it back. None for INDEX (the collection is new).
    collection_status_before: CollectionStatus | None = None
    changed_anything: bool = False
    started_at: datetime | None = None
    updated_at: datetime | None = None
    ended_at: datetime | None = None

    # -- queries --

    @property
    def steps(self) -> tuple[str, ...]:
        return STEPS[self.type]

    @property
    def finished(self) -> bool:
        return self.status.terminal

    @property
    def completed_steps(self) -> tuple[str, ...]:
        return tuple(step for step in self.steps if step in self.checkpoints)

    def resume_step(self) -> str | None:
        """The step to (re)run after a restart: the first one not completed.
        None when every step is done or the operation has finished."""
        if self.finished:
            return None
        for step in self.steps:
            if step not in self.checkpoints:
                return step
        return None

    def checkpoint(self, step: str) -> Mapping[str, Any] | None:
        return self.checkpoints.get(step)

    @property
    def switched(self) -> bool:
        """True once a REINDEX's switch committed: the live collection changed."""
        return self.type is OperationType.REINDEX and REINDEX_SWITCH in self.checkpoints

    # -- transitions --

    def start(self, now: datetime) -> Result:
        """PENDING → PROCESSING. Idempotent; ignored once finished."""
        if self.status is not OperationStatus.PENDING:
            return self, []
        started = replace(self, status=OperationStatus.PROCESSING, started_at=now, updated_at=now)
        return started, [OperationStarted(self.id, self.collection_id, self.type, now)]

    def begin_step(self, step: str, now: datetime) -> Result:
        """Record that ``step`` started. A redelivered start of the current or an
        already completed step is a no-op; skipping ahead is an error. Starts a
        PENDING operation (the worker's first event is the proof it runs)."""
        self._require_known(step)
        if self.finished or step in self.checkpoints or step == self.current_step:
            return self, []
        self._require_next(step)
        op, events = self.start(now)
        op = replace(
            op,
            current_step=step,
            changed_anything=op.changed_anything or self._changes_on_begin(step),
            updated_at=now,
        )
        return op, [*events, StepStarted(self.id, self.collection_id, step, now)]

    def complete_step(self, step: str, checkpoint: Mapping[str, Any], now: datetime) -> Result:
        """Record ``step`` as done with its checkpoint data. Completing the last
        step completes the operation. The StepStarted event may be lost or come
        late, so completing the next step without a begin is accepted."""
        self._require_known(step)
        if self.finished:
            return self, []  # never resurrect; nothing late can matter any more
        data = dict(checkpoint)
        if step in self.checkpoints:
            if dict(self.checkpoints[step]) != data:
                # Two different results for one step: a bug or two workers on one
                # operation. Refuse rather than pick one silently.
                raise CheckpointConflict(
                    f"operation {self.id}: step {step!r} already completed with other data"
                )
            return self, []  # redelivery
        self._require_next(step)
        op, events = self.begin_step(step, now)
        op = replace(
            op,
            checkpoints={**op.checkpoints, step: data},
            changed_anything=op.changed_anything or self._changes_on_complete(step),
            updated_at=now,
        )
        events.append(StepCompleted(self.id, self.collection_id, step, data, now))
        if len(op.checkpoints) == len(self.steps):
            op = replace(
                op,
                status=OperationStatus.COMPLETED,
                current_step=None,
                progress=replace(op.progress, percent=100.0),
                ended_at=now,
            )
            events.append(OperationCompleted(self.id, self.collection_id, self.type, now))
        return op, events

    def fail(
        self, error_type: ErrorType | str, message: str, now: datetime, step: str | None = None
    ) -> Result:
        """End FAILED with a sanitised message. Ignored once finished: a late
        failure report must not overwrite a completion or a cancel."""
        if step is not None:
            self._require_known(step)
        if self.finished:
            return self, []
        # The step it failed at is the last one begun (the design wants the
        # checkpoint it failed at on record); None if it never started.
        error = OperationError(ErrorType(error_type), sanitise(message), step or self.current_step)
        op = replace(self, status=OperationStatus.FAILED, error=error, updated_at=now, ended_at=now)
        return op, [OperationFailed(self.id, self.collection_id, self.type, error, now)]

    def cancel(self, now: datetime) -> Result:
        """End CANCELLED on a client's request. A repeated cancel is a no-op; a
        COMPLETED or FAILED operation, or a REINDEX past its switch (the new
        collection already serves), refuses with OPERATION_NOT_CANCELLABLE."""
        if self.status is OperationStatus.CANCELLED:
            return self, []
        if self.finished or self.switched:
            why = "it has finished" if self.finished else "its switch has completed"
            raise FailedPrecondition(
                f"operation {self.id} cannot be cancelled: {why}",
                reason="OPERATION_NOT_CANCELLABLE",
                metadata={"operation_id": self.id, "status": self.status.value},
            )
        step = self.current_step
        error = OperationError(ErrorType.CANCELLED, "cancelled on request", step)
        op = replace(
            self,
            status=OperationStatus.CANCELLED,
            error=error,
            updated_at=now,
            ended_at=now,
        )
        event = OperationCancelled(
            self.id, self.collection_id, self.type, step, self.changed_anything, now
        )
        return op, [event]

    def record_progress(self, progress: Progress, now: datetime | None = None) -> Result:
        """Store the latest figures. Ignored once finished (a late progress
        message must not move a completed operation's figures back)."""
        if self.finished:
            return self, []
        percent = min(max(progress.percent, 0.0), 100.0)
        return replace(
            self, progress=replace(progress, percent=percent), updated_at=now or self.updated_at
        ), []

    # -- helpers --

    def _require_known(self, step: str) -> None:
        if step not in self.steps:
            raise InvalidTransition(f"{self.type.value} has no step {step!r}")

    def _require_next(self, step: str) -> None:
        expected = self.resume_step()
        if step != expected:
            raise InvalidTransition(
                f"operation {self.id}: step {step!r} out of order (next is {expected!r})"
            )

    def _changes_on_begin(self, step: str) -> bool:
        return changes_collection(self.type, step)

    def _changes_on_complete(self, step: str) -> bool:
        return self.type is OperationType.REINDEX and step == REINDEX_SWITCH

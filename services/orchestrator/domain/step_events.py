"""What the worker reports, as transitions of an ``Operation``.

The event consumer turns each message (step started/completed, progress, a
failure, a dead letter) into plain values and asks here for the transition the
repository runs under the operation's row lock. Everything is pure: no clock
(callers pass ``now``), no protobuf, no I/O.

Redelivery is the normal case on an at-least-once bus, so every transition is a
no-op when it has nothing new to say: a step already recorded with the same
checkpoint, a late report for a finished operation, a heartbeat the reaper no
longer needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .operations import (
    REINDEX_SWITCH,
    DomainEvent,
    ErrorType,
    InvalidTransition,
    Operation,
    OperationCancelled,
    OperationFailed,
    OperationStatus,
    OperationType,
    Progress,
    Result,
    StepCompleted,
)

Transition = Callable[[Operation], Result]

FINALIZE = "finalize"
# Operations whose finalize checkpoint reports the collection's figures after
# them. A DELETE's finalize removes the collection row instead; a REINDEX ends
# at cleanup, and its counts are those of the collection it switched to.
REPORTS_FIGURES = frozenset(
    {OperationType.INDEX, OperationType.APPEND, OperationType.REMOVE_SOURCE}
)
FIGURE_KEYS = ("document_count", "vector_count", "stored_bytes")
SOURCE_COUNTS_KEY = "source_document_counts"
# A REINDEX's staging checkpoint names the staging collection it created.
STAGING = "staging"
STAGING_NAME_KEY = "staging_collection"
_MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class CollectionFigures:
    """A collection's totals after an operation, from its finalize checkpoint."""

    document_count: int
    vector_count: int
    stored_bytes: int
    source_document_counts: Mapping[str, int] = field(default_factory=dict)


# --- the worker's step events ------------------------------------------------------


def begin(step: str, now: datetime) -> Transition:
    """``StepStarted``: the step is under way (also the worker's heartbeat)."""
    return lambda op: op.begin_step(step, now)


def complete(
    step: str, checkpoint: Mapping[str, Any], progress: Progress | None, now: datetime
) -> Transition:
    """``StepCompleted``: record the checkpoint and the progress after the step
    (None: the event carried none, the figures stay).

    A finalize that should report the collection's figures and does not is
    refused (``InvalidTransition``) before anything changes: completing without
    them would show a client COMPLETED with stale counts. A redelivery (the same
    checkpoint again) leaves the progress alone, so it changes nothing at all.
    """

    def transition(op: Operation) -> Result:
        if op.finished or step in op.checkpoints:
            return op.complete_step(step, checkpoint, now)  # ignored, repeated or conflicting
        if step == FINALIZE and op.type in REPORTS_FIGURES:
            finalize_figures(checkpoint)
        if op.type is OperationType.REINDEX:
            _check_reindex_step(step, checkpoint)
        with_progress, _ = op.record_progress(progress or op.progress, now)
        return with_progress.complete_step(step, checkpoint, now)

    return transition


def progress(figures: Progress | None, now: datetime) -> Transition:
    """``OperationProgress``: the latest figures (None: a bare heartbeat).
    Refreshes ``updated_at`` even when nothing moved: it proves the worker is
    alive, which is what the reaper asks."""
    return lambda op: op.record_progress(figures or op.progress, now)


def error_type_of(raw: str) -> ErrorType:
    """The reported error type; one this orchestrator does not know (a newer
    worker) counts as the step having raised."""
    try:
        return ErrorType(raw)
    except ValueError:
        return ErrorType.HANDLER_ERROR


def failed(error_type: str, message: str, step: str, now: datetime) -> Transition:
    """``OperationFailed`` from the worker. The message is sanitised by ``fail``.
    A step name the operation does not have is dropped rather than refused: the
    failure itself must not be lost over a detail."""

    def transition(op: Operation) -> Result:
        known_step = step if step in op.steps else None
        text = message or "the worker reported a failure without a message"
        return op.fail(error_type_of(error_type), text, now, step=known_step)

    return transition


# --- failures decided by the orchestrator --------------------------------------------


def reap(cutoff: datetime, now: datetime) -> Transition:
    """Fail an operation nothing was heard of since ``cutoff`` as STUCK.

    Checked again under the row lock: an event that arrived between the
    reaper's scan and this transition is a heartbeat, and the operation lives.
    """

    def transition(op: Operation) -> Result:
        last_heard = op.updated_at or op.created_at
        if op.finished or last_heard >= cutoff:
            return op, []
        silent = int((now - last_heard).total_seconds())
        if op.status is OperationStatus.PENDING:
            # The outbox guarantees the command was published, so no worker took it.
            message = f"no worker picked the operation up for {silent} s"
        else:
            message = f"no progress from the worker for {silent} s"
        return op.fail(ErrorType.STUCK, message, now)

    return transition


def dead_letter_message(stream: str, consumer: str, what: str, deliveries: int, reason: str) -> str:
    """The (to be sanitised) failure message for a message given up on."""
    text = f"{consumer} on {stream} gave up on {what or 'a message'} after {deliveries} deliveries"
    reason = " ".join(reason.split())
    if reason:
        cut = reason[:_MAX_REASON_CHARS] + ("…" if len(reason) > _MAX_REASON_CHARS else "")
        text += f": {cut}"
    return text


def retries_exhausted(message: str, now: datetime) -> Transition:
    """A message of this operation exhausted its deliveries (a dead letter)."""
    return lambda op: op.fail(ErrorType.RETRIES_EXHAUSTED, message, now)


# --- the finalize checkpoint -----------------------------------------------------------


def finalize_figures(checkpoint: Mapping[str, Any]) -> CollectionFigures:
    """Read the collection's figures from a finalize checkpoint.

    Numbers travel in a protobuf ``Struct``, so they arrive as floats; each must
    be a whole number >= 0. Raises ``InvalidTransition`` naming what is wrong.
    """
    totals = [_count(key, checkpoint.get(key)) for key in FIGURE_KEYS]
    per_source = checkpoint.get(SOURCE_COUNTS_KEY)
    if not isinstance(per_source, Mapping):
        raise InvalidTransition(f"finalize checkpoint lacks {SOURCE_COUNTS_KEY!r} (a map)")
    counts = {
        str(source): _count(f"{SOURCE_COUNTS_KEY}.{source}", value)
        for source, value in per_source.items()
    }
    return CollectionFigures(*totals, source_document_counts=counts)


def figures_to_record(op: Operation, events: Sequence[DomainEvent]) -> CollectionFigures | None:
    """The figures to write with this transition: those of a finalize step it
    just completed, for an operation type that reports them; else None.

    A finalize checkpoint without figures yields None rather than an error: the
    worker's events are checked on the way in (``complete``); other callers of
    the repository may complete steps with checkpoints of their own.
    """
    if op.type not in REPORTS_FIGURES:
        return None
    if not any(isinstance(e, StepCompleted) and e.step == FINALIZE for e in events):
        return None
    checkpoint = op.checkpoints[FINALIZE]
    if not all(key in checkpoint for key in (*FIGURE_KEYS, SOURCE_COUNTS_KEY)):
        return None
    return finalize_figures(checkpoint)


# --- the staging collection of a REINDEX -------------------------------------------------


@dataclass(frozen=True)
class StagingChange:
    """What a transition does to the collection's recorded staging collection:
    record ``name``, or clear it (None)."""

    name: str | None


def staging_change(op: Operation, events: Sequence[DomainEvent]) -> StagingChange | None:
    """The staging bookkeeping of this transition, None when it has none.

    The staging step completed: record its collection (Postgres references it,
    so cleanup keeps it, and CompleteReindex can check it). The REINDEX failed
    or was cancelled: clear it; the indexer drops that collection at once. The
    switch clears it in its own transaction (the staging collection is live).
    """
    if op.type is not OperationType.REINDEX:
        return None
    for event in events:
        if isinstance(event, OperationFailed | OperationCancelled):
            return StagingChange(None)
    for event in events:
        if isinstance(event, StepCompleted) and event.step == STAGING:
            return StagingChange(staging_name(event.checkpoint))
    return None


def staging_name(checkpoint: Mapping[str, Any]) -> str:
    name = checkpoint.get(STAGING_NAME_KEY)
    if not isinstance(name, str) or not name.strip():
        raise InvalidTransition(f"staging checkpoint lacks {STAGING_NAME_KEY!r} (a name)")
    return name


def _check_reindex_step(step: str, checkpoint: Mapping[str, Any]) -> None:
    """Refuse, before anything changes, a REINDEX step event the orchestrator
    cannot take from the bus: a staging checkpoint without its collection, and
    a first report of the switch, which only the CompleteReindex transaction
    records (the worker's later event must repeat that checkpoint)."""
    if step == STAGING:
        staging_name(checkpoint)
    if step == REINDEX_SWITCH:
        raise InvalidTransition("the switch is recorded by CompleteReindex, not by a step event")


def _count(name: str, value: Any) -> int:
    if value is None:
        raise InvalidTransition(f"finalize checkpoint lacks {name!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTransition(f"finalize checkpoint {name!r} is not a number: {value!r}")
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise InvalidTransition(f"finalize checkpoint {name!r} is not a count: {value!r}")
    return int(value)

"""The worker's reports as operation transitions: checkpoints with progress,
redelivery that changes nothing, the finalize figures, failure reports, the
reaper's STUCK decision and the dead-letter message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain import step_events
from orchestrator.domain.operations import (
    CheckpointConflict,
    ErrorType,
    InvalidTransition,
    Operation,
    OperationStatus,
    OperationType,
    Progress,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
FIGURES = {
    "document_count": 3.0,
    "vector_count": 12.0,
    "stored_bytes": 4096.0,
    "source_document_counts": {"s1": 2.0, "s2": 1.0},
}


def new_op(kind: OperationType = OperationType.INDEX) -> Operation:
    return Operation(id="op-1", collection_id="col-1", type=kind, created_at=T0, updated_at=T0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_complete_records_progress_then_checkpoint() -> None:
    progress = Progress(documents_total=4, documents_done=2, percent=40.0)
    op, events = step_events.complete("create_collection", {"n": 1.0}, progress, at(1))(new_op())
    assert op.status is OperationStatus.PROCESSING
    assert op.checkpoints == {"create_collection": {"n": 1.0}}
    assert op.progress == progress and op.updated_at == at(1)
    assert [type(e).__name__ for e in events] == [
        "OperationStarted",
        "StepStarted",
        "StepCompleted",
    ]


def test_redelivered_completion_changes_nothing_not_even_progress() -> None:
    first = Progress(documents_done=2, percent=40.0)
    op, _ = step_events.complete("create_collection", {"n": 1.0}, first, at(1))(new_op())
    op, _ = step_events.progress(Progress(documents_done=3, percent=60.0), at(2))(op)
    again, events = step_events.complete("create_collection", {"n": 1.0}, first, at(3))(op)
    assert again == op and events == []


def test_completion_with_other_checkpoint_is_a_conflict() -> None:
    op, _ = step_events.complete("create_collection", {"n": 1.0}, None, at(1))(new_op())
    with pytest.raises(CheckpointConflict):
        step_events.complete("create_collection", {"n": 2.0}, None, at(2))(op)


def test_last_completion_keeps_figures_and_sets_percent_100() -> None:
    op = new_op()
    for step in ("create_collection", "ingest"):
        op, _ = step_events.complete(step, {}, None, at(1))(op)
    final = Progress(documents_total=3, documents_done=3, vectors_written=12, percent=90.0)
    op, _ = step_events.complete("finalize", FIGURES, final, at(2))(op)
    assert op.status is OperationStatus.COMPLETED
    assert op.progress.documents_done == 3 and op.progress.vectors_written == 12
    assert op.progress.percent == 100.0


@pytest.mark.parametrize(
    "checkpoint",
    [
        {},
        {**FIGURES, "document_count": -1.0},
        {**FIGURES, "vector_count": 1.5},
        {**FIGURES, "stored_bytes": "4096"},
        {**FIGURES, "stored_bytes": True},
        {**FIGURES, "source_document_counts": [1, 2]},
        {**FIGURES, "source_document_counts": {"s1": None}},
        {k: v for k, v in FIGURES.items() if k != "source_document_counts"},
    ],
)
def test_finalize_without_valid_figures_is_refused(checkpoint) -> None:
    op = new_op(OperationType.APPEND)
    for step in ("scan", "ingest"):
        op, _ = step_events.complete(step, {}, None, at(1))(op)
    with pytest.raises(InvalidTransition):
        step_events.complete("finalize", checkpoint, Progress(percent=99.0), at(2))(op)


def test_delete_finalize_needs_no_figures() -> None:
    op = new_op(OperationType.DELETE)
    for step in op.steps:
        op, _ = step_events.complete(step, {}, None, at(1))(op)
    assert op.status is OperationStatus.COMPLETED


def test_finalize_figures_are_whole_numbers() -> None:
    figures = step_events.finalize_figures(FIGURES)
    assert figures == step_events.CollectionFigures(3, 12, 4096, {"s1": 2, "s2": 1})
    assert all(
        type(n) is int for n in (figures.document_count, *figures.source_document_counts.values())
    )


def test_figures_to_record_only_for_a_just_completed_finalize() -> None:
    op = new_op()
    for step in ("create_collection", "ingest"):
        op, events = step_events.complete(step, {}, None, at(1))(op)
    assert step_events.figures_to_record(op, events) is None
    done, events = step_events.complete("finalize", FIGURES, None, at(2))(op)
    assert step_events.figures_to_record(done, events).vector_count == 12
    assert step_events.figures_to_record(done, []) is None  # a redelivery writes nothing
    # A checkpoint without figures (not from the worker's events) records none.
    bare, events = op.complete_step("finalize", {"ok": True}, at(2))
    assert step_events.figures_to_record(bare, events) is None


def test_unknown_error_type_counts_as_handler_error() -> None:
    assert step_events.error_type_of("QUOTA_EXCEEDED") is ErrorType.QUOTA_EXCEEDED
    assert step_events.error_type_of("SOMETHING_NEW") is ErrorType.HANDLER_ERROR
    assert step_events.error_type_of("") is ErrorType.HANDLER_ERROR


def test_failure_report_is_sanitised_and_an_unknown_step_dropped() -> None:
    op, _ = step_events.begin("create_collection", at(1))(new_op())
    failed, _ = step_events.failed("WEIRD", "cannot read /home/alice/a.txt", "nope", at(2))(op)
    assert failed.status is OperationStatus.FAILED
    assert failed.error.type is ErrorType.HANDLER_ERROR
    assert "/home/alice" not in failed.error.message and "a.txt" in failed.error.message
    assert failed.error.step == "create_collection"  # the step it was at
    named, _ = step_events.failed("SOURCE_UNREADABLE", "", "ingest", at(2))(op)
    assert named.error.step == "ingest" and named.error.message


def test_reap_fails_only_what_stayed_silent() -> None:
    cutoff, now = at(60), at(120)
    running, _ = step_events.begin("create_collection", at(10))(new_op())
    reaped, events = step_events.reap(cutoff, now)(running)
    assert reaped.status is OperationStatus.FAILED and reaped.error.type is ErrorType.STUCK
    assert reaped.error.message == "no progress from the worker for 110 s"
    assert reaped.error.step == "create_collection" and events
    heard, _ = step_events.progress(None, at(61))(running)  # a heartbeat after the scan
    assert step_events.reap(cutoff, now)(heard) == (heard, [])


def test_reap_a_pending_operation_nobody_picked_up() -> None:
    reaped, _ = step_events.reap(at(60), at(100))(new_op())
    assert reaped.error.type is ErrorType.STUCK
    assert reaped.error.message == "no worker picked the operation up for 100 s"


def test_dead_letter_message_names_where_it_died() -> None:
    text = step_events.dead_letter_message(
        "VO_COMMANDS", "indexer-commands", "vectorops.events.v1.IndexCommand", 5, "x\n" * 400
    )
    assert text.startswith(
        "indexer-commands on VO_COMMANDS gave up on vectorops.events.v1.IndexCommand"
        " after 5 deliveries: x x"
    )
    assert len(text) < 500 and text.endswith("…")
    op, _ = step_events.retries_exhausted(text, at(1))(new_op())
    assert op.error.type is ErrorType.RETRIES_EXHAUSTED

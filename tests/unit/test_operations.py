"""The operation state machine: every transition and refusal, idempotent
redelivery, resume after a restart, and never resurrecting a finished operation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kit.errors import FailedPrecondition
from orchestrator.domain.operations import (
    STEPS,
    CheckpointConflict,
    CollectionStatus,
    ErrorType,
    InvalidTransition,
    Operation,
    OperationCancelled,
    OperationCompleted,
    OperationFailed,
    OperationStarted,
    OperationStatus,
    OperationType,
    Progress,
    StepCompleted,
    StepStarted,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def new_op(kind: OperationType = OperationType.APPEND) -> Operation:
    return Operation(
        id="op-1",
        collection_id="col-1",
        type=kind,
        created_at=T0,
        collection_status_before=CollectionStatus.READY,
    )


def run_steps(op: Operation, count: int) -> Operation:
    """Begin and complete the first ``count`` steps of ``op``."""
    for i, step in enumerate(op.steps[:count]):
        op, _ = op.begin_step(step, at(i))
        op, _ = op.complete_step(step, {"n": i}, at(i))
    return op


def test_steps_match_protos_readme() -> None:
    assert STEPS == {
        OperationType.INDEX: ("create_collection", "ingest", "finalize"),
        OperationType.APPEND: ("scan", "ingest", "finalize"),
        OperationType.REMOVE_SOURCE: ("remove_points", "remove_documents", "finalize"),
        OperationType.REINDEX: (
            "preflight",
            "staging",
            "reprocessing",
            "validation",
            "switch",
            "cleanup",
        ),
        OperationType.DELETE: ("remove_alias", "drop_collections", "finalize"),
    }


def test_enum_values_are_their_names() -> None:
    # Stored in Postgres as text and mapped to proto names by prefixing.
    for enum in (OperationType, OperationStatus, CollectionStatus, ErrorType):
        assert all(member.value == member.name for member in enum)
    assert {e.value for e in ErrorType} >= {"HANDLER_ERROR", "RETRIES_EXHAUSTED", "STUCK"}
    assert len(ErrorType) == 13


def test_start_moves_pending_to_processing_once() -> None:
    op = new_op()
    started, events = op.start(at(1))
    assert op.status is OperationStatus.PENDING  # the original is untouched
    assert started.status is OperationStatus.PROCESSING
    assert started.started_at == at(1)
    assert events == [OperationStarted("op-1", "col-1", OperationType.APPEND, at(1))]
    again, events = started.start(at(2))
    assert again is started and events == []


@pytest.mark.parametrize("kind", list(OperationType))
def test_full_run_completes_with_events_in_order(kind: OperationType) -> None:
    op = new_op(kind)
    seen: list[object] = []
    for i, step in enumerate(op.steps):
        assert op.resume_step() == step
        op, events = op.begin_step(step, at(i))
        seen += events
        assert op.current_step == step
        op, events = op.complete_step(step, {"i": i}, at(i))
        seen += events
    assert op.status is OperationStatus.COMPLETED
    assert op.ended_at == at(len(op.steps) - 1)
    assert op.current_step is None
    assert op.resume_step() is None
    assert op.completed_steps == op.steps
    assert op.progress.percent == 100.0
    assert isinstance(seen[0], OperationStarted)
    assert isinstance(seen[-1], OperationCompleted)
    assert [e.step for e in seen if isinstance(e, StepStarted)] == list(op.steps)
    assert [e.step for e in seen if isinstance(e, StepCompleted)] == list(op.steps)


def test_begin_step_starts_a_pending_operation() -> None:
    op, events = new_op().begin_step("scan", at(1))
    assert op.status is OperationStatus.PROCESSING
    assert [type(e) for e in events] == [OperationStarted, StepStarted]


def test_steps_only_in_order() -> None:
    op = new_op()
    with pytest.raises(InvalidTransition, match="out of order"):
        op.begin_step("ingest", at(1))
    with pytest.raises(InvalidTransition, match="out of order"):
        op.complete_step("finalize", {}, at(1))
    op, _ = op.begin_step("scan", at(1))
    with pytest.raises(InvalidTransition):
        op.begin_step("finalize", at(2))


def test_unknown_step_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="no step"):
        new_op().begin_step("preflight", at(1))  # a REINDEX step, not APPEND's
    with pytest.raises(InvalidTransition):
        new_op().complete_step("bogus", {}, at(1))
    with pytest.raises(InvalidTransition):
        new_op().fail(ErrorType.STUCK, "x", at(1), step="bogus")


def test_complete_without_begin_is_accepted_for_the_next_step() -> None:
    # StepStarted may be redelivered after StepCompleted; the completion counts.
    op, events = new_op().complete_step("scan", {"files": 3}, at(1))
    assert [type(e) for e in events] == [OperationStarted, StepStarted, StepCompleted]
    assert op.completed_steps == ("scan",)
    late_begin, events = op.begin_step("scan", at(2))
    assert late_begin is op and events == []


def test_redelivered_step_events_are_no_ops() -> None:
    op, _ = new_op().begin_step("scan", at(1))
    same, events = op.begin_step("scan", at(2))
    assert same is op and events == []
    op, _ = op.complete_step("scan", {"files": 3}, at(3))
    same, events = op.complete_step("scan", {"files": 3}, at(4))
    assert same is op and events == []
    same, events = op.begin_step("scan", at(5))
    assert same is op and events == []


def test_same_step_with_other_checkpoint_is_a_conflict() -> None:
    op, _ = new_op().complete_step("scan", {"files": 3}, at(1))
    with pytest.raises(CheckpointConflict):
        op.complete_step("scan", {"files": 4}, at(2))


def test_checkpoint_is_copied_not_shared() -> None:
    data = {"files": 3}
    op, _ = new_op().complete_step("scan", data, at(1))
    data["files"] = 99
    assert op.checkpoint("scan") == {"files": 3}


@pytest.mark.parametrize("kind", list(OperationType))
def test_resume_step_is_first_not_completed(kind: OperationType) -> None:
    steps = STEPS[kind]
    for done in range(len(steps)):
        op = run_steps(new_op(kind), done)
        # A restart rebuilds the operation from its row: same answer.
        reloaded = Operation(**{f: getattr(op, f) for f in op.__dataclass_fields__})
        assert reloaded.resume_step() == steps[done]
        # The worker re-announces the resumed step: accepted once.
        resumed, events = reloaded.begin_step(steps[done], at(50))
        assert resumed.current_step == steps[done]
        assert resumed.completed_steps == steps[:done]


def test_resume_after_restart_mid_step_does_not_redo_completed_steps() -> None:
    op = run_steps(new_op(OperationType.REINDEX), 2)
    op, _ = op.begin_step("reprocessing", at(10))
    assert op.resume_step() == "reprocessing"
    # Redelivered completions of earlier steps change nothing.
    for i, step in enumerate(("preflight", "staging")):
        same, events = op.complete_step(step, {"n": i}, at(11))
        assert same is op and events == []


def test_fail_records_sanitised_error_and_step() -> None:
    op, _ = new_op().begin_step("scan", at(1))
    failed, events = op.fail(
        ErrorType.SOURCE_UNREADABLE, "cannot read /home/alice/docs: ask bob@example.com", at(2)
    )
    assert failed.status is OperationStatus.FAILED
    assert failed.error is not None
    assert failed.error.type is ErrorType.SOURCE_UNREADABLE
    assert failed.error.step == "scan"
    assert "alice" not in failed.error.message and "bob@" not in failed.error.message
    assert failed.ended_at == at(2)
    assert events == [OperationFailed("op-1", "col-1", OperationType.APPEND, failed.error, at(2))]


def test_fail_accepts_the_type_as_text_and_refuses_unknown_types() -> None:
    failed, _ = new_op().fail("STUCK", "no progress", at(1))
    assert failed.error is not None and failed.error.type is ErrorType.STUCK
    assert failed.error.step is None  # never started
    with pytest.raises(ValueError):
        new_op().fail("NOT_A_TYPE", "x", at(1))


def test_fail_message_is_truncated() -> None:
    failed, _ = new_op().fail(ErrorType.HANDLER_ERROR, "x" * 5000, at(1))
    assert failed.error is not None and len(failed.error.message) == 1000


def finished_ops() -> list[Operation]:
    completed = run_steps(new_op(), 3)
    failed, _ = new_op().fail(ErrorType.HANDLER_ERROR, "boom", at(1))
    cancelled, _ = new_op().cancel(at(1))
    return [completed, failed, cancelled]


@pytest.mark.parametrize("op", finished_ops(), ids=lambda op: op.status.value)
def test_finished_operation_ignores_every_event(op: Operation) -> None:
    assert op.finished
    for call in (
        lambda: op.start(at(9)),
        lambda: op.begin_step("scan", at(9)),
        lambda: op.begin_step("ingest", at(9)),
        lambda: op.complete_step("finalize", {"late": True}, at(9)),
        lambda: op.fail(ErrorType.RETRIES_EXHAUSTED, "late", at(9)),
        lambda: op.record_progress(Progress(documents_done=7, percent=50), at(9)),
    ):
        same, events = call()
        assert same is op and events == []
    assert op.resume_step() is None


def test_late_completion_of_a_finished_op_is_ignored_even_if_different() -> None:
    op = run_steps(new_op(), 3)
    for data in ({"n": 2}, {"n": 99}):
        same, events = op.complete_step("finalize", data, at(9))
        assert same is op and events == []


@pytest.mark.parametrize("kind", list(OperationType))
def test_cancel_at_any_step_before_the_switch(kind: OperationType) -> None:
    last = STEPS[kind].index("switch") if kind is OperationType.REINDEX else len(STEPS[kind]) - 1
    for done in range(last + 1):
        for begun in (False, True):
            op = run_steps(new_op(kind), done)
            if begun:
                op, _ = op.begin_step(op.steps[done], at(20))
            cancelled, events = op.cancel(at(21))
            assert cancelled.status is OperationStatus.CANCELLED
            assert cancelled.error is not None
            assert cancelled.error.type is ErrorType.CANCELLED
            assert cancelled.ended_at == at(21)
            assert events == [
                OperationCancelled(
                    "op-1", "col-1", kind, op.current_step, op.changed_anything, at(21)
                )
            ]
            again, events = cancelled.cancel(at(22))  # a client retrying its cancel
            assert again is cancelled and events == []


def test_cancel_pending() -> None:
    cancelled, events = new_op().cancel(at(1))
    assert cancelled.status is OperationStatus.CANCELLED
    assert not cancelled.changed_anything
    assert isinstance(events[0], OperationCancelled) and events[0].step is None


@pytest.mark.parametrize("op", finished_ops()[:2], ids=lambda op: op.status.value)
def test_cancel_of_completed_or_failed_is_refused(op: Operation) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        op.cancel(at(9))
    assert caught.value.reason == "OPERATION_NOT_CANCELLABLE"
    assert caught.value.metadata == {"operation_id": "op-1", "status": op.status.value}


def test_reindex_cancellable_until_switch_completes() -> None:
    op = run_steps(new_op(OperationType.REINDEX), 4)  # through validation
    op, _ = op.begin_step("switch", at(10))
    assert not op.switched
    assert op.cancel(at(11))[0].status is OperationStatus.CANCELLED
    op, _ = op.complete_step("switch", {"from_generation": 1}, at(12))
    assert op.switched and op.changed_anything
    with pytest.raises(FailedPrecondition) as caught:
        op.cancel(at(13))
    assert caught.value.reason == "OPERATION_NOT_CANCELLABLE"
    assert caught.value.metadata["status"] == "PROCESSING"
    # ...but it can still fail in cleanup (e.g. the reaper).
    failed, _ = op.fail(ErrorType.STUCK, "cleanup stalled", at(14))
    assert failed.status is OperationStatus.FAILED and failed.error.step == "switch"


# changed_anything: the first step that may touch what the collection serves.
CHANGES_FROM = {
    OperationType.INDEX: 0,  # create_collection
    OperationType.APPEND: 1,  # ingest (scan only reads)
    OperationType.REMOVE_SOURCE: 0,
    OperationType.DELETE: 0,
}


@pytest.mark.parametrize("kind", list(CHANGES_FROM))
def test_changed_anything_set_when_a_changing_step_begins(kind: OperationType) -> None:
    op = new_op(kind)
    for i, step in enumerate(op.steps):
        op, _ = op.begin_step(step, at(i))
        assert op.changed_anything == (i >= CHANGES_FROM[kind]), step
        op, _ = op.complete_step(step, {}, at(i))


def test_reindex_changes_nothing_until_the_switch_commits() -> None:
    op = new_op(OperationType.REINDEX)
    for i, step in enumerate(op.steps):
        op, _ = op.begin_step(step, at(i))
        assert op.changed_anything == (i > op.steps.index("switch")), step
        op, _ = op.complete_step(step, {}, at(i))
        assert op.changed_anything == (i >= op.steps.index("switch")), step


def test_record_progress_replaces_figures_and_clamps_percent() -> None:
    op, _ = new_op().begin_step("scan", at(1))
    op2, events = op.record_progress(Progress(documents_total=10, documents_done=4, percent=40))
    assert events == []
    assert op2.progress.documents_done == 4 and op2.progress.percent == 40
    assert op2.updated_at == op.updated_at  # no time given, none invented
    op3, _ = op2.record_progress(Progress(percent=250), at(5))
    assert op3.progress.percent == 100.0 and op3.updated_at == at(5)
    op4, _ = op2.record_progress(Progress(percent=-3), at(6))
    assert op4.progress.percent == 0.0


def test_operation_is_immutable() -> None:
    op = new_op()
    with pytest.raises(AttributeError):
        op.status = OperationStatus.FAILED  # type: ignore[misc]


def test_domain_does_no_io() -> None:
    # The domain layer is pure: no grpc, nats or asyncpg, and no clock reads.
    import ast
    from pathlib import Path

    import orchestrator.domain as domain

    for path in Path(domain.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(
                    n.split(".")[0] in {"grpc", "nats", "asyncpg", "time"} for n in names
                ), (path.name, names)
        assert ".now(" not in path.read_text() and "utcnow" not in path.read_text(), path.name

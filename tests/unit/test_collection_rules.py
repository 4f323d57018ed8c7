"""Collection rules: the status every outcome leaves (exhaustively: no terminal
operation ever leaves a collection PROCESSING), searchability, one active
operation per collection, and the reindex switch's fencing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from kit.errors import FailedPrecondition
from orchestrator.domain.collections import (
    GONE,
    can_start,
    check_switch,
    is_searchable,
    status_after,
    switch_checkpoint,
)
from orchestrator.domain.operations import (
    STEPS,
    CollectionStatus,
    ErrorType,
    Operation,
    OperationStatus,
    OperationType,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CS = CollectionStatus

# The design's failure mapping, restated here so the test does not trust the code's table.
FAILED_TO = {
    OperationType.INDEX: CS.ERROR,
    OperationType.APPEND: CS.PARTIALLY_READY,
    OperationType.REMOVE_SOURCE: CS.PARTIALLY_READY,
    OperationType.REINDEX: CS.DEGRADED,
    OperationType.DELETE: CS.ERROR,
}
# Index of the first step whose start changes what the collection serves (None:
# REINDEX changes nothing a cancel could reach, since cancel stops at the switch).
FIRST_CHANGE = {
    OperationType.INDEX: 0,
    OperationType.APPEND: 1,
    OperationType.REMOVE_SOURCE: 0,
    OperationType.REINDEX: None,
    OperationType.DELETE: 0,
}
# What a collection may be in when an operation is accepted (can_start refuses DELETING;
# PROCESSING only while another operation runs).
BEFORE = [CS.PENDING, CS.READY, CS.DEGRADED, CS.PARTIALLY_READY, CS.ERROR]


def new_op(kind: OperationType, before: CollectionStatus | None) -> Operation:
    return Operation(
        id="op-1",
        collection_id="col-1",
        type=kind,
        created_at=T0,
        collection_status_before=None if kind is OperationType.INDEX else before,
    )


def advance(op: Operation, done: int, begin_next: bool) -> Operation:
    for step in op.steps[:done]:
        op, _ = op.begin_step(step, T0)
        op, _ = op.complete_step(step, {}, T0)
    if begin_next:
        op, _ = op.begin_step(op.steps[done], T0)
    return op


def outcomes(
    kind: OperationType, before: CollectionStatus | None
) -> Iterator[tuple[str, Operation]]:
    """Every way an operation of ``kind`` can end, labelled."""
    steps = STEPS[kind]
    yield "completed", advance(new_op(kind, before), len(steps), False)
    # Failed before it started (reaper, dead letter), and at every step.
    yield "failed-pending", new_op(kind, before).fail(ErrorType.RETRIES_EXHAUSTED, "x", T0)[0]
    for done in range(len(steps)):
        for begun in (False, True):
            op = advance(new_op(kind, before), done, begun)
            for error in (ErrorType.HANDLER_ERROR, ErrorType.STUCK):
                yield f"failed-{steps[done]}-{begun}-{error}", op.fail(error, "boom", T0)[0]
            if not op.switched:
                yield f"cancelled-{steps[done]}-{begun}", op.cancel(T0)[0]
    yield "cancelled-pending", new_op(kind, before).cancel(T0)[0]


def expected(op: Operation, before: CollectionStatus | None) -> CollectionStatus | object:
    if op.status is OperationStatus.COMPLETED:
        return GONE if op.type is OperationType.DELETE else CS.READY
    if op.status is OperationStatus.CANCELLED:
        first = FIRST_CHANGE[op.type]
        in_step = op.current_step is not None and op.current_step not in op.completed_steps
        begun = len(op.completed_steps) + in_step
        changed = first is not None and begun > first
        if not changed:
            return CS.PENDING if op.type is OperationType.INDEX else before
    return FAILED_TO[op.type]


@pytest.mark.parametrize("kind", list(OperationType))
@pytest.mark.parametrize("before", BEFORE)
def test_every_terminal_outcome_follows_the_mapping(
    kind: OperationType, before: CollectionStatus
) -> None:
    seen = 0
    for label, op in outcomes(kind, before):
        assert op.finished, label
        after = status_after(op)
        assert after is not CS.PROCESSING, label
        assert after == expected(op, before), (label, after)
        seen += 1
    assert seen > 2 * len(STEPS[kind])


@pytest.mark.parametrize("kind", list(OperationType))
def test_cancel_restores_earlier_status_only_when_nothing_changed(kind: OperationType) -> None:
    op = new_op(kind, CS.DEGRADED)
    restored = CS.PENDING if kind is OperationType.INDEX else CS.DEGRADED
    assert status_after(op.cancel(T0)[0]) == restored
    changed = advance(op, 1, True)  # second step begun: past the first change for all but REINDEX
    after = status_after(changed.cancel(T0)[0])
    assert after == (restored if kind is OperationType.REINDEX else FAILED_TO[kind])


@pytest.mark.parametrize("kind", list(OperationType))
def test_a_corrupt_before_status_never_restores_processing(kind: OperationType) -> None:
    for before in (CS.PROCESSING, CS.DELETING, None):
        op = Operation("op-1", "col-1", kind, T0, collection_status_before=before)
        after = status_after(op.cancel(T0)[0])
        assert after not in (CS.PROCESSING, CS.DELETING)
        if kind is not OperationType.INDEX:
            assert after == FAILED_TO[kind]


@pytest.mark.parametrize(
    ("kind", "running"),
    [
        (OperationType.INDEX, CS.PENDING),  # nothing live yet: stays out of search
        (OperationType.APPEND, CS.PROCESSING),
        (OperationType.REMOVE_SOURCE, CS.PROCESSING),
        (OperationType.REINDEX, CS.PROCESSING),
        (OperationType.DELETE, CS.DELETING),
    ],
)
def test_status_while_running(kind: OperationType, running: CollectionStatus) -> None:
    op = new_op(kind, CS.READY)
    assert status_after(op) == running  # accepted, not started yet
    for done in range(len(op.steps)):
        assert status_after(advance(new_op(kind, CS.READY), done, True)) == running


def test_failed_reindex_after_switch_is_degraded_literal_mapping() -> None:
    op = advance(new_op(OperationType.REINDEX, CS.READY), 5, True)  # in cleanup
    assert status_after(op.fail(ErrorType.STUCK, "x", T0)[0]) == CS.DEGRADED


def test_searchable_statuses() -> None:
    assert {s for s in CS if is_searchable(s)} == {
        CS.READY,
        CS.PROCESSING,
        CS.DEGRADED,
        CS.PARTIALLY_READY,
    }


# --- can_start -------------------------------------------------------------------


@pytest.mark.parametrize("status", [s for s in CS if s is not CS.DELETING])
def test_can_start_when_idle(status: CollectionStatus) -> None:
    assert can_start(status, None, "col-1") is None
    assert can_start(status, "", "col-1") is None


def test_second_operation_is_refused_naming_the_active_one() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        can_start(CS.PROCESSING, "op-9", "col-1")
    error = caught.value
    assert error.reason == "OPERATION_IN_PROGRESS"
    assert error.metadata == {"collection_id": "col-1", "active_operation_id": "op-9"}
    (violation,) = error.precondition_violations
    assert violation.type == "OPERATION_IN_PROGRESS"
    assert violation.subject == "operations/op-9"


def test_nothing_starts_on_a_deleting_collection() -> None:
    for active in (None, "op-del"):
        with pytest.raises(FailedPrecondition) as caught:
            can_start(CS.DELETING, active, "col-1")
        assert caught.value.reason == "COLLECTION_DELETING"
        assert caught.value.metadata == {"collection_id": "col-1"}


# --- reindex switch fencing ------------------------------------------------------

STAGING = "phys_a_staging_20250101T000000Z"


def reindex_ready(passed: bool = True) -> Operation:
    """A REINDEX that has completed validation (and begun the switch)."""
    op = Operation("op-r", "col-1", OperationType.REINDEX, T0, collection_status_before=CS.READY)
    for step in ("preflight", "staging", "reprocessing"):
        op, _ = op.complete_step(step, {}, T0)
    op, _ = op.complete_step("validation", {"passed": passed}, T0)
    op, _ = op.begin_step("switch", T0)
    return op


def refusal(op: Operation, **kwargs: object) -> FailedPrecondition:
    args = {
        "collection_generation": 3,
        "expected_generation": 3,
        "staging_name": STAGING,
        "recorded_staging": STAGING,
    }
    args.update(kwargs)
    with pytest.raises(FailedPrecondition) as caught:
        check_switch(op, **args)  # type: ignore[arg-type]
    return caught.value


def test_switch_allowed_once_validation_passed_and_generation_matches() -> None:
    assert check_switch(reindex_ready(), 3, 3, STAGING, STAGING) is False


def test_repeated_switch_returns_first_result() -> None:
    op, _ = reindex_ready().complete_step("switch", switch_checkpoint(3, STAGING), T0)
    # The first call bumped the generation to 4; the retry still says 3.
    assert check_switch(op, 4, 3, STAGING, STAGING) is True
    # Also once cleanup ran and the operation completed.
    done, _ = op.complete_step("cleanup", {}, T0)
    assert done.status is OperationStatus.COMPLETED
    assert check_switch(done, 4, 3, STAGING, None) is True


def test_switch_after_switch_with_other_generation_or_staging_is_refused() -> None:
    op, _ = reindex_ready().complete_step("switch", switch_checkpoint(3, STAGING), T0)
    error = refusal(op, collection_generation=4, expected_generation=4)
    assert error.reason == "STALE_GENERATION"
    assert error.metadata == {
        "collection_id": "col-1",
        "expected_generation": "4",
        "actual_generation": "4",
    }
    assert refusal(op, staging_name="other").reason == "STAGING_MISMATCH"


def test_stale_generation() -> None:
    error = refusal(reindex_ready(), collection_generation=5, expected_generation=3)
    assert error.reason == "STALE_GENERATION"
    assert error.metadata["actual_generation"] == "5"


def test_validation_not_passed() -> None:
    assert refusal(reindex_ready(passed=False)).reason == "VALIDATION_NOT_PASSED"
    assert refusal(reindex_ready(), validation_passed=False).reason == "VALIDATION_NOT_PASSED"
    early = Operation("op-r", "col-1", OperationType.REINDEX, T0)
    early, _ = early.begin_step("preflight", T0)
    assert refusal(early).reason == "VALIDATION_NOT_PASSED"
    assert refusal(Operation("op-r", "col-1", OperationType.REINDEX, T0)).reason == (
        "VALIDATION_NOT_PASSED"
    )
    append = Operation("op-a", "col-1", OperationType.APPEND, T0)
    assert refusal(append).reason == "VALIDATION_NOT_PASSED"


def test_switch_for_cancelled_or_failed_operation() -> None:
    for ended in (
        reindex_ready().cancel(T0)[0],
        reindex_ready().fail(ErrorType.STUCK, "x", T0)[0],
    ):
        error = refusal(ended)
        assert error.reason == "OPERATION_NOT_ACTIVE"
        assert error.metadata == {"operation_id": "op-r", "status": ended.status.value}


def test_staging_mismatch() -> None:
    assert refusal(reindex_ready(), staging_name="x_staging_1").reason == "STAGING_MISMATCH"
    assert refusal(reindex_ready(), recorded_staging=None).reason == "STAGING_MISMATCH"

"""The orchestrator's REINDEX rules: who may be reindexed to what, the
thresholds in force, the switch's fencing while the validation checkpoint is
still in flight, what a switch records, and the staging bookkeeping of the
worker's step events."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from kit.errors import DomainError, FailedPrecondition, InvalidArgument
from orchestrator.domain import step_events
from orchestrator.domain.collections import switch_checkpoint
from orchestrator.domain.operations import (
    CollectionStatus,
    ErrorType,
    InvalidTransition,
    Operation,
    OperationType,
)
from orchestrator.domain.reindex import (
    CleanupDelay,
    Switch,
    SwitchRequest,
    Thresholds,
    check_reindex,
    fence_switch,
    retire,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CS = CollectionStatus
LIVE = {"embedding_model": "m", "dimension": 384, "chunk_size": 200, "chunk_overlap": 0}
DEFAULTS = Thresholds(0.0, 0.6, 0.25, 20, 10)
STAGING = "vo_abc_g1_staging_20250101T000000Z"


def refused(call, *args) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(*args)
    return caught.value


# --- thresholds ----------------------------------------------------------------------------


def test_zero_fields_keep_the_defaults_others_override() -> None:
    assert DEFAULTS.overridden_by(Thresholds(0.0, 0.0, 0.0, 0, 0)) == DEFAULTS
    wanted = Thresholds(0.01, 0.0, 0.5, 0, 3)
    assert DEFAULTS.overridden_by(wanted) == Thresholds(0.01, 0.6, 0.5, 20, 3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("point_count_tolerance", -0.1),
        ("point_count_tolerance", 1.5),
        ("min_topk_overlap", 1.01),
        ("max_score_drift", -1.0),
        ("max_score_drift", math.nan),
        ("probe_query_count", -1),
        ("probe_query_count", 1001),
        ("top_k", 101),
    ],
)
def test_thresholds_out_of_range_name_the_field(field: str, value: float) -> None:
    fields = {"point_count_tolerance": 0.0, "min_topk_overlap": 0.0, "max_score_drift": 0.0}
    fields |= {"probe_query_count": 0, "top_k": 0, field: value}
    error = refused(DEFAULTS.overridden_by, Thresholds(**fields))
    assert isinstance(error, InvalidArgument)
    assert error.metadata == {"field": f"thresholds.{field}"}
    assert [v.field for v in error.field_violations] == [f"thresholds.{field}"]


# --- may this collection be reindexed to that config? --------------------------------------


def test_a_live_collection_with_a_new_config_may_be_reindexed() -> None:
    for status in (CS.READY, CS.DEGRADED, CS.PARTIALLY_READY):
        check_reindex("c1", status, 3, LIVE, {**LIVE, "chunk_size": 100}, 0)
        check_reindex("c1", status, 3, LIVE, {**LIVE, "chunk_size": 100}, 3)


def test_the_live_config_again_is_config_unchanged() -> None:
    error = refused(check_reindex, "c1", CS.READY, 3, LIVE, dict(LIVE), 0)
    assert isinstance(error, InvalidArgument)
    assert (error.reason, error.metadata) == ("CONFIG_UNCHANGED", {"collection_id": "c1"})


def test_an_expected_generation_other_than_the_collections_is_stale() -> None:
    error = refused(check_reindex, "c1", CS.READY, 3, LIVE, {**LIVE, "chunk_size": 9}, 2)
    assert isinstance(error, FailedPrecondition) and error.reason == "STALE_GENERATION"
    assert error.metadata == {
        "collection_id": "c1",
        "expected_generation": "2",
        "actual_generation": "3",
    }


@pytest.mark.parametrize("status", [CS.PENDING, CS.ERROR, CS.DELETING])
def test_a_collection_with_nothing_live_is_not_reindexed(status: CollectionStatus) -> None:
    error = refused(check_reindex, "c1", status, 1, LIVE, {**LIVE, "chunk_size": 9}, 0)
    assert isinstance(error, FailedPrecondition) and error.reason == "COLLECTION_NOT_SEARCHABLE"
    assert error.metadata == {"collection_id": "c1", "status": status.value}


# --- fencing the switch --------------------------------------------------------------------


def request(expected: int = 3, staging: str = STAGING, passed: bool = True) -> SwitchRequest:
    return SwitchRequest(
        operation_id="op-r",
        collection_id="col-1",
        expected_generation=expected,
        staging_collection=staging,
        validation_passed=passed,
        vector_count=10,
        document_count=2,
        stored_bytes=100,
        request_id="op-r:switch",
        validation={"passed": passed},
    )


def reindex_through(step: str) -> Operation:
    op = Operation("op-r", "col-1", OperationType.REINDEX, T0, collection_status_before=CS.READY)
    for done in op.steps[: op.steps.index(step) + 1]:
        data = {"staging_collection": STAGING} if done == "staging" else {"passed": True}
        op, _ = op.complete_step(done, data, T0)
    return op


def test_before_the_validation_checkpoint_arrives_the_answer_is_retryable() -> None:
    # The staging checkpoint may be in flight too: no STAGING_MISMATCH yet.
    for step, recorded in (("preflight", None), ("staging", STAGING), ("reprocessing", STAGING)):
        error = refused(fence_switch, reindex_through(step), 3, request(), recorded)
        assert (error.reason, error.metadata) == ("VALIDATION_NOT_PASSED", {"operation_id": "op-r"})


def test_fencing_otherwise_is_check_switch() -> None:
    ready = reindex_through("validation")
    assert fence_switch(ready, 3, request(), STAGING) is False
    assert refused(fence_switch, ready, 3, request(staging="other"), STAGING).reason == (
        "STAGING_MISMATCH"
    )
    assert refused(fence_switch, ready, 3, request(passed=False), STAGING).reason == (
        "VALIDATION_NOT_PASSED"
    )
    # A stale generation is final even while validation is still missing.
    early = reindex_through("reprocessing")
    assert refused(fence_switch, early, 4, request(), STAGING).reason == "STALE_GENERATION"
    # Ended operations are not "waiting for validation".
    cancelled, _ = early.cancel(T0)
    error = refused(fence_switch, cancelled, 3, request(), None)
    assert error.reason == "OPERATION_NOT_ACTIVE"
    switched, _ = ready.complete_step("switch", switch_checkpoint(3, STAGING), T0)
    assert fence_switch(switched, 4, request(), None) is True


# --- what a switch records -----------------------------------------------------------------


def test_a_switch_survives_its_json_round_trip() -> None:
    switch = Switch(3, 4, STAGING, ("vo_abc_g1",), T0 + timedelta(minutes=5))
    assert Switch.from_json(switch.to_json()) == switch


def test_cleanup_delay_grows_with_the_old_collection_and_is_capped() -> None:
    delay = CleanupDelay(timedelta(minutes=5), timedelta(minutes=1), timedelta(minutes=30))
    assert delay.for_vectors(0) == timedelta(minutes=5)
    assert delay.for_vectors(25_000) == timedelta(minutes=7)
    assert delay.for_vectors(10_000_000) == timedelta(minutes=30)
    short = CleanupDelay(timedelta(seconds=1), timedelta(0), timedelta(seconds=1))
    assert short.for_vectors(123_456) == timedelta(seconds=1)


def test_retire_appends_the_old_live_collection_once() -> None:
    assert retire([], "g1") == ("g1",)
    assert retire(["g1"], "g2") == ("g1", "g2")
    assert retire(["g1", "g2"], "g2") == ("g1", "g2")


# --- the staging collection in the worker's events -----------------------------------------


def reindex_op() -> Operation:
    return Operation("op-r", "col-1", OperationType.REINDEX, T0, collection_status_before=CS.READY)


def test_the_staging_checkpoint_records_its_collection() -> None:
    op, _ = step_events.complete("preflight", {"dimension": 384.0}, None, T0)(reindex_op())
    assert step_events.staging_change(op, []) is None
    op, events = step_events.complete("staging", {"staging_collection": STAGING}, None, T0)(op)
    assert step_events.staging_change(op, events) == step_events.StagingChange(STAGING)
    # A redelivery changes nothing and so records nothing again.
    again, events = step_events.complete("staging", {"staging_collection": STAGING}, None, T0)(op)
    assert again == op and step_events.staging_change(again, events) is None


def test_a_staging_checkpoint_without_its_collection_is_refused() -> None:
    op, _ = step_events.complete("preflight", {}, None, T0)(reindex_op())
    for state in ({}, {"staging_collection": ""}, {"staging_collection": 3.0}):
        with pytest.raises(InvalidTransition):
            step_events.complete("staging", state, None, T0)(op)


def test_failure_or_cancel_of_a_reindex_clears_the_staging_collection() -> None:
    op, _ = step_events.complete("preflight", {}, None, T0)(reindex_op())
    op, _ = step_events.complete("staging", {"staging_collection": STAGING}, None, T0)(op)
    failed, events = step_events.failed("VALIDATION_FAILED", "overlap 0.1", "validation", T0)(op)
    assert failed.error is not None and failed.error.type is ErrorType.VALIDATION_FAILED
    assert step_events.staging_change(failed, events) == step_events.StagingChange(None)
    cancelled, events = op.cancel(T0)
    assert step_events.staging_change(cancelled, events) == step_events.StagingChange(None)
    # Other operation types have no staging collection to touch.
    append = Operation("op-a", "col-1", OperationType.APPEND, T0)
    failed_append, events = append.fail(ErrorType.STUCK, "x", T0)
    assert step_events.staging_change(failed_append, events) is None


def test_the_switch_step_is_never_first_reported_by_an_event() -> None:
    op = reindex_through("validation")
    with pytest.raises(InvalidTransition):
        step_events.complete("switch", switch_checkpoint(3, STAGING), None, T0)(op)
    # Once CompleteReindex recorded it, the worker's identical report is a no-op
    # (numbers arrive as floats from the event's Struct).
    switched, _ = op.complete_step("switch", switch_checkpoint(3, STAGING), T0)
    echoed = {"from_generation": 3.0, "to_generation": 4.0, "physical_collection": STAGING}
    again, events = step_events.complete("switch", echoed, None, T0)(switched)
    assert again == switched and events == []
